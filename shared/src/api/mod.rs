//! The HTTP API as one axum router: run under `lambda_http` in Lambda and on a local port by
//! the local stack, with the same code.

pub mod error;
pub mod history;
pub mod idempotency;
pub mod lambda_response;
pub mod numbers;
pub mod page_limit;
pub mod routes;
pub mod shape;
pub mod signup;
pub mod signup_page;
pub mod signup_sessions;
pub mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::header;
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::Response;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use crate::domain::view::NumberView;
pub use error::ApiError;
pub use routes::{RouteKey, Routes};

use crate::domain::AccountId;
use crate::domain::api_key::{KeyHash, bearer_key, use_hour};
use crate::ports::{
    ApiKeyVerifier, DeliveryLog, EventHistory, EventLog, IdempotencyStore, LifecycleStore,
    MessageQueue, NumberFinder, NumberReader, ProvisioningStore, QuotaSubject, RequestQuota,
    SignupLinks, SignupSessions, VerifiedKey, WebhookEndpoints,
};
use crate::secret_cache::LinkKeys;
use crate::webhooks::resolver::GuardedResolver;
use crate::webhooks::sender::Sender;

pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub struct ApiState<S, Q> {
    pub store: S,
    pub queue: Q,
}

/// The account whose key authenticated this request. Every lookup a handler makes is scoped to it.
#[derive(Clone, Debug)]
pub struct Caller(pub AccountId);

/// Per-account limits on the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiLimits {
    /// Requests per account per minute (`None`: no limit).
    pub requests_per_minute: Option<u32>,
}

impl ApiLimits {
    pub const UNLIMITED: ApiLimits = ApiLimits {
        requests_per_minute: None,
    };
}

/// The numbers API alone, finished (authentication, body limit, error envelope for
/// everything), without a request rate limit.
pub fn router<S, Q>(store: S, queue: Q) -> Router
where
    S: NumberReader
        + NumberFinder
        + LifecycleStore
        + EventLog
        + EventHistory
        + ProvisioningStore
        + ApiKeyVerifier
        + RequestQuota
        + IdempotencyStore
        + WebhookEndpoints
        + Clone
        + 'static,
    Q: MessageQueue + 'static,
{
    finish(
        numbers_routes(store.clone(), queue),
        store,
        ApiLimits::UNLIMITED,
    )
}

/// What the numbers-api function serves: numbers, signup links and webhook endpoints.
pub fn numbers_api_routes<S, Q>(
    store: S,
    queue: Q,
    signer: impl Into<LinkKeys>,
    base_url: String,
    sender: Sender,
) -> Routes
where
    S: NumberReader
        + NumberFinder
        + LifecycleStore
        + EventLog
        + EventHistory
        + ProvisioningStore
        + SignupLinks
        + SignupSessions
        + WebhookEndpoints
        + DeliveryLog
        + Clone
        + 'static,
    Q: MessageQueue + 'static,
{
    numbers_routes(store.clone(), queue)
        .merge(signup_link_routes(store.clone(), signer, base_url))
        .merge(webhook_routes(store, sender))
}

/// What the signup-callback function serves: the callback and the hosted signup page.
pub fn signup_function_routes<S, Q>(
    store: S,
    queue: Q,
    signer: impl Into<LinkKeys>,
    page: signup_page::PageConfig,
    limits: page_limit::PageLimits,
) -> Routes
where
    S: ApiKeyVerifier
        + NumberReader
        + ProvisioningStore
        + LifecycleStore
        + EventLog
        + crate::ports::WabaSignups
        + SignupSessions
        + RequestQuota
        + Clone
        + 'static,
    Q: MessageQueue + 'static,
{
    let signer: LinkKeys = signer.into();
    signup_callback_routes(store.clone(), queue, signer.clone())
        .merge(signup_page_routes(store, signer, page, limits))
}

/// Numbers, their history and events.
pub fn numbers_routes<S, Q>(store: S, queue: Q) -> Routes
where
    S: NumberReader
        + NumberFinder
        + LifecycleStore
        + EventLog
        + EventHistory
        + ProvisioningStore
        + 'static,
    Q: MessageQueue + 'static,
{
    Routes::new()
        .get("/api/numbers", numbers::list::<S, Q>)
        .get("/api/numbers/{id}", numbers::get::<S, Q>)
        .delete("/api/numbers/{id}", numbers::disconnect::<S, Q>)
        .post("/api/numbers/{id}/retry", numbers::retry::<S, Q>)
        .get("/api/numbers/{id}/events", history::number_events::<S, Q>)
        .get("/api/events/{id}", history::event::<S, Q>)
        .with_state(Arc::new(ApiState { store, queue }))
}

/// Signup links for the account (API key): issue, list, read, revoke. An empty `base_url`
/// points links at this API's own hosted page (`/signup`).
pub fn signup_link_routes<S>(store: S, signer: impl Into<LinkKeys>, base_url: String) -> Routes
where
    S: SignupLinks + SignupSessions + 'static,
{
    Routes::new()
        .post("/api/signup-links", signup::create_link::<S>)
        .get("/api/signup-links", signup_sessions::list::<S>)
        .get("/api/signup-links/{id}", signup_sessions::get::<S>)
        .delete("/api/signup-links/{id}", signup_sessions::revoke::<S>)
        .with_state(Arc::new(signup::SignupLinkState {
            store,
            signer: signer.into(),
            base_url,
        }))
}

pub fn signup_callback_routes<S, Q>(store: S, queue: Q, signer: impl Into<LinkKeys>) -> Routes
where
    S: ApiKeyVerifier
        + NumberReader
        + ProvisioningStore
        + LifecycleStore
        + EventLog
        + crate::ports::WabaSignups
        + crate::ports::SignupSessions
        + 'static,
    Q: MessageQueue + 'static,
{
    Routes::new()
        .post("/api/signup/callback", signup::callback::<S, Q>)
        .with_state(Arc::new(signup::CallbackState {
            store,
            queue,
            signer: signer.into(),
        }))
}

/// The hosted signup page and its two JSON routes, authorised by the link's state (no key),
/// rate limited per source IP and per link (`page_limit`).
pub fn signup_page_routes<S>(
    store: S,
    signer: impl Into<LinkKeys>,
    page: signup_page::PageConfig,
    limits: page_limit::PageLimits,
) -> Routes
where
    S: SignupSessions + NumberReader + RequestQuota + Clone + 'static,
{
    let signer: LinkKeys = signer.into();
    Routes::new()
        .get("/signup", signup_page::page::<S>)
        .get("/signup/status", signup_page::status::<S>)
        .post("/signup/events", signup_page::report::<S>)
        .layer(from_fn_with_state(
            Arc::new(page_limit::PageGate {
                quota: store.clone(),
                signer: signer.clone(),
                limits,
            }),
            page_limit::limit_page_requests::<S>,
        ))
        .layer(from_fn(signup_page::security_headers))
        .with_state(Arc::new(signup_page::PageState {
            store,
            signer,
            page,
        }))
}

/// Webhook endpoints, their delivery logs, test events and secret rotation. `sender` posts
/// test events and resends (its policy is the one endpoints are created under).
pub fn webhook_routes<S>(store: S, sender: Sender) -> Routes
where
    S: WebhookEndpoints + DeliveryLog + 'static,
{
    let resolver = sender.policy.resolver();
    webhook_routes_resolving(store, sender, resolver)
}

/// [`webhook_routes`] with endpoint host names resolved by `resolver` at creation (tests
/// without a network).
pub fn webhook_routes_resolving<S>(store: S, sender: Sender, resolver: GuardedResolver) -> Routes
where
    S: WebhookEndpoints + DeliveryLog + 'static,
{
    Routes::new()
        .get("/api/webhooks", webhooks::list::<S>)
        .post("/api/webhooks", webhooks::create::<S>)
        .delete("/api/webhooks/{id}", webhooks::delete::<S>)
        .patch("/api/webhooks/{id}", webhooks::update::<S>)
        .post(
            "/api/webhooks/{id}/rotate-secret",
            webhooks::rotate_secret::<S>,
        )
        .post("/api/webhooks/{id}/test", webhooks::send_test::<S>)
        .get("/api/webhooks/{id}/deliveries", webhooks::deliveries::<S>)
        .post(
            "/api/webhooks/{id}/deliveries/{deliveryId}/resend",
            webhooks::resend::<S>,
        )
        .with_state(Arc::new(webhooks::WebhookState {
            store,
            policy: sender.policy,
            resolver,
            sender,
        }))
}

/// What every API function serves around its routes: API-key authentication for `/api/*`
/// (the signup callback authenticates itself) with the key's scope and the account's rate
/// limit, `Idempotency-Key` on every `POST`, the body limit, the error envelope for unknown
/// routes and methods, and a metric for every answer.
pub fn finish<K>(routes: Routes, keys: K, limits: ApiLimits) -> Router
where
    K: ApiKeyVerifier + RequestQuota + IdempotencyStore + WebhookEndpoints + Clone + 'static,
{
    routes
        .into_router()
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(from_fn_with_state(
            Arc::new(idempotency::IdempotencyGate {
                store: keys.clone(),
            }),
            idempotency::idempotent::<K>,
        ))
        .layer(from_fn_with_state(
            Arc::new(Gate { keys, limits }),
            authenticate::<K>,
        ))
        .layer(from_fn(limit_body_size))
        .layer(from_fn(observe))
}

/// One `ApiRequests` metric per answer, by route template (never the ids in the path), method
/// and status.
async fn observe(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |path| path.as_str().to_string());
    let method = request.method().to_string();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    crate::metrics::api_request(
        &route,
        &method,
        response.status().as_u16(),
        started.elapsed().as_secs_f64() * 1000.0,
    );
    response
}

struct Gate<K> {
    keys: K,
    limits: ApiLimits,
}

async fn not_found() -> ApiError {
    ApiError::not_found("route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

/// Paths that authenticate by other means than an API key.
fn is_public(path: &str) -> bool {
    path == "/api/signup/callback" || !path.starts_with("/api/")
}

async fn authenticate<K: ApiKeyVerifier + RequestQuota>(
    State(gate): State<Arc<Gate<K>>>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if is_public(request.uri().path()) {
        return Ok(next.run(request).await);
    }
    let key = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(bearer_key)
        .ok_or_else(ApiError::unauthorized)?;
    let hash = KeyHash::of(key);
    let verified = gate
        .keys
        .verify_key(&hash)
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    note_use(&gate.keys, &hash, &verified).await;
    let account = authorize(verified, request.method())?;
    if let Some(limit) = gate.limits.requests_per_minute {
        admit(&gate.keys, &account, limit).await?;
    }
    request.extensions_mut().insert(Caller(account));
    Ok(next.run(request).await)
}

/// The key's account, if its scope allows this method: a read key on anything but `GET` is
/// `403` `forbidden`, before the route runs (so it changes nothing).
pub fn authorize(key: VerifiedKey, method: &axum::http::Method) -> Result<AccountId, ApiError> {
    if key.scope.allows(method) {
        Ok(key.account)
    } else {
        Err(ApiError::forbidden())
    }
}

/// Records the key's use when the hour changed since the last record: at most one write per
/// key per hour. A failure to record costs only the record (the request goes on).
pub async fn note_use<K: ApiKeyVerifier>(keys: &K, hash: &KeyHash, key: &VerifiedKey) {
    let hour = use_hour(crate::domain::time::now());
    if key.last_used_hour.is_some_and(|last| last >= hour) {
        return;
    }
    if let Err(err) = keys.record_key_use(hash, hour).await {
        tracing::warn!(error = %crate::telemetry::ErrorChain(&err), "key use not recorded");
    }
}

/// Counts the request in the account's current minute; a full minute is `429` with the seconds
/// to its end. A counting failure lets the request through: the limit protects the service,
/// and an outage of the counter should not become an outage of the API.
async fn admit<K: RequestQuota>(keys: &K, account: &AccountId, limit: u32) -> Result<(), ApiError> {
    let now = crate::domain::time::now().timestamp();
    let window_start = now - now.rem_euclid(60);
    match keys
        .count_request(QuotaSubject::Account(account), window_start, limit)
        .await
    {
        Ok(true) => Ok(()),
        Ok(false) => {
            let retry_after = u64::try_from(window_start + 60 - now).unwrap_or(1).max(1);
            tracing::info!(account_id = %account, limit, "request rate limit reached");
            Err(ApiError::rate_limited(limit, retry_after))
        }
        Err(err) => {
            tracing::warn!(account_id = %account, error = %crate::telemetry::ErrorChain(&err), "request not counted; let through");
            Ok(())
        }
    }
}

/// Oversized bodies are refused before anything reads them, on every route.
async fn limit_body_size(request: Request, next: Next) -> Result<Response, ApiError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES) {
        return Err(ApiError::payload_too_large());
    }
    Ok(next.run(request).await)
}

/// A JSON body in the contract's terms: too large is 413, anything unreadable is 400 with
/// serde's description of what is wrong.
pub struct JsonBody<T>(pub T);

impl<T, St> FromRequest<St> for JsonBody<T>
where
    T: DeserializeOwned,
    St: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &St) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|_| ApiError::payload_too_large())?;
        if bytes.len() > MAX_BODY_BYTES {
            return Err(ApiError::payload_too_large());
        }
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::invalid_request(format!("invalid JSON body: {e}")))?;
        // Every body of this API is an object: serde would also read a struct from an array.
        if !value.is_object() {
            return Err(ApiError::invalid_request("the body must be a JSON object"));
        }
        serde_json::from_value(value)
            .map(JsonBody)
            .map_err(|e| ApiError::invalid_request(format!("invalid JSON body: {e}")))
    }
}
