//! The fake, driven over HTTP as the product drives Meta.

use std::time::{Duration, Instant};

use fake_meta::{FakeMeta, FakeMetaConfig, Fault, PhoneProfile, Route, seed_demo};
use serde_json::{Value, json};

const WABA: &str = "100000000000001";
const PHONE: &str = "200000000000001";
const OTHER_WABA: &str = "100000000000002";
const OTHER_PHONE: &str = "200000000000002";

struct Env {
    fake: FakeMeta,
    http: reqwest::Client,
}

struct Reply {
    status: u16,
    body: Value,
}

impl Reply {
    fn code(&self) -> i64 {
        self.body["error"]["code"].as_i64().unwrap_or(0)
    }
    fn subcode(&self) -> Option<i64> {
        self.body["error"]["error_subcode"].as_i64()
    }
}

impl Env {
    async fn new() -> Env {
        let fake = FakeMeta::start(FakeMetaConfig::default()).await.unwrap();
        seed_demo(&fake);
        fake.add_phone(
            OTHER_WABA,
            PhoneProfile {
                phone_number_id: OTHER_PHONE.into(),
                display_phone_number: "+1 555 0100".into(),
                verified_name: "Someone Else".into(),
                quality_rating: "YELLOW".into(),
            },
        );
        Env {
            fake,
            http: fake_meta::webhooks::http_client_builder().build().unwrap(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v25.0{path}", self.fake.base_url())
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        };
        Reply { status, body }
    }

    async fn exchange(&self, code: &str) -> Reply {
        let query = [
            ("client_id", self.fake.app_id()),
            ("client_secret", self.fake.app_secret()),
            ("code", code),
        ];
        self.send(self.http.get(self.url("/oauth/access_token")).query(&query))
            .await
    }

    /// A business token for the demo WABA.
    async fn token(&self) -> String {
        let code = self.fake.issue_code(&[WABA]);
        let reply = self.exchange(&code).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        reply.body["access_token"].as_str().unwrap().to_string()
    }

    async fn get(&self, token: &str, path: &str) -> Reply {
        self.send(self.http.get(self.url(path)).bearer_auth(token))
            .await
    }

    async fn post(&self, token: &str, path: &str, body: Option<Value>) -> Reply {
        let mut request = self.http.post(self.url(path)).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send(request).await
    }

    async fn register(&self, token: &str, phone: &str, pin: &str) -> Reply {
        let body = json!({"messaging_product": "whatsapp", "pin": pin});
        self.post(token, &format!("/{phone}/register"), Some(body))
            .await
    }
}

#[tokio::test]
async fn code_exchange_returns_a_bearer_token_that_never_expires() {
    let env = Env::new().await;
    let code = env.fake.issue_code(&[WABA]);
    let reply = env.exchange(&code).await;
    assert_eq!(reply.status, 200);
    assert!(
        reply.body["access_token"]
            .as_str()
            .is_some_and(|t| t.len() > 20)
    );
    assert_eq!(reply.body["token_type"], "bearer");
    assert!(reply.body.get("expires_in").is_none());
}

#[tokio::test]
async fn code_is_single_use() {
    let env = Env::new().await;
    let code = env.fake.issue_code(&[WABA]);
    assert_eq!(env.exchange(&code).await.status, 200);
    let second = env.exchange(&code).await;
    assert_eq!(second.status, 400);
    assert_eq!(second.code(), 100);
}

#[tokio::test]
async fn code_older_than_30_seconds_is_rejected() {
    let env = Env::new().await;
    let code = env.fake.issue_code(&[WABA]);
    env.fake.age_codes(Duration::from_secs(31));
    let reply = env.exchange(&code).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.code(), 100);
}

#[tokio::test]
async fn unknown_code_is_rejected() {
    let env = Env::new().await;
    let reply = env.exchange("AQBnot-a-code").await;
    assert_eq!((reply.status, reply.code()), (400, 100));
}

#[tokio::test]
async fn expiring_code_yields_expires_in_and_debug_token_expires_at() {
    let env = Env::new().await;
    let code = env.fake.issue_code_expiring(&[WABA], 3600);
    let reply = env.exchange(&code).await;
    assert_eq!(reply.body["expires_in"], 3600);
    let token = reply.body["access_token"].as_str().unwrap();
    let app_token = format!("{}|{}", env.fake.app_id(), env.fake.app_secret());
    let debug = env
        .send(
            env.http
                .get(env.url("/debug_token"))
                .query(&[("input_token", token)])
                .bearer_auth(app_token),
        )
        .await;
    assert_eq!(debug.status, 200);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expires_at = debug.body["data"]["expires_at"].as_u64().unwrap();
    assert!((now + 3590..=now + 3610).contains(&expires_at));
}

#[tokio::test]
async fn wrong_client_secret_is_rejected_with_101() {
    let env = Env::new().await;
    let code = env.fake.issue_code(&[WABA]);
    let query = [
        ("client_id", env.fake.app_id()),
        ("client_secret", "wrong"),
        ("code", code.as_str()),
    ];
    let reply = env
        .send(env.http.get(env.url("/oauth/access_token")).query(&query))
        .await;
    assert_eq!((reply.status, reply.code()), (400, 101));
    assert_eq!(reply.body["error"]["type"], "OAuthException");
    // The failed attempt did not use the code up.
    assert_eq!(env.exchange(&code).await.status, 200);
}

#[tokio::test]
async fn user_token_exchange_returns_a_60_day_token_for_the_same_wabas() {
    let env = Env::new().await;
    let token = env.token().await;
    let query = [
        ("grant_type", "fb_exchange_token"),
        ("client_id", env.fake.app_id()),
        ("client_secret", env.fake.app_secret()),
        ("fb_exchange_token", token.as_str()),
    ];
    let reply = env
        .send(env.http.get(env.url("/oauth/access_token")).query(&query))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["expires_in"], 5_183_944);
    assert_eq!(reply.body["token_type"], "bearer");
    let long = reply.body["access_token"].as_str().unwrap();
    assert_ne!(long, token);
    let subscribed = env
        .post(long, &format!("/{WABA}/subscribed_apps"), None)
        .await;
    assert_eq!(subscribed.status, 200);
    assert_eq!(env.fake.calls_to(Route::ExchangeUserToken).len(), 1);
}

#[tokio::test]
async fn debug_token_describes_the_token_with_the_app_token_in_the_query() {
    let env = Env::new().await;
    let token = env.token().await;
    let app_token = format!("{}|{}", env.fake.app_id(), env.fake.app_secret());
    let reply = env
        .send(env.http.get(env.url("/debug_token")).query(&[
            ("input_token", token.as_str()),
            ("access_token", &app_token),
        ]))
        .await;
    assert_eq!(reply.status, 200);
    let data = &reply.body["data"];
    assert_eq!(data["app_id"], env.fake.app_id());
    assert_eq!(data["is_valid"], true);
    assert_eq!(data["expires_at"], 0);
    assert_eq!(data["scopes"][0], "whatsapp_business_management");
    assert_eq!(data["granular_scopes"][0]["target_ids"], json!([WABA]));
}

#[tokio::test]
async fn debug_token_needs_the_app_token() {
    let env = Env::new().await;
    let token = env.token().await;
    let reply = env
        .send(
            env.http
                .get(env.url("/debug_token"))
                .query(&[("input_token", token.as_str())])
                .bearer_auth(&token),
        )
        .await;
    assert_eq!((reply.status, reply.code()), (400, 190));
}

#[tokio::test]
async fn token_cannot_touch_a_foreign_waba() {
    let env = Env::new().await;
    let token = env.token().await;
    let reply = env
        .post(&token, &format!("/{OTHER_WABA}/subscribed_apps"), None)
        .await;
    assert_eq!((reply.status, reply.code()), (403, 200));
    assert!(!env.fake.is_subscribed(OTHER_WABA));
}

#[tokio::test]
async fn token_cannot_touch_a_foreign_phone() {
    let env = Env::new().await;
    let token = env.token().await;
    let reply = env.register(&token, OTHER_PHONE, "123456").await;
    assert_eq!((reply.status, reply.code()), (403, 200));
    let reply = env.get(&token, &format!("/{OTHER_PHONE}")).await;
    assert_eq!((reply.status, reply.code()), (403, 200));
}

#[tokio::test]
async fn unknown_token_is_401_code_190() {
    let env = Env::new().await;
    let reply = env.get("EAAGnot-a-token", &format!("/{PHONE}")).await;
    assert_eq!((reply.status, reply.code()), (401, 190));
    assert_eq!(reply.subcode(), None);
}

#[tokio::test]
async fn missing_token_is_rejected_with_190() {
    let env = Env::new().await;
    let reply = env.send(env.http.get(env.url(&format!("/{PHONE}")))).await;
    assert_eq!((reply.status, reply.code()), (400, 190));
}

#[tokio::test]
async fn expired_token_is_401_code_190_subcode_463() {
    let env = Env::new().await;
    let token = env.token().await;
    env.fake.expire_token(&token);
    let reply = env.get(&token, &format!("/{PHONE}")).await;
    assert_eq!((reply.status, reply.code()), (401, 190));
    assert_eq!(reply.subcode(), Some(463));
}

#[tokio::test]
async fn revoked_tokens_are_unknown() {
    let env = Env::new().await;
    let token = env.token().await;
    env.fake.revoke_all_tokens();
    let reply = env.get(&token, &format!("/{PHONE}")).await;
    assert_eq!((reply.status, reply.code()), (401, 190));
}

#[tokio::test]
async fn access_token_query_param_is_accepted() {
    let env = Env::new().await;
    let token = env.token().await;
    let reply = env
        .send(
            env.http
                .get(env.url(&format!("/{PHONE}")))
                .query(&[("access_token", token.as_str())]),
        )
        .await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn subscribe_is_idempotent_and_unsubscribe_undoes_it() {
    let env = Env::new().await;
    let token = env.token().await;
    let path = format!("/{WABA}/subscribed_apps");
    for _ in 0..2 {
        let reply = env.post(&token, &path, None).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, json!({"success": true}));
    }
    assert!(env.fake.is_subscribed(WABA));
    assert!(env.fake.phone(PHONE).unwrap().subscribed);
    let listed = env.get(&token, &path).await;
    assert_eq!(
        listed.body["data"][0]["whatsapp_business_api_data"]["id"],
        env.fake.app_id()
    );
    let reply = env
        .send(env.http.delete(env.url(&path)).bearer_auth(&token))
        .await;
    assert_eq!(reply.body, json!({"success": true}));
    assert!(!env.fake.is_subscribed(WABA));
    assert_eq!(env.get(&token, &path).await.body, json!({"data": []}));
    assert_eq!(env.fake.calls_to(Route::SubscribeApp).len(), 2);
    assert_eq!(env.fake.calls_to(Route::UnsubscribeApp).len(), 1);
}

#[tokio::test]
async fn register_sets_the_pin_then_a_different_pin_is_133005() {
    let env = Env::new().await;
    let token = env.token().await;
    let reply = env.register(&token, PHONE, "123456").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, json!({"success": true}));
    let state = env.fake.phone(PHONE).unwrap();
    assert!(state.registered);
    assert_eq!(state.pin.as_deref(), Some("123456"));
    // Same PIN again: fine.
    assert_eq!(env.register(&token, PHONE, "123456").await.status, 200);
    let mismatch = env.register(&token, PHONE, "654321").await;
    assert_eq!((mismatch.status, mismatch.code()), (400, 133005));
    assert_eq!(
        mismatch.body["error"]["error_data"]["messaging_product"],
        "whatsapp"
    );
    assert_eq!(env.fake.phone(PHONE).unwrap().register_count, 3);
}

#[tokio::test]
async fn pin_set_by_another_provider_makes_register_fail_with_133005() {
    let env = Env::new().await;
    let token = env.token().await;
    env.fake.set_two_step_pin(PHONE, "999999");
    let reply = env.register(&token, PHONE, "123456").await;
    assert_eq!((reply.status, reply.code()), (400, 133005));
    assert!(!env.fake.phone(PHONE).unwrap().registered);
}

#[tokio::test]
async fn register_rejects_a_bad_pin_or_messaging_product_with_100() {
    let env = Env::new().await;
    let token = env.token().await;
    for pin in ["12345", "1234567", "12a456"] {
        let reply = env.register(&token, PHONE, pin).await;
        assert_eq!((reply.status, reply.code()), (400, 100), "pin {pin}");
    }
    let body = json!({"messaging_product": "sms", "pin": "123456"});
    let reply = env
        .post(&token, &format!("/{PHONE}/register"), Some(body))
        .await;
    assert_eq!((reply.status, reply.code()), (400, 100));
    assert!(!env.fake.phone(PHONE).unwrap().registered);
}

#[tokio::test]
async fn register_accepts_a_form_body() {
    let env = Env::new().await;
    let token = env.token().await;
    let reply = env
        .send(
            env.http
                .post(env.url(&format!("/{PHONE}/register")))
                .bearer_auth(&token)
                .header("content-type", "application/x-www-form-urlencoded")
                .body("messaging_product=whatsapp&pin=123456"),
        )
        .await;
    assert_eq!(reply.status, 200);
    let call = env.fake.calls_to(Route::Register).pop().unwrap();
    assert_eq!(call.body["pin"], "123456");
}

#[tokio::test]
async fn eleventh_register_or_deregister_is_133016() {
    let env = Env::new().await;
    let token = env.token().await;
    for i in 0..10 {
        let reply = if i % 2 == 0 {
            env.register(&token, PHONE, "123456").await
        } else {
            env.post(&token, &format!("/{PHONE}/deregister"), None)
                .await
        };
        assert_eq!(reply.status, 200, "call {i}: {:?}", reply.body);
    }
    let reply = env.register(&token, PHONE, "123456").await;
    assert_eq!((reply.status, reply.code()), (400, 133016));
    let reply = env
        .post(&token, &format!("/{PHONE}/deregister"), None)
        .await;
    assert_eq!(reply.code(), 133016);
    assert_eq!(env.fake.phone(PHONE).unwrap().register_count, 10);
}

#[tokio::test]
async fn scripted_errors_and_refused_parameters_count_toward_the_register_limit() {
    let env = Env::new().await;
    let token = env.token().await;
    env.fake
        .fail_next(Route::Register, 3, Fault::display_name_not_ready());
    for _ in 0..3 {
        assert_eq!(env.register(&token, PHONE, "123456").await.code(), 100);
    }
    assert_eq!(env.register(&token, PHONE, "12").await.code(), 100);
    assert_eq!(env.fake.phone(PHONE).unwrap().register_count, 4);
    for _ in 0..6 {
        assert_eq!(env.register(&token, PHONE, "123456").await.status, 200);
    }
    let reply = env.register(&token, PHONE, "123456").await;
    assert_eq!(reply.code(), 133016);
    assert!(
        reply.body["error"]["error_user_msg"]
            .as_str()
            .is_some_and(|m| m.contains("72 hours")),
        "{:?}",
        reply.body
    );
}

#[tokio::test]
async fn errors_a_person_can_act_on_carry_meta_s_user_text() {
    let env = Env::new().await;
    let token = env.token().await;
    env.fake
        .fail_next(Route::Register, 1, Fault::display_name_not_ready());
    let reply = env.register(&token, PHONE, "123456").await;
    let error = &reply.body["error"];
    assert!(error["error_user_title"].is_string(), "{error}");
    assert!(error["error_user_msg"].is_string(), "{error}");
    assert!(error["error_data"]["details"].is_string(), "{error}");
}

#[tokio::test]
async fn deregister_unregisters() {
    let env = Env::new().await;
    let token = env.token().await;
    env.register(&token, PHONE, "123456").await;
    let reply = env
        .post(&token, &format!("/{PHONE}/deregister"), None)
        .await;
    assert_eq!(reply.body, json!({"success": true}));
    assert!(!env.fake.phone(PHONE).unwrap().registered);
}

#[tokio::test]
async fn set_pin_sets_two_step_verification() {
    let env = Env::new().await;
    let token = env.token().await;
    let reply = env
        .post(&token, &format!("/{PHONE}"), Some(json!({"pin": "246810"})))
        .await;
    assert_eq!(reply.body, json!({"success": true}));
    assert_eq!(
        env.fake.phone(PHONE).unwrap().pin.as_deref(),
        Some("246810")
    );
    let bad = env
        .post(&token, &format!("/{PHONE}"), Some(json!({"pin": "12"})))
        .await;
    assert_eq!((bad.status, bad.code()), (400, 100));
}

#[tokio::test]
async fn get_phone_returns_id_and_only_the_requested_fields() {
    let env = Env::new().await;
    let token = env.token().await;
    let reply = env
        .get(
            &token,
            &format!(
                "/{PHONE}?fields=verified_name,quality_rating,platform_type,status,throughput"
            ),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.body,
        json!({
            "id": PHONE,
            "verified_name": "Muchaw Demo",
            "quality_rating": "GREEN",
            "platform_type": "NOT_APPLICABLE",
            "status": "PENDING",
            "throughput": {"level": "STANDARD"},
        })
    );
    env.register(&token, PHONE, "123456").await;
    env.fake.set_quality(PHONE, "YELLOW");
    let reply = env
        .get(
            &token,
            &format!(
                "/{PHONE}?fields=quality_rating,platform_type,status,name_status,code_verification_status"
            ),
        )
        .await;
    assert_eq!(
        reply.body,
        json!({
            "id": PHONE,
            "quality_rating": "YELLOW",
            "platform_type": "CLOUD_API",
            "status": "CONNECTED",
            "name_status": "APPROVED",
            "code_verification_status": "VERIFIED",
        })
    );
}

#[tokio::test]
async fn health_status_and_a_banned_status_are_fields_of_the_phone() {
    let env = Env::new().await;
    let token = env.token().await;
    let fields =
        "/{PHONE}?fields=status,health_status,messaging_limit_tier".replace("{PHONE}", PHONE);
    let reply = env.get(&token, &fields).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["health_status"]["can_send_message"], "AVAILABLE");
    assert_eq!(reply.body["messaging_limit_tier"], "TIER_1K");
    let entities = reply.body["health_status"]["entities"].as_array().unwrap();
    assert!(entities.iter().any(|e| e["entity_type"] == "PHONE_NUMBER"));

    env.fake.set_phone_status(PHONE, "BANNED", "BLOCKED");
    let reply = env.get(&token, &fields).await;
    assert_eq!(reply.body["status"], "BANNED");
    assert_eq!(reply.body["health_status"]["can_send_message"], "BLOCKED");
    let phone = &reply.body["health_status"]["entities"][0];
    assert!(phone["errors"][0]["error_code"].is_number(), "{phone}");
    assert!(
        phone["errors"][0]["possible_solution"].is_string(),
        "{phone}"
    );
}

#[tokio::test]
async fn get_phone_without_fields_returns_the_default_fields() {
    let env = Env::new().await;
    let token = env.token().await;
    let reply = env.get(&token, &format!("/{PHONE}")).await;
    assert_eq!(
        reply.body,
        json!({
            "id": PHONE,
            "display_phone_number": "+55 11 99999-0000",
            "verified_name": "Muchaw Demo",
            "quality_rating": "GREEN",
        })
    );
}

#[tokio::test]
async fn get_phone_with_an_unknown_field_is_100() {
    let env = Env::new().await;
    let token = env.token().await;
    let reply = env
        .get(&token, &format!("/{PHONE}?fields=verified_name,colour"))
        .await;
    assert_eq!((reply.status, reply.code()), (400, 100));
    assert!(
        reply.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Tried accessing nonexisting field (colour)")
    );
}

#[tokio::test]
async fn unknown_object_is_100_subcode_33() {
    let env = Env::new().await;
    let token = env.token().await;
    let reply = env.get(&token, "/299999999999999").await;
    assert_eq!((reply.status, reply.code()), (400, 100));
    assert_eq!(reply.subcode(), Some(33));
    assert!(
        reply.body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with(
                "Unsupported get request. Object with ID '299999999999999' does not exist"
            )
    );
}

#[tokio::test]
async fn error_envelope_has_meta_shape() {
    let env = Env::new().await;
    let token = env.token().await;
    env.fake.set_two_step_pin(PHONE, "999999");
    let reply = env.register(&token, PHONE, "123456").await;
    let error = reply.body["error"].as_object().unwrap();
    let mut keys: Vec<&str> = error.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "code",
            "error_data",
            "fbtrace_id",
            "is_transient",
            "message",
            "type"
        ]
    );
    assert_eq!(error["type"], "OAuthException");
    assert_eq!(error["is_transient"], false);
    assert!(error["fbtrace_id"].as_str().unwrap().len() > 10);
    assert!(error["error_data"]["details"].is_string());
}

#[tokio::test]
async fn any_graph_version_is_accepted() {
    let env = Env::new().await;
    let token = env.token().await;
    for version in ["v19.0", "v25.0", "v100.1"] {
        let url = format!("{}/{version}/{PHONE}", env.fake.base_url());
        let reply = env.send(env.http.get(url).bearer_auth(&token)).await;
        assert_eq!(reply.status, 200, "{version}");
    }
}

#[tokio::test]
async fn fail_next_faults_n_calls_then_answers_normally() {
    let env = Env::new().await;
    let token = env.token().await;
    env.fake
        .fail_next(Route::Register, 2, Fault::transient_5xx());
    for _ in 0..2 {
        let reply = env.register(&token, PHONE, "123456").await;
        assert_eq!(reply.status, 500);
        assert_eq!(reply.code(), 2);
        assert_eq!(reply.body["error"]["is_transient"], true);
        assert!(!env.fake.phone(PHONE).unwrap().registered);
    }
    assert_eq!(env.register(&token, PHONE, "123456").await.status, 200);
    let statuses: Vec<u16> = env
        .fake
        .calls_to(Route::Register)
        .iter()
        .map(|c| c.status)
        .collect();
    assert_eq!(statuses, [500, 500, 200]);
}

#[tokio::test]
async fn fault_presets_carry_their_codes() {
    let env = Env::new().await;
    let token = env.token().await;
    let presets = [
        (Fault::rate_limited(), 400, 4, None),
        (Fault::pin_mismatch(), 400, 133005, None),
        (Fault::token_expired(), 401, 190, Some(463)),
        (Fault::display_name_not_ready(), 400, 100, Some(2388001)),
        (Fault::register_limit(), 400, 133016, None),
    ];
    for (fault, status, code, subcode) in presets {
        env.fake.fail_next(Route::Register, 1, fault);
        let reply = env.register(&token, PHONE, "123456").await;
        assert_eq!(
            (reply.status, reply.code(), reply.subcode()),
            (status, code, subcode)
        );
    }
}

#[tokio::test]
async fn faults_only_hit_their_route() {
    let env = Env::new().await;
    let token = env.token().await;
    env.fake
        .fail_next(Route::Register, 1, Fault::transient_5xx());
    assert_eq!(env.get(&token, &format!("/{PHONE}")).await.status, 200);
    assert_eq!(env.register(&token, PHONE, "123456").await.status, 500);
}

#[tokio::test]
async fn faulted_code_exchange_does_not_use_the_code() {
    let env = Env::new().await;
    let code = env.fake.issue_code(&[WABA]);
    env.fake
        .fail_next(Route::ExchangeCode, 1, Fault::transient_5xx());
    assert_eq!(env.exchange(&code).await.status, 500);
    assert_eq!(env.exchange(&code).await.status, 200);
}

#[tokio::test]
async fn delay_fault_answers_late_then_normally() {
    let env = Env::new().await;
    let token = env.token().await;
    env.fake
        .fail_next(Route::GetPhone, 1, Fault::Delay(Duration::from_millis(300)));
    let started = Instant::now();
    let reply = env.get(&token, &format!("/{PHONE}")).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["id"], PHONE);
    let started = Instant::now();
    env.get(&token, &format!("/{PHONE}")).await;
    assert!(started.elapsed() < Duration::from_millis(300));
}

#[tokio::test]
async fn delay_fault_hangs_past_a_client_timeout_and_is_logged() {
    let env = Env::new().await;
    let token = env.token().await;
    env.fake
        .fail_next(Route::Register, 1, Fault::Delay(Duration::from_secs(5)));
    let result = env
        .http
        .post(env.url(&format!("/{PHONE}/register")))
        .bearer_auth(&token)
        .json(&json!({"messaging_product": "whatsapp", "pin": "123456"}))
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(result.unwrap_err().is_timeout());
    assert_eq!(env.fake.calls_to(Route::Register).len(), 1);
    let started = Instant::now();
    env.fake.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn latency_applies_to_every_matching_call() {
    let env = Env::new().await;
    let token = env.token().await;
    env.fake
        .set_latency(Some(Route::GetPhone), Duration::from_millis(150));
    for _ in 0..2 {
        let started = Instant::now();
        env.get(&token, &format!("/{PHONE}")).await;
        assert!(started.elapsed() >= Duration::from_millis(150));
    }
    let started = Instant::now();
    env.post(&token, &format!("/{WABA}/subscribed_apps"), None)
        .await;
    assert!(started.elapsed() < Duration::from_millis(150));
    env.fake.set_latency(None, Duration::from_millis(100));
    let started = Instant::now();
    env.post(&token, &format!("/{WABA}/subscribed_apps"), None)
        .await;
    assert!(started.elapsed() >= Duration::from_millis(100));
}

#[tokio::test]
async fn call_log_records_route_method_path_query_body_status_and_authorization() {
    let env = Env::new().await;
    let code = env.fake.issue_code(&[WABA]);
    let token = env.exchange(&code).await.body["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    env.register(&token, PHONE, "123456").await;
    env.post(&token, &format!("/{WABA}/subscribed_apps"), None)
        .await;
    let calls = env.fake.calls();
    assert_eq!(
        calls.iter().map(|c| c.route).collect::<Vec<_>>(),
        [
            Some(Route::ExchangeCode),
            Some(Route::Register),
            Some(Route::SubscribeApp)
        ]
    );
    let exchange = &calls[0];
    assert_eq!(exchange.method, "GET");
    assert_eq!(exchange.path, "/v25.0/oauth/access_token");
    assert_eq!(exchange.query["code"], code);
    assert_eq!(exchange.body, Value::Null);
    assert_eq!(exchange.status, 200);
    assert_eq!(exchange.authorization, None);
    let register = &calls[1];
    assert_eq!(register.method, "POST");
    assert_eq!(register.path, format!("/v25.0/{PHONE}/register"));
    assert_eq!(
        register.body,
        json!({"messaging_product": "whatsapp", "pin": "123456"})
    );
    assert_eq!(
        register.authorization.as_deref(),
        Some(format!("Bearer {token}").as_str())
    );
    assert_eq!(calls[2].body, Value::Null);
    env.fake.clear_calls();
    assert!(env.fake.calls().is_empty());
}

#[tokio::test]
async fn unknown_paths_are_logged_without_a_route() {
    let env = Env::new().await;
    let reply = env
        .send(env.http.get(format!("{}/nonsense", env.fake.base_url())))
        .await;
    assert_eq!((reply.status, reply.code()), (400, 100));
    let calls = env.fake.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].route, None);
}

#[tokio::test]
async fn control_api_creates_a_code_that_exchanges() {
    let env = Env::new().await;
    let reply = env
        .send(
            env.http
                .post(format!("{}/_fake/codes", env.fake.base_url()))
                .json(&json!({"wabaIds": [WABA], "expiresIn": 600})),
        )
        .await;
    assert_eq!(reply.status, 200);
    let code = reply.body["code"].as_str().unwrap();
    let exchanged = env.exchange(code).await;
    assert_eq!(exchanged.status, 200);
    assert_eq!(exchanged.body["expires_in"], 600);
    // Control calls are not in the Graph call log.
    assert_eq!(env.fake.calls().len(), 1);
}

#[tokio::test]
async fn control_api_adds_phones_sets_quality_and_scripts_faults() {
    let env = Env::new().await;
    let base = env.fake.base_url();
    let phone = json!({
        "wabaId": "100000000000009",
        "phoneNumberId": "200000000000009",
        "displayPhoneNumber": "+44 20 7946 0000",
        "verifiedName": "Scripted",
        "qualityRating": "GREEN",
    });
    let added = env
        .send(env.http.post(format!("{base}/_fake/phones")).json(&phone))
        .await;
    assert_eq!(added.status, 200);
    let state = env.fake.phone("200000000000009").unwrap();
    assert_eq!(state.waba_id, "100000000000009");
    assert_eq!(state.verified_name, "Scripted");

    let quality = json!({"phoneNumberId": "200000000000009", "rating": "RED"});
    env.send(
        env.http
            .post(format!("{base}/_fake/quality"))
            .json(&quality),
    )
    .await;
    assert_eq!(
        env.fake.phone("200000000000009").unwrap().quality_rating,
        "RED"
    );

    let faults = [
        json!({"route": "Register", "times": 2, "fault": {"error": {
            "httpStatus": 503, "code": 133004, "isTransient": true, "message": "Temporarily unavailable"}}}),
        json!({"route": "Register", "fault": "pinMismatch"}),
        json!({"route": "Register", "fault": {"delayMs": 10}}),
    ];
    for fault in faults {
        let reply = env
            .send(env.http.post(format!("{base}/_fake/faults")).json(&fault))
            .await;
        assert_eq!(reply.status, 200, "{fault}");
    }
    let code = env.fake.issue_code(&["100000000000009"]);
    let token = env.exchange(&code).await.body["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut seen = Vec::new();
    for _ in 0..4 {
        let reply = env.register(&token, "200000000000009", "123456").await;
        seen.push((reply.status, reply.code()));
    }
    assert_eq!(
        seen,
        [(503, 133004), (503, 133004), (400, 133005), (200, 0)]
    );
}

#[tokio::test]
async fn control_api_lists_and_clears_calls() {
    let env = Env::new().await;
    let token = env.token().await;
    env.get(&token, &format!("/{PHONE}?fields=status")).await;
    let base = env.fake.base_url();
    let calls = env
        .send(env.http.get(format!("{base}/_fake/calls")))
        .await
        .body;
    assert_eq!(calls.as_array().unwrap().len(), 2);
    assert_eq!(calls[1]["route"], "GetPhone");
    assert_eq!(calls[1]["query"]["fields"], "status");
    assert_eq!(calls[1]["status"], 200);
    env.send(env.http.delete(format!("{base}/_fake/calls")))
        .await;
    assert!(env.fake.calls().is_empty());
}

#[tokio::test]
async fn add_phone_replaces_the_profile_and_keeps_the_registration() {
    let env = Env::new().await;
    let token = env.token().await;
    env.register(&token, PHONE, "123456").await;
    env.fake.add_phone(
        WABA,
        PhoneProfile {
            phone_number_id: PHONE.into(),
            display_phone_number: "+55 11 99999-0000".into(),
            verified_name: "Renamed".into(),
            quality_rating: "RED".into(),
        },
    );
    let state = env.fake.phone(PHONE).unwrap();
    assert!(state.registered);
    assert_eq!(state.verified_name, "Renamed");
    assert_eq!(state.pin.as_deref(), Some("123456"));
}

#[tokio::test]
async fn chaos_at_rate_one_faults_every_call_with_each_kind_and_lost_answers_take_effect() {
    let env = Env::new().await;
    let token = env.token().await;
    env.fake.set_chaos(1.0, 3, Duration::from_millis(10));

    for i in 0..40 {
        // A phone of its own per call, so each call's effect shows on its own.
        let phone = format!("20000000000{i:04}");
        env.fake.add_phone(
            WABA,
            PhoneProfile {
                phone_number_id: phone.clone(),
                display_phone_number: format!("+1 555 {i:04}"),
                verified_name: "Chaos".into(),
                quality_rating: "GREEN".into(),
            },
        );
        let reply = env.register(&token, &phone, "123456").await;
        let call = env.fake.calls_to(Route::Register).pop().unwrap();
        let registered = env.fake.phone(&phone).unwrap().registered;
        match call.chaos {
            Some(fake_meta::ChaosFault::Transient5xx | fake_meta::ChaosFault::RateLimited) => {
                assert!(reply.status >= 400);
                assert!(!registered, "a refused call changes nothing");
            }
            Some(fake_meta::ChaosFault::Hang | fake_meta::ChaosFault::AnswerLost) => {
                assert!(registered, "a hang or a lost answer still takes effect");
            }
            None => panic!("rate 1 faults every call"),
        }
    }

    let injected = env.fake.chaos_injected();
    assert_eq!(injected.values().sum::<u64>(), 40);
    assert_eq!(
        injected.len(),
        fake_meta::ChaosFault::ALL.len(),
        "{injected:?}"
    );
}

#[tokio::test]
async fn chaos_at_rate_zero_faults_nothing() {
    let env = Env::new().await;
    let token = env.token().await;
    env.fake.set_chaos(0.0, 3, Duration::from_millis(10));
    assert_eq!(env.register(&token, PHONE, "123456").await.status, 200);
    assert!(env.fake.chaos_injected().is_empty());
}

// ---- GET /{waba_id}/phone_numbers ------------------------------------------------------------

const THIRD_PHONE: &str = "200000000000003";

/// The demo WABA with two more phones (added after the demo phone, so listed before it).
async fn env_with_three_phones() -> Env {
    let env = Env::new().await;
    for (id, display) in [
        ("200000000000004", "+55 11 99999-0004"),
        (THIRD_PHONE, "+55 11 99999-0003"),
    ] {
        env.fake.add_phone(
            WABA,
            PhoneProfile {
                phone_number_id: id.into(),
                display_phone_number: display.into(),
                verified_name: "Muchaw Demo".into(),
                quality_rating: "GREEN".into(),
            },
        );
    }
    env
}

fn ids(reply: &Reply) -> Vec<String> {
    reply.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn phone_numbers_lists_the_waba_s_phones_newest_first_with_the_default_fields() {
    let env = env_with_three_phones().await;
    let token = env.token().await;
    let reply = env.get(&token, &format!("/{WABA}/phone_numbers")).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(
        ids(&reply),
        [THIRD_PHONE, "200000000000004", PHONE],
        "most recently onboarded first"
    );
    assert_eq!(
        reply.body["data"][2],
        json!({
            "id": PHONE,
            "display_phone_number": "+55 11 99999-0000",
            "verified_name": "Muchaw Demo",
            "quality_rating": "GREEN",
        })
    );
    assert!(reply.body["paging"]["cursors"]["before"].is_string());
    assert!(reply.body["paging"]["cursors"]["after"].is_string());
    assert!(
        reply.body["paging"].get("next").is_none(),
        "the last page has no next"
    );
    assert!(
        ids(&reply).iter().all(|id| id != OTHER_PHONE),
        "another WABA's phone is not listed"
    );
}

#[tokio::test]
async fn phone_numbers_answers_only_the_requested_fields() {
    let env = env_with_three_phones().await;
    let token = env.token().await;
    let reply = env
        .get(
            &token,
            &format!("/{WABA}/phone_numbers?fields=display_phone_number,platform_type"),
        )
        .await;
    assert_eq!(
        reply.body["data"][0],
        json!({"id": THIRD_PHONE, "display_phone_number": "+55 11 99999-0003", "platform_type": "NOT_APPLICABLE"})
    );
    let unknown = env
        .get(&token, &format!("/{WABA}/phone_numbers?fields=colour"))
        .await;
    assert_eq!((unknown.status, unknown.code()), (400, 100));
}

#[tokio::test]
async fn phone_numbers_pages_by_limit_with_after_cursors_and_a_next_url() {
    let env = env_with_three_phones().await;
    let token = env.token().await;
    let first = env
        .get(&token, &format!("/{WABA}/phone_numbers?limit=2"))
        .await;
    assert_eq!(ids(&first), [THIRD_PHONE, "200000000000004"]);
    let next = first.body["paging"]["next"].as_str().expect("a next page");
    assert!(
        next.contains("/phone_numbers?") && next.contains("after="),
        "{next}"
    );

    let after = first.body["paging"]["cursors"]["after"].as_str().unwrap();
    let second = env
        .get(
            &token,
            &format!("/{WABA}/phone_numbers?limit=2&after={after}"),
        )
        .await;
    assert_eq!(ids(&second), [PHONE]);
    assert!(second.body["paging"].get("next").is_none());

    // The next URL, followed as it is, gives the same page.
    let followed = env.send(env.http.get(next).bearer_auth(&token)).await;
    assert_eq!(ids(&followed), [PHONE]);

    let before = second.body["paging"]["cursors"]["before"].as_str().unwrap();
    let back = env
        .get(
            &token,
            &format!("/{WABA}/phone_numbers?limit=2&before={before}"),
        )
        .await;
    assert_eq!(ids(&back), [THIRD_PHONE, "200000000000004"]);
}

#[tokio::test]
async fn phone_numbers_of_a_waba_without_phones_is_an_empty_list_without_paging() {
    let env = Env::new().await;
    const EMPTY_WABA: &str = "100000000000009";
    let code = env.fake.issue_code(&[EMPTY_WABA]);
    let token = env.exchange(&code).await.body["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let reply = env
        .get(&token, &format!("/{EMPTY_WABA}/phone_numbers"))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, json!({"data": []}));
}

#[tokio::test]
async fn phone_numbers_refuses_a_bad_limit_or_cursor_with_100() {
    let env = env_with_three_phones().await;
    let token = env.token().await;
    for query in ["limit=0", "limit=abc", "limit=101", "after=not-a-cursor"] {
        let reply = env
            .get(&token, &format!("/{WABA}/phone_numbers?{query}"))
            .await;
        assert_eq!((reply.status, reply.code()), (400, 100), "{query}");
    }
}

#[tokio::test]
async fn phone_numbers_of_an_unknown_waba_is_100_subcode_33() {
    let env = Env::new().await;
    let token = env.token().await;
    let reply = env.get(&token, "/100000000000777/phone_numbers").await;
    assert_eq!((reply.status, reply.code()), (400, 100));
    assert_eq!(reply.subcode(), Some(33));
}

#[tokio::test]
async fn phone_numbers_needs_a_token_of_that_waba() {
    let env = Env::new().await;
    let token = env.token().await;
    let foreign = env
        .get(&token, &format!("/{OTHER_WABA}/phone_numbers"))
        .await;
    assert_eq!((foreign.status, foreign.code()), (403, 200));
    let unknown = env
        .get("EAAGnot-a-token", &format!("/{WABA}/phone_numbers"))
        .await;
    assert_eq!((unknown.status, unknown.code()), (401, 190));
}

#[tokio::test]
async fn phone_numbers_is_a_scriptable_route() {
    let env = Env::new().await;
    let token = env.token().await;
    env.fake
        .fail_next(Route::ListPhoneNumbers, 1, Fault::transient_5xx());
    let faulted = env.get(&token, &format!("/{WABA}/phone_numbers")).await;
    assert_eq!(faulted.status, 500);
    let answered = env.get(&token, &format!("/{WABA}/phone_numbers")).await;
    assert_eq!(ids(&answered), [PHONE]);
    assert_eq!(env.fake.calls_to(Route::ListPhoneNumbers).len(), 2);
}
