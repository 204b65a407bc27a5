//! Every environment variable the functions read, in one place, read once at start-up.

use std::collections::HashMap;

use crate::domain::Step;
use crate::ports::Queue;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("missing environment variable {0}")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

pub fn required(name: &'static str) -> Result<String, ConfigError> {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => Ok(value),
        _ => Err(ConfigError::Missing(name)),
    }
}

pub fn optional(name: &'static str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

pub fn flag(name: &'static str) -> Result<bool, ConfigError> {
    match optional(name).as_deref() {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(other) => Err(ConfigError::Invalid {
            name,
            reason: format!("expected true or false, got {other:?}"),
        }),
    }
}

pub const TABLE_NAME: &str = "TABLE_NAME";

pub fn queue_env_name(queue: Queue) -> &'static str {
    match queue {
        Queue::Step(Step::ExchangeToken) => "EXCHANGE_TOKEN_QUEUE_URL",
        Queue::Step(Step::SubscribeWaba) => "SUBSCRIBE_WABA_QUEUE_URL",
        Queue::Step(Step::RegisterNumber) => "REGISTER_NUMBER_QUEUE_URL",
        Queue::Step(Step::ConfigurePin) => "CONFIGURE_PIN_QUEUE_URL",
        Queue::Step(Step::FetchProfile) => "FETCH_PROFILE_QUEUE_URL",
        Queue::Step(Step::ActivateNumber) => "ACTIVATE_NUMBER_QUEUE_URL",
        Queue::Events => "EVENTS_QUEUE_URL",
        Queue::Teardown => "TEARDOWN_QUEUE_URL",
    }
}

pub fn all_queues() -> impl Iterator<Item = Queue> {
    Step::ALL
        .into_iter()
        .map(Queue::Step)
        .chain([Queue::Events, Queue::Teardown])
}

/// The queue URLs a function was given. Each function only gets the queues it sends to, so a
/// missing one is named when it is first needed.
#[derive(Clone, Debug, Default)]
pub struct QueueUrls(HashMap<Queue, String>);

impl QueueUrls {
    pub fn from_env() -> QueueUrls {
        QueueUrls::from_lookup(optional)
    }

    /// From any source of variables (a function's environment in the template, for one).
    pub fn from_lookup(lookup: impl Fn(&'static str) -> Option<String>) -> QueueUrls {
        QueueUrls(
            all_queues()
                .filter_map(|q| lookup(queue_env_name(q)).map(|url| (q, url)))
                .collect(),
        )
    }

    pub fn with(mut self, queue: Queue, url: impl Into<String>) -> QueueUrls {
        self.0.insert(queue, url.into());
        self
    }

    pub fn url(&self, queue: Queue) -> Result<&str, ConfigError> {
        self.0
            .get(&queue)
            .map(String::as_str)
            .ok_or(ConfigError::Missing(queue_env_name(queue)))
    }

    /// Fails at start-up, naming the variable, instead of at the first message.
    pub fn require(self, queues: &[Queue]) -> Result<QueueUrls, ConfigError> {
        for queue in queues {
            self.url(*queue)?;
        }
        Ok(self)
    }
}

#[derive(Clone, Debug)]
pub struct ApiConfig {
    pub table_name: String,
    pub queues: QueueUrls,
}

impl ApiConfig {
    pub fn from_env() -> Result<ApiConfig, ConfigError> {
        Ok(ApiConfig {
            table_name: required(TABLE_NAME)?,
            queues: QueueUrls::from_env().require(&[Queue::Teardown, Queue::Events])?,
        })
    }
}

pub const DEFAULT_GRAPH_URL: &str = "https://graph.facebook.com";
pub const DEFAULT_GRAPH_VERSION: &str = "v25.0";

/// Meta's side, for functions that call the Graph API. The app secret itself is read from
/// Secrets Manager (`META_APP_SECRET_ARN`) by the functions that need it.
#[derive(Clone, Debug)]
pub struct MetaEnv {
    pub graph_url: String,
    pub graph_version: String,
    pub app_id: String,
    pub app_secret_arn: Option<String>,
    pub timeout: std::time::Duration,
}

impl MetaEnv {
    pub fn from_env() -> Result<MetaEnv, ConfigError> {
        let timeout_ms = match optional("META_TIMEOUT_MS") {
            None => 5_000,
            Some(text) => text.parse::<u64>().map_err(|_| ConfigError::Invalid {
                name: "META_TIMEOUT_MS",
                reason: "expected milliseconds".into(),
            })?,
        };
        Ok(MetaEnv {
            graph_url: optional("META_GRAPH_URL").unwrap_or_else(|| DEFAULT_GRAPH_URL.into()),
            graph_version: optional("META_GRAPH_VERSION")
                .unwrap_or_else(|| DEFAULT_GRAPH_VERSION.into()),
            app_id: optional("META_APP_ID").unwrap_or_default(),
            app_secret_arn: optional("META_APP_SECRET_ARN"),
            timeout: std::time::Duration::from_millis(timeout_ms),
        })
    }
}

fn seconds(name: &'static str, default: u32) -> Result<u32, ConfigError> {
    match optional(name) {
        None => Ok(default),
        Some(text) => text.parse().map_err(|_| ConfigError::Invalid {
            name,
            reason: "expected whole seconds".into(),
        }),
    }
}

/// `RETRY_BASE_SECONDS` / `RETRY_SLOW_SECONDS` shorten retries for local runs and tests.
pub fn retry_policy() -> Result<crate::provisioning::RetryPolicy, ConfigError> {
    let default = crate::provisioning::RetryPolicy::default();
    Ok(crate::provisioning::RetryPolicy {
        base_seconds: seconds("RETRY_BASE_SECONDS", default.base_seconds)?,
        slow_seconds: seconds("RETRY_SLOW_SECONDS", default.slow_seconds)?,
        max_seconds: default.max_seconds,
    })
}
