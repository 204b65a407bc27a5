//! Bytes our code logs, counted: the functions' JSON log format (`shared::telemetry`) at the
//! template's `ApplicationLogLevel` (INFO), written nowhere, for the CloudWatch Logs estimate.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

static BYTES: AtomicU64 = AtomicU64::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);

struct Counter;

impl io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        BYTES.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Counts what `muchaw_shared` logs at INFO and above from now on (once per process; a no-op
/// when another subscriber is already installed).
pub fn install() {
    let installed = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .with_target(false)
                .with_writer(|| Counter),
        )
        .with(muchaw_shared::telemetry::filter("muchaw_shared=info"))
        .try_init()
        .is_ok();
    if installed {
        INSTALLED.store(true, Ordering::Relaxed);
    }
}

/// Bytes logged so far; `None` when counting is not installed.
pub fn so_far() -> Option<u64> {
    INSTALLED
        .load(Ordering::Relaxed)
        .then(|| BYTES.load(Ordering::Relaxed))
}
