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
