//! `Idempotency-Key` on every `POST`, with Stripe's semantics: the first request with a key
//! runs and its answer is kept for 24 h; a retry with the same key and the same request gets
//! that answer again (with `Idempotent-Replayed: true`) without acting again; the same key on
//! another request (body or path) is `422` `idempotency_conflict`; while the first still runs,
//! `409` `idempotency_in_progress`. Keys are per account. One middleware, so every `POST`
//! route, present and future, has it.
//!
//! An answer that shows a webhook secret (an endpoint's creation, a rotation) is kept without
//! it: a replay reads the endpoint's secret again, so the key's item never holds one. An answer
//! that shows a signup link's `state` is kept without it too: its route answers the replay,
//! signing the same state again ([`Replaying`]).
//!
//! A `5xx` answer is not kept: the request may not have done its work, and a retry should run.
//! A request whose Lambda dies mid-way holds its key for [`LEASE_SECONDS`], then a retry runs.

use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::{ApiError, Caller, MAX_BODY_BYTES};
use crate::domain::AccountId;
use crate::domain::api_key::{KeyHash, bearer_key};
use crate::domain::time;
use crate::ports::{ApiKeyVerifier, Claim, IdempotencyStore, StoredResponse, WebhookEndpoints};

pub const HEADER: HeaderName = HeaderName::from_static("idempotency-key");
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// How long a key is remembered after its first request.
pub const RETENTION_SECONDS: i64 = 24 * 60 * 60;
/// How long a running request holds its key: beyond API Gateway's 30 s and the function's
/// timeout, so only a request that is surely dead loses it.
pub const LEASE_SECONDS: i64 = 60;
/// Stripe's limit on a key's length.
pub const MAX_KEY_CHARS: usize = 255;
/// Answers larger than this are not kept (none of the API's are near it; an item holds 400 KB).
const MAX_KEPT_RESPONSE_BYTES: usize = 256 * 1024;

/// A key is 1 to 255 visible ASCII characters (a UUID, a hash, an order id).
pub fn parse_key(value: &HeaderValue) -> Result<String, ApiError> {
    let text = value
        .to_str()
        .ok()
        .filter(|text| {
            (1..=MAX_KEY_CHARS).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_graphic())
        })
        .ok_or_else(|| {
            ApiError::invalid_request(format!(
                "Idempotency-Key must be 1 to {MAX_KEY_CHARS} visible ASCII characters"
            ))
        })?;
    Ok(text.to_string())
}

/// What makes two requests "the same": path and body, byte for byte.
pub fn fingerprint(method: &Method, path: &str, body: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(method.as_str().as_bytes());
    hasher.update(b"\n");
    hasher.update(path.as_bytes());
    hasher.update(b"\n");
    hasher.update(body);
    hex::encode(hasher.finalize())
}

/// Set on an answer that shows the secret of this webhook endpoint (`data.secret`).
#[derive(Clone, Debug)]
pub struct ShowsSecret(pub String);

/// Set on an answer that shows a signup link's bearer `state` (`data.state`, and inside
/// `data.url`): it is kept without both, and its route answers a replay ([`Replaying`]).
#[derive(Clone, Copy, Debug)]
pub struct ShowsLinkState;

/// On a replay of an answer marked [`ShowsLinkState`], the request reaches its route again
/// with the kept answer: the route answers as the first time from it, acting on nothing.
#[derive(Clone, Debug)]
pub struct Replaying(pub StoredResponse);

/// What an answer marked [`ShowsLinkState`] is kept without.
const LINK_STATE_FIELDS: [&str; 2] = ["state", "url"];

pub struct IdempotencyGate<K> {
    pub store: K,
}

/// The account the request acts for: the one the key gate authenticated, or, on routes that
/// authenticate themselves (the signup callback), the one its API key names. A request
/// authorised only by a signup link's `state` has no account key space: the link is
/// single-use, which already makes a retry harmless.
async fn account_of<K: ApiKeyVerifier>(
    store: &K,
    caller: Option<Caller>,
    bearer: Option<String>,
    method: &Method,
) -> Result<Option<AccountId>, ApiError> {
    if let Some(Caller(account)) = caller {
        return Ok(Some(account));
    }
    let Some(key) = bearer else {
        return Ok(None);
    };
    match store.verify_key(&KeyHash::of(&key)).await? {
        Some(key) => super::authorize(key, method).map(Some),
        None => Ok(None),
    }
}

pub async fn idempotent<K>(
    State(gate): State<Arc<IdempotencyGate<K>>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError>
where
    K: IdempotencyStore + ApiKeyVerifier + WebhookEndpoints,
{
    if request.method() != Method::POST {
        return Ok(next.run(request).await);
    }
    let Some(value) = request.headers().get(&HEADER) else {
        return Ok(next.run(request).await);
    };
    let key = parse_key(value)?;
    let caller = request.extensions().get::<Caller>().cloned();
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_key)
        .map(str::to_string);
    let method = request.method().clone();
    let Some(account) = account_of(&gate.store, caller, bearer, &method).await? else {
        // Unauthenticated: the route answers 401 itself (or acts on a single-use link).
        return Ok(next.run(request).await);
    };
    let (parts, body) = request.into_parts();
    let body = to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::payload_too_large())?;
    let fingerprint = fingerprint(&parts.method, parts.uri.path(), &body);
    let now = time::now().timestamp();
    let claim = gate
        .store
        .claim(
            &account,
            &key,
            &fingerprint,
            now,
            now + LEASE_SECONDS,
            now + RETENTION_SECONDS,
        )
        .await?;
    if let Claim::Held(record) = claim {
        if record.fingerprint != fingerprint {
            return Err(ApiError::idempotency_conflict());
        }
        return match record.response {
            Some(kept) if kept.answered_by_route => {
                let mut request = Request::from_parts(parts, Body::from(body));
                request.extensions_mut().insert(Replaying(kept));
                let mut response = next.run(request).await;
                if !response.status().is_server_error() {
                    response
                        .headers_mut()
                        .insert(REPLAYED, HeaderValue::from_static("true"));
                }
                Ok(response)
            }
            Some(kept) => replay(&gate.store, &account, kept).await,
            None => Err(ApiError::idempotency_in_progress()),
        };
    }
    let response = next.run(Request::from_parts(parts, Body::from(body))).await;
    if response.status().is_server_error() {
        if let Err(err) = gate.store.release(&account, &key, &fingerprint).await {
            // The key stays held until its lease ends; then a retry runs.
            tracing::warn!(error = %crate::telemetry::ErrorChain(&err), "idempotency key not released");
        }
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_KEPT_RESPONSE_BYTES).await else {
        tracing::error!("response too large to keep for its idempotency key");
        return Err(ApiError::internal());
    };
    let text = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let secret_of = parts.extensions.get::<ShowsSecret>().map(|s| s.0.clone());
    let answered_by_route = parts.extensions.get::<ShowsLinkState>().is_some();
    let kept_body = match (&secret_of, answered_by_route) {
        (_, true) => without(&bytes, &LINK_STATE_FIELDS)?,
        (Some(_), false) => without(&bytes, &["secret"])?,
        (None, false) => bytes.to_vec(),
    };
    let kept = StoredResponse {
        status: parts.status.as_u16(),
        content_type: text(header::CONTENT_TYPE),
        location: text(header::LOCATION),
        body: kept_body,
        secret_of,
        answered_by_route,
    };
    if let Err(err) = gate
        .store
        .complete(&account, &key, &fingerprint, &kept)
        .await
    {
        // The work is done and answered; a retry within the lease gets 409, after it runs again
        // (every POST of this API is safe to repeat: it finds what the first one made).
        tracing::error!(error = %crate::telemetry::ErrorChain(&err), "idempotent response not kept");
    }
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

/// The answer's JSON without these fields of `data`.
fn without(body: &[u8], fields: &[&str]) -> Result<Vec<u8>, ApiError> {
    let mut answer: serde_json::Value = serde_json::from_slice(body).map_err(|err| {
        tracing::error!(error = %err, "an answer showing a secret is not JSON");
        ApiError::internal()
    })?;
    if let Some(data) = answer.get_mut("data").and_then(|d| d.as_object_mut()) {
        for field in fields {
            data.remove(*field);
        }
    }
    serde_json::to_vec(&answer).map_err(|_| ApiError::internal())
}

/// The kept answer again; one that showed a secret shows the endpoint's secret as it is now
/// (the same one, unless it was rotated since).
async fn replay<K: WebhookEndpoints>(
    store: &K,
    account: &AccountId,
    kept: StoredResponse,
) -> Result<Response, ApiError> {
    let body = match &kept.secret_of {
        None => kept.body,
        Some(endpoint_id) => {
            let endpoint = store.endpoint(account, endpoint_id).await?.ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "the webhook endpoint this request made has been deleted since",
                )
            })?;
            let mut answer: serde_json::Value =
                serde_json::from_slice(&kept.body).map_err(|_| ApiError::internal())?;
            if let Some(data) = answer.get_mut("data").and_then(|d| d.as_object_mut()) {
                data.insert("secret".into(), endpoint.secret.expose().into());
            }
            serde_json::to_vec(&answer).map_err(|_| ApiError::internal())?
        }
    };
    let status = StatusCode::from_u16(kept.status).unwrap_or(StatusCode::OK);
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.remove(header::CONTENT_TYPE);
    for (name, value) in [
        (header::CONTENT_TYPE, kept.content_type),
        (header::LOCATION, kept.location),
    ] {
        if let Some(value) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            headers.insert(name, value);
        }
    }
    headers.insert(REPLAYED, HeaderValue::from_static("true"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_1_to_255_visible_ascii_characters() {
        for good in [
            "a",
            "order-42",
            "550e8400-e29b-41d4-a716-446655440000",
            &"k".repeat(255),
        ] {
            assert!(
                parse_key(&HeaderValue::from_str(good).unwrap()).is_ok(),
                "{good}"
            );
        }
        for bad in ["", "has space", &"k".repeat(256)] {
            let err = parse_key(&HeaderValue::from_str(bad).unwrap()).unwrap_err();
            assert_eq!(err.code, "invalid_request", "{bad}");
        }
        let non_ascii = HeaderValue::from_bytes("clé".as_bytes()).unwrap();
        assert!(parse_key(&non_ascii).is_err());
    }

    #[test]
    fn the_same_body_on_another_path_is_another_request() {
        let body = br#"{"url":"https://example.com"}"#;
        assert_eq!(
            fingerprint(&Method::POST, "/api/webhooks", body),
            fingerprint(&Method::POST, "/api/webhooks", body)
        );
        assert_ne!(
            fingerprint(&Method::POST, "/api/webhooks", body),
            fingerprint(&Method::POST, "/api/signup-links", body)
        );
        assert_ne!(
            fingerprint(&Method::POST, "/api/webhooks", body),
            fingerprint(&Method::POST, "/api/webhooks", b"{}")
        );
    }
}
