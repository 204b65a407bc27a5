//! The one way AWS clients are built. `AWS_ENDPOINT_URL` points every client at an emulator for
//! local runs and tests.
//!
//! Functions build their clients from the environment Lambda gives every function
//! ([`Clients::load`]): the region, the execution role's credentials and, locally, the endpoint.
//! Not `aws_config`'s default chains: on Lambda they end where the environment starts (its
//! credentials chain tries the environment first), yet loading them read the profile files,
//! built the web-identity, ECS and IMDS providers and ran a dozen providers of settings, most
//! of a function's init beyond the runtime's own (`docs/PERFORMANCE.md`), and linked the STS
//! client into every package. Tools run on a laptop, with profiles and SSO: they take
//! [`sdk_config`], the full chain.

use std::time::Duration;

use aws_config::identity::IdentityCache;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::{Credentials, SharedCredentialsProvider};
use aws_smithy_async::rt::sleep::default_async_sleep;
use aws_smithy_async::time::SharedTimeSource;

use crate::config::ConfigError;

/// What Lambda sets for every function (the execution role's credentials and the region), and
/// what the local stack and the tests set besides.
pub const AWS_REGION: &str = "AWS_REGION";
pub const AWS_DEFAULT_REGION: &str = "AWS_DEFAULT_REGION";
pub const AWS_ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
pub const AWS_SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
pub const AWS_SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";
pub const AWS_ENDPOINT_URL: &str = "AWS_ENDPOINT_URL";
pub const AWS_MAX_ATTEMPTS: &str = "AWS_MAX_ATTEMPTS";

/// The SDK's own default connect timeout (`aws_config`'s `SDK_DEFAULT_CONNECT_TIMEOUT`).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(3100);

/// The configuration of the full default chains (profiles, SSO, web identity, IMDS), on the
/// process's one HTTP client: for tools run by people.
pub async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(crate::http_client::aws_http_client())
        .load()
        .await
}

/// The configuration a function runs with, from `lookup` (the process environment in
/// [`Clients::load`]): what `aws_config`'s chains would settle on in Lambda, built without
/// them. Static credentials are what its environment provider gives too: Lambda's variables do
/// not change while an execution environment lives. A missing region or key fails the cold
/// start, naming it.
pub fn lambda_sdk_config(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<SdkConfig, ConfigError> {
    let get = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
    let region = get(AWS_REGION)
        .or_else(|| get(AWS_DEFAULT_REGION))
        .ok_or(ConfigError::Missing(AWS_REGION))?;
    let credentials = Credentials::new(
        get(AWS_ACCESS_KEY_ID).ok_or(ConfigError::Missing(AWS_ACCESS_KEY_ID))?,
        get(AWS_SECRET_ACCESS_KEY).ok_or(ConfigError::Missing(AWS_SECRET_ACCESS_KEY))?,
        get(AWS_SESSION_TOKEN),
        None,
        "Environment",
    );
    let max_attempts = match get(AWS_MAX_ATTEMPTS) {
        None => None,
        Some(text) => Some(
            text.trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| ConfigError::Invalid {
                    name: AWS_MAX_ATTEMPTS,
                    reason: format!("expected a whole number of at least 1, got {text:?}"),
                })?,
        ),
    };
    let retry = match max_attempts {
        Some(attempts) => RetryConfig::standard().with_max_attempts(attempts),
        None => RetryConfig::standard(),
    };
    let mut builder = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region))
        .credentials_provider(SharedCredentialsProvider::new(credentials))
        .identity_cache(IdentityCache::lazy().build())
        .http_client(crate::http_client::aws_http_client())
        .time_source(SharedTimeSource::default())
        .retry_config(retry)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .build(),
        );
    builder.set_sleep_impl(default_async_sleep());
    builder.set_endpoint_url(get(AWS_ENDPOINT_URL));
    Ok(builder.build())
}

pub async fn dynamodb() -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&sdk_config().await)
}

pub struct Clients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
}

impl Clients {
    /// A function's clients, from the environment Lambda gives it ([`lambda_sdk_config`]).
    pub fn load() -> Result<Clients, ConfigError> {
        Clients::from_environment(|name| std::env::var(name).ok())
    }

    /// The clients `lookup`'s variables describe ([`lambda_sdk_config`]): a function's, or the
    /// bench's copies of them.
    pub fn from_environment(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Clients, ConfigError> {
        let config = lambda_sdk_config(lookup)?;
        Ok(Clients {
            dynamodb: aws_sdk_dynamodb::Client::new(&config),
            sqs: aws_sdk_sqs::Client::new(&config),
            secrets: aws_sdk_secretsmanager::Client::new(&config),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use aws_sdk_dynamodb::config::ProvideCredentials;

    use super::*;

    fn environment(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    const LAMBDA: &[(&str, &str)] = &[
        (AWS_REGION, "eu-west-1"),
        (AWS_DEFAULT_REGION, "eu-west-1"),
        (AWS_ACCESS_KEY_ID, "ASIAEXAMPLE"),
        (AWS_SECRET_ACCESS_KEY, "secret"),
        (AWS_SESSION_TOKEN, "session"),
    ];

    #[tokio::test]
    async fn a_lambda_environment_gives_its_region_and_the_execution_roles_credentials() {
        let config = lambda_sdk_config(environment(LAMBDA)).unwrap();
        assert_eq!(config.region().map(Region::as_ref), Some("eu-west-1"));
        let credentials = config
            .credentials_provider()
            .unwrap()
            .provide_credentials()
            .await
            .unwrap();
        assert_eq!(credentials.access_key_id(), "ASIAEXAMPLE");
        assert_eq!(credentials.secret_access_key(), "secret");
        assert_eq!(credentials.session_token(), Some("session"));
        assert_eq!(config.endpoint_url(), None);
        assert_eq!(config.retry_config().unwrap().max_attempts(), 3);
        assert_eq!(
            config.timeout_config().unwrap().connect_timeout(),
            Some(CONNECT_TIMEOUT)
        );
        assert!(config.sleep_impl().is_some());
        assert!(config.identity_cache().is_some());
    }

    #[test]
    fn the_endpoint_and_the_attempts_of_the_local_stack_are_honoured() {
        let mut pairs = LAMBDA.to_vec();
        pairs.push((AWS_ENDPOINT_URL, "http://127.0.0.1:5000"));
        pairs.push((AWS_MAX_ATTEMPTS, "1"));
        let config = lambda_sdk_config(environment(&pairs)).unwrap();
        assert_eq!(config.endpoint_url(), Some("http://127.0.0.1:5000"));
        assert_eq!(config.retry_config().unwrap().max_attempts(), 1);
    }

    #[test]
    fn the_default_region_stands_in_for_a_missing_region() {
        let config = lambda_sdk_config(environment(&[
            (AWS_DEFAULT_REGION, "us-east-1"),
            (AWS_ACCESS_KEY_ID, "key"),
            (AWS_SECRET_ACCESS_KEY, "secret"),
        ]))
        .unwrap();
        assert_eq!(config.region().map(Region::as_ref), Some("us-east-1"));
    }

    #[test]
    fn a_missing_region_or_key_is_named() {
        let missing = |drop: &[&str]| {
            let pairs: Vec<(&str, &str)> = LAMBDA
                .iter()
                .copied()
                .filter(|(k, _)| !drop.contains(k))
                .collect();
            match lambda_sdk_config(environment(&pairs)) {
                Err(ConfigError::Missing(name)) => name,
                other => panic!("expected a missing variable, got {other:?}"),
            }
        };
        assert_eq!(missing(&[AWS_REGION, AWS_DEFAULT_REGION]), AWS_REGION);
        assert_eq!(missing(&[AWS_ACCESS_KEY_ID]), AWS_ACCESS_KEY_ID);
        assert_eq!(missing(&[AWS_SECRET_ACCESS_KEY]), AWS_SECRET_ACCESS_KEY);
    }

    #[test]
    fn attempts_that_are_not_a_positive_number_are_refused() {
        for bad in ["0", "three", "-1"] {
            let mut pairs = LAMBDA.to_vec();
            pairs.push((AWS_MAX_ATTEMPTS, bad));
            assert!(matches!(
                lambda_sdk_config(environment(&pairs)),
                Err(ConfigError::Invalid {
                    name: AWS_MAX_ATTEMPTS,
                    ..
                })
            ));
        }
    }
}
