//! A local implementation of the Lambda Runtime API, so a function runs *as its real binary*:
//! the process polls `GET /2018-06-01/runtime/invocation/next`, and posts to
//! `/invocation/{id}/response` or `/invocation/{id}/error`, exactly as on Lambda.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{Mutex, mpsc, oneshot};

/// What an invocation ended with.
#[derive(Debug)]
pub enum Invocation {
    Response(Value),
    /// The function reported an error (`/error`): Lambda's `{errorType, errorMessage}`.
    Error(Value),
}

struct Pending {
    id: String,
    event: Value,
    /// The invocation's timeout: its deadline is set when the process takes it, as on Lambda.
    timeout: Duration,
    done: oneshot::Sender<Invocation>,
    /// Told when the process takes the event (its init, if it is new, is over).
    taken: oneshot::Sender<()>,
}

struct Inner {
    function_arn: String,
    incoming: Mutex<mpsc::Receiver<Pending>>,
    in_flight: Mutex<HashMap<String, oneshot::Sender<Invocation>>>,
    init_error: Mutex<Option<Value>>,
    /// When the process first asked for work: the end of its init.
    first_next: std::sync::Mutex<Option<Instant>>,
}

/// One function's Runtime API endpoint and the process that polls it.
pub struct LocalFunction {
    pub name: String,
    addr: SocketAddr,
    inner: Arc<Inner>,
    outgoing: mpsc::Sender<Pending>,
    next_id: AtomicU64,
    child: Child,
    started: Instant,
    timeout: Duration,
    /// The process's last output lines, to say why it stopped.
    last_lines: Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
    binary: std::path::PathBuf,
    environment: Vec<(String, String)>,
    sink: Option<LineSink>,
    process: ProcessHandle,
    /// The process died (or was stopped after a timeout): the next invocation starts another.
    exited: bool,
}

const KEPT_LINES: usize = 20;

/// The limit on a function's init (the process's start to its first `next`): Lambda's is 10 s;
/// six times that here, where debug binaries start on a loaded machine.
const INIT_LIMIT: Duration = Duration::from_secs(60);

async fn next(State(inner): State<Arc<Inner>>) -> Response {
    {
        let mut first = inner.first_next.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert_with(Instant::now);
    }
    let pending = inner.incoming.lock().await.recv().await;
    let Some(pending) = pending else {
        return StatusCode::GONE.into_response();
    };
    let _ = pending.taken.send(());
    let deadline_ms = (std::time::SystemTime::now() + pending.timeout)
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set("lambda-runtime-aws-request-id", &pending.id);
    set("lambda-runtime-deadline-ms", &deadline_ms.to_string());
    set("lambda-runtime-invoked-function-arn", &inner.function_arn);
    set(
        "lambda-runtime-trace-id",
        &format!("Root=1-local-{}", pending.id),
    );
    set("content-type", "application/json");
    inner
        .in_flight
        .lock()
        .await
        .insert(pending.id.clone(), pending.done);
    (headers, pending.event.to_string()).into_response()
}

async fn finish(inner: &Inner, id: &str, outcome: Invocation) -> StatusCode {
    match inner.in_flight.lock().await.remove(id) {
        Some(done) => {
            let _ = done.send(outcome);
            StatusCode::ACCEPTED
        }
        None => StatusCode::BAD_REQUEST,
    }
}

fn json_or_text(body: &Bytes) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

async fn respond(
    State(inner): State<Arc<Inner>>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> StatusCode {
    let (outcome, status) = response_outcome(&body);
    let finished = finish(&inner, &id, outcome).await;
    if status.is_success() {
        finished
    } else {
        status
    }
}

/// What Lambda makes of a function's response: over the 6 MB of a synchronous invocation, the
/// runtime gets a `413` and the invocation fails with `Function.ResponseSizeTooLarge`.
fn response_outcome(body: &Bytes) -> (Invocation, StatusCode) {
    if body.len() > crate::aws_proxy::limits::LAMBDA_MAX_SYNC_PAYLOAD_BYTES {
        let error = serde_json::json!({
            "errorType": "Function.ResponseSizeTooLarge",
            "errorMessage": format!(
                "Response payload size ({} bytes) exceeded maximum allowed payload size (6291556 bytes).",
                body.len()
            ),
        });
        return (Invocation::Error(error), StatusCode::PAYLOAD_TOO_LARGE);
    }
    (
        Invocation::Response(json_or_text(body)),
        StatusCode::ACCEPTED,
    )
}

async fn error(
    State(inner): State<Arc<Inner>>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> StatusCode {
    finish(&inner, &id, Invocation::Error(json_or_text(&body))).await
}

async fn init_error(State(inner): State<Arc<Inner>>, body: Bytes) -> StatusCode {
    *inner.init_error.lock().await = Some(json_or_text(&body));
    StatusCode::ACCEPTED
}

/// Where a function's output lines go: `(function, line)`. Without one they go to stderr.
pub type LineSink = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// What another task may see of a function's process while an invocation holds it: its pid,
/// whether it is inside an invocation, and how many times it was started again.
#[derive(Clone, Default)]
pub struct ProcessHandle {
    pub pid: Arc<AtomicU32>,
    pub busy: Arc<AtomicBool>,
    pub restarts: Arc<AtomicU64>,
}

impl ProcessHandle {
    /// SIGKILLs the process if it is inside an invocation (as a crash of the sandbox would);
    /// whether it was.
    pub fn kill_if_busy(&self) -> bool {
        let pid = self.pid.load(Ordering::SeqCst);
        if pid == 0 || !self.busy.load(Ordering::SeqCst) {
            return false;
        }
        let Ok(pid) = i32::try_from(pid) else {
            return false;
        };
        // SAFETY: kill(2) with a pid this stack started; no memory is involved.
        unsafe { libc::kill(pid, libc::SIGKILL) == 0 }
    }
}

struct Spawn<'a> {
    name: &'a str,
    binary: &'a Path,
    environment: &'a [(String, String)],
    addr: SocketAddr,
    last_lines: &'a Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
    sink: &'a Option<LineSink>,
}

fn spawn(s: Spawn<'_>) -> Result<Child> {
    let mut command = Command::new(s.binary);
    command
        .envs(s.environment.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("AWS_LAMBDA_RUNTIME_API", s.addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", s.name)
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env(
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{}", s.name),
        )
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "local")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {}", s.binary.display()))?;
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
    ]
    .into_iter()
    .flatten()
    {
        let prefix = s.name.to_string();
        let kept = s.last_lines.clone();
        let sink = s.sink.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match &sink {
                    Some(sink) => sink(&prefix, &line),
                    None => eprintln!("[{prefix}] {line}"),
                }
                let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
                if kept.len() == KEPT_LINES {
                    kept.pop_front();
                }
                kept.push_back(line);
            }
        });
    }
    Ok(child)
}

impl LocalFunction {
    /// Serves a Runtime API on a loopback port and starts `binary` against it with `environment`
    /// (the function's, from the template) plus what Lambda itself sets. Its output goes to this
    /// process's stderr, each line prefixed with `name`.
    pub async fn start(
        name: &str,
        binary: &Path,
        environment: &[(String, String)],
        timeout: Duration,
    ) -> Result<LocalFunction> {
        LocalFunction::start_with(name, binary, environment, timeout, None).await
    }

    /// [`LocalFunction::start`] with the output lines handed to `sink` instead of stderr.
    pub async fn start_with(
        name: &str,
        binary: &Path,
        environment: &[(String, String)],
        timeout: Duration,
        sink: Option<LineSink>,
    ) -> Result<LocalFunction> {
        let (outgoing, incoming) = mpsc::channel(64);
        let inner = Arc::new(Inner {
            function_arn: format!("arn:aws:lambda:us-east-1:123456789012:function:{name}"),
            incoming: Mutex::new(incoming),
            in_flight: Mutex::default(),
            init_error: Mutex::default(),
            first_next: std::sync::Mutex::default(),
        });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(respond),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            // Lambda takes responses up to 6 MB; `response_outcome` refuses what is over.
            .layer(axum::extract::DefaultBodyLimit::max(
                2 * crate::aws_proxy::limits::LAMBDA_MAX_SYNC_PAYLOAD_BYTES,
            ))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, app).await });

        let started = Instant::now();
        let last_lines: Arc<std::sync::Mutex<std::collections::VecDeque<String>>> = Arc::default();
        let child = spawn(Spawn {
            name,
            binary,
            environment,
            addr,
            last_lines: &last_lines,
            sink: &sink,
        })?;
        let process = ProcessHandle::default();
        process.pid.store(child.id().unwrap_or(0), Ordering::SeqCst);
        Ok(LocalFunction {
            name: name.to_string(),
            addr,
            inner,
            outgoing,
            next_id: AtomicU64::new(1),
            child,
            started,
            timeout,
            last_lines,
            binary: binary.to_path_buf(),
            environment: environment.to_vec(),
            sink,
            process,
            exited: false,
        })
    }

    /// The process's pid, busy flag and restart count, readable while an invocation runs.
    pub fn process(&self) -> ProcessHandle {
        self.process.clone()
    }

    /// A new process in place of one that died or was stopped, as Lambda starts a new
    /// execution environment after a crash or a timeout.
    fn restart(&mut self) -> Result<()> {
        self.child = spawn(Spawn {
            name: &self.name,
            binary: &self.binary,
            environment: &self.environment,
            addr: self.addr,
            last_lines: &self.last_lines,
            sink: &self.sink,
        })?;
        self.exited = false;
        self.process
            .pid
            .store(self.child.id().unwrap_or(0), Ordering::SeqCst);
        self.process.restarts.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    pub fn runtime_api(&self) -> SocketAddr {
        self.addr
    }

    /// Process start to its first `GET /invocation/next`: the function's init, once it is done.
    pub fn init_duration(&self) -> Option<Duration> {
        let first = *self
            .inner
            .first_next
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        first.map(|at| at.duration_since(self.started))
    }

    /// Hands `event` to the function and waits for its answer, as Lambda's `Invoke` does. A
    /// process that died or timed out before is replaced by a new one first (a cold start).
    pub async fn invoke(&mut self, event: Value) -> Result<Invocation> {
        if self.exited || matches!(self.child.try_wait(), Ok(Some(_))) {
            self.restart()?;
        }
        self.process.busy.store(true, Ordering::SeqCst);
        let result = self.invoke_running(event).await;
        self.process.busy.store(false, Ordering::SeqCst);
        result
    }

    async fn invoke_running(&mut self, event: Value) -> Result<Invocation> {
        let id = format!(
            "local-{}-{}",
            self.name,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        );
        let (done, answer) = oneshot::channel();
        let (taken, picked_up) = oneshot::channel();
        self.outgoing
            .send(Pending {
                id: id.clone(),
                event,
                timeout: self.timeout,
                done,
                taken,
            })
            .await
            .context("the function's runtime API is gone")?;
        // A new process's init has its own limit, as on Lambda: the invocation's timeout
        // starts when the process takes the event.
        tokio::select! {
            taken = picked_up => taken.context("the invocation was dropped")?,
            status = self.child.wait() => return Err(self.exited(&id, status.ok()).await),
            () = tokio::time::sleep(INIT_LIMIT) => {
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
                self.exited = true;
                bail!("{} did not finish its init within {INIT_LIMIT:?}", self.name)
            }
        }
        tokio::select! {
            answer = answer => answer.context("the invocation was dropped"),
            status = self.child.wait() => Err(self.exited(&id, status.ok()).await),
            () = tokio::time::sleep(self.timeout) => {
                // Lambda stops an environment that timed out; its work in flight is abandoned.
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
                self.exited = true;
                self.inner.in_flight.lock().await.remove(&id);
                bail!("{} timed out after {:?}", self.name, self.timeout)
            }
        }
    }

    /// Why the invocation `id` ended with the process: its exit, init error and last lines.
    async fn exited(
        &mut self,
        id: &str,
        status: Option<std::process::ExitStatus>,
    ) -> anyhow::Error {
        self.exited = true;
        self.inner.in_flight.lock().await.remove(id);
        let init = self.inner.init_error.lock().await.clone();
        // Let the output readers catch up with what the process wrote last.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let output: Vec<String> = self
            .last_lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        anyhow::anyhow!(
            "{} exited ({status:?}) before answering; init error: {init:?}; last output:\n{}",
            self.name,
            output.join("\n")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_over_six_megabytes_is_refused() {
        let at_limit = Bytes::from(vec![
            b' ';
            crate::aws_proxy::limits::LAMBDA_MAX_SYNC_PAYLOAD_BYTES
        ]);
        let (outcome, status) = response_outcome(&at_limit);
        assert_eq!(status, StatusCode::ACCEPTED);
        assert!(matches!(outcome, Invocation::Response(_)));

        let over = Bytes::from(vec![
            b' ';
            crate::aws_proxy::limits::LAMBDA_MAX_SYNC_PAYLOAD_BYTES
                + 1
        ]);
        let (outcome, status) = response_outcome(&over);
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        match outcome {
            Invocation::Error(error) => {
                assert_eq!(error["errorType"], "Function.ResponseSizeTooLarge")
            }
            Invocation::Response(_) => panic!("a response over 6 MB must fail the invocation"),
        }
    }
}
