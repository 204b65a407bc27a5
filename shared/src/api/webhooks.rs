//! `GET | POST | DELETE /api/webhooks[/{id}]`: an account's webhook endpoints.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, Caller, JsonBody, shape};
use crate::domain::{EventType, time};
use crate::ports::WebhookEndpoints;
use crate::webhooks::resolver::GuardedResolver;
use crate::webhooks::url_policy::UrlPolicy;
use crate::webhooks::{EndpointView, MAX_ENDPOINTS_PER_ACCOUNT, WebhookEndpoint};

pub struct WebhookState<S> {
    pub store: S,
    pub policy: UrlPolicy,
    /// Resolves endpoint host names at creation: the policy's own, or a scripted one in tests.
    pub resolver: GuardedResolver,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    url: String,
    #[serde(default)]
    events: Option<Vec<EventType>>,
}

pub async fn create<S: WebhookEndpoints>(
    State(state): State<Arc<WebhookState<S>>>,
    Extension(Caller(account)): Extension<Caller>,
    JsonBody(request): JsonBody<CreateEndpoint>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let events = match request.events {
        None => None,
        Some(events) if events.is_empty() => {
            return Err(ApiError::invalid_request(
                "events must not be empty; omit it to receive every event",
            ));
        }
        Some(mut events) => {
            events.sort_by_key(|e| e.as_str());
            events.dedup();
            Some(events)
        }
    };
    // The documented shape, in production. A deployment allowing private targets (the local
    // stack, tests) takes any URL its policy does, `http` and IP addresses included.
    if !state.policy.allow_private && !shape::is_webhook_url(&request.url) {
        return Err(ApiError::invalid_request(
            "url must be an https URL on a DNS name, without credentials",
        ));
    }
    let url = state
        .policy
        .check_with(&request.url, &state.resolver)
        .await
        .map_err(ApiError::invalid_request)?;
    if state.store.endpoints(&account).await?.len() >= MAX_ENDPOINTS_PER_ACCOUNT {
        return Err(ApiError::conflict(format!(
            "an account can have at most {MAX_ENDPOINTS_PER_ACCOUNT} webhook endpoints"
        )));
    }
    let endpoint = WebhookEndpoint::new(account, url.to_string(), events, time::now());
    state.store.save_endpoint(&endpoint).await?;
    tracing::info!(endpoint_id = %endpoint.id, account_id = %endpoint.account_id, "webhook endpoint created");
    Ok((
        StatusCode::CREATED,
        Json(json!({ "data": EndpointView::of(&endpoint, true) })),
    ))
}

pub async fn list<S: WebhookEndpoints>(
    State(state): State<Arc<WebhookState<S>>>,
    Extension(Caller(account)): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    let endpoints = state.store.endpoints(&account).await?;
    let views: Vec<EndpointView> = endpoints
        .iter()
        .map(|e| EndpointView::of(e, false))
        .collect();
    Ok(Json(json!({ "data": views })))
}

pub async fn delete<S: WebhookEndpoints>(
    State(state): State<Arc<WebhookState<S>>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if id.len() > 64 || !id.starts_with("whk_") {
        return Err(ApiError::not_found("webhook endpoint"));
    }
    if state.store.delete_endpoint(&account, &id).await? {
        tracing::info!(endpoint_id = %id, account_id = %account, "webhook endpoint deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("webhook endpoint"))
    }
}
