use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{ApiError, ApiState, Caller, NumberView};
use crate::domain::lifecycle::{Command, DisconnectedBy, Refusal};
use crate::domain::messages::{StepMessage, TeardownMessage};
use crate::domain::{AccountId, Number, NumberId, Status, time};
use crate::lifecycle::{self, Changed};
use crate::ports::{EventLog, LifecycleStore, MessageQueue, NumberReader, Page, ProvisioningStore};

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

/// The account's number with this id; `404` for an id of another account, as for one that
/// does not exist, so ids are never confirmed across accounts.
async fn owned_number<S: NumberReader>(
    store: &S,
    account: &AccountId,
    id: &str,
) -> Result<Number, ApiError> {
    let id = NumberId::parse(id).ok_or_else(|| ApiError::not_found("number"))?;
    store
        .get(account, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("number"))
}

pub async fn get<S: NumberReader, Q>(
    State(state): State<Arc<ApiState<S, Q>>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let number = owned_number(&state.store, &account, &id).await?;
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
    let number = owned_number(&state.store, &account, &id).await?;
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

/// `POST /api/numbers/{id}/retry`: a FAILED onboarding tried again once the customer fixed the
/// cause, resuming where it failed (or where its teardown undid something at Meta). `202` with
/// the number `PENDING`; `200` when it is `PENDING` already (nothing restarts); `409`
/// `reauthorization_required` when the token is gone or the failure was the code exchange (a
/// new signup link is the remedy), `409` `conflict` for any other status or a phone signed up
/// again meanwhile.
pub async fn retry<S, Q>(
    State(state): State<Arc<ApiState<S, Q>>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError>
where
    S: NumberReader + LifecycleStore + EventLog + ProvisioningStore,
    Q: MessageQueue,
{
    let number = owned_number(&state.store, &account, &id).await?;
    if number.status == Status::Failed
        && let Some(owner) = state.store.phone_owner(&number.phone_number_id).await?
        && owner.number_id != number.id
    {
        return Err(ApiError::conflict(
            "this phone number was signed up again since this number failed",
        ));
    }
    // Whether the token still works is what the number knows of it: not deleted, not expired.
    // (A token revoked at Meta fails the resumed step again, with Meta's reason.)
    let token_usable = number.token_deleted_at.is_none()
        && number
            .token_expires_at
            .is_none_or(|expires| expires > time::now());
    let command = Command::Retry { token_usable };
    let step_message = |number: &Number| {
        number.provisioning_step.map(|step| {
            StepMessage::new(
                number.id.clone(),
                number.account_id.clone(),
                step,
                format!("trc_{}", cuid2::create_id()),
            )
        })
    };
    let changed =
        lifecycle::apply_then_send(&state.store, &state.queue, &number, command, step_message)
            .await
            .map_err(|e| {
                tracing::error!(error = %crate::telemetry::ErrorChain(&e), number_id = %number.id, "retry failed");
                ApiError::internal()
            })?;
    match changed {
        Changed::Now(number) => {
            tracing::info!(number_id = %number.id, step = ?number.provisioning_step, "onboarding retried");
            Ok((
                StatusCode::ACCEPTED,
                Json(json!({ "data": NumberView::from(&number) })),
            ))
        }
        Changed::Already(number) => Ok((
            StatusCode::OK,
            Json(json!({ "data": NumberView::from(&number) })),
        )),
        Changed::Refused(_, why @ Refusal::ReauthorizationRequired { .. }) => {
            Err(ApiError::reauthorization_required(why.to_string()))
        }
        Changed::Refused(number, _) => Err(ApiError::conflict(format!(
            "a {} number cannot be retried; only a FAILED one can",
            number.status
        ))),
    }
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
