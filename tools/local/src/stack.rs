//! The whole system in one process: every function's handler from `shared`, fed by the
//! template's SQS event sources (see `pipeline`), with each function's environment taken from
//! template.yaml. HTTP requests reach the API functions' routers by the template's `HttpApi`
//! events (`gateway`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use aws_config::SdkConfig;
use aws_lambda_events::event::sqs::SqsEvent;
use axum::Router;
use muchaw_shared::adapters::dynamo::DynamoStore;
use muchaw_shared::adapters::meta::{GraphClient, MetaConfig};
use muchaw_shared::adapters::secrets::SecretsVault;
use muchaw_shared::adapters::sqs::SqsQueue;
use muchaw_shared::api;
use muchaw_shared::config::QueueUrls;
use muchaw_shared::domain::Step;
use muchaw_shared::domain::secrets::{AppSecret, Secret};
use muchaw_shared::domain::signup_link::LinkSigner;
use muchaw_shared::ports::{MessageQueue, Redelivery};
use muchaw_shared::provisioning::{Provisioner, RetryPolicy};
use muchaw_shared::webhooks::delivery::{Deliverer, Dispatcher, http_client};
use muchaw_shared::webhooks::url_policy::UrlPolicy;

use crate::gateway::Gateway;
use crate::pipeline::{Pipeline, SqsHandler};
use crate::provision::Stack;
use crate::template::Template;

pub const STEP_FUNCTIONS: [(&str, Step); 6] = [
    ("ExchangeTokenFunction", Step::ExchangeToken),
    ("SubscribeWabaFunction", Step::SubscribeWaba),
    ("RegisterNumberFunction", Step::RegisterNumber),
    ("ConfigurePinFunction", Step::ConfigurePin),
    ("FetchProfileFunction", Step::FetchProfile),
    ("ActivateNumberFunction", Step::ActivateNumber),
];

/// Local retries: seconds, not the hours production waits.
pub const LOCAL_RETRY: RetryPolicy = RetryPolicy {
    base_seconds: 1,
    slow_seconds: 5,
    max_seconds: 30,
    failed_token_retention_days: 7,
    max_pending_seconds: 7 * 24 * 3600,
    // In-process handlers are not stopped at a timeout; a step's Meta call is bounded by the
    // Meta client's timeout (5 s locally).
    step_settle_seconds: 6,
    rate_limit_seconds: 2,
    rate_limit_max_seconds: 30,
};
pub const LOCAL_WEBHOOK_RETRIES: [u32; 7] = [2, 5, 10, 20, 30, 60, 60];

pub struct LocalStack {
    pub router: Router,
    pub pipeline: Pipeline,
    pub store: DynamoStore,
    /// The scheduled functions; `up` runs them on their schedules and on demand.
    pub health_sync: Arc<LocalHealthSync>,
    pub outbox_relay: Arc<LocalOutboxRelay>,
}

pub type LocalOutboxRelay = muchaw_shared::outbox::OutboxRelay<DynamoStore, SqsQueue>;

pub type LocalHealthSync =
    muchaw_shared::health::HealthSync<DynamoStore, SqsQueue, GraphClient, SecretsVault>;

fn environment(
    stack: &Stack,
    template: &Template,
    function: &str,
) -> Result<HashMap<String, String>> {
    Ok(stack
        .function_environment(template, function)?
        .into_iter()
        .collect())
}

/// Wires every handler and route. `app_secret` is the Meta app secret the stack's
/// `MetaAppSecret` holds (the fake Meta's, locally).
pub fn build(
    template: &Template,
    stack: &Stack,
    sdk: &SdkConfig,
    app_secret: &str,
    verify_token: &str,
    signing_key: &str,
) -> Result<LocalStack> {
    let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let secrets = aws_sdk_secretsmanager::Client::new(sdk);
    let api_env = environment(stack, template, "NumbersApiFunction")?;
    let table = api_env
        .get("TABLE_NAME")
        .context("NumbersApiFunction has no TABLE_NAME")?
        .clone();
    let retention = api_env
        .get(muchaw_shared::config::EVENT_RETENTION_DAYS)
        .and_then(|days| days.parse().ok())
        .unwrap_or(muchaw_shared::adapters::dynamo::DEFAULT_EVENT_RETENTION_DAYS);
    let store = DynamoStore::new(dynamodb, table).with_event_retention_days(retention);
    let queue_for = |function: &str| -> Result<SqsQueue> {
        let env = environment(stack, template, function)?;
        Ok(SqsQueue::new(
            sqs.clone(),
            QueueUrls::from_lookup(|name| env.get(name).cloned()),
        ))
    };
    let exchange_env = environment(stack, template, "ExchangeTokenFunction")?;
    let get = |name: &str| exchange_env.get(name).cloned().unwrap_or_default();
    let graph_client = || {
        GraphClient::new(MetaConfig {
            graph_url: get("META_GRAPH_URL"),
            graph_version: get("META_GRAPH_VERSION"),
            app_id: get("META_APP_ID"),
            app_secret: Secret::new(app_secret),
            timeout: Duration::from_secs(5),
        })
    };
    let graph = graph_client()?;
    let health_graph = graph_client()?;
    // Every step, the DLQ consumer and teardown send to a subset of the same queues; one
    // provisioner with all of them serves them all.
    let all_queues = muchaw_shared::config::all_queues().fold(QueueUrls::default(), |urls, q| {
        let name = muchaw_shared::config::queue_env_name(q);
        let id = stack
            .queue_urls
            .iter()
            .find(|(logical, _)| queue_env_matches(logical, name))
            .map(|(_, url)| url.clone());
        match id {
            Some(url) => urls.with(q, url),
            None => urls,
        }
    });
    let provisioner = Arc::new(Provisioner {
        store: store.clone(),
        queue: SqsQueue::new(sqs.clone(), all_queues),
        meta: graph,
        vault: SecretsVault::new(secrets, get("TOKEN_SECRET_PREFIX")),
        retry: LOCAL_RETRY,
    });
    let dispatcher = Arc::new(Dispatcher {
        store: store.clone(),
        queue: queue_for("DispatchEventsFunction")?,
    });
    let deliver_env = environment(stack, template, "DeliverWebhooksFunction")?;
    let policy = UrlPolicy {
        allow_private: deliver_env
            .get("ALLOW_PRIVATE_WEBHOOK_URLS")
            .is_some_and(|v| v == "true"),
    };
    let deliverer = Arc::new(Deliverer {
        store: store.clone(),
        queue: queue_for("DeliverWebhooksFunction")?,
        http: http_client(
            muchaw_shared::webhooks::delivery::DELIVERY_TIMEOUT,
            policy.resolver(),
        )?,
        policy,
        retry_schedule: LOCAL_WEBHOOK_RETRIES.to_vec(),
    });
    let handlers = handlers(provisioner, dispatcher, deliverer);
    let pipeline = Pipeline::new(template, stack, sqs.clone(), &handlers, &[])?;

    let signer = LinkSigner::new(Secret::new(signing_key));
    let api_queue = queue_for("NumbersApiFunction")?;
    let callback_queue = queue_for("SignupCallbackFunction")?;
    let base_url = api_env
        .get("SIGNUP_LINK_BASE_URL")
        .cloned()
        .unwrap_or_default();
    let numbers_api = api::numbers_api_routes(
        store.clone(),
        api_queue,
        signer.clone(),
        base_url,
        muchaw_shared::webhooks::sender::Sender::new(
            policy,
            muchaw_shared::webhooks::delivery::DELIVERY_TIMEOUT,
        )?,
    );
    let signup = api::signup_function_routes(
        store.clone(),
        callback_queue,
        signer,
        page_config(&environment(stack, template, "SignupCallbackFunction")?),
        api::page_limit::PageLimits {
            per_link_per_minute: Some(api::page_limit::PageLimits::DEFAULT_PER_LINK_PER_MINUTE),
            per_source_per_minute: Some(api::page_limit::PageLimits::DEFAULT_PER_SOURCE_PER_MINUTE),
        },
    );
    let meta_queue = queue_for("MetaWebhookFunction")?;
    let meta_webhook = muchaw_shared::meta_webhook::MetaWebhook {
        store: store.clone(),
        queue: meta_queue,
        secrets: muchaw_shared::secret_cache::SecretCache::fixed(
            muchaw_shared::adapters::secrets::AppSecrets {
                app_secret: AppSecret::new(app_secret),
                webhook_verify_token: Secret::new(verify_token),
            },
        ),
    };
    let limits = muchaw_shared::config::api_limits_from(
        api_env
            .get(muchaw_shared::config::API_REQUESTS_PER_MINUTE)
            .map(String::as_str),
    )?;
    // Each function finished as its `main` finishes it, reached only by the template's routes.
    let router = Gateway::new(
        template,
        HashMap::from([
            (
                "NumbersApiFunction".to_string(),
                api::finish(numbers_api, store.clone(), limits),
            ),
            (
                "SignupCallbackFunction".to_string(),
                api::finish(signup, store.clone(), api::ApiLimits::UNLIMITED),
            ),
            (
                "MetaWebhookFunction".to_string(),
                muchaw_shared::meta_webhook::routes(meta_webhook),
            ),
        ]),
    )?
    .router();
    let health_sync = Arc::new(muchaw_shared::health::HealthSync {
        store: store.clone(),
        queue: queue_for("HealthSyncFunction")?,
        meta: health_graph,
        vault: SecretsVault::new(
            aws_sdk_secretsmanager::Client::new(sdk),
            get("TOKEN_SECRET_PREFIX"),
        ),
        concurrency: 8,
        failed_token_retention_days: 7,
    });
    let relay_env = environment(stack, template, "OutboxRelayFunction")?;
    let outbox_relay = Arc::new(muchaw_shared::outbox::OutboxRelay {
        store: store.clone(),
        queue: queue_for("OutboxRelayFunction")?,
        grace: relay_env
            .get(muchaw_shared::config::OUTBOX_RELAY_GRACE_SECONDS)
            .and_then(|seconds| seconds.parse().ok())
            .map_or(muchaw_shared::outbox::DEFAULT_GRACE, Duration::from_secs),
    });
    Ok(LocalStack {
        router,
        pipeline,
        store,
        health_sync,
        outbox_relay,
    })
}

pub type LocalProvisioner<Q> = Provisioner<DynamoStore, Q, GraphClient, SecretsVault>;

/// Each SQS-triggered function of the template, by logical id, as the handler its binary runs.
/// The one wiring the local stack and the tests share.
pub fn handlers<Q, D>(
    provisioner: Arc<LocalProvisioner<Q>>,
    dispatcher: Arc<Dispatcher<DynamoStore, D>>,
    deliverer: Arc<Deliverer<DynamoStore, D>>,
) -> HashMap<String, SqsHandler>
where
    Q: MessageQueue + Redelivery + 'static,
    D: MessageQueue + Redelivery + 'static,
{
    let mut handlers: HashMap<String, SqsHandler> = HashMap::new();
    for (function, step) in STEP_FUNCTIONS {
        let p = provisioner.clone();
        handlers.insert(
            function.into(),
            Arc::new(move |event: SqsEvent| {
                let p = p.clone();
                Box::pin(async move { p.handle_batch(step, event).await })
            }),
        );
    }
    let p = provisioner.clone();
    handlers.insert(
        "ProvisioningFailedFunction".into(),
        Arc::new(move |event| {
            let p = p.clone();
            Box::pin(async move { p.handle_dead_letters(event).await })
        }),
    );
    handlers.insert(
        "TeardownNumberFunction".into(),
        Arc::new(move |event| {
            let p = provisioner.clone();
            Box::pin(async move { p.handle_teardowns(event).await })
        }),
    );
    handlers.insert(
        "DispatchEventsFunction".into(),
        Arc::new(move |event| {
            let d = dispatcher.clone();
            Box::pin(async move { d.handle_events(event).await })
        }),
    );
    handlers.insert(
        "DeliverWebhooksFunction".into(),
        Arc::new(move |event| {
            let d = deliverer.clone();
            Box::pin(async move { d.handle_deliveries(event).await })
        }),
    );
    handlers
}

/// The hosted signup page's configuration from a function's environment (as
/// `config::signup_page_config` reads it from the process's).
pub fn page_config(env: &HashMap<String, String>) -> api::signup_page::PageConfig {
    let get = |name: &str, default: &str| {
        env.get(name)
            .filter(|v| !v.is_empty())
            .cloned()
            .unwrap_or_else(|| default.to_string())
    };
    api::signup_page::PageConfig {
        app_id: get("META_APP_ID", ""),
        config_id: get("EMBEDDED_SIGNUP_CONFIG_ID", ""),
        graph_version: get(
            "META_GRAPH_VERSION",
            muchaw_shared::config::DEFAULT_GRAPH_VERSION,
        ),
        sdk_url: get("META_SDK_URL", api::signup_page::DEFAULT_SDK_URL),
        meta_origin: get("META_ORIGIN", api::signup_page::DEFAULT_META_ORIGIN),
    }
}

/// `EVENTS_QUEUE_URL` ↔ `EventsQueue`, `WEBHOOK_DELIVERIES_QUEUE_URL` ↔ `WebhookDeliveriesQueue`.
fn queue_env_matches(logical_id: &str, env_name: &str) -> bool {
    let camel: String = env_name
        .trim_end_matches("_URL")
        .split('_')
        .map(|word| {
            let lower = word.to_ascii_lowercase();
            let mut chars = lower.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect();
    camel == logical_id
}

#[cfg(test)]
mod tests {
    use super::*;

    use muchaw_shared::ports::Queue;

    use crate::template::{Intrinsic, intrinsic};

    /// The queues a function's IAM statements allow `action` on (`!GetAtt <queue>.Arn`).
    fn queues_allowing(properties: &serde_yaml::Value, action: &str) -> Vec<String> {
        let statements = properties["Policies"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|policy| policy["Statement"].as_sequence())
            .flatten();
        let mut queues = Vec::new();
        for statement in statements {
            let actions: Vec<&str> = match &statement["Action"] {
                serde_yaml::Value::Sequence(list) => {
                    list.iter().filter_map(serde_yaml::Value::as_str).collect()
                }
                other => other.as_str().into_iter().collect(),
            };
            if !actions.contains(&action) {
                continue;
            }
            let resources = match &statement["Resource"] {
                serde_yaml::Value::Sequence(list) => list.iter().collect(),
                one => vec![one],
            };
            for resource in resources {
                if let Ok(Intrinsic::GetAtt(id, attribute)) = intrinsic(resource)
                    && attribute == "Arn"
                {
                    queues.push(id);
                }
            }
        }
        queues
    }

    #[test]
    fn every_step_function_is_given_each_queue_it_uses_and_the_right_to_use_it() {
        let template = Template::workspace().unwrap();
        for (function, step) in STEP_FUNCTIONS {
            let properties = &template.resource(function).unwrap()["Properties"];
            for queue in muchaw_shared::runtime::step_function_sends(step) {
                // Its own queue it does not send to: it delays its own retries.
                let action = if queue == Queue::Step(step) {
                    "sqs:ChangeMessageVisibility"
                } else {
                    "sqs:SendMessage"
                };
                let allowed = queues_allowing(properties, action);
                let name = muchaw_shared::config::queue_env_name(queue);
                let given = &properties["Environment"]["Variables"][name];
                let Ok(Intrinsic::Ref(queue_id)) = intrinsic(given) else {
                    panic!("{function} has no {name}: {given:?}");
                };
                assert!(
                    queue_env_matches(&queue_id, name),
                    "{function}: {name} is {queue_id}"
                );
                assert!(
                    allowed.contains(&queue_id),
                    "{function} has no {action} on {queue_id}: {allowed:?}"
                );
            }
        }
    }

    #[test]
    fn queue_variables_name_their_template_queues() {
        assert!(queue_env_matches("EventsQueue", "EVENTS_QUEUE_URL"));
        assert!(queue_env_matches(
            "WebhookDeliveriesQueue",
            "WEBHOOK_DELIVERIES_QUEUE_URL"
        ));
        assert!(!queue_env_matches(
            "EventsDeadLetterQueue",
            "EVENTS_QUEUE_URL"
        ));
    }
}
