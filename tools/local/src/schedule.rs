//! The template's `Schedule`/`ScheduleV2` events, run locally on their rate and on demand, and
//! the check that every event source in the template is one the local stack can run.

use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use serde_json::{Value, json};

use crate::template::{Template, scalar};

/// Event sources the local stack emulates.
const RUNNABLE_EVENT_TYPES: [&str; 4] = ["HttpApi", "SQS", "Schedule", "ScheduleV2"];

/// One scheduled event of a function.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    pub function_id: String,
    pub event_name: String,
    pub expression: String,
    /// `None` for `cron(...)`: such schedules run locally on demand only.
    pub every: Option<Duration>,
}

impl Schedule {
    /// What EventBridge Scheduler hands the function.
    pub fn event(&self) -> Value {
        json!({
            "version": "0",
            "id": format!("local-{}", rand::random::<u64>()),
            "detail-type": "Scheduled Event",
            "source": "aws.scheduler",
            "account": "123456789012",
            "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "region": crate::moto::REGION,
            "resources": [format!(
                "arn:aws:scheduler:{}:123456789012:schedule/default/{}-{}",
                crate::moto::REGION, self.function_id, self.event_name
            )],
            "detail": {}
        })
    }
}

/// Every function event the local stack cannot emulate is an error naming the function, the
/// event and its type, before anything starts.
pub fn check_runnable(template: &Template) -> Result<()> {
    let mut refused: Vec<String> = template
        .function_events()
        .into_iter()
        .filter(|event| !RUNNABLE_EVENT_TYPES.contains(&event.kind.as_str()))
        .map(|event| {
            format!(
                "{}: event {} of type {} cannot run locally (the local stack runs {})",
                event.function_id,
                event.name,
                event.kind,
                RUNNABLE_EVENT_TYPES.join(", ")
            )
        })
        .collect();
    if let Err(err) = schedules(template) {
        refused.push(err.to_string());
    }
    if refused.is_empty() {
        Ok(())
    } else {
        bail!(refused.join("\n"))
    }
}

/// Every `Schedule`/`ScheduleV2` event in the template.
pub fn schedules(template: &Template) -> Result<Vec<Schedule>> {
    let mut found = Vec::new();
    for event in template.function_events() {
        if event.kind != "Schedule" && event.kind != "ScheduleV2" {
            continue;
        }
        let (function_id, kind, event_name) = (&event.function_id, &event.kind, &event.name);
        let expression = event
            .require_properties()?
            .get("ScheduleExpression")
            .and_then(scalar)
            .ok_or_else(|| {
                anyhow!("{function_id}: {kind} event {event_name} without ScheduleExpression")
            })?;
        let every = rate(&expression)
            .map_err(|err| anyhow!("{function_id}: {kind} event {event_name}: {err}"))?;
        found.push(Schedule {
            function_id: function_id.clone(),
            event_name: event_name.clone(),
            expression,
            every,
        });
    }
    Ok(found)
}

/// `rate(N unit)` as a duration; `cron(...)` as `None`; anything else refused.
pub fn rate(expression: &str) -> Result<Option<Duration>> {
    let expression = expression.trim();
    if expression.starts_with("cron(") && expression.ends_with(')') {
        return Ok(None);
    }
    let inner = expression
        .strip_prefix("rate(")
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| anyhow!("unreadable schedule expression {expression:?}"))?;
    let (count, unit) = inner
        .trim()
        .split_once(' ')
        .ok_or_else(|| anyhow!("unreadable rate {expression:?}"))?;
    let count: u64 = count
        .parse()
        .ok()
        .filter(|c| *c > 0)
        .ok_or_else(|| anyhow!("rate {expression:?} needs a positive whole number"))?;
    let unit_seconds = match (unit.trim(), count) {
        ("minute", 1) | ("minutes", 2..) => 60,
        ("hour", 1) | ("hours", 2..) => 3_600,
        ("day", 1) | ("days", 2..) => 86_400,
        _ => bail!("rate {expression:?}: the unit is minute(s), hour(s) or day(s), singular for 1"),
    };
    Ok(Some(Duration::from_secs(count * unit_seconds)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_read_as_durations() {
        assert_eq!(
            rate("rate(1 hour)").unwrap(),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            rate("rate(5 minutes)").unwrap(),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            rate("rate(2 days)").unwrap(),
            Some(Duration::from_secs(172_800))
        );
    }

    #[test]
    fn cron_schedules_run_on_demand_only() {
        assert_eq!(rate("cron(0 12 * * ? *)").unwrap(), None);
    }

    #[test]
    fn malformed_rates_are_refused_as_eventbridge_refuses_them() {
        for bad in [
            "rate(1 hours)",
            "rate(2 hour)",
            "rate(0 minutes)",
            "rate(x minutes)",
            "every hour",
        ] {
            assert!(rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_workspace_template_schedules_the_health_sync_hourly_and_the_outbox_relay_every_minute() {
        let template = Template::workspace().unwrap();
        let schedules = schedules(&template).unwrap();
        let every: Vec<(&str, Option<Duration>)> = schedules
            .iter()
            .map(|s| (s.function_id.as_str(), s.every))
            .collect();
        assert_eq!(
            every,
            [
                ("HealthSyncFunction", Some(Duration::from_secs(3600))),
                ("OutboxRelayFunction", Some(Duration::from_secs(60))),
            ]
        );
    }

    #[test]
    fn the_workspace_template_holds_only_event_sources_that_run_locally() {
        check_runnable(&Template::workspace().unwrap()).unwrap();
    }
}

/// What runs a scheduled function: its binary, or (`--in-process`) its handler.
#[derive(Clone)]
pub enum ScheduledRunner {
    Binaries(std::sync::Arc<crate::binaries::BinaryStack>),
    InProcess {
        health_sync: std::sync::Arc<crate::stack::LocalHealthSync>,
        outbox_relay: std::sync::Arc<crate::stack::LocalOutboxRelay>,
    },
}

impl ScheduledRunner {
    async fn run(&self, schedule: &Schedule) -> Result<Value> {
        match self {
            ScheduledRunner::Binaries(binaries) => {
                match binaries
                    .invoke(&schedule.function_id, schedule.event())
                    .await?
                {
                    crate::runtime_api::Invocation::Response(output) => Ok(output),
                    crate::runtime_api::Invocation::Error(error) => {
                        bail!("{} failed: {error}", schedule.function_id)
                    }
                }
            }
            ScheduledRunner::InProcess { health_sync, .. }
                if schedule.function_id == "HealthSyncFunction" =>
            {
                let summary =
                    crate::identity::as_function("HealthSyncFunction", health_sync.run()).await?;
                Ok(serde_json::to_value(summary)?)
            }
            ScheduledRunner::InProcess { outbox_relay, .. }
                if schedule.function_id == "OutboxRelayFunction" =>
            {
                let summary =
                    crate::identity::as_function("OutboxRelayFunction", outbox_relay.run()).await?;
                Ok(serde_json::to_value(summary)?)
            }
            ScheduledRunner::InProcess { .. } => {
                bail!(
                    "{}: no in-process handler; run without --in-process",
                    schedule.function_id
                )
            }
        }
    }
}

/// A request to run a scheduled function now.
pub struct RunNow {
    pub function_id: String,
    pub reply: tokio::sync::oneshot::Sender<Result<Value, String>>,
}

/// Runs each schedule at its rate (first after one period, as EventBridge does) and any
/// `RunNow` as it arrives, one at a time. Driven beside the server rather than spawned: the
/// in-process health sync's future is not provably `Send`.
pub async fn run_schedules(
    schedules: Vec<Schedule>,
    runner: ScheduledRunner,
    mut on_demand: tokio::sync::mpsc::Receiver<RunNow>,
) {
    let start = tokio::time::Instant::now();
    let mut due: Vec<Option<tokio::time::Instant>> = schedules
        .iter()
        .map(|s| s.every.map(|every| start + every))
        .collect();
    loop {
        let next = due.iter().flatten().min().copied();
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sleep => {
                let now = tokio::time::Instant::now();
                for (schedule, due) in schedules.iter().zip(due.iter_mut()) {
                    let (Some(at), Some(every)) = (*due, schedule.every) else { continue };
                    if at > now {
                        continue;
                    }
                    *due = Some(now + every);
                    match runner.run(schedule).await {
                        Ok(output) => tracing::info!(function = %schedule.function_id, %output, "scheduled run"),
                        Err(err) => tracing::warn!(function = %schedule.function_id, error = %err, "scheduled run failed"),
                    }
                }
            }
            request = on_demand.recv() => {
                let Some(request) = request else { return };
                let outcome = match schedules.iter().find(|s| s.function_id == request.function_id) {
                    Some(schedule) => runner.run(schedule).await.map_err(|err| format!("{err:#}")),
                    None => Err(format!(
                        "{} has no schedule in the template; scheduled: {}",
                        request.function_id,
                        schedules.iter().map(|s| s.function_id.as_str()).collect::<Vec<_>>().join(", ")
                    )),
                };
                let _ = request.reply.send(outcome);
            }
        }
    }
}

/// `POST /_local/schedules/{FunctionLogicalId}`: runs that scheduled function now and answers
/// with its output. Local only; the deployed API has no such route.
pub fn on_demand_router(requests: tokio::sync::mpsc::Sender<RunNow>) -> axum::Router {
    use axum::extract::{Path, State};
    use axum::http::StatusCode;
    use axum::response::IntoResponse;

    async fn run_now(
        State(requests): State<tokio::sync::mpsc::Sender<RunNow>>,
        Path(function_id): Path<String>,
    ) -> axum::response::Response {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let sent = requests
            .send(RunNow {
                function_id: function_id.clone(),
                reply,
            })
            .await;
        let outcome = match sent {
            Ok(()) => answer
                .await
                .unwrap_or_else(|_| Err("the scheduler stopped".into())),
            Err(_) => Err("the scheduler stopped".into()),
        };
        match outcome {
            Ok(output) => {
                axum::Json(json!({"function": function_id, "output": output})).into_response()
            }
            Err(error) if error.contains("has no schedule") => (
                StatusCode::NOT_FOUND,
                axum::Json(json!({"function": function_id, "error": error})),
            )
                .into_response(),
            Err(error) => (
                StatusCode::BAD_GATEWAY,
                axum::Json(json!({"function": function_id, "error": error})),
            )
                .into_response(),
        }
    }

    axum::Router::new()
        .route(
            "/_local/schedules/{function_id}",
            axum::routing::post(run_now),
        )
        .with_state(requests)
}
