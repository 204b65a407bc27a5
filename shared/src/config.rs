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
pub const TOKEN_SECRET_PREFIX: &str = "TOKEN_SECRET_PREFIX";
pub const SIGNUP_LINK_SECRET_ARN: &str = "SIGNUP_LINK_SECRET_ARN";
pub const SIGNUP_LINK_BASE_URL: &str = "SIGNUP_LINK_BASE_URL";
pub const META_APP_SECRET_ARN: &str = "META_APP_SECRET_ARN";
/// Days a FAILED number keeps its token for a retry (template parameter
/// `FailedTokenRetentionDays`, default 7).
pub const FAILED_TOKEN_RETENTION_DAYS: &str = "FAILED_TOKEN_RETENTION_DAYS";

pub fn table_name() -> Result<String, ConfigError> {
    required(TABLE_NAME)
}

/// Days events (numbers' histories) and webhook delivery records are kept (template parameter
/// `EventRetentionDays`, default 90), after which TTL removes them.
pub const EVENT_RETENTION_DAYS: &str = "EVENT_RETENTION_DAYS";

pub fn event_retention_days() -> Result<u32, ConfigError> {
    days(
        EVENT_RETENTION_DAYS,
        crate::adapters::dynamo::DEFAULT_EVENT_RETENTION_DAYS,
    )
}

/// Where each number's token and PIN live in Secrets Manager: `{prefix}/{number id}`.
pub fn token_secret_prefix() -> Result<String, ConfigError> {
    required(TOKEN_SECRET_PREFIX)
}

/// The secret that signs signup-link states.
pub fn signup_link_secret_arn() -> Result<String, ConfigError> {
    required(SIGNUP_LINK_SECRET_ARN)
}

/// The page signup links point to; empty (the default): this API's own hosted page, `/signup`.
pub fn signup_link_base_url() -> Result<String, ConfigError> {
    Ok(optional(SIGNUP_LINK_BASE_URL).unwrap_or_default())
}

pub const EMBEDDED_SIGNUP_CONFIG_ID: &str = "EMBEDDED_SIGNUP_CONFIG_ID";
pub const META_SDK_URL: &str = "META_SDK_URL";
pub const META_ORIGIN: &str = "META_ORIGIN";

/// What the hosted signup page gives Meta's SDK: `META_APP_ID`, `EMBEDDED_SIGNUP_CONFIG_ID`,
/// `META_GRAPH_VERSION`, and where the SDK and Meta's messages come from (`META_SDK_URL`,
/// `META_ORIGIN`; Meta's by default, a stand-in in tests).
pub fn signup_page_config() -> Result<crate::api::signup_page::PageConfig, ConfigError> {
    use crate::api::signup_page::{DEFAULT_META_ORIGIN, DEFAULT_SDK_URL, PageConfig, origin_of};
    let sdk_url = optional(META_SDK_URL).unwrap_or_else(|| DEFAULT_SDK_URL.into());
    let meta_origin = optional(META_ORIGIN).unwrap_or_else(|| DEFAULT_META_ORIGIN.into());
    for (name, value) in [(META_SDK_URL, &sdk_url), (META_ORIGIN, &meta_origin)] {
        if origin_of(value).is_none() {
            return Err(ConfigError::Invalid {
                name,
                reason: format!("expected an http(s) URL, got {value:?}"),
            });
        }
    }
    Ok(PageConfig {
        app_id: optional("META_APP_ID").unwrap_or_default(),
        config_id: optional(EMBEDDED_SIGNUP_CONFIG_ID).unwrap_or_default(),
        graph_version: optional("META_GRAPH_VERSION")
            .unwrap_or_else(|| DEFAULT_GRAPH_VERSION.into()),
        sdk_url,
        meta_origin,
    })
}

/// The Meta app's secret JSON (`{"appSecret", "webhookVerifyToken"}`).
pub fn meta_app_secret_arn() -> Result<String, ConfigError> {
    required(META_APP_SECRET_ARN)
}

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
        Queue::WebhookDeliveries => "WEBHOOK_DELIVERIES_QUEUE_URL",
    }
}

pub fn all_queues() -> impl Iterator<Item = Queue> {
    Step::ALL.into_iter().map(Queue::Step).chain([
        Queue::Events,
        Queue::Teardown,
        Queue::WebhookDeliveries,
    ])
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
            app_secret_arn: optional(META_APP_SECRET_ARN),
            timeout: std::time::Duration::from_millis(timeout_ms),
        })
    }
}

fn seconds(name: &'static str, default: u32) -> Result<u32, ConfigError> {
    whole(name, default, "seconds")
}

fn whole(name: &'static str, default: u32, unit: &str) -> Result<u32, ConfigError> {
    match optional(name) {
        None => Ok(default),
        Some(text) => text.parse().map_err(|_| ConfigError::Invalid {
            name,
            reason: format!("expected whole {unit}"),
        }),
    }
}

/// `RETRY_BASE_SECONDS` / `RETRY_SLOW_SECONDS` / `RETRY_RATE_LIMIT_SECONDS` /
/// `RETRY_RATE_LIMIT_MAX_SECONDS` shorten retries for local runs and tests; `MAX_PENDING_DAYS`
/// bounds a number's wait for Meta (template parameter `MaxPendingDays`).
pub fn retry_policy() -> Result<crate::provisioning::RetryPolicy, ConfigError> {
    let default = crate::provisioning::RetryPolicy::default();
    Ok(crate::provisioning::RetryPolicy {
        base_seconds: seconds("RETRY_BASE_SECONDS", default.base_seconds)?,
        slow_seconds: seconds("RETRY_SLOW_SECONDS", default.slow_seconds)?,
        max_seconds: default.max_seconds,
        failed_token_retention_days: whole(
            FAILED_TOKEN_RETENTION_DAYS,
            default.failed_token_retention_days,
            "days",
        )?,
        max_pending_seconds: days(
            "MAX_PENDING_DAYS",
            crate::provisioning::DEFAULT_MAX_PENDING_DAYS,
        )?
        .saturating_mul(24 * 3600),
        step_settle_seconds: seconds("STEP_SETTLE_SECONDS", default.step_settle_seconds)?,
        rate_limit_seconds: seconds("RETRY_RATE_LIMIT_SECONDS", default.rate_limit_seconds)?,
        rate_limit_max_seconds: seconds(
            "RETRY_RATE_LIMIT_MAX_SECONDS",
            default.rate_limit_max_seconds,
        )?,
    })
}

/// How old an unpublished outbox event must be before the relay publishes it
/// (`OUTBOX_RELAY_GRACE_SECONDS`, default `outbox::DEFAULT_GRACE`; short in local runs).
pub const OUTBOX_RELAY_GRACE_SECONDS: &str = "OUTBOX_RELAY_GRACE_SECONDS";

pub fn outbox_relay_grace() -> Result<std::time::Duration, ConfigError> {
    let default = crate::outbox::DEFAULT_GRACE.as_secs() as u32;
    Ok(std::time::Duration::from_secs(u64::from(seconds(
        OUTBOX_RELAY_GRACE_SECONDS,
        default,
    )?)))
}

fn days(name: &'static str, default: u32) -> Result<u32, ConfigError> {
    match optional(name) {
        None => Ok(default),
        Some(text) => match text.parse::<u32>() {
            Ok(days) if (1..=3650).contains(&days) => Ok(days),
            _ => Err(ConfigError::Invalid {
                name,
                reason: "expected whole days, 1 to 3650".into(),
            }),
        },
    }
}

/// `ALLOW_PRIVATE_WEBHOOK_URLS=true` lets webhooks go to loopback and private addresses (the
/// local stack, tests); off everywhere else.
pub fn webhook_url_policy() -> Result<crate::webhooks::url_policy::UrlPolicy, ConfigError> {
    Ok(crate::webhooks::url_policy::UrlPolicy {
        allow_private: flag("ALLOW_PRIVATE_WEBHOOK_URLS")?,
    })
}

/// The API's requests per account per minute: `API_REQUESTS_PER_MINUTE` (default
/// `DEFAULT_API_REQUESTS_PER_MINUTE`; `0` turns the limit off).
pub fn api_limits() -> Result<crate::api::ApiLimits, ConfigError> {
    api_limits_from(optional(API_REQUESTS_PER_MINUTE).as_deref())
}

/// The hosted signup page's limits: `SIGNUP_PAGE_REQUESTS_PER_MINUTE` per signup link and
/// `SIGNUP_PAGE_REQUESTS_PER_IP_PER_MINUTE` per source IP (defaults in `PageLimits`; `0`
/// turns either off).
pub fn signup_page_limits() -> Result<crate::api::page_limit::PageLimits, ConfigError> {
    use crate::api::page_limit::PageLimits;
    let per_link = per_minute(
        SIGNUP_PAGE_REQUESTS_PER_MINUTE,
        optional(SIGNUP_PAGE_REQUESTS_PER_MINUTE).as_deref(),
        PageLimits::DEFAULT_PER_LINK_PER_MINUTE,
    )?;
    let per_source = per_minute(
        SIGNUP_PAGE_REQUESTS_PER_IP_PER_MINUTE,
        optional(SIGNUP_PAGE_REQUESTS_PER_IP_PER_MINUTE).as_deref(),
        PageLimits::DEFAULT_PER_SOURCE_PER_MINUTE,
    )?;
    Ok(PageLimits {
        per_link_per_minute: per_link,
        per_source_per_minute: per_source,
    })
}

pub const SIGNUP_PAGE_REQUESTS_PER_MINUTE: &str = "SIGNUP_PAGE_REQUESTS_PER_MINUTE";
pub const SIGNUP_PAGE_REQUESTS_PER_IP_PER_MINUTE: &str = "SIGNUP_PAGE_REQUESTS_PER_IP_PER_MINUTE";

/// A per-minute limit from its variable: unset is `default`, `0` is no limit.
fn per_minute(
    name: &'static str,
    value: Option<&str>,
    default: u32,
) -> Result<Option<u32>, ConfigError> {
    let per_minute = match value.map(str::trim) {
        None | Some("") => default,
        Some(text) => text.parse::<u32>().map_err(|_| ConfigError::Invalid {
            name,
            reason: format!("expected a whole number of requests, got {text:?}"),
        })?,
    };
    Ok((per_minute > 0).then_some(per_minute))
}

pub const API_REQUESTS_PER_MINUTE: &str = "API_REQUESTS_PER_MINUTE";
pub const DEFAULT_API_REQUESTS_PER_MINUTE: u32 = 600;

pub fn api_limits_from(value: Option<&str>) -> Result<crate::api::ApiLimits, ConfigError> {
    let per_minute = match value.map(str::trim) {
        None | Some("") => DEFAULT_API_REQUESTS_PER_MINUTE,
        Some(text) => text.parse::<u32>().map_err(|_| ConfigError::Invalid {
            name: API_REQUESTS_PER_MINUTE,
            reason: format!("expected a whole number of requests, got {text:?}"),
        })?,
    };
    Ok(crate::api::ApiLimits {
        requests_per_minute: (per_minute > 0).then_some(per_minute),
    })
}

#[derive(Clone, Debug)]
pub struct WebhookDeliveryConfig {
    pub timeout: std::time::Duration,
    pub retry_schedule: Vec<u32>,
}

impl WebhookDeliveryConfig {
    /// `WEBHOOK_TIMEOUT_SECONDS` (default 10) and `WEBHOOK_RETRY_SCHEDULE` (seconds before each
    /// retry, comma-separated; default the contract's 5 s ... 10 h): tests and the local stack
    /// shorten them.
    pub fn from_env() -> Result<WebhookDeliveryConfig, ConfigError> {
        use crate::webhooks::delivery::{DELIVERY_TIMEOUT, RETRY_SCHEDULE_SECONDS};
        let timeout = match optional("WEBHOOK_TIMEOUT_SECONDS") {
            None => DELIVERY_TIMEOUT,
            Some(text) => std::time::Duration::from_secs(
                text.parse::<u64>()
                    .ok()
                    .filter(|s| (1..=30).contains(s))
                    .ok_or(ConfigError::Invalid {
                        name: "WEBHOOK_TIMEOUT_SECONDS",
                        reason: "expected whole seconds from 1 to 30".into(),
                    })?,
            ),
        };
        let retry_schedule = match optional("WEBHOOK_RETRY_SCHEDULE") {
            None => RETRY_SCHEDULE_SECONDS.to_vec(),
            Some(text) => parse_schedule(&text).ok_or(ConfigError::Invalid {
                name: "WEBHOOK_RETRY_SCHEDULE",
                reason: "expected comma-separated seconds, each at most 43200".into(),
            })?,
        };
        Ok(WebhookDeliveryConfig {
            timeout,
            retry_schedule,
        })
    }
}

fn parse_schedule(text: &str) -> Option<Vec<u32>> {
    let schedule: Vec<u32> = text
        .split(',')
        .map(|part| part.trim().parse::<u32>().ok().filter(|s| *s <= 43_200))
        .collect::<Option<_>>()?;
    (!schedule.is_empty()).then_some(schedule)
}

#[cfg(test)]
mod schedule_tests {
    use super::parse_schedule;

    #[test]
    fn a_retry_schedule_is_comma_separated_seconds_up_to_twelve_hours() {
        assert_eq!(parse_schedule("1, 2,3"), Some(vec![1, 2, 3]));
        assert_eq!(parse_schedule("43201"), None);
        assert_eq!(parse_schedule("5,soon"), None);
        assert_eq!(parse_schedule(""), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_limit_defaults_to_600_a_minute() {
        assert_eq!(
            api_limits_from(None).unwrap().requests_per_minute,
            Some(DEFAULT_API_REQUESTS_PER_MINUTE)
        );
    }

    #[test]
    fn an_api_limit_of_zero_turns_it_off() {
        assert_eq!(
            api_limits_from(Some("0")).unwrap().requests_per_minute,
            None
        );
    }

    #[test]
    fn an_unreadable_api_limit_fails_naming_the_variable() {
        let error = api_limits_from(Some("lots")).unwrap_err().to_string();
        assert!(error.contains(API_REQUESTS_PER_MINUTE), "{error}");
    }
}
