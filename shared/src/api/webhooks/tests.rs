//! Operating webhooks and reading histories through the real router, over the in-memory
//! adapters, with a receiver on loopback.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use aws_lambda_events::event::sqs::SqsEvent;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, Request};
use axum::routing::post;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::adapters::memory::{MemoryQueue, MemoryStore};
use crate::api;
use crate::domain::lifecycle::Command;
use crate::domain::{AccountId, EventType, Number, time};
use crate::ports::{Queue, WebhookEndpoints};
use crate::webhooks::delivery::{Deliverer, DeliveryMessage, Dispatcher};
use crate::webhooks::sender::{Sender, http_client};
use crate::webhooks::url_policy::UrlPolicy;
use crate::webhooks::{DISABLE_AFTER_FAILING_DAYS, WebhookEndpoint};

const KEY: &str = "mk_test_owner";
const OTHER_KEY: &str = "mk_test_other";
const POLICY: UrlPolicy = UrlPolicy {
    allow_private: true,
};

#[derive(Clone, Debug)]
struct Received {
    headers: HeaderMap,
    body: String,
}

/// A webhook receiver answering each request with the next status of its script (the last
/// one from then on).
#[derive(Clone)]
struct Receiver {
    url: String,
    script: Arc<Mutex<Vec<u16>>>,
    received: Arc<Mutex<Vec<Received>>>,
}

async fn receive(AxumState(r): AxumState<Receiver>, headers: HeaderMap, body: Bytes) -> u16 {
    r.received.lock().unwrap().push(Received {
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let mut script = r.script.lock().unwrap();
    if script.len() > 1 {
        script.remove(0)
    } else {
        script[0]
    }
}

impl Receiver {
    async fn start(script: &[u16]) -> Receiver {
        let receiver = Receiver {
            url: String::new(),
            script: Arc::new(Mutex::new(script.to_vec())),
            received: Arc::default(),
        };
        let app = Router::new()
            .route(
                "/hooks",
                post(|s, h, b| async move {
                    axum::http::StatusCode::from_u16(receive(s, h, b).await).unwrap()
                }),
            )
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            url: format!("http://{addr}/hooks"),
            ..receiver
        }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

struct World {
    store: MemoryStore,
    queue: MemoryQueue,
    owner: AccountId,
}

impl World {
    fn new() -> World {
        let store = MemoryStore::default();
        let owner = AccountId::from("acc_owner".to_string());
        let other = AccountId::from("acc_other".to_string());
        store.add_key(KEY, &owner);
        store.add_key(OTHER_KEY, &other);
        World {
            store,
            queue: MemoryQueue::default(),
            owner,
        }
    }

    fn sender() -> Sender {
        Sender::new(POLICY, std::time::Duration::from_secs(2)).unwrap()
    }

    fn router(&self) -> Router {
        let routes = api::numbers_routes(self.store.clone(), self.queue.clone())
            .merge(api::webhook_routes(self.store.clone(), World::sender()));
        api::finish(routes, self.store.clone(), api::ApiLimits::UNLIMITED)
    }

    async fn call(&self, method: &str, uri: &str, key: &str, body: Option<Value>) -> (u16, Value) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .body(body.map_or(Body::empty(), |b| Body::from(b.to_string())))
            .unwrap();
        let response = self.router().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn endpoint(&self, url: &str) -> (String, String) {
        let (status, body) = self
            .call("POST", "/api/webhooks", KEY, Some(json!({ "url": url })))
            .await;
        assert_eq!(status, 201, "{body}");
        (
            body["data"]["id"].as_str().unwrap().to_string(),
            body["data"]["secret"].as_str().unwrap().to_string(),
        )
    }

    fn deliverer(&self) -> Deliverer<MemoryStore, MemoryQueue> {
        Deliverer {
            store: self.store.clone(),
            queue: self.queue.clone(),
            http: http_client(std::time::Duration::from_secs(2), POLICY.resolver()).unwrap(),
            policy: POLICY,
            // Two retries: the third failure is the last.
            retry_schedule: vec![5, 60],
        }
    }

    /// The deliverer handling `event` for `endpoint` on its `receive_count`-th receive.
    async fn deliver(
        &self,
        event: &crate::domain::EventEnvelope,
        endpoint: &str,
        receive_count: u32,
    ) {
        let message = DeliveryMessage {
            v: crate::domain::messages::MESSAGE_VERSION,
            event_id: event.id.clone(),
            event_type: event.event_type,
            account_id: event.account_id.clone(),
            endpoint_id: endpoint.to_string(),
            body: event.customer_body().to_string(),
        };
        let sqs: SqsEvent = serde_json::from_value(json!({"Records": [{
            "messageId": "m1", "receiptHandle": "r1",
            "body": serde_json::to_string(&message).unwrap(),
            "attributes": {"ApproximateReceiveCount": receive_count.to_string()},
            "messageAttributes": {}
        }]}))
        .unwrap();
        self.deliverer().handle_deliveries(sqs).await;
    }

    /// A pending number of the owner taken through `commands`; its events, oldest first.
    async fn number_through(&self, commands: Vec<Command>) -> Number {
        let mut number = Number::new_pending(
            self.owner.clone(),
            "111".into(),
            format!("222{}", crate::domain::NumberId::generate()),
            time::now(),
        );
        self.store.insert_number(number.clone());
        for command in commands {
            // Events of the same millisecond have no order between them; these are a story.
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            number = crate::lifecycle::apply(&self.store, &self.queue, &number, command)
                .await
                .unwrap()
                .number()
                .clone();
        }
        number
    }

    fn event(&self, event_type: EventType) -> crate::domain::EventEnvelope {
        self.store
            .events()
            .into_iter()
            .map(|(e, _)| e)
            .find(|e| e.event_type == event_type)
            .unwrap()
    }
}

fn header<'a>(received: &'a Received, name: &str) -> &'a str {
    received
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn verifies(secret: &str, received: &Received) -> bool {
    standardwebhooks::Webhook::new(secret)
        .unwrap()
        .verify(received.body.as_bytes(), &received.headers)
        .is_ok()
}

// ---- History ------------------------------------------------------------------------------

#[tokio::test]
async fn a_numbers_history_lists_its_changes_newest_first_a_page_at_a_time() {
    // Given a number activated, then banned
    let world = World::new();
    let number = world
        .number_through(vec![Command::Activate, Command::Ban])
        .await;
    let path = format!("/api/numbers/{}/events", number.id);

    // When its history is read one entry a page
    let (status, first) = world
        .call("GET", &format!("{path}?limit=1"), KEY, None)
        .await;
    assert_eq!(status, 200, "{first}");

    // Then the ban comes first, with the status before and after
    let entry = &first["data"][0];
    assert_eq!(entry["type"], "number.banned");
    let status_change = entry["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["field"] == "status")
        .unwrap();
    assert_eq!(status_change["previous"], "ACTIVE");
    assert_eq!(status_change["current"], "BANNED");
    // and the next page, from its cursor, holds the activation and ends the list
    let cursor = first["pagination"]["nextCursor"].as_str().unwrap();
    let (_, second) = world
        .call("GET", &format!("{path}?limit=1&cursor={cursor}"), KEY, None)
        .await;
    assert_eq!(second["data"][0]["type"], "number.activated");
    assert_eq!(second["pagination"]["nextCursor"], Value::Null);
}

#[tokio::test]
async fn a_failure_in_the_history_carries_metas_code_and_text() {
    let world = World::new();
    let reason = crate::domain::FailureReason {
        step: "REGISTER_NUMBER".into(),
        code: "133005".into(),
        message: "Two step verification PIN Mismatch".into(),
        user_message: Some("Reset the PIN in WhatsApp Manager.".into()),
        ..Default::default()
    };
    let number = world.number_through(vec![Command::Fail(reason)]).await;
    let (_, history) = world
        .call(
            "GET",
            &format!("/api/numbers/{}/events", number.id),
            KEY,
            None,
        )
        .await;
    let entry = &history["data"][0];
    assert_eq!(entry["type"], "number.failed");
    assert_eq!(entry["reason"]["code"], "133005");
    assert_eq!(
        entry["reason"]["userMessage"],
        "Reset the PIN in WhatsApp Manager."
    );
}

#[tokio::test]
async fn another_accounts_number_unknown_ids_and_bad_cursors_get_the_error_envelope() {
    let world = World::new();
    let number = world.number_through(vec![Command::Activate]).await;
    let path = format!("/api/numbers/{}/events", number.id);
    let (status, body) = world.call("GET", &path, OTHER_KEY, None).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("not_found"))
    );
    let (status, _) = world
        .call("GET", "/api/numbers/nosuchnumber/events", KEY, None)
        .await;
    assert_eq!(status, 404);
    for query in ["cursor=nope", "cursor=1.lnk_a", "limit=0"] {
        let (status, body) = world
            .call("GET", &format!("{path}?{query}"), KEY, None)
            .await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(body["error"]["code"], "invalid_request");
    }
}

#[tokio::test]
async fn an_event_reads_as_it_was_sent_and_only_by_its_account() {
    let world = World::new();
    world.number_through(vec![Command::Activate]).await;
    let event = world.event(EventType::NumberActivated);
    let path = format!("/api/events/{}", event.id);
    let (status, body) = world.call("GET", &path, KEY, None).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"], event.customer_body());
    assert!(body["data"].get("changes").is_none());
    let (status, _) = world.call("GET", &path, OTHER_KEY, None).await;
    assert_eq!(status, 404);
    let (status, _) = world.call("GET", "/api/events/../x", KEY, None).await;
    assert_eq!(status, 404);
}

// ---- Delivery log and resend ----------------------------------------------------------------

#[tokio::test]
async fn each_attempt_joins_the_delivery_log_with_its_status_and_the_next_retry() {
    // Given an endpoint that fails once, then accepts
    let world = World::new();
    let receiver = Receiver::start(&[500, 200]).await;
    let (endpoint, _) = world.endpoint(&receiver.url).await;
    world.number_through(vec![Command::Activate]).await;
    let event = world.event(EventType::NumberActivated);
    let path = format!("/api/webhooks/{endpoint}/deliveries");

    // When the first attempt fails
    world.deliver(&event, &endpoint, 1).await;
    let (_, log) = world.call("GET", &path, KEY, None).await;

    // Then the delivery is pending, with the 500 and when it is tried next
    let delivery = &log["data"][0];
    assert_eq!(delivery["eventId"], event.id.as_str());
    assert_eq!(delivery["status"], "pending");
    assert_eq!(delivery["attempts"][0]["status"], 500);
    assert!(delivery["nextRetryAt"].is_string());

    // When the retry is accepted
    world.deliver(&event, &endpoint, 2).await;
    let (_, log) = world.call("GET", &path, KEY, None).await;

    // Then it succeeded after two attempts, with nothing more to try
    let delivery = &log["data"][0];
    assert_eq!(delivery["status"], "succeeded");
    assert_eq!(delivery["attempts"].as_array().unwrap().len(), 2);
    assert_eq!(delivery["attempts"][1]["status"], 200);
    assert_eq!(delivery["nextRetryAt"], Value::Null);
    // and a duplicate of the message sends nothing again
    world.deliver(&event, &endpoint, 3).await;
    assert_eq!(receiver.received().len(), 2);
}

#[tokio::test]
async fn a_network_error_is_logged_as_an_attempt_without_a_status() {
    let world = World::new();
    // Nothing listens on port 9 of loopback.
    let (endpoint, _) = world.endpoint("http://127.0.0.1:9/hooks").await;
    world.number_through(vec![Command::Activate]).await;
    let event = world.event(EventType::NumberActivated);
    world.deliver(&event, &endpoint, 1).await;
    let (_, log) = world
        .call(
            "GET",
            &format!("/api/webhooks/{endpoint}/deliveries"),
            KEY,
            None,
        )
        .await;
    let attempt = &log["data"][0]["attempts"][0];
    assert_eq!(attempt["status"], Value::Null);
    assert!(
        attempt["error"].as_str().unwrap().contains("unreachable"),
        "{attempt}"
    );
}

#[tokio::test]
async fn the_log_filters_by_status_and_pages_by_cursor() {
    let world = World::new();
    let receiver = Receiver::start(&[200]).await;
    let (endpoint, _) = world.endpoint(&receiver.url).await;
    world
        .number_through(vec![Command::Activate, Command::Ban, Command::Reinstate])
        .await;
    for (event, _) in world.store.events() {
        world.deliver(&event, &endpoint, 1).await;
    }
    let path = format!("/api/webhooks/{endpoint}/deliveries");
    let (_, page) = world
        .call("GET", &format!("{path}?limit=2"), KEY, None)
        .await;
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    assert_eq!(page["data"][0]["eventType"], "number.reinstated");
    let cursor = page["pagination"]["nextCursor"].as_str().unwrap();
    let (_, rest) = world
        .call("GET", &format!("{path}?limit=2&cursor={cursor}"), KEY, None)
        .await;
    assert_eq!(rest["data"][0]["eventType"], "number.activated");
    assert_eq!(rest["pagination"]["nextCursor"], Value::Null);
    let (_, failed) = world
        .call("GET", &format!("{path}?status=failed"), KEY, None)
        .await;
    assert_eq!(failed["data"], json!([]));
    let (status, body) = world
        .call("GET", &format!("{path}?status=lost"), KEY, None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("invalid_request"))
    );
    let (status, _) = world.call("GET", &path, OTHER_KEY, None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_delivery_that_ran_out_of_retries_is_failed_and_a_resend_delivers_it_with_the_same_id() {
    // Given an endpoint failing every attempt until the retries run out
    let world = World::new();
    let receiver = Receiver::start(&[503, 503, 503, 200]).await;
    let (endpoint, secret) = world.endpoint(&receiver.url).await;
    world.number_through(vec![Command::Activate]).await;
    let event = world.event(EventType::NumberActivated);
    for receive in 1..=3 {
        world.deliver(&event, &endpoint, receive).await;
    }
    let (_, log) = world
        .call(
            "GET",
            &format!("/api/webhooks/{endpoint}/deliveries?status=failed"),
            KEY,
            None,
        )
        .await;
    let delivery = &log["data"][0];
    assert_eq!(delivery["status"], "failed");
    assert_eq!(delivery["nextRetryAt"], Value::Null);
    let id = delivery["id"].as_str().unwrap();

    // When it is resent
    let (status, resent) = world
        .call(
            "POST",
            &format!("/api/webhooks/{endpoint}/deliveries/{id}/resend"),
            KEY,
            None,
        )
        .await;

    // Then the endpoint got the same body and webhook-id, signed, and the delivery succeeded
    assert_eq!(status, 200, "{resent}");
    assert_eq!(resent["data"]["status"], "succeeded");
    assert_eq!(resent["data"]["attempts"].as_array().unwrap().len(), 4);
    let received = receiver.received();
    let (first, last) = (&received[0], &received[3]);
    assert_eq!(header(last, "webhook-id"), event.id);
    assert_eq!(last.body, first.body);
    assert!(verifies(&secret, last));
}

#[tokio::test]
async fn a_resend_of_an_unknown_or_foreign_delivery_is_not_found_and_changes_nothing() {
    let world = World::new();
    let receiver = Receiver::start(&[200]).await;
    let (endpoint, _) = world.endpoint(&receiver.url).await;
    for uri in [
        format!("/api/webhooks/{endpoint}/deliveries/dlv_1_nosuch/resend"),
        format!("/api/webhooks/{endpoint}/deliveries/garbage/resend"),
        "/api/webhooks/whk_nosuch/deliveries/dlv_1_a/resend".to_string(),
    ] {
        let (status, body) = world.call("POST", &uri, KEY, None).await;
        assert_eq!(
            (status, body["error"]["code"].clone()),
            (404, json!("not_found")),
            "{uri}"
        );
    }
    world.number_through(vec![Command::Activate]).await;
    let event = world.event(EventType::NumberActivated);
    world.deliver(&event, &endpoint, 1).await;
    let id = crate::domain::history::EventPosition::of(&event).delivery_id();
    let uri = format!("/api/webhooks/{endpoint}/deliveries/{id}/resend");
    let (status, _) = world.call("POST", &uri, OTHER_KEY, None).await;
    assert_eq!(status, 404);
    assert_eq!(receiver.received().len(), 1);
}

// ---- Test events --------------------------------------------------------------------------

#[tokio::test]
async fn a_test_event_is_signed_and_answers_with_the_endpoints_status_and_duration() {
    let world = World::new();
    let receiver = Receiver::start(&[204]).await;
    let (endpoint, secret) = world.endpoint(&receiver.url).await;
    let (status, body) = world
        .call("POST", &format!("/api/webhooks/{endpoint}/test"), KEY, None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["status"], 204);
    assert_eq!(body["data"]["succeeded"], true);
    assert!(body["data"]["durationMs"].is_u64());
    let received = &receiver.received()[0];
    assert!(verifies(&secret, received));
    let sent: Value = serde_json::from_str(&received.body).unwrap();
    assert_eq!(sent["type"], "webhook.test");
    assert_eq!(header(received, "webhook-id"), body["data"]["eventId"]);
    let (status, _) = world
        .call(
            "POST",
            &format!("/api/webhooks/{endpoint}/test"),
            OTHER_KEY,
            None,
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test]
async fn a_test_event_to_a_dead_endpoint_answers_with_the_error() {
    let world = World::new();
    let (endpoint, _) = world.endpoint("http://127.0.0.1:9/hooks").await;
    let (status, body) = world
        .call("POST", &format!("/api/webhooks/{endpoint}/test"), KEY, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["succeeded"], false);
    assert_eq!(body["data"]["status"], Value::Null);
    assert!(body["data"]["error"].is_string());
}

// ---- Secret rotation, changes, disabling ---------------------------------------------------

#[tokio::test]
async fn after_a_rotation_deliveries_carry_both_signatures_until_the_grace_period_ends() {
    // Given an endpoint whose secret is rotated
    let world = World::new();
    let receiver = Receiver::start(&[200]).await;
    let (endpoint, old) = world.endpoint(&receiver.url).await;
    let (status, rotated) = world
        .call(
            "POST",
            &format!("/api/webhooks/{endpoint}/rotate-secret"),
            KEY,
            None,
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["data"]["secret"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert!(rotated["data"]["previousSecretExpiresAt"].is_string());

    // When a test event is sent
    world
        .call("POST", &format!("/api/webhooks/{endpoint}/test"), KEY, None)
        .await;

    // Then its signature header holds two signatures, and each secret verifies it
    let received = &receiver.received()[0];
    assert_eq!(header(received, "webhook-signature").split(' ').count(), 2);
    assert!(verifies(&new, received));
    assert!(verifies(&old, received));
    // and the listing never shows a secret
    let (_, listed) = world.call("GET", "/api/webhooks", KEY, None).await;
    assert!(!listed.to_string().contains("whsec_"));
    // and when the grace period is over, only the new secret signs
    let stored = world
        .store
        .endpoint(&world.owner, &endpoint)
        .await
        .unwrap()
        .unwrap();
    let later = time::now() + chrono::Duration::hours(25);
    assert_eq!(stored.signing_secrets(later).len(), 1);
}

#[tokio::test]
async fn patch_changes_url_events_and_enabled_and_refuses_bad_bodies() {
    let world = World::new();
    let (endpoint, _) = world.endpoint("http://127.0.0.1:9/a").await;
    let path = format!("/api/webhooks/{endpoint}");
    let (status, changed) = world
        .call(
            "PATCH",
            &path,
            KEY,
            Some(json!({"url": "http://127.0.0.1:9/b", "events": ["number.banned"], "enabled": false})),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["data"]["url"], "http://127.0.0.1:9/b");
    assert_eq!(changed["data"]["events"], json!(["number.banned"]));
    assert_eq!(changed["data"]["enabled"], false);
    assert!(changed["data"].get("secret").is_none());
    let before = world.store.endpoint(&world.owner, &endpoint).await.unwrap();
    for bad in [
        json!({}),
        json!({"events": []}),
        json!({"events": ["webhook.test"]}),
        json!({"url": "ftp://x"}),
        json!({"secret": "mine"}),
        json!({"enabled": "yes"}),
    ] {
        let (status, body) = world.call("PATCH", &path, KEY, Some(bad.clone())).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "invalid_request");
    }
    let (status, _) = world
        .call("PATCH", &path, OTHER_KEY, Some(json!({"enabled": true})))
        .await;
    assert_eq!(status, 404);
    assert_eq!(
        world.store.endpoint(&world.owner, &endpoint).await.unwrap(),
        before
    );
    // null events: every event again
    let (_, every) = world
        .call(
            "PATCH",
            &path,
            KEY,
            Some(json!({"events": null, "enabled": true})),
        )
        .await;
    assert_eq!(
        every["data"]["events"].as_array().unwrap().len(),
        crate::webhooks::subscribable_events().count()
    );
}

#[tokio::test]
async fn an_endpoint_failing_every_delivery_for_five_days_is_disabled_and_the_others_are_told() {
    // Given two endpoints, the first failing since five days
    let world = World::new();
    let dead = Receiver::start(&[500]).await;
    let alive = Receiver::start(&[200]).await;
    let (failing, _) = world.endpoint(&dead.url).await;
    let (healthy, _) = world.endpoint(&alive.url).await;
    let since = time::now() - chrono::Duration::days(DISABLE_AFTER_FAILING_DAYS);
    world
        .store
        .note_failing(&world.owner, &failing, since)
        .await
        .unwrap();
    world.number_through(vec![Command::Activate]).await;
    let event = world.event(EventType::NumberActivated);

    // When its next delivery fails too
    world.deliver(&event, &failing, 1).await;

    // Then it is disabled
    let stored: WebhookEndpoint = world
        .store
        .endpoint(&world.owner, &failing)
        .await
        .unwrap()
        .unwrap();
    assert!(!stored.enabled);
    // and a webhook.disabled event naming it was published
    let published = world.queue.sent_to(Queue::Events);
    let disabled = published
        .iter()
        .find(|e| e["type"] == "webhook.disabled")
        .expect("webhook.disabled published");
    assert_eq!(disabled["data"]["endpoint"]["id"], failing.as_str());
    // and fanned out, it goes to the healthy endpoint only
    let envelope: crate::domain::EventEnvelope = serde_json::from_value(disabled.clone()).unwrap();
    let dispatcher = Dispatcher {
        store: world.store.clone(),
        queue: world.queue.clone(),
    };
    let sqs: SqsEvent = serde_json::from_value(json!({"Records": [{
        "messageId": "m2", "receiptHandle": "r2",
        "body": serde_json::to_string(&envelope).unwrap(),
        "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {}
    }]}))
    .unwrap();
    dispatcher.handle_events(sqs).await;
    let fanned: Vec<Value> = world
        .queue
        .sent_to(Queue::WebhookDeliveries)
        .into_iter()
        .filter(|d| d["eventType"] == "webhook.disabled")
        .collect();
    assert_eq!(fanned.len(), 1);
    assert_eq!(fanned[0]["endpointId"], healthy.as_str());
    // and re-enabling it forgets the failures
    let (_, enabled) = world
        .call(
            "PATCH",
            &format!("/api/webhooks/{failing}"),
            KEY,
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(enabled["data"]["enabled"], true);
    assert!(enabled["data"].get("failingSince").is_none());
}

#[tokio::test]
async fn an_endpoint_failing_for_less_than_five_days_stays_enabled_and_a_success_clears_it() {
    let world = World::new();
    let receiver = Receiver::start(&[500, 200]).await;
    let (endpoint, _) = world.endpoint(&receiver.url).await;
    world.number_through(vec![Command::Activate]).await;
    let event = world.event(EventType::NumberActivated);
    world.deliver(&event, &endpoint, 1).await;
    let stored = world
        .store
        .endpoint(&world.owner, &endpoint)
        .await
        .unwrap()
        .unwrap();
    assert!(stored.enabled);
    assert!(stored.failing_since.is_some());
    world.deliver(&event, &endpoint, 2).await;
    let stored = world
        .store
        .endpoint(&world.owner, &endpoint)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.failing_since, None);
    assert!(
        world
            .queue
            .sent_to(Queue::Events)
            .iter()
            .all(|e| e["type"] != "webhook.disabled")
    );
}

#[tokio::test]
async fn an_endpoint_cannot_subscribe_to_test_events() {
    let world = World::new();
    let (status, body) = world
        .call(
            "POST",
            "/api/webhooks",
            KEY,
            Some(json!({"url": "http://127.0.0.1:9/a", "events": ["webhook.test"]})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("invalid_request"))
    );
    assert!(
        world
            .store
            .endpoints(&world.owner)
            .await
            .unwrap()
            .is_empty()
    );
}
