//! Metrics as CloudWatch Embedded Metric Format (EMF) lines on stdout: CloudWatch Logs turns
//! each line into metric values, so measuring costs no API call and no latency. Every line
//! carries its metrics at two levels: no dimension (the totals the alarms watch) and the
//! breakdown (by step and code, by route and status, ...).
//!
//! The names are the dashboard's and alarms' in `template.yaml`: change them together.

use serde_json::{Map, Value, json};

pub const NAMESPACE: &str = "MuchawNumbers";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
    Seconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
            Unit::Seconds => "Seconds",
        }
    }
}

/// One EMF document: metric values sharing their dimensions.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    dimensions: Vec<(&'static str, String)>,
    values: Vec<(&'static str, Unit, f64)>,
    /// Searchable in the logs (Logs Insights), not metric dimensions: ids would make a metric
    /// per number.
    properties: Vec<(&'static str, String)>,
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    pub fn dimension(mut self, name: &'static str, value: impl Into<String>) -> Metrics {
        self.dimensions.push((name, value.into()));
        self
    }

    pub fn property(mut self, name: &'static str, value: impl Into<String>) -> Metrics {
        self.properties.push((name, value.into()));
        self
    }

    pub fn count(self, name: &'static str) -> Metrics {
        self.value(name, Unit::Count, 1.0)
    }

    pub fn value(mut self, name: &'static str, unit: Unit, value: f64) -> Metrics {
        self.values.push((name, unit, value));
        self
    }

    /// The EMF document, timestamped `timestamp_ms` (unix milliseconds).
    pub fn document(&self, timestamp_ms: i64) -> Value {
        let names: Vec<&str> = self.dimensions.iter().map(|(name, _)| *name).collect();
        let dimension_sets = if names.is_empty() {
            json!([[]])
        } else {
            json!([[], names])
        };
        let definitions: Vec<Value> = self
            .values
            .iter()
            .map(|(name, unit, _)| json!({"Name": name, "Unit": unit.as_str()}))
            .collect();
        let mut root = Map::new();
        root.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": dimension_sets,
                    "Metrics": definitions,
                }],
            }),
        );
        for (name, value) in self.properties.iter().chain(&self.dimensions) {
            root.insert((*name).into(), Value::String(value.clone()));
        }
        for (name, _, value) in &self.values {
            root.insert((*name).into(), json!(value));
        }
        Value::Object(root)
    }

    /// Writes the document as one line on stdout (where Lambda sends it to CloudWatch Logs).
    pub fn emit(self) {
        let line = self
            .document(crate::domain::time::now().timestamp_millis())
            .to_string();
        let _ = CAPTURE_TASK.try_with(|lines| {
            if let Ok(mut lines) = lines.lock() {
                lines.push(line.clone());
            }
        });
        if let Ok(listeners) = LISTENERS.lock() {
            for listener in listeners.iter() {
                if let Ok(mut lines) = listener.lock() {
                    lines.push(line.clone());
                }
            }
        }
        println!("{line}");
    }
}

tokio::task_local! {
    static CAPTURE_TASK: std::sync::Arc<std::sync::Mutex<Vec<String>>>;
}

type Lines = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

static LISTENERS: std::sync::Mutex<Vec<Lines>> = std::sync::Mutex::new(Vec::new());

/// Every EMF line any task of this process writes while it lives (they still go to stdout):
/// for tests of runs that span tasks (a queue's handlers). Lines of other work running at
/// the same time are in it too; tell them apart by their properties (`NumberId`).
pub struct Listener(Lines);

impl Listener {
    pub fn start() -> Listener {
        let lines = Lines::default();
        if let Ok(mut listeners) = LISTENERS.lock() {
            listeners.push(lines.clone());
        }
        Listener(lines)
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Ok(mut listeners) = LISTENERS.lock() {
            listeners.retain(|l| !std::sync::Arc::ptr_eq(l, &self.0));
        }
    }
}

/// Runs `work` and returns, with its output, the EMF lines it wrote (they still go to stdout
/// as well): what a test reads to see what a handler run reports.
pub async fn capture<F: Future>(work: F) -> (F::Output, Vec<String>) {
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let output = CAPTURE_TASK.scope(lines.clone(), work).await;
    let captured = lines.lock().map(|l| l.clone()).unwrap_or_default();
    (output, captured)
}

// ---- What the system measures -------------------------------------------------------------

pub fn onboarding_name(onboarding: crate::domain::Onboarding) -> &'static str {
    match onboarding {
        crate::domain::Onboarding::CloudApi => "cloud_api",
        crate::domain::Onboarding::Coexistence => "coexistence",
    }
}

/// What a published lifecycle event measures: an onboarding ending `ACTIVE` (and how long it
/// took from the signup) or `FAILED` (at which step, with which code). Measured where the event
/// is published (`lifecycle::publish`), the one place every function's changes pass once they
/// are written, including an event a crash left unpublished and a later reader published.
pub fn event_published(event: &crate::domain::EventEnvelope) {
    use crate::domain::EventType;
    let text = |pointer: &str| {
        event
            .data
            .pointer(pointer)
            .and_then(serde_json::Value::as_str)
    };
    match event.event_type {
        EventType::NumberActivated => {
            let took = text("/createdAt")
                .and_then(|at| crate::domain::time::parse(at).ok())
                .map_or(0, |created| {
                    (event.created_at - created).num_milliseconds().max(0)
                });
            Metrics::new()
                .property("NumberId", event.number_id.clone())
                .dimension("Onboarding", text("/onboarding").unwrap_or("cloud_api"))
                .count("Activations")
                .value("TimeToActive", Unit::Seconds, took as f64 / 1000.0)
                .emit();
        }
        EventType::NumberFailed => {
            Metrics::new()
                .property("NumberId", event.number_id.clone())
                .dimension("Step", text("/failureReason/step").unwrap_or("UNKNOWN"))
                .dimension("Code", text("/failureReason/code").unwrap_or("unknown"))
                .count("ActivationFailures")
                .emit();
        }
        _ => {}
    }
}

/// A signup created a number.
pub fn signup(number_id: &str, onboarding: &str) {
    Metrics::new()
        .property("NumberId", number_id)
        .dimension("Onboarding", onboarding)
        .count("Signups")
        .emit();
}

/// A Graph API call failed: Meta's error code (or ours for no answer: `timeout`, `network`)
/// and the HTTP status (0 without one).
pub fn meta_error(code: &str, http_status: u16) {
    Metrics::new()
        .dimension("Code", code)
        .dimension("HttpStatus", http_status.to_string())
        .count("MetaErrors")
        .emit();
}

/// One delivery attempt to a customer endpoint: `delivered`, or `failed` (an error status, a
/// timeout, no connection; retried on the schedule, then dead-lettered).
pub fn webhook_delivery(outcome: &str, latency_ms: f64) {
    Metrics::new()
        .dimension("Outcome", outcome)
        .count("WebhookDeliveries")
        .value("WebhookLatency", Unit::Milliseconds, latency_ms)
        .emit();
}

/// An API request answered.
pub fn api_request(route: &str, method: &str, status: u16, latency_ms: f64) {
    Metrics::new()
        .dimension("Route", route)
        .dimension("Method", method)
        .dimension("Status", status.to_string())
        .count("ApiRequests")
        .value("ApiLatency", Unit::Milliseconds, latency_ms)
        .emit();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_declares_its_metrics_with_and_without_dimensions() {
        let document = Metrics::new()
            .dimension("Step", "REGISTER_NUMBER")
            .dimension("Code", "133010")
            .count("ActivationFailures")
            .document(1_700_000_000_000);
        assert_eq!(
            document,
            json!({
                "_aws": {
                    "Timestamp": 1_700_000_000_000i64,
                    "CloudWatchMetrics": [{
                        "Namespace": "MuchawNumbers",
                        "Dimensions": [[], ["Step", "Code"]],
                        "Metrics": [{"Name": "ActivationFailures", "Unit": "Count"}],
                    }],
                },
                "Step": "REGISTER_NUMBER",
                "Code": "133010",
                "ActivationFailures": 1.0,
            })
        );
    }

    #[tokio::test]
    async fn a_capture_sees_the_lines_its_work_emits_and_no_others() {
        signup("n1", "cloud_api");
        let ((), lines) = capture(async { webhook_delivery("delivered", 12.0) }).await;
        assert_eq!(lines.len(), 1);
        let line: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(line["Outcome"], "delivered");
        assert_eq!(line["WebhookLatency"], 12.0);
    }
}
