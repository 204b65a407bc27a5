//! A rate limit on the hosted signup page's no-key routes (`/signup`, `/signup/status`,
//! `/signup/events`): they answer anyone holding a link, so requests are counted per source IP
//! and, for a state that verifies, per signup link, in the same one-minute windows as the API
//! keys' limit (`ports::RequestQuota`). Beyond either limit the answer is `429` with
//! `Retry-After`: an HTML page in the visitor's language for `/signup`, the contract's error
//! envelope for the JSON routes. Nothing is read or written for a limited request. As with the
//! API's limit, a counting failure lets the request through.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::signup_page::{Lang, rate_limited_page, state_param};
use super::{ApiError, MAX_BODY_BYTES};
use crate::domain::time;
use crate::ports::{QuotaSubject, RequestQuota};
use crate::secret_cache::LinkKeys;

/// Requests per minute on the page's routes (`None`: no limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageLimits {
    /// Per signup link: the page polls its status every 1.5 s (40 a minute) while it waits.
    pub per_link_per_minute: Option<u32>,
    /// Per source IP address: several people behind one NAT may sign up at once.
    pub per_source_per_minute: Option<u32>,
}

impl PageLimits {
    pub const UNLIMITED: PageLimits = PageLimits {
        per_link_per_minute: None,
        per_source_per_minute: None,
    };
    pub const DEFAULT_PER_LINK_PER_MINUTE: u32 = 120;
    pub const DEFAULT_PER_SOURCE_PER_MINUTE: u32 = 600;
}

pub struct PageGate<Q> {
    pub quota: Q,
    pub signer: LinkKeys,
    pub limits: PageLimits,
}

/// The caller's address as API Gateway saw it (`requestContext.http.sourceIp`).
fn source_ip(request: &Request) -> Option<String> {
    use lambda_http::RequestExt;
    use lambda_http::request::RequestContext;
    match request.request_context_ref()? {
        RequestContext::ApiGatewayV2(context) => context.http.source_ip.clone(),
        _ => None,
    }
}

/// The request's `state` (query string, or the JSON body of `POST /signup/events`), with the
/// request rebuilt around the body it read.
async fn state_of(request: Request) -> Result<(Request, Option<String>), ApiError> {
    if request.method() != Method::POST {
        let state = state_param(request.uri().query());
        return Ok((request, state));
    }
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::payload_too_large())?;
    let state = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|body| body.get("state")?.as_str().map(str::to_string));
    Ok((Request::from_parts(parts, Body::from(bytes)), state))
}

enum Verdict {
    Admitted,
    Limited { limit: u32, retry_after: u64 },
}

async fn count<Q: RequestQuota>(quota: &Q, subject: QuotaSubject<'_>, limit: u32) -> Verdict {
    let now = time::now().timestamp();
    let window_start = now - now.rem_euclid(60);
    match quota.count_request(subject, window_start, limit).await {
        Ok(true) => Verdict::Admitted,
        Ok(false) => {
            tracing::info!(limit, subject = ?subject, "signup page rate limit reached");
            Verdict::Limited {
                limit,
                retry_after: u64::try_from(window_start + 60 - now).unwrap_or(1).max(1),
            }
        }
        Err(err) => {
            tracing::warn!(error = %crate::telemetry::ErrorChain(&err), "page request not counted; let through");
            Verdict::Admitted
        }
    }
}

fn too_many(page: bool, lang: Lang, limit: u32, retry_after: u64) -> Response {
    let mut response = if page {
        rate_limited_page(lang)
    } else {
        ApiError {
            message: format!(
                "this signup page's limit of {limit} requests per minute is reached; retry after {retry_after} s"
            ),
            ..ApiError::rate_limited(limit, retry_after)
        }
        .into_response()
    };
    if let Ok(value) = HeaderValue::from_str(&retry_after.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

pub async fn limit_page_requests<Q: RequestQuota>(
    State(gate): State<Arc<PageGate<Q>>>,
    request: Request,
    next: Next,
) -> Response {
    let page = request.uri().path() == "/signup";
    let lang = Lang::from_accept_language(
        request
            .headers()
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
    );
    if let (Some(limit), Some(ip)) = (gate.limits.per_source_per_minute, source_ip(&request))
        && let Verdict::Limited { limit, retry_after } =
            count(&gate.quota, QuotaSubject::SourceIp(&ip), limit).await
    {
        return too_many(page, lang, limit, retry_after);
    }
    let Some(limit) = gate.limits.per_link_per_minute else {
        return next.run(request).await;
    };
    let (request, state) = match state_of(request).await {
        Ok(read) => read,
        Err(err) => return err.into_response(),
    };
    // Only a state that verifies names a link; anything else is counted by its source alone.
    // (An unreadable key counts nothing here; the page itself answers "unavailable".)
    let link = match (state, gate.signer.signer().await) {
        (Some(state), Ok(signer)) => signer.verify(&state, time::now()).ok(),
        _ => None,
    };
    if let Some(link) = link
        && let Verdict::Limited { limit, retry_after } =
            count(&gate.quota, QuotaSubject::SignupLink(&link.link_id), limit).await
    {
        return too_many(page, lang, limit, retry_after);
    }
    next.run(request).await
}
