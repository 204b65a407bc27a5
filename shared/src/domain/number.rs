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

/// Whether Meta lets the number send (`health_status.can_send_message`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CanSendMessage {
    Available,
    Limited,
    Blocked,
}

impl CanSendMessage {
    pub fn from_meta(value: &str) -> Option<CanSendMessage> {
        match value {
            "AVAILABLE" => Some(CanSendMessage::Available),
            "LIMITED" => Some(CanSendMessage::Limited),
            "BLOCKED" => Some(CanSendMessage::Blocked),
            _ => None,
        }
    }
}

/// One reason Meta gives in `health_status` why an entity (the phone number, its WABA, the
/// business, the app) cannot send freely.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthIssue {
    pub error_code: i64,
    pub error_description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub possible_solution: Option<String>,
    /// Meta's `entity_type`: `PHONE_NUMBER`, `WABA`, `BUSINESS` or `APP`.
    pub entity: String,
}

/// Meta's `health_status` of the number, as last read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    pub can_send_message: CanSendMessage,
    #[serde(default)]
    pub errors: Vec<HealthIssue>,
}

/// Whether the number's stored token still works at Meta (Graph `debug_token`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TokenStatus {
    Valid,
    /// Revoked, expired or otherwise refused by Meta: the customer must sign up again.
    Invalid,
}

/// A restriction that does not come from Meta's `restriction_info` list but from another
/// signal; it is kept when an `ACCOUNT_RESTRICTION` replaces the list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestrictionMarker {
    /// `account_update` `ACCOUNT_OFFBOARDED` (a coexistence number's Cloud API companion was
    /// offboarded); lifted by `ACCOUNT_RECONNECTED`.
    AccountOffboarded,
    /// The health sync found the phone's `status` `RESTRICTED`; lifted when it no longer is.
    PhoneNumberRestricted,
}

impl RestrictionMarker {
    pub const ALL: [RestrictionMarker; 2] = [
        RestrictionMarker::AccountOffboarded,
        RestrictionMarker::PhoneNumberRestricted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RestrictionMarker::AccountOffboarded => "ACCOUNT_OFFBOARDED",
            RestrictionMarker::PhoneNumberRestricted => "PHONE_NUMBER_RESTRICTED",
        }
    }

    pub fn is_marker(kind: &str) -> bool {
        RestrictionMarker::ALL.iter().any(|m| m.as_str() == kind)
    }
}

/// Meta's decision on a requested display name (`phone_number_name_update`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NameDecision {
    /// `APPROVED`, `DEFERRED` or `REJECTED`.
    pub decision: String,
    pub requested_verified_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejection_reason: Option<String>,
}

/// A Meta enumeration value as we keep it (`TIER_1K`, `STANDARD`, `PENDING_REVIEW`...): upper
/// case letters, digits and `_`, at most 64 of them; anything else Meta might send is dropped.
pub fn meta_label(value: &str) -> Option<String> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    ok.then(|| value.to_string())
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
    /// Meta's `health_status` as last read (`None`: not read yet).
    pub health: Option<Health>,
    /// Meta's messaging limit tier (`TIER_250`, `TIER_1K`, ... `TIER_UNLIMITED`).
    pub messaging_limit: Option<String>,
    /// Meta's `throughput.level` (`STANDARD`, `HIGH`, `NOT_APPLICABLE`).
    pub throughput: Option<String>,
    /// Meta's `name_status` of the display name (`APPROVED`, `PENDING_REVIEW`, `DECLINED`...).
    pub name_status: Option<String>,
    /// Meta's last decision on a requested display name, so a redelivery announces it once.
    pub name_decision: Option<NameDecision>,
    /// What `debug_token` said of the stored token at the last health sync.
    pub token_status: Option<TokenStatus>,
    /// Who disconnected the number, once `DISCONNECTED`.
    pub disconnected_by: Option<super::lifecycle::DisconnectedBy>,
    /// While register waits on Meta's `2388001`: the phone's fields as read then, so the next
    /// attempt registers again only when something changed (or the budget has room to spare).
    pub register_waiting_on: Option<String>,
    /// Signed up while its phone was live in another account: it holds no phone guard, and
    /// fails at the code exchange. Said to the caller only once the signup's token reads the
    /// phone (control at Meta); until then it answers as any new number (ids not confirmed).
    pub phone_elsewhere: bool,
    /// Bumped by every write; each write is conditioned on the version it read.
    pub version: u64,
}

impl Number {
    /// The version a number has as its signup wrote it, before any change.
    pub const CREATED_VERSION: u64 = 1;

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
            health: None,
            messaging_limit: None,
            throughput: None,
            name_status: None,
            name_decision: None,
            token_status: None,
            disconnected_by: None,
            register_waiting_on: None,
            phone_elsewhere: false,
            version: Number::CREATED_VERSION,
        }
    }
}

impl Number {
    /// Still as its signup wrote it: at the exchange, nothing recorded since (no error, no
    /// reconnect, no write). Its first message may never have gone out (see `api::signup`).
    pub fn is_unstarted(&self) -> bool {
        self.status == Status::Pending
            && self.provisioning_step == Some(Step::FIRST)
            && self.provisioning_error.is_none()
            && self.reconnect.is_none()
            && self.version == Number::CREATED_VERSION
    }

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
