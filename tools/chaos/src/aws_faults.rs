//! AWS faults, as a hook of the local AWS gateway (`muchaw_local::aws_proxy`): at the configured
//! rate, a call of the functions is answered instead with a fault in the service's own
//! protocol: throttling, a 500, a connection reset before the call reaches AWS or after it
//! took effect, or added latency. The gateway's other hooks (each function's role, AWS's
//! limits) run first. Nothing in production code changes: only the functions' endpoint points
//! here.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use axum::http::StatusCode;
use muchaw_local::aws_proxy::{AwsCall, AwsProxy, Hook, Service, Verdict, aws_error};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub use muchaw_local::upstreams::Upstreams;

/// One kind of AWS fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AwsFault {
    /// `ThrottlingException` (SQS, Secrets Manager) or `ProvisionedThroughputExceededException`
    /// / `ThrottlingException` (DynamoDB), HTTP 400: nothing happened.
    Throttled,
    /// HTTP 500 `InternalServerError` / `InternalFailure`: nothing happened.
    ServerError,
    /// The connection drops before the call reaches AWS.
    ResetBefore,
    /// The call takes effect, then the connection drops before its answer.
    ResetAfter,
    /// 50 to 800 ms more before the call goes on.
    Latency,
}

impl AwsFault {
    pub const ALL: [AwsFault; 5] = [
        AwsFault::Throttled,
        AwsFault::ServerError,
        AwsFault::ResetBefore,
        AwsFault::ResetAfter,
        AwsFault::Latency,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AwsFault::Throttled => "throttled",
            AwsFault::ServerError => "500",
            AwsFault::ResetBefore => "connection reset (before the call)",
            AwsFault::ResetAfter => "connection reset (after the call took effect)",
            AwsFault::Latency => "added latency",
        }
    }
}

/// The fault hook's state.
struct Faults {
    rate: Mutex<f64>,
    rng: Mutex<StdRng>,
    /// (service, fault) -> count.
    injected: Mutex<BTreeMap<(String, AwsFault), u64>>,
    /// service -> requests forwarded or faulted.
    requests: Mutex<BTreeMap<String, u64>>,
    enabled: AtomicBool,
}

/// The gateway with faults; stops when dropped.
pub struct FaultProxy {
    proxy: AwsProxy,
    faults: Arc<Faults>,
}

impl FaultProxy {
    /// A gateway to `upstreams` with `guards` (the functions' roles, AWS's limits) before the
    /// faults, injected at `rate` once [`FaultProxy::storm`] is called.
    pub async fn start(
        upstreams: Upstreams,
        rate: f64,
        seed: u64,
        guards: Vec<Arc<dyn Hook>>,
    ) -> Result<FaultProxy> {
        let faults = Arc::new(Faults {
            rate: Mutex::new(rate),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            injected: Mutex::default(),
            requests: Mutex::default(),
            enabled: AtomicBool::new(false),
        });
        let mut hooks = guards;
        hooks.push(faults.clone());
        let proxy = AwsProxy::start(upstreams, hooks).await?;
        Ok(FaultProxy { proxy, faults })
    }

    pub fn url(&self) -> String {
        self.proxy.url()
    }

    /// Starts injecting (the proxy starts calm, so setting the run up is not faulted).
    pub fn storm(&self) {
        self.faults.enabled.store(true, Ordering::SeqCst);
    }

    /// Stops injecting (calls go straight through from now on).
    pub fn calm(&self) {
        self.faults.enabled.store(false, Ordering::SeqCst);
    }

    pub fn injected(&self) -> BTreeMap<(String, AwsFault), u64> {
        lock(&self.faults.injected).clone()
    }

    pub fn requests(&self) -> BTreeMap<String, u64> {
        lock(&self.faults.requests).clone()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn service_name(service: Service) -> String {
    match service {
        Service::Other => "other".into(),
        known => known.iam_prefix().into(),
    }
}

impl Faults {
    fn choose(&self) -> Option<AwsFault> {
        if !self.enabled.load(Ordering::SeqCst) {
            return None;
        }
        let rate = *lock(&self.rate);
        let mut rng = lock(&self.rng);
        if rate <= 0.0 || !rng.random_bool(rate.min(1.0)) {
            return None;
        }
        Some(AwsFault::ALL[rng.random_range(0..AwsFault::ALL.len())])
    }
}

impl Hook for Faults {
    fn before(&self, call: &AwsCall) -> Verdict {
        let service = service_name(call.service);
        *lock(&self.requests).entry(service.clone()).or_default() += 1;
        let Some(fault) = self.choose() else {
            return Verdict::Forward;
        };
        *lock(&self.injected).entry((service, fault)).or_default() += 1;
        match fault {
            AwsFault::Throttled => {
                let code = match call.service {
                    Service::DynamoDb if lock(&self.rng).random_bool(0.5) => {
                        "ProvisionedThroughputExceededException"
                    }
                    _ => "ThrottlingException",
                };
                Verdict::Refuse(aws_error(
                    call.service,
                    StatusCode::BAD_REQUEST,
                    code,
                    "Rate exceeded",
                ))
            }
            AwsFault::ServerError => {
                let code = if call.service == Service::DynamoDb {
                    "InternalServerError"
                } else {
                    "InternalFailure"
                };
                Verdict::Refuse(aws_error(
                    call.service,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    code,
                    "We encountered an internal error. Please try again.",
                ))
            }
            AwsFault::ResetBefore => Verdict::ResetBefore,
            AwsFault::ResetAfter => Verdict::ResetAfter,
            AwsFault::Latency => Verdict::Delay(Duration::from_millis(
                lock(&self.rng).random_range(50..=800),
            )),
        }
    }
}
