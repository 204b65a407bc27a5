//! A quick run of every benchmark section with tiny counts, against debug binaries and moto.
//! It checks what was measured (rows, counts), never how fast anything was.

use std::path::PathBuf;
use std::time::Duration;

use muchaw_bench::provisioning::DOCUMENTED_SEQUENCE;
use muchaw_bench::{Options, cold, report, run};
use muchaw_local::Moto;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds every function binary and the baseline (debug) and returns their directory.
fn built_binaries(packages: &[String]) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    command.args(["build", "--quiet"]).current_dir(workspace());
    for package in packages {
        command.args(["-p", package]);
    }
    let status = command.status().expect("cargo");
    assert!(status.success(), "building {packages:?}");
    std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace().join("target"))
        .join("debug")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_quick_run_measures_every_section() {
    let functions = muchaw_bench::functions().expect("template functions");
    let mut packages: Vec<String> = functions.iter().map(|(_, b)| b.clone()).collect();
    packages.push(cold::BASELINE.into());
    let bin_dir = built_binaries(&packages);
    let moto = Moto::shared();

    let mut options = Options::quick(moto.endpoint().to_string(), bin_dir);
    options.cold_runs = 1;
    options.api_samples = 10;
    options.account_size = 60;
    options.deep_offset = 30;
    options.throughput_duration = Duration::from_millis(300);
    options.signups = 2;
    options.sequential_signups = 1;
    options.meta_latencies_ms = vec![0];
    options.build_note = "debug (smoke test)".into();
    let result = run(&options).await.expect("benchmark run");

    // Sizes and cold starts: every function and the baseline.
    assert_eq!(result.sizes.len(), packages.len());
    assert!(result.sizes.iter().all(|r| r.binary_bytes.is_some()));
    let cold = result.cold.as_ref().expect("cold starts");
    let cold_names: Vec<&str> = cold.rows.iter().map(|r| r.name.as_str()).collect();
    for package in &packages {
        assert!(
            cold_names.contains(&package.as_str()),
            "{package}: no cold-start row"
        );
    }
    for row in &cold.rows {
        assert_eq!(row.failed_runs, 0, "{}: a cold start failed", row.name);
        assert_eq!(row.init.n, 1, "{}", row.name);
        assert_ne!(
            row.as_expected,
            Some(false),
            "{}: {} is not what events/expected.json says",
            row.name,
            row.outcome
        );
    }

    // meta-webhook's first-request pair, each alone and both at once, on the same emulator.
    let pair = cold
        .concurrency
        .as_ref()
        .expect("the secret and the query timed");
    assert_eq!(cold.backend, "moto");
    for timed in [&pair.secret_alone, &pair.query_alone, &pair.together] {
        assert_eq!(timed.n, options.cold_runs);
        assert!(timed.p50 > 0.0, "{pair:?}");
    }

    // API latency and throughput: every case measured.
    let api = result.api.as_ref().expect("api figures");
    assert_eq!(api.latency.len(), 3);
    assert!(api.latency.iter().all(|(_, _, s)| s.n > 0));
    // Against moto (no DynamoDB Local given): the list and one number, split at the proxy.
    assert_eq!(api.emulators.len(), 2);
    for row in &api.emulators {
        assert_eq!(row.backend, "moto");
        assert!(row.aws_requests_per_call >= 1.0, "{row:?}");
        assert!(
            row.emulator.p50 > 0.0 && row.emulator.p50 < row.total.p50,
            "{row:?}"
        );
    }
    assert_eq!(api.throughput.len(), 3);
    assert!(
        api.throughput
            .iter()
            .all(|(_, t)| t.requests > 0 && t.errors == 0)
    );

    // DynamoDB: each list and one transactional status change.
    let dynamo = result.dynamo.as_ref().expect("dynamodb figures");
    assert_eq!(dynamo.lists.len(), 4);
    assert!(dynamo.lists.iter().all(|l| l.counts.ours_total() > 0));
    assert_eq!(dynamo.status_change.transactions, 1);

    // Provisioning: every signup ACTIVE, exactly the documented Meta calls, each request counted.
    assert_eq!(result.provisioning.len(), 2);
    for run in &result.provisioning {
        assert_eq!(run.activated, run.signups, "{run:?}");
        assert_eq!(
            run.meta_calls,
            (DOCUMENTED_SEQUENCE.len() * run.signups) as u64,
            "{:?}",
            run.meta_calls_by_route
        );
        assert_eq!(run.repeated_calls, 0);
        assert!(run.counts.ours("dynamodb") > 0 && run.counts.ours("sqs") > 0);
        assert!(run.counts.event_source_total() > 0);
        assert!(run.counts.items_written > 0);
    }
    let sequential = result
        .provisioning
        .iter()
        .find(|r| !r.burst)
        .expect("one-at-a-time run");
    assert!(
        sequential
            .per_step
            .iter()
            .any(|s| s.function == "ActivateNumberFunction" && s.messages >= 1),
        "{:?}",
        sequential.per_step
    );
    // What the cost model reads: each step's batches and time, the table, one health sync.
    assert!(sequential.run_totals.contains_key("ActivateNumberFunction"));
    let to_active = sequential.to_active.ours_total();
    assert!(to_active > 0 && to_active <= sequential.counts.ours_total());
    assert!(sequential.stored.items > 0 && sequential.stored.bytes > 0);
    let sync = sequential.health_sync.as_ref().expect("a health-sync run");
    assert_eq!(sync.live_numbers, sequential.activated);
    assert!(sync.counts.ours("dynamodb") > 0);

    let text = report::markdown(&result);
    for heading in [
        "## Targets",
        "## Package size",
        "## Cold start",
        "## API latency",
        "## DynamoDB cost",
        "## Provisioning",
        "## Machine",
        "## Reproduce",
        "## moto and DynamoDB Local side by side",
        "## Cost model",
    ] {
        assert!(text.contains(heading), "{heading} missing from the report");
    }
    assert!(text.contains("DynamoDB Local was **not measured**"));
}
