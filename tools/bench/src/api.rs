//! Warm API latency (handler time, in process) and the HTTP front's requests per second.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::body::Body;
use http::Request;
use muchaw_shared::domain::{AccountId, Number, QualityRating, Status, time};
use tower::ServiceExt;

use crate::proxy::{CountingProxy, Counts};
use crate::stats::{Summary, ms};

/// `count` numbers of one account, one second apart, 4 in 5 ACTIVE, phones numbered from
/// `first_phone` (phones are unique across a table).
pub fn numbers(account: &AccountId, count: usize, first_phone: usize) -> Vec<Number> {
    let now = time::now();
    (0..count)
        .map(|i| {
            let mut number = Number::new_pending(
                account.clone(),
                format!("1{:014}", i / 50),
                format!("9{:014}", first_phone + i),
                now - chrono::Duration::seconds(i as i64),
            );
            if i % 5 != 0 {
                number.status = Status::Active;
                number.provisioning_step = None;
                number.display_number = Some("+55 11 99999-0000".into());
                number.quality_rating = Some(QualityRating::Green);
            }
            number
        })
        .collect()
}

pub fn get(path: &str, key: &str) -> Result<Request<Body>> {
    Ok(Request::builder()
        .method("GET")
        .uri(path)
        .header("authorization", format!("Bearer {key}"))
        .body(Body::empty())?)
}

/// One request through the router, in process, its body read: the time it took, in ms.
pub async fn timed_get(router: &Router, path: &str, key: &str) -> Result<f64> {
    let request = get(path, key)?;
    let started = Instant::now();
    let response = router.clone().oneshot(request).await?;
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
    let elapsed = started.elapsed();
    if !status.is_success() {
        bail!(
            "GET {path}: {status} {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
    }
    Ok(ms(elapsed))
}

/// Handler time of `samples` requests through the router, in process (routing, authentication,
/// the store, serialisation; no network), after `warmup` unmeasured ones.
pub async fn handler_latency(
    router: &Router,
    path: &str,
    key: &str,
    warmup: usize,
    samples: usize,
) -> Result<Summary> {
    let mut times = Vec::with_capacity(samples);
    for i in 0..warmup + samples {
        let took = timed_get(router, path, key).await?;
        if i >= warmup {
            times.push(took);
        }
    }
    Ok(Summary::of(&times))
}

/// A request's time against an emulator, split at the counting proxy its AWS calls go through.
#[derive(Clone, Debug)]
pub struct SplitLatency {
    pub what: String,
    /// `moto`, `DynamoDB Local`.
    pub backend: String,
    pub total: Summary,
    /// The emulators' answer time per request (summed over its AWS calls).
    pub emulator: Summary,
    /// The rest: our code, the SDK, the proxy hop.
    pub ours: Summary,
    pub aws_requests_per_call: f64,
}

/// [`handler_latency`] with every sample split into the time the emulators took (seen at
/// `proxy`, which the router's store must go through) and the rest.
#[allow(clippy::too_many_arguments)]
pub async fn split_latency(
    what: String,
    backend: &str,
    router: &Router,
    proxy: &CountingProxy,
    path: &str,
    key: &str,
    warmup: usize,
    samples: usize,
) -> Result<SplitLatency> {
    let (mut total, mut emulator, mut ours) = (Vec::new(), Vec::new(), Vec::new());
    let mut requests = 0;
    for i in 0..warmup + samples {
        let mark = proxy.mark();
        let took = timed_get(router, path, key).await?;
        let counts = Counts::of(&proxy.records_since(mark));
        if i >= warmup {
            total.push(took);
            emulator.push(counts.ours_elapsed_ms);
            ours.push(took - counts.ours_elapsed_ms);
            requests += counts.ours_total();
        }
    }
    Ok(SplitLatency {
        what,
        backend: backend.to_string(),
        total: Summary::of(&total),
        emulator: Summary::of(&emulator),
        ours: Summary::of(&ours),
        aws_requests_per_call: requests as f64 / samples.max(1) as f64,
    })
}

#[derive(Clone, Debug)]
pub struct Throughput {
    pub requests_per_second: f64,
    pub requests: u64,
    pub errors: u64,
    pub latency: Summary,
}

/// `clients` concurrent keep-alive clients hitting `url` for `duration`.
pub async fn throughput(
    url: &str,
    key: &str,
    clients: usize,
    duration: Duration,
) -> Result<Throughput> {
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let client = muchaw_shared::http_client::reqwest_builder()?
            .pool_max_idle_per_host(1)
            .build()
            .context("http client")?;
        let stop = stop.clone();
        let errors = errors.clone();
        let url = url.to_string();
        let key = key.to_string();
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let at = Instant::now();
                let ok = match client.get(&url).bearer_auth(&key).send().await {
                    Ok(response) => {
                        let ok = response.status().is_success();
                        ok && response.bytes().await.is_ok()
                    }
                    Err(_) => false,
                };
                if ok {
                    times.push(ms(at.elapsed()));
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            times
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut times = Vec::new();
    for task in tasks {
        times.extend(task.await?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(Throughput {
        requests_per_second: times.len() as f64 / elapsed,
        requests: times.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        latency: Summary::of(&times),
    })
}

/// Serves `router` on a loopback port until the returned task is aborted.
pub async fn serve(router: Router) -> Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok((url, task))
}
