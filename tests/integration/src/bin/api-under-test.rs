//! The numbers API and the signup callback on a loopback HTTP port, for the schema-driven tests
//! (`scripts/schema-tests.sh`): every request is turned into the API Gateway v2 event Lambda
//! would get and run through the real routers under `lambda_http`, over a private stack on moto.
//!
//! Requests reach the routers only through template.yaml's `HttpApi` routes, and each runs with
//! its function's own AWS rights (the local AWS gateway), as deployed.
//!
//! Differences from a deployment, each because the test must be deterministic and offline:
//! no request rate limit (a run makes thousands of requests a minute), and webhook host names
//! resolve to one public address instead of through DNS (the address policy is otherwise the
//! production one: `https` only, no private targets).
//!
//! Prints one JSON line on stdout once it listens: `{"url": ..., "key": ...}`.

use std::net::{IpAddr, Ipv4Addr};

use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use muchaw_shared::api;
use muchaw_shared::domain::Status;
use muchaw_shared::domain::secrets::Secret;
use muchaw_shared::domain::signup_link::LinkSigner;
use muchaw_shared::webhooks::resolver::{GuardedResolver, Lookup, NameLookup};
use muchaw_shared::webhooks::url_policy::UrlPolicy;
use muchaw_tests::{TestEnv, authorization_event, invoke_router, sample_number};
use serde_json::{Value, json};

/// Every host name is this public address: nothing here may depend on DNS.
struct PublicAddress;

impl NameLookup for PublicAddress {
    fn lookup<'a>(&'a self, _host: &'a str) -> Lookup<'a> {
        Box::pin(async { Ok(vec![IpAddr::V4(Ipv4Addr::new(93, 184, 215, 14))]) })
    }
}

struct Loopback;

impl NameLookup for Loopback {
    fn lookup<'a>(&'a self, _host: &'a str) -> Lookup<'a> {
        Box::pin(async { Ok(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]) })
    }
}

fn routes(env: &TestEnv) -> axum::Router {
    let store = env.function_store();
    let signer = LinkSigner::new(Secret::new("schema-tests-signing-key"));
    let routes = api::numbers_routes(store.clone(), env.queue())
        .merge(api::signup_link_routes(
            store.clone(),
            signer.clone(),
            "https://signup.example.com/start".into(),
        ))
        .merge(api::signup_callback_routes(
            store.clone(),
            env.queue(),
            signer,
        ))
        .merge(api::webhook_routes_resolving(
            store.clone(),
            // Test events and resends go nowhere: every name resolves to loopback, which the
            // production policy refuses before connecting.
            muchaw_shared::webhooks::sender::Sender {
                http: muchaw_shared::webhooks::sender::http_client(
                    std::time::Duration::from_secs(2),
                    GuardedResolver::new(std::sync::Arc::new(Loopback), false),
                )
                .expect("http client"),
                policy: UrlPolicy {
                    allow_private: false,
                },
            },
            GuardedResolver::new(std::sync::Arc::new(PublicAddress), false),
        ));
    // Behind the template's routes, each request with its function's rights, as deployed.
    env.template_routed(api::finish(routes, store, api::ApiLimits::UNLIMITED))
}

fn bad_gateway(why: impl std::fmt::Display) -> Response {
    eprintln!("api-under-test: {why}");
    let mut response = Response::new(Body::from(format!("api-under-test: {why}")));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}

/// The HTTP request as API Gateway's v2 event.
async fn event(request: Request) -> Result<Value, String> {
    let (parts, body) = request.into_parts();
    let mut headers = serde_json::Map::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_string())
            .and_modify(|joined| {
                if let Value::String(joined) = joined {
                    joined.push(',');
                    joined.push_str(&value);
                }
            })
            .or_insert(Value::String(value));
    }
    let bytes = to_bytes(body, usize::MAX)
        .await
        .map_err(|e| format!("reading the body: {e}"))?;
    let text = (!bytes.is_empty()).then(|| String::from_utf8(bytes.to_vec()));
    let mut event = authorization_event(
        parts.method.as_str(),
        parts.uri.path(),
        parts.uri.query().unwrap_or(""),
        Value::Object(headers),
        match &text {
            Some(Ok(text)) => Some(text.as_str()),
            _ => None,
        },
    );
    if let Some(Err(_)) = text {
        use base64::Engine;
        event["body"] = json!(base64::engine::general_purpose::STANDARD.encode(&bytes));
        event["isBase64Encoded"] = json!(true);
    }
    Ok(event)
}

/// The Lambda response as the HTTP response API Gateway would give.
fn response(lambda: Value) -> Result<Response, String> {
    let status = lambda["statusCode"]
        .as_u64()
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or_else(|| format!("no status in {lambda}"))?;
    let body = match (lambda["body"].as_str(), lambda["isBase64Encoded"].as_bool()) {
        (Some(text), Some(true)) => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| format!("body: {e}"))?
        }
        (Some(text), _) => text.as_bytes().to_vec(),
        (None, _) => Vec::new(),
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    for source in ["headers", "multiValueHeaders"] {
        let Some(headers) = lambda[source].as_object() else {
            continue;
        };
        for (name, values) in headers {
            let values = match values {
                Value::Array(values) => values.clone(),
                value => vec![value.clone()],
            };
            let name = HeaderName::try_from(name.as_str()).map_err(|e| e.to_string())?;
            response.headers_mut().remove(&name);
            for value in values.iter().filter_map(Value::as_str) {
                let value = HeaderValue::try_from(value).map_err(|e| e.to_string())?;
                response.headers_mut().append(name.clone(), value);
            }
        }
    }
    Ok(response)
}

async fn handle(router: axum::Router, request: Request) -> Response {
    let event = match event(request).await {
        Ok(event) => event,
        Err(why) => return bad_gateway(why),
    };
    // `lambda_http`'s adapter future is not `Send`: it runs on a blocking thread of its own.
    let runtime = tokio::runtime::Handle::current();
    let lambda =
        tokio::task::spawn_blocking(move || runtime.block_on(invoke_router(router, event))).await;
    match lambda {
        Ok(lambda) => response(lambda).unwrap_or_else(bad_gateway),
        Err(e) => bad_gateway(format!("the router panicked: {e}")),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = TestEnv::new().await;
    let (account, key) = env.account_with_key("schema-tests").await;
    // A number in each status, so the schema's Number is checked in every shape it has.
    let numbers: Vec<_> = Status::ALL
        .iter()
        .enumerate()
        .map(|(i, status)| sample_number(&account, *status, i as i64))
        .collect();
    env.store.import_numbers(&numbers).await?;
    let router = routes(&env);
    let app = axum::Router::new().fallback(move |request: Request| handle(router.clone(), request));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    println!("{}", json!({"url": url, "key": key}));
    axum::serve(listener, app).await?;
    Ok(())
}
