//! AWS's limits that the emulators forgive, refused here as AWS refuses them: SQS's visibility
//! counted from the receive, delays, message and batch sizes; DynamoDB's item size, batch and
//! transaction sizes, and one operation per item in a transaction. [`LIMITS`] is the table
//! `docs/AWS-LIMITS.md` is generated from, with the test that shows each.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::Value;

use super::{Answer, AwsCall, Hook, Service, Verdict, aws_error};

/// SQS: the longest a message stays invisible, counted from the receive that delivered it.
pub const SQS_MAX_VISIBILITY_SECONDS: u64 = 43_200;
/// SQS: the longest `DelaySeconds` of a message or queue.
pub const SQS_MAX_DELAY_SECONDS: u64 = 900;
/// SQS: the largest message (body and attributes), and the largest batch in all (1 MiB).
pub const SQS_MAX_MESSAGE_BYTES: usize = 1_048_576;
/// SQS: entries in one batch request; messages in one receive.
pub const SQS_MAX_BATCH_ENTRIES: usize = 10;
/// SQS: a receive's long poll.
pub const SQS_MAX_WAIT_SECONDS: u64 = 20;
/// DynamoDB: the largest item, attribute names included.
pub const DYNAMODB_MAX_ITEM_BYTES: u64 = 400 * 1024;
/// DynamoDB: actions in one `TransactWriteItems` / `TransactGetItems`.
pub const DYNAMODB_MAX_TRANSACTION_ITEMS: usize = 100;
/// DynamoDB: the size of one transaction's request.
pub const DYNAMODB_MAX_TRANSACTION_BYTES: usize = 4 * 1024 * 1024;
/// DynamoDB: put and delete requests in one `BatchWriteItem`.
pub const DYNAMODB_MAX_BATCH_WRITE: usize = 25;
/// DynamoDB: keys in one `BatchGetItem`.
pub const DYNAMODB_MAX_BATCH_GET: usize = 100;
/// Lambda: a synchronous invocation's request and response payloads.
pub const LAMBDA_MAX_SYNC_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;
/// Lambda: a function's environment variables, names and values together.
pub const LAMBDA_MAX_ENVIRONMENT_BYTES: usize = 4 * 1024;
/// API Gateway HTTP API: the longest an integration may take.
pub const API_GATEWAY_TIMEOUT: Duration = Duration::from_secs(30);
/// API Gateway HTTP API: the largest request body.
pub const API_GATEWAY_MAX_PAYLOAD_BYTES: usize = 10 * 1024 * 1024;

/// One row of the limits table.
pub struct LimitRow {
    pub service: &'static str,
    pub limit: &'static str,
    pub value: &'static str,
    pub enforced_by: &'static str,
    pub shown_by: &'static str,
}

/// Each limit, AWS's documented value, who enforces it here, and the test that shows it.
pub const LIMITS: &[LimitRow] = &[
    LimitRow {
        service: "SQS",
        limit: "visibility timeout, counted from the receive that delivered the message",
        value: "12 h (43,200 s)",
        enforced_by: "the AWS gateway (`aws_proxy::limits`): receipt handles' receive instants",
        shown_by: "`aws_limits::sqs_refuses_a_visibility_past_twelve_hours_from_the_receive`",
    },
    LimitRow {
        service: "SQS",
        limit: "`DelaySeconds` of a message",
        value: "900 s",
        enforced_by: "the AWS gateway",
        shown_by: "`aws_limits::sqs_refuses_a_delay_over_fifteen_minutes`",
    },
    LimitRow {
        service: "SQS",
        limit: "message size (body and attributes); a batch in all",
        value: "1 MiB (1,048,576 bytes)",
        enforced_by: "the AWS gateway",
        shown_by: "`aws_limits::sqs_refuses_a_message_over_one_mebibyte`",
    },
    LimitRow {
        service: "SQS",
        limit: "entries of a batch request; messages of one receive; long poll",
        value: "10; 10; 20 s",
        enforced_by: "the AWS gateway",
        shown_by: "`aws_limits::sqs_refuses_a_batch_of_eleven`",
    },
    LimitRow {
        service: "DynamoDB",
        limit: "item size (attribute names and values)",
        value: "400 KB",
        enforced_by: "the AWS gateway; DynamoDB Local where it runs",
        shown_by: "`aws_limits::dynamodb_refuses_an_item_over_400_kb`",
    },
    LimitRow {
        service: "DynamoDB",
        limit: "actions of one transaction; its request size; one action per item",
        value: "100; 4 MB; one",
        enforced_by: "the AWS gateway; DynamoDB Local where it runs",
        shown_by: "`aws_limits::dynamodb_refuses_two_actions_on_one_item_in_a_transaction`, `aws_limits::dynamodb_refuses_a_transaction_of_101_items`",
    },
    LimitRow {
        service: "DynamoDB",
        limit: "`BatchWriteItem` requests; `BatchGetItem` keys",
        value: "25; 100",
        enforced_by: "the AWS gateway; DynamoDB Local where it runs",
        shown_by: "`aws_limits::dynamodb_refuses_a_batch_write_of_26`",
    },
    LimitRow {
        service: "Lambda",
        limit: "synchronous invocation payload, request and response",
        value: "6 MB",
        enforced_by: "the local Runtime API (`runtime_api.rs`)",
        shown_by: "`runtime_api::tests::a_response_over_six_megabytes_is_refused`",
    },
    LimitRow {
        service: "Lambda",
        limit: "environment variables, names and values together",
        value: "4 KB",
        enforced_by: "`limits::environment_size` on every function of template.yaml",
        shown_by: "`aws_limits::every_functions_environment_fits_in_four_kilobytes`",
    },
    LimitRow {
        service: "API Gateway (HTTP API)",
        limit: "integration timeout; request payload",
        value: "30 s; 10 MB",
        enforced_by: "the template-routed local API (`binaries.rs`): `503` after 30 s, `413` over 10 MB",
        shown_by: "`aws_limits::the_api_refuses_a_body_over_ten_megabytes`",
    },
];

/// The limits table as Markdown (`docs/AWS-LIMITS.md`).
pub fn limits_markdown() -> String {
    let mut out = String::from(
        "# AWS limits the emulators forgive, and who enforces them here\n\n\
         Generated from `tools/local/src/aws_proxy/limits.rs` (`LIMITS`); a test fails when this \
         file differs from it (`UPDATE_DOCS=1 cargo test -p muchaw-local limits_doc` rewrites it).\n\n\
         | service | limit | AWS's value | enforced here by | shown by |\n|---|---|---|---|---|\n",
    );
    for row in LIMITS {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            row.service, row.limit, row.value, row.enforced_by, row.shown_by
        ));
    }
    out
}

/// A function's environment as Lambda counts it against its 4 KB.
pub fn environment_size<'a>(variables: impl IntoIterator<Item = (&'a str, &'a str)>) -> usize {
    variables
        .into_iter()
        .map(|(name, value)| name.len() + value.len())
        .sum()
}

/// The limits hook: remembers when each receipt handle was received.
#[derive(Default)]
pub struct Limits {
    received: Mutex<HashMap<String, Instant>>,
    /// Table name → its key attributes (for "one action per item").
    keys: Mutex<HashMap<String, Vec<String>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn invalid(service: Service, code: &str, message: String) -> Verdict {
    Verdict::Refuse(aws_error(service, StatusCode::BAD_REQUEST, code, &message))
}

impl Limits {
    /// Tells the hook a table's key attributes (`PK`, `SK`).
    pub fn register_table(&self, table: &str, key_attributes: Vec<String>) {
        lock(&self.keys).insert(table.to_string(), key_attributes);
    }

    fn visibility(
        &self,
        call: &AwsCall,
        receipt: &str,
        seconds: u64,
        now: Instant,
    ) -> Option<Verdict> {
        if seconds > SQS_MAX_VISIBILITY_SECONDS {
            return Some(invalid(
                call.service,
                "InvalidParameterValue",
                format!(
                    "Value {seconds} for parameter VisibilityTimeout is invalid. Reason: Must be between 0 and 43200."
                ),
            ));
        }
        let received = lock(&self.received).get(receipt).copied()?;
        let since = now.saturating_duration_since(received).as_secs_f64();
        if since + seconds as f64 > SQS_MAX_VISIBILITY_SECONDS as f64 {
            return Some(invalid(
                call.service,
                "InvalidParameterValue",
                format!(
                    "Value {seconds} for parameter VisibilityTimeout is invalid. Reason: Total \
                     VisibilityTimeout for the message is beyond the limit [43200 seconds]."
                ),
            ));
        }
        None
    }

    fn sqs(&self, call: &AwsCall) -> Option<Verdict> {
        let body = &call.json;
        let service = call.service;
        let too_long = |field: &str, value: u64, max: u64| {
            (value > max).then(|| {
                invalid(
                    service,
                    "InvalidParameterValue",
                    format!("Value {value} for parameter {field} is invalid. Reason: Must be between 0 and {max}."),
                )
            })
        };
        let message_size = |entry: &Value| {
            entry["MessageBody"].as_str().map_or(0, str::len)
                + entry["MessageAttributes"].as_object().map_or(0, |attrs| {
                    attrs
                        .iter()
                        .map(|(name, value)| name.len() + value.to_string().len())
                        .sum()
                })
        };
        let entries = body["Entries"].as_array();
        if let Some(entries) = entries {
            if entries.len() > SQS_MAX_BATCH_ENTRIES {
                return Some(invalid(
                    service,
                    "TooManyEntriesInBatchRequest",
                    format!(
                        "Maximum number of entries per request are 10. You have sent {}.",
                        entries.len()
                    ),
                ));
            }
            let ids: HashSet<_> = entries.iter().map(|e| e["Id"].to_string()).collect();
            if ids.len() != entries.len() {
                return Some(invalid(
                    service,
                    "BatchEntryIdsNotDistinct",
                    "Two or more batch entries in the request have the same Id.".into(),
                ));
            }
        }
        match call.action.as_str() {
            "SendMessage" => too_long("DelaySeconds", body["DelaySeconds"].as_u64().unwrap_or(0), SQS_MAX_DELAY_SECONDS)
                .or_else(|| {
                    (message_size(body) > SQS_MAX_MESSAGE_BYTES).then(|| {
                        invalid(
                            service,
                            "InvalidParameterValue",
                            "One or more parameters are invalid. Reason: Message must be shorter than 1048576 bytes.".into(),
                        )
                    })
                }),
            "SendMessageBatch" => {
                let entries = entries?;
                for entry in entries {
                    if let Some(refused) = too_long("DelaySeconds", entry["DelaySeconds"].as_u64().unwrap_or(0), SQS_MAX_DELAY_SECONDS) {
                        return Some(refused);
                    }
                }
                let total: usize = entries.iter().map(message_size).sum();
                (total > SQS_MAX_MESSAGE_BYTES).then(|| {
                    invalid(
                        service,
                        "BatchRequestTooLong",
                        "Batch requests cannot be longer than 1048576 bytes.".into(),
                    )
                })
            }
            "ReceiveMessage" => {
                let max = body["MaxNumberOfMessages"].as_u64().unwrap_or(1);
                if max == 0 || max > SQS_MAX_BATCH_ENTRIES as u64 {
                    return Some(invalid(
                        service,
                        "InvalidParameterValue",
                        format!("Value {max} for parameter MaxNumberOfMessages is invalid. Reason: Must be between 1 and 10."),
                    ));
                }
                too_long("WaitTimeSeconds", body["WaitTimeSeconds"].as_u64().unwrap_or(0), SQS_MAX_WAIT_SECONDS)
                    .or_else(|| too_long("VisibilityTimeout", body["VisibilityTimeout"].as_u64().unwrap_or(0), SQS_MAX_VISIBILITY_SECONDS))
            }
            "ChangeMessageVisibility" => {
                let receipt = body["ReceiptHandle"].as_str().unwrap_or_default();
                let seconds = body["VisibilityTimeout"].as_u64().unwrap_or(0);
                self.visibility(call, receipt, seconds, Instant::now())
            }
            "ChangeMessageVisibilityBatch" => entries?.iter().find_map(|entry| {
                let receipt = entry["ReceiptHandle"].as_str().unwrap_or_default();
                let seconds = entry["VisibilityTimeout"].as_u64().unwrap_or(0);
                self.visibility(call, receipt, seconds, Instant::now())
            }),
            _ => None,
        }
    }

    fn dynamodb(&self, call: &AwsCall) -> Option<Verdict> {
        let body = &call.json;
        let service = call.service;
        let validation = |message: String| invalid(service, "ValidationException", message);
        let too_big = |item: &Value| {
            (item_size(item) > DYNAMODB_MAX_ITEM_BYTES)
                .then(|| validation("Item size has exceeded the maximum allowed size".into()))
        };
        match call.action.as_str() {
            "PutItem" => too_big(&body["Item"]),
            "TransactWriteItems" | "TransactGetItems" => {
                let items = body["TransactItems"].as_array()?;
                if items.len() > DYNAMODB_MAX_TRANSACTION_ITEMS {
                    return Some(validation(format!(
                        "1 validation error detected: Value at 'transactItems' failed to satisfy constraint: Member must have length less than or equal to 100 (got {})",
                        items.len()
                    )));
                }
                if call.body.len() > DYNAMODB_MAX_TRANSACTION_BYTES {
                    return Some(validation(
                        "Transaction request cannot be larger than 4 MB".into(),
                    ));
                }
                let keys = lock(&self.keys).clone();
                let mut seen = HashSet::new();
                for item in items {
                    let (kind, inner) = item.as_object()?.iter().next()?;
                    if kind == "Put"
                        && let Some(refused) = too_big(&inner["Item"])
                    {
                        return Some(refused);
                    }
                    let table = inner["TableName"].as_str().unwrap_or_default();
                    let key = match kind.as_str() {
                        "Put" => keys.get(table).map(|names| {
                            names
                                .iter()
                                .map(|n| inner["Item"][n].to_string())
                                .collect::<Vec<_>>()
                                .join("|")
                        }),
                        _ => Some(inner["Key"].to_string()),
                    };
                    if let Some(key) = key
                        && !seen.insert((table.to_string(), canonical_key(&key)))
                    {
                        return Some(validation(
                            "Transaction request cannot include multiple operations on one item"
                                .into(),
                        ));
                    }
                }
                None
            }
            "BatchWriteItem" => {
                let count: usize = body["RequestItems"]
                    .as_object()?
                    .values()
                    .map(|requests| requests.as_array().map_or(0, Vec::len))
                    .sum();
                (count > DYNAMODB_MAX_BATCH_WRITE).then(|| {
                    validation(format!(
                        "Too many items requested for the BatchWriteItem call ({count} > 25)"
                    ))
                })
            }
            "BatchGetItem" => {
                let count: usize = body["RequestItems"]
                    .as_object()?
                    .values()
                    .map(|request| request["Keys"].as_array().map_or(0, Vec::len))
                    .sum();
                (count > DYNAMODB_MAX_BATCH_GET).then(|| {
                    validation(format!(
                        "Too many items requested for the BatchGetItem call ({count} > 100)"
                    ))
                })
            }
            _ => None,
        }
    }
}

/// A key's JSON with its attributes in one order, so the same item compares equal.
fn canonical_key(text: &str) -> String {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => {
            let sorted: std::collections::BTreeMap<_, _> = map.into_iter().collect();
            format!("{sorted:?}")
        }
        _ => text.to_string(),
    }
}

impl Hook for Limits {
    fn before(&self, call: &AwsCall) -> Verdict {
        let refused = match call.service {
            Service::Sqs => self.sqs(call),
            Service::DynamoDb => self.dynamodb(call),
            _ => None,
        };
        refused.unwrap_or(Verdict::Forward)
    }

    fn after(&self, call: &AwsCall, answer: &Answer) {
        if call.service != Service::Sqs
            || call.action != "ReceiveMessage"
            || !answer.status.is_success()
        {
            return;
        }
        let Ok(received) = serde_json::from_slice::<Value>(&answer.body) else {
            return;
        };
        let mut handles = lock(&self.received);
        // Handles of messages long gone would pile up: a receive older than the limit can no
        // longer be extended anyway.
        if handles.len() > 100_000 {
            let horizon = Duration::from_secs(SQS_MAX_VISIBILITY_SECONDS);
            handles.retain(|_, at| at.elapsed() < horizon);
        }
        for message in received["Messages"].as_array().into_iter().flatten() {
            if let Some(handle) = message["ReceiptHandle"].as_str() {
                handles.insert(handle.to_string(), call.received_at);
            }
        }
    }
}

/// DynamoDB's item size: attribute names plus values (numbers approximated by their digits).
pub fn item_size(item: &Value) -> u64 {
    item.as_object()
        .map(|attrs| {
            attrs
                .iter()
                .map(|(name, value)| name.len() as u64 + value_size(value))
                .sum()
        })
        .unwrap_or(0)
}

fn value_size(value: &Value) -> u64 {
    let Some((kind, inner)) = value.as_object().and_then(|o| o.iter().next()) else {
        return 0;
    };
    match kind.as_str() {
        "S" => inner.as_str().map_or(0, |s| s.len() as u64),
        "N" => inner.as_str().map_or(0, |s| {
            (s.trim_start_matches('-').len() as u64).div_ceil(2) + 1
        }),
        "B" => inner.as_str().map_or(0, |s| (s.len() as u64 * 3) / 4),
        "BOOL" | "NULL" => 1,
        "SS" | "NS" | "BS" => inner.as_array().map_or(0, |items| {
            items
                .iter()
                .map(|i| i.as_str().map_or(0, |s| s.len() as u64))
                .sum()
        }),
        "M" => {
            3 + inner.as_object().map_or(0, |m| {
                m.iter()
                    .map(|(k, v)| 1 + k.len() as u64 + value_size(v))
                    .sum()
            })
        }
        "L" => {
            3 + inner
                .as_array()
                .map_or(0, |l| l.iter().map(|v| 1 + value_size(v)).sum())
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_doc_is_generated_from_the_table() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/AWS-LIMITS.md");
        let generated = limits_markdown();
        if std::env::var_os("UPDATE_DOCS").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            on_disk, generated,
            "docs/AWS-LIMITS.md is stale: run with UPDATE_DOCS=1"
        );
    }

    #[test]
    fn sizes_follow_dynamodb_rules() {
        let item = serde_json::json!({"PK": {"S": "abc"}, "n": {"N": "12345"}});
        assert_eq!(item_size(&item), 2 + 3 + 1 + 4);
    }
}
