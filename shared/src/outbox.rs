//! The outbox relay: publishes the events whose send to the events queue failed after their
//! commit (an SQS fault, a function killed in between), which nothing else would publish when
//! no later message or request touches the number again.
//!
//! Run on a schedule (`OutboxRelayFunction`, every minute). It takes only events older than a
//! grace period, longer than any function that writes events runs, so it does not race the
//! writer's own publish in the common case; when it does, the event goes out twice with the
//! same id, which the dispatcher fans out under that id and the deliverer sends once per
//! endpoint (its delivery log), with the same `webhook-id` should it send twice.
//!
//! Each run also forgets the webhook secrets rotated out whose grace period ended: they sign
//! nothing after it, and none stays at rest more than a run past it.

use std::time::Duration;

use serde::Serialize;

use crate::domain::messages::StepMessage;
use crate::domain::{EventEnvelope, EventType, NumberId, Status, Step, Timestamp, time};
use crate::lifecycle::{self, LifecycleError};
use crate::ports::{EventLog, MessageQueue, NumberReader, StoreError, WebhookEndpoints};

/// Longer than the slowest function that writes events and publishes them itself runs (the
/// health sync's 300 s timeout is per run, but each of its events is published right after its
/// commit; the API's is 20 s).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(60);
/// Events one run publishes at most; the rest wait for the next run.
pub const BATCH: u32 = 200;

/// What one run did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RelaySummary {
    /// Unpublished events past the grace period.
    pub found: u64,
    pub published: u64,
    /// Events published meanwhile by someone else (the index lags the table).
    pub already: u64,
    /// Events whose publish failed again: the next run tries them.
    pub failed: u64,
    /// Rotated-out webhook secrets removed, their grace period over.
    pub secrets_forgotten: u64,
}

/// Rotated-out webhook secrets one run forgets at most; the rest go at the next run.
pub const SECRETS_BATCH: u32 = 100;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("the outbox could not be read")]
    Store(#[source] StoreError),
}

pub struct OutboxRelay<S, Q> {
    pub store: S,
    pub queue: Q,
    pub grace: Duration,
}

impl<S, Q> OutboxRelay<S, Q>
where
    S: EventLog + NumberReader + WebhookEndpoints,
    Q: MessageQueue,
{
    pub async fn run(&self) -> Result<RelaySummary, RelayError> {
        self.run_at(time::now()).await
    }

    /// One run as at `now`.
    pub async fn run_at(&self, now: Timestamp) -> Result<RelaySummary, RelayError> {
        let grace = chrono::Duration::from_std(self.grace).unwrap_or(chrono::Duration::zero());
        let ids = self
            .store
            .unpublished_before(now - grace, BATCH)
            .await
            .map_err(RelayError::Store)?;
        let mut summary = RelaySummary {
            found: ids.len() as u64,
            ..RelaySummary::default()
        };
        for id in ids {
            match self.relay(&id).await {
                Ok(true) => summary.published += 1,
                Ok(false) => summary.already += 1,
                Err(err) => {
                    tracing::warn!(event_id = %id, error = %crate::telemetry::ErrorChain(&err), "outbox event not published; the next run tries again");
                    summary.failed += 1;
                }
            }
        }
        if summary.found > 0 {
            tracing::info!(
                found = summary.found,
                published = summary.published,
                failed = summary.failed,
                "outbox relayed"
            );
        }
        match self.store.forget_previous_secrets(now, SECRETS_BATCH).await {
            Ok(forgotten) => summary.secrets_forgotten = u64::from(forgotten),
            Err(err) => {
                tracing::warn!(error = %crate::telemetry::ErrorChain(&err), "rotated-out webhook secrets not forgotten; the next run tries again");
            }
        }
        if summary.secrets_forgotten > 0 {
            tracing::info!(
                forgotten = summary.secrets_forgotten,
                "rotated-out webhook secrets forgotten after their grace period"
            );
        }
        Ok(summary)
    }

    /// Publishes one event if it is still unpublished; `false` when it no longer was.
    async fn relay(&self, event_id: &str) -> Result<bool, LifecycleError> {
        let Some(event) = self.store.unpublished_event(event_id).await? else {
            return Ok(false);
        };
        if event.event_type == EventType::NumberRetried {
            self.resume_retried(&event).await?;
        }
        lifecycle::publish(&self.store, &self.queue, &event).await?;
        tracing::info!(event_id = %event.id, event_type = event.event_type.as_str(), "unpublished outbox event published");
        Ok(true)
    }

    /// A retried number's step message goes out before its `number.retried` is published
    /// (`lifecycle::apply_then_send`), so this event unpublished may mean the message never
    /// went: sent again, as a repeat of the request would, while the number still stands where
    /// the retry put it. A message that did go out makes this one a duplicate, which a step
    /// takes as any redelivery.
    async fn resume_retried(&self, event: &EventEnvelope) -> Result<(), LifecycleError> {
        let Some(id) = NumberId::parse(&event.number_id) else {
            return Ok(());
        };
        let Some(number) = self.store.get(&event.account_id, &id).await? else {
            return Ok(());
        };
        let resumed_at: Option<Step> = event
            .data
            .get("provisioningStep")
            .and_then(|step| serde_json::from_value(step.clone()).ok());
        let untouched = number.status == Status::Pending
            && number.last_event_id.as_deref() == Some(event.id.as_str())
            && number.provisioning_step.is_some()
            && number.provisioning_step == resumed_at;
        if untouched && let Some(message) = StepMessage::resuming(&number) {
            self.queue.send(&message).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
