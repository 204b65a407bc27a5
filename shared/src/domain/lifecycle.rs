//! A Number's lifecycle as pure code: what each [`Command`] does to a number, wherever it is.
//!
//! [`decide`] does no I/O. It answers with plain data: a [`Change`] (the status, step and
//! version it expects, the number as it will be, the counter deltas, what happens to the phone
//! guard, the event to announce), [`Decision::Already`] for a duplicate, or
//! [`Decision::Refused`] with the reason. One store port writes a `Change`
//! (`ports::LifecycleStore::commit`), conditioned on what it expects, and `crate::lifecycle`
//! runs the two. Everything a command implies is written here and nowhere else.

use chrono::Duration;

use super::event::{EventEnvelope, EventType};
use super::number::{FailureReason, Number, QualityRating, Restriction};
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

/// Who ended a number. Both end it the same way; logs say which.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DisconnectedBy {
    /// The API's `DELETE`.
    Customer,
    /// Meta told us (partner removed, app uninstalled, account deleted).
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
    /// dead-letter consumer, should the retries run out.
    StepRetried {
        step: Step,
        reason: FailureReason,
    },
    /// Meta's quality rating as read now (`None`: not rated).
    QualityChanged(Option<QualityRating>),
    /// Meta approved a display name.
    DisplayNameApproved(String),
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
}

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
            Command::DisplayNameApproved(_) => "set the display name",
            Command::WarnTokenExpiry => "warn of the token's expiry",
            Command::TornDown(_) => "record the teardown",
            Command::CountRegisterCall => "count a register request",
            Command::Restrict(_) => "record Meta's restrictions",
            Command::ScheduleBan => "announce a scheduled ban",
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
    /// The number is no longer `PENDING`.
    Stopped { status: Status },
}

pub fn readiness(number: &Number, step: Step) -> Readiness {
    if number.status != Status::Pending {
        return Readiness::Stopped {
            status: number.status,
        };
    }
    let at = number.provisioning_step.unwrap_or(Step::FIRST);
    if at.ordinal() > step.ordinal() {
        Readiness::Done {
            resend: step.next_for(number.onboarding).filter(|next| *next == at),
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
        Command::Disconnect(_) => move_status(number, Move::Disconnect, None, now),
        Command::Ban => move_status(number, Move::Ban, None, now),
        Command::Reinstate => move_status(number, Move::Reinstate, None, now),
        Command::Retry { token_usable } => retry(number, token_usable, now),
        Command::StepDone { step, record } => step_done(number, step, record, now),
        Command::StepRetried { step, reason } => step_retried(number, step, reason),
        Command::QualityChanged(rating) => quality_changed(number, rating, now),
        Command::DisplayNameApproved(name) => {
            if number.status.is_final() {
                return refused(Refusal::Final {
                    status: number.status,
                });
            }
            if number.display_name.as_deref() == Some(name.as_str()) {
                return Decision::Already;
            }
            let mut after = number.clone();
            after.display_name = Some(name);
            after.updated_at = now;
            change(number, after, Vec::new(), PhoneGuard::Keep, None)
        }
        Command::WarnTokenExpiry => warn_token_expiry(number, now),
        Command::CountRegisterCall => count_register_call(number, now),
        Command::Restrict(restrictions) => restrict(number, restrictions, now),
        Command::ScheduleBan => schedule_ban(number, now),
        Command::TornDown(teardown) => torn_down(number, teardown, now),
    }
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
    // A ban or a reinstatement is what a scheduled ban was waiting for.
    if matches!(by, Move::Ban | Move::Reinstate) {
        after.ban_scheduled = false;
    }
    let event = EventEnvelope::new(EventType::for_transition(transition), &after, now);
    // Only a live number holds its phone: a FAILED one gave it up when it failed.
    let guard = match (transition.from().is_live(), to.is_live()) {
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
        Readiness::Run => {}
    }
    let Some(next) = step.next_for(number.onboarding) else {
        return refused(Refusal::LastStep { step });
    };
    let mut after = number.clone();
    after.provisioning_step = Some(next);
    after.provisioning_error = None;
    after.updated_at = now;
    if record.token_expires_at.is_some() {
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
    change(number, after, Vec::new(), PhoneGuard::Keep, None)
}

fn step_retried(number: &Number, step: Step, reason: FailureReason) -> Decision {
    match readiness(number, step) {
        Readiness::Stopped { status } => return refused(Refusal::NotPending { status }),
        Readiness::Done { .. } => return Decision::Already,
        Readiness::Early { at } => return refused(Refusal::StepNotReached { step, at }),
        Readiness::Run => {}
    }
    if number.provisioning_error.as_ref() == Some(&reason) {
        return Decision::Already;
    }
    // Bookkeeping for the dead-letter consumer, not a change clients see: `updatedAt` stays.
    let mut after = number.clone();
    after.provisioning_error = Some(reason);
    change(number, after, Vec::new(), PhoneGuard::Keep, None)
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
    let event = EventEnvelope::quality_updated(&after, previous, now);
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
        _ => false,
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
        after.last_event_id = Some(event.id.clone());
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
