//! Runs the lifecycle: [`apply`] asks the pure `domain::lifecycle::decide` what a command does,
//! writes the answer through the one write port (`LifecycleStore::commit`, conditioned on the
//! status, step and version it expects), and publishes the change's event. A conflict (another
//! writer came first) is decided again against the number as it is now.

use crate::domain::lifecycle::{Command, Decision, Refusal, decide};
use crate::domain::{EventEnvelope, Number, NumberId, time};
use crate::ports::{CommitOutcome, EventLog, LifecycleStore, MessageQueue, QueueError, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("number {number_id} kept changing under {attempts} attempts to write it")]
    Contended {
        number_id: NumberId,
        attempts: usize,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Changed {
    /// This call changed the number; its event, if any, is published.
    Now(Number),
    /// The number was already there (a duplicate delivery, a repeated request); any event of
    /// its latest change still unpublished has been published now.
    Already(Number),
    /// The lifecycle does not allow it from where the number is now.
    Refused(Number, Refusal),
}

impl Changed {
    pub fn number(&self) -> &Number {
        match self {
            Changed::Now(n) | Changed::Already(n) | Changed::Refused(n, _) => n,
        }
    }
}

/// Attempts against concurrent writers (a webhook and a DELETE at once): re-read, re-decide.
const ATTEMPTS: usize = 5;

pub async fn apply<S, Q>(
    store: &S,
    queue: &Q,
    number: &Number,
    command: Command,
) -> Result<Changed, LifecycleError>
where
    S: LifecycleStore + EventLog,
    Q: MessageQueue,
{
    let mut current = number.clone();
    for _ in 0..ATTEMPTS {
        let change = match decide(&current, command.clone(), time::now()) {
            Decision::Change(change) => change,
            Decision::Already => {
                finish_publishing(store, queue, &current).await?;
                return Ok(Changed::Already(current));
            }
            Decision::Refused(why) => return Ok(Changed::Refused(current, why)),
        };
        match store.commit(&change).await? {
            CommitOutcome::Committed(changed) => {
                if let Some(event) = &change.event {
                    // Written with the change: should this send fail, the next reader of the
                    // number (`finish_publishing`) sends it.
                    publish(store, queue, event).await?;
                }
                if current.status != changed.status {
                    tracing::info!(number_id = %changed.id, from = %current.status, to = %changed.status, command = command.name(), event_id = ?change.event.as_ref().map(|e| &e.id), "status changed");
                } else {
                    tracing::debug!(number_id = %changed.id, command = command.name(), "number changed");
                }
                return Ok(Changed::Now(changed));
            }
            CommitOutcome::Conflict(now) => current = now,
        }
    }
    Err(LifecycleError::Contended {
        number_id: number.id.clone(),
        attempts: ATTEMPTS,
    })
}

/// Sends an event written to the outbox and marks it published.
pub async fn publish<S: EventLog, Q: MessageQueue>(
    store: &S,
    queue: &Q,
    event: &EventEnvelope,
) -> Result<(), LifecycleError> {
    queue.send(event).await?;
    store.mark_published(&event.id).await?;
    Ok(())
}

/// Publishes the latest change's event if a crash stopped it between the write and the send.
pub async fn finish_publishing<S: EventLog, Q: MessageQueue>(
    store: &S,
    queue: &Q,
    number: &Number,
) -> Result<(), LifecycleError> {
    let Some(event_id) = &number.last_event_id else {
        return Ok(());
    };
    if let Some(event) = store.unpublished_event(event_id).await? {
        publish(store, queue, &event).await?;
    }
    Ok(())
}
