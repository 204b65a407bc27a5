//! Reconnect: a new signup of a phone `ACTIVE` or `BANNED` in the same account, through the real
//! callback, step handlers, moto (DynamoDB, SQS, Secrets Manager) and the fake Meta.

use std::time::Duration;

use fake_meta::Route;
use muchaw_shared::domain::{AccountId, Number, Status};
use muchaw_shared::ports::{MetaGraph, Queue, TokenVault};
use muchaw_tests::http_event;
use muchaw_tests::provisioning::ProvisioningEnv;
use serde_json::{Value, json};

const WABA: &str = "100000000000011";
// Generous: a bound on a wait, not a timing assertion (the machine may be loaded).
const SETTLE: Duration = Duration::from_secs(240);

/// The environment, its pipeline running. Meta's codes live 30 s; on a loaded machine the
/// exchange can start later than that, and code expiry is not what these tests are about.
async fn env() -> ProvisioningEnv {
    let p = ProvisioningEnv::new().await;
    p.meta.set_code_lifetime(Duration::from_secs(600));
    p.start();
    p
}

/// A number signed up with `key` and provisioned to `ACTIVE`; the fake Meta's call log cleared.
async fn active_number(p: &ProvisioningEnv, account: &AccountId, key: &str, phone: &str) -> String {
    let code = p.meta_phone(WABA, phone);
    let response = p.callback(key, &code, WABA, phone).await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    let id = response.body["data"]["id"].as_str().unwrap().to_string();
    let number = p.settled(account, &id, SETTLE).await;
    assert_eq!(number.status, Status::Active, "{number:?}");
    p.meta.clear_calls();
    id
}

/// Waits (bounded) until the number's reconnect is no longer in progress.
async fn reconnect_settled(p: &ProvisioningEnv, account: &AccountId, id: &str) -> Number {
    p.start();
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let number = p.number(account, id).await;
        if number.reconnect.is_none() || tokio::time::Instant::now() > deadline {
            return number;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn meta_routes(p: &ProvisioningEnv) -> Vec<Route> {
    p.meta.calls().into_iter().filter_map(|c| c.route).collect()
}

fn event_types(p: &ProvisioningEnv, number_id: &str) -> Vec<String> {
    p.queue
        .sent
        .lock()
        .unwrap()
        .iter()
        .filter(|(q, _)| *q == Queue::Events)
        .map(|(_, body)| serde_json::from_str::<Value>(body).unwrap())
        .filter(|e| e["numberId"] == number_id)
        .map(|e| e["type"].as_str().unwrap_or_default().to_string())
        .collect()
}

async fn secret_versions(p: &ProvisioningEnv, number_id: &str) -> usize {
    let client = aws_sdk_secretsmanager::Client::new(&p.env.sdk);
    let listed = client
        .list_secret_version_ids()
        .secret_id(p.token_secret_name(number_id))
        .include_deprecated(true)
        .send()
        .await
        .expect("secret versions");
    listed.versions().len()
}

#[tokio::test]
async fn a_new_signup_of_an_active_number_reconnects_it_with_a_new_token_version() {
    let p = env().await;
    let (account, key) = p.env.account_with_key("acme").await;
    let id = active_number(&p, &account, &key, "230000000000001").await;
    let number_id = muchaw_shared::domain::NumberId::from(id.clone());
    let first_token = p.provisioner.vault.load(&number_id).await.unwrap().unwrap();

    let code = p.meta.issue_code(&[WABA]);
    let response = p.callback(&key, &code, WABA, "230000000000001").await;

    assert_eq!(response.status, 202, "{:?}", response.body);
    assert_eq!(response.body["data"]["id"], id.as_str());
    assert_eq!(response.body["data"]["status"], "ACTIVE");
    assert_eq!(response.body["data"]["reconnect"]["step"], "EXCHANGE_TOKEN");
    let number = reconnect_settled(&p, &account, &id).await;
    assert_eq!(number.status, Status::Active);
    assert!(number.reconnected_at.is_some(), "{number:?}");
    assert_eq!(
        meta_routes(&p),
        [Route::ExchangeCode, Route::SubscribeApp, Route::GetPhone],
        "no register: Meta says the number is registered"
    );
    let now_stored = p.provisioner.vault.load(&number_id).await.unwrap().unwrap();
    assert_ne!(now_stored.token, first_token.token);
    assert_eq!(now_stored.pin, first_token.pin);
    assert_eq!(secret_versions(&p, &id).await, 2);
    assert!(event_types(&p, &id).contains(&"number.reconnected".to_string()));
    let view = p
        .env
        .get(Some(&key), &format!("/api/numbers/{id}"), "")
        .await;
    assert!(
        view.body["data"]["reconnectedAt"].is_string(),
        "{:?}",
        view.body
    );
    assert!(view.body["data"].get("reconnect").is_none());
}

#[tokio::test]
async fn a_reconnect_registers_the_number_again_only_when_meta_says_it_is_not_registered() {
    let p = env().await;
    let (account, key) = p.env.account_with_key("acme").await;
    let id = active_number(&p, &account, &key, "230000000000002").await;
    let number_id = muchaw_shared::domain::NumberId::from(id.clone());
    let secrets = p.provisioner.vault.load(&number_id).await.unwrap().unwrap();
    p.provisioner
        .meta
        .deregister(&secrets.token, "230000000000002")
        .await
        .expect("deregistered at Meta");
    p.meta.clear_calls();

    let code = p.meta.issue_code(&[WABA]);
    let response = p.callback(&key, &code, WABA, "230000000000002").await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    let number = reconnect_settled(&p, &account, &id).await;

    assert!(number.reconnected_at.is_some(), "{number:?}");
    assert!(meta_routes(&p).contains(&Route::Register));
    assert!(p.meta.phone("230000000000002").unwrap().registered);
    assert_eq!(number.register_calls.len(), 2, "signup and reconnect");
}

#[tokio::test]
async fn a_banned_number_is_reconnected_and_stays_banned() {
    let p = env().await;
    let (account, key) = p.env.account_with_key("acme").await;
    let id = active_number(&p, &account, &key, "230000000000003").await;
    let number = p.number(&account, &id).await;
    p.env.change_status(&number, Status::Banned).await;

    let code = p.meta.issue_code(&[WABA]);
    let response = p.callback(&key, &code, WABA, "230000000000003").await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    let number = reconnect_settled(&p, &account, &id).await;

    assert_eq!(number.status, Status::Banned);
    assert!(number.reconnected_at.is_some());
}

#[tokio::test]
async fn a_signup_link_reconnects_once_and_records_the_number() {
    let p = env().await;
    let (account, key) = p.env.account_with_key("acme").await;
    let id = active_number(&p, &account, &key, "230000000000004").await;
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
    let code = p.meta.issue_code(&[WABA]);
    let body =
        json!({"code": code, "wabaId": WABA, "phoneNumberId": "230000000000004", "state": state})
            .to_string();
    let callback = |body: String| {
        p.invoke(http_event(
            "POST",
            "/api/signup/callback",
            "",
            None,
            Some(&body),
        ))
    };

    let first = callback(body.clone()).await;
    let again = callback(body).await;

    assert_eq!(first.status, 202, "{:?}", first.body);
    assert_eq!(first.body["data"]["id"], id.as_str());
    assert_eq!(again.status, 401, "{:?}", again.body);
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
        session.body["data"]["numberId"],
        id.as_str(),
        "{:?}",
        session.body
    );
    let number = reconnect_settled(&p, &account, &id).await;
    assert!(number.reconnected_at.is_some());
}

#[tokio::test]
async fn a_signup_in_another_account_of_an_active_phone_fails_as_in_use_and_reconnects_nothing() {
    let p = env().await;
    let (account, key) = p.env.account_with_key("owner").await;
    let (other, other_key) = p.env.account_with_key("other").await;
    let id = active_number(&p, &account, &key, "230000000000005").await;
    let before = p.number(&account, &id).await;

    let code = p.meta.issue_code(&[WABA]);
    let response = p.callback(&other_key, &code, WABA, "230000000000005").await;

    // A new number of the other account, which fails once its token has read the phone
    assert_eq!(response.status, 202, "{:?}", response.body);
    let theirs = response.body["data"]["id"].as_str().unwrap();
    let failed = p.settled(&other, theirs, SETTLE).await;
    assert_eq!(failed.status, Status::Failed);
    assert_eq!(
        failed.failure_reason.map(|r| r.code),
        Some("phone_number_in_use".into())
    );
    // and the owner's number is left as it was: no reconnect, and Meta asked nothing but the
    // other signup's exchange and its read of the phone
    assert_eq!(p.number(&account, &id).await, before);
    assert_eq!(meta_routes(&p), [Route::ExchangeCode, Route::GetPhone]);
}

#[tokio::test]
async fn a_second_signup_while_a_reconnect_runs_restarts_nothing() {
    let p = env().await;
    let (account, key) = p.env.account_with_key("acme").await;
    let id = active_number(&p, &account, &key, "230000000000006").await;
    // The pipeline is running; hold the exchange so the reconnect is still under way.
    p.meta
        .set_latency(Some(Route::ExchangeCode), Duration::from_secs(3));

    let first = p
        .callback(&key, &p.meta.issue_code(&[WABA]), WABA, "230000000000006")
        .await;
    let second = p
        .callback(&key, &p.meta.issue_code(&[WABA]), WABA, "230000000000006")
        .await;

    assert_eq!(first.status, 202, "{:?}", first.body);
    assert_eq!(second.status, 200, "{:?}", second.body);
    assert_eq!(second.body["data"]["id"], id.as_str());
    let reconnect_exchanges = p
        .queue
        .sent
        .lock()
        .unwrap()
        .iter()
        .filter(|(q, body)| {
            *q == Queue::Step(muchaw_shared::domain::Step::ExchangeToken) && body.contains("rcn_")
        })
        .count();
    assert_eq!(reconnect_exchanges, 1);
}
