//! Every status change in the system goes through [`change_status`]: the lifecycle table decides
//! whether it is allowed, the store writes it conditioned on the status it expects (with its
//! event, in one transaction), and the event is then published.

use crate::domain::{EventEnvelope, EventType, FailureReason, Number, Status, Transition, time};
use crate::ports::{
    ChangeOutcome, EventLog, MessageQueue, Queue, QueueError, StatusChange, StatusWriter,
    StoreError,
};

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Changed {
    /// This call moved the number; its event is published.
    Now(Number),
    /// The number was already there (a duplicate delivery, a repeated request); any event of
    /// that change still unpublished has been published now.
    Already(Number),
    /// The lifecycle does not allow it from where the number is now.
    Refused(Number),
}

impl Changed {
    pub fn number(&self) -> &Number {
        match self {
            Changed::Now(n) | Changed::Already(n) | Changed::Refused(n) => n,
        }
    }
}

/// Attempts against concurrent changes (a webhook and a DELETE at once): re-read and re-decide.
const ATTEMPTS: usize = 3;

pub async fn change_status<S, Q>(
    store: &S,
    queue: &Q,
    number: &Number,
    to: Status,
    failure_reason: Option<FailureReason>,
) -> Result<Changed, LifecycleError>
where
    S: StatusWriter + EventLog,
    Q: MessageQueue,
{
    let mut current = number.clone();
    for _ in 0..ATTEMPTS {
        if current.status == to {
            finish_publishing(store, queue, &current).await?;
            return Ok(Changed::Already(current));
        }
        let Ok(transition) = Transition::new(current.status, to) else {
            return Ok(Changed::Refused(current));
        };
        let at = time::now();
        let mut change = StatusChange::new(transition, at);
        if let Some(reason) = failure_reason.clone() {
            change = change.with_failure(reason);
        }
        let event = EventEnvelope::new(
            EventType::for_transition(transition),
            &change.applied_to(&current),
            at,
        );
        match store.change_status(&current, change, &event).await? {
            ChangeOutcome::Applied(changed) => {
                publish(store, queue, &event).await?;
                tracing::info!(number_id = %changed.id, from = %transition.from(), to = %to, event_id = %event.id, "status changed");
                return Ok(Changed::Now(changed));
            }
            ChangeOutcome::NotApplied(now) => current = now,
        }
    }
    Ok(Changed::Refused(current))
}

/// Sends an event written to the outbox and marks it published.
pub async fn publish<S: EventLog, Q: MessageQueue>(
    store: &S,
    queue: &Q,
    event: &EventEnvelope,
) -> Result<(), LifecycleError> {
    let body = serde_json::to_string(event).map_err(|e| QueueError(e.to_string()))?;
    queue.send(Queue::Events, body).await?;
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
