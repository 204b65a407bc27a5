//! A fake of Meta's WhatsApp Graph API that behaves as `META.md` describes: it validates
//! parameters and tokens, hands out single-use 30-second codes, binds tokens to their WABAs,
//! enforces the PIN rules and the register limit, selects fields, and answers with Meta's error
//! envelope and HTTP statuses. Tests script it (fail the next N calls of a route, add latency,
//! hang past a client's timeout) and read its log of calls.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub const CODE_LIFETIME: Duration = Duration::from_secs(30);
pub const REGISTER_LIMIT: usize = 10;
pub const REGISTER_WINDOW: Duration = Duration::from_secs(72 * 3600);
pub const USER_TOKEN_EXPIRES_IN: u64 = 5_183_944;

#[derive(Clone, Debug)]
pub struct FakeMetaConfig {
    pub app_id: String,
    pub app_secret: String,
}

impl Default for FakeMetaConfig {
    fn default() -> Self {
        FakeMetaConfig {
            app_id: "1234567890".into(),
            app_secret: "fake-app-secret".into(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhoneProfile {
    pub phone_number_id: String,
    pub display_phone_number: String,
    pub verified_name: String,
    pub quality_rating: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Route {
    ExchangeCode,
    ExchangeUserToken,
    DebugToken,
    SubscribeApp,
    UnsubscribeApp,
    Register,
    Deregister,
    SetPin,
    GetPhone,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Fault {
    /// Meta's error envelope with this HTTP status.
    #[serde(rename_all = "camelCase")]
    Error {
        http_status: u16,
        code: i64,
        subcode: Option<i64>,
        is_transient: bool,
        message: String,
    },
    /// Waits this long, then answers normally (past a client's timeout: a hang).
    Delay(Duration),
}

impl Fault {
    fn error(http_status: u16, code: i64, subcode: Option<i64>, transient: bool, message: &str) -> Fault {
        Fault::Error {
            http_status,
            code,
            subcode,
            is_transient: transient,
            message: message.into(),
        }
    }
    pub fn transient_5xx() -> Fault {
        Fault::error(500, 2, None, true, "An unexpected error has occurred. Please retry your request later.")
    }
    pub fn rate_limited() -> Fault {
        Fault::error(400, 4, None, true, "(#4) Application request limit reached")
    }
    pub fn pin_mismatch() -> Fault {
        Fault::error(400, 133005, None, false, "Two step verification PIN Mismatch")
    }
    pub fn token_expired() -> Fault {
        Fault::error(401, 190, Some(463), false, "Error validating access token: Session has expired.")
    }
    pub fn display_name_not_ready() -> Fault {
        Fault::error(400, 100, Some(2388001), false, "Cannot create certificate")
    }
    pub fn register_limit() -> Fault {
        Fault::error(400, 133016, None, false, "Account register deregister rate limit exceeded")
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Call {
    /// Arrival order, unique for the server's lifetime.
    pub seq: u64,
    pub route: Option<Route>,
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub body: Value,
    pub status: u16,
    pub authorization: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhoneState {
    pub waba_id: String,
    pub registered: bool,
    pub pin: Option<String>,
    pub register_calls: usize,
    pub quality_rating: String,
    pub verified_name: String,
    pub display_phone_number: String,
}

#[derive(Clone, Debug)]
pub struct DemoSeed {
    pub waba_id: String,
    pub phone_number_id: String,
}

struct Code {
    wabas: Vec<String>,
    issued: Instant,
    used: bool,
    expires_in: Option<u64>,
}

struct Token {
    wabas: Vec<String>,
    expired: bool,
    expires_in: Option<u64>,
}

struct Phone {
    waba_id: String,
    profile: PhoneProfile,
    registered: bool,
    pin: Option<String>,
    register_events: Vec<Instant>,
}

#[derive(Default)]
struct FakeState {
    codes: HashMap<String, Code>,
    tokens: HashMap<String, Token>,
    subscribed: HashMap<String, bool>,
    phones: HashMap<String, Phone>,
    faults: HashMap<Route, VecDeque<Fault>>,
    latency: HashMap<Option<Route>, Duration>,
    calls: Vec<Call>,
    next_seq: u64,
    code_age: Duration,
}

struct Inner {
    config: FakeMetaConfig,
    state: Mutex<FakeState>,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running fake; clones share it.
#[derive(Clone)]
pub struct FakeMeta {
    inner: Arc<Inner>,
    addr: SocketAddr,
    shutdown: Arc<Mutex<Option<oneshot::Sender<()>>>>,
}

fn random(prefix: &str, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let tail: String = (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}{tail}")
}

impl FakeMeta {
    pub async fn start(config: FakeMetaConfig) -> std::io::Result<FakeMeta> {
        FakeMeta::start_on(config, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    pub async fn start_on(config: FakeMetaConfig, addr: SocketAddr) -> std::io::Result<FakeMeta> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            config,
            state: Mutex::new(FakeState::default()),
        });
        let (tx, rx) = oneshot::channel();
        let app = router(inner.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(FakeMeta {
            inner,
            addr,
            shutdown: Arc::new(Mutex::new(Some(tx))),
        })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn app_id(&self) -> &str {
        &self.inner.config.app_id
    }
    pub fn app_secret(&self) -> &str {
        &self.inner.config.app_secret
    }

    pub fn add_phone(&self, waba_id: &str, phone: PhoneProfile) {
        let mut state = self.inner.state();
        state.subscribed.entry(waba_id.to_string()).or_insert(false);
        let id = phone.phone_number_id.clone();
        let previous = state.phones.remove(&id);
        state.phones.insert(
            id,
            Phone {
                waba_id: waba_id.to_string(),
                profile: phone,
                registered: previous.as_ref().is_some_and(|p| p.registered),
                pin: previous.as_ref().and_then(|p| p.pin.clone()),
                register_events: previous.map(|p| p.register_events).unwrap_or_default(),
            },
        );
    }

    pub fn issue_code(&self, waba_ids: &[&str]) -> String {
        self.issue(waba_ids, None)
    }

    pub fn issue_code_expiring(&self, waba_ids: &[&str], expires_in_secs: u64) -> String {
        self.issue(waba_ids, Some(expires_in_secs))
    }

    fn issue(&self, waba_ids: &[&str], expires_in: Option<u64>) -> String {
        let code = random("AQB", 48);
        let mut state = self.inner.state();
        for waba in waba_ids {
            state.subscribed.entry(waba.to_string()).or_insert(false);
        }
        let issued = Instant::now();
        state.codes.insert(
            code.clone(),
            Code {
                wabas: waba_ids.iter().map(|w| w.to_string()).collect(),
                issued,
                used: false,
                expires_in,
            },
        );
        code
    }

    /// Makes every code older, as if this much time had passed.
    pub fn age_codes(&self, by: Duration) {
        self.inner.state().code_age += by;
    }

    pub fn set_quality(&self, phone_number_id: &str, rating: &str) {
        if let Some(phone) = self.inner.state().phones.get_mut(phone_number_id) {
            phone.profile.quality_rating = rating.to_string();
        }
    }

    pub fn set_two_step_pin(&self, phone_number_id: &str, pin: &str) {
        if let Some(phone) = self.inner.state().phones.get_mut(phone_number_id) {
            phone.pin = Some(pin.to_string());
        }
    }

    pub fn expire_token(&self, token: &str) {
        if let Some(t) = self.inner.state().tokens.get_mut(token) {
            t.expired = true;
        }
    }

    pub fn revoke_all_tokens(&self) {
        self.inner.state().tokens.clear();
    }

    pub fn fail_next(&self, route: Route, times: usize, fault: Fault) {
        let mut state = self.inner.state();
        let queue = state.faults.entry(route).or_default();
        for _ in 0..times {
            queue.push_back(fault.clone());
        }
    }

    pub fn set_latency(&self, route: Option<Route>, latency: Duration) {
        self.inner.state().latency.insert(route, latency);
    }

    pub fn calls(&self) -> Vec<Call> {
        self.inner.state().calls.clone()
    }

    pub fn calls_to(&self, route: Route) -> Vec<Call> {
        self.inner
            .state()
            .calls
            .iter()
            .filter(|c| c.route == Some(route))
            .cloned()
            .collect()
    }

    pub fn clear_calls(&self) {
        self.inner.state().calls.clear();
    }

    pub fn phone(&self, phone_number_id: &str) -> Option<PhoneState> {
        self.inner.state().phones.get(phone_number_id).map(|p| PhoneState {
            waba_id: p.waba_id.clone(),
            registered: p.registered,
            pin: p.pin.clone(),
            register_calls: p.register_events.len(),
            quality_rating: p.profile.quality_rating.clone(),
            verified_name: p.profile.verified_name.clone(),
            display_phone_number: p.profile.display_phone_number.clone(),
        })
    }

    pub fn is_subscribed(&self, waba_id: &str) -> bool {
        self.inner
            .state()
            .subscribed
            .get(waba_id)
            .copied()
            .unwrap_or(false)
    }

    pub async fn shutdown(self) {
        if let Some(tx) = self.shutdown.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = tx.send(());
        }
    }
}

pub fn seed_demo(fake: &FakeMeta) -> DemoSeed {
    let seed = DemoSeed {
        waba_id: "100000000000001".into(),
        phone_number_id: "200000000000001".into(),
    };
    fake.add_phone(
        &seed.waba_id,
        PhoneProfile {
            phone_number_id: seed.phone_number_id.clone(),
            display_phone_number: "+55 11 99999-0000".into(),
            verified_name: "Muchaw Demo".into(),
            quality_rating: "GREEN".into(),
        },
    );
    seed
}

// ---- HTTP ---------------------------------------------------------------------------------

fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/_fake/codes", post(control_code))
        .route("/_fake/phones", post(control_phone))
        .route("/_fake/faults", post(control_fault))
        .route("/_fake/quality", post(control_quality))
        .route("/_fake/calls", get(control_calls).delete(control_clear_calls))
        .fallback(graph)
        .with_state(inner)
}

struct Answer {
    status: StatusCode,
    body: Value,
}

fn ok(body: Value) -> Answer {
    Answer {
        status: StatusCode::OK,
        body,
    }
}

fn meta_error(status: u16, code: i64, subcode: Option<i64>, transient: bool, message: &str) -> Answer {
    let mut error = json!({
        "message": message,
        "type": "OAuthException",
        "code": code,
        "fbtrace_id": random("A", 23),
        "is_transient": transient,
    });
    if let Some(sub) = subcode {
        error["error_subcode"] = json!(sub);
    }
    if code >= 130000 || code == 100 {
        error["error_data"] = json!({"messaging_product": "whatsapp", "details": message});
    }
    Answer {
        status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        body: json!({ "error": error }),
    }
}

fn invalid_parameter(details: &str) -> Answer {
    meta_error(400, 100, None, false, &format!("(#100) Invalid parameter: {details}"))
}

fn unknown_object(id: &str) -> Answer {
    meta_error(
        400,
        100,
        Some(33),
        false,
        &format!("Unsupported request. Object with ID '{id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation."),
    )
}

fn classify(method: &Method, segments: &[&str], query: &BTreeMap<String, String>) -> Option<Route> {
    match (method.as_str(), segments) {
        ("GET", ["oauth", "access_token"]) => Some(
            if query.get("grant_type").map(String::as_str) == Some("fb_exchange_token") {
                Route::ExchangeUserToken
            } else {
                Route::ExchangeCode
            },
        ),
        ("GET", ["debug_token"]) => Some(Route::DebugToken),
        ("POST", [_, "subscribed_apps"]) => Some(Route::SubscribeApp),
        ("DELETE", [_, "subscribed_apps"]) => Some(Route::UnsubscribeApp),
        ("POST", [_, "register"]) => Some(Route::Register),
        ("POST", [_, "deregister"]) => Some(Route::Deregister),
        ("POST", [_]) => Some(Route::SetPin),
        ("GET", [_]) => Some(Route::GetPhone),
        _ => None,
    }
}

fn is_version(segment: &str) -> bool {
    segment
        .strip_prefix('v')
        .and_then(|rest| rest.split_once('.'))
        .is_some_and(|(a, b)| {
            !a.is_empty() && !b.is_empty() && a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit())
        })
}

async fn graph(State(inner): State<Arc<Inner>>, request: Request) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let query: BTreeMap<String, String> =
        serde_urlencoded::from_str(request.uri().query().unwrap_or("")).unwrap_or_default();
    let headers = request.headers().clone();
    let bytes = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let body = parse_body(&headers, &bytes);
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let route = match segments.split_first() {
        Some((version, rest)) if is_version(version) => classify(&method, rest, &query),
        _ => None,
    };
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);

    // Logged on arrival, so a hanging call shows while it hangs; its status is filled in after.
    let seq = {
        let mut state = inner.state();
        state.next_seq += 1;
        let seq = state.next_seq;
        state.calls.push(Call {
            seq,
            route,
            method: method.to_string(),
            path: path.clone(),
            query: query.clone(),
            body: body.clone(),
            status: 0,
            authorization: authorization.clone(),
        });
        seq
    };
    let (latency, fault) = {
        let mut state = inner.state();
        let latency = route
            .and_then(|r| state.latency.get(&Some(r)).copied())
            .or_else(|| state.latency.get(&None).copied());
        let fault = route.and_then(|r| state.faults.get_mut(&r).and_then(VecDeque::pop_front));
        (latency, fault)
    };
    if let Some(latency) = latency {
        tokio::time::sleep(latency).await;
    }
    let answer = match fault {
        Some(Fault::Error {
            http_status,
            code,
            subcode,
            is_transient,
            message,
        }) => meta_error(http_status, code, subcode, is_transient, &message),
        Some(Fault::Delay(delay)) => {
            tokio::time::sleep(delay).await;
            answer(&inner, route, &segments, &query, &body, authorization.as_deref())
        }
        None => answer(&inner, route, &segments, &query, &body, authorization.as_deref()),
    };
    if let Some(call) = inner.state().calls.iter_mut().find(|c| c.seq == seq) {
        call.status = answer.status.as_u16();
    }
    (answer.status, Json(answer.body)).into_response()
}

fn parse_body(headers: &HeaderMap, bytes: &Bytes) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    let form = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    if form {
        let pairs: BTreeMap<String, String> = serde_urlencoded::from_bytes(bytes).unwrap_or_default();
        return json!(pairs);
    }
    serde_json::from_slice(bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into()))
}

fn bearer<'a>(authorization: Option<&'a str>, query: &'a BTreeMap<String, String>) -> Option<&'a str> {
    authorization
        .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("OAuth ")))
        .or_else(|| query.get("access_token").map(String::as_str))
}

fn answer(
    inner: &Inner,
    route: Option<Route>,
    segments: &[&str],
    query: &BTreeMap<String, String>,
    body: &Value,
    authorization: Option<&str>,
) -> Answer {
    let Some(route) = route else {
        return meta_error(400, 100, None, false, "Unknown path components");
    };
    let config = &inner.config;
    let mut state = inner.state();
    match route {
        Route::ExchangeCode | Route::ExchangeUserToken => {
            let param = |name: &str| query.get(name).map(String::as_str).unwrap_or("");
            if param("client_id") != config.app_id {
                return meta_error(400, 101, None, false, "Error validating application. Invalid application ID.");
            }
            if param("client_secret") != config.app_secret {
                return meta_error(400, 101, None, false, "Error validating client secret.");
            }
            let (wabas, expires_in) = if route == Route::ExchangeCode {
                let age = state.code_age;
                let Some(code) = state.codes.get_mut(param("code")) else {
                    return meta_error(400, 100, Some(36007), false, "Invalid verification code format.");
                };
                if code.used {
                    return meta_error(400, 100, Some(36009), false, "This authorization code has been used.");
                }
                if code.issued.elapsed() + age > CODE_LIFETIME {
                    return meta_error(400, 100, Some(36007), false, "This authorization code has expired.");
                }
                code.used = true;
                (code.wabas.clone(), code.expires_in)
            } else {
                let Some(token) = state.tokens.get(param("fb_exchange_token")) else {
                    return meta_error(400, 190, None, false, "Invalid OAuth access token - Cannot parse access token");
                };
                (token.wabas.clone(), Some(USER_TOKEN_EXPIRES_IN))
            };
            let token = random("EAAG", 64);
            state.tokens.insert(
                token.clone(),
                Token {
                    wabas,
                    expired: false,
                    expires_in,
                },
            );
            let mut answer = json!({"access_token": token, "token_type": "bearer"});
            if let Some(seconds) = expires_in {
                answer["expires_in"] = json!(seconds);
            }
            ok(answer)
        }
        Route::DebugToken => {
            let app_token = format!("{}|{}", config.app_id, config.app_secret);
            if bearer(authorization, query) != Some(app_token.as_str()) {
                return meta_error(400, 190, None, false, "Invalid OAuth access token signature.");
            }
            let input = query.get("input_token").map(String::as_str).unwrap_or("");
            let data = match state.tokens.get(input) {
                Some(token) => json!({
                    "app_id": config.app_id,
                    "type": "SYSTEM_USER",
                    "is_valid": !token.expired,
                    "expires_at": token.expires_in.map_or(0, |s| s),
                    "scopes": ["whatsapp_business_management", "whatsapp_business_messaging"],
                    "granular_scopes": [
                        {"scope": "whatsapp_business_management", "target_ids": token.wabas},
                        {"scope": "whatsapp_business_messaging", "target_ids": token.wabas},
                    ],
                }),
                None => json!({"is_valid": false, "error": {"code": 190, "message": "Invalid OAuth access token."}}),
            };
            ok(json!({ "data": data }))
        }
        _ => {
            let Some(token_text) = bearer(authorization, query) else {
                return meta_error(400, 190, None, false, "An active access token must be used to query information about the current user.");
            };
            let Some(token) = state.tokens.get(token_text) else {
                return meta_error(401, 190, None, false, "Invalid OAuth access token - Cannot parse access token");
            };
            if token.expired {
                return meta_error(401, 190, Some(463), false, "Error validating access token: Session has expired.");
            }
            let wabas = token.wabas.clone();
            let object = segments.get(1).copied().unwrap_or("");
            match route {
                Route::SubscribeApp | Route::UnsubscribeApp => {
                    if !state.subscribed.contains_key(object) {
                        return unknown_object(object);
                    }
                    if !wabas.iter().any(|w| w == object) {
                        return meta_error(403, 200, None, false, "(#200) Permissions error");
                    }
                    let subscribe = route == Route::SubscribeApp;
                    state.subscribed.insert(object.to_string(), subscribe);
                    ok(json!({"success": true}))
                }
                _ => {
                    let Some(phone) = state.phones.get_mut(object) else {
                        return unknown_object(object);
                    };
                    if !wabas.iter().any(|w| *w == phone.waba_id) {
                        return meta_error(403, 200, None, false, "(#200) Permissions error");
                    }
                    phone_call(route, phone, query, body)
                }
            }
        }
    }
}

fn six_digits(value: Option<&Value>) -> Option<String> {
    value
        .and_then(Value::as_str)
        .filter(|p| p.len() == 6 && p.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_string)
}

fn phone_call(route: Route, phone: &mut Phone, query: &BTreeMap<String, String>, body: &Value) -> Answer {
    let now = Instant::now();
    phone
        .register_events
        .retain(|at| now.duration_since(*at) < REGISTER_WINDOW);
    match route {
        Route::Register => {
            if body.get("messaging_product").and_then(Value::as_str) != Some("whatsapp") {
                return invalid_parameter("messaging_product must be whatsapp");
            }
            let Some(pin) = six_digits(body.get("pin")) else {
                return invalid_parameter("pin must be 6 digits");
            };
            if phone.register_events.len() >= REGISTER_LIMIT {
                return meta_error(400, 133016, None, false, "Account register deregister rate limit exceeded");
            }
            phone.register_events.push(now);
            if phone.pin.as_ref().is_some_and(|existing| *existing != pin) {
                return meta_error(400, 133005, None, false, "Two step verification PIN Mismatch");
            }
            phone.pin = Some(pin);
            phone.registered = true;
            ok(json!({"success": true}))
        }
        Route::Deregister => {
            if phone.register_events.len() >= REGISTER_LIMIT {
                return meta_error(400, 133016, None, false, "Account register deregister rate limit exceeded");
            }
            phone.register_events.push(now);
            phone.registered = false;
            ok(json!({"success": true}))
        }
        Route::SetPin => {
            let Some(pin) = six_digits(body.get("pin")) else {
                return invalid_parameter("pin must be 6 digits");
            };
            phone.pin = Some(pin);
            ok(json!({"success": true}))
        }
        _ => {
            let requested: Vec<&str> = match query.get("fields") {
                Some(fields) => fields.split(',').map(str::trim).filter(|f| !f.is_empty()).collect(),
                None => vec!["display_phone_number", "verified_name", "quality_rating"],
            };
            let mut answer = json!({"id": phone.profile.phone_number_id});
            for field in requested {
                let value = match field {
                    "display_phone_number" => json!(phone.profile.display_phone_number),
                    "verified_name" => json!(phone.profile.verified_name),
                    "quality_rating" => json!(phone.profile.quality_rating),
                    "name_status" => json!("APPROVED"),
                    "code_verification_status" => json!("VERIFIED"),
                    "platform_type" => json!(if phone.registered { "CLOUD_API" } else { "NOT_APPLICABLE" }),
                    "throughput" => json!({"level": "STANDARD"}),
                    "status" => json!(if phone.registered { "CONNECTED" } else { "PENDING" }),
                    "id" => continue,
                    other => {
                        return meta_error(400, 100, None, false, &format!("(#100) Tried accessing nonexisting field ({other}) on node type (WhatsAppBusinessPhoneNumber)"));
                    }
                };
                answer[field] = value;
            }
            ok(answer)
        }
    }
}

// ---- control API --------------------------------------------------------------------------

fn fake(inner: &Arc<Inner>) -> FakeMeta {
    FakeMeta {
        inner: inner.clone(),
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        shutdown: Arc::default(),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CodeRequest {
    waba_ids: Vec<String>,
    expires_in: Option<u64>,
}

async fn control_code(State(inner): State<Arc<Inner>>, Json(request): Json<CodeRequest>) -> Json<Value> {
    let wabas: Vec<&str> = request.waba_ids.iter().map(String::as_str).collect();
    let fake = fake(&inner);
    let code = match request.expires_in {
        Some(seconds) => fake.issue_code_expiring(&wabas, seconds),
        None => fake.issue_code(&wabas),
    };
    Json(json!({ "code": code }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PhoneRequest {
    waba_id: String,
    #[serde(flatten)]
    profile: PhoneProfile,
}

async fn control_phone(State(inner): State<Arc<Inner>>, Json(request): Json<PhoneRequest>) -> StatusCode {
    fake(&inner).add_phone(&request.waba_id, request.profile);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct FaultRequest {
    route: Route,
    times: usize,
    fault: Fault,
}

async fn control_fault(State(inner): State<Arc<Inner>>, Json(request): Json<FaultRequest>) -> StatusCode {
    fake(&inner).fail_next(request.route, request.times, request.fault);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QualityRequest {
    phone_number_id: String,
    rating: String,
}

async fn control_quality(State(inner): State<Arc<Inner>>, Json(request): Json<QualityRequest>) -> StatusCode {
    fake(&inner).set_quality(&request.phone_number_id, &request.rating);
    StatusCode::NO_CONTENT
}

async fn control_calls(State(inner): State<Arc<Inner>>) -> Json<Vec<Call>> {
    Json(inner.state().calls.clone())
}

async fn control_clear_calls(State(inner): State<Arc<Inner>>) -> StatusCode {
    inner.state().calls.clear();
    StatusCode::NO_CONTENT
}
