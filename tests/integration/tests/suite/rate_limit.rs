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
    let store = env.function_store();
    let router = env.template_routed(api::finish(
        api::numbers_routes(store.clone(), env.queue()),
        store,
        ApiLimits {
            requests_per_minute: Some(LIMIT),
        },
    ));
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

// ---- The hosted signup page's no-key routes ------------------------------------------------

mod signup_page {
    use muchaw_shared::api::page_limit::PageLimits;
    use muchaw_tests::provisioning::ProvisioningEnv;
    use muchaw_tests::{ApiResponse, early_in_a_minute, http_event};
    use serde_json::json;

    async fn new_link(p: &ProvisioningEnv, key: &str) -> (String, String) {
        let link = p
            .invoke(http_event("POST", "/api/signup-links", "", Some(key), None))
            .await;
        assert_eq!(link.status, 201, "{:?}", link.body);
        (
            link.body["data"]["id"].as_str().unwrap().to_string(),
            link.body["data"]["state"].as_str().unwrap().to_string(),
        )
    }

    async fn page(p: &ProvisioningEnv, state: &str) -> ApiResponse {
        p.invoke(http_event(
            "GET",
            "/signup",
            &format!("state={state}"),
            None,
            None,
        ))
        .await
    }

    async fn status(p: &ProvisioningEnv, state: &str) -> ApiResponse {
        p.invoke(http_event(
            "GET",
            "/signup/status",
            &format!("state={state}"),
            None,
            None,
        ))
        .await
    }

    async fn opened(p: &ProvisioningEnv, state: &str) -> ApiResponse {
        let body = json!({"state": state, "event": "opened"}).to_string();
        p.invoke(http_event("POST", "/signup/events", "", None, Some(&body)))
            .await
    }

    fn per_link(limit: u32) -> PageLimits {
        PageLimits {
            per_link_per_minute: Some(limit),
            per_source_per_minute: None,
        }
    }

    #[tokio::test]
    async fn a_link_beyond_its_limit_gets_a_429_page_and_json_429s_and_nothing_is_recorded() {
        let p = ProvisioningEnv::new().await;
        let (_, key) = p.env.account_with_key("acme").await;
        let (link_id, state) = new_link(&p, &key).await;
        p.set_page_limits(per_link(2));
        early_in_a_minute().await;
        assert_eq!(page(&p, &state).await.status, 200);
        assert_eq!(status(&p, &state).await.status, 200);

        let limited_page = page(&p, &state).await;
        let limited_status = status(&p, &state).await;
        let limited_report = opened(&p, &state).await;

        assert_eq!(limited_page.status, 429);
        assert!(limited_page.headers["content-type"].starts_with("text/html"));
        let html = limited_page.body.as_str().unwrap_or_default();
        assert!(html.contains("data-reason=\"rate_limited\""), "{html}");
        let retry_after: u64 = limited_page.headers["retry-after"].parse().unwrap();
        assert!((1..=60).contains(&retry_after));
        for limited in [&limited_status, &limited_report] {
            assert_eq!(limited.status, 429, "{:?}", limited.body);
            assert_eq!(limited.body["error"]["code"], "rate_limited");
            assert!(limited.headers.contains_key("retry-after"));
        }
        p.set_page_limits(PageLimits::UNLIMITED);
        let session = p
            .invoke(http_event(
                "GET",
                &format!("/api/signup-links/{link_id}"),
                "",
                Some(&key),
                None,
            ))
            .await;
        assert_eq!(
            session.body["data"]["state"], "unused",
            "{:?}",
            session.body
        );
    }

    #[tokio::test]
    async fn a_busy_link_does_not_limit_another_link() {
        let p = ProvisioningEnv::new().await;
        let (_, key) = p.env.account_with_key("acme").await;
        let (_, busy) = new_link(&p, &key).await;
        let (_, quiet) = new_link(&p, &key).await;
        p.set_page_limits(per_link(1));
        early_in_a_minute().await;
        status(&p, &busy).await;
        assert_eq!(status(&p, &busy).await.status, 429);
        assert_eq!(status(&p, &quiet).await.status, 200);
    }

    #[tokio::test]
    async fn one_source_ip_beyond_its_limit_is_limited_whatever_the_state_it_sends() {
        let p = ProvisioningEnv::new().await;
        let (_, key) = p.env.account_with_key("acme").await;
        let (_, state) = new_link(&p, &key).await;
        p.set_page_limits(PageLimits {
            per_link_per_minute: None,
            per_source_per_minute: Some(2),
        });
        early_in_a_minute().await;
        // Forged states count against their source too.
        assert_eq!(status(&p, "v1.forged.sig").await.status, 401);
        assert_eq!(page(&p, "v1.other.sig").await.status, 400);

        let limited = status(&p, &state).await;

        assert_eq!(limited.status, 429, "{:?}", limited.body);
        assert_eq!(limited.body["error"]["code"], "rate_limited");
    }
}
