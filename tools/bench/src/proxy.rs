//! Counting, as a hook of the local AWS gateway (`muchaw_local::aws_proxy`): every AWS call
//! goes on unchanged (to moto, or DynamoDB's to DynamoDB Local when one is given) and the hook
//! records its service, action,
//! queue, the DynamoDB items it wrote or read and the capacity units those would cost on
//! DynamoDB. Production code is untouched: only its endpoint points here.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Result;
use axum::body::Bytes;
use axum::http::HeaderMap;
use muchaw_local::aws_proxy::{Answer, AwsCall, AwsProxy, Hook};
use serde_json::Value;

pub use muchaw_local::upstreams::Upstreams;

/// One AWS request that went through the proxy.
#[derive(Clone, Debug, Default)]
pub struct Record {
    pub at: Option<Instant>,
    /// How long the emulator took to answer (request sent → body read at the proxy), in ms.
    pub elapsed_ms: f64,
    /// `dynamodb`, `sqs`, `secretsmanager`, ...
    pub service: String,
    pub action: String,
    pub status: u16,
    /// SQS: the queue URL the request names.
    pub queue: Option<String>,
    /// SQS `ReceiveMessage`: messages it returned.
    pub received: usize,
    /// DynamoDB items written (Put/Update/Delete = 1, transactions and batches = their writes).
    pub items_written: u64,
    /// Write capacity units this request would consume on DynamoDB (estimated from sizes).
    pub write_units: f64,
    /// Of `items_written`, API key items (`APIKEY#…`): the key's last-use mark, written once an
    /// hour per key whatever the requests are, not per number.
    pub api_key_writes: u64,
    /// `TransactWriteItems`: the number of items in the transaction (condition checks included).
    pub transaction_size: usize,
    /// DynamoDB items read (returned, or scanned for a query).
    pub items_read: u64,
    /// Read capacity units this request would consume on DynamoDB (estimated from sizes).
    pub read_units: f64,
    /// Status changes committed by a `TransactWriteItems`: (number id, new status).
    pub status_changes: Vec<(String, String)>,
    /// A `TransactWriteItems` that puts a new number item (the signup callback's write).
    pub creates_number: bool,
}

impl Record {
    /// What Lambda's SQS event source mapping does, not our code: receive and delete. (Our
    /// code's only receive/delete is the admin DLQ redrive, which the benchmarks never run.)
    pub fn is_event_source(&self) -> bool {
        self.service == "sqs"
            && matches!(
                self.action.as_str(),
                "ReceiveMessage" | "DeleteMessage" | "DeleteMessageBatch"
            )
    }
}

/// Counts over a set of records.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counts {
    /// Requests by our code, by service.
    pub ours_by_service: BTreeMap<String, u64>,
    /// Requests by our code, by `service:action`.
    pub ours_by_action: BTreeMap<String, u64>,
    /// Event-source requests (receive/delete), by action.
    pub event_source: BTreeMap<String, u64>,
    /// Of those, the ones a delivery costs: receives that returned messages, and deletes (the
    /// rest are empty polls, which depend on time, not on traffic).
    pub event_source_deliveries: u64,
    pub items_written: u64,
    /// Of `items_written`, API key items' (see [`Record::api_key_writes`]).
    pub api_key_writes: u64,
    pub write_units: f64,
    pub items_read: u64,
    pub read_units: f64,
    pub transactions: u64,
    pub max_transaction_size: usize,
    pub errors: u64,
    /// Total time the emulators took over our code's requests, in ms.
    pub ours_elapsed_ms: f64,
    /// The same, by service.
    pub ours_elapsed_ms_by_service: BTreeMap<String, f64>,
}

impl Counts {
    pub fn of<'a>(records: impl IntoIterator<Item = &'a Record>) -> Counts {
        let mut counts = Counts::default();
        for r in records {
            if r.status >= 400 {
                counts.errors += 1;
            }
            if r.is_event_source() {
                *counts.event_source.entry(r.action.clone()).or_default() += 1;
                if r.received > 0 || r.action != "ReceiveMessage" {
                    counts.event_source_deliveries += 1;
                }
                continue;
            }
            *counts.ours_by_service.entry(r.service.clone()).or_default() += 1;
            *counts
                .ours_by_action
                .entry(format!("{}:{}", r.service, r.action))
                .or_default() += 1;
            counts.ours_elapsed_ms += r.elapsed_ms;
            *counts
                .ours_elapsed_ms_by_service
                .entry(r.service.clone())
                .or_default() += r.elapsed_ms;
            counts.items_written += r.items_written;
            counts.api_key_writes += r.api_key_writes;
            counts.write_units += r.write_units;
            counts.items_read += r.items_read;
            counts.read_units += r.read_units;
            if r.action == "TransactWriteItems" {
                counts.transactions += 1;
                counts.max_transaction_size = counts.max_transaction_size.max(r.transaction_size);
            }
        }
        counts
    }

    pub fn ours_total(&self) -> u64 {
        self.ours_by_service.values().sum()
    }

    pub fn ours(&self, service: &str) -> u64 {
        self.ours_by_service.get(service).copied().unwrap_or(0)
    }

    /// Mean time the emulators took per request of our code, in ms.
    pub fn ours_mean_ms(&self) -> f64 {
        self.ours_elapsed_ms / self.ours_total().max(1) as f64
    }

    pub fn event_source_total(&self) -> u64 {
        self.event_source.values().sum()
    }
}

/// The counting hook: one record per answered call.
#[derive(Default)]
struct Counter {
    log: Mutex<Vec<Record>>,
}

impl Hook for Counter {
    fn after(&self, call: &AwsCall, answer: &Answer) {
        let mut record = classify(
            &call.headers,
            call.query.as_deref(),
            &call.body,
            &answer.body,
        );
        record.status = answer.status.as_u16();
        record.at = Some(Instant::now());
        record.elapsed_ms = answer.elapsed.as_secs_f64() * 1000.0;
        if answer.status.is_success() {
            measure(&mut record, &call.body, &answer.body);
        } else {
            record.status_changes.clear();
        }
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(record);
    }
}

/// The gateway with a counter; stops when dropped.
pub struct CountingProxy {
    proxy: AwsProxy,
    counter: Arc<Counter>,
}

impl CountingProxy {
    pub async fn start(upstream: &str) -> Result<CountingProxy> {
        CountingProxy::start_routed(Upstreams::moto(upstream)).await
    }

    pub async fn start_routed(upstreams: Upstreams) -> Result<CountingProxy> {
        CountingProxy::start_guarded(upstreams, Vec::new()).await
    }

    /// A gateway to `upstreams` that runs `guards` (the functions' roles, AWS's limits) before
    /// counting what the emulators answered.
    pub async fn start_guarded(
        upstreams: Upstreams,
        guards: Vec<Arc<dyn Hook>>,
    ) -> Result<CountingProxy> {
        let counter = Arc::new(Counter::default());
        let mut hooks = guards;
        hooks.push(counter.clone());
        let proxy = AwsProxy::start(upstreams, hooks).await?;
        Ok(CountingProxy { proxy, counter })
    }

    pub fn url(&self) -> String {
        self.proxy.url()
    }

    /// Every record so far.
    pub fn records(&self) -> Vec<Record> {
        self.counter
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many records there are: a mark to take `records_since` from.
    pub fn mark(&self) -> usize {
        self.counter
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    pub fn records_since(&self, mark: usize) -> Vec<Record> {
        let log = self.counter.log.lock().unwrap_or_else(|e| e.into_inner());
        log.get(mark..).map(<[Record]>::to_vec).unwrap_or_default()
    }
}

/// Service and action from `X-Amz-Target` (JSON protocols), else the SigV4 credential scope
/// and the query protocol's `Action`.
pub fn classify(headers: &HeaderMap, query: Option<&str>, body: &Bytes, _answer: &Bytes) -> Record {
    let mut record = Record::default();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    if let Some(target) = header("x-amz-target") {
        let (prefix, action) = target.split_once('.').unwrap_or((target.as_str(), ""));
        record.service = if prefix.starts_with("DynamoDB") {
            "dynamodb".into()
        } else if prefix.starts_with("AmazonSQS") {
            "sqs".into()
        } else if prefix.eq_ignore_ascii_case("secretsmanager") {
            "secretsmanager".into()
        } else {
            prefix.to_ascii_lowercase()
        };
        record.action = action.to_string();
    } else {
        record.service = header("authorization")
            .and_then(|auth| {
                let scope = auth.split("Credential=").nth(1)?;
                let scope = scope.split([',', ' ']).next()?;
                scope.split('/').nth(3).map(str::to_string)
            })
            .unwrap_or_else(|| "unknown".into());
        let form = std::str::from_utf8(body).unwrap_or_default();
        record.action = [query.unwrap_or_default(), form]
            .iter()
            .flat_map(|q| q.split('&'))
            .find_map(|pair| pair.strip_prefix("Action=").map(str::to_string))
            .unwrap_or_else(|| "unknown".into());
    }
    if record.service == "sqs"
        && let Ok(json) = serde_json::from_slice::<Value>(body)
    {
        record.queue = json["QueueUrl"].as_str().map(str::to_string);
    }
    record
}

pub use muchaw_local::aws_proxy::limits::item_size;

/// Writes: 1 WCU per KB of each item (an update's item is taken as ≤ 1 KB), twice that inside a
/// transaction. Reads: 1 RCU per 4 KB strongly consistent, half that eventually consistent;
/// a query rounds the total of what it read, a GetItem/BatchGetItem each item.
fn measure(record: &mut Record, body: &Bytes, answer: &Bytes) {
    if record.service != "dynamodb" {
        if record.action == "ReceiveMessage"
            && let Ok(json) = serde_json::from_slice::<Value>(answer)
        {
            record.received = json["Messages"].as_array().map_or(0, Vec::len);
        }
        return;
    }
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let response: Value = serde_json::from_slice(answer).unwrap_or(Value::Null);
    let kb = |size: u64| (size.max(1)).div_ceil(1024) as f64;
    let read_units = |size: u64, consistent: bool| {
        let units = (size.max(1)).div_ceil(4096) as f64;
        if consistent { units } else { units / 2.0 }
    };
    let consistent = |v: &Value| v["ConsistentRead"].as_bool() == Some(true);
    match record.action.as_str() {
        "PutItem" => {
            record.items_written = 1;
            record.write_units = kb(item_size(&request["Item"]));
        }
        "UpdateItem" | "DeleteItem" => {
            record.items_written = 1;
            record.write_units = 1.0;
            let partition = request["Key"]["PK"]["S"].as_str().unwrap_or_default();
            record.api_key_writes = u64::from(partition.starts_with("APIKEY#"));
        }
        "BatchWriteItem" => {
            for requests in request["RequestItems"]
                .as_object()
                .into_iter()
                .flat_map(|t| t.values())
                .filter_map(Value::as_array)
            {
                for r in requests {
                    record.items_written += 1;
                    record.write_units += match r.get("PutRequest") {
                        Some(put) => kb(item_size(&put["Item"])),
                        None => 1.0,
                    };
                }
            }
        }
        "TransactWriteItems" => {
            let items = request["TransactItems"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            record.transaction_size = items.len();
            for item in &items {
                if let Some(put) = item.get("Put") {
                    let sk = put["Item"]["SK"]["S"].as_str().unwrap_or_default();
                    let expected =
                        put["ExpressionAttributeValues"][":expectedStatus"]["S"].as_str();
                    let to = put["Item"]["status"]["S"].as_str();
                    match (sk.strip_prefix("NUMBER#"), expected, to) {
                        // A lifecycle commit: the number put whole, conditioned on the status
                        // it expects; a status change when the two differ.
                        (Some(id), Some(expected), Some(to)) if expected != to => {
                            record.status_changes.push((id.to_string(), to.to_string()));
                        }
                        (Some(_), None, _) => record.creates_number = true,
                        _ => {}
                    }
                    record.items_written += 1;
                    record.write_units += 2.0 * kb(item_size(&put["Item"]));
                } else if item.get("Update").is_some() || item.get("Delete").is_some() {
                    record.items_written += 1;
                    record.write_units += 2.0;
                } else {
                    // A condition check reads the item: charged as a write-sized read.
                    record.write_units += 2.0;
                }
            }
        }
        "GetItem" => {
            record.items_read = u64::from(response.get("Item").is_some());
            record.read_units = read_units(item_size(&response["Item"]), consistent(&request));
        }
        "BatchGetItem" => {
            for (table, items) in response["Responses"].as_object().into_iter().flatten() {
                let strong = consistent(&request["RequestItems"][table]);
                for item in items.as_array().into_iter().flatten() {
                    record.items_read += 1;
                    record.read_units += read_units(item_size(item), strong);
                }
            }
        }
        "Query" | "Scan" => {
            let size: u64 = response["Items"]
                .as_array()
                .map_or(0, |items| items.iter().map(item_size).sum());
            record.items_read = response["ScannedCount"]
                .as_u64()
                .or_else(|| response["Count"].as_u64())
                .unwrap_or(0);
            record.read_units = read_units(size, consistent(&request));
        }
        "TransactGetItems" => {
            for item in response["Responses"].as_array().into_iter().flatten() {
                record.items_read += 1;
                record.read_units += 2.0 * read_units(item_size(&item["Item"]), true);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sizes_follow_dynamodb_rules() {
        assert_eq!(item_size(&json!({"PK": {"S": "abc"}})), 5);
        assert_eq!(item_size(&json!({"n": {"N": "1234"}})), 1 + 3);
        assert_eq!(item_size(&json!({"b": {"BOOL": true}})), 2);
    }

    #[test]
    fn a_transaction_counts_its_writes_and_status_change() {
        let mut record = Record {
            service: "dynamodb".into(),
            action: "TransactWriteItems".into(),
            ..Record::default()
        };
        let body = json!({"TransactItems": [
            {"Put": {"Item": {"PK": {"S": "ACCOUNT#a"}, "SK": {"S": "NUMBER#n1"}, "status": {"S": "ACTIVE"}},
                     "ExpressionAttributeValues": {":expectedStatus": {"S": "PENDING"}}}},
            {"Update": {"Key": {"PK": {"S": "ACCOUNT#a"}, "SK": {"S": "COUNTERS"}}}},
            {"Put": {"Item": {"PK": {"S": "EVENT#e"}}}},
            {"ConditionCheck": {"Key": {"PK": {"S": "PHONE#p"}}}}
        ]});
        measure(
            &mut record,
            &Bytes::from(body.to_string()),
            &Bytes::from_static(b"{}"),
        );
        assert_eq!(record.items_written, 3);
        assert_eq!(record.transaction_size, 4);
        assert_eq!(record.status_changes, vec![("n1".into(), "ACTIVE".into())]);
    }

    #[test]
    fn an_api_key_s_last_use_mark_is_counted_apart_from_the_numbers_writes() {
        let update = |partition: &str| {
            let mut record = Record {
                service: "dynamodb".into(),
                action: "UpdateItem".into(),
                ..Record::default()
            };
            let body = json!({"Key": {"PK": {"S": partition}, "SK": {"S": "APIKEY"}},
                "UpdateExpression": "SET lastUsedHour = :hour"});
            measure(
                &mut record,
                &Bytes::from(body.to_string()),
                &Bytes::from_static(b"{}"),
            );
            record
        };

        let counts = Counts::of(&[update("APIKEY#0a1b"), update("ACCOUNT#a")]);

        assert_eq!(counts.items_written, 2);
        assert_eq!(counts.api_key_writes, 1);
    }

    #[test]
    fn classifies_json_and_query_protocols() {
        let mut headers = HeaderMap::new();
        headers.insert("x-amz-target", "AmazonSQS.ReceiveMessage".parse().unwrap());
        let r = classify(
            &headers,
            None,
            &Bytes::from_static(br#"{"QueueUrl":"http://q/1"}"#),
            &Bytes::new(),
        );
        assert_eq!(
            (r.service.as_str(), r.action.as_str()),
            ("sqs", "ReceiveMessage")
        );
        assert_eq!(r.queue.as_deref(), Some("http://q/1"));
        assert!(r.is_event_source());
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/sqs/aws4_request, SignedHeaders=host"
                .parse()
                .unwrap(),
        );
        let r = classify(
            &headers,
            None,
            &Bytes::from_static(b"Action=SendMessage&QueueUrl=x"),
            &Bytes::new(),
        );
        assert_eq!(
            (r.service.as_str(), r.action.as_str()),
            ("sqs", "SendMessage")
        );
    }

    #[test]
    fn emulator_time_is_summed_by_service_for_our_requests_only() {
        let record = |service: &str, action: &str, elapsed_ms: f64| Record {
            service: service.into(),
            action: action.into(),
            elapsed_ms,
            ..Record::default()
        };
        let counts = Counts::of(&[
            record("dynamodb", "GetItem", 2.0),
            record("dynamodb", "UpdateItem", 3.0),
            record("sqs", "SendMessage", 20.0),
            // The event source's poll is not our code's
            record("sqs", "ReceiveMessage", 1000.0),
        ]);
        assert_eq!(counts.ours_elapsed_ms, 25.0);
        assert_eq!(
            counts.ours_elapsed_ms_by_service.get("dynamodb"),
            Some(&5.0)
        );
        assert_eq!(counts.ours_elapsed_ms_by_service.get("sqs"), Some(&20.0));
    }

    #[test]
    fn only_receives_that_returned_messages_and_deletes_are_deliveries() {
        let event_source = |action: &str, received: usize| Record {
            service: "sqs".into(),
            action: action.into(),
            received,
            ..Record::default()
        };
        let counts = Counts::of(&[
            event_source("ReceiveMessage", 0),
            event_source("ReceiveMessage", 0),
            event_source("ReceiveMessage", 3),
            event_source("DeleteMessageBatch", 0),
        ]);
        assert_eq!(counts.event_source_total(), 4);
        assert_eq!(counts.event_source_deliveries, 2);
        assert_eq!(counts.ours_total(), 0);
    }
}
