//! Single use under races: the real handlers, called concurrently against moto, as concurrent
//! Lambda invocations would call them.

use std::time::Duration;

use fake_meta::Route;
use futures::future::join_all;
use muchaw_shared::adapters::secrets::read_app_secrets;
use muchaw_shared::domain::{AccountId, Number, Status};
use muchaw_shared::meta_webhook::{self, MetaWebhook};
use muchaw_shared::ports::{NumberReader, Page, ProvisioningStore, Queue};
use muchaw_tests::provisioning::ProvisioningEnv;
use muchaw_tests::{ApiResponse, authorization_event, http_event, invoke_router, parse_response};
use serde_json::{Value, json};

const WABA: &str = "400000000000001";
const CALLERS: usize = 20;
const SETTLE: Duration = Duration::from_secs(60);

async fn signup_link_state(p: &ProvisioningEnv, key: &str) -> String {
    let link = p
        .invoke(http_event("POST", "/api/signup-links", "", Some(key), None))
        .await;
    assert_eq!(link.status, 201, "{:?}", link.body);
    link.body["data"]["state"].as_str().unwrap().to_string()
}

async fn callback_with_state(
    p: &ProvisioningEnv,
    state: &str,
    code: &str,
    phone: &str,
) -> ApiResponse {
    let body =
        json!({"code": code, "wabaId": WABA, "phoneNumberId": phone, "state": state}).to_string();
    p.invoke(http_event(
        "POST",
        "/api/signup/callback",
        "",
        None,
        Some(&body),
    ))
    .await
}

async fn total(p: &ProvisioningEnv, account: &AccountId, status: Option<Status>) -> u64 {
    let page = Page {
        limit: 100,
        offset: 0,
    };
    p.env.store.list(account, status, page).await.unwrap().total as u64
}

fn statuses(responses: &[ApiResponse]) -> Vec<u16> {
    let mut statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    statuses.sort();
    statuses
}

#[tokio::test]
async fn one_signup_link_state_used_by_twenty_concurrent_callbacks_creates_one_number() {
    // Given a signup link, and twenty phones at Meta each with its own code
    let p = ProvisioningEnv::new().await;
    let (account, key) = p.env.account_with_key("acme").await;
    let state = signup_link_state(&p, &key).await;
    let phones: Vec<String> = (0..CALLERS)
        .map(|i| format!("4100000000000{i:02}"))
        .collect();
    let codes: Vec<String> = phones.iter().map(|ph| p.meta_phone(WABA, ph)).collect();

    // When twenty callbacks present the same state at once
    let responses = join_all(
        phones
            .iter()
            .zip(&codes)
            .map(|(phone, code)| callback_with_state(&p, &state, code, phone)),
    )
    .await;

    // Then exactly one number is created; every other caller gets the documented 401
    let mut expected = vec![401; CALLERS - 1];
    expected.push(202);
    expected.sort();
    assert_eq!(statuses(&responses), expected, "{responses:?}");
    for refused in responses.iter().filter(|r| r.status == 401) {
        assert_eq!(refused.body["error"]["code"], "unauthorized");
        assert_eq!(refused.headers["www-authenticate"], "Bearer");
    }
    assert_eq!(total(&p, &account, None).await, 1);
    assert_eq!(total(&p, &account, Some(Status::Pending)).await, 1);
    // and only the winner's phone is guarded: the losers' transactions left nothing behind
    let created = responses.iter().find(|r| r.status == 202).unwrap();
    let guarded: Vec<&String> = {
        let mut guarded = Vec::new();
        for phone in &phones {
            if p.env.store.phone_owner(phone).await.unwrap().is_some() {
                guarded.push(phone);
            }
        }
        guarded
    };
    assert_eq!(guarded, [&created.body["data"]["phoneNumberId"]]);
}

#[tokio::test]
async fn one_state_sent_twenty_times_for_the_same_phone_creates_one_number_and_refuses_the_rest() {
    // Given a signup link and one phone at Meta (a double-submitting browser, or a replay)
    let p = ProvisioningEnv::new().await;
    let (account, key) = p.env.account_with_key("acme").await;
    let state = signup_link_state(&p, &key).await;
    let phone = "410000000000100";
    let code = p.meta_phone(WABA, phone);

    // When twenty callbacks present the same state and phone at once
    let responses =
        join_all((0..CALLERS).map(|_| callback_with_state(&p, &state, &code, phone))).await;

    // Then one number exists and every other callback is refused: the state is single use,
    // whether it loses the race to the transaction or arrives after the number exists. At most
    // one repeat, the one that took the restart lease of the not yet started number, is let
    // through (200) and sends its exchange again.
    let statuses = statuses(&responses);
    let count = |status: u16| statuses.iter().filter(|s| **s == status).count();
    assert_eq!(count(202), 1, "{responses:?}");
    assert!(count(200) <= 1, "{responses:?}");
    assert_eq!(
        count(202) + count(200) + count(401),
        CALLERS,
        "{responses:?}"
    );
    assert_eq!(total(&p, &account, None).await, 1);

    // and the number, its first message sent once or twice, exchanges the code once
    let id = responses
        .iter()
        .find(|r| r.status == 202)
        .and_then(|r| r.body["data"]["id"].as_str())
        .unwrap()
        .to_string();
    let number = p.settled(&account, &id, Duration::from_secs(60)).await;
    assert_eq!(number.status, Status::Active, "{number:?}");
    let spent: Vec<u16> = p
        .meta
        .calls_to(Route::ExchangeCode)
        .iter()
        .map(|c| c.status)
        .collect();
    assert_eq!(spent.iter().filter(|s| **s == 200).count(), 1, "{spent:?}");

    // and a replay after the race is refused too
    let replay = callback_with_state(&p, &state, &code, phone).await;
    assert_eq!(replay.status, 401, "{:?}", replay.body);
}

#[tokio::test]
async fn one_phone_signed_up_in_two_accounts_at_once_goes_to_one_and_the_other_fails_as_in_use() {
    // Given two accounts and one phone, both in control of it at Meta
    let p = ProvisioningEnv::new().await;
    let (account_a, key_a) = p.env.account_with_key("a").await;
    let (account_b, key_b) = p.env.account_with_key("b").await;
    let phone = "410000000000200";
    let code_a = p.meta_phone(WABA, phone);
    let code_b = p.meta.issue_code(&[WABA]);

    // When both accounts' callbacks for it run at once
    let (a, b) = futures::join!(
        p.callback(&key_a, &code_a, WABA, phone),
        p.callback(&key_b, &code_b, WABA, phone)
    );

    // Then both are answered as new numbers; one holds the phone and becomes ACTIVE, the other
    // fails at its exchange as in use elsewhere
    assert_eq!(statuses(&[a.clone(), b.clone()]), [202, 202], "{a:?} {b:?}");
    let owner = p.env.store.phone_owner(phone).await.unwrap().unwrap();
    let (winner, loser) = if owner.account_id == account_a {
        ((&account_a, &a), (&account_b, &b))
    } else {
        ((&account_b, &b), (&account_a, &a))
    };
    assert_eq!(owner.number_id.as_str(), winner.1.body["data"]["id"]);
    let won = p
        .settled(
            winner.0,
            winner.1.body["data"]["id"].as_str().unwrap(),
            SETTLE,
        )
        .await;
    let lost = p
        .settled(
            loser.0,
            loser.1.body["data"]["id"].as_str().unwrap(),
            SETTLE,
        )
        .await;
    assert_eq!(won.status, Status::Active);
    assert_eq!(lost.status, Status::Failed);
    assert_eq!(
        lost.failure_reason.map(|r| r.code),
        Some("phone_number_in_use".into())
    );
    let numbers = total(&p, &account_a, None).await + total(&p, &account_b, None).await;
    assert_eq!(numbers, 2);
    assert_eq!(
        p.env.store.phone_owner(phone).await.unwrap().unwrap(),
        owner
    );
}

// ---- DELETE and Meta's ban at once ----------------------------------------------------------

async fn meta_router(p: &ProvisioningEnv) -> axum::Router {
    let env = p
        .env
        .stack
        .function_environment(&p.env.template, "MetaWebhookFunction")
        .expect("MetaWebhookFunction environment");
    let arn = env.get("META_APP_SECRET_ARN").expect("META_APP_SECRET_ARN");
    let secrets = muchaw_local::identity::as_function(
        "MetaWebhookFunction",
        read_app_secrets(&p.env.function_secrets(), arn),
    )
    .await
    .expect("app secrets");
    p.env.template_routed(meta_webhook::routes(MetaWebhook {
        store: p.env.function_store(),
        queue: p.queue.clone(),
        secrets: muchaw_shared::secret_cache::SecretCache::fixed(secrets),
    }))
}

async fn ban(p: &ProvisioningEnv, router: axum::Router, waba: &str) -> ApiResponse {
    let body =
        json!({"object": "whatsapp_business_account", "entry": [{"id": waba, "time": 1795600000,
        "changes": [{"field": "account_update", "value": {"event": "DISABLED_UPDATE",
            "ban_info": {"waba_ban_state": "DISABLE", "waba_ban_date": "2026-11-25"}}}]}]})
        .to_string();
    let headers = json!({
        "host": "api.example.com",
        "content-type": "application/json",
        "x-hub-signature-256": meta_webhook::sign(p.meta.app_secret(), body.as_bytes()),
    });
    let event = authorization_event("POST", "/webhooks/meta", "", headers, Some(&body));
    parse_response(invoke_router(router, event).await)
}

fn sent_for(p: &ProvisioningEnv, queue: Queue, number: &Number) -> Vec<Value> {
    p.queue
        .sent
        .lock()
        .unwrap()
        .iter()
        .filter(|(q, _)| *q == queue)
        .map(|(_, body)| serde_json::from_str::<Value>(body).unwrap())
        .filter(|m| m["numberId"] == number.id.as_str())
        .collect()
}

#[tokio::test]
async fn a_delete_and_a_ban_of_one_number_at_once_end_disconnected_with_one_event_per_change() {
    let p = ProvisioningEnv::new().await;
    let (account, key) = p.env.account_with_key("acme").await;
    const ROUNDS: usize = 6;
    let mut orders = Vec::new();
    for round in 0..ROUNDS {
        // Given an ACTIVE number, alone on its WABA
        let waba = format!("42000000000000{round}");
        let mut number = muchaw_tests::sample_number(&account, Status::Active, 5);
        number.waba_id = waba.clone();
        p.env.store.import_numbers(&[number.clone()]).await.unwrap();
        let router = meta_router(&p).await;

        // When the customer deletes it while Meta's ban of its WABA arrives
        let path = format!("/api/numbers/{}", number.id);
        let (deleted, banned) = futures::join!(
            p.invoke(http_event("DELETE", &path, "", Some(&key), None)),
            ban(&p, router, &waba)
        );

        // Then both calls succeed and the number ends DISCONNECTED (final)
        assert_eq!(deleted.status, 200, "{:?}", deleted.body);
        assert_eq!(deleted.body["data"]["status"], "DISCONNECTED");
        assert_eq!(banned.status, 200);
        let stored = p.number(&account, number.id.as_str()).await;
        assert_eq!(stored.status, Status::Disconnected);

        // with one event per change made: DISCONNECTED once, BANNED at most once and first
        let events: Vec<String> = sent_for(&p, Queue::Events, &number)
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_string())
            .collect();
        match events.as_slice() {
            [only] => assert_eq!(only, "number.disconnected"),
            [first, second] => {
                assert_eq!(first, "number.banned");
                assert_eq!(second, "number.disconnected");
            }
            other => panic!("round {round}: events {other:?}"),
        }
        orders.push(events.len());
        // and its teardown queued once
        assert_eq!(sent_for(&p, Queue::Teardown, &number).len(), 1);
    }
    // The counters are exact: every number counted once, as DISCONNECTED
    assert_eq!(total(&p, &account, None).await, ROUNDS as u64);
    assert_eq!(
        total(&p, &account, Some(Status::Disconnected)).await,
        ROUNDS as u64
    );
    for status in [Status::Active, Status::Banned, Status::Pending] {
        assert_eq!(total(&p, &account, Some(status)).await, 0, "{status}");
    }
    eprintln!("events per round (1: DELETE first, 2: ban first): {orders:?}");
}
