//! The API's per-account rate limit (`API_REQUESTS_PER_MINUTE`): counted in DynamoDB on moto so
//! every function instance shares one count, answered with the contract's `429`.

use muchaw_shared::api::{self, ApiLimits};
use muchaw_shared::domain::Status;
use muchaw_shared::ports::{NumberReader, Queue};
use muchaw_tests::{
    ApiResponse, TestEnv, early_in_a_minute, http_event, invoke_router, parse_response,
    sample_number,
};

const LIMIT: u32 = 3;

async fn call(env: &TestEnv, method: &str, path: &str, key: &str) -> ApiResponse {
    let router = api::finish(
        api::numbers_routes(env.store.clone(), env.queue()),
        env.store.clone(),
        ApiLimits {
            requests_per_minute: Some(LIMIT),
        },
    );
    parse_response(invoke_router(router, http_event(method, path, "", Some(key), None)).await)
}

#[tokio::test]
async fn requests_beyond_the_limit_in_a_minute_are_429_rate_limited_with_retry_after() {
    let env = TestEnv::new().await;
    let (_, key) = env.account_with_key("acme").await;
    early_in_a_minute().await;
    for _ in 0..LIMIT {
        assert_eq!(call(&env, "GET", "/api/numbers", &key).await.status, 200);
    }
    let limited = call(&env, "GET", "/api/numbers", &key).await;
    assert_eq!(limited.status, 429, "{:?}", limited.body);
    assert_eq!(limited.body["error"]["code"], "rate_limited");
    let retry_after: u64 = limited.headers["retry-after"].parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
}

#[tokio::test]
async fn one_account_at_its_limit_does_not_limit_another() {
    let env = TestEnv::new().await;
    let (_, busy) = env.account_with_key("busy").await;
    let (_, quiet) = env.account_with_key("quiet").await;
    early_in_a_minute().await;
    for _ in 0..=LIMIT {
        call(&env, "GET", "/api/numbers", &busy).await;
    }
    assert_eq!(call(&env, "GET", "/api/numbers", &busy).await.status, 429);
    assert_eq!(call(&env, "GET", "/api/numbers", &quiet).await.status, 200);
}

#[tokio::test]
async fn every_key_of_an_account_shares_its_limit() {
    let env = TestEnv::new().await;
    let (account, first) = env.account_with_key("acme").await;
    let second = env
        .store
        .create_api_key(&account, Some("second"))
        .await
        .unwrap();
    early_in_a_minute().await;
    for _ in 0..LIMIT {
        assert_eq!(call(&env, "GET", "/api/numbers", &first).await.status, 200);
    }
    let other_key = call(&env, "GET", "/api/numbers", second.key.expose()).await;
    assert_eq!(other_key.status, 429);
}

#[tokio::test]
async fn a_rate_limited_delete_changes_nothing() {
    let env = TestEnv::new().await;
    let (account, key) = env.account_with_key("acme").await;
    let number = sample_number(&account, Status::Active, 1);
    env.store
        .import_numbers(std::slice::from_ref(&number))
        .await
        .unwrap();
    early_in_a_minute().await;
    for _ in 0..LIMIT {
        call(&env, "GET", "/api/numbers", &key).await;
    }
    let path = format!("/api/numbers/{}", number.id);
    let limited = call(&env, "DELETE", &path, &key).await;
    assert_eq!(limited.status, 429);
    let stored = env.store.get(&account, &number.id).await.unwrap().unwrap();
    assert_eq!(stored.status, Status::Active);
    assert!(env.drain(Queue::Teardown).await.is_empty());
}

#[tokio::test]
async fn unauthenticated_requests_are_401_and_not_counted() {
    let env = TestEnv::new().await;
    let (_, key) = env.account_with_key("acme").await;
    early_in_a_minute().await;
    for _ in 0..(2 * LIMIT) {
        assert_eq!(
            call(&env, "GET", "/api/numbers", "mk_live_not_a_key")
                .await
                .status,
            401
        );
    }
    assert_eq!(call(&env, "GET", "/api/numbers", &key).await.status, 200);
}
