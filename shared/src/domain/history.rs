//! A number's history (`GET /api/numbers/{id}/events`) is its outbox events: each one carries
//! what the change did to the fields customers see, so the history is read, never written again.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::event::StepRetry;
use super::number::{FailureReason, Number};
use super::time::{self, Timestamp};
use super::view::NumberView;
use super::{EventEnvelope, EventType};

/// One field of the Number object a change moved, with its value before and after (`null`
/// where it had none).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldChange {
    pub field: String,
    pub previous: Value,
    pub current: Value,
}

/// The Number object's fields that changed from `before` to `after`, by name; `updatedAt`
/// (which moves with every change) is left out.
pub fn changed_fields(before: &Number, after: &Number) -> Vec<FieldChange> {
    let as_object = |number: &Number| match serde_json::to_value(NumberView::from(number)) {
        Ok(Value::Object(fields)) => fields,
        _ => serde_json::Map::new(),
    };
    let (before, after) = (as_object(before), as_object(after));
    let names: std::collections::BTreeSet<&String> = after.keys().chain(before.keys()).collect();
    names
        .into_iter()
        .filter(|name| name.as_str() != "updatedAt")
        .filter_map(|name| {
            let previous = before.get(name).cloned().unwrap_or(Value::Null);
            let current = after.get(name).cloned().unwrap_or(Value::Null);
            (previous != current).then(|| FieldChange {
                field: name.clone(),
                previous,
                current,
            })
        })
        .collect()
}

/// Where a list of events (a number's history, an endpoint's deliveries) stands: the event's
/// time and id, the order both lists are kept in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventPosition {
    pub created_at: Timestamp,
    pub event_id: String,
}

impl EventPosition {
    pub fn of(event: &EventEnvelope) -> EventPosition {
        EventPosition {
            created_at: event.created_at,
            event_id: event.id.clone(),
        }
    }

    /// The sort key both lists use: `{createdAt}#{eventId}`.
    pub fn sort_key(&self) -> String {
        format!("{}#{}", time::format(&self.created_at), self.event_id)
    }

    pub fn from_sort_key(key: &str) -> Option<EventPosition> {
        let (at, event_id) = key.split_once('#')?;
        plausible_event_id(event_id).then_some(())?;
        Some(EventPosition {
            created_at: time::parse(at).ok()?,
            event_id: event_id.to_string(),
        })
    }

    /// `{createdAt in unix milliseconds}.{eventId}` (the document's pattern
    /// `^[0-9]{1,15}\.evt_[a-z0-9]{1,60}$`).
    pub fn cursor(&self) -> String {
        format!("{}.{}", self.created_at.timestamp_millis(), self.event_id)
    }

    pub fn parse_cursor(text: &str) -> Option<EventPosition> {
        let (millis, event_id) = text.split_once('.')?;
        EventPosition::from_parts(millis, event_id)
    }

    /// A delivery's id: `dlv_{createdAt in unix milliseconds}_{event id without evt_}`, which
    /// is where it is kept (`^dlv_[0-9]{1,15}_[a-z0-9]{1,60}$`).
    pub fn delivery_id(&self) -> String {
        let suffix = self.event_id.strip_prefix("evt_").unwrap_or(&self.event_id);
        format!("dlv_{}_{suffix}", self.created_at.timestamp_millis())
    }

    pub fn parse_delivery_id(text: &str) -> Option<EventPosition> {
        let (millis, suffix) = text.strip_prefix("dlv_")?.split_once('_')?;
        EventPosition::from_parts(millis, &format!("evt_{suffix}"))
    }

    fn from_parts(millis: &str, event_id: &str) -> Option<EventPosition> {
        let digits =
            !millis.is_empty() && millis.len() <= 15 && millis.bytes().all(|b| b.is_ascii_digit());
        if !(digits && plausible_event_id(event_id)) {
            return None;
        }
        Some(EventPosition {
            created_at: chrono::DateTime::from_timestamp_millis(millis.parse().ok()?)?,
            event_id: event_id.to_string(),
        })
    }
}

/// Event ids come from URLs: anything that could not have been generated is simply not found.
pub fn plausible_event_id(text: &str) -> bool {
    text.strip_prefix("evt_").is_some_and(|suffix| {
        !suffix.is_empty()
            && suffix.len() <= 60
            && suffix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    })
}

/// One entry of a number's history, as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: EventType,
    #[serde(with = "time")]
    pub created_at: Timestamp,
    pub changes: Vec<FieldChange>,
    /// Why: Meta's code and user-facing text where the change came from one of Meta's answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<FailureReason>,
    /// `number.step_retried`: which attempt of the step Meta failed (1 is the first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
}

impl HistoryEntry {
    pub fn of(event: &EventEnvelope) -> HistoryEntry {
        let retry: Option<StepRetry> = event
            .data
            .get("retry")
            .and_then(|value| serde_json::from_value(value.clone()).ok());
        let reason_field = match event.event_type {
            EventType::NumberFailed => Some("failureReason"),
            EventType::NumberRetried | EventType::NumberStepRetried => None,
            _ => Some("pendingReason"),
        };
        let reason = reason_field
            .and_then(|field| event.data.get(field))
            .and_then(|value| serde_json::from_value(value.clone()).ok());
        HistoryEntry {
            id: event.id.clone(),
            event_type: event.event_type,
            created_at: event.created_at,
            changes: event.changes.clone(),
            reason: retry.as_ref().map(|r| r.reason.clone()).or(reason),
            attempt: retry.map(|r| r.attempt),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AccountId, QualityRating, Status};

    fn number() -> Number {
        Number::new_pending(
            AccountId::from("acc_1".to_string()),
            "1".into(),
            "2".into(),
            time::parse("2026-01-15T10:00:00Z").unwrap(),
        )
    }

    #[test]
    fn a_change_lists_the_fields_it_moved_with_their_values_before_and_after() {
        let before = number();
        let mut after = before.clone();
        after.status = Status::Active;
        after.provisioning_step = None;
        after.quality_rating = Some(QualityRating::Green);
        after.updated_at = time::now();
        let changes = changed_fields(&before, &after);
        let fields: Vec<&str> = changes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["provisioningStep", "qualityRating", "status"]);
        assert_eq!(changes[2].previous, "PENDING");
        assert_eq!(changes[2].current, "ACTIVE");
        assert_eq!(changes[1].previous, Value::Null);
        assert_eq!(changes[0].current, Value::Null);
    }

    #[test]
    fn a_step_retried_entry_shows_the_step_meta_s_answer_and_the_attempt() {
        // Given a history-only event of a step's second attempt failing
        let reason = FailureReason {
            step: "REGISTER_NUMBER".into(),
            code: "131000".into(),
            message: "Something went wrong".into(),
            user_message: Some("Try again later".into()),
            ..FailureReason::default()
        };
        let retry = StepRetry {
            attempt: 2,
            reason: reason.clone(),
        };
        let event = EventEnvelope::step_retried(&number(), retry, time::now());
        // When it is shown in the history
        let entry = serde_json::to_value(HistoryEntry::of(&event)).unwrap();
        // Then it carries the reason (step, code, user-facing text) and the attempt
        assert_eq!(entry["type"], "number.step_retried");
        assert_eq!(entry["attempt"], 2);
        assert_eq!(entry["reason"]["step"], "REGISTER_NUMBER");
        assert_eq!(entry["reason"]["code"], "131000");
        assert_eq!(entry["reason"]["userMessage"], "Try again later");
    }

    #[test]
    fn an_unchanged_number_has_no_changes() {
        let before = number();
        let mut after = before.clone();
        after.updated_at = time::now();
        after.version += 1;
        assert!(changed_fields(&before, &after).is_empty());
    }

    #[test]
    fn cursors_and_delivery_ids_read_back_what_they_were_made_of() {
        let position = EventPosition {
            created_at: time::parse("2026-01-15T10:00:00.123Z").unwrap(),
            event_id: "evt_abc123".into(),
        };
        assert_eq!(position.cursor(), "1768471200123.evt_abc123");
        assert_eq!(
            EventPosition::parse_cursor(&position.cursor()),
            Some(position.clone())
        );
        assert_eq!(position.delivery_id(), "dlv_1768471200123_abc123");
        assert_eq!(
            EventPosition::parse_delivery_id(&position.delivery_id()),
            Some(position.clone())
        );
        assert_eq!(
            EventPosition::from_sort_key(&position.sort_key()),
            Some(position)
        );
    }

    #[test]
    fn malformed_cursors_and_ids_are_not_read() {
        for bad in [
            "",
            ".",
            "1.",
            "x.evt_a",
            "1.lnk_a",
            "1.evt_",
            "1.evt_A",
            "1234567890123456.evt_a",
            "1.evt_a/../b",
        ] {
            assert_eq!(EventPosition::parse_cursor(bad), None, "{bad}");
        }
        for bad in ["dlv_", "dlv_1", "dlv_x_a", "evt_1_a", "dlv_1_", "dlv_1_A"] {
            assert_eq!(EventPosition::parse_delivery_id(bad), None, "{bad}");
        }
    }
}
