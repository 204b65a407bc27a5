//! What each function's `main` does: read configuration, build clients once, and hand events
//! to a handler of this crate. Binaries stay a line or two, each on tokio's current-thread
//! scheduler (`#[tokio::main(flavor = "current_thread")]`): Lambda gives an execution
//! environment one invocation at a time, on a share of a vCPU, and a multi-thread runtime would
//! only start worker threads at init (docs/PERFORMANCE.md, "Cold start").

use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{Error, LambdaEvent, service_fn};

use crate::adapters::dynamo::DynamoStore;
use crate::adapters::meta::{GraphClient, MetaConfig};
use crate::adapters::secrets::{SecretsVault, read_app_secrets, read_secret_string};
use crate::adapters::sqs::SqsQueue;
use crate::aws::Clients;
use crate::config::{self, MetaEnv, QueueUrls};
use crate::domain::secrets::Secret;
use crate::domain::{Onboarding, Step};
use crate::ports::Queue;
use crate::provisioning::Provisioner;
use crate::secret_cache::{LinkKeys, SecretCache};
use crate::{api, telemetry};

pub type LiveProvisioner = Provisioner<DynamoStore, SqsQueue, GraphClient, SecretsVault>;

/// Builds the provisioner from the environment; `queues` are the ones this function sends to
/// (checked now, so a missing variable fails the cold start, naming it).
pub async fn provisioner(
    clients: &Clients,
    queues: &[Queue],
    with_app_secret: bool,
) -> Result<LiveProvisioner, Error> {
    let store = table_store(clients)?;
    let meta = MetaEnv::from_env()?;
    let cache = if with_app_secret {
        let arn = meta
            .app_secret_arn
            .clone()
            .ok_or(config::ConfigError::Missing(config::META_APP_SECRET_ARN))?;
        Some(app_secret_cache(clients, arn))
    } else {
        None
    };
    let graph = GraphClient::new(MetaConfig {
        graph_url: meta.graph_url,
        graph_version: meta.graph_version,
        app_id: meta.app_id,
        app_secret: Secret::new(""),
        timeout: meta.timeout,
    })?;
    let graph = match cache {
        Some(cache) => graph.with_secrets(cache),
        None => graph,
    };
    Ok(Provisioner {
        store,
        queue: SqsQueue::new(clients.sqs.clone(), QueueUrls::from_env().require(queues)?),
        meta: graph,
        vault: SecretsVault::new(clients.secrets.clone(), config::token_secret_prefix()?),
        retry: config::retry_policy()?,
    })
}

/// The table, with the retention its events are written with.
fn table_store(clients: &Clients) -> Result<DynamoStore, Error> {
    Ok(
        DynamoStore::new(clients.dynamodb.clone(), config::table_name()?)
            .with_event_retention_days(config::event_retention_days()?),
    )
}

/// The app secrets, read on first use and re-read from the same secret while the function
/// stays warm.
fn app_secret_cache(clients: &Clients, arn: String) -> SecretCache {
    let client = clients.secrets.clone();
    let loader: crate::secret_cache::Loader = Arc::new(move || {
        let client = client.clone();
        let arn = arn.clone();
        Box::pin(async move { read_app_secrets(&client, &arn).await })
    });
    SecretCache::lazy(loader)
}

async fn run_sqs<F, Fut>(handler: F) -> Result<(), Error>
where
    F: Fn(SqsEvent) -> Fut,
    Fut: Future<Output = SqsBatchResponse>,
{
    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| {
        // Boxed: one allocation per invocation keeps the binary's future type shallow (its
        // layout otherwise nests past the compiler's default recursion limit).
        let response = Box::pin(handler(event.payload));
        async move { Ok::<_, Error>(response.await) }
    }))
    .await
}

/// The queues a provisioning step's function sends to (its template gives it their URLs and
/// the right to send): its own (retries), events, teardown, and every step it may hand over to.
pub fn step_function_sends(step: Step) -> Vec<Queue> {
    let mut sends = vec![Queue::Step(step), Queue::Events, Queue::Teardown];
    // Where the chain goes next depends on how the number is onboarded, and past the step it
    // ran beside its own (the PIN step hands over to the activation when it read the profile).
    for onboarding in [Onboarding::CloudApi, Onboarding::Coexistence] {
        if !step.applies_to(onboarding) {
            continue;
        }
        for next in step
            .may_hand_over_to(onboarding)
            .into_iter()
            .flatten()
            .map(Queue::Step)
        {
            if !sends.contains(&next) {
                sends.push(next);
            }
        }
    }
    // A reconnect runs the exchange, the subscription and the profile (registering again when
    // Meta says the number is not), then finishes.
    if matches!(
        step,
        Step::ExchangeToken | Step::SubscribeWaba | Step::RegisterNumber | Step::FetchProfile
    ) && let Some(next) = step.next_in_reconnect().map(Queue::Step)
        && !sends.contains(&next)
    {
        sends.push(next);
    }
    sends
}

/// A provisioning step's function.
pub async fn run_step(step: Step) -> Result<(), Error> {
    telemetry::init();
    let clients = Clients::load()?;
    let sends = step_function_sends(step);
    let provisioner = Arc::new(provisioner(&clients, &sends, step == Step::ExchangeToken).await?);
    run_sqs(|event| {
        let provisioner = provisioner.clone();
        async move { provisioner.handle_batch(step, event).await }
    })
    .await
}

/// The consumer of the steps' dead-letter queues.
pub async fn run_provisioning_failed() -> Result<(), Error> {
    telemetry::init();
    let clients = Clients::load()?;
    let provisioner =
        Arc::new(provisioner(&clients, &[Queue::Events, Queue::Teardown], false).await?);
    run_sqs(|event| {
        let provisioner = provisioner.clone();
        async move { provisioner.handle_dead_letters(event).await }
    })
    .await
}

pub async fn run_teardown() -> Result<(), Error> {
    telemetry::init();
    let clients = Clients::load()?;
    let provisioner = Arc::new(provisioner(&clients, &[Queue::Teardown], false).await?);
    run_sqs(|event| {
        let provisioner = provisioner.clone();
        async move { provisioner.handle_teardowns(event).await }
    })
    .await
}

/// The signup links' signer, its key read on first use (no Secrets Manager round trip at init).
fn link_signer(clients: &Clients) -> Result<LinkKeys, Error> {
    let arn = config::signup_link_secret_arn()?;
    let client = clients.secrets.clone();
    let loader: crate::secret_cache::KeyLoader = Arc::new(move || {
        let client = client.clone();
        let arn = arn.clone();
        Box::pin(async move { read_secret_string(&client, &arn).await })
    });
    Ok(LinkKeys::lazy(loader))
}

/// The numbers API function: numbers and signup links.
pub async fn run_numbers_api() -> Result<(), Error> {
    telemetry::init();
    let clients = Clients::load()?;
    let store = table_store(&clients)?;
    // A retried number resumes at any step after the code exchange.
    let mut sends = vec![Queue::Teardown, Queue::Events];
    sends.extend(Step::ALL.into_iter().skip(1).map(Queue::Step));
    let queues = QueueUrls::from_env().require(&sends)?;
    let queue = SqsQueue::new(clients.sqs.clone(), queues);
    let signer = link_signer(&clients)?;
    let base_url = config::signup_link_base_url()?;
    let policy = config::webhook_url_policy()?;
    let webhook_settings = config::WebhookDeliveryConfig::from_env()?;
    let sender = crate::webhooks::sender::Sender::new(policy, webhook_settings.timeout)?;
    let routes = api::numbers_api_routes(store.clone(), queue, signer, base_url, sender);
    let limits = config::api_limits()?;
    api::lambda_response::run(api::finish(routes, store, limits)).await
}

/// The signup callback function, with the hosted signup page and its status and report routes.
pub async fn run_signup_callback() -> Result<(), Error> {
    telemetry::init();
    let clients = Clients::load()?;
    let store = table_store(&clients)?;
    let queues = QueueUrls::from_env().require(&[Queue::Step(Step::FIRST)])?;
    let queue = SqsQueue::new(clients.sqs.clone(), queues);
    let signer = link_signer(&clients)?;
    let page = config::signup_page_config()?;
    if page.config_id.is_empty() {
        tracing::warn!(
            "EMBEDDED_SIGNUP_CONFIG_ID is empty: the hosted signup page cannot start Embedded Signup"
        );
    }
    let page_limits = config::signup_page_limits()?;
    let routes = api::signup_function_routes(store.clone(), queue, signer, page, page_limits);
    // Its routes authenticate themselves (a key or a signup link), outside the API key gate.
    api::lambda_response::run(api::finish(routes, store, api::ApiLimits::UNLIMITED)).await
}

/// Fans the events queue out to one delivery per subscribed endpoint.
pub async fn run_dispatch_events() -> Result<(), Error> {
    telemetry::init();
    let clients = Clients::load()?;
    let queues = QueueUrls::from_env().require(&[Queue::Events, Queue::WebhookDeliveries])?;
    let dispatcher = Arc::new(crate::webhooks::delivery::Dispatcher {
        store: table_store(&clients)?,
        queue: SqsQueue::new(clients.sqs.clone(), queues),
    });
    run_sqs(|event| {
        let dispatcher = dispatcher.clone();
        async move { dispatcher.handle_events(event).await }
    })
    .await
}

/// Signs and posts each delivery to its endpoint.
pub async fn run_deliver_webhooks() -> Result<(), Error> {
    telemetry::init();
    let clients = Clients::load()?;
    // Events: an endpoint disabled for failing announces it (`webhook.disabled`).
    let queues = QueueUrls::from_env().require(&[Queue::WebhookDeliveries, Queue::Events])?;
    let settings = config::WebhookDeliveryConfig::from_env()?;
    let policy = config::webhook_url_policy()?;
    let deliverer = Arc::new(crate::webhooks::delivery::Deliverer {
        store: table_store(&clients)?,
        queue: SqsQueue::new(clients.sqs.clone(), queues),
        http: crate::webhooks::delivery::http_client(settings.timeout, policy.resolver())?,
        policy,
        retry_schedule: settings.retry_schedule,
    });
    run_sqs(|event| {
        let deliverer = deliverer.clone();
        async move { deliverer.handle_deliveries(event).await }
    })
    .await
}

/// Meta's webhooks (`GET`/`POST /webhooks/meta`): no API key, Meta signs its deliveries.
pub async fn run_meta_webhook() -> Result<(), Error> {
    telemetry::init();
    let clients = Clients::load()?;
    let store = table_store(&clients)?;
    let queues = QueueUrls::from_env().require(&[Queue::Events, Queue::Teardown])?;
    let queue = SqsQueue::new(clients.sqs.clone(), queues);
    let arn = config::meta_app_secret_arn()?;
    let cache = app_secret_cache(&clients, arn);
    let handler = crate::meta_webhook::MetaWebhook {
        store,
        queue,
        secrets: cache,
    };
    api::lambda_response::run(crate::meta_webhook::routes(handler)).await
}

/// The scheduled health sync (quality ratings, expiring tokens); any event payload starts a run.
pub async fn run_health_sync() -> Result<(), Error> {
    telemetry::init();
    let clients = Clients::load()?;
    // With the app secret: `debug_token` is asked with the app's own token. The exchange's
    // queue: a signup whose first message a crash lost is sent there again.
    let sends = [Queue::Events, Queue::Teardown, Queue::Step(Step::FIRST)];
    let provisioner = provisioner(&clients, &sends, true).await?;
    let sync = Arc::new(crate::health::HealthSync {
        store: provisioner.store,
        queue: provisioner.queue,
        meta: provisioner.meta,
        vault: provisioner.vault,
        concurrency: 8,
        failed_token_retention_days: provisioner.retry.failed_token_retention_days,
    });
    run_scheduled("health sync", sync, |sync| async move { sync.run().await }).await
}

/// A scheduled function: any event payload starts a run of `handler`, whose summary is the
/// invocation's output; a failed run is logged with its whole cause and reported to Lambda.
async fn run_scheduled<H, F, Fut, T, E>(
    what: &'static str,
    handler: Arc<H>,
    run: F,
) -> Result<(), Error>
where
    F: Fn(Arc<H>) -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    T: serde::Serialize,
    E: std::error::Error,
{
    lambda_runtime::run(service_fn(|_event: LambdaEvent<serde_json::Value>| {
        let run = run(handler.clone());
        async move {
            run.await.map_err(|e| {
                tracing::error!(error = %crate::telemetry::ErrorChain(&e), "{what} failed");
                Error::from(e.to_string())
            })
        }
    }))
    .await
}

/// The scheduled outbox relay: publishes events whose send failed after their commit.
pub async fn run_outbox_relay() -> Result<(), Error> {
    telemetry::init();
    let clients = Clients::load()?;
    // The events queue, and the steps a retried number resumes at (never the code exchange).
    let mut sends = vec![Queue::Events];
    sends.extend(Step::ALL.into_iter().skip(1).map(Queue::Step));
    let queues = QueueUrls::from_env().require(&sends)?;
    let relay = Arc::new(crate::outbox::OutboxRelay {
        store: table_store(&clients)?,
        queue: SqsQueue::new(clients.sqs.clone(), queues),
        grace: config::outbox_relay_grace()?,
    });
    run_scheduled(
        "outbox relay",
        relay,
        |relay| async move { relay.run().await },
    )
    .await
}
