//! A Number's lifecycle as pure code: what each [`Command`] does to a number, wherever it is.
//!
//! [`decide`] does no I/O. It answers with plain data: a [`Change`] (the status, step and
//! version it expects, the number as it will be, the counter deltas, what happens to the phone
//! guard, the event to announce), [`Decision::Already`] for a duplicate, or
//! [`Decision::Refused`] with the reason. One store port writes a `Change`
//! (`ports::LifecycleStore::commit`), conditioned on what it expects, and `crate::lifecycle`
//! runs the two. Everything a command implies is written here and nowhere else.

use chrono::Duration;

pub mod waba;

use super::event::{EventEnvelope, EventType, StepRetry};
use super::number::{
    FailureReason, Health, NameDecision, Number, QualityRating, Reconnect, Restriction,
    RestrictionMarker, TokenStatus,
};
use super::status::{Move, RefusedTransition, Status, Transition};
use super::step::Step;
use super::time::Timestamp;

/// A token expiring within this many days is announced (`number.token_expiring`), once a day.
pub const TOKEN_WARNING_DAYS: i64 = 7;

/// Register and deregister requests we send per phone number in any window of
/// [`REGISTER_WINDOW_HOURS`]. Meta allows 10 (the next is `133016` and a 72 h lock); two are
/// left for a teardown and a reconnect.
pub const REGISTER_BUDGET: usize = 8;
pub const REGISTER_WINDOW_HOURS: i64 = 72;

/// The number's register/deregister requests still inside the window at `now`, oldest first.
pub fn register_calls_in_window(number: &Number, now: Timestamp) -> Vec<Timestamp> {
    let mut calls: Vec<Timestamp> = number
        .register_calls
        .iter()
        .copied()
        .filter(|at| now - *at < Duration::hours(REGISTER_WINDOW_HOURS))
        .collect();
    calls.sort();
    calls
}

/// When the budget allows another request, if it does not now.
pub fn register_budget_frees_at(number: &Number, now: Timestamp) -> Option<Timestamp> {
    let calls = register_calls_in_window(number, now);
    (calls.len() >= REGISTER_BUDGET)
        .then(|| calls[calls.len() - REGISTER_BUDGET] + Duration::hours(REGISTER_WINDOW_HOURS))
}

/// Of the budget, how many requests may go to registering again blindly while Meta keeps
/// answering `2388001` and the phone shows no change: the rest is kept for when it does.
pub const BLIND_REGISTER_CALLS: usize = REGISTER_BUDGET / 2;

/// Whether a register that waits on `2388001` is sent again now: when the phone as read now
/// (`phone`, see `RegisterWaits`) differs from what it was when Meta refused, or when fewer than
/// [`BLIND_REGISTER_CALLS`] requests were sent in the window. Without a reading (Meta did not
/// answer it) only the budget decides.
pub fn register_again(number: &Number, phone: Option<&str>, now: Timestamp) -> bool {
    let changed = match (number.register_waiting_on.as_deref(), phone) {
        (Some(before), Some(now)) => before != now,
        (None, _) => true,
        (Some(_), None) => false,
    };
    changed || register_calls_in_window(number, now).len() < BLIND_REGISTER_CALLS
}

/// Who ended a number. Both end it the same way; the number shows which (`disconnectedBy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DisconnectedBy {
    /// The API's `DELETE`.
    Customer,
    /// Meta told us (partner removed, app uninstalled, account deleted), or the health sync
    /// found the phone `DISCONNECTED` at Meta.
    Meta,
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
    /// A reconnect replaced the token: `token_expires_at` is the new token's, `None` included.
    pub token_replaced: bool,
    pub health: Option<Health>,
    pub messaging_limit: Option<String>,
    pub throughput: Option<String>,
    pub name_status: Option<String>,
    /// The step also made the call of the step it runs beside ([`Step::runs_beside`]) and
    /// this record holds that call's answer too: the chain goes past that step.
    pub beside_done: bool,
}

/// Everything that changes a number after its creation.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Provisioning finished.
    Activate,
    /// Provisioning cannot finish.
    Fail(FailureReason),
    Disconnect(DisconnectedBy),
    Ban,
    Reinstate,
    /// A failed onboarding tried again (`POST /api/numbers/{id}/retry`). `token_usable`: the
    /// number's stored token is still there and not expired (the caller looked).
    Retry {
        token_usable: bool,
    },
    /// A provisioning step succeeded at Meta.
    StepDone {
        step: Step,
        record: StepRecord,
    },
    /// A provisioning step failed transiently and will be retried; the reason is kept for the
    /// dead-letter consumer, should the retries run out, and a new reason is an entry of the
    /// number's history with the `attempt` it ended (the message's receive count).
    StepRetried {
        step: Step,
        reason: FailureReason,
        attempt: u32,
    },
    /// Meta's quality rating as read now (`None`: not rated).
    QualityChanged(Option<QualityRating>),
    /// Meta decided on a requested display name (`phone_number_name_update`).
    NameDecided(NameDecision),
    /// Meta's `name_status` as read now.
    NameStatusRead(String),
    /// Meta's `health_status` as read now.
    HealthRead(Health),
    /// Meta's messaging limit and throughput level as reported now (`None`: not reported,
    /// kept). `announce_first`: a first value is announced too (Meta pushed it as a change);
    /// otherwise a first reading is recorded quietly.
    LimitRead {
        messaging_limit: Option<String>,
        throughput: Option<String>,
        announce_first: bool,
    },
    /// What `debug_token` says of the number's stored token.
    TokenChecked(TokenStatus),
    /// A restriction known from another signal than Meta's restriction list, on or lifted.
    MarkRestriction {
        marker: RestrictionMarker,
        on: bool,
    },
    /// Register was answered `2388001`: Meta's reason, and the phone's fields as read then
    /// (`None` when they could not be read); `attempt` as in `StepRetried`.
    RegisterWaits {
        reason: FailureReason,
        phone: Option<String>,
        attempt: u32,
    },
    /// The health sync's daily look at the token's expiry.
    WarnTokenExpiry,
    /// Meta-side teardown of a disconnected or failed number ran: what it undid at Meta, and
    /// whether the token secret is now scheduled for deletion.
    TornDown(Teardown),
    /// A register or deregister request is about to be sent to Meta: counted against the
    /// budget first, so a crash after the request cannot lose it.
    CountRegisterCall,
    /// Meta's restrictions on the WABA as it reports them now (empty: lifted).
    Restrict(Vec<Restriction>),
    /// Meta will disable the WABA (`SCHEDULE_FOR_DISABLE`).
    ScheduleBan,
    /// A new signup of this live number (`ACTIVE` or `BANNED`, same account): a reconnect
    /// attempt `id` starts at the code exchange. One already under way (younger than
    /// [`RECONNECT_STALE_MINUTES`]) is left to finish.
    StartReconnect {
        id: String,
    },
    /// A step of reconnect `id` succeeded at Meta.
    ReconnectStepDone {
        id: String,
        step: Step,
        record: StepRecord,
    },
    /// A step of reconnect `id` failed transiently and will be retried (history as
    /// `StepRetried`).
    ReconnectStepRetried {
        id: String,
        step: Step,
        reason: FailureReason,
        attempt: u32,
    },
    /// Every step of reconnect `id` is done: the number is reconnected.
    FinishReconnect {
        id: String,
    },
    /// Reconnect `id` cannot finish; the number stays as it was, with its old token.
    AbandonReconnect {
        id: String,
        reason: FailureReason,
    },
}

/// A reconnect whose steps have not finished after this long is taken as lost (a crash between
/// its start and its first message, a code Meta no longer takes): a new signup starts another.
pub const RECONNECT_STALE_MINUTES: i64 = 15;

/// What one teardown run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Teardown {
    pub deregistered: bool,
    pub unsubscribed: bool,
    pub token_deleted: bool,
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Activate => "activate",
            Command::Fail(_) => "fail",
            Command::Disconnect(_) => "disconnect",
            Command::Ban => "ban",
            Command::Reinstate => "reinstate",
            Command::Retry { .. } => "retry",
            Command::StepDone { .. } => "finish a step",
            Command::StepRetried { .. } => "retry a step",
            Command::QualityChanged(_) => "change the quality rating",
            Command::NameDecided(_) => "record Meta's display name decision",
            Command::NameStatusRead(_) => "record the display name's status",
            Command::HealthRead(_) => "record Meta's health status",
            Command::LimitRead { .. } => "record the messaging limit",
            Command::TokenChecked(_) => "record the token's status",
            Command::MarkRestriction { .. } => "mark a restriction",
            Command::RegisterWaits { .. } => "wait on Meta before registering again",
            Command::WarnTokenExpiry => "warn of the token's expiry",
            Command::TornDown(_) => "record the teardown",
            Command::CountRegisterCall => "count a register request",
            Command::Restrict(_) => "record Meta's restrictions",
            Command::ScheduleBan => "announce a scheduled ban",
            Command::StartReconnect { .. } => "start a reconnect",
            Command::ReconnectStepDone { .. } => "finish a reconnect step",
            Command::ReconnectStepRetried { .. } => "retry a reconnect step",
            Command::FinishReconnect { .. } => "finish the reconnect",
            Command::AbandonReconnect { .. } => "abandon the reconnect",
        }
    }
}

/// What a change expects of the stored number; the store writes only if all of it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    pub status: Status,
    pub step: Option<Step>,
    pub version: u64,
}

/// What happens to the phone guard (one live number per phone) with a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PhoneGuard {
    Keep,
    /// The number is final: the phone may be signed up again.
    Release,
    /// The number is live again (a retry): it holds the phone, if no other number took it.
    Claim,
}

/// One write, as plain data.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub expected: Expected,
    /// The number as it is once written (its version one past `expected.version`).
    pub number: Number,
    /// Per-status counter deltas of the account.
    pub counters: Vec<(Status, i64)>,
    pub phone_guard: PhoneGuard,
    /// Written with the change (the outbox) and published after it.
    pub event: Option<EventEnvelope>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    Change(Box<Change>),
    /// The number is already where the command would take it (a duplicate).
    Already,
    Refused(Refusal),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Transition(#[from] RefusedTransition),
    #[error("the number is {status}, not PENDING: provisioning has stopped")]
    NotPending { status: Status },
    #[error("step {step} has not been reached (the number is at {at})")]
    StepNotReached { step: Step, at: Step },
    #[error("{step} is the last step; the number is activated instead")]
    LastStep { step: Step },
    #[error("a {status} number does not change any more")]
    Final { status: Status },
    #[error("only a DISCONNECTED or FAILED number is torn down (this one is {status})")]
    NotEnded { status: Status },
    #[error("{why}: send the customer a new signup link")]
    ReauthorizationRequired { why: &'static str },
    #[error("the number's token does not expire within {TOKEN_WARNING_DAYS} days")]
    TokenNotExpiring,
    #[error("a {status} number is not one Meta can still ban")]
    NotLive { status: Status },
    #[error("a {status} number sends Meta no register request")]
    NoRegisterCall { status: Status },
    #[error(
        "{REGISTER_BUDGET} register requests in {REGISTER_WINDOW_HOURS} h are spent until {until}"
    )]
    RegisterBudgetSpent { until: Timestamp },
    #[error("a {status} number is not reconnected (only an ACTIVE or BANNED one is)")]
    NotReconnectable { status: Status },
    #[error("reconnect {id} is not the number's reconnect in progress")]
    NoSuchReconnect { id: String },
    #[error("another number holds the phone: it was signed up again")]
    PhoneTaken,
}

/// Where a provisioning step stands for a number, before anything is called at Meta.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// This is the number's next step: run it.
    Run,
    /// Done before. `resend` is the step after it when that is where the number is now: the
    /// message for it may have been lost in a crash.
    Done { resend: Option<Step> },
    /// An earlier step has not finished; this message came before its turn.
    Early { at: Step },
    /// The number is no longer `PENDING` (for a reconnect: no longer `ACTIVE` or `BANNED`).
    Stopped { status: Status },
    /// The message is of a reconnect that is not the number's reconnect in progress (it
    /// finished, was abandoned, or a newer one replaced it).
    Superseded,
}

pub fn readiness(number: &Number, step: Step) -> Readiness {
    if number.status != Status::Pending {
        return Readiness::Stopped {
            status: number.status,
        };
    }
    let at = number.provisioning_step.unwrap_or(Step::FIRST);
    if at.ordinal() > step.ordinal() {
        // A crash may have lost the message this step's run sent: the next step's, or the one
        // after it when the run made the next one's call beside its own.
        let handed_over = step.may_hand_over_to(number.onboarding).contains(&Some(at));
        Readiness::Done {
            resend: handed_over.then_some(at),
        }
    } else if at == step {
        Readiness::Run
    } else {
        Readiness::Early { at }
    }
}

/// Where a step of reconnect `id` stands for a number: like [`readiness`], along the reconnect's
/// steps ([`Step::next_in_reconnect`]).
pub fn reconnect_readiness(number: &Number, id: &str, step: Step) -> Readiness {
    if !number.status.is_reconnectable() {
        return Readiness::Stopped {
            status: number.status,
        };
    }
    let Some(reconnect) = number.reconnect.as_ref().filter(|r| r.id == id) else {
        return Readiness::Superseded;
    };
    let at = reconnect.step;
    if at.ordinal() > step.ordinal() {
        Readiness::Done {
            resend: step.next_in_reconnect().filter(|next| *next == at),
        }
    } else if at == step {
        Readiness::Run
    } else {
        Readiness::Early { at }
    }
}

/// What `command` does to `number` at `now`.
pub fn decide(number: &Number, command: Command, now: Timestamp) -> Decision {
    match command {
        Command::Activate => move_status(number, Move::Activate, None, now),
        Command::Fail(reason) => move_status(number, Move::Fail, Some(reason), now),
        Command::Disconnect(by) => move_status_with(number, Move::Disconnect, None, now, |after| {
            after.disconnected_by = Some(by);
        }),
        Command::Ban => move_status(number, Move::Ban, None, now),
        Command::Reinstate => move_status(number, Move::Reinstate, None, now),
        Command::Retry { token_usable } => retry(number, token_usable, now),
        Command::StepDone { step, record } => step_done(number, step, record, now),
        Command::StepRetried {
            step,
            reason,
            attempt,
        } => step_retried(number, step, StepRetry { attempt, reason }, now),
        Command::QualityChanged(rating) => quality_changed(number, rating, now),
        Command::NameDecided(decision) => name_decided(number, decision, now),
        Command::NameStatusRead(status) => name_status_read(number, status, now),
        Command::HealthRead(health) => health_read(number, health, now),
        Command::LimitRead {
            messaging_limit,
            throughput,
            announce_first,
        } => limit_read(number, messaging_limit, throughput, announce_first, now),
        Command::TokenChecked(status) => token_checked(number, status, now),
        Command::MarkRestriction { marker, on } => mark_restriction(number, marker, on, now),
        Command::RegisterWaits {
            reason,
            phone,
            attempt,
        } => register_waits(number, StepRetry { attempt, reason }, phone, now),
        Command::WarnTokenExpiry => warn_token_expiry(number, now),
        Command::CountRegisterCall => count_register_call(number, now),
        Command::Restrict(restrictions) => restrict(number, restrictions, now),
        Command::ScheduleBan => schedule_ban(number, now),
        Command::TornDown(teardown) => torn_down(number, teardown, now),
        Command::StartReconnect { id } => start_reconnect(number, id, now),
        Command::ReconnectStepDone { id, step, record } => {
            reconnect_step_done(number, &id, step, record, now)
        }
        Command::ReconnectStepRetried {
            id,
            step,
            reason,
            attempt,
        } => reconnect_step_retried(number, &id, step, StepRetry { attempt, reason }, now),
        Command::FinishReconnect { id } => finish_reconnect(number, &id, now),
        Command::AbandonReconnect { id, reason } => abandon_reconnect(number, &id, reason, now),
    }
}

fn start_reconnect(number: &Number, id: String, now: Timestamp) -> Decision {
    if !number.status.is_reconnectable() {
        return refused(Refusal::NotReconnectable {
            status: number.status,
        });
    }
    if let Some(current) = &number.reconnect
        && (current.id == id
            || now - current.started_at < Duration::minutes(RECONNECT_STALE_MINUTES))
    {
        return Decision::Already;
    }
    let mut after = number.clone();
    after.reconnect = Some(Reconnect {
        id,
        step: Step::FIRST,
        started_at: now,
        last_error: None,
    });
    after.updated_at = now;
    change(number, after, Vec::new(), PhoneGuard::Keep, None)
}

/// The reconnect `id` of `number` at `step`, or what a command about it answers instead.
fn reconnect_at(number: &Number, id: &str, step: Step) -> Result<(), Decision> {
    match reconnect_readiness(number, id, step) {
        Readiness::Run => Ok(()),
        Readiness::Done { .. } => Err(Decision::Already),
        Readiness::Stopped { status } => Err(refused(Refusal::NotReconnectable { status })),
        Readiness::Superseded => Err(refused(Refusal::NoSuchReconnect { id: id.into() })),
        Readiness::Early { at } => Err(refused(Refusal::StepNotReached { step, at })),
    }
}

fn reconnect_step_done(
    number: &Number,
    id: &str,
    step: Step,
    record: StepRecord,
    now: Timestamp,
) -> Decision {
    if let Err(answer) = reconnect_at(number, id, step) {
        return answer;
    }
    let Some(next) = step.next_in_reconnect() else {
        return refused(Refusal::LastStep { step });
    };
    let mut after = number.clone();
    if let Some(reconnect) = after.reconnect.as_mut() {
        reconnect.step = next;
        reconnect.last_error = None;
    }
    after.updated_at = now;
    record_step(&mut after, record);
    change(number, after, Vec::new(), PhoneGuard::Keep, None)
}

fn reconnect_step_retried(
    number: &Number,
    id: &str,
    step: Step,
    retry: StepRetry,
    now: Timestamp,
) -> Decision {
    if let Err(answer) = reconnect_at(number, id, step) {
        return answer;
    }
    if number
        .reconnect
        .as_ref()
        .is_some_and(|r| r.last_error.as_ref() == Some(&retry.reason))
    {
        return Decision::Already;
    }
    // Bookkeeping for the dead-letter consumer: `updatedAt` stays.
    let mut after = number.clone();
    if let Some(reconnect) = after.reconnect.as_mut() {
        reconnect.last_error = Some(retry.reason.clone());
    }
    let event = EventEnvelope::step_retried(&after, retry, now);
    change(number, after, Vec::new(), PhoneGuard::Keep, Some(event))
}

fn finish_reconnect(number: &Number, id: &str, now: Timestamp) -> Decision {
    if let Err(answer) = reconnect_at(number, id, Step::ActivateNumber) {
        // Finished before: the marker is gone and `reconnectedAt` says when.
        return match answer {
            Decision::Refused(Refusal::NoSuchReconnect { .. })
                if number.reconnect.is_none() && number.reconnected_at.is_some() =>
            {
                Decision::Already
            }
            other => other,
        };
    }
    let mut after = number.clone();
    after.reconnect = None;
    after.reconnected_at = Some(now);
    after.reconnect_failure = None;
    // The new token's expiry is announced afresh.
    after.token_expiry_warned_on = None;
    after.updated_at = now;
    let event = EventEnvelope::new(EventType::NumberReconnected, &after, now);
    change(number, after, Vec::new(), PhoneGuard::Keep, Some(event))
}

fn abandon_reconnect(number: &Number, id: &str, reason: FailureReason, now: Timestamp) -> Decision {
    if number.reconnect.as_ref().is_none_or(|r| r.id != id) {
        return Decision::Already;
    }
    let mut after = number.clone();
    after.reconnect = None;
    after.reconnect_failure = Some(reason);
    after.updated_at = now;
    let event = EventEnvelope::new(EventType::NumberReconnectFailed, &after, now);
    change(number, after, Vec::new(), PhoneGuard::Keep, Some(event))
}

fn refused(why: Refusal) -> Decision {
    Decision::Refused(why)
}

fn move_status(
    number: &Number,
    by: Move,
    failure: Option<FailureReason>,
    now: Timestamp,
) -> Decision {
    move_status_with(number, by, failure, now, |_| {})
}

/// A status move; `record` adds what the move records beside the status.
fn move_status_with(
    number: &Number,
    by: Move,
    failure: Option<FailureReason>,
    now: Timestamp,
    record: impl FnOnce(&mut Number),
) -> Decision {
    let transition = match Transition::by(number.status, by) {
        Ok(transition) => transition,
        // Already there by this same move (a redelivery, a repeated request). A reinstated
        // number is `ACTIVE` like an activated one, so either finds `ACTIVE` already done.
        Err(_) if number.status == by.target() => return Decision::Already,
        // Only provisioning activates or fails a number.
        Err(_) if matches!(by, Move::Activate | Move::Fail) => {
            return refused(Refusal::NotPending {
                status: number.status,
            });
        }
        Err(refusal) => return refused(refusal.into()),
    };
    let to = transition.to();
    let mut after = number.clone();
    after.status = to;
    after.updated_at = now;
    if to != Status::Pending {
        after.provisioning_step = None;
    }
    if failure.is_some() {
        after.failure_reason = failure;
    }
    // A number that ended has no reconnect left to finish.
    if to.is_final() {
        after.reconnect = None;
    }
    // A ban or a reinstatement is what a scheduled ban was waiting for.
    if matches!(by, Move::Ban | Move::Reinstate) {
        after.ban_scheduled = false;
    }
    record(&mut after);
    let event = EventEnvelope::new(EventType::for_transition(transition), &after, now);
    // Only a live number holds its phone: a FAILED one gave it up when it failed. One signed
    // up while the phone was live elsewhere never held it: the guard is the other number's.
    let guard = match (transition.from().is_live(), to.is_live()) {
        _ if number.phone_elsewhere => PhoneGuard::Keep,
        (true, false) => PhoneGuard::Release,
        (false, true) => PhoneGuard::Claim,
        _ => PhoneGuard::Keep,
    };
    change(
        number,
        after,
        vec![(transition.from(), -1), (to, 1)],
        guard,
        Some(event),
    )
}

/// Where a retried number resumes: the step that failed, or an earlier one whose effect at
/// Meta the failed number's teardown undid. `None` when the failure leaves nothing to resume
/// (the code exchange, or a step we do not know).
pub fn resume_step(number: &Number) -> Option<Step> {
    let failed = number
        .failure_reason
        .as_ref()
        .and_then(|reason| Step::parse(&reason.step))?;
    if failed == Step::ExchangeToken {
        return None;
    }
    let undone = [
        (!number.subscribed).then_some(Step::SubscribeWaba),
        (!number.registered).then_some(Step::RegisterNumber),
    ];
    let undone = undone
        .into_iter()
        .flatten()
        .filter(|step| step.applies_to(number.onboarding));
    Some(
        undone
            .filter(|step| step.ordinal() < failed.ordinal())
            .min_by_key(|step| step.ordinal())
            .unwrap_or(failed),
    )
}

fn retry(number: &Number, token_usable: bool, now: Timestamp) -> Decision {
    if number.status == Status::Pending {
        // A retry already under way (or a number that never failed): nothing restarts.
        return Decision::Already;
    }
    let transition = match Transition::by(number.status, Move::Retry) {
        Ok(transition) => transition,
        Err(refusal) => return refused(refusal.into()),
    };
    let Some(resume) = resume_step(number) else {
        return refused(Refusal::ReauthorizationRequired {
            why: "the signup code was never exchanged for a token",
        });
    };
    if !token_usable {
        return refused(Refusal::ReauthorizationRequired {
            why: "the number's Meta token is gone or expired",
        });
    }
    let mut after = number.clone();
    after.status = Status::Pending;
    after.provisioning_step = Some(resume);
    after.failure_reason = None;
    after.provisioning_error = None;
    after.torn_down_at = None;
    after.updated_at = now;
    let event = EventEnvelope::new(EventType::for_transition(transition), &after, now);
    change(
        number,
        after,
        vec![(Status::Failed, -1), (Status::Pending, 1)],
        PhoneGuard::Claim,
        Some(event),
    )
}

fn torn_down(number: &Number, teardown: Teardown, now: Timestamp) -> Decision {
    if !number.status.is_final() {
        return refused(Refusal::NotEnded {
            status: number.status,
        });
    }
    let undoes_something = (teardown.deregistered && number.registered)
        || (teardown.unsubscribed && number.subscribed)
        || (teardown.token_deleted && number.token_deleted_at.is_none());
    if number.torn_down_at.is_some() && !undoes_something {
        return Decision::Already;
    }
    let mut after = number.clone();
    after.torn_down_at = after.torn_down_at.or(Some(now));
    if teardown.deregistered {
        after.registered = false;
    }
    if teardown.unsubscribed {
        after.subscribed = false;
    }
    if teardown.token_deleted {
        after.token_deleted_at = after.token_deleted_at.or(Some(now));
    }
    change(number, after, Vec::new(), PhoneGuard::Keep, None)
}

/// Whether a teardown run of this number has anything left to do, and what: the Meta side once,
/// the token when no retry can use it any more (a disconnected number at once; a failed one
/// when it cannot be retried, or `retention` after it failed).
pub fn teardown_due(number: &Number, now: Timestamp, retention: Duration) -> Option<TeardownPlan> {
    if !number.status.is_final() {
        return None;
    }
    let meta = number.torn_down_at.is_none();
    let retriable = number.status == Status::Failed && resume_step(number).is_some();
    let delete_token =
        number.token_deleted_at.is_none() && (!retriable || now - number.updated_at >= retention);
    (meta || delete_token).then_some(TeardownPlan { meta, delete_token })
}

/// What a teardown run is to do (see [`teardown_due`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TeardownPlan {
    /// Deregister and unsubscribe what the number did at Meta.
    pub meta: bool,
    pub delete_token: bool,
}

fn step_done(number: &Number, step: Step, record: StepRecord, now: Timestamp) -> Decision {
    match readiness(number, step) {
        Readiness::Stopped { status } => return refused(Refusal::NotPending { status }),
        Readiness::Done { .. } => return Decision::Already,
        Readiness::Early { at } => return refused(Refusal::StepNotReached { step, at }),
        Readiness::Superseded | Readiness::Run => {}
    }
    // A record holding the answer of the call made beside the step's own goes past the step
    // that call belongs to.
    let [next, past_beside] = step.may_hand_over_to(number.onboarding);
    let next = match past_beside {
        Some(past_beside) if record.beside_done => past_beside,
        _ => match next {
            Some(next) => next,
            None => return refused(Refusal::LastStep { step }),
        },
    };
    let mut after = number.clone();
    after.provisioning_step = Some(next);
    after.provisioning_error = None;
    after.updated_at = now;
    record_step(&mut after, record);
    change(number, after, Vec::new(), PhoneGuard::Keep, None)
}

/// What a finished step (of provisioning or of a reconnect) learnt, written on the number.
fn record_step(after: &mut Number, record: StepRecord) {
    if record.token_expires_at.is_some() || record.token_replaced {
        after.token_expires_at = record.token_expires_at;
    }
    if record.display_number.is_some() {
        after.display_number = record.display_number;
    }
    if record.display_name.is_some() {
        after.display_name = record.display_name;
    }
    if record.quality_rating.is_some() {
        after.quality_rating = record.quality_rating;
    }
    after.subscribed |= record.subscribed;
    after.registered |= record.registered;
    if record.health.is_some() {
        after.health = record.health;
    }
    if record.messaging_limit.is_some() {
        after.messaging_limit = record.messaging_limit;
    }
    if record.throughput.is_some() {
        after.throughput = record.throughput;
    }
    if record.name_status.is_some() {
        after.name_status = record.name_status;
    }
    after.register_waiting_on = None;
}

/// A new reason is recorded, with a history entry; the same reason again (the next attempt
/// failing alike) writes nothing, so a step retried for hours costs one entry per change.
fn step_retried(number: &Number, step: Step, retry: StepRetry, now: Timestamp) -> Decision {
    match readiness(number, step) {
        Readiness::Stopped { status } => return refused(Refusal::NotPending { status }),
        Readiness::Done { .. } => return Decision::Already,
        Readiness::Early { at } => return refused(Refusal::StepNotReached { step, at }),
        Readiness::Superseded | Readiness::Run => {}
    }
    if number.provisioning_error.as_ref() == Some(&retry.reason) {
        return Decision::Already;
    }
    // Bookkeeping for the dead-letter consumer, not a change of the number clients follow:
    // `updatedAt` stays; the history shows it.
    let mut after = number.clone();
    after.provisioning_error = Some(retry.reason.clone());
    let event = EventEnvelope::step_retried(&after, retry, now);
    change(number, after, Vec::new(), PhoneGuard::Keep, Some(event))
}

fn quality_changed(number: &Number, rating: Option<QualityRating>, now: Timestamp) -> Decision {
    if number.status.is_final() {
        return refused(Refusal::Final {
            status: number.status,
        });
    }
    if number.quality_rating == rating {
        return Decision::Already;
    }
    let previous = number.quality_rating;
    let mut after = number.clone();
    after.quality_rating = rating;
    after.updated_at = now;
    let event =
        EventEnvelope::quality_updated(&after, previous, number.messaging_limit.clone(), now);
    change(number, after, Vec::new(), PhoneGuard::Keep, Some(event))
}

fn warn_token_expiry(number: &Number, now: Timestamp) -> Decision {
    if number.status.is_final() {
        return refused(Refusal::Final {
            status: number.status,
        });
    }
    let expiring = number
        .token_expires_at
        .is_some_and(|expires| expires - now <= Duration::days(TOKEN_WARNING_DAYS));
    if !expiring {
        return refused(Refusal::TokenNotExpiring);
    }
    let day = now.format("%Y-%m-%d").to_string();
    if number.token_expiry_warned_on.as_deref() == Some(day.as_str()) {
        return Decision::Already;
    }
    let mut after = number.clone();
    after.token_expiry_warned_on = Some(day);
    let event = EventEnvelope::new(EventType::NumberTokenExpiring, &after, now);
    change(number, after, Vec::new(), PhoneGuard::Keep, Some(event))
}

/// Meta's restrictions replace the ones recorded: announced as `number.restricted` when some are
/// in force, `number.restriction_lifted` when the last ones went.
fn restrict(number: &Number, restrictions: Vec<Restriction>, now: Timestamp) -> Decision {
    if number.status.is_final() {
        return refused(Refusal::Final {
            status: number.status,
        });
    }
    // Meta's list replaces its earlier list; restrictions known from other signals stay.
    let mut restrictions = restrictions;
    restrictions.retain(|r| !RestrictionMarker::is_marker(&r.kind));
    let markers = number
        .restrictions
        .iter()
        .filter(|r| RestrictionMarker::is_marker(&r.kind))
        .cloned();
    restrictions.extend(markers);
    restrictions_changed(number, restrictions, now)
}

/// Records the restrictions in force now, announced like [`restrict`].
fn restrictions_changed(
    number: &Number,
    restrictions: Vec<Restriction>,
    now: Timestamp,
) -> Decision {
    if number.restrictions == restrictions {
        return Decision::Already;
    }
    let mut after = number.clone();
    after.restrictions = restrictions;
    after.updated_at = now;
    let event_type = if after.restrictions.is_empty() {
        EventType::NumberRestrictionLifted
    } else {
        EventType::NumberRestricted
    };
    let event = EventEnvelope::new(event_type, &after, now);
    change(number, after, Vec::new(), PhoneGuard::Keep, Some(event))
}

fn mark_restriction(
    number: &Number,
    marker: RestrictionMarker,
    on: bool,
    now: Timestamp,
) -> Decision {
    if let Some(refusal) = final_refusal(number) {
        return refused(refusal);
    }
    let mut restrictions: Vec<Restriction> = number
        .restrictions
        .iter()
        .filter(|r| r.kind != marker.as_str())
        .cloned()
        .collect();
    if on {
        restrictions.push(Restriction {
            kind: marker.as_str().to_string(),
            expires_at: None,
        });
    }
    restrictions_changed(number, restrictions, now)
}

/// Final numbers record nothing Meta says any more.
fn final_refusal(number: &Number) -> Option<Refusal> {
    number.status.is_final().then_some(Refusal::Final {
        status: number.status,
    })
}

/// Announced as `number.display_name_updated` with the decision; once per decision.
fn name_decided(number: &Number, decision: NameDecision, now: Timestamp) -> Decision {
    if let Some(refusal) = final_refusal(number) {
        return refused(refusal);
    }
    if number.name_decision.as_ref() == Some(&decision) {
        return Decision::Already;
    }
    let mut after = number.clone();
    match decision.decision.as_str() {
        "APPROVED" => {
            if !decision.requested_verified_name.is_empty() {
                after.display_name = Some(decision.requested_verified_name.clone());
            }
            after.name_status = Some("APPROVED".into());
        }
        // Meta's `name_status` for a rejected name.
        "REJECTED" => after.name_status = Some("DECLINED".into()),
        _ => {}
    }
    after.name_decision = Some(decision.clone());
    after.updated_at = now;
    let event = EventEnvelope::display_name_updated(&after, Some(decision), now);
    change(number, after, Vec::new(), PhoneGuard::Keep, Some(event))
}

/// A changed `name_status` is announced; the first one read is recorded quietly.
fn name_status_read(number: &Number, status: String, now: Timestamp) -> Decision {
    if let Some(refusal) = final_refusal(number) {
        return refused(refusal);
    }
    if number.name_status.as_deref() == Some(status.as_str()) {
        return Decision::Already;
    }
    let announce = number.name_status.is_some();
    let mut after = number.clone();
    after.name_status = Some(status);
    after.updated_at = now;
    let event = announce.then(|| EventEnvelope::display_name_updated(&after, None, now));
    change(number, after, Vec::new(), PhoneGuard::Keep, event)
}

/// A changed health is announced (`number.health_changed`); a first reading only when it is
/// not `AVAILABLE`.
fn health_read(number: &Number, health: Health, now: Timestamp) -> Decision {
    if let Some(refusal) = final_refusal(number) {
        return refused(refusal);
    }
    if number.health.as_ref() == Some(&health) {
        return Decision::Already;
    }
    let announce = number.health.is_some()
        || health.can_send_message != super::number::CanSendMessage::Available;
    let mut after = number.clone();
    after.health = Some(health);
    after.updated_at = now;
    let event = announce.then(|| EventEnvelope::new(EventType::NumberHealthChanged, &after, now));
    change(number, after, Vec::new(), PhoneGuard::Keep, event)
}

/// A changed messaging limit or throughput is announced as `number.quality_updated` with the
/// previous limit.
fn limit_read(
    number: &Number,
    messaging_limit: Option<String>,
    throughput: Option<String>,
    announce_first: bool,
    now: Timestamp,
) -> Decision {
    if let Some(refusal) = final_refusal(number) {
        return refused(refusal);
    }
    let limit = messaging_limit.or_else(|| number.messaging_limit.clone());
    let throughput = throughput.or_else(|| number.throughput.clone());
    let limit_changed = limit != number.messaging_limit;
    let throughput_changed = throughput != number.throughput;
    if !limit_changed && !throughput_changed {
        return Decision::Already;
    }
    let announce = announce_first
        || (limit_changed && number.messaging_limit.is_some())
        || (throughput_changed && number.throughput.is_some());
    let mut after = number.clone();
    after.messaging_limit = limit;
    after.throughput = throughput;
    after.updated_at = now;
    let event = announce.then(|| {
        EventEnvelope::quality_updated(
            &after,
            number.quality_rating,
            number.messaging_limit.clone(),
            now,
        )
    });
    change(number, after, Vec::new(), PhoneGuard::Keep, event)
}

/// An invalid token is announced (`number.token_invalid`) once until it is valid again.
fn token_checked(number: &Number, status: TokenStatus, now: Timestamp) -> Decision {
    if let Some(refusal) = final_refusal(number) {
        return refused(refusal);
    }
    if number.token_status == Some(status) {
        return Decision::Already;
    }
    let mut after = number.clone();
    after.token_status = Some(status);
    after.updated_at = now;
    let event = (status == TokenStatus::Invalid)
        .then(|| EventEnvelope::new(EventType::NumberTokenInvalid, &after, now));
    change(number, after, Vec::new(), PhoneGuard::Keep, event)
}

/// Like a retried register step, with the phone as read when Meta refused. The history has an
/// entry when the reason is new; a changed phone alone is bookkeeping.
fn register_waits(
    number: &Number,
    retry: StepRetry,
    phone: Option<String>,
    now: Timestamp,
) -> Decision {
    let step = Step::RegisterNumber;
    match readiness(number, step) {
        Readiness::Stopped { status } => return refused(Refusal::NotPending { status }),
        Readiness::Done { .. } => return Decision::Already,
        Readiness::Early { at } => return refused(Refusal::StepNotReached { step, at }),
        Readiness::Superseded | Readiness::Run => {}
    }
    let new_reason = number.provisioning_error.as_ref() != Some(&retry.reason);
    if !new_reason && number.register_waiting_on == phone {
        return Decision::Already;
    }
    // Bookkeeping like a retried step: `updatedAt` stays.
    let mut after = number.clone();
    after.provisioning_error = Some(retry.reason.clone());
    after.register_waiting_on = phone;
    let event = new_reason.then(|| EventEnvelope::step_retried(&after, retry, now));
    change(number, after, Vec::new(), PhoneGuard::Keep, event)
}

/// Announced once per schedule, to numbers Meta has not banned yet.
fn schedule_ban(number: &Number, now: Timestamp) -> Decision {
    if number.status.is_final() || number.status == Status::Banned {
        return refused(Refusal::NotLive {
            status: number.status,
        });
    }
    if number.ban_scheduled {
        return Decision::Already;
    }
    let mut after = number.clone();
    after.ban_scheduled = true;
    let event = EventEnvelope::new(EventType::NumberBanScheduled, &after, now);
    change(number, after, Vec::new(), PhoneGuard::Keep, Some(event))
}

/// Provisioning registers a `PENDING` number; teardown deregisters a `DISCONNECTED` one.
fn count_register_call(number: &Number, now: Timestamp) -> Decision {
    let sends = match number.status {
        Status::Pending => true,
        // The teardown of a number that ended deregisters it, once.
        Status::Disconnected | Status::Failed => number.torn_down_at.is_none(),
        // A reconnect registers a number Meta says is not registered.
        Status::Active | Status::Banned => number.reconnect.is_some(),
    };
    if !sends {
        return refused(Refusal::NoRegisterCall {
            status: number.status,
        });
    }
    if let Some(until) = register_budget_frees_at(number, now) {
        return refused(Refusal::RegisterBudgetSpent { until });
    }
    // Bookkeeping, not a change clients see: `updatedAt` stays.
    let mut after = number.clone();
    after.register_calls = register_calls_in_window(number, now);
    after.register_calls.push(now);
    change(number, after, Vec::new(), PhoneGuard::Keep, None)
}

fn change(
    before: &Number,
    mut after: Number,
    counters: Vec<(Status, i64)>,
    phone_guard: PhoneGuard,
    mut event: Option<EventEnvelope>,
) -> Decision {
    after.version = before.version + 1;
    if let Some(event) = &mut event {
        // `lastEventId` is the event a repeat may still have to publish; a history-only one
        // is never published, and must not hide an earlier one that is not yet.
        if event.event_type.is_published() {
            after.last_event_id = Some(event.id.clone());
        }
        event.changes = super::history::changed_fields(before, &after);
    }
    Decision::Change(Box::new(Change {
        expected: Expected {
            status: before.status,
            step: before.provisioning_step,
            version: before.version,
        },
        number: after,
        counters,
        phone_guard,
        event,
    }))
}

#[cfg(test)]
mod tests;
