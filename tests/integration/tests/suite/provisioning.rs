//! From the signup callback to ACTIVE, through the real step handlers, moto's queues and the
//! fake Meta: the happy path, Meta's faults at every step, duplicates and crashes.

use std::time::Duration;

use fake_meta::{Fault, Route};
use muchaw_shared::domain::{AccountId, Status, Step};
use muchaw_shared::ports::{NumberReader, Queue};
use muchaw_tests::ApiResponse;
use muchaw_tests::provisioning::{META_TIMEOUT, ProvisioningEnv};
use serde_json::Value;

const WABA: &str = "100000000000001";
const SETTLE: Duration = Duration::from_secs(60);

/// The documented sequence (META.md), in order: the exchange reads the phone with its new token
/// (the caller controls it), and the profile is read again beside the PIN.
const DOCUMENTED: [Route; 6] = [
    Route::ExchangeCode,
    Route::GetPhone,
    Route::SubscribeApp,
    Route::Register,
    Route::SetPin,
    Route::GetPhone,
];

/// How many times the documented sequence calls `route`.
fn documented_calls(route: Route) -> usize {
    DOCUMENTED.iter().filter(|r| **r == route).count()
}

/// The routes asked with `step`'s: the PIN step reads the profile beside the PIN, so either of
/// the two may be the last one Meta sees when one of them fails the number.
fn asked_with(step: Step) -> Vec<Route> {
    match step {
        Step::ConfigurePin | Step::FetchProfile => vec![Route::SetPin, Route::GetPhone],
        other => vec![route_of(other)],
    }
}

/// The documented calls once each: in order up to the register; the PIN and the profile read
/// are asked together, so Meta may see either first.
fn assert_documented_once_each(routes: &[Route]) {
    assert_eq!(routes.len(), DOCUMENTED.len(), "{routes:?}");
    assert_eq!(routes[..4], DOCUMENTED[..4], "{routes:?}");
    assert!(
        routes[4..].contains(&Route::SetPin) && routes[4..].contains(&Route::GetPhone),
        "{routes:?}"
    );
}

fn route_of(step: Step) -> Route {
    match step {
        Step::ExchangeToken => Route::ExchangeCode,
        Step::SubscribeWaba => Route::SubscribeApp,
        Step::RegisterNumber => Route::Register,
        Step::ConfigurePin => Route::SetPin,
        Step::FetchProfile => Route::GetPhone,
        Step::ActivateNumber => unreachable!("activation does not call Meta"),
    }
}

async fn signup(p: &ProvisioningEnv, phone: &str) -> (AccountId, String, String) {
    let (account, key) = p.env.account_with_key("acme").await;
    let code = p.meta_phone(WABA, phone);
    let response = p.callback(&key, &code, WABA, phone).await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    assert_eq!(response.body["data"]["status"], "PENDING");
    let id = response.body["data"]["id"].as_str().unwrap().to_string();
    (account, key, id)
}

fn meta_routes(p: &ProvisioningEnv) -> Vec<Route> {
    p.meta.calls().into_iter().filter_map(|c| c.route).collect()
}

/// An API request without a body, with `key`.
async fn call(p: &ProvisioningEnv, method: &str, path: &str, key: &str) -> ApiResponse {
    p.invoke(muchaw_tests::http_event(method, path, "", Some(key), None))
        .await
}

fn events_of(p: &ProvisioningEnv, number_id: &str) -> Vec<Value> {
    p.queue
        .sent
        .lock()
        .unwrap()
        .iter()
        .filter(|(q, _)| *q == Queue::Events)
        .map(|(_, body)| serde_json::from_str::<Value>(body).unwrap())
        .filter(|e| e["numberId"] == number_id)
        .collect()
}

#[tokio::test]
async fn a_signup_becomes_active_with_the_documented_meta_calls_once_each() {
    let p = ProvisioningEnv::new().await;
    let (account, key, id) = signup(&p, "200000000000001").await;
    let number = p.settled(&account, &id, SETTLE).await;

    assert_eq!(number.status, Status::Active, "{number:?}");
    assert_documented_once_each(&meta_routes(&p));
    let view = p
        .env
        .get(Some(&key), &format!("/api/numbers/{id}"), "")
        .await
        .body["data"]
        .clone();
    assert_eq!(view["status"], "ACTIVE");
    assert_eq!(view["displayNumber"], "+55 11 900000001");
    assert_eq!(view["qualityRating"], "GREEN");
    assert_eq!(view["displayName"], "Acme");
    assert!(view.get("provisioningStep").is_none());
    let events = events_of(&p, &id);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "number.activated");
    assert_eq!(events[0]["data"]["status"], "ACTIVE");
}

#[tokio::test]
async fn the_register_step_writes_its_count_on_the_snapshot_its_message_carried_through_sqs() {
    // Given a signup taken through the exchange and the subscription, its register message in
    // the queue (moto), sent with the number's snapshot
    let p = ProvisioningEnv::new().await;
    let (account, _, id) = signup(&p, "200000000000061").await;
    p.run_queued(Step::ExchangeToken).await;
    p.run_queued(Step::SubscribeWaba).await;
    p.env.dynamo_operations.reset();

    // When the register step receives it as Lambda's event source hands it over
    let response = p.run_queued(Step::RegisterNumber).await;

    // Then the step wrote its count and its result, reading nothing from the table first
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(p.env.dynamo_operations.sent(), vec!["PutItem", "PutItem"]);
    let number = p.number(&account, &id).await;
    assert_eq!(number.provisioning_step, Some(Step::ConfigurePin));
    assert!(number.registered);
    assert_eq!(number.register_calls.len(), 1);
    assert_eq!(p.meta.calls_to(Route::Register).len(), 1);
}

#[tokio::test]
async fn an_expiring_token_sets_token_expires_at() {
    let p = ProvisioningEnv::new().await;
    let (account, key) = p.env.account_with_key("acme").await;
    p.meta_phone(WABA, "200000000000002");
    let code = p.meta.issue_code_expiring(&[WABA], 5_183_944);
    let response = p.callback(&key, &code, WABA, "200000000000002").await;
    let id = response.body["data"]["id"].as_str().unwrap().to_string();
    let number = p.settled(&account, &id, SETTLE).await;
    assert_eq!(number.status, Status::Active);
    let expires = number.token_expires_at.expect("tokenExpiresAt");
    let days = (expires - chrono::Utc::now()).num_days();
    assert!((59..=60).contains(&days), "{days}");
}

#[tokio::test]
async fn two_transient_failures_at_every_step_still_end_active_without_repeated_side_effects() {
    let p = ProvisioningEnv::new().await;
    for step in [
        Step::ExchangeToken,
        Step::SubscribeWaba,
        Step::RegisterNumber,
        Step::ConfigurePin,
        Step::FetchProfile,
    ] {
        p.meta.fail_next(route_of(step), 2, Fault::transient_5xx());
    }
    let (account, _, id) = signup(&p, "200000000000003").await;
    let number = p.settled(&account, &id, Duration::from_secs(120)).await;
    assert_eq!(number.status, Status::Active, "{number:?}");
    // Every request that changes something at Meta is sent three times: two failures and one
    // success. The phone is read more often: at the exchange (where its two failures land), a
    // register retry reads it first, since a register that answered 5xx may have taken effect
    // (and a blind repeat spends Meta's budget), and the PIN's first request had a read beside
    // it, which its failure left unused.
    // Each route once: the sequence's first five are every route it calls.
    for route in DOCUMENTED[..5].iter().copied() {
        let answers: Vec<u16> = p.meta.calls_to(route).iter().map(|c| c.status).collect();
        let failed = answers.iter().filter(|s| **s >= 500).count();
        let succeeded = answers.iter().filter(|s| **s == 200).count();
        assert_eq!(failed, 2, "{route:?}: {answers:?}");
        if route == Route::GetPhone {
            let read_at_the_exchange = 1;
            let reads_before_a_repeated_register = 2;
            let read_beside_the_failed_pin = 1;
            assert_eq!(
                succeeded,
                read_at_the_exchange
                    + 1
                    + reads_before_a_repeated_register
                    + read_beside_the_failed_pin,
                "{route:?}: {answers:?}"
            );
        } else {
            assert_eq!((failed, succeeded), (2, 1), "{route:?}: {answers:?}");
            assert_eq!(answers.len(), 3, "{route:?}: {answers:?}");
        }
    }
    let successful_exchanges = p
        .meta
        .calls_to(Route::ExchangeCode)
        .iter()
        .filter(|c| c.status == 200)
        .count();
    assert_eq!(successful_exchanges, 1, "the code is exchanged once");
    let successful_registers = p
        .meta
        .calls_to(Route::Register)
        .iter()
        .filter(|c| c.status == 200)
        .count();
    assert_eq!(successful_registers, 1);
    assert_eq!(events_of(&p, &id).len(), 1);
}

#[tokio::test]
async fn rate_limits_are_retried() {
    let p = ProvisioningEnv::new().await;
    p.meta.fail_next(Route::Register, 1, Fault::rate_limited());
    let (account, _, id) = signup(&p, "200000000000004").await;
    let number = p.settled(&account, &id, SETTLE).await;
    assert_eq!(number.status, Status::Active);
}

#[tokio::test]
async fn a_permanent_error_at_any_step_fails_the_number_with_that_step_and_code() {
    let p = ProvisioningEnv::new().await;
    let (account, key) = p.env.account_with_key("acme").await;
    let steps = [
        Step::ExchangeToken,
        Step::SubscribeWaba,
        Step::RegisterNumber,
        Step::ConfigurePin,
        Step::FetchProfile,
    ];
    for (i, step) in steps.into_iter().enumerate() {
        let phone = format!("20000000000010{i}");
        let code = p.meta_phone(WABA, &phone);
        let fault = match step {
            Step::RegisterNumber => Fault::pin_mismatch(),
            Step::ExchangeToken => Fault::Error {
                http_status: 400,
                code: 100,
                subcode: None,
                is_transient: false,
                message: "Invalid parameter".into(),
            },
            _ => Fault::token_expired(),
        };
        p.meta.clear_calls();
        if step == Step::FetchProfile {
            // The exchange's read of the phone answers; the profile's is refused.
            p.meta
                .fail_next(Route::GetPhone, 1, Fault::Delay(Duration::ZERO));
        }
        p.meta.fail_next(route_of(step), 1, fault.clone());
        let response = p.callback(&key, &code, WABA, &phone).await;
        let id = response.body["data"]["id"].as_str().unwrap().to_string();
        let number = p.settled(&account, &id, SETTLE).await;

        assert_eq!(number.status, Status::Failed, "{step}: {number:?}");
        let reason = number.failure_reason.clone().expect("failureReason");
        assert_eq!(reason.step, step.as_str());
        let Fault::Error { code, subcode, .. } = fault else {
            unreachable!()
        };
        let expected = match subcode {
            Some(s) => format!("{code}/{s}"),
            None => code.to_string(),
        };
        assert_eq!(reason.code, expected, "{step}");
        // After the failure only its teardown talks to Meta (undoing what was done there).
        let routes: Vec<Route> = meta_routes(&p)
            .into_iter()
            .filter(|r| !matches!(r, Route::Deregister | Route::UnsubscribeApp))
            .collect();
        assert!(
            routes
                .last()
                .is_some_and(|last| asked_with(step).contains(last)),
            "{step}: no provisioning call to Meta after the failure: {routes:?}"
        );
        let events = events_of(&p, &id);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["type"], "number.failed");
        assert_eq!(
            events[0]["data"]["failureReason"]["code"],
            expected.as_str()
        );
    }
}

#[tokio::test]
async fn every_message_delivered_twice_still_makes_one_transition_and_one_event() {
    let p = ProvisioningEnv::new().await;
    p.deliver_everything_twice();
    let (account, _, id) = signup(&p, "200000000000005").await;
    let number = p.settled(&account, &id, SETTLE).await;
    assert_eq!(number.status, Status::Active);
    // Let any duplicate still in flight finish.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // At-least-once publication may repeat the message, never the event: one id, one type.
    let events = events_of(&p, &id);
    let ids: std::collections::BTreeSet<&str> =
        events.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(ids.len(), 1, "{events:?}");
    assert!(events.iter().all(|e| e["type"] == "number.activated"));
    let successful_exchanges = p
        .meta
        .calls_to(Route::ExchangeCode)
        .iter()
        .filter(|c| c.status == 200)
        .count();
    assert_eq!(successful_exchanges, 1);
    let active = p
        .env
        .store
        .list(
            &account,
            Some(Status::Active),
            muchaw_shared::ports::Page {
                limit: 5,
                offset: 0,
            },
        )
        .await
        .unwrap();
    assert_eq!(active.total, 1);
}

#[tokio::test]
async fn a_crash_between_a_meta_call_and_the_next_message_finishes_on_redelivery() {
    let p = ProvisioningEnv::new().await;
    for step in [
        Step::SubscribeWaba,
        Step::RegisterNumber,
        Step::ConfigurePin,
        Step::FetchProfile,
        Step::ActivateNumber,
    ] {
        p.queue.fail_sends(Queue::Step(step), 1);
    }
    let (account, _, id) = signup(&p, "200000000000006").await;
    let number = p.settled(&account, &id, Duration::from_secs(90)).await;
    assert_eq!(number.status, Status::Active, "{number:?}");
    let routes = meta_routes(&p);
    for route in DOCUMENTED {
        assert_eq!(
            routes.iter().filter(|r| **r == route).count(),
            documented_calls(route),
            "{route:?} repeated"
        );
    }
}

#[tokio::test]
async fn a_crash_before_publishing_the_activation_event_publishes_it_on_redelivery() {
    let p = ProvisioningEnv::new().await;
    p.queue.fail_sends(Queue::Events, 1);
    let (account, _, id) = signup(&p, "200000000000007").await;
    let number = p.settled(&account, &id, SETTLE).await;
    assert_eq!(number.status, Status::Active);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while events_of(&p, &id).is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let events = events_of(&p, &id);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "number.activated");
}

#[tokio::test]
async fn a_meta_call_hanging_past_the_client_timeout_is_retried_not_lost() {
    let p = ProvisioningEnv::new().await;
    p.meta.fail_next(
        Route::Register,
        1,
        Fault::Delay(META_TIMEOUT + Duration::from_secs(2)),
    );
    let (account, _, id) = signup(&p, "200000000000008").await;
    let number = p.settled(&account, &id, SETTLE).await;
    assert_eq!(number.status, Status::Active, "{number:?}");
    assert!(p.meta.calls_to(Route::Register).len() >= 2);
}

#[tokio::test]
async fn display_name_not_ready_keeps_the_number_pending_and_retrying() {
    let p = ProvisioningEnv::new().await;
    p.meta
        .fail_next(Route::Register, 2, Fault::display_name_not_ready());
    let (account, key, id) = signup(&p, "200000000000009").await;
    p.start();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let view = p
        .env
        .get(Some(&key), &format!("/api/numbers/{id}"), "")
        .await;
    if view.body["data"]["status"] == "PENDING" {
        assert!(view.body["data"]["provisioningStep"].is_string());
    }
    let number = p.settled(&account, &id, SETTLE).await;
    assert_eq!(number.status, Status::Active);
}

#[tokio::test]
async fn a_name_in_review_holds_register_within_its_blind_share_until_meta_approves_it() {
    let p = ProvisioningEnv::new().await;
    let phone = "200000000000010";
    p.meta_phone(WABA, phone);
    // Meta answers 2388001 to register while it reviews the display name.
    p.meta.set_name_status(phone, "PENDING_REVIEW");
    let (account, key, id) = signup(&p, phone).await;

    let waiting = until(&p, &account, &id, |n| {
        n.register_calls.len() >= muchaw_shared::domain::lifecycle::BLIND_REGISTER_CALLS
            && n.name_status.is_some()
    })
    .await;
    assert_eq!(waiting.status, Status::Pending, "{waiting:?}");
    let view = p
        .env
        .get(Some(&key), &format!("/api/numbers/{id}"), "")
        .await;
    assert_eq!(view.body["data"]["nameStatus"], "PENDING_REVIEW");
    assert_eq!(view.body["data"]["pendingReason"]["code"], "100/2388001");
    // While the phone shows nothing new, the step keeps reading it without registering.
    let reads_before = p.meta.calls_to(Route::GetPhone).len();
    let more_reads = until(&p, &account, &id, |_| {
        p.meta.calls_to(Route::GetPhone).len() >= reads_before + 3
    })
    .await;
    assert_eq!(more_reads.status, Status::Pending);
    assert_eq!(
        p.meta.calls_to(Route::Register).len(),
        muchaw_shared::domain::lifecycle::BLIND_REGISTER_CALLS
    );

    // Meta approves the name (no callback configured: only the phone shows it).
    p.meta.set_name_status(phone, "APPROVED");
    let number = p.settled(&account, &id, SETTLE).await;

    assert_eq!(number.status, Status::Active, "{number:?}");
    assert_eq!(number.name_status.as_deref(), Some("APPROVED"));
    assert_eq!(
        p.meta.calls_to(Route::Register).len(),
        muchaw_shared::domain::lifecycle::BLIND_REGISTER_CALLS + 1
    );
}

/// Waits (bounded) until `done` holds for the number, and returns it.
async fn until(
    p: &ProvisioningEnv,
    account: &AccountId,
    id: &str,
    done: impl Fn(&muchaw_shared::domain::Number) -> bool,
) -> muchaw_shared::domain::Number {
    p.start();
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let number = p.number(account, id).await;
        if done(&number) || tokio::time::Instant::now() > deadline {
            return number;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_failed_number_is_torn_down_at_meta_keeps_its_token_and_a_retry_brings_it_to_active() {
    let p = ProvisioningEnv::new().await;
    p.meta.fail_next(Route::SetPin, 1, Fault::pin_mismatch());
    let (account, key, id) = signup(&p, "200000000000301").await;

    let failed = until(&p, &account, &id, |n| n.torn_down_at.is_some()).await;
    assert_eq!(failed.status, Status::Failed);
    assert_eq!(
        failed.failure_reason.as_ref().map(|r| r.step.as_str()),
        Some("CONFIGURE_PIN")
    );
    assert!(!failed.subscribed && !failed.registered, "{failed:?}");
    assert_eq!(failed.token_deleted_at, None, "kept for a retry");
    assert_eq!(p.meta.calls_to(Route::Deregister).len(), 1);
    assert_eq!(p.meta.calls_to(Route::UnsubscribeApp).len(), 1);

    let retried = call(&p, "POST", &format!("/api/numbers/{id}/retry"), &key).await;
    assert_eq!(retried.status, 202, "{:?}", retried.body);
    assert_eq!(retried.body["data"]["provisioningStep"], "SUBSCRIBE_WABA");

    let active = p.settled(&account, &id, SETTLE).await;
    assert_eq!(active.status, Status::Active, "{active:?}");
    assert!(active.subscribed && active.registered);
    let types: Vec<String> = events_of(&p, &id)
        .iter()
        .map(|e| e["type"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        types,
        vec!["number.failed", "number.retried", "number.activated"]
    );
    assert_eq!(
        p.meta.calls_to(Route::ExchangeCode).len(),
        1,
        "the code is not used again"
    );
}

#[tokio::test]
async fn a_failed_code_exchange_deletes_the_token_at_once_and_needs_a_new_signup() {
    let p = ProvisioningEnv::new().await;
    p.meta.fail_next(
        Route::ExchangeCode,
        1,
        Fault::Error {
            http_status: 400,
            code: 100,
            subcode: Some(36007),
            is_transient: false,
            message: "This authorization code has expired.".into(),
        },
    );
    let (account, key, id) = signup(&p, "200000000000302").await;

    let failed = until(&p, &account, &id, |n| n.torn_down_at.is_some()).await;
    assert_eq!(failed.status, Status::Failed);
    assert!(failed.token_deleted_at.is_some(), "{failed:?}");

    let retried = call(&p, "POST", &format!("/api/numbers/{id}/retry"), &key).await;
    assert_eq!(retried.status, 409);
    assert_eq!(retried.body["error"]["code"], "reauthorization_required");
    assert_eq!(p.number(&account, &id).await.status, Status::Failed);
}

#[tokio::test]
async fn a_coexistence_number_is_activated_without_register_or_pin_and_never_deregistered() {
    let p = ProvisioningEnv::new().await;
    let (account, key) = p.env.account_with_key("acme").await;
    let phone = "200000000000401";
    let code = p.meta_phone(WABA, phone);
    let body = serde_json::json!({
        "code": code, "wabaId": WABA, "phoneNumberId": phone, "mode": "coexistence"
    })
    .to_string();
    let response = p
        .invoke(muchaw_tests::http_event(
            "POST",
            "/api/signup/callback",
            "",
            Some(&key),
            Some(&body),
        ))
        .await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    assert_eq!(response.body["data"]["onboarding"], "coexistence");
    let id = response.body["data"]["id"].as_str().unwrap().to_string();

    let number = p.settled(&account, &id, SETTLE).await;

    assert_eq!(number.status, Status::Active, "{number:?}");
    assert_eq!(
        meta_routes(&p),
        vec![
            Route::ExchangeCode,
            Route::GetPhone,
            Route::SubscribeApp,
            Route::GetPhone
        ]
    );
    let gone = call(&p, "DELETE", &format!("/api/numbers/{id}"), &key).await;
    assert_eq!(gone.status, 200);
    let torn = until(&p, &account, &id, |n| n.torn_down_at.is_some()).await;
    assert!(torn.token_deleted_at.is_some());
    assert!(p.meta.calls_to(Route::Deregister).is_empty());
    assert_eq!(p.meta.calls_to(Route::UnsubscribeApp).len(), 1);
}

#[tokio::test]
async fn an_unknown_onboarding_mode_is_refused_and_creates_nothing() {
    let p = ProvisioningEnv::new().await;
    let (account, key) = p.env.account_with_key("acme").await;
    let body = serde_json::json!({
        "code": "AQBcode", "wabaId": WABA, "phoneNumberId": "200000000000402", "mode": "on_premises"
    })
    .to_string();
    let response = p
        .invoke(muchaw_tests::http_event(
            "POST",
            "/api/signup/callback",
            "",
            Some(&key),
            Some(&body),
        ))
        .await;
    assert_eq!(response.status, 400, "{:?}", response.body);
    assert_eq!(response.body["error"]["code"], "invalid_request");
    let listed = p
        .env
        .store
        .list(
            &account,
            None,
            muchaw_shared::ports::Page {
                limit: 10,
                offset: 0,
            },
        )
        .await
        .unwrap();
    assert_eq!(listed.total, 0);
}

#[tokio::test]
async fn a_failure_shows_meta_s_text_for_the_customer() {
    let p = ProvisioningEnv::new().await;
    p.meta
        .fail_next(Route::Register, 1, Fault::register_limit());
    let (account, key, id) = signup(&p, "200000000000031").await;
    p.start();
    let number = p.settled(&account, &id, SETTLE).await;
    assert_eq!(number.status, Status::Failed);

    let view = p
        .env
        .get(Some(&key), &format!("/api/numbers/{id}"), "")
        .await;
    let reason = &view.body["data"]["failureReason"];
    assert_eq!(reason["code"], "133016", "{reason}");
    assert_eq!(reason["step"], "REGISTER_NUMBER");
    // The fake sends error_user_title / error_user_msg / error_data.details as Meta does.
    assert!(reason["userTitle"].is_string(), "{reason}");
    assert!(
        reason["userMessage"]
            .as_str()
            .is_some_and(|m| m.contains("72 hours")),
        "{reason}"
    );
    assert!(reason["details"].is_string(), "{reason}");
    let text = reason.to_string();
    assert!(!text.contains("EAA"), "{text}");
}

#[tokio::test]
async fn an_app_secret_put_in_place_after_start_is_used_without_a_restart() {
    use std::sync::{Arc, Mutex};

    use muchaw_shared::adapters::meta::{GraphClient, MetaConfig};
    use muchaw_shared::adapters::secrets::AppSecrets;
    use muchaw_shared::domain::secrets::{AppSecret, Secret};
    use muchaw_shared::ports::MetaGraph;
    use muchaw_shared::secret_cache::{Loader, SecretCache};

    let p = ProvisioningEnv::new().await;
    let stored = Arc::new(Mutex::new("change-me".to_string()));
    let loader: Loader = {
        let stored = stored.clone();
        Arc::new(move || {
            let stored = stored.clone();
            Box::pin(async move {
                let app_secret = stored.lock().unwrap().clone();
                Ok(AppSecrets {
                    app_secret: AppSecret::new(app_secret),
                    webhook_verify_token: Secret::new("verify-me"),
                })
            })
        })
    };
    let cache = SecretCache::with_ages(
        AppSecrets {
            app_secret: AppSecret::new("change-me"),
            webhook_verify_token: Secret::new("verify-me"),
        },
        loader,
        Duration::from_secs(300),
        Duration::ZERO,
    );
    let graph = GraphClient::new(MetaConfig {
        graph_url: p.meta.base_url(),
        graph_version: "v25.0".into(),
        app_id: p.meta.app_id().to_string(),
        app_secret: Secret::new(""),
        timeout: META_TIMEOUT,
    })
    .expect("graph client")
    .with_secrets(cache);

    // As deployed before the real secret is put in place: the template's placeholder is
    // refused as a wrong secret, without being sent to Meta.
    let code = p.meta.issue_code(&[WABA]);
    let refused = graph.exchange_code(&code).await.expect_err("wrong secret");
    assert_eq!(
        refused.kind,
        muchaw_shared::domain::meta::ErrorKind::ClientSecret
    );
    assert!(refused.is_app_secret_placeholder(), "{refused:?}");
    assert!(p.meta.calls_to(Route::ExchangeCode).is_empty());

    // The owner puts the real secret in place: the next exchange reads it again and succeeds.
    *stored.lock().unwrap() = p.meta.app_secret().to_string();
    let code = p.meta.issue_code(&[WABA]);
    let exchanged = graph.exchange_code(&code).await.expect("exchanged");
    assert!(!exchanged.token.expose().is_empty());
}

#[tokio::test]
async fn a_signup_just_after_the_app_secret_was_reset_reaches_active_in_a_warm_function() {
    use std::sync::Arc;

    use muchaw_shared::adapters::secrets::AppSecrets;
    use muchaw_shared::domain::secrets::Secret;
    use muchaw_shared::secret_cache::{Loader, MAX_AGE, SecretCache};

    // Given a warm exchange function holding the old app secret, read just before the owner
    // reset it at Meta and put the new one in `MetaAppSecret` (it may read again only 15 s on)
    let p = ProvisioningEnv::with_graph(muchaw_tests::provisioning::test_retry(), |meta, graph| {
        let app_secrets = |secret: &str| AppSecrets {
            app_secret: muchaw_shared::domain::secrets::AppSecret::new(secret),
            webhook_verify_token: Secret::new("verify-me"),
        };
        let stored = meta.app_secret().to_string();
        let loader: Loader = Arc::new(move || {
            let secrets = app_secrets(&stored);
            Box::pin(async move { Ok(secrets) })
        });
        let held = app_secrets("the-secret-before-the-reset");
        graph.with_secrets(SecretCache::with_ages(
            held,
            loader,
            MAX_AGE,
            Duration::from_secs(15),
        ))
    })
    .await;

    // When the next signup comes
    let (account, _, id) = signup(&p, "200000000000033").await;

    // Then Meta refused the old secret, and the number still reached ACTIVE: its exchange was
    // retried with the same code once the secret was read again
    let number = p.settled(&account, &id, SETTLE).await;
    assert_eq!(number.status, Status::Active, "{number:?}");
    let exchanges = p.meta.calls_to(Route::ExchangeCode);
    assert_eq!(
        exchanges.first().map(|c| c.status),
        Some(400),
        "{exchanges:?}"
    );
    assert_eq!(
        exchanges.last().map(|c| c.status),
        Some(200),
        "{exchanges:?}"
    );
}

#[tokio::test]
async fn transient_step_failures_are_in_the_number_s_history_once_per_answer_with_the_attempt() {
    // Given Meta failing the WABA subscription twice alike, then once with a rate limit
    let p = ProvisioningEnv::new().await;
    p.meta
        .fail_next(Route::SubscribeApp, 2, Fault::transient_5xx());
    p.meta
        .fail_next(Route::SubscribeApp, 1, Fault::rate_limited());
    let (account, key, id) = signup(&p, "200000000000032").await;
    let number = p.settled(&account, &id, SETTLE).await;
    assert_eq!(number.status, Status::Active, "{number:?}");
    // When the number's history is read
    let history = call(&p, "GET", &format!("/api/numbers/{id}/events"), &key).await;
    assert_eq!(history.status, 200, "{:?}", history.body);
    let retried: Vec<&Value> = history.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "number.step_retried")
        .collect();
    // Then each new answer is one entry (newest first): the step, Meta's code and text, and
    // the attempt it ended; the second identical failure added none
    let seen: Vec<(&str, &str, u64)> = retried
        .iter()
        .map(|e| {
            (
                e["reason"]["step"].as_str().unwrap(),
                e["reason"]["code"].as_str().unwrap(),
                e["attempt"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [("SUBSCRIBE_WABA", "4", 3), ("SUBSCRIBE_WABA", "2", 1)],
        "{:?}",
        history.body
    );
    assert_eq!(
        retried[1]["reason"]["message"],
        "An unexpected error has occurred. Please retry your request later."
    );
    assert_eq!(retried[1]["changes"][0]["field"], "pendingReason");
    // And they are the history's alone: never published, not an event customers received
    assert!(
        events_of(&p, &id)
            .iter()
            .all(|e| e["type"] != "number.step_retried")
    );
    let entry_id = retried[0]["id"].as_str().unwrap();
    let event = call(&p, "GET", &format!("/api/events/{entry_id}"), &key).await;
    assert_eq!(event.status, 404);
}
