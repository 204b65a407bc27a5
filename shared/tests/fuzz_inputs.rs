//! Every parser of outside input, fuzzed (`proptest`) through the code that really receives it:
//! the API's query strings, paths and bodies through the whole router (both API functions'
//! routes, finished as deployed) over the in-memory adapters; the signup callback; the hosted
//! page's routes and signup-link states; Meta's webhook deliveries, signed and not; and the body
//! of every SQS queue's message through its consumer.
//!
//! For each input: no panic; a rejection is a 4xx in the contract's envelope
//! (`{"error": {"code", "message"}}`); a rejected input writes nothing (the store, the queue,
//! the vault and Meta are as they were).
//!
//! Case counts are `CASES` per property (override with `FUZZ_CASES=<n>`); each property prints
//! how many cases it ran (`cargo test -p muchaw-shared --test fuzz_inputs -- --nocapture`).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use muchaw_shared::adapters::memory::{
    MemoryQueue, MemoryStore, MemoryVault, ScriptedMeta, StoreSnapshot,
};
use muchaw_shared::adapters::secrets::AppSecrets;
use muchaw_shared::api;
use muchaw_shared::api::signup_page::PageConfig;
use muchaw_shared::domain::messages::{StepMessage, TeardownMessage};
use muchaw_shared::domain::secrets::{AppSecret, Secret};
use muchaw_shared::domain::signup_link::{LinkError, LinkSigner};
use muchaw_shared::domain::signup_session::SignupSession;
use muchaw_shared::domain::{AccountId, EventEnvelope, EventType, Number, Status, Step, time};
use muchaw_shared::meta_webhook::{self, MetaWebhook};
use muchaw_shared::ports::SignupLinks;
use muchaw_shared::provisioning::{Provisioner, RetryPolicy};
use muchaw_shared::secret_cache::SecretCache;
use muchaw_shared::webhooks::delivery::{
    DELIVERY_TIMEOUT, Deliverer, DeliveryMessage, Dispatcher, RETRY_SCHEDULE_SECONDS, http_client,
};
use muchaw_shared::webhooks::resolver::{GuardedResolver, Lookup, NameLookup};
use muchaw_shared::webhooks::sender::Sender;
use muchaw_shared::webhooks::url_policy::UrlPolicy;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};

const CASES: u32 = 256;
const KEY: &str = "mk_fuzz_key_for_account_a_00000000000000000000";
const APP_SECRET: &str = "fuzz-app-secret";
const SIGNING_KEY: &str = "fuzz-signup-link-signing-key";
/// The WABA of the seeded numbers: Meta deliveries naming it may legitimately change them.
const SEEDED_WABA: &str = "1000";

fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(CASES)
}

/// Runs `property` on `cases()` inputs of `strategy`, each in a fresh world, and prints the count.
fn fuzz<S, F>(name: &str, strategy: S, property: F)
where
    S: Strategy,
    S::Value: std::fmt::Debug,
    F: Fn(S::Value) -> Result<(), TestCaseError>,
{
    let ran = AtomicUsize::new(0);
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&strategy, |input| {
        ran.fetch_add(1, Ordering::Relaxed);
        property(input)
    });
    println!("fuzz {name}: {} cases", ran.load(Ordering::Relaxed));
    if let Err(failure) = result {
        panic!("{name}: {failure}");
    }
}

fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(future)
}

// ---- Generators -------------------------------------------------------------------------------

/// Text that is often close to what the parsers look for, and sometimes anything at all.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[0-9]{1,20}",
        "[A-Z_]{1,12}",
        "-?[0-9]{1,25}",
        prop::sample::select(vec![
            "ACTIVE",
            "PENDING",
            "FAILED",
            "BANNED",
            "DISCONNECTED",
            "active",
            "20",
            "100",
            "101",
            "0",
            "-1",
            "1e3",
            "https://hooks.example.com/x",
            "http://127.0.0.1/x",
            "https://user:pw@example.com",
            "number.activated",
            "opened",
            "failed",
            "cancelled",
            "coexistence",
            "cloud_api",
            "v1.e30.e30",
            "\u{0}",
            "%00",
            "%",
            "\u{202e}",
        ])
        .prop_map(str::to_string),
        any::<String>(),
        ".{0,300}",
    ]
}

/// JSON values of any shape, with the keys the parsers read more often than chance would give.
fn json_value(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        text().prop_map(Value::String),
    ];
    let key = prop_oneof![
        3 => prop::sample::select(keys).prop_map(str::to_string),
        1 => text(),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A body: JSON of any shape, bytes that are not JSON, or nothing.
fn body(keys: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => json_value(keys).prop_map(|v| v.to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..200),
        1 => text().prop_map(String::into_bytes),
    ]
}

/// A query string from key/value pairs, percent-encoded or raw (as a client might send it).
fn query(keys: &'static [&'static str]) -> impl Strategy<Value = String> {
    let pair = (
        prop_oneof![prop::sample::select(keys).prop_map(str::to_string), text()],
        text(),
        any::<bool>(),
    );
    prop::collection::vec(pair, 0..5).prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(k, v, encode)| {
                if encode {
                    serde_urlencoded::to_string([(k, v)]).unwrap_or_default()
                } else {
                    // Raw: only what a URI may carry, the rest percent-escaped byte by byte.
                    format!("{}={}", raw_query_text(&k), raw_query_text(&v))
                }
            })
            .collect::<Vec<_>>()
            .join("&")
    })
}

fn raw_query_text(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_graphic() && b != b'#' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A path segment: ids of the right shape, of other accounts, or anything, percent-encoded.
fn path_segment() -> impl Strategy<Value = String> {
    text().prop_map(|s| {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    })
}

// ---- The API, through the whole router --------------------------------------------------------

struct PublicAddress;

impl NameLookup for PublicAddress {
    fn lookup<'a>(&'a self, _host: &'a str) -> Lookup<'a> {
        Box::pin(async { Ok(vec![IpAddr::V4(Ipv4Addr::new(93, 184, 215, 14))]) })
    }
}

struct Api {
    store: MemoryStore,
    queue: MemoryQueue,
    signer: LinkSigner,
    /// A usable signup link's state, of the seeded account.
    state: String,
}

impl Api {
    fn new() -> Api {
        let store = MemoryStore::default();
        let account = AccountId::from("acc_fuzz_a".to_string());
        store.add_key(KEY, &account);
        for (phone, status) in [("111", Status::Active), ("222", Status::Failed)] {
            let mut number = Number::new_pending(
                account.clone(),
                SEEDED_WABA.into(),
                phone.into(),
                time::now(),
            );
            number.status = status;
            number.provisioning_step = None;
            store.insert_number(number);
        }
        let signer = LinkSigner::new(Secret::new(SIGNING_KEY));
        let issued = signer.issue(&account, time::now());
        let link = SignupSession::new(
            issued.link_id.clone(),
            account,
            time::now(),
            issued.expires_at,
            None,
        );
        block_on(store.save_link(&link)).expect("link saved");
        Api {
            store,
            queue: MemoryQueue::default(),
            signer,
            state: issued.state,
        }
    }

    /// Both API functions' routes, finished as `runtime.rs` finishes them.
    fn router(&self) -> Router {
        let store = self.store.clone();
        let page = PageConfig {
            app_id: "1".into(),
            config_id: "2".into(),
            graph_version: "v25.0".into(),
            sdk_url: api::signup_page::DEFAULT_SDK_URL.into(),
            meta_origin: api::signup_page::DEFAULT_META_ORIGIN.into(),
        };
        let routes = api::numbers_routes(store.clone(), self.queue.clone())
            .merge(api::signup_link_routes(
                store.clone(),
                self.signer.clone(),
                String::new(),
            ))
            .merge(api::webhook_routes_resolving(
                store.clone(),
                Sender::new(
                    UrlPolicy {
                        allow_private: false,
                    },
                    std::time::Duration::from_secs(5),
                )
                .expect("an HTTP client for test events"),
                GuardedResolver::new(Arc::new(PublicAddress), false),
            ))
            .merge(api::signup_callback_routes(
                store.clone(),
                self.queue.clone(),
                self.signer.clone(),
            ))
            .merge(api::signup_page_routes(
                store.clone(),
                self.signer.clone(),
                page,
                // Like the API's limit above: counting requests is not what is fuzzed.
                api::page_limit::PageLimits::UNLIMITED,
            ));
        api::finish(routes, store, api::ApiLimits::UNLIMITED)
    }

    fn written(&self) -> (StoreSnapshot, usize) {
        (self.store.snapshot(), self.queue.sent().len())
    }

    async fn call(
        &self,
        method: &str,
        uri: &str,
        key: bool,
        body: Vec<u8>,
    ) -> (StatusCode, Vec<u8>) {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json");
        if key {
            request = request.header("authorization", format!("Bearer {KEY}"));
        }
        let Ok(request) = request.body(Body::from(body)) else {
            // Not a request a client could send (the URI does not parse): nothing to test.
            return (
                StatusCode::BAD_REQUEST,
                b"{\"error\":{\"code\":\"x\",\"message\":\"x\"}}".to_vec(),
            );
        };
        let response = tower::ServiceExt::oneshot(self.router(), request)
            .await
            .unwrap_or_else(|never| match never {});
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes().to_vec())
            .unwrap_or_default();
        (status, bytes)
    }
}

/// A 4xx carries `{"error": {"code": <string>, "message": <string>}}`.
fn assert_envelope(status: StatusCode, body: &[u8], what: &str) -> Result<(), TestCaseError> {
    let value: Value = serde_json::from_slice(body).map_err(|_| {
        TestCaseError::fail(format!(
            "{what}: {status} without a JSON body: {:?}",
            String::from_utf8_lossy(body)
        ))
    })?;
    prop_assert!(
        value["error"]["code"].is_string() && value["error"]["message"].is_string(),
        "{what}: {status} without the error envelope: {value}"
    );
    Ok(())
}

/// The properties every API answer keeps: no 5xx; a 4xx in the envelope writes nothing; a
/// read writes nothing whatever its answer.
fn check_answer(
    api: &Api,
    before: (StoreSnapshot, usize),
    method: &str,
    what: &str,
    status: StatusCode,
    body: &[u8],
) -> Result<(), TestCaseError> {
    prop_assert!(!status.is_server_error(), "{what}: {status}");
    if status.is_client_error() {
        assert_envelope(status, body, what)?;
    }
    if status.is_client_error() || method == "GET" {
        prop_assert!(
            api.written() == before,
            "{what}: {status} but something was written"
        );
    }
    Ok(())
}

const NUMBER_QUERY_KEYS: &[&str] = &["status", "limit", "offset"];
const LINK_QUERY_KEYS: &[&str] = &["state", "limit", "cursor", "status"];

#[test]
fn list_queries_are_answered_or_refused_in_the_envelope() {
    let strategy = (
        prop::sample::select(vec!["/api/numbers", "/api/signup-links", "/api/webhooks"]),
        prop_oneof![query(NUMBER_QUERY_KEYS), query(LINK_QUERY_KEYS)],
    );
    fuzz("list query strings", strategy, |(path, query)| {
        let api = Api::new();
        let before = api.written();
        let uri = format!("{path}?{query}");
        let (status, body) = block_on(api.call("GET", &uri, true, Vec::new()));
        check_answer(&api, before, "GET", &uri, status, &body)
    });
}

#[test]
fn ids_in_paths_are_answered_or_refused_in_the_envelope() {
    let strategy = (
        prop::sample::select(vec![
            ("GET", "/api/numbers/{}"),
            ("DELETE", "/api/numbers/{}"),
            ("POST", "/api/numbers/{}/retry"),
            ("GET", "/api/signup-links/{}"),
            ("DELETE", "/api/signup-links/{}"),
            ("DELETE", "/api/webhooks/{}"),
        ]),
        path_segment(),
    );
    fuzz("ids in paths", strategy, |((method, template), id)| {
        let api = Api::new();
        let before = api.written();
        let uri = template.replace("{}", &id);
        let (status, body) = block_on(api.call(method, &uri, true, Vec::new()));
        prop_assert!(
            !status.is_success() || id.is_empty(),
            "{method} {uri}: {status}"
        );
        check_answer(&api, before, method, &uri, status, &body)
    });
}

#[test]
fn api_bodies_are_answered_or_refused_in_the_envelope() {
    const KEYS: &[&str] = &["url", "events", "redirectUrl", "status"];
    let strategy = (
        prop::sample::select(vec![
            "/api/webhooks",
            "/api/signup-links",
            "/api/numbers/x/retry",
        ]),
        body(KEYS),
    );
    fuzz("API bodies", strategy, |(path, body)| {
        let api = Api::new();
        let before = api.written();
        let (status, answer) = block_on(api.call("POST", path, true, body.clone()));
        let what = format!("POST {path} {:?}", String::from_utf8_lossy(&body));
        check_answer(&api, before, "POST", &what, status, &answer)
    });
}

#[test]
fn requests_without_a_key_are_refused_and_write_nothing() {
    let strategy = (
        prop::sample::select(vec![
            ("GET", "/api/numbers"),
            ("POST", "/api/webhooks"),
            ("POST", "/api/signup-links"),
            ("DELETE", "/api/numbers/x"),
        ]),
        body(&["url"]),
    );
    fuzz(
        "requests without a key",
        strategy,
        |((method, path), body)| {
            let api = Api::new();
            let before = api.written();
            let (status, answer) = block_on(api.call(method, path, false, body));
            prop_assert_eq!(status, StatusCode::UNAUTHORIZED);
            check_answer(&api, before, method, path, status, &answer)
        },
    );
}

// ---- The signup callback ----------------------------------------------------------------------

const CALLBACK_KEYS: &[&str] = &[
    "code",
    "wabaId",
    "phoneNumberId",
    "state",
    "businessId",
    "mode",
];

/// A callback body near the real one: each field kept, dropped, retyped or replaced.
fn callback_body() -> impl Strategy<Value = Value> {
    let field = |good: Value| {
        prop_oneof![
            2 => Just(Some(good)),
            1 => Just(None),
            2 => text().prop_map(|t| Some(Value::String(t))),
            1 => json_value(CALLBACK_KEYS).prop_map(Some),
        ]
    };
    (
        field(json!("AQBcode-from-FB-login")),
        field(json!("4000")),
        field(json!("5000")),
        field(json!("1234")),
        field(json!("cloud_api")),
        prop::option::of((text(), json_value(CALLBACK_KEYS))),
    )
        .prop_map(|(code, waba, phone, business, mode, extra)| {
            let mut body = serde_json::Map::new();
            for (name, value) in [
                ("code", code),
                ("wabaId", waba),
                ("phoneNumberId", phone),
                ("businessId", business),
                ("mode", mode),
            ] {
                if let Some(value) = value {
                    body.insert(name.into(), value);
                }
            }
            if let Some((name, value)) = extra {
                body.insert(name, value);
            }
            Value::Object(body)
        })
}

/// A signup link's state: the real one, altered, of another signer, or anything.
fn link_state(real: String) -> impl Strategy<Value = String> {
    let other = LinkSigner::new(Secret::new("another-key"))
        .issue(&AccountId::from("acc_fuzz_a".to_string()), time::now())
        .state;
    let altered_real = real.clone();
    prop_oneof![
        (any::<prop::sample::Index>(), any::<char>()).prop_map(move |(at, c)| {
            let mut chars: Vec<char> = altered_real.chars().collect();
            let at = at.index(chars.len());
            chars[at] = c;
            chars.into_iter().collect()
        }),
        (any::<prop::sample::Index>()).prop_map({
            let real = real.clone();
            move |at| real[..at.index(real.len())].to_string()
        }),
        Just(other),
        text().prop_map({
            let real = real.clone();
            move |t| format!("{real}{t}")
        }),
        text(),
        "v1\\.[A-Za-z0-9_-]{0,40}\\.[A-Za-z0-9_-]{0,44}",
    ]
    .prop_filter("not the real state", move |s| *s != real)
}

#[test]
fn callback_bodies_with_a_key_are_answered_or_refused_and_refusals_write_nothing() {
    fuzz("signup callback bodies", callback_body(), |body| {
        let api = Api::new();
        let before = api.written();
        let bytes = body.to_string().into_bytes();
        let (status, answer) = block_on(api.call("POST", "/api/signup/callback", true, bytes));
        check_answer(&api, before, "POST", &body.to_string(), status, &answer)
    });
}

#[test]
fn callback_states_that_are_not_the_issued_one_are_401_and_write_nothing() {
    let api = Api::new();
    let strategy = (callback_body(), link_state(api.state.clone()));
    fuzz("signup callback states", strategy, |(mut body, state)| {
        let api = Api::new();
        let before = api.written();
        body["state"] = json!(state);
        let bytes = body.to_string().into_bytes();
        let (status, answer) = block_on(api.call("POST", "/api/signup/callback", false, bytes));
        prop_assert!(status.is_client_error(), "{body}: {status}");
        check_answer(&api, before, "POST", &body.to_string(), status, &answer)
    });
}

// ---- Signup-link states: the signer and the hosted page's routes -------------------------------

#[test]
fn only_the_issued_state_verifies() {
    let api = Api::new();
    let strategy = link_state(api.state.clone());
    fuzz("signup-link states (signer)", strategy, |state| {
        let api = Api::new();
        prop_assert_eq!(
            api.signer.verify(&state, time::now()).err(),
            Some(LinkError::Invalid),
            "{}",
            state
        );
        Ok(())
    });
}

#[test]
fn page_routes_refuse_states_that_are_not_the_issued_one_and_write_nothing() {
    const EVENT_KEYS: &[&str] = &[
        "state",
        "event",
        "currentStep",
        "errorMessage",
        "errorId",
        "sessionId",
    ];
    let api = Api::new();
    let strategy = (
        link_state(api.state.clone()),
        prop::sample::select(vec!["/signup", "/signup/status", "/signup/events"]),
        json_value(EVENT_KEYS),
    );
    fuzz("signup page states", strategy, |(state, path, event)| {
        let api = Api::new();
        let before = api.written();
        let (status, answer) = if path == "/signup/events" {
            let mut body = event;
            if body.is_object() {
                body["state"] = json!(state);
            }
            block_on(api.call("POST", path, false, body.to_string().into_bytes()))
        } else {
            let query = serde_urlencoded::to_string([("state", &state)]).unwrap_or_default();
            block_on(api.call("GET", &format!("{path}?{query}"), false, Vec::new()))
        };
        let what = format!("{path} state={state:?}");
        prop_assert!(status.is_client_error(), "{what}: {status}");
        if path == "/signup" {
            // The page answers people: an HTML page saying why, never the JSON envelope.
            prop_assert!(String::from_utf8_lossy(&answer).contains("<html"), "{what}");
            prop_assert!(api.written() == before, "{what}: something was written");
            return Ok(());
        }
        check_answer(&api, before, "POST", &what, status, &answer)
    });
}

#[test]
fn page_reports_with_the_issued_state_are_recorded_or_refused_in_the_envelope() {
    const EVENT_KEYS: &[&str] = &[
        "event",
        "currentStep",
        "errorMessage",
        "errorId",
        "sessionId",
    ];
    fuzz("signup page reports", json_value(EVENT_KEYS), |mut body| {
        let api = Api::new();
        let before = api.written();
        if body.is_object() {
            body["state"] = json!(api.state);
        }
        let (status, answer) = block_on(api.call(
            "POST",
            "/signup/events",
            false,
            body.to_string().into_bytes(),
        ));
        check_answer(&api, before, "POST", &body.to_string(), status, &answer)
    });
}

// ---- Meta's webhooks --------------------------------------------------------------------------

const META_KEYS: &[&str] = &[
    "object",
    "entry",
    "id",
    "time",
    "changes",
    "field",
    "value",
    "event",
    "ban_info",
    "waba_ban_state",
    "waba_ban_date",
    "waba_info",
    "waba_id",
    "phone_number",
    "display_phone_number",
    "decision",
    "requested_verified_name",
    "restriction_info",
    "restriction_type",
    "expiration",
    "violation_info",
    "current_limit",
    "message_template_id",
];

/// A delivery shaped like Meta's (`object`, `entry[].changes[]`), every part of it arbitrary,
/// about WABAs this deployment does not have.
fn meta_delivery() -> impl Strategy<Value = Value> {
    let waba = "[0-9]{1,6}".prop_filter("not the seeded WABA", |id| id != SEEDED_WABA);
    let change = (
        prop_oneof![
            prop::sample::select(vec![
                "account_update",
                "phone_number_quality_update",
                "phone_number_name_update",
                "business_capability_update",
                "message_template_status_update",
            ])
            .prop_map(str::to_string),
            text()
        ],
        json_value(META_KEYS),
    )
        .prop_map(|(field, value)| json!({"field": field, "value": value}));
    let entry = (
        prop_oneof![waba.prop_map(Value::String), json_value(META_KEYS)],
        any::<i64>(),
        prop::collection::vec(change, 0..3),
    )
        .prop_map(|(id, time, changes)| json!({"id": id, "time": time, "changes": changes}));
    prop_oneof![
        3 => (
            prop_oneof![Just(json!("whatsapp_business_account")), json_value(META_KEYS)],
            prop::collection::vec(entry, 0..3),
        )
            .prop_map(|(object, entry)| json!({"object": object, "entry": entry})),
        1 => json_value(META_KEYS),
    ]
}

struct Meta {
    store: MemoryStore,
    queue: MemoryQueue,
}

impl Meta {
    fn new() -> Meta {
        let api = Api::new();
        Meta {
            store: api.store,
            queue: api.queue,
        }
    }

    fn router(&self) -> Router {
        meta_webhook::routes(MetaWebhook {
            store: self.store.clone(),
            queue: self.queue.clone(),
            secrets: SecretCache::fixed(AppSecrets {
                app_secret: AppSecret::new(APP_SECRET),
                webhook_verify_token: Secret::new("fuzz-verify-token"),
            }),
        })
    }

    async fn post(&self, body: Vec<u8>, signature: Option<String>) -> (StatusCode, Vec<u8>) {
        let mut request =
            Request::post("/webhooks/meta").header("content-type", "application/json");
        if let Some(signature) = signature {
            request = request.header("x-hub-signature-256", signature);
        }
        let request = request.body(Body::from(body)).expect("a request");
        let response = tower::ServiceExt::oneshot(self.router(), request)
            .await
            .unwrap_or_else(|never| match never {});
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes().to_vec())
            .unwrap_or_default();
        (status, bytes)
    }

    fn written(&self) -> (StoreSnapshot, usize) {
        (self.store.snapshot(), self.queue.sent().len())
    }
}

#[test]
fn signed_meta_deliveries_of_any_shape_are_acknowledged_and_change_nothing_of_others() {
    fuzz(
        "Meta webhook bodies (signed)",
        meta_delivery(),
        |delivery| {
            let meta = Meta::new();
            let before = meta.written();
            let body = delivery.to_string().into_bytes();
            let signature = meta_webhook::sign(APP_SECRET, &body);
            let (status, _) = block_on(meta.post(body, Some(signature)));
            // Meta redelivers anything but a 200 for days: every signed JSON body is acknowledged.
            prop_assert_eq!(status, StatusCode::OK, "{}", delivery);
            prop_assert!(
                meta.written() == before,
                "{}: something was written",
                delivery
            );
            Ok(())
        },
    );
}

#[test]
fn signed_meta_bodies_that_are_not_json_are_400_in_the_envelope() {
    let not_json = prop::collection::vec(any::<u8>(), 0..300)
        .prop_filter("not JSON", |b| serde_json::from_slice::<Value>(b).is_err());
    fuzz("Meta webhook bodies (not JSON)", not_json, |body| {
        let meta = Meta::new();
        let before = meta.written();
        let signature = meta_webhook::sign(APP_SECRET, &body);
        let (status, answer) = block_on(meta.post(body, Some(signature)));
        prop_assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_envelope(status, &answer, "not JSON")?;
        prop_assert!(meta.written() == before);
        Ok(())
    });
}

#[test]
fn meta_deliveries_not_signed_with_the_app_secret_are_401_and_change_nothing() {
    let signature = prop_oneof![
        Just(None),
        // Only what a header can carry: anything else never reaches the function.
        text()
            .prop_filter("a header value", |t| axum::http::HeaderValue::from_str(t)
                .is_ok())
            .prop_map(Some),
        "sha256=[0-9a-f]{64}".prop_map(Some),
    ];
    // About the seeded WABA too: a forged ban must not ban.
    let delivery = prop_oneof![
        meta_delivery(),
        Just(
            json!({"object": "whatsapp_business_account", "entry": [{"id": SEEDED_WABA,
            "time": 1, "changes": [{"field": "account_update",
            "value": {"event": "DISABLED_UPDATE", "ban_info": {"waba_ban_state": "DISABLE"}}}]}]})
        ),
    ];
    fuzz(
        "Meta webhook bodies (unsigned)",
        (delivery, signature),
        |(delivery, signature)| {
            let meta = Meta::new();
            let before = meta.written();
            let body = delivery.to_string().into_bytes();
            let (status, answer) = block_on(meta.post(body, signature));
            prop_assert_eq!(status, StatusCode::UNAUTHORIZED);
            assert_envelope(status, &answer, "unsigned")?;
            prop_assert!(meta.written() == before);
            Ok(())
        },
    );
}

// ---- SQS message bodies, through each queue's consumer -----------------------------------------

/// A body for a queue: its real message altered (a field dropped, retyped or replaced, the
/// version changed, a field added), JSON of any shape, or not JSON.
fn message_body(real: Value) -> impl Strategy<Value = String> {
    let fields: Vec<String> = real
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let keys: &'static [&'static str] = &["v", "numberId", "accountId", "step", "traceId", "code"];
    let mutated = (
        prop::sample::select(fields),
        prop_oneof![Just(None), json_value(keys).prop_map(Some),],
        prop::option::of((text(), json_value(keys))),
        prop_oneof![Just(json!(1)), json_value(keys)],
    )
        .prop_map(move |(field, replacement, extra, version)| {
            let mut value = real.clone();
            match replacement {
                None => {
                    value.as_object_mut().map(|o| o.remove(&field));
                }
                Some(replacement) => value[&field] = replacement,
            }
            if let Some((name, extra)) = extra {
                value[name] = extra;
            }
            if field != "v" {
                value["v"] = version;
            }
            value.to_string()
        });
    prop_oneof![
        4 => mutated,
        1 => json_value(keys).prop_map(|v| v.to_string()),
        1 => text(),
    ]
}

fn sqs_event(body: &str) -> SqsEvent {
    let mut message = SqsMessage::default();
    message.message_id = Some("fuzz-1".into());
    message.receipt_handle = Some("receipt-1".into());
    message.body = Some(body.to_string());
    message
        .attributes
        .insert("ApproximateReceiveCount".into(), "1".into());
    let mut event = SqsEvent::default();
    event.records = vec![message];
    event
}

struct Consumers {
    store: MemoryStore,
    queue: MemoryQueue,
    meta: ScriptedMeta,
    vault: MemoryVault,
    /// A seeded number, which well-formed messages would be about.
    number: Number,
}

impl Consumers {
    fn new() -> Consumers {
        let store = MemoryStore::default();
        let mut number = Number::new_pending(
            AccountId::from("acc_fuzz_q".to_string()),
            SEEDED_WABA.into(),
            "333".into(),
            time::now(),
        );
        number.provisioning_step = Some(Step::FIRST);
        store.insert_number(number.clone());
        Consumers {
            store,
            queue: MemoryQueue::default(),
            meta: ScriptedMeta::default(),
            vault: MemoryVault::default(),
            number,
        }
    }

    fn provisioner(&self) -> Provisioner<MemoryStore, MemoryQueue, ScriptedMeta, MemoryVault> {
        Provisioner {
            store: self.store.clone(),
            queue: self.queue.clone(),
            meta: self.meta.clone(),
            vault: self.vault.clone(),
            retry: RetryPolicy::default(),
        }
    }

    /// Everything a consumer could change: the store, what was sent, Meta, the vault.
    fn written(&self) -> (StoreSnapshot, usize, usize, bool) {
        (
            self.store.snapshot(),
            self.queue.sent().len(),
            self.meta.calls().len(),
            self.vault.holds(&self.number.id) || !self.vault.deleted().is_empty(),
        )
    }
}

/// Whether `body` reads as a `T` (a message the consumer acts on, which may write).
fn readable<T: serde::de::DeserializeOwned>(body: &str) -> bool {
    muchaw_shared::domain::messages::parse::<T>(body).is_ok()
}

fn check_consumer<T: serde::de::DeserializeOwned>(
    consumers: &Consumers,
    before: (StoreSnapshot, usize, usize, bool),
    body: &str,
    failures: usize,
) -> Result<(), TestCaseError> {
    if readable::<T>(body) {
        return Ok(());
    }
    prop_assert_eq!(failures, 1, "an unreadable body is handed back: {}", body);
    prop_assert!(
        consumers.written() == before,
        "an unreadable body wrote something: {}",
        body
    );
    Ok(())
}

#[test]
fn step_messages_that_do_not_read_are_handed_back_and_write_nothing() {
    let real = |n: &Number| {
        let mut message = StepMessage::new(
            n.id.clone(),
            n.account_id.clone(),
            Step::FIRST,
            "trc_fuzz".into(),
        );
        message.code = Some(Secret::new("AQBcode"));
        serde_json::to_value(&message).expect("a message")
    };
    let seeded = Consumers::new().number;
    let strategy = (
        message_body(real(&seeded)),
        prop::sample::select(Step::ALL.to_vec()),
    );
    fuzz("step queue bodies", strategy, |(body, step)| {
        let consumers = Consumers::new();
        // The generated body names the first run's number: point it at this world's.
        let body = body.replace(seeded.id.as_str(), consumers.number.id.as_str());
        let before = consumers.written();
        let response = block_on(consumers.provisioner().handle_batch(step, sqs_event(&body)));
        check_consumer::<StepMessage>(
            &consumers,
            before,
            &body,
            response.batch_item_failures.len(),
        )
    });
}

#[test]
fn dead_letters_that_do_not_read_are_handed_back_and_write_nothing() {
    let seeded = Consumers::new().number;
    let real = serde_json::to_value(StepMessage::new(
        seeded.id.clone(),
        seeded.account_id.clone(),
        Step::RegisterNumber,
        "trc_fuzz".into(),
    ))
    .expect("a message");
    fuzz("step dead-letter bodies", message_body(real), |body| {
        let consumers = Consumers::new();
        let body = body.replace(seeded.id.as_str(), consumers.number.id.as_str());
        let before = consumers.written();
        let response = block_on(
            consumers
                .provisioner()
                .handle_dead_letters(sqs_event(&body)),
        );
        check_consumer::<StepMessage>(
            &consumers,
            before,
            &body,
            response.batch_item_failures.len(),
        )
    });
}

#[test]
fn teardown_messages_that_do_not_read_are_handed_back_and_write_nothing() {
    let seeded = Consumers::new().number;
    let real = serde_json::to_value(TeardownMessage::new(
        seeded.id.clone(),
        seeded.account_id.clone(),
    ))
    .expect("a message");
    fuzz("teardown queue bodies", message_body(real), |body| {
        let consumers = Consumers::new();
        let body = body.replace(seeded.id.as_str(), consumers.number.id.as_str());
        let before = consumers.written();
        let response = block_on(consumers.provisioner().handle_teardowns(sqs_event(&body)));
        check_consumer::<TeardownMessage>(
            &consumers,
            before,
            &body,
            response.batch_item_failures.len(),
        )
    });
}

#[test]
fn events_that_do_not_read_are_handed_back_and_fan_out_nothing() {
    let seeded = Consumers::new().number;
    let real = serde_json::to_value(EventEnvelope::new(
        EventType::NumberActivated,
        &seeded,
        time::now(),
    ))
    .expect("an event");
    fuzz("events queue bodies", message_body(real), |body| {
        let consumers = Consumers::new();
        let before = consumers.written();
        let dispatcher = Dispatcher {
            store: consumers.store.clone(),
            queue: consumers.queue.clone(),
        };
        let response = block_on(dispatcher.handle_events(sqs_event(&body)));
        check_consumer::<EventEnvelope>(
            &consumers,
            before,
            &body,
            response.batch_item_failures.len(),
        )
    });
}

#[test]
fn deliveries_that_do_not_read_are_handed_back_and_post_nothing() {
    let real = serde_json::to_value(DeliveryMessage {
        v: 1,
        event_id: "evt_fuzz".into(),
        event_type: EventType::NumberActivated,
        account_id: AccountId::from("acc_fuzz_q".to_string()),
        endpoint_id: "whe_fuzz".into(),
        body: "{}".into(),
    })
    .expect("a delivery");
    fuzz(
        "webhook deliveries queue bodies",
        message_body(real),
        |body| {
            let consumers = Consumers::new();
            let before = consumers.written();
            let resolver = GuardedResolver::new(Arc::new(PublicAddress), false);
            let deliverer = Deliverer {
                store: consumers.store.clone(),
                queue: consumers.queue.clone(),
                http: http_client(DELIVERY_TIMEOUT, resolver)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?,
                policy: UrlPolicy {
                    allow_private: false,
                },
                retry_schedule: RETRY_SCHEDULE_SECONDS.to_vec(),
            };
            let response = block_on(deliverer.handle_deliveries(sqs_event(&body)));
            check_consumer::<DeliveryMessage>(
                &consumers,
                before,
                &body,
                response.batch_item_failures.len(),
            )
        },
    );
}
