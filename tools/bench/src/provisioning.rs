//! Signups through the in-process stack (every handler of `shared`, fed by the template's SQS
//! event sources), with every AWS call going through the counting proxy and every Meta call to
//! the fake Meta's log.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::body::Body;
use fake_meta::{FakeMeta, PhoneProfile, Route};
use http::Request;
use muchaw_local::Template;
use muchaw_local::moto::sdk_config_for;
use muchaw_local::pipeline::RunTotals;
use tower::ServiceExt;

use crate::proxy::{CountingProxy, Counts, Record};
use crate::setup::{self, Backend};
use crate::stats::{Summary, ms};

/// The Meta calls META.md documents for one number, in order (the exchange reads the phone with
/// the new token, and the profile is read again beside the PIN).
pub const DOCUMENTED_SEQUENCE: [Route; 6] = [
    Route::ExchangeCode,
    Route::GetPhone,
    Route::SubscribeApp,
    Route::Register,
    Route::SetPin,
    Route::GetPhone,
];

#[derive(Clone, Debug)]
pub struct StepCounts {
    pub function: String,
    /// Messages the step's function received (one per number, more on retries).
    pub messages: u64,
    pub counts: Counts,
}

/// One run of the hourly health sync over the numbers a run activated.
#[derive(Clone, Debug)]
pub struct HealthSyncRun {
    pub live_numbers: usize,
    pub counts: Counts,
    pub meta_calls: u64,
    pub took: Duration,
    /// Bytes our code logged during the run (`None`: not counted).
    pub log_bytes: Option<u64>,
}

/// What the table holds after a run: items and their billed bytes (100 bytes of overhead each).
#[derive(Clone, Copy, Debug, Default)]
pub struct Stored {
    pub items: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, Default)]
pub struct ProvisioningResult {
    /// The emulators it ran on (`moto`, `DynamoDB Local`).
    pub backend: String,
    pub meta_latency_ms: u64,
    /// All signups at once (`false`: one at a time, each to ACTIVE before the next).
    pub burst: bool,
    pub signups: usize,
    pub activated: usize,
    pub failed: usize,
    pub timed_out: bool,
    /// First signup sent to the last number ACTIVE.
    pub total: Duration,
    pub time_to_active: Summary,
    /// One-at-a-time runs: per number, the time its messages waited in queues for the event
    /// source's poll (a property of the local poller and moto, not of our code).
    pub queue_wait: Summary,
    /// One-at-a-time runs: per number, the time spent waiting out our own retry backoff.
    pub retry_backoff: Summary,
    /// Messages that were retried (received more than once), per number.
    pub retried_messages: u64,
    pub meta_calls_by_route: BTreeMap<String, u64>,
    pub meta_calls: u64,
    /// (route, number) pairs Meta saw more than once.
    pub repeated_calls: u64,
    /// Calls to routes outside the documented sequence.
    pub calls_outside_sequence: u64,
    pub counts: Counts,
    /// One-at-a-time runs only: what each function did, summed over the numbers.
    pub per_step: Vec<StepCounts>,
    /// Receives of a message while a run of it was still working, which the local pipeline held
    /// back (impossible on Lambda: a function's timeout is under its queue's visibility).
    pub held_back: u64,
    /// The longest a batch ran in its function.
    pub longest_batch: Duration,
    /// One-at-a-time runs: where each number's time to active went.
    pub decomposition: Option<Decomposition>,
    /// Per SQS-fed function: its batches (invocations) and their summed time.
    pub run_totals: BTreeMap<String, RunTotals>,
    /// The signup callback's handler time, per signup.
    pub callback_time: Summary,
    /// One-at-a-time runs: our code's requests from each signup to its `ACTIVE` commit, summed
    /// over the numbers (what lies on the time-to-active path; events dispatched after it do not).
    pub to_active: Counts,
    /// One-at-a-time runs: the health sync run once over the activated numbers.
    pub health_sync: Option<HealthSyncRun>,
    /// The table after the run (the account and its key included).
    pub stored: Stored,
    /// Bytes our code logged during the signups (`None`: not counted).
    pub log_bytes: Option<u64>,
}

/// One signup at a time: each number's time to active split into what the chain waited on
/// (p50 over the numbers of each part; "own code" is what is left, per number).
#[derive(Clone, Debug)]
pub struct Decomposition {
    /// The documented Meta calls one after another at the fake's latency: the time to active's
    /// yardstick ("the Meta time alone").
    pub meta_alone: f64,
    /// What a number waited on Meta's answers (p50), from the fake's log: calls asked
    /// together (the PIN and the profile read) count once, from the first asked to the last
    /// answered.
    pub meta: f64,
    /// The emulators' answers to our code's requests, as the counting proxy timed them.
    pub aws_answers: Summary,
    pub queue_waits: Summary,
    pub backoff: Summary,
    pub own_code: Summary,
    /// Step messages handled per number (each a queue hop on AWS).
    pub hops: f64,
    /// Our code's requests per number, by service.
    pub requests: BTreeMap<String, f64>,
    /// Our code's requests per number at AWS's p50s, requests awaited together counted once
    /// (at the longest of them): see [`projected_answers_ms`].
    pub projected_answers: f64,
}

/// AWS's own p50 latencies, to project a time to active onto AWS. Assumptions, stated in the
/// report: DynamoDB answers in single-digit milliseconds (AWS's product page); an SQS-to-Lambda
/// hop is ~16 ms p50 (AWS's published event-source figures); SQS `SendMessage` and Secrets
/// Manager `GetSecretValue`/`CreateSecret` about 10 and 20 ms from within the region.
pub const AWS_P50_MS: [(&str, f64); 3] =
    [("dynamodb", 5.0), ("sqs", 10.0), ("secretsmanager", 20.0)];
pub const SQS_TO_LAMBDA_HOP_MS: f64 = 16.0;

impl Decomposition {
    /// The time to active on AWS: Meta, AWS's answers at its published latencies, a hop per
    /// step message, our own code as measured here, and the backoff as measured.
    pub fn projected_on_aws(&self) -> f64 {
        self.meta
            + self.projected_answers
            + self.hops * SQS_TO_LAMBDA_HOP_MS
            + self.own_code.p50
            + self.backoff.p50
    }
}

impl ProvisioningResult {
    pub fn per_number(&self, value: f64) -> f64 {
        if self.activated == 0 {
            f64::NAN
        } else {
            value / self.activated as f64
        }
    }
}

struct Phone {
    waba: String,
    phone: String,
    code: String,
}

async fn signup(router: &Router, key: &str, phone: &Phone) -> Result<String> {
    let body =
        serde_json::json!({"code": phone.code, "wabaId": phone.waba, "phoneNumberId": phone.phone});
    let request = Request::builder()
        .method("POST")
        .uri("/api/signup/callback")
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))?;
    let response = router.clone().oneshot(request).await?;
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
    if status.as_u16() != 202 {
        bail!(
            "signup callback: {status} {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    let json: serde_json::Value = serde_json::from_slice(&bytes)?;
    json["data"]["id"]
        .as_str()
        .map(str::to_string)
        .context("signup callback answered without data.id")
}

/// Status changes seen by the proxy, as they commit.
struct Watcher {
    cursor: usize,
    settled: HashMap<String, (String, Instant)>,
}

impl Watcher {
    fn poll(&mut self, proxy: &CountingProxy) {
        let records = proxy.records_since(self.cursor);
        self.cursor += records.len();
        for record in records {
            for (id, to) in record.status_changes {
                if to != "PENDING" {
                    let at = record.at.unwrap_or_else(Instant::now);
                    self.settled.entry(id).or_insert((to, at));
                }
            }
        }
    }

    async fn wait_for(&mut self, proxy: &CountingProxy, ids: &[String], deadline: Instant) -> bool {
        loop {
            self.poll(proxy);
            if ids.iter().all(|id| self.settled.contains_key(id)) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Waits until our code has made no AWS request for `quiet` (the last events dispatched).
async fn wait_quiet(proxy: &CountingProxy, quiet: Duration, limit: Duration) {
    let started = Instant::now();
    let mut seen = proxy.mark();
    let mut last_change = Instant::now();
    while started.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let records = proxy.records_since(seen);
        seen += records.len();
        if records
            .iter()
            .any(|r| !r.is_event_source() || r.received > 0)
        {
            last_change = Instant::now();
        }
        if last_change.elapsed() >= quiet {
            return;
        }
    }
}

/// Prints what one signup did, request by request.
fn trace(records: &[Record], start: Instant) {
    for r in records {
        if r.is_event_source() && r.received == 0 {
            continue;
        }
        let at = r.at.map_or(f64::NAN, |at| ms(at.duration_since(start)));
        let queue = r
            .queue
            .as_deref()
            .and_then(|q| q.rsplit('/').next())
            .unwrap_or("");
        eprintln!(
            "  {at:9.1} ms {:<15} {:<22} {queue} {}",
            r.service,
            r.action,
            if r.received > 0 {
                format!("received {}", r.received)
            } else {
                String::new()
            }
        );
    }
}

/// With one number in flight: the time its messages waited in queues, each send to the
/// receive that returned it (the event source's latency, not our code's).
/// Also the time spent waiting out retries: a `ChangeMessageVisibility` (our backoff) to the
/// receive that brought the message back.
fn queue_wait(records: &[Record]) -> (f64, f64) {
    let mut sent: HashMap<&str, Instant> = HashMap::new();
    let mut delayed: HashMap<&str, Instant> = HashMap::new();
    let mut waiting = 0.0;
    let mut backoff = 0.0;
    for r in records {
        let (Some(queue), Some(at)) = (r.queue.as_deref(), r.at) else {
            continue;
        };
        if !r.is_event_source() && r.action.starts_with("SendMessage") {
            sent.entry(queue).or_insert(at);
        } else if r.action == "ChangeMessageVisibility" {
            delayed.entry(queue).or_insert(at);
        } else if r.action == "ReceiveMessage" && r.received > 0 {
            if let Some(since) = delayed.remove(queue) {
                backoff += ms(at.saturating_duration_since(since));
            } else if let Some(since) = sent.remove(queue) {
                waiting += ms(at.saturating_duration_since(since));
            }
        }
    }
    (waiting, backoff)
}

/// Attributes each request of our code to the function whose message was received last (exact
/// when one number is in flight): before any receive, and the number's creation, to the signup
/// callback.
fn attribute_steps(
    numbers: &[Vec<Record>],
    queue_functions: &HashMap<String, String>,
) -> Vec<StepCounts> {
    let mut by_function: BTreeMap<String, (u64, Vec<Record>)> = BTreeMap::new();
    for records in numbers {
        attribute_number(records, queue_functions, &mut by_function);
    }
    by_function
        .into_iter()
        .map(|(function, (messages, records))| StepCounts {
            function,
            messages,
            counts: Counts::of(&records),
        })
        .collect()
}

/// One number's records, from its signup on.
fn attribute_number(
    records: &[Record],
    queue_functions: &HashMap<String, String>,
    by_function: &mut BTreeMap<String, (u64, Vec<Record>)>,
) {
    let mut current = "SignupCallbackFunction".to_string();
    let mut previous = current.clone();
    for record in records {
        if record.is_event_source() {
            if record.action == "ReceiveMessage"
                && record.received > 0
                && let Some(function) = record.queue.as_ref().and_then(|q| queue_functions.get(q))
            {
                if *function != current {
                    previous = std::mem::replace(&mut current, function.clone());
                }
                by_function.entry(current.clone()).or_default().0 += record.received as u64;
            }
            continue;
        }
        // The number's creation is the callback's whichever step's requests surround it.
        // Records are logged as answers arrive: the next step's receive can come back before the
        // send that fed it. A send to the queue of the step now running is the previous step's.
        let feeds_current = record.action.starts_with("SendMessage")
            && record
                .queue
                .as_ref()
                .and_then(|q| queue_functions.get(q))
                .is_some_and(|f| *f == current);
        let function = if record.creates_number {
            "SignupCallbackFunction".to_string()
        } else if feeds_current {
            previous.clone()
        } else {
            current.clone()
        };
        by_function
            .entry(function)
            .or_default()
            .1
            .push(record.clone());
    }
}

/// The order steps run in, for tables.
pub fn step_order(function: &str) -> usize {
    [
        "SignupCallbackFunction",
        "ExchangeTokenFunction",
        "SubscribeWabaFunction",
        "RegisterNumberFunction",
        "ConfigurePinFunction",
        "FetchProfileFunction",
        "ActivateNumberFunction",
        "DispatchEventsFunction",
        "DeliverWebhooksFunction",
    ]
    .iter()
    .position(|f| *f == function)
    .unwrap_or(99)
}

fn meta_analysis(calls: &[fake_meta::Call]) -> (BTreeMap<String, u64>, u64, u64, u64) {
    let mut by_route: BTreeMap<String, u64> = BTreeMap::new();
    let mut per_key: HashMap<(String, String), u64> = HashMap::new();
    let mut outside = 0;
    for call in calls {
        let route = call
            .route
            .map(|r| format!("{r:?}"))
            .unwrap_or_else(|| "unknown".into());
        *by_route.entry(route.clone()).or_default() += 1;
        if call.route.is_some_and(|r| DOCUMENTED_SEQUENCE.contains(&r)) {
            let key = if call.route == Some(Route::ExchangeCode) {
                call.query.get("code").cloned().unwrap_or_default()
            } else {
                call.path.clone()
            };
            *per_key.entry((route, key)).or_default() += 1;
        } else {
            outside += 1;
        }
    }
    let documented = |route: &str| {
        DOCUMENTED_SEQUENCE
            .iter()
            .filter(|r| format!("{r:?}") == route)
            .count() as u64
    };
    let repeated = per_key
        .iter()
        .map(|((route, _), n)| n.saturating_sub(documented(route).max(1)))
        .sum();
    (by_route, calls.len() as u64, repeated, outside)
}

/// One provisioning run on a fresh stack.
pub async fn run(
    template: &Template,
    backend: &Backend,
    meta: &FakeMeta,
    meta_latency: Duration,
    signups: usize,
    burst: bool,
    limit: Duration,
) -> Result<ProvisioningResult> {
    let direct = backend.direct().await?;
    let stack = setup::stack(template, &direct.sdk, meta).await?;
    // Each function with only its own role's rights and AWS's limits, before the counting.
    let guards = muchaw_local::aws_proxy::Guards::new();
    guards.register(template, &stack)?;
    let proxy = CountingProxy::start_guarded(backend.upstreams.clone(), guards.hooks()).await?;
    let sdk = muchaw_local::identity::function_sdk_config(
        &sdk_config_for(&proxy.url()).await,
        &proxy.url(),
        &stack.prefix,
        None,
    );
    let local = muchaw_local::stack::build(
        template,
        &stack,
        &sdk,
        meta.app_secret(),
        setup::VERIFY_TOKEN,
        setup::SIGNING_KEY,
    )?;
    let store = setup::table_store(&stack, &direct.sdk)?;
    let account = store.create_account("bench").await?;
    let key = store.create_api_key(&account.id, Some("bench")).await?;
    let key = key.key.expose().to_string();
    let mut queue_functions = HashMap::new();
    for source in muchaw_local::pipeline::sqs_sources(template)? {
        queue_functions.insert(
            stack.queue_url(&source.queue_id)?.to_string(),
            source.function_id.clone(),
        );
    }

    let salt: u32 = rand::random::<u32>() % 100_000;
    let phones: Vec<Phone> = (0..signups)
        .map(|i| {
            let waba = format!("3{salt:05}{i:08}");
            let phone = format!("4{salt:05}{i:08}");
            meta.add_phone(
                &waba,
                PhoneProfile {
                    phone_number_id: phone.clone(),
                    display_phone_number: format!("+55 11 9{:08}", i),
                    verified_name: "Bench".into(),
                    quality_rating: "GREEN".into(),
                },
            );
            let code = meta.issue_code(&[waba.as_str()]);
            Phone { waba, phone, code }
        })
        .collect();
    meta.set_code_lifetime(Duration::from_secs(3600));
    meta.set_latency(None, meta_latency);
    meta.clear_calls();

    let pipeline = local.pipeline.start();
    // Let the pollers settle into their long polls before the clock starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mark = proxy.mark();
    let mut watcher = Watcher {
        cursor: mark,
        settled: HashMap::new(),
    };
    let logs_before = crate::logbytes::so_far();
    let started = Instant::now();
    let deadline = started + limit;
    let mut sent: Vec<(String, Instant)> = Vec::new();
    let mut callback_times: Vec<f64> = Vec::new();
    let mut step_records: Vec<Vec<Record>> = Vec::new();
    let mut queue_waits: Vec<f64> = Vec::new();
    let mut to_active: Vec<Record> = Vec::new();
    let mut backoffs: Vec<f64> = Vec::new();
    let mut timed_out = false;
    if burst {
        let results = futures::future::join_all(phones.iter().map(|phone| {
            let router = &local.router;
            let key = &key;
            async move {
                let at = Instant::now();
                signup(router, key, phone)
                    .await
                    .map(|id| (id, at, ms(at.elapsed())))
            }
        }))
        .await;
        for result in results {
            match result {
                Ok((id, at, took)) => {
                    sent.push((id, at));
                    callback_times.push(took);
                }
                Err(err) => eprintln!("signup failed: {err:#}"),
            }
        }
        let ids: Vec<String> = sent.iter().map(|(id, _)| id.clone()).collect();
        timed_out = !watcher.wait_for(&proxy, &ids, deadline).await;
        wait_quiet(&proxy, Duration::from_millis(1500), Duration::from_secs(30)).await;
    } else {
        for phone in &phones {
            let before = proxy.mark();
            let at = Instant::now();
            let id = signup(&local.router, &key, phone).await?;
            callback_times.push(ms(at.elapsed()));
            sent.push((id.clone(), at));
            if !watcher
                .wait_for(&proxy, std::slice::from_ref(&id), deadline)
                .await
            {
                timed_out = true;
                break;
            }
            wait_quiet(&proxy, Duration::from_millis(1500), Duration::from_secs(30)).await;
            let records = proxy.records_since(before);
            if let Some((_, active_at)) = watcher.settled.get(&id) {
                to_active.extend(
                    records
                        .iter()
                        .filter(|r| r.at.is_some_and(|r_at| r_at <= *active_at))
                        .cloned(),
                );
            }
            if std::env::var_os("BENCH_TRACE").is_some() {
                trace(&records, at);
            }
            let (waiting, backoff) = queue_wait(&records);
            queue_waits.push(waiting);
            backoffs.push(backoff);
            step_records.push(records);
        }
    }
    drop(pipeline);
    let held_back = local.pipeline.held_back();
    let meta_log = meta.calls();
    let decomposition = (!burst).then(|| {
        decompose(
            &sent,
            &watcher.settled,
            &step_records,
            &meta_log,
            meta_latency,
            &queue_functions,
        )
    });
    let longest_batch = local.pipeline.longest_run();
    let run_totals = local.pipeline.run_totals();
    let records = proxy.records_since(mark);
    let log_bytes = logged_since(logs_before);
    // The hourly sync's cost per live number, at the same Meta latency (its calls are Meta's).
    let health_sync = if burst || timed_out {
        None
    } else {
        meta.clear_calls();
        let before = proxy.mark();
        let logs = crate::logbytes::so_far();
        let at = Instant::now();
        let summary = local.health_sync.run().await.context("health sync")?;
        Some(HealthSyncRun {
            live_numbers: summary.checked,
            counts: Counts::of(&proxy.records_since(before)),
            meta_calls: meta.calls().len() as u64,
            took: at.elapsed(),
            log_bytes: logged_since(logs),
        })
    };
    meta.set_latency(None, Duration::ZERO);
    let counts = Counts::of(&records);
    let mut times = Vec::new();
    let mut activated = 0;
    let mut failed = 0;
    let mut last = started;
    for (id, at) in &sent {
        match watcher.settled.get(id) {
            Some((to, when)) if to == "ACTIVE" => {
                activated += 1;
                times.push(ms(when.duration_since(*at)));
                last = last.max(*when);
            }
            Some(_) => failed += 1,
            None => {}
        }
    }
    let (meta_calls_by_route, meta_calls, repeated_calls, calls_outside_sequence) =
        meta_analysis(&meta_log);
    let mut per_step = if burst {
        Vec::new()
    } else {
        attribute_steps(&step_records, &queue_functions)
    };
    per_step.sort_by_key(|s| step_order(&s.function));
    let denials = guards.authorizer.denials();
    if !denials.is_empty() {
        anyhow::bail!("AWS requests denied by the functions' roles in template.yaml: {denials:?}");
    }
    Ok(ProvisioningResult {
        backend: backend.name.clone(),
        meta_latency_ms: meta_latency.as_millis() as u64,
        burst,
        signups,
        activated,
        failed,
        timed_out,
        total: last.duration_since(started),
        time_to_active: Summary::of(&times),
        queue_wait: Summary::of(&queue_waits),
        retry_backoff: Summary::of(&backoffs),
        retried_messages: counts
            .ours_by_action
            .get("sqs:ChangeMessageVisibility")
            .copied()
            .unwrap_or(0),
        meta_calls_by_route,
        meta_calls,
        repeated_calls,
        calls_outside_sequence,
        counts,
        per_step,
        held_back,
        longest_batch,
        decomposition,
        run_totals,
        callback_time: Summary::of(&callback_times),
        to_active: Counts::of(&to_active),
        health_sync,
        stored: stored(&store).await?,
        log_bytes,
    })
}

fn logged_since(before: Option<u64>) -> Option<u64> {
    Some(crate::logbytes::so_far()?.saturating_sub(before?))
}

/// Every item of the table, with DynamoDB's billed size.
async fn stored(store: &muchaw_shared::adapters::dynamo::DynamoStore) -> Result<Stored> {
    let mut stored = Stored::default();
    let mut pages = store
        .client()
        .scan()
        .table_name(store.table())
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        for item in page
            .context("scanning the table")?
            .items
            .unwrap_or_default()
        {
            stored.items += 1;
            stored.bytes +=
                crate::cost::ITEM_OVERHEAD_BYTES + crate::dynamo_cost::item_bytes(&item);
        }
    }
    Ok(stored)
}

/// Per number: time to active − Meta − the emulators' answers − queue waits − backoff = our own
/// code (handlers, SDK signing and parsing, the local poller's hand-off).
fn decompose(
    sent: &[(String, Instant)],
    settled: &HashMap<String, (String, Instant)>,
    step_records: &[Vec<Record>],
    meta_log: &[fake_meta::Call],
    meta_latency: Duration,
    queue_functions: &HashMap<String, String>,
) -> Decomposition {
    let meta_alone = DOCUMENTED_SEQUENCE.len() as f64 * ms(meta_latency);
    let mut metas = Vec::new();
    let mut answers = Vec::new();
    let mut own = Vec::new();
    let mut waits = Vec::new();
    let mut backoffs = Vec::new();
    let mut hops = 0u64;
    let mut requests: BTreeMap<String, f64> = BTreeMap::new();
    let mut projected_answers = 0.0;
    let numbers = step_records.len().max(1) as f64;
    for (i, records) in step_records.iter().enumerate() {
        let Some((at, activated)) = sent.get(i).and_then(|(id, at)| {
            settled
                .get(id)
                .filter(|(to, _)| to == "ACTIVE")
                .map(|(_, when)| (*at, *when))
        }) else {
            continue;
        };
        // Up to the activation: the event's fan-out and delivery after it are not waited on.
        let before_active: Vec<Record> = records
            .iter()
            .filter(|r| r.at.is_some_and(|t| t <= activated))
            .cloned()
            .collect();
        let ours: Vec<&Record> = before_active
            .iter()
            .filter(|r| !r.is_event_source())
            .collect();
        let groups = awaited_together(&ours);
        let answered: f64 = groups.iter().map(|group| group.waited_ms).sum();
        projected_answers += groups
            .iter()
            .map(AwaitedTogether::projected_ms)
            .sum::<f64>()
            / numbers;
        for r in before_active.iter().filter(|r| !r.is_event_source()) {
            *requests.entry(r.service.clone()).or_default() += 1.0 / numbers;
        }
        hops += before_active
            .iter()
            .filter(|r| {
                r.action == "ReceiveMessage"
                    && r.received > 0
                    && r.queue
                        .as_ref()
                        .is_some_and(|q| queue_functions.contains_key(q))
            })
            .map(|r| r.received as u64)
            .sum::<u64>();
        answers.push(answered);
        // One signup at a time: the Meta calls between its signup and its activation are its.
        let meta = meta_waited_ms(meta_log, at, activated);
        metas.push(meta);
        let (waited, backoff) = queue_wait(&before_active);
        waits.push(waited);
        backoffs.push(backoff);
        own.push(ms(activated.duration_since(at)) - meta - answered - waited - backoff);
    }
    Decomposition {
        meta_alone,
        meta: Summary::of(&metas).p50,
        aws_answers: Summary::of(&answers),
        queue_waits: Summary::of(&waits),
        backoff: Summary::of(&backoffs),
        own_code: Summary::of(&own),
        hops: hops as f64 / numbers,
        requests,
        projected_answers,
    }
}

/// The time between `from` and `to` that some Meta call asked in it was unanswered: the union
/// of the calls' spans, so calls asked together count once.
fn meta_waited_ms(calls: &[fake_meta::Call], from: Instant, to: Instant) -> f64 {
    let mut spans: Vec<(Instant, Instant)> = calls
        .iter()
        .filter_map(|call| {
            let asked = call.asked_at?;
            let answered = call.answered_at.unwrap_or(to).min(to);
            (asked >= from && asked < to).then_some((asked, answered.max(asked)))
        })
        .collect();
    spans.sort();
    let mut waited = Duration::ZERO;
    let mut open: Option<(Instant, Instant)> = None;
    for (asked, answered) in spans {
        open = match open {
            Some((start, end)) if asked <= end => Some((start, end.max(answered))),
            Some((start, end)) => {
                waited += end - start;
                Some((asked, answered))
            }
            None => Some((asked, answered)),
        };
    }
    if let Some((start, end)) = open {
        waited += end - start;
    }
    ms(waited)
}

/// AWS's p50 for a request to `service` (20 ms for a service without one of its own).
fn aws_p50_ms(service: &str) -> f64 {
    AWS_P50_MS
        .iter()
        .find(|(s, _)| *s == service)
        .map_or(20.0, |(_, ms)| *ms)
}

/// Requests of our code whose answers were awaited over overlapping spans at the proxy: one
/// request alone, or several asked before the others answered (a `join` of independent reads).
#[derive(Debug)]
struct AwaitedTogether {
    /// The wall time from the first asked to the last answered.
    waited_ms: f64,
    /// Each request's service.
    services: Vec<String>,
    /// Whether every request was asked before any answered: truly concurrent, not a chain
    /// that happens to overlap its neighbours.
    all_at_once: bool,
}

impl AwaitedTogether {
    /// At AWS's p50s: the longest request when all were in flight at once, else their sum
    /// (conservative: a chain is not credited with its overlaps).
    fn projected_ms(&self) -> f64 {
        let each = self.services.iter().map(|service| aws_p50_ms(service));
        if self.all_at_once {
            each.fold(0.0, f64::max)
        } else {
            each.sum()
        }
    }
}

/// Groups `records` (one number's requests) by overlapping spans, each span the request's
/// asked → answered at the proxy. Sequential requests are one group each, so for code that
/// awaits one request at a time the groups' waits sum to the requests' own times.
fn awaited_together(records: &[&Record]) -> Vec<AwaitedTogether> {
    struct Open {
        first_asked: Instant,
        last_asked: Instant,
        first_answered: Instant,
        last_answered: Instant,
        services: Vec<String>,
    }
    impl Open {
        fn close(self) -> AwaitedTogether {
            AwaitedTogether {
                waited_ms: ms(self.last_answered.duration_since(self.first_asked)),
                services: self.services,
                all_at_once: self.last_asked < self.first_answered,
            }
        }
    }
    let mut spans: Vec<(Instant, Instant, &str)> = records
        .iter()
        .filter_map(|r| {
            let answered = r.at?;
            let asked = answered.checked_sub(Duration::from_secs_f64(r.elapsed_ms / 1000.0))?;
            Some((asked, answered, r.service.as_str()))
        })
        .collect();
    spans.sort_by_key(|(asked, _, _)| *asked);
    let mut groups = Vec::new();
    let mut open: Option<Open> = None;
    for (asked, answered, service) in spans {
        if let Some(group) = open.as_mut()
            && asked < group.last_answered
        {
            group.last_asked = asked;
            group.first_answered = group.first_answered.min(answered);
            group.last_answered = group.last_answered.max(answered);
            group.services.push(service.to_string());
            continue;
        }
        groups.extend(open.take().map(Open::close));
        open = Some(Open {
            first_asked: asked,
            last_asked: asked,
            first_answered: answered,
            last_answered: answered,
            services: vec![service.to_string()],
        });
    }
    groups.extend(open.map(Open::close));
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request of `service` asked `asked_ms` after `zero` and answered `answered_ms` after it.
    fn request(zero: Instant, service: &str, asked_ms: u64, answered_ms: u64) -> Record {
        Record {
            at: Some(zero + Duration::from_millis(answered_ms)),
            elapsed_ms: (answered_ms - asked_ms) as f64,
            service: service.into(),
            ..Record::default()
        }
    }

    /// A Meta call asked `asked_ms` after `zero` and answered `answered_ms` after it.
    fn meta_call(zero: Instant, asked_ms: u64, answered_ms: u64) -> fake_meta::Call {
        fake_meta::Call {
            seq: asked_ms,
            route: Some(Route::GetPhone),
            method: "GET".into(),
            path: "/v25.0/1".into(),
            query: BTreeMap::new(),
            body: serde_json::Value::Null,
            status: 200,
            authorization: None,
            chaos: None,
            asked_at: Some(zero + Duration::from_millis(asked_ms)),
            answered_at: Some(zero + Duration::from_millis(answered_ms)),
        }
    }

    #[test]
    fn meta_calls_asked_together_are_waited_on_once_and_calls_in_series_add_up() {
        let zero = Instant::now();
        let calls = [
            meta_call(zero, 0, 150),
            meta_call(zero, 160, 310),
            // The PIN and the profile read, asked together.
            meta_call(zero, 320, 470),
            meta_call(zero, 321, 475),
        ];

        let waited = meta_waited_ms(&calls, zero, zero + Duration::from_secs(1));

        assert!((waited - 455.0).abs() < 0.01, "{waited}");
    }

    #[test]
    fn meta_calls_asked_outside_a_number_s_time_to_active_are_not_its_wait() {
        let zero = Instant::now();
        let calls = [meta_call(zero, 0, 150), meta_call(zero, 500, 650)];

        let waited = meta_waited_ms(
            &calls,
            zero + Duration::from_millis(200),
            zero + Duration::from_millis(600),
        );

        assert!((waited - 100.0).abs() < 0.01, "{waited}");
    }

    #[test]
    fn requests_awaited_one_after_another_are_each_their_own_wait() {
        let zero = Instant::now();
        let records = [
            request(zero, "dynamodb", 0, 10),
            request(zero, "secretsmanager", 12, 30),
            request(zero, "sqs", 31, 40),
        ];
        let records: Vec<&Record> = records.iter().collect();

        let groups = awaited_together(&records);

        assert_eq!(groups.len(), 3);
        let waited: f64 = groups.iter().map(|g| g.waited_ms).sum();
        assert!((waited - 37.0).abs() < 0.01, "{waited}");
        let projected: f64 = groups.iter().map(AwaitedTogether::projected_ms).sum();
        assert!((projected - 35.0).abs() < 0.01, "{projected}");
    }

    #[test]
    fn requests_asked_together_wait_and_project_as_the_longest() {
        let zero = Instant::now();
        let records = [
            request(zero, "secretsmanager", 0, 18),
            request(zero, "dynamodb", 1, 12),
        ];
        let records: Vec<&Record> = records.iter().collect();

        let groups = awaited_together(&records);

        assert_eq!(groups.len(), 1);
        assert!((groups[0].waited_ms - 18.0).abs() < 0.01);
        assert!((groups[0].projected_ms() - 20.0).abs() < 0.01);
    }

    #[test]
    fn a_chain_of_overlapping_requests_projects_as_their_sum() {
        let zero = Instant::now();
        // b overlaps a and c, but c was asked after a answered.
        let records = [
            request(zero, "dynamodb", 0, 10),
            request(zero, "dynamodb", 5, 20),
            request(zero, "dynamodb", 15, 25),
        ];
        let records: Vec<&Record> = records.iter().collect();

        let groups = awaited_together(&records);

        assert_eq!(groups.len(), 1);
        assert!((groups[0].waited_ms - 25.0).abs() < 0.01);
        assert!((groups[0].projected_ms() - 15.0).abs() < 0.01);
    }
}
