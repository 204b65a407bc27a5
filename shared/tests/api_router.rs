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
