//! The router over the in-memory adapters: routing, authentication and scoping, fast.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use muchaw_shared::adapters::memory::{MemoryQueue, MemoryStore};
use muchaw_shared::api;
use muchaw_shared::domain::{AccountId, Number, Status, time};
use muchaw_shared::ports::Queue;
use serde_json::Value;
use tower::ServiceExt;

const KEY: &str = "mk_test_key_for_account_a_000000000000000000000";

fn setup() -> (MemoryStore, MemoryQueue, AccountId) {
    let store = MemoryStore::default();
    let account = AccountId::from("acc_a".to_string());
    store.add_key(KEY, &account);
    (store, MemoryQueue::default(), account)
}

fn number(account: &AccountId, status: Status, minutes_ago: i64) -> Number {
    let mut n = Number::new_pending(
        account.clone(),
        "1".into(),
        format!("2{minutes_ago}"),
        time::now() - chrono::Duration::minutes(minutes_ago),
    );
    n.status = status;
    n
}

async fn call(
    store: &MemoryStore,
    queue: &MemoryQueue,
    method: &str,
    uri: &str,
    key: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let response = api::router(store.clone(), queue.clone())
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_revoked_key_is_unauthorized() {
    let (store, queue, _) = setup();
    store.revoke_key(KEY);
    let (status, body) = call(&store, &queue, "GET", "/api/numbers", Some(KEY)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");
}

#[tokio::test]
async fn lists_are_newest_first() {
    let (store, queue, account) = setup();
    let old = number(&account, Status::Active, 30);
    let new = number(&account, Status::Active, 1);
    store.insert_number(old.clone());
    store.insert_number(new.clone());
    let (status, body) = call(&store, &queue, "GET", "/api/numbers", Some(KEY)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"][0]["id"], new.id.as_str());
    assert_eq!(body["data"][1]["id"], old.id.as_str());
    assert_eq!(body["pagination"]["total"], 2);
}

#[tokio::test]
async fn another_accounts_number_is_not_found_and_not_disconnected() {
    let (store, queue, _) = setup();
    let other = AccountId::from("acc_b".to_string());
    let theirs = number(&other, Status::Active, 1);
    store.insert_number(theirs.clone());
    let uri = format!("/api/numbers/{}", theirs.id);
    let (status, _) = call(&store, &queue, "DELETE", &uri, Some(KEY)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(store.all_numbers()[0].status, Status::Active);
    assert!(queue.sent().is_empty());
}

#[tokio::test]
async fn disconnecting_a_banned_number_queues_its_teardown() {
    let (store, queue, account) = setup();
    let banned = number(&account, Status::Banned, 1);
    store.insert_number(banned.clone());
    let uri = format!("/api/numbers/{}", banned.id);
    let (status, body) = call(&store, &queue, "DELETE", &uri, Some(KEY)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["status"], "DISCONNECTED");
    let teardowns: Vec<_> = queue
        .sent()
        .into_iter()
        .filter(|(q, _)| *q == Queue::Teardown)
        .collect();
    assert_eq!(teardowns.len(), 1);
}

// ---- POST /api/numbers/{id}/retry ------------------------------------------------------------

fn failed(account: &AccountId, step: &str) -> Number {
    let mut n = number(account, Status::Failed, 5);
    n.provisioning_step = None;
    n.subscribed = true;
    n.failure_reason = Some(muchaw_shared::domain::FailureReason {
        step: step.into(),
        code: "131009".into(),
        message: "Parameter value is not valid".into(),
        ..Default::default()
    });
    n
}

fn step_messages(queue: &MemoryQueue) -> Vec<String> {
    queue
        .sent()
        .into_iter()
        .filter(|(q, _)| matches!(q, Queue::Step(_)))
        .map(|(_, body)| body)
        .collect()
}

#[tokio::test]
async fn a_failed_number_is_retried_from_the_step_that_failed() {
    let (store, queue, account) = setup();
    let n = failed(&account, "REGISTER_NUMBER");
    store.insert_number(n.clone());

    let uri = format!("/api/numbers/{}/retry", n.id);
    let (status, body) = call(&store, &queue, "POST", &uri, Some(KEY)).await;

    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["data"]["status"], "PENDING");
    assert_eq!(body["data"]["provisioningStep"], "REGISTER_NUMBER");
    assert!(body["data"].get("failureReason").is_none());
    let sent = step_messages(&queue);
    assert_eq!(sent.len(), 1);
    assert!(sent[0].contains("\"step\":\"REGISTER_NUMBER\""));
    let events = queue.sent_to(Queue::Events);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "number.retried");
    assert_eq!(
        store.phone_holder(&n.phone_number_id).map(|o| o.number_id),
        Some(n.id)
    );
}

#[tokio::test]
async fn a_repeated_retry_while_it_runs_changes_nothing() {
    let (store, queue, account) = setup();
    let n = failed(&account, "REGISTER_NUMBER");
    store.insert_number(n.clone());
    let uri = format!("/api/numbers/{}/retry", n.id);
    call(&store, &queue, "POST", &uri, Some(KEY)).await;

    let (status, body) = call(&store, &queue, "POST", &uri, Some(KEY)).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["status"], "PENDING");
    assert_eq!(step_messages(&queue).len(), 1);
    assert_eq!(queue.sent_to(Queue::Events).len(), 1);
}

#[tokio::test]
async fn a_retry_whose_step_message_was_lost_is_completed_by_its_repeat() {
    let (store, queue, account) = setup();
    let n = failed(&account, "CONFIGURE_PIN");
    store.insert_number(n.clone());
    let uri = format!("/api/numbers/{}/retry", n.id);
    queue.fail_next_sends(1);
    let (status, _) = call(&store, &queue, "POST", &uri, Some(KEY)).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(step_messages(&queue).is_empty());

    let (status, _) = call(&store, &queue, "POST", &uri, Some(KEY)).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(step_messages(&queue).len(), 1);
    assert_eq!(queue.sent_to(Queue::Events).len(), 1);
}

#[tokio::test]
async fn a_failed_code_exchange_cannot_be_retried_without_a_new_signup() {
    let (store, queue, account) = setup();
    let n = failed(&account, "EXCHANGE_TOKEN");
    store.insert_number(n.clone());

    let uri = format!("/api/numbers/{}/retry", n.id);
    let (status, body) = call(&store, &queue, "POST", &uri, Some(KEY)).await;

    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "reauthorization_required");
    assert!(queue.sent().is_empty());
    assert_eq!(
        store.number(&account, &n.id).unwrap().status,
        Status::Failed
    );
}

#[tokio::test]
async fn a_number_whose_token_was_deleted_cannot_be_retried_without_a_new_signup() {
    let (store, queue, account) = setup();
    let mut n = failed(&account, "REGISTER_NUMBER");
    n.token_deleted_at = Some(time::now());
    store.insert_number(n.clone());

    let uri = format!("/api/numbers/{}/retry", n.id);
    let (status, body) = call(&store, &queue, "POST", &uri, Some(KEY)).await;

    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "reauthorization_required");
}

#[tokio::test]
async fn an_active_number_cannot_be_retried() {
    let (store, queue, account) = setup();
    let n = number(&account, Status::Active, 1);
    store.insert_number(n.clone());

    let uri = format!("/api/numbers/{}/retry", n.id);
    let (status, body) = call(&store, &queue, "POST", &uri, Some(KEY)).await;

    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "conflict");
    assert!(queue.sent().is_empty());
}

#[tokio::test]
async fn another_account_s_failed_number_is_not_found_for_a_retry() {
    let (store, queue, _) = setup();
    let other = AccountId::from("acc_other".to_string());
    let n = failed(&other, "REGISTER_NUMBER");
    store.insert_number(n.clone());

    let uri = format!("/api/numbers/{}/retry", n.id);
    let (status, body) = call(&store, &queue, "POST", &uri, Some(KEY)).await;

    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    assert_eq!(store.number(&other, &n.id).unwrap().status, Status::Failed);
}

#[tokio::test]
async fn a_failed_number_whose_phone_was_signed_up_again_cannot_be_retried() {
    let (store, queue, account) = setup();
    let n = failed(&account, "REGISTER_NUMBER");
    store.insert_number(n.clone());
    let mut again = number(&account, Status::Pending, 0);
    again.phone_number_id = n.phone_number_id.clone();
    store.insert_number(again);

    let uri = format!("/api/numbers/{}/retry", n.id);
    let (status, body) = call(&store, &queue, "POST", &uri, Some(KEY)).await;

    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(
        store.number(&account, &n.id).unwrap().status,
        Status::Failed
    );
}

#[tokio::test]
async fn a_retry_racing_a_new_signup_of_its_phone_is_a_conflict_and_changes_nothing() {
    // Given a failed number whose retry has read it and found its phone free
    let (store, queue, account) = setup();
    let n = failed(&account, "REGISTER_NUMBER");
    store.insert_number(n.clone());
    let held = store.hold_commits().await;
    let uri = format!("/api/numbers/{}/retry", n.id);
    let retry = call(&store, &queue, "POST", &uri, Some(KEY));
    tokio::pin!(retry);
    assert!(futures::poll!(&mut retry).is_pending(), "waits to write");
    // When a new signup of the same phone is written before the retry's write
    let mut again = number(&account, Status::Pending, 0);
    again.phone_number_id = n.phone_number_id.clone();
    store.insert_number(again.clone());
    let before = store.snapshot();
    drop(held);
    let (status, body) = retry.await;

    // Then the retry is the documented conflict, and nothing changed or was sent
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("signed up again")),
        "{body}"
    );
    assert!(store.snapshot() == before, "the store changed");
    assert!(queue.sent().is_empty());
    assert_eq!(
        store.phone_holder(&n.phone_number_id).map(|o| o.number_id),
        Some(again.id)
    );
}

#[tokio::test]
async fn deleting_a_failed_number_disconnects_it_and_tears_it_down() {
    let (store, queue, account) = setup();
    let n = failed(&account, "REGISTER_NUMBER");
    store.insert_number(n.clone());

    let uri = format!("/api/numbers/{}", n.id);
    let (status, body) = call(&store, &queue, "DELETE", &uri, Some(KEY)).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["status"], "DISCONNECTED");
    assert_eq!(queue.sent_to(Queue::Teardown).len(), 1);
    assert_eq!(store.count(&account, Status::Failed), 0);
    assert_eq!(store.count(&account, Status::Disconnected), 1);
}
