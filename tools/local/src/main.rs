//! `muchaw-local`: the whole system on one machine, no Docker, no AWS account.
//! Starts moto, creates what template.yaml declares, creates a demo account and key, and serves
//! the HTTP API on a local port.

use std::collections::HashMap;
use std::net::SocketAddr;

use anyhow::{Context, Result};
use clap::Parser;
use muchaw_local::provision::Overrides;
use muchaw_local::{Moto, Template, provision};
use muchaw_shared::adapters::dynamo::DynamoStore;
use muchaw_shared::adapters::sqs::SqsQueue;
use muchaw_shared::config::QueueUrls;

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
    /// the `events/` files name, and prints a function's environment as KEY=VALUE lines.
    Env {
        /// The function's logical id in template.yaml.
        #[arg(long)]
        function: String,
        #[arg(long, env = "MOTO_ENDPOINT")]
        moto_endpoint: String,
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
        }) => print_env(&function, &moto_endpoint, &template).await,
        None => up(cli.up).await,
    }
}

/// The key and number that the `events/` files use.
pub const EXAMPLE_API_KEY: &str = "mk_example_local_key_0000000000000000000000000000";
pub const EXAMPLE_NUMBER_ID: &str = "clexamplenumber00000000001";
pub const EXAMPLE_ACCOUNT_ID: &str = "acc_examples";

async fn print_env(function: &str, endpoint: &str, template: &str) -> Result<()> {
    let moto = Moto::external(endpoint);
    let sdk = moto.sdk_config().await;
    let template = Template::load(template)?;
    let prefix = muchaw_local::provision::random_prefix();
    let stack = provision(&template, &sdk, &prefix, &Overrides::default()).await?;
    let store = DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        stack.table("NumbersTable")?,
    );
    let account = store
        .create_account_with_id(EXAMPLE_ACCOUNT_ID.to_string().into(), "Examples")
        .await?;
    let key = muchaw_shared::domain::api_key::PlainApiKey::from_existing(EXAMPLE_API_KEY.into())
        .context("example key")?;
    store
        .store_api_key(&account.id, Some("examples"), key)
        .await?;
    let now = muchaw_shared::domain::time::now();
    let mut number = muchaw_shared::domain::Number::new_pending(
        account.id.clone(),
        "100000000000001".into(),
        "200000000000001".into(),
        now,
    );
    number.id = EXAMPLE_NUMBER_ID.to_string().into();
    number.status = muchaw_shared::domain::Status::Active;
    number.provisioning_step = None;
    number.display_number = Some("+55 11 99999-0000".into());
    store.import_numbers(&[number]).await?;
    for (name, value) in stack.function_environment(&template, function)? {
        println!("{name}={value}");
    }
    println!("AWS_ENDPOINT_URL={endpoint}");
    Ok(())
}

async fn up(args: Args) -> Result<()> {
    let moto = match &args.moto_endpoint {
        Some(endpoint) => Moto::external(endpoint.clone()),
        None if args.moto_port == 0 => Moto::start()?,
        None => Moto::start_on(args.moto_port)?,
    };
    let sdk = moto.sdk_config().await;
    let template = Template::load(&args.template)?;
    let stack = provision(&template, &sdk, "local", &Overrides::default())
        .await
        .context("creating the template's resources on moto")?;

    let env: HashMap<String, String> = stack
        .function_environment(&template, "NumbersApiFunction")?
        .into_iter()
        .collect();
    let table = env
        .get("TABLE_NAME")
        .context("NumbersApiFunction has no TABLE_NAME")?;
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), table);
    let queues = QueueUrls::from_lookup(|name| env.get(name).cloned());
    let queue = SqsQueue::new(aws_sdk_sqs::Client::new(&sdk), queues);

    let account = store.create_account("Local demo").await?;
    let key = store.create_api_key(&account.id, Some("local")).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let base = format!("http://{}", args.listen);
    println!();
    println!("Muchaw Numbers is running locally.");
    println!("  API:       {base}");
    println!("  moto:      {}", moto.endpoint());
    println!("  table:     {table}");
    println!("  account:   {}", account.id);
    println!("  API key:   {}", key.key.expose());
    println!();
    println!("Try:");
    println!("  export MUCHAW_API_KEY={}", key.key.expose());
    println!(
        "  curl -s -H \"Authorization: Bearer $MUCHAW_API_KEY\" '{base}/api/numbers?status=ACTIVE'"
    );
    println!();
    println!("Ctrl-C stops everything.");

    let app = muchaw_shared::api::router(store, queue);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    drop(moto);
    Ok(())
}
