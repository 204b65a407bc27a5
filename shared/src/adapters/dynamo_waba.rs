//! WABA-only signups in the single table: `PK = WABASIGNUP#{id}`, `SK = WABASIGNUP`, the whole
//! signup in one item put conditioned on its version. Its creation consumes the signup link
//! (`usedAt`, `usedByWabaSignup`) in the same transaction; the write that ends it copies the
//! outcome onto the link (`wabaState`, `wabaNumberIds`, `wabaSkipped`, `wabaFailure`) in the
//! same transaction too. `expiresAt` (the table's TTL) drops the record [`RECORD_RETENTION`]
//! after its creation, as links are dropped.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use serde::{Deserialize, Serialize};

use super::dynamo::{DynamoStore, key, n, s, sdk_unavailable, unavailable};
use crate::domain::lifecycle::waba::WabaChange;
use crate::domain::signup_session::RECORD_RETENTION;
use crate::domain::waba_signup::{WabaOutcome, WabaSignup};
use crate::domain::{AccountId, FailureReason, NumberId, time};
use crate::ports::{StoreError, StoreResult, WabaCommit, WabaSignups};

type Item = HashMap<String, AttributeValue>;

const ENTITY: &str = "WABASIGNUP";

fn pk(id: &str) -> String {
    format!("WABASIGNUP#{id}")
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WabaSignupItem {
    #[serde(rename = "PK")]
    pk: String,
    #[serde(rename = "SK")]
    sk: String,
    entity: String,
    id: String,
    account_id: String,
    waba_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    link_id: Option<String>,
    created_at: String,
    updated_at: String,
    /// `pending`, `completed` or `failed`.
    state: String,
    #[serde(default)]
    number_ids: Vec<String>,
    #[serde(default)]
    skipped: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failure_reason: Option<FailureReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_error: Option<FailureReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token_deleted_at: Option<String>,
    version: u64,
    expires_at: i64,
}

impl WabaSignupItem {
    fn from_signup(signup: &WabaSignup) -> WabaSignupItem {
        let (state, number_ids, skipped, failure_reason) = match &signup.outcome {
            None => ("pending", Vec::new(), Vec::new(), None),
            Some(WabaOutcome::Completed {
                number_ids,
                skipped,
            }) => (
                "completed",
                number_ids.iter().map(|id| id.to_string()).collect(),
                skipped.clone(),
                None,
            ),
            Some(WabaOutcome::Failed(reason)) => {
                ("failed", Vec::new(), Vec::new(), Some(reason.clone()))
            }
        };
        WabaSignupItem {
            pk: pk(&signup.id),
            sk: ENTITY.into(),
            entity: ENTITY.into(),
            id: signup.id.clone(),
            account_id: signup.account_id.to_string(),
            waba_id: signup.waba_id.clone(),
            link_id: signup.link_id.clone(),
            created_at: time::format(&signup.created_at),
            updated_at: time::format(&signup.updated_at),
            state: state.into(),
            number_ids,
            skipped,
            failure_reason,
            last_error: signup.last_error.clone(),
            token_deleted_at: signup.token_deleted_at.as_ref().map(time::format),
            version: signup.version,
            expires_at: (signup.created_at + RECORD_RETENTION).timestamp(),
        }
    }

    fn into_signup(self) -> StoreResult<WabaSignup> {
        let parse = |text: &str| time::parse(text).map_err(StoreError::corrupt);
        let outcome = match self.state.as_str() {
            "pending" => None,
            "completed" => Some(WabaOutcome::Completed {
                number_ids: self.number_ids.into_iter().map(NumberId::from).collect(),
                skipped: self.skipped,
            }),
            "failed" => Some(WabaOutcome::Failed(self.failure_reason.ok_or_else(
                || StoreError::corrupt("failed WABA signup without its reason"),
            )?)),
            other => {
                return Err(StoreError::corrupt(format!(
                    "WABA signup in unknown state {other}"
                )));
            }
        };
        Ok(WabaSignup {
            id: self.id,
            account_id: AccountId::from(self.account_id),
            waba_id: self.waba_id,
            link_id: self.link_id,
            created_at: parse(&self.created_at)?,
            updated_at: parse(&self.updated_at)?,
            outcome,
            last_error: self.last_error,
            token_deleted_at: self.token_deleted_at.as_deref().map(parse).transpose()?,
            version: self.version,
        })
    }
}

fn to_item(signup: &WabaSignup) -> StoreResult<Item> {
    serde_dynamo::to_item(WabaSignupItem::from_signup(signup)).map_err(unavailable)
}

/// How the link records the outcome of the WABA signup that consumed it.
pub(crate) fn link_outcome_attributes(
    outcome: &WabaOutcome,
) -> StoreResult<Vec<(&'static str, AttributeValue)>> {
    let list = |items: Vec<String>| AttributeValue::L(items.into_iter().map(s).collect());
    Ok(match outcome {
        WabaOutcome::Completed {
            number_ids,
            skipped,
        } => vec![
            (":state", s("completed")),
            (
                ":ids",
                list(number_ids.iter().map(|id| id.to_string()).collect()),
            ),
            (":skipped", list(skipped.clone())),
            (":failure", AttributeValue::Null(true)),
        ],
        WabaOutcome::Failed(reason) => vec![
            (":state", s("failed")),
            (":ids", AttributeValue::L(Vec::new())),
            (":skipped", AttributeValue::L(Vec::new())),
            (
                ":failure",
                s(serde_json::to_string(reason).map_err(unavailable)?),
            ),
        ],
    })
}

/// The outcome a link read back records (`None` while its signup runs).
pub(crate) fn link_outcome(item: &Item) -> StoreResult<Option<WabaOutcome>> {
    let strings = |name: &str| -> Vec<String> {
        item.get(name)
            .and_then(|v| v.as_l().ok())
            .map(|l| l.iter().filter_map(|v| v.as_s().ok().cloned()).collect())
            .unwrap_or_default()
    };
    match item
        .get("wabaState")
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
    {
        None => Ok(None),
        Some("completed") => Ok(Some(WabaOutcome::Completed {
            number_ids: strings("wabaNumberIds")
                .into_iter()
                .map(NumberId::from)
                .collect(),
            skipped: strings("wabaSkipped"),
        })),
        Some("failed") => {
            let text = item
                .get("wabaFailure")
                .and_then(|v| v.as_s().ok())
                .ok_or_else(|| StoreError::corrupt("failed WABA signup link without its reason"))?;
            Ok(Some(WabaOutcome::Failed(
                serde_json::from_str(text).map_err(StoreError::corrupt)?,
            )))
        }
        Some(other) => Err(StoreError::corrupt(format!(
            "signup link with unknown WABA state {other}"
        ))),
    }
}

impl WabaSignups for DynamoStore {
    async fn create_waba_signup(&self, signup: &WabaSignup) -> StoreResult<bool> {
        let mut items = vec![super::dynamo::put_new(self.table(), to_item(signup)?)?];
        if let Some(link) = &signup.link_id {
            let now = time::now();
            let consume = Update::builder()
                .table_name(self.table())
                .set_key(Some(key(
                    super::dynamo::keys::signup_link(link),
                    super::dynamo::keys::SIGNUP_LINK,
                )))
                .update_expression("SET usedAt = :now, usedByWabaSignup = :signup")
                .condition_expression(format!(
                    "attribute_exists(PK) AND accountId = :account AND {}",
                    super::dynamo_signup::USABLE
                ))
                .expression_attribute_values(":now", s(time::format(&now)))
                .expression_attribute_values(":signup", s(signup.id.as_str()))
                .expression_attribute_values(":account", s(signup.account_id.as_str()))
                .expression_attribute_values(":epoch", n(now.timestamp()))
                .build()
                .map_err(unavailable)?;
            items.push(TransactWriteItem::builder().update(consume).build());
        }
        match self.transact(items).await? {
            Ok(()) => Ok(true),
            Err(codes)
                if codes.get(1).and_then(|c| c.as_deref()) == Some("ConditionalCheckFailed") =>
            {
                Ok(false)
            }
            Err(codes) => Err(StoreError::unavailable(format!(
                "WABA signup creation cancelled: {codes:?}"
            ))),
        }
    }

    async fn waba_signup(&self, account: &AccountId, id: &str) -> StoreResult<Option<WabaSignup>> {
        let output = self
            .client()
            .get_item()
            .table_name(self.table())
            .set_key(Some(key(pk(id), ENTITY)))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_unavailable)?;
        let Some(item) = output.item else {
            return Ok(None);
        };
        let item: WabaSignupItem = serde_dynamo::from_item(item).map_err(StoreError::corrupt)?;
        let signup = item.into_signup()?;
        Ok((&signup.account_id == account).then_some(signup))
    }

    async fn commit_waba_signup(&self, change: &WabaChange) -> StoreResult<WabaCommit> {
        let put = Put::builder()
            .table_name(self.table())
            .set_item(Some(to_item(&change.signup)?))
            .condition_expression("attribute_exists(PK) AND version = :expected")
            .expression_attribute_values(":expected", n(change.expected_version as i64))
            .build()
            .map_err(unavailable)?;
        let mut items = vec![TransactWriteItem::builder().put(put).build()];
        if let Some((link, outcome)) = &change.link_outcome {
            let mut update = Update::builder()
                .table_name(self.table())
                .set_key(Some(key(
                    super::dynamo::keys::signup_link(link),
                    super::dynamo::keys::SIGNUP_LINK,
                )))
                .update_expression(
                    "SET wabaState = :state, wabaNumberIds = :ids, wabaSkipped = :skipped, wabaFailure = :failure",
                )
                .condition_expression("usedByWabaSignup = :signup")
                .expression_attribute_values(":signup", s(change.signup.id.as_str()));
            for (placeholder, value) in link_outcome_attributes(outcome)? {
                update = update.expression_attribute_values(placeholder, value);
            }
            items.push(
                TransactWriteItem::builder()
                    .update(update.build().map_err(unavailable)?)
                    .build(),
            );
        }
        match self.transact(items).await? {
            Ok(()) => Ok(WabaCommit::Committed(change.signup.clone())),
            Err(codes)
                if codes.first().and_then(|c| c.as_deref()) == Some("ConditionalCheckFailed") =>
            {
                let current = self
                    .waba_signup(&change.signup.account_id, &change.signup.id)
                    .await?
                    .ok_or(StoreError::NotFound)?;
                Ok(WabaCommit::Conflict(current))
            }
            Err(codes) => Err(StoreError::unavailable(format!(
                "WABA signup write cancelled: {codes:?}"
            ))),
        }
    }
}
