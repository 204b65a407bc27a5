//! A stand-in for Meta's JavaScript SDK and the Embedded Signup window, for pages under test.
//!
//! `GET /sdk.js` defines `FB.init` and `FB.login`. `FB.login` opens a hidden frame from this
//! server's origin (`GET /_fake/signup-frame`), which posts the scripted `WA_EMBEDDED_SIGNUP`
//! messages to the page exactly as Meta's window does (a JSON string, from Meta's origin),
//! then tells the SDK which `authResponse` to give `FB.login`'s callback. Every request to
//! these routes is recorded (path, query, `Referer`), so a test can show the page sent its
//! state to nobody but its own API, and which options `FB.login` was called with.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

use super::Inner;

/// The configuration id the local stack gives its hosted page.
pub const SIGNUP_CONFIG_ID: &str = "424242424242";

/// What the Embedded Signup window does when `FB.login` opens it.
#[derive(Clone, Debug, PartialEq)]
pub struct SignupScript {
    /// The `WA_EMBEDDED_SIGNUP` messages, in order (`{"type","event","data"}`).
    pub messages: Vec<Value>,
    /// The code `FB.login`'s callback receives; `None`: no `authResponse` (the user left).
    pub code: Option<String>,
}

fn message(event: &str, data: Value) -> Value {
    json!({"type": "WA_EMBEDDED_SIGNUP", "event": event, "data": data})
}

impl SignupScript {
    /// The user finished: Meta sends the ids, `FB.login` gets the code.
    pub fn finish(waba_id: &str, phone_number_id: &str, business_id: &str, code: &str) -> Self {
        SignupScript {
            messages: vec![message(
                "FINISH",
                json!({"phone_number_id": phone_number_id, "waba_id": waba_id, "business_id": business_id}),
            )],
            code: Some(code.to_string()),
        }
    }

    /// The user shared a WABA but picked no phone number (Meta's `FINISH_ONLY_WABA`, e.g. with
    /// `featureType: only_waba_sharing`): the ids of the WABA and the business, no phone.
    pub fn finish_only_waba(waba_id: &str, business_id: &str, code: &str) -> Self {
        SignupScript {
            messages: vec![message(
                "FINISH_ONLY_WABA",
                json!({"waba_id": waba_id, "business_id": business_id}),
            )],
            code: Some(code.to_string()),
        }
    }

    /// The user onboarded a number that stays on the WhatsApp Business app (coexistence).
    pub fn coexistence(
        waba_id: &str,
        phone_number_id: &str,
        business_id: &str,
        code: &str,
    ) -> Self {
        SignupScript {
            messages: vec![message(
                "FINISH_WHATSAPP_BUSINESS_APP_ONBOARDING",
                json!({"phone_number_id": phone_number_id, "waba_id": waba_id, "business_id": business_id}),
            )],
            code: Some(code.to_string()),
        }
    }

    /// The user closed the window at `step`.
    pub fn cancel(step: &str) -> Self {
        SignupScript {
            messages: vec![message("CANCEL", json!({"current_step": step}))],
            code: None,
        }
    }

    /// Meta's flow failed with this error.
    pub fn error(error_message: &str, error_id: &str, session_id: &str) -> Self {
        SignupScript {
            messages: vec![message(
                "ERROR",
                json!({"error_message": error_message, "error_id": error_id, "session_id": session_id, "timestamp": "1700000000"}),
            )],
            code: None,
        }
    }

    /// One more message after these (a longer sequence).
    pub fn then(mut self, message: Value) -> Self {
        self.messages.push(message);
        self
    }
}

/// One request a page made to the stand-in.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SdkRequest {
    pub path: String,
    pub query: String,
    pub referer: Option<String>,
}

fn record(inner: &Inner, path: &str, query: &str, headers: &HeaderMap) {
    let referer = headers
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    inner.state().sdk_requests.push(SdkRequest {
        path: path.to_string(),
        query: query.to_string(),
        referer,
    });
}

/// JSON inside a `<script>`: nothing can close the element.
fn script_json(value: &Value) -> String {
    value
        .to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

pub(crate) async fn sdk(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.unwrap_or_default();
    record(&inner, "/sdk.js", &query, &headers);
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1");
    let origin = script_json(&json!(format!("http://{host}")));
    let body = SDK_JS.replace("__ORIGIN__", &origin);
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/javascript; charset=utf-8"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

pub(crate) async fn frame(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.unwrap_or_default();
    record(&inner, "/_fake/signup-frame", &query, &headers);
    let login: Value = serde_urlencoded::from_str::<Vec<(String, String)>>(&query)
        .ok()
        .and_then(|pairs| pairs.into_iter().find(|(k, _)| k == "login"))
        .and_then(|(_, v)| serde_json::from_str(&v).ok())
        .unwrap_or(Value::Null);
    let script = {
        let mut state = inner.state();
        state.signup_logins.push(login);
        state
            .signup_script
            .clone()
            .unwrap_or_else(|| SignupScript::cancel("FAKE_META_NO_SCRIPT"))
    };
    let messages: Vec<String> = script.messages.iter().map(Value::to_string).collect();
    let plan = json!({"messages": messages, "code": script.code});
    let body = FRAME_HTML.replace("__PLAN__", &script_json(&plan));
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

const SDK_JS: &str = r#"(function () {
  "use strict";
  var origin = __ORIGIN__;
  window.FB = {
    init: function (options) { window.FB._initOptions = options; },
    login: function (callback, options) {
      var frame = document.createElement("iframe");
      frame.hidden = true;
      frame.src = origin + "/_fake/signup-frame?login=" + encodeURIComponent(JSON.stringify(options || {}));
      function done(event) {
        if (event.origin !== origin) return;
        var data;
        try { data = JSON.parse(event.data); } catch (e) { return; }
        if (!data || data.type !== "_FAKE_LOGIN_DONE") return;
        window.removeEventListener("message", done);
        frame.remove();
        callback(data.code
          ? { status: "connected", authResponse: { code: data.code } }
          : { status: "unknown", authResponse: null });
      }
      window.addEventListener("message", done);
      document.body.appendChild(frame);
    }
  };
  if (typeof window.fbAsyncInit === "function") window.fbAsyncInit();
})();
"#;

const FRAME_HTML: &str = r#"<!doctype html><html><head><meta charset="utf-8"></head><body><script>
(function () {
  var plan = __PLAN__;
  var i = 0;
  function next() {
    if (i < plan.messages.length) {
      window.parent.postMessage(plan.messages[i++], "*");
      setTimeout(next, 50);
    } else {
      window.parent.postMessage(JSON.stringify({ type: "_FAKE_LOGIN_DONE", code: plan.code }), "*");
    }
  }
  setTimeout(next, 100);
})();
</script></body></html>"#;
