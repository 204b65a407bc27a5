use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, RawQuery, State};
use serde_json::{Value, json};

use super::{ApiError, ApiState, Caller, NumberView};
use crate::domain::messages::TeardownMessage;
use crate::domain::{NumberId, Status, Transition, time};
use crate::ports::{
    ChangeOutcome, MessageQueue, NumberReader, Page, Queue, StatusChange, StatusWriter,
};

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
                query.status = Some(
                    value
                        .parse()
                        .map_err(|e: crate::domain::UnknownStatus| {
                            ApiError::invalid_request(e.to_string())
                        })?,
                )
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

/// A status change can race with provisioning or Meta's webhooks; re-reading and trying again a
/// few times settles it.
const DISCONNECT_ATTEMPTS: usize = 3;

pub async fn disconnect<S: NumberReader + StatusWriter, Q: MessageQueue>(
    State(state): State<Arc<ApiState<S, Q>>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = NumberId::parse(&id).ok_or_else(|| ApiError::not_found("number"))?;
    let mut number = state
        .store
        .get(&account, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("number"))?;
    for _ in 0..DISCONNECT_ATTEMPTS {
        if number.status == Status::Disconnected {
            break;
        }
        let transition = Transition::new(number.status, Status::Disconnected).map_err(|_| {
            ApiError::conflict(format!(
                "a {} number cannot be disconnected",
                number.status
            ))
        })?;
        number = match state
            .store
            .change_status(&number, StatusChange::new(transition, time::now()))
            .await?
        {
            ChangeOutcome::Applied(number) | ChangeOutcome::NotApplied(number) => number,
        };
    }
    if number.status != Status::Disconnected {
        return Err(ApiError::conflict(
            "the number changed while it was being disconnected; try again",
        ));
    }
    // Sent on every DELETE, repeats included: teardown is idempotent, and a repeated DELETE
    // after a crash between the write and the send is how a lost teardown is recovered.
    let message = TeardownMessage::new(number.id.clone(), number.account_id.clone());
    let body = serde_json::to_string(&message).map_err(|_| ApiError::internal())?;
    state.queue.send(Queue::Teardown, body).await?;
    tracing::info!(number_id = %number.id, "number disconnected");
    Ok(Json(json!({ "data": NumberView::from(&number) })))
}
