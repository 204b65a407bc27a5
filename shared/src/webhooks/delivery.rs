//! Getting events to customers. The events queue is fanned out into one message per
//! (event, endpoint) on the deliveries queue, so each endpoint is retried on its own schedule
//! and a slow or dead endpoint never holds up another's deliveries. Each delivery is signed per
//! Standard Webhooks with the event id as `webhook-id`, the same on every retry.

use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use serde::{Deserialize, Serialize};

use super::resolver::{GuardedResolver, find_resolve_error};
use super::url_policy::UrlPolicy;
use crate::domain::messages::{self, MESSAGE_VERSION};
use crate::domain::{AccountId, EventEnvelope, EventType};
use crate::ports::{DeliveryLog, Message, MessageQueue, Queue, Redelivery, WebhookEndpoints};
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

/// The HTTP client deliveries use: the contract's 10 s; no redirects (a redirect could lead
/// anywhere, past the URL policy); no proxy (a proxy would resolve the name itself); and names
/// resolved only by `resolver`, which never hands it an internal address (use
/// [`UrlPolicy::resolver`]).
pub fn http_client(
    timeout: Duration,
    resolver: GuardedResolver,
) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(std::sync::Arc::new(resolver))
        .user_agent("Muchaw-Webhooks/1")
        .build()
}

#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("endpoint answered HTTP {0}")]
    Status(u16),
    #[error("endpoint refused: {0}")]
    Refused(String),
    #[error("endpoint unreachable: {0}")]
    Transport(String),
}

impl Failure {
    fn of(err: reqwest::Error) -> Failure {
        match find_resolve_error(&err) {
            Some(refused) => Failure::Refused(refused.to_string()),
            // Without the URL: it can carry a customer's token in its query.
            None => Failure::Transport(err.without_url().to_string()),
        }
    }
}

impl<S, Q> Deliverer<S, Q>
where
    S: WebhookEndpoints + DeliveryLog,
    Q: Redelivery,
{
    pub async fn handle_deliveries(&self, event: SqsEvent) -> SqsBatchResponse {
        process_batch(event, Some(Queue::WebhookDeliveries), &self.queue, |d| {
            self.deliver(d)
        })
        .await
    }

    fn retry_after(&self, receive_count: u32) -> Outcome {
        let index = (receive_count.max(1) - 1) as usize;
        let seconds = self
            .retry_schedule
            .get(index)
            .or(self.retry_schedule.last())
            .copied()
            .unwrap_or(RETRY_SCHEDULE_SECONDS[0]);
        Outcome::RetryAfter(seconds)
    }

    async fn deliver(&self, delivery: Delivery) -> Outcome {
        let message: DeliveryMessage = match messages::parse(&delivery.body) {
            Ok(message) => message,
            Err(err) => {
                tracing::error!(message_id = %delivery.message_id, error = %crate::telemetry::ErrorChain(&err), "unreadable delivery");
                return Outcome::Unreadable;
            }
        };
        let span = tracing::info_span!("delivery", event_id = %message.event_id, endpoint_id = %message.endpoint_id, attempt = delivery.receive_count);
        let _guard = span.enter();
        match self
            .store
            .was_delivered(&message.event_id, &message.endpoint_id)
            .await
        {
            Ok(true) => return Outcome::Done,
            Ok(false) => {}
            Err(err) => {
                tracing::warn!(error = %crate::telemetry::ErrorChain(&err), "delivery log unreadable; retrying");
                return self.retry_after(delivery.receive_count);
            }
        }
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
        // Checked again now, without DNS: the connection resolves the name, through a resolver
        // that drops internal addresses (a name can start resolving somewhere internal).
        if let Err(reason) = self.policy.check_target(&endpoint.url) {
            tracing::warn!(%reason, "endpoint URL refused; retrying");
            return self.retry_after(delivery.receive_count);
        }
        let started = std::time::Instant::now();
        let posted = self.post(&endpoint, &message).await;
        crate::metrics::webhook_delivery(
            if posted.is_ok() {
                "delivered"
            } else {
                "failed"
            },
            started.elapsed().as_secs_f64() * 1000.0,
        );
        match posted {
            Ok(()) => {
                if let Err(err) = self
                    .store
                    .mark_delivered(&message.event_id, &message.endpoint_id)
                    .await
                {
                    // Delivered all the same; a redelivery may repeat it, with the same id.
                    tracing::warn!(error = %crate::telemetry::ErrorChain(&err), "delivery not recorded");
                }
                tracing::info!("delivered");
                Outcome::Done
            }
            Err(err) => {
                tracing::warn!(error = %crate::telemetry::ErrorChain(&err), "delivery failed; retrying");
                self.retry_after(delivery.receive_count)
            }
        }
    }

    async fn post(
        &self,
        endpoint: &super::WebhookEndpoint,
        message: &DeliveryMessage,
    ) -> Result<(), Failure> {
        let webhook = standardwebhooks::Webhook::new(endpoint.secret.expose())
            .map_err(|_| Failure::Transport("endpoint secret unreadable".into()))?;
        let timestamp = chrono::Utc::now().timestamp();
        let signature = webhook
            .sign(&message.event_id, timestamp, message.body.as_bytes())
            .map_err(|_| Failure::Transport("body not signable".into()))?;
        let response = self
            .http
            .post(&endpoint.url)
            .header("content-type", "application/json")
            .header(standardwebhooks::HEADER_WEBHOOK_ID, &message.event_id)
            .header(
                standardwebhooks::HEADER_WEBHOOK_TIMESTAMP,
                timestamp.to_string(),
            )
            .header(standardwebhooks::HEADER_WEBHOOK_SIGNATURE, signature)
            .body(message.body.clone())
            .send()
            .await
            .map_err(Failure::of)?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(Failure::Status(status.as_u16()))
        }
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
}
