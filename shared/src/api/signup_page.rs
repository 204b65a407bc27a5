//! The hosted signup page and the two no-key routes it calls, all authorised by a signup
//! link's signed `state`:
//!
//! - `GET /signup?state=…`: a small HTML page that runs Meta's Embedded Signup (the JS SDK's
//!   `FB.login` with the deployment's configuration id), posts the code and ids to
//!   `POST /api/signup/callback`, follows the number and returns the user to the link's
//!   `redirectUrl`. A link that cannot be used gets a clear HTML page instead.
//! - `GET /signup/status?state=…`: the link's state and the status of the number it created.
//! - `POST /signup/events`: the page reports that it was opened, cancelled or failed.
//!
//! Every answer forbids framing and referrers (the URL carries the state); the page runs only
//! its own nonce'd script and Meta's SDK.

use std::sync::Arc;

use axum::Json;
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, JsonBody};
use crate::domain::signup_link::LinkError;
use crate::domain::signup_session::{
    MAX_ERROR_ID_LEN, MAX_ERROR_MESSAGE_LEN, MAX_STEP_LEN, MetaSignupError, Report, SessionState,
    SignupSession,
};
use crate::domain::time;
use crate::ports::{NumberReader, SignupSessions};
use crate::secret_cache::LinkKeys;

/// Meta's side of the page: what `FB.init`/`FB.login` need and where Meta's code comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageConfig {
    pub app_id: String,
    /// The Embedded Signup configuration (Facebook Login for Business) id.
    pub config_id: String,
    pub graph_version: String,
    /// Meta's JavaScript SDK (`https://connect.facebook.net/en_US/sdk.js`).
    pub sdk_url: String,
    /// The origin Meta's `WA_EMBEDDED_SIGNUP` messages come from (`https://www.facebook.com`).
    pub meta_origin: String,
}

pub const DEFAULT_SDK_URL: &str = "https://connect.facebook.net/en_US/sdk.js";
pub const DEFAULT_META_ORIGIN: &str = "https://www.facebook.com";

pub struct PageState<S> {
    pub store: S,
    pub signer: LinkKeys,
    pub page: PageConfig,
}

/// `scheme://host[:port]` of a URL, for the CSP (`None` when it has none).
pub fn origin_of(url: &str) -> Option<String> {
    let uri = url.parse::<http::Uri>().ok()?;
    let scheme = uri.scheme_str()?;
    let authority = uri.authority()?;
    matches!(scheme, "https" | "http").then(|| format!("{scheme}://{authority}"))
}

/// Where signup links point: the configured base URL, or else this API's own hosted page
/// (`https://{host}/signup`, the host the request came to).
pub fn link_base_url(configured: &str, headers: &HeaderMap) -> String {
    let configured = configured.trim();
    if !configured.is_empty() {
        return configured.to_string();
    }
    let header_text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(',').next().unwrap_or("").trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let host = header_text("x-forwarded-host")
        .or_else(|| header_text("host"))
        .filter(|h| {
            h.len() <= 253
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'))
        })
        .unwrap_or_else(|| "localhost".into());
    let scheme = match header_text("x-forwarded-proto").as_deref() {
        Some("http") => "http",
        _ => "https",
    };
    format!("{scheme}://{host}/signup")
}

// ---- Language ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    Pt,
    En,
    Es,
}

impl Lang {
    pub fn tag(self) -> &'static str {
        match self {
            Lang::Pt => "pt",
            Lang::En => "en",
            Lang::Es => "es",
        }
    }

    /// The best of Portuguese, English and Spanish by `Accept-Language` (q-values honoured,
    /// first listed wins ties); English when none is acceptable.
    pub fn from_accept_language(value: Option<&str>) -> Lang {
        let mut best: Option<(Lang, f32)> = None;
        for part in value.unwrap_or("").split(',').take(32) {
            let mut pieces = part.split(';');
            let tag = pieces.next().unwrap_or("").trim().to_ascii_lowercase();
            let primary = tag.split('-').next().unwrap_or("");
            let lang = match primary {
                "pt" => Lang::Pt,
                "en" => Lang::En,
                "es" => Lang::Es,
                _ => continue,
            };
            let q = pieces
                .filter_map(|p| p.trim().strip_prefix("q="))
                .filter_map(|q| q.trim().parse::<f32>().ok())
                .next()
                .unwrap_or(1.0);
            if q > 0.0 && best.is_none_or(|(_, b)| q > b) {
                best = Some((lang, q));
            }
        }
        best.map_or(Lang::En, |(lang, _)| lang)
    }
}

/// Every sentence the page shows, in one language.
struct Text {
    title: &'static str,
    intro: &'static str,
    start: &'static str,
    loading: &'static str,
    working: &'static str,
    cancelled: &'static str,
    not_completed: &'static str,
    meta_error: &'static str,
    submit_failed: &'static str,
    provisioning: &'static str,
    active: &'static str,
    failed: &'static str,
    listing: &'static str,
    connecting_many: &'static str,
    active_many: &'static str,
    some_failed: &'static str,
    waba_failed: &'static str,
    reconnect_failed: &'static str,
    continue_label: &'static str,
    sdk_failed: &'static str,
    expired: &'static str,
    used: &'static str,
    revoked: &'static str,
    invalid: &'static str,
    unavailable: &'static str,
    too_many: &'static str,
    ask_new: &'static str,
}

fn text(lang: Lang) -> &'static Text {
    match lang {
        Lang::En => &Text {
            title: "Connect your WhatsApp number",
            intro: "Sign in with Facebook to connect your WhatsApp Business number.",
            start: "Connect with Facebook",
            loading: "Loading…",
            working: "Follow the steps in the Facebook window.",
            cancelled: "You left the signup at step: {step}. You can try again.",
            not_completed: "The signup was not completed. You can try again.",
            meta_error: "Facebook reported an error:",
            submit_failed: "We could not start connecting your number:",
            provisioning: "Connecting your number… this takes a moment.",
            active: "Your WhatsApp number is connected.",
            failed: "Your number could not be connected.",
            listing: "Finding the numbers of your WhatsApp Business account…",
            connecting_many: "Connecting your numbers… {done} of {total} done.",
            active_many: "Your WhatsApp numbers are connected ({total}).",
            some_failed: "{active} of {total} numbers are connected; the others could not be.",
            waba_failed: "No number of your WhatsApp Business account could be connected:",
            reconnect_failed: "Your number could not be reconnected; it keeps working as before:",
            continue_label: "Continue",
            sdk_failed: "Facebook could not be loaded. Check your connection and reload the page.",
            expired: "This signup link has expired.",
            used: "This signup link was already used.",
            revoked: "This signup link was cancelled.",
            invalid: "This signup link is not valid.",
            unavailable: "The service is unavailable right now. Please try again in a moment.",
            too_many: "Too many requests from here. Please wait a minute and reload the page.",
            ask_new: "Ask for a new signup link.",
        },
        Lang::Pt => &Text {
            title: "Conecte seu número do WhatsApp",
            intro: "Entre com o Facebook para conectar seu número do WhatsApp Business.",
            start: "Conectar com o Facebook",
            loading: "Carregando…",
            working: "Siga as etapas na janela do Facebook.",
            cancelled: "Você saiu do cadastro na etapa: {step}. Você pode tentar novamente.",
            not_completed: "O cadastro não foi concluído. Você pode tentar novamente.",
            meta_error: "O Facebook informou um erro:",
            submit_failed: "Não conseguimos começar a conectar seu número:",
            provisioning: "Conectando seu número… isso leva um instante.",
            active: "Seu número do WhatsApp está conectado.",
            failed: "Não foi possível conectar seu número.",
            listing: "Procurando os números da sua conta do WhatsApp Business…",
            connecting_many: "Conectando seus números… {done} de {total} prontos.",
            active_many: "Seus números do WhatsApp estão conectados ({total}).",
            some_failed: "{active} de {total} números estão conectados; os outros não puderam ser.",
            waba_failed: "Nenhum número da sua conta do WhatsApp Business pôde ser conectado:",
            reconnect_failed: "Não foi possível reconectar seu número; ele continua funcionando como antes:",
            continue_label: "Continuar",
            sdk_failed: "Não foi possível carregar o Facebook. Verifique sua conexão e recarregue a página.",
            expired: "Este link de cadastro expirou.",
            used: "Este link de cadastro já foi usado.",
            revoked: "Este link de cadastro foi cancelado.",
            invalid: "Este link de cadastro não é válido.",
            unavailable: "O serviço está indisponível no momento. Tente novamente em instantes.",
            too_many: "Muitas solicitações daqui. Aguarde um minuto e recarregue a página.",
            ask_new: "Peça um novo link de cadastro.",
        },
        Lang::Es => &Text {
            title: "Conecta tu número de WhatsApp",
            intro: "Inicia sesión con Facebook para conectar tu número de WhatsApp Business.",
            start: "Conectar con Facebook",
            loading: "Cargando…",
            working: "Sigue los pasos en la ventana de Facebook.",
            cancelled: "Saliste del registro en el paso: {step}. Puedes intentarlo de nuevo.",
            not_completed: "El registro no se completó. Puedes intentarlo de nuevo.",
            meta_error: "Facebook informó un error:",
            submit_failed: "No pudimos empezar a conectar tu número:",
            provisioning: "Conectando tu número… esto tarda un momento.",
            active: "Tu número de WhatsApp está conectado.",
            failed: "No se pudo conectar tu número.",
            listing: "Buscando los números de tu cuenta de WhatsApp Business…",
            connecting_many: "Conectando tus números… {done} de {total} listos.",
            active_many: "Tus números de WhatsApp están conectados ({total}).",
            some_failed: "{active} de {total} números están conectados; los demás no se pudieron conectar.",
            waba_failed: "No se pudo conectar ningún número de tu cuenta de WhatsApp Business:",
            reconnect_failed: "No se pudo volver a conectar tu número; sigue funcionando como antes:",
            continue_label: "Continuar",
            sdk_failed: "No se pudo cargar Facebook. Revisa tu conexión y recarga la página.",
            expired: "Este enlace de registro ha caducado.",
            used: "Este enlace de registro ya se usó.",
            revoked: "Este enlace de registro fue cancelado.",
            invalid: "Este enlace de registro no es válido.",
            unavailable: "El servicio no está disponible ahora. Inténtalo de nuevo en un momento.",
            too_many: "Demasiadas solicitudes desde aquí. Espera un minuto y recarga la página.",
            ask_new: "Pide un nuevo enlace de registro.",
        },
    }
}

// ---- Escaping and headers ---------------------------------------------------------------

/// Text for HTML element content and quoted attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// JSON safe inside a `<script>` element: nothing in it can close the element or start markup.
pub fn script_json(value: &Value) -> String {
    value
        .to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

fn nonce() -> String {
    let bytes: [u8; 16] = rand::random();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The page's policy: its own nonce'd script and Meta's SDK, Meta's frames, calls only to this
/// API and Meta; never framed, no forms, no plugins, no base rewriting. Styles may be inline
/// (Meta's SDK injects its own; a style cannot run code).
pub fn page_csp(nonce: &str, page: &PageConfig) -> String {
    let sdk = origin_of(&page.sdk_url).unwrap_or_default();
    let meta = origin_of(&page.meta_origin).unwrap_or_default();
    format!(
        "default-src 'none'; script-src 'nonce-{nonce}' {sdk}; style-src 'unsafe-inline'; \
         img-src 'self' data: {sdk} {meta}; connect-src 'self' {sdk} {meta}; \
         frame-src {sdk} {meta}; base-uri 'none'; form-action 'none'; object-src 'none'; \
         frame-ancestors 'none'"
    )
}

const ERROR_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; \
                         form-action 'none'; frame-ancestors 'none'";

/// Headers of every answer of these routes (pages and JSON): the URL carries the state, so
/// no referrer, no caching, no framing, no sniffing.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        );
    }
    response
}

fn html(status: StatusCode, lang: Lang, csp: &str, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_LANGUAGE,
        HeaderValue::from_static(lang.tag()),
    );
    headers.insert(header::VARY, HeaderValue::from_static("Accept-Language"));
    if let Ok(value) = HeaderValue::from_str(csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, value);
    }
    response
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:34rem;margin:3rem auto;\
padding:0 1rem;color:#1c1e21;line-height:1.5}button{font-size:1rem;padding:.6rem 1.2rem;\
border:0;border-radius:6px;background:#1877f2;color:#fff;cursor:pointer}\
button:disabled{background:#9bb8e8;cursor:default}#status{margin-top:1.5rem}\
#continue[hidden]{display:none}";

/// Why the page cannot run for a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    Invalid,
    Expired,
    Used,
    Revoked,
    Unavailable,
    /// The page's rate limit (`api::page_limit`).
    RateLimited,
}

impl Refusal {
    fn status(self) -> StatusCode {
        match self {
            Refusal::Invalid => StatusCode::BAD_REQUEST,
            Refusal::Expired | Refusal::Used | Refusal::Revoked => StatusCode::GONE,
            Refusal::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Refusal::Invalid => "invalid",
            Refusal::Expired => "expired",
            Refusal::Used => "used",
            Refusal::Revoked => "revoked",
            Refusal::Unavailable => "unavailable",
            Refusal::RateLimited => "rate_limited",
        }
    }
}

fn refusal_page(lang: Lang, refusal: Refusal) -> Response {
    let t = text(lang);
    let message = match refusal {
        Refusal::Invalid => t.invalid,
        Refusal::Expired => t.expired,
        Refusal::Used => t.used,
        Refusal::Revoked => t.revoked,
        Refusal::Unavailable => t.unavailable,
        Refusal::RateLimited => t.too_many,
    };
    let hint = if matches!(refusal, Refusal::Unavailable | Refusal::RateLimited) {
        ""
    } else {
        t.ask_new
    };
    let body = format!(
        "<!doctype html><html lang=\"{lang}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta name=\"referrer\" content=\"no-referrer\"><title>{title}</title>\
         <style>{STYLE}</style></head><body><h1>{title}</h1>\
         <p id=\"refusal\" data-reason=\"{kind}\">{message}</p><p>{hint}</p></body></html>",
        lang = lang.tag(),
        title = escape_html(t.title),
        kind = refusal.kind(),
        message = escape_html(message),
        hint = escape_html(hint),
    );
    html(refusal.status(), lang, ERROR_CSP, body)
}

/// The page's `429`, in the visitor's language.
pub fn rate_limited_page(lang: Lang) -> Response {
    refusal_page(lang, Refusal::RateLimited)
}

/// The one `state` of a query string (`None` when missing, repeated or unreadable).
pub(super) fn state_param(raw: Option<&str>) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or("")).ok()?;
    let mut states = pairs.into_iter().filter(|(k, _)| k == "state");
    match (states.next(), states.next()) {
        (Some((_, state)), None) if !state.is_empty() && state.len() <= 2048 => Some(state),
        _ => None,
    }
}

fn mode_param(raw: Option<&str>) -> Option<&'static str> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or("")).ok()?;
    pairs
        .iter()
        .any(|(k, v)| k == "mode" && v == "coexistence")
        .then_some("coexistence")
}

/// The link a state names, if it is this account's and still usable.
async fn usable_link<S: SignupSessions>(
    store: &S,
    signer: &LinkKeys,
    state: Option<&str>,
) -> Result<SignupSession, Refusal> {
    let state = state.ok_or(Refusal::Invalid)?;
    let now = time::now();
    let signer = signer.signer().await.map_err(|err| {
        tracing::error!(error = %crate::telemetry::ErrorChain(&err), "signup link not checked");
        Refusal::Unavailable
    })?;
    let verified = signer.verify(state, now).map_err(|e| match e {
        LinkError::Expired => Refusal::Expired,
        LinkError::Invalid => Refusal::Invalid,
    })?;
    let link = store
        .link(&verified.link_id)
        .await
        .map_err(|err| {
            tracing::error!(error = %crate::telemetry::ErrorChain(&err), "signup link not read");
            Refusal::Unavailable
        })?
        .filter(|link| link.account_id == verified.account_id)
        .ok_or(Refusal::Invalid)?;
    match link.state(now) {
        SessionState::Revoked => Err(Refusal::Revoked),
        SessionState::Expired => Err(Refusal::Expired),
        // Completed, or consumed by a WABA-only signup (connecting, or failed with nothing
        // onboarded): the link cannot start another signup.
        _ if !link.is_usable(now) => Err(Refusal::Used),
        _ => Ok(link),
    }
}

/// `GET /signup?state=…`
pub async fn page<S: SignupSessions>(
    State(state): State<Arc<PageState<S>>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let lang = Lang::from_accept_language(
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
    );
    let token = state_param(raw.as_deref());
    let link = match usable_link(&state.store, &state.signer, token.as_deref()).await {
        Ok(link) => link,
        Err(refusal) => {
            tracing::info!(reason = refusal.kind(), "signup page refused");
            return refusal_page(lang, refusal);
        }
    };
    let Some(token) = token else {
        return refusal_page(lang, Refusal::Invalid);
    };
    let t = text(lang);
    let nonce = nonce();
    let feature_type = match mode_param(raw.as_deref()) {
        Some("coexistence") => "whatsapp_business_app_onboarding",
        _ => "",
    };
    let config = json!({
        "state": token,
        "appId": state.page.app_id,
        "configId": state.page.config_id,
        "graphVersion": state.page.graph_version,
        "sdkUrl": state.page.sdk_url,
        "metaOrigin": origin_of(&state.page.meta_origin).unwrap_or_default(),
        "featureType": feature_type,
        "redirectUrl": link.redirect_url,
        "text": {
            "working": t.working,
            "cancelled": t.cancelled,
            "notCompleted": t.not_completed,
            "metaError": t.meta_error,
            "submitFailed": t.submit_failed,
            "provisioning": t.provisioning,
            "active": t.active,
            "failed": t.failed,
            "listing": t.listing,
            "connectingMany": t.connecting_many,
            "activeMany": t.active_many,
            "someFailed": t.some_failed,
            "wabaFailed": t.waba_failed,
            "reconnectFailed": t.reconnect_failed,
            "sdkFailed": t.sdk_failed,
        },
    });
    let body = format!(
        "<!doctype html><html lang=\"{lang}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta name=\"referrer\" content=\"no-referrer\"><title>{title}</title>\
         <style>{STYLE}</style></head><body><h1>{title}</h1><p>{intro}</p>\
         <button id=\"start\" type=\"button\" disabled>{start}</button>\
         <p id=\"status\" role=\"status\" aria-live=\"polite\" data-state=\"loading\">{loading}</p>\
         <p><a id=\"continue\" href=\"#\" rel=\"noreferrer\" hidden>{continue_label}</a></p>\
         <script type=\"application/json\" id=\"signup-config\">{config}</script>\
         <script nonce=\"{nonce}\">{SCRIPT}</script></body></html>",
        lang = lang.tag(),
        title = escape_html(t.title),
        intro = escape_html(t.intro),
        start = escape_html(t.start),
        loading = escape_html(t.loading),
        continue_label = escape_html(t.continue_label),
        config = script_json(&config),
    );
    html(StatusCode::OK, lang, &page_csp(&nonce, &state.page), body)
}

/// The page's behaviour. It never writes markup from data (only `textContent`), accepts
/// messages only from Meta's origin, and sends the state only to this API.
const SCRIPT: &str = r#"(function () {
  "use strict";
  var cfg = JSON.parse(document.getElementById("signup-config").textContent);
  var t = cfg.text;
  var statusEl = document.getElementById("status");
  var button = document.getElementById("start");
  var next = document.getElementById("continue");
  var code = null, session = null, posted = false, finished = false;

  function show(state, message) {
    statusEl.setAttribute("data-state", state);
    statusEl.textContent = message;
  }
  function send(path, body) {
    return fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
      referrerPolicy: "no-referrer"
    });
  }
  function report(body) {
    body.state = cfg.state;
    send("/signup/events", body).catch(function () {});
  }
  function clip(value, max) {
    return value == null ? undefined : String(value).slice(0, max);
  }
  function retry() {
    button.disabled = false;
  }

  function cancelled(step) {
    step = clip(step, 64) || "";
    report({ event: "cancelled", currentStep: step });
    show("cancelled", t.cancelled.replace("{step}", step || "?"));
    retry();
  }
  function failed(d) {
    var message = clip(d.error_message, 500) || "?";
    report({
      event: "failed",
      errorMessage: message,
      errorId: clip(d.error_id, 64),
      sessionId: clip(d.session_id, 64)
    });
    show("error", t.metaError + " " + message);
    retry();
  }

  function leave(query) {
    if (!cfg.redirectUrl) return;
    var url = new URL(cfg.redirectUrl);
    query.forEach(function (pair) { url.searchParams.append(pair[0], pair[1]); });
    next.href = url.toString();
    next.hidden = false;
    setTimeout(function () { window.location.assign(url.toString()); }, 1500);
  }
  function finish(data) {
    finished = true;
    show(data.status === "ACTIVE" ? "active" : "number-failed",
      data.status === "ACTIVE" ? t.active : t.failed);
    leave([["numberId", data.numberId], ["status", data.status]]);
  }
  // A reconnect that did not finish: the number keeps its status and its old token.
  function finishReconnect(data) {
    finished = true;
    var reason = data.reconnectFailure || {};
    show("reconnect-failed", t.reconnectFailed + " " + String(reason.userMessage || reason.message || reason.code || "?"));
    leave([["numberId", data.numberId], ["status", data.status], ["reconnect", "failed"]]);
  }
  // A WABA-only signup: its phones are listed, then each number is provisioned on its own.
  // Returns whether it is over.
  function followWaba(data) {
    var waba = data.wabaSignup, numbers = data.numbers || [];
    if (waba.state === "failed") {
      finished = true;
      var reason = waba.failureReason || {};
      show("waba-failed", t.wabaFailed + " " + String(reason.userMessage || reason.message || reason.code || "?"));
      leave([["status", "FAILED"]]);
      return true;
    }
    if (waba.state !== "completed" || numbers.length === 0) {
      show("listing", t.listing);
      return false;
    }
    var active = numbers.filter(function (n) { return n.status === "ACTIVE"; }).length;
    var ended = numbers.filter(function (n) { return n.status === "ACTIVE" || n.status === "FAILED"; }).length;
    var total = String(numbers.length);
    if (ended < numbers.length) {
      show("provisioning", t.connectingMany.replace("{done}", String(ended)).replace("{total}", total));
      return false;
    }
    finished = true;
    if (active === numbers.length) {
      show("active", t.activeMany.replace("{total}", total));
    } else if (active === 0) {
      show("number-failed", t.failed);
    } else {
      show("partly-active", t.someFailed.replace("{active}", String(active)).replace("{total}", total));
    }
    var query = numbers.map(function (n) { return ["numberId", n.numberId]; });
    query.push(["status", active === numbers.length ? "ACTIVE" : "FAILED"]);
    leave(query);
    return true;
  }
  function poll(failures) {
    fetch("/signup/status?state=" + encodeURIComponent(cfg.state), {
      credentials: "omit", cache: "no-store", referrerPolicy: "no-referrer"
    }).then(function (r) {
      if (!r.ok) throw new Error("status " + r.status);
      return r.json();
    }).then(function (body) {
      var d = body.data || {};
      if (d.wabaSignup) {
        if (!followWaba(d)) setTimeout(function () { poll(0); }, 1500);
      } else if (!d.reconnecting && d.reconnectFailure) {
        finishReconnect(d);
      } else if (!d.reconnecting && (d.status === "ACTIVE" || d.status === "FAILED")) {
        finish(d);
      } else {
        setTimeout(function () { poll(0); }, 1500);
      }
    }).catch(function () {
      if (failures < 20) setTimeout(function () { poll(failures + 1); }, 3000);
    });
  }
  function submit() {
    if (!code || !session || posted) return;
    posted = true;
    var body = { code: code, wabaId: session.wabaId, state: cfg.state };
    if (session.phoneNumberId) body.phoneNumberId = session.phoneNumberId;
    if (session.businessId) body.businessId = session.businessId;
    if (session.event === "FINISH_WHATSAPP_BUSINESS_APP_ONBOARDING") body.mode = "coexistence";
    // Meta's FINISH_ONLY_WABA (or a FINISH without a phone) names a WABA and no phone: its
    // phones are listed server-side.
    if (session.event === "FINISH_ONLY_WABA" || !session.phoneNumberId) {
      body.mode = "waba_only";
      delete body.phoneNumberId;
    }
    show("submitting", t.provisioning);
    send("/api/signup/callback", body).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (j) {
        return { status: r.status, body: j };
      });
    }).then(function (answer) {
      if (answer.status === 200 || answer.status === 202) {
        show(body.mode === "waba_only" ? "listing" : "provisioning",
          body.mode === "waba_only" ? t.listing : t.provisioning);
        poll(0);
      } else {
        var e = answer.body && answer.body.error;
        show("submit-failed", t.submitFailed + " " + (e && e.message ? String(e.message) : answer.status));
      }
    }).catch(function () {
      show("submit-failed", t.submitFailed + " network");
      posted = false;
      retry();
    });
  }

  window.addEventListener("message", function (event) {
    if (event.origin !== cfg.metaOrigin) return;
    var data = event.data;
    if (typeof data === "string") {
      try { data = JSON.parse(data); } catch (e) { return; }
    }
    if (!data || data.type !== "WA_EMBEDDED_SIGNUP" || finished) return;
    var d = data.data || {};
    switch (data.event) {
      case "FINISH":
      case "FINISH_ONLY_WABA":
      case "FINISH_WHATSAPP_BUSINESS_APP_ONBOARDING":
        session = {
          event: data.event,
          wabaId: clip(d.waba_id, 32),
          phoneNumberId: clip(d.phone_number_id, 32),
          businessId: clip(d.business_id, 32)
        };
        submit();
        break;
      case "CANCEL":
        if (d.error_message) { failed(d); } else { cancelled(d.current_step); }
        break;
      case "ERROR":
        failed(d);
        break;
    }
  });

  button.addEventListener("click", function () {
    if (typeof FB === "undefined") return;
    button.disabled = true;
    code = null; session = null; posted = false;
    show("working", t.working);
    FB.login(function (response) {
      if (response && response.authResponse && response.authResponse.code) {
        code = response.authResponse.code;
        submit();
      } else {
        setTimeout(function () {
          if (statusEl.getAttribute("data-state") === "working") {
            show("not-completed", t.notCompleted);
            retry();
          }
        }, 1000);
      }
    }, {
      config_id: cfg.configId,
      response_type: "code",
      override_default_response_type: true,
      extras: { setup: {}, featureType: cfg.featureType, sessionInfoVersion: "3" }
    });
  });

  window.fbAsyncInit = function () {
    FB.init({ appId: cfg.appId, autoLogAppEvents: true, xfbml: false, version: cfg.graphVersion });
    show("ready", "");
    button.disabled = false;
  };
  var sdk = document.createElement("script");
  sdk.src = cfg.sdkUrl;
  sdk.async = true;
  sdk.defer = true;
  sdk.crossOrigin = "anonymous";
  sdk.addEventListener("error", function () { show("sdk-failed", t.sdkFailed); });
  document.head.appendChild(sdk);
  report({ event: "opened" });
})();"#;

// ---- The page's JSON routes ---------------------------------------------------------------

/// The state's link, as the JSON routes answer a bad one: the contract's `401`.
async fn link_for_state<S: SignupSessions>(
    store: &S,
    signer: &LinkKeys,
    state: Option<&str>,
) -> Result<SignupSession, ApiError> {
    let refuse = |message: &str| ApiError {
        message: message.into(),
        ..ApiError::unauthorized()
    };
    let state = state.ok_or_else(|| refuse("the signup link's state is required"))?;
    let verified = signer
        .signer()
        .await?
        .verify(state, time::now())
        .map_err(|e| refuse(&e.to_string()))?;
    store
        .link(&verified.link_id)
        .await?
        .filter(|link| link.account_id == verified.account_id)
        .ok_or_else(|| refuse("the signup link is not valid"))
}

/// `GET /signup/status?state=…`: the link's state, and the number it created (only that one).
pub async fn status<S: SignupSessions + NumberReader>(
    State(state): State<Arc<PageState<S>>>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let token = state_param(raw.as_deref());
    let link = link_for_state(&state.store, &state.signer, token.as_deref()).await?;
    let mut data = json!({ "link": link.state(time::now()).as_str() });
    if let Some((id, outcome)) = &link.waba_signup {
        // A WABA-only signup: its state, then each number it created.
        let mut waba = json!({
            "id": id,
            "state": outcome.as_ref().map_or("pending", |o| o.state()),
        });
        if let Some(reason) = link.waba_failure() {
            waba["failureReason"] = serde_json::to_value(reason).unwrap_or_default();
        }
        let mut numbers = Vec::new();
        for number_id in link.number_ids() {
            if let Some(number) = state.store.get(&link.account_id, &number_id).await? {
                numbers.push(
                    json!({"numberId": number.id.as_str(), "status": number.status.as_str()}),
                );
            }
        }
        data["wabaSignup"] = waba;
        data["numbers"] = json!(numbers);
    } else if let Some(number_id) = &link.number_id
        && let Some(number) = state.store.get(&link.account_id, number_id).await?
    {
        data["numberId"] = json!(number.id.as_str());
        data["status"] = json!(number.status.as_str());
        // A signup of a live number reconnects it: the page waits for the reconnect, and is
        // told when it did not finish (the number then stays as it was, `ACTIVE` included).
        if number.reconnect.is_some() {
            data["reconnecting"] = json!(true);
        } else if let Some(reason) = &number.reconnect_failure {
            data["reconnectFailure"] = serde_json::to_value(reason).unwrap_or_default();
        }
    }
    Ok(Json(json!({ "data": data })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventBody {
    state: String,
    event: String,
    #[serde(default)]
    current_step: Option<String>,
    #[serde(default)]
    error_message: Option<String>,
    #[serde(default)]
    error_id: Option<String>,
    #[serde(default)]
    session_id: Option<String>,
}

fn bounded(name: &str, value: Option<String>, max: usize) -> Result<Option<String>, ApiError> {
    match value {
        Some(v) if v.chars().count() > max || v.chars().any(char::is_control) => Err(
            ApiError::invalid_request(format!("{name} must be at most {max} characters of text")),
        ),
        other => Ok(other.filter(|v| !v.trim().is_empty())),
    }
}

/// The report a page body describes, or why it is not one.
pub fn parse_report(body: EventBody) -> Result<(String, Report), ApiError> {
    let step = bounded("currentStep", body.current_step, MAX_STEP_LEN)?;
    let message = bounded("errorMessage", body.error_message, MAX_ERROR_MESSAGE_LEN)?;
    let error_id = bounded("errorId", body.error_id, MAX_ERROR_ID_LEN)?;
    let session_id = bounded("sessionId", body.session_id, MAX_ERROR_ID_LEN)?;
    let report = match body.event.as_str() {
        "opened" => Report::Opened,
        "cancelled" => Report::Cancelled {
            step: step.unwrap_or_default(),
        },
        "failed" => Report::Failed(MetaSignupError {
            message: message.ok_or_else(|| {
                ApiError::invalid_request("errorMessage is required for a failed signup")
            })?,
            error_id,
            session_id,
        }),
        _ => {
            return Err(ApiError::invalid_request(
                "event must be opened, cancelled or failed",
            ));
        }
    };
    Ok((body.state, report))
}

/// `POST /signup/events`: the page reports `opened`, `cancelled` (Meta's `current_step`) or
/// `failed` (Meta's error). `204`; a link that can no longer be used is a `409`.
pub async fn report<S: SignupSessions>(
    State(state): State<Arc<PageState<S>>>,
    JsonBody(body): JsonBody<EventBody>,
) -> Result<StatusCode, ApiError> {
    let (token, report) = parse_report(body)?;
    let link = link_for_state(&state.store, &state.signer, Some(&token)).await?;
    let recorded = state
        .store
        .record_report(&link.account_id, &link.link_id, &report, time::now())
        .await?;
    if !recorded {
        return Err(ApiError::conflict(
            "the signup link was already used, was revoked or has expired",
        ));
    }
    tracing::info!(link_id = %link.link_id, report = report.kind(), "signup page reported");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_language_follows_accept_language() {
        let pick = |v: &str| Lang::from_accept_language(Some(v));
        assert_eq!(pick("pt-BR,pt;q=0.9,en;q=0.8"), Lang::Pt);
        assert_eq!(pick("es-MX"), Lang::Es);
        assert_eq!(pick("fr-FR, es;q=0.4, en;q=0.5"), Lang::En);
        assert_eq!(pick("de"), Lang::En);
        assert_eq!(pick("es;q=0, pt;q=0.1"), Lang::Pt);
        assert_eq!(Lang::from_accept_language(None), Lang::En);
    }

    #[test]
    fn echoed_text_cannot_become_markup() {
        assert_eq!(
            escape_html("<script>\"x\"&'y'</script>"),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;y&#39;&lt;/script&gt;"
        );
        let json = script_json(&json!({"a": "</script><b>&"}));
        assert!(!json.contains('<') && !json.contains('>') && !json.contains('&'));
    }

    #[test]
    fn the_policy_allows_only_the_nonce_and_meta() {
        let page = PageConfig {
            app_id: "1".into(),
            config_id: "2".into(),
            graph_version: "v25.0".into(),
            sdk_url: DEFAULT_SDK_URL.into(),
            meta_origin: DEFAULT_META_ORIGIN.into(),
        };
        let csp = page_csp("abc", &page);
        assert!(csp.contains("script-src 'nonce-abc' https://connect.facebook.net;"));
        assert!(csp.contains("frame-ancestors 'none'"));
        assert!(!csp.contains("unsafe-eval"));
    }

    #[test]
    fn links_point_at_the_hosted_page_unless_configured() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("abc.execute-api.aws.com"));
        assert_eq!(
            link_base_url("", &headers),
            "https://abc.execute-api.aws.com/signup"
        );
        assert_eq!(
            link_base_url("https://example.com/s", &headers),
            "https://example.com/s"
        );
        headers.insert("host", HeaderValue::from_static("evil\"host"));
        assert_eq!(link_base_url("", &headers), "https://localhost/signup");
    }

    #[test]
    fn a_report_is_bounded_text() {
        let body = |event: &str, message: Option<&str>| EventBody {
            state: "s".into(),
            event: event.into(),
            current_step: None,
            error_message: message.map(str::to_string),
            error_id: None,
            session_id: None,
        };
        assert!(parse_report(body("opened", None)).is_ok());
        assert!(parse_report(body("failed", None)).is_err());
        assert!(parse_report(body("failed", Some(&"x".repeat(501)))).is_err());
        assert!(parse_report(body("failed", Some("bad\u{0}"))).is_err());
        assert!(parse_report(body("finished", None)).is_err());
    }
}
