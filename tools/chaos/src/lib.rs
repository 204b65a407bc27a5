//! `muchaw-chaos`: the local stack (every function as its binary under the local Runtime API,
//! moto as AWS, the fake Meta) driven through signups, disconnects, bans and reinstatements,
//! quality changes and failing webhook endpoints while faults are injected on every side; then
//! the system's invariants, checked once it has settled, and the figures of the run.
//!
//! Every random decision comes from generators seeded from the run's seed: the same seed makes
//! the same decisions in the same order. Timing (what the processes do concurrently) is not
//! replayed, so a replay meets the same faults at the same call counts, not at the same instants.

pub mod aws_faults;
pub mod customers;
pub mod invariants;
pub mod report;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::body::Body;
use fake_meta::{ChaosFault, FakeMeta, FakeMetaConfig, PhoneProfile};
use muchaw_local::binaries::BinaryStack;
use muchaw_local::moto::{REGION, sdk_config_for};
use muchaw_local::pipeline::Pipeline;
use muchaw_local::provision::{Overrides, random_prefix};
use muchaw_local::runtime_api::LineSink;
use muchaw_local::{Moto, Stack, Template, provision};
use muchaw_shared::adapters::dynamo::DynamoStore;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::aws_faults::{AwsFault, FaultProxy, Upstreams};
use crate::customers::{CustomerFault, Customers};

/// What a run does.
#[derive(Clone, Debug)]
pub struct Config {
    pub seed: u64,
    pub signups: usize,
    pub accounts: usize,
    /// Phones per WABA (the signups of one account share WABAs in groups of this size).
    pub phones_per_waba: usize,
    /// Probability that one AWS call, one Meta call or one webhook delivery is faulted.
    pub fault_rate: f64,
    /// SIGKILLs of a function process mid-invocation, per minute of the faulted phase.
    pub kills_per_minute: f64,
    /// How long the run waits, after the faults stop, for everything to settle.
    pub settle_limit: Duration,
    /// Where the function binaries are (`target/debug`).
    pub bin_dir: PathBuf,
    pub template: PathBuf,
    /// A running moto (`MOTO_ENDPOINT`), else one is started.
    pub moto_endpoint: Option<String>,
    /// A running DynamoDB Local (`DYNAMODB_LOCAL_ENDPOINT`; `scripts/chaos.sh` starts one): it
    /// takes every DynamoDB request, moto the rest. moto's DynamoDB slows as the tables grow
    /// (each index query reads every item): a 300-signup run took 23 min on moto alone and 8 min
    /// with DynamoDB Local (2 cores, 2026-12-03).
    pub dynamodb_local_endpoint: Option<String>,
    /// Meta's code lifetime: 30 s at Meta, where each step has its own concurrency; the local
    /// stack runs one process per function, so by default the 600 s `make run` gives codes.
    pub code_lifetime: Duration,
    /// Concurrent signups.
    pub concurrency: usize,
    /// Caps the queues' visibility timeouts (see `Overrides::visibility_timeout_cap`): `None`
    /// keeps the template's, as the full run does, so its time to settle is the deployment's.
    pub visibility_timeout_cap: Option<u32>,
}

impl Config {
    pub fn full(seed: u64, bin_dir: PathBuf, template: PathBuf) -> Config {
        Config {
            seed,
            signups: 300,
            accounts: 5,
            phones_per_waba: 3,
            fault_rate: 0.1,
            kills_per_minute: 6.0,
            settle_limit: Duration::from_secs(900),
            bin_dir,
            template,
            moto_endpoint: std::env::var("MOTO_ENDPOINT").ok(),
            dynamodb_local_endpoint: None,
            code_lifetime: Duration::from_secs(600),
            concurrency: 6,
            visibility_timeout_cap: None,
        }
    }
}

/// Client timeouts the functions run with in a chaos run: short, so hangs cost seconds.
pub const META_TIMEOUT_MS: u64 = 2_000;
pub const WEBHOOK_TIMEOUT_SECONDS: u64 = 2;
/// How long a hang lasts: past both timeouts.
pub const HANG: Duration = Duration::from_secs(4);
/// The outbox relay's grace period in a run, and how often it runs meanwhile (its schedule;
/// every minute deployed).
pub const OUTBOX_RELAY_GRACE_SECONDS: u64 = 3;
pub const OUTBOX_RELAY_EVERY: Duration = Duration::from_secs(10);
/// How many times a Meta webhook delivery is attempted before the run gives up on it.
pub const META_REDELIVERIES: u32 = 8;

/// Operations the run performed, by kind.
#[derive(Clone, Debug, Default)]
pub struct Operations {
    pub signups_attempted: u64,
    pub signups_accepted: u64,
    /// Signups answered 4xx (e.g. a code already used by a lost first attempt).
    pub signups_refused: u64,
    /// Signups whose every attempt met a fault (the customer gave up).
    pub signups_abandoned: u64,
    pub disconnects: u64,
    pub bans: u64,
    pub reinstatements: u64,
    pub quality_changes: u64,
    pub health_syncs: u64,
    /// Scheduled runs of the outbox relay, and the events they published.
    pub outbox_relays: u64,
    pub outbox_relayed: u64,
    pub api_requests: u64,
    /// API requests repeated by the client after a 5xx or a transport error.
    pub api_retries: u64,
    pub meta_webhooks: u64,
}

/// Everything a run measured and found.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub config: Config,
    pub operations: Operations,
    pub aws_faults: BTreeMap<(String, AwsFault), u64>,
    pub aws_requests: BTreeMap<String, u64>,
    pub meta_faults: BTreeMap<ChaosFault, u64>,
    pub meta_calls: u64,
    pub kills: BTreeMap<String, u64>,
    pub restarts: BTreeMap<String, u64>,
    pub customer_faults: BTreeMap<CustomerFault, u64>,
    pub deliveries_received: u64,
    pub log_lines: u64,
    pub final_statuses: BTreeMap<String, u64>,
    pub invariants: Vec<invariants::Invariant>,
    pub numbers_lost: Vec<String>,
    pub duplicate_side_effects: Vec<String>,
    /// Meta calls repeated because their first answer was lost (necessary, not duplicates).
    pub repeats_after_lost_answers: u64,
    pub faulted_phase: Duration,
    pub time_to_settle: Option<Duration>,
    pub total: Duration,
}

impl Outcome {
    pub fn all_held(&self) -> bool {
        self.invariants.iter().all(|i| i.held())
    }
}

/// What the driver knows of one signup.
#[derive(Clone, Debug)]
pub struct Signup {
    pub account: usize,
    pub waba: String,
    pub phone: String,
    pub code: String,
    /// The number id the API answered with, once it did.
    pub number_id: Option<String>,
}

pub struct Account {
    pub id: String,
    pub key: String,
    pub endpoint_id: String,
    pub endpoint_secret: String,
    pub endpoint_events: Vec<String>,
}

/// The API as a customer uses it: every request through the HTTP front (API Gateway's routing
/// to the function processes), repeated after a 5xx or a transport error as a client would.
struct Client {
    router: Router,
    requests: AtomicU64,
    retries: AtomicU64,
    /// Every response body, to look for secrets in.
    responses: Mutex<Vec<String>>,
}

impl Client {
    async fn once(
        &self,
        method: &str,
        uri: &str,
        headers: &[(&str, String)],
        body: &str,
    ) -> Result<(u16, Value)> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut request = http::Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = self
            .router
            .clone()
            .oneshot(request.body(Body::from(body.to_string()))?)
            .await?;
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 16 << 20).await?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let value = serde_json::from_str(&text).unwrap_or(Value::Null);
        self.responses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(text);
        Ok((status, value))
    }

    /// Up to six attempts, backing off from half a second.
    async fn call(
        &self,
        method: &str,
        uri: &str,
        headers: &[(&str, String)],
        body: &str,
    ) -> Result<(u16, Value)> {
        let mut last = None;
        for attempt in 0..6u32 {
            if attempt > 0 {
                self.retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(500 << attempt.min(4))).await;
            }
            match self.once(method, uri, headers, body).await {
                Ok((status, value)) if status < 500 => return Ok((status, value)),
                Ok(answer) => last = Some(answer),
                Err(err) => tracing::debug!(error = %err, "request failed; retrying"),
            }
        }
        last.context("every attempt failed")
    }

    async fn api(&self, method: &str, uri: &str, key: &str, body: &str) -> Result<(u16, Value)> {
        self.call(
            method,
            uri,
            &[("authorization", format!("Bearer {key}"))],
            body,
        )
        .await
    }

    fn responses(&self) -> Vec<String> {
        self.responses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The running system and the fault injectors around it.
pub struct World {
    pub stack: Stack,
    pub template: Template,
    pub meta: FakeMeta,
    pub proxy: FaultProxy,
    /// Each function's role and AWS's limits, as the gateways enforce them.
    pub guards: muchaw_local::aws_proxy::Guards,
    pub customers: Customers,
    pub binaries: Arc<BinaryStack>,
    pub moto_endpoint: String,
    /// The harness's own view of AWS (creating the resources, the event source mappings, the
    /// invariants' reads): through `router`, never faulted.
    pub sdk: aws_config::SdkConfig,
    pub logs: Arc<Mutex<Vec<String>>>,
    client: Client,
    _pipeline: muchaw_local::pipeline::PipelineHandle,
    _router: FaultProxy,
    _moto: Moto,
}

const VERIFY_TOKEN: &str = "chaos-verify-token";
const SIGNING_KEY: &str = "chaos-signup-link-signing-key";

/// Derives the seed of one injector from the run's seed, so each has its own sequence.
fn sub_seed(seed: u64, name: &str) -> u64 {
    name.bytes().fold(seed ^ 0x9e37_79b9_7f4a_7c15, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

async fn start(config: &Config) -> Result<World> {
    let template = Template::load(&config.template)?;
    let moto = match &config.moto_endpoint {
        Some(endpoint) => Moto::external(endpoint.clone()),
        None => Moto::start()?,
    };
    let upstreams = match &config.dynamodb_local_endpoint {
        Some(dynamodb) => Upstreams::with_dynamodb(moto.endpoint(), dynamodb),
        None => Upstreams::moto(moto.endpoint()),
    };
    // Each function's role and AWS's limits, for the functions' calls and the event source
    // mappings' alike (a receive's instant bounds the visibility its message may get).
    let guards = muchaw_local::aws_proxy::Guards::new();
    // The same routing as the functions', with a rate of 0 and never set storming.
    let router = FaultProxy::start(upstreams.clone(), 0.0, 0, guards.hooks()).await?;
    let sdk = sdk_config_for(&router.url()).await;
    let meta = FakeMeta::start(FakeMetaConfig::default()).await?;
    meta.set_code_lifetime(config.code_lifetime);
    let overrides = Overrides {
        visibility_timeout_cap: config.visibility_timeout_cap,
        ..Overrides::local(&meta, VERIFY_TOKEN, SIGNING_KEY)
    };
    let stack = provision(&template, &sdk, &random_prefix(), &overrides)
        .await
        .context("creating the template's resources on the emulators")?;
    guards.register(&template, &stack)?;
    let proxy = FaultProxy::start(
        upstreams,
        config.fault_rate,
        sub_seed(config.seed, "aws"),
        guards.hooks(),
    )
    .await?;
    let customers =
        Customers::start(config.fault_rate, sub_seed(config.seed, "customers"), HANG).await?;
    let logs: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink_logs = logs.clone();
    let sink: LineSink = Arc::new(move |function: &str, line: &str| {
        sink_logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(format!("[{function}] {line}"));
    });
    let extra = [
        ("AWS_ENDPOINT_URL", proxy.url()),
        ("AWS_REGION", REGION.to_string()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
        ("RETRY_BASE_SECONDS", "1".to_string()),
        ("RETRY_SLOW_SECONDS", "5".to_string()),
        ("RETRY_RATE_LIMIT_SECONDS", "2".to_string()),
        ("RETRY_RATE_LIMIT_MAX_SECONDS", "10".to_string()),
        ("WEBHOOK_RETRY_SCHEDULE", "2,5,10,20,30,60,60".to_string()),
        ("META_TIMEOUT_MS", META_TIMEOUT_MS.to_string()),
        (
            "WEBHOOK_TIMEOUT_SECONDS",
            WEBHOOK_TIMEOUT_SECONDS.to_string(),
        ),
        // The relay takes events its writer left unpublished for this long (a minute
        // deployed): seconds here, so a run settles in seconds.
        (
            "OUTBOX_RELAY_GRACE_SECONDS",
            OUTBOX_RELAY_GRACE_SECONDS.to_string(),
        ),
        ("RUST_LOG", "info".to_string()),
    ]
    .map(|(k, v)| (k.to_string(), v));
    let binaries = Arc::new(
        BinaryStack::start_with(&template, &stack, &config.bin_dir, &extra, Some(sink)).await?,
    );
    // Fourteen debug binaries start at once: let them finish their init before the run.
    if !binaries.wait_ready(Duration::from_secs(300)).await {
        bail!("the functions did not finish their init within 300 s");
    }
    // Lambda's event source mappings are AWS's, not our code: never faulted, but they poll
    // with each function's role.
    let mapping_sdk =
        muchaw_local::identity::function_sdk_config(&sdk, &router.url(), &stack.prefix, None);
    let pipeline = Pipeline::new(
        &template,
        &stack,
        aws_sdk_sqs::Client::new(&mapping_sdk),
        &binaries.sqs_handlers(),
        &[],
    )?
    .start();
    let client = Client {
        router: binaries.router(),
        requests: AtomicU64::new(0),
        retries: AtomicU64::new(0),
        responses: Mutex::default(),
    };
    Ok(World {
        stack,
        template,
        meta,
        proxy,
        guards,
        customers,
        binaries,
        moto_endpoint: moto.endpoint().to_string(),
        sdk,
        logs,
        client,
        _pipeline: pipeline,
        _router: router,
        _moto: moto,
    })
}

impl World {
    pub fn store(&self) -> Result<DynamoStore> {
        Ok(DynamoStore::new(
            aws_sdk_dynamodb::Client::new(&self.sdk),
            self.stack.table("NumbersTable")?,
        ))
    }

    /// Every number of the account, through the API (all pages).
    pub async fn numbers(&self, key: &str) -> Result<Vec<Value>> {
        let mut numbers = Vec::new();
        loop {
            let uri = format!("/api/numbers?limit=100&offset={}", numbers.len());
            let (status, body) = self.client.api("GET", &uri, key, "").await?;
            if status != 200 {
                bail!("GET {uri}: {status} {body}");
            }
            let page = body["data"].as_array().cloned().unwrap_or_default();
            let done = page.len() < 100;
            numbers.extend(page);
            if done {
                return Ok(numbers);
            }
        }
    }

    /// Posts a signed delivery as Meta does: anything but a 200 (or no answer) is delivered
    /// again with a growing delay (Meta keeps trying for days; a run compresses that into
    /// [`META_REDELIVERIES`] attempts). The last status, or the last error, is returned.
    async fn post_meta_webhook(&self, body: &Value) -> Result<u16> {
        let text = body.to_string();
        let signature = muchaw_shared::meta_webhook::sign(self.meta.app_secret(), text.as_bytes());
        let mut delay = Duration::from_millis(250);
        let mut attempt = 1;
        loop {
            let answer = self
                .client
                .call(
                    "POST",
                    muchaw_shared::meta_webhook::PATH,
                    &[("x-hub-signature-256", signature.clone())],
                    &text,
                )
                .await;
            match answer {
                Ok((200, _)) => return Ok(200),
                Ok((status, _)) if attempt >= META_REDELIVERIES => return Ok(status),
                Err(err) if attempt >= META_REDELIVERIES => return Err(err),
                Ok((status, _)) => {
                    tracing::info!(
                        status,
                        attempt,
                        "Meta webhook not accepted; Meta redelivers"
                    )
                }
                Err(err) => {
                    tracing::info!(error = %err, attempt, "Meta webhook not answered; Meta redelivers")
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(8));
            attempt += 1;
        }
    }

    /// Queue depths (visible + in flight + delayed) by logical id, read from moto directly.
    pub async fn queue_depths(&self) -> Result<BTreeMap<String, u64>> {
        let sqs = aws_sdk_sqs::Client::new(&self.sdk);
        let mut depths = BTreeMap::new();
        for (id, url) in &self.stack.queue_urls {
            let attributes = sqs
                .get_queue_attributes()
                .queue_url(url)
                .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
                .send()
                .await?
                .attributes
                .unwrap_or_default();
            let count = |name: aws_sdk_sqs::types::QueueAttributeName| -> u64 {
                attributes
                    .get(&name)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            };
            use aws_sdk_sqs::types::QueueAttributeName as A;
            depths.insert(
                id.clone(),
                count(A::ApproximateNumberOfMessages)
                    + count(A::ApproximateNumberOfMessagesNotVisible)
                    + count(A::ApproximateNumberOfMessagesDelayed),
            );
        }
        Ok(depths)
    }
}

fn waba_of(account: usize, index_in_account: usize, per_waba: usize) -> String {
    format!("7{account:02}{:05}", index_in_account / per_waba.max(1))
}

async fn create_accounts(world: &World, config: &Config) -> Result<Vec<Account>> {
    let store = world.store()?;
    let mut accounts = Vec::new();
    for a in 0..config.accounts {
        let account = store.create_account(&format!("Chaos {a}")).await?;
        let key = store.create_api_key(&account.id, Some("chaos")).await?;
        let key = key.key.expose().to_string();
        let url = world.customers.url_for(account.id.as_str());
        let (status, body) = world
            .client
            .api(
                "POST",
                "/api/webhooks",
                &key,
                &json!({ "url": url }).to_string(),
            )
            .await?;
        if status != 201 {
            bail!("creating the webhook endpoint: {status} {body}");
        }
        accounts.push(Account {
            id: account.id.to_string(),
            key,
            endpoint_id: body["data"]["id"].as_str().unwrap_or_default().to_string(),
            endpoint_secret: body["data"]["secret"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            endpoint_events: body["data"]["events"]
                .as_array()
                .map(|e| {
                    e.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        });
    }
    Ok(accounts)
}

fn plan_signups(world: &World, config: &Config) -> Vec<Signup> {
    (0..config.signups)
        .map(|i| {
            let account = i % config.accounts.max(1);
            let waba = waba_of(account, i / config.accounts.max(1), config.phones_per_waba);
            let phone = format!("8{i:07}");
            world.meta.add_phone(
                &waba,
                PhoneProfile {
                    phone_number_id: phone.clone(),
                    display_phone_number: format!("+55 11 9{i:07}"),
                    verified_name: format!("Chaos {i}"),
                    quality_rating: "GREEN".into(),
                },
            );
            Signup {
                account,
                waba,
                phone,
                code: String::new(),
                number_id: None,
            }
        })
        .collect()
}

async fn sign_up(world: &World, accounts: &[Account], signup: &mut Signup, ops: &Counters) {
    signup.code = world.meta.issue_code(&[&signup.waba]);
    ops.signups_attempted.fetch_add(1, Ordering::Relaxed);
    let body = json!({"code": signup.code, "wabaId": signup.waba, "phoneNumberId": signup.phone});
    match world
        .client
        .api(
            "POST",
            "/api/signup/callback",
            &accounts[signup.account].key,
            &body.to_string(),
        )
        .await
    {
        Ok((200 | 202, answer)) => {
            ops.signups_accepted.fetch_add(1, Ordering::Relaxed);
            signup.number_id = answer["data"]["id"].as_str().map(str::to_string);
        }
        Ok((status, answer)) if status < 500 => {
            tracing::info!(%status, %answer, phone = %signup.phone, "signup refused");
            ops.signups_refused.fetch_add(1, Ordering::Relaxed);
        }
        _ => {
            ops.signups_abandoned.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[derive(Default)]
struct Counters {
    signups_attempted: AtomicU64,
    signups_accepted: AtomicU64,
    signups_refused: AtomicU64,
    signups_abandoned: AtomicU64,
}

/// One SIGKILL of a function process mid-invocation.
#[derive(Clone, Debug)]
pub struct Kill {
    /// The function's logical id.
    pub function: String,
    /// The `seq` of the last Graph call received before the kill: what the killed invocation
    /// was answered from then on died with it.
    pub after_meta_call: u64,
}

/// SIGKILLs a busy function process now and then until `stop`.
fn start_killer(
    world: &World,
    config: &Config,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Kill>> {
    let processes = world.binaries.processes().to_vec();
    let meta = world.meta.clone();
    let mut rng = StdRng::seed_from_u64(sub_seed(config.seed, "kills"));
    let per_minute = config.kills_per_minute;
    tokio::spawn(async move {
        let mut kills = Vec::new();
        if per_minute <= 0.0 || processes.is_empty() {
            return kills;
        }
        // Checked every 100 ms: a kill is due with this probability at each check.
        let chance = (per_minute / 600.0).min(1.0);
        let mut due = false;
        while !stop.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            due = due || rng.random_bool(chance);
            if !due {
                continue;
            }
            // Only a process inside an invocation: that is where a crash loses work.
            let mut busy: Vec<&(String, muchaw_local::runtime_api::ProcessHandle)> = processes
                .iter()
                .filter(|(_, p)| p.busy.load(Ordering::SeqCst))
                .collect();
            busy.shuffle(&mut rng);
            if let Some((id, process)) = busy.first()
                && process.kill_if_busy()
            {
                kills.push(Kill {
                    function: id.clone(),
                    after_meta_call: meta.last_seq(),
                });
                due = false;
            }
        }
        kills
    })
}

fn meta_envelope(waba: &str, time: i64, value: Value) -> Value {
    json!({"object": "whatsapp_business_account", "entry": [{"id": waba, "time": time,
        "changes": [{"field": "account_update", "value": value}]}]})
}

/// Disconnects, bans and reinstatements, quality changes and health syncs, in a seeded order.
async fn operate(
    world: &World,
    config: &Config,
    accounts: &[Account],
    signups: &[Signup],
    ops: &mut Operations,
) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(sub_seed(config.seed, "operations"));
    let mut wabas: Vec<String> = signups
        .iter()
        .map(|s| s.waba.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    wabas.shuffle(&mut rng);
    let banned: Vec<String> = wabas
        .iter()
        .take((wabas.len() / 5).max(1))
        .cloned()
        .collect();
    let base_time = chrono::Utc::now().timestamp();
    for waba in &banned {
        let ban = meta_envelope(
            waba,
            base_time,
            json!({"event": "DISABLED_UPDATE", "ban_info": {"waba_ban_state": "DISABLE"}}),
        );
        if let Err(err) = world.post_meta_webhook(&ban).await {
            tracing::warn!(error = %err, %waba, "ban not delivered");
        }
        ops.bans += 1;
        ops.meta_webhooks += 1;
    }
    let mut with_ids: Vec<&Signup> = signups.iter().filter(|s| s.number_id.is_some()).collect();
    with_ids.shuffle(&mut rng);
    for signup in with_ids.iter().take((signups.len() / 10).max(1)) {
        let id = signup.number_id.as_deref().unwrap_or_default();
        if let Err(err) = world
            .client
            .api(
                "DELETE",
                &format!("/api/numbers/{id}"),
                &accounts[signup.account].key,
                "",
            )
            .await
        {
            tracing::warn!(error = %err, %id, "disconnect not answered");
        }
        ops.disconnects += 1;
    }
    let mut phones: Vec<&Signup> = signups.iter().collect();
    phones.shuffle(&mut rng);
    for signup in phones.iter().take((signups.len() / 5).max(1)) {
        let rating = if rng.random_bool(0.5) {
            "YELLOW"
        } else {
            "RED"
        };
        world.meta.set_quality(&signup.phone, rating);
        ops.quality_changes += 1;
    }
    for waba in &banned {
        let reinstate = meta_envelope(
            waba,
            base_time + 10,
            json!({"event": "DISABLED_UPDATE", "ban_info": {"waba_ban_state": "REINSTATE"}}),
        );
        if let Err(err) = world.post_meta_webhook(&reinstate).await {
            tracing::warn!(error = %err, %waba, "reinstatement not delivered");
        }
        ops.reinstatements += 1;
        ops.meta_webhooks += 1;
    }
    // The scheduled health sync reads the new ratings (under the same faults).
    if let Err(err) = world.binaries.invoke("HealthSyncFunction", json!({})).await {
        tracing::warn!(error = %err, "health sync invocation failed");
    }
    ops.health_syncs += 1;
    Ok(())
}

/// Runs the outbox relay as its schedule would; the events it found unpublished past the grace
/// period (`None`: the invocation failed, as a scheduled one can).
async fn relay_outbox(world: &World, runs: &AtomicU64, relayed: &AtomicU64) -> Option<u64> {
    runs.fetch_add(1, Ordering::Relaxed);
    match world
        .binaries
        .invoke("OutboxRelayFunction", json!({}))
        .await
    {
        Ok(muchaw_local::runtime_api::Invocation::Response(summary)) => {
            relayed.fetch_add(
                summary["published"].as_u64().unwrap_or(0),
                Ordering::Relaxed,
            );
            summary["found"].as_u64()
        }
        Ok(muchaw_local::runtime_api::Invocation::Error(error)) => {
            tracing::info!(%error, "outbox relay run failed");
            None
        }
        Err(err) => {
            tracing::info!(error = %err, "outbox relay not invoked");
            None
        }
    }
}

/// The relay's schedule until `stop`.
fn start_relay_schedule(
    world: Arc<World>,
    stop: Arc<AtomicBool>,
    runs: Arc<AtomicU64>,
    relayed: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::SeqCst) {
            tokio::time::sleep(OUTBOX_RELAY_EVERY).await;
            relay_outbox(&world, &runs, &relayed).await;
        }
    })
}

async fn wait_until(limit: Duration, mut done: impl AsyncFnMut() -> Result<bool>) -> Result<bool> {
    let started = Instant::now();
    while started.elapsed() < limit {
        // Under faults a check can fail like any request: that is "not yet", not the end.
        match done().await {
            Ok(true) => return Ok(true),
            Ok(false) => {}
            Err(err) => tracing::info!(error = %err, "check failed; trying again"),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Ok(false)
}

async fn pending_count(world: &World, accounts: &[Account]) -> Result<(usize, usize)> {
    let mut pending = 0;
    let mut total = 0;
    for account in accounts {
        for number in world.numbers(&account.key).await? {
            total += 1;
            if number["status"] == "PENDING" {
                pending += 1;
            }
        }
    }
    Ok((pending, total))
}

pub async fn run(config: Config) -> Result<Outcome> {
    let started = Instant::now();
    println!(
        "chaos: seed {} (replay with --seed {}), {} signups over {} accounts, fault rate {}",
        config.seed, config.seed, config.signups, config.accounts, config.fault_rate
    );
    let world = Arc::new(start(&config).await?);
    let stop_relay = Arc::new(AtomicBool::new(false));
    let relay_runs = Arc::new(AtomicU64::new(0));
    let relayed = Arc::new(AtomicU64::new(0));
    let relay_schedule = start_relay_schedule(
        world.clone(),
        stop_relay.clone(),
        relay_runs.clone(),
        relayed.clone(),
    );
    let accounts = create_accounts(&world, &config).await?;
    let mut signups = plan_signups(&world, &config);

    // ---- Faulted phase ----
    world.proxy.storm();
    world
        .meta
        .set_chaos(config.fault_rate, sub_seed(config.seed, "meta"), HANG);
    let faulted_started = Instant::now();
    let stop_kills = Arc::new(AtomicBool::new(false));
    let killer = start_killer(&world, &config, stop_kills.clone());
    let counters = Counters::default();
    {
        use futures::StreamExt;
        let world = &world;
        let accounts = &accounts;
        let counters = &counters;
        futures::stream::iter(signups.iter_mut())
            .for_each_concurrent(config.concurrency.max(1), |signup| async move {
                sign_up(world, accounts, signup, counters).await;
            })
            .await;
    }
    println!(
        "chaos: {} signups sent ({:.0} s); waiting for most to leave PENDING",
        config.signups,
        faulted_started.elapsed().as_secs_f64()
    );
    wait_until(Duration::from_secs(180), async || {
        let (pending, total) = pending_count(&world, &accounts).await?;
        Ok(total == 0 || pending * 5 <= total)
    })
    .await?;
    let mut ops = Operations::default();
    operate(&world, &config, &accounts, &signups, &mut ops).await?;
    let faulted_phase = faulted_started.elapsed();

    // ---- Calm: the faults stop; everything must settle ----
    stop_kills.store(true, Ordering::SeqCst);
    let kills = killer.await.unwrap_or_default();
    world.proxy.calm();
    world.meta.set_chaos(0.0, 0, HANG);
    world.customers.calm();
    println!(
        "chaos: faults stopped after {:.0} s; settling",
        faulted_phase.as_secs_f64()
    );
    let calm = Instant::now();
    let mut quiet_polls = 0;
    let mut last_waiting: Vec<String> = Vec::new();
    let settled = wait_until(config.settle_limit, async || {
        let (pending, _) = pending_count(&world, &accounts).await?;
        let depths = world.queue_depths().await?;
        let busy = depths
            .iter()
            .any(|(id, depth)| !id.contains("DeadLetter") && *depth > 0);
        // Settled includes an outbox with nothing left past the relay's grace period.
        let outbox_left = relay_outbox(&world, &relay_runs, &relayed).await != Some(0);
        // What the run waits on, printed when it changes (why settling takes what it takes).
        let waiting: Vec<String> = depths
            .iter()
            .filter(|(id, depth)| !id.contains("DeadLetter") && **depth > 0)
            .map(|(id, depth)| format!("{id} {depth}"))
            .chain((pending > 0).then(|| format!("{pending} PENDING")))
            .chain(outbox_left.then(|| "unpublished outbox events".to_string()))
            .collect();
        if waiting != last_waiting {
            println!(
                "chaos: +{:.0} s waiting on: {}",
                calm.elapsed().as_secs_f64(),
                if waiting.is_empty() {
                    "nothing".to_string()
                } else {
                    waiting.join(", ")
                }
            );
            last_waiting = waiting;
        }
        quiet_polls = if pending == 0 && !busy && !outbox_left {
            quiet_polls + 1
        } else {
            0
        };
        Ok(quiet_polls >= 2)
    })
    .await?;
    let time_to_settle = settled.then(|| calm.elapsed());
    stop_relay.store(true, Ordering::SeqCst);
    relay_schedule.abort();
    println!(
        "chaos: {}; checking invariants",
        match time_to_settle {
            Some(t) => format!("settled in {:.0} s", t.as_secs_f64()),
            None => format!("NOT settled within {:?}", config.settle_limit),
        }
    );

    ops.signups_attempted = counters.signups_attempted.load(Ordering::Relaxed);
    ops.signups_accepted = counters.signups_accepted.load(Ordering::Relaxed);
    ops.signups_refused = counters.signups_refused.load(Ordering::Relaxed);
    ops.signups_abandoned = counters.signups_abandoned.load(Ordering::Relaxed);
    ops.api_requests = world.client.requests.load(Ordering::Relaxed);
    ops.api_retries = world.client.retries.load(Ordering::Relaxed);
    ops.outbox_relays = relay_runs.load(Ordering::Relaxed);
    ops.outbox_relayed = relayed.load(Ordering::Relaxed);

    let found = invariants::check(&world, &accounts, &signups, &kills).await?;
    let mut kills_by_function = BTreeMap::new();
    for kill in &kills {
        *kills_by_function.entry(kill.function.clone()).or_insert(0) += 1;
    }
    let restarts = world
        .binaries
        .processes()
        .iter()
        .map(|(id, p)| (id.clone(), p.restarts.load(Ordering::SeqCst)))
        .filter(|(_, n)| *n > 0)
        .collect();
    let received = world.customers.received();
    let mut customer_faults = BTreeMap::new();
    for delivery in &received {
        if let Some(fault) = delivery.fault {
            *customer_faults.entry(fault).or_insert(0) += 1;
        }
    }
    let log_lines = world.logs.lock().unwrap_or_else(|e| e.into_inner()).len() as u64;
    Ok(Outcome {
        operations: ops,
        aws_faults: world.proxy.injected(),
        aws_requests: world.proxy.requests(),
        meta_faults: world.meta.chaos_injected(),
        meta_calls: world.meta.calls().len() as u64,
        kills: kills_by_function,
        restarts,
        customer_faults,
        deliveries_received: received.len() as u64,
        log_lines,
        final_statuses: found.final_statuses,
        invariants: found.invariants,
        numbers_lost: found.numbers_lost,
        duplicate_side_effects: found.duplicate_side_effects,
        repeats_after_lost_answers: found.repeats_after_lost_answers,
        faulted_phase,
        time_to_settle,
        total: started.elapsed(),
        config,
    })
}

impl World {
    pub fn client_responses(&self) -> Vec<String> {
        self.client.responses()
    }
}
