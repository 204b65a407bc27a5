//! A fault proxy in front of the AWS emulators (moto, and DynamoDB Local for DynamoDB when one
//! runs): forwards the functions' AWS calls and, at the configured
//! rate, answers one instead with a fault in the service's own protocol (the AWS JSON protocols
//! all three services speak): throttling, a 500, a connection reset before the call reaches
//! AWS or after it took effect, or added latency. Nothing in production code changes: only the
//! functions' `AWS_ENDPOINT_URL` points here.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub use muchaw_local::upstreams::Upstreams;

/// One kind of AWS fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AwsFault {
    /// `ThrottlingException` (SQS, Secrets Manager) or `ProvisionedThroughputExceededException`
    /// / `ThrottlingException` (DynamoDB), HTTP 400: nothing happened.
    Throttled,
    /// HTTP 500 `InternalServerError` / `InternalFailure`: nothing happened.
    ServerError,
    /// The connection drops before the call reaches AWS.
    ResetBefore,
    /// The call takes effect, then the connection drops before its answer.
    ResetAfter,
    /// 50 to 800 ms more before the call goes on.
    Latency,
}

impl AwsFault {
    pub const ALL: [AwsFault; 5] = [
        AwsFault::Throttled,
        AwsFault::ServerError,
        AwsFault::ResetBefore,
        AwsFault::ResetAfter,
        AwsFault::Latency,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AwsFault::Throttled => "throttled",
            AwsFault::ServerError => "500",
            AwsFault::ResetBefore => "connection reset (before the call)",
            AwsFault::ResetAfter => "connection reset (after the call took effect)",
            AwsFault::Latency => "added latency",
        }
    }
}

struct ProxyState {
    upstreams: Upstreams,
    client: reqwest::Client,
    rate: Mutex<f64>,
    rng: Mutex<StdRng>,
    /// (service, fault) -> count.
    injected: Mutex<BTreeMap<(String, AwsFault), u64>>,
    /// service -> requests forwarded or faulted.
    requests: Mutex<BTreeMap<String, u64>>,
    enabled: AtomicBool,
}

/// The proxy; stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    pub async fn start(upstreams: Upstreams, rate: f64, seed: u64) -> Result<FaultProxy> {
        let state = Arc::new(ProxyState {
            upstreams,
            client: muchaw_shared::http_client::reqwest_builder()?
                .pool_max_idle_per_host(64)
                .build()
                .context("proxy client")?,
            rate: Mutex::new(rate),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            injected: Mutex::default(),
            requests: Mutex::default(),
            enabled: AtomicBool::new(false),
        });
        let app = Router::new().fallback(forward).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FaultProxy { addr, state, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts injecting (the proxy starts calm, so setting the run up is not faulted).
    pub fn storm(&self) {
        self.state.enabled.store(true, Ordering::SeqCst);
    }

    /// Stops injecting (calls go straight through from now on).
    pub fn calm(&self) {
        self.state.enabled.store(false, Ordering::SeqCst);
    }

    pub fn injected(&self) -> BTreeMap<(String, AwsFault), u64> {
        lock(&self.state.injected).clone()
    }

    pub fn requests(&self) -> BTreeMap<String, u64> {
        lock(&self.state.requests).clone()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// `dynamodb`, `sqs` or `secretsmanager`, from the JSON protocols' `X-Amz-Target`.
fn service_of(headers: &HeaderMap) -> String {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if target.starts_with("DynamoDB") {
        "dynamodb".into()
    } else if target.starts_with("AmazonSQS") {
        "sqs".into()
    } else if target.to_ascii_lowercase().starts_with("secretsmanager") {
        "secretsmanager".into()
    } else {
        "other".into()
    }
}

fn choose(state: &ProxyState) -> Option<AwsFault> {
    if !state.enabled.load(Ordering::SeqCst) {
        return None;
    }
    let rate = *lock(&state.rate);
    let mut rng = lock(&state.rng);
    if rate <= 0.0 || !rng.random_bool(rate.min(1.0)) {
        return None;
    }
    Some(AwsFault::ALL[rng.random_range(0..AwsFault::ALL.len())])
}

/// The error body and headers each service's SDK reads (`__type` in the body; SQS's JSON
/// protocol also names the query-compatible code in `x-amzn-query-error`).
fn aws_error(service: &str, status: StatusCode, code: &str, message: &str) -> Response {
    let typed = match service {
        "dynamodb" => format!("com.amazonaws.dynamodb.v20120810#{code}"),
        "sqs" => format!("com.amazonaws.sqs#{code}"),
        _ => code.to_string(),
    };
    let body = serde_json::json!({"__type": typed, "message": message}).to_string();
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/x-amz-json-1.0"),
    );
    if let Ok(value) = HeaderValue::from_str(code) {
        headers.insert("x-amzn-errortype", value);
    }
    if service == "sqs"
        && let Ok(value) = HeaderValue::from_str(&format!("{code};Sender"))
    {
        headers.insert("x-amzn-query-error", value);
    }
    response
}

/// A response whose body fails after its head: the connection is dropped mid-answer, which the
/// client sees as a reset.
fn reset() -> Response {
    let stream = futures::stream::once(async {
        Err::<bytes::Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "chaos: connection reset",
        ))
    });
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/x-amz-json-1.0"),
    );
    response
}

async fn forward(State(state): State<Arc<ProxyState>>, request: Request) -> Response {
    let service = service_of(request.headers());
    *lock(&state.requests).entry(service.clone()).or_default() += 1;
    let fault = choose(&state);
    if let Some(fault) = fault {
        *lock(&state.injected)
            .entry((service.clone(), fault))
            .or_default() += 1;
    }
    match fault {
        Some(AwsFault::Throttled) => {
            let code = match service.as_str() {
                "dynamodb" if lock(&state.rng).random_bool(0.5) => {
                    "ProvisionedThroughputExceededException"
                }
                _ => "ThrottlingException",
            };
            return aws_error(&service, StatusCode::BAD_REQUEST, code, "Rate exceeded");
        }
        Some(AwsFault::ServerError) => {
            let code = if service == "dynamodb" {
                "InternalServerError"
            } else {
                "InternalFailure"
            };
            return aws_error(
                &service,
                StatusCode::INTERNAL_SERVER_ERROR,
                code,
                "We encountered an internal error. Please try again.",
            );
        }
        Some(AwsFault::ResetBefore) => return reset(),
        Some(AwsFault::Latency) => {
            let ms = lock(&state.rng).random_range(50..=800);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        Some(AwsFault::ResetAfter) | None => {}
    }
    let answer = match forward_inner(&state, request).await {
        Ok(response) => response,
        Err(err) => (StatusCode::BAD_GATEWAY, format!("proxy: {err:#}")).into_response(),
    };
    if fault == Some(AwsFault::ResetAfter) {
        return reset();
    }
    answer
}

fn is_hop_header(name: &str) -> bool {
    matches!(
        name,
        "host" | "content-length" | "connection" | "transfer-encoding" | "keep-alive"
    )
}

async fn forward_inner(state: &ProxyState, request: Request) -> Result<Response> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 64 * 1024 * 1024).await?;
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let mut outgoing = state.client.request(
        parts.method.clone(),
        format!("{}{path}", state.upstreams.for_request(&parts.headers)),
    );
    for (name, value) in &parts.headers {
        if !is_hop_header(name.as_str()) {
            outgoing = outgoing.header(name, value);
        }
    }
    let answer = outgoing.body(body).send().await?;
    let status = answer.status();
    let headers = answer.headers().clone();
    let answer_body = answer.bytes().await?;
    let mut response = Response::new(Body::from(answer_body));
    *response.status_mut() = status;
    for (name, value) in &headers {
        if !is_hop_header(name.as_str()) {
            response.headers_mut().append(name, value.clone());
        }
    }
    Ok(response)
}
