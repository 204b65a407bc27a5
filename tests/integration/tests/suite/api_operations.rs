//! Operating the API against moto, through the Lambda adapter and the real router: idempotency
//! keys in DynamoDB, read-only keys, finding numbers through their indexes (never a Scan),
//! and the Embedded Metric Format lines a real run emits.

use std::time::Duration;

use muchaw_shared::domain::api_key::KeyScope;
use muchaw_shared::domain::{AccountId, Status};
use muchaw_shared::metrics::Listener;
use muchaw_shared::ports::IdempotencyStore;
use muchaw_tests::provisioning::ProvisioningEnv;
use muchaw_tests::{ApiResponse, TestEnv, http_event, sample_number};
use serde_json::{Value, json};

fn with_idempotency_key(mut event: Value, key: &str) -> Value {
    event["headers"]["idempotency-key"] = json!(key);
    event
}

async fn post_link(
    p: &ProvisioningEnv,
    key: &str,
    idempotency_key: &str,
    body: &str,
) -> ApiResponse {
    p.invoke(with_idempotency_key(
        http_event("POST", "/api/signup-links", "", Some(key), Some(body)),
        idempotency_key,
    ))
    .await
}

async fn links_in_table(p: &ProvisioningEnv, account: &AccountId) -> usize {
    use muchaw_shared::ports::SignupSessions;
    p.env
        .store
        .links(account, 100, None)
        .await
        .unwrap()
        .links
        .len()
}

#[tokio::test]
async fn a_retried_post_gets_the_first_answer_from_dynamodb_without_acting_again() {
    let p = ProvisioningEnv::new().await;
    let (account, key) = p.env.account_with_key("idem-replay").await;
    let first = post_link(&p, &key, "link-1", "{}").await;
    assert_eq!(first.status, 201, "{}", first.body);
    let again = post_link(&p, &key, "link-1", "{}").await;
    assert_eq!(again.status, 201);
    assert_eq!(again.body, first.body);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(links_in_table(&p, &account).await, 1);
}

/// Every attribute of the account's idempotency items as text (binary ones read as UTF-8),
/// straight from the table.
async fn idempotency_items(p: &ProvisioningEnv, account: &AccountId) -> Vec<Vec<(String, String)>> {
    use aws_sdk_dynamodb::types::AttributeValue;
    let items = p
        .env
        .store
        .client()
        .query()
        .table_name(p.env.store.table())
        .key_condition_expression("PK = :pk")
        .expression_attribute_values(":pk", AttributeValue::S(format!("IDEMPOTENCY#{account}")))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default();
    items
        .into_iter()
        .map(|item| {
            item.into_iter()
                .map(|(name, value)| {
                    let text = match &value {
                        AttributeValue::S(text) => text.clone(),
                        AttributeValue::B(bytes) => {
                            String::from_utf8_lossy(bytes.as_ref()).into_owned()
                        }
                        other => format!("{other:?}"),
                    };
                    (name, text)
                })
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn a_signup_links_state_is_not_kept_with_its_idempotency_key_and_a_replay_shows_it_again() {
    // Given a signup link created with an idempotency key
    let p = ProvisioningEnv::new().await;
    let (account, key) = p.env.account_with_key("idem-state").await;
    let body = r#"{"redirectUrl":"https://example.com/done"}"#;
    let first = post_link(&p, &key, "link-state", body).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let state = first.body["data"]["state"].as_str().unwrap().to_string();
    let signature = state.rsplit('.').next().unwrap();

    // Then the key's item in the table holds the answer without any of the state
    let items = idempotency_items(&p, &account).await;
    assert_eq!(items.len(), 1);
    let kept = &items[0];
    let link_id = first.body["data"]["id"].as_str().unwrap();
    assert!(
        kept.iter().any(|(_, text)| text.contains(link_id)),
        "{kept:?}"
    );
    for (name, text) in kept {
        assert!(!text.contains(signature), "{name} keeps the link's state");
    }

    // When the request is retried with the same key
    let again = post_link(&p, &key, "link-state", body).await;

    // Then the first answer comes back whole, state and url included, and no link was added
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.body, first.body);
    assert_eq!(links_in_table(&p, &account).await, 1);
    // and the key still keeps no state
    for (name, text) in &idempotency_items(&p, &account).await[0] {
        assert!(!text.contains(signature), "{name} keeps the link's state");
    }
}

#[tokio::test]
async fn the_same_key_on_another_body_is_a_422_and_changes_nothing() {
    let p = ProvisioningEnv::new().await;
    let (_, key) = p.env.account_with_key("idem-conflict").await;
    post_link(&p, &key, "link-2", "{}").await;
    let before = p.env.table_snapshot().await;
    let other = post_link(
        &p,
        &key,
        "link-2",
        r#"{"redirectUrl": "https://example.com/x"}"#,
    )
    .await;
    assert_eq!(other.status, 422);
    assert_eq!(other.body["error"]["code"], "idempotency_conflict");
    assert_eq!(p.env.table_snapshot().await, before);
}

#[tokio::test]
async fn a_key_held_by_a_running_request_is_a_409_until_its_lease_runs_out() {
    let p = ProvisioningEnv::new().await;
    let (account, key) = p.env.account_with_key("idem-running").await;
    let fingerprint = muchaw_shared::api::idempotency::fingerprint(
        &axum::http::Method::POST,
        "/api/signup-links",
        b"{}",
    );
    let now = chrono::Utc::now().timestamp();
    // Given a request that holds the key and is still running
    p.env
        .store
        .claim(
            &account,
            "link-3",
            &fingerprint,
            now,
            now + 60,
            now + 86_400,
        )
        .await
        .unwrap();
    let running = post_link(&p, &key, "link-3", "{}").await;
    assert_eq!(running.status, 409);
    assert_eq!(running.body["error"]["code"], "idempotency_in_progress");
    assert_eq!(running.headers["retry-after"], "1");
    assert_eq!(links_in_table(&p, &account).await, 0);
    // Given one that died holding it (its lease is over)
    p.env
        .store
        .claim(
            &account,
            "link-4",
            &fingerprint,
            now - 120,
            now - 60,
            now + 86_400,
        )
        .await
        .unwrap();
    let taken_over = post_link(&p, &key, "link-4", "{}").await;
    assert_eq!(taken_over.status, 201, "{}", taken_over.body);
    assert_eq!(links_in_table(&p, &account).await, 1);
}

#[tokio::test]
async fn a_read_key_reads_and_is_forbidden_everything_else_without_a_change() {
    let env = TestEnv::new().await;
    let account = env.account("scoped").await;
    let read = env
        .store
        .create_scoped_api_key(&account, Some("dashboard"), KeyScope::Read)
        .await
        .unwrap();
    let read_key = read.key.expose().to_string();
    let number = sample_number(&account, Status::Active, 5);
    env.store
        .import_numbers(std::slice::from_ref(&number))
        .await
        .unwrap();
    assert_eq!(
        env.get(Some(&read_key), "/api/numbers", "").await.status,
        200
    );
    // The first use of the hour is recorded; later ones write nothing.
    let before = env.table_snapshot().await;
    let path = format!("/api/numbers/{}", number.id);
    let deleted = env.delete(Some(&read_key), &path).await;
    assert_eq!(deleted.status, 403);
    assert_eq!(deleted.body["error"]["code"], "forbidden");
    let retried = env
        .invoke(with_idempotency_key(
            http_event(
                "POST",
                &format!("{path}/retry"),
                "",
                Some(&read_key),
                Some("{}"),
            ),
            "scoped-1",
        ))
        .await;
    assert_eq!(retried.status, 403);
    assert_eq!(env.table_snapshot().await, before);
}

#[tokio::test]
async fn an_api_keys_last_use_is_listed_to_the_hour() {
    let env = TestEnv::new().await;
    let account = env.account("last-use").await;
    let used = env
        .store
        .create_scoped_api_key(&account, Some("used"), KeyScope::Read)
        .await
        .unwrap();
    let idle = env
        .store
        .create_api_key(&account, Some("idle"))
        .await
        .unwrap();
    env.get(Some(used.key.expose()), "/api/numbers", "").await;
    env.get(Some(used.key.expose()), "/api/numbers", "").await;
    let keys = env.store.list_api_keys(&account).await.unwrap();
    let hour = muchaw_shared::domain::api_key::use_hour(chrono::Utc::now());
    let listed = |id: &muchaw_shared::domain::ApiKeyId| {
        keys.iter().find(|k| &k.id == id).expect("listed").clone()
    };
    assert_eq!(listed(&used.id).scope, KeyScope::Read);
    assert_eq!(
        listed(&used.id).last_used_at,
        chrono::DateTime::from_timestamp(hour, 0)
            .map(|at| muchaw_shared::domain::time::format(&at))
    );
    assert_eq!(listed(&idle.id).scope, KeyScope::Write);
    assert_eq!(listed(&idle.id).last_used_at, None);
}

#[tokio::test]
async fn numbers_are_found_by_display_number_and_waba_through_indexes_not_scans() {
    let env = TestEnv::new().await;
    let (account, key) = env.account_with_key("finder").await;
    let (other, _) = env.account_with_key("finder-other").await;
    let mut wanted = sample_number(&account, Status::Active, 10);
    wanted.display_number = Some("+1 555-010-7788".into());
    wanted.waba_id = "777000000000001".into();
    let mut sibling = sample_number(&account, Status::Active, 9);
    sibling.waba_id = "777000000000001".into();
    let elsewhere = sample_number(&account, Status::Active, 8);
    let mut theirs = sample_number(&other, Status::Active, 7);
    theirs.display_number = Some("+1 555-010-7788".into());
    theirs.waba_id = "777000000000001".into();
    env.store
        .import_numbers(&[wanted.clone(), sibling.clone(), elsewhere, theirs])
        .await
        .unwrap();
    env.dynamo_operations.reset();

    let by_phone = env
        .get(Some(&key), "/api/numbers", "phoneNumber=%2B15550107788")
        .await;
    assert_eq!(by_phone.status, 200, "{}", by_phone.body);
    let ids = |r: &ApiResponse| -> Vec<String> {
        r.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&by_phone), [wanted.id.to_string()]);
    assert_eq!(by_phone.body["pagination"]["total"], 1);

    let by_waba = env
        .get(Some(&key), "/api/numbers", "wabaId=777000000000001")
        .await;
    assert_eq!(
        ids(&by_waba),
        [sibling.id.to_string(), wanted.id.to_string()]
    );
    assert_eq!(by_waba.body["pagination"]["total"], 2);
    assert_eq!(env.dynamo_operations.count("Scan"), 0);
}

#[tokio::test]
async fn a_cursor_walks_the_account_through_dynamodb_once_each_and_a_bad_one_is_a_400() {
    let env = TestEnv::new().await;
    let (account, key) = env.account_with_key("cursor").await;
    let numbers: Vec<_> = (1..=5)
        .map(|minutes| sample_number(&account, Status::Active, minutes))
        .collect();
    env.store.import_numbers(&numbers).await.unwrap();
    let mut seen = Vec::new();
    let mut query = "limit=2".to_string();
    loop {
        let page = env.get(Some(&key), "/api/numbers", &query).await;
        assert_eq!(page.status, 200, "{}", page.body);
        for n in page.body["data"].as_array().unwrap() {
            seen.push(n["id"].as_str().unwrap().to_string());
        }
        match page.body["pagination"]["nextCursor"].as_str() {
            Some(cursor) => query = format!("limit=2&cursor={cursor}"),
            None => break,
        }
    }
    let expected: Vec<String> = numbers.iter().map(|n| n.id.to_string()).collect();
    assert_eq!(seen, expected);
    let bad = env.get(Some(&key), "/api/numbers", "cursor=zzz").await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.body["error"]["code"], "invalid_request");
}

fn lines_about(listener: &Listener, number_id: &str) -> Vec<Value> {
    listener
        .lines()
        .iter()
        .map(|line| serde_json::from_str::<Value>(line).expect("each EMF line is JSON"))
        .filter(|line| line["NumberId"] == number_id)
        .collect()
}

#[tokio::test]
async fn a_signup_run_to_active_emits_its_metrics_as_embedded_metric_format() {
    let p = ProvisioningEnv::new().await;
    let listener = Listener::start();
    let (account, key) = p.env.account_with_key("metrics").await;
    let phone = "200000000000771";
    let code = p.meta_phone("100000000000771", phone);
    let signup = p.callback(&key, &code, "100000000000771", phone).await;
    assert_eq!(signup.status, 202, "{}", signup.body);
    let id = signup.body["data"]["id"].as_str().unwrap().to_string();
    let number = p.settled(&account, &id, Duration::from_secs(60)).await;
    assert_eq!(number.status, Status::Active);

    // The status is visible before its event is published, where the activation is measured.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut lines = lines_about(&listener, &id);
    while !lines.iter().any(|l| l.get("Activations").is_some())
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        lines = lines_about(&listener, &id);
    }
    let signups: Vec<&Value> = lines
        .iter()
        .filter(|l| l.get("Signups").is_some())
        .collect();
    assert_eq!(signups.len(), 1, "{lines:?}");
    assert_eq!(signups[0]["Onboarding"], "cloud_api");
    let activations: Vec<&Value> = lines
        .iter()
        .filter(|l| l.get("Activations").is_some())
        .collect();
    assert_eq!(activations.len(), 1, "{lines:?}");
    let activation = activations[0];
    assert!(activation["TimeToActive"].as_f64().unwrap() >= 0.0);
    assert_eq!(
        activation["_aws"]["CloudWatchMetrics"][0],
        json!({
            "Namespace": "MuchawNumbers",
            "Dimensions": [[], ["Onboarding"]],
            "Metrics": [
                {"Name": "Activations", "Unit": "Count"},
                {"Name": "TimeToActive", "Unit": "Seconds"},
            ],
        })
    );
    // The callback's own answer is counted by route and status.
    let requests: Vec<Value> = listener
        .lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["Route"] == "/api/signup/callback" && l["Status"] == "202")
        .collect();
    assert!(!requests.is_empty());
}

/// What the document says of every `POST` and every write, checked against the document.
#[test]
fn every_write_operation_documents_403_and_every_post_its_idempotency_key() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.yaml");
    let doc: Value = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut posts = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !path.starts_with("/api/") {
            continue;
        }
        for (method, operation) in item.as_object().unwrap() {
            if !["post", "delete", "patch", "put"].contains(&method.as_str()) {
                continue;
            }
            let responses = &operation["responses"];
            assert!(responses.get("403").is_some(), "{method} {path}: no 403");
            if method == "post" {
                posts += 1;
                let parameters = operation["parameters"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                assert!(
                    parameters.contains(&json!({"$ref": "#/components/parameters/IdempotencyKey"})),
                    "{method} {path}: no Idempotency-Key"
                );
                for status in ["400", "409", "422"] {
                    assert!(
                        responses.get(status).is_some(),
                        "{method} {path}: no {status}"
                    );
                }
            }
        }
    }
    assert!(posts >= 4);
}
