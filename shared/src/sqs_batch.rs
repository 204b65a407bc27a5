//! SQS-triggered functions: each record handled on its own (concurrently), failures reported in
//! `batchItemFailures` so only they come back, and their return delayed by stretching their
//! visibility.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::DateTime;
use futures::future::join_all;

use crate::domain::Timestamp;
use crate::ports::{Queue, Redelivery};

/// One received message.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub message_id: String,
    pub body: String,
    /// 1 on the first delivery.
    pub receive_count: u32,
    pub sent_at: Option<Timestamp>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Handled (or nothing left to do): delete it.
    Done,
    /// Try again after this many seconds.
    RetryAfter(u32),
    /// Cannot be understood: let it reach the dead-letter queue quickly.
    Unreadable,
}

/// Seconds before an unreadable message comes back; it soon exhausts its receives and lands in
/// the DLQ, where an operator can see it.
const UNREADABLE_RETRY_SECONDS: u32 = 1;

fn delivery(message: &SqsMessage) -> Delivery {
    let attribute = |name: &str| message.attributes.get(name).cloned();
    Delivery {
        message_id: message.message_id.clone().unwrap_or_default(),
        body: message.body.clone().unwrap_or_default(),
        receive_count: attribute("ApproximateReceiveCount")
            .and_then(|c| c.parse().ok())
            .unwrap_or(1),
        sent_at: attribute("SentTimestamp")
            .and_then(|ms| ms.parse::<i64>().ok())
            .and_then(DateTime::from_timestamp_millis),
    }
}

/// `queue` is where the messages come from, for delaying retries; `None` leaves retries to the
/// queue's own visibility timeout (dead-letter queues).
pub async fn process_batch<R, F, Fut>(
    event: SqsEvent,
    queue: Option<Queue>,
    redelivery: &R,
    handle: F,
) -> SqsBatchResponse
where
    R: Redelivery,
    F: Fn(Delivery) -> Fut,
    Fut: Future<Output = Outcome>,
{
    let outcomes = join_all(event.records.iter().map(|m| handle(delivery(m)))).await;
    let mut response = SqsBatchResponse::default();
    for (message, outcome) in event.records.iter().zip(outcomes) {
        let delay = match outcome {
            Outcome::Done => continue,
            Outcome::RetryAfter(seconds) => seconds,
            Outcome::Unreadable => UNREADABLE_RETRY_SECONDS,
        };
        if let (Some(queue), Some(receipt)) = (queue, &message.receipt_handle)
            && let Err(err) = redelivery.delay_redelivery(queue, receipt, delay).await
        {
            // The message still comes back after the queue's own visibility timeout.
            tracing::warn!(error = %crate::telemetry::ErrorChain(&err), "could not delay redelivery");
        }
        let mut failure = BatchItemFailure::default();
        failure.item_identifier = message.message_id.clone().unwrap_or_default();
        response.batch_item_failures.push(failure);
    }
    response
}
