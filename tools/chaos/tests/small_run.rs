//! `make test`'s chaos run: a few signups under every kind of fault, fixed seed, and every
//! invariant held at the end. The full run is `make chaos` (docs/RELIABILITY.md).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use muchaw_chaos::{Config, run};

/// Fixed, so a failure here is replayed with `make chaos SEED=14 SIGNUPS=4`.
const SEED: u64 = 14;

fn build_function_binaries() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "--workspace", "--bins"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .status()
        .expect("cargo");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_small_run_under_every_kind_of_fault_keeps_every_invariant() {
    build_function_binaries();
    let bin_dir = PathBuf::from(env!("CARGO_BIN_EXE_muchaw-chaos"))
        .parent()
        .expect("the binaries' directory")
        .to_path_buf();
    let template = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../template.yaml"));
    let mut config = Config::full(SEED, bin_dir, template);
    config.signups = 4;
    config.accounts = 2;
    config.phones_per_waba = 2;
    config.settle_limit = Duration::from_secs(400);
    // A message whose function was killed comes back within 40 s (above every SQS-fed
    // function's timeout, 30 s at most) instead of the deliveries queue's 180 s: the run
    // settles in seconds, the same faults met.
    config.visibility_timeout_cap = Some(40);

    let outcome = run(config).await.expect("the chaos run");

    let broken: Vec<String> = outcome
        .invariants
        .iter()
        .filter(|i| !i.held())
        .map(|i| format!("{}: {:?}", i.name, i.broken))
        .collect();
    assert!(broken.is_empty(), "seed {SEED}: {broken:#?}");
    assert!(
        outcome.time_to_settle.is_some(),
        "seed {SEED}: did not settle"
    );
    assert_eq!(outcome.operations.signups_attempted, 4);
}
