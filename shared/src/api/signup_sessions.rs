//! What happened to each signup link, for the account that issued it (API key):
//! `GET /api/signup-links`, `GET /api/signup-links/{id}`, `DELETE /api/signup-links/{id}`
//! (revokes an unused link). The page's own reports come in through `signup_page`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, RawQuery, State};
use serde_json::{Value, json};

use super::signup::SignupLinkState;
use super::{ApiError, Caller};
use crate::domain::signup_session::{LinkCursor, plausible_link_id};
use crate::domain::time;
use crate::ports::{RevokeOutcome, SignupSessions};

pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkListQuery {
    pub limit: u32,
    pub cursor: Option<LinkCursor>,
}

/// Unknown parameters are ignored; a bad value of a known one is a 400 saying what is wanted.
pub fn parse_link_query(raw: Option<&str>) -> Result<LinkListQuery, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|_| ApiError::invalid_request("the query string is not valid"))?;
    let mut query = LinkListQuery {
        limit: DEFAULT_LIMIT,
        cursor: None,
    };
    let mut seen: Vec<String> = Vec::new();
    for (name, value) in pairs {
        if !matches!(name.as_str(), "limit" | "cursor") {
            continue;
        }
        if seen.contains(&name) {
            return Err(ApiError::invalid_request(format!(
                "{name} may be given only once"
            )));
        }
        if name == "limit" {
            query.limit = value
                .parse::<u32>()
                .ok()
                .filter(|l| (1..=MAX_LIMIT).contains(l))
                .ok_or_else(|| {
                    ApiError::invalid_request(format!(
                        "limit must be an integer from 1 to {MAX_LIMIT}"
                    ))
                })?;
        } else {
            query.cursor = Some(LinkCursor::parse(&value).ok_or_else(|| {
                ApiError::invalid_request("cursor must be a nextCursor of an earlier page")
            })?);
        }
        seen.push(name);
    }
    Ok(query)
}

fn not_found() -> ApiError {
    ApiError::not_found("signup link")
}

pub async fn list<S: SignupSessions>(
    State(state): State<Arc<SignupLinkState<S>>>,
    Extension(Caller(account)): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let query = parse_link_query(raw.as_deref())?;
    let page = state
        .store
        .links(&account, query.limit, query.cursor.as_ref())
        .await?;
    let now = time::now();
    let data: Vec<Value> = page.links.iter().map(|l| l.view(now)).collect();
    Ok(Json(json!({
        "data": data,
        "pagination": {
            "limit": query.limit,
            "nextCursor": page.next.as_ref().map(LinkCursor::encode),
        },
    })))
}

pub async fn get<S: SignupSessions>(
    State(state): State<Arc<SignupLinkState<S>>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if !plausible_link_id(&id) {
        return Err(not_found());
    }
    match state.store.link(&id).await? {
        Some(link) if link.account_id == account => {
            Ok(Json(json!({ "data": link.view(time::now()) })))
        }
        _ => Err(not_found()),
    }
}

/// Revokes an unused link: its state is refused from then on by the page and the callback.
/// Revoking again answers the same; a link that created a number is a `409`.
pub async fn revoke<S: SignupSessions>(
    State(state): State<Arc<SignupLinkState<S>>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if !plausible_link_id(&id) {
        return Err(not_found());
    }
    let now = time::now();
    match state.store.revoke_link(&account, &id, now).await? {
        RevokeOutcome::Revoked(link) => {
            tracing::info!(link_id = %link.link_id, "signup link revoked");
            Ok(Json(json!({ "data": link.view(now) })))
        }
        RevokeOutcome::AlreadyUsed(_) => Err(ApiError::conflict(
            "this signup link was already used (it created its numbers); disconnect them instead",
        )),
        RevokeOutcome::NotFound => Err(not_found()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_list_query_reads_limit_and_cursor() {
        assert_eq!(parse_link_query(None).unwrap().limit, DEFAULT_LIMIT);
        assert_eq!(parse_link_query(Some("limit=5&x=1")).unwrap().limit, 5);
        for bad in [
            "limit=0",
            "limit=101",
            "limit=a",
            "cursor=%21",
            "limit=1&limit=2",
        ] {
            assert!(parse_link_query(Some(bad)).is_err(), "{bad}");
        }
    }
}
