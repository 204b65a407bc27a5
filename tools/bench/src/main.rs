//! `muchaw-bench`: runs the benchmarks and writes `docs/PERFORMANCE.md`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use muchaw_bench::{Options, Section, report, run};
use muchaw_local::Moto;

#[derive(Parser)]
#[command(
    name = "muchaw-bench",
    about = "Benchmarks: package size, cold start, API latency and throughput, provisioning, DynamoDB cost"
)]
struct Cli {
    /// A running moto server (else one is started).
    #[arg(long, env = "MOTO_ENDPOINT")]
    moto_endpoint: Option<String>,
    /// Where the function binaries and hello-lambda are (default: next to this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// `cargo lambda build --output-format zip`'s output directory (`<target>/lambda`).
    #[arg(long)]
    lambda_dir: Option<PathBuf>,
    /// How the binaries were built (goes into the report).
    #[arg(long, default_value = "")]
    build_note: String,
    /// Where to write the report.
    #[arg(long, default_value = "docs/PERFORMANCE.md")]
    out: PathBuf,
    /// Don't write the report.
    #[arg(long)]
    no_write: bool,
    /// Tiny counts: a smoke run.
    #[arg(long)]
    quick: bool,
    /// Only these sections (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    sections: Vec<Section>,
    #[arg(long)]
    cold_runs: Option<usize>,
    #[arg(long)]
    api_samples: Option<usize>,
    #[arg(long)]
    account_size: Option<usize>,
    #[arg(long)]
    signups: Option<usize>,
    #[arg(long)]
    sequential_signups: Option<usize>,
    /// Fake Meta latencies per call, in ms.
    #[arg(long, value_delimiter = ',')]
    meta_latencies: Vec<u64>,
    #[arg(long)]
    throughput_seconds: Option<f64>,
    /// DynamoDB Local (AWS's emulator): the API latency and the one-at-a-time signups run on it
    /// too, DynamoDB there and SQS/Secrets Manager on moto. Only inside a private network
    /// namespace (it binds every interface): `scripts/bench.sh` starts it so.
    #[arg(long, env = "DYNAMODB_LOCAL_ENDPOINT")]
    dynamodb_local_endpoint: Option<String>,
    /// Which DynamoDB Local that is, or why there is none (for the report).
    #[arg(long, default_value = "")]
    dynamodb_local_note: String,
    /// The command that reproduces this run, for the report.
    #[arg(long, default_value = "make bench")]
    reproduce: String,
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    muchaw_bench::logbytes::install();
    let moto = match &cli.moto_endpoint {
        Some(endpoint) => Moto::external(endpoint.clone()),
        None => Moto::start()?,
    };
    let bin_dir = match cli.bin_dir {
        Some(dir) => dir,
        None => std::env::current_exe()?
            .parent()
            .context("where muchaw-bench runs from")?
            .to_path_buf(),
    };
    let endpoint = moto.endpoint().to_string();
    let mut options = if cli.quick {
        Options::quick(endpoint, bin_dir)
    } else {
        Options::full(endpoint, bin_dir)
    };
    options.lambda_dir = cli.lambda_dir;
    options.build_note = cli.build_note;
    options.reproduce = cli.reproduce;
    options.dynamodb_local = cli.dynamodb_local_endpoint;
    if !cli.dynamodb_local_note.is_empty() {
        options.dynamodb_local_note = cli.dynamodb_local_note;
    }
    if !cli.sections.is_empty() {
        options.sections = cli.sections;
    }
    if let Some(n) = cli.cold_runs {
        options.cold_runs = n;
    }
    if let Some(n) = cli.api_samples {
        options.api_samples = n;
    }
    if let Some(n) = cli.account_size {
        options.account_size = n;
        options.deep_offset = (n / 2) as u32;
    }
    if let Some(n) = cli.signups {
        options.signups = n;
    }
    if let Some(n) = cli.sequential_signups {
        options.sequential_signups = n;
    }
    if !cli.meta_latencies.is_empty() {
        options.meta_latencies_ms = cli.meta_latencies;
    }
    if let Some(s) = cli.throughput_seconds {
        options.throughput_duration = Duration::from_secs_f64(s);
    }
    let result = run(&options).await?;
    let text = report::markdown(&result);
    if cli.no_write {
        println!("{text}");
    } else {
        if let Some(dir) = cli.out.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&cli.out, &text)
            .with_context(|| format!("writing {}", cli.out.display()))?;
        println!(
            "wrote {} ({:.0} s)",
            cli.out.display(),
            result.elapsed.as_secs_f64()
        );
    }
    drop(moto);
    Ok(())
}
