//! The harness every integration test uses: a private stack (table, queues, secrets as
//! template.yaml declares them) on the shared moto server, and the API invoked the way Lambda
//! invokes it, through `lambda_http`'s own request and response types.

use std::collections::HashMap;

use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::AttributeValue;
use lambda_http::request::LambdaRequest;
use lambda_http::{Adapter, Context, LambdaEvent, Service};
pub use muchaw_local::provision::Overrides;
use muchaw_local::provision::random_prefix;

pub mod provisioning;
use muchaw_local::{Moto, Stack, Template, provision};
use muchaw_shared::adapters::dynamo::DynamoStore;
use muchaw_shared::adapters::sqs::SqsQueue;
use muchaw_shared::api;
use muchaw_shared::config::{QueueUrls, queue_env_name};
use muchaw_shared::domain::AccountId;
use muchaw_shared::ports::Queue;
use serde_json::{Value, json};

pub struct TestEnv {
    pub template: Template,
    pub stack: Stack,
    /// The operator's configuration, straight to moto: for a test's own setup and checks.
    pub sdk: SdkConfig,
    /// The functions' configuration: through the AWS gateway, signing as the function whose
    /// work runs (`muchaw_local::identity`), so each handler has only its own role's rights.
    pub function_sdk: SdkConfig,
    pub store: DynamoStore,
    /// Every request `store` sent, by DynamoDB operation.
    pub dynamo_operations: DynamoOperations,
}

/// The DynamoDB operations a client sent, read off each request as it leaves the SDK (its
/// `X-Amz-Target`), so a test sees what was asked of the table whatever the adapter reports.
#[derive(Debug, Clone, Default)]
pub struct DynamoOperations(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl DynamoOperations {
    fn log(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn reset(&self) {
        self.log().clear();
    }

    /// Operation names (`Query`, `Scan`, `BatchGetItem`, ...) in the order they were sent.
    pub fn sent(&self) -> Vec<String> {
        self.log().clone()
    }

    pub fn count(&self, operation: &str) -> usize {
        self.log().iter().filter(|op| *op == operation).count()
    }
}

impl aws_sdk_dynamodb::config::Intercept for DynamoOperations {
    fn name(&self) -> &'static str {
        "DynamoOperations"
    }

    fn read_before_transmit(
        &self,
        context: &aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &aws_sdk_dynamodb::config::RuntimeComponents,
        _cfg: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if let Some(target) = context.request().headers().get("x-amz-target") {
            let operation = target.rsplit('.').next().unwrap_or(target);
            self.log().push(operation.to_string());
        }
        Ok(())
    }
}

/// What API Gateway would send back to the client.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Value,
}

/// Logical queue ids in template.yaml, by the queue the code knows.
pub fn queue_logical_id(queue: Queue) -> &'static str {
    use muchaw_shared::domain::Step;
    match queue {
        Queue::Step(Step::ExchangeToken) => "ExchangeTokenQueue",
        Queue::Step(Step::SubscribeWaba) => "SubscribeWabaQueue",
        Queue::Step(Step::RegisterNumber) => "RegisterNumberQueue",
        Queue::Step(Step::ConfigurePin) => "ConfigurePinQueue",
        Queue::Step(Step::FetchProfile) => "FetchProfileQueue",
        Queue::Step(Step::ActivateNumber) => "ActivateNumberQueue",
        Queue::Events => "EventsQueue",
        Queue::Teardown => "TeardownQueue",
        Queue::WebhookDeliveries => "WebhookDeliveriesQueue",
    }
}

impl TestEnv {
    pub async fn new() -> TestEnv {
        TestEnv::with_overrides(Overrides::default()).await
    }

    pub async fn with_overrides(overrides: Overrides) -> TestEnv {
        let moto = Moto::shared();
        // Connections of this test's own: the process-wide pool's would outlive its runtime.
        let sdk = moto
            .sdk_config()
            .await
            .to_builder()
            .http_client(muchaw_shared::http_client::aws_http_client_of_its_own())
            .build();
        let template = Template::workspace().expect("template.yaml");
        let stack = provision(&template, &sdk, &random_prefix(), &overrides)
            .await
            .expect("provisioning the template on moto");
        let gateway = muchaw_local::aws_proxy::SharedGateway::get();
        gateway
            .guards
            .register(&template, &stack)
            .expect("the functions' roles in template.yaml");
        let function_sdk =
            muchaw_local::identity::function_sdk_config(&sdk, &gateway.url, &stack.prefix, None);
        let dynamo_operations = DynamoOperations::default();
        let dynamo_config = aws_sdk_dynamodb::config::Builder::from(&sdk)
            .interceptor(dynamo_operations.clone())
            .build();
        let store = DynamoStore::new(
            aws_sdk_dynamodb::Client::from_conf(dynamo_config),
            stack.table("NumbersTable").expect("NumbersTable"),
        );
        TestEnv {
            template,
            stack,
            sdk,
            function_sdk,
            store,
            dynamo_operations,
        }
    }

    pub fn queue_urls(&self) -> QueueUrls {
        muchaw_shared::config::all_queues().fold(QueueUrls::default(), |urls, queue| {
            match self.stack.queue_url(queue_logical_id(queue)) {
                Ok(url) => urls.with(queue, url),
                Err(_) => urls,
            }
        })
    }

    /// The queues as the functions reach them (through the gateway, as the running function).
    pub fn queue(&self) -> SqsQueue {
        SqsQueue::new(
            aws_sdk_sqs::Client::new(&self.function_sdk),
            self.queue_urls(),
        )
    }

    /// The table as the functions reach it (through the gateway, as the running function);
    /// its requests are logged in `dynamo_operations` too.
    pub fn function_store(&self) -> DynamoStore {
        let config = aws_sdk_dynamodb::config::Builder::from(&self.function_sdk)
            .interceptor(self.dynamo_operations.clone())
            .build();
        DynamoStore::new(
            aws_sdk_dynamodb::Client::from_conf(config),
            self.store.table().to_string(),
        )
    }

    /// Secrets Manager as the functions reach it.
    pub fn function_secrets(&self) -> aws_sdk_secretsmanager::Client {
        aws_sdk_secretsmanager::Client::new(&self.function_sdk)
    }

    /// `router` behind the template's routes, each request as the function its route names.
    pub fn template_routed(&self, router: axum::Router) -> axum::Router {
        muchaw_local::identity::template_routed(
            router,
            muchaw_local::binaries::http_routes(&self.template).expect("HttpApi routes"),
        )
    }

    /// A command through the lifecycle, as every handler applies it.
    pub async fn apply(
        &self,
        number: &muchaw_shared::domain::Number,
        command: muchaw_shared::domain::lifecycle::Command,
    ) -> muchaw_shared::lifecycle::Changed {
        muchaw_shared::lifecycle::apply(&self.store, &self.queue(), number, command)
            .await
            .expect("lifecycle command")
    }

    /// The command that takes `number` to `to` (a ban, a reinstatement, ...), applied.
    pub async fn change_status(
        &self,
        number: &muchaw_shared::domain::Number,
        to: muchaw_shared::domain::Status,
    ) -> muchaw_shared::lifecycle::Changed {
        use muchaw_shared::domain::lifecycle::{Command, DisconnectedBy};
        use muchaw_shared::domain::{FailureReason, Status};
        let command = match to {
            Status::Active if number.status == Status::Banned => Command::Reinstate,
            Status::Active | Status::Pending => Command::Activate,
            Status::Banned => Command::Ban,
            Status::Failed => Command::Fail(FailureReason {
                step: "TEST".into(),
                code: "test".into(),
                message: "failed by the test".into(),
                ..FailureReason::default()
            }),
            Status::Disconnected => Command::Disconnect(DisconnectedBy::Customer),
        };
        self.apply(number, command).await
    }

    pub async fn account(&self, name: &str) -> AccountId {
        self.store.create_account(name).await.expect("account").id
    }

    /// A new account and a live key for it.
    pub async fn account_with_key(&self, name: &str) -> (AccountId, String) {
        let account = self.account(name).await;
        let key = self
            .store
            .create_api_key(&account, Some("test"))
            .await
            .expect("api key");
        (account, key.key.expose().to_string())
    }

    /// Invokes the numbers API with an API Gateway HTTP API (v2) event, as Lambda would.
    pub async fn invoke(&self, event: Value) -> ApiResponse {
        let router = self.template_routed(api::router(self.function_store(), self.queue()));
        parse_response(invoke_router(router, event).await)
    }

    pub async fn get(&self, key: Option<&str>, path: &str, query: &str) -> ApiResponse {
        self.invoke(http_event("GET", path, query, key, None)).await
    }

    pub async fn delete(&self, key: Option<&str>, path: &str) -> ApiResponse {
        self.invoke(http_event("DELETE", path, "", key, None)).await
    }

    /// Every item of this test's table, sorted by key: to show that a request changed nothing.
    /// A key's last use (`lastUsedHour`, written by authentication once an hour) is left out:
    /// bookkeeping of who called, not something a request changes.
    pub async fn table_snapshot(&self) -> Vec<String> {
        let client = aws_sdk_dynamodb::Client::new(&self.sdk);
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let page = client
                .scan()
                .table_name(self.store.table())
                .set_exclusive_start_key(start)
                .send()
                .await
                .expect("scan");
            for item in page.items.unwrap_or_default() {
                // Rate-limit counters count every request, bad ones too: they are not data a
                // request changes.
                let counter = item
                    .get("PK")
                    .and_then(|pk| pk.as_s().ok())
                    .is_some_and(|pk| pk.starts_with("QUOTA#"));
                if counter {
                    continue;
                }
                let sorted: std::collections::BTreeMap<_, _> = item
                    .into_iter()
                    .filter(|(k, _)| k != "lastUsedHour")
                    .map(|(k, v)| (k, canonical(&v)))
                    .collect();
                items.push(format!("{sorted:?}"));
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        items.sort();
        items
    }

    /// Receives (and deletes) everything currently in a queue.
    pub async fn drain(&self, queue: Queue) -> Vec<Value> {
        let client = aws_sdk_sqs::Client::new(&self.sdk);
        let url = self
            .stack
            .queue_url(queue_logical_id(queue))
            .expect("queue in template")
            .to_string();
        let mut bodies = Vec::new();
        loop {
            let messages = client
                .receive_message()
                .queue_url(&url)
                .max_number_of_messages(10)
                .wait_time_seconds(0)
                .send()
                .await
                .expect("receive")
                .messages
                .unwrap_or_default();
            if messages.is_empty() {
                return bodies;
            }
            for message in messages {
                let body = message.body.unwrap_or_default();
                bodies.push(serde_json::from_str(&body).unwrap_or(Value::String(body)));
                if let Some(receipt) = message.receipt_handle {
                    client
                        .delete_message()
                        .queue_url(&url)
                        .receipt_handle(receipt)
                        .send()
                        .await
                        .expect("delete");
                }
            }
        }
    }

    /// The environment the template gives a function, resolved against this stack, plus what
    /// any process needs to reach moto.
    pub fn function_env(&self, function_id: &str) -> HashMap<String, String> {
        let mut env: HashMap<String, String> = self
            .stack
            .function_environment(&self.template, function_id)
            .expect("function environment")
            .into_iter()
            .collect();
        env.extend(moto_env());
        env.insert(
            "AWS_ENDPOINT_URL".into(),
            muchaw_local::aws_proxy::SharedGateway::get().url.clone(),
        );
        env.insert(
            "AWS_ACCESS_KEY_ID".into(),
            muchaw_local::identity::function_access_key(&self.stack.prefix, function_id),
        );
        env
    }

    pub fn queue_env(&self, queue: Queue) -> (&'static str, String) {
        (
            queue_env_name(queue),
            self.stack
                .queue_url(queue_logical_id(queue))
                .expect("queue")
                .to_string(),
        )
    }
}

impl Drop for TestEnv {
    /// A request a function's role does not allow fails the test that made it.
    fn drop(&mut self) {
        let denials = muchaw_local::aws_proxy::SharedGateway::get()
            .guards
            .authorizer
            .denials_of(&self.stack.prefix);
        if !denials.is_empty() && !std::thread::panicking() {
            panic!(
                "AWS requests denied by the functions' roles in template.yaml: {:#?}",
                denials
            );
        }
    }
}

/// Variables a separate process needs to reach the shared moto with dummy credentials.
pub fn moto_env() -> Vec<(String, String)> {
    vec![
        ("AWS_ENDPOINT_URL".into(), Moto::shared().endpoint().into()),
        ("AWS_REGION".into(), muchaw_local::moto::REGION.into()),
        (
            "AWS_DEFAULT_REGION".into(),
            muchaw_local::moto::REGION.into(),
        ),
        ("AWS_ACCESS_KEY_ID".into(), "test".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
    ]
}

/// Runs `router` as `lambda_http` runs it in a function: the v2 event in, the Lambda response
/// (`statusCode`, `headers`, `body`) out.
pub async fn invoke_router(router: axum::Router, event: Value) -> Value {
    let request: LambdaRequest = serde_json::from_value(event).expect("a valid v2 event");
    let mut adapter = Adapter::from(router);
    let response = adapter
        .call(LambdaEvent::new(request, Context::default()))
        .await
        .expect("the router is infallible");
    serde_json::to_value(response).expect("response serialises")
}

/// The API's rate-limit windows are calendar minutes: a test counting requests starts early
/// enough in one that it cannot cross into the next.
pub async fn early_in_a_minute() {
    let second = chrono::Utc::now().timestamp().rem_euclid(60);
    if second > 45 {
        tokio::time::sleep(std::time::Duration::from_secs((61 - second) as u64)).await;
    }
}

pub fn parse_response(response: Value) -> ApiResponse {
    let status = response["statusCode"].as_u64().unwrap_or(0) as u16;
    let headers = response["headers"]
        .as_object()
        .map(|h| {
            h.iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default();
    let body = match response["body"].as_str() {
        Some(text) if !text.is_empty() => {
            serde_json::from_str(text).unwrap_or(Value::String(text.to_string()))
        }
        _ => Value::Null,
    };
    ApiResponse {
        status,
        headers,
        body,
    }
}

/// An API Gateway HTTP API payload v2.0 event, as in `events/`.
pub fn http_event(
    method: &str,
    path: &str,
    query: &str,
    key: Option<&str>,
    body: Option<&str>,
) -> Value {
    let mut headers = serde_json::Map::new();
    headers.insert("host".into(), json!("api.example.com"));
    headers.insert("user-agent".into(), json!("muchaw-tests"));
    if let Some(key) = key {
        headers.insert("authorization".into(), json!(format!("Bearer {key}")));
    }
    if let Some(body) = body {
        headers.insert("content-type".into(), json!("application/json"));
        headers.insert("content-length".into(), json!(body.len().to_string()));
    }
    authorization_event(method, path, query, Value::Object(headers), body)
}

/// Like [`http_event`] with the headers given as they are (for malformed `Authorization`).
pub fn authorization_event(
    method: &str,
    path: &str,
    query: &str,
    headers: Value,
    body: Option<&str>,
) -> Value {
    let query_params: serde_json::Map<String, Value> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), json!(v))
        })
        .collect();
    let route_key = format!("{method} {path}");
    json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "queryStringParameters": if query_params.is_empty() { Value::Null } else { Value::Object(query_params) },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "api",
            "domainName": "api.example.com",
            "domainPrefix": "api",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "192.0.2.1",
                "userAgent": "muchaw-tests"
            },
            "requestId": "test-request",
            "routeKey": route_key,
            "stage": "$default",
            "time": "25/Nov/2026:10:00:00 +0000",
            "timeEpoch": 1795600000000i64
        },
        "body": body,
        "isBase64Encoded": false
    })
}

/// An attribute as text with nested maps in key order, so equal items print alike.
fn canonical(value: &AttributeValue) -> String {
    match value {
        AttributeValue::M(map) => {
            let sorted: std::collections::BTreeMap<_, _> =
                map.iter().map(|(k, v)| (k, canonical(v))).collect();
            format!("M({sorted:?})")
        }
        AttributeValue::L(list) => {
            let items: Vec<String> = list.iter().map(canonical).collect();
            format!("L({items:?})")
        }
        other => format!("{other:?}"),
    }
}

pub fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_string())
}

/// A number as provisioning would have left it, created `minutes_ago`.
pub fn sample_number(
    account: &AccountId,
    status: muchaw_shared::domain::Status,
    minutes_ago: i64,
) -> muchaw_shared::domain::Number {
    use muchaw_shared::domain::{Number, QualityRating, Status, time};
    let created = time::now() - chrono::Duration::minutes(minutes_ago);
    let unique = muchaw_shared::domain::NumberId::generate();
    let mut number = Number::new_pending(
        account.clone(),
        "123456789012345".into(),
        format!("98765{}", &unique.as_str()[..10]),
        created,
    );
    number.status = status;
    if status != Status::Pending {
        number.provisioning_step = None;
        number.display_number = Some("+55 11 99999-0000".into());
        number.quality_rating = Some(QualityRating::Green);
        // What the health sync reads from Meta.
        number.health = Some(muchaw_shared::domain::Health {
            can_send_message: muchaw_shared::domain::CanSendMessage::Limited,
            errors: vec![muchaw_shared::domain::HealthIssue {
                error_code: 141006,
                error_description: "There is an error with the payment method.".into(),
                possible_solution: Some("Add a new payment method to the account.".into()),
                entity: "WABA".into(),
            }],
        });
        number.messaging_limit = Some("TIER_1K".into());
        number.throughput = Some("STANDARD".into());
        number.name_status = Some("APPROVED".into());
        number.token_status = Some(muchaw_shared::domain::TokenStatus::Valid);
    }
    if status == Status::Disconnected {
        number.disconnected_by = Some(muchaw_shared::domain::lifecycle::DisconnectedBy::Customer);
    }
    number
}
