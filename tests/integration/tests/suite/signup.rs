//! The signup callback's contract, signup links, disconnecting during provisioning, teardown,
//! and bad input (a burst of signups is in `burst`).

use std::time::Duration;

use fake_meta::Route;
use muchaw_shared::domain::{Status, Step};
use muchaw_shared::ports::{NumberReader, Page, ProvisioningStore, Queue};
use muchaw_tests::http_event;
use muchaw_tests::provisioning::ProvisioningEnv;
use serde_json::json;

const WABA: &str = "100000000000001";
const SETTLE: Duration = Duration::from_secs(60);

fn exchanges_sent(p: &ProvisioningEnv) -> usize {
    p.queue
        .sent
        .lock()
        .unwrap()
        .iter()
        .filter(|(q, _)| *q == Queue::Step(Step::ExchangeToken))
        .count()
}

#[tokio::test]
async fn the_same_phone_again_returns_the_existing_number_and_restarts_nothing() {
    // Given a number whose provisioning is under way (past the exchange, Meta slow to subscribe)
    let p = ProvisioningEnv::new().await;
    let (account, key) = p.env.account_with_key("acme").await;
    p.meta
        .set_latency(Some(Route::SubscribeApp), Duration::from_secs(20));
    let code = p.meta_phone(WABA, "210000000000001");
    let first = p.callback(&key, &code, WABA, "210000000000001").await;
    assert_eq!(first.status, 202);
    let id = first.body["data"]["id"].as_str().unwrap().to_string();
    p.start();
    let deadline = tokio::time::Instant::now() + SETTLE;
    while p.number(&account, &id).await.provisioning_step == Some(Step::ExchangeToken) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the exchange never ran"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // When the same phone signs up again
    let again = p
        .callback(&key, "AQBanother", WABA, "210000000000001")
        .await;

    // Then it gets the same number, and no second exchange is sent
    assert_eq!(again.status, 200);
    assert_eq!(again.body["data"]["id"], first.body["data"]["id"]);
    assert_eq!(exchanges_sent(&p), 1, "nothing restarted");
}

#[tokio::test]
async fn a_repeated_callback_starts_a_number_whose_first_message_never_went_out() {
    // Given a callback that wrote its number and then failed to send the exchange's message
    let p = ProvisioningEnv::new().await;
    let (account, key) = p.env.account_with_key("acme").await;
    p.queue.fail_sends(Queue::Step(Step::ExchangeToken), 1);
    let code = p.meta_phone(WABA, "210000000000011");
    let first = p.callback(&key, &code, WABA, "210000000000011").await;
    assert!(first.status >= 500, "{:?}", first.body);

    // When the client repeats the callback
    let again = p.callback(&key, &code, WABA, "210000000000011").await;

    // Then the number is provisioned with the repeat's code
    assert_eq!(again.status, 200, "{:?}", again.body);
    let id = again.body["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        p.settled(&account, &id, SETTLE).await.status,
        Status::Active
    );
    assert_eq!(exchanges_sent(&p), 1);
}

#[tokio::test]
async fn a_repeated_link_callback_starts_a_number_whose_first_message_never_went_out() {
    // Given a signup link's callback that wrote its number (consuming the link) and then failed
    // to send the exchange's message
    let p = ProvisioningEnv::new().await;
    let (account, key) = p.env.account_with_key("acme").await;
    let link = p
        .invoke(http_event(
            "POST",
            "/api/signup-links",
            "",
            Some(&key),
            Some("{}"),
        ))
        .await;
    assert_eq!(link.status, 201, "{:?}", link.body);
    let state = link.body["data"]["state"].as_str().unwrap().to_string();
    p.queue.fail_sends(Queue::Step(Step::ExchangeToken), 1);
    let code = p.meta_phone(WABA, "210000000000012");
    let body =
        json!({"code": code, "wabaId": WABA, "phoneNumberId": "210000000000012", "state": state})
            .to_string();
    let callback = || {
        p.invoke(http_event(
            "POST",
            "/api/signup/callback",
            "",
            None,
            Some(&body),
        ))
    };
    assert!(callback().await.status >= 500);

    // When the hosted page repeats it with the same state
    let again = callback().await;

    // Then the used link answers with its own number, which is provisioned
    assert_eq!(again.status, 200, "{:?}", again.body);
    let id = again.body["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        p.settled(&account, &id, SETTLE).await.status,
        Status::Active
    );
}

/// The number a callback answered `202` with, once provisioning has settled it.
async fn settled_from(
    p: &ProvisioningEnv,
    account: &muchaw_shared::domain::AccountId,
    answer: &muchaw_tests::ApiResponse,
) -> muchaw_shared::domain::Number {
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    let id = answer.body["data"]["id"].as_str().unwrap();
    p.settled(account, id, SETTLE).await
}

/// What a failed number tells its account: where, Meta's code and message.
fn failure(number: &muchaw_shared::domain::Number) -> (Status, String, String, String) {
    let reason = number.failure_reason.clone().unwrap_or_default();
    (number.status, reason.step, reason.code, reason.message)
}

#[tokio::test]
async fn a_phone_live_in_another_account_is_confirmed_only_to_a_caller_whose_token_reads_it() {
    // Given a phone live in account A, a phone live nowhere on the same WABA, and a WABA of
    // account B's own at Meta
    let p = ProvisioningEnv::new().await;
    let (account_a, key_a) = p.env.account_with_key("a").await;
    let (account_b, key_b) = p.env.account_with_key("b").await;
    let (taken, free) = ("210000000000002", "210000000000003");
    let code_a = p.meta_phone(WABA, taken);
    p.meta_phone(WABA, free);
    p.meta_phone("100000000000002", "210000000000004");
    let a = p.callback(&key_a, &code_a, WABA, taken).await;
    let a_number = settled_from(&p, &account_a, &a).await;
    assert_eq!(a_number.status, Status::Active);

    // When B signs up each phone, with a code Meta refuses, then with a code for its own WABA
    let mut answers = Vec::new();
    let mut failures = Vec::new();
    for phone in [taken, free] {
        let mut failed = Vec::new();
        for code in [
            "AQBnot-a-code".to_string(),
            p.meta.issue_code(&["100000000000002"]),
        ] {
            let answer = p.callback(&key_b, &code, WABA, phone).await;
            let mut view = answer.body["data"].clone();
            if let Some(view) = view.as_object_mut() {
                for varies in ["id", "phoneNumberId", "createdAt", "updatedAt"] {
                    view.remove(varies);
                }
            }
            answers.push((answer.status, view));
            failed.push(failure(&settled_from(&p, &account_b, &answer).await));
        }
        failures.push(failed);
    }

    // Then every answer is a new PENDING number, whether the phone is live in A or nowhere
    assert!(
        answers.iter().all(|answer| *answer == answers[0]),
        "{answers:?}"
    );
    assert_eq!(answers[0].0, 202);
    // and each number fails at the exchange the same way for both phones: Meta refuses the code,
    // or the token cannot read the phone
    assert_eq!(failures[0], failures[1]);
    for (status, step, _, _) in &failures[0] {
        assert_eq!((*status, step.as_str()), (Status::Failed, "EXCHANGE_TOKEN"));
    }

    // When B signs up the taken phone with a code for its WABA (B controls it at Meta too)
    let in_control = p
        .callback(&key_b, &p.meta.issue_code(&[WABA]), WABA, taken)
        .await;

    // Then it is told, once its token has read the phone, that the phone is in use elsewhere
    let b_number = settled_from(&p, &account_b, &in_control).await;
    let (status, step, code, _) = failure(&b_number);
    assert_eq!(
        (status, step.as_str(), code.as_str()),
        (Status::Failed, "EXCHANGE_TOKEN", "phone_number_in_use")
    );
    // and A's number keeps the phone, active and untouched
    let owner = p.env.store.phone_owner(taken).await.unwrap().unwrap();
    assert_eq!(owner.number_id, a_number.id);
    assert_eq!(p.number(&account_a, a_number.id.as_str()).await, a_number);
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
    assert_eq!(listed.total, 5);
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

// ---- WABA-only signups (FINISH_ONLY_WABA) ----------------------------------------------------

mod waba_only {
    use super::*;
    use muchaw_shared::domain::waba_signup::WabaOutcome;
    use muchaw_shared::domain::{AccountId, NumberId};
    use muchaw_shared::ports::TokenVault;

    /// A WABA at the fake Meta with these phones, and a code for it.
    fn waba_with_phones(p: &ProvisioningEnv, waba: &str, phones: &[&str]) -> String {
        let mut code = String::new();
        for phone in phones {
            code = p.meta_phone(waba, phone);
        }
        if phones.is_empty() {
            code = p.meta.issue_code(&[waba]);
        }
        code
    }

    async fn onboarded(
        p: &ProvisioningEnv,
        account: &AccountId,
        id: &str,
    ) -> (Vec<NumberId>, Vec<String>) {
        match p.waba_settled(account, id, SETTLE).await.outcome {
            Some(WabaOutcome::Completed {
                number_ids,
                skipped,
            }) => (number_ids, skipped),
            other => panic!("the WABA signup did not complete: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_waba_only_signup_onboards_every_phone_of_the_waba_to_active() {
        let p = ProvisioningEnv::new().await;
        let (account, key) = p.env.account_with_key("acme").await;
        let waba = "100000000000201";
        let phones = ["220000000000001", "220000000000002"];
        let code = waba_with_phones(&p, waba, &phones);

        let response = p.callback_waba_only(Some(&key), &code, waba, None).await;

        assert_eq!(response.status, 202, "{}", response.body);
        let data = &response.body["data"];
        assert_eq!(data["state"], "pending");
        assert_eq!(data["wabaId"], waba);
        let id = data["id"].as_str().unwrap().to_string();
        let (numbers, skipped) = onboarded(&p, &account, &id).await;
        assert_eq!(numbers.len(), 2);
        assert!(skipped.is_empty());
        let mut seen = Vec::new();
        for number in &numbers {
            let number = p.settled(&account, number.as_str(), SETTLE).await;
            assert_eq!(number.status, Status::Active, "{}", number.phone_number_id);
            assert_eq!(number.waba_id, waba);
            assert!(p.meta.phone(&number.phone_number_id).unwrap().registered);
            seen.push(number.phone_number_id);
        }
        seen.sort();
        assert_eq!(seen, phones);
        assert_eq!(p.meta.calls_to(Route::ExchangeCode).len(), 1);
        assert_eq!(p.meta.calls_to(Route::ListPhoneNumbers).len(), 1);
    }

    #[tokio::test]
    async fn each_number_keeps_its_own_copy_of_the_token_and_the_signup_s_copy_is_deleted() {
        let p = ProvisioningEnv::new().await;
        let (account, key) = p.env.account_with_key("acme").await;
        let waba = "100000000000202";
        let code = waba_with_phones(&p, waba, &["220000000000011", "220000000000012"]);
        let response = p.callback_waba_only(Some(&key), &code, waba, None).await;
        let id = response.body["data"]["id"].as_str().unwrap().to_string();

        let (numbers, _) = onboarded(&p, &account, &id).await;

        let vault = &p.provisioner.vault;
        let mut tokens = Vec::new();
        for number in &numbers {
            let secrets = vault.load(number).await.unwrap().expect("its own secret");
            tokens.push(secrets.token.expose().to_string());
        }
        assert_eq!(tokens[0], tokens[1]);
        assert!(p.meta.issued_tokens().contains(&tokens[0]));
        let signup_secret = vault.load(&NumberId::from(id.clone())).await.unwrap();
        assert!(signup_secret.is_none(), "the signup's copy is deleted");

        // One number's teardown deletes its copy only; the sibling keeps working.
        p.env
            .delete(Some(&key), &format!("/api/numbers/{}", numbers[0]))
            .await;
        let deadline = tokio::time::Instant::now() + SETTLE;
        while p
            .number(&account, numbers[0].as_str())
            .await
            .token_deleted_at
            .is_none()
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(vault.load(&numbers[0]).await.unwrap().is_none());
        assert!(vault.load(&numbers[1]).await.unwrap().is_some());
        assert!(
            p.meta.is_subscribed(waba),
            "the sibling still uses the WABA"
        );
    }

    #[tokio::test]
    async fn a_phone_live_in_another_account_is_skipped_and_the_rest_onboarded() {
        let p = ProvisioningEnv::new().await;
        let (_, other_key) = p.env.account_with_key("other").await;
        let (account, key) = p.env.account_with_key("acme").await;
        let waba = "100000000000203";
        let taken = "220000000000021";
        let code = p.meta_phone(waba, taken);
        assert_eq!(p.callback(&other_key, &code, waba, taken).await.status, 202);
        let code = waba_with_phones(&p, waba, &["220000000000022"]);

        let response = p.callback_waba_only(Some(&key), &code, waba, None).await;
        let id = response.body["data"]["id"].as_str().unwrap().to_string();
        let (numbers, skipped) = onboarded(&p, &account, &id).await;

        assert_eq!(skipped, [taken]);
        assert_eq!(numbers.len(), 1);
        let number = p.number(&account, numbers[0].as_str()).await;
        assert_eq!(number.phone_number_id, "220000000000022");
    }

    #[tokio::test]
    async fn a_waba_signup_through_a_link_shows_its_numbers_on_the_link_and_the_page_status() {
        let p = ProvisioningEnv::new().await;
        let (account, key) = p.env.account_with_key("acme").await;
        let link = p
            .invoke(http_event(
                "POST",
                "/api/signup-links",
                "",
                Some(&key),
                None,
            ))
            .await;
        let state = link.body["data"]["state"].as_str().unwrap().to_string();
        let link_id = link.body["data"]["id"].as_str().unwrap().to_string();
        let waba = "100000000000204";
        let code = waba_with_phones(&p, waba, &["220000000000031"]);

        let response = p.callback_waba_only(None, &code, waba, Some(&state)).await;
        assert_eq!(response.status, 202, "{}", response.body);
        let id = response.body["data"]["id"].as_str().unwrap().to_string();
        let again = p
            .callback_waba_only(None, "AQBagain", waba, Some(&state))
            .await;
        assert_eq!(again.status, 401, "the link is used: {}", again.body);
        let page = p
            .invoke(http_event(
                "GET",
                "/signup",
                &format!("state={state}"),
                None,
                None,
            ))
            .await;
        assert_eq!(page.status, 410, "the page cannot start another signup");
        assert!(
            page.body
                .as_str()
                .unwrap_or_default()
                .contains("data-reason=\"used\""),
            "{}",
            page.body
        );

        let (numbers, _) = onboarded(&p, &account, &id).await;
        let read = p
            .invoke(http_event(
                "GET",
                &format!("/api/signup-links/{link_id}"),
                "",
                Some(&key),
                None,
            ))
            .await;
        assert_eq!(read.body["data"]["state"], "completed");
        assert_eq!(read.body["data"]["wabaSignupId"], id.as_str());
        assert_eq!(read.body["data"]["numberIds"], json!([numbers[0].as_str()]));

        p.settled(&account, numbers[0].as_str(), SETTLE).await;
        let status = p
            .invoke(http_event(
                "GET",
                "/signup/status",
                &format!("state={state}"),
                None,
                None,
            ))
            .await;
        assert_eq!(
            status.body["data"],
            json!({
                "link": "completed",
                "wabaSignup": {"id": id, "state": "completed"},
                "numbers": [{"numberId": numbers[0].as_str(), "status": "ACTIVE"}],
            })
        );
    }

    #[tokio::test]
    async fn a_waba_without_eligible_phones_fails_and_its_link_says_why() {
        let p = ProvisioningEnv::new().await;
        let (account, key) = p.env.account_with_key("acme").await;
        let link = p
            .invoke(http_event(
                "POST",
                "/api/signup-links",
                "",
                Some(&key),
                None,
            ))
            .await;
        let state = link.body["data"]["state"].as_str().unwrap().to_string();
        let waba = "100000000000205";
        let code = waba_with_phones(&p, waba, &[]);

        let response = p.callback_waba_only(None, &code, waba, Some(&state)).await;
        let id = response.body["data"]["id"].as_str().unwrap().to_string();
        let signup = p.waba_settled(&account, &id, SETTLE).await;

        let Some(WabaOutcome::Failed(reason)) = signup.outcome else {
            panic!("the signup fails: {:?}", signup.outcome);
        };
        assert_eq!(reason.code, "no_eligible_phones");
        let status = p
            .invoke(http_event(
                "GET",
                "/signup/status",
                &format!("state={state}"),
                None,
                None,
            ))
            .await;
        assert_eq!(status.body["data"]["link"], "failed");
        assert_eq!(status.body["data"]["wabaSignup"]["state"], "failed");
        assert_eq!(
            status.body["data"]["wabaSignup"]["failureReason"]["code"],
            "no_eligible_phones"
        );
        assert_eq!(status.body["data"]["numbers"], json!([]));
    }

    #[tokio::test]
    async fn a_redelivered_listing_creates_no_second_number_per_phone() {
        let p = ProvisioningEnv::new().await;
        let (account, key) = p.env.account_with_key("acme").await;
        p.deliver_everything_twice();
        let waba = "100000000000206";
        let code = waba_with_phones(&p, waba, &["220000000000041", "220000000000042"]);

        let response = p.callback_waba_only(Some(&key), &code, waba, None).await;
        let id = response.body["data"]["id"].as_str().unwrap().to_string();
        let (numbers, _) = onboarded(&p, &account, &id).await;

        for number in &numbers {
            assert_eq!(
                p.settled(&account, number.as_str(), SETTLE).await.status,
                Status::Active
            );
        }
        let listed = p
            .env
            .store
            .list(
                &account,
                None,
                Page {
                    limit: 10,
                    offset: 0,
                },
            )
            .await
            .unwrap();
        assert_eq!(listed.total, 2, "one number per phone");
        assert_eq!(
            p.meta
                .calls_to(Route::ExchangeCode)
                .iter()
                .filter(|c| c.status == 200)
                .count(),
            1,
            "the code is exchanged once"
        );
    }

    #[tokio::test]
    async fn meta_refusing_the_listing_fails_the_signup_with_meta_s_answer() {
        let p = ProvisioningEnv::new().await;
        let (account, key) = p.env.account_with_key("acme").await;
        let waba = "100000000000207";
        let code = waba_with_phones(&p, waba, &["220000000000051"]);
        p.meta.fail_next(
            Route::ListPhoneNumbers,
            1,
            fake_meta::Fault::Error {
                http_status: 403,
                code: 200,
                subcode: None,
                is_transient: false,
                message: "(#200) Permissions error".into(),
            },
        );

        let response = p.callback_waba_only(Some(&key), &code, waba, None).await;
        let id = response.body["data"]["id"].as_str().unwrap().to_string();
        let signup = p.waba_settled(&account, &id, SETTLE).await;

        let Some(WabaOutcome::Failed(reason)) = signup.outcome else {
            panic!("the signup fails: {:?}", signup.outcome);
        };
        assert_eq!(
            (reason.step.as_str(), reason.code.as_str()),
            ("LIST_PHONE_NUMBERS", "200")
        );
        let listed = p
            .env
            .store
            .list(
                &account,
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
    async fn a_waba_only_callback_with_a_phone_or_a_phone_callback_without_one_is_400() {
        let p = ProvisioningEnv::new().await;
        let (_, key) = p.env.account_with_key("acme").await;
        let before = p.env.table_snapshot().await;
        for body in [
            json!({"code": "AQB", "wabaId": WABA, "mode": "waba_only", "phoneNumberId": "210000000000009"}),
            json!({"code": "AQB", "wabaId": WABA}),
            json!({"code": "AQB", "wabaId": WABA, "mode": "coexistence"}),
            json!({"code": "AQB", "wabaId": "abc", "mode": "waba_only"}),
            json!({"code": "AQB", "wabaId": WABA, "mode": "waba"}),
        ] {
            let response = p
                .invoke(http_event(
                    "POST",
                    "/api/signup/callback",
                    "",
                    Some(&key),
                    Some(&body.to_string()),
                ))
                .await;
            assert_eq!(response.status, 400, "{body}: {}", response.body);
            assert_eq!(response.body["error"]["code"], "invalid_request");
        }
        assert_eq!(p.env.table_snapshot().await, before, "nothing written");
        assert!(p.queue.sent.lock().unwrap().is_empty(), "nothing sent");
    }
}
