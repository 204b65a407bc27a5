//! The one way AWS clients are built. `AWS_ENDPOINT_URL` points every client at an emulator for
//! local runs and tests, `AWS_ENDPOINT_URL_<SERVICE>` one service's client (DynamoDB Local for
//! the table), as every AWS SDK reads them.
//!
//! Functions build their clients from the environment Lambda gives every function
//! ([`Clients::load`]): the region, the execution role's credentials and, locally, the endpoint.
//! Not `aws_config`'s default chains: on Lambda they end where the environment starts (its
//! credentials chain tries the environment first), yet loading them read the profile files,
//! built the web-identity, ECS and IMDS providers and ran a dozen providers of settings, most
//! of a function's init beyond the runtime's own (`docs/PERFORMANCE.md`), and linked the STS
//! client into every package. Tools run on a laptop, with profiles and SSO: they take
//! [`sdk_config`], the full chain.

use std::collections::HashMap;
use std::time::Duration;

use aws_config::identity::IdentityCache;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::{Credentials, SharedCredentialsProvider};
use aws_smithy_async::rt::sleep::default_async_sleep;
use aws_smithy_async::time::SharedTimeSource;
use aws_types::service_config::{LoadServiceConfig, ServiceConfigKey};

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
pub const AWS_IGNORE_CONFIGURED_ENDPOINT_URLS: &str = "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS";

/// The SDK service ids of the clients functions build ([`Clients`]): what each client asks
/// its endpoint for, and what its `AWS_ENDPOINT_URL_<SERVICE>` is named after.
pub const SERVICE_IDS: [&str; 3] = ["DynamoDB", "SQS", "Secrets Manager"];

/// The variable that points one service's clients at an endpoint: `AWS_ENDPOINT_URL_` and the
/// service id, uppercased, spaces as underscores (`AWS_ENDPOINT_URL_SECRETS_MANAGER`).
pub fn service_endpoint_variable(service_id: &str) -> String {
    format!(
        "{AWS_ENDPOINT_URL}_{}",
        service_id.to_uppercase().replace(' ', "_")
    )
}

/// The service-specific endpoints of [`SERVICE_IDS`], by service id, as each SDK client asks
/// for them when it is built from the config.
///
/// Read once at the cold start: a client asks by service id, and a lookup cannot list
/// the variables it holds. Without one, a client takes the config's global endpoint.
#[derive(Debug, Default)]
struct ServiceEndpoints(HashMap<&'static str, String>);

impl LoadServiceConfig for ServiceEndpoints {
    fn load_config(&self, key: ServiceConfigKey<'_>) -> Option<String> {
        if key.env() != AWS_ENDPOINT_URL {
            return None;
        }
        self.0.get(key.service_id()).cloned()
    }
}

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
///
/// Endpoints as the SDKs document them ("Service-specific endpoints"): a client built from it
/// goes to its `AWS_ENDPOINT_URL_<SERVICE>`, else to `AWS_ENDPOINT_URL`, else to AWS;
/// `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true` ignores them all.
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
    let ignore_endpoints = match get(AWS_IGNORE_CONFIGURED_ENDPOINT_URLS) {
        None => false,
        Some(text) => parse_bool(&text).ok_or_else(|| ConfigError::Invalid {
            name: AWS_IGNORE_CONFIGURED_ENDPOINT_URLS,
            reason: format!("expected true or false, got {text:?}"),
        })?,
    };
    if !ignore_endpoints {
        builder.set_endpoint_url(get(AWS_ENDPOINT_URL));
        let services = SERVICE_IDS
            .into_iter()
            .filter_map(|id| Some((id, get(&service_endpoint_variable(id))?)))
            .collect();
        builder.set_service_config(Some(ServiceEndpoints(services)));
    }
    Ok(builder.build())
}

/// `true` or `false` in any case, as the SDKs read their boolean settings.
fn parse_bool(text: &str) -> Option<bool> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("true") {
        Some(true)
    } else if text.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
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
    /// bench's copies of them. Each goes to its own service's endpoint.
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

    /// Where a client sends its requests: the URI of its first request, stopped before it
    /// leaves (no network).
    #[derive(Clone, Debug, Default)]
    struct Destination(std::sync::Arc<std::sync::Mutex<Option<String>>>);

    impl aws_sdk_dynamodb::config::Intercept for Destination {
        fn name(&self) -> &'static str {
            "Destination"
        }

        fn read_before_transmit(
            &self,
            context: &aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef<
                '_,
            >,
            _components: &aws_sdk_dynamodb::config::RuntimeComponents,
            _bag: &mut aws_sdk_dynamodb::config::ConfigBag,
        ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
            let uri = context.request().uri().to_string();
            *self.0.lock().unwrap() = Some(uri);
            Err("stopped before sending".into())
        }
    }

    impl Destination {
        fn host(&self) -> String {
            let uri = self.0.lock().unwrap().clone().expect("a request was made");
            let authority = uri.split("://").nth(1).unwrap_or(&uri);
            authority.split('/').next().unwrap_or_default().to_string()
        }
    }

    /// The host each of [`Clients::from_environment`]'s clients sends to: DynamoDB, SQS,
    /// Secrets Manager.
    async fn destinations(pairs: &[(&str, &str)]) -> [String; 3] {
        let mut all = LAMBDA.to_vec();
        all.extend_from_slice(pairs);
        let clients = Clients::from_environment(environment(&all)).unwrap();
        let (dynamodb, sqs, secrets) = <(Destination, Destination, Destination)>::default();
        let config = clients.dynamodb.config().to_builder();
        let _ = aws_sdk_dynamodb::Client::from_conf(config.interceptor(dynamodb.clone()).build())
            .list_tables()
            .send()
            .await;
        let config = clients.sqs.config().to_builder();
        let _ = aws_sdk_sqs::Client::from_conf(config.interceptor(sqs.clone()).build())
            .list_queues()
            .send()
            .await;
        let config = clients.secrets.config().to_builder();
        let _ =
            aws_sdk_secretsmanager::Client::from_conf(config.interceptor(secrets.clone()).build())
                .list_secrets()
                .send()
                .await;
        [dynamodb.host(), sqs.host(), secrets.host()]
    }

    #[tokio::test]
    async fn without_endpoints_each_client_goes_to_its_aws_service() {
        assert_eq!(
            destinations(&[]).await,
            [
                "dynamodb.eu-west-1.amazonaws.com",
                "sqs.eu-west-1.amazonaws.com",
                "secretsmanager.eu-west-1.amazonaws.com"
            ]
        );
    }

    #[tokio::test]
    async fn a_service_specific_endpoint_wins_over_the_global_one_for_its_service_alone() {
        // Given the global endpoint and DynamoDB's own
        let hosts = destinations(&[
            (AWS_ENDPOINT_URL, "http://moto:5000"),
            ("AWS_ENDPOINT_URL_DYNAMODB", "http://dynamodb-local:8000"),
        ])
        .await;
        // Then DynamoDB's client goes to its own, the others to the global one
        assert_eq!(hosts, ["dynamodb-local:8000", "moto:5000", "moto:5000"]);
    }

    #[tokio::test]
    async fn each_client_takes_its_own_services_endpoint() {
        let hosts = destinations(&[
            ("AWS_ENDPOINT_URL_DYNAMODB", "http://dynamodb-local:8000"),
            ("AWS_ENDPOINT_URL_SQS", "http://elasticmq:9324"),
            ("AWS_ENDPOINT_URL_SECRETS_MANAGER", "http://secrets:4566"),
        ])
        .await;
        assert_eq!(
            hosts,
            ["dynamodb-local:8000", "elasticmq:9324", "secrets:4566"]
        );
    }

    #[tokio::test]
    async fn ignoring_configured_endpoints_ignores_every_one_of_them() {
        for yes in ["true", "TRUE", "True"] {
            let hosts = destinations(&[
                (AWS_ENDPOINT_URL, "http://moto:5000"),
                ("AWS_ENDPOINT_URL_DYNAMODB", "http://dynamodb-local:8000"),
                (AWS_IGNORE_CONFIGURED_ENDPOINT_URLS, yes),
            ])
            .await;
            assert_eq!(
                hosts,
                [
                    "dynamodb.eu-west-1.amazonaws.com",
                    "sqs.eu-west-1.amazonaws.com",
                    "secretsmanager.eu-west-1.amazonaws.com"
                ],
                "{yes}"
            );
        }
        let honoured = destinations(&[
            ("AWS_ENDPOINT_URL_DYNAMODB", "http://dynamodb-local:8000"),
            (AWS_IGNORE_CONFIGURED_ENDPOINT_URLS, "false"),
        ])
        .await;
        assert_eq!(honoured[0], "dynamodb-local:8000");
    }

    #[test]
    fn ignoring_endpoints_takes_true_or_false_only() {
        let mut pairs = LAMBDA.to_vec();
        pairs.push((AWS_IGNORE_CONFIGURED_ENDPOINT_URLS, "yes"));
        assert!(matches!(
            lambda_sdk_config(environment(&pairs)),
            Err(ConfigError::Invalid {
                name: AWS_IGNORE_CONFIGURED_ENDPOINT_URLS,
                ..
            })
        ));
    }

    #[test]
    fn service_variables_are_named_as_the_sdks_name_them() {
        let names: Vec<String> = SERVICE_IDS
            .into_iter()
            .map(service_endpoint_variable)
            .collect();
        assert_eq!(
            names,
            [
                "AWS_ENDPOINT_URL_DYNAMODB",
                "AWS_ENDPOINT_URL_SQS",
                "AWS_ENDPOINT_URL_SECRETS_MANAGER"
            ]
        );
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
