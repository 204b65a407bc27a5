//! The numbers API end to end: API Gateway v2 events through lambda_http into the router,
//! against the DynamoDB and SQS adapters on moto.

use muchaw_shared::domain::Status;
use muchaw_shared::ports::Queue;
use muchaw_tests::{TestEnv, authorization_event, http_event, sample_number};
use serde_json::{Value, json};

async fn env_with_active_number() -> (TestEnv, String, muchaw_shared::domain::Number) {
    let env = TestEnv::new().await;
    let (account, key) = env.account_with_key("acme").await;
    let number = sample_number(&account, Status::Active, 5);
    env.store
        .import_numbers(std::slice::from_ref(&number))
        .await
        .unwrap();
    (env, key, number)
}

#[tokio::test]
async fn listing_active_numbers_returns_the_contract_shape() {
    let (env, key, number) = env_with_active_number().await;
    let response = env.get(Some(&key), "/api/numbers", "status=ACTIVE").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.headers["content-type"], "application/json");
    let expected = json!({
        "data": [{
            "id": number.id.as_str(),
            "wabaId": number.waba_id,
            "phoneNumberId": number.phone_number_id,
            "displayNumber": "+55 11 99999-0000",
            "qualityRating": "GREEN",
            "status": "ACTIVE",
            "tokenExpiresAt": null,
            "messagingLimit": "TIER_1K",
            "throughput": "STANDARD",
            "nameStatus": "APPROVED",
            "tokenStatus": "VALID",
            "health": {
                "canSendMessage": "LIMITED",
                "errors": [{
                    "entity": "WABA",
                    "errorCode": 141006,
                    "errorDescription": "There is an error with the payment method.",
                    "possibleSolution": "Add a new payment method to the account.",
                }],
            },
            "createdAt": muchaw_shared::domain::time::format(&number.created_at),
            "updatedAt": muchaw_shared::domain::time::format(&number.updated_at),
        }],
        "pagination": {"total": 1, "limit": 20, "offset": 0, "nextCursor": null}
    });
    assert_eq!(response.body, expected);
    let created = response.body["data"][0]["createdAt"].as_str().unwrap();
    assert_eq!(created.len(), "2024-01-15T10:00:00.000Z".len());
}

#[tokio::test]
async fn limit_and_offset_are_echoed_in_pagination() {
    let (env, key, _) = env_with_active_number().await;
    let response = env
        .get(Some(&key), "/api/numbers", "limit=5&offset=1&unknown=x")
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.body["pagination"],
        json!({"total": 1, "limit": 5, "offset": 1, "nextCursor": null})
    );
    assert_eq!(response.body["data"], json!([]));
}

#[tokio::test]
async fn a_number_is_read_by_id() {
    let (env, key, number) = env_with_active_number().await;
    let response = env
        .get(Some(&key), &format!("/api/numbers/{}", number.id), "")
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body["data"]["id"], number.id.as_str());
    assert_eq!(response.body["data"]["status"], "ACTIVE");
}

#[tokio::test]
async fn delete_disconnects_and_queues_the_teardown() {
    let (env, key, number) = env_with_active_number().await;
    let response = env
        .delete(Some(&key), &format!("/api/numbers/{}", number.id))
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body["data"]["status"], "DISCONNECTED");

    let read = env
        .get(Some(&key), &format!("/api/numbers/{}", number.id), "")
        .await;
    assert_eq!(read.body["data"]["status"], "DISCONNECTED");

    let teardowns = env.drain(Queue::Teardown).await;
    assert_eq!(teardowns.len(), 1);
    assert_eq!(teardowns[0]["numberId"], number.id.as_str());
    assert_eq!(teardowns[0]["v"], 1);

    let counts = env
        .get(Some(&key), "/api/numbers", "status=DISCONNECTED")
        .await;
    assert_eq!(counts.body["pagination"]["total"], 1);
    let active = env.get(Some(&key), "/api/numbers", "status=ACTIVE").await;
    assert_eq!(active.body["pagination"]["total"], 0);
}

#[tokio::test]
async fn deleting_twice_returns_the_same_disconnected_number() {
    let (env, key, number) = env_with_active_number().await;
    let path = format!("/api/numbers/{}", number.id);
    let first = env.delete(Some(&key), &path).await;
    let second = env.delete(Some(&key), &path).await;
    assert_eq!(first.status, 200);
    assert_eq!(second.status, 200);
    assert_eq!(first.body, second.body);
    let counts = env
        .get(Some(&key), "/api/numbers", "status=DISCONNECTED")
        .await;
    assert_eq!(counts.body["pagination"]["total"], 1, "counted once");
}

#[tokio::test]
async fn a_pending_number_can_be_disconnected() {
    let env = TestEnv::new().await;
    let (account, key) = env.account_with_key("acme").await;
    let number = sample_number(&account, Status::Pending, 1);
    env.store
        .import_numbers(std::slice::from_ref(&number))
        .await
        .unwrap();
    let response = env
        .delete(Some(&key), &format!("/api/numbers/{}", number.id))
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body["data"]["status"], "DISCONNECTED");
    assert!(response.body["data"].get("provisioningStep").is_none());
}

#[tokio::test]
async fn tenants_never_see_each_others_numbers() {
    let env = TestEnv::new().await;
    let (a, key_a) = env.account_with_key("a").await;
    let (b, key_b) = env.account_with_key("b").await;
    let mine = sample_number(&a, Status::Active, 3);
    let theirs = sample_number(&b, Status::Active, 2);
    let theirs_too = sample_number(&b, Status::Pending, 1);
    env.store
        .import_numbers(&[mine.clone(), theirs.clone(), theirs_too.clone()])
        .await
        .unwrap();

    let path = format!("/api/numbers/{}", theirs.id);
    let get = env.get(Some(&key_a), &path, "").await;
    assert_eq!(
        (get.status, get.body["error"]["code"].clone()),
        (404, json!("not_found"))
    );
    let delete = env.delete(Some(&key_a), &path).await;
    assert_eq!(delete.status, 404);
    let still = env.get(Some(&key_b), &path, "").await;
    assert_eq!(still.body["data"]["status"], "ACTIVE");

    let list = env.get(Some(&key_a), "/api/numbers", "").await;
    let ids: Vec<&Value> = list.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| &n["id"])
        .collect();
    assert_eq!(ids, [&json!(mine.id.as_str())]);
    assert_eq!(list.body["pagination"]["total"], 1);
    let pending = env
        .get(Some(&key_a), "/api/numbers", "status=PENDING")
        .await;
    assert_eq!(pending.body["pagination"]["total"], 0);
    let theirs_listed = env.get(Some(&key_b), "/api/numbers", "").await;
    assert_eq!(theirs_listed.body["pagination"]["total"], 2);
}

#[tokio::test]
async fn unauthorized_responses_carry_www_authenticate() {
    let env = TestEnv::new().await;
    let response = env.get(None, "/api/numbers", "").await;
    assert_eq!(response.status, 401);
    assert_eq!(response.headers["www-authenticate"], "Bearer");
    assert_eq!(response.body["error"]["code"], "unauthorized");
}

struct BadRequest {
    name: &'static str,
    event: Value,
    status: u16,
    code: &'static str,
}

#[tokio::test]
async fn bad_requests_get_the_error_envelope_and_change_nothing() {
    let env = TestEnv::new().await;
    let (account, key) = env.account_with_key("acme").await;
    let (other, other_key) = env.account_with_key("other").await;
    let (_, revoked_key) = {
        let created = env
            .store
            .create_api_key(&account, Some("old"))
            .await
            .unwrap();
        env.store
            .revoke_api_key(&account, &created.id)
            .await
            .unwrap();
        (created.id, created.key.expose().to_string())
    };
    let _ = other_key;
    let number = sample_number(&account, Status::Active, 5);
    let failed = sample_number(&account, Status::Failed, 4);
    let foreign = sample_number(&other, Status::Active, 3);
    env.store
        .import_numbers(&[number.clone(), failed.clone(), foreign.clone()])
        .await
        .unwrap();
    let k = Some(key.as_str());
    let get = |query: &str| http_event("GET", "/api/numbers", query, k, None);
    let with_auth = |value: &str| {
        authorization_event(
            "GET",
            "/api/numbers",
            "",
            json!({"authorization": value}),
            None,
        )
    };
    let number_path = format!("/api/numbers/{}", number.id);
    let huge = "x".repeat(70 * 1024);
    let cases = vec![
        BadRequest {
            name: "lower-case status",
            event: get("status=active"),
            status: 400,
            code: "invalid_request",
        },
        BadRequest {
            name: "unknown status",
            event: get("status=DELETED"),
            status: 400,
            code: "invalid_request",
        },
        BadRequest {
            name: "empty status",
            event: get("status="),
            status: 400,
            code: "invalid_request",
        },
        BadRequest {
            name: "limit 0",
            event: get("limit=0"),
            status: 400,
            code: "invalid_request",
        },
        BadRequest {
            name: "limit 101",
            event: get("limit=101"),
            status: 400,
            code: "invalid_request",
        },
        BadRequest {
            name: "limit -1",
            event: get("limit=-1"),
            status: 400,
            code: "invalid_request",
        },
        BadRequest {
            name: "limit abc",
            event: get("limit=abc"),
            status: 400,
            code: "invalid_request",
        },
        BadRequest {
            name: "limit 1.5",
            event: get("limit=1.5"),
            status: 400,
            code: "invalid_request",
        },
        BadRequest {
            name: "limit twice",
            event: get("limit=10&limit=20"),
            status: 400,
            code: "invalid_request",
        },
        BadRequest {
            name: "offset -1",
            event: get("offset=-1"),
            status: 400,
            code: "invalid_request",
        },
        BadRequest {
            name: "offset abc",
            event: get("offset=abc"),
            status: 400,
            code: "invalid_request",
        },
        BadRequest {
            name: "offset beyond u32",
            event: get("offset=99999999999"),
            status: 400,
            code: "invalid_request",
        },
        BadRequest {
            name: "status twice",
            event: get("status=ACTIVE&status=BANNED"),
            status: 400,
            code: "invalid_request",
        },
        BadRequest {
            name: "unknown id",
            event: http_event("GET", "/api/numbers/clunknown0000000000000000", "", k, None),
            status: 404,
            code: "not_found",
        },
        BadRequest {
            name: "malformed id",
            event: http_event("GET", "/api/numbers/NOT..AN..ID", "", k, None),
            status: 404,
            code: "not_found",
        },
        BadRequest {
            name: "another account's number",
            event: http_event("GET", &format!("/api/numbers/{}", foreign.id), "", k, None),
            status: 404,
            code: "not_found",
        },
        BadRequest {
            name: "delete unknown id",
            event: http_event(
                "DELETE",
                "/api/numbers/clunknown0000000000000000",
                "",
                k,
                None,
            ),
            status: 404,
            code: "not_found",
        },
        BadRequest {
            name: "delete another account's number",
            event: http_event(
                "DELETE",
                &format!("/api/numbers/{}", foreign.id),
                "",
                k,
                None,
            ),
            status: 404,
            code: "not_found",
        },
        BadRequest {
            name: "retry an ACTIVE number",
            event: http_event(
                "POST",
                &format!("/api/numbers/{}/retry", number.id),
                "",
                k,
                None,
            ),
            status: 409,
            code: "conflict",
        },
        BadRequest {
            name: "retry another account's number",
            event: http_event(
                "POST",
                &format!("/api/numbers/{}/retry", foreign.id),
                "",
                k,
                None,
            ),
            status: 404,
            code: "not_found",
        },
        BadRequest {
            name: "missing key",
            event: http_event("GET", "/api/numbers", "", None, None),
            status: 401,
            code: "unauthorized",
        },
        BadRequest {
            name: "missing key on delete",
            event: http_event("DELETE", &number_path, "", None, None),
            status: 401,
            code: "unauthorized",
        },
        BadRequest {
            name: "garbage key",
            event: with_auth("Bearer garbage"),
            status: 401,
            code: "unauthorized",
        },
        BadRequest {
            name: "unknown key",
            event: with_auth("Bearer mk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            status: 401,
            code: "unauthorized",
        },
        BadRequest {
            name: "revoked key",
            event: with_auth(&format!("Bearer {revoked_key}")),
            status: 401,
            code: "unauthorized",
        },
        BadRequest {
            name: "wrong scheme",
            event: with_auth(&format!("Basic {key}")),
            status: 401,
            code: "unauthorized",
        },
        BadRequest {
            name: "scheme without key",
            event: with_auth("Bearer"),
            status: 401,
            code: "unauthorized",
        },
        BadRequest {
            name: "key without scheme",
            event: with_auth(&key),
            status: 401,
            code: "unauthorized",
        },
        BadRequest {
            name: "oversized body",
            event: http_event("DELETE", &number_path, "", k, Some(&huge)),
            status: 413,
            code: "payload_too_large",
        },
    ];
    assert!(cases.len() >= 20);
    // What the template has no route for never reaches the function: API Gateway answers.
    let unrouted = [
        (
            "POST on the collection",
            http_event("POST", "/api/numbers", "", k, Some("{}")),
        ),
        (
            "PUT on a number",
            http_event("PUT", &number_path, "", k, Some("{\"status\":\"BANNED\"}")),
        ),
        (
            "PATCH on a number",
            http_event("PATCH", &number_path, "", k, Some("{")),
        ),
        (
            "DELETE on the collection",
            http_event("DELETE", "/api/numbers", "", k, None),
        ),
        (
            "unknown route",
            http_event("GET", "/api/phones", "", k, None),
        ),
    ];

    let before = env.table_snapshot().await;
    for case in cases {
        let response = env.invoke(case.event).await;
        assert_eq!(
            response.status, case.status,
            "{}: {:?}",
            case.name, response.body
        );
        assert_eq!(response.body["error"]["code"], case.code, "{}", case.name);
        let message = response.body["error"]["message"].as_str().unwrap_or("");
        assert!(
            !message.is_empty(),
            "{}: the error says what is wrong",
            case.name
        );
        assert!(!message.contains(&key), "{}: no key in errors", case.name);
    }
    for (name, event) in unrouted {
        let response = env.invoke(event).await;
        assert_eq!(response.status, 404, "{name}: {:?}", response.body);
        assert_eq!(response.body, json!({"message": "Not Found"}), "{name}");
    }
    assert_eq!(
        env.table_snapshot().await,
        before,
        "bad requests changed stored data"
    );
    assert!(
        env.drain(Queue::Teardown).await.is_empty(),
        "no teardown was queued"
    );
}
