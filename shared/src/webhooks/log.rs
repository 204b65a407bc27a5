//! The delivery log: for each (endpoint, event), every attempt to send it and where it stands.
//! Each attempt is one write (the record created by the first), so the log costs no more than
//! the single "delivered" mark it replaces.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::domain::history::EventPosition;
use crate::domain::time::{self, Timestamp};
use crate::domain::{AccountId, EventType};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Not delivered yet; retried at `nextRetryAt`.
    Pending,
    Succeeded,
    /// Every retry failed: the delivery is in the dead-letter queue (a resend still works).
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
        }
    }

    /// After an attempt: a success is final; a failure leaves a delivery that had succeeded
    /// (a resend) as it was, and is `Failed` once no retry is left.
    pub fn after(current: Option<DeliveryStatus>, attempt: &Attempt, retry_left: bool) -> Self {
        match (current, attempt.succeeded()) {
            (_, true) => DeliveryStatus::Succeeded,
            (Some(DeliveryStatus::Succeeded), false) => DeliveryStatus::Succeeded,
            (_, false) if retry_left => DeliveryStatus::Pending,
            (_, false) => DeliveryStatus::Failed,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("status must be pending, succeeded or failed")]
pub struct UnknownDeliveryStatus;

impl FromStr for DeliveryStatus {
    type Err = UnknownDeliveryStatus;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "pending" => Ok(DeliveryStatus::Pending),
            "succeeded" => Ok(DeliveryStatus::Succeeded),
            "failed" => Ok(DeliveryStatus::Failed),
            _ => Err(UnknownDeliveryStatus),
        }
    }
}

/// One try: the endpoint's HTTP status, or why there was none (the network, the URL policy).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    #[serde(with = "time")]
    pub at: Timestamp,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: u64,
}

impl Attempt {
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// What every attempt of one delivery shares.
#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryKey {
    pub account_id: AccountId,
    pub endpoint_id: String,
    pub position: EventPosition,
    pub event_type: EventType,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryRecord {
    pub key: DeliveryKey,
    pub status: DeliveryStatus,
    /// Oldest first.
    pub attempts: Vec<Attempt>,
    pub next_retry_at: Option<Timestamp>,
    /// The body as signed and sent, byte for byte (a resend sends it again).
    pub body: String,
}

/// A page of an endpoint's deliveries, newest event first.
#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryPage {
    pub deliveries: Vec<DeliveryRecord>,
    pub next: Option<EventPosition>,
}

/// The delivery as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryView {
    pub id: String,
    pub event_id: String,
    pub event_type: EventType,
    #[serde(with = "time")]
    pub event_created_at: Timestamp,
    pub status: DeliveryStatus,
    pub attempts: Vec<Attempt>,
    #[serde(with = "time::option")]
    pub next_retry_at: Option<Timestamp>,
}

impl DeliveryView {
    pub fn of(record: &DeliveryRecord) -> DeliveryView {
        DeliveryView {
            id: record.key.position.delivery_id(),
            event_id: record.key.position.event_id.clone(),
            event_type: record.key.event_type,
            event_created_at: record.key.position.created_at,
            status: record.status,
            attempts: record.attempts.clone(),
            next_retry_at: record
                .next_retry_at
                .filter(|_| record.status == DeliveryStatus::Pending),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(status: Option<u16>) -> Attempt {
        Attempt {
            at: time::now(),
            status,
            error: status.is_none().then(|| "connection refused".to_string()),
            duration_ms: 3,
        }
    }

    #[test]
    fn a_2xx_attempt_succeeds_the_delivery_whatever_it_was() {
        for current in [
            None,
            Some(DeliveryStatus::Pending),
            Some(DeliveryStatus::Failed),
        ] {
            assert_eq!(
                DeliveryStatus::after(current, &attempt(Some(204)), false),
                DeliveryStatus::Succeeded
            );
        }
    }

    #[test]
    fn a_failed_attempt_is_pending_while_retries_are_left_then_failed() {
        assert_eq!(
            DeliveryStatus::after(None, &attempt(Some(500)), true),
            DeliveryStatus::Pending
        );
        assert_eq!(
            DeliveryStatus::after(Some(DeliveryStatus::Pending), &attempt(None), false),
            DeliveryStatus::Failed
        );
    }

    #[test]
    fn a_failed_resend_of_a_delivered_event_leaves_it_delivered() {
        assert_eq!(
            DeliveryStatus::after(Some(DeliveryStatus::Succeeded), &attempt(Some(500)), false),
            DeliveryStatus::Succeeded
        );
    }

    #[test]
    fn delivery_statuses_read_back() {
        for status in [
            DeliveryStatus::Pending,
            DeliveryStatus::Succeeded,
            DeliveryStatus::Failed,
        ] {
            assert_eq!(status.as_str().parse::<DeliveryStatus>().unwrap(), status);
        }
        assert!("done".parse::<DeliveryStatus>().is_err());
    }
}
