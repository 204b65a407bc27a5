//! The single DynamoDB table. Key design (see README "Data model"):
//!
//! | item              | PK                           | SK                  | GSI1 (status, keys only)            | GSI2 (all, keys only)   | GSI3 (WABA, all) |
//! |-------------------|------------------------------|---------------------|--------------------------------------|-------------------------|------------------|
//! | number            | `ACCOUNT#{a}`                | `NUMBER#{id}`       | `ACCOUNT#{a}#STATUS#{s}` / `{created}#{id}` | `ACCOUNT#{a}` / `{created}#{id}` | `WABA#{w}` / `NUMBER#{id}` |
//!
//! Numbers are also in GSI4 (`ACCOUNT#{a}#DISPLAY#{digits of the display number}` /
//! `{created}#{id}`, once Meta gave a display number) and GSI5 (`ACCOUNT#{a}#WABA#{w}` /
//! `{created}#{id}`), both keys plus `status`, `wabaId`: how `GET /api/numbers?phoneNumber=` and
//! `?wabaId=` find them (`dynamo_find.rs`). Idempotency keys: `IDEMPOTENCY#{a}` /
//! `KEY#{sha256 of the key}` (`dynamo_idempotency.rs`).
//! | status counters   | `ACCOUNT#{a}`                | `COUNTERS`          |                                      |                         |                  |
//! | phone guard       | `PHONE#{phoneNumberId}`      | `PHONE`             |                                      |                         |                  |
//! | account           | `ACCOUNT#{a}`                | `ACCOUNT`           |                                      |                         |                  |
//! | API key (lookup)  | `APIKEY#{sha256}`            | `APIKEY`            |                                      |                         |                  |
//! | API key (owner)   | `ACCOUNT#{a}`                | `APIKEY#{keyId}`    |                                      |                         |                  |
//! | event (outbox)    | `EVENT#{id}`                 | `EVENT`             |                                      |                         | `HISTORY#{a}#{number}` / `{created}#{id}` |
//!
//! An event not yet published is also on GSI6 (`OUTBOX#{0..3}` / `{created}#{id}`, keys only,
//! removed when it is published): what the outbox relay (`crate::outbox`) sweeps. So is a
//! webhook endpoint holding a rotated-out secret (`WEBHOOKSECRETGRACE` / the end of its grace
//! period), which the relay forgets then.
//!
//! Webhook endpoints and deliveries: `dynamo_webhooks.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Delete, KeysAndAttributes, Put, PutRequest, TransactWriteItem,
    Update, WriteRequest,
};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::domain::api_key::{KeyHash, KeyScope, PlainApiKey};
use crate::domain::lifecycle::{Change, DisconnectedBy, PhoneGuard};
use crate::domain::time::{self, Timestamp};
use crate::domain::{
    AccountId, ApiKeyId, EventEnvelope, FailureReason, Health, NameDecision, Number, NumberId,
    Onboarding, QualityRating, Reconnect, Restriction, Status, Step, TokenStatus,
};
use crate::ports::{
    ApiKeyVerifier, CommitOutcome, CreateOutcome, EventLog, LifecycleStore, NumberPage,
    NumberReader, Page, PhoneOwner, ProvisioningStore, QuotaSubject, RequestQuota, StoreError,
    StoreResult, VerifiedKey,
};

pub mod keys {
    use super::*;

    pub const COUNTERS: &str = "COUNTERS";
    pub const PHONE: &str = "PHONE";
    pub const ACCOUNT: &str = "ACCOUNT";
    pub const API_KEY: &str = "APIKEY";

    pub fn account(account: &AccountId) -> String {
        format!("ACCOUNT#{account}")
    }
    pub fn number(id: &NumberId) -> String {
        format!("NUMBER#{id}")
    }
    pub fn account_status(account: &AccountId, status: Status) -> String {
        format!("ACCOUNT#{account}#STATUS#{status}")
    }
    pub fn newest_first(created_at: &Timestamp, id: &NumberId) -> String {
        format!("{}#{id}", time::format(created_at))
    }
    pub fn account_display(account: &AccountId, digits: &str) -> String {
        format!("ACCOUNT#{account}#DISPLAY#{digits}")
    }
    pub fn account_waba(account: &AccountId, waba_id: &str) -> String {
        format!("ACCOUNT#{account}#WABA#{waba_id}")
    }
    pub fn waba(waba_id: &str) -> String {
        format!("WABA#{waba_id}")
    }
    pub fn phone(phone_number_id: &str) -> String {
        format!("PHONE#{phone_number_id}")
    }
    pub fn event(id: &str) -> String {
        format!("EVENT#{id}")
    }
    /// A number's history on GSI3 (its events), apart from the WABA keys sharing the index.
    pub fn history(account: &AccountId, number_id: &str) -> String {
        format!("HISTORY#{account}#{number_id}")
    }
    pub const EVENT: &str = "EVENT";
    /// Unpublished events on GSI6 (sparse: the keys go when the event is published), spread
    /// over [`OUTBOX_SHARDS`] partitions so a burst of events never heats one index key.
    pub fn outbox(event_id: &str) -> String {
        let shard = event_id
            .bytes()
            .fold(0u32, |h, b| h.wrapping_add(u32::from(b)));
        outbox_shard(shard % OUTBOX_SHARDS)
    }
    pub fn outbox_shard(shard: u32) -> String {
        format!("OUTBOX#{shard}")
    }
    pub const OUTBOX_SHARDS: u32 = 4;
    /// Webhook endpoints holding a secret a rotation replaced, on GSI6 by the end of its grace
    /// period (sparse: the keys go with the secret), for the relay to forget it then.
    pub const SECRET_GRACE: &str = "WEBHOOKSECRETGRACE";
    pub const SIGNUP_LINK: &str = "SIGNUPLINK";
    pub fn signup_link(id: &str) -> String {
        format!("SIGNUPLINK#{id}")
    }
    /// A rate-limit subject's request count per window (an account's API requests, the
    /// signup page's per link or per source IP): its own partition, apart from the account's
    /// numbers, so counting never heats theirs.
    pub fn quota(subject: &QuotaSubject<'_>) -> String {
        format!("QUOTA#{}", subject.key())
    }
    pub fn quota_window(window_start: i64) -> String {
        format!("WINDOW#{window_start}")
    }
    pub fn api_key(hash: &KeyHash) -> String {
        format!("APIKEY#{}", hash.as_str())
    }
    pub fn owned_api_key(id: &ApiKeyId) -> String {
        format!("APIKEY#{id}")
    }
}

// Item-building and error helpers shared by the DynamoDB adapters (this file and its siblings).

pub(crate) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(crate) fn n(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub(crate) fn key(pk: String, sk: impl Into<String>) -> HashMap<String, AttributeValue> {
    HashMap::from([("PK".to_string(), s(pk)), ("SK".to_string(), s(sk))])
}

pub(crate) fn unavailable(err: impl Into<crate::ports::BoxError>) -> StoreError {
    StoreError::unavailable(err)
}

/// A conditional write's outcome: `true` written, `false` its condition did not hold.
pub(crate) fn conditionally_written<T, E, R>(result: Result<T, SdkError<E, R>>) -> StoreResult<bool>
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match result {
        Ok(_) => Ok(true),
        Err(err) if is_conditional_failure(&err) => Ok(false),
        Err(err) => Err(sdk_unavailable(err)),
    }
}

pub(crate) fn sdk_unavailable<E, R>(err: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    StoreError::unavailable(err)
}

/// How a number is laid out in the table.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NumberItem {
    #[serde(rename = "PK")]
    pk: String,
    #[serde(rename = "SK")]
    sk: String,
    #[serde(rename = "GSI1PK")]
    gsi1pk: String,
    #[serde(rename = "GSI1SK")]
    gsi1sk: String,
    #[serde(rename = "GSI2PK")]
    gsi2pk: String,
    #[serde(rename = "GSI2SK")]
    gsi2sk: String,
    #[serde(rename = "GSI3PK")]
    gsi3pk: String,
    #[serde(rename = "GSI3SK")]
    gsi3sk: String,
    /// The account's numbers by display number (its digits); absent until Meta gave one.
    #[serde(rename = "GSI4PK", default, skip_serializing_if = "Option::is_none")]
    gsi4pk: Option<String>,
    #[serde(rename = "GSI4SK", default, skip_serializing_if = "Option::is_none")]
    gsi4sk: Option<String>,
    /// The account's numbers by WABA.
    #[serde(rename = "GSI5PK", default, skip_serializing_if = "Option::is_none")]
    gsi5pk: Option<String>,
    #[serde(rename = "GSI5SK", default, skip_serializing_if = "Option::is_none")]
    gsi5sk: Option<String>,
    entity: String,
    id: NumberId,
    account_id: AccountId,
    waba_id: String,
    phone_number_id: String,
    #[serde(default, skip_serializing_if = "Onboarding::is_default")]
    onboarding: Onboarding,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    display_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    quality_rating: Option<QualityRating>,
    status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token_expires_at: Option<String>,
    created_at: String,
    updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    provisioning_step: Option<Step>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failure_reason: Option<FailureReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_event_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    provisioning_error: Option<FailureReason>,
    #[serde(default)]
    subscribed: bool,
    #[serde(default)]
    registered: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    torn_down_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token_deleted_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token_expiry_warned_on: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    register_calls: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    restrictions: Vec<Restriction>,
    #[serde(default)]
    ban_scheduled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reconnect: Option<Reconnect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reconnected_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reconnect_failure: Option<FailureReason>,
    health: Option<Health>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    messaging_limit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    throughput: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name_decision: Option<NameDecision>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token_status: Option<TokenStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    disconnected_by: Option<DisconnectedBy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    register_waiting_on: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    phone_elsewhere: bool,
    version: u64,
}

impl NumberItem {
    fn from_number(number: &Number) -> NumberItem {
        NumberItem {
            pk: keys::account(&number.account_id),
            sk: keys::number(&number.id),
            gsi1pk: keys::account_status(&number.account_id, number.status),
            gsi1sk: keys::newest_first(&number.created_at, &number.id),
            gsi2pk: keys::account(&number.account_id),
            gsi2sk: keys::newest_first(&number.created_at, &number.id),
            gsi3pk: keys::waba(&number.waba_id),
            gsi3sk: keys::number(&number.id),
            gsi4pk: number
                .display_number
                .as_deref()
                .and_then(crate::domain::number_cursor::display_digits)
                .map(|digits| keys::account_display(&number.account_id, &digits)),
            gsi4sk: number
                .display_number
                .as_deref()
                .and_then(crate::domain::number_cursor::display_digits)
                .map(|_| keys::newest_first(&number.created_at, &number.id)),
            gsi5pk: Some(keys::account_waba(&number.account_id, &number.waba_id)),
            gsi5sk: Some(keys::newest_first(&number.created_at, &number.id)),
            entity: "NUMBER".into(),
            id: number.id.clone(),
            account_id: number.account_id.clone(),
            waba_id: number.waba_id.clone(),
            phone_number_id: number.phone_number_id.clone(),
            onboarding: number.onboarding,
            display_number: number.display_number.clone(),
            display_name: number.display_name.clone(),
            quality_rating: number.quality_rating,
            status: number.status,
            token_expires_at: number.token_expires_at.as_ref().map(time::format),
            created_at: time::format(&number.created_at),
            updated_at: time::format(&number.updated_at),
            provisioning_step: number.provisioning_step,
            failure_reason: number.failure_reason.clone(),
            last_event_id: number.last_event_id.clone(),
            provisioning_error: number.provisioning_error.clone(),
            subscribed: number.subscribed,
            registered: number.registered,
            torn_down_at: number.torn_down_at.as_ref().map(time::format),
            token_deleted_at: number.token_deleted_at.as_ref().map(time::format),
            token_expiry_warned_on: number.token_expiry_warned_on.clone(),
            register_calls: number.register_calls.iter().map(time::format).collect(),
            restrictions: number.restrictions.clone(),
            ban_scheduled: number.ban_scheduled,
            reconnect: number.reconnect.clone(),
            reconnected_at: number.reconnected_at.as_ref().map(time::format),
            reconnect_failure: number.reconnect_failure.clone(),
            health: number.health.clone(),
            messaging_limit: number.messaging_limit.clone(),
            throughput: number.throughput.clone(),
            name_status: number.name_status.clone(),
            name_decision: number.name_decision.clone(),
            token_status: number.token_status,
            disconnected_by: number.disconnected_by,
            register_waiting_on: number.register_waiting_on.clone(),
            phone_elsewhere: number.phone_elsewhere,
            version: number.version,
        }
    }

    fn into_number(self) -> StoreResult<Number> {
        let parse = |text: &str| time::parse(text).map_err(StoreError::corrupt);
        Ok(Number {
            token_expires_at: self.token_expires_at.as_deref().map(parse).transpose()?,
            created_at: parse(&self.created_at)?,
            updated_at: parse(&self.updated_at)?,
            id: self.id,
            account_id: self.account_id,
            waba_id: self.waba_id,
            phone_number_id: self.phone_number_id,
            onboarding: self.onboarding,
            display_number: self.display_number,
            display_name: self.display_name,
            quality_rating: self.quality_rating,
            status: self.status,
            provisioning_step: self.provisioning_step,
            failure_reason: self.failure_reason,
            last_event_id: self.last_event_id,
            provisioning_error: self.provisioning_error,
            subscribed: self.subscribed,
            registered: self.registered,
            torn_down_at: self.torn_down_at.as_deref().map(parse).transpose()?,
            token_deleted_at: self.token_deleted_at.as_deref().map(parse).transpose()?,
            token_expiry_warned_on: self.token_expiry_warned_on,
            register_calls: self
                .register_calls
                .iter()
                .map(|at| parse(at))
                .collect::<StoreResult<_>>()?,
            restrictions: self.restrictions,
            ban_scheduled: self.ban_scheduled,
            reconnect: self.reconnect,
            reconnected_at: self.reconnected_at.as_deref().map(parse).transpose()?,
            reconnect_failure: self.reconnect_failure,
            health: self.health,
            messaging_limit: self.messaging_limit,
            throughput: self.throughput,
            name_status: self.name_status,
            name_decision: self.name_decision,
            token_status: self.token_status,
            disconnected_by: self.disconnected_by,
            register_waiting_on: self.register_waiting_on,
            phone_elsewhere: self.phone_elsewhere,
            version: self.version,
        })
    }
}

/// A number as the JSON of its table item: what a message carries as its number's snapshot
/// ([`crate::ports::NumberSnapshots`]). The memory store writes the same text.
pub(crate) fn number_snapshot(number: &Number) -> StoreResult<String> {
    serde_json::to_string(&NumberItem::from_number(number)).map_err(StoreError::corrupt)
}

/// The number a [`number_snapshot`] was taken of.
pub(crate) fn number_from_snapshot(text: &str) -> StoreResult<Number> {
    serde_json::from_str::<NumberItem>(text)
        .map_err(StoreError::corrupt)?
        .into_number()
}

impl crate::ports::NumberSnapshots for DynamoStore {
    fn number_snapshot(&self, number: &Number) -> StoreResult<String> {
        number_snapshot(number)
    }

    fn number_from_snapshot(&self, text: &str) -> StoreResult<Number> {
        number_from_snapshot(text)
    }
}

fn number_from_item(item: HashMap<String, AttributeValue>) -> StoreResult<Number> {
    serde_dynamo::from_item::<_, NumberItem>(item)
        .map_err(StoreError::corrupt)?
        .into_number()
}

/// What the store has read, so tests and benchmarks can show a list costs O(page), not O(account).
/// (Which operations reach DynamoDB, Scans among them, is counted where the requests go out:
/// the tests' SDK interceptor and the benchmarks' proxy.)
#[derive(Default, Debug)]
pub struct ReadStats {
    requests: AtomicU64,
    items_read: AtomicU64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadStatsSnapshot {
    pub requests: u64,
    pub items_read: u64,
}

impl ReadStats {
    pub(crate) fn record(&self, items: u64) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.items_read.fetch_add(items, Ordering::Relaxed);
    }

    pub(crate) fn record_items(&self, items: u64) {
        self.record(items);
    }

    pub fn snapshot(&self) -> ReadStatsSnapshot {
        ReadStatsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            items_read: self.items_read.load(Ordering::Relaxed),
        }
    }

    pub fn reset(&self) {
        self.requests.store(0, Ordering::Relaxed);
        self.items_read.store(0, Ordering::Relaxed);
    }
}

#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    stats: Arc<ReadStats>,
    event_retention_days: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Account {
    pub id: AccountId,
    pub name: String,
    #[serde(with = "time")]
    pub created_at: Timestamp,
}

#[derive(Debug)]
pub struct CreatedApiKey {
    pub id: ApiKeyId,
    pub account_id: AccountId,
    pub key: PlainApiKey,
    pub scope: KeyScope,
}

/// A key as the operator lists it: never the key, nor its hash.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeySummary {
    pub id: ApiKeyId,
    pub name: String,
    pub scope: KeyScope,
    pub created_at: String,
    /// The start of the hour of its last use (uses are recorded to the hour).
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
}

const MAX_TRANSACTION_ATTEMPTS: u32 = 8;

impl DynamoStore {
    /// The write that consumes a usable signup link of `account` for `number`.
    fn link_consumption(
        &self,
        account: &AccountId,
        link: &str,
        number: &NumberId,
    ) -> aws_sdk_dynamodb::types::builders::UpdateBuilder {
        let now = time::now();
        Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(keys::signup_link(link), keys::SIGNUP_LINK)))
            .update_expression("SET usedAt = :now, usedBy = :number")
            .condition_expression(format!(
                "attribute_exists(PK) AND accountId = :account AND {}",
                super::dynamo_signup::USABLE
            ))
            .expression_attribute_values(":now", s(time::format(&now)))
            .expression_attribute_values(":number", s(number.as_str()))
            .expression_attribute_values(":account", s(account.as_str()))
            .expression_attribute_values(":epoch", n(now.timestamp()))
    }

    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoStore {
            client,
            table: table.into(),
            stats: Arc::default(),
            event_retention_days: DEFAULT_EVENT_RETENTION_DAYS,
        }
    }

    /// How long events (a number's history) and delivery records are kept before TTL removes
    /// them (template parameter `EventRetentionDays`).
    pub fn with_event_retention_days(mut self, days: u32) -> Self {
        self.event_retention_days = days;
        self
    }

    /// When an item about something at `at` (an event, its deliveries) expires.
    pub(crate) fn retained_until(&self, at: &Timestamp) -> i64 {
        (*at + chrono::Duration::days(i64::from(self.event_retention_days))).timestamp()
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn stats(&self) -> &ReadStats {
        &self.stats
    }

    async fn get_item(
        &self,
        pk: String,
        sk: impl Into<String>,
    ) -> StoreResult<Option<HashMap<String, AttributeValue>>> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_unavailable)?;
        self.stats.record(u64::from(output.item.is_some()));
        Ok(output.item)
    }

    /// Runs a transaction, retrying only DynamoDB's own contention (`TransactionConflict`),
    /// which hot items such as an account's counters see under bursts of signups.
    /// `Ok(Err(reasons))` is a cancellation for a failed condition, with its reasons.
    pub(crate) async fn transact(
        &self,
        items: Vec<TransactWriteItem>,
    ) -> StoreResult<Result<(), Vec<Option<String>>>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await;
            let err = match result {
                Ok(_) => return Ok(Ok(())),
                Err(err) => err,
            };
            let service = match err.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(cancel)) => cancel,
                Some(TransactWriteItemsError::TransactionInProgressException(_)) => {
                    if attempt < MAX_TRANSACTION_ATTEMPTS {
                        backoff(attempt).await;
                        continue;
                    }
                    return Err(sdk_unavailable(err));
                }
                _ => return Err(sdk_unavailable(err)),
            };
            let codes: Vec<Option<String>> = service
                .cancellation_reasons()
                .iter()
                .map(|r| r.code().map(str::to_string))
                .collect();
            let conflicted = codes
                .iter()
                .any(|c| c.as_deref() == Some("TransactionConflict"));
            let condition_failed = codes
                .iter()
                .any(|c| c.as_deref() == Some("ConditionalCheckFailed"));
            if condition_failed {
                return Ok(Err(codes));
            }
            if conflicted && attempt < MAX_TRANSACTION_ATTEMPTS {
                backoff(attempt).await;
                continue;
            }
            return Err(sdk_unavailable(err));
        }
    }

    fn counters_update(
        &self,
        account: &AccountId,
        deltas: &[(Status, i64)],
    ) -> StoreResult<TransactWriteItem> {
        let mut names = HashMap::new();
        let mut values = HashMap::new();
        let mut clauses = Vec::new();
        for (i, (status, delta)) in deltas.iter().enumerate() {
            names.insert(format!("#s{i}"), status.as_str().to_string());
            values.insert(format!(":d{i}"), n(*delta));
            clauses.push(format!("#s{i} :d{i}"));
        }
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(keys::account(account), keys::COUNTERS)))
            .update_expression(format!("ADD {}", clauses.join(", ")))
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .build()
            .map_err(unavailable)?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    pub(crate) async fn count(
        &self,
        account: &AccountId,
        status: Option<Status>,
    ) -> StoreResult<u64> {
        let Some(item) = self
            .get_item(keys::account(account), keys::COUNTERS)
            .await?
        else {
            return Ok(0);
        };
        let read = |status: Status| -> u64 {
            item.get(status.as_str())
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse::<i64>().ok())
                .map_or(0, |v| v.max(0) as u64)
        };
        Ok(match status {
            Some(status) => read(status),
            None => Status::ALL.into_iter().map(read).sum(),
        })
    }

    /// Keys of one page, read from a keys-only index: the skipped offset costs index reads of a
    /// few bytes each, the page itself `limit` of them.
    async fn page_keys(
        &self,
        account: &AccountId,
        status: Option<Status>,
        page: Page,
    ) -> StoreResult<Vec<HashMap<String, AttributeValue>>> {
        let (index, partition_attr, partition) = match status {
            Some(status) => ("GSI1", "GSI1PK", keys::account_status(account, status)),
            None => ("GSI2", "GSI2PK", keys::account(account)),
        };
        let limit = page.limit as usize;
        let mut to_skip = page.offset as usize;
        let mut keys = Vec::with_capacity(limit);
        let mut start = None;
        loop {
            let wanted = to_skip + (limit - keys.len());
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index)
                .key_condition_expression("#pk = :pk")
                .expression_attribute_names("#pk", partition_attr)
                .expression_attribute_values(":pk", s(partition.clone()))
                .scan_index_forward(false)
                .limit(wanted.clamp(1, 1000) as i32)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(sdk_unavailable)?;
            self.stats.record(output.scanned_count().max(0) as u64);
            for item in output.items.unwrap_or_default() {
                if to_skip > 0 {
                    to_skip -= 1;
                    continue;
                }
                if keys.len() < limit {
                    let (Some(pk), Some(sk)) = (item.get("PK"), item.get("SK")) else {
                        return Err(StoreError::corrupt("index entry without keys"));
                    };
                    keys.push(HashMap::from([
                        ("PK".to_string(), pk.clone()),
                        ("SK".to_string(), sk.clone()),
                    ]));
                }
            }
            match output.last_evaluated_key {
                Some(next) if keys.len() < limit => start = Some(next),
                _ => return Ok(keys),
            }
        }
    }

    pub(crate) async fn batch_get_numbers(
        &self,
        keys: Vec<HashMap<String, AttributeValue>>,
    ) -> StoreResult<Vec<Number>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let order: Vec<String> = keys
            .iter()
            .filter_map(|k| k.get("SK").and_then(|v| v.as_s().ok()).cloned())
            .collect();
        let mut found: HashMap<String, Number> = HashMap::with_capacity(keys.len());
        let mut pending = Some(
            KeysAndAttributes::builder()
                .set_keys(Some(keys))
                .consistent_read(true)
                .build()
                .map_err(unavailable)?,
        );
        let mut attempt = 0;
        while let Some(request) = pending.take() {
            attempt += 1;
            let output = self
                .client
                .batch_get_item()
                .request_items(&self.table, request)
                .send()
                .await
                .map_err(sdk_unavailable)?;
            let items = output
                .responses
                .and_then(|mut r| r.remove(&self.table))
                .unwrap_or_default();
            self.stats.record(items.len() as u64);
            for item in items {
                let number = number_from_item(item)?;
                found.insert(keys::number(&number.id), number);
            }
            pending = output
                .unprocessed_keys
                .and_then(|mut u| u.remove(&self.table))
                .filter(|k| !k.keys().is_empty());
            if pending.is_some() {
                if attempt >= MAX_TRANSACTION_ATTEMPTS {
                    return Err(StoreError::unavailable("batch read left keys unprocessed"));
                }
                backoff(attempt).await;
            }
        }
        Ok(order.iter().filter_map(|sk| found.remove(sk)).collect())
    }

    /// Rewrites every number item as this version lays it out, so items written before an
    /// index existed (GSI4 display number, GSI5 WABA) get its keys. An operator's one-off after
    /// a deploy (`muchaw-admin numbers reindex`), never a request path: it Scans. Each write is
    /// conditioned on the version read, so a number changed meanwhile is left to that change
    /// (which wrote the new layout itself). Returns (rewritten, skipped as changed meanwhile).
    pub async fn reindex_numbers(&self) -> StoreResult<(u64, u64)> {
        let (mut rewritten, mut skipped) = (0u64, 0u64);
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("entity = :number")
                .expression_attribute_values(":number", s("NUMBER"))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(sdk_unavailable)?;
            for item in page.items.unwrap_or_default() {
                let number = number_from_item(item)?;
                let layout =
                    serde_dynamo::to_item(NumberItem::from_number(&number)).map_err(unavailable)?;
                let result = self
                    .client
                    .put_item()
                    .table_name(&self.table)
                    .set_item(Some(layout))
                    .condition_expression("version = :version")
                    .expression_attribute_values(
                        ":version",
                        n(i64::try_from(number.version).map_err(unavailable)?),
                    )
                    .send()
                    .await;
                if conditionally_written(result)? {
                    rewritten += 1;
                } else {
                    skipped += 1;
                }
            }
            match page.last_evaluated_key {
                Some(next) if !next.is_empty() => start = Some(next),
                _ => return Ok((rewritten, skipped)),
            }
        }
    }

    /// Writes numbers in bulk, with their counters and phone guards, without per-number
    /// transactions: for importing an account from elsewhere and for seeding large tests.
    pub async fn import_numbers(&self, numbers: &[Number]) -> StoreResult<()> {
        let mut requests = Vec::new();
        let mut counts: HashMap<(AccountId, Status), i64> = HashMap::new();
        for number in numbers {
            let item =
                serde_dynamo::to_item(NumberItem::from_number(number)).map_err(unavailable)?;
            requests.push(put_request(item)?);
            if number.status.is_live() && !number.phone_elsewhere {
                requests.push(put_request(guard_item(number))?);
            }
            *counts
                .entry((number.account_id.clone(), number.status))
                .or_default() += 1;
        }
        for chunk in requests.chunks(25) {
            self.batch_write(chunk.to_vec()).await?;
        }
        let mut by_account: HashMap<AccountId, Vec<(Status, i64)>> = HashMap::new();
        for ((account, status), count) in counts {
            by_account.entry(account).or_default().push((status, count));
        }
        for (account, deltas) in by_account {
            let update = self.counters_update(&account, &deltas)?;
            if let Some(update) = update.update {
                self.client
                    .update_item()
                    .table_name(&self.table)
                    .set_key(Some(update.key))
                    .update_expression(update.update_expression)
                    .set_expression_attribute_names(update.expression_attribute_names)
                    .set_expression_attribute_values(update.expression_attribute_values)
                    .send()
                    .await
                    .map_err(sdk_unavailable)?;
            }
        }
        Ok(())
    }

    async fn batch_write(&self, requests: Vec<WriteRequest>) -> StoreResult<()> {
        let mut pending = requests;
        let mut attempt = 0;
        while !pending.is_empty() {
            attempt += 1;
            let output = self
                .client
                .batch_write_item()
                .request_items(&self.table, pending)
                .send()
                .await
                .map_err(sdk_unavailable)?;
            pending = output
                .unprocessed_items
                .and_then(|mut u| u.remove(&self.table))
                .unwrap_or_default();
            if !pending.is_empty() {
                if attempt >= MAX_TRANSACTION_ATTEMPTS {
                    return Err(StoreError::unavailable("batch write left items"));
                }
                backoff(attempt).await;
            }
        }
        Ok(())
    }

    pub async fn create_account(&self, name: &str) -> StoreResult<Account> {
        self.create_account_with_id(AccountId::generate(), name)
            .await
    }

    /// An account with a chosen id (imports from another system, fixed examples).
    pub async fn create_account_with_id(&self, id: AccountId, name: &str) -> StoreResult<Account> {
        let account = Account {
            id,
            name: name.to_string(),
            created_at: time::now(),
        };
        let mut item = key(keys::account(&account.id), keys::ACCOUNT);
        item.insert("entity".into(), s("ACCOUNT"));
        item.insert("name".into(), s(name));
        item.insert("createdAt".into(), s(time::format(&account.created_at)));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(PK)")
            .send()
            .await
            .map_err(sdk_unavailable)?;
        self.register_account(&account.id).await?;
        Ok(account)
    }

    /// A new key for an existing account; the plain key leaves this function once, in the result.
    pub async fn create_api_key(
        &self,
        account: &AccountId,
        label: Option<&str>,
    ) -> StoreResult<CreatedApiKey> {
        self.create_scoped_api_key(account, label, KeyScope::Write)
            .await
    }

    /// A new key limited to `scope` (`read`: `GET` only).
    pub async fn create_scoped_api_key(
        &self,
        account: &AccountId,
        label: Option<&str>,
        scope: KeyScope,
    ) -> StoreResult<CreatedApiKey> {
        self.store_scoped_api_key(account, label, PlainApiKey::generate(), scope)
            .await
    }

    /// Stores a key issued elsewhere; like [`Self::create_api_key`] only its hash is kept.
    pub async fn store_api_key(
        &self,
        account: &AccountId,
        label: Option<&str>,
        key_value: PlainApiKey,
    ) -> StoreResult<CreatedApiKey> {
        self.store_scoped_api_key(account, label, key_value, KeyScope::Write)
            .await
    }

    pub async fn store_scoped_api_key(
        &self,
        account: &AccountId,
        label: Option<&str>,
        key_value: PlainApiKey,
        scope: KeyScope,
    ) -> StoreResult<CreatedApiKey> {
        let id = ApiKeyId::generate();
        let hash = key_value.hash();
        let now = time::format(&time::now());
        let label = label.unwrap_or("default");

        let mut lookup = key(keys::api_key(&hash), keys::API_KEY);
        lookup.insert("entity".into(), s("APIKEY"));
        lookup.insert("accountId".into(), s(account.as_str()));
        lookup.insert("keyId".into(), s(id.as_str()));
        lookup.insert("createdAt".into(), s(now.clone()));
        lookup.insert("scope".into(), s(scope.as_str()));
        let mut owned = key(keys::account(account), keys::owned_api_key(&id));
        owned.insert("entity".into(), s("APIKEY"));
        owned.insert("keyHash".into(), s(hash.as_str()));
        owned.insert("name".into(), s(label));
        owned.insert("createdAt".into(), s(now));
        owned.insert("scope".into(), s(scope.as_str()));

        let items = vec![
            TransactWriteItem::builder()
                .condition_check(
                    ConditionCheck::builder()
                        .table_name(&self.table)
                        .set_key(Some(key(keys::account(account), keys::ACCOUNT)))
                        .condition_expression("attribute_exists(PK)")
                        .build()
                        .map_err(unavailable)?,
                )
                .build(),
            put_new(&self.table, lookup)?,
            put_new(&self.table, owned)?,
        ];
        match self.transact(items).await? {
            Ok(()) => Ok(CreatedApiKey {
                id,
                account_id: account.clone(),
                key: key_value,
                scope,
            }),
            Err(_) => Err(StoreError::NotFound),
        }
    }

    /// The account's keys, oldest first, with the hour each was last used in: the owner items
    /// (one Query of the account's partition) and their lookup items (where authentication
    /// records the use), by `BatchGetItem`.
    pub async fn list_api_keys(&self, account: &AccountId) -> StoreResult<Vec<ApiKeySummary>> {
        let mut owned = Vec::new();
        let mut start = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("PK = :pk AND begins_with(SK, :prefix)")
                .expression_attribute_values(":pk", s(keys::account(account)))
                .expression_attribute_values(":prefix", s("APIKEY#"))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(sdk_unavailable)?;
            owned.extend(output.items.unwrap_or_default());
            match output.last_evaluated_key {
                Some(next) if !next.is_empty() => start = Some(next),
                _ => break,
            }
        }
        let text = |item: &HashMap<String, AttributeValue>, name: &str| {
            item.get(name).and_then(|v| v.as_s().ok()).cloned()
        };
        let mut last_used: HashMap<String, i64> = HashMap::new();
        for chunk in owned.chunks(100) {
            let lookups: Vec<_> = chunk
                .iter()
                .filter_map(|item| text(item, "keyHash"))
                .map(|hash| key(keys::api_key(&KeyHash::from_stored(hash)), keys::API_KEY))
                .collect();
            if lookups.is_empty() {
                continue;
            }
            let mut pending = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(lookups))
                    .build()
                    .map_err(unavailable)?,
            );
            let mut attempt = 0;
            while let Some(request) = pending.take() {
                attempt += 1;
                let output = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(sdk_unavailable)?;
                for item in output
                    .responses
                    .and_then(|mut r| r.remove(&self.table))
                    .unwrap_or_default()
                {
                    let hour = item
                        .get("lastUsedHour")
                        .and_then(|v| v.as_n().ok())
                        .and_then(|v| v.parse::<i64>().ok());
                    if let (Some(id), Some(hour)) = (text(&item, "keyId"), hour) {
                        last_used.insert(id, hour);
                    }
                }
                pending = output
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(&self.table))
                    .filter(|k| !k.keys().is_empty());
                if pending.is_some() {
                    if attempt >= MAX_TRANSACTION_ATTEMPTS {
                        return Err(StoreError::unavailable("batch read left keys unprocessed"));
                    }
                    backoff(attempt).await;
                }
            }
        }
        let mut summaries = owned
            .iter()
            .map(|item| {
                let sk = text(item, "SK").unwrap_or_default();
                let id = sk.strip_prefix("APIKEY#").unwrap_or(&sk).to_string();
                Ok(ApiKeySummary {
                    last_used_at: last_used
                        .get(&id)
                        .and_then(|hour| chrono::DateTime::from_timestamp(*hour, 0))
                        .map(|at| time::format(&at)),
                    id: ApiKeyId::from(id),
                    name: text(item, "name").unwrap_or_default(),
                    scope: KeyScope::from_stored(text(item, "scope").as_deref())
                        .map_err(StoreError::corrupt)?,
                    created_at: text(item, "createdAt").unwrap_or_default(),
                    revoked_at: text(item, "revokedAt"),
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        summaries.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
        Ok(summaries)
    }

    /// Revokes a key of this account; revoking twice is harmless. `NotFound` when the account
    /// has no such key.
    pub async fn revoke_api_key(&self, account: &AccountId, id: &ApiKeyId) -> StoreResult<()> {
        let owned = self
            .get_item(keys::account(account), keys::owned_api_key(id))
            .await?
            .ok_or(StoreError::NotFound)?;
        let hash = owned
            .get("keyHash")
            .and_then(|v| v.as_s().ok())
            .cloned()
            .map(KeyHash::from_stored)
            .ok_or_else(|| StoreError::corrupt("API key without hash"))?;
        let now = s(time::format(&time::now()));
        let revoke = |pk: String, sk: String| -> StoreResult<TransactWriteItem> {
            Ok(TransactWriteItem::builder()
                .update(
                    Update::builder()
                        .table_name(&self.table)
                        .set_key(Some(key(pk, sk)))
                        .update_expression("SET revokedAt = if_not_exists(revokedAt, :now)")
                        .condition_expression("attribute_exists(PK)")
                        .expression_attribute_values(":now", now.clone())
                        .build()
                        .map_err(unavailable)?,
                )
                .build())
        };
        let items = vec![
            revoke(keys::api_key(&hash), keys::API_KEY.to_string())?,
            revoke(keys::account(account), keys::owned_api_key(id))?,
        ];
        match self.transact(items).await? {
            Ok(()) => Ok(()),
            Err(_) => Err(StoreError::NotFound),
        }
    }

    async fn read_number(&self, account: &AccountId, id: &NumberId) -> StoreResult<Option<Number>> {
        self.get_item(keys::account(account), keys::number(id))
            .await?
            .map(number_from_item)
            .transpose()
    }
}

fn put_request(item: HashMap<String, AttributeValue>) -> StoreResult<WriteRequest> {
    Ok(WriteRequest::builder()
        .put_request(
            PutRequest::builder()
                .set_item(Some(item))
                .build()
                .map_err(unavailable)?,
        )
        .build())
}

pub(crate) fn put_new(
    table: &str,
    item: HashMap<String, AttributeValue>,
) -> StoreResult<TransactWriteItem> {
    Ok(TransactWriteItem::builder()
        .put(
            Put::builder()
                .table_name(table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(PK)")
                .build()
                .map_err(unavailable)?,
        )
        .build())
}

/// An outbox event, which is also an entry of its number's history: `GSI3PK =
/// HISTORY#{account}#{number}`, `GSI3SK = {createdAt}#{eventId}`, so one Query on GSI3 (whose
/// projection is ALL) reads a number's events newest first. Webhook events (no number) are not
/// in a history. An event to publish is on GSI6 until it is (`mark_published`); a history-only
/// one never is.
pub(crate) fn event_item(
    event: &EventEnvelope,
    expires_at: i64,
) -> StoreResult<HashMap<String, AttributeValue>> {
    let mut item = key(keys::event(&event.id), keys::EVENT);
    let position = crate::domain::history::EventPosition::of(event).sort_key();
    item.insert("entity".into(), s("EVENT"));
    item.insert("type".into(), s(event.event_type.as_str()));
    item.insert("accountId".into(), s(event.account_id.as_str()));
    item.insert("numberId".into(), s(event.number_id.clone()));
    if !event.number_id.is_empty() {
        item.insert(
            "GSI3PK".into(),
            s(keys::history(&event.account_id, &event.number_id)),
        );
        item.insert("GSI3SK".into(), s(position.clone()));
    }
    if event.event_type.is_published() {
        item.insert("GSI6PK".into(), s(keys::outbox(&event.id)));
        item.insert("GSI6SK".into(), s(position));
    }
    item.insert(
        "body".into(),
        s(serde_json::to_string(event).map_err(unavailable)?),
    );
    item.insert("expiresAt".into(), n(expires_at));
    Ok(item)
}

fn guard_item(number: &Number) -> HashMap<String, AttributeValue> {
    let mut item = key(keys::phone(&number.phone_number_id), keys::PHONE);
    item.insert("entity".into(), s("PHONE"));
    item.insert("accountId".into(), s(number.account_id.as_str()));
    item.insert("numberId".into(), s(number.id.as_str()));
    item
}

pub(crate) async fn backoff(attempt: u32) {
    let base = 10u64 << attempt.min(6);
    let jitter = rand::rng().random_range(0..=base);
    tokio::time::sleep(Duration::from_millis(base + jitter)).await;
}

impl NumberReader for DynamoStore {
    async fn get(&self, account: &AccountId, id: &NumberId) -> StoreResult<Option<Number>> {
        self.read_number(account, id).await
    }

    async fn list(
        &self,
        account: &AccountId,
        status: Option<Status>,
        page: Page,
    ) -> StoreResult<NumberPage> {
        let keys = self.page_keys(account, status, page).await?;
        let numbers = self.batch_get_numbers(keys).await?;
        let total = self.count(account, status).await?;
        Ok(NumberPage { numbers, total })
    }
}

/// Outbox entries are a number's history: kept this long by default, then TTL removes them.
pub const DEFAULT_EVENT_RETENTION_DAYS: u32 = 90;

impl LifecycleStore for DynamoStore {
    /// One write for every change: the number's item replaced whole, conditioned on the status
    /// and version the change expects (the version alone would do; the status makes a failed
    /// condition readable in the table's history), with the counters, the event (the outbox) and
    /// the phone guard's release in the same transaction. A change of the number alone (a step
    /// done, a retry noted) is one conditional `PutItem`: a transaction would cost twice.
    async fn commit(&self, change: &Change) -> StoreResult<CommitOutcome> {
        let number = &change.number;
        let item = serde_dynamo::to_item(NumberItem::from_number(number)).map_err(unavailable)?;
        let condition = "#status = :expectedStatus AND version = :expectedVersion";
        let names = HashMap::from([("#status".to_string(), "status".to_string())]);
        let values = HashMap::from([
            (
                ":expectedStatus".to_string(),
                s(change.expected.status.as_str()),
            ),
            (
                ":expectedVersion".to_string(),
                n(i64::try_from(change.expected.version).map_err(unavailable)?),
            ),
        ]);
        let single = change.counters.is_empty()
            && change.event.is_none()
            && change.phone_guard == PhoneGuard::Keep;
        // Whether the write failed only for the phone guard's claim (another number holds it).
        let (written, phone_taken) = if single {
            let result = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression(condition)
                .set_expression_attribute_names(Some(names))
                .set_expression_attribute_values(Some(values))
                .send()
                .await;
            (conditionally_written(result)?, false)
        } else {
            let put_number = Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression(condition)
                .set_expression_attribute_names(Some(names))
                .set_expression_attribute_values(Some(values))
                .build()
                .map_err(unavailable)?;
            let mut items = vec![TransactWriteItem::builder().put(put_number).build()];
            if !change.counters.is_empty() {
                items.push(self.counters_update(&number.account_id, &change.counters)?);
            }
            if let Some(event) = &change.event {
                items.push(put_new(
                    &self.table,
                    event_item(event, self.retained_until(&event.created_at))?,
                )?);
            }
            match change.phone_guard {
                PhoneGuard::Keep => {}
                PhoneGuard::Release => {
                    let release_phone = Delete::builder()
                        .table_name(&self.table)
                        .set_key(Some(key(keys::phone(&number.phone_number_id), keys::PHONE)))
                        .condition_expression("attribute_not_exists(PK) OR numberId = :id")
                        .expression_attribute_values(":id", s(number.id.as_str()))
                        .build()
                        .map_err(unavailable)?;
                    items.push(TransactWriteItem::builder().delete(release_phone).build());
                }
                PhoneGuard::Claim => items.push(put_new(&self.table, guard_item(number))?),
            }
            // The guard's claim, when made, is the last item; the number's put is the first.
            let claim_at = (change.phone_guard == PhoneGuard::Claim).then(|| items.len() - 1);
            match self.transact(items).await? {
                Ok(()) => (true, false),
                Err(codes) => {
                    let failed = |i: usize| {
                        codes.get(i).and_then(|c| c.as_deref()) == Some("ConditionalCheckFailed")
                    };
                    (false, !failed(0) && claim_at.is_some_and(failed))
                }
            }
        };
        if written {
            return Ok(CommitOutcome::Committed(number.clone()));
        }
        let current = self
            .read_number(&number.account_id, &number.id)
            .await?
            .ok_or(StoreError::NotFound)?;
        if phone_taken {
            return Ok(CommitOutcome::PhoneTaken(current));
        }
        Ok(CommitOutcome::Conflict(current))
    }
}

impl EventLog for DynamoStore {
    async fn unpublished_event(&self, event_id: &str) -> StoreResult<Option<EventEnvelope>> {
        let Some(item) = self.get_item(keys::event(event_id), keys::EVENT).await? else {
            return Ok(None);
        };
        if item.contains_key("publishedAt") {
            return Ok(None);
        }
        let body = item
            .get("body")
            .and_then(|v| v.as_s().ok())
            .ok_or_else(|| StoreError::corrupt("event without body"))?;
        let event: EventEnvelope = serde_json::from_str(body).map_err(StoreError::corrupt)?;
        Ok(event.event_type.is_published().then_some(event))
    }

    async fn mark_published(&self, event_id: &str) -> StoreResult<()> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(keys::event(event_id), keys::EVENT)))
            .update_expression("SET publishedAt = :at REMOVE GSI6PK, GSI6SK")
            .condition_expression("attribute_exists(PK)")
            .expression_attribute_values(":at", s(time::format(&time::now())))
            .send()
            .await
            .map_err(sdk_unavailable)?;
        Ok(())
    }

    /// Each shard of GSI6 below `before`, newest first within a shard (a backlog beyond `limit`
    /// per run, which only a long SQS outage makes, drains over the next runs); the index is
    /// eventually consistent, so an id may be of an event published a moment ago
    /// (`unpublished_event` reads the item itself).
    async fn unpublished_before(&self, before: Timestamp, limit: u32) -> StoreResult<Vec<String>> {
        let below = crate::domain::history::EventPosition {
            created_at: before,
            event_id: "evt_".into(),
        };
        let mut ids = Vec::new();
        for shard in 0..keys::OUTBOX_SHARDS {
            let wanted = limit.saturating_sub(ids.len() as u32);
            if wanted == 0 {
                break;
            }
            let (items, _) = self
                .newest_first(
                    super::dynamo_history::NewestFirst {
                        index: Some("GSI6"),
                        pk_name: "GSI6PK",
                        pk: keys::outbox_shard(shard),
                        sk_name: "GSI6SK",
                        before: Some(&below),
                        filter: None,
                    },
                    wanted,
                )
                .await?;
            ids.extend(items.iter().filter_map(|item| {
                item.get("PK")
                    .and_then(|pk| pk.as_s().ok())
                    .and_then(|pk| pk.strip_prefix("EVENT#"))
                    .map(str::to_string)
            }));
        }
        Ok(ids)
    }
}

/// Window counts outlive their minute briefly; TTL removes them.
const QUOTA_RETENTION_SECONDS: i64 = 3_600;

impl RequestQuota for DynamoStore {
    async fn count_request(
        &self,
        subject: QuotaSubject<'_>,
        window_start: i64,
        limit: u32,
    ) -> StoreResult<bool> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(
                keys::quota(&subject),
                keys::quota_window(window_start),
            )))
            .update_expression("ADD requests :one SET expiresAt = :expires")
            .condition_expression("attribute_not_exists(requests) OR requests < :limit")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":limit", n(i64::from(limit)))
            .expression_attribute_values(":expires", n(window_start + QUOTA_RETENTION_SECONDS))
            .send()
            .await;
        conditionally_written(result)
    }
}

impl ApiKeyVerifier for DynamoStore {
    async fn verify_key(&self, hash: &KeyHash) -> StoreResult<Option<VerifiedKey>> {
        let Some(item) = self.get_item(keys::api_key(hash), keys::API_KEY).await? else {
            return Ok(None);
        };
        if item.contains_key("revokedAt") {
            return Ok(None);
        }
        let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
        let Some(account) = text("accountId") else {
            return Ok(None);
        };
        let scope = KeyScope::from_stored(text("scope").as_deref()).map_err(StoreError::corrupt)?;
        let last_used_hour = item
            .get("lastUsedHour")
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<i64>().ok());
        Ok(Some(VerifiedKey {
            account: AccountId::from(account),
            scope,
            last_used_hour,
        }))
    }

    /// One conditional update per key per hour; a concurrent request that recorded the same
    /// hour first makes this one a no-op (its condition fails, harmlessly).
    async fn record_key_use(&self, hash: &KeyHash, hour: i64) -> StoreResult<()> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(keys::api_key(hash), keys::API_KEY)))
            .update_expression("SET lastUsedHour = :hour")
            .condition_expression(
                "attribute_exists(PK) AND (attribute_not_exists(lastUsedHour) OR lastUsedHour < :hour)",
            )
            .expression_attribute_values(":hour", n(hour))
            .send()
            .await;
        conditionally_written(result).map(|_| ())
    }
}

pub(crate) fn is_conditional_failure<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    err.as_service_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "ConditionalCheckFailedException")
}

impl ProvisioningStore for DynamoStore {
    async fn create_pending(
        &self,
        number: &Number,
        signup_link: Option<&str>,
    ) -> StoreResult<CreateOutcome> {
        let number_item =
            serde_dynamo::to_item(NumberItem::from_number(number)).map_err(unavailable)?;
        let mut items = vec![
            put_new(&self.table, number_item)?,
            self.counters_update(&number.account_id, &[(number.status, 1)])?,
        ];
        // A number signed up while its phone is live elsewhere holds no guard.
        let guard_at = (!number.phone_elsewhere).then_some(items.len());
        if guard_at.is_some() {
            items.push(put_new(&self.table, guard_item(number))?);
        }
        let link_at = signup_link.map(|_| items.len());
        if let Some(link) = signup_link {
            let consume = self
                .link_consumption(&number.account_id, link, &number.id)
                .build()
                .map_err(unavailable)?;
            items.push(TransactWriteItem::builder().update(consume).build());
        }
        match self.transact(items).await? {
            Ok(()) => Ok(CreateOutcome::Created),
            Err(codes) => {
                let failed = |at: Option<usize>| {
                    at.and_then(|i| codes.get(i)).and_then(|c| c.as_deref())
                        == Some("ConditionalCheckFailed")
                };
                if failed(link_at) {
                    Ok(CreateOutcome::LinkUnusable)
                } else if failed(guard_at) {
                    Ok(CreateOutcome::PhoneTaken)
                } else {
                    Err(StoreError::unavailable(format!(
                        "number creation cancelled: {codes:?}"
                    )))
                }
            }
        }
    }

    async fn use_link(
        &self,
        account: &AccountId,
        link_id: &str,
        number: &NumberId,
    ) -> StoreResult<bool> {
        let consume = self.link_consumption(account, link_id, number);
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(consume.get_key().clone())
            .set_update_expression(consume.get_update_expression().clone())
            .set_condition_expression(consume.get_condition_expression().clone())
            .set_expression_attribute_values(consume.get_expression_attribute_values().clone())
            .send()
            .await;
        conditionally_written(result)
    }

    async fn phone_owner(&self, phone_number_id: &str) -> StoreResult<Option<PhoneOwner>> {
        let Some(item) = self
            .get_item(keys::phone(phone_number_id), keys::PHONE)
            .await?
        else {
            return Ok(None);
        };
        let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
        match (text("accountId"), text("numberId")) {
            (Some(account), Some(number)) => Ok(Some(PhoneOwner {
                account_id: account.into(),
                number_id: number.into(),
            })),
            _ => Err(StoreError::corrupt("phone guard without owner")),
        }
    }

    async fn numbers_of_waba(&self, waba_id: &str) -> StoreResult<Vec<Number>> {
        let mut numbers = Vec::new();
        let mut start = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .index_name("GSI3")
                .key_condition_expression("GSI3PK = :pk")
                .expression_attribute_values(":pk", s(keys::waba(waba_id)))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(sdk_unavailable)?;
            self.stats.record(output.scanned_count().max(0) as u64);
            for item in output.items.unwrap_or_default() {
                numbers.push(number_from_item(item)?);
            }
            match output.last_evaluated_key {
                Some(next) if !next.is_empty() => start = Some(next),
                _ => return Ok(numbers),
            }
        }
    }

    /// One conditional update of the number's item. The lease is an attribute outside
    /// `NumberItem`: the first commit replaces the item whole and drops it, and the version
    /// condition refuses a number that has been written since its creation.
    async fn lease_restart(
        &self,
        account: &AccountId,
        number: &NumberId,
        now: Timestamp,
        until: Timestamp,
    ) -> StoreResult<bool> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(keys::account(account), keys::number(number))))
            .update_expression("SET restartLeaseUntil = :until")
            .condition_expression(
                "attribute_exists(PK) AND version = :created \
                 AND (attribute_not_exists(restartLeaseUntil) OR restartLeaseUntil < :now)",
            )
            .expression_attribute_values(":until", n(until.timestamp_millis()))
            .expression_attribute_values(":now", n(now.timestamp_millis()))
            .expression_attribute_values(
                ":created",
                n(i64::try_from(Number::CREATED_VERSION).map_err(unavailable)?),
            )
            .send()
            .await;
        conditionally_written(result)
    }
}
