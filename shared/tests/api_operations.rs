//! Operating the API, over the in-memory adapters through the finished router: idempotency
//! keys, key scopes and last use, finding numbers, and the metrics every answer emits.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use muchaw_shared::adapters::memory::{MemoryQueue, MemoryStore};
use muchaw_shared::api;
use muchaw_shared::domain::api_key::{KeyScope, use_hour};
use muchaw_shared::domain::secrets::Secret;
use muchaw_shared::domain::signup_link::LinkSigner;
use muchaw_shared::domain::{AccountId, Number, Status, Step, time};
use muchaw_shared::ports::{IdempotencyStore, ProvisioningStore, Queue, SignupSessions};
use serde_json::{Value, json};
use tower::ServiceExt;

const WRITE_KEY: &str = "mk_test_write_key_for_account_a_0000000000000000";
const READ_KEY: &str = "mk_test_read_key_for_account_a_00000000000000000";
const OTHER_KEY: &str = "mk_test_write_key_for_account_b_0000000000000000";

struct Api {
    store: MemoryStore,
    queue: MemoryQueue,
    account: AccountId,
    other: AccountId,
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

impl Api {
    fn new() -> Api {
        let store = MemoryStore::default();
        let account = AccountId::from("acc_a".to_string());
        let other = AccountId::from("acc_b".to_string());
        store.add_key(WRITE_KEY, &account);
        store.add_scoped_key(READ_KEY, &account, KeyScope::Read);
        store.add_key(OTHER_KEY, &other);
        Api {
            store,
            queue: MemoryQueue::default(),
            account,
            other,
        }
    }

    fn router(&self) -> axum::Router {
        let signer = LinkSigner::new(Secret::new("test-signing-key"));
        let routes = api::numbers_routes(self.store.clone(), self.queue.clone())
            .merge(api::signup_link_routes(
                self.store.clone(),
                signer.clone(),
                "https://signup.example.com/start".into(),
            ))
            .merge(api::signup_callback_routes(
                self.store.clone(),
                self.queue.clone(),
                signer,
            ));
        api::finish(routes, self.store.clone(), api::ApiLimits::UNLIMITED)
    }

    async fn call(
        &self,
        method: &str,
        uri: &str,
        key: &str,
        idempotency_key: Option<&str>,
        body: &str,
    ) -> Answer {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {key}"));
        if let Some(idempotency_key) = idempotency_key {
            request = request.header("idempotency-key", idempotency_key);
        }
        let response = self
            .router()
            .oneshot(request.body(Body::from(body.to_string())).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    async fn links_of(&self, account: &AccountId) -> usize {
        self.store
            .links(account, 100, None)
            .await
            .unwrap()
            .links
            .len()
    }
}

fn number(account: &AccountId, waba: &str, display: Option<&str>, minutes_ago: i64) -> Number {
    let mut n = Number::new_pending(
        account.clone(),
        waba.into(),
        format!("3{minutes_ago}{}", account.as_str().len()),
        time::now() - chrono::Duration::minutes(minutes_ago),
    );
    n.status = Status::Active;
    n.display_number = display.map(str::to_string);
    n
}

// ---- Idempotency keys ----------------------------------------------------------------------

#[tokio::test]
async fn a_repeated_post_with_the_same_key_and_body_answers_the_first_answer_without_acting_again()
{
    let api = Api::new();
    let first = api
        .call(
            "POST",
            "/api/signup-links",
            WRITE_KEY,
            Some("order-1"),
            "{}",
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    let again = api
        .call(
            "POST",
            "/api/signup-links",
            WRITE_KEY,
            Some("order-1"),
            "{}",
        )
        .await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.body, first.body);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.headers["content-type"], "application/json");
    assert_eq!(api.links_of(&api.account).await, 1);
}

#[tokio::test]
async fn the_same_key_with_another_body_is_an_idempotency_conflict_that_creates_nothing() {
    let api = Api::new();
    api.call(
        "POST",
        "/api/signup-links",
        WRITE_KEY,
        Some("order-2"),
        "{}",
    )
    .await;
    let other_body = r#"{"redirectUrl": "https://example.com/back"}"#;
    let conflict = api
        .call(
            "POST",
            "/api/signup-links",
            WRITE_KEY,
            Some("order-2"),
            other_body,
        )
        .await;
    assert_eq!(conflict.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(conflict.body["error"]["code"], "idempotency_conflict");
    assert_eq!(api.links_of(&api.account).await, 1);
}

#[tokio::test]
async fn a_key_whose_request_still_runs_is_a_409_with_retry_after() {
    let api = Api::new();
    // Given a request with the key that has started and not answered yet
    let fingerprint =
        api::idempotency::fingerprint(&axum::http::Method::POST, "/api/signup-links", b"{}");
    let now = time::now().timestamp();
    api.store
        .claim(
            &api.account,
            "order-3",
            &fingerprint,
            now,
            now + 60,
            now + 86_400,
        )
        .await
        .unwrap();
    // When its retry arrives
    let retry = api
        .call(
            "POST",
            "/api/signup-links",
            WRITE_KEY,
            Some("order-3"),
            "{}",
        )
        .await;
    // Then it is told to wait, and nothing is done twice
    assert_eq!(retry.status, StatusCode::CONFLICT);
    assert_eq!(retry.body["error"]["code"], "idempotency_in_progress");
    assert_eq!(retry.headers["retry-after"], "1");
    assert_eq!(api.links_of(&api.account).await, 0);
}

#[tokio::test]
async fn a_key_held_by_a_request_that_died_is_taken_over_once_its_lease_ran_out() {
    let api = Api::new();
    let fingerprint =
        api::idempotency::fingerprint(&axum::http::Method::POST, "/api/signup-links", b"{}");
    let now = time::now().timestamp();
    api.store
        .claim(
            &api.account,
            "order-4",
            &fingerprint,
            now - 120,
            now - 60,
            now + 86_000,
        )
        .await
        .unwrap();
    let retry = api
        .call(
            "POST",
            "/api/signup-links",
            WRITE_KEY,
            Some("order-4"),
            "{}",
        )
        .await;
    assert_eq!(retry.status, StatusCode::CREATED);
    assert_eq!(api.links_of(&api.account).await, 1);
}

#[tokio::test]
async fn idempotency_keys_are_per_account() {
    let api = Api::new();
    api.call("POST", "/api/signup-links", WRITE_KEY, Some("shared"), "{}")
        .await;
    let theirs = api
        .call("POST", "/api/signup-links", OTHER_KEY, Some("shared"), "{}")
        .await;
    assert_eq!(theirs.status, StatusCode::CREATED);
    assert!(!theirs.headers.contains_key("idempotent-replayed"));
    assert_eq!(api.links_of(&api.account).await, 1);
    assert_eq!(api.links_of(&api.other).await, 1);
}

#[tokio::test]
async fn a_malformed_idempotency_key_is_a_400_that_creates_nothing() {
    let api = Api::new();
    let too_long = "k".repeat(256);
    let refused = api
        .call(
            "POST",
            "/api/signup-links",
            WRITE_KEY,
            Some(&too_long),
            "{}",
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(refused.body["error"]["code"], "invalid_request");
    assert_eq!(api.links_of(&api.account).await, 0);
    assert_eq!(api.store.idempotency_keys(&api.account), 0);
}

#[tokio::test]
async fn a_post_without_a_key_acts_every_time() {
    let api = Api::new();
    api.call("POST", "/api/signup-links", WRITE_KEY, None, "{}")
        .await;
    api.call("POST", "/api/signup-links", WRITE_KEY, None, "{}")
        .await;
    assert_eq!(api.links_of(&api.account).await, 2);
}

// ---- Key scopes and last use ---------------------------------------------------------------

#[tokio::test]
async fn a_read_key_reads() {
    let api = Api::new();
    let listed = api.call("GET", "/api/numbers", READ_KEY, None, "").await;
    assert_eq!(listed.status, StatusCode::OK);
}

#[tokio::test]
async fn a_read_key_on_a_write_route_is_forbidden_and_changes_nothing() {
    let api = Api::new();
    let mine = number(&api.account, "100", None, 1);
    api.store.insert_number(mine.clone());
    let created = api
        .call("POST", "/api/signup-links", READ_KEY, Some("read-1"), "{}")
        .await;
    assert_eq!(created.status, StatusCode::FORBIDDEN);
    assert_eq!(created.body["error"]["code"], "forbidden");
    let deleted = api
        .call(
            "DELETE",
            &format!("/api/numbers/{}", mine.id),
            READ_KEY,
            None,
            "",
        )
        .await;
    assert_eq!(deleted.status, StatusCode::FORBIDDEN);
    assert_eq!(api.links_of(&api.account).await, 0);
    assert_eq!(api.store.idempotency_keys(&api.account), 0);
    assert_eq!(
        api.store.number(&api.account, &mine.id).unwrap().status,
        Status::Active
    );
    assert!(api.queue.sent().is_empty());
}

#[tokio::test]
async fn a_read_key_cannot_finish_a_signup() {
    let api = Api::new();
    let body = r#"{"code": "AQBx", "wabaId": "100", "phoneNumberId": "200"}"#;
    let refused = api
        .call(
            "POST",
            "/api/signup/callback",
            READ_KEY,
            Some("signup-1"),
            body,
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.body["error"]["code"], "forbidden");
    assert!(api.store.all_numbers().is_empty());
    assert!(api.queue.sent().is_empty());
    assert_eq!(api.store.idempotency_keys(&api.account), 0);
}

#[tokio::test]
async fn a_keys_use_is_recorded_to_the_hour() {
    let api = Api::new();
    assert_eq!(api.store.key_last_used_hour(READ_KEY), None);
    api.call("GET", "/api/numbers", READ_KEY, None, "").await;
    assert_eq!(
        api.store.key_last_used_hour(READ_KEY),
        Some(use_hour(time::now()))
    );
}

// ---- Finding numbers -----------------------------------------------------------------------

#[tokio::test]
async fn a_number_is_found_by_its_display_number_in_e164_or_digits() {
    let api = Api::new();
    let wanted = number(&api.account, "100", Some("+1 555-010-0123"), 3);
    api.store.insert_number(wanted.clone());
    api.store
        .insert_number(number(&api.account, "100", Some("+1 555-010-0999"), 2));
    // Another account's number with the same display number stays invisible.
    api.store
        .insert_number(number(&api.other, "200", Some("+1 555-010-0123"), 1));
    for query in ["phoneNumber=%2B15550100123", "phoneNumber=15550100123"] {
        let found = api
            .call("GET", &format!("/api/numbers?{query}"), READ_KEY, None, "")
            .await;
        assert_eq!(found.status, StatusCode::OK, "{query}");
        assert_eq!(found.body["data"].as_array().unwrap().len(), 1, "{query}");
        assert_eq!(found.body["data"][0]["id"], wanted.id.as_str());
        assert_eq!(found.body["pagination"]["total"], 1);
    }
}

#[tokio::test]
async fn numbers_are_found_by_waba_with_the_status_filter_too() {
    let api = Api::new();
    let active = number(&api.account, "111", None, 3);
    let mut failed = number(&api.account, "111", None, 2);
    failed.status = Status::Failed;
    api.store.insert_number(active.clone());
    api.store.insert_number(failed.clone());
    api.store
        .insert_number(number(&api.account, "222", None, 1));
    let by_waba = api
        .call("GET", "/api/numbers?wabaId=111", READ_KEY, None, "")
        .await;
    let ids: Vec<&str> = by_waba.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [failed.id.as_str(), active.id.as_str()]);
    let active_only = api
        .call(
            "GET",
            "/api/numbers?wabaId=111&status=ACTIVE",
            READ_KEY,
            None,
            "",
        )
        .await;
    assert_eq!(active_only.body["data"][0]["id"], active.id.as_str());
    assert_eq!(active_only.body["pagination"]["total"], 1);
}

#[tokio::test]
async fn a_cursor_pages_through_every_number_once() {
    let api = Api::new();
    let mut ids = Vec::new();
    for minutes in 1..=5 {
        let n = number(&api.account, "100", None, minutes);
        ids.push(n.id.to_string());
        api.store.insert_number(n);
    }
    let mut seen = Vec::new();
    let mut uri = "/api/numbers?limit=2".to_string();
    loop {
        let page = api.call("GET", &uri, READ_KEY, None, "").await;
        assert_eq!(page.status, StatusCode::OK);
        // A page asked for by cursor has no offset; the first (by offset 0) has.
        assert_eq!(
            page.body["pagination"].get("offset").is_none(),
            uri.contains("cursor")
        );
        for n in page.body["data"].as_array().unwrap() {
            seen.push(n["id"].as_str().unwrap().to_string());
        }
        match page.body["pagination"]["nextCursor"].as_str() {
            Some(cursor) => uri = format!("/api/numbers?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ids, "newest first, each once");
}

#[tokio::test]
async fn a_malformed_cursor_or_phone_number_is_a_400() {
    let api = Api::new();
    for query in [
        "cursor=not-a-cursor",
        "cursor=1.abc&offset=1",
        "phoneNumber=call-me",
        "wabaId=x",
    ] {
        let refused = api
            .call("GET", &format!("/api/numbers?{query}"), READ_KEY, None, "")
            .await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(refused.body["error"]["code"], "invalid_request");
    }
}

// ---- Metrics -------------------------------------------------------------------------------

#[tokio::test]
async fn every_answer_emits_an_api_request_metric_by_route_template_and_status() {
    let api = Api::new();
    let (answer, lines) = muchaw_shared::metrics::capture(api.call(
        "GET",
        "/api/numbers/doesnotexist",
        READ_KEY,
        None,
        "",
    ))
    .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    let metrics: Vec<Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let request = metrics
        .iter()
        .find(|m| m.get("ApiRequests").is_some())
        .expect("an ApiRequests line");
    assert_eq!(request["Route"], "/api/numbers/{id}");
    assert_eq!(request["Method"], "GET");
    assert_eq!(request["Status"], "404");
    assert_eq!(
        request["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        json!([[], ["Route", "Method", "Status"]])
    );
}

#[tokio::test]
async fn an_activation_emits_activations_and_time_to_active_for_its_number() {
    let api = Api::new();
    let mut pending = number(&api.account, "100", None, 90);
    pending.status = Status::Pending;
    pending.provisioning_step = Some(muchaw_shared::domain::Step::ActivateNumber);
    api.store.insert_number(pending.clone());
    let (changed, lines) = muchaw_shared::metrics::capture(muchaw_shared::lifecycle::apply(
        &api.store,
        &api.queue,
        &pending,
        muchaw_shared::domain::lifecycle::Command::Activate,
    ))
    .await;
    assert_eq!(changed.unwrap().number().status, Status::Active);
    let lines: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let activation = lines
        .iter()
        .find(|l| l.get("Activations").is_some())
        .unwrap_or_else(|| panic!("no Activations line in {lines:?}"));
    assert_eq!(activation["NumberId"], pending.id.as_str());
    assert!(activation["TimeToActive"].as_f64().unwrap() >= 90.0 * 60.0);
}

// ---- A phone live in another account ---------------------------------------------------------

/// A callback's answer without what differs between any two new numbers (ids, times, phone).
fn as_any_new_number(answer: &Answer) -> (StatusCode, Value) {
    let mut body = answer.body.clone();
    if let Some(data) = body["data"].as_object_mut() {
        for varies in ["id", "phoneNumberId", "createdAt", "updatedAt"] {
            data.remove(varies);
        }
    }
    (answer.status, body)
}

fn callback_body(phone: &str) -> String {
    json!({"code": "AQBcode", "wabaId": "100", "phoneNumberId": phone}).to_string()
}

#[tokio::test]
async fn a_callback_for_a_phone_live_in_another_account_answers_as_for_a_new_phone() {
    // Given a phone live in another account, and one live nowhere
    let api = Api::new();
    let theirs = number(&api.other, "100", None, 5);
    api.store.insert_number(theirs.clone());

    // When this account's key signs up each
    let taken = api
        .call(
            "POST",
            "/api/signup/callback",
            WRITE_KEY,
            None,
            &callback_body(&theirs.phone_number_id),
        )
        .await;
    let free = api
        .call(
            "POST",
            "/api/signup/callback",
            WRITE_KEY,
            None,
            &callback_body("4999"),
        )
        .await;

    // Then both get the same answer: a new PENDING number, its exchange started
    assert_eq!(taken.status, StatusCode::ACCEPTED, "{}", taken.body);
    assert_eq!(as_any_new_number(&taken), as_any_new_number(&free));
    assert_eq!(taken.body["data"]["status"], "PENDING");
    let exchanges = api.queue.sent_to(Queue::Step(Step::ExchangeToken));
    assert_eq!(exchanges.len(), 2);
    // and the other account's number keeps the phone, untouched
    let owner = api
        .store
        .phone_owner(&theirs.phone_number_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(owner.number_id, theirs.id);
    assert_eq!(api.store.number(&api.other, &theirs.id), Some(theirs));
    // and this account's number for it holds no phone, to fail at its exchange
    let id = taken.body["data"]["id"].as_str().unwrap().to_string();
    let mine = api
        .store
        .all_numbers()
        .into_iter()
        .find(|n| n.id.as_str() == id)
        .expect("the new number");
    assert_eq!(mine.account_id, api.account);
    assert!(mine.phone_elsewhere);
}

#[tokio::test]
async fn a_link_state_for_a_phone_live_in_another_account_is_spent_as_for_a_new_phone() {
    // Given two signup links of this account, and a phone live in another account
    let api = Api::new();
    let theirs = number(&api.other, "100", None, 5);
    api.store.insert_number(theirs.clone());
    let mut states = Vec::new();
    for _ in 0..2 {
        let link = api
            .call("POST", "/api/signup-links", WRITE_KEY, None, "")
            .await;
        states.push(link.body["data"]["state"].as_str().unwrap().to_string());
    }
    let by_state = |state: &str, phone: &str| {
        let body = json!({"code": "AQBcode", "wabaId": "100", "phoneNumberId": phone,
            "state": state})
        .to_string();
        let request = Request::builder()
            .method("POST")
            .uri("/api/signup/callback")
            .body(Body::from(body))
            .unwrap();
        let router = api.router();
        async move {
            let response = router.oneshot(request).await.unwrap();
            let status = response.status();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            Answer {
                status,
                headers: axum::http::HeaderMap::new(),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            }
        }
    };

    // When one link signs up that phone and the other a phone live nowhere
    let taken = by_state(&states[0], &theirs.phone_number_id).await;
    let free = by_state(&states[1], "4999").await;

    // Then both answers are the same, and each link is spent: used again, each is refused alike
    assert_eq!(taken.status, StatusCode::ACCEPTED, "{}", taken.body);
    assert_eq!(as_any_new_number(&taken), as_any_new_number(&free));
    let again_taken = by_state(&states[0], "5999").await;
    let again_free = by_state(&states[1], "6999").await;
    assert_eq!(again_taken.status, StatusCode::UNAUTHORIZED);
    assert_eq!(again_taken.body, again_free.body);
}
