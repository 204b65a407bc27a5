//! SQS-triggered functions: each record handled on its own (concurrently), failures reported in
//! `batchItemFailures` so only they come back, and their return delayed by stretching their
//! visibility.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use std::collections::HashMap;

use chrono::DateTime;
use futures::future::join_all;

use crate::domain::Timestamp;
use crate::domain::messages::NUMBER_SNAPSHOT_ATTRIBUTE;
use crate::ports::{Queue, QueueError, Received, Redelivery, RedeliveryDelay};

/// One received message.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub message_id: String,
    pub body: String,
    /// 1 on the first delivery.
    pub receive_count: u32,
    pub sent_at: Option<Timestamp>,
    /// The number as the sender committed it, when the message carries one
    /// (`domain::messages::NUMBER_SNAPSHOT_ATTRIBUTE`).
    pub number_snapshot: Option<String>,
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
        number_snapshot: message
            .message_attributes
            .get(NUMBER_SNAPSHOT_ATTRIBUTE)
            .and_then(|attribute| attribute.string_value.clone()),
    }
}

/// `queue` is where the messages come from, for delaying retries; `None` leaves retries to the
/// queue's own visibility timeout (dead-letter queues). A retry's delay is cut to what SQS
/// allows since the batch arrived (`ports::redelivery_delay`): a longer wait comes back early,
/// and its handler, checking again, defers the rest.
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
    // The event carries no receive time; the invocation starts right after the receive.
    let received = Received::now();
    // Identical bodies in one batch are one message sent twice (a send the SDK retried after its
    // answer was lost, or a copy SQS delivered again): handled once, so two runs of the same
    // work never race each other to Meta (two register requests for one number). The copy is
    // deleted whatever its twin's outcome: if that one comes back, one is enough.
    let mut first_with_body: HashMap<&str, usize> = HashMap::new();
    let twin_of: Vec<Option<usize>> = event
        .records
        .iter()
        .enumerate()
        .map(|(index, message)| {
            let body = message.body.as_deref().unwrap_or_default();
            match first_with_body.get(body) {
                Some(first) => Some(*first),
                None => {
                    first_with_body.insert(body, index);
                    None
                }
            }
        })
        .collect();
    let handled = join_all(
        event
            .records
            .iter()
            .zip(&twin_of)
            .filter(|(_, twin)| twin.is_none())
            .map(|(m, _)| handle(delivery(m))),
    )
    .await;
    let mut handled = handled.into_iter();
    let outcomes: Vec<Outcome> = twin_of
        .iter()
        .map(|twin| match twin {
            None => handled.next().unwrap_or(Outcome::Done),
            Some(_) => Outcome::Done,
        })
        .collect();
    let copies = twin_of.iter().filter(|t| t.is_some()).count();
    if copies > 0 {
        tracing::info!(copies, "identical messages in one batch handled once");
    }
    let mut response = SqsBatchResponse::default();
    for (message, outcome) in event.records.iter().zip(outcomes) {
        let delay = match outcome {
            Outcome::Done => continue,
            Outcome::RetryAfter(seconds) => seconds,
            Outcome::Unreadable => UNREADABLE_RETRY_SECONDS,
        };
        if let (Some(queue), Some(receipt)) = (queue, &message.receipt_handle) {
            let delay = RedeliveryDelay::new(delay, received);
            let seconds = delay.seconds_now();
            if seconds < delay.wanted() {
                tracing::info!(
                    wanted = delay.wanted(),
                    seconds,
                    "redelivery delay cut to SQS's 12 h from the receive; the rest is waited after it"
                );
            }
            match redelivery.delay_redelivery(queue, receipt, delay).await {
                Ok(()) => {}
                // The message still comes back, after the queue's own visibility timeout.
                Err(err @ QueueError::VisibilityRefused(_)) => {
                    tracing::error!(error = %crate::telemetry::ErrorChain(&err), wanted = delay.wanted(), "SQS refused the redelivery delay");
                }
                Err(err) => {
                    tracing::warn!(error = %crate::telemetry::ErrorChain(&err), "could not delay redelivery");
                }
            }
        }
        let mut failure = BatchItemFailure::default();
        failure.item_identifier = message.message_id.clone().unwrap_or_default();
        response.batch_item_failures.push(failure);
    }
    response
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::adapters::memory::MemoryQueue;
    use crate::domain::Step;
    use crate::ports::{MAX_REDELIVERY_DELAY_SECONDS, REDELIVERY_MARGIN_SECONDS};

    fn record(id: &str, body: &str) -> SqsMessage {
        let mut message = SqsMessage::default();
        message.message_id = Some(id.into());
        message.receipt_handle = Some(format!("receipt-{id}"));
        message.body = Some(body.into());
        message
    }

    fn batch(records: Vec<SqsMessage>) -> SqsEvent {
        let mut event = SqsEvent::default();
        event.records = records;
        event
    }

    #[tokio::test]
    async fn identical_messages_in_one_batch_are_handled_once_and_both_deleted() {
        // Given a batch holding one message twice (a retried send) and another
        let event = batch(vec![
            record("m-1", r#"{"step":"REGISTER_NUMBER","numberId":"n1"}"#),
            record("m-2", r#"{"step":"REGISTER_NUMBER","numberId":"n2"}"#),
            record("m-3", r#"{"step":"REGISTER_NUMBER","numberId":"n1"}"#),
        ]);
        let handled = Mutex::new(Vec::new());

        // When the batch is processed
        let response = process_batch(event, None, &MemoryQueue::default(), |d| {
            handled.lock().unwrap().push(d.message_id.clone());
            async { Outcome::Done }
        })
        .await;

        // Then the twin is not handled, and nothing comes back
        assert_eq!(*handled.lock().unwrap(), vec!["m-1", "m-2"]);
        assert!(response.batch_item_failures.is_empty());
    }

    #[tokio::test]
    async fn a_retried_message_comes_back_once_though_the_batch_held_it_twice() {
        let event = batch(vec![record("m-1", "same"), record("m-2", "same")]);

        let response = process_batch(event, None, &MemoryQueue::default(), |_| async {
            Outcome::RetryAfter(5)
        })
        .await;

        let failed: Vec<_> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(failed, vec!["m-1"]);
    }

    const HOUR: u32 = 3600;
    const LONGEST: u32 = MAX_REDELIVERY_DELAY_SECONDS - REDELIVERY_MARGIN_SECONDS;

    /// One message retried after `wanted` seconds, from the register step's queue.
    async fn retried_after(queue: &MemoryQueue, wanted: u32) -> SqsBatchResponse {
        let event = batch(vec![record("m-1", "body")]);
        process_batch(
            event,
            Some(Queue::Step(Step::RegisterNumber)),
            queue,
            |_| async move { Outcome::RetryAfter(wanted) },
        )
        .await
    }

    #[tokio::test]
    async fn a_retry_longer_than_twelve_hours_is_delayed_within_sqs_s_limit_from_the_receive() {
        // Given a handler that wants its message back in 20 h
        let queue = MemoryQueue::default();

        // When the batch is processed
        let response = retried_after(&queue, 20 * HOUR).await;

        // Then SQS is asked for what is left of 12 h since the receive, less the margin, and
        // accepts it; the message comes back then, to wait again
        let delays = queue.delays();
        assert_eq!(delays.len(), 1, "{:?}", queue.refused());
        let (_, receipt, seconds) = &delays[0];
        assert_eq!(receipt, "receipt-m-1");
        assert!(
            (LONGEST - 5..=LONGEST).contains(seconds),
            "{seconds} s asked"
        );
        assert!(queue.refused().is_empty());
        assert_eq!(response.batch_item_failures.len(), 1);
    }

    #[tokio::test]
    async fn a_retry_within_twelve_hours_is_delayed_as_asked() {
        let queue = MemoryQueue::default();

        retried_after(&queue, 6 * HOUR).await;

        assert_eq!(
            queue.delays(),
            vec![(
                Queue::Step(Step::RegisterNumber),
                "receipt-m-1".into(),
                6 * HOUR
            )]
        );
    }

    #[tokio::test]
    async fn a_receive_up_to_the_margin_before_the_batch_started_still_gets_its_delay() {
        // Given SQS received the message almost the margin before the batch started
        let queue = MemoryQueue::default();
        queue.set_receive_latency(Duration::from_secs(
            u64::from(REDELIVERY_MARGIN_SECONDS) - 5,
        ));

        // When its handler wants the longest delay
        retried_after(&queue, MAX_REDELIVERY_DELAY_SECONDS).await;

        // Then the delay still ends within 12 h of the receive
        assert_eq!(queue.delays().len(), 1);
        assert!(queue.refused().is_empty());
    }

    #[tokio::test]
    async fn the_memory_queue_refuses_a_visibility_past_twelve_hours_from_the_receive_as_sqs_does()
    {
        // Given SQS received the message longer than the margin before the batch started
        let queue = MemoryQueue::default();
        queue.set_receive_latency(Duration::from_secs(
            u64::from(REDELIVERY_MARGIN_SECONDS) + 5,
        ));
        let received = Received::now();

        // When the longest delay the rule allows from the batch's start is asked for
        let refused = queue
            .delay_redelivery(
                Queue::Teardown,
                "receipt-m-1",
                RedeliveryDelay::new(MAX_REDELIVERY_DELAY_SECONDS, received),
            )
            .await;

        // Then it is refused with the error SQS's refusal surfaces as, and nothing is delayed
        assert!(
            matches!(refused, Err(QueueError::VisibilityRefused(_))),
            "{refused:?}"
        );
        assert!(queue.delays().is_empty());
        assert_eq!(queue.refused().len(), 1);
    }

    #[tokio::test]
    async fn a_refused_delay_still_reports_the_message_for_its_return() {
        let queue = MemoryQueue::default();
        queue.set_receive_latency(Duration::from_secs(
            2 * u64::from(REDELIVERY_MARGIN_SECONDS),
        ));

        let response = retried_after(&queue, MAX_REDELIVERY_DELAY_SECONDS).await;

        assert_eq!(queue.refused().len(), 1);
        assert_eq!(response.batch_item_failures.len(), 1);
    }

    #[tokio::test]
    async fn a_message_s_number_snapshot_attribute_reaches_its_delivery() {
        // Given a record carrying a number snapshot as a string message attribute
        let mut with_snapshot = record("m-1", "body");
        let attribute: aws_lambda_events::event::sqs::SqsMessageAttribute =
            serde_json::from_value(serde_json::json!({
                "stringValue": "{\"id\":\"num_1\"}",
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": "String"
            }))
            .unwrap();
        with_snapshot
            .message_attributes
            .insert(NUMBER_SNAPSHOT_ATTRIBUTE.to_string(), attribute);
        let without = record("m-2", "other body");
        let seen = Mutex::new(Vec::new());

        // When the batch is processed
        process_batch(
            batch(vec![with_snapshot, without]),
            None,
            &MemoryQueue::default(),
            |d| {
                seen.lock().unwrap().push(d.number_snapshot.clone());
                async { Outcome::Done }
            },
        )
        .await;

        // Then the handler is given the snapshot of the one that has it
        assert_eq!(
            *seen.lock().unwrap(),
            vec![Some(r#"{"id":"num_1"}"#.to_string()), None]
        );
    }
}
