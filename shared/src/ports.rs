//! The narrow interfaces handlers are written against. Each adapter (DynamoDB, SQS, in-memory)
//! implements the ones it can serve; handlers are generic over them.

use std::future::Future;

use crate::domain::api_key::KeyHash;
use crate::domain::{
    AccountId, EventEnvelope, FailureReason, Number, NumberId, Status, Step, Timestamp, Transition,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or answered with an error; the detail is for logs only.
    #[error("storage error: {0}")]
    Unavailable(String),
    #[error("stored item is not readable: {0}")]
    Corrupt(String),
    #[error("not found")]
    NotFound,
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    pub limit: u32,
    pub offset: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NumberPage {
    pub numbers: Vec<Number>,
    pub total: u64,
}

pub trait NumberReader: Send + Sync {
    fn get(
        &self,
        account: &AccountId,
        id: &NumberId,
    ) -> impl Future<Output = StoreResult<Option<Number>>> + Send;

    /// Newest first (`createdAt` descending, ties by id descending); `total` counts every number
    /// of the account matching `status`.
    fn list(
        &self,
        account: &AccountId,
        status: Option<Status>,
        page: Page,
    ) -> impl Future<Output = StoreResult<NumberPage>> + Send;
}

/// What changes together with a status.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusChange {
    pub transition: Transition,
    pub at: Timestamp,
    pub failure_reason: Option<FailureReason>,
}

impl StatusChange {
    pub fn new(transition: Transition, at: Timestamp) -> Self {
        StatusChange {
            transition,
            at,
            failure_reason: None,
        }
    }

    pub fn with_failure(mut self, reason: FailureReason) -> Self {
        self.failure_reason = Some(reason);
        self
    }

    /// The number as it is once this change is written.
    pub fn applied_to(&self, number: &Number) -> Number {
        let to = self.transition.to();
        let mut changed = number.clone();
        changed.status = to;
        changed.updated_at = self.at;
        if to != Status::Pending {
            changed.provisioning_step = None;
        }
        if self.failure_reason.is_some() {
            changed.failure_reason = self.failure_reason.clone();
        }
        changed
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum ChangeOutcome {
    /// Written; the number as it is now.
    Applied(Number),
    /// The stored status was not the expected one; the number as it is now (a duplicate
    /// delivery finds it already at the target, a real conflict somewhere else).
    NotApplied(Number),
}

pub trait StatusWriter: Send + Sync {
    /// Writes the change only if the number is still at `change.transition.from()`, keeping the
    /// per-status counters, the phone guard and the change's event in the same transaction.
    /// Called by `lifecycle::change_status`, which builds the event.
    fn change_status(
        &self,
        number: &Number,
        change: StatusChange,
        event: &EventEnvelope,
    ) -> impl Future<Output = StoreResult<ChangeOutcome>> + Send;
}

/// The outbox side of events: what was written with a status change and not yet published.
pub trait EventLog: Send + Sync {
    fn unpublished_event(
        &self,
        event_id: &str,
    ) -> impl Future<Output = StoreResult<Option<EventEnvelope>>> + Send;

    fn mark_published(&self, event_id: &str) -> impl Future<Output = StoreResult<()>> + Send;
}

/// Per-account request counting for the API's rate limit: fixed one-minute windows, so every
/// function instance shares one count.
pub trait RequestQuota: Send + Sync {
    /// Counts one request of `account` in the window starting at `window_start` (unix seconds)
    /// if fewer than `limit` were counted there; `false` when the window is full.
    fn count_request(
        &self,
        account: &AccountId,
        window_start: i64,
        limit: u32,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
}

pub trait ApiKeyVerifier: Send + Sync {
    /// The account of a live (not revoked) key with this hash.
    fn account_for_key(
        &self,
        hash: &KeyHash,
    ) -> impl Future<Output = StoreResult<Option<AccountId>>> + Send;
}

/// Where a message goes. Adapters map these to queue URLs from configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Queue {
    Step(Step),
    Events,
    Teardown,
    /// One message per (event, endpoint): each endpoint retries on its own schedule.
    WebhookDeliveries,
}

#[derive(Debug, thiserror::Error)]
#[error("queue error: {0}")]
pub struct QueueError(pub String);

pub trait MessageQueue: Send + Sync {
    fn send(
        &self,
        queue: Queue,
        body: String,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
}

// ---- Provisioning -------------------------------------------------------------------------

use crate::domain::QualityRating;
use crate::domain::meta::MetaError;
use crate::domain::secrets::{NumberSecrets, Secret};

#[derive(Clone, Debug)]
pub struct ExchangedToken {
    pub token: Secret,
    pub expires_in_seconds: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct PhoneProfile {
    pub display_phone_number: Option<String>,
    pub verified_name: Option<String>,
    /// As Meta writes it: GREEN/YELLOW/RED, or UNKNOWN/NA when unrated.
    pub quality_rating: Option<String>,
}

pub type MetaResult<T> = Result<T, MetaError>;

/// The Graph API calls the system makes (META.md), each with the customer's business token.
pub trait MetaGraph: Send + Sync {
    fn exchange_code(&self, code: &str) -> impl Future<Output = MetaResult<ExchangedToken>> + Send;
    fn subscribe_app(
        &self,
        token: &Secret,
        waba_id: &str,
    ) -> impl Future<Output = MetaResult<()>> + Send;
    fn unsubscribe_app(
        &self,
        token: &Secret,
        waba_id: &str,
    ) -> impl Future<Output = MetaResult<()>> + Send;
    fn register(
        &self,
        token: &Secret,
        phone_number_id: &str,
        pin: &Secret,
    ) -> impl Future<Output = MetaResult<()>> + Send;
    fn deregister(
        &self,
        token: &Secret,
        phone_number_id: &str,
    ) -> impl Future<Output = MetaResult<()>> + Send;
    fn set_pin(
        &self,
        token: &Secret,
        phone_number_id: &str,
        pin: &Secret,
    ) -> impl Future<Output = MetaResult<()>> + Send;
    fn phone_profile(
        &self,
        token: &Secret,
        phone_number_id: &str,
    ) -> impl Future<Output = MetaResult<PhoneProfile>> + Send;
}

#[derive(Debug, thiserror::Error)]
#[error("secret store error: {0}")]
pub struct VaultError(pub String);

/// One secret per number, holding its token and PIN; never in DynamoDB.
pub trait TokenVault: Send + Sync {
    fn load(
        &self,
        number: &NumberId,
    ) -> impl Future<Output = Result<Option<NumberSecrets>, VaultError>> + Send;
    /// Stores the secrets unless the number already has some; returns what is stored now.
    fn create(
        &self,
        number: &NumberId,
        secrets: &NumberSecrets,
    ) -> impl Future<Output = Result<NumberSecrets, VaultError>> + Send;
    /// Deletion with a recovery window; a missing secret is already deleted.
    fn schedule_deletion(
        &self,
        number: &NumberId,
    ) -> impl Future<Output = Result<(), VaultError>> + Send;
}

/// What a finished step records on the number besides moving `provisioningStep` on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepRecord {
    pub token_expires_at: Option<Timestamp>,
    pub display_number: Option<String>,
    pub display_name: Option<String>,
    pub quality_rating: Option<QualityRating>,
    pub subscribed: bool,
    pub registered: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum CreateOutcome {
    Created,
    /// The phone is held by a live number (of this account or another).
    PhoneTaken,
    /// The signup link was used already, or has expired.
    LinkUnusable,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhoneOwner {
    pub account_id: AccountId,
    pub number_id: NumberId,
}

pub trait ProvisioningStore: Send + Sync {
    /// Creates a `PENDING` number holding its phone (and consuming the signup link, if any) in
    /// one transaction.
    fn create_pending(
        &self,
        number: &Number,
        signup_link: Option<&str>,
    ) -> impl Future<Output = StoreResult<CreateOutcome>> + Send;
    fn phone_owner(
        &self,
        phone_number_id: &str,
    ) -> impl Future<Output = StoreResult<Option<PhoneOwner>>> + Send;
    /// Moves `provisioningStep` from `done` to `next` if the number is still `PENDING` at `done`.
    /// `false` when it was not (a duplicate delivery, a disconnect).
    fn record_step(
        &self,
        number: &Number,
        done: Step,
        next: Step,
        record: &StepRecord,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    /// The last transient error of a step, kept for the DLQ consumer's failure reason.
    fn record_retry(
        &self,
        number: &Number,
        reason: &FailureReason,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    fn numbers_of_waba(
        &self,
        waba_id: &str,
    ) -> impl Future<Output = StoreResult<Vec<Number>>> + Send;
    fn mark_torn_down(&self, number: &Number) -> impl Future<Output = StoreResult<()>> + Send;
}

/// Stretches a message's invisibility, which is how a retry is delayed.
pub trait Redelivery: Send + Sync {
    fn delay_redelivery(
        &self,
        queue: Queue,
        receipt_handle: &str,
        seconds: u32,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
}

/// Single-use signup-link states.
pub trait SignupLinks: Send + Sync {
    fn save_link(
        &self,
        account: &AccountId,
        link_id: &str,
        expires_at: Timestamp,
    ) -> impl Future<Output = StoreResult<()>> + Send;
}

// ---- Meta's webhooks and the health sync --------------------------------------------------

/// Profile fields Meta tells us about after provisioning (name approvals, polled quality), and
/// the health sync's own bookkeeping. None of these change the status.
pub trait ProfileWriter: Send + Sync {
    /// Sets `displayName` on an existing number.
    fn set_display_name(
        &self,
        number: &Number,
        display_name: &str,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Writes `now` only if the stored rating is still `previous` (`None`: no rating stored)
    /// and no other event was written since `number` was read, so concurrent runs agree on who
    /// made the change; `event` (its `number.quality_updated`) goes in the same transaction, as
    /// the number's latest event (the outbox). `true` when this call wrote it.
    fn set_quality_rating(
        &self,
        number: &Number,
        previous: Option<QualityRating>,
        now: Option<QualityRating>,
        event: &EventEnvelope,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// Records that the token-expiry warning of `day` (`YYYY-MM-DD`, UTC) was sent, with its
    /// `event` in the same transaction as for `set_quality_rating`; `true` only for the first
    /// call of that day.
    fn mark_token_expiry_warned(
        &self,
        number: &Number,
        day: &str,
        event: &EventEnvelope,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
}

/// Every account, for jobs that cover all of them (the health sync), read without a Scan.
pub trait AccountDirectory: Send + Sync {
    fn account_ids(&self) -> impl Future<Output = StoreResult<Vec<AccountId>>> + Send;
}

// ---- Customer webhooks ---------------------------------------------------------------------

use crate::webhooks::WebhookEndpoint;

pub trait WebhookEndpoints: Send + Sync {
    fn save_endpoint(
        &self,
        endpoint: &WebhookEndpoint,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Oldest first.
    fn endpoints(
        &self,
        account: &AccountId,
    ) -> impl Future<Output = StoreResult<Vec<WebhookEndpoint>>> + Send;
    fn endpoint(
        &self,
        account: &AccountId,
        id: &str,
    ) -> impl Future<Output = StoreResult<Option<WebhookEndpoint>>> + Send;
    /// `false` when the account has no such endpoint.
    fn delete_endpoint(
        &self,
        account: &AccountId,
        id: &str,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
}

/// Which (event, endpoint) deliveries succeeded, so a duplicated message is not sent again.
pub trait DeliveryLog: Send + Sync {
    fn was_delivered(
        &self,
        event_id: &str,
        endpoint_id: &str,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    fn mark_delivered(
        &self,
        event_id: &str,
        endpoint_id: &str,
    ) -> impl Future<Output = StoreResult<()>> + Send;
}
