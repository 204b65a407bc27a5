//! What the measured traffic would cost on AWS: 1,000 onboardings, and 1,000 live numbers for a
//! month. Every quantity comes from a run's measurements ([`Usage`], [`LiveUsage`]); only the
//! prices are constants, each with where and when it was read.

/// The day the prices below were looked up (public pages, us-east-1).
pub const PRICES_CHECKED: &str = "2026-12-03";

/// Lambda, arm64: per GB-second of duration (first 7.5 billion GB-s a month).
/// Source: wring.co/blog/aws-lambda-pricing-guide (2026-03-08), cloudchipr.com/blog/aws-lambda-pricing.
pub const LAMBDA_ARM_GB_SECOND: f64 = 0.000_013_333_4;
/// Lambda: per request (invocation), both architectures. Same sources.
pub const LAMBDA_REQUEST: f64 = 0.20 / 1e6;
/// DynamoDB on-demand, Standard table class: per write request unit (after the November 2024
/// cut). Source: airbyte.com/data-engineering-resources/dynamodb-pricing (2025-07-21).
pub const DYNAMODB_WRITE_UNIT: f64 = 0.625 / 1e6;
/// DynamoDB on-demand: per read request unit. Same source.
pub const DYNAMODB_READ_UNIT: f64 = 0.125 / 1e6;
/// DynamoDB Standard storage, per GB-month beyond the free 25 GB. Source: aws.amazon.com/dynamodb/pricing.
pub const DYNAMODB_GB_MONTH: f64 = 0.25;
/// SQS standard queue: per request (each 64 KB chunk), first 100 billion a month.
/// Source: cloudburn.io/blog/amazon-sqs-pricing (2026-03-14), factualminds.com (2026-06-13).
pub const SQS_REQUEST: f64 = 0.40 / 1e6;
/// Secrets Manager: per secret per month. Source: hivebook.wiki (Secrets Manager), the issue.
pub const SECRET_MONTH: f64 = 0.40;
/// Secrets Manager: per API call ($0.05 per 10,000). Same source.
pub const SECRETS_API_CALL: f64 = 0.05 / 1e4;
/// CloudWatch Logs, Standard class: per GB ingested. Source: c3x.dev/blog/cloudwatch-logs-cost-optimization
/// ("us-east-1, June 2026"), hykell.com (CloudWatch Logs pricing).
pub const LOGS_INGESTED_GB: f64 = 0.50;

use crate::provisioning::ProvisioningResult;

/// A function's `MemorySize`: its own, else `Globals.Function`'s, else Lambda's default 128 MB.
pub fn memory_mb(template: &muchaw_local::Template, function_id: &str) -> f64 {
    let of = |props: Option<&serde_yaml::Value>| {
        props
            .and_then(|p| p.get("MemorySize"))
            .and_then(muchaw_local::template::scalar)
            .and_then(|m| m.parse::<f64>().ok())
    };
    let own = template
        .resource(function_id)
        .ok()
        .and_then(|r| r.get("Properties"));
    of(own)
        .or_else(|| of(template.function_globals()))
        .unwrap_or(128.0)
}

/// One onboarding, from a one-at-a-time run: every SQS-fed function's batches and time, the
/// signup callback's, and the AWS requests, per activated number.
pub fn onboarding(r: &ProvisioningResult, memory: impl Fn(&str) -> f64) -> Usage {
    let numbers = r.activated.max(1) as f64;
    let mut functions = vec![FunctionUse {
        function: "SignupCallbackFunction".into(),
        invocations: r.callback_time.n as f64 / numbers,
        seconds: r.callback_time.mean * r.callback_time.n as f64 / 1000.0 / numbers,
        memory_mb: memory("SignupCallbackFunction"),
    }];
    functions.extend(r.run_totals.iter().map(|(function, totals)| FunctionUse {
        function: function.clone(),
        invocations: totals.runs as f64 / numbers,
        seconds: totals.time.as_secs_f64() / numbers,
        memory_mb: memory(function),
    }));
    Usage {
        functions,
        write_units: r.counts.write_units / numbers,
        read_units: r.counts.read_units / numbers,
        sqs_requests: (r.counts.ours("sqs") + r.counts.event_source_deliveries) as f64 / numbers,
        secrets_api_calls: r.counts.ours("secretsmanager") as f64 / numbers,
        log_bytes: r.log_bytes.map(|b| b as f64 / numbers),
    }
}

/// One live number for a month, from a one-at-a-time run: what the table and Secrets Manager
/// keep per activated number, and one health-sync run's share per live number.
pub fn live(r: &ProvisioningResult, memory: impl Fn(&str) -> f64) -> Option<LiveUsage> {
    let sync = r.health_sync.as_ref()?;
    let numbers = r.activated.max(1) as f64;
    let live = sync.live_numbers.max(1) as f64;
    let action = |name: &str| r.counts.ours_by_action.get(name).copied().unwrap_or(0) as f64;
    Some(LiveUsage {
        stored_bytes: r.stored.bytes as f64 / numbers,
        secrets: (action("secretsmanager:CreateSecret") - action("secretsmanager:DeleteSecret"))
            .max(0.0)
            / numbers,
        sync: Usage {
            // One invocation an hour whatever the numbers: counted once in `monthly_lines`.
            functions: vec![FunctionUse {
                function: "HealthSyncFunction".into(),
                invocations: 0.0,
                seconds: sync.took.as_secs_f64() / live,
                memory_mb: memory("HealthSyncFunction"),
            }],
            write_units: sync.counts.write_units / live,
            read_units: sync.counts.read_units / live,
            sqs_requests: (sync.counts.ours("sqs") + sync.counts.event_source_deliveries) as f64
                / live,
            secrets_api_calls: sync.counts.ours("secretsmanager") as f64 / live,
            log_bytes: sync.log_bytes.map(|b| b as f64 / live),
        },
    })
}

/// The price table for the report: (item, price, unit, source).
pub fn prices() -> Vec<(&'static str, f64, &'static str, &'static str)> {
    vec![
        (
            "Lambda duration, arm64",
            LAMBDA_ARM_GB_SECOND,
            "GB-second",
            "wring.co AWS Lambda pricing guide (2026-03-08); cloudchipr.com",
        ),
        (
            "Lambda requests",
            LAMBDA_REQUEST * 1e6,
            "million invocations",
            "same",
        ),
        (
            "DynamoDB on-demand writes",
            DYNAMODB_WRITE_UNIT * 1e6,
            "million write request units",
            "airbyte.com DynamoDB pricing (2025-07-21, after the Nov 2024 cut)",
        ),
        (
            "DynamoDB on-demand reads",
            DYNAMODB_READ_UNIT * 1e6,
            "million read request units",
            "same",
        ),
        (
            "DynamoDB storage (Standard)",
            DYNAMODB_GB_MONTH,
            "GB-month (first 25 GB free)",
            "aws.amazon.com/dynamodb/pricing",
        ),
        (
            "SQS standard requests",
            SQS_REQUEST * 1e6,
            "million requests (64 KB chunks)",
            "cloudburn.io SQS pricing (2026-03-14); factualminds.com (2026-06-13)",
        ),
        (
            "Secrets Manager secrets",
            SECRET_MONTH,
            "secret-month",
            "hivebook.wiki Secrets Manager",
        ),
        (
            "Secrets Manager API calls",
            SECRETS_API_CALL * 1e4,
            "10,000 calls",
            "same",
        ),
        (
            "CloudWatch Logs ingestion",
            LOGS_INGESTED_GB,
            "GB",
            "c3x.dev (us-east-1, June 2026); hykell.com",
        ),
    ]
}

/// 730 hourly runs of the health sync a month (24 × 365 / 12).
pub const HOURS_PER_MONTH: f64 = 730.0;
/// DynamoDB bills 100 bytes of overhead per stored item.
pub const ITEM_OVERHEAD_BYTES: u64 = 100;
/// Lambda's SQS pollers per event source mapping when idle: five (Serverless Guru on the AWS
/// partner blog, "Understanding Amazon SQS and AWS Lambda Event Source Mapping"), each long-polling
/// 20 s: an estimate, as AWS does not document the idle poller count.
pub const IDLE_POLLERS_PER_QUEUE: f64 = 5.0;
pub const LONG_POLL_SECONDS: f64 = 20.0;

/// When no log bytes were measured: one JSON line of ~300 bytes per invocation (an estimate).
pub const ESTIMATED_LOG_BYTES_PER_INVOCATION: f64 = 300.0;

/// Per function: what one onboarding (or one health-sync run per live number) used of it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FunctionUse {
    pub function: String,
    pub invocations: f64,
    /// Summed duration, in seconds.
    pub seconds: f64,
    /// The template's `MemorySize`, in MB.
    pub memory_mb: f64,
}

impl FunctionUse {
    pub fn gb_seconds(&self) -> f64 {
        self.seconds * self.memory_mb / 1024.0
    }
}

/// What one onboarding used, measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Usage {
    pub functions: Vec<FunctionUse>,
    pub write_units: f64,
    pub read_units: f64,
    /// Our code's SQS requests plus the event source's receives that returned messages and its
    /// deletes (its empty polls are a fixed cost of the stack, not of a number).
    pub sqs_requests: f64,
    pub secrets_api_calls: f64,
    /// Bytes logged; `None` when not measured (then estimated per invocation).
    pub log_bytes: Option<f64>,
}

/// What one live number costs a month, measured: its stored bytes and secrets, and one
/// health-sync run's share per number (times 730 runs).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LiveUsage {
    pub stored_bytes: f64,
    pub secrets: f64,
    /// One health-sync run, per live number.
    pub sync: Usage,
}

/// One line of a bill.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    pub item: String,
    pub quantity: f64,
    pub unit: &'static str,
    pub usd: f64,
    /// The quantity is an estimate, not a measurement.
    pub estimated: bool,
}

impl Usage {
    pub fn invocations(&self) -> f64 {
        self.functions.iter().map(|f| f.invocations).sum()
    }

    pub fn gb_seconds(&self) -> f64 {
        self.functions.iter().map(FunctionUse::gb_seconds).sum()
    }

    fn log_gb(&self) -> (f64, bool) {
        match self.log_bytes {
            Some(bytes) => (bytes / 1e9, false),
            None => (
                self.invocations() * ESTIMATED_LOG_BYTES_PER_INVOCATION / 1e9,
                true,
            ),
        }
    }

    /// The bill for `times` × this usage.
    pub fn lines(&self, times: f64) -> Vec<Line> {
        let (log_gb, log_estimated) = self.log_gb();
        let line = |item: &str, quantity: f64, unit, price: f64| Line {
            item: item.to_string(),
            quantity: quantity * times,
            unit,
            usd: quantity * times * price,
            estimated: false,
        };
        vec![
            line(
                "Lambda duration",
                self.gb_seconds(),
                "GB-s",
                LAMBDA_ARM_GB_SECOND,
            ),
            line(
                "Lambda requests",
                self.invocations(),
                "invocations",
                LAMBDA_REQUEST,
            ),
            line(
                "DynamoDB writes",
                self.write_units,
                "WRU",
                DYNAMODB_WRITE_UNIT,
            ),
            line("DynamoDB reads", self.read_units, "RRU", DYNAMODB_READ_UNIT),
            line("SQS requests", self.sqs_requests, "requests", SQS_REQUEST),
            line(
                "Secrets Manager API calls",
                self.secrets_api_calls,
                "calls",
                SECRETS_API_CALL,
            ),
            Line {
                estimated: log_estimated,
                ..line("CloudWatch Logs ingestion", log_gb, "GB", LOGS_INGESTED_GB)
            },
        ]
    }
}

impl LiveUsage {
    /// A month of `numbers` live numbers: storage, secrets, and 730 health-sync runs.
    pub fn monthly_lines(&self, numbers: f64) -> Vec<Line> {
        let mut lines = vec![
            Line {
                item: "DynamoDB storage".into(),
                quantity: self.stored_bytes * numbers / 1e9,
                unit: "GB-month",
                usd: self.stored_bytes * numbers / 1e9 * DYNAMODB_GB_MONTH,
                estimated: false,
            },
            Line {
                item: "Secrets Manager secrets".into(),
                quantity: self.secrets * numbers,
                unit: "secret-months",
                usd: self.secrets * numbers * SECRET_MONTH,
                estimated: false,
            },
        ];
        lines.extend(
            self.sync
                .lines(numbers * HOURS_PER_MONTH)
                .into_iter()
                .filter(|l| l.item != "Lambda requests")
                .map(|l| Line {
                    item: format!("Health sync: {}", l.item),
                    ..l
                }),
        );
        lines.push(Line {
            item: "Health sync: Lambda requests (one run an hour, fixed)".into(),
            quantity: HOURS_PER_MONTH,
            unit: "invocations",
            usd: HOURS_PER_MONTH * LAMBDA_REQUEST,
            estimated: false,
        });
        lines
    }
}

/// The event source's empty receives over a month, for `queues` SQS-fed functions: a fixed cost
/// of the stack, whatever the numbers (estimated: see [`IDLE_POLLERS_PER_QUEUE`]).
pub fn idle_polling(queues: usize) -> Line {
    let receives =
        queues as f64 * IDLE_POLLERS_PER_QUEUE * HOURS_PER_MONTH * 3600.0 / LONG_POLL_SECONDS;
    Line {
        item: format!("SQS: the event source's empty polls, {queues} queues (per stack, fixed)"),
        quantity: receives,
        unit: "requests",
        usd: receives * SQS_REQUEST,
        estimated: true,
    }
}

pub fn total(lines: &[Line]) -> f64 {
    lines.iter().map(|l| l.usd).sum()
}

/// The most expensive line.
pub fn dominant(lines: &[Line]) -> Option<&Line> {
    lines.iter().max_by(|a, b| a.usd.total_cmp(&b.usd))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_step() -> Usage {
        Usage {
            functions: vec![FunctionUse {
                function: "F".into(),
                invocations: 2.0,
                seconds: 0.5,
                memory_mb: 1024.0,
            }],
            write_units: 10.0,
            read_units: 4.0,
            sqs_requests: 5.0,
            secrets_api_calls: 3.0,
            log_bytes: Some(2_000.0),
        }
    }

    fn usd(lines: &[Line], item: &str) -> f64 {
        lines
            .iter()
            .find(|l| l.item == item)
            .map(|l| l.usd)
            .unwrap_or(f64::NAN)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1.0)
    }

    #[test]
    fn a_thousand_onboardings_cost_a_thousand_times_each_measured_quantity_at_its_price() {
        // Given one onboarding's measured use
        let usage = one_step();

        // When 1,000 of them are priced
        let lines = usage.lines(1000.0);

        // Then each line is quantity × 1,000 × its price
        assert!(close(
            usd(&lines, "Lambda duration"),
            0.5 * 1000.0 * LAMBDA_ARM_GB_SECOND
        ));
        assert!(close(
            usd(&lines, "Lambda requests"),
            2.0 * 1000.0 * 0.20 / 1e6
        ));
        assert!(close(
            usd(&lines, "DynamoDB writes"),
            10.0 * 1000.0 * 0.625 / 1e6
        ));
        assert!(close(
            usd(&lines, "DynamoDB reads"),
            4.0 * 1000.0 * 0.125 / 1e6
        ));
        assert!(close(
            usd(&lines, "SQS requests"),
            5.0 * 1000.0 * 0.40 / 1e6
        ));
        assert!(close(
            usd(&lines, "Secrets Manager API calls"),
            3.0 * 1000.0 * 0.05 / 1e4
        ));
        assert!(close(
            usd(&lines, "CloudWatch Logs ingestion"),
            2_000.0 * 1000.0 / 1e9 * 0.50
        ));
        assert!(lines.iter().all(|l| !l.estimated));
        assert!(close(total(&lines), lines.iter().map(|l| l.usd).sum()));
    }

    #[test]
    fn gb_seconds_weigh_each_functions_time_by_its_memory() {
        let usage = Usage {
            functions: vec![
                FunctionUse {
                    function: "small".into(),
                    invocations: 1.0,
                    seconds: 2.0,
                    memory_mb: 256.0,
                },
                FunctionUse {
                    function: "big".into(),
                    invocations: 1.0,
                    seconds: 1.0,
                    memory_mb: 2048.0,
                },
            ],
            ..Usage::default()
        };
        assert!(close(usage.gb_seconds(), 2.0 * 0.25 + 1.0 * 2.0));
        assert!(close(usage.invocations(), 2.0));
    }

    #[test]
    fn unmeasured_logs_are_estimated_per_invocation_and_marked_so() {
        let usage = Usage {
            log_bytes: None,
            ..one_step()
        };
        let lines = usage.lines(1.0);
        let logs = lines
            .iter()
            .find(|l| l.item == "CloudWatch Logs ingestion")
            .unwrap();
        assert!(logs.estimated);
        assert!(close(
            logs.quantity,
            2.0 * ESTIMATED_LOG_BYTES_PER_INVOCATION / 1e9
        ));
    }

    #[test]
    fn a_month_of_live_numbers_pays_storage_secrets_and_730_health_syncs() {
        // Given a live number storing 2 KB and one secret, and one sync's share of it
        let live = LiveUsage {
            stored_bytes: 2_000.0,
            secrets: 1.0,
            sync: Usage {
                read_units: 0.5,
                ..Usage::default()
            },
        };

        // When 1,000 of them are priced for a month
        let lines = live.monthly_lines(1000.0);

        // Then the secrets dominate at $0.40 each, storage is per GB, the sync runs hourly
        assert!(close(usd(&lines, "Secrets Manager secrets"), 400.0));
        assert!(close(
            usd(&lines, "DynamoDB storage"),
            2_000.0 * 1000.0 / 1e9 * 0.25
        ));
        assert!(close(
            usd(&lines, "Health sync: DynamoDB reads"),
            0.5 * 1000.0 * 730.0 * 0.125 / 1e6
        ));
        assert!(close(
            usd(
                &lines,
                "Health sync: Lambda requests (one run an hour, fixed)"
            ),
            730.0 * 0.20 / 1e6
        ));
        assert_eq!(
            dominant(&lines).map(|l| l.item.as_str()),
            Some("Secrets Manager secrets")
        );
    }

    #[test]
    fn an_onboarding_is_a_runs_measurements_divided_by_its_activated_numbers() {
        use crate::provisioning::{HealthSyncRun, Stored};
        use crate::proxy::{Counts, Record};
        use crate::stats::Summary;
        use muchaw_local::pipeline::RunTotals;
        use std::time::Duration;

        // Given a run that activated 2 numbers: two callbacks of 100 and 300 ms, 4 batches of
        // one step taking 2 s in all, and its AWS requests
        let record = |service: &str, action: &str, received: usize| Record {
            service: service.into(),
            action: action.into(),
            received,
            write_units: if service == "dynamodb" { 3.0 } else { 0.0 },
            read_units: if service == "dynamodb" { 0.5 } else { 0.0 },
            ..Record::default()
        };
        let counts = Counts::of(&[
            record("dynamodb", "TransactWriteItems", 0),
            record("dynamodb", "GetItem", 0),
            record("sqs", "SendMessage", 0),
            record("sqs", "ReceiveMessage", 1),
            record("sqs", "ReceiveMessage", 0),
            record("sqs", "DeleteMessageBatch", 0),
            record("secretsmanager", "CreateSecret", 0),
            record("secretsmanager", "CreateSecret", 0),
        ]);
        let result = ProvisioningResult {
            activated: 2,
            callback_time: Summary::of(&[100.0, 300.0]),
            run_totals: [(
                "StepFunction".to_string(),
                RunTotals {
                    runs: 4,
                    messages: 4,
                    time: Duration::from_secs(2),
                },
            )]
            .into(),
            counts,
            log_bytes: Some(1_000),
            stored: Stored {
                items: 6,
                bytes: 6_000,
            },
            health_sync: Some(HealthSyncRun {
                live_numbers: 2,
                counts: Counts::of(&[record("dynamodb", "Query", 0)]),
                meta_calls: 2,
                took: Duration::from_millis(500),
                log_bytes: None,
            }),
            ..ProvisioningResult::default()
        };

        // When its onboarding and live use are read, at 512 MB for every function
        let usage = onboarding(&result, |_| 512.0);
        let live = live(&result, |_| 512.0).unwrap();

        // Then everything is per activated number
        assert!(close(usage.invocations(), 1.0 + 2.0));
        assert!(close(usage.gb_seconds(), (0.2 + 1.0) * 0.5));
        assert!(close(usage.write_units, 6.0 / 2.0));
        assert!(close(usage.read_units, 1.0 / 2.0));
        // our SendMessage, plus the receive that returned a message and the delete
        assert!(close(usage.sqs_requests, 3.0 / 2.0));
        assert!(close(usage.secrets_api_calls, 1.0));
        assert_eq!(usage.log_bytes, Some(500.0));
        assert!(close(live.stored_bytes, 3_000.0));
        assert!(close(live.secrets, 1.0));
        assert!(close(live.sync.read_units, 0.25));
        assert!(close(live.sync.invocations(), 0.0));
        assert!(close(live.sync.gb_seconds(), 0.25 * 0.5));
        assert_eq!(live.sync.log_bytes, None);
    }

    #[test]
    fn idle_queues_cost_their_pollers_long_polls_whatever_the_numbers() {
        // 5 pollers × 3 receives a minute × 43,800 minutes, per queue
        let line = idle_polling(2);
        assert!(close(line.quantity, 2.0 * 5.0 * 3.0 * 43_800.0));
        assert!(close(line.usd, line.quantity * 0.40 / 1e6));
        assert!(line.estimated);
    }
}
