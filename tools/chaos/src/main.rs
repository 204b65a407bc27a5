//! `muchaw-chaos` (`make chaos`): see the crate's documentation.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use muchaw_chaos::{Config, report, run};

#[derive(Parser)]
#[command(
    name = "muchaw-chaos",
    about = "The local stack under faults, then its invariants"
)]
struct Cli {
    /// The run's seed (default: a random one, printed).
    #[arg(long, env = "SEED")]
    seed: Option<u64>,
    #[arg(long, default_value_t = 300)]
    signups: usize,
    #[arg(long, default_value_t = 5)]
    accounts: usize,
    #[arg(long, default_value_t = 3)]
    phones_per_waba: usize,
    /// Probability that an AWS call, a Meta call or a webhook delivery is faulted.
    #[arg(long, default_value_t = 0.1)]
    fault_rate: f64,
    #[arg(long, default_value_t = 6.0)]
    kills_per_minute: f64,
    #[arg(long, default_value_t = 900)]
    settle_limit_seconds: u64,
    #[arg(long, default_value_t = 6)]
    concurrency: usize,
    #[arg(long, default_value_t = 600)]
    code_lifetime_seconds: u64,
    /// DynamoDB Local's endpoint: DynamoDB goes there, the rest of AWS to moto.
    #[arg(long, env = "DYNAMODB_LOCAL_ENDPOINT")]
    dynamodb_local_endpoint: Option<String>,
    #[arg(long, default_value = "template.yaml")]
    template: PathBuf,
    /// Where to write the report (docs/RELIABILITY.md); nothing written when absent.
    #[arg(long)]
    report: Option<PathBuf>,
    /// A sentence for the report's header (e.g. why N is smaller than the default).
    #[arg(long, default_value = "")]
    note: String,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber_init();
    let cli = Cli::parse();
    let seed = cli.seed.unwrap_or_else(rand::random);
    let bin_dir = std::env::current_exe()?
        .parent()
        .context("where muchaw-chaos runs from")?
        .to_path_buf();
    let mut config = Config::full(seed, bin_dir, cli.template);
    config.signups = cli.signups;
    config.accounts = cli.accounts;
    config.phones_per_waba = cli.phones_per_waba;
    config.fault_rate = cli.fault_rate;
    config.kills_per_minute = cli.kills_per_minute;
    config.settle_limit = Duration::from_secs(cli.settle_limit_seconds);
    config.concurrency = cli.concurrency;
    config.dynamodb_local_endpoint = cli.dynamodb_local_endpoint;
    config.code_lifetime = Duration::from_secs(cli.code_lifetime_seconds);
    let outcome = run(config).await?;
    let markdown = report::markdown(&outcome, &cli.note);
    if let Some(path) = &cli.report {
        std::fs::write(path, &markdown).with_context(|| format!("writing {}", path.display()))?;
        println!("chaos: wrote {}", path.display());
    }
    for invariant in &outcome.invariants {
        println!(
            "chaos: {} {} ({})",
            if invariant.held() { "HELD  " } else { "BROKEN" },
            invariant.name,
            invariant.checked
        );
        for case in invariant.broken.iter().take(10) {
            println!("chaos:     {case}");
        }
    }
    println!("chaos: seed {seed}");
    if !outcome.all_held() {
        std::process::exit(1);
    }
    Ok(())
}

/// Quiet by default: the functions' own logs are captured, not printed.
fn tracing_subscriber_init() {
    if std::env::var_os("RUST_LOG").is_none() {
        // SAFETY: set before any thread is started.
        unsafe { std::env::set_var("RUST_LOG", "error") };
    }
    muchaw_shared::telemetry::init();
}
