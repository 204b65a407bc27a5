//! What Lambda's SQS event source mappings do, on moto: poll each function's queue with the
//! template's `BatchSize`, hand the batch to the function, delete what succeeded and leave
//! `batchItemFailures` to come back. Which queue feeds which function, and the batch size, come
//! from template.yaml.
//!
//! One thing Lambda guarantees needs help here: a function's timeout (10 s) is well under its
//! queues' visibility timeout (60 s), so a message can never come back while a run of it is
//! still working. In-process handlers are not stopped at a timeout, and an emulator slowed by a
//! burst can keep a batch running past the visibility timeout; the queue then hands the message
//! out again. The pipeline holds such a receive back (the message comes back after the
//! visibility timeout, when its first run has finished and deleted it, or finds it done) and
//! counts it, so the local stack never runs one message twice at once, as Lambda never does.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use serde_json::json;
use tokio::task::JoinHandle;

use crate::moto::REGION;
use crate::provision::Stack;
use crate::template::{Intrinsic, Template, intrinsic, scalar};

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
pub type SqsHandler = Arc<dyn Fn(SqsEvent) -> BoxFuture<SqsBatchResponse> + Send + Sync>;

/// One SQS event source of one function, as the template declares it.
#[derive(Clone, Debug, PartialEq)]
pub struct SqsSource {
    pub function_id: String,
    pub queue_id: String,
    pub batch_size: i32,
    pub report_batch_item_failures: bool,
    /// Concurrent batches: `ScalingConfig.MaximumConcurrency`, else Lambda's initial five.
    pub concurrency: usize,
}

/// Lambda starts five concurrent pollers per SQS event source.
pub const DEFAULT_CONCURRENCY: usize = 5;

/// Every SQS event source in the template.
pub fn sqs_sources(template: &Template) -> Result<Vec<SqsSource>> {
    let mut sources = Vec::new();
    for event in template.function_events() {
        if event.kind != "SQS" {
            continue;
        }
        let function_id = &event.function_id;
        let properties = event.require_properties()?;
        let queue = properties
            .get("Queue")
            .ok_or_else(|| anyhow!("{function_id}: SQS event without Queue"))?;
        let queue_id = match intrinsic(queue)? {
            Intrinsic::GetAtt(id, attr) if attr == "Arn" => id,
            other => bail!("{function_id}: SQS Queue {other:?} is not !GetAtt <Queue>.Arn"),
        };
        let batch_size = properties
            .get("BatchSize")
            .and_then(scalar)
            .map(|b| b.parse::<i32>())
            .transpose()
            .context("BatchSize")?
            .unwrap_or(10);
        let report_batch_item_failures = properties
            .get("FunctionResponseTypes")
            .and_then(|t| t.as_sequence())
            .is_some_and(|types| {
                types
                    .iter()
                    .any(|t| t.as_str() == Some("ReportBatchItemFailures"))
            });
        let concurrency = properties
            .get("ScalingConfig")
            .and_then(|c| c.get("MaximumConcurrency"))
            .and_then(scalar)
            .map(|c| c.parse::<usize>())
            .transpose()
            .context("MaximumConcurrency")?
            .unwrap_or(DEFAULT_CONCURRENCY);
        sources.push(SqsSource {
            function_id: function_id.clone(),
            queue_id,
            batch_size,
            report_batch_item_failures,
            concurrency,
        });
    }
    Ok(sources)
}

pub struct Pipeline {
    sqs: aws_sdk_sqs::Client,
    bindings: Vec<(SqsSource, String, String, SqsHandler)>,
    handled: Arc<AtomicU64>,
    twice: Arc<AtomicBool>,
    runs: Arc<Runs>,
}

/// The messages being run now, and what the pipeline saw of the runs' lengths.
#[derive(Default)]
struct Runs {
    in_flight: Mutex<HashSet<String>>,
    held_back: AtomicU64,
    longest_ms: AtomicU64,
    by_function: Mutex<BTreeMap<String, RunTotals>>,
}

/// What one function's batches added up to: the invocations Lambda would bill and their time.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RunTotals {
    /// Batches handed to the function (one invocation each).
    pub runs: u64,
    pub messages: u64,
    pub time: Duration,
}

impl Runs {
    /// Marks the messages not already running as running; returns which of them to run.
    fn start<'m>(
        &self,
        messages: &'m [aws_sdk_sqs::types::Message],
    ) -> Vec<&'m aws_sdk_sqs::types::Message> {
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut run = Vec::new();
        for message in messages {
            let id = message.message_id.clone().unwrap_or_default();
            if in_flight.insert(id) {
                run.push(message);
            } else {
                self.held_back.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(function_message = ?message.message_id, "received while a run of it is still working; held back");
            }
        }
        run
    }

    fn finish(&self, function: &str, messages: &[&aws_sdk_sqs::types::Message], took: Duration) {
        {
            let mut totals = self
                .by_function
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let entry = totals.entry(function.to_string()).or_default();
            entry.runs += 1;
            entry.messages += messages.len() as u64;
            entry.time += took;
        }
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for message in messages {
            in_flight.remove(message.message_id.as_deref().unwrap_or_default());
        }
        self.longest_ms
            .fetch_max(took.as_millis() as u64, Ordering::Relaxed);
    }
}

impl Pipeline {
    /// Binds every SQS source of the template whose function has a handler; a function with
    /// SQS sources and no handler is an error naming it, unless `skip` lists it.
    pub fn new(
        template: &Template,
        stack: &Stack,
        sqs: aws_sdk_sqs::Client,
        handlers: &HashMap<String, SqsHandler>,
        skip: &[&str],
    ) -> Result<Pipeline> {
        let mut bindings = Vec::new();
        for source in sqs_sources(template)? {
            let Some(handler) = handlers.get(&source.function_id) else {
                if skip.contains(&source.function_id.as_str()) {
                    continue;
                }
                bail!("no local handler for {}", source.function_id);
            };
            let url = stack.queue_url(&source.queue_id)?.to_string();
            let arn = stack
                .queue_arns
                .get(&source.queue_id)
                .cloned()
                .unwrap_or_default();
            bindings.push((source, url, arn, handler.clone()));
        }
        Ok(Pipeline {
            sqs,
            bindings,
            handled: Arc::default(),
            twice: Arc::default(),
            runs: Arc::default(),
        })
    }

    pub fn sources(&self) -> Vec<SqsSource> {
        self.bindings.iter().map(|(s, ..)| s.clone()).collect()
    }

    /// From now on every batch is handed to its function twice, as SQS's at-least-once
    /// delivery may do: for proving handlers idempotent.
    pub fn deliver_everything_twice(&self) {
        self.twice.store(true, Ordering::Relaxed);
    }

    /// Messages handed to functions so far.
    pub fn handled(&self) -> u64 {
        self.handled.load(Ordering::Relaxed)
    }

    /// Receives of a message while a run of it was still working, held back (on Lambda there
    /// are none: the function's timeout ends a run before its message's visibility timeout).
    pub fn held_back(&self) -> u64 {
        self.runs.held_back.load(Ordering::Relaxed)
    }

    /// The longest a batch took in its function so far.
    pub fn longest_run(&self) -> Duration {
        Duration::from_millis(self.runs.longest_ms.load(Ordering::Relaxed))
    }

    /// Per function: the batches it ran so far and the time they took (what Lambda bills).
    pub fn run_totals(&self) -> BTreeMap<String, RunTotals> {
        self.runs
            .by_function
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// `concurrency` pollers per source, each long-polling its queue, until the handle is
    /// dropped.
    pub fn start(&self) -> PipelineHandle {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = self
            .bindings
            .iter()
            .flat_map(|binding| std::iter::repeat_n(binding.clone(), binding.0.concurrency))
            .map(|(source, url, arn, handler)| {
                let sqs = self.sqs.clone();
                let stop = stop.clone();
                let handled = self.handled.clone();
                let twice = self.twice.clone();
                let runs = self.runs.clone();
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let twice = twice.load(Ordering::Relaxed);
                        let target = Target {
                            sqs: &sqs,
                            source: &source,
                            url: &url,
                            arn: &arn,
                            handler: &handler,
                            runs: &runs,
                        };
                        // Lambda's event source mapping polls with the function's role.
                        let polled = crate::identity::as_function(
                            &source.function_id,
                            poll(target, 1, twice),
                        );
                        match polled.await {
                            Ok(n) => {
                                handled.fetch_add(n as u64, Ordering::Relaxed);
                            }
                            Err(err) => {
                                tracing::warn!(error = %err, function = %source.function_id, "poll failed");
                                tokio::time::sleep(Duration::from_millis(500)).await;
                            }
                        }
                    }
                })
            })
            .collect();
        PipelineHandle { stop, tasks }
    }
}

pub struct PipelineHandle {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for PipelineHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// One event source's queue and function, as a poller sees them.
struct Target<'a> {
    sqs: &'a aws_sdk_sqs::Client,
    source: &'a SqsSource,
    url: &'a str,
    arn: &'a str,
    handler: &'a SqsHandler,
    runs: &'a Runs,
}

/// Receives one batch and runs it through the function as its event source mapping would.
async fn poll(target: Target<'_>, wait_seconds: i32, twice: bool) -> Result<usize> {
    let received = target
        .sqs
        .receive_message()
        .queue_url(target.url)
        .max_number_of_messages(target.source.batch_size.clamp(1, 10))
        .wait_time_seconds(wait_seconds)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .message_attribute_names("All")
        .send()
        .await?
        .messages
        .unwrap_or_default();
    let messages = target.runs.start(&received);
    if messages.is_empty() {
        return Ok(0);
    }
    let started = Instant::now();
    let handled = run_batch(&target, &messages, twice).await;
    target
        .runs
        .finish(&target.source.function_id, &messages, started.elapsed());
    handled
}

async fn run_batch(
    target: &Target<'_>,
    messages: &[&aws_sdk_sqs::types::Message],
    twice: bool,
) -> Result<usize> {
    let Target {
        sqs,
        source,
        url,
        arn,
        handler,
        ..
    } = *target;
    let records: Vec<serde_json::Value> = messages.iter().map(|m| lambda_record(m, arn)).collect();
    let event: SqsEvent = serde_json::from_value(json!({ "Records": records }))?;
    if twice {
        handler(event.clone()).await;
    }
    let response = handler(event).await;
    let failed: Vec<&str> = if source.report_batch_item_failures {
        response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect()
    } else {
        Vec::new()
    };
    let entries: Vec<DeleteMessageBatchRequestEntry> = messages
        .iter()
        .enumerate()
        .filter(|(_, m)| !failed.contains(&m.message_id.as_deref().unwrap_or_default()))
        .filter_map(|(i, m)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(m.receipt_handle.clone()?)
                .build()
                .ok()
        })
        .collect();
    if !entries.is_empty() {
        sqs.delete_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await?;
    }
    Ok(messages.len())
}

/// A received message as Lambda's SQS event source hands it to a function: one record.
pub fn lambda_record(m: &aws_sdk_sqs::types::Message, arn: &str) -> serde_json::Value {
    let attributes: HashMap<String, String> = m
        .attributes
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k.as_str().to_string(), v))
        .collect();
    // As Lambda's event source hands them over: string attributes keep their value.
    let message_attributes: serde_json::Map<String, serde_json::Value> = m
        .message_attributes
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(name, value)| {
            let attribute = json!({
                "stringValue": value.string_value,
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": value.data_type,
            });
            (name, attribute)
        })
        .collect();
    json!({
        "messageId": m.message_id,
        "receiptHandle": m.receipt_handle,
        "body": m.body,
        "md5OfBody": m.md5_of_body,
        "attributes": attributes,
        "messageAttributes": message_attributes,
        "eventSource": "aws:sqs",
        "eventSourceARN": arn,
        "awsRegion": REGION,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sqs::types::Message;

    fn message(id: &str) -> Message {
        Message::builder().message_id(id).build()
    }

    #[test]
    fn a_message_attribute_reaches_the_function_as_lambda_s_event_source_hands_it_over() {
        // Given a received message with a string message attribute
        let received = Message::builder()
            .message_id("m1")
            .body("{}")
            .message_attributes(
                "numberSnapshot",
                aws_sdk_sqs::types::MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value("{\"id\":\"num_1\"}")
                    .build()
                    .unwrap(),
            )
            .build();

        // When it becomes a record of the function's SQS event
        let record: aws_lambda_events::event::sqs::SqsMessage =
            serde_json::from_value(lambda_record(&received, "arn:aws:sqs:us-east-1:1:q")).unwrap();

        // Then the attribute is there with its value and type
        let attribute = &record.message_attributes["numberSnapshot"];
        assert_eq!(attribute.string_value.as_deref(), Some(r#"{"id":"num_1"}"#));
        assert_eq!(attribute.data_type.as_deref(), Some("String"));
    }

    #[test]
    fn a_message_received_again_while_its_run_is_working_is_held_back() {
        // Given a batch of two messages being run
        let runs = Runs::default();
        let first = [message("m1"), message("m2")];
        let running = runs.start(&first);
        assert_eq!(running.len(), 2);

        // When the queue hands one of them out again (its visibility ran out) beside a new one
        let again = [message("m2"), message("m3")];
        let second = runs.start(&again);

        // Then only the new one runs, and the repeat is counted
        let ids: Vec<_> = second
            .iter()
            .map(|m| m.message_id().unwrap_or_default())
            .collect();
        assert_eq!(ids, ["m3"]);
        assert_eq!(runs.held_back.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_message_runs_again_once_its_earlier_run_has_finished() {
        // Given a message whose run finished without deleting it (a retry)
        let runs = Runs::default();
        let batch = [message("m1")];
        let running = runs.start(&batch);
        runs.finish("F", &running, Duration::from_millis(30));

        // When it comes back
        let again = runs.start(&batch);

        // Then it runs, and the longest run is remembered
        assert_eq!(again.len(), 1);
        assert_eq!(runs.held_back.load(Ordering::Relaxed), 0);
        assert_eq!(runs.longest_ms.load(Ordering::Relaxed), 30);
    }

    #[test]
    fn each_functions_batches_and_their_time_add_up() {
        // Given two batches of one function and one of another
        let runs = Runs::default();
        let two = [message("m1"), message("m2")];
        let one = [message("m3")];
        let other = [message("m4")];
        let batch = runs.start(&two);
        runs.finish("A", &batch, Duration::from_millis(30));
        let batch = runs.start(&one);
        runs.finish("A", &batch, Duration::from_millis(12));
        let batch = runs.start(&other);
        runs.finish("B", &batch, Duration::from_millis(5));

        // When the totals are read
        let totals = runs.by_function.lock().unwrap().clone();

        // Then each function has its invocations, messages and summed time
        let expected_a = RunTotals {
            runs: 2,
            messages: 3,
            time: Duration::from_millis(42),
        };
        assert_eq!(totals.get("A"), Some(&expected_a));
        assert_eq!(totals.get("B").map(|t| t.runs), Some(1));
    }
}
