//! A WABA-only signup's lifecycle (see `domain::waba_signup`), as pure code like the number's:
//! [`decide`] answers a [`WabaChange`] (the version it expects, the signup as it will be, and
//! the outcome the signup's link records with it), [`WabaDecision::Already`] for a duplicate
//! or [`WabaDecision::Refused`]; `ports::WabaSignups::commit_waba_signup` writes it whole,
//! conditioned on the version, and `crate::lifecycle::apply_waba` runs the two.
//!
//! `pending` → `completed` (the numbers it created) | `failed` (why nothing was onboarded), then
//! the signup's own copy of the token is deleted. Nothing changes after that.

use crate::domain::NumberId;
use crate::domain::number::FailureReason;
use crate::domain::time::Timestamp;
use crate::domain::waba_signup::{WabaOutcome, WabaSignup};

/// The step name a WABA signup's failures carry (it is no step of a number's chain).
pub const LIST_PHONES: &str = "LIST_PHONE_NUMBERS";

#[derive(Clone, Debug, PartialEq)]
pub enum WabaCommand {
    /// The exchange or the listing failed transiently and will be retried; the reason is kept
    /// for the dead-letter consumer.
    Retried(FailureReason),
    /// The phones were listed and every eligible one has its number (`number_ids`); `skipped`
    /// are the phones live elsewhere. None eligible is a failure.
    Listed {
        number_ids: Vec<NumberId>,
        skipped: Vec<String>,
    },
    /// Nothing can be onboarded (Meta refused the exchange or the listing, retries ran out).
    Fail(FailureReason),
    /// The signup's copy of the token is scheduled for deletion.
    TokenDeleted,
}

impl WabaCommand {
    pub fn name(&self) -> &'static str {
        match self {
            WabaCommand::Retried(_) => "retry the WABA signup",
            WabaCommand::Listed { .. } => "record the WABA's numbers",
            WabaCommand::Fail(_) => "fail the WABA signup",
            WabaCommand::TokenDeleted => "record the token's deletion",
        }
    }
}

/// One write of a WABA signup.
#[derive(Clone, Debug, PartialEq)]
pub struct WabaChange {
    pub expected_version: u64,
    /// The signup as it is once written (its version one past `expected_version`).
    pub signup: WabaSignup,
    /// The outcome the signup's link records in the same write (once, when it is reached).
    pub link_outcome: Option<(String, WabaOutcome)>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum WabaDecision {
    Change(Box<WabaChange>),
    Already,
    Refused(WabaRefusal),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WabaRefusal {
    #[error("the WABA signup has ended ({state}); it does not change any more")]
    Ended { state: &'static str },
    #[error("the WABA signup has not ended; its token is still needed")]
    NotEnded,
}

/// What the listing step has left to do for a signup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WabaReadiness {
    /// Exchange (unless the token is stored), list, create the numbers.
    Run,
    /// Ended; its copy of the token is still to be deleted.
    DeleteToken,
    /// Nothing left.
    Done,
}

pub fn readiness(signup: &WabaSignup) -> WabaReadiness {
    match (&signup.outcome, signup.token_deleted_at) {
        (None, _) => WabaReadiness::Run,
        (Some(_), None) => WabaReadiness::DeleteToken,
        (Some(_), Some(_)) => WabaReadiness::Done,
    }
}

/// Why a WABA with no eligible phone onboarded nothing.
pub fn no_eligible_phones(skipped: usize) -> FailureReason {
    let message = if skipped == 0 {
        "the WhatsApp Business Account has no phone numbers: add one in WhatsApp Manager, then \
         send the customer a new signup link"
            .to_string()
    } else {
        format!(
            "every phone number of the WhatsApp Business Account ({skipped}) is already \
             connected to a number"
        )
    };
    FailureReason {
        step: LIST_PHONES.into(),
        code: "no_eligible_phones".into(),
        message,
        ..FailureReason::default()
    }
}

pub fn decide(signup: &WabaSignup, command: WabaCommand, now: Timestamp) -> WabaDecision {
    match command {
        WabaCommand::Retried(reason) => {
            if let Some(outcome) = &signup.outcome {
                return ended(outcome);
            }
            if signup.last_error.as_ref() == Some(&reason) {
                return WabaDecision::Already;
            }
            // Bookkeeping for the dead-letter consumer: `updatedAt` stays.
            let mut after = signup.clone();
            after.last_error = Some(reason);
            change(signup, after)
        }
        WabaCommand::Listed {
            number_ids,
            skipped,
        } => {
            let outcome = if number_ids.is_empty() {
                WabaOutcome::Failed(no_eligible_phones(skipped.len()))
            } else {
                WabaOutcome::Completed {
                    number_ids,
                    skipped,
                }
            };
            end(signup, outcome, now)
        }
        WabaCommand::Fail(reason) => end(signup, WabaOutcome::Failed(reason), now),
        WabaCommand::TokenDeleted => match readiness(signup) {
            WabaReadiness::Run => WabaDecision::Refused(WabaRefusal::NotEnded),
            WabaReadiness::Done => WabaDecision::Already,
            WabaReadiness::DeleteToken => {
                let mut after = signup.clone();
                after.token_deleted_at = Some(now);
                change(signup, after)
            }
        },
    }
}

fn ended(outcome: &WabaOutcome) -> WabaDecision {
    WabaDecision::Refused(WabaRefusal::Ended {
        state: outcome.state(),
    })
}

fn end(signup: &WabaSignup, outcome: WabaOutcome, now: Timestamp) -> WabaDecision {
    match &signup.outcome {
        Some(current) if *current == outcome => return WabaDecision::Already,
        Some(current) => return ended(current),
        None => {}
    }
    let mut after = signup.clone();
    after.outcome = Some(outcome.clone());
    after.last_error = None;
    after.updated_at = now;
    let link_outcome = signup.link_id.clone().map(|link| (link, outcome));
    let mut decision = change(signup, after);
    if let WabaDecision::Change(change) = &mut decision {
        change.link_outcome = link_outcome;
    }
    decision
}

fn change(before: &WabaSignup, mut after: WabaSignup) -> WabaDecision {
    after.version = before.version + 1;
    WabaDecision::Change(Box::new(WabaChange {
        expected_version: before.version,
        signup: after,
        link_outcome: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AccountId;
    use crate::domain::time;

    fn now() -> Timestamp {
        time::parse("2026-12-01T12:00:00Z").unwrap()
    }

    fn pending(link: Option<&str>) -> WabaSignup {
        let mut signup = WabaSignup::new(
            AccountId::from("acc_1".to_string()),
            "100".into(),
            link.map(str::to_string),
            time::parse("2026-12-01T11:59:00Z").unwrap(),
        );
        signup.version = 3;
        signup
    }

    fn reason(code: &str) -> FailureReason {
        FailureReason {
            step: LIST_PHONES.into(),
            code: code.into(),
            message: format!("Meta said {code}"),
            ..FailureReason::default()
        }
    }

    fn changed(decision: WabaDecision) -> WabaChange {
        match decision {
            WabaDecision::Change(change) => *change,
            other => panic!("expected a change, got {other:?}"),
        }
    }

    fn listed(ids: &[&str], skipped: &[&str]) -> WabaCommand {
        WabaCommand::Listed {
            number_ids: ids.iter().map(|i| NumberId::from(i.to_string())).collect(),
            skipped: skipped.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn listed_numbers_complete_the_signup_and_its_link_records_them() {
        let signup = pending(Some("lnk_1"));
        let change = changed(decide(&signup, listed(&["n1", "n2"], &["201"]), now()));
        assert_eq!(change.expected_version, 3);
        assert_eq!(change.signup.version, 4);
        let outcome = WabaOutcome::Completed {
            number_ids: vec![
                NumberId::from("n1".to_string()),
                NumberId::from("n2".to_string()),
            ],
            skipped: vec!["201".into()],
        };
        assert_eq!(change.signup.outcome, Some(outcome.clone()));
        assert_eq!(change.signup.updated_at, now());
        assert_eq!(change.link_outcome, Some(("lnk_1".into(), outcome)));
    }

    #[test]
    fn a_waba_without_eligible_phones_fails_saying_so() {
        let change = changed(decide(&pending(None), listed(&[], &["201", "202"]), now()));
        let Some(WabaOutcome::Failed(reason)) = change.signup.outcome else {
            panic!("expected a failure");
        };
        assert_eq!(reason.code, "no_eligible_phones");
        assert!(
            reason.message.contains("already connected"),
            "{}",
            reason.message
        );
        assert_eq!(change.link_outcome, None, "no link to tell");

        let empty = changed(decide(&pending(None), listed(&[], &[]), now()));
        let Some(WabaOutcome::Failed(reason)) = empty.signup.outcome else {
            panic!("expected a failure");
        };
        assert!(
            reason.message.contains("has no phone numbers"),
            "{}",
            reason.message
        );
    }

    #[test]
    fn the_same_outcome_again_is_a_duplicate_and_another_one_is_refused() {
        let signup = changed(decide(&pending(None), listed(&["n1"], &[]), now())).signup;
        assert_eq!(
            decide(&signup, listed(&["n1"], &[]), now()),
            WabaDecision::Already
        );
        assert_eq!(
            decide(&signup, WabaCommand::Fail(reason("190")), now()),
            WabaDecision::Refused(WabaRefusal::Ended { state: "completed" })
        );
        assert_eq!(
            decide(&signup, WabaCommand::Retried(reason("2")), now()),
            WabaDecision::Refused(WabaRefusal::Ended { state: "completed" })
        );
    }

    #[test]
    fn a_transient_error_is_kept_once_without_touching_updated_at() {
        let signup = pending(None);
        let change = changed(decide(&signup, WabaCommand::Retried(reason("2")), now()));
        assert_eq!(change.signup.last_error, Some(reason("2")));
        assert_eq!(change.signup.updated_at, signup.updated_at);
        assert_eq!(
            decide(&change.signup, WabaCommand::Retried(reason("2")), now()),
            WabaDecision::Already
        );
    }

    #[test]
    fn the_token_is_deleted_only_once_the_signup_ended() {
        let signup = pending(None);
        assert_eq!(readiness(&signup), WabaReadiness::Run);
        assert_eq!(
            decide(&signup, WabaCommand::TokenDeleted, now()),
            WabaDecision::Refused(WabaRefusal::NotEnded)
        );
        let failed = changed(decide(&signup, WabaCommand::Fail(reason("190")), now())).signup;
        assert_eq!(readiness(&failed), WabaReadiness::DeleteToken);
        let deleted = changed(decide(&failed, WabaCommand::TokenDeleted, now())).signup;
        assert_eq!(deleted.token_deleted_at, Some(now()));
        assert_eq!(readiness(&deleted), WabaReadiness::Done);
        assert_eq!(
            decide(&deleted, WabaCommand::TokenDeleted, now()),
            WabaDecision::Already
        );
    }
}
