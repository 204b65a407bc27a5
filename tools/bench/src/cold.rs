//! Cold starts: each function binary started fresh under the local Runtime API, `runs` times,
//! interleaved with the hello-world baseline so drift hits all of them alike.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use muchaw_local::runtime_api::{Invocation, LocalFunction};
use serde_json::Value;

use crate::stats::{Summary, ms};

pub const BASELINE: &str = "hello-lambda";

/// A function to start cold, with its representative event.
pub struct ColdTarget {
    pub name: String,
    pub binary: PathBuf,
    pub environment: Vec<(String, String)>,
    pub event_file: String,
    pub event: Value,
    /// What `events/expected.json` says the event gives.
    pub expected: Option<Value>,
    /// The event for the `n`th invocation, when the same event again would not do the same
    /// work (a second signup callback for the same phone is a repeat, answered from what the
    /// first stored): a new phone each time.
    pub fresh_event: Option<fn(&Value, usize) -> Value>,
}

impl ColdTarget {
    fn event_for(&self, invocation: usize) -> Value {
        match self.fresh_event {
            Some(fresh) => fresh(&self.event, invocation),
            None => self.event.clone(),
        }
    }
}

/// The signup callback's event with the phone number id made unique for `invocation`.
pub fn callback_with_new_phone(event: &Value, invocation: usize) -> Value {
    let mut event = event.clone();
    let body = event["body"]
        .as_str()
        .and_then(|body| serde_json::from_str::<Value>(body).ok());
    if let Some(mut body) = body {
        body["phoneNumberId"] = Value::from(format!("2999{invocation:011}"));
        event["body"] = Value::from(body.to_string());
    }
    event
}

/// The cold starts of every function against one set of emulators.
#[derive(Clone, Debug)]
pub struct ColdRun {
    /// Which emulators they ran against (`moto`), for the report.
    pub backend: String,
    pub rows: Vec<ColdRow>,
    /// How these emulators answer two requests sent at once (meta-webhook's first request).
    pub concurrency: Option<ConcurrentAnswers>,
}

/// meta-webhook's first-request pair (the app secret's `GetSecretValue` and the WABA's numbers'
/// `Query`) timed from the bench, each alone and both sent at once: on AWS two services answer
/// side by side (both at once ≈ the longer one); one emulator process answering one request
/// at a time makes it their sum.
#[derive(Clone, Debug)]
pub struct ConcurrentAnswers {
    pub secret_alone: Summary,
    pub query_alone: Summary,
    pub together: Summary,
}

impl ConcurrentAnswers {
    /// Both at once as a share of the two alone one after the other: ≈ 1 when the emulators
    /// answer one at a time, ≈ longer ÷ sum when side by side.
    pub fn serial_share(&self) -> f64 {
        self.together.p50 / (self.secret_alone.p50 + self.query_alone.p50)
    }
}

/// Times [`ConcurrentAnswers`] `runs` times each, interleaved: `secret` and `query` are one
/// request each.
pub async fn concurrent_answers<S, SF, Q, QF>(
    runs: usize,
    secret: S,
    query: Q,
) -> Result<ConcurrentAnswers>
where
    S: Fn() -> SF,
    SF: std::future::Future<Output = Result<()>>,
    Q: Fn() -> QF,
    QF: std::future::Future<Output = Result<()>>,
{
    // One of each first: the connections are open for all the timed ones alike.
    secret().await?;
    query().await?;
    let (mut secret_alone, mut query_alone, mut together) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let started = Instant::now();
        secret().await?;
        secret_alone.push(ms(started.elapsed()));
        let started = Instant::now();
        query().await?;
        query_alone.push(ms(started.elapsed()));
        let started = Instant::now();
        let (a, b) = futures::join!(secret(), query());
        a?;
        b?;
        together.push(ms(started.elapsed()));
    }
    Ok(ConcurrentAnswers {
        secret_alone: Summary::of(&secret_alone),
        query_alone: Summary::of(&query_alone),
        together: Summary::of(&together),
    })
}

#[derive(Clone, Debug)]
pub struct ColdRow {
    pub name: String,
    pub event_file: String,
    pub init: Summary,
    pub cold: Summary,
    pub warm: Summary,
    pub overhead: Summary,
    /// What the first cold request answered, e.g. `statusCode 200`.
    pub outcome: String,
    /// Whether that matches `events/expected.json` (None: nothing expected).
    pub as_expected: Option<bool>,
    pub failed_runs: usize,
}

/// Events in the order they are preferred as "representative": the success path of each.
const PREFERRED: [&str; 9] = [
    "list.json",
    "callback.json",
    "message.json",
    "account-update.json",
    "dead-letter.json",
    "teardown.json",
    "event.json",
    "delivery.json",
    "scheduled.json",
];

/// The representative event of a function (its crate's `events/` directory).
pub fn representative_event(events_dir: &Path, crate_name: &str) -> Result<(String, Value)> {
    let dir = events_dir.join(crate_name);
    let file = PREFERRED
        .iter()
        .map(|name| dir.join(name))
        .find(|path| path.exists())
        .with_context(|| format!("no representative event in {}", dir.display()))?;
    let text = std::fs::read_to_string(&file)?;
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok((name, serde_json::from_str(&text)?))
}

/// `events/expected.json`'s entry for a function's event.
pub fn expected(events_dir: &Path, crate_name: &str, file: &str) -> Option<Value> {
    let text = std::fs::read_to_string(events_dir.join("expected.json")).ok()?;
    let all: Value = serde_json::from_str(&text).ok()?;
    all.get(crate_name)?.get(file).cloned()
}

fn outcome(invocation: &Invocation, expected: Option<&Value>) -> (String, Option<bool>) {
    match invocation {
        Invocation::Error(error) => (
            format!("error {}", error["errorType"].as_str().unwrap_or("?")),
            expected.map(|_| false),
        ),
        Invocation::Response(body) => {
            // What events/expected.json checks: each key it names, a batch's failures by count.
            let got = |key: &str| match key {
                "batchItemFailures" => body
                    .get(key)
                    .and_then(Value::as_array)
                    .map(|failures| Value::from(failures.len())),
                _ => body.get(key).cloned(),
            };
            let text = if let Some(code) = body.get("statusCode") {
                format!("statusCode {code}")
            } else if let Some(Value::Number(n)) = got("batchItemFailures") {
                format!("{n} batch item failures")
            } else if let Some(stopped) = body.get("stoppedEarly") {
                format!("stoppedEarly {stopped}")
            } else {
                match expected.and_then(Value::as_object) {
                    Some(want) => want
                        .keys()
                        .map(|k| format!("{k} {}", got(k).unwrap_or(Value::Null)))
                        .collect::<Vec<_>>()
                        .join(", "),
                    None => "response".into(),
                }
            };
            let ok = expected.map(|want| {
                want.as_object()
                    .is_some_and(|want| want.iter().all(|(k, v)| got(k).as_ref() == Some(v)))
            });
            (text, ok)
        }
    }
}

struct Samples {
    init: Vec<f64>,
    cold: Vec<f64>,
    warm: Vec<f64>,
    overhead: Vec<f64>,
    outcome: Option<(String, Option<bool>)>,
    failed: usize,
}

/// One cold start and one warm request, each after `reset` (not timed), so the warm request
/// does the same work as the cold one: replaying an event whose first run changed the state
/// (a ban already applied, a step already done) would do less and count the difference as
/// cold-start overhead.
async fn one<F, Fut>(
    target: &ColdTarget,
    invocations: &mut usize,
    reset: &mut F,
) -> Result<(f64, f64, f64, Invocation)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut next_event = || {
        *invocations += 1;
        target.event_for(*invocations)
    };
    let (cold_event, warm_event) = (next_event(), next_event());
    reset().await?;
    let started = Instant::now();
    let mut function = LocalFunction::start(
        &target.name,
        &target.binary,
        &target.environment,
        Duration::from_secs(30),
    )
    .await?;
    let first = function.invoke(cold_event).await?;
    let cold = ms(started.elapsed());
    let init = function
        .init_duration()
        .map(ms)
        .context("the function answered without asking for work")?;
    reset().await?;
    let again = Instant::now();
    function.invoke(warm_event).await?;
    let warm = ms(again.elapsed());
    drop(function);
    Ok((init, cold, warm, first))
}

/// `runs` cold starts of each target, round-robin; `reset` runs before each invocation (to
/// restore what the events change).
pub async fn measure<F, Fut>(
    targets: &[ColdTarget],
    runs: usize,
    mut reset: F,
) -> Result<Vec<ColdRow>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    if targets.is_empty() {
        bail!("no functions to start");
    }
    let mut samples: Vec<Samples> = targets
        .iter()
        .map(|_| Samples {
            init: Vec::new(),
            cold: Vec::new(),
            warm: Vec::new(),
            overhead: Vec::new(),
            outcome: None,
            failed: 0,
        })
        .collect();
    let mut invocations = 0;
    for round in 0..runs {
        for (target, s) in targets.iter().zip(samples.iter_mut()) {
            match one(target, &mut invocations, &mut reset).await {
                Ok((init, cold, warm, first)) => {
                    s.init.push(init);
                    s.cold.push(cold);
                    s.warm.push(warm);
                    s.overhead.push(cold - warm);
                    if s.outcome.is_none() {
                        s.outcome = Some(outcome(&first, target.expected.as_ref()));
                    }
                }
                Err(err) => {
                    eprintln!("cold start {} (run {round}) failed: {err:#}", target.name);
                    s.failed += 1;
                }
            }
        }
        eprintln!("cold starts: round {}/{runs} done", round + 1);
    }
    Ok(targets
        .iter()
        .zip(samples)
        .map(|(target, s)| {
            let (outcome, as_expected) = s.outcome.unwrap_or_else(|| ("failed".into(), None));
            ColdRow {
                name: target.name.clone(),
                event_file: target.event_file.clone(),
                init: Summary::of(&s.init),
                cold: Summary::of(&s.cold),
                warm: Summary::of(&s.warm),
                overhead: Summary::of(&s.overhead),
                outcome,
                as_expected,
                failed_runs: s.failed,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(secret: f64, query: f64, together: f64) -> ConcurrentAnswers {
        let one = |ms: f64| Summary::of(&[ms]);
        ConcurrentAnswers {
            secret_alone: one(secret),
            query_alone: one(query),
            together: one(together),
        }
    }

    #[test]
    fn two_requests_answered_one_after_the_other_take_their_whole_sum() {
        assert!((pair(2.0, 1.0, 3.0).serial_share() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn two_requests_answered_side_by_side_take_the_longer_one_s_share_of_the_sum() {
        assert!((pair(2.0, 1.0, 2.0).serial_share() - 2.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn each_callback_invocation_signs_up_a_new_phone_with_the_same_code_and_waba() {
        let body = r#"{"code":"AQBexamplecode","wabaId":"100000000000001","phoneNumberId":"200000000000099"}"#;
        let event = serde_json::json!({"rawPath": "/api/signup/callback", "body": body});

        let first = callback_with_new_phone(&event, 1);
        let second = callback_with_new_phone(&event, 2);

        let body_of = |event: &Value| -> Value {
            serde_json::from_str(event["body"].as_str().unwrap_or_default()).unwrap_or_default()
        };
        assert_ne!(
            body_of(&first)["phoneNumberId"],
            body_of(&second)["phoneNumberId"]
        );
        assert_ne!(body_of(&first)["phoneNumberId"], "200000000000099");
        assert_eq!(body_of(&second)["code"], "AQBexamplecode");
        assert_eq!(body_of(&second)["wabaId"], "100000000000001");
        assert_eq!(second["rawPath"], "/api/signup/callback");
    }
}
