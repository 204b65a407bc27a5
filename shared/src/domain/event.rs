//! Events customers receive (CONTRACT §2). One is written with every status change, in the same
//! DynamoDB transaction, then published to the events queue: an outbox, so a crash between the
//! two cannot lose it.

use serde::{Deserialize, Serialize};

use super::history::FieldChange;
use super::ids::AccountId;
use super::number::{FailureReason, NameDecision, Number, QualityRating};
use super::status::{Move, Transition};
use super::time::{self, Timestamp};
use super::view::NumberView;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, strum::VariantArray)]
pub enum EventType {
    #[serde(rename = "number.activated")]
    NumberActivated,
    #[serde(rename = "number.failed")]
    NumberFailed,
    #[serde(rename = "number.disconnected")]
    NumberDisconnected,
    #[serde(rename = "number.banned")]
    NumberBanned,
    #[serde(rename = "number.reinstated")]
    NumberReinstated,
    #[serde(rename = "number.retried")]
    NumberRetried,
    #[serde(rename = "number.quality_updated")]
    NumberQualityUpdated,
    #[serde(rename = "number.token_expiring")]
    NumberTokenExpiring,
    #[serde(rename = "number.restricted")]
    NumberRestricted,
    #[serde(rename = "number.restriction_lifted")]
    NumberRestrictionLifted,
    #[serde(rename = "number.ban_scheduled")]
    NumberBanScheduled,
    #[serde(rename = "number.reconnected")]
    NumberReconnected,
    #[serde(rename = "number.reconnect_failed")]
    NumberReconnectFailed,
    #[serde(rename = "number.health_changed")]
    NumberHealthChanged,
    #[serde(rename = "number.display_name_updated")]
    NumberDisplayNameUpdated,
    #[serde(rename = "number.token_invalid")]
    NumberTokenInvalid,
    /// Sent only on request (`POST /api/webhooks/{id}/test`), never subscribed to.
    #[serde(rename = "webhook.test")]
    WebhookTest,
    /// An endpoint failing every delivery for days was disabled; sent to the others.
    #[serde(rename = "webhook.disabled")]
    WebhookDisabled,
    /// A provisioning or reconnect step failed transiently and will be tried again: the
    /// number's history only, never published (see [`EventType::is_published`]).
    #[serde(rename = "number.step_retried")]
    NumberStepRetried,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::NumberActivated => "number.activated",
            EventType::NumberFailed => "number.failed",
            EventType::NumberDisconnected => "number.disconnected",
            EventType::NumberBanned => "number.banned",
            EventType::NumberReinstated => "number.reinstated",
            EventType::NumberRetried => "number.retried",
            EventType::NumberQualityUpdated => "number.quality_updated",
            EventType::NumberTokenExpiring => "number.token_expiring",
            EventType::NumberRestricted => "number.restricted",
            EventType::NumberRestrictionLifted => "number.restriction_lifted",
            EventType::NumberBanScheduled => "number.ban_scheduled",
            EventType::NumberReconnected => "number.reconnected",
            EventType::NumberReconnectFailed => "number.reconnect_failed",
            EventType::NumberHealthChanged => "number.health_changed",
            EventType::NumberDisplayNameUpdated => "number.display_name_updated",
            EventType::NumberTokenInvalid => "number.token_invalid",
            EventType::WebhookTest => "webhook.test",
            EventType::WebhookDisabled => "webhook.disabled",
            EventType::NumberStepRetried => "number.step_retried",
        }
    }

    /// Where it goes (exhaustive: a new type must be decided here).
    pub const fn reach(self) -> Reach {
        match self {
            EventType::WebhookTest => Reach::OnRequest,
            // A transient step failure is what a support team looks for afterwards, not
            // something a customer's system acts on, and one number's retries would otherwise
            // fan out to every endpoint.
            EventType::NumberStepRetried => Reach::HistoryOnly,
            EventType::NumberActivated
            | EventType::NumberFailed
            | EventType::NumberDisconnected
            | EventType::NumberBanned
            | EventType::NumberReinstated
            | EventType::NumberRetried
            | EventType::NumberQualityUpdated
            | EventType::NumberTokenExpiring
            | EventType::NumberRestricted
            | EventType::NumberRestrictionLifted
            | EventType::NumberBanScheduled
            | EventType::NumberReconnected
            | EventType::NumberReconnectFailed
            | EventType::NumberHealthChanged
            | EventType::NumberDisplayNameUpdated
            | EventType::NumberTokenInvalid
            | EventType::WebhookDisabled => Reach::Subscribed,
        }
    }

    /// Whether an endpoint can subscribe to it.
    pub const fn is_subscribable(self) -> bool {
        matches!(self.reach(), Reach::Subscribed)
    }

    /// Whether it goes to the events queue (and from there to webhooks); a history-only event
    /// stays in the outbox as an entry of the number's history.
    pub const fn is_published(self) -> bool {
        !matches!(self.reach(), Reach::HistoryOnly)
    }

    /// The event each allowed status change emits.
    pub fn for_transition(transition: Transition) -> EventType {
        match transition.by_move() {
            Move::Activate => EventType::NumberActivated,
            Move::Reinstate => EventType::NumberReinstated,
            Move::Fail => EventType::NumberFailed,
            Move::Ban => EventType::NumberBanned,
            Move::Disconnect => EventType::NumberDisconnected,
            Move::Retry => EventType::NumberRetried,
        }
    }
}

/// Who receives an event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Every endpoint subscribed to it (all types, unless the endpoint lists some).
    Subscribed,
    /// Only the endpoint it is sent to on request (`webhook.test`).
    OnRequest,
    /// No endpoint: an entry of the number's history, never published.
    HistoryOnly,
}

pub fn new_event_id() -> String {
    format!("evt_{}", crate::domain::ids::random_id())
}

/// `data` of an event: the Number object, plus what the event is about where it applies
/// (`previousQualityRating` and `previousMessagingLimit` for `number.quality_updated`,
/// `nameDecision` for `number.display_name_updated`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventData {
    #[serde(flatten)]
    pub number: Option<NumberView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_quality_rating: Option<Option<QualityRating>>,
    /// What the customer can do about it (`number.token_expiring`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remedy: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_messaging_limit: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name_decision: Option<NameDecision>,
    /// `number.step_retried`: which attempt of the step Meta failed, and how.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<StepRetry>,
}

/// A step's attempt that Meta failed transiently (its delivery's receive count: 1 is the first).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepRetry {
    pub attempt: u32,
    pub reason: FailureReason,
}

/// `number.token_expiring`'s remedy: a signup of the same phone in the same account reconnects
/// the number with a new token.
pub const TOKEN_EXPIRING_REMEDY: &str = "Send the customer a signup link (POST /api/signup-links) for this phone: completing it reconnects this number with a new token, keeping its id.";

/// What travels on the events queue: the customer-facing body plus the account to deliver to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventEnvelope {
    pub v: u32,
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub account_id: AccountId,
    pub number_id: String,
    #[serde(with = "time")]
    pub created_at: Timestamp,
    pub data: serde_json::Value,
    /// What the change did to the number (its history); not part of what customers receive.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<FieldChange>,
}

impl EventEnvelope {
    pub fn new(event_type: EventType, number: &Number, at: Timestamp) -> EventEnvelope {
        EventEnvelope::with_data(
            event_type,
            number,
            at,
            EventData {
                remedy: (event_type == EventType::NumberTokenExpiring)
                    .then_some(TOKEN_EXPIRING_REMEDY),
                ..EventData::default()
            },
        )
    }

    /// `number.quality_updated`: the rating, or the messaging limit, or both, changed.
    pub fn quality_updated(
        number: &Number,
        previous_rating: Option<QualityRating>,
        previous_limit: Option<String>,
        at: Timestamp,
    ) -> EventEnvelope {
        EventEnvelope::with_data(
            EventType::NumberQualityUpdated,
            number,
            at,
            EventData {
                previous_quality_rating: Some(previous_rating),
                previous_messaging_limit: Some(previous_limit),
                ..EventData::default()
            },
        )
    }

    /// `number.display_name_updated`, with Meta's decision when one caused it.
    pub fn display_name_updated(
        number: &Number,
        decision: Option<NameDecision>,
        at: Timestamp,
    ) -> EventEnvelope {
        EventEnvelope::with_data(
            EventType::NumberDisplayNameUpdated,
            number,
            at,
            EventData {
                name_decision: decision,
                ..EventData::default()
            },
        )
    }

    /// `number.step_retried` (history only): the attempt and Meta's answer to it.
    pub fn step_retried(number: &Number, retry: StepRetry, at: Timestamp) -> EventEnvelope {
        EventEnvelope::with_data(
            EventType::NumberStepRetried,
            number,
            at,
            EventData {
                retry: Some(retry),
                ..EventData::default()
            },
        )
    }

    /// `data.number` is filled in here from `number`.
    pub fn with_data(
        event_type: EventType,
        number: &Number,
        at: Timestamp,
        data: EventData,
    ) -> EventEnvelope {
        EventEnvelope {
            v: 1,
            id: new_event_id(),
            event_type,
            account_id: number.account_id.clone(),
            number_id: number.id.to_string(),
            created_at: at,
            data: serde_json::to_value(EventData {
                number: Some(NumberView::from(number)),
                ..data
            })
            .unwrap_or(serde_json::Value::Null),
            changes: Vec::new(),
        }
    }

    /// An event about the account's webhooks rather than a number (`number_id` empty).
    pub fn about_webhooks(
        event_type: EventType,
        account_id: AccountId,
        data: serde_json::Value,
        at: Timestamp,
    ) -> EventEnvelope {
        EventEnvelope {
            v: 1,
            id: new_event_id(),
            event_type,
            account_id,
            number_id: String::new(),
            created_at: at,
            data,
            changes: Vec::new(),
        }
    }

    /// The body customers receive, exactly as CONTRACT §2 writes it.
    pub fn customer_body(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "type": self.event_type,
            "createdAt": time::format(&self.created_at),
            "data": self.data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::domain::Status;

    fn event_for(from: Status, to: Status) -> EventType {
        let by = [
            Move::Activate,
            Move::Reinstate,
            Move::Fail,
            Move::Ban,
            Move::Disconnect,
            Move::Retry,
        ]
        .into_iter()
        .find(|by| by.target() == to && Transition::by(from, *by).is_ok())
        .unwrap();
        EventType::for_transition(Transition::by(from, by).unwrap())
    }

    #[test]
    fn each_status_change_emits_its_event() {
        assert_eq!(
            event_for(Status::Pending, Status::Active),
            EventType::NumberActivated
        );
        assert_eq!(
            event_for(Status::Banned, Status::Active),
            EventType::NumberReinstated
        );
        assert_eq!(
            event_for(Status::Pending, Status::Failed),
            EventType::NumberFailed
        );
        assert_eq!(
            event_for(Status::Active, Status::Banned),
            EventType::NumberBanned
        );
        for from in [Status::Pending, Status::Active, Status::Banned] {
            assert_eq!(
                event_for(from, Status::Disconnected),
                EventType::NumberDisconnected
            );
        }
    }

    #[test]
    fn the_customer_body_has_id_type_created_at_and_data() {
        let number = Number::new_pending(
            AccountId::from("acc".to_string()),
            "1".into(),
            "2".into(),
            time::now(),
        );
        let event = EventEnvelope::new(EventType::NumberActivated, &number, time::now());
        let body = event.customer_body();
        assert_eq!(body["type"], "number.activated");
        assert!(body["id"].as_str().unwrap().starts_with("evt_"));
        assert_eq!(body["data"]["id"], number.id.as_str());
        assert!(body["data"].get("accountId").is_none());
    }
}
