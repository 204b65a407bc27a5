//! `muchaw-local`: the whole system on one machine, no Docker, no AWS account.
//! Starts moto, creates what template.yaml declares, creates a demo account and key, and serves
//! the HTTP API on a local port.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use muchaw_local::provision::Overrides;
use muchaw_local::{Moto, Template, provision};
use muchaw_shared::adapters::dynamo::DynamoStore;

#[derive(Parser)]
#[command(
    name = "muchaw-local",
    about = "Run Muchaw Numbers locally against moto"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    up: Args,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Creates the template's resources on a running moto, seeds the account, key and number
    /// the `events/` files name, and prints a function's environment as KEY=VALUE lines: its
    /// AWS requests go to a local AWS gateway with only its own role's rights, which this
    /// command serves until it is stopped (the last line printed is `# ready`).
    Env {
        /// The function's logical id in template.yaml.
        #[arg(long)]
        function: String,
        #[arg(long, env = "MOTO_ENDPOINT")]
        moto_endpoint: String,
        #[arg(long, default_value = "template.yaml")]
        template: String,
    },
    /// Writes the least-privilege report from a run's authorizer logs (`MUCHAW_IAM_LOG_DIR`):
    /// fails on any denied request; lists each grant no request used that the template gives no
    /// reason for (`Metadata.UnexercisedGrants`).
    IamReport {
        #[arg(long)]
        log_dir: std::path::PathBuf,
        #[arg(long, default_value = "docs/LEAST-PRIVILEGE.md")]
        out: std::path::PathBuf,
        #[arg(long, default_value = "template.yaml")]
        template: String,
    },
}

#[derive(clap::Args)]
struct Args {
    /// Where the HTTP API listens.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Port for moto server (0 = any free port).
    #[arg(long, default_value_t = 0)]
    moto_port: u16,
    /// Use an already running moto server instead of starting one.
    #[arg(long, env = "MOTO_ENDPOINT")]
    moto_endpoint: Option<String>,
    #[arg(long, default_value = "template.yaml")]
    template: String,
    /// Drive a signup through the fake Meta to ACTIVE and show its signed webhook arriving.
    #[arg(long)]
    demo: bool,
    /// Call each function's handler in this process instead of running its binary under the
    /// local Lambda Runtime API.
    #[arg(long)]
    in_process: bool,
}

#[tokio::main]
async fn main() -> Result<()> {
    muchaw_shared::telemetry::init();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Env {
            function,
            moto_endpoint,
            template,
        }) => serve_env(&function, &moto_endpoint, &template).await,
        Some(Command::IamReport {
            log_dir,
            out,
            template,
        }) => iam_report(&log_dir, &out, &template),
        None => up(cli.up).await,
    }
}

async fn serve_env(function: &str, endpoint: &str, template: &str) -> Result<()> {
    let moto = Moto::external(endpoint);
    let sdk = moto.sdk_config().await;
    let template = Template::load(template)?;
    let prefix = muchaw_local::provision::random_prefix();
    let overrides = Overrides {
        secrets: std::collections::HashMap::from([(
            "MetaAppSecret".to_string(),
            muchaw_local::examples::example_meta_app_secret(),
        )]),
        ..Overrides::default()
    };
    let stack = provision(&template, &sdk, &prefix, &overrides).await?;
    let store = DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        stack.table("NumbersTable")?,
    );
    muchaw_local::examples::seed_account(&store).await?;
    muchaw_local::examples::seed_number(&store).await?;
    let guards = muchaw_local::aws_proxy::Guards::new();
    guards.register(&template, &stack)?;
    let gateway = muchaw_local::aws_proxy::AwsProxy::start(
        muchaw_local::upstreams::Upstreams::moto(endpoint),
        guards.hooks(),
    )
    .await?;
    for (name, value) in stack.function_environment(&template, function)? {
        println!("{name}={value}");
    }
    println!("AWS_ENDPOINT_URL={}", gateway.url());
    println!(
        "AWS_ACCESS_KEY_ID={}",
        muchaw_local::identity::function_access_key(&stack.prefix, function)
    );
    println!("# ready");
    use std::io::Write;
    std::io::stdout().flush()?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    drop(gateway);
    Ok(())
}

fn iam_report(log_dir: &std::path::Path, out: &std::path::Path, template: &str) -> Result<()> {
    use muchaw_local::aws_proxy::iam;
    let template = Template::load(template)?;
    let lines = iam::read_logs(log_dir)?;
    if lines.is_empty() {
        anyhow::bail!(
            "no authorizer log under {}: did the tests run?",
            log_dir.display()
        );
    }
    let report = iam::report(&template, &lines)?;
    std::fs::write(out, &report.markdown).with_context(|| format!("writing {}", out.display()))?;
    println!("least-privilege report: {}", out.display());
    for denial in &report.denials {
        eprintln!(
            "DENIED: {} {} on {} ({})",
            denial.function,
            denial.permission.action,
            denial.permission.resource,
            denial.api_action
        );
    }
    for grant in &report.unexplained {
        eprintln!(
            "UNUSED, no reason in the template: {} {} {} on {}",
            grant.function, grant.statement, grant.action, grant.resource
        );
    }
    // A denial is a defect; an unused grant may be a path this run's timing did not take
    // (retries, races), so it is listed, and the table says it has no reason, without failing.
    if !report.denials.is_empty() {
        anyhow::bail!("{} denied request(s) (see above)", report.denials.len());
    }
    if !report.unexplained.is_empty() {
        eprintln!(
            "least privilege: {} grant(s) no request of this run used and template.yaml gives no reason for (listed above)",
            report.unexplained.len()
        );
    }
    Ok(())
}

/// What Meta's subscription handshake must send to `GET /webhooks/meta` locally.
const VERIFY_TOKEN: &str = "local-verify-token";

async fn up(args: Args) -> Result<()> {
    // Refuse what cannot run locally before starting anything.
    let template = Template::load(&args.template)?;
    muchaw_local::schedule::check_runnable(&template)?;
    let moto = match &args.moto_endpoint {
        Some(endpoint) => Moto::external(endpoint.clone()),
        None if args.moto_port == 0 => Moto::start()?,
        None => Moto::start_on(args.moto_port)?,
    };
    let sdk = moto.sdk_config().await;
    let meta = fake_meta::FakeMeta::start(fake_meta::FakeMetaConfig::default()).await?;
    let demo = fake_meta::seed_demo(&meta);
    // Codes a person copies from this terminal need longer than Meta's 30 s.
    meta.set_code_lifetime(std::time::Duration::from_secs(600));
    let signing_key = "local-signup-link-signing-key";
    let mut overrides = Overrides::local(&meta, VERIFY_TOKEN, signing_key);
    // Links point at the hosted page this process serves.
    overrides.parameters.insert(
        "SignupLinkBaseUrl".to_string(),
        format!("http://{}/signup", args.listen),
    );
    // The fake Meta sends its webhooks (`POST /_fake/webhooks`) to this process, as Meta sends
    // them to the app's callback URL.
    meta.set_webhook_callback(&format!("http://{}/webhooks/meta", args.listen));
    // A moto someone else started may already hold a stack: never collide with it.
    let prefix = if args.moto_endpoint.is_some() {
        muchaw_local::provision::random_prefix()
    } else {
        "local".to_string()
    };
    let stack = provision(&template, &sdk, &prefix, &overrides)
        .await
        .context("creating the template's resources on moto")?;
    // Every function's AWS requests go through the gateway: its own role's rights, AWS's limits.
    let guards = muchaw_local::aws_proxy::Guards::new();
    guards.register(&template, &stack)?;
    let gateway = muchaw_local::aws_proxy::AwsProxy::start(
        muchaw_local::upstreams::Upstreams::moto(moto.endpoint()),
        guards.hooks(),
    )
    .await?;
    let function_sdk =
        muchaw_local::identity::function_sdk_config(&sdk, &gateway.url(), &stack.prefix, None);
    let local = muchaw_local::stack::build(
        &template,
        &stack,
        &function_sdk,
        meta.app_secret(),
        VERIFY_TOKEN,
        signing_key,
    )?;
    // Each function as its real binary under the local Runtime API, or (--in-process) its
    // handler called directly.
    let binaries = if args.in_process {
        None
    } else {
        let dir = std::env::current_exe()?
            .parent()
            .context("where muchaw-local runs from")?
            .to_path_buf();
        let extra = [
            ("AWS_ENDPOINT_URL", gateway.url()),
            ("AWS_REGION", muchaw_local::moto::REGION.to_string()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
            // Local retries in seconds, not hours.
            ("RETRY_BASE_SECONDS", "1".to_string()),
            ("RETRY_SLOW_SECONDS", "5".to_string()),
            ("RETRY_RATE_LIMIT_SECONDS", "2".to_string()),
            ("RETRY_RATE_LIMIT_MAX_SECONDS", "30".to_string()),
            ("WEBHOOK_RETRY_SCHEDULE", "2,5,10,20,30,60,60".to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v));
        Some(Arc::new(
            muchaw_local::binaries::BinaryStack::start(&template, &stack, &dir, &extra).await?,
        ))
    };
    let (router, _pipeline) = match &binaries {
        Some(binaries) => {
            let pipeline = muchaw_local::pipeline::Pipeline::new(
                &template,
                &stack,
                aws_sdk_sqs::Client::new(&function_sdk),
                &binaries.sqs_handlers(),
                &[],
            )?;
            (binaries.router(), pipeline.start())
        }
        None => (local.router.clone(), local.pipeline.start()),
    };
    let runner = match &binaries {
        Some(binaries) => muchaw_local::schedule::ScheduledRunner::Binaries(binaries.clone()),
        None => muchaw_local::schedule::ScheduledRunner::InProcess {
            health_sync: local.health_sync.clone(),
            outbox_relay: local.outbox_relay.clone(),
        },
    };
    let schedules = muchaw_local::schedule::schedules(&template)?;
    let (run_now, on_demand) = tokio::sync::mpsc::channel(8);
    let router = muchaw_local::schedule::on_demand_router(run_now).merge(router);
    let scheduled_ids: Vec<String> = schedules.iter().map(|s| s.function_id.clone()).collect();
    let scheduler = muchaw_local::schedule::run_schedules(schedules, runner, on_demand);

    let account = local.store.create_account("Local demo").await?;
    let key = local
        .store
        .create_api_key(&account.id, Some("local"))
        .await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let base = format!("http://{}", args.listen);
    let code = meta.issue_code(&[&demo.waba_id]);
    println!();
    println!("Muchaw Numbers is running locally.");
    println!("  API:        {base}");
    println!("  moto (AWS): {}", moto.endpoint());
    println!("  fake Meta:  {}", meta.base_url());
    println!("  account:    {}", account.id);
    println!("  API key:    {}", key.key.expose());
    println!();
    println!("Try:");
    println!("  export MUCHAW_API_KEY={}", key.key.expose());
    if args.demo {
        println!("  (--demo uses the demo phone's signup code; watch the [demo] lines below)");
    } else {
        println!(
            "  curl -s -X POST -H \"Authorization: Bearer $MUCHAW_API_KEY\" {base}/api/signup/callback -d '{{\"code\":\"{code}\",\"wabaId\":\"{}\",\"phoneNumberId\":\"{}\"}}'",
            demo.waba_id, demo.phone_number_id
        );
    }
    println!(
        "  curl -s -H \"Authorization: Bearer $MUCHAW_API_KEY\" '{base}/api/numbers?status=ACTIVE'"
    );
    for id in &scheduled_ids {
        println!("  curl -s -X POST {base}/_local/schedules/{id}   # run the scheduled {id} now");
    }
    // Listening for Ctrl-C starts before the line that says so: a Ctrl-C right after it (a
    // quick user, a test) must stop everything, not kill this process with its children left.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("listening for Ctrl-C")?;
    println!();
    println!("Ctrl-C stops everything.");

    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        interrupt.recv().await;
    });
    if args.demo {
        let store = local.store.clone();
        let account_id = account.id.clone();
        let api_key = key.key.expose().to_string();
        let other_code = code.clone();
        let base = base.clone();
        tokio::spawn(async move {
            if let Err(err) =
                demo::run(&base, &store, &account_id, &api_key, &other_code, &demo).await
            {
                eprintln!("demo failed: {err:#}");
            }
        });
    }
    tokio::select! {
        served = server => served?,
        () = scheduler => {}
    }
    let denials = guards.authorizer.denials();
    if !denials.is_empty() {
        eprintln!("AWS requests denied by the functions' roles in template.yaml:");
        for denial in denials {
            eprintln!(
                "  {} {} on {}",
                denial.function, denial.permission.action, denial.permission.resource
            );
        }
    }
    drop(gateway);
    drop(meta);
    drop(moto);
    Ok(())
}

mod demo {
    //! `--demo`: a signup through the fake Meta to ACTIVE, and the signed `number.activated`
    //! arriving at a local receiver that verifies it.

    use std::time::Duration;

    use anyhow::{Context, Result, bail};
    use axum::body::Bytes;
    use axum::http::{HeaderMap, StatusCode};
    use muchaw_shared::adapters::dynamo::DynamoStore;
    use muchaw_shared::domain::AccountId;
    use muchaw_shared::ports::WebhookEndpoints;
    use muchaw_shared::webhooks::WebhookEndpoint;
    use tokio::sync::mpsc;

    pub async fn run(
        base: &str,
        store: &DynamoStore,
        account: &AccountId,
        api_key: &str,
        code: &str,
        seed: &fake_meta::DemoSeed,
    ) -> Result<()> {
        let (tx, mut rx) = mpsc::channel::<(HeaderMap, Bytes)>(8);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let receiver_url = format!("http://{}/hooks", listener.local_addr()?);
        let app = axum::Router::new().route(
            "/hooks",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send((headers, body)).await;
                    StatusCode::OK
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        let endpoint = WebhookEndpoint::new(
            account.clone(),
            receiver_url.clone(),
            None,
            muchaw_shared::domain::time::now(),
        );
        store.save_endpoint(&endpoint).await?;
        println!("[demo] webhook receiver at {receiver_url}");
        let client = muchaw_shared::http_client::reqwest_builder()?.build()?;
        let response = client
            .post(format!("{base}/api/signup/callback"))
            .bearer_auth(api_key)
            .json(&serde_json::json!({"code": code, "wabaId": seed.waba_id, "phoneNumberId": seed.phone_number_id}))
            .send()
            .await?;
        let status = response.status();
        let body: serde_json::Value = response.json().await?;
        println!("[demo] POST /api/signup/callback -> {status} {body}");
        let id = body["data"]["id"]
            .as_str()
            .context("no number id")?
            .to_string();
        let (headers, payload) = tokio::time::timeout(Duration::from_secs(120), rx.recv())
            .await
            .context("no webhook within 120 s")?
            .context("receiver stopped")?;
        let webhook = standardwebhooks::Webhook::new(endpoint.secret.expose())?;
        let verified = webhook.verify(&payload, &headers).is_ok();
        println!(
            "[demo] webhook received: webhook-id={} signature {}",
            headers
                .get("webhook-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("?"),
            if verified { "verified" } else { "INVALID" }
        );
        println!("[demo] {}", String::from_utf8_lossy(&payload));
        let number: serde_json::Value = client
            .get(format!("{base}/api/numbers/{id}"))
            .bearer_auth(api_key)
            .send()
            .await?
            .json()
            .await?;
        println!("[demo] GET /api/numbers/{id} -> {}", number["data"]);
        if !verified || number["data"]["status"] != "ACTIVE" {
            bail!("the demo did not end ACTIVE with a verified webhook");
        }
        println!("[demo] done: the number is ACTIVE and its signed webhook verified.");
        Ok(())
    }
}
