//! Customer webhooks end to end: endpoints through the API, events fanned out and delivered by
//! the real handlers from moto's queues, each delivery verified by an independent Standard
//! Webhooks implementation (the Python `standardwebhooks` package).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use muchaw_shared::domain::lifecycle::Command;
use muchaw_shared::domain::{AccountId, Number, Status};
use muchaw_shared::lifecycle;
use muchaw_shared::outbox::OutboxRelay;
use muchaw_shared::ports::{EventHistory, MessageQueue, NumberReader, Queue};
use muchaw_tests::provisioning::ProvisioningEnv;
use muchaw_tests::{http_event, sample_number};
use serde_json::{Value, json};

/// How a test receiver answers.
#[derive(Clone, Copy, Debug)]
enum Behaviour {
    Ok,
    /// 500 for this many requests, then 200.
    FailFirst(usize),
    /// 503 until revived.
    Dead,
    /// Never answers in time.
    Hang,
}

#[derive(Clone, Debug)]
struct Received {
    headers: Vec<(String, String)>,
    body: String,
    answered: u16,
}

#[derive(Clone)]
struct Receiver {
    url: String,
    behaviour: Arc<Mutex<Behaviour>>,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(behaviour: Behaviour) -> Receiver {
        let receiver = Receiver {
            url: String::new(),
            behaviour: Arc::new(Mutex::new(behaviour)),
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

    fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn accepted(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.answered == 200)
            .collect()
    }

    async fn wait_accepted(&self, count: usize, within: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let accepted = self.accepted();
            if accepted.len() >= count || tokio::time::Instant::now() > deadline {
                return accepted;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let behaviour = *r.behaviour.lock().unwrap();
    let status = match behaviour {
        Behaviour::Ok => StatusCode::OK,
        Behaviour::Dead => StatusCode::SERVICE_UNAVAILABLE,
        Behaviour::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK
        }
        Behaviour::FailFirst(n) => {
            let seen = r.received.lock().unwrap().len();
            if seen < n {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            }
        }
    };
    r.received.lock().unwrap().push(Received {
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
        answered: status.as_u16(),
    });
    status
}

fn header<'a>(received: &'a Received, name: &str) -> &'a str {
    received
        .headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

/// Verifies deliveries with the Python `standardwebhooks` package; returns what it says.
fn verified_by_python(secret: &str, deliveries: &[Received]) -> Vec<bool> {
    let input: Vec<Value> = deliveries
        .iter()
        .map(|d| {
            json!({
                "body": d.body,
                "headers": d.headers.iter().cloned().collect::<std::collections::HashMap<_, _>>(),
            })
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

async fn create_endpoint(p: &ProvisioningEnv, key: &str, body: Value) -> (u16, Value) {
    let response = p
        .invoke(http_event(
            "POST",
            "/api/webhooks",
            "",
            Some(key),
            Some(&body.to_string()),
        ))
        .await;
    (response.status, response.body)
}

/// A PENDING number moved to ACTIVE through the lifecycle: one `number.activated` event.
async fn activate_a_number(p: &ProvisioningEnv, account: &AccountId, minutes_ago: i64) -> Number {
    let number = pending_number(p, account, minutes_ago).await;
    p.env.change_status(&number, Status::Active).await;
    number
}

async fn pending_number(p: &ProvisioningEnv, account: &AccountId, minutes_ago: i64) -> Number {
    let number = sample_number(account, Status::Pending, minutes_ago);
    p.env
        .store
        .import_numbers(std::slice::from_ref(&number))
        .await
        .unwrap();
    number
}

/// The number as stored now.
async fn stored(p: &ProvisioningEnv, number: &Number) -> Number {
    p.env
        .store
        .get(&number.account_id, &number.id)
        .await
        .unwrap()
        .unwrap()
}

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_created_endpoint_shows_its_secret_once_and_lists_without_it() {
    let p = ProvisioningEnv::new().await;
    let (_, key) = p.env.account_with_key("hooks").await;
    let (status, body) = create_endpoint(
        &p,
        &key,
        json!({"url": "https://hooks.example.com/muchaw", "events": ["number.banned"]}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let created = &body["data"];
    assert!(created["id"].as_str().unwrap().starts_with("whk_"));
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(created["events"], json!(["number.banned"]));
    let listed = p
        .invoke(http_event("GET", "/api/webhooks", "", Some(&key), None))
        .await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body["data"][0]["id"], created["id"]);
    assert!(listed.body["data"][0].get("secret").is_none());
    assert!(!listed.body.to_string().contains("whsec_"));
}

#[tokio::test]
async fn a_deleted_endpoint_is_gone_and_another_account_cannot_delete_it() {
    let p = ProvisioningEnv::new().await;
    let (_, key) = p.env.account_with_key("owner").await;
    let (_, other_key) = p.env.account_with_key("other").await;
    let (_, body) = create_endpoint(&p, &key, json!({"url": "https://hooks.example.com/a"})).await;
    let path = format!("/api/webhooks/{}", body["data"]["id"].as_str().unwrap());
    let theirs = p
        .invoke(http_event("DELETE", &path, "", Some(&other_key), None))
        .await;
    assert_eq!(theirs.status, 404);
    let their_list = p
        .invoke(http_event(
            "GET",
            "/api/webhooks",
            "",
            Some(&other_key),
            None,
        ))
        .await;
    assert_eq!(their_list.body["data"], json!([]));
    let deleted = p
        .invoke(http_event("DELETE", &path, "", Some(&key), None))
        .await;
    assert_eq!(deleted.status, 204);
    let again = p
        .invoke(http_event("DELETE", &path, "", Some(&key), None))
        .await;
    assert_eq!(again.status, 404);
    assert_eq!(again.body["error"]["code"], "not_found");
}

#[tokio::test]
async fn unsafe_or_invalid_endpoints_are_refused_with_400_and_nothing_is_stored() {
    let p = ProvisioningEnv::new().await;
    p.strict_webhook_urls();
    let (_, key) = p.env.account_with_key("ssrf").await;
    let refused = [
        json!({"url": "http://hooks.example.com/x"}),
        json!({"url": "https://127.0.0.1/x"}),
        json!({"url": "https://127.1.2.3:8443/x"}),
        json!({"url": "https://10.0.0.8/x"}),
        json!({"url": "https://172.20.1.1/x"}),
        json!({"url": "https://192.168.0.10/x"}),
        json!({"url": "https://169.254.169.254/latest/meta-data/"}),
        json!({"url": "https://[::1]/x"}),
        json!({"url": "https://[fd00:ec2::254]/x"}),
        json!({"url": "https://[::ffff:10.0.0.1]/x"}),
        json!({"url": "https://0.0.0.0/x"}),
        json!({"url": "https://localhost/x"}),
        json!({"url": "https://localhost.:8443/x"}),
        json!({"url": "https://user:secret@hooks.example.com/x"}),
        json!({"url": "file:///etc/passwd"}),
        json!({"url": "not a url"}),
        json!({"url": 42}),
        json!({}),
        json!({"url": "https://hooks.example.com/x", "events": []}),
        json!({"url": "https://hooks.example.com/x", "events": ["number.exploded"]}),
        json!({"url": "https://hooks.example.com/x", "event": ["number.banned"]}),
    ];
    for body in refused {
        let (status, response) = create_endpoint(&p, &key, body.clone()).await;
        assert_eq!(status, 400, "{body} -> {response}");
        assert_eq!(response["error"]["code"], "invalid_request", "{body}");
    }
    let listed = p
        .invoke(http_event("GET", "/api/webhooks", "", Some(&key), None))
        .await;
    assert_eq!(listed.body["data"], json!([]));
}

#[tokio::test]
async fn an_event_is_delivered_signed_and_verifies_with_another_implementation() {
    let p = ProvisioningEnv::new().await;
    let (account, key) = p.env.account_with_key("verified").await;
    let receiver = Receiver::start(Behaviour::Ok).await;
    let (_, body) = create_endpoint(&p, &key, json!({"url": receiver.url})).await;
    let secret = body["data"]["secret"].as_str().unwrap().to_string();
    p.start();
    let number = activate_a_number(&p, &account, 1).await;
    let delivered = receiver.wait_accepted(1, WAIT).await;
    assert_eq!(delivered.len(), 1);
    assert_eq!(verified_by_python(&secret, &delivered), [true]);
    assert_eq!(
        verified_by_python("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", &delivered),
        [false]
    );
    let event: Value = serde_json::from_str(&delivered[0].body).unwrap();
    assert_eq!(event["type"], "number.activated");
    assert_eq!(event["data"]["id"], number.id.as_str());
    assert_eq!(event["data"]["status"], "ACTIVE");
    assert_eq!(
        header(&delivered[0], "webhook-id"),
        event["id"].as_str().unwrap()
    );
}

#[tokio::test]
async fn an_endpoint_gets_only_the_events_it_subscribed_to() {
    let p = ProvisioningEnv::new().await;
    let (account, key) = p.env.account_with_key("filtered").await;
    let banned_only = Receiver::start(Behaviour::Ok).await;
    let everything = Receiver::start(Behaviour::Ok).await;
    create_endpoint(
        &p,
        &key,
        json!({"url": banned_only.url, "events": ["number.banned"]}),
    )
    .await;
    create_endpoint(&p, &key, json!({"url": everything.url})).await;
    p.start();
    let number = activate_a_number(&p, &account, 1).await;
    let active = stored(&p, &number).await;
    p.env.change_status(&active, Status::Banned).await;
    let all = everything.wait_accepted(2, WAIT).await;
    let banned = banned_only.wait_accepted(1, WAIT).await;
    assert_eq!(all.len(), 2);
    assert_eq!(banned.len(), 1);
    let event: Value = serde_json::from_str(&banned[0].body).unwrap();
    assert_eq!(event["type"], "number.banned");
}

#[tokio::test]
async fn an_event_whose_publish_failed_after_its_commit_is_relayed_and_delivered_once_under_its_id()
{
    // Given an endpoint, and an activation committed whose send to the events queue failed
    let p = ProvisioningEnv::new().await;
    let (account, key) = p.env.account_with_key("relayed").await;
    let receiver = Receiver::start(Behaviour::Ok).await;
    create_endpoint(&p, &key, json!({"url": receiver.url})).await;
    p.start();
    let number = pending_number(&p, &account, 1).await;
    p.queue.fail_sends(Queue::Events, 1);
    let lost = lifecycle::apply(&p.env.store, &p.queue, &number, Command::Activate).await;
    assert!(lost.is_err(), "the publish fails after the commit");
    let active = stored(&p, &number).await;
    assert_eq!(active.status, Status::Active);
    let event_id = active.last_event_id.clone().expect("the outbox event");
    let relay = OutboxRelay {
        store: p.env.store.clone(),
        queue: p.queue.clone(),
        grace: Duration::ZERO,
    };
    // When the relay runs past the grace period
    tokio::time::sleep(Duration::from_millis(5)).await;
    let summary = relay.run().await.unwrap();
    // Then it publishes the event, which reaches the endpoint under its own id
    assert_eq!((summary.found, summary.published), (1, 1), "{summary:?}");
    let delivered = receiver.wait_accepted(1, WAIT).await;
    assert_eq!(delivered.len(), 1);
    assert_eq!(header(&delivered[0], "webhook-id"), event_id);
    let body: Value = serde_json::from_str(&delivered[0].body).unwrap();
    assert_eq!(body["type"], "number.activated");
    // And the next run finds nothing; the same event published again (the writer's own late
    // send) is not delivered a second time
    assert_eq!(relay.run().await.unwrap().found, 0);
    let envelope = p
        .env
        .store
        .event(&account, &event_id)
        .await
        .unwrap()
        .unwrap();
    p.queue.send(&envelope).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test]
async fn a_receiver_failing_three_times_gets_the_event_on_the_fourth_try_with_the_same_id() {
    let p = ProvisioningEnv::new().await;
    let (account, key) = p.env.account_with_key("flaky").await;
    let receiver = Receiver::start(Behaviour::FailFirst(3)).await;
    let (_, body) = create_endpoint(&p, &key, json!({"url": receiver.url})).await;
    let secret = body["data"]["secret"].as_str().unwrap().to_string();
    p.start();
    activate_a_number(&p, &account, 1).await;
    let accepted = receiver.wait_accepted(1, WAIT).await;
    assert_eq!(accepted.len(), 1);
    let attempts = receiver.received();
    assert_eq!(
        attempts.iter().map(|a| a.answered).collect::<Vec<_>>(),
        [500, 500, 500, 200]
    );
    let ids: std::collections::BTreeSet<&str> =
        attempts.iter().map(|a| header(a, "webhook-id")).collect();
    assert_eq!(ids.len(), 1, "the same webhook-id on every try");
    assert!(verified_by_python(&secret, &attempts).iter().all(|ok| *ok));
}

#[tokio::test]
async fn a_dead_receivers_events_reach_the_dead_letter_queue_and_redrive_delivers_them() {
    let p = ProvisioningEnv::new().await;
    let (account, key) = p.env.account_with_key("dead").await;
    let receiver = Receiver::start(Behaviour::Dead).await;
    create_endpoint(&p, &key, json!({"url": receiver.url})).await;
    p.start();
    activate_a_number(&p, &account, 1).await;
    let sqs = aws_sdk_sqs::Client::new(&p.env.sdk);
    let dlq = p
        .env
        .stack
        .queue_url("WebhookDeliveriesDeadLetterQueue")
        .unwrap()
        .to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let attributes = sqs
            .get_queue_attributes()
            .queue_url(&dlq)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .unwrap();
        let waiting = attributes
            .attributes()
            .and_then(|a| {
                a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            })
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0);
        if waiting == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let tries = receiver.received().len();
    assert_eq!(tries, 8, "the first try and the seven retries");
    receiver.set(Behaviour::Ok);
    let moved = muchaw_shared::adapters::sqs::redrive(&sqs, &dlq)
        .await
        .unwrap();
    assert_eq!(moved, 1);
    let accepted = receiver.wait_accepted(1, WAIT).await;
    assert_eq!(accepted.len(), 1);
    let first_id = header(&receiver.received()[0], "webhook-id").to_string();
    assert_eq!(header(&accepted[0], "webhook-id"), first_id);
}

#[tokio::test]
async fn a_hanging_receiver_does_not_hold_up_a_healthy_one() {
    let p = ProvisioningEnv::new().await;
    let (account, key) = p.env.account_with_key("hanging").await;
    let hanging = Receiver::start(Behaviour::Hang).await;
    let healthy = Receiver::start(Behaviour::Ok).await;
    create_endpoint(&p, &key, json!({"url": hanging.url})).await;
    create_endpoint(&p, &key, json!({"url": healthy.url})).await;
    p.start();
    for i in 0..3 {
        activate_a_number(&p, &account, i).await;
    }
    let delivered = healthy.wait_accepted(3, WAIT).await;
    assert_eq!(delivered.len(), 3);
    assert!(
        hanging.accepted().is_empty(),
        "the hanging receiver never answered"
    );
}
