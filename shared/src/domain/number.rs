use serde::{Deserialize, Serialize};

use super::ids::{AccountId, NumberId};
use super::status::Status;
use super::step::Step;
use super::time::Timestamp;

/// Meta's quality rating. Meta's `UNKNOWN`/`NA` mean "not rated yet" and map to `None`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum QualityRating {
    Green,
    Yellow,
    Red,
}

impl QualityRating {
    pub fn from_meta(value: &str) -> Option<QualityRating> {
        match value.to_ascii_uppercase().as_str() {
            "GREEN" => Some(QualityRating::Green),
            "YELLOW" => Some(QualityRating::Yellow),
            "RED" => Some(QualityRating::Red),
            _ => None,
        }
    }
}

/// How the number is onboarded. A coexistence number stays on the WhatsApp Business app: Meta
/// refuses to register it or set its PIN, so those steps are skipped, and never undone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Onboarding {
    #[default]
    CloudApi,
    Coexistence,
}

impl Onboarding {
    pub fn is_default(&self) -> bool {
        *self == Onboarding::CloudApi
    }
}

/// A limit Meta put on the number's WABA (`account_update` `ACCOUNT_RESTRICTION`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Restriction {
    /// Meta's `restriction_type`, e.g. `RESTRICTED_BIZ_INITIATED_MESSAGING`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When Meta lifts it, if it said.
    #[serde(
        default,
        with = "super::time::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires_at: Option<Timestamp>,
}

/// Why a number failed (`failureReason`) or is still waiting (`pendingReason`): our step, Meta's
/// code, and Meta's text, including the text Meta writes for the end user when it sends one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailureReason {
    pub step: String,
    pub code: String,
    pub message: String,
    /// Meta's `error_user_title`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_title: Option<String>,
    /// Meta's `error_user_msg`: what the customer can act on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_message: Option<String>,
    /// Meta's `error_data.details`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

/// A reconnect under way: a new signup of a live number (`ACTIVE` or `BANNED`) whose new code
/// is exchanged for a token that replaces the stored one, after which the WABA is subscribed
/// again and the profile refreshed. The number keeps its id and status meanwhile; the steps
/// run on the provisioning queues with this attempt's id, so a message of an older attempt is
/// recognised and dropped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reconnect {
    /// `rcn_…`, carried by every step message of this attempt.
    pub id: String,
    /// The next reconnect step to run.
    pub step: Step,
    #[serde(with = "super::time")]
    pub started_at: Timestamp,
    /// The last transient error of the current step; becomes the reconnect's failure if its
    /// retries run out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<FailureReason>,
}

/// One WhatsApp phone number of a customer account. Nothing secret is ever a field of it; what
/// clients see of it is `domain::view::NumberView`.
#[derive(Clone, Debug, PartialEq)]
pub struct Number {
    pub id: NumberId,
    pub account_id: AccountId,
    pub waba_id: String,
    pub phone_number_id: String,
    pub onboarding: Onboarding,
    pub display_number: Option<String>,
    pub display_name: Option<String>,
    pub quality_rating: Option<QualityRating>,
    pub status: Status,
    pub token_expires_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// The next step to run while `PENDING`.
    pub provisioning_step: Option<Step>,
    pub failure_reason: Option<FailureReason>,
    /// The event of the latest status change, so a redelivered message can finish publishing it.
    pub last_event_id: Option<String>,
    /// The last transient error while `PENDING`; becomes `failureReason` if retries run out.
    pub provisioning_error: Option<FailureReason>,
    /// What teardown has to undo at Meta.
    pub subscribed: bool,
    pub registered: bool,
    pub torn_down_at: Option<Timestamp>,
    /// When the token secret was scheduled for deletion (a final number's last trace).
    pub token_deleted_at: Option<Timestamp>,
    /// The UTC day (`YYYY-MM-DD`) the token's expiry was last announced, so it is once a day.
    pub token_expiry_warned_on: Option<String>,
    /// When we sent Meta a register or deregister request for this phone, within the last
    /// window of Meta's limit (`domain::lifecycle::REGISTER_WINDOW_HOURS`); each is written
    /// before the request is made.
    pub register_calls: Vec<Timestamp>,
    /// Meta's restrictions in force on the number's WABA (empty: none).
    pub restrictions: Vec<Restriction>,
    /// Meta announced that the WABA will be disabled (`SCHEDULE_FOR_DISABLE`); cleared by a
    /// ban or a reinstatement.
    pub ban_scheduled: bool,
    /// A reconnect in progress (see [`Reconnect`]).
    pub reconnect: Option<Reconnect>,
    /// When the last reconnect finished.
    pub reconnected_at: Option<Timestamp>,
    /// Why the last reconnect did not finish (cleared by the next one that does).
    pub reconnect_failure: Option<FailureReason>,
    /// Bumped by every write; each write is conditioned on the version it read.
    pub version: u64,
}

impl Number {
    /// A number just signed up: `PENDING`, provisioning about to start with the first step.
    pub fn new_pending(
        account_id: AccountId,
        waba_id: String,
        phone_number_id: String,
        at: Timestamp,
    ) -> Number {
        Number {
            id: NumberId::generate(),
            account_id,
            waba_id,
            phone_number_id,
            onboarding: Onboarding::CloudApi,
            display_number: None,
            display_name: None,
            quality_rating: None,
            status: Status::Pending,
            token_expires_at: None,
            created_at: at,
            updated_at: at,
            provisioning_step: Some(Step::FIRST),
            failure_reason: None,
            last_event_id: None,
            provisioning_error: None,
            subscribed: false,
            registered: false,
            torn_down_at: None,
            token_deleted_at: None,
            token_expiry_warned_on: None,
            register_calls: Vec::new(),
            restrictions: Vec::new(),
            ban_scheduled: false,
            reconnect: None,
            reconnected_at: None,
            reconnect_failure: None,
            version: 1,
        }
    }
}

impl Number {
    /// The same new number, onboarded another way.
    pub fn onboarded_as(mut self, onboarding: Onboarding) -> Number {
        self.onboarding = onboarding;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unrated_meta_values_become_null() {
        assert_eq!(QualityRating::from_meta("UNKNOWN"), None);
        assert_eq!(QualityRating::from_meta("NA"), None);
        assert_eq!(
            QualityRating::from_meta("GREEN"),
            Some(QualityRating::Green)
        );
    }
}
