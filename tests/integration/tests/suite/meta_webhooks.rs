//! Meta's webhooks (`/webhooks/meta`) and the scheduled health sync, driving the real handlers
//! against moto and the fake Meta.

use std::time::Duration;

use muchaw_shared::adapters::secrets::read_app_secrets;
use muchaw_shared::domain::{AccountId, Number, NumberId, QualityRating, Status};
use muchaw_shared::health::{HealthSummary, HealthSync};
use muchaw_shared::meta_webhook::{self, MetaWebhook};
use muchaw_shared::ports::{NumberReader, Queue};
use muchaw_tests::provisioning::ProvisioningEnv;
use muchaw_tests::{
    ApiResponse, authorization_event, invoke_router, parse_response, sample_number,
};
use serde_json::{Value, json};

const WABA: &str = "300000000000001";
const OTHER_WABA: &str = "300000000000002";
const SETTLE: Duration = Duration::from_secs(60);

/// The handler as the function builds it: its secrets read from the stack's `MetaAppSecret`
/// through the function's own environment in template.yaml.
async fn webhook(
    p: &ProvisioningEnv,
) -> MetaWebhook<muchaw_shared::adapters::dynamo::DynamoStore, muchaw_tests::provisioning::TestQueue>
{
    let env = p
        .env
        .stack
        .function_environment(&p.env.template, "MetaWebhookFunction")
        .expect("MetaWebhookFunction environment");
    let arn = env.get("META_APP_SECRET_ARN").expect("META_APP_SECRET_ARN");
    let secrets = muchaw_local::identity::as_function(
        "MetaWebhookFunction",
        read_app_secrets(&p.env.function_secrets(), arn),
    )
    .await
    .expect("app secrets");
    MetaWebhook {
        store: p.env.function_store(),
        queue: p.queue.clone(),
        secrets: muchaw_shared::secret_cache::SecretCache::fixed(secrets),
    }
}

async fn invoke(p: &ProvisioningEnv, event: Value) -> ApiResponse {
    let router = p
        .env
        .template_routed(meta_webhook::routes(webhook(p).await));
    let response = invoke_router(router, event).await;
    // The challenge is plain text: keep it as a string.
    if response["headers"]["content-type"]
        .as_str()
        .is_some_and(|t| t.starts_with("text/plain"))
    {
        return ApiResponse {
            status: response["statusCode"].as_u64().unwrap_or(0) as u16,
            headers: Default::default(),
            body: response["body"].clone(),
        };
    }
    parse_response(response)
}

async fn post(p: &ProvisioningEnv, body: &str, signature: Option<String>) -> ApiResponse {
    let mut headers = serde_json::Map::new();
    headers.insert("host".into(), json!("api.example.com"));
    headers.insert("content-type".into(), json!("application/json"));
    if let Some(signature) = signature {
        headers.insert("x-hub-signature-256".into(), json!(signature));
    }
    invoke(
        p,
        authorization_event(
            "POST",
            "/webhooks/meta",
            "",
            Value::Object(headers),
            Some(body),
        ),
    )
    .await
}

async fn signed_post(p: &ProvisioningEnv, body: &str) -> ApiResponse {
    let signature = meta_webhook::sign(p.meta.app_secret(), body.as_bytes());
    post(p, body, Some(signature)).await
}

async fn verify(p: &ProvisioningEnv, token: &str) -> ApiResponse {
    let query = format!("hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token={token}");
    let headers = json!({"host": "api.example.com"});
    invoke(
        p,
        authorization_event("GET", "/webhooks/meta", &query, headers, None),
    )
    .await
}

fn account_update(waba: &str, value: Value) -> String {
    json!({"object": "whatsapp_business_account", "entry": [{"id": waba, "time": 1795600000,
        "changes": [{"field": "account_update", "value": value}]}]})
    .to_string()
}

fn ban(waba: &str, state: &str) -> String {
    account_update(
        waba,
        json!({"event": "DISABLED_UPDATE", "ban_info": {"waba_ban_state": state, "waba_ban_date": "2026-11-25"}}),
    )
}

/// Numbers as provisioning leaves them, written straight to the table.
async fn numbers(p: &ProvisioningEnv, waba: &str, statuses: &[Status]) -> (AccountId, Vec<Number>) {
    let account = p.env.account("acme").await;
    let numbers: Vec<Number> = statuses
        .iter()
        .enumerate()
        .map(|(i, status)| {
            let mut n = sample_number(&account, *status, 10 + i as i64);
            n.waba_id = waba.to_string();
            n.display_number = Some(format!("+55 11 99999-000{i}"));
            n
        })
        .collect();
    p.env.store.import_numbers(&numbers).await.expect("import");
    (account, numbers)
}

async fn reread(p: &ProvisioningEnv, number: &Number) -> Number {
    p.env
        .store
        .get(&number.account_id, &number.id)
        .await
        .expect("read")
        .expect("exists")
}

fn sent(p: &ProvisioningEnv, queue: Queue) -> Vec<Value> {
    p.queue
        .sent
        .lock()
        .unwrap()
        .iter()
        .filter(|(q, _)| *q == queue)
        .map(|(_, body)| serde_json::from_str::<Value>(body).unwrap())
        .collect()
}

fn events_of(p: &ProvisioningEnv, number_id: &NumberId) -> Vec<Value> {
    sent(p, Queue::Events)
        .into_iter()
        .filter(|e| e["numberId"] == number_id.as_str())
        .collect()
}

// ---- Signature and verification -------------------------------------------------------------

#[tokio::test]
async fn a_delivery_without_signature_is_401_and_changes_nothing() {
    let p = ProvisioningEnv::new().await;
    numbers(&p, WABA, &[Status::Active]).await;
    let before = p.env.table_snapshot().await;
    let response = post(&p, &ban(WABA, "DISABLE"), None).await;
    assert_eq!(response.status, 401);
    assert_eq!(p.env.table_snapshot().await, before);
    assert!(sent(&p, Queue::Events).is_empty());
}

#[tokio::test]
async fn a_delivery_with_a_wrong_signature_is_401_and_changes_nothing() {
    let p = ProvisioningEnv::new().await;
    numbers(&p, WABA, &[Status::Active]).await;
    let before = p.env.table_snapshot().await;
    let body = ban(WABA, "DISABLE");
    let wrong = meta_webhook::sign("not-the-app-secret", body.as_bytes());
    assert_eq!(post(&p, &body, Some(wrong)).await.status, 401);
    // A signature of other bytes (the same JSON re-serialised) does not verify either.
    let other = meta_webhook::sign(p.meta.app_secret(), format!("{body} ").as_bytes());
    assert_eq!(post(&p, &body, Some(other)).await.status, 401);
    assert_eq!(p.env.table_snapshot().await, before);
    assert!(sent(&p, Queue::Events).is_empty());
}

/// Log lines written while a test's subscriber is the default.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Captured {
    /// The error lines, parsed.
    fn errors(&self) -> Vec<Value> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| line["level"] == "ERROR")
            .collect()
    }
}

/// The health sync as the function builds it: the app secret read from `MetaAppSecret` on
/// first use, with the function's rights.
async fn health_sync_reading_the_app_secret(p: &ProvisioningEnv) -> HealthSummary {
    use muchaw_shared::adapters::meta::{GraphClient, MetaConfig};
    use muchaw_shared::domain::secrets::Secret;
    use muchaw_shared::secret_cache::{Loader, SecretCache};
    let arn = p.env.function_env("HealthSyncFunction")["META_APP_SECRET_ARN"].clone();
    let client = p.env.function_secrets();
    let loader: Loader = std::sync::Arc::new(move || {
        let (client, arn) = (client.clone(), arn.clone());
        Box::pin(async move { read_app_secrets(&client, &arn).await })
    });
    let meta = GraphClient::new(MetaConfig {
        graph_url: p.meta.base_url(),
        graph_version: "v25.0".into(),
        app_id: p.meta.app_id().to_string(),
        app_secret: Secret::new(""),
        timeout: muchaw_tests::provisioning::META_TIMEOUT,
    })
    .expect("graph client")
    .with_secrets(SecretCache::lazy(loader));
    let sync = HealthSync {
        store: p.env.function_store(),
        queue: p.queue.clone(),
        meta,
        vault: p.provisioner.vault.clone(),
        concurrency: 8,
        failed_token_retention_days: 7,
    };
    muchaw_local::identity::as_function("HealthSyncFunction", sync.run())
        .await
        .expect("health sync")
}

#[tokio::test]
async fn with_the_template_s_placeholder_app_secret_a_signed_removal_is_401_and_the_sync_says_so() {
    // Given MetaAppSecret as the template deploys it, before the operator puts the app's secret
    let p = ProvisioningEnv::new().await;
    let arn = p.env.function_env("MetaWebhookFunction")["META_APP_SECRET_ARN"].clone();
    aws_sdk_secretsmanager::Client::new(&p.env.sdk)
        .put_secret_value()
        .secret_id(&arn)
        .secret_string(
            json!({"appSecret": "change-me", "webhookVerifyToken": "verify-me"}).to_string(),
        )
        .send()
        .await
        .expect("placeholder put");
    let (_, ours) = numbers(&p, WABA, &[Status::Active]).await;
    let before = p.env.table_snapshot().await;
    let removal = account_update(WABA, json!({"event": "PARTNER_REMOVED"}));

    // When anyone signs a removal with the placeholder, and the health sync runs
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(logs.clone())
        .finish();
    let (answer, summary) = {
        let _default = tracing::subscriber::set_default(subscriber);
        let forged = meta_webhook::sign("change-me", removal.as_bytes());
        let answer = post(&p, &removal, Some(forged)).await;
        (answer, health_sync_reading_the_app_secret(&p).await)
    };

    // Then the removal is refused as a bad signature is, and nothing changed or was sent
    assert_eq!(answer.status, 401, "{:?}", answer.body);
    assert_eq!(answer.body["error"]["code"], "unauthorized");
    assert_eq!(p.env.table_snapshot().await, before);
    assert_eq!(reread(&p, &ours[0]).await.status, Status::Active);
    assert!(sent(&p, Queue::Teardown).is_empty());
    assert!(sent(&p, Queue::Events).is_empty());
    // And the sync's output says so
    assert!(summary.app_secret_placeholder, "{summary:?}");
    // And each function's first read logged an error naming the secret, never its value
    let errors = logs.errors();
    let naming: Vec<&Value> = errors
        .iter()
        .filter(|line| line["fields"]["secret"] == arn.as_str())
        .collect();
    assert!(naming.len() >= 2, "{errors:#?}");
    assert!(
        errors
            .iter()
            .any(|line| line["fields"]["secret"] == "MetaAppSecret"),
        "the sync's own line: {errors:#?}"
    );
    assert!(!format!("{errors:?}").contains("change-me"), "{errors:#?}");
}

#[tokio::test]
async fn verification_with_the_right_token_answers_the_challenge() {
    let p = ProvisioningEnv::new().await;
    let response = verify(&p, "verify-me").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body, json!("1158201444"));
}

#[tokio::test]
async fn verification_with_a_wrong_token_is_403() {
    let p = ProvisioningEnv::new().await;
    assert_eq!(verify(&p, "guess").await.status, 403);
    assert_eq!(verify(&p, "").await.status, 403);
}

// ---- account_update -------------------------------------------------------------------------

#[tokio::test]
async fn a_ban_bans_every_active_number_of_the_waba_with_one_event_each() {
    let p = ProvisioningEnv::new().await;
    let (_, ours) = numbers(&p, WABA, &[Status::Active, Status::Active, Status::Pending]).await;
    let (_, others) = numbers(&p, OTHER_WABA, &[Status::Active]).await;
    assert_eq!(signed_post(&p, &ban(WABA, "DISABLE")).await.status, 200);
    for number in &ours[..2] {
        assert_eq!(reread(&p, number).await.status, Status::Banned);
        let events = events_of(&p, &number.id);
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0]["type"], "number.banned");
    }
    assert_eq!(reread(&p, &ours[2]).await.status, Status::Pending);
    assert_eq!(reread(&p, &others[0]).await.status, Status::Active);
    assert_eq!(sent(&p, Queue::Events).len(), 2);
}

#[tokio::test]
async fn the_same_ban_delivered_twice_gives_one_transition_and_one_event_per_number() {
    let p = ProvisioningEnv::new().await;
    let (account, ours) = numbers(&p, WABA, &[Status::Active, Status::Active]).await;
    let body = ban(WABA, "DISABLE");
    assert_eq!(signed_post(&p, &body).await.status, 200);
    assert_eq!(signed_post(&p, &body).await.status, 200);
    for number in &ours {
        assert_eq!(reread(&p, number).await.status, Status::Banned);
        assert_eq!(events_of(&p, &number.id).len(), 1);
    }
    // The counters moved once per number.
    let page = p
        .env
        .store
        .list(
            &account,
            Some(Status::Banned),
            muchaw_shared::ports::Page {
                limit: 10,
                offset: 0,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.total, 2);
}

#[tokio::test]
async fn a_reinstate_brings_banned_numbers_back_to_active() {
    let p = ProvisioningEnv::new().await;
    let (_, ours) = numbers(&p, WABA, &[Status::Active]).await;
    assert_eq!(signed_post(&p, &ban(WABA, "DISABLE")).await.status, 200);
    assert_eq!(signed_post(&p, &ban(WABA, "REINSTATE")).await.status, 200);
    assert_eq!(reread(&p, &ours[0]).await.status, Status::Active);
    let types: Vec<Value> = events_of(&p, &ours[0].id)
        .into_iter()
        .map(|e| e["type"].clone())
        .collect();
    assert_eq!(types, [json!("number.banned"), json!("number.reinstated")]);
}

fn ban_at(waba: &str, state: &str, time: i64) -> String {
    json!({"object": "whatsapp_business_account", "entry": [{"id": waba, "time": time,
        "changes": [{"field": "account_update", "value":
            {"event": "DISABLED_UPDATE", "ban_info": {"waba_ban_state": state}}}]}]})
    .to_string()
}

#[tokio::test]
async fn a_ban_older_than_an_applied_reinstate_is_ignored() {
    let p = ProvisioningEnv::new().await;
    let (_, ours) = numbers(&p, WABA, &[Status::Active]).await;
    // Meta banned at t=100 and reinstated at t=200; the reinstatement arrives first.
    assert_eq!(
        signed_post(&p, &ban_at(WABA, "REINSTATE", 200))
            .await
            .status,
        200
    );
    assert_eq!(
        signed_post(&p, &ban_at(WABA, "DISABLE", 100)).await.status,
        200
    );
    assert_eq!(reread(&p, &ours[0]).await.status, Status::Active);
    assert!(events_of(&p, &ours[0].id).is_empty());
    // A later ban still applies, and its redelivery is harmless.
    assert_eq!(
        signed_post(&p, &ban_at(WABA, "DISABLE", 300)).await.status,
        200
    );
    assert_eq!(
        signed_post(&p, &ban_at(WABA, "DISABLE", 300)).await.status,
        200
    );
    assert_eq!(reread(&p, &ours[0]).await.status, Status::Banned);
    assert_eq!(events_of(&p, &ours[0].id).len(), 1);
}

#[tokio::test]
async fn a_scheduled_disable_keeps_the_status_and_announces_the_ban_once() {
    let p = ProvisioningEnv::new().await;
    let (_, ours) = numbers(&p, WABA, &[Status::Active]).await;
    assert_eq!(
        signed_post(&p, &ban(WABA, "SCHEDULE_FOR_DISABLE"))
            .await
            .status,
        200
    );
    assert_eq!(
        signed_post(&p, &ban(WABA, "SCHEDULE_FOR_DISABLE"))
            .await
            .status,
        200
    );
    assert_eq!(reread(&p, &ours[0]).await.status, Status::Active);
    let events = sent(&p, Queue::Events);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "number.ban_scheduled");
}

#[tokio::test]
async fn a_restriction_shows_on_the_number_and_is_announced() {
    let p = ProvisioningEnv::new().await;
    let (_, ours) = numbers(&p, WABA, &[Status::Active]).await;
    let body = account_update(
        WABA,
        json!({"event": "ACCOUNT_RESTRICTION", "restriction_info": [
            {"restriction_type": "RESTRICTED_ADD_PHONE_NUMBER_ACTION", "expiration": 1796000000}]}),
    );
    assert_eq!(signed_post(&p, &body).await.status, 200);
    let number = reread(&p, &ours[0]).await;
    assert_eq!(number.restrictions.len(), 1);
    assert_eq!(
        number.restrictions[0].kind,
        "RESTRICTED_ADD_PHONE_NUMBER_ACTION"
    );
    let events = events_of(&p, &ours[0].id);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "number.restricted");
    assert_eq!(
        events[0]["data"]["restrictions"][0]["type"],
        "RESTRICTED_ADD_PHONE_NUMBER_ACTION"
    );
}

#[tokio::test]
async fn partner_app_uninstalled_disconnects_the_numbers_and_queues_their_teardown() {
    let p = ProvisioningEnv::new().await;
    let (_, ours) = numbers(
        &p,
        WABA,
        &[
            Status::Active,
            Status::Pending,
            Status::Banned,
            Status::Failed,
        ],
    )
    .await;
    // waba_info names the WABA; entry.id is someone else's.
    let body = account_update(
        "999999999999999",
        json!({"event": "PARTNER_APP_UNINSTALLED", "waba_info": {"waba_id": WABA, "owner_business_id": "1"}}),
    );
    assert_eq!(signed_post(&p, &body).await.status, 200);
    // A FAILED number is disconnected too: with the app uninstalled no retry can resume it, and
    // its teardown deletes the token it kept for one.
    for number in &ours {
        assert_eq!(reread(&p, number).await.status, Status::Disconnected);
        let events = events_of(&p, &number.id);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["type"], "number.disconnected");
    }
    let teardowns = sent(&p, Queue::Teardown);
    assert_eq!(teardowns.len(), 4, "{teardowns:?}");
    for number in &ours {
        assert!(
            teardowns
                .iter()
                .any(|t| t["numberId"] == number.id.as_str())
        );
    }
}

#[tokio::test]
async fn an_unknown_waba_is_200_and_changes_nothing() {
    let p = ProvisioningEnv::new().await;
    numbers(&p, WABA, &[Status::Active]).await;
    let before = p.env.table_snapshot().await;
    assert_eq!(
        signed_post(&p, &ban(OTHER_WABA, "DISABLE")).await.status,
        200
    );
    assert_eq!(
        signed_post(
            &p,
            &account_update(OTHER_WABA, json!({"event": "PARTNER_REMOVED"}))
        )
        .await
        .status,
        200
    );
    assert_eq!(p.env.table_snapshot().await, before);
    assert!(p.queue.sent.lock().unwrap().is_empty());
}

#[tokio::test]
async fn malformed_json_with_a_valid_signature_is_400() {
    let p = ProvisioningEnv::new().await;
    numbers(&p, WABA, &[Status::Active]).await;
    let before = p.env.table_snapshot().await;
    assert_eq!(signed_post(&p, "{\"object\": ").await.status, 400);
    assert_eq!(p.env.table_snapshot().await, before);
}

#[tokio::test]
async fn a_good_change_beside_unreadable_ones_is_applied_and_the_delivery_is_200() {
    let p = ProvisioningEnv::new().await;
    let (_, ours) = numbers(&p, WABA, &[Status::Active]).await;
    let body = json!({"object": "whatsapp_business_account", "entry": [
        {"id": WABA, "time": 1795600000, "changes": [
            {"value": {"event": "DISABLED_UPDATE"}},
            {"field": "account_update", "value": "not an object"},
            {"field": "account_update", "value": {"event": "DISABLED_UPDATE",
                "ban_info": {"waba_ban_state": "DISABLE", "waba_ban_date": "2026-11-25"}}}
        ]},
        {"changes": []},
        {"id": OTHER_WABA, "changes": [{"field": "account_update", "value": {"event": "ACCOUNT_DELETED"}}]}
    ]})
    .to_string();
    assert_eq!(signed_post(&p, &body).await.status, 200);
    assert_eq!(reread(&p, &ours[0]).await.status, Status::Banned);
    assert_eq!(events_of(&p, &ours[0].id).len(), 1);
}

#[tokio::test]
async fn a_signed_json_delivery_meta_s_parser_cannot_read_is_200_and_changes_nothing() {
    let p = ProvisioningEnv::new().await;
    numbers(&p, WABA, &[Status::Active]).await;
    let before = p.env.table_snapshot().await;
    for body in [
        "{}",
        "[]",
        r#"{"entry": 1}"#,
        r#"{"object": "page", "entry": []}"#,
    ] {
        assert_eq!(signed_post(&p, body).await.status, 200, "{body}");
    }
    assert_eq!(p.env.table_snapshot().await, before);
}

// ---- phone_number_name_update ---------------------------------------------------------------

#[tokio::test]
async fn an_approved_name_update_sets_the_display_name() {
    let p = ProvisioningEnv::new().await;
    let (_, ours) = numbers(&p, WABA, &[Status::Active, Status::Active]).await;
    let body =
        json!({"object": "whatsapp_business_account", "entry": [{"id": WABA, "time": 1795600000,
        "changes": [{"field": "phone_number_name_update", "value": {
            "display_phone_number": "5511999990001", "decision": "APPROVED",
            "requested_verified_name": "Acme Brasil", "rejection_reason": null}}]}]})
        .to_string();
    assert_eq!(signed_post(&p, &body).await.status, 200);
    assert_eq!(
        reread(&p, &ours[1]).await.display_name.as_deref(),
        Some("Acme Brasil")
    );
    assert_eq!(reread(&p, &ours[0]).await.display_name, None);
    let events = events_of(&p, &ours[1].id);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "number.display_name_updated");
    assert_eq!(events[0]["data"]["nameDecision"]["decision"], "APPROVED");
    assert!(events_of(&p, &ours[0].id).is_empty());
}

// ---- Health sync ----------------------------------------------------------------------------

async fn active(p: &ProvisioningEnv, phone: &str, token_expires_in: Option<u64>) -> Number {
    let (account, key) = p.env.account_with_key("acme").await;
    p.meta_phone(WABA, phone);
    let code = match token_expires_in {
        Some(secs) => p.meta.issue_code_expiring(&[WABA], secs),
        None => p.meta.issue_code(&[WABA]),
    };
    let response = p.callback(&key, &code, WABA, phone).await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    let id = response.body["data"]["id"].as_str().unwrap().to_string();
    let number = p.settled(&account, &id, SETTLE).await;
    assert_eq!(number.status, Status::Active, "{number:?}");
    number
}

async fn health_sync(p: &ProvisioningEnv) -> HealthSummary {
    let sync = HealthSync {
        store: p.env.function_store(),
        queue: p.queue.clone(),
        meta: p.provisioner.meta.clone(),
        vault: p.provisioner.vault.clone(),
        concurrency: 8,
        failed_token_retention_days: 7,
    };
    muchaw_local::identity::as_function("HealthSyncFunction", sync.run())
        .await
        .expect("health sync")
}

fn of_type(p: &ProvisioningEnv, number: &Number, event_type: &str) -> Vec<Value> {
    events_of(p, &number.id)
        .into_iter()
        .filter(|e| e["type"] == event_type)
        .collect()
}

#[tokio::test]
async fn a_quality_change_at_meta_is_stored_and_announced_once() {
    let p = ProvisioningEnv::new().await;
    let number = active(&p, "400000000000001", None).await;
    assert_eq!(number.quality_rating, Some(QualityRating::Green));
    p.meta.set_quality("400000000000001", "YELLOW");

    let summary = health_sync(&p).await;
    assert_eq!(summary.checked, 1);
    assert_eq!(summary.updated, 1);
    assert!(!summary.stopped_early);
    assert_eq!(
        reread(&p, &number).await.quality_rating,
        Some(QualityRating::Yellow)
    );
    let events = of_type(&p, &number, "number.quality_updated");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["data"]["qualityRating"], "YELLOW");
    assert_eq!(events[0]["data"]["previousQualityRating"], "GREEN");
}

#[tokio::test]
async fn a_number_meta_shows_banned_is_moved_with_its_event_by_one_sync() {
    let p = ProvisioningEnv::new().await;
    let number = active(&p, "400000000000011", None).await;
    // The DISABLED_UPDATE webhook was missed: only the phone's status tells.
    p.meta
        .set_phone_status("400000000000011", "BANNED", "BLOCKED");

    let summary = health_sync(&p).await;
    assert_eq!(summary.updated, 1);
    assert_eq!(reread(&p, &number).await.status, Status::Banned);
    assert_eq!(of_type(&p, &number, "number.banned").len(), 1);

    health_sync(&p).await;
    assert_eq!(of_type(&p, &number, "number.banned").len(), 1);
}

#[tokio::test]
async fn a_quality_change_whose_announcement_crashed_is_announced_by_the_next_run() {
    let p = ProvisioningEnv::new().await;
    let number = active(&p, "400000000000009", None).await;
    // ACTIVE is stored before its event is published: let that send go first, so the failure
    // below is the quality event's.
    for _ in 0..100 {
        if !of_type(&p, &number, "number.activated").is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    p.meta.set_quality("400000000000009", "RED");
    p.queue.fail_sends(Queue::Events, 1);

    let first = health_sync(&p).await;
    assert_eq!(first.errors, 1, "{first:?}");
    assert_eq!(
        reread(&p, &number).await.quality_rating,
        Some(QualityRating::Red),
        "the change is stored with its event"
    );
    assert!(of_type(&p, &number, "number.quality_updated").is_empty());

    let second = health_sync(&p).await;
    assert_eq!(second.updated, 0, "{second:?}");
    let events = of_type(&p, &number, "number.quality_updated");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["data"]["previousQualityRating"], "GREEN");

    health_sync(&p).await;
    assert_eq!(of_type(&p, &number, "number.quality_updated").len(), 1);
}

#[tokio::test]
async fn a_second_run_without_change_emits_nothing() {
    let p = ProvisioningEnv::new().await;
    let number = active(&p, "400000000000002", None).await;
    p.meta.set_quality("400000000000002", "RED");
    health_sync(&p).await;
    let before = sent(&p, Queue::Events).len();
    let summary = health_sync(&p).await;
    assert_eq!(summary.checked, 1);
    assert_eq!(summary.updated, 0);
    assert_eq!(sent(&p, Queue::Events).len(), before);
    assert_eq!(of_type(&p, &number, "number.quality_updated").len(), 1);
}

#[tokio::test]
async fn an_unrated_number_at_meta_becomes_null() {
    let p = ProvisioningEnv::new().await;
    let number = active(&p, "400000000000003", None).await;
    p.meta.set_quality("400000000000003", "UNKNOWN");
    assert_eq!(health_sync(&p).await.updated, 1);
    assert_eq!(reread(&p, &number).await.quality_rating, None);
    let events = of_type(&p, &number, "number.quality_updated");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["data"]["qualityRating"], Value::Null);
    assert_eq!(events[0]["data"]["previousQualityRating"], "GREEN");
}

#[tokio::test]
async fn a_token_expiring_within_a_week_is_warned_once_a_day() {
    let p = ProvisioningEnv::new().await;
    let number = active(&p, "400000000000004", Some(3 * 24 * 3600)).await;
    let far = active(&p, "400000000000005", None).await;
    let summary = health_sync(&p).await;
    assert_eq!(summary.warned, 1);
    assert_eq!(of_type(&p, &number, "number.token_expiring").len(), 1);
    assert!(of_type(&p, &far, "number.token_expiring").is_empty());
    // Same day: no second warning.
    assert_eq!(health_sync(&p).await.warned, 0);
    assert_eq!(of_type(&p, &number, "number.token_expiring").len(), 1);
}

#[tokio::test]
async fn a_meta_rate_limit_stops_the_run_early() {
    let p = ProvisioningEnv::new().await;
    active(&p, "400000000000006", None).await;
    p.meta.fail_next(
        fake_meta::Route::GetPhone,
        5,
        fake_meta::Fault::rate_limited(),
    );
    let summary = health_sync(&p).await;
    assert!(summary.stopped_early, "{summary:?}");
    assert_eq!(summary.updated, 0);
}

// ---- Webhooks the fake Meta sends itself, to the real handler over HTTP ---------------------

/// The real `/webhooks/meta` router served on a local port, set as the fake Meta's callback
/// (as the app's callback URL is set in the App Dashboard).
async fn serve_callback(p: &ProvisioningEnv) -> String {
    let router = p
        .env
        .template_routed(meta_webhook::routes(webhook(p).await));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(listener, router).await.ok();
    });
    let url = format!("http://{addr}{}", meta_webhook::PATH);
    p.meta.set_webhook_callback(&url);
    url
}

#[tokio::test]
async fn a_messaging_limit_upgrade_meta_sends_shows_on_the_number_and_is_announced_once() {
    let p = ProvisioningEnv::new().await;
    serve_callback(&p).await;
    let number = active(&p, "400000000000021", None).await;
    assert_eq!(number.messaging_limit.as_deref(), Some("TIER_1K"));

    let status = p
        .meta
        .change_messaging_limit("400000000000021", "UPGRADE", "TIER_10K")
        .await
        .expect("sent");
    assert_eq!(status, 200);

    let after = reread(&p, &number).await;
    assert_eq!(after.messaging_limit.as_deref(), Some("TIER_10K"));
    let events = of_type(&p, &number, "number.quality_updated");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["data"]["messagingLimit"], "TIER_10K");
    assert_eq!(events[0]["data"]["previousMessagingLimit"], "TIER_1K");
    // The health sync then reads the same tier from the phone: nothing new to announce.
    health_sync(&p).await;
    assert_eq!(of_type(&p, &number, "number.quality_updated").len(), 1);
}

#[tokio::test]
async fn display_name_decisions_meta_sends_show_on_the_number_with_meta_s_reason() {
    let p = ProvisioningEnv::new().await;
    serve_callback(&p).await;
    let number = active(&p, "400000000000022", None).await;

    let rejected = p
        .meta
        .decide_display_name(
            "400000000000022",
            "REJECTED",
            "Best Bank Ever",
            Some("NAME_NOT_ALLOWED"),
        )
        .await
        .expect("sent");
    assert_eq!(rejected, 200);
    let after = reread(&p, &number).await;
    assert_eq!(after.name_status.as_deref(), Some("DECLINED"));
    assert_eq!(after.display_name, number.display_name);

    let approved = p
        .meta
        .decide_display_name("400000000000022", "APPROVED", "Acme Brasil", None)
        .await
        .expect("sent");
    assert_eq!(approved, 200);
    let after = reread(&p, &number).await;
    assert_eq!(after.display_name.as_deref(), Some("Acme Brasil"));
    assert_eq!(after.name_status.as_deref(), Some("APPROVED"));

    let events = of_type(&p, &number, "number.display_name_updated");
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["data"]["nameDecision"]["decision"], "REJECTED");
    assert_eq!(
        events[0]["data"]["nameDecision"]["rejectionReason"],
        "NAME_NOT_ALLOWED"
    );
    assert_eq!(events[1]["data"]["displayName"], "Acme Brasil");
}

#[tokio::test]
async fn an_offboarding_meta_sends_restricts_the_number_until_meta_reconnects_it() {
    let p = ProvisioningEnv::new().await;
    serve_callback(&p).await;
    let number = active(&p, "400000000000023", None).await;

    let offboarded = fake_meta::webhooks::account_event("ACCOUNT_OFFBOARDED");
    let status = p
        .meta
        .send_webhook(WABA, "account_update", offboarded)
        .await
        .expect("sent");
    assert_eq!(status, 200);
    let after = reread(&p, &number).await;
    assert_eq!(after.status, Status::Active);
    let kinds: Vec<&str> = after.restrictions.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(kinds, ["ACCOUNT_OFFBOARDED"]);

    let reconnected = fake_meta::webhooks::account_event("ACCOUNT_RECONNECTED");
    p.meta
        .send_webhook(WABA, "account_update", reconnected)
        .await
        .expect("sent");
    assert!(reread(&p, &number).await.restrictions.is_empty());
    assert_eq!(of_type(&p, &number, "number.restricted").len(), 1);
    assert_eq!(of_type(&p, &number, "number.restriction_lifted").len(), 1);
}

#[tokio::test]
async fn a_ban_meta_sends_bans_the_number_through_the_real_handler() {
    let p = ProvisioningEnv::new().await;
    serve_callback(&p).await;
    let number = active(&p, "400000000000024", None).await;

    let status = p
        .meta
        .set_waba_ban_state(WABA, "DISABLE")
        .await
        .expect("sent");

    assert_eq!(status, 200);
    assert_eq!(reread(&p, &number).await.status, Status::Banned);
    assert_eq!(of_type(&p, &number, "number.banned").len(), 1);
}

#[tokio::test]
async fn an_uninstalled_app_meta_sends_from_the_partner_s_entry_disconnects_the_number() {
    let p = ProvisioningEnv::new().await;
    serve_callback(&p).await;
    let number = active(&p, "400000000000025", None).await;

    // For PARTNER_* events Meta's entry is the partner's business; the WABA is in waba_info.
    let value = fake_meta::webhooks::partner_event(
        "PARTNER_APP_UNINSTALLED",
        WABA,
        "880000000000001",
        p.meta.app_id(),
    );
    let status = p
        .meta
        .send_webhook("770000000000001", "account_update", value)
        .await
        .expect("sent");

    assert_eq!(status, 200);
    let after = reread(&p, &number).await;
    assert_eq!(after.status, Status::Disconnected);
    assert_eq!(
        after.disconnected_by,
        Some(muchaw_shared::domain::lifecycle::DisconnectedBy::Meta)
    );
    assert_eq!(of_type(&p, &number, "number.disconnected").len(), 1);
    assert_eq!(sent(&p, Queue::Teardown).len(), 1);
}

#[tokio::test]
async fn an_account_deleted_meta_sends_disconnects_the_number() {
    let p = ProvisioningEnv::new().await;
    serve_callback(&p).await;
    let number = active(&p, "400000000000026", None).await;

    let value = fake_meta::webhooks::account_event("ACCOUNT_DELETED");
    let status = p
        .meta
        .send_webhook(WABA, "account_update", value)
        .await
        .expect("sent");

    assert_eq!(status, 200);
    assert_eq!(reread(&p, &number).await.status, Status::Disconnected);
}

#[tokio::test]
async fn a_webhook_signed_with_another_secret_is_refused_by_the_real_handler() {
    let p = ProvisioningEnv::new().await;
    let callback = serve_callback(&p).await;
    let number = active(&p, "400000000000027", None).await;
    let body = fake_meta::webhooks::delivery(
        WABA,
        "account_update",
        fake_meta::webhooks::account_ban("DISABLE"),
    );
    let status = fake_meta::webhooks::post(&callback, "not-the-app-secret", &body)
        .await
        .expect("sent");
    assert_eq!(status, 401);
    assert_eq!(reread(&p, &number).await.status, Status::Active);
}

// ---- Health sync: what Meta shows of the phone ----------------------------------------------

#[tokio::test]
async fn a_blocked_number_shows_meta_s_errors_per_entity_and_is_announced_once() {
    let p = ProvisioningEnv::new().await;
    let number = active(&p, "400000000000031", None).await;
    p.meta.set_health(
        "400000000000031",
        "BLOCKED",
        vec![fake_meta::HealthError {
            entity_type: "WABA".into(),
            error_code: 141006,
            error_description: "There is an error with the payment method.".into(),
            possible_solution: Some("Add a new payment method to the account.".into()),
        }],
    );

    let summary = health_sync(&p).await;
    health_sync(&p).await;

    assert_eq!(summary.updated, 1, "{summary:?}");
    let after = reread(&p, &number).await;
    assert_eq!(after.status, Status::Active);
    let health = after.health.expect("health");
    assert_eq!(
        health.can_send_message,
        muchaw_shared::domain::CanSendMessage::Blocked
    );
    assert_eq!(health.errors.len(), 1);
    assert_eq!(health.errors[0].entity, "WABA");
    assert_eq!(health.errors[0].error_code, 141006);
    let events = of_type(&p, &number, "number.health_changed");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["data"]["health"]["canSendMessage"], "BLOCKED");
}

#[tokio::test]
async fn a_number_meta_shows_disconnected_is_disconnected_by_meta_in_one_sync() {
    let p = ProvisioningEnv::new().await;
    let number = active(&p, "400000000000032", None).await;
    p.meta
        .set_phone_status("400000000000032", "DISCONNECTED", "BLOCKED");

    health_sync(&p).await;

    let after = reread(&p, &number).await;
    assert_eq!(after.status, Status::Disconnected);
    assert_eq!(
        after.disconnected_by,
        Some(muchaw_shared::domain::lifecycle::DisconnectedBy::Meta)
    );
    assert_eq!(of_type(&p, &number, "number.disconnected").len(), 1);
    assert_eq!(sent(&p, Queue::Teardown).len(), 1);
}

#[tokio::test]
async fn a_number_meta_shows_restricted_is_restricted_until_it_no_longer_is() {
    let p = ProvisioningEnv::new().await;
    let number = active(&p, "400000000000033", None).await;
    p.meta
        .set_phone_status("400000000000033", "RESTRICTED", "LIMITED");

    health_sync(&p).await;
    let kinds: Vec<String> = reread(&p, &number)
        .await
        .restrictions
        .iter()
        .map(|r| r.kind.clone())
        .collect();
    assert_eq!(kinds, ["PHONE_NUMBER_RESTRICTED"]);

    p.meta
        .set_phone_status("400000000000033", "CONNECTED", "AVAILABLE");
    health_sync(&p).await;

    assert!(reread(&p, &number).await.restrictions.is_empty());
    assert_eq!(of_type(&p, &number, "number.restricted").len(), 1);
    assert_eq!(of_type(&p, &number, "number.restriction_lifted").len(), 1);
}

#[tokio::test]
async fn a_token_revoked_at_meta_shows_on_the_number_and_is_announced_once() {
    let p = ProvisioningEnv::new().await;
    let number = active(&p, "400000000000034", None).await;
    health_sync(&p).await;
    assert_eq!(
        reread(&p, &number).await.token_status,
        Some(muchaw_shared::domain::TokenStatus::Valid)
    );
    p.meta.revoke_all_tokens();

    health_sync(&p).await;
    health_sync(&p).await;

    let after = reread(&p, &number).await;
    assert_eq!(
        after.token_status,
        Some(muchaw_shared::domain::TokenStatus::Invalid)
    );
    assert_eq!(after.status, Status::Active);
    let events = of_type(&p, &number, "number.token_invalid");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["data"]["tokenStatus"], "INVALID");
}
