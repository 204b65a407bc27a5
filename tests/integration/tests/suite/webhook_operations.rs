//! Operating webhooks against moto through the real router and pipeline: the delivery log
//! written by the deliverer, resends after the dead-letter queue, test events and secret
//! rotation verified by an independent Standard Webhooks implementation, and a number's
//! history read from the outbox events in DynamoDB.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use muchaw_shared::domain::{AccountId, Number, Status};
use muchaw_tests::provisioning::ProvisioningEnv;
use muchaw_tests::{ApiResponse, http_event, sample_number};
use serde_json::{Value, json};

#[derive(Clone)]
struct Receiver {
    url: String,
    answer: Arc<Mutex<u16>>,
    received: Arc<Mutex<Vec<(HeaderMap, String)>>>,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    r.received
        .lock()
        .unwrap()
        .push((headers, String::from_utf8_lossy(&body).into_owned()));
    StatusCode::from_u16(*r.answer.lock().unwrap()).unwrap()
}

impl Receiver {
    async fn start(answer: u16) -> Receiver {
        let receiver = Receiver {
            url: String::new(),
            answer: Arc::new(Mutex::new(answer)),
            received: Arc::default(),
        };
        let app = Router::new()
            .route("/hooks", post(receive))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            url: format!("http://{addr}/hooks"),
            ..receiver
        }
    }

    fn answer(&self, status: u16) {
        *self.answer.lock().unwrap() = status;
    }

    fn received(&self) -> Vec<(HeaderMap, String)> {
        self.received.lock().unwrap().clone()
    }
}

async fn call(
    p: &ProvisioningEnv,
    method: &str,
    path: &str,
    query: &str,
    key: &str,
    body: Option<Value>,
) -> ApiResponse {
    let body = body.map(|b| b.to_string());
    p.invoke(http_event(method, path, query, Some(key), body.as_deref()))
        .await
}

async fn endpoint(p: &ProvisioningEnv, key: &str, url: &str) -> (String, String) {
    let created = call(
        p,
        "POST",
        "/api/webhooks",
        "",
        key,
        Some(json!({ "url": url })),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    (
        created.body["data"]["id"].as_str().unwrap().to_string(),
        created.body["data"]["secret"].as_str().unwrap().to_string(),
    )
}

async fn activated(p: &ProvisioningEnv, account: &AccountId) -> Number {
    let number = sample_number(account, Status::Pending, 1);
    p.env
        .store
        .import_numbers(std::slice::from_ref(&number))
        .await
        .unwrap();
    p.env
        .change_status(&number, Status::Active)
        .await
        .number()
        .clone()
}

/// The endpoint as `GET /api/webhooks` lists it.
async fn listed(p: &ProvisioningEnv, key: &str, id: &str) -> Value {
    let list = call(p, "GET", "/api/webhooks", "", key, None).await;
    assert_eq!(list.status, 200, "{}", list.body);
    list.body["data"]
        .as_array()
        .and_then(|all| all.iter().find(|e| e["id"] == id))
        .cloned()
        .unwrap_or_else(|| panic!("{id} not listed: {}", list.body))
}

/// Polls the endpoint's delivery log until its first delivery has `status`.
async fn delivery_with_status(
    p: &ProvisioningEnv,
    key: &str,
    endpoint: &str,
    status: &str,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let log = call(
            p,
            "GET",
            &format!("/api/webhooks/{endpoint}/deliveries"),
            "",
            key,
            None,
        )
        .await;
        assert_eq!(log.status, 200, "{}", log.body);
        if let Some(first) = log.body["data"].get(0)
            && first["status"] == status
        {
            return first.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {status} delivery: {}",
            log.body
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn verified_by_python(secret: &str, deliveries: &[(HeaderMap, String)]) -> Vec<bool> {
    let input: Vec<Value> = deliveries
        .iter()
        .map(|(headers, body)| {
            let headers: std::collections::HashMap<String, String> = headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                .collect();
            json!({"body": body, "headers": headers})
        })
        .collect();
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.venv/bin/python");
    let script = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
secret, deliveries = sys.argv[1], json.load(sys.stdin)
results = []
for d in deliveries:
    try:
        Webhook(secret).verify(d["body"], d["headers"])
        results.append(True)
    except Exception:
        results.append(False)
print(json.dumps(results))
"#;
    let mut child = std::process::Command::new(python)
        .args(["-c", script, secret])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the venv's python (scripts/bootstrap.sh)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&input).unwrap().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test]
async fn a_dead_letter_delivery_shows_every_attempt_and_a_resend_delivers_it_with_the_same_id() {
    // Given an endpoint answering 503 to every try, until the delivery is dead-lettered
    let p = ProvisioningEnv::new().await;
    let (account, key) = p.env.account_with_key("log-dlq").await;
    let receiver = Receiver::start(503).await;
    let (endpoint, secret) = endpoint(&p, &key, &receiver.url).await;
    p.start();
    activated(&p, &account).await;

    // Then its log holds the eight attempts, each with the 503, and no retry left
    let failed = delivery_with_status(&p, &key, &endpoint, "failed").await;
    let attempts = failed["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 8, "{failed}");
    assert!(
        attempts
            .iter()
            .all(|a| a["status"] == 503 && a["durationMs"].is_u64())
    );
    assert_eq!(failed["nextRetryAt"], Value::Null);

    // When the endpoint recovers and the delivery is resent
    receiver.answer(200);
    let resent = call(
        &p,
        "POST",
        &format!(
            "/api/webhooks/{endpoint}/deliveries/{}/resend",
            failed["id"].as_str().unwrap()
        ),
        "",
        &key,
        None,
    )
    .await;

    // Then it succeeded, the endpoint got the same webhook-id and body, signed
    assert_eq!(resent.status, 200, "{}", resent.body);
    assert_eq!(resent.body["data"]["status"], "succeeded");
    let received = receiver.received();
    let (first, last) = (&received[0], received.last().unwrap());
    assert_eq!(last.0["webhook-id"], first.0["webhook-id"]);
    assert_eq!(last.1, first.1);
    assert_eq!(
        verified_by_python(&secret, std::slice::from_ref(last)),
        [true]
    );
    // and the log says so too
    let log = call(
        &p,
        "GET",
        &format!("/api/webhooks/{endpoint}/deliveries"),
        "status=succeeded",
        &key,
        None,
    )
    .await;
    assert_eq!(log.body["data"][0]["id"], failed["id"]);
}

#[tokio::test]
async fn during_a_rotation_test_events_verify_with_the_old_and_the_new_secret() {
    let p = ProvisioningEnv::new().await;
    let (_, key) = p.env.account_with_key("rotation").await;
    let receiver = Receiver::start(200).await;
    let (endpoint, old) = endpoint(&p, &key, &receiver.url).await;
    let rotated = call(
        &p,
        "POST",
        &format!("/api/webhooks/{endpoint}/rotate-secret"),
        "",
        &key,
        None,
    )
    .await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let new = rotated.body["data"]["secret"].as_str().unwrap().to_string();
    let tested = call(
        &p,
        "POST",
        &format!("/api/webhooks/{endpoint}/test"),
        "",
        &key,
        None,
    )
    .await;
    assert_eq!(tested.status, 200, "{}", tested.body);
    assert_eq!(tested.body["data"]["status"], 200);
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    let signature = received[0].0["webhook-signature"].to_str().unwrap();
    assert_eq!(signature.split(' ').count(), 2);
    assert_eq!(verified_by_python(&new, &received), [true]);
    assert_eq!(verified_by_python(&old, &received), [true]);
    let body: Value = serde_json::from_str(&received[0].1).unwrap();
    assert_eq!(body["type"], "webhook.test");
    // The secret is shown once: nowhere in the table's answers after.
    let listed = call(&p, "GET", "/api/webhooks", "", &key, None).await;
    assert!(!listed.body.to_string().contains("whsec_"));
}

#[tokio::test]
async fn a_rotated_out_secret_leaves_the_table_with_the_first_relay_run_after_its_grace_period() {
    use muchaw_shared::domain::time;
    use muchaw_shared::outbox::OutboxRelay;
    // Given an endpoint whose secret was rotated through the API
    let p = ProvisioningEnv::new().await;
    let (_, key) = p.env.account_with_key("rotation-grace").await;
    let receiver = Receiver::start(200).await;
    let (endpoint, old) = endpoint(&p, &key, &receiver.url).await;
    let path = format!("/api/webhooks/{endpoint}/rotate-secret");
    let rotated = call(&p, "POST", &path, "", &key, None).await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let new = rotated.body["data"]["secret"].as_str().unwrap().to_string();
    let grace_ends = rotated.body["data"]["previousSecretExpiresAt"]
        .as_str()
        .and_then(|text| time::parse(text).ok())
        .expect("the end of the grace period");
    let relay = OutboxRelay {
        store: p.env.store.clone(),
        queue: p.queue.clone(),
        grace: Duration::ZERO,
    };
    let run_at = |at| muchaw_local::identity::as_function("OutboxRelayFunction", relay.run_at(at));

    // When the relay runs, with its own rights, a second before the grace period ends
    let almost = run_at(grace_ends - chrono::Duration::seconds(1))
        .await
        .unwrap();
    // Then the old secret is still kept
    assert_eq!(almost.secrets_forgotten, 0);
    assert!(p.env.table_snapshot().await.join("\n").contains(&old));

    // When it runs as the grace period ends
    let ended = run_at(grace_ends).await.unwrap();
    // Then the old secret is nowhere in the table, nor its index entry; the new one is kept
    assert_eq!(ended.secrets_forgotten, 1);
    let table = p.env.table_snapshot().await.join("\n");
    assert!(
        !table.contains(&old),
        "the rotated-out secret is still at rest"
    );
    assert!(!table.contains("previousSecret"), "{table}");
    assert!(!table.contains("WEBHOOKSECRETGRACE"), "{table}");
    assert!(table.contains(&new));
    // and a test event is signed by the new secret alone
    let tested = call(
        &p,
        "POST",
        &format!("/api/webhooks/{endpoint}/test"),
        "",
        &key,
        None,
    )
    .await;
    assert_eq!(tested.status, 200, "{}", tested.body);
    let received = receiver.received();
    let signature = received[0].0["webhook-signature"].to_str().unwrap();
    assert_eq!(signature.split(' ').count(), 1);
    assert_eq!(verified_by_python(&new, &received), [true]);
    assert_eq!(verified_by_python(&old, &received), [false]);
}

#[tokio::test]
async fn a_disabled_endpoint_gets_nothing_and_the_numbers_history_and_event_are_readable() {
    // Given two endpoints, one disabled
    let p = ProvisioningEnv::new().await;
    let (account, key) = p.env.account_with_key("disabled").await;
    let disabled = Receiver::start(200).await;
    let enabled = Receiver::start(200).await;
    let (off, _) = endpoint(&p, &key, &disabled.url).await;
    endpoint(&p, &key, &enabled.url).await;
    let patched = call(
        &p,
        "PATCH",
        &format!("/api/webhooks/{off}"),
        "",
        &key,
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(patched.body["data"]["enabled"], false);

    // When a number is activated and its event fanned out
    p.start();
    let number = activated(&p, &account).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while enabled.received().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "never delivered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Then the disabled endpoint got nothing, and has nothing in its log
    assert!(disabled.received().is_empty());
    let log = call(
        &p,
        "GET",
        &format!("/api/webhooks/{off}/deliveries"),
        "",
        &key,
        None,
    )
    .await;
    assert_eq!(log.body["data"], json!([]));
    // and the number's history shows the activation, read from DynamoDB
    let history = call(
        &p,
        "GET",
        &format!("/api/numbers/{}/events", number.id),
        "",
        &key,
        None,
    )
    .await;
    assert_eq!(history.status, 200, "{}", history.body);
    let entry = &history.body["data"][0];
    assert_eq!(entry["type"], "number.activated");
    assert!(entry["changes"].as_array().unwrap().iter().any(|c| {
        c["field"] == "status" && c["previous"] == "PENDING" && c["current"] == "ACTIVE"
    }));
    // and the event reads as the enabled endpoint received it
    let event = call(
        &p,
        "GET",
        &format!("/api/events/{}", entry["id"].as_str().unwrap()),
        "",
        &key,
        None,
    )
    .await;
    let received: Value = serde_json::from_str(&enabled.received()[0].1).unwrap();
    assert_eq!(event.body["data"], received);
}

#[tokio::test]
async fn a_patch_changes_url_events_and_enabled_together_and_a_second_read_shows_them() {
    // Given an endpoint on moto
    let p = ProvisioningEnv::new().await;
    let (_, key) = p.env.account_with_key("patch-all").await;
    let first = Receiver::start(200).await;
    let second = Receiver::start(200).await;
    let (id, _) = endpoint(&p, &key, &first.url).await;

    // When url, events and enabled change in one PATCH (`url` is a DynamoDB reserved word)
    let patched = call(
        &p,
        "PATCH",
        &format!("/api/webhooks/{id}"),
        "",
        &key,
        Some(json!({"url": second.url, "events": ["number.banned"], "enabled": false})),
    )
    .await;

    // Then the answer and a later read show all three
    assert_eq!(patched.status, 200, "{}", patched.body);
    let read = listed(&p, &key, &id).await;
    for view in [&patched.body["data"], &read] {
        assert_eq!(view["url"], second.url.as_str(), "{view}");
        assert_eq!(view["events"], json!(["number.banned"]));
        assert_eq!(view["enabled"], false);
        assert!(view.get("secret").is_none());
    }
}

#[tokio::test]
async fn a_patch_body_that_is_not_an_object_or_has_a_null_flag_is_refused_and_changes_nothing() {
    // Given an endpoint subscribed to one event
    let p = ProvisioningEnv::new().await;
    let (_, key) = p.env.account_with_key("patch-bad").await;
    let receiver = Receiver::start(200).await;
    let (id, _) = endpoint(&p, &key, &receiver.url).await;
    let before = listed(&p, &key, &id).await;

    for body in [
        json!([null, null]),
        json!({"enabled": null}),
        json!({"url": null}),
        json!("enabled"),
    ] {
        // When the PATCH body is an array, a string, or gives a non-nullable field as null
        let answer = call(
            &p,
            "PATCH",
            &format!("/api/webhooks/{id}"),
            "",
            &key,
            Some(body.clone()),
        )
        .await;

        // Then it is a 400 in the envelope and the endpoint is as it was
        assert_eq!(answer.status, 400, "{body}: {}", answer.body);
        assert_eq!(answer.body["error"]["code"], "invalid_request");
        assert_eq!(listed(&p, &key, &id).await, before, "{body}");
    }
}

/// The idempotency record a key holds, as DynamoDB keeps it.
async fn kept_answer(p: &ProvisioningEnv, account: &AccountId, idempotency_key: &str) -> String {
    use muchaw_shared::ports::{Claim, IdempotencyStore};
    let now = chrono::Utc::now().timestamp();
    let claim = p
        .env
        .store
        .claim(account, idempotency_key, "", now, now + 60, now + 86_400)
        .await
        .unwrap();
    let Claim::Held(record) = claim else {
        panic!("the key holds no record");
    };
    String::from_utf8(record.response.expect("a kept answer").body).unwrap()
}

async fn post_with_key(
    p: &ProvisioningEnv,
    path: &str,
    key: &str,
    idempotency_key: &str,
    body: Value,
) -> ApiResponse {
    let mut event = http_event("POST", path, "", Some(key), Some(&body.to_string()));
    event["headers"]["idempotency-key"] = json!(idempotency_key);
    p.invoke(event).await
}

#[tokio::test]
async fn a_replayed_endpoint_creation_shows_its_secret_though_the_key_keeps_none() {
    // Given an endpoint created with an idempotency key
    let p = ProvisioningEnv::new().await;
    let (account, key) = p.env.account_with_key("idem-secret").await;
    let receiver = Receiver::start(200).await;
    let body = json!({ "url": receiver.url });
    let first = post_with_key(&p, "/api/webhooks", &key, "hook-1", body.clone()).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let secret = first.body["data"]["secret"].as_str().unwrap().to_string();

    // When the request is retried with the same key
    let again = post_with_key(&p, "/api/webhooks", &key, "hook-1", body).await;

    // Then the first answer comes back, secret included, and nothing more was created
    assert_eq!(again.status, 201);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.body, first.body);
    let listed = call(&p, "GET", "/api/webhooks", "", &key, None).await;
    assert_eq!(listed.body["data"].as_array().unwrap().len(), 1);
    // and the key's item in DynamoDB holds the answer without the secret
    let kept = kept_answer(&p, &account, "hook-1").await;
    assert!(kept.contains(first.body["data"]["id"].as_str().unwrap()));
    assert!(!kept.contains(&secret), "the secret is kept with the key");
}

#[tokio::test]
async fn a_replayed_rotation_shows_the_new_secret_though_the_key_keeps_none() {
    // Given a rotation made with an idempotency key
    let p = ProvisioningEnv::new().await;
    let (account, key) = p.env.account_with_key("idem-rotate").await;
    let receiver = Receiver::start(200).await;
    let (endpoint, _) = endpoint(&p, &key, &receiver.url).await;
    let path = format!("/api/webhooks/{endpoint}/rotate-secret");
    let rotated = post_with_key(&p, &path, &key, "rotate-1", json!({})).await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let new = rotated.body["data"]["secret"].as_str().unwrap().to_string();

    // When it is retried with the same key
    let again = post_with_key(&p, &path, &key, "rotate-1", json!({})).await;

    // Then the same new secret is shown (not rotated a second time), and the key keeps none
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.body["data"]["secret"], new.as_str());
    assert!(!kept_answer(&p, &account, "rotate-1").await.contains(&new));
}

#[tokio::test]
async fn a_replayed_creation_of_an_endpoint_deleted_since_is_a_404() {
    // Given an endpoint created with a key, then deleted
    let p = ProvisioningEnv::new().await;
    let (_, key) = p.env.account_with_key("idem-deleted").await;
    let receiver = Receiver::start(200).await;
    let body = json!({ "url": receiver.url });
    let first = post_with_key(&p, "/api/webhooks", &key, "hook-2", body.clone()).await;
    let id = first.body["data"]["id"].as_str().unwrap().to_string();
    let deleted = call(&p, "DELETE", &format!("/api/webhooks/{id}"), "", &key, None).await;
    assert_eq!(deleted.status, 204);

    // When the creation is retried with the same key
    let again = post_with_key(&p, "/api/webhooks", &key, "hook-2", body).await;

    // Then it is a 404 in the envelope, and no endpoint is made again
    assert_eq!(again.status, 404, "{}", again.body);
    assert_eq!(again.body["error"]["code"], "not_found");
    let listed = call(&p, "GET", "/api/webhooks", "", &key, None).await;
    assert!(listed.body["data"].as_array().unwrap().is_empty());
}
