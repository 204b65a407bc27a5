//! A stack with the whole provisioning chain running: the real handlers, fed from moto's queues
//! by the same pipeline the local stack uses (wired from template.yaml), calling the fake Meta.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fake_meta::{FakeMeta, FakeMetaConfig};
use muchaw_local::pipeline::{Pipeline, PipelineHandle};
use muchaw_shared::adapters::dynamo::DynamoStore;
use muchaw_shared::adapters::meta::{GraphClient, MetaConfig};
use muchaw_shared::adapters::secrets::SecretsVault;
use muchaw_shared::adapters::sqs::SqsQueue;
use muchaw_shared::api;
use muchaw_shared::domain::secrets::Secret;
use muchaw_shared::domain::signup_link::LinkSigner;
use muchaw_shared::domain::{AccountId, Number, NumberId, Status};
use muchaw_shared::ports::{
    Message, MessageQueue, NumberReader, Queue, QueueError, Redelivery, RedeliveryDelay,
};
use muchaw_shared::provisioning::{Provisioner, RetryPolicy};
use serde_json::{Value, json};

use crate::{ApiResponse, Overrides, TestEnv, http_event, parse_response};

/// The queue the handlers use, able to lose sends (a crash between a Meta call and the next
/// message), recording every body sent (to look for secrets) and every redelivery delay asked.
#[derive(Clone)]
pub struct TestQueue {
    inner: SqsQueue,
    drop_next: Arc<Mutex<HashMap<Queue, usize>>>,
    pub sent: Arc<Mutex<Vec<(Queue, String)>>>,
    pub delays: Arc<Mutex<Vec<DelayAsked>>>,
}

/// A redelivery delay a handler asked SQS for (a ChangeMessageVisibility), and SQS's answer.
#[derive(Clone, Debug)]
pub struct DelayAsked {
    pub queue: Queue,
    /// The receipt of the receive that delivered the message.
    pub receipt: String,
    /// The seconds the handler wanted.
    pub wanted: u32,
    /// The invisibility asked of SQS, cut to what it allows since the receive (measured right
    /// after the request: never more than what SQS holds the message for).
    pub seconds: u32,
    /// SQS's error, when it did not take the delay.
    pub error: Option<String>,
}

impl TestQueue {
    /// The next `times` sends to `queue` fail as if the function crashed before sending.
    pub fn fail_sends(&self, queue: Queue, times: usize) {
        self.drop_next.lock().unwrap().insert(queue, times);
    }
}

impl MessageQueue for TestQueue {
    async fn send<M: Message>(&self, message: &M) -> Result<(), QueueError> {
        let queue = message.queue();
        {
            let mut drops = self.drop_next.lock().unwrap();
            if let Some(left) = drops.get_mut(&queue)
                && *left > 0
            {
                *left -= 1;
                return Err(QueueError::Unavailable(
                    "simulated crash before sending".into(),
                ));
            }
        }
        let body = serde_json::to_string(message).map_err(QueueError::Encode)?;
        self.sent.lock().unwrap().push((queue, body));
        self.inner.send(message).await
    }
}

impl Redelivery for TestQueue {
    async fn delay_redelivery(
        &self,
        queue: Queue,
        receipt: &str,
        delay: RedeliveryDelay,
    ) -> Result<(), QueueError> {
        let answer = self.inner.delay_redelivery(queue, receipt, delay).await;
        self.delays.lock().unwrap().push(DelayAsked {
            queue,
            receipt: receipt.to_string(),
            wanted: delay.wanted(),
            seconds: delay.seconds_now(),
            error: answer
                .as_ref()
                .err()
                .map(|err| muchaw_shared::telemetry::ErrorChain(err).to_string()),
        });
        answer
    }
}

pub type TestProvisioner = Provisioner<DynamoStore, TestQueue, GraphClient, SecretsVault>;

pub struct ProvisioningEnv {
    pub env: TestEnv,
    pub meta: FakeMeta,
    pub queue: TestQueue,
    pub provisioner: Arc<TestProvisioner>,
    pub signer: LinkSigner,
    pub pipeline: Pipeline,
    running: Mutex<Option<PipelineHandle>>,
    strict_webhook_urls: std::sync::atomic::AtomicBool,
    page_limits: Mutex<api::page_limit::PageLimits>,
}

/// Webhook retries in tests: the contract's schedule, in seconds instead of hours.
pub const TEST_WEBHOOK_RETRIES: [u32; 7] = [1, 1, 1, 1, 1, 1, 1];
/// Webhook delivery timeout in tests (10 s in production).
pub const TEST_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(2);

pub const META_TIMEOUT: Duration = Duration::from_millis(1500);

/// Retries in tests: seconds instead of minutes and hours.
pub fn test_retry() -> RetryPolicy {
    RetryPolicy {
        base_seconds: 1,
        slow_seconds: 1,
        max_seconds: 2,
        failed_token_retention_days: 7,
        // Teardowns at once (nothing here kills a step mid-call; the chaos run does).
        step_settle_seconds: 0,
        ..RetryPolicy::default()
    }
}

impl ProvisioningEnv {
    pub async fn new() -> ProvisioningEnv {
        ProvisioningEnv::with_retry(test_retry()).await
    }

    /// With the provisioner retrying on `retry` (production's delays, for a long wait).
    pub async fn with_retry(retry: RetryPolicy) -> ProvisioningEnv {
        ProvisioningEnv::with_graph(retry, |_, graph| graph).await
    }

    /// With the provisioner's Graph client as `graph` makes it of the fixed-secret one (for
    /// one reading the app secret as a deployed function does).
    pub async fn with_graph(
        retry: RetryPolicy,
        with: impl FnOnce(&FakeMeta, GraphClient) -> GraphClient,
    ) -> ProvisioningEnv {
        let meta = FakeMeta::start(FakeMetaConfig::default())
            .await
            .expect("fake Meta");
        let overrides = Overrides {
            secrets: HashMap::from([(
                "MetaAppSecret".to_string(),
                json!({"appSecret": meta.app_secret(), "webhookVerifyToken": "verify-me"})
                    .to_string(),
            )]),
            ..Overrides::default()
        };
        let env = TestEnv::with_overrides(overrides).await;
        let queue = TestQueue {
            inner: env.queue(),
            drop_next: Arc::default(),
            sent: Arc::default(),
            delays: Arc::default(),
        };
        let graph = GraphClient::new(MetaConfig {
            graph_url: meta.base_url(),
            graph_version: "v25.0".into(),
            app_id: meta.app_id().to_string(),
            app_secret: Secret::new(meta.app_secret()),
            timeout: META_TIMEOUT,
        })
        .expect("graph client");
        let graph = with(&meta, graph);
        let vault = SecretsVault::new(
            env.function_secrets(),
            env.function_env("ExchangeTokenFunction")
                .get("TOKEN_SECRET_PREFIX")
                .cloned()
                .expect("TOKEN_SECRET_PREFIX"),
        );
        let provisioner = Arc::new(Provisioner {
            store: env.function_store(),
            queue: queue.clone(),
            meta: graph,
            vault,
            retry,
        });
        let dispatcher = Arc::new(muchaw_shared::webhooks::delivery::Dispatcher {
            store: env.function_store(),
            queue: queue.clone(),
        });
        let deliverer = Arc::new(muchaw_shared::webhooks::delivery::Deliverer {
            store: env.function_store(),
            queue: queue.clone(),
            http: muchaw_shared::webhooks::delivery::http_client(
                TEST_WEBHOOK_TIMEOUT,
                muchaw_shared::webhooks::resolver::GuardedResolver::system(true),
            )
            .expect("http client"),
            policy: muchaw_shared::webhooks::url_policy::UrlPolicy {
                allow_private: true,
            },
            retry_schedule: TEST_WEBHOOK_RETRIES.to_vec(),
        });
        let handlers = muchaw_local::stack::handlers(provisioner.clone(), dispatcher, deliverer);
        let pipeline = Pipeline::new(
            &env.template,
            &env.stack,
            aws_sdk_sqs::Client::new(&env.function_sdk),
            &handlers,
            &[],
        )
        .expect("pipeline from template.yaml");
        let signer = LinkSigner::new(Secret::new("test-signing-key"));
        ProvisioningEnv {
            env,
            meta,
            queue,
            provisioner,
            signer,
            pipeline,
            running: Mutex::new(None),
            strict_webhook_urls: std::sync::atomic::AtomicBool::new(false),
            page_limits: Mutex::new(api::page_limit::PageLimits {
                per_link_per_minute: Some(api::page_limit::PageLimits::DEFAULT_PER_LINK_PER_MINUTE),
                per_source_per_minute: Some(
                    api::page_limit::PageLimits::DEFAULT_PER_SOURCE_PER_MINUTE,
                ),
            }),
        }
    }

    /// The name of a number's token secret, as the functions' `TOKEN_SECRET_PREFIX` makes it.
    pub fn token_secret_name(&self, number_id: &str) -> String {
        let prefix = self
            .env
            .function_env("ExchangeTokenFunction")
            .get("TOKEN_SECRET_PREFIX")
            .cloned()
            .unwrap_or_default();
        format!("{prefix}{number_id}")
    }

    /// Starts feeding queues to the handlers (idempotent).
    pub fn start(&self) {
        let mut running = self.running.lock().unwrap();
        if running.is_none() {
            *running = Some(self.pipeline.start());
        }
    }

    /// The signup page's rate limits from now on (the deployment's defaults until set).
    pub fn set_page_limits(&self, limits: api::page_limit::PageLimits) {
        *self.page_limits.lock().unwrap() = limits;
    }

    /// Webhook URLs checked as in production (no loopback or private targets).
    pub fn strict_webhook_urls(&self) {
        self.strict_webhook_urls
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn deliver_everything_twice(&self) {
        self.pipeline.deliver_everything_twice();
    }

    /// Invokes an API route (numbers, signup links, signup callback, the signup page) as
    /// Lambda would.
    pub async fn invoke(&self, event: Value) -> ApiResponse {
        parse_response(crate::invoke_router(self.router(), event).await)
    }

    /// The hosted signup page's configuration: the fake Meta's stand-in SDK and origin.
    pub fn page_config(&self) -> api::signup_page::PageConfig {
        api::signup_page::PageConfig {
            app_id: self.meta.app_id().to_string(),
            config_id: fake_meta::SIGNUP_CONFIG_ID.to_string(),
            graph_version: "v25.0".into(),
            sdk_url: self.meta.sdk_url(),
            meta_origin: self.meta.base_url(),
        }
    }

    /// Every API route the functions serve, finished as `api::finish` does in each function
    /// (Meta's webhook aside). Links point at `base_url` (empty: the hosted page).
    pub fn router_with_base_url(&self, base_url: &str) -> axum::Router {
        let store = self.env.function_store();
        let routes = api::numbers_routes(store.clone(), self.queue.clone())
            .merge(api::signup_link_routes(
                store.clone(),
                self.signer.clone(),
                base_url.to_string(),
            ))
            .merge(api::signup_callback_routes(
                store.clone(),
                self.queue.clone(),
                self.signer.clone(),
            ))
            .merge(api::signup_page_routes(
                store.clone(),
                self.signer.clone(),
                self.page_config(),
                *self.page_limits.lock().unwrap(),
            ))
            .merge(api::webhook_routes(
                store.clone(),
                muchaw_shared::webhooks::sender::Sender::new(
                    muchaw_shared::webhooks::url_policy::UrlPolicy {
                        allow_private: !self
                            .strict_webhook_urls
                            .load(std::sync::atomic::Ordering::SeqCst),
                    },
                    TEST_WEBHOOK_TIMEOUT,
                )
                .expect("http client"),
            ));
        self.env
            .template_routed(api::finish(routes, store, api::ApiLimits::UNLIMITED))
    }

    pub fn router(&self) -> axum::Router {
        self.router_with_base_url("https://signup.example.com/start")
    }

    /// A phone at the fake Meta, and a fresh Embedded Signup code for its WABA.
    pub fn meta_phone(&self, waba_id: &str, phone_number_id: &str) -> String {
        self.meta.add_phone(
            waba_id,
            fake_meta::PhoneProfile {
                phone_number_id: phone_number_id.to_string(),
                display_phone_number: format!(
                    "+55 11 9{}",
                    &phone_number_id[phone_number_id.len() - 8..]
                ),
                verified_name: "Acme".into(),
                quality_rating: "GREEN".into(),
            },
        );
        self.meta.issue_code(&[waba_id])
    }

    pub async fn callback(
        &self,
        key: &str,
        code: &str,
        waba_id: &str,
        phone_number_id: &str,
    ) -> ApiResponse {
        let body =
            json!({"code": code, "wabaId": waba_id, "phoneNumberId": phone_number_id}).to_string();
        self.invoke(http_event(
            "POST",
            "/api/signup/callback",
            "",
            Some(key),
            Some(&body),
        ))
        .await
    }

    /// A WABA-only callback (`mode: waba_only`, no phone), with the key or, without one, a
    /// signup link's `state`.
    pub async fn callback_waba_only(
        &self,
        key: Option<&str>,
        code: &str,
        waba_id: &str,
        state: Option<&str>,
    ) -> ApiResponse {
        let mut body = json!({"code": code, "wabaId": waba_id, "mode": "waba_only"});
        if let Some(state) = state {
            body["state"] = json!(state);
        }
        self.invoke(http_event(
            "POST",
            "/api/signup/callback",
            "",
            key,
            Some(&body.to_string()),
        ))
        .await
    }

    /// Waits (bounded) until the WABA-only signup has ended and its token is deleted.
    pub async fn waba_settled(
        &self,
        account: &AccountId,
        id: &str,
        limit: Duration,
    ) -> muchaw_shared::domain::waba_signup::WabaSignup {
        use muchaw_shared::ports::WabaSignups;
        self.start();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let signup = self
                .env
                .store
                .waba_signup(account, id)
                .await
                .expect("read")
                .expect("WABA signup exists");
            if signup.token_deleted_at.is_some() || tokio::time::Instant::now() > deadline {
                return signup;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn number(&self, account: &AccountId, id: &str) -> Number {
        self.env
            .store
            .get(account, &NumberId::from(id.to_string()))
            .await
            .expect("read")
            .expect("number exists")
    }

    /// Receives what waits in `step`'s queue (one batch) and runs it through the step's handler
    /// as Lambda's event source would, message attributes included; the pipeline stays off.
    pub async fn run_queued(
        &self,
        step: muchaw_shared::domain::Step,
    ) -> aws_lambda_events::event::sqs::SqsBatchResponse {
        let queue = Queue::Step(step);
        let url = self
            .env
            .stack
            .queue_url(crate::queue_logical_id(queue))
            .expect("queue in template")
            .to_string();
        let function = muchaw_local::stack::STEP_FUNCTIONS
            .iter()
            .find(|(_, s)| *s == step)
            .map(|(function, _)| *function)
            .expect("a function per step");
        let receive = aws_sdk_sqs::Client::new(&self.env.function_sdk)
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send();
        let received = muchaw_local::identity::as_function(function, receive)
            .await
            .expect("receive")
            .messages
            .unwrap_or_default();
        assert!(!received.is_empty(), "a message waits in {step}'s queue");
        let records: Vec<Value> = received
            .iter()
            .map(|m| {
                muchaw_local::pipeline::lambda_record(m, "arn:aws:sqs:us-east-1:123456789012:q")
            })
            .collect();
        let event = serde_json::from_value(json!({ "Records": records })).expect("an SQS event");
        muchaw_local::identity::as_function(function, self.provisioner.handle_batch(step, event))
            .await
    }

    /// As if a delay a handler asked for ran out: its message is visible in its queue again at
    /// once (the operator, straight to moto, on the receipt the handler delayed).
    pub async fn redeliver_now(&self, delay: &DelayAsked) {
        let url = self
            .env
            .stack
            .queue_url(crate::queue_logical_id(delay.queue))
            .expect("queue in template")
            .to_string();
        aws_sdk_sqs::Client::new(&self.env.sdk)
            .change_message_visibility()
            .queue_url(url)
            .receipt_handle(&delay.receipt)
            .visibility_timeout(0)
            .send()
            .await
            .expect("the delayed message visible again");
    }

    /// Waits (bounded) until the number is no longer `PENDING` and returns it.
    pub async fn settled(&self, account: &AccountId, id: &str, limit: Duration) -> Number {
        self.start();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let number = self.number(account, id).await;
            if number.status != Status::Pending || tokio::time::Instant::now() > deadline {
                return number;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
