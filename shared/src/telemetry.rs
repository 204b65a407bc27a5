use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// JSON log lines (one object per line), with the Lambda request id from the runtime's span.
/// `RUST_LOG` overrides the level; the default keeps the AWS SDK's chatter out.
pub const DEFAULT_FILTER: &str = "info,aws_config=warn,aws_smithy_runtime=warn";

/// A `RUST_LOG`-style filter (`level,target=level,...`), or `default` when `RUST_LOG` is unset
/// or malformed. Targets rather than `EnvFilter`: `EnvFilter`'s span and field matchers bring a
/// regex engine into every function's package (issue 13's 3 MB budget) and nothing here uses
/// them.
pub fn filter_from_env(default: &str) -> Targets {
    std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| spec.parse().ok())
        .unwrap_or_else(|| filter(default))
}

/// A filter from a `level,target=level,...` spec; one that does not parse lets nothing through
/// but errors, so a typo never floods the logs.
pub fn filter(spec: &str) -> Targets {
    spec.parse()
        .unwrap_or_else(|_| Targets::new().with_default(tracing::Level::ERROR))
}

pub fn init() {
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .with_target(false),
        )
        .with(filter_from_env(DEFAULT_FILTER))
        .try_init();
}

/// An error with its causes, `what failed: because: because`, for log fields: infrastructure
/// errors keep their cause (the SDK's, serde's) as a source, and a log should show all of it.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'a));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(err) = cause {
            write!(f, ": {err}")?;
            cause = err.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("inner")]
    struct Inner(#[source] std::io::Error);

    #[test]
    fn the_default_filter_keeps_our_info_lines_and_drops_the_sdks_below_warn() {
        use tracing::Level;
        let targets = filter(DEFAULT_FILTER);
        assert!(targets.would_enable("muchaw_shared::provisioning", &Level::INFO));
        assert!(!targets.would_enable("aws_smithy_runtime::client", &Level::INFO));
        assert!(targets.would_enable("aws_smithy_runtime::client", &Level::WARN));
        assert!(!targets.would_enable("muchaw_shared", &Level::DEBUG));
    }

    #[test]
    fn a_malformed_filter_lets_only_errors_through() {
        use tracing::Level;
        let targets = filter("info,aws=loud");
        assert!(targets.would_enable("muchaw_shared", &Level::ERROR));
        assert!(!targets.would_enable("muchaw_shared", &Level::WARN));
    }

    #[test]
    fn an_error_chain_prints_every_cause_in_order() {
        let err = Outer(Inner(std::io::Error::other("disk on fire")));
        assert_eq!(ErrorChain(&err).to_string(), "outer: inner: disk on fire");
    }
}
