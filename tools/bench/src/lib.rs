//! `muchaw-bench`: package size, cold start, API latency and throughput, provisioning and
//! DynamoDB cost, each beside its baseline from the same run. Benchmarks print figures; nothing
//! here asserts on a timing.

pub mod api;
pub mod cold;
pub mod cost;
pub mod dynamo_cost;
pub mod logbytes;
pub mod provisioning;
pub mod proxy;
pub mod report;
pub mod setup;
pub mod size;
pub mod stats;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use muchaw_local::binaries::function_binaries;
use muchaw_local::moto::sdk_config_for;
use muchaw_shared::adapters::dynamo::DynamoStore;
use muchaw_shared::adapters::memory::{MemoryQueue, MemoryStore};
use muchaw_shared::adapters::sqs::SqsQueue;
use muchaw_shared::config::QueueUrls;
use muchaw_shared::domain::{AccountId, Number};

use crate::setup::Backend;

/// Which sections run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Section {
    Size,
    Cold,
    Api,
    Dynamo,
    Provisioning,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub moto_endpoint: String,
    /// Where the function binaries (and hello-lambda) are.
    pub bin_dir: PathBuf,
    /// `cargo lambda build --output-format zip`'s `lambda/` directory, if built.
    pub lambda_dir: Option<PathBuf>,
    /// How the binaries were built, for the report.
    pub build_note: String,
    pub sections: Vec<Section>,
    pub cold_runs: usize,
    pub api_samples: usize,
    pub account_size: usize,
    pub deep_offset: u32,
    pub throughput_clients: usize,
    pub throughput_duration: Duration,
    pub signups: usize,
    pub sequential_signups: usize,
    pub meta_latencies_ms: Vec<u64>,
    pub provisioning_limit: Duration,
    pub reproduce: String,
    /// DynamoDB Local's endpoint: the API latency and the one-at-a-time signups run on it too
    /// (DynamoDB there, SQS and Secrets Manager on moto), beside moto alone.
    pub dynamodb_local: Option<String>,
    /// Which DynamoDB Local it is, or why it was not measured (for the report).
    pub dynamodb_local_note: String,
}

impl Options {
    /// The counts.
    pub fn full(moto_endpoint: String, bin_dir: PathBuf) -> Options {
        Options {
            moto_endpoint,
            bin_dir,
            lambda_dir: None,
            build_note: String::new(),
            sections: vec![
                Section::Size,
                Section::Cold,
                Section::Api,
                Section::Dynamo,
                Section::Provisioning,
            ],
            cold_runs: 20,
            api_samples: 1000,
            account_size: 10_000,
            deep_offset: 5_000,
            throughput_clients: 16,
            throughput_duration: Duration::from_secs(5),
            signups: 500,
            sequential_signups: 5,
            meta_latencies_ms: vec![0, 150],
            provisioning_limit: Duration::from_secs(1200),
            reproduce: "make bench".into(),
            dynamodb_local: None,
            dynamodb_local_note: "not given (`--dynamodb-local-endpoint`)".into(),
        }
    }

    /// moto, then DynamoDB Local (with moto for the rest) when there is one.
    pub fn backends(&self) -> Vec<Backend> {
        let mut backends = vec![Backend::moto(&self.moto_endpoint)];
        if let Some(dynamodb) = &self.dynamodb_local {
            backends.push(Backend::dynamodb_local(&self.moto_endpoint, dynamodb));
        }
        backends
    }

    /// Tiny counts, for smoke tests.
    pub fn quick(moto_endpoint: String, bin_dir: PathBuf) -> Options {
        Options {
            cold_runs: 2,
            api_samples: 20,
            account_size: 300,
            deep_offset: 150,
            throughput_duration: Duration::from_millis(500),
            signups: 4,
            sequential_signups: 1,
            provisioning_limit: Duration::from_secs(120),
            ..Options::full(moto_endpoint, bin_dir)
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct ApiFigures {
    /// (what, backend, summary)
    pub latency: Vec<(String, String, stats::Summary)>,
    /// (front, throughput)
    pub throughput: Vec<(String, api::Throughput)>,
    /// Against the emulators, split at the proxy: moto, then DynamoDB Local.
    pub emulators: Vec<api::SplitLatency>,
}

#[derive(Debug, Default)]
pub struct Report {
    pub options: Option<Options>,
    pub started: Option<chrono::DateTime<chrono::Utc>>,
    pub elapsed: Duration,
    pub sizes: Vec<size::SizeRow>,
    /// Cold starts against moto.
    pub cold: Option<cold::ColdRun>,
    pub api: Option<ApiFigures>,
    pub dynamo: Option<dynamo_cost::DynamoCost>,
    pub provisioning: Vec<provisioning::ProvisioningResult>,
    pub machine: Vec<(String, String)>,
}

/// Every function's cold starts against `backend`'s emulators (through the local AWS gateway,
/// each function with only its own role's rights, as `make run` runs them), beside the
/// hello-world baseline's, and how they answer meta-webhook's two first requests sent at once.
async fn cold_starts(
    options: &Options,
    template: &muchaw_local::Template,
    functions: &[(String, String)],
    backend: &Backend,
    meta: &fake_meta::FakeMeta,
) -> Result<cold::ColdRun> {
    let direct = backend.direct().await?;
    let stack = setup::stack(template, &direct.sdk, meta).await?;
    let store = setup::table_store(&stack, &direct.sdk)?;
    let guards = muchaw_local::aws_proxy::Guards::new();
    guards.register(template, &stack)?;
    let gateway =
        muchaw_local::aws_proxy::AwsProxy::start(backend.upstreams.clone(), guards.hooks()).await?;
    setup::seed_account(&store).await?;
    let events = setup::workspace_root().join("events");
    let mut targets = vec![cold::ColdTarget {
        name: cold::BASELINE.into(),
        binary: options.bin_dir.join(cold::BASELINE),
        environment: vec![("AWS_REGION".into(), "us-east-1".into())],
        event_file: "{\"hello\":\"world\"}".into(),
        event: serde_json::json!({"hello": "world"}),
        expected: None,
        fresh_event: None,
    }];
    for (id, binary) in functions {
        let (event_file, event) = cold::representative_event(&events, binary)?;
        let mut environment: Vec<(String, String)> = stack
            .function_environment(template, id)?
            .into_iter()
            .collect();
        environment.extend(setup::lambda_extra(&gateway.url()));
        environment.retain(|(name, _)| name != "AWS_ACCESS_KEY_ID");
        environment.push((
            "AWS_ACCESS_KEY_ID".into(),
            muchaw_local::identity::function_access_key(&stack.prefix, id),
        ));
        targets.push(cold::ColdTarget {
            name: binary.clone(),
            binary: options.bin_dir.join(binary),
            environment,
            expected: cold::expected(&events, binary, &event_file),
            fresh_event: (binary == "signup-callback")
                .then_some(cold::callback_with_new_phone as fn(&serde_json::Value, usize) -> _),
            event_file,
            event,
        });
    }
    // Each invocation starts from the same table: the example account, its key and its
    // number, nothing an earlier invocation added (numbers, events, counters), so a
    // function's cold and warm requests read and write alike however many ran before.
    let reset = || {
        let (store, stack, direct) = (store.clone(), &stack, &direct);
        async move {
            muchaw_local::provision::recreate_table(template, &direct.sdk, stack, "NumbersTable")
                .await?;
            setup::seed_account(&store).await?;
            setup::seed_number(&store).await
        }
    };
    let rows = cold::measure(&targets, options.cold_runs, reset).await?;
    for row in &rows {
        println!(
            "cold {:<22} {:<15} init p50 {:>7} ms  cold request p50 {:>7} ms  warm p50 {:>7} ms  overhead p50 {:>7} ms  ({})",
            row.name,
            backend.name,
            stats::fmt_ms(row.init.p50),
            stats::fmt_ms(row.cold.p50),
            stats::fmt_ms(row.warm.p50),
            stats::fmt_ms(row.overhead.p50),
            row.outcome
        );
    }
    let concurrency = meta_webhook_pair(&targets, options.cold_runs)
        .await
        .inspect_err(|err| eprintln!("secret and query at once on {}: {err:#}", backend.name))
        .ok();
    let denials = guards.authorizer.denials();
    anyhow::ensure!(
        denials.is_empty(),
        "AWS requests denied by the functions' roles in template.yaml: {denials:?}"
    );
    drop(gateway);
    Ok(cold::ColdRun {
        backend: backend.name.clone(),
        rows,
        concurrency,
    })
}

/// [`cold::ConcurrentAnswers`] for meta-webhook's first-request pair (its app secret, the
/// numbers of the WABA its representative event names), asked by clients built as the function builds them, from
/// its environment.
async fn meta_webhook_pair(
    targets: &[cold::ColdTarget],
    runs: usize,
) -> Result<cold::ConcurrentAnswers> {
    use muchaw_shared::ports::ProvisioningStore;
    let target = targets
        .iter()
        .find(|t| t.name == "meta-webhook")
        .context("no meta-webhook function in the template")?;
    let variable = |name: &str| {
        target
            .environment
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let clients = muchaw_shared::aws::Clients::from_environment(variable)?;
    let arn = variable("META_APP_SECRET_ARN").context("meta-webhook has no META_APP_SECRET_ARN")?;
    let table = variable("TABLE_NAME").context("meta-webhook has no TABLE_NAME")?;
    let waba = target.event["body"]
        .as_str()
        .and_then(|body| muchaw_shared::meta_webhook::waba_read_first(body.as_bytes()))
        .with_context(|| format!("{} names no WABA", target.event_file))?;
    let store = DynamoStore::new(clients.dynamodb, table);
    let secret = || {
        let (secrets, arn) = (&clients.secrets, &arn);
        async move {
            secrets.get_secret_value().secret_id(arn).send().await?;
            Ok(())
        }
    };
    let query = || async {
        store.numbers_of_waba(&waba).await?;
        Ok(())
    };
    cold::concurrent_answers(runs, secret, query).await
}

/// The functions of the template: (logical id, binary name).
pub fn functions() -> Result<Vec<(String, String)>> {
    function_binaries(&setup::template()?)
}

pub async fn run(options: &Options) -> Result<Report> {
    let started = Instant::now();
    let mut report = Report {
        options: Some(options.clone()),
        started: Some(chrono::Utc::now()),
        machine: report::machine(),
        ..Report::default()
    };
    let template = setup::template()?;
    let functions = function_binaries(&template)?;
    // The app secret the `events/` files are signed with.
    let meta = fake_meta::FakeMeta::start(fake_meta::FakeMetaConfig {
        app_secret: setup::EVENTS_APP_SECRET.into(),
        ..fake_meta::FakeMetaConfig::default()
    })
    .await?;
    let direct = sdk_config_for(&options.moto_endpoint).await;

    if options.sections.contains(&Section::Size) {
        let mut names: Vec<String> = functions.iter().map(|(_, b)| b.clone()).collect();
        names.push(cold::BASELINE.into());
        report.sizes = size::measure(&names, &options.bin_dir, options.lambda_dir.as_deref());
        for row in &report.sizes {
            println!(
                "size {:<22} binary {:>10} B  zip {:>10} B",
                row.name,
                row.binary_bytes.map_or("missing".into(), |b| b.to_string()),
                row.zip_bytes.map_or("n/a".into(), |b| b.to_string())
            );
        }
    }

    if options.sections.contains(&Section::Cold) {
        let moto = Backend::moto(&options.moto_endpoint);
        report.cold = Some(cold_starts(options, &template, &functions, &moto, &meta).await?);
    }

    if options.sections.contains(&Section::Api) || options.sections.contains(&Section::Dynamo) {
        data_sections(options, &template, &direct, &meta, &mut report).await?;
    }

    if options.sections.contains(&Section::Provisioning) {
        let backends = options.backends();
        if let Some(backend) = backends.iter().find(|b| b.is_dynamodb_local()) {
            // The JVM compiles DynamoDB Local's hot paths on first use; one unmeasured signup
            // keeps that out of the measured ones.
            eprintln!("provisioning on {}: one signup to warm it up", backend.name);
            provisioning::run(
                &template,
                backend,
                &meta,
                Duration::ZERO,
                1,
                false,
                options.provisioning_limit,
            )
            .await?;
        }
        // Backends inside each latency: runs compared side by side see the same machine load.
        for latency in &options.meta_latencies_ms {
            for backend in &backends {
                // The bursts measure moto under load; on DynamoDB Local only the one-at-a-time
                // signups run, to show our own time without moto's per-request cost.
                let modes: &[bool] = if backend.is_dynamodb_local() {
                    &[false]
                } else {
                    &[false, true]
                };
                for &burst in modes {
                    let signups = if burst {
                        options.signups
                    } else {
                        options.sequential_signups
                    };
                    if signups == 0 {
                        continue;
                    }
                    eprintln!(
                        "provisioning on {}: {signups} signups {} at {latency} ms per Meta call",
                        backend.name,
                        if burst { "at once" } else { "one at a time" }
                    );
                    let result = provisioning::run(
                        &template,
                        backend,
                        &meta,
                        Duration::from_millis(*latency),
                        signups,
                        burst,
                        options.provisioning_limit,
                    )
                    .await?;
                    println!("{}", report::provisioning_line(&result));
                    report.provisioning.push(result);
                }
            }
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

async fn data_sections(
    options: &Options,
    template: &muchaw_local::Template,
    direct: &aws_config::SdkConfig,
    meta: &fake_meta::FakeMeta,
    report: &mut Report,
) -> Result<()> {
    let n = options.account_size;
    let stack = setup::stack(template, direct, meta).await?;
    let store = setup::table_store(&stack, direct)?;
    let seeded = seed_accounts(&store, n, "moto").await?;
    let Seeded {
        big,
        small,
        big_key,
        small_key,
        big_numbers,
        small_numbers,
    } = &seeded;
    let some_id = big_numbers[n / 2].id.to_string();

    if options.sections.contains(&Section::Api) {
        let mut figures = ApiFigures::default();
        let list = LIST;
        let one = format!("/api/numbers/{some_id}");
        let samples = options.api_samples;
        // Our own overhead: the same router over the in-memory store.
        let memory = MemoryStore::default();
        for number in big_numbers.iter() {
            memory.insert_number(number.clone());
        }
        memory.add_key(big_key, big);
        let memory_router = muchaw_shared::api::router(memory.clone(), MemoryQueue::default());
        let small_memory = MemoryStore::default();
        for number in small_numbers.iter() {
            small_memory.insert_number(number.clone());
        }
        small_memory.add_key(small_key, small);
        let small_router = muchaw_shared::api::router(small_memory, MemoryQueue::default());
        let moto_router = muchaw_shared::api::router(store.clone(), MemoryQueue::default());
        let cases: Vec<(String, String, &axum::Router, String, &str, usize)> = vec![
            (
                format!("GET {list} (account of {n})"),
                "in-memory".into(),
                &memory_router,
                list.to_string(),
                big_key.as_str(),
                samples,
            ),
            (
                format!("GET /api/numbers/{{id}} (account of {n})"),
                "in-memory".into(),
                &memory_router,
                one.clone(),
                big_key.as_str(),
                samples,
            ),
            (
                format!("GET {list} (account of 20)"),
                "in-memory".into(),
                &small_router,
                list.to_string(),
                small_key.as_str(),
                samples,
            ),
        ];
        for (what, backend, router, path, key, samples) in cases {
            let summary = api::handler_latency(router, &path, key, 5.min(samples), samples).await?;
            println!(
                "api {what} [{backend}]: p50 {} ms p99 {} ms (n={})",
                stats::fmt_ms(summary.p50),
                stats::fmt_ms(summary.p99),
                summary.n
            );
            figures.latency.push((what, backend, summary));
        }
        let emulator_samples = (samples / 10).max(5);
        for backend in options.backends() {
            let split = if !backend.is_dynamodb_local() {
                split_latencies(&backend, &stack, &seeded, emulator_samples).await?
            } else {
                // Its own stack: the table on DynamoDB Local, queues and secrets on moto.
                let direct = backend.direct().await?;
                let stack = setup::stack(template, &direct.sdk, meta).await?;
                let store = setup::table_store(&stack, &direct.sdk)?;
                let seeded = seed_accounts(&store, n, &backend.name).await?;
                split_latencies(&backend, &stack, &seeded, emulator_samples).await?
            };
            for s in &split {
                println!(
                    "api {} [{}]: p50 {} ms p99 {} ms; emulator p50 {} ms over {:.1} requests; ours p50 {} ms",
                    s.what,
                    s.backend,
                    stats::fmt_ms(s.total.p50),
                    stats::fmt_ms(s.total.p99),
                    stats::fmt_ms(s.emulator.p50),
                    s.aws_requests_per_call,
                    stats::fmt_ms(s.ours.p50)
                );
            }
            figures.emulators.extend(split);
        }
        // The HTTP fronts, 16 clients each.
        let clients = options.throughput_clients;
        let duration = options.throughput_duration;
        let mut fronts: Vec<(String, axum::Router, String)> = vec![
            (
                "in-process handlers, in-memory store".into(),
                memory_router.clone(),
                big_key.clone(),
            ),
            (
                "in-process handlers, moto (`make run --in-process`)".into(),
                moto_router.clone(),
                big_key.clone(),
            ),
        ];
        // The binaries through the gateway with their own roles' rights, as `make run` runs them.
        let guards = muchaw_local::aws_proxy::Guards::new();
        guards.register(template, &stack)?;
        let gateway = muchaw_local::aws_proxy::AwsProxy::start(
            muchaw_local::upstreams::Upstreams::moto(&options.moto_endpoint),
            guards.hooks(),
        )
        .await?;
        let mut extra = setup::lambda_extra(&gateway.url());
        extra.retain(|(k, _)| k != "RUST_LOG");
        extra.push(("RUST_LOG".into(), "error".into()));
        let binaries =
            muchaw_local::binaries::BinaryStack::start(template, &stack, &options.bin_dir, &extra)
                .await
                .context("starting the function binaries")?;
        let binaries = Arc::new(binaries);
        fronts.push((
            "numbers-api binary under the local Runtime API, moto (`make run`)".into(),
            binaries.router(),
            big_key.clone(),
        ));
        for (front, router, key) in fronts {
            let (url, task) = api::serve(router).await?;
            let result = api::throughput(&format!("{url}{list}"), &key, clients, duration).await?;
            task.abort();
            println!(
                "throughput {front}: {:.0} req/s ({} requests, {} errors, p50 {} ms p99 {} ms)",
                result.requests_per_second,
                result.requests,
                result.errors,
                stats::fmt_ms(result.latency.p50),
                stats::fmt_ms(result.latency.p99)
            );
            figures.throughput.push((front, result));
        }
        drop(binaries);
        let denials = guards.authorizer.denials();
        anyhow::ensure!(
            denials.is_empty(),
            "AWS requests denied by the functions' roles in template.yaml: {denials:?}"
        );
        drop(gateway);
        report.api = Some(figures);
    }

    if options.sections.contains(&Section::Dynamo) {
        let proxy = proxy::CountingProxy::start(&options.moto_endpoint).await?;
        let through = sdk_config_for(&proxy.url()).await;
        let proxied = setup::table_store(&stack, &through)?;
        let env = stack.function_environment(template, "MetaWebhookFunction")?;
        let queue = SqsQueue::new(
            aws_sdk_sqs::Client::new(&through),
            QueueUrls::from_lookup(|name| env.get(name).cloned()),
        );
        let deep = options.deep_offset;
        let active = muchaw_shared::domain::Status::Active;
        let cases = [
            dynamo_cost::ListCase {
                label: "all statuses, offset 0",
                account: big,
                account_size: n,
                status: None,
                offset: 0,
            },
            dynamo_cost::ListCase {
                label: "status=ACTIVE, offset 0",
                account: big,
                account_size: n,
                status: Some(active),
                offset: 0,
            },
            dynamo_cost::ListCase {
                label: "all statuses, deep offset",
                account: big,
                account_size: n,
                status: None,
                offset: deep,
            },
            dynamo_cost::ListCase {
                label: "all statuses, offset 0",
                account: small,
                account_size: 20,
                status: None,
                offset: 0,
            },
        ];
        report.dynamo =
            Some(dynamo_cost::measure(&proxy, &proxied, &queue, &store, &cases, big).await?);
    }
    Ok(())
}

/// The two accounts the data sections read: one of `n` numbers, one of 20, each with a key.
struct Seeded {
    big: AccountId,
    small: AccountId,
    big_key: String,
    small_key: String,
    big_numbers: Vec<Number>,
    small_numbers: Vec<Number>,
}

async fn seed_accounts(store: &DynamoStore, n: usize, on: &str) -> Result<Seeded> {
    let big = store.create_account("big").await?.id;
    let small = store.create_account("small").await?.id;
    let big_key = store.create_api_key(&big, Some("bench")).await?;
    let big_key = big_key.key.expose().to_string();
    let small_key = store.create_api_key(&small, Some("bench")).await?;
    let small_key = small_key.key.expose().to_string();
    let big_numbers = api::numbers(&big, n, 0);
    let small_numbers = api::numbers(&small, 20, n);
    let seeding = Instant::now();
    for chunk in big_numbers.chunks(1000) {
        store.import_numbers(chunk).await?;
    }
    store.import_numbers(&small_numbers).await?;
    eprintln!(
        "seeded {n} + 20 numbers on {on} in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );
    Ok(Seeded {
        big,
        small,
        big_key,
        small_key,
        big_numbers,
        small_numbers,
    })
}

/// The list and a single number through the numbers API router, its store's AWS calls going
/// through a counting proxy to `backend`, each request split at the proxy.
async fn split_latencies(
    backend: &Backend,
    stack: &muchaw_local::provision::Stack,
    seeded: &Seeded,
    samples: usize,
) -> Result<Vec<api::SplitLatency>> {
    let proxy = proxy::CountingProxy::start_routed(backend.upstreams.clone()).await?;
    let through = sdk_config_for(&proxy.url()).await;
    let store = setup::table_store(stack, &through)?;
    let router = muchaw_shared::api::router(store, MemoryQueue::default());
    let n = seeded.big_numbers.len();
    let one = format!("/api/numbers/{}", seeded.big_numbers[n / 2].id);
    let mut rows = Vec::new();
    for (what, path) in [
        (format!("GET {LIST} (account of {n})"), LIST.to_string()),
        (format!("GET /api/numbers/{{id}} (account of {n})"), one),
    ] {
        rows.push(
            api::split_latency(
                what,
                &backend.name,
                &router,
                &proxy,
                &path,
                &seeded.big_key,
                5.min(samples),
                samples,
            )
            .await?,
        );
    }
    Ok(rows)
}

/// The page every list benchmark reads.
const LIST: &str = "/api/numbers?limit=20&offset=0";
