//! Runs the lifecycle: [`apply`] asks the pure `domain::lifecycle::decide` what a command does,
//! writes the answer through the one write port (`LifecycleStore::commit`, conditioned on the
//! status, step and version it expects), and publishes the change's event. A conflict (another
//! writer came first) is decided again against the number as it is now.

use crate::domain::lifecycle::waba::{self, WabaCommand, WabaDecision, WabaRefusal};
use crate::domain::lifecycle::{Command, Decision, Refusal, decide};
use crate::domain::messages::{Message, StepMessage};
use crate::domain::waba_signup::WabaSignup;
use crate::domain::{EventEnvelope, Number, NumberId, time};
use crate::ports::{CommitOutcome, EventLog, LifecycleStore, MessageQueue, QueueError, StoreError};
use crate::ports::{WabaCommit, WabaSignups};

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
    #[error("WABA signup {id} kept changing under {attempts} attempts to write it")]
    WabaContended { id: String, attempts: usize },
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
    apply_then_send(store, queue, number, command, |_| None::<StepMessage>).await
}

/// As [`apply`], with a message that must go out with the change (a retried number's step):
/// it is sent after the write and before the change's event is published, so an unpublished
/// event says the message may not have gone out. A repeat that finds the change already made
/// with its event unpublished (a crash in between) sends the message and publishes the event.
pub async fn apply_then_send<S, Q, M>(
    store: &S,
    queue: &Q,
    number: &Number,
    command: Command,
    message_for: impl Fn(&Number) -> Option<M>,
) -> Result<Changed, LifecycleError>
where
    S: LifecycleStore + EventLog,
    Q: MessageQueue,
    M: Message,
{
    apply_within(store, queue, number, command, message_for, ATTEMPTS)
        .await?
        .map_err(|_| LifecycleError::Contended {
            number_id: number.id.clone(),
            attempts: ATTEMPTS,
        })
}

/// As [`apply`], only if `number` is the stored number (its version): `Err` with the number as
/// it is now, nothing written, when it is not. For a caller whose `number` may be stale (a
/// message's snapshot) and that would act differently on the current one than the command
/// decided again would (the register step reads Meta first when a request was counted since).
pub async fn apply_if_current<S, Q>(
    store: &S,
    queue: &Q,
    number: &Number,
    command: Command,
) -> Result<Result<Changed, Number>, LifecycleError>
where
    S: LifecycleStore + EventLog,
    Q: MessageQueue,
{
    apply_within(store, queue, number, command, |_| None::<StepMessage>, 1).await
}

/// Decides and commits up to `attempts` times, deciding again on each conflict; `Err` with the
/// number as it is now when every attempt conflicted.
async fn apply_within<S, Q, M>(
    store: &S,
    queue: &Q,
    number: &Number,
    command: Command,
    message_for: impl Fn(&Number) -> Option<M>,
    attempts: usize,
) -> Result<Result<Changed, Number>, LifecycleError>
where
    S: LifecycleStore + EventLog,
    Q: MessageQueue,
    M: Message,
{
    let mut current = number.clone();
    for _ in 0..attempts {
        let change = match decide(&current, command.clone(), time::now()) {
            Decision::Change(change) => change,
            Decision::Already => {
                if let Some(event) = unpublished_latest(store, &current).await? {
                    if let Some(message) = message_for(&current) {
                        queue.send(&message).await?;
                    }
                    publish(store, queue, &event).await?;
                }
                return Ok(Ok(Changed::Already(current)));
            }
            Decision::Refused(why) => return Ok(Ok(Changed::Refused(current, why))),
        };
        match store.commit(&change).await? {
            CommitOutcome::Committed(changed) => {
                if let Some(message) = message_for(&changed) {
                    queue.send(&message).await?;
                }
                if let Some(event) = change
                    .event
                    .as_ref()
                    .filter(|e| e.event_type.is_published())
                {
                    // Written with the change: should this send fail, the next reader of the
                    // number (`finish_publishing`) or the outbox relay sends it.
                    publish(store, queue, event).await?;
                }
                if current.status != changed.status {
                    tracing::info!(number_id = %changed.id, from = %current.status, to = %changed.status, command = command.name(), event_id = ?change.event.as_ref().map(|e| &e.id), "status changed");
                } else {
                    tracing::debug!(number_id = %changed.id, command = command.name(), "number changed");
                }
                return Ok(Ok(Changed::Now(changed)));
            }
            CommitOutcome::Conflict(now) => current = now,
            // Deciding again would claim the phone again: the number cannot change this way.
            CommitOutcome::PhoneTaken(now) => {
                return Ok(Ok(Changed::Refused(now, Refusal::PhoneTaken)));
            }
        }
    }
    Ok(Err(current))
}

async fn unpublished_latest<S: EventLog>(
    store: &S,
    number: &Number,
) -> Result<Option<EventEnvelope>, LifecycleError> {
    match &number.last_event_id {
        Some(event_id) => Ok(store.unpublished_event(event_id).await?),
        None => Ok(None),
    }
}

/// Sends an event written to the outbox and marks it published.
pub async fn publish<S: EventLog, Q: MessageQueue>(
    store: &S,
    queue: &Q,
    event: &EventEnvelope,
) -> Result<(), LifecycleError> {
    queue.send(event).await?;
    store.mark_published(&event.id).await?;
    crate::metrics::event_published(event);
    Ok(())
}

/// Publishes the latest change's event if a crash stopped it between the write and the send.
pub async fn finish_publishing<S: EventLog, Q: MessageQueue>(
    store: &S,
    queue: &Q,
    number: &Number,
) -> Result<(), LifecycleError> {
    if let Some(event) = unpublished_latest(store, number).await? {
        publish(store, queue, &event).await?;
    }
    Ok(())
}

/// What [`apply_waba`] did to a WABA-only signup.
#[derive(Debug, Clone, PartialEq)]
pub enum WabaChanged {
    Now(WabaSignup),
    Already(WabaSignup),
    Refused(WabaSignup, WabaRefusal),
}

impl WabaChanged {
    pub fn signup(&self) -> &WabaSignup {
        match self {
            WabaChanged::Now(s) | WabaChanged::Already(s) | WabaChanged::Refused(s, _) => s,
        }
    }
}

/// Runs a WABA-only signup's lifecycle as [`apply`] runs a number's: decide
/// (`domain::lifecycle::waba::decide`), commit conditioned on the version, decide again on a
/// conflict.
pub async fn apply_waba<S: WabaSignups>(
    store: &S,
    signup: &WabaSignup,
    command: WabaCommand,
) -> Result<WabaChanged, LifecycleError> {
    let mut current = signup.clone();
    for _ in 0..ATTEMPTS {
        let change = match waba::decide(&current, command.clone(), time::now()) {
            WabaDecision::Change(change) => change,
            WabaDecision::Already => return Ok(WabaChanged::Already(current)),
            WabaDecision::Refused(why) => return Ok(WabaChanged::Refused(current, why)),
        };
        match store.commit_waba_signup(&change).await? {
            WabaCommit::Committed(changed) => {
                tracing::info!(waba_signup_id = %changed.id, command = command.name(), state = changed.outcome.as_ref().map_or("pending", |o| o.state()), "WABA signup changed");
                return Ok(WabaChanged::Now(changed));
            }
            WabaCommit::Conflict(now) => current = now,
        }
    }
    Err(LifecycleError::WabaContended {
        id: signup.id.clone(),
        attempts: ATTEMPTS,
    })
}
