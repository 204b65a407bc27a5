//! The one proxy in front of the AWS emulators: every AWS request of a function goes through
//! it, and hooks decide what happens to it. The authorizer ([`iam`]) answers what the caller's
//! role may not do with AWS's `AccessDenied`, the limits ([`limits`]) refuse what AWS refuses,
//! the bench counts and the chaos run injects faults, each as a [`Hook`]. Production code is
//! untouched: only its endpoint and credentials point here.

pub mod iam;
pub mod limits;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::upstreams::Upstreams;

/// The AWS services the functions call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    DynamoDb,
    Sqs,
    SecretsManager,
    Other,
}

impl Service {
    /// The service's prefix in IAM actions (`dynamodb:GetItem`).
    pub fn iam_prefix(self) -> &'static str {
        match self {
            Service::DynamoDb => "dynamodb",
            Service::Sqs => "sqs",
            Service::SecretsManager => "secretsmanager",
            Service::Other => "other",
        }
    }
}

/// One AWS API request as the proxy read it.
#[derive(Clone, Debug)]
pub struct AwsCall {
    pub service: Service,
    /// The API action (`TransactWriteItems`, `SendMessage`, ...).
    pub action: String,
    /// The access key id the request was signed with (SigV4's `Credential=`).
    pub access_key: Option<String>,
    pub headers: HeaderMap,
    pub query: Option<String>,
    pub body: Bytes,
    /// The body of a JSON-protocol request (every action the functions use).
    pub json: Value,
    pub received_at: Instant,
}

impl AwsCall {
    /// Reads service, action and caller from a request's head and body.
    pub fn read(headers: &HeaderMap, query: Option<&str>, body: Bytes) -> AwsCall {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let access_key = header("authorization").and_then(|auth| {
            let scope = auth.split("Credential=").nth(1)?;
            scope.split('/').next().map(str::to_string)
        });
        let (service, action) = match header("x-amz-target") {
            Some(target) => {
                let (prefix, action) = target.split_once('.').unwrap_or((target, ""));
                let service = if prefix.starts_with("DynamoDB") {
                    Service::DynamoDb
                } else if prefix.starts_with("AmazonSQS") {
                    Service::Sqs
                } else if prefix.eq_ignore_ascii_case("secretsmanager") {
                    Service::SecretsManager
                } else {
                    Service::Other
                };
                (service, action.to_string())
            }
            None => {
                let form = std::str::from_utf8(&body).unwrap_or_default();
                let action = [query.unwrap_or_default(), form]
                    .iter()
                    .flat_map(|q| q.split('&'))
                    .find_map(|pair| pair.strip_prefix("Action=").map(str::to_string))
                    .unwrap_or_default();
                (Service::Other, action)
            }
        };
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        AwsCall {
            service,
            action,
            access_key,
            headers: headers.clone(),
            query: query.map(str::to_string),
            body,
            json,
            received_at: Instant::now(),
        }
    }
}

/// The upstream's answer to a forwarded call.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
    pub elapsed: Duration,
}

/// What a hook decides about a call before it goes upstream.
#[derive(Debug)]
pub enum Verdict {
    Forward,
    /// Forward after waiting this long.
    Delay(Duration),
    /// Answer this instead of forwarding (a denial, a limit, a fault).
    Refuse(Response),
    /// Drop the connection before the call reaches the emulator.
    ResetBefore,
    /// Forward, then drop the connection before the answer.
    ResetAfter,
}

/// One concern of the proxy (authorize, enforce limits, count, inject faults).
pub trait Hook: Send + Sync + 'static {
    fn before(&self, _call: &AwsCall) -> Verdict {
        Verdict::Forward
    }

    /// Sees every answer the emulator gave (not the ones a hook gave instead).
    fn after(&self, _call: &AwsCall, _answer: &Answer) {}
}

struct ProxyState {
    upstreams: Upstreams,
    client: reqwest::Client,
    hooks: Vec<Arc<dyn Hook>>,
}

/// The proxy; stops when dropped.
pub struct AwsProxy {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AwsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AwsProxy {
    /// Starts a proxy on a free loopback port, on the current runtime.
    pub async fn start(upstreams: Upstreams, hooks: Vec<Arc<dyn Hook>>) -> Result<AwsProxy> {
        let state = Arc::new(ProxyState {
            upstreams,
            client: muchaw_shared::http_client::reqwest_builder()?
                .pool_max_idle_per_host(256)
                .build()
                .context("proxy client")?,
            hooks,
        });
        let app = Router::new().fallback(forward).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(AwsProxy { addr, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// What stands between every function and AWS here: its role's rights and AWS's limits.
#[derive(Clone)]
pub struct Guards {
    pub authorizer: Arc<iam::Authorizer>,
    pub limits: Arc<limits::Limits>,
}

impl Default for Guards {
    fn default() -> Self {
        Guards::new()
    }
}

impl Guards {
    /// Guards whose authorizer logs to `MUCHAW_IAM_LOG_DIR` when it is set.
    pub fn new() -> Guards {
        Guards {
            authorizer: Arc::new(iam::Authorizer::from_environment()),
            limits: Arc::new(limits::Limits::default()),
        }
    }

    /// Gives `stack`'s functions their roles and tells the limits its tables' keys.
    pub fn register(&self, template: &crate::Template, stack: &crate::Stack) -> Result<()> {
        self.authorizer.register(template, stack)?;
        crate::provision::register_tables(template, stack, &self.limits)
    }

    /// The hooks, authorizer first: a denied request is refused before anything else.
    pub fn hooks(&self) -> Vec<Arc<dyn Hook>> {
        vec![self.authorizer.clone(), self.limits.clone()]
    }
}

/// The gateway every test of a process shares (like [`crate::Moto::shared`]): the shared moto
/// behind the authorizer and AWS's limits, on a runtime of its own so it outlives each test's.
pub struct SharedGateway {
    pub url: String,
    pub guards: Guards,
}

impl SharedGateway {
    pub fn get() -> &'static SharedGateway {
        static SHARED: OnceLock<SharedGateway> = OnceLock::new();
        SHARED.get_or_init(|| {
            let moto = crate::Moto::shared().endpoint().to_string();
            let guards = Guards::new();
            let hooks = guards.hooks();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(err) => {
                        let _ = tx.send(Err(anyhow::anyhow!(err)));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match AwsProxy::start(Upstreams::moto(&moto), hooks).await {
                        Ok(proxy) => {
                            let _ = tx.send(Ok(proxy.url()));
                            std::future::pending::<()>().await;
                            drop(proxy);
                        }
                        Err(err) => {
                            let _ = tx.send(Err(err));
                        }
                    }
                });
            });
            match rx.recv() {
                Ok(Ok(url)) => SharedGateway { url, guards },
                Ok(Err(err)) => panic!("the AWS gateway could not start: {err:#}"),
                Err(err) => panic!("the AWS gateway could not start: {err}"),
            }
        })
    }
}

async fn forward(State(state): State<Arc<ProxyState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, 64 * 1024 * 1024).await {
        Ok(body) => body,
        Err(err) => return (StatusCode::BAD_REQUEST, format!("proxy: {err}")).into_response(),
    };
    let call = AwsCall::read(&parts.headers, parts.uri.query(), body);
    let mut reset_after = false;
    for hook in &state.hooks {
        match hook.before(&call) {
            Verdict::Forward => {}
            Verdict::Delay(wait) => tokio::time::sleep(wait).await,
            Verdict::Refuse(response) => return response,
            Verdict::ResetBefore => return reset(),
            Verdict::ResetAfter => reset_after = true,
        }
    }
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
    let asked = Instant::now();
    let answered = async {
        let answer = outgoing.body(call.body.clone()).send().await?;
        let status = answer.status();
        let headers = answer.headers().clone();
        let body = answer.bytes().await?;
        Ok::<_, reqwest::Error>((status, headers, body))
    }
    .await;
    let (status, headers, answer_body) = match answered {
        Ok(answered) => answered,
        Err(err) => return (StatusCode::BAD_GATEWAY, format!("proxy: {err}")).into_response(),
    };
    let answer = Answer {
        status,
        body: answer_body,
        elapsed: asked.elapsed(),
    };
    for hook in &state.hooks {
        hook.after(&call, &answer);
    }
    if reset_after {
        return reset();
    }
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = status;
    for (name, value) in &headers {
        if !is_hop_header(name.as_str()) {
            response.headers_mut().append(name, value.clone());
        }
    }
    response
}

fn is_hop_header(name: &str) -> bool {
    matches!(
        name,
        "host" | "content-length" | "connection" | "transfer-encoding" | "keep-alive"
    )
}

/// An error in the service's own JSON protocol, as its SDK reads it (`__type` in the body;
/// SQS also names the query-compatible code in `x-amzn-query-error`).
pub fn aws_error(service: Service, status: StatusCode, code: &str, message: &str) -> Response {
    let typed = match service {
        Service::DynamoDb => format!("com.amazonaws.dynamodb.v20120810#{code}"),
        Service::Sqs => format!("com.amazonaws.sqs#{code}"),
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
    if service == Service::Sqs
        && let Ok(value) = HeaderValue::from_str(&format!("{code};Sender"))
    {
        headers.insert("x-amzn-query-error", value);
    }
    response
}

/// A response whose body fails after its head: the connection drops mid-answer, which the
/// client sees as a reset.
pub fn reset() -> Response {
    let stream = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "proxy: connection reset",
        ))
    });
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/x-amz-json-1.0"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_names_its_service_action_and_caller() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-amz-target",
            "DynamoDB_20120810.TransactWriteItems".parse().unwrap(),
        );
        headers.insert(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=LOCALt1HealthSyncFunction/20261208/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=00"
                .parse()
                .unwrap(),
        );
        let call = AwsCall::read(
            &headers,
            None,
            Bytes::from_static(b"{\"TransactItems\":[]}"),
        );
        assert_eq!(call.service, Service::DynamoDb);
        assert_eq!(call.action, "TransactWriteItems");
        assert_eq!(
            call.access_key.as_deref(),
            Some("LOCALt1HealthSyncFunction")
        );
        assert!(call.json["TransactItems"].is_array());
    }
}
