use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a Number is in its life. The only way to move between statuses is a [`Move`] of the
/// lifecycle table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Pending,
    Active,
    Failed,
    Disconnected,
    Banned,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Pending,
        Status::Active,
        Status::Failed,
        Status::Disconnected,
        Status::Banned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Active => "ACTIVE",
            Status::Failed => "FAILED",
            Status::Disconnected => "DISCONNECTED",
            Status::Banned => "BANNED",
        }
    }

    /// Provisioning is over and the phone is free: `DISCONNECTED` never changes again (a new
    /// signup creates a new Number); `FAILED` changes only by a retry or a disconnect.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Failed | Status::Disconnected)
    }

    /// A new signup of the phone in the same account reconnects the number (new token, same id)
    /// rather than creating another.
    pub fn is_reconnectable(self) -> bool {
        matches!(self, Status::Active | Status::Banned)
    }

    /// Live numbers hold their phone: no other account may sign the same phone up.
    pub fn is_live(self) -> bool {
        !self.is_final()
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("status must be one of PENDING, ACTIVE, FAILED, DISCONNECTED, BANNED")]
pub struct UnknownStatus;

impl FromStr for Status {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or(UnknownStatus)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a number cannot go from {from} to {to}")]
pub struct RefusedTransition {
    pub from: Status,
    pub to: Status,
}

/// What moves a number from one status to another. A status change is always one of these, so
/// the same pair of statuses cannot mean two things (`BANNED -> ACTIVE` is a reinstatement,
/// never an activation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Move {
    Activate,
    Fail,
    Disconnect,
    Ban,
    Reinstate,
    /// A failed onboarding tried again, once the customer fixed the cause.
    Retry,
}

/// The lifecycle, in one table: from, by what, to. Every status change in the system is looked
/// up here (by `domain::lifecycle::decide`) and then written with a condition on `from`.
const TABLE: &[(Status, Move, Status)] = &[
    (Status::Pending, Move::Activate, Status::Active),
    (Status::Pending, Move::Fail, Status::Failed),
    (Status::Pending, Move::Disconnect, Status::Disconnected),
    (Status::Active, Move::Disconnect, Status::Disconnected),
    (Status::Active, Move::Ban, Status::Banned),
    (Status::Banned, Move::Reinstate, Status::Active),
    (Status::Banned, Move::Disconnect, Status::Disconnected),
    (Status::Failed, Move::Retry, Status::Pending),
    (Status::Failed, Move::Disconnect, Status::Disconnected),
];

impl Move {
    /// Where this move ends, wherever it starts.
    pub fn target(self) -> Status {
        match self {
            Move::Activate | Move::Reinstate => Status::Active,
            Move::Fail => Status::Failed,
            Move::Disconnect => Status::Disconnected,
            Move::Ban => Status::Banned,
            Move::Retry => Status::Pending,
        }
    }
}

pub fn transition(from: Status, to: Status) -> Result<(), RefusedTransition> {
    if TABLE.iter().any(|(f, _, t)| *f == from && *t == to) {
        Ok(())
    } else {
        Err(RefusedTransition { from, to })
    }
}

/// A status change the lifecycle allows. Its only constructor consults the table, so a store is
/// never asked to write a change the lifecycle refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    from: Status,
    by: Move,
    to: Status,
}

impl Transition {
    /// The transition `by` makes from `from`, if the table has it.
    pub fn by(from: Status, by: Move) -> Result<Transition, RefusedTransition> {
        TABLE
            .iter()
            .find(|(f, m, _)| *f == from && *m == by)
            .map(|(from, by, to)| Transition {
                from: *from,
                by: *by,
                to: *to,
            })
            .ok_or(RefusedTransition {
                from,
                to: by.target(),
            })
    }

    pub fn from(&self) -> Status {
        self.from
    }

    pub fn to(&self) -> Status {
        self.to
    }

    pub fn by_move(&self) -> Move {
        self.by
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(from: Status, to: Status) -> bool {
        transition(from, to).is_ok()
    }

    #[test]
    fn pending_becomes_active_when_provisioning_finishes() {
        assert!(allowed(Status::Pending, Status::Active));
    }

    #[test]
    fn pending_becomes_failed_when_provisioning_gives_up() {
        assert!(allowed(Status::Pending, Status::Failed));
    }

    #[test]
    fn pending_can_be_disconnected_before_provisioning_finishes() {
        assert!(allowed(Status::Pending, Status::Disconnected));
    }

    #[test]
    fn active_can_be_disconnected() {
        assert!(allowed(Status::Active, Status::Disconnected));
    }

    #[test]
    fn active_can_be_banned() {
        assert!(allowed(Status::Active, Status::Banned));
    }

    #[test]
    fn banned_is_reinstated_to_active() {
        assert!(allowed(Status::Banned, Status::Active));
    }

    #[test]
    fn banned_can_be_disconnected() {
        assert!(allowed(Status::Banned, Status::Disconnected));
    }

    #[test]
    fn failed_is_retried_back_to_pending() {
        assert!(allowed(Status::Failed, Status::Pending));
    }

    #[test]
    fn failed_can_be_disconnected() {
        assert!(allowed(Status::Failed, Status::Disconnected));
    }

    #[test]
    fn every_other_transition_is_refused() {
        let allowed_pairs = [
            (Status::Pending, Status::Active),
            (Status::Pending, Status::Failed),
            (Status::Pending, Status::Disconnected),
            (Status::Active, Status::Disconnected),
            (Status::Active, Status::Banned),
            (Status::Banned, Status::Active),
            (Status::Banned, Status::Disconnected),
            (Status::Failed, Status::Pending),
            (Status::Failed, Status::Disconnected),
        ];
        let mut refused = 0;
        for from in Status::ALL {
            for to in Status::ALL {
                if allowed_pairs.contains(&(from, to)) {
                    continue;
                }
                assert_eq!(
                    transition(from, to),
                    Err(RefusedTransition { from, to }),
                    "{from} -> {to} must be refused"
                );
                refused += 1;
            }
        }
        assert_eq!(refused, 25 - allowed_pairs.len());
    }

    #[test]
    fn disconnected_never_moves_again() {
        for to in Status::ALL {
            assert!(
                !allowed(Status::Disconnected, to),
                "DISCONNECTED may go to {to}"
            );
        }
    }

    #[test]
    fn failed_moves_only_by_a_retry_or_a_disconnect() {
        for to in Status::ALL {
            let expected = matches!(to, Status::Pending | Status::Disconnected);
            assert_eq!(allowed(Status::Failed, to), expected, "FAILED -> {to}");
        }
    }

    #[test]
    fn each_row_of_the_table_ends_where_its_move_leads() {
        for (_, by, to) in TABLE {
            assert_eq!(by.target(), *to, "{by:?}");
        }
    }

    #[test]
    fn a_move_is_found_only_from_where_the_table_has_it() {
        let reinstated = Transition::by(Status::Banned, Move::Reinstate).unwrap();
        assert_eq!(
            (reinstated.from(), reinstated.to()),
            (Status::Banned, Status::Active)
        );
        assert_eq!(
            Transition::by(Status::Banned, Move::Activate),
            Err(RefusedTransition {
                from: Status::Banned,
                to: Status::Active
            })
        );
        assert!(Transition::by(Status::Pending, Move::Reinstate).is_err());
    }

    #[test]
    fn status_parses_only_exact_upper_case_names() {
        assert_eq!("ACTIVE".parse::<Status>(), Ok(Status::Active));
        assert_eq!("active".parse::<Status>(), Err(UnknownStatus));
        assert_eq!(" ACTIVE".parse::<Status>(), Err(UnknownStatus));
        assert_eq!("".parse::<Status>(), Err(UnknownStatus));
    }
}
