//! `fake-meta --port 8081 --app-id ID --app-secret SECRET [--seed-demo]`: the fake Graph API as
//! a process on 127.0.0.1, scripted over `/_fake/*` by the local stack and demos. Every call is
//! logged as one line to stderr.

use std::net::SocketAddr;

use clap::Parser;
use fake_meta::{FakeMeta, FakeMetaConfig, seed_demo};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Parser)]
#[command(name = "fake-meta", about = "A fake of Meta's WhatsApp Graph API")]
struct Args {
    #[arg(long, default_value_t = 8081)]
    port: u16,
    #[arg(long, default_value = "1234567890")]
    app_id: String,
    #[arg(long, default_value = "fake-app-secret")]
    app_secret: String,
    /// Adds a demo WABA and phone and prints a signup code for them (valid 30 s; more from
    /// `POST /_fake/codes`).
    #[arg(long)]
    seed_demo: bool,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| spec.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(filter)
        .init();
    let fake = FakeMeta::start_on(
        FakeMetaConfig {
            app_id: args.app_id,
            app_secret: args.app_secret,
        },
        SocketAddr::from(([127, 0, 0, 1], args.port)),
    )
    .await?;
    eprintln!(
        "fake Meta Graph API on {} (app id {})",
        fake.base_url(),
        fake.app_id()
    );
    if args.seed_demo {
        let seed = seed_demo(&fake);
        let code = fake.issue_code(&[&seed.waba_id]);
        eprintln!(
            "demo WABA {} phone {} code {code} (valid 30 s)",
            seed.waba_id, seed.phone_number_id
        );
    }
    tokio::signal::ctrl_c().await?;
    fake.shutdown().await;
    Ok(())
}
