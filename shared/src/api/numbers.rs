use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, RawQuery, State};
use serde_json::{Value, json};

use super::{ApiError, ApiState, Caller, NumberView};
use crate::domain::lifecycle::{Command, DisconnectedBy};
use crate::domain::messages::TeardownMessage;
use crate::domain::{NumberId, Status};
use crate::lifecycle::{self, Changed};
use crate::ports::{EventLog, LifecycleStore, MessageQueue, NumberReader, Page};

pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListQuery {
    pub status: Option<Status>,
    pub page: Page,
}

/// Unknown parameters are ignored; a bad value of a known one is a 400 that says what is wanted.
pub fn parse_list_query(raw: Option<&str>) -> Result<ListQuery, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|_| ApiError::invalid_request("the query string is not valid"))?;
    let mut query = ListQuery {
        status: None,
        page: Page {
            limit: DEFAULT_LIMIT,
            offset: 0,
        },
    };
    let mut seen = Vec::new();
    for (name, value) in pairs {
        if !matches!(name.as_str(), "status" | "limit" | "offset") {
            continue;
        }
        if seen.contains(&name) {
            return Err(ApiError::invalid_request(format!(
                "{name} may be given only once"
            )));
        }
        match name.as_str() {
            "status" => {
                query.status = Some(value.parse().map_err(|e: crate::domain::UnknownStatus| {
                    ApiError::invalid_request(e.to_string())
                })?)
            }
            "limit" => {
                query.page.limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .ok_or_else(|| {
                        ApiError::invalid_request(format!(
                            "limit must be an integer from 1 to {MAX_LIMIT}"
                        ))
                    })?
            }
            _ => {
                query.page.offset = value.parse::<u32>().map_err(|_| {
                    ApiError::invalid_request("offset must be an integer of 0 or more")
                })?
            }
        }
        seen.push(name);
    }
    Ok(query)
}

pub async fn list<S: NumberReader, Q>(
    State(state): State<Arc<ApiState<S, Q>>>,
    Extension(Caller(account)): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let query = parse_list_query(raw.as_deref())?;
    let page = state.store.list(&account, query.status, query.page).await?;
    let data: Vec<NumberView> = page.numbers.iter().map(NumberView::from).collect();
    Ok(Json(json!({
        "data": data,
        "pagination": {
            "total": page.total,
            "limit": query.page.limit,
            "offset": query.page.offset,
        }
    })))
}

pub async fn get<S: NumberReader, Q>(
    State(state): State<Arc<ApiState<S, Q>>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = NumberId::parse(&id).ok_or_else(|| ApiError::not_found("number"))?;
    let number = state
        .store
        .get(&account, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("number"))?;
    Ok(Json(json!({ "data": NumberView::from(&number) })))
}

pub async fn disconnect<S, Q>(
    State(state): State<Arc<ApiState<S, Q>>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError>
where
    S: NumberReader + LifecycleStore + EventLog,
    Q: MessageQueue,
{
    let id = NumberId::parse(&id).ok_or_else(|| ApiError::not_found("number"))?;
    let number = state
        .store
        .get(&account, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("number"))?;
    let changed = lifecycle::apply(
        &state.store,
        &state.queue,
        &number,
        Command::Disconnect(DisconnectedBy::Customer),
    )
    .await
    .map_err(|e| {
        tracing::error!(error = %crate::telemetry::ErrorChain(&e), number_id = %number.id, "disconnect failed");
        ApiError::internal()
    })?;
    let number = match changed {
        Changed::Now(number) | Changed::Already(number) => number,
        Changed::Refused(number, _) => {
            return Err(ApiError::conflict(format!(
                "a {} number cannot be disconnected",
                number.status
            )));
        }
    };
    // Sent on every DELETE, repeats included: teardown is idempotent, and a repeated DELETE
    // after a crash between the write and the send is how a lost teardown is recovered.
    let message = TeardownMessage::new(number.id.clone(), number.account_id.clone());
    state.queue.send(&message).await?;
    tracing::info!(number_id = %number.id, "number disconnected");
    Ok(Json(json!({ "data": NumberView::from(&number) })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(raw: &str) -> Result<ListQuery, ApiError> {
        parse_list_query(Some(raw))
    }

    #[test]
    fn defaults_are_limit_20_offset_0_and_no_filter() {
        let query = parse_list_query(None).unwrap();
        assert_eq!(query.status, None);
        assert_eq!(
            query.page,
            Page {
                limit: 20,
                offset: 0
            }
        );
    }

    #[test]
    fn unknown_parameters_are_ignored() {
        assert_eq!(
            parsed("foo=bar&status=BANNED").unwrap().status,
            Some(Status::Banned)
        );
    }

    #[test]
    fn limit_is_bounded_from_1_to_100() {
        assert!(parsed("limit=1").is_ok());
        assert!(parsed("limit=100").is_ok());
        for bad in ["limit=0", "limit=101", "limit=-1", "limit=abc", "limit="] {
            let err = parsed(bad).unwrap_err();
            assert_eq!(err.code, "invalid_request", "{bad}");
            assert!(err.message.contains("limit"), "{bad}: {}", err.message);
        }
    }

    #[test]
    fn a_bad_status_names_the_allowed_values() {
        let err = parsed("status=active").unwrap_err();
        assert_eq!(
            err.message,
            "status must be one of PENDING, ACTIVE, FAILED, DISCONNECTED, BANNED"
        );
    }

    #[test]
    fn percent_encoded_values_are_decoded() {
        assert_eq!(
            parsed("status=%41CTIVE").unwrap().status,
            Some(Status::Active)
        );
    }
}
