//! The hosted signup page in a real browser: headless Chromium driven through chromedriver
//! (WebDriver over HTTP), the API served on a local port, the fake Meta serving a stand-in SDK
//! that plays each `WA_EMBEDDED_SIGNUP` sequence, and the provisioning chain running.
//!
//! Does not run only when Chromium or chromedriver is missing on a developer machine, and says
//! so ([`crate::not_run::did_not_run`]: `make test` ends by listing it); in CI (`CI` set) a
//! missing browser fails the test. `make test` installs both wherever it can
//! (`scripts/bootstrap.sh --browser`).

use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use chrono::Duration as ChronoDuration;
use fake_meta::SignupScript;
use muchaw_shared::domain::signup_session::SignupSession;
use muchaw_shared::domain::{AccountId, NumberId, Status, time};
use muchaw_shared::ports::{NumberReader, SignupLinks};
use muchaw_tests::http_event;
use muchaw_tests::provisioning::ProvisioningEnv;
use serde_json::{Value, json};

const WABA: &str = "240000000000001";
const BUSINESS: &str = "250000000000001";
const REDIRECT: &str = "https://app.example.com/done";
const SETTLE: Duration = Duration::from_secs(120);

fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// Chromium and chromedriver, or `None` off CI: then `test` does not run, and says so.
fn browser(test: &str) -> Option<(PathBuf, PathBuf)> {
    let chromium = on_path(&["chromium", "chromium-browser", "google-chrome"]);
    let driver = on_path(&["chromedriver"]);
    let missing = match (chromium, driver) {
        (Some(chromium), Some(driver)) => return Some((chromium, driver)),
        (None, None) => "chromium and chromedriver",
        (None, Some(_)) => "chromium",
        (Some(_), None) => "chromedriver",
    };
    if std::env::var_os("CI").is_some() {
        panic!("{missing} not on PATH: required in CI (`make test` installs them)");
    }
    crate::not_run::did_not_run(
        test,
        &format!(
            "{missing} not on PATH (`make test` installs them when run as root or with \
             passwordless sudo: apt-get install chromium chromium-driver)"
        ),
    );
    None
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A chromedriver this test started, with one browser session; both end when it drops.
struct Browser {
    driver: Child,
    port: u16,
    session: String,
    profile: PathBuf,
    http: reqwest::Client,
}

impl Browser {
    async fn start(chromium: PathBuf, driver: PathBuf) -> Browser {
        let port = free_port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let profile =
            std::env::temp_dir().join(format!("muchaw-chromium-{}-{}", std::process::id(), port));
        let http = muchaw_shared::http_client::reqwest_builder()
            .expect("TLS configuration")
            .build()
            .expect("HTTP client");
        let base = format!("http://127.0.0.1:{port}");
        let mut browser = Browser {
            driver: child,
            port,
            session: String::new(),
            profile,
            http,
        };
        for _ in 0..100 {
            if let Ok(r) = browser.http.get(format!("{base}/status")).send().await
                && r.status().is_success()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                    format!("--user-data-dir={}", browser.profile.display()),
                ],
            },
        }}});
        let created = browser.command("POST", "session", capabilities).await;
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {created}"))
            .to_string();
        browser
    }

    /// A WebDriver command; its `value`.
    async fn command(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("http://127.0.0.1:{}/{path}", self.port);
        let request = match method {
            "POST" => self.http.post(url).json(&body),
            "DELETE" => self.http.delete(url),
            _ => self.http.get(url),
        };
        let response: Value = request
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .expect("chromedriver answers JSON");
        response["value"].clone()
    }

    async fn session_command(&self, method: &str, path: &str, body: Value) -> Value {
        self.command(method, &format!("session/{}/{path}", self.session), body)
            .await
    }

    async fn open(&self, url: &str) {
        self.session_command("POST", "url", json!({"url": url}))
            .await;
    }

    async fn run(&self, script: &str) -> Value {
        self.session_command(
            "POST",
            "execute/sync",
            json!({"script": script, "args": []}),
        )
        .await
    }

    async fn click(&self, selector: &str) {
        let element = self
            .session_command(
                "POST",
                "element",
                json!({"using": "css selector", "value": selector}),
            )
            .await;
        let id = element
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {selector}: {element}"))
            .to_string();
        self.session_command("POST", &format!("element/{id}/click"), json!({}))
            .await;
    }

    async fn url(&self) -> String {
        self.session_command("GET", "url", Value::Null)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Waits (bounded) until `script` returns something truthy, and returns it.
    async fn wait_for(&self, what: &str, script: &str, limit: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let value = self.run(script).await;
            let truthy = match &value {
                Value::Null | Value::Bool(false) => false,
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return value;
            }
            if tokio::time::Instant::now() > deadline {
                let page = self
                    .run("return document.body ? document.body.innerText : ''")
                    .await;
                panic!("timed out waiting for {what}; the page shows: {page}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn status_state(&self) -> String {
        self.run("var s = document.getElementById('status'); return s ? s.getAttribute('data-state') : null")
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    async fn wait_for_state(&self, wanted: &str, limit: Duration) {
        let script = format!(
            "var s = document.getElementById('status'); return !!s && s.getAttribute('data-state') === '{wanted}'"
        );
        self.wait_for(&format!("status {wanted}"), &script, limit)
            .await;
    }

    async fn status_text(&self) -> String {
        self.run("return document.getElementById('status').textContent")
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // End the session (chromedriver then closes Chromium), then chromedriver itself.
        use std::io::{Read, Write};
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                stream,
                "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.session
            );
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// The API on a local port, as the browser reaches it, recording every signup-callback body.
struct Api {
    base: String,
    callbacks: Arc<Mutex<Vec<Value>>>,
}

async fn serve(p: &ProvisioningEnv) -> Api {
    let callbacks: Arc<Mutex<Vec<Value>>> = Arc::default();
    let recorded = callbacks.clone();
    let record = move |request: Request, next: Next| {
        let recorded = recorded.clone();
        async move {
            if request.uri().path() != "/api/signup/callback" {
                return next.run(request).await;
            }
            let (parts, body) = request.into_parts();
            let bytes = axum::body::to_bytes(body, 64 * 1024)
                .await
                .unwrap_or_default();
            if let Ok(value) = serde_json::from_slice::<Value>(&bytes) {
                recorded.lock().unwrap().push(value);
            }
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
    };
    let router = p
        .router_with_base_url("")
        .layer(axum::middleware::from_fn(record));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a local port");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Api { base, callbacks }
}

/// A new signup link of `key`'s account returning to `REDIRECT`; its id and state.
async fn link(p: &ProvisioningEnv, key: &str) -> (String, String) {
    let body = json!({"redirectUrl": REDIRECT}).to_string();
    let created = p
        .invoke(http_event(
            "POST",
            "/api/signup-links",
            "",
            Some(key),
            Some(&body),
        ))
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let data = &created.body["data"];
    (
        data["id"].as_str().unwrap().to_string(),
        data["state"].as_str().unwrap().to_string(),
    )
}

async fn session_view(p: &ProvisioningEnv, key: &str, id: &str) -> Value {
    let got = p
        .invoke(http_event(
            "GET",
            &format!("/api/signup-links/{id}"),
            "",
            Some(key),
            None,
        ))
        .await;
    assert_eq!(got.status, 200, "{}", got.body);
    got.body["data"].clone()
}

/// Opens the page for `state`, waits for the SDK, and starts Embedded Signup.
async fn start_signup(browser: &Browser, api: &Api, state: &str) {
    browser
        .open(&format!("{}/signup?state={state}", api.base))
        .await;
    browser
        .wait_for(
            "the SDK to load",
            "var b = document.getElementById('start'); return !!b && !b.disabled",
            Duration::from_secs(20),
        )
        .await;
    browser.click("#start").await;
}

async fn number_settled(p: &ProvisioningEnv, account: &AccountId, id: &str) -> Status {
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let number = p
            .env
            .store
            .get(account, &NumberId::from(id.to_string()))
            .await
            .expect("read")
            .expect("number");
        if number.status != Status::Pending || tokio::time::Instant::now() > deadline {
            return number.status;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn the_hosted_page_runs_each_embedded_signup_sequence_in_a_real_browser() {
    let Some((chromium, driver)) = browser(
        "signup_page::the_hosted_page_runs_each_embedded_signup_sequence_in_a_real_browser",
    ) else {
        return;
    };
    let p = ProvisioningEnv::new().await;
    p.start();
    let (account, key) = p.env.account_with_key("acme").await;
    let api = serve(&p).await;
    let browser = Browser::start(chromium, driver).await;

    // FINISH, through provisioning to ACTIVE, and back to the redirect URL.
    let phone = "240000000000011";
    let code = p.meta_phone(WABA, phone);
    p.meta
        .script_signup(SignupScript::finish(WABA, phone, BUSINESS, &code));
    let (finish_id, finish_state) = link(&p, &key).await;
    start_signup(&browser, &api, &finish_state).await;
    browser.wait_for_state("active", SETTLE).await;
    let href = browser
        .wait_for(
            "the continue link",
            "var a = document.getElementById('continue'); return a && !a.hidden ? a.href : ''",
            Duration::from_secs(10),
        )
        .await;
    let href = href.as_str().unwrap_or_default().to_string();
    let view = session_view(&p, &key, &finish_id).await;
    assert_eq!(view["state"], "completed", "{view}");
    let number_id = view["numberId"].as_str().expect("numberId").to_string();
    assert_eq!(
        href,
        format!("{REDIRECT}?numberId={number_id}&status=ACTIVE")
    );
    assert_eq!(
        number_settled(&p, &account, &number_id).await,
        Status::Active
    );
    // Then the browser goes there (it cannot load it: no network in tests, but it goes).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut landed = browser.url().await;
    while !landed.starts_with(REDIRECT) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        landed = browser.url().await;
    }
    assert_eq!(landed, href, "the browser was sent to the redirect URL");
    let login = p
        .meta
        .signup_logins()
        .last()
        .cloned()
        .expect("FB.login called");
    assert_eq!(login["config_id"], fake_meta::SIGNUP_CONFIG_ID);
    assert_eq!(login["response_type"], "code");
    assert_eq!(login["override_default_response_type"], true);
    assert_eq!(login["extras"]["sessionInfoVersion"], "3");
    assert!(login["extras"]["setup"].is_object(), "{login}");
    let callback = api
        .callbacks
        .lock()
        .unwrap()
        .last()
        .cloned()
        .expect("posted");
    assert_eq!(
        callback,
        json!({"code": code, "wabaId": WABA, "phoneNumberId": phone, "businessId": BUSINESS, "state": finish_state})
    );

    // CANCEL at a step: reported, shown, and the user may try again.
    p.meta
        .script_signup(SignupScript::cancel("PHONE_NUMBER_VERIFICATION"));
    let (cancel_id, cancel_state) = link(&p, &key).await;
    start_signup(&browser, &api, &cancel_state).await;
    browser
        .wait_for_state("cancelled", Duration::from_secs(20))
        .await;
    assert!(
        browser
            .status_text()
            .await
            .contains("PHONE_NUMBER_VERIFICATION")
    );
    assert_eq!(
        browser
            .run("return document.getElementById('start').disabled")
            .await,
        json!(false),
        "the user can try again"
    );
    let view = wait_for_view(&p, &key, &cancel_id, "cancelled").await;
    assert_eq!(view["cancelledAtStep"], "PHONE_NUMBER_VERIFICATION");
    assert!(view["openedAt"].is_string());

    // ERROR: Meta's error is shown (as text) and recorded.
    let message = "<img src=x onerror=alert(1)> Número já registrado";
    p.meta
        .script_signup(SignupScript::error(message, "524126", "f34b51dab5e0498c"));
    let (error_id, error_state) = link(&p, &key).await;
    start_signup(&browser, &api, &error_state).await;
    browser
        .wait_for_state("error", Duration::from_secs(20))
        .await;
    assert!(browser.status_text().await.contains(message));
    assert_eq!(
        browser.run("return document.images.length").await,
        json!(0),
        "Meta's text is never markup"
    );
    let view = wait_for_view(&p, &key, &error_id, "failed").await;
    assert_eq!(
        view["metaError"],
        json!({"message": message, "errorId": "524126", "sessionId": "f34b51dab5e0498c"})
    );

    // Coexistence: posted with mode coexistence, followed to the end.
    let phone = "240000000000012";
    let code = p.meta_phone(WABA, phone);
    p.meta
        .script_signup(SignupScript::coexistence(WABA, phone, BUSINESS, &code));
    let (coexist_id, coexist_state) = link(&p, &key).await;
    start_signup(&browser, &api, &coexist_state).await;
    let callback = {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let last = api.callbacks.lock().unwrap().last().cloned();
            if let Some(last) = last.filter(|c| c["state"] == json!(coexist_state)) {
                break last;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no coexistence callback"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    assert_eq!(callback["mode"], "coexistence");
    assert_eq!(callback["phoneNumberId"], phone);
    assert_eq!(callback["businessId"], BUSINESS);
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let state = browser.status_state().await;
        if state == "active" || state == "number-failed" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "coexistence never settled: {state}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let view = session_view(&p, &key, &coexist_id).await;
    assert_eq!(view["state"], "completed");

    // An expired link: a clear page, not JSON, and nothing for Meta.
    let issued_at = time::now() - ChronoDuration::hours(25);
    let issued = p.signer.issue(&account, issued_at);
    p.env
        .store
        .save_link(&SignupSession::new(
            issued.link_id.clone(),
            account.clone(),
            issued_at,
            issued.expires_at,
            None,
        ))
        .await
        .expect("saved");
    let sdk_loads = p.meta.sdk_requests().len();
    browser
        .open(&format!("{}/signup?state={}", api.base, issued.state))
        .await;
    let reason = browser
        .wait_for(
            "the expired page",
            "var r = document.getElementById('refusal'); return r ? r.getAttribute('data-reason') : ''",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(reason, "expired");
    assert_eq!(
        p.meta.sdk_requests().len(),
        sdk_loads,
        "no SDK on a refusal"
    );

    // Nothing Meta's side saw carried a state or the page's address.
    let requests = p.meta.sdk_requests();
    assert!(!requests.is_empty());
    for request in requests {
        assert!(
            request.referer.is_none(),
            "a referrer went to Meta: {request:?}"
        );
        for state in [&finish_state, &cancel_state, &error_state, &coexist_state] {
            assert!(!request.query.contains(state.as_str()), "{request:?}");
        }
    }
}

/// The link's view once the page's report arrived (it is sent without waiting).
async fn wait_for_view(p: &ProvisioningEnv, key: &str, id: &str, state: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let view = session_view(p, key, id).await;
        if view["state"] == state || tokio::time::Instant::now() > deadline {
            assert_eq!(view["state"], state, "{view}");
            return view;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits (bounded) until the page's status is one of `states`, and returns it.
async fn wait_for_any_state(browser: &Browser, states: &[&str], limit: Duration) -> String {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let state = browser.status_state().await;
        if states.contains(&state.as_str()) {
            return state;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the page never showed {states:?}; it shows {state}: {}",
            browser.status_text().await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn continue_href(browser: &Browser) -> String {
    browser
        .wait_for(
            "the continue link",
            "var a = document.getElementById('continue'); return a && !a.hidden ? a.href : ''",
            Duration::from_secs(10),
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn the_hosted_page_follows_a_waba_only_signup_and_shows_a_failed_reconnect_in_a_real_browser()
{
    let Some((chromium, driver)) = browser(
        "signup_page::the_hosted_page_follows_a_waba_only_signup_and_shows_a_failed_reconnect_in_a_real_browser",
    ) else {
        return;
    };
    let p = ProvisioningEnv::new().await;
    p.start();
    let (account, key) = p.env.account_with_key("acme").await;
    let api = serve(&p).await;
    let browser = Browser::start(chromium, driver).await;

    // FINISH_ONLY_WABA: no phone in Meta's message; the WABA's phones are listed and each is
    // followed to ACTIVE, then the user goes back with every number.
    let waba = "240000000000002";
    let phones = ["240000000000021", "240000000000022"];
    p.meta_phone(waba, phones[0]);
    let code = p.meta_phone(waba, phones[1]);
    // Listing takes a moment, so the page is seen saying what it waits for.
    p.meta.set_latency(
        Some(fake_meta::Route::ListPhoneNumbers),
        Duration::from_millis(800),
    );
    p.meta
        .script_signup(SignupScript::finish_only_waba(waba, BUSINESS, &code));
    let (waba_link, waba_state) = link(&p, &key).await;
    start_signup(&browser, &api, &waba_state).await;
    browser.wait_for_state("listing", SETTLE).await;
    assert!(
        browser.status_text().await.contains("Finding the numbers"),
        "{}",
        browser.status_text().await
    );
    browser.wait_for_state("active", SETTLE).await;
    // Read before the page leaves for the redirect URL (1.5 s after it ends).
    let text = browser.status_text().await;
    let href = continue_href(&browser).await;
    assert!(text.contains("(2)"), "{text}");
    let callback = api
        .callbacks
        .lock()
        .unwrap()
        .last()
        .cloned()
        .expect("posted");
    assert_eq!(
        callback,
        json!({"code": code, "wabaId": waba, "businessId": BUSINESS, "state": waba_state, "mode": "waba_only"}),
        "a WABA-only signup names no phone"
    );
    let view = session_view(&p, &key, &waba_link).await;
    assert_eq!(view["state"], "completed", "{view}");
    let numbers: Vec<String> = view["numberIds"]
        .as_array()
        .expect("numberIds")
        .iter()
        .map(|id| id.as_str().unwrap().to_string())
        .collect();
    assert_eq!(numbers.len(), 2);
    for number in &numbers {
        assert_eq!(number_settled(&p, &account, number).await, Status::Active);
    }
    assert_eq!(
        href,
        format!(
            "{REDIRECT}?numberId={}&numberId={}&status=ACTIVE",
            numbers[0], numbers[1]
        )
    );

    // A reconnect Meta refuses: the number stays ACTIVE with its old token, and the page says
    // the reconnect failed instead of "connected".
    let number = &numbers[0];
    let phone = p
        .env
        .store
        .get(&account, &NumberId::from(number.clone()))
        .await
        .expect("read")
        .expect("number")
        .phone_number_id;
    let code = p.meta.issue_code(&[waba]);
    p.meta.fail_next(
        fake_meta::Route::SubscribeApp,
        1,
        fake_meta::Fault::Error {
            http_status: 403,
            code: 200,
            subcode: None,
            is_transient: false,
            message: "(#200) Permissions error".into(),
        },
    );
    p.meta
        .script_signup(SignupScript::finish(waba, &phone, BUSINESS, &code));
    let (_, reconnect_state) = link(&p, &key).await;
    start_signup(&browser, &api, &reconnect_state).await;
    let shown = wait_for_any_state(&browser, &["reconnect-failed", "active"], SETTLE).await;
    let text = browser.status_text().await;
    let href = continue_href(&browser).await;
    assert_eq!(shown, "reconnect-failed", "{text}");
    assert!(text.contains("Permissions error"), "{text}");
    let stored = p
        .env
        .store
        .get(&account, &NumberId::from(number.clone()))
        .await
        .expect("read")
        .expect("number");
    assert_eq!(stored.status, Status::Active);
    assert!(stored.reconnect_failure.is_some());
    assert_eq!(
        href,
        format!("{REDIRECT}?numberId={number}&status=ACTIVE&reconnect=failed")
    );
}
