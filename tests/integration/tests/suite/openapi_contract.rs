//! `docs/openapi.yaml` against the implementation: the real API routes (and Meta's webhook
//! route) driven through the Lambda adapter against moto and the fake Meta, and every answer
//! checked against the document: its status is documented for that operation, its headers and
//! its body match that response's schema.

use std::sync::OnceLock;

use muchaw_shared::domain::event::EventEnvelope;
use muchaw_shared::domain::lifecycle::Command;
use muchaw_shared::domain::secrets::{AppSecret, Secret};
use muchaw_shared::domain::{
    AccountId, EventType, FailureReason, Number, QualityRating, Status, Step, time,
};
use muchaw_shared::meta_webhook::{self, MetaWebhook};
use muchaw_tests::provisioning::ProvisioningEnv;
use muchaw_tests::{
    ApiResponse, authorization_event, http_event, invoke_router, parse_response, sample_number,
};
use serde_json::{Value, json};

const WABA: &str = "230000000000001";

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

struct Contract {
    doc: Value,
}

fn contract() -> &'static Contract {
    static CONTRACT: OnceLock<Contract> = OnceLock::new();
    CONTRACT.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.yaml");
        let text = std::fs::read_to_string(path).expect("docs/openapi.yaml is readable");
        let doc: Value = serde_yaml::from_str(&text).expect("docs/openapi.yaml is valid YAML");
        Contract { doc }
    })
}

impl Contract {
    /// The target of a local `$ref` (`#/components/...`).
    fn target(&self, reference: &str) -> &Value {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("only local references are used: {reference}"));
        self.doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("{reference} resolves to nothing"))
    }

    /// A response or parameter object, following a `$ref` to `components` if it is one.
    fn resolve<'a>(&'a self, value: &'a Value) -> &'a Value {
        match value.get("$ref").and_then(Value::as_str) {
            Some(reference) => self.resolve(self.target(reference)),
            None => value,
        }
    }

    /// Every documented (METHOD, path) under `paths`.
    fn operations(&self) -> Vec<(String, String)> {
        let mut operations = Vec::new();
        for (path, item) in self.doc["paths"].as_object().expect("paths") {
            for method in METHODS {
                if item.get(method.to_ascii_lowercase()).is_some() {
                    operations.push((method.to_string(), path.clone()));
                }
            }
        }
        operations.sort();
        operations
    }

    fn operation(&self, method: &str, path: &str) -> &Value {
        self.doc["paths"]
            .get(path)
            .and_then(|item| item.get(method.to_ascii_lowercase()))
            .unwrap_or_else(|| panic!("{method} {path} is not in docs/openapi.yaml"))
    }

    /// Errors of `instance` against `schema`, whose `$ref`s point into the document.
    fn errors(&self, schema: &Value, instance: &Value) -> Vec<String> {
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": self.doc["components"],
            "allOf": [schema],
        });
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&root)
            .unwrap_or_else(|e| panic!("schema {schema} does not compile: {e}"));
        validator
            .iter_errors(instance)
            .map(|e| format!("{e} (at {})", e.instance_path()))
            .collect()
    }

    fn assert_valid(&self, schema: &Value, instance: &Value, context: &str) {
        let errors = self.errors(schema, instance);
        assert!(
            errors.is_empty(),
            "{context}: {instance} does not match {schema}:\n{}",
            errors.join("\n")
        );
    }

    /// The documented JSON request body schema of an operation.
    fn request_schema(&self, method: &str, path: &str) -> &Value {
        &self.operation(method, path)["requestBody"]["content"]["application/json"]["schema"]
    }

    /// A request the API accepts is one the document accepts.
    fn assert_request_documented(&self, method: &str, path: &str, body: &Value) {
        self.assert_valid(
            self.request_schema(method, path),
            body,
            &format!("request body of {method} {path}"),
        );
    }

    /// A request the API refuses with 400 for its shape is one the document refuses too.
    fn assert_request_refused(&self, method: &str, path: &str, body: &Value) {
        assert!(
            !self
                .errors(self.request_schema(method, path), body)
                .is_empty(),
            "docs/openapi.yaml accepts {body} for {method} {path}, which the API refuses"
        );
    }

    /// The response is documented for the operation, and matches it.
    fn check(&self, method: &str, path: &str, response: &ApiResponse) {
        let responses = &self.operation(method, path)["responses"];
        let status = response.status.to_string();
        let documented = responses
            .get(&status)
            .or_else(|| responses.get(format!("{}XX", status.chars().next().unwrap_or('0'))))
            .unwrap_or_else(|| {
                panic!(
                    "{method} {path} answered {status}, which docs/openapi.yaml does not \
                     document for it; body: {}",
                    response.body
                )
            });
        self.check_against(
            self.resolve(documented),
            response,
            &format!("{method} {path} {status}"),
        );
    }

    /// The response matches a response object (`components/responses/...` or inline).
    fn check_against(&self, definition: &Value, response: &ApiResponse, context: &str) {
        if let Some(headers) = definition.get("headers").and_then(Value::as_object) {
            for (name, header) in headers {
                let header = self.resolve(header);
                match response.headers.get(&name.to_ascii_lowercase()) {
                    Some(value) => self.assert_valid(
                        &header["schema"],
                        &json!(value),
                        &format!("{context}, header {name}"),
                    ),
                    None => assert!(
                        header["required"] != json!(true),
                        "{context}: required header {name} is missing"
                    ),
                }
            }
        }
        match definition.get("content").and_then(Value::as_object) {
            None => assert_eq!(
                response.body,
                Value::Null,
                "{context}: documented without a body"
            ),
            Some(content) => {
                let media_type = response
                    .headers
                    .get("content-type")
                    .map(|t| t.split(';').next().unwrap_or("").trim().to_string())
                    .unwrap_or_default();
                let entry = content.get(&media_type).unwrap_or_else(|| {
                    panic!(
                        "{context}: content type {media_type:?} is not documented; body: {}",
                        response.body
                    )
                });
                self.assert_valid(&entry["schema"], &response.body, context);
            }
        }
    }

    fn component_response(&self, name: &str) -> &Value {
        self.target(&format!("#/components/responses/{name}"))
    }
}

/// Invokes the API and checks the answer against the document; `path` is the documented
/// template the concrete `uri` is an instance of.
async fn call(
    p: &ProvisioningEnv,
    method: &str,
    path: &str,
    uri: &str,
    query: &str,
    key: Option<&str>,
    body: Option<&str>,
) -> ApiResponse {
    let response = p.invoke(http_event(method, uri, query, key, body)).await;
    contract().check(method, path, &response);
    response
}

/// `call` expecting one status.
#[allow(clippy::too_many_arguments)]
async fn expect(
    p: &ProvisioningEnv,
    status: u16,
    method: &str,
    path: &str,
    uri: &str,
    query: &str,
    key: Option<&str>,
    body: Option<&str>,
) -> ApiResponse {
    let response = call(p, method, path, uri, query, key, body).await;
    assert_eq!(
        response.status, status,
        "{method} {uri}?{query} {body:?}: {}",
        response.body
    );
    response
}

fn oversized() -> String {
    format!("{{\"x\": \"{}\"}}", "a".repeat(65 * 1024))
}

/// Meta's webhook function, as the stack configures it (ProvisioningEnv's app secret and
/// verify token).
async fn invoke_meta(p: &ProvisioningEnv, event: Value) -> ApiResponse {
    let router = p.env.template_routed(meta_webhook::routes(MetaWebhook {
        store: p.env.function_store(),
        queue: p.queue.clone(),
        secrets: muchaw_shared::secret_cache::SecretCache::fixed(
            muchaw_shared::adapters::secrets::AppSecrets {
                app_secret: AppSecret::new(p.meta.app_secret()),
                webhook_verify_token: Secret::new("verify-me"),
            },
        ),
    }));
    let raw = invoke_router(router, event).await;
    let mut response = parse_response(raw.clone());
    // Plain text stays text (a numeric challenge would otherwise read as JSON).
    if response
        .headers
        .get("content-type")
        .is_some_and(|t| t.starts_with("text/plain"))
    {
        response.body = raw["body"].clone();
    }
    response
}

async fn meta_post(p: &ProvisioningEnv, body: &str, signature: Option<String>) -> ApiResponse {
    let mut headers = json!({"host": "api.example.com", "content-type": "application/json"});
    if let Some(signature) = signature {
        headers["x-hub-signature-256"] = json!(signature);
    }
    let response = invoke_meta(
        p,
        authorization_event("POST", "/webhooks/meta", "", headers, Some(body)),
    )
    .await;
    contract().check("POST", "/webhooks/meta", &response);
    response
}

async fn meta_verify(p: &ProvisioningEnv, token: &str) -> ApiResponse {
    let query = format!("hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token={token}");
    let response = invoke_meta(
        p,
        authorization_event(
            "GET",
            "/webhooks/meta",
            &query,
            json!({"host": "api.example.com"}),
            None,
        ),
    )
    .await;
    contract().check("GET", "/webhooks/meta", &response);
    response
}

/// One number in each status, the optional extras filled in where they apply.
async fn seed_numbers(p: &ProvisioningEnv, account: &AccountId) -> Vec<Number> {
    let numbers: Vec<Number> = Status::ALL
        .iter()
        .enumerate()
        .map(|(i, status)| {
            let mut n = sample_number(account, *status, 10 + i as i64);
            match status {
                Status::Active => {
                    n.display_name = Some("Acme".into());
                    n.token_expires_at = Some(time::now() + chrono::Duration::days(60));
                }
                Status::Failed => {
                    n.failure_reason = Some(FailureReason {
                        step: "REGISTER_NUMBER".into(),
                        code: "meta_error".into(),
                        message: "Meta refused the registration".into(),
                        user_title: Some("Display name not approved".into()),
                        user_message: Some("Edit the display name in WhatsApp Manager.".into()),
                        details: Some("The display name was rejected.".into()),
                    });
                    n.quality_rating = None;
                }
                Status::Pending => {
                    n.provisioning_error = Some(FailureReason {
                        step: "REGISTER_NUMBER".into(),
                        code: "100/2388001".into(),
                        message: "(#100) Invalid parameter".into(),
                        user_message: Some("The display name is still being reviewed.".into()),
                        ..FailureReason::default()
                    });
                }
                _ => {}
            }
            n
        })
        .collect();
    p.env.store.import_numbers(&numbers).await.expect("import");
    numbers
}

fn with_status(numbers: &[Number], status: Status) -> String {
    numbers
        .iter()
        .find(|n| n.status == status)
        .map(|n| n.id.to_string())
        .expect("seeded")
}

#[test]
fn the_document_resolves_every_reference_and_compiles_every_schema() {
    let contract = contract();
    assert_eq!(contract.doc["openapi"], "3.1.0");
    fn visit(contract: &Contract, value: &Value, at: &str) {
        match value {
            Value::Object(map) => {
                if let Some(reference) = map.get("$ref").and_then(Value::as_str) {
                    contract.target(reference);
                }
                if let Some(schema) = map.get("schema") {
                    contract.errors(schema, &Value::Null);
                }
                for (key, child) in map {
                    visit(contract, child, &format!("{at}/{key}"));
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    visit(contract, child, &format!("{at}/{i}"));
                }
            }
            _ => {}
        }
    }
    visit(contract, &contract.doc, "");
    for (name, schema) in contract.doc["components"]["schemas"]
        .as_object()
        .expect("schemas")
    {
        assert!(
            !contract
                .errors(schema, &json!({"surely": "not"}))
                .is_empty()
                || name == "Error",
            "components/schemas/{name} accepts anything"
        );
    }
}

#[test]
fn the_document_uses_the_patterns_the_api_enforces() {
    use muchaw_shared::api::shape;
    let schemas = &contract().doc["components"]["schemas"];
    for (schema, pattern) in [
        ("MetaId", shape::META_ID),
        ("SignupCode", shape::SIGNUP_CODE),
        ("SignupState", shape::SIGNUP_STATE),
        ("RedirectUrl", shape::REDIRECT_URL),
        ("WebhookUrl", shape::WEBHOOK_URL),
    ] {
        assert_eq!(schemas[schema]["pattern"], json!(pattern), "{schema}");
    }
    assert_eq!(
        schemas["SignupState"]["maxLength"],
        json!(shape::MAX_STATE_LENGTH)
    );
    for schema in ["RedirectUrl", "WebhookUrl"] {
        assert_eq!(
            schemas[schema]["maxLength"],
            json!(shape::MAX_URL_LENGTH),
            "{schema}"
        );
    }
}

#[test]
fn every_api_operation_requires_the_key_except_the_signup_callback() {
    let contract = contract();
    let global = &contract.doc["security"];
    assert_eq!(global, &json!([{"apiKey": []}]));
    for (method, path) in contract.operations() {
        let operation = contract.operation(&method, &path);
        let security = operation.get("security").unwrap_or(global);
        let expected = match path.as_str() {
            "/api/signup/callback" => json!([{"apiKey": []}, {}]),
            p if p.starts_with("/api/") => json!([{"apiKey": []}]),
            _ => json!([]),
        };
        assert_eq!(security, &expected, "{method} {path}");
        if path.starts_with("/api/") {
            for status in ["401", "413", "500"] {
                assert!(
                    operation["responses"].get(status).is_some(),
                    "{method} {path} does not document {status}"
                );
            }
        }
    }
}

#[tokio::test]
async fn every_documented_route_is_served_and_any_other_is_api_gateways_404() {
    let p = ProvisioningEnv::new().await;
    let (_, key) = p.env.account_with_key("acme").await;
    let contract = contract();
    let paths: Vec<String> = contract.doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .cloned()
        .collect();
    for path in paths {
        let uri = path
            .replace("{id}", "doesnotexist")
            .replace("{deliveryId}", "dlv_1_doesnotexist")
            .replace(
                "/api/webhooks/doesnotexist",
                "/api/webhooks/whk_doesnotexist",
            );
        for method in METHODS {
            let body = matches!(method, "POST" | "PUT" | "PATCH").then_some("{}");
            let response = if path.starts_with("/api/") || path.starts_with("/signup") {
                p.invoke(http_event(method, &uri, "", Some(&key), body))
                    .await
            } else {
                invoke_meta(
                    &p,
                    authorization_event(method, &uri, "", json!({"host": "api.example.com"}), body),
                )
                .await
            };
            let documented = contract.doc["paths"][&path]
                .get(method.to_ascii_lowercase())
                .is_some();
            if documented {
                assert!(
                    response.body != json!({"message": "Not Found"}),
                    "documented {method} {path} is not served: {} {}",
                    response.status,
                    response.body
                );
                contract.check(method, &path, &response);
            } else {
                assert_eq!(
                    response.status, 404,
                    "undocumented {method} {path} is served: {}",
                    response.body
                );
                contract.check_against(
                    contract.component_response("GatewayNotFound"),
                    &response,
                    &format!("{method} {path}"),
                );
            }
        }
    }
    let unknown = p
        .invoke(http_event("GET", "/api/nothing-here", "", Some(&key), None))
        .await;
    assert_eq!(unknown.status, 404);
    contract.check_against(
        contract.component_response("GatewayNotFound"),
        &unknown,
        "GET /api/nothing-here",
    );
    let anonymous = p
        .invoke(http_event("PUT", "/api/numbers", "", None, None))
        .await;
    assert_eq!(
        anonymous.status, 404,
        "API Gateway answers before any authentication"
    );
    contract.check_against(
        contract.component_response("GatewayNotFound"),
        &anonymous,
        "PUT /api/numbers without a key",
    );
}

#[tokio::test]
async fn listing_numbers_answers_as_documented() {
    let p = ProvisioningEnv::new().await;
    let (account, key) = p.env.account_with_key("acme").await;
    let (other, _) = p.env.account_with_key("other").await;
    seed_numbers(&p, &account).await;
    seed_numbers(&p, &other).await;
    let key = Some(key.as_str());
    let list = |query: &'static str, status: u16| {
        let p = &p;
        async move {
            expect(
                p,
                status,
                "GET",
                "/api/numbers",
                "/api/numbers",
                query,
                key,
                None,
            )
            .await
        }
    };

    let all = list("", 200).await;
    assert_eq!(
        all.body["pagination"],
        json!({"total": 5, "limit": 20, "offset": 0, "nextCursor": null})
    );
    let page = list("status=ACTIVE&limit=1&offset=0", 200).await;
    assert_eq!(page.body["data"][0]["displayName"], "Acme");
    list("limit=100&offset=7&unknown=ignored", 200).await;
    for bad in [
        "status=active",
        "status=",
        "limit=0",
        "limit=101",
        "limit=abc",
        "offset=-1",
        "limit=1&limit=2",
    ] {
        list(bad, 400).await;
    }
}

#[tokio::test]
async fn getting_and_disconnecting_numbers_answer_as_documented() {
    let p = ProvisioningEnv::new().await;
    let (account, key) = p.env.account_with_key("acme").await;
    let (other, _) = p.env.account_with_key("other").await;
    let numbers = seed_numbers(&p, &account).await;
    let others = seed_numbers(&p, &other).await;
    let key = Some(key.as_str());
    let path = "/api/numbers/{id}";
    let uri = |id: &str| format!("/api/numbers/{id}");

    for status in Status::ALL {
        let id = with_status(&numbers, status);
        let got = expect(&p, 200, "GET", path, &uri(&id), "", key, None).await;
        assert_eq!(got.body["data"]["status"], status.as_str());
    }
    let pending = with_status(&numbers, Status::Pending);
    let got = expect(&p, 200, "GET", path, &uri(&pending), "", key, None).await;
    assert!(got.body["data"]["provisioningStep"].is_string());
    let failed = with_status(&numbers, Status::Failed);
    let got = expect(&p, 200, "GET", path, &uri(&failed), "", key, None).await;
    assert!(got.body["data"]["failureReason"].is_object());

    let foreign = with_status(&others, Status::Active);
    for id in ["doesnotexist", "NotAnId", foreign.as_str()] {
        expect(&p, 404, "GET", path, &uri(id), "", key, None).await;
        expect(&p, 404, "DELETE", path, &uri(id), "", key, None).await;
    }

    let active = with_status(&numbers, Status::Active);
    let gone = expect(&p, 200, "DELETE", path, &uri(&active), "", key, None).await;
    assert_eq!(gone.body["data"]["status"], "DISCONNECTED");
    expect(&p, 200, "DELETE", path, &uri(&active), "", key, None).await;
    expect(&p, 200, "DELETE", path, &uri(&pending), "", key, None).await;
}

#[tokio::test]
async fn disconnecting_a_failed_number_answers_as_documented() {
    let p = ProvisioningEnv::new().await;
    let (account, key) = p.env.account_with_key("acme").await;
    let numbers = seed_numbers(&p, &account).await;
    let failed = with_status(&numbers, Status::Failed);
    let gone = expect(
        &p,
        200,
        "DELETE",
        "/api/numbers/{id}",
        &format!("/api/numbers/{failed}"),
        "",
        Some(&key),
        None,
    )
    .await;
    assert_eq!(gone.body["data"]["status"], "DISCONNECTED");
}

#[tokio::test]
async fn retrying_numbers_answers_as_documented() {
    let p = ProvisioningEnv::new().await;
    let (account, key) = p.env.account_with_key("acme").await;
    let numbers = seed_numbers(&p, &account).await;
    let path = "/api/numbers/{id}/retry";
    let uri = |id: &str| format!("/api/numbers/{id}/retry");
    let key = Some(key.as_str());
    let failed = with_status(&numbers, Status::Failed);
    let retried = expect(&p, 202, "POST", path, &uri(&failed), "", key, None).await;
    assert_eq!(retried.body["data"]["status"], "PENDING");
    expect(&p, 200, "POST", path, &uri(&failed), "", key, None).await;
    // A failed code exchange: only a new signup helps.
    let mut unexchanged = sample_number(&account, Status::Failed, 30);
    unexchanged.failure_reason = Some(FailureReason {
        step: "EXCHANGE_TOKEN".into(),
        code: "100/36007".into(),
        message: "This authorization code has expired.".into(),
        ..FailureReason::default()
    });
    p.env
        .store
        .import_numbers(std::slice::from_ref(&unexchanged))
        .await
        .expect("import");
    let refused = expect(
        &p,
        409,
        "POST",
        path,
        &uri(unexchanged.id.as_str()),
        "",
        key,
        None,
    )
    .await;
    assert_eq!(refused.body["error"]["code"], "reauthorization_required");
    let active = with_status(&numbers, Status::Active);
    let conflict = expect(&p, 409, "POST", path, &uri(&active), "", key, None).await;
    assert_eq!(conflict.body["error"]["code"], "conflict");
    let pending = with_status(&numbers, Status::Pending);
    expect(&p, 200, "POST", path, &uri(&pending), "", key, None).await;
    expect(&p, 404, "POST", path, &uri("nosuchnumber"), "", key, None).await;
}

#[tokio::test]
async fn missing_and_bad_keys_get_the_documented_401_everywhere() {
    let p = ProvisioningEnv::new().await;
    let (_, key) = p.env.account_with_key("acme").await;
    let contract = contract();
    for (method, path) in contract.operations() {
        if !path.starts_with("/api/") {
            continue;
        }
        let uri = path
            .replace("{id}", "whk_doesnotexist")
            .replace("{deliveryId}", "dlv_1_doesnotexist");
        // The callback reads its body before it authenticates: give it a well-formed one.
        let callback =
            json!({"code": "AQBx", "wabaId": WABA, "phoneNumberId": "230000000000021"}).to_string();
        let body = match method.as_str() {
            "POST" if path == "/api/signup/callback" => Some(callback.as_str()),
            "POST" => Some("{}"),
            _ => None,
        };
        for bad in [None, Some("not-a-key"), Some(&format!("{key}x")[..])] {
            let response = expect(&p, 401, &method, &path, &uri, "", bad, body).await;
            assert_eq!(response.headers.get("www-authenticate").unwrap(), "Bearer");
        }
        let headers = json!({"host": "api.example.com", "authorization": format!("Basic {key}")});
        let response = p
            .invoke(authorization_event(&method, &uri, "", headers, body))
            .await;
        assert_eq!(response.status, 401, "{method} {path} with a Basic header");
        contract.check(&method, &path, &response);
    }
}

#[tokio::test]
async fn oversized_bodies_get_the_documented_413_everywhere() {
    let p = ProvisioningEnv::new().await;
    let (_, key) = p.env.account_with_key("acme").await;
    let big = oversized();
    for (method, path) in contract().operations() {
        if !path.starts_with("/api/") {
            continue;
        }
        let uri = path
            .replace("{id}", "whk_doesnotexist")
            .replace("{deliveryId}", "dlv_1_doesnotexist");
        expect(&p, 413, &method, &path, &uri, "", Some(&key), Some(&big)).await;
        expect(&p, 413, &method, &path, &uri, "", None, Some(&big)).await;
    }
}

#[tokio::test]
async fn an_account_over_its_rate_limit_gets_the_documented_429_everywhere_it_applies() {
    let p = ProvisioningEnv::new().await;
    let (_, key) = p.env.account_with_key("acme").await;
    // One request a minute: the first uses it up.
    let limits = muchaw_shared::api::ApiLimits {
        requests_per_minute: Some(1),
    };
    let router = || {
        let store = p.env.function_store();
        p.env.template_routed(muchaw_shared::api::finish(
            muchaw_shared::api::numbers_routes(store.clone(), p.env.queue()).merge(
                muchaw_shared::api::webhook_routes(
                    store.clone(),
                    muchaw_shared::webhooks::sender::Sender::new(
                        muchaw_shared::webhooks::url_policy::UrlPolicy {
                            allow_private: true,
                        },
                        std::time::Duration::from_secs(2),
                    )
                    .unwrap(),
                ),
            ),
            store,
            limits,
        ))
    };
    muchaw_tests::early_in_a_minute().await;
    let first = invoke_router(
        router(),
        http_event("GET", "/api/numbers", "", Some(&key), None),
    )
    .await;
    assert_eq!(parse_response(first).status, 200);
    for (method, path) in contract().operations() {
        let documented = contract().operation(&method, &path)["responses"]
            .get("429")
            .is_some();
        let served = ["/api/numbers", "/api/events", "/api/webhooks"]
            .iter()
            .any(|prefix| path.starts_with(prefix));
        if !documented || !served {
            continue;
        }
        let uri = path
            .replace("{id}", "whk_doesnotexist")
            .replace("{deliveryId}", "dlv_1_doesnotexist");
        let body = (method == "POST").then_some(r#"{"url": "https://hooks.example.com/x"}"#);
        let response = parse_response(
            invoke_router(router(), http_event(&method, &uri, "", Some(&key), body)).await,
        );
        assert_eq!(response.status, 429, "{method} {uri}: {:?}", response.body);
        contract().check(&method, &path, &response);
    }
}

#[tokio::test]
async fn signup_links_answer_as_documented() {
    let p = ProvisioningEnv::new().await;
    let (_, key) = p.env.account_with_key("acme").await;
    let contract = contract();
    let path = "/api/signup-links";
    let key = Some(key.as_str());

    expect(&p, 201, "POST", path, path, "", key, None).await;
    let body = json!({"redirectUrl": "https://app.example.com/done"});
    contract.assert_request_documented("POST", path, &body);
    let link = expect(
        &p,
        201,
        "POST",
        path,
        path,
        "",
        key,
        Some(&body.to_string()),
    )
    .await;
    assert!(
        link.body["data"]["url"]
            .as_str()
            .unwrap()
            .contains("redirect_uri=")
    );
    for bad in [
        json!({"redirectUrl": "http://app.example.com/done"}),
        json!({"redirectUrl": ""}),
        json!({"redirectUrl": "https://"}),
        json!({"redirectUrl": "https://[::1]/done"}),
        json!({"redirectUrl": "https://app.example.com/a b"}),
        json!({"redirectUrl": 7}),
        json!({"other": true}),
    ] {
        contract.assert_request_refused("POST", path, &bad);
        expect(&p, 400, "POST", path, path, "", key, Some(&bad.to_string())).await;
    }
    expect(&p, 400, "POST", path, path, "", key, Some("{not json")).await;
}

#[tokio::test]
async fn the_signup_callback_answers_as_documented() {
    let p = ProvisioningEnv::new().await;
    let (_, key) = p.env.account_with_key("acme").await;
    let (_, other_key) = p.env.account_with_key("other").await;
    let contract = contract();
    let path = "/api/signup/callback";
    let post = |key: Option<&str>, body: &Value, status: u16| {
        let p = &p;
        let key = key.map(str::to_string);
        let body = body.to_string();
        async move {
            expect(
                p,
                status,
                "POST",
                path,
                path,
                "",
                key.as_deref(),
                Some(&body),
            )
            .await
        }
    };

    let phone = "230000000000011";
    let code = p.meta_phone(WABA, phone);
    let body = json!({"code": code, "wabaId": WABA, "phoneNumberId": phone});
    contract.assert_request_documented("POST", path, &body);
    let created = post(Some(&key), &body, 202).await;
    assert_eq!(created.body["data"]["status"], "PENDING");
    let again = post(Some(&key), &body, 200).await;
    assert_eq!(again.body["data"]["id"], created.body["data"]["id"]);
    // Another account's signup of the phone is answered as any new one's (ids not confirmed).
    let elsewhere = post(Some(&other_key), &body, 202).await;
    assert_eq!(elsewhere.body["data"]["status"], "PENDING");

    for bad in [
        json!({"code": "AQB", "wabaId": "not-digits", "phoneNumberId": phone}),
        json!({"code": "AQB", "wabaId": WABA}),
        json!({"code": "AQB", "wabaId": WABA, "phoneNumberId": phone, "extra": 1}),
        json!({"code": 5, "wabaId": WABA, "phoneNumberId": phone}),
        json!({"code": "", "wabaId": WABA, "phoneNumberId": phone}),
        json!({"code": "\t", "wabaId": WABA, "phoneNumberId": phone}),
        json!({"code": "\u{1}", "wabaId": WABA, "phoneNumberId": phone}),
        json!({"code": " AQB", "wabaId": WABA, "phoneNumberId": phone}),
        json!({"code": "AQ B", "wabaId": WABA, "phoneNumberId": phone}),
        json!({"code": "AQBé", "wabaId": WABA, "phoneNumberId": phone}),
        json!({"code": "a".repeat(2049), "wabaId": WABA, "phoneNumberId": phone}),
        json!({"code": "AQB", "wabaId": "", "phoneNumberId": phone}),
        json!({"code": "AQB", "wabaId": "1".repeat(33), "phoneNumberId": phone}),
        json!({"code": "AQB", "wabaId": WABA, "phoneNumberId": phone, "state": "garbage"}),
        json!({"code": "AQB", "wabaId": WABA, "phoneNumberId": phone, "state": "v1.a=.b"}),
    ] {
        contract.assert_request_refused("POST", path, &bad);
        post(Some(&key), &bad, 400).await;
    }
    expect(
        &p,
        400,
        "POST",
        path,
        path,
        "",
        Some(&key),
        Some("{not json"),
    )
    .await;

    // Without a key: a signup link's state, once.
    let link = expect(
        &p,
        201,
        "POST",
        "/api/signup-links",
        "/api/signup-links",
        "",
        Some(&key),
        None,
    )
    .await;
    let state = link.body["data"]["state"].as_str().unwrap().to_string();
    let phone = "230000000000012";
    let code = p.meta_phone(WABA, phone);
    let body = json!({"code": code, "wabaId": WABA, "phoneNumberId": phone, "state": state});
    contract.assert_request_documented("POST", path, &body);
    post(None, &body, 202).await;
    let reused =
        json!({"code": "AQBx", "wabaId": WABA, "phoneNumberId": "230000000000013", "state": state});
    post(None, &reused, 401).await;
    let forged = json!({"code": "AQBx", "wabaId": WABA, "phoneNumberId": "230000000000013", "state": "v1.forged.sig"});
    post(None, &forged, 401).await;
    let anonymous = json!({"code": "AQBx", "wabaId": WABA, "phoneNumberId": "230000000000013"});
    post(None, &anonymous, 401).await;
}

#[tokio::test]
async fn a_waba_only_signup_answers_as_documented() {
    let p = ProvisioningEnv::new().await;
    let (account, key) = p.env.account_with_key("acme").await;
    let contract = contract();
    let path = "/api/signup/callback";
    let waba = "100000000000301";
    let phone = "230000000000031";
    let code = p.meta_phone(waba, phone);
    let links = "/api/signup-links";
    let link = expect(&p, 201, "POST", links, links, "", Some(&key), None).await;
    let state = state_of(&link);
    let link_id = link.body["data"]["id"].as_str().unwrap().to_string();

    // Meta's FINISH_ONLY_WABA: a WABA, no phone.
    let body = json!({"code": code, "wabaId": waba, "mode": "waba_only", "state": state});
    contract.assert_request_documented("POST", path, &body);
    let started = expect(
        &p,
        202,
        "POST",
        path,
        path,
        "",
        None,
        Some(&body.to_string()),
    )
    .await;
    assert_eq!(started.body["data"]["state"], "pending");
    let id = started.body["data"]["id"].as_str().unwrap().to_string();

    for bad in [
        json!({"code": "AQB", "wabaId": waba, "mode": "waba_only", "phoneNumberId": phone}),
        json!({"code": "AQB", "wabaId": waba, "mode": "coexistence"}),
        json!({"code": "AQB", "wabaId": waba, "mode": "cloud_api"}),
        json!({"code": "AQB", "wabaId": waba, "mode": "only_waba"}),
    ] {
        contract.assert_request_refused("POST", path, &bad);
        expect(
            &p,
            400,
            "POST",
            path,
            path,
            "",
            Some(&key),
            Some(&bad.to_string()),
        )
        .await;
    }

    let status = "/signup/status";
    let connecting = expect(
        &p,
        200,
        "GET",
        status,
        status,
        &query_of(&state),
        None,
        None,
    )
    .await;
    assert_eq!(connecting.body["data"]["link"], "connecting");

    let signup = p
        .waba_settled(&account, &id, std::time::Duration::from_secs(60))
        .await;
    assert!(signup.outcome.is_some());
    let one = "/api/signup-links/{id}";
    let uri = format!("/api/signup-links/{link_id}");
    let read = expect(&p, 200, "GET", one, &uri, "", Some(&key), None).await;
    assert_eq!(read.body["data"]["state"], "completed");
    let listed = expect(&p, 200, "GET", links, links, "", Some(&key), None).await;
    assert_eq!(listed.body["data"][0]["wabaSignupId"], id.as_str());
    let done = expect(
        &p,
        200,
        "GET",
        status,
        status,
        &query_of(&state),
        None,
        None,
    )
    .await;
    assert_eq!(done.body["data"]["wabaSignup"]["state"], "completed");
    assert_eq!(
        done.body["data"]["numbers"].as_array().map(Vec::len),
        Some(1)
    );
}

#[tokio::test]
async fn webhook_endpoints_answer_as_documented() {
    let p = ProvisioningEnv::new().await;
    let (_, key) = p.env.account_with_key("acme").await;
    let contract = contract();
    let path = "/api/webhooks";
    let key = Some(key.as_str());
    let create = |body: &Value, status: u16| {
        let p = &p;
        let body = body.to_string();
        async move { expect(p, status, "POST", path, path, "", key, Some(&body)).await }
    };

    // This stack allows private targets (its receivers are on loopback), which the document,
    // describing production, does not: the same request shape with a public https URL is what
    // the document accepts.
    let every = json!({"url": "http://127.0.0.1:9/hooks"});
    contract.assert_request_refused("POST", path, &every);
    contract.assert_request_documented(
        "POST",
        path,
        &json!({"url": "https://hooks.example.com/a"}),
    );
    let created = create(&every, 201).await;
    let filtered = json!({"url": "http://127.0.0.1:9/other", "events": ["number.banned", "number.activated", "number.banned"]});
    contract.assert_request_documented(
        "POST",
        path,
        &json!({"url": "https://hooks.example.com/b", "events": filtered["events"]}),
    );
    create(&filtered, 201).await;
    let listed = expect(&p, 200, "GET", path, path, "", key, None).await;
    assert_eq!(listed.body["data"].as_array().unwrap().len(), 2);
    // An endpoint created without a filter lists every subscribable type, in the document's order.
    let documented = contract
        .doc
        .pointer("/components/schemas/SubscribableEventType/enum")
        .expect("SubscribableEventType lists the types");
    let unfiltered = listed.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == created.body["data"]["id"])
        .expect("the unfiltered endpoint is listed");
    assert_eq!(&unfiltered["events"], documented);

    for bad in [
        json!({"url": "http://127.0.0.1:9/hooks", "events": []}),
        json!({"url": "http://127.0.0.1:9/hooks", "events": ["number.exploded"]}),
        json!({"events": ["number.banned"]}),
        json!({"url": "http://127.0.0.1:9/hooks", "secret": "mine"}),
    ] {
        contract.assert_request_refused("POST", path, &bad);
        create(&bad, 400).await;
    }
    expect(&p, 400, "POST", path, path, "", key, Some("{not json")).await;

    let id = created.body["data"]["id"].as_str().unwrap();
    let one = "/api/webhooks/{id}";
    let uri = format!("/api/webhooks/{id}");
    expect(&p, 204, "DELETE", one, &uri, "", key, None).await;
    expect(&p, 404, "DELETE", one, &uri, "", key, None).await;
    expect(&p, 404, "DELETE", one, "/api/webhooks/nope", "", key, None).await;

    p.strict_webhook_urls();
    create(&every, 400).await;
    for bad in [
        "",
        "https://",
        "https://localhost/x",
        "https://10.0.0.1/x",
        "https://93.184.215.14/x",
        "https://[2606:4700::1111]/x",
        "https://user:pass@hooks.example.com/x",
        "https://hooks.example.com:70000/x",
        "https://hooks.example.com/a b",
    ] {
        let body = json!({ "url": bad });
        contract.assert_request_refused("POST", path, &body);
        create(&body, 400).await;
    }
}

#[tokio::test]
async fn one_webhook_endpoint_too_many_is_a_documented_conflict() {
    let p = ProvisioningEnv::new().await;
    let (_, key) = p.env.account_with_key("acme").await;
    let path = "/api/webhooks";
    for i in 0..muchaw_shared::webhooks::MAX_ENDPOINTS_PER_ACCOUNT {
        let body = json!({"url": format!("http://127.0.0.1:9/hooks/{i}")}).to_string();
        expect(&p, 201, "POST", path, path, "", Some(&key), Some(&body)).await;
    }
    let body = json!({"url": "http://127.0.0.1:9/hooks/last"}).to_string();
    expect(&p, 409, "POST", path, path, "", Some(&key), Some(&body)).await;
}

#[tokio::test]
async fn meta_webhooks_answer_as_documented() {
    let p = ProvisioningEnv::new().await;

    let verified = meta_verify(&p, "verify-me").await;
    assert_eq!(verified.status, 200);
    assert_eq!(verified.body, "1158201444");
    assert_eq!(meta_verify(&p, "wrong").await.status, 403);

    let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "239999999999999",
        "time": 1795600000, "changes": [{"field": "account_update",
        "value": {"event": "DISABLED_UPDATE", "ban_info": {"waba_ban_state": "DISABLE",
        "waba_ban_date": "2026-11-25"}}}]}]})
    .to_string();
    let signed = |body: &str| meta_webhook::sign(p.meta.app_secret(), body.as_bytes());
    assert_eq!(meta_post(&p, &body, Some(signed(&body))).await.status, 200);
    assert_eq!(meta_post(&p, &body, None).await.status, 401);
    let wrong = meta_webhook::sign("not-the-app-secret", body.as_bytes());
    assert_eq!(meta_post(&p, &body, Some(wrong)).await.status, 401);
    let malformed = "{not json";
    assert_eq!(
        meta_post(&p, malformed, Some(signed(malformed)))
            .await
            .status,
        400
    );
}

#[test]
fn customer_events_match_the_documented_webhook_payload() {
    let contract = contract();
    let hook = &contract.doc["webhooks"]["numberEvent"]["post"];
    let headers: Vec<&str> = hook["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        headers,
        ["webhook-id", "webhook-timestamp", "webhook-signature"]
    );
    let schema = &hook["requestBody"]["content"]["application/json"]["schema"];
    let account = AccountId::from("acc_test".to_string());
    let mut events = Vec::new();
    for status in Status::ALL {
        let mut number = sample_number(&account, status, 5);
        number.display_name = Some("Acme".into());
        let event_type = match status {
            Status::Pending | Status::Active => EventType::NumberActivated,
            Status::Failed => EventType::NumberFailed,
            Status::Disconnected => EventType::NumberDisconnected,
            Status::Banned => EventType::NumberBanned,
        };
        events.push(EventEnvelope::new(event_type, &number, time::now()));
    }
    let number = sample_number(&account, Status::Active, 5);
    events.push(EventEnvelope::quality_updated(
        &number,
        Some(QualityRating::Yellow),
        Some("TIER_250".into()),
        time::now(),
    ));
    events.push(EventEnvelope::quality_updated(
        &number,
        None,
        None,
        time::now(),
    ));
    for event_type in [
        EventType::NumberTokenExpiring,
        EventType::NumberTokenInvalid,
        EventType::NumberHealthChanged,
        EventType::NumberRestricted,
    ] {
        events.push(EventEnvelope::new(event_type, &number, time::now()));
    }
    events.push(EventEnvelope::display_name_updated(
        &number,
        Some(muchaw_shared::domain::NameDecision {
            decision: "REJECTED".into(),
            requested_verified_name: "Best Bank".into(),
            rejection_reason: Some("NAME_NOT_ALLOWED".into()),
        }),
        time::now(),
    ));
    let mut meta_view = sample_number(&account, Status::Disconnected, 5);
    meta_view.disconnected_by = Some(muchaw_shared::domain::lifecycle::DisconnectedBy::Meta);
    meta_view.restrictions = vec![muchaw_shared::domain::Restriction {
        kind: "ACCOUNT_OFFBOARDED".into(),
        expires_at: None,
    }];
    meta_view.onboarding = muchaw_shared::domain::Onboarding::Coexistence;
    events.push(EventEnvelope::new(
        EventType::NumberDisconnected,
        &meta_view,
        time::now(),
    ));
    // A reconnect in progress, finished, and abandoned with Meta's reason.
    let mut reconnecting = sample_number(&account, Status::Banned, 5);
    reconnecting.reconnect = Some(muchaw_shared::domain::Reconnect {
        id: "rcn_test".into(),
        step: muchaw_shared::domain::Step::SubscribeWaba,
        started_at: time::now(),
        last_error: Some(FailureReason {
            step: "SUBSCRIBE_WABA".into(),
            code: "2".into(),
            message: "Service temporarily unavailable".into(),
            ..FailureReason::default()
        }),
    });
    events.push(EventEnvelope::new(
        EventType::NumberQualityUpdated,
        &reconnecting,
        time::now(),
    ));
    let mut reconnected = sample_number(&account, Status::Active, 5);
    reconnected.reconnected_at = Some(time::now());
    events.push(EventEnvelope::new(
        EventType::NumberReconnected,
        &reconnected,
        time::now(),
    ));
    let mut abandoned = sample_number(&account, Status::Active, 5);
    abandoned.reconnect_failure = Some(FailureReason {
        step: "EXCHANGE_TOKEN".into(),
        code: "100/36009".into(),
        message: "This authorization code has been used.".into(),
        ..FailureReason::default()
    });
    events.push(EventEnvelope::new(
        EventType::NumberReconnectFailed,
        &abandoned,
        time::now(),
    ));
    let expiring = EventEnvelope::new(EventType::NumberTokenExpiring, &number, time::now());
    assert!(
        expiring.data["remedy"]
            .as_str()
            .is_some_and(|r| r.contains("signup link")),
        "number.token_expiring names its remedy"
    );
    for event in events {
        let body = event.customer_body();
        contract.assert_valid(schema, &body, "customer event");
    }
    let mut extra =
        EventEnvelope::new(EventType::NumberBanned, &number, time::now()).customer_body();
    extra["accountId"] = json!("acc_test");
    assert!(
        !contract.errors(schema, &extra).is_empty(),
        "the event schema is strict"
    );
}

/// A link's state as the page's routes and the page itself see it.
fn state_of(link: &ApiResponse) -> String {
    link.body["data"]["state"]
        .as_str()
        .expect("state")
        .to_string()
}

fn query_of(state: &str) -> String {
    // States are base64url and dots: nothing to escape.
    assert!(
        state
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    );
    format!("state={state}")
}

#[tokio::test]
async fn signup_sessions_and_the_hosted_page_answer_as_documented() {
    let p = ProvisioningEnv::new().await;
    let (_, key) = p.env.account_with_key("acme").await;
    let (_, other_key) = p.env.account_with_key("other").await;
    let key = Some(key.as_str());
    let links = "/api/signup-links";
    let one = "/api/signup-links/{id}";
    let body = json!({"redirectUrl": "https://app.example.com/done"}).to_string();
    let created = expect(&p, 201, "POST", links, links, "", key, Some(&body)).await;
    let id = created.body["data"]["id"].as_str().unwrap().to_string();
    let uri = format!("/api/signup-links/{id}");
    let state = state_of(&created);

    let got = expect(&p, 200, "GET", one, &uri, "", key, None).await;
    assert_eq!(got.body["data"]["state"], "unused");
    assert_eq!(
        got.body["data"]["redirectUrl"],
        "https://app.example.com/done"
    );

    // The page, in each language, with its headers.
    for (language, lang) in [("pt-BR,pt;q=0.9", "pt"), ("es", "es"), ("fr", "en")] {
        let mut event = http_event("GET", "/signup", &query_of(&state), None, None);
        event["headers"]["accept-language"] = json!(language);
        let page = p.invoke(event).await;
        contract().check("GET", "/signup", &page);
        assert_eq!(page.status, 200);
        assert_eq!(page.headers["content-language"], lang);
        let csp = &page.headers["content-security-policy"];
        assert!(csp.contains("script-src 'nonce-"), "{csp}");
        assert!(csp.contains(&p.meta.base_url()), "{csp}");
        let html = page.body.as_str().unwrap();
        assert!(html.contains(fake_meta::SIGNUP_CONFIG_ID));
    }
    let status = "/signup/status";
    let seen = expect(
        &p,
        200,
        "GET",
        status,
        status,
        &query_of(&state),
        None,
        None,
    )
    .await;
    assert_eq!(seen.body["data"], json!({"link": "unused"}));

    let events = "/signup/events";
    let report = |body: Value, code: u16| {
        let p = &p;
        async move {
            contract().assert_request_documented("POST", "/signup/events", &body);
            expect(
                p,
                code,
                "POST",
                events,
                events,
                "",
                None,
                Some(&body.to_string()),
            )
            .await
        }
    };
    report(json!({"state": state, "event": "opened"}), 204).await;
    let got = expect(&p, 200, "GET", one, &uri, "", key, None).await;
    assert_eq!(got.body["data"]["state"], "opened");
    assert!(got.body["data"]["openedAt"].is_string());
    report(
        json!({"state": state, "event": "cancelled", "currentStep": "WABA_PHONE_VERIFICATION"}),
        204,
    )
    .await;
    let got = expect(&p, 200, "GET", one, &uri, "", key, None).await;
    assert_eq!(got.body["data"]["state"], "cancelled");
    assert_eq!(
        got.body["data"]["cancelledAtStep"],
        "WABA_PHONE_VERIFICATION"
    );
    report(
        json!({"state": state, "event": "failed", "errorMessage": "<b>Phone taken</b>", "errorId": "524126", "sessionId": "f34b51dab5e0498"}),
        204,
    )
    .await;
    let got = expect(&p, 200, "GET", one, &uri, "", key, None).await;
    assert_eq!(got.body["data"]["state"], "failed");
    assert_eq!(
        got.body["data"]["metaError"],
        json!({"message": "<b>Phone taken</b>", "errorId": "524126", "sessionId": "f34b51dab5e0498"})
    );

    // Bad input changes nothing.
    let before = p.env.table_snapshot().await;
    for bad in [
        json!({"state": state, "event": "finished"}),
        json!({"state": state, "event": "failed"}),
        json!({"state": state, "event": "failed", "errorMessage": "x".repeat(501)}),
        json!({"state": state, "event": "opened", "extra": 1}),
        json!({"event": "opened"}),
    ] {
        contract().assert_request_refused("POST", events, &bad);
        report_raw(&p, &bad.to_string(), 400).await;
    }
    let forged = format!("{state}x");
    report_raw(
        &p,
        &json!({"state": forged, "event": "opened"}).to_string(),
        401,
    )
    .await;
    expect(&p, 401, "GET", status, status, "state=garbage", None, None).await;
    expect(&p, 401, "GET", status, status, "", None, None).await;
    for query in [
        "state=garbage".to_string(),
        String::new(),
        query_of(&forged),
    ] {
        let page = expect(&p, 400, "GET", "/signup", "/signup", &query, None, None).await;
        assert!(
            page.body
                .as_str()
                .unwrap()
                .contains("data-reason=\"invalid\"")
        );
    }
    let other = Some(other_key.as_str());
    expect(&p, 404, "GET", one, &uri, "", other, None).await;
    expect(&p, 404, "DELETE", one, &uri, "", other, None).await;
    for unknown in ["lnk_doesnotexist", "NotALink", "whk_x"] {
        let uri = format!("/api/signup-links/{unknown}");
        expect(&p, 404, "GET", one, &uri, "", key, None).await;
        expect(&p, 404, "DELETE", one, &uri, "", key, None).await;
    }
    for bad in ["limit=0", "limit=101", "cursor=%21%21", "limit=1&limit=2"] {
        expect(&p, 400, "GET", links, links, bad, key, None).await;
    }
    assert_eq!(
        p.env.table_snapshot().await,
        before,
        "bad input changed nothing"
    );

    // The list, a page at a time.
    expect(&p, 201, "POST", links, links, "", key, None).await;
    expect(&p, 201, "POST", links, links, "", other, None).await;
    let first = expect(&p, 200, "GET", links, links, "limit=1", key, None).await;
    assert_eq!(first.body["data"].as_array().unwrap().len(), 1);
    let cursor = first.body["pagination"]["nextCursor"].as_str().unwrap();
    let second = expect(
        &p,
        200,
        "GET",
        links,
        links,
        &format!("limit=1&cursor={cursor}"),
        key,
        None,
    )
    .await;
    assert_eq!(second.body["data"][0]["id"], id.as_str());
    let all = expect(&p, 200, "GET", links, links, "", key, None).await;
    assert_eq!(
        all.body["data"].as_array().unwrap().len(),
        2,
        "only this account's"
    );
    assert_eq!(all.body["pagination"]["nextCursor"], Value::Null);

    // Revoked: refused by the page, its routes and the callback.
    let revoked = expect(&p, 200, "DELETE", one, &uri, "", key, None).await;
    assert_eq!(revoked.body["data"]["state"], "revoked");
    expect(&p, 200, "DELETE", one, &uri, "", key, None).await;
    let page = expect(
        &p,
        410,
        "GET",
        "/signup",
        "/signup",
        &query_of(&state),
        None,
        None,
    )
    .await;
    assert!(
        page.body
            .as_str()
            .unwrap()
            .contains("data-reason=\"revoked\"")
    );
    report(json!({"state": state, "event": "opened"}), 409).await;
    let phone = "230000000000031";
    let code = p.meta_phone(WABA, phone);
    let callback = json!({"code": code, "wabaId": WABA, "phoneNumberId": phone, "state": state});
    let path = "/api/signup/callback";
    expect(
        &p,
        401,
        "POST",
        path,
        path,
        "",
        None,
        Some(&callback.to_string()),
    )
    .await;

    // Used: the link shows its number; revoking it is a conflict; the page says it was used.
    let used = expect(&p, 201, "POST", links, links, "", key, None).await;
    let used_state = state_of(&used);
    let used_uri = format!(
        "/api/signup-links/{}",
        used.body["data"]["id"].as_str().unwrap()
    );
    let callback = json!({"code": code, "wabaId": WABA, "phoneNumberId": phone, "state": used_state, "businessId": "555", "mode": "cloud_api"});
    contract().assert_request_documented("POST", path, &callback);
    let number = expect(
        &p,
        202,
        "POST",
        path,
        path,
        "",
        None,
        Some(&callback.to_string()),
    )
    .await;
    let got = expect(&p, 200, "GET", one, &used_uri, "", key, None).await;
    assert_eq!(got.body["data"]["state"], "completed");
    assert_eq!(got.body["data"]["numberId"], number.body["data"]["id"]);
    expect(&p, 409, "DELETE", one, &used_uri, "", key, None).await;
    let page = expect(
        &p,
        410,
        "GET",
        "/signup",
        "/signup",
        &query_of(&used_state),
        None,
        None,
    )
    .await;
    assert!(page.body.as_str().unwrap().contains("data-reason=\"used\""));
    let seen = expect(
        &p,
        200,
        "GET",
        status,
        status,
        &query_of(&used_state),
        None,
        None,
    )
    .await;
    assert_eq!(seen.body["data"]["link"], "completed");
    assert_eq!(seen.body["data"]["numberId"], number.body["data"]["id"]);
    assert_eq!(seen.body["data"]["status"], "PENDING");
    for bad_mode in [json!("both"), json!(1)] {
        let mut body = callback.clone();
        body["mode"] = bad_mode;
        contract().assert_request_refused("POST", path, &body);
    }
}

async fn report_raw(p: &ProvisioningEnv, body: &str, status: u16) -> ApiResponse {
    let events = "/signup/events";
    expect(p, status, "POST", events, events, "", None, Some(body)).await
}

/// A receiver on loopback answering every delivery with 200; its URL.
async fn accepting_receiver() -> String {
    let app = axum::Router::new().route("/hooks", axum::routing::post(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/hooks")
}

#[tokio::test]
async fn number_histories_and_events_answer_as_documented() {
    let p = ProvisioningEnv::new().await;
    let (account, key) = p.env.account_with_key("acme").await;
    let key = Some(key.as_str());
    let number = sample_number(&account, Status::Pending, 5);
    p.env
        .store
        .import_numbers(std::slice::from_ref(&number))
        .await
        .unwrap();
    let retried = Command::StepRetried {
        step: number.provisioning_step.unwrap_or(Step::FIRST),
        reason: FailureReason {
            step: number
                .provisioning_step
                .unwrap_or(Step::FIRST)
                .as_str()
                .into(),
            code: "131000".into(),
            message: "Something went wrong".into(),
            user_message: Some("Try again later.".into()),
            ..FailureReason::default()
        },
        attempt: 2,
    };
    let retried = p.env.apply(&number, retried).await;
    let active = p.env.change_status(retried.number(), Status::Active).await;
    p.env.change_status(active.number(), Status::Banned).await;
    let path = "/api/numbers/{id}/events";
    let uri = format!("/api/numbers/{}/events", number.id);
    let page = expect(&p, 200, "GET", path, &uri, "limit=1", key, None).await;
    assert_eq!(page.body["data"][0]["type"], "number.banned");
    let all = expect(&p, 200, "GET", path, &uri, "", key, None).await;
    let step_retried = &all.body["data"][2];
    assert_eq!(step_retried["type"], "number.step_retried");
    assert_eq!(step_retried["attempt"], 2);
    assert_eq!(step_retried["reason"]["userMessage"], "Try again later.");
    let cursor = page.body["pagination"]["nextCursor"].as_str().unwrap();
    let rest = expect(
        &p,
        200,
        "GET",
        path,
        &uri,
        &format!("cursor={cursor}"),
        key,
        None,
    )
    .await;
    assert_eq!(rest.body["data"][0]["type"], "number.activated");
    for bad in ["cursor=1.lnk_x", "cursor=", "limit=500"] {
        expect(&p, 400, "GET", path, &uri, bad, key, None).await;
    }
    expect(
        &p,
        404,
        "GET",
        path,
        "/api/numbers/nosuch/events",
        "",
        key,
        None,
    )
    .await;
    let (_, other) = p.env.account_with_key("other").await;
    expect(&p, 404, "GET", path, &uri, "", Some(&other), None).await;

    let event_id = rest.body["data"][0]["id"].as_str().unwrap();
    let one = "/api/events/{id}";
    let event = expect(
        &p,
        200,
        "GET",
        one,
        &format!("/api/events/{event_id}"),
        "",
        key,
        None,
    )
    .await;
    assert_eq!(event.body["data"]["data"]["id"], number.id.as_str());
    expect(
        &p,
        404,
        "GET",
        one,
        &format!("/api/events/{event_id}"),
        "",
        Some(&other),
        None,
    )
    .await;
    expect(&p, 404, "GET", one, "/api/events/evt_nosuch", "", key, None).await;
}

#[tokio::test]
async fn operating_webhook_endpoints_answers_as_documented() {
    let p = ProvisioningEnv::new().await;
    let (account, key) = p.env.account_with_key("acme").await;
    let (_, other) = p.env.account_with_key("other").await;
    let key = Some(key.as_str());
    let url = accepting_receiver().await;
    let body = json!({ "url": url }).to_string();
    let created = expect(
        &p,
        201,
        "POST",
        "/api/webhooks",
        "/api/webhooks",
        "",
        key,
        Some(&body),
    )
    .await;
    let id = created.body["data"]["id"].as_str().unwrap().to_string();

    let one = "/api/webhooks/{id}";
    let uri = format!("/api/webhooks/{id}");
    let change = json!({"events": ["number.activated", "webhook.disabled"]});
    contract().assert_request_documented("PATCH", one, &change);
    expect(
        &p,
        200,
        "PATCH",
        one,
        &uri,
        "",
        key,
        Some(&change.to_string()),
    )
    .await;
    for bad in [
        json!({}),
        json!({"events": ["webhook.test"]}),
        json!({"enabled": 1}),
        json!({"secret": "x"}),
    ] {
        contract().assert_request_refused("PATCH", one, &bad);
        expect(&p, 400, "PATCH", one, &uri, "", key, Some(&bad.to_string())).await;
    }
    let enable = json!({"enabled": true}).to_string();
    expect(&p, 404, "PATCH", one, &uri, "", Some(&other), Some(&enable)).await;

    let rotate = "/api/webhooks/{id}/rotate-secret";
    let rotated = expect(
        &p,
        200,
        "POST",
        rotate,
        &format!("{uri}/rotate-secret"),
        "",
        key,
        None,
    )
    .await;
    assert_ne!(
        rotated.body["data"]["secret"],
        created.body["data"]["secret"]
    );
    expect(
        &p,
        404,
        "POST",
        rotate,
        &format!("{uri}/rotate-secret"),
        "",
        Some(&other),
        None,
    )
    .await;

    let test = "/api/webhooks/{id}/test";
    let tested = expect(&p, 200, "POST", test, &format!("{uri}/test"), "", key, None).await;
    assert_eq!(tested.body["data"]["status"], 200);

    // A delivery through the pipeline, to read and resend.
    p.start();
    let number = sample_number(&account, Status::Pending, 1);
    p.env
        .store
        .import_numbers(std::slice::from_ref(&number))
        .await
        .unwrap();
    p.env.change_status(&number, Status::Active).await;
    let list = "/api/webhooks/{id}/deliveries";
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let delivered = loop {
        let page = expect(
            &p,
            200,
            "GET",
            list,
            &format!("{uri}/deliveries"),
            "status=succeeded",
            key,
            None,
        )
        .await;
        if let Some(first) = page.body["data"].get(0) {
            break first.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "never delivered");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    };
    for bad in ["status=done", "cursor=x", "limit=0"] {
        expect(
            &p,
            400,
            "GET",
            list,
            &format!("{uri}/deliveries"),
            bad,
            key,
            None,
        )
        .await;
    }
    expect(
        &p,
        404,
        "GET",
        list,
        &format!("{uri}/deliveries"),
        "",
        Some(&other),
        None,
    )
    .await;

    let resend = "/api/webhooks/{id}/deliveries/{deliveryId}/resend";
    let resend_uri = format!(
        "{uri}/deliveries/{}/resend",
        delivered["id"].as_str().unwrap()
    );
    let resent = expect(&p, 200, "POST", resend, &resend_uri, "", key, None).await;
    assert_eq!(resent.body["data"]["attempts"].as_array().unwrap().len(), 2);
    expect(
        &p,
        404,
        "POST",
        resend,
        &format!("{uri}/deliveries/dlv_1_nosuch/resend"),
        "",
        key,
        None,
    )
    .await;
    expect(&p, 404, "POST", resend, &resend_uri, "", Some(&other), None).await;
    let disable = json!({"enabled": false}).to_string();
    expect(&p, 200, "PATCH", one, &uri, "", key, Some(&disable)).await;
    expect(&p, 409, "POST", resend, &resend_uri, "", key, None).await;
}
