use std::collections::HashMap;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::MessageAttributeValue;

use crate::config::QueueUrls;
use crate::domain::messages::NUMBER_SNAPSHOT_ATTRIBUTE;
use crate::ports::{Message, MessageQueue, Queue, QueueError, RedeliveryDelay};

#[derive(Clone)]
pub struct SqsQueue {
    client: Client,
    urls: QueueUrls,
}

impl SqsQueue {
    pub fn new(client: Client, urls: QueueUrls) -> Self {
        SqsQueue { client, urls }
    }
}

impl MessageQueue for SqsQueue {
    async fn send<M: Message>(&self, message: &M) -> Result<(), QueueError> {
        let queue = message.queue();
        let body = serde_json::to_string(message).map_err(QueueError::Encode)?;
        let url = self
            .urls
            .url(queue)
            .map_err(|_| QueueError::Unconfigured(queue))?;
        let snapshot = message
            .number_snapshot()
            .map(|snapshot| {
                MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value(snapshot)
                    .build()
            })
            .transpose()
            .map_err(|e| QueueError::Unavailable(e.into()))?;
        self.client
            .send_message()
            .queue_url(url)
            .message_body(body)
            .set_message_attributes(
                snapshot
                    .map(|value| HashMap::from([(NUMBER_SNAPSHOT_ATTRIBUTE.to_string(), value)])),
            )
            .send()
            .await
            .map_err(|e| QueueError::Unavailable(e.into()))?;
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RedriveError {
    #[error("SQS unavailable")]
    Sqs(#[source] crate::ports::BoxError),
    #[error("{queue} is the dead-letter queue of {sources} queues; exactly one is needed")]
    NotOneSource { queue: String, sources: usize },
}

fn sqs_error<
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
>(
    err: aws_sdk_sqs::error::SdkError<E, R>,
) -> RedriveError {
    RedriveError::Sqs(err.into())
}

/// Moves every message of a dead-letter queue back to the one queue that dead-letters into it.
/// Each message is sent before it is deleted, so a crash midway duplicates, never loses.
pub async fn redrive(client: &Client, queue: &str) -> Result<u64, RedriveError> {
    let dlq_url = if queue.starts_with("http") {
        queue.to_string()
    } else {
        client
            .get_queue_url()
            .queue_name(queue)
            .send()
            .await
            .map_err(sqs_error)?
            .queue_url
            .unwrap_or_default()
    };
    let sources = client
        .list_dead_letter_source_queues()
        .queue_url(&dlq_url)
        .send()
        .await
        .map_err(sqs_error)?
        .queue_urls;
    let [source] = sources.as_slice() else {
        return Err(RedriveError::NotOneSource {
            queue: queue.to_string(),
            sources: sources.len(),
        });
    };
    let mut moved = 0;
    loop {
        let messages = client
            .receive_message()
            .queue_url(&dlq_url)
            .max_number_of_messages(10)
            .visibility_timeout(30)
            .wait_time_seconds(0)
            .send()
            .await
            .map_err(sqs_error)?
            .messages
            .unwrap_or_default();
        if messages.is_empty() {
            return Ok(moved);
        }
        for message in messages {
            client
                .send_message()
                .queue_url(source)
                .message_body(message.body.unwrap_or_default())
                .send()
                .await
                .map_err(sqs_error)?;
            if let Some(receipt) = message.receipt_handle {
                client
                    .delete_message()
                    .queue_url(&dlq_url)
                    .receipt_handle(receipt)
                    .send()
                    .await
                    .map_err(sqs_error)?;
            }
            moved += 1;
        }
    }
}

impl crate::ports::Redelivery for SqsQueue {
    async fn delay_redelivery(
        &self,
        queue: Queue,
        receipt_handle: &str,
        delay: RedeliveryDelay,
    ) -> Result<(), QueueError> {
        let url = self
            .urls
            .url(queue)
            .map_err(|_| QueueError::Unconfigured(queue))?;
        // Cut as late as possible: SQS counts the time until it applies the change.
        let seconds = delay.seconds_now();
        self.client
            .change_message_visibility()
            .queue_url(url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(i32::try_from(seconds).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|err| {
                if err
                    .code()
                    .is_some_and(|code| code.ends_with("InvalidParameterValue"))
                {
                    QueueError::VisibilityRefused(err.into())
                } else {
                    QueueError::Unavailable(err.into())
                }
            })?;
        Ok(())
    }
}
