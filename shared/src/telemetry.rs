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
