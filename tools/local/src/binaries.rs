//! The local stack with every function running as its real binary under the local Runtime API
//! (`runtime_api`): SQS sources invoke the process with the batch, HTTP requests become
//! API Gateway HTTP API (payload 2.0) events routed by the template's `HttpApi` events.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::pipeline::SqsHandler;
use crate::provision::Stack;
use crate::runtime_api::{Invocation, LineSink, LocalFunction, ProcessHandle};
use crate::template::{Template, scalar};

/// One `HttpApi` event of a function.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpRoute {
    pub method: String,
    pub path: String,
    pub function_id: String,
}

impl HttpRoute {
    /// The route's path parameters when `path` is one of its paths.
    pub fn matches_path(&self, path: &str) -> Option<HashMap<String, String>> {
        let pattern: Vec<&str> = self.path.trim_matches('/').split('/').collect();
        let actual: Vec<&str> = path.trim_matches('/').split('/').collect();
        if pattern.len() != actual.len() {
            return None;
        }
        let mut parameters = HashMap::new();
        for (p, a) in pattern.iter().zip(&actual) {
            if let Some(name) = p.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                if a.is_empty() {
                    return None;
                }
                parameters.insert(name.to_string(), a.to_string());
            } else if p != a {
                return None;
            }
        }
        Some(parameters)
    }
}

/// The route API Gateway picks for `method` and `path` among `routes`, with the path's
/// parameters; `None` is its `404 {"message":"Not Found"}`.
pub fn route_for<'a>(
    routes: &'a [HttpRoute],
    method: &str,
    path: &str,
) -> Option<(&'a HttpRoute, HashMap<String, String>)> {
    routes.iter().find_map(|route| {
        route
            .method
            .eq_ignore_ascii_case(method)
            .then(|| route.matches_path(path).map(|p| (route, p)))
            .flatten()
    })
}

/// Every `HttpApi` event in the template.
pub fn http_routes(template: &Template) -> Result<Vec<HttpRoute>> {
    let mut routes = Vec::new();
    for event in template.function_events() {
        if event.kind != "HttpApi" {
            continue;
        }
        let properties = event.require_properties()?;
        let get = |name: &str| {
            properties
                .get(name)
                .and_then(scalar)
                .ok_or_else(|| anyhow!("{}: HttpApi event without {name}", event.function_id))
        };
        routes.push(HttpRoute {
            method: get("Method")?.to_ascii_uppercase(),
            path: get("Path")?,
            function_id: event.function_id.clone(),
        });
    }
    Ok(routes)
}

/// `Metadata.BuildProperties.Binary` of every function: the binary SAM builds for it.
pub fn function_binaries(template: &Template) -> Result<Vec<(String, String)>> {
    template
        .resources_of_type("AWS::Serverless::Function")
        .into_iter()
        .map(|(id, _)| {
            let binary = template
                .resource(&id)?
                .get("Metadata")
                .and_then(|m| m.get("BuildProperties"))
                .and_then(|b| b.get("Binary"))
                .and_then(scalar)
                .ok_or_else(|| {
                    anyhow!("{id}: no Metadata.BuildProperties.Binary, so no binary to run locally")
                })?;
            Ok((id, binary))
        })
        .collect()
}

type Shared = Arc<Mutex<LocalFunction>>;

pub struct BinaryStack {
    functions: HashMap<String, Shared>,
    processes: Vec<(String, ProcessHandle)>,
    routes: Vec<HttpRoute>,
}

impl BinaryStack {
    /// Starts every function of the template from `binaries_dir`, each with the environment the
    /// template gives it plus `extra` (the emulator endpoint, region, credentials).
    pub async fn start(
        template: &Template,
        stack: &Stack,
        binaries_dir: &Path,
        extra: &[(String, String)],
    ) -> Result<BinaryStack> {
        BinaryStack::start_with(template, stack, binaries_dir, extra, None).await
    }

    /// [`BinaryStack::start`] with every function's output lines handed to `sink`.
    pub async fn start_with(
        template: &Template,
        stack: &Stack,
        binaries_dir: &Path,
        extra: &[(String, String)],
        sink: Option<LineSink>,
    ) -> Result<BinaryStack> {
        let mut functions = HashMap::new();
        let mut processes = Vec::new();
        for (id, binary) in function_binaries(template)? {
            let path = binaries_dir.join(&binary);
            if !path.exists() {
                bail!(
                    "{id}: binary {} not built (cargo build -p {binary})",
                    path.display()
                );
            }
            let mut environment: Vec<(String, String)> = stack
                .function_environment(template, &id)?
                .into_iter()
                .collect();
            environment.extend(extra.iter().cloned());
            // Each function signs with its own key: the AWS gateway checks it against its role.
            environment.retain(|(name, _)| name != "AWS_ACCESS_KEY_ID");
            environment.push((
                "AWS_ACCESS_KEY_ID".to_string(),
                crate::identity::function_access_key(&stack.prefix, &id),
            ));
            let size = crate::aws_proxy::limits::environment_size(
                stack
                    .function_environment(template, &id)?
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            );
            if size > crate::aws_proxy::limits::LAMBDA_MAX_ENVIRONMENT_BYTES {
                bail!("{id}: its environment is {size} bytes; Lambda allows 4 KB");
            }
            let timeout = template
                .resources_of_type("AWS::Serverless::Function")
                .into_iter()
                .find(|(fid, _)| *fid == id)
                .and_then(|(_, props)| props.get("Timeout").and_then(scalar))
                .or_else(|| {
                    template
                        .function_globals()
                        .and_then(|g| g.get("Timeout"))
                        .and_then(scalar)
                })
                .and_then(|t| t.parse::<u64>().ok())
                .unwrap_or(3);
            let function = LocalFunction::start_with(
                &id,
                &path,
                &environment,
                Duration::from_secs(timeout),
                sink.clone(),
            )
            .await
            .with_context(|| format!("starting {id}"))?;
            processes.push((id.clone(), function.process()));
            functions.insert(id, Arc::new(Mutex::new(function)));
        }
        processes.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(BinaryStack {
            functions,
            processes,
            routes: http_routes(template)?,
        })
    }

    /// Waits until every function's process finished its init (asked for its first event), at
    /// most `limit`; whether they all did.
    pub async fn wait_ready(&self, limit: Duration) -> bool {
        let started = std::time::Instant::now();
        loop {
            let mut ready = true;
            for function in self.functions.values() {
                ready &= function.lock().await.init_duration().is_some();
            }
            if ready {
                return true;
            }
            if started.elapsed() >= limit {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Each function's process, by logical id (sorted), to watch or kill it mid-invocation.
    pub fn processes(&self) -> &[(String, ProcessHandle)] {
        &self.processes
    }

    pub fn function(&self, id: &str) -> Option<Shared> {
        self.functions.get(id).cloned()
    }

    /// Invokes a function with any event (scheduled functions, direct invokes).
    pub async fn invoke(&self, id: &str, event: Value) -> Result<Invocation> {
        let function = self
            .function(id)
            .ok_or_else(|| anyhow!("no function {id}"))?;
        let mut function = function.lock().await;
        function.invoke(event).await
    }

    /// SQS handlers that hand each batch to the function's process.
    pub fn sqs_handlers(&self) -> HashMap<String, SqsHandler> {
        self.functions
            .iter()
            .map(|(id, function)| {
                let key = id.clone();
                let function = function.clone();
                let id = id.clone();
                let handler: SqsHandler = Arc::new(move |event: SqsEvent| {
                    let function = function.clone();
                    let id = id.clone();
                    Box::pin(async move {
                        let all_failed = || {
                            let mut response = SqsBatchResponse::default();
                            for record in &event.records {
                                let mut failure =
                                    aws_lambda_events::event::sqs::BatchItemFailure::default();
                                failure.item_identifier =
                                    record.message_id.clone().unwrap_or_default();
                                response.batch_item_failures.push(failure);
                            }
                            response
                        };
                        let payload = match serde_json::to_value(&event) {
                            Ok(payload) => payload,
                            Err(_) => return all_failed(),
                        };
                        let outcome = function.lock().await.invoke(payload).await;
                        match outcome {
                            Ok(Invocation::Response(body)) => {
                                serde_json::from_value(body).unwrap_or_default()
                            }
                            // A failed invocation returns the whole batch, as Lambda does.
                            Ok(Invocation::Error(error)) => {
                                tracing::warn!(function = %id, %error, "invocation failed");
                                all_failed()
                            }
                            Err(err) => {
                                tracing::warn!(function = %id, error = %err, "invocation failed");
                                all_failed()
                            }
                        }
                    })
                });
                (key, handler)
            })
            .collect()
    }

    /// The HTTP front: API Gateway's routing and payload format 2.0.
    pub fn router(self: &Arc<Self>) -> Router {
        let stack = self.clone();
        Router::new().fallback(move |request: Request| {
            let stack = stack.clone();
            async move { stack.serve(request).await }
        })
    }

    async fn serve(&self, request: Request) -> Response {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path().to_string();
        let method = parts.method.as_str().to_ascii_uppercase();
        let Some((route, parameters)) = self.routes.iter().find_map(|route| {
            (route.method == method)
                .then(|| route.matches_path(&path).map(|p| (route, p)))
                .flatten()
        }) else {
            return (
                StatusCode::NOT_FOUND,
                axum::Json(json!({"message": "Not Found"})),
            )
                .into_response();
        };
        let Ok(bytes) = axum::body::to_bytes(body, 10 * 1024 * 1024).await else {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                axum::Json(json!({"message": "Request Entity Too Large"})),
            )
                .into_response();
        };
        let event = gateway_event(route, &parameters, &parts.headers, &parts.uri, &bytes);
        let invoked = tokio::time::timeout(
            crate::aws_proxy::limits::API_GATEWAY_TIMEOUT,
            self.invoke(&route.function_id, event),
        );
        match invoked.await {
            Ok(Ok(Invocation::Response(response))) => gateway_response(&response),
            // API Gateway's answer when the integration outlives its 30 s.
            Err(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"message": "Service Unavailable"})),
            )
                .into_response(),
            _ => (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(json!({"message": "Internal Server Error"})),
            )
                .into_response(),
        }
    }
}

fn gateway_event(
    route: &HttpRoute,
    parameters: &HashMap<String, String>,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
    body: &Bytes,
) -> Value {
    let mut merged: HashMap<String, String> = HashMap::new();
    for (name, value) in headers {
        let value = value.to_str().unwrap_or_default().to_string();
        merged
            .entry(name.as_str().to_ascii_lowercase())
            .and_modify(|v| {
                v.push(',');
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let query = uri.query().unwrap_or_default().to_string();
    let query_parameters: HashMap<String, String> =
        serde_urlencoded::from_str::<Vec<(String, String)>>(&query)
            .unwrap_or_default()
            .into_iter()
            .collect();
    let (body, encoded) = match std::str::from_utf8(body) {
        Ok(text) => (text.to_string(), false),
        Err(_) => (base64::engine::general_purpose::STANDARD.encode(body), true),
    };
    let now = chrono::Utc::now();
    let route_key = format!("{} {}", route.method, route.path);
    let mut event = json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": uri.path(),
        "rawQueryString": query,
        "headers": merged,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": merged.get("host").cloned().unwrap_or_else(|| "localhost".into()),
            "domainPrefix": "local",
            "http": {
                "method": route.method,
                "path": uri.path(),
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": merged.get("user-agent").cloned().unwrap_or_default(),
            },
            "requestId": cuid2::create_id(),
            "routeKey": route_key,
            "stage": "$default",
            "time": now.format("%d/%b/%Y:%H:%M:%S %z").to_string(),
            "timeEpoch": now.timestamp_millis(),
        },
        "isBase64Encoded": encoded,
    });
    if !query_parameters.is_empty() {
        event["queryStringParameters"] = json!(query_parameters);
    }
    if !parameters.is_empty() {
        event["pathParameters"] = json!(parameters);
    }
    if !body.is_empty() {
        event["body"] = json!(body);
    }
    event
}

fn gateway_response(response: &Value) -> Response {
    let status = response["statusCode"]
        .as_u64()
        .and_then(|s| StatusCode::from_u16(s as u16).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let text = response["body"].as_str().unwrap_or_default();
    let body = if response["isBase64Encoded"].as_bool() == Some(true) {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap_or_default()
    } else {
        text.as_bytes().to_vec()
    };
    let mut out = Response::new(Body::from(body));
    *out.status_mut() = status;
    if let Some(headers) = response["headers"].as_object() {
        for (name, value) in headers {
            if let (Ok(name), Some(Ok(value))) = (
                HeaderName::from_bytes(name.as_bytes()),
                value.as_str().map(HeaderValue::from_str),
            ) {
                out.headers_mut().insert(name, value);
            }
        }
    }
    out
}
