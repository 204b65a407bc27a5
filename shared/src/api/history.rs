//! What happened: `GET /api/numbers/{id}/events` (a number's history, from its outbox events)
//! and `GET /api/events/{id}` (one event as customers received it).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, RawQuery, State};
use serde_json::{Value, json};

use super::{ApiError, ApiState, Caller};
use crate::domain::NumberId;
use crate::domain::history::{EventPosition, HistoryEntry, plausible_event_id};
use crate::ports::{EventHistory, NumberReader};

pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;

/// `limit`, `cursor` and (where a list takes it) `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageQuery {
    pub limit: u32,
    pub cursor: Option<EventPosition>,
    pub status: Option<String>,
}

/// Unknown parameters are ignored; a bad value of a known one is a 400 saying what is wanted.
pub fn parse_page_query(raw: Option<&str>, with_status: bool) -> Result<PageQuery, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|_| ApiError::invalid_request("the query string is not valid"))?;
    let mut query = PageQuery {
        limit: DEFAULT_LIMIT,
        cursor: None,
        status: None,
    };
    let mut seen: Vec<String> = Vec::new();
    for (name, value) in pairs {
        let known =
            matches!(name.as_str(), "limit" | "cursor") || (with_status && name == "status");
        if !known {
            continue;
        }
        if seen.contains(&name) {
            return Err(ApiError::invalid_request(format!(
                "{name} may be given only once"
            )));
        }
        match name.as_str() {
            "limit" => {
                query.limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .ok_or_else(|| {
                        ApiError::invalid_request(format!(
                            "limit must be an integer from 1 to {MAX_LIMIT}"
                        ))
                    })?
            }
            "cursor" => {
                query.cursor = Some(EventPosition::parse_cursor(&value).ok_or_else(|| {
                    ApiError::invalid_request("cursor must be a nextCursor of an earlier page")
                })?)
            }
            _ => query.status = Some(value),
        }
        seen.push(name);
    }
    Ok(query)
}

pub async fn number_events<S, Q>(
    State(state): State<Arc<ApiState<S, Q>>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError>
where
    S: NumberReader + EventHistory,
{
    let query = parse_page_query(raw.as_deref(), false)?;
    let id = NumberId::parse(&id).ok_or_else(|| ApiError::not_found("number"))?;
    // The number itself, not only its events: a number without history is still found, and
    // another account's number is not (its events are keyed by account as well).
    state
        .store
        .get(&account, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("number"))?;
    let page = state
        .store
        .number_events(&account, &id, query.limit, query.cursor.as_ref())
        .await?;
    let data: Vec<HistoryEntry> = page.events.iter().map(HistoryEntry::of).collect();
    Ok(Json(json!({
        "data": data,
        "pagination": {
            "limit": query.limit,
            "nextCursor": page.next.as_ref().map(EventPosition::cursor),
        }
    })))
}

pub async fn event<S, Q>(
    State(state): State<Arc<ApiState<S, Q>>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError>
where
    S: EventHistory,
{
    if !plausible_event_id(&id) {
        return Err(ApiError::not_found("event"));
    }
    // A history-only entry (`number.step_retried`) was never sent: it is in the history alone.
    let event = state
        .store
        .event(&account, &id)
        .await?
        .filter(|event| event.event_type.is_published())
        .ok_or_else(|| ApiError::not_found("event"))?;
    Ok(Json(json!({ "data": event.customer_body() })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_query_reads_limit_cursor_and_status_where_taken() {
        let query = parse_page_query(Some("limit=5&cursor=1.evt_a&status=failed"), true).unwrap();
        assert_eq!(query.limit, 5);
        assert_eq!(query.cursor.unwrap().event_id, "evt_a");
        assert_eq!(query.status.as_deref(), Some("failed"));
        let ignored = parse_page_query(Some("status=failed"), false).unwrap();
        assert_eq!(ignored.status, None);
    }

    #[test]
    fn bad_page_queries_are_refused() {
        for bad in [
            "limit=0",
            "limit=101",
            "limit=x",
            "cursor=abc",
            "limit=1&limit=2",
        ] {
            let error = parse_page_query(Some(bad), true).unwrap_err();
            assert_eq!(error.code, "invalid_request", "{bad}");
        }
    }
}
