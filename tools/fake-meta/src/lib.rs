//! A fake of Meta's WhatsApp Graph API that behaves as `META.md` describes: it validates
//! parameters and tokens, hands out single-use 30-second codes, binds tokens to their WABAs,
//! enforces the PIN rules and the register limit, selects fields, and answers with Meta's error
//! envelope and HTTP statuses. Tests script it (fail the next N calls of a route, add latency,
//! hang past a client's timeout) and read its log of calls.
//!
//! Graph paths live under `/{version}` (any `vN.M`). `GET /{waba_id}/phone_numbers` lists a
//! WABA's phones as Meta's edge does (`fields`, `limit`, `after`/`before` cursors, `paging`). A control API under `/_fake/` scripts the
//! same state from another process:
//! - `POST /_fake/codes {"wabaIds":[..],"expiresIn"?}` → `{"code"}`
//! - `POST /_fake/phones {"wabaId","phoneNumberId","displayPhoneNumber","verifiedName","qualityRating"}`
//! - `POST /_fake/faults {"route":"Register","times":2,"fault":F}` where `F` is a preset name
//!   (`"transient5xx"`, `"rateLimited"`, `"pinMismatch"`, `"tokenExpired"`,
//!   `"displayNameNotReady"`, `"registerLimit"`), `{"error":{"httpStatus","code","subcode"?,
//!   "isTransient"?,"message"?}}` or `{"delayMs":N}`
//! - `POST /_fake/quality {"phoneNumberId","rating"}`
//! - `POST /_fake/webhooks {"entryId","field","value","callbackUrl"?}`: sends Meta's webhook
//!   (signed with the app secret, as Meta signs it) to the callback URL → `{"status"}`
//! - `GET /_fake/calls` (the call log as JSON) and `DELETE /_fake/calls`
//!
//! For pages running Embedded Signup, `GET /sdk.js` is a stand-in for Meta's JavaScript SDK
//! that plays a scripted [`SignupScript`] (see `signup_sdk`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

mod signup_sdk;
pub mod webhooks;
pub use signup_sdk::{SIGNUP_CONFIG_ID, SdkRequest, SignupScript};
pub use webhooks::WebhookError;

/// How long an Embedded-Signup code can be exchanged.
pub const CODE_LIFETIME: Duration = Duration::from_secs(30);
/// Register + deregister calls allowed per number per [`REGISTER_WINDOW`].
pub const REGISTER_LIMIT: usize = 10;
pub const REGISTER_WINDOW: Duration = Duration::from_secs(72 * 3600);
/// `expires_in` of a token from `grant_type=fb_exchange_token`.
pub const USER_TOKEN_EXPIRES_IN: u64 = 5_183_944;
/// Fields a `GET /{phone_number_id}` without `fields` answers (besides `id`); Meta's
/// `GET /{waba_id}/phone_numbers` answers the same ones for each phone.
pub const DEFAULT_PHONE_FIELDS: [&str; 3] =
    ["display_phone_number", "verified_name", "quality_rating"];
/// Phones per page of `GET /{waba_id}/phone_numbers` without `limit` (Graph's default).
pub const DEFAULT_PAGE_LIMIT: usize = 25;
/// The largest `limit` the edge takes; more is refused with code 100.
pub const MAX_PAGE_LIMIT: usize = 100;

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

/// The Graph calls the product makes; faults and latency are scripted per route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Route {
    /// `GET /oauth/access_token?client_id&client_secret&code`
    ExchangeCode,
    /// `GET /oauth/access_token?grant_type=fb_exchange_token&...`
    ExchangeUserToken,
    /// `GET /debug_token?input_token=`
    DebugToken,
    /// `POST /{waba_id}/subscribed_apps`
    SubscribeApp,
    /// `DELETE /{waba_id}/subscribed_apps`
    UnsubscribeApp,
    /// `POST /{phone_number_id}/register`
    Register,
    /// `POST /{phone_number_id}/deregister`
    Deregister,
    /// `POST /{phone_number_id}` with `{"pin"}`
    SetPin,
    /// `GET /{phone_number_id}?fields=`
    GetPhone,
    /// `GET /{waba_id}/phone_numbers?fields&limit&after|before` (Meta's paged edge)
    ListPhoneNumbers,
}

#[derive(Clone, Debug)]
pub enum Fault {
    /// Meta's error envelope with this HTTP status.
    Error {
        http_status: u16,
        code: i64,
        subcode: Option<i64>,
        is_transient: bool,
        message: String,
    },
    /// Sleeps this long before answering normally (use to hang past a client's timeout).
    Delay(Duration),
}

impl Fault {
    fn error(
        http_status: u16,
        code: i64,
        subcode: Option<i64>,
        is_transient: bool,
        message: &str,
    ) -> Fault {
        Fault::Error {
            http_status,
            code,
            subcode,
            is_transient,
            message: message.into(),
        }
    }
    /// HTTP 500, code 2, transient.
    pub fn transient_5xx() -> Fault {
        Fault::error(
            500,
            2,
            None,
            true,
            "An unexpected error has occurred. Please retry your request later.",
        )
    }
    /// HTTP 400, code 4 (application request limit), transient.
    pub fn rate_limited() -> Fault {
        Fault::error(400, 4, None, true, "(#4) Application request limit reached")
    }
    /// HTTP 400, code 133005.
    pub fn pin_mismatch() -> Fault {
        Fault::error(
            400,
            133005,
            None,
            false,
            "Two step verification PIN Mismatch",
        )
    }
    /// HTTP 401, code 190, subcode 463.
    pub fn token_expired() -> Fault {
        Fault::error(
            401,
            190,
            Some(463),
            false,
            "Error validating access token: Session has expired.",
        )
    }
    /// HTTP 400, code 100, subcode 2388001 (display name not provisioned yet).
    pub fn display_name_not_ready() -> Fault {
        Fault::error(400, 100, Some(2388001), false, "Cannot create certificate")
    }
    /// HTTP 400, code 133016.
    pub fn register_limit() -> Fault {
        Fault::error(
            400,
            133016,
            None,
            false,
            "Account register deregister rate limit exceeded",
        )
    }
}

/// One call the fake received.
#[derive(Clone, Debug, Serialize)]
pub struct Call {
    /// Arrival order, unique for the server's lifetime.
    pub seq: u64,
    /// `None` for paths that are not one of the product's routes (and for `/_fake/`).
    pub route: Option<Route>,
    pub method: String,
    /// The path as received, version included (`/v25.0/123/register`).
    pub path: String,
    pub query: BTreeMap<String, String>,
    /// The JSON (or form, as an object of strings) body; `Null` when empty.
    pub body: Value,
    /// The HTTP status answered; `0` while the call is still being answered (a hang).
    pub status: u16,
    pub authorization: Option<String>,
    /// The random fault [`FakeMeta::set_chaos`] gave this call, if any.
    pub chaos: Option<ChaosFault>,
    /// When the call arrived, and when its answer was ready (`None` while it is answered):
    /// what a caller waited on Meta, scripted latency included.
    #[serde(skip)]
    pub asked_at: Option<Instant>,
    #[serde(skip)]
    pub answered_at: Option<Instant>,
}

/// A fault chosen at random for a call (see [`FakeMeta::set_chaos`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ChaosFault {
    /// HTTP 500, code 2, transient: nothing happened.
    Transient5xx,
    /// `(#4) Application request limit reached`: nothing happened.
    RateLimited,
    /// The call hangs past the client's timeout, then takes effect and answers (to nobody).
    Hang,
    /// The call takes effect at once, but its answer comes only after the client's timeout:
    /// the caller cannot know it worked.
    AnswerLost,
}

impl ChaosFault {
    pub const ALL: [ChaosFault; 4] = [
        ChaosFault::Transient5xx,
        ChaosFault::RateLimited,
        ChaosFault::Hang,
        ChaosFault::AnswerLost,
    ];
}

/// Random faults on every Graph route: each call gets one with probability `rate`, drawn from a
/// generator seeded with `seed` (so a run's sequence of decisions can be replayed).
struct Chaos {
    rate: f64,
    hang: Duration,
    rng: rand::rngs::StdRng,
    injected: BTreeMap<ChaosFault, u64>,
}

/// What the fake knows about a phone number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhoneState {
    pub waba_id: String,
    pub registered: bool,
    /// The two-step verification PIN, once set.
    pub pin: Option<String>,
    /// Whether the phone's WABA has our app subscribed.
    pub subscribed: bool,
    /// Register + deregister calls in the last 72 h (what the 133016 limit counts).
    pub register_count: usize,
    pub quality_rating: String,
    pub verified_name: String,
    pub display_phone_number: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// Unix seconds; `None` never expires.
    expires_at: Option<u64>,
    expired: bool,
}

impl Token {
    fn is_expired(&self) -> bool {
        self.expired || self.expires_at.is_some_and(|at| unix_now() >= at)
    }
}

struct Phone {
    waba_id: String,
    profile: PhoneProfile,
    registered: bool,
    pin: Option<String>,
    register_events: Vec<Instant>,
    /// Meta's phone `status` when set (BANNED, RESTRICTED, FLAGGED, ...); otherwise from
    /// registration.
    status: Option<String>,
    /// `health_status.can_send_message`: AVAILABLE, LIMITED or BLOCKED.
    can_send_message: String,
    /// Errors per entity of `health_status` when set (else one generic error on the phone's
    /// entity when it cannot send freely).
    health_errors: Vec<HealthError>,
    /// `name_status`: while `PENDING_REVIEW` or `DECLINED`, register answers `100/2388001`
    /// (the display name is not processed), as Meta does until the customer's name is accepted.
    name_status: String,
    messaging_limit_tier: String,
    throughput_level: String,
    /// When the phone was added to its WABA (in the fake's order): Meta lists a WABA's phones
    /// by `last_onboarded_time`, most recent first.
    onboarded: u64,
}

/// One error of an entity in `health_status`, as Meta documents it.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct HealthError {
    /// `PHONE_NUMBER`, `WABA`, `BUSINESS` or `APP`.
    pub entity_type: String,
    pub error_code: i64,
    pub error_description: String,
    #[serde(default)]
    pub possible_solution: Option<String>,
}

#[derive(Default)]
struct FakeState {
    codes: HashMap<String, Code>,
    tokens: HashMap<String, Token>,
    /// Every known WABA, with whether our app is subscribed to it.
    subscribed: HashMap<String, bool>,
    phones: HashMap<String, Phone>,
    faults: HashMap<Route, VecDeque<Fault>>,
    latency: HashMap<Option<Route>, Duration>,
    calls: Vec<Call>,
    next_seq: u64,
    /// Orders phones by when they were added (see `Phone::onboarded`).
    next_onboarded: u64,
    code_age: Duration,
    /// `None`: Meta's 30 s.
    code_lifetime: Option<Duration>,
    signup_script: Option<SignupScript>,
    sdk_requests: Vec<SdkRequest>,
    /// The options of each `FB.login` call the stand-in SDK saw.
    signup_logins: Vec<Value>,
    chaos: Option<Chaos>,
    /// The app's webhook callback URL (App Dashboard, Webhooks), where the fake sends
    /// Meta's webhooks.
    webhook_callback: Option<String>,
}

struct Inner {
    config: FakeMetaConfig,
    state: Mutex<FakeState>,
}

struct Server {
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// A running fake; clones share it.
#[derive(Clone)]
pub struct FakeMeta {
    inner: Arc<Inner>,
    addr: SocketAddr,
    server: Arc<Mutex<Server>>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn random(prefix: &str, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let tail: String = (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}{tail}")
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, FakeState> {
        lock(&self.state)
    }

    fn add_phone(&self, waba_id: &str, phone: PhoneProfile) {
        let mut state = self.state();
        state.subscribed.entry(waba_id.to_string()).or_insert(false);
        let previous = state.phones.remove(&phone.phone_number_id);
        state.next_onboarded += 1;
        let onboarded = previous
            .as_ref()
            .map_or(state.next_onboarded, |p| p.onboarded);
        state.phones.insert(
            phone.phone_number_id.clone(),
            Phone {
                waba_id: waba_id.to_string(),
                profile: phone,
                registered: previous.as_ref().is_some_and(|p| p.registered),
                pin: previous.as_ref().and_then(|p| p.pin.clone()),
                status: previous.as_ref().and_then(|p| p.status.clone()),
                can_send_message: previous
                    .as_ref()
                    .map_or_else(|| "AVAILABLE".to_string(), |p| p.can_send_message.clone()),
                health_errors: previous
                    .as_ref()
                    .map(|p| p.health_errors.clone())
                    .unwrap_or_default(),
                name_status: previous
                    .as_ref()
                    .map_or_else(|| "APPROVED".to_string(), |p| p.name_status.clone()),
                messaging_limit_tier: previous
                    .as_ref()
                    .map_or_else(|| "TIER_1K".to_string(), |p| p.messaging_limit_tier.clone()),
                throughput_level: previous
                    .as_ref()
                    .map_or_else(|| "STANDARD".to_string(), |p| p.throughput_level.clone()),
                register_events: previous.map(|p| p.register_events).unwrap_or_default(),
                onboarded,
            },
        );
    }

    fn issue_code(&self, waba_ids: &[&str], expires_in: Option<u64>) -> String {
        let code = random("AQB", 48);
        let mut state = self.state();
        for waba in waba_ids {
            state.subscribed.entry(waba.to_string()).or_insert(false);
        }
        state.codes.insert(
            code.clone(),
            Code {
                wabas: waba_ids.iter().map(|w| w.to_string()).collect(),
                issued: Instant::now(),
                used: false,
                expires_in,
            },
        );
        code
    }

    fn set_quality(&self, phone_number_id: &str, rating: &str) {
        if let Some(phone) = self.state().phones.get_mut(phone_number_id) {
            phone.profile.quality_rating = rating.to_string();
        }
    }

    async fn send_webhook(
        &self,
        entry_id: &str,
        field: &str,
        value: Value,
    ) -> Result<u16, WebhookError> {
        let callback = self
            .state()
            .webhook_callback
            .clone()
            .ok_or(WebhookError::NoCallback)?;
        let body = webhooks::delivery(entry_id, field, value);
        let status = webhooks::post(&callback, &self.config.app_secret, &body).await?;
        tracing::info!(%field, entry_id, status, "webhook sent");
        Ok(status)
    }

    fn fail_next(&self, route: Route, times: usize, fault: Fault) {
        let mut state = self.state();
        let queue = state.faults.entry(route).or_default();
        queue.extend(std::iter::repeat_n(fault, times));
    }
}

impl FakeMeta {
    /// Starts the fake on `127.0.0.1` with a free port.
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
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(FakeMeta {
            inner,
            addr,
            server: Arc::new(Mutex::new(Server {
                shutdown: Some(tx),
                task: Some(task),
            })),
        })
    }

    /// The stand-in SDK (`{base}/sdk.js`); the page's messages come from [`FakeMeta::base_url`].
    pub fn sdk_url(&self) -> String {
        format!("{}/sdk.js", self.base_url())
    }

    /// What the Embedded Signup window does the next times `FB.login` opens it.
    pub fn script_signup(&self, script: SignupScript) {
        self.inner.state().signup_script = Some(script);
    }

    /// Every request made to the stand-in SDK and its window.
    pub fn sdk_requests(&self) -> Vec<SdkRequest> {
        self.inner.state().sdk_requests.clone()
    }

    /// The options of each `FB.login` call.
    pub fn signup_logins(&self) -> Vec<Value> {
        self.inner.state().signup_logins.clone()
    }

    /// `http://127.0.0.1:PORT`: no version, no trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn app_id(&self) -> &str {
        &self.inner.config.app_id
    }
    pub fn app_secret(&self) -> &str {
        &self.inner.config.app_secret
    }

    /// Adds (or replaces) a phone number under a WABA, with its profile. Replacing keeps the
    /// number's registration, PIN and register count.
    pub fn add_phone(&self, waba_id: &str, phone: PhoneProfile) {
        self.inner.add_phone(waba_id, phone);
    }

    /// A fresh single-use Embedded-Signup code, valid 30 s, whose exchange yields a business
    /// token (that never expires) bound to these WABAs.
    pub fn issue_code(&self, waba_ids: &[&str]) -> String {
        self.inner.issue_code(waba_ids, None)
    }

    /// Same, but the exchanged token carries `expires_in` (seconds) and expires then.
    pub fn issue_code_expiring(&self, waba_ids: &[&str], expires_in_secs: u64) -> String {
        self.inner.issue_code(waba_ids, Some(expires_in_secs))
    }

    /// Makes every code (issued so far and later) older by this much, as if time had passed.
    pub fn age_codes(&self, by: Duration) {
        self.inner.state().code_age += by;
    }

    /// Codes live this long instead of Meta's 30 s: for load tests whose emulated AWS (moto,
    /// ~100 requests/s) is far slower than the real one, never to hide a slow first step.
    pub fn set_code_lifetime(&self, lifetime: Duration) {
        self.inner.state().code_lifetime = Some(lifetime);
    }

    pub fn set_quality(&self, phone_number_id: &str, rating: &str) {
        self.inner.set_quality(phone_number_id, rating);
    }

    /// Meta's view of the phone: its `status` (e.g. `BANNED`) and `health_status`
    /// `can_send_message` (`AVAILABLE`, `LIMITED`, `BLOCKED`).
    pub fn set_phone_status(&self, phone_number_id: &str, status: &str, can_send_message: &str) {
        if let Some(phone) = self.inner.state().phones.get_mut(phone_number_id) {
            phone.status = Some(status.to_string());
            phone.can_send_message = can_send_message.to_string();
        }
    }

    /// Sets two-step verification as if another provider had.
    pub fn set_two_step_pin(&self, phone_number_id: &str, pin: &str) {
        if let Some(phone) = self.inner.state().phones.get_mut(phone_number_id) {
            phone.pin = Some(pin.to_string());
        }
    }

    /// Later calls with this token get HTTP 401, code 190, subcode 463.
    pub fn expire_token(&self, token: &str) {
        let token = token.strip_prefix("Bearer ").unwrap_or(token);
        if let Some(t) = self.inner.state().tokens.get_mut(token) {
            t.expired = true;
        }
    }

    /// Forgets every token: later calls get HTTP 401, code 190.
    pub fn revoke_all_tokens(&self) {
        self.inner.state().tokens.clear();
    }

    /// From now on every Graph call gets a random [`ChaosFault`] with probability `rate`
    /// (hangs and lost answers last `hang`, which should pass the client's timeout); `rate` 0
    /// stops them. Scripted faults ([`FakeMeta::fail_next`]) come first.
    pub fn set_chaos(&self, rate: f64, seed: u64, hang: Duration) {
        use rand::SeedableRng;
        let mut state = self.inner.state();
        let injected = state.chaos.take().map(|c| c.injected).unwrap_or_default();
        state.chaos = Some(Chaos {
            rate,
            hang,
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            injected,
        });
    }

    /// How many calls got each random fault so far.
    pub fn chaos_injected(&self) -> BTreeMap<ChaosFault, u64> {
        self.inner
            .state()
            .chaos
            .as_ref()
            .map(|c| c.injected.clone())
            .unwrap_or_default()
    }

    /// Every access token the fake issued (to look for them where they must never be).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.inner.state().tokens.keys().cloned().collect()
    }

    /// Meta's `name_status` of the phone's display name. While `PENDING_REVIEW` or
    /// `DECLINED`, register answers `100/2388001`.
    pub fn set_name_status(&self, phone_number_id: &str, name_status: &str) {
        if let Some(phone) = self.inner.state().phones.get_mut(phone_number_id) {
            phone.name_status = name_status.to_string();
        }
    }

    /// The phone's `messaging_limit_tier` and `throughput.level`.
    pub fn set_limits(&self, phone_number_id: &str, messaging_limit_tier: &str, throughput: &str) {
        if let Some(phone) = self.inner.state().phones.get_mut(phone_number_id) {
            phone.messaging_limit_tier = messaging_limit_tier.to_string();
            phone.throughput_level = throughput.to_string();
        }
    }

    /// `health_status`: the overall `can_send_message` and the errors of each entity.
    pub fn set_health(
        &self,
        phone_number_id: &str,
        can_send_message: &str,
        errors: Vec<HealthError>,
    ) {
        if let Some(phone) = self.inner.state().phones.get_mut(phone_number_id) {
            phone.can_send_message = can_send_message.to_string();
            phone.health_errors = errors;
        }
    }

    /// Where the fake sends Meta's webhooks (the app's callback URL).
    pub fn set_webhook_callback(&self, url: &str) {
        self.inner.state().webhook_callback = Some(url.to_string());
    }

    /// Sends one change to the callback as Meta does (signed with the app secret); the
    /// callback's HTTP status.
    pub async fn send_webhook(
        &self,
        entry_id: &str,
        field: &str,
        value: Value,
    ) -> Result<u16, WebhookError> {
        self.inner.send_webhook(entry_id, field, value).await
    }

    /// Meta disables (`DISABLE`), reinstates (`REINSTATE`) or schedules to disable the WABA:
    /// its phones show it (`status` `BANNED` / `CONNECTED`) and the `account_update` is sent.
    pub async fn set_waba_ban_state(
        &self,
        waba_id: &str,
        state: &str,
    ) -> Result<u16, WebhookError> {
        for phone in self.inner.state().phones.values_mut() {
            if phone.waba_id == waba_id {
                match state {
                    "DISABLE" => {
                        phone.status = Some("BANNED".into());
                        phone.can_send_message = "BLOCKED".into();
                    }
                    "REINSTATE" => {
                        phone.status = None;
                        phone.can_send_message = "AVAILABLE".into();
                    }
                    _ => {}
                }
            }
        }
        self.send_webhook(waba_id, "account_update", webhooks::account_ban(state))
            .await
    }

    /// Meta changes the phone's messaging limit (`event` `UPGRADE`, `DOWNGRADE`...): the phone
    /// shows the new tier and `phone_number_quality_update` is sent.
    pub async fn change_messaging_limit(
        &self,
        phone_number_id: &str,
        event: &str,
        limit: &str,
    ) -> Result<u16, WebhookError> {
        let (waba_id, display, old) = {
            let mut state = self.inner.state();
            let Some(phone) = state.phones.get_mut(phone_number_id) else {
                return Err(WebhookError::UnknownPhone);
            };
            let old = std::mem::replace(&mut phone.messaging_limit_tier, limit.to_string());
            (
                phone.waba_id.clone(),
                phone.profile.display_phone_number.clone(),
                old,
            )
        };
        let display: String = display.chars().filter(char::is_ascii_digit).collect();
        let value = webhooks::quality_update(&display, event, Some(&old), limit);
        self.send_webhook(&waba_id, "phone_number_quality_update", value)
            .await
    }

    /// Meta decides on a requested display name: `APPROVED` makes it the phone's
    /// `verified_name` (`name_status` `APPROVED`), `REJECTED` leaves the old one (`DECLINED`);
    /// `phone_number_name_update` is sent.
    pub async fn decide_display_name(
        &self,
        phone_number_id: &str,
        decision: &str,
        requested: &str,
        rejection_reason: Option<&str>,
    ) -> Result<u16, WebhookError> {
        let (waba_id, display) = {
            let mut state = self.inner.state();
            let Some(phone) = state.phones.get_mut(phone_number_id) else {
                return Err(WebhookError::UnknownPhone);
            };
            match decision {
                "APPROVED" => {
                    phone.name_status = "APPROVED".into();
                    phone.profile.verified_name = requested.to_string();
                }
                "REJECTED" => phone.name_status = "DECLINED".into(),
                _ => {}
            }
            (
                phone.waba_id.clone(),
                phone.profile.display_phone_number.clone(),
            )
        };
        let display: String = display.chars().filter(char::is_ascii_digit).collect();
        let value = webhooks::name_update(&display, decision, requested, rejection_reason);
        self.send_webhook(&waba_id, "phone_number_name_update", value)
            .await
    }

    /// The next `times` calls of `route` get `fault` (queued after any already scripted).
    pub fn fail_next(&self, route: Route, times: usize, fault: Fault) {
        self.inner.fail_next(route, times, fault);
    }

    /// Every later call of `route` (`None`: of any route without its own latency) waits this
    /// long first. `Duration::ZERO` removes it.
    pub fn set_latency(&self, route: Option<Route>, latency: Duration) {
        let mut state = self.inner.state();
        if latency.is_zero() {
            state.latency.remove(&route);
        } else {
            state.latency.insert(route, latency);
        }
    }

    /// The `seq` of the last Graph call received (0 before the first): every call that arrives
    /// from now on has a larger one.
    pub fn last_seq(&self) -> u64 {
        self.inner.state().next_seq
    }

    /// Every Graph call received, in arrival order, faulted ones included.
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
        let state = self.inner.state();
        let now = Instant::now();
        state.phones.get(phone_number_id).map(|p| PhoneState {
            waba_id: p.waba_id.clone(),
            registered: p.registered,
            pin: p.pin.clone(),
            subscribed: state.subscribed.get(&p.waba_id).copied().unwrap_or(false),
            register_count: p
                .register_events
                .iter()
                .filter(|at| now.duration_since(**at) < REGISTER_WINDOW)
                .count(),
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

    /// Stops the server (every clone's): waits up to a second for calls in flight, then drops
    /// them.
    pub async fn shutdown(self) {
        let (tx, task) = {
            let mut server = lock(&self.server);
            (server.shutdown.take(), server.task.take())
        };
        if let Some(tx) = tx {
            let _ = tx.send(());
        }
        if let Some(mut task) = task
            && tokio::time::timeout(Duration::from_secs(1), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

/// Adds WABA `100000000000001` with phone `200000000000001` ("+55 11 99999-0000",
/// "Muchaw Demo", GREEN).
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
        .route("/sdk.js", get(signup_sdk::sdk))
        .route("/_fake/signup-frame", get(signup_sdk::frame))
        .route("/_fake/codes", post(control_code))
        .route("/_fake/phones", post(control_phone))
        .route("/_fake/faults", post(control_fault))
        .route("/_fake/quality", post(control_quality))
        .route("/_fake/webhooks", post(control_webhook))
        .route(
            "/_fake/calls",
            get(control_calls).delete(control_clear_calls),
        )
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

fn success() -> Answer {
    ok(json!({"success": true}))
}

fn meta_error(
    status: u16,
    code: i64,
    subcode: Option<i64>,
    transient: bool,
    message: &str,
) -> Answer {
    let mut error = json!({
        "message": message,
        "type": "OAuthException",
        "code": code,
    });
    if let Some(sub) = subcode {
        error["error_subcode"] = json!(sub);
    }
    // WhatsApp-specific codes (and parameter errors on WhatsApp nodes) carry error_data.
    if code == 100 || code == 80007 || code >= 130000 {
        error["error_data"] = json!({"messaging_product": "whatsapp", "details": message});
    }
    // Meta adds text meant for the end user to the errors a person can act on.
    if let Some((title, text)) = user_text(code, subcode) {
        error["error_user_title"] = json!(title);
        error["error_user_msg"] = json!(text);
    }
    error["fbtrace_id"] = json!(random("A", 23));
    error["is_transient"] = json!(transient);
    Answer {
        status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        body: json!({ "error": error }),
    }
}

/// `error_user_title` and `error_user_msg` of the errors that carry them (our own wording).
fn user_text(code: i64, subcode: Option<i64>) -> Option<(&'static str, &'static str)> {
    match (code, subcode) {
        (100, Some(2388001)) => Some((
            "Display name not processed",
            "The display name of this number could not be processed yet. Check it in WhatsApp \
             Manager and edit it if it was rejected; if the number is still registered to \
             another WhatsApp account, delete that account first.",
        )),
        (133016, _) => Some((
            "Too many registration attempts",
            "This number was registered or deregistered too many times. Try again in 72 hours.",
        )),
        (368, _) => Some((
            "Account restricted",
            "This account is restricted for violating WhatsApp policies.",
        )),
        _ => None,
    }
}

fn invalid_parameter(details: &str) -> Answer {
    meta_error(
        400,
        100,
        None,
        false,
        &format!("(#100) Invalid parameter: {details}"),
    )
}

fn permissions_error() -> Answer {
    meta_error(403, 200, None, false, "(#200) Permissions error")
}

fn unknown_object(method: &Method, id: &str) -> Answer {
    meta_error(
        400,
        100,
        Some(33),
        false,
        &format!(
            "Unsupported {} request. Object with ID '{id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation. Please read the Graph API documentation at https://developers.facebook.com/docs/graph-api",
            method.as_str().to_ascii_lowercase()
        ),
    )
}

/// What a Graph path is; `ListSubscribedApps` is not a scriptable route.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Route(Route),
    ListSubscribedApps,
}

fn classify(
    method: &Method,
    segments: &[&str],
    query: &BTreeMap<String, String>,
) -> Option<Endpoint> {
    let route = match (method.as_str(), segments) {
        ("GET", ["oauth", "access_token"]) => {
            if query.get("grant_type").map(String::as_str) == Some("fb_exchange_token") {
                Route::ExchangeUserToken
            } else {
                Route::ExchangeCode
            }
        }
        ("GET", ["debug_token"]) => Route::DebugToken,
        ("GET", [_, "subscribed_apps"]) => return Some(Endpoint::ListSubscribedApps),
        ("GET", [_, "phone_numbers"]) => Route::ListPhoneNumbers,
        ("POST", [_, "subscribed_apps"]) => Route::SubscribeApp,
        ("DELETE", [_, "subscribed_apps"]) => Route::UnsubscribeApp,
        ("POST", [_, "register"]) => Route::Register,
        ("POST", [_, "deregister"]) => Route::Deregister,
        ("POST", [id]) if !id.is_empty() => Route::SetPin,
        ("GET", [id]) if !id.is_empty() => Route::GetPhone,
        _ => return None,
    };
    Some(Endpoint::Route(route))
}

fn is_version(segment: &str) -> bool {
    segment
        .strip_prefix('v')
        .and_then(|rest| rest.split_once('.'))
        .is_some_and(|(a, b)| {
            !a.is_empty() && !b.is_empty() && a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit())
        })
}

/// A Graph request, parsed.
struct GraphRequest<'a> {
    method: &'a Method,
    /// The Graph version of the path (`v25.0`).
    version: &'a str,
    /// `http://host:port` the request came to, for the `paging.next` URLs it answers.
    base: String,
    /// Path segments after the version.
    segments: &'a [&'a str],
    query: &'a BTreeMap<String, String>,
    body: &'a Value,
    authorization: Option<&'a str>,
}

impl GraphRequest<'_> {
    /// A parameter from the body, else from the query string (Graph accepts both).
    fn param(&self, name: &str) -> Option<&str> {
        match self.body.get(name) {
            Some(value) => value.as_str(),
            None => self.query.get(name).map(String::as_str),
        }
    }

    /// The access token: `Authorization: Bearer` (or `OAuth`), else `access_token`.
    fn token(&self) -> Option<&str> {
        self.authorization
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("OAuth "))
            })
            .or_else(|| self.query.get("access_token").map(String::as_str))
            .map(str::trim)
            .filter(|t| !t.is_empty())
    }

    /// The object id (first segment after the version).
    fn object(&self) -> &str {
        self.segments.first().copied().unwrap_or("")
    }
}

async fn graph(State(inner): State<Arc<Inner>>, request: Request) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let query: BTreeMap<String, String> =
        serde_urlencoded::from_str(request.uri().query().unwrap_or("")).unwrap_or_default();
    let headers = request.headers().clone();
    let bytes = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let body = parse_body(&headers, &bytes);
    let all_segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (endpoint, version, segments) = match all_segments.split_first() {
        Some((version, rest)) if is_version(version) => {
            (classify(&method, rest, &query), *version, rest)
        }
        _ => (None, "", &all_segments[..]),
    };
    let base = format!(
        "http://{}",
        headers
            .get("host")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("127.0.0.1")
    );
    let route = match endpoint {
        Some(Endpoint::Route(route)) => Some(route),
        _ => None,
    };
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);

    // Logged on arrival, so a hanging call shows while it hangs; its status is filled in after.
    let (seq, latency, fault, chaos_fault) = {
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
            chaos: None,
            asked_at: Some(Instant::now()),
            answered_at: None,
        });
        let latency = route
            .and_then(|r| state.latency.get(&Some(r)).copied())
            .or_else(|| state.latency.get(&None).copied());
        let mut fault = route.and_then(|r| state.faults.get_mut(&r).and_then(VecDeque::pop_front));
        let mut chaos_fault = None;
        if fault.is_none()
            && route.is_some()
            && let Some(chaos) = state.chaos.as_mut()
            && chaos.rate > 0.0
            && chaos.rng.random_bool(chaos.rate.min(1.0))
        {
            let kind = ChaosFault::ALL[chaos.rng.random_range(0..ChaosFault::ALL.len())];
            *chaos.injected.entry(kind).or_default() += 1;
            chaos_fault = Some((kind, chaos.hang));
            fault = match kind {
                ChaosFault::Transient5xx => Some(Fault::transient_5xx()),
                ChaosFault::RateLimited => Some(Fault::rate_limited()),
                ChaosFault::Hang => Some(Fault::Delay(chaos.hang)),
                ChaosFault::AnswerLost => None,
            };
        }
        if let Some(call) = state.calls.last_mut() {
            call.chaos = chaos_fault.map(|(kind, _)| kind);
        }
        (seq, latency, fault, chaos_fault)
    };
    if let Some(latency) = latency {
        tokio::time::sleep(latency).await;
    }
    let request = GraphRequest {
        method: &method,
        version,
        base,
        segments,
        query: &query,
        body: &body,
        authorization: authorization.as_deref(),
    };
    let faulted = matches!(fault, Some(Fault::Error { .. }));
    // Meta counts register and deregister requests toward the limit whatever their answer:
    // a scripted error too.
    if faulted
        && matches!(route, Some(Route::Register | Route::Deregister))
        && let Some(id) = segments.first()
    {
        let now = Instant::now();
        let mut state = inner.state();
        if let Some(phone) = state.phones.get_mut(*id) {
            phone
                .register_events
                .retain(|at| now.duration_since(*at) < REGISTER_WINDOW);
            phone.register_events.push(now);
        }
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
            respond(&inner, endpoint, &request)
        }
        None => respond(&inner, endpoint, &request),
    };
    // Recorded as soon as the call took effect: the caller of a lost answer gives up and
    // closes the connection during the wait below, which drops this future (hyper cancels a
    // request whose client went away), and a log without the status would hide the effect.
    if let Some(call) = inner.state().calls.iter_mut().rev().find(|c| c.seq == seq) {
        call.status = answer.status.as_u16();
        call.answered_at = Some(Instant::now());
    }
    // A lost answer: the call took effect above; its answer leaves after the caller gave up.
    if let Some((ChaosFault::AnswerLost, hang)) = chaos_fault {
        tokio::time::sleep(hang).await;
    }
    tracing::info!(
        target: "fake_meta",
        "{method} {path} {route} -> {status}{faulted} ({ms} ms)",
        route = route.map_or_else(|| "-".to_string(), |r| format!("{r:?}")),
        status = answer.status.as_u16(),
        faulted = if faulted { " (scripted fault)" } else { "" },
        ms = started.elapsed().as_millis(),
    );
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
        let pairs: BTreeMap<String, String> =
            serde_urlencoded::from_bytes(bytes).unwrap_or_default();
        return json!(pairs);
    }
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into()))
}

fn respond(inner: &Inner, endpoint: Option<Endpoint>, request: &GraphRequest<'_>) -> Answer {
    let Some(endpoint) = endpoint else {
        return meta_error(
            400,
            100,
            None,
            false,
            &format!("Unknown path components: /{}", request.segments.join("/")),
        );
    };
    match endpoint {
        Endpoint::Route(Route::ExchangeCode | Route::ExchangeUserToken) => exchange(
            inner,
            endpoint == Endpoint::Route(Route::ExchangeCode),
            request,
        ),
        Endpoint::Route(Route::DebugToken) => debug_token(inner, request),
        _ => authorized(inner, endpoint, request),
    }
}

fn exchange(inner: &Inner, is_code: bool, request: &GraphRequest<'_>) -> Answer {
    let config = &inner.config;
    let param = |name: &str| request.query.get(name).map(String::as_str).unwrap_or("");
    if param("client_id") != config.app_id {
        return meta_error(
            400,
            101,
            None,
            false,
            "Error validating application. Invalid application ID.",
        );
    }
    if param("client_secret") != config.app_secret {
        return meta_error(400, 101, None, false, "Error validating client secret.");
    }
    let mut state = inner.state();
    let (wabas, expires_in) = if is_code {
        let age = state.code_age;
        let lifetime = state.code_lifetime.unwrap_or(CODE_LIFETIME);
        let Some(code) = state.codes.get_mut(param("code")) else {
            return meta_error(
                400,
                100,
                Some(36007),
                false,
                "Invalid verification code format.",
            );
        };
        if code.used {
            return meta_error(
                400,
                100,
                Some(36009),
                false,
                "This authorization code has been used.",
            );
        }
        if code.issued.elapsed() + age > lifetime {
            return meta_error(
                400,
                100,
                Some(36007),
                false,
                "This authorization code has expired.",
            );
        }
        code.used = true;
        (code.wabas.clone(), code.expires_in)
    } else {
        match state.tokens.get(param("fb_exchange_token")) {
            None => {
                return meta_error(
                    400,
                    190,
                    None,
                    false,
                    "Invalid OAuth access token - Cannot parse access token",
                );
            }
            Some(token) if token.is_expired() => {
                return meta_error(
                    400,
                    190,
                    Some(463),
                    false,
                    "Error validating access token: Session has expired.",
                );
            }
            Some(token) => (token.wabas.clone(), Some(USER_TOKEN_EXPIRES_IN)),
        }
    };
    let token = random("EAAG", 64);
    state.tokens.insert(
        token.clone(),
        Token {
            wabas,
            expires_at: expires_in.map(|s| unix_now() + s),
            expired: false,
        },
    );
    let mut answer = json!({"access_token": token, "token_type": "bearer"});
    if let Some(seconds) = expires_in {
        answer["expires_in"] = json!(seconds);
    }
    ok(answer)
}

fn debug_token(inner: &Inner, request: &GraphRequest<'_>) -> Answer {
    let config = &inner.config;
    let app_token = format!("{}|{}", config.app_id, config.app_secret);
    if request.token() != Some(app_token.as_str()) {
        return meta_error(
            400,
            190,
            None,
            false,
            "Invalid OAuth access token signature.",
        );
    }
    let input = request
        .query
        .get("input_token")
        .map(String::as_str)
        .unwrap_or("");
    let state = inner.state();
    let data = match state.tokens.get(input) {
        Some(token) => json!({
            "app_id": config.app_id,
            "type": "SYSTEM_USER",
            "application": "Muchaw Numbers (fake)",
            "is_valid": !token.is_expired(),
            "expires_at": token.expires_at.unwrap_or(0),
            "data_access_expires_at": 0,
            "scopes": ["whatsapp_business_management", "whatsapp_business_messaging"],
            "granular_scopes": [
                {"scope": "whatsapp_business_management", "target_ids": token.wabas},
                {"scope": "whatsapp_business_messaging", "target_ids": token.wabas},
            ],
        }),
        None => json!({
            "is_valid": false,
            "error": {"code": 190, "message": "Invalid OAuth access token."},
            "scopes": [],
        }),
    };
    ok(json!({ "data": data }))
}

/// Routes that need the customer's business token.
fn authorized(inner: &Inner, endpoint: Endpoint, request: &GraphRequest<'_>) -> Answer {
    let Some(token_text) = request.token() else {
        return meta_error(
            400,
            190,
            None,
            false,
            "An access token is required to request this resource.",
        );
    };
    let mut state = inner.state();
    let Some(token) = state.tokens.get(token_text) else {
        return meta_error(
            401,
            190,
            None,
            false,
            "Invalid OAuth access token - Cannot parse access token",
        );
    };
    if token.is_expired() {
        return meta_error(
            401,
            190,
            Some(463),
            false,
            "Error validating access token: Session has expired.",
        );
    }
    let wabas = token.wabas.clone();
    let object = request.object();
    match endpoint {
        Endpoint::ListSubscribedApps
        | Endpoint::Route(Route::SubscribeApp | Route::UnsubscribeApp) => {
            let Some(&subscribed) = state.subscribed.get(object) else {
                return unknown_object(request.method, object);
            };
            if !wabas.iter().any(|w| w == object) {
                return permissions_error();
            }
            match endpoint {
                Endpoint::ListSubscribedApps => {
                    let data = if subscribed {
                        json!([{"whatsapp_business_api_data": {
                            "id": inner.config.app_id,
                            "name": "Muchaw Numbers (fake)",
                            "link": format!("https://www.facebook.com/games/?app_id={}", inner.config.app_id),
                        }}])
                    } else {
                        json!([])
                    };
                    ok(json!({ "data": data }))
                }
                Endpoint::Route(route) => {
                    state
                        .subscribed
                        .insert(object.to_string(), route == Route::SubscribeApp);
                    success()
                }
            }
        }
        Endpoint::Route(Route::ListPhoneNumbers) => {
            if !state.subscribed.contains_key(object) {
                return unknown_object(request.method, object);
            }
            if !wabas.iter().any(|w| w == object) {
                return permissions_error();
            }
            list_phone_numbers(&state, object, request, &inner.config.app_id)
        }
        Endpoint::Route(route) => {
            let Some(phone) = state.phones.get_mut(object) else {
                return unknown_object(request.method, object);
            };
            if !wabas.contains(&phone.waba_id) {
                return permissions_error();
            }
            phone_call(route, phone, request, &inner.config.app_id)
        }
    }
}

/// A page cursor: opaque to callers, as Meta's are (base64 of the phone's place in the list).
fn cursor(onboarded: u64) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("onboarded:{onboarded}"))
}

fn read_cursor(text: &str) -> Option<u64> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()?;
    String::from_utf8(bytes)
        .ok()?
        .strip_prefix("onboarded:")?
        .parse()
        .ok()
}

/// `GET /{waba_id}/phone_numbers` as Meta documents it: the WABA's phones, most recently
/// onboarded first, each with the requested `fields` (the phone node's defaults otherwise), in
/// pages of `limit` with `paging.cursors.before/after`, and `paging.next` only while more
/// follow. `after`/`before` take a cursor of an earlier page.
fn list_phone_numbers(
    state: &FakeState,
    waba_id: &str,
    request: &GraphRequest<'_>,
    app_id: &str,
) -> Answer {
    let limit = match request.query.get("limit") {
        None => DEFAULT_PAGE_LIMIT,
        Some(text) => match text.parse::<usize>() {
            Ok(limit) if (1..=MAX_PAGE_LIMIT).contains(&limit) => limit,
            _ => {
                return invalid_parameter(&format!(
                    "limit must be a whole number from 1 to {MAX_PAGE_LIMIT}"
                ));
            }
        },
    };
    let bound = |name: &str| -> Result<Option<u64>, Answer> {
        match request.query.get(name) {
            None => Ok(None),
            Some(text) => read_cursor(text)
                .map(Some)
                .ok_or_else(|| invalid_parameter(&format!("{name} is not a cursor of this edge"))),
        }
    };
    let (after, before) = match (bound("after"), bound("before")) {
        (Ok(after), Ok(before)) => (after, before),
        (Err(answer), _) | (_, Err(answer)) => return answer,
    };
    let mut phones: Vec<&Phone> = state
        .phones
        .values()
        .filter(|p| p.waba_id == waba_id)
        .collect();
    phones.sort_by_key(|p| std::cmp::Reverse(p.onboarded));
    // Most recent first: `after` continues with older phones, `before` goes back to newer ones.
    let page: Vec<&Phone> = match (after, before) {
        (Some(after), _) => phones
            .iter()
            .filter(|p| p.onboarded < after)
            .take(limit)
            .copied()
            .collect(),
        (None, Some(before)) => {
            let newer: Vec<&Phone> = phones
                .iter()
                .filter(|p| p.onboarded > before)
                .copied()
                .collect();
            newer[newer.len().saturating_sub(limit)..].to_vec()
        }
        (None, None) => phones.iter().take(limit).copied().collect(),
    };
    let mut data = Vec::with_capacity(page.len());
    for phone in &page {
        let answer = get_phone(phone, request, app_id);
        if answer.status != StatusCode::OK {
            return answer;
        }
        data.push(answer.body);
    }
    let mut answer = json!({ "data": data });
    if let (Some(first), Some(last)) = (page.first(), page.last()) {
        let mut paging = json!({"cursors": {
            "before": cursor(first.onboarded),
            "after": cursor(last.onboarded),
        }});
        if phones.iter().any(|p| p.onboarded < last.onboarded) {
            let mut query: Vec<(&str, String)> = vec![
                ("limit", limit.to_string()),
                ("after", cursor(last.onboarded)),
            ];
            if let Some(fields) = request.query.get("fields") {
                query.push(("fields", fields.clone()));
            }
            let query = serde_urlencoded::to_string(&query).unwrap_or_default();
            paging["next"] = json!(format!(
                "{}/{}/{waba_id}/phone_numbers?{query}",
                request.base, request.version
            ));
        }
        answer["paging"] = paging;
    }
    ok(answer)
}

fn six_digits(pin: Option<&str>) -> Option<String> {
    pin.filter(|p| p.len() == 6 && p.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_string)
}

fn register_limited() -> Answer {
    meta_error(
        400,
        133016,
        None,
        false,
        "Account register deregister rate limit exceeded",
    )
}

fn phone_call(route: Route, phone: &mut Phone, request: &GraphRequest<'_>, app_id: &str) -> Answer {
    let now = Instant::now();
    phone
        .register_events
        .retain(|at| now.duration_since(*at) < REGISTER_WINDOW);
    match route {
        Route::Register => {
            if phone.register_events.len() >= REGISTER_LIMIT {
                return register_limited();
            }
            // Counted whatever the answer.
            phone.register_events.push(now);
            if request.param("messaging_product") != Some("whatsapp") {
                return invalid_parameter("messaging_product must be \"whatsapp\"");
            }
            let Some(pin) = six_digits(request.param("pin")) else {
                return invalid_parameter("pin must be a string of 6 digits");
            };
            // Meta does not register a number whose display name it has not accepted.
            if matches!(phone.name_status.as_str(), "PENDING_REVIEW" | "DECLINED") {
                return meta_error(400, 100, Some(2388001), false, "(#100) Invalid parameter");
            }
            if phone.pin.as_ref().is_some_and(|existing| *existing != pin) {
                return meta_error(
                    400,
                    133005,
                    None,
                    false,
                    "Two step verification PIN Mismatch",
                );
            }
            phone.pin = Some(pin);
            phone.registered = true;
            success()
        }
        Route::Deregister => {
            if phone.register_events.len() >= REGISTER_LIMIT {
                return register_limited();
            }
            phone.register_events.push(now);
            phone.registered = false;
            success()
        }
        Route::SetPin => {
            let Some(pin) = six_digits(request.param("pin")) else {
                return invalid_parameter("pin must be a string of 6 digits");
            };
            phone.pin = Some(pin);
            success()
        }
        _ => get_phone(phone, request, app_id),
    }
}

/// `health_status` as Meta documents it: the overall answer and one entity per level (phone
/// number, WABA, business, app), each with its `errors` when it cannot send freely.
fn health_status(phone: &Phone, app_id: &str) -> Value {
    let can_send = phone.can_send_message.as_str();
    let mut errors = phone.health_errors.clone();
    if errors.is_empty() && can_send != "AVAILABLE" {
        errors.push(HealthError {
            entity_type: "PHONE_NUMBER".into(),
            error_code: 141006,
            error_description: "The number cannot send messages freely.".into(),
            possible_solution: Some("Check the number in WhatsApp Manager.".into()),
        });
    }
    let entities = [
        ("PHONE_NUMBER", phone.profile.phone_number_id.as_str()),
        ("WABA", phone.waba_id.as_str()),
        ("BUSINESS", "1000000000000001"),
        ("APP", app_id),
    ]
    .map(|(kind, id)| {
        let own: Vec<Value> = errors
            .iter()
            .filter(|e| e.entity_type == kind)
            .map(|e| {
                let mut error = json!({
                    "error_code": e.error_code,
                    "error_description": e.error_description,
                });
                if let Some(solution) = &e.possible_solution {
                    error["possible_solution"] = json!(solution);
                }
                error
            })
            .collect();
        let mut entity = json!({
            "entity_type": kind,
            "id": id,
            "can_send_message": if own.is_empty() { "AVAILABLE" } else { can_send },
        });
        if !own.is_empty() {
            entity["errors"] = json!(own);
        }
        entity
    });
    json!({"can_send_message": can_send, "entities": entities})
}

fn get_phone(phone: &Phone, request: &GraphRequest<'_>, app_id: &str) -> Answer {
    let requested: Vec<&str> = match request.query.get("fields") {
        Some(fields) => fields
            .split(',')
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .collect(),
        None => DEFAULT_PHONE_FIELDS.to_vec(),
    };
    let mut answer = json!({"id": phone.profile.phone_number_id});
    for field in requested {
        let value = match field {
            "id" => continue,
            "display_phone_number" => json!(phone.profile.display_phone_number),
            "verified_name" => json!(phone.profile.verified_name),
            "quality_rating" => json!(phone.profile.quality_rating),
            "name_status" => json!(phone.name_status),
            "code_verification_status" => json!("VERIFIED"),
            "platform_type" => json!(if phone.registered {
                "CLOUD_API"
            } else {
                "NOT_APPLICABLE"
            }),
            "throughput" => json!({"level": phone.throughput_level}),
            "status" => match &phone.status {
                Some(status) => json!(status),
                None => json!(if phone.registered {
                    "CONNECTED"
                } else {
                    "PENDING"
                }),
            },
            "messaging_limit_tier" => json!(phone.messaging_limit_tier),
            "health_status" => health_status(phone, app_id),
            other => {
                return meta_error(
                    400,
                    100,
                    None,
                    false,
                    &format!(
                        "(#100) Tried accessing nonexisting field ({other}) on node type (WhatsAppBusinessPhoneNumber)"
                    ),
                );
            }
        };
        answer[field] = value;
    }
    ok(answer)
}

// ---- control API --------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CodeRequest {
    waba_ids: Vec<String>,
    expires_in: Option<u64>,
}

async fn control_code(
    State(inner): State<Arc<Inner>>,
    Json(request): Json<CodeRequest>,
) -> Json<Value> {
    let wabas: Vec<&str> = request.waba_ids.iter().map(String::as_str).collect();
    let code = inner.issue_code(&wabas, request.expires_in);
    Json(json!({ "code": code }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PhoneRequest {
    waba_id: String,
    #[serde(flatten)]
    profile: PhoneProfile,
}

async fn control_phone(
    State(inner): State<Arc<Inner>>,
    Json(request): Json<PhoneRequest>,
) -> Json<Value> {
    inner.add_phone(&request.waba_id, request.profile);
    Json(json!({"success": true}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
enum FaultPreset {
    #[serde(rename = "transient5xx")]
    Transient5xx,
    RateLimited,
    PinMismatch,
    TokenExpired,
    DisplayNameNotReady,
    RegisterLimit,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FaultError {
    http_status: u16,
    code: i64,
    #[serde(default)]
    subcode: Option<i64>,
    #[serde(default)]
    is_transient: bool,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum FaultSpec {
    Preset(FaultPreset),
    Error {
        #[serde(alias = "Error")]
        error: FaultError,
    },
    Delay {
        #[serde(rename = "delayMs")]
        delay_ms: u64,
    },
}

impl From<FaultSpec> for Fault {
    fn from(spec: FaultSpec) -> Fault {
        match spec {
            FaultSpec::Preset(FaultPreset::Transient5xx) => Fault::transient_5xx(),
            FaultSpec::Preset(FaultPreset::RateLimited) => Fault::rate_limited(),
            FaultSpec::Preset(FaultPreset::PinMismatch) => Fault::pin_mismatch(),
            FaultSpec::Preset(FaultPreset::TokenExpired) => Fault::token_expired(),
            FaultSpec::Preset(FaultPreset::DisplayNameNotReady) => Fault::display_name_not_ready(),
            FaultSpec::Preset(FaultPreset::RegisterLimit) => Fault::register_limit(),
            FaultSpec::Error { error } => Fault::Error {
                http_status: error.http_status,
                code: error.code,
                subcode: error.subcode,
                is_transient: error.is_transient,
                message: error
                    .message
                    .unwrap_or_else(|| format!("(#{}) Scripted fault", error.code)),
            },
            FaultSpec::Delay { delay_ms } => Fault::Delay(Duration::from_millis(delay_ms)),
        }
    }
}

#[derive(Deserialize)]
struct FaultRequest {
    route: Route,
    #[serde(default = "one")]
    times: usize,
    fault: FaultSpec,
}

fn one() -> usize {
    1
}

async fn control_fault(
    State(inner): State<Arc<Inner>>,
    Json(request): Json<FaultRequest>,
) -> Json<Value> {
    inner.fail_next(request.route, request.times, request.fault.into());
    Json(json!({"success": true}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QualityRequest {
    phone_number_id: String,
    rating: String,
}

async fn control_quality(
    State(inner): State<Arc<Inner>>,
    Json(request): Json<QualityRequest>,
) -> Json<Value> {
    inner.set_quality(&request.phone_number_id, &request.rating);
    Json(json!({"success": true}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WebhookRequest {
    /// Replaces the configured callback URL when given.
    #[serde(default)]
    callback_url: Option<String>,
    entry_id: String,
    field: String,
    value: Value,
}

async fn control_webhook(
    State(inner): State<Arc<Inner>>,
    Json(request): Json<WebhookRequest>,
) -> Response {
    if let Some(url) = request.callback_url {
        inner.state().webhook_callback = Some(url);
    }
    match inner
        .send_webhook(&request.entry_id, &request.field, request.value)
        .await
    {
        Ok(status) => Json(json!({"status": status})).into_response(),
        Err(err) => (
            StatusCode::BAD_GATEWAY,
            Json(json!({"error": err.to_string()})),
        )
            .into_response(),
    }
}

async fn control_calls(State(inner): State<Arc<Inner>>) -> Json<Vec<Call>> {
    Json(inner.state().calls.clone())
}

async fn control_clear_calls(State(inner): State<Arc<Inner>>) -> Json<Value> {
    inner.state().calls.clear();
    Json(json!({"success": true}))
}
