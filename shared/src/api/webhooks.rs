//! `/api/webhooks[/{id}]`: an account's webhook endpoints, and operating them: change one
//! (`PATCH`), rotate its secret, send it a test event, read its delivery log and resend a
//! delivery.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::StatusCode;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use super::history::parse_page_query;
use super::idempotency::ShowsSecret;
use super::{ApiError, Caller, JsonBody, shape};
use crate::domain::history::EventPosition;
use crate::domain::{AccountId, EventType, new_event_id, time};
use crate::ports::{DeliveryLog, EndpointChange, WebhookEndpoints};
use crate::webhooks::log::{Attempt, DeliveryStatus, DeliveryView};
use crate::webhooks::resolver::GuardedResolver;
use crate::webhooks::sender::Sender;
use crate::webhooks::url_policy::UrlPolicy;
use crate::webhooks::{
    EndpointView, MAX_ENDPOINTS_PER_ACCOUNT, SECRET_ROTATION_GRACE_HOURS, WebhookEndpoint,
    generate_secret,
};

pub struct WebhookState<S> {
    pub store: S,
    pub policy: UrlPolicy,
    /// Resolves endpoint host names at creation: the policy's own, or a scripted one in tests.
    pub resolver: GuardedResolver,
    /// Posts test events and resends, as deliveries are posted.
    pub sender: Sender,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    url: String,
    #[serde(default)]
    events: Option<Vec<EventType>>,
}

/// Absent and `null` differ: absent leaves the field, `null` sets it to "every event".
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A field that may be left out but is never `null` (the document gives it no null).
fn not_null<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateEndpoint {
    #[serde(default, deserialize_with = "not_null")]
    url: Option<String>,
    #[serde(default, deserialize_with = "present")]
    events: Option<Option<Vec<EventType>>>,
    #[serde(default, deserialize_with = "not_null")]
    enabled: Option<bool>,
}

/// A subscription as stored: `None` for every event; repeats dropped.
fn subscription(events: Option<Vec<EventType>>) -> Result<Option<Vec<EventType>>, ApiError> {
    match events {
        None => Ok(None),
        Some(events) if events.is_empty() => Err(ApiError::invalid_request(
            "events must not be empty; omit it (or null) to receive every event",
        )),
        Some(events) if events.contains(&EventType::WebhookTest) => Err(ApiError::invalid_request(
            "webhook.test is sent only by POST /api/webhooks/{id}/test",
        )),
        Some(mut events) => {
            events.sort_by_key(|e| e.as_str());
            events.dedup();
            Ok(Some(events))
        }
    }
}

impl<S> WebhookState<S> {
    /// The URL as stored, if webhooks may go there.
    async fn checked_url(&self, raw: &str) -> Result<String, ApiError> {
        // The documented shape, in production. A deployment allowing private targets (the
        // local stack, tests) takes any URL its policy does, `http` and IP addresses included.
        if !self.policy.allow_private && !shape::is_webhook_url(raw) {
            return Err(ApiError::invalid_request(
                "url must be an https URL on a DNS name, without credentials",
            ));
        }
        let url = self
            .policy
            .check_with(raw, &self.resolver)
            .await
            .map_err(ApiError::invalid_request)?;
        Ok(url.to_string())
    }
}

fn not_found() -> ApiError {
    ApiError::not_found("webhook endpoint")
}

fn plausible_endpoint_id(id: &str) -> bool {
    id.len() <= 64 && id.starts_with("whk_")
}

/// The account's endpoint with this id; `404` for another account's, as for none.
async fn owned_endpoint<S: WebhookEndpoints>(
    store: &S,
    account: &AccountId,
    id: &str,
) -> Result<WebhookEndpoint, ApiError> {
    if !plausible_endpoint_id(id) {
        return Err(not_found());
    }
    store.endpoint(account, id).await?.ok_or_else(not_found)
}

pub async fn create<S: WebhookEndpoints>(
    State(state): State<Arc<WebhookState<S>>>,
    Extension(Caller(account)): Extension<Caller>,
    JsonBody(request): JsonBody<CreateEndpoint>,
) -> Result<(StatusCode, Extension<ShowsSecret>, Json<Value>), ApiError> {
    let events = subscription(request.events)?;
    let url = state.checked_url(&request.url).await?;
    if state.store.endpoints(&account).await?.len() >= MAX_ENDPOINTS_PER_ACCOUNT {
        return Err(ApiError::conflict(format!(
            "an account can have at most {MAX_ENDPOINTS_PER_ACCOUNT} webhook endpoints"
        )));
    }
    let endpoint = WebhookEndpoint::new(account, url, events, time::now());
    state.store.save_endpoint(&endpoint).await?;
    tracing::info!(endpoint_id = %endpoint.id, account_id = %endpoint.account_id, "webhook endpoint created");
    Ok((
        StatusCode::CREATED,
        Extension(ShowsSecret(endpoint.id.clone())),
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
    if !plausible_endpoint_id(&id) {
        return Err(not_found());
    }
    if state.store.delete_endpoint(&account, &id).await? {
        tracing::info!(endpoint_id = %id, account_id = %account, "webhook endpoint deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found())
    }
}

pub async fn update<S: WebhookEndpoints>(
    State(state): State<Arc<WebhookState<S>>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<UpdateEndpoint>,
) -> Result<Json<Value>, ApiError> {
    if request.url.is_none() && request.events.is_none() && request.enabled.is_none() {
        return Err(ApiError::invalid_request(
            "nothing to change: give url, events or enabled",
        ));
    }
    let events = match request.events {
        None => None,
        Some(events) => Some(subscription(events)?),
    };
    // Bad input is a 400 whether or not the endpoint exists.
    let url = match &request.url {
        Some(raw) => Some(state.checked_url(raw).await?),
        None => None,
    };
    owned_endpoint(&state.store, &account, &id).await?;
    let change = EndpointChange {
        url,
        events,
        enabled: request.enabled,
    };
    let endpoint = state
        .store
        .update_endpoint(&account, &id, &change)
        .await?
        .ok_or_else(not_found)?;
    tracing::info!(endpoint_id = %id, account_id = %account, enabled = endpoint.enabled, "webhook endpoint changed");
    Ok(Json(json!({ "data": EndpointView::of(&endpoint, false) })))
}

pub async fn rotate_secret<S: WebhookEndpoints>(
    State(state): State<Arc<WebhookState<S>>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<(Extension<ShowsSecret>, Json<Value>), ApiError> {
    owned_endpoint(&state.store, &account, &id).await?;
    let secret = generate_secret();
    let grace_ends = time::now() + chrono::Duration::hours(SECRET_ROTATION_GRACE_HOURS);
    let endpoint = state
        .store
        .rotate_secret(&account, &id, &secret, grace_ends)
        .await?
        .ok_or_else(not_found)?;
    tracing::info!(endpoint_id = %id, account_id = %account, "webhook secret rotated");
    Ok((
        Extension(ShowsSecret(endpoint.id.clone())),
        Json(json!({ "data": EndpointView::of(&endpoint, true) })),
    ))
}

/// What the endpoint answered to a test event.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct TestResult<'a> {
    event_id: &'a str,
    succeeded: bool,
    #[serde(flatten)]
    attempt: &'a Attempt,
}

pub async fn send_test<S: WebhookEndpoints>(
    State(state): State<Arc<WebhookState<S>>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let endpoint = owned_endpoint(&state.store, &account, &id).await?;
    let event_id = new_event_id();
    let body = json!({
        "id": event_id,
        "type": EventType::WebhookTest,
        "createdAt": time::format(&time::now()),
        "data": { "endpointId": endpoint.id },
    })
    .to_string();
    let attempt = state.sender.send(&endpoint, &event_id, &body).await;
    tracing::info!(endpoint_id = %id, status = attempt.status, duration_ms = attempt.duration_ms, "test event sent");
    Ok(Json(json!({
        "data": TestResult {
            event_id: &event_id,
            succeeded: attempt.succeeded(),
            attempt: &attempt,
        }
    })))
}

pub async fn deliveries<S: WebhookEndpoints + DeliveryLog>(
    State(state): State<Arc<WebhookState<S>>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let query = parse_page_query(raw.as_deref(), true)?;
    let status = query
        .status
        .as_deref()
        .map(str::parse::<DeliveryStatus>)
        .transpose()
        .map_err(|e| ApiError::invalid_request(e.to_string()))?;
    let endpoint = owned_endpoint(&state.store, &account, &id).await?;
    let page = state
        .store
        .deliveries(&endpoint.id, status, query.limit, query.cursor.as_ref())
        .await?;
    let data: Vec<DeliveryView> = page
        .deliveries
        .iter()
        .filter(|d| d.key.account_id == account)
        .map(DeliveryView::of)
        .collect();
    Ok(Json(json!({
        "data": data,
        "pagination": {
            "limit": query.limit,
            "nextCursor": page.next.as_ref().map(EventPosition::cursor),
        }
    })))
}

/// Sends a delivery again now, with its `webhook-id` and body, whatever its status (a
/// delivery in the dead-letter queue included); the attempt joins its log.
pub async fn resend<S: WebhookEndpoints + DeliveryLog>(
    State(state): State<Arc<WebhookState<S>>>,
    Extension(Caller(account)): Extension<Caller>,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let endpoint = owned_endpoint(&state.store, &account, &id).await?;
    let missing = || ApiError::not_found("delivery");
    let position = EventPosition::parse_delivery_id(&delivery_id).ok_or_else(missing)?;
    let mut record = state
        .store
        .delivery(&endpoint.id, &position)
        .await?
        .filter(|record| record.key.account_id == account)
        .ok_or_else(missing)?;
    if !endpoint.enabled {
        return Err(ApiError::conflict(
            "the endpoint is disabled: enable it (PATCH with enabled: true) to resend",
        ));
    }
    let attempt = state
        .sender
        .send(&endpoint, &record.key.position.event_id, &record.body)
        .await;
    // A pending delivery keeps its queued retry; a failed one stays failed unless this worked.
    let retry_left = record.status == DeliveryStatus::Pending;
    let status = DeliveryStatus::after(Some(record.status), &attempt, retry_left);
    let next_retry_at = record
        .next_retry_at
        .filter(|_| status == DeliveryStatus::Pending);
    state
        .store
        .record_attempt(&record.key, &record.body, &attempt, status, next_retry_at)
        .await?;
    if attempt.succeeded() && endpoint.failing_since.is_some() {
        state.store.note_recovered(&account, &endpoint.id).await?;
    }
    tracing::info!(endpoint_id = %id, event_id = %record.key.position.event_id, status = attempt.status, "delivery resent");
    record.attempts.push(attempt);
    record.status = status;
    record.next_retry_at = next_retry_at;
    Ok(Json(json!({ "data": DeliveryView::of(&record) })))
}

#[cfg(test)]
mod tests;
