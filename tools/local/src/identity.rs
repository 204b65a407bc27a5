//! Whose AWS rights a request runs with locally. A binary signs with its function's access
//! key ([`function_access_key`], from its environment); a handler called in this process signs
//! with the key of the function whose work is running ([`as_function`], a task-local set by
//! the pipeline, the template-routed API and the scheduler), so the AWS gateway's authorizer
//! checks it against that function's role, as AWS checks a function's role.

use std::future::Future;

use aws_config::SdkConfig;
use aws_config::identity::IdentityCache;
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};

pub use crate::aws_proxy::iam::function_access_key;

tokio::task_local! {
    static FUNCTION: String;
}

/// Runs `work` as the function `function_id`: its AWS requests carry that function's identity.
pub async fn as_function<F: Future>(function_id: &str, work: F) -> F::Output {
    FUNCTION.scope(function_id.to_string(), work).await
}

/// The function whose work is running on this task, if any.
pub fn current_function() -> Option<String> {
    FUNCTION.try_with(Clone::clone).ok()
}

/// Credentials of the function whose work is running, for one stack; outside any function,
/// `default_function`'s, or the operator's (`test`, which the authorizer does not limit).
#[derive(Debug, Clone)]
pub struct FunctionCredentials {
    stack_prefix: String,
    default_function: Option<String>,
}

impl ProvideCredentials for FunctionCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        let key = current_function()
            .or_else(|| self.default_function.clone())
            .map(|function| function_access_key(&self.stack_prefix, &function))
            .unwrap_or_else(|| "test".to_string());
        future::ProvideCredentials::ready(Ok(Credentials::new(
            key,
            "local-function-secret",
            None,
            None,
            "local-function",
        )))
    }
}

/// `base` aimed at the AWS gateway, signing as the running function of `stack_prefix`'s
/// stack (or `default_function` outside any). No identity cache: each request asks whose it is.
pub fn function_sdk_config(
    base: &SdkConfig,
    gateway_url: &str,
    stack_prefix: &str,
    default_function: Option<&str>,
) -> SdkConfig {
    base.to_builder()
        .endpoint_url(gateway_url)
        .credentials_provider(SharedCredentialsProvider::new(FunctionCredentials {
            stack_prefix: stack_prefix.to_string(),
            default_function: default_function.map(str::to_string),
        }))
        .identity_cache(IdentityCache::no_cache())
        .build()
}

/// `router` as API Gateway fronts it: only the template's `HttpApi` routes reach it (anything
/// else is API Gateway's own `404`), each request handled as the function its route belongs to.
pub fn template_routed(
    router: axum::Router,
    routes: Vec<crate::binaries::HttpRoute>,
) -> axum::Router {
    use axum::response::IntoResponse;
    let routes = std::sync::Arc::new(routes);
    router.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let routes = routes.clone();
            async move {
                let too_large = request
                    .headers()
                    .get(axum::http::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<usize>().ok())
                    .is_some_and(|length| {
                        length > crate::aws_proxy::limits::API_GATEWAY_MAX_PAYLOAD_BYTES
                    });
                if too_large {
                    return (
                        axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                        axum::Json(serde_json::json!({"message": "Request Entity Too Large"})),
                    )
                        .into_response();
                }
                let method = request.method().as_str().to_ascii_uppercase();
                let path = request.uri().path().to_string();
                let function = routes
                    .iter()
                    .find(|route| route.method == method && route.matches_path(&path).is_some())
                    .map(|route| route.function_id.clone());
                match function {
                    Some(function) => as_function(&function, next.run(request)).await,
                    None => (
                        axum::http::StatusCode::NOT_FOUND,
                        axum::Json(serde_json::json!({"message": "Not Found"})),
                    )
                        .into_response(),
                }
            }
        },
    ))
}
