use tracing_subscriber::EnvFilter;

/// JSON log lines (one object per line), with the Lambda request id from the runtime's span.
/// `RUST_LOG` overrides the level; the default keeps the AWS SDK's chatter out.
pub const DEFAULT_FILTER: &str = "info,aws_config=warn,aws_smithy_runtime=warn";

pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
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
    fn an_error_chain_prints_every_cause_in_order() {
        let err = Outer(Inner(std::io::Error::other("disk on fire")));
        assert_eq!(ErrorChain(&err).to_string(), "outer: inner: disk on fire");
    }
}
