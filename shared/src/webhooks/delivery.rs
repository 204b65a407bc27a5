//! Getting events to customers. The events queue is fanned out into one message per
//! (event, endpoint) on the deliveries queue, so each endpoint is retried on its own schedule
//! and a slow or dead endpoint never holds up another's deliveries. Each delivery is signed per
//! Standard Webhooks with the event id as `webhook-id`, the same on every retry.

use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use serde::{Deserialize, Serialize};

use super::log::{Attempt, DeliveryKey, DeliveryStatus};
use super::sender::Sender;
use super::url_policy::UrlPolicy;
use super::{EndpointView, WebhookEndpoint};
use crate::domain::history::EventPosition;
use crate::domain::messages::{self, MESSAGE_VERSION};
use crate::domain::{AccountId, EventEnvelope, EventType, Timestamp};
use crate::ports::{
    DeliveryLog, EventLog, Message, MessageQueue, Queue, Redelivery, WebhookEndpoints,
};
use crate::sqs_batch::{Delivery, Outcome, process_batch};

/// CONTRACT §2: about 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, then the dead-letter queue
/// (the deliveries queue's `maxReceiveCount` is 8: the first try and these seven).
pub const RETRY_SCHEDULE_SECONDS: [u32; 7] = [5, 300, 1_800, 7_200, 18_000, 36_000, 36_000];
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// An event that cannot be fanned out now (the table or queue unreachable) comes back soon.
const DISPATCH_RETRY_SECONDS: u32 = 5;

/// One event for one endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeliveryMessage {
    pub v: u32,
    pub event_id: String,
    pub event_type: EventType,
    pub account_id: AccountId,
    pub endpoint_id: String,
    /// The body exactly as signed and sent, serialised once so every retry sends the same bytes.
    pub body: String,
}

impl DeliveryMessage {
    /// Where the delivery is kept: the event's time (read from the body, so messages queued
    /// before the log existed have one too) and id.
    pub fn position(&self) -> Option<EventPosition> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Body {
            #[serde(with = "crate::domain::time")]
            created_at: Timestamp,
        }
        let body: Body = serde_json::from_str(&self.body).ok()?;
        Some(EventPosition {
            created_at: body.created_at,
            event_id: self.event_id.clone(),
        })
    }
}

impl Message for DeliveryMessage {
    fn queue(&self) -> Queue {
        Queue::WebhookDeliveries
    }
}

/// Fans events out to the account's endpoints that want them.
pub struct Dispatcher<S, Q> {
    pub store: S,
    pub queue: Q,
}

impl<S, Q> Dispatcher<S, Q>
where
    S: WebhookEndpoints,
    Q: MessageQueue + Redelivery,
{
    pub async fn handle_events(&self, event: SqsEvent) -> SqsBatchResponse {
        process_batch(event, Some(Queue::Events), &self.queue, |d| {
            self.dispatch(d)
        })
        .await
    }

    async fn dispatch(&self, delivery: Delivery) -> Outcome {
        let event: EventEnvelope = match messages::parse(&delivery.body) {
            Ok(event) => event,
            Err(err) => {
                tracing::error!(message_id = %delivery.message_id, error = %crate::telemetry::ErrorChain(&err), "unreadable event");
                return Outcome::Unreadable;
            }
        };
        let endpoints = match self.store.endpoints(&event.account_id).await {
            Ok(endpoints) => endpoints,
            Err(err) => {
                tracing::warn!(event_id = %event.id, error = %crate::telemetry::ErrorChain(&err), "endpoints unreadable; retrying");
                return Outcome::RetryAfter(DISPATCH_RETRY_SECONDS);
            }
        };
        let body = event.customer_body().to_string();
        for endpoint in endpoints.iter().filter(|e| e.wants(event.event_type)) {
            let message = DeliveryMessage {
                v: MESSAGE_VERSION,
                event_id: event.id.clone(),
                event_type: event.event_type,
                account_id: event.account_id.clone(),
                endpoint_id: endpoint.id.clone(),
                body: body.clone(),
            };
            // A retry after a partial fan-out sends some again; the delivery log drops those.
            if let Err(err) = self.queue.send(&message).await {
                tracing::warn!(event_id = %event.id, error = %crate::telemetry::ErrorChain(&err), "fan-out failed; retrying");
                return Outcome::RetryAfter(DISPATCH_RETRY_SECONDS);
            }
        }
        tracing::info!(event_id = %event.id, event_type = event.event_type.as_str(), endpoints = endpoints.len(), "event dispatched");
        Outcome::Done
    }
}

/// Posts one delivery per message.
pub struct Deliverer<S, Q> {
    pub store: S,
    pub queue: Q,
    pub http: reqwest::Client,
    pub policy: UrlPolicy,
    pub retry_schedule: Vec<u32>,
}

pub use super::sender::http_client;

impl<S, Q> Deliverer<S, Q>
where
    S: WebhookEndpoints + DeliveryLog + EventLog,
    Q: MessageQueue + Redelivery,
{
    pub async fn handle_deliveries(&self, event: SqsEvent) -> SqsBatchResponse {
        process_batch(event, Some(Queue::WebhookDeliveries), &self.queue, |d| {
            self.deliver(d)
        })
        .await
    }

    fn sender(&self) -> Sender {
        Sender {
            http: self.http.clone(),
            policy: self.policy,
        }
    }

    fn retry_delay(&self, receive_count: u32) -> u32 {
        let index = (receive_count.max(1) - 1) as usize;
        self.retry_schedule
            .get(index)
            .or(self.retry_schedule.last())
            .copied()
            .unwrap_or(RETRY_SCHEDULE_SECONDS[0])
    }

    fn retry_after(&self, receive_count: u32) -> Outcome {
        Outcome::RetryAfter(self.retry_delay(receive_count))
    }

    async fn deliver(&self, delivery: Delivery) -> Outcome {
        let message: DeliveryMessage = match messages::parse(&delivery.body) {
            Ok(message) => message,
            Err(err) => {
                tracing::error!(message_id = %delivery.message_id, error = %crate::telemetry::ErrorChain(&err), "unreadable delivery");
                return Outcome::Unreadable;
            }
        };
        let Some(position) = message.position() else {
            tracing::error!(message_id = %delivery.message_id, "delivery body without createdAt");
            return Outcome::Unreadable;
        };
        let span = tracing::info_span!("delivery", event_id = %message.event_id, endpoint_id = %message.endpoint_id, attempt = delivery.receive_count);
        let _guard = span.enter();
        let current = match self.store.delivery(&message.endpoint_id, &position).await {
            Ok(Some(record)) if record.status == DeliveryStatus::Succeeded => {
                return Outcome::Done;
            }
            Ok(record) => record.map(|r| r.status),
            Err(err) => {
                tracing::warn!(error = %crate::telemetry::ErrorChain(&err), "delivery log unreadable; retrying");
                return self.retry_after(delivery.receive_count);
            }
        };
        let endpoint = match self
            .store
            .endpoint(&message.account_id, &message.endpoint_id)
            .await
        {
            Ok(Some(endpoint)) => endpoint,
            Ok(None) => {
                tracing::info!("endpoint deleted; delivery dropped");
                return Outcome::Done;
            }
            Err(err) => {
                tracing::warn!(error = %crate::telemetry::ErrorChain(&err), "endpoint unreadable; retrying");
                return self.retry_after(delivery.receive_count);
            }
        };
        if !endpoint.enabled {
            tracing::info!("endpoint disabled; delivery dropped");
            return match self.publish_disabled_event(&endpoint).await {
                Ok(()) => Outcome::Done,
                Err(()) => self.retry_after(delivery.receive_count),
            };
        }
        let attempt = self
            .sender()
            .send(&endpoint, &message.event_id, &message.body)
            .await;
        crate::metrics::webhook_delivery(
            if attempt.succeeded() {
                "delivered"
            } else {
                "failed"
            },
            attempt.duration_ms as f64,
        );
        let retry_left = delivery.receive_count as usize <= self.retry_schedule.len();
        let delay = self.retry_delay(delivery.receive_count);
        let next_retry_at = (retry_left && !attempt.succeeded())
            .then(|| attempt.at + chrono::Duration::seconds(i64::from(delay)));
        let status = DeliveryStatus::after(current, &attempt, retry_left);
        let key = DeliveryKey {
            account_id: message.account_id.clone(),
            endpoint_id: message.endpoint_id.clone(),
            position,
            event_type: message.event_type,
        };
        if let Err(err) = self
            .store
            .record_attempt(&key, &message.body, &attempt, status, next_retry_at)
            .await
        {
            // Sent all the same; a redelivery may repeat it, with the same id.
            tracing::warn!(error = %crate::telemetry::ErrorChain(&err), "attempt not recorded");
        }
        self.track_health(&endpoint, &attempt).await;
        if attempt.succeeded() {
            tracing::info!(
                status = attempt.status,
                duration_ms = attempt.duration_ms,
                "delivered"
            );
            Outcome::Done
        } else {
            tracing::warn!(
                status = attempt.status,
                error = attempt.error.as_deref().unwrap_or(""),
                "delivery failed; retrying"
            );
            Outcome::RetryAfter(delay)
        }
    }

    /// Remembers when an endpoint started failing (one write when it starts, one when it
    /// recovers) and disables it once it has failed every delivery for long enough.
    async fn track_health(&self, endpoint: &WebhookEndpoint, attempt: &Attempt) {
        let (account, id) = (&endpoint.account_id, endpoint.id.as_str());
        let result = match (attempt.succeeded(), endpoint.failing_since) {
            (true, Some(_)) => self.store.note_recovered(account, id).await,
            (true, None) => Ok(()),
            (false, None) => self.store.note_failing(account, id, attempt.at).await,
            (false, Some(since)) if endpoint.failing_too_long(attempt.at) => {
                self.disable(endpoint, since, attempt.at).await;
                Ok(())
            }
            (false, Some(_)) => Ok(()),
        };
        if let Err(err) = result {
            tracing::warn!(error = %crate::telemetry::ErrorChain(&err), "endpoint health not recorded");
        }
    }

    async fn disable(&self, endpoint: &WebhookEndpoint, since: Timestamp, now: Timestamp) {
        let mut disabled = endpoint.clone();
        disabled.enabled = false;
        let event = EventEnvelope::about_webhooks(
            EventType::WebhookDisabled,
            endpoint.account_id.clone(),
            serde_json::json!({
                "endpoint": EndpointView::of(&disabled, false),
                "reason": format!(
                    "every delivery failed since {}",
                    crate::domain::time::format(&since)
                ),
            }),
            now,
        );
        match self
            .store
            .disable_failing(&endpoint.account_id, &endpoint.id, since, &event)
            .await
        {
            Ok(true) => {
                tracing::warn!(failing_since = %crate::domain::time::format(&since), "endpoint disabled after failing every delivery");
                disabled.disabled_event_id = Some(event.id.clone());
                // Published now; a failure here is retried by the next delivery to it.
                let _ = self.publish_disabled_event(&disabled).await;
            }
            Ok(false) => {}
            Err(err) => {
                tracing::warn!(error = %crate::telemetry::ErrorChain(&err), "endpoint not disabled");
            }
        }
    }

    /// Sends the endpoint's `webhook.disabled` event if it is still unpublished (the outbox).
    async fn publish_disabled_event(&self, endpoint: &WebhookEndpoint) -> Result<(), ()> {
        let Some(event_id) = &endpoint.disabled_event_id else {
            return Ok(());
        };
        let event = match self.store.unpublished_event(event_id).await {
            Ok(Some(event)) => event,
            Ok(None) => return Ok(()),
            Err(err) => {
                tracing::warn!(error = %crate::telemetry::ErrorChain(&err), "disabled event unreadable");
                return Err(());
            }
        };
        if let Err(err) = self.queue.send(&event).await {
            tracing::warn!(error = %crate::telemetry::ErrorChain(&err), "disabled event not published");
            return Err(());
        }
        if let Err(err) = self.store.mark_published(&event.id).await {
            // Published; a redelivery may publish it again, with the same id.
            tracing::warn!(error = %crate::telemetry::ErrorChain(&err), "disabled event not marked published");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_the_contracts_seven_retries() {
        assert_eq!(RETRY_SCHEDULE_SECONDS.len(), 7);
        assert_eq!(RETRY_SCHEDULE_SECONDS[0], 5);
        assert_eq!(RETRY_SCHEDULE_SECONDS[6], 36_000);
        assert!(
            RETRY_SCHEDULE_SECONDS.iter().all(|s| *s <= 43_200),
            "SQS caps visibility at 12 h"
        );
    }

    #[test]
    fn every_retry_of_the_schedule_waits_in_full_within_sqs_s_limit() {
        // A delivery never re-checks its time: a cut delay would post again early. Asked as late
        // as the delivery function's 30 s timeout, each is still within 12 h of the receive.
        let latest_ask = Duration::from_secs(30);

        for seconds in RETRY_SCHEDULE_SECONDS {
            assert_eq!(crate::ports::redelivery_delay(seconds, latest_ask), seconds);
        }
    }
}
