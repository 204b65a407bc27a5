use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::shape;
use super::{ApiError, ApiState, Caller, NumberView};
use crate::domain::lifecycle::{Command, DisconnectedBy, Refusal};
use crate::domain::messages::{StepMessage, TeardownMessage};
use crate::domain::number_cursor::phone_digits;
use crate::domain::{AccountId, Number, NumberId, Status, time};
use crate::lifecycle::{self, Changed};
use crate::ports::{
    EventLog, LifecycleStore, MessageQueue, NumberCursor, NumberFinder, NumberReader, NumberSearch,
    PageStart, ProvisioningStore,
};

pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;

/// What `GET /api/numbers` was asked for.
pub type ListQuery = NumberSearch;

const KNOWN: [&str; 6] = [
    "status",
    "limit",
    "offset",
    "cursor",
    "phoneNumber",
    "wabaId",
];

/// Unknown parameters are ignored; a bad value of a known one is a 400 that says what is wanted.
pub fn parse_list_query(raw: Option<&str>) -> Result<ListQuery, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|_| ApiError::invalid_request("the query string is not valid"))?;
    let mut query = NumberSearch {
        status: None,
        display_digits: None,
        waba_id: None,
        limit: DEFAULT_LIMIT,
        start: PageStart::Offset(0),
    };
    let mut seen: Vec<String> = Vec::new();
    let (mut offset, mut cursor) = (0, None);
    for (name, value) in pairs {
        if !KNOWN.contains(&name.as_str()) {
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
            "offset" => {
                offset = value.parse::<u32>().map_err(|_| {
                    ApiError::invalid_request("offset must be an integer of 0 or more")
                })?
            }
            "cursor" => {
                cursor = Some(NumberCursor::parse(&value).ok_or_else(|| {
                    ApiError::invalid_request(
                        "cursor must be a pagination.nextCursor of an earlier page",
                    )
                })?)
            }
            "phoneNumber" => {
                query.display_digits = Some(phone_digits(&value).ok_or_else(|| {
                    ApiError::invalid_request(
                        "phoneNumber must be E.164 (+ and up to 15 digits) or up to 15 digits",
                    )
                })?)
            }
            _ => {
                if !shape::is_meta_id(&value) {
                    return Err(ApiError::invalid_request(
                        "wabaId must be Meta's WABA id (1 to 32 digits)",
                    ));
                }
                query.waba_id = Some(value)
            }
        }
        seen.push(name);
    }
    // `offset=0` is the default, which generated clients often send anyway: it goes with a
    // cursor. Any other offset beside a cursor would say twice where the page starts.
    query.start = match (cursor, offset) {
        (None, offset) => PageStart::Offset(offset),
        (Some(cursor), 0) => PageStart::After(cursor),
        (Some(_), _) => {
            return Err(ApiError::invalid_request(
                "offset and cursor cannot be given together: a cursor already says where the page starts",
            ));
        }
    };
    Ok(query)
}

pub async fn list<S: NumberFinder, Q>(
    State(state): State<Arc<ApiState<S, Q>>>,
    Extension(Caller(account)): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let query = parse_list_query(raw.as_deref())?;
    let found = state.store.find(&account, &query).await?;
    let data: Vec<NumberView> = found.numbers.iter().map(NumberView::from).collect();
    let mut pagination = json!({
        "total": found.total,
        "limit": query.limit,
        "nextCursor": found.next.as_ref().map(NumberCursor::encode),
    });
    if let PageStart::Offset(offset) = query.start {
        pagination["offset"] = json!(offset);
    }
    Ok(Json(json!({ "data": data, "pagination": pagination })))
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
        return Err(phone_signed_up_again());
    }
    // Whether the token still works is what the number knows of it: not deleted, not expired.
    // (A token revoked at Meta fails the resumed step again, with Meta's reason.)
    let token_usable = number.token_deleted_at.is_none()
        && number
            .token_expires_at
            .is_none_or(|expires| expires > time::now());
    let command = Command::Retry { token_usable };
    let changed =
        lifecycle::apply_then_send(&state.store, &state.queue, &number, command, StepMessage::resuming)
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
        // A new signup of the phone was written after the check above, before this write.
        Changed::Refused(_, Refusal::PhoneTaken) => Err(phone_signed_up_again()),
        Changed::Refused(number, _) => Err(ApiError::conflict(format!(
            "a {} number cannot be retried; only a FAILED one can",
            number.status
        ))),
    }
}

/// The retry's answer when another number holds the phone.
fn phone_signed_up_again() -> ApiError {
    ApiError::conflict("this phone number was signed up again since this number failed")
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
        assert_eq!(query.display_digits, None);
        assert_eq!(query.waba_id, None);
        assert_eq!(query.limit, 20);
        assert_eq!(query.start, PageStart::Offset(0));
    }

    #[test]
    fn a_phone_number_is_searched_by_its_digits() {
        for given in ["%2B15550100123", "15550100123", "%2B1%20555%20010%200123"] {
            assert_eq!(
                parsed(&format!("phoneNumber={given}"))
                    .unwrap()
                    .display_digits
                    .as_deref(),
                Some("15550100123"),
                "{given}"
            );
        }
    }

    #[test]
    fn a_bad_phone_number_or_waba_id_says_what_is_wanted() {
        for bad in [
            "phoneNumber=abc",
            "phoneNumber=",
            "phoneNumber=1234567890123456",
        ] {
            let err = parsed(bad).unwrap_err();
            assert!(
                err.message.starts_with("phoneNumber"),
                "{bad}: {}",
                err.message
            );
        }
        for bad in ["wabaId=abc", "wabaId=", "wabaId=12%2034"] {
            let err = parsed(bad).unwrap_err();
            assert!(err.message.starts_with("wabaId"), "{bad}: {}", err.message);
        }
    }

    #[test]
    fn a_cursor_starts_the_page_after_its_number() {
        let query = parsed("cursor=1768471200123.abc123&limit=5").unwrap();
        let PageStart::After(cursor) = query.start else {
            panic!("expected a cursor start, got {:?}", query.start);
        };
        assert_eq!(cursor.number_id.as_str(), "abc123");
        assert_eq!(query.limit, 5);
    }

    #[test]
    fn a_malformed_cursor_or_a_cursor_with_an_offset_is_refused() {
        assert!(
            parsed("cursor=garbage")
                .unwrap_err()
                .message
                .starts_with("cursor")
        );
        let both = parsed("cursor=1768471200123.abc123&offset=3").unwrap_err();
        assert!(both.message.contains("together"), "{}", both.message);
    }

    #[test]
    fn the_default_offset_beside_a_cursor_is_the_cursor_s_page_in_either_order() {
        for raw in [
            "cursor=1768471200123.abc123&offset=0",
            "offset=0&cursor=1768471200123.abc123",
        ] {
            let PageStart::After(cursor) = parsed(raw).unwrap().start else {
                panic!("{raw}: not a cursor page");
            };
            assert_eq!(cursor.number_id.as_str(), "abc123");
        }
        let both = parsed("offset=3&cursor=1768471200123.abc123").unwrap_err();
        assert!(both.message.contains("together"), "{}", both.message);
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
