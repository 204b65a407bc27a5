//! The signup callback's contract, signup links, disconnecting during provisioning, teardown,
//! and bad input (a burst of signups is in `burst`).

use std::time::Duration;

use fake_meta::Route;
use muchaw_shared::domain::Status;
use muchaw_shared::ports::{NumberReader, Page, Queue};
use muchaw_tests::http_event;
use muchaw_tests::provisioning::ProvisioningEnv;
use serde_json::json;

const WABA: &str = "100000000000001";
const SETTLE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn the_same_phone_again_returns_the_existing_number_and_restarts_nothing() {
    let p = ProvisioningEnv::new().await;
    let (_, key) = p.env.account_with_key("acme").await;
    let code = p.meta_phone(WABA, "210000000000001");
    let first = p.callback(&key, &code, WABA, "210000000000001").await;
    assert_eq!(first.status, 202);
    let again = p
        .callback(&key, "AQBanother", WABA, "210000000000001")
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["data"]["id"], first.body["data"]["id"]);
    let exchanges = p
        .queue
        .sent
        .lock()
        .unwrap()
        .iter()
        .filter(|(q, _)| *q == Queue::Step(muchaw_shared::domain::Step::ExchangeToken))
        .count();
    assert_eq!(exchanges, 1, "nothing restarted");
}

#[tokio::test]
async fn a_phone_live_in_another_account_is_a_conflict() {
    let p = ProvisioningEnv::new().await;
    let (_, key_a) = p.env.account_with_key("a").await;
    let (account_b, key_b) = p.env.account_with_key("b").await;
    let code = p.meta_phone(WABA, "210000000000002");
    assert_eq!(
        p.callback(&key_a, &code, WABA, "210000000000002")
            .await
            .status,
        202
    );
    let response = p
        .callback(&key_b, "AQBother", WABA, "210000000000002")
        .await;
    assert_eq!(response.status, 409);
    assert_eq!(response.body["error"]["code"], "conflict");
    let listed = p
        .env
        .store
        .list(
            &account_b,
            None,
            Page {
                limit: 10,
                offset: 0,
            },
        )
        .await
        .unwrap();
    assert_eq!(listed.total, 0);
}

#[tokio::test]
async fn bad_callbacks_get_400_and_create_nothing() {
    let p = ProvisioningEnv::new().await;
    let (_, key) = p.env.account_with_key("acme").await;
    let before = p.env.table_snapshot().await;
    let bodies = [
        ("not JSON", "{".to_string()),
        ("empty object", "{}".to_string()),
        (
            "missing code",
            json!({"wabaId": WABA, "phoneNumberId": "1"}).to_string(),
        ),
        (
            "missing wabaId",
            json!({"code": "AQB", "phoneNumberId": "1"}).to_string(),
        ),
        (
            "missing phoneNumberId",
            json!({"code": "AQB", "wabaId": WABA}).to_string(),
        ),
        (
            "numeric code",
            json!({"code": 5, "wabaId": WABA, "phoneNumberId": "1"}).to_string(),
        ),
        (
            "empty code",
            json!({"code": "", "wabaId": WABA, "phoneNumberId": "1"}).to_string(),
        ),
        (
            "non-numeric wabaId",
            json!({"code": "AQB", "wabaId": "abc", "phoneNumberId": "1"}).to_string(),
        ),
        (
            "non-numeric phone",
            json!({"code": "AQB", "wabaId": WABA, "phoneNumberId": "+55"}).to_string(),
        ),
        (
            "unknown field",
            json!({"code": "AQB", "wabaId": WABA, "phoneNumberId": "1", "x": 1}).to_string(),
        ),
        ("array", "[]".to_string()),
    ];
    for (name, body) in bodies {
        let response = p
            .invoke(http_event(
                "POST",
                "/api/signup/callback",
                "",
                Some(&key),
                Some(&body),
            ))
            .await;
        assert_eq!(response.status, 400, "{name}: {:?}", response.body);
        assert_eq!(response.body["error"]["code"], "invalid_request", "{name}");
    }
    let huge =
        json!({"code": "A".repeat(70 * 1024), "wabaId": WABA, "phoneNumberId": "1"}).to_string();
    let response = p
        .invoke(http_event(
            "POST",
            "/api/signup/callback",
            "",
            Some(&key),
            Some(&huge),
        ))
        .await;
    assert_eq!(response.status, 413);
    let unauthenticated = p
        .invoke(http_event(
            "POST",
            "/api/signup/callback",
            "",
            None,
            Some(&json!({"code": "AQB", "wabaId": WABA, "phoneNumberId": "1"}).to_string()),
        ))
        .await;
    assert_eq!(unauthenticated.status, 401);
    assert_eq!(
        p.env.table_snapshot().await,
        before,
        "bad callbacks changed stored data"
    );
    assert!(
        p.queue.sent.lock().unwrap().is_empty(),
        "bad callbacks queued work"
    );
}

#[tokio::test]
async fn a_signup_link_state_authenticates_the_callback_once() {
    let p = ProvisioningEnv::new().await;
    let (account, key) = p.env.account_with_key("acme").await;
    let link = p
        .invoke(http_event(
            "POST",
            "/api/signup-links",
            "",
            Some(&key),
            Some(r#"{"redirectUrl":"https://customer.example.com/done"}"#),
        ))
        .await;
    assert_eq!(link.status, 201, "{:?}", link.body);
    let state = link.body["data"]["state"].as_str().unwrap().to_string();
    assert!(
        link.body["data"]["url"]
            .as_str()
            .unwrap()
            .starts_with("https://signup.example.com/start?state=")
    );
    assert!(
        link.body["data"]["expiresAt"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );

    let code = p.meta_phone(WABA, "210000000000003");
    let body =
        json!({"code": code, "wabaId": WABA, "phoneNumberId": "210000000000003", "state": state})
            .to_string();
    let first = p
        .invoke(http_event(
            "POST",
            "/api/signup/callback",
            "",
            None,
            Some(&body),
        ))
        .await;
    assert_eq!(first.status, 202, "{:?}", first.body);
    let id = first.body["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(p.number(&account, &id).await.status, Status::Pending);

    let body =
        json!({"code": "AQBx", "wabaId": WABA, "phoneNumberId": "210000000000004", "state": state})
            .to_string();
    let reused = p
        .invoke(http_event(
            "POST",
            "/api/signup/callback",
            "",
            None,
            Some(&body),
        ))
        .await;
    assert_eq!(
        reused.status, 401,
        "a link is single use: {:?}",
        reused.body
    );

    let body = json!({"code": "AQBx", "wabaId": WABA, "phoneNumberId": "210000000000004", "state": "v1.forged.sig"}).to_string();
    let forged = p
        .invoke(http_event(
            "POST",
            "/api/signup/callback",
            "",
            None,
            Some(&body),
        ))
        .await;
    assert_eq!(forged.status, 401);
}

#[tokio::test]
async fn a_signup_link_refuses_a_plain_http_redirect() {
    let p = ProvisioningEnv::new().await;
    let (_, key) = p.env.account_with_key("acme").await;
    for body in [
        r#"{"redirectUrl":"http://x.example.com"}"#,
        r#"{"redirectUrl":5}"#,
        "{",
    ] {
        let response = p
            .invoke(http_event(
                "POST",
                "/api/signup-links",
                "",
                Some(&key),
                Some(body),
            ))
            .await;
        assert_eq!(response.status, 400, "{body}");
    }
}

#[tokio::test]
async fn disconnecting_while_pending_stops_provisioning_and_tears_down() {
    let p = ProvisioningEnv::new().await;
    let (account, key) = p.env.account_with_key("acme").await;
    let code = p.meta_phone(WABA, "210000000000005");
    let created = p.callback(&key, &code, WABA, "210000000000005").await;
    let id = created.body["data"]["id"].as_str().unwrap().to_string();
    let deleted = p
        .env
        .delete(Some(&key), &format!("/api/numbers/{id}"))
        .await;
    assert_eq!(deleted.status, 200);
    assert_eq!(deleted.body["data"]["status"], "DISCONNECTED");

    p.start();
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let number = p.number(&account, &id).await;
        if number.torn_down_at.is_some() || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let number = p.number(&account, &id).await;
    assert_eq!(number.status, Status::Disconnected);
    assert!(number.torn_down_at.is_some(), "teardown ran");
    assert!(
        p.meta.calls().is_empty(),
        "no step called Meta: {:?}",
        p.meta.calls()
    );
}

#[tokio::test]
async fn teardown_deregisters_and_unsubscribes_only_the_last_number_of_a_waba() {
    let p = ProvisioningEnv::new().await;
    let (account, key) = p.env.account_with_key("acme").await;
    let mut ids = Vec::new();
    for phone in ["210000000000006", "210000000000007"] {
        let code = p.meta_phone(WABA, phone);
        let response = p.callback(&key, &code, WABA, phone).await;
        ids.push(response.body["data"]["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        assert_eq!(p.settled(&account, id, SETTLE).await.status, Status::Active);
    }
    let wait_torn_down = |id: String| {
        let p = &p;
        let account = account.clone();
        async move {
            let deadline = tokio::time::Instant::now() + SETTLE;
            while p.number(&account, &id).await.torn_down_at.is_none()
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    p.meta.clear_calls();
    p.env
        .delete(Some(&key), &format!("/api/numbers/{}", ids[0]))
        .await;
    wait_torn_down(ids[0].clone()).await;
    assert_eq!(p.meta.calls_to(Route::Deregister).len(), 1);
    assert!(
        p.meta.calls_to(Route::UnsubscribeApp).is_empty(),
        "a sibling still uses the WABA"
    );
    assert!(p.meta.is_subscribed(WABA));

    p.env
        .delete(Some(&key), &format!("/api/numbers/{}", ids[1]))
        .await;
    wait_torn_down(ids[1].clone()).await;
    assert_eq!(p.meta.calls_to(Route::Deregister).len(), 2);
    assert_eq!(p.meta.calls_to(Route::UnsubscribeApp).len(), 1);
    assert!(!p.meta.is_subscribed(WABA));
}

#[tokio::test]
async fn unreadable_messages_fail_alone_without_crashing_the_batch() {
    let p = ProvisioningEnv::new().await;
    let event: aws_lambda_events::event::sqs::SqsEvent = serde_json::from_value(json!({"Records": [
        {"messageId": "m1", "receiptHandle": "r1", "body": "not json", "attributes": {}, "messageAttributes": {}},
        {"messageId": "m2", "receiptHandle": "r2", "body": "{\"v\":9,\"numberId\":\"x\"}", "attributes": {}, "messageAttributes": {}},
        {"messageId": "m3", "receiptHandle": "r3", "body": "{\"v\":1,\"numberId\":\"nope\",\"accountId\":\"acc\",\"step\":\"SUBSCRIBE_WABA\",\"traceId\":\"t\"}", "attributes": {"SentTimestamp": "1000"}, "messageAttributes": {}}
    ]})).unwrap();
    let response = p
        .provisioner
        .handle_batch(muchaw_shared::domain::Step::SubscribeWaba, event)
        .await;
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(
        failed,
        ["m1", "m2"],
        "the old message about an unknown number is dropped"
    );
}
