//! Only the template's routes exist: API Gateway answers `404 {"message":"Not Found"}` for any
//! route template.yaml lacks, whatever the functions' routers would do with it. So what each
//! function serves, what the template routes to it and what `docs/openapi.yaml` documents are
//! one set, and a route is reached only through the template, as `make run` reaches it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use axum::body::Body;
use muchaw_local::binaries::{function_binaries, http_routes};
use muchaw_local::{Template, stack};
use muchaw_shared::adapters::memory::{MemoryQueue, MemoryStore};
use muchaw_shared::adapters::secrets::AppSecrets;
use muchaw_shared::api::{self, RouteKey, page_limit::PageLimits};
use muchaw_shared::domain::secrets::{AppSecret, Secret};
use muchaw_shared::domain::signup_link::LinkSigner;
use muchaw_shared::domain::{FailureReason, Status, Step};
use muchaw_shared::meta_webhook::{self, MetaWebhook};
use muchaw_shared::ports::{NumberReader, Queue};
use muchaw_shared::secret_cache::SecretCache;
use muchaw_shared::webhooks::sender::Sender;
use muchaw_shared::webhooks::url_policy::UrlPolicy;
use muchaw_tests::{TestEnv, sample_number};
use serde_json::Value;
use tower::ServiceExt;

/// `(METHOD, path)`, as the template, the document and the routers all write a route.
type Key = (String, String);

fn key(method: &str, path: &str) -> Key {
    (method.to_ascii_uppercase(), path.to_string())
}

fn of(keys: &[RouteKey]) -> BTreeSet<Key> {
    keys.iter()
        .map(|route| key(route.method.as_str(), route.path))
        .collect()
}

/// What each HTTP function serves, by the binary its `main` is (`Metadata.BuildProperties.
/// Binary`): the routes of the composition that `main` runs (`shared/src/runtime.rs`), built
/// on memory adapters (the keys do not depend on them).
fn served_by_binary() -> BTreeMap<&'static str, BTreeSet<Key>> {
    let store = MemoryStore::default();
    let queue = MemoryQueue::default();
    let signer = LinkSigner::new(Secret::new("routes-test-signing-key"));
    let sender = Sender::new(
        UrlPolicy {
            allow_private: false,
        },
        Duration::from_secs(1),
    )
    .expect("the webhook sender");
    let numbers_api = api::numbers_api_routes(
        store.clone(),
        queue.clone(),
        signer.clone(),
        String::new(),
        sender,
    );
    let signup_callback = api::signup_function_routes(
        store.clone(),
        queue.clone(),
        signer,
        stack::page_config(&HashMap::new()),
        PageLimits {
            per_link_per_minute: None,
            per_source_per_minute: None,
        },
    );
    let meta_webhook = meta_webhook::served(MetaWebhook {
        store,
        queue,
        secrets: SecretCache::fixed(AppSecrets {
            app_secret: AppSecret::new("app-secret"),
            webhook_verify_token: Secret::new("verify-token"),
        }),
    });
    BTreeMap::from([
        ("numbers-api", of(numbers_api.keys())),
        ("signup-callback", of(signup_callback.keys())),
        ("meta-webhook", of(meta_webhook.keys())),
    ])
}

/// Every operation of `docs/openapi.yaml`: each path with each method it documents.
fn documented() -> BTreeSet<Key> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.yaml");
    let text = std::fs::read_to_string(path).expect("docs/openapi.yaml");
    let doc: Value = serde_yaml::from_str(&text).expect("docs/openapi.yaml parses");
    let methods = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            methods
                .iter()
                .filter(|method| item.get(**method).is_some())
                .map(|method| key(method, path))
        })
        .collect()
}

fn listed(keys: &BTreeSet<Key>) -> String {
    keys.iter()
        .map(|(method, path)| format!("{method} {path}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn the_functions_routers_the_templates_routes_and_the_document_are_one_set_of_routes() {
    // Given what each function serves, the template's HttpApi events and the document
    let served = served_by_binary();
    let template = Template::workspace().expect("template.yaml");
    let binaries: HashMap<String, String> = function_binaries(&template)
        .expect("every function's binary")
        .into_iter()
        .collect();
    let mut routed: BTreeMap<String, BTreeSet<Key>> = BTreeMap::new();
    for route in http_routes(&template).expect("the template's HttpApi events") {
        routed
            .entry(route.function_id.clone())
            .or_default()
            .insert(key(&route.method, &route.path));
    }
    let mut drift = Vec::new();

    // Then each routed function serves exactly what the template routes to it
    for (function, routes) in &routed {
        let binary = binaries.get(function).map(String::as_str).unwrap_or("?");
        let Some(serves) = served.get(binary) else {
            drift.push(format!(
                "{function} ({binary}) is routed {} but this test knows no router of it",
                listed(routes)
            ));
            continue;
        };
        let unrouted: BTreeSet<Key> = serves.difference(routes).cloned().collect();
        if !unrouted.is_empty() {
            drift.push(format!(
                "{function} serves {} but the template routes no HttpApi event of it there (API Gateway answers 404)",
                listed(&unrouted)
            ));
        }
        let unserved: BTreeSet<Key> = routes.difference(serves).cloned().collect();
        if !unserved.is_empty() {
            drift.push(format!(
                "the template routes {} to {function}, which does not serve it",
                listed(&unserved)
            ));
        }
    }
    // And every function with a router is routed to
    for (binary, serves) in &served {
        let is_routed = binaries
            .iter()
            .any(|(function, b)| b == binary && routed.contains_key(function));
        if !is_routed {
            drift.push(format!(
                "{binary} serves {} but the template routes nothing to it",
                listed(serves)
            ));
        }
    }
    // And the document lists exactly the routes there are
    let all_served: BTreeSet<Key> = served.values().flatten().cloned().collect();
    let documented = documented();
    let undocumented: BTreeSet<Key> = all_served.difference(&documented).cloned().collect();
    if !undocumented.is_empty() {
        drift.push(format!(
            "served but not in docs/openapi.yaml: {}",
            listed(&undocumented)
        ));
    }
    let unserved: BTreeSet<Key> = documented.difference(&all_served).cloned().collect();
    if !unserved.is_empty() {
        drift.push(format!(
            "in docs/openapi.yaml but served by no function: {}",
            listed(&unserved)
        ));
    }
    assert!(drift.is_empty(), "routes drifted:\n{}", drift.join("\n"));
}

/// The local stack's HTTP front (`make run`): the template's routes to each function's router.
fn local_stack(env: &TestEnv) -> axum::Router {
    stack::build(
        &env.template,
        &env.stack,
        &env.sdk,
        "app-secret",
        "verify-token",
        "signing-key",
    )
    .expect("the local stack")
    .router
}

async fn send(router: &axum::Router, method: &str, path: &str, key: &str) -> (u16, Value) {
    let request = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {key}"))
        .body(Body::empty())
        .expect("a request");
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("the body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_failed_number_is_retried_through_the_templates_routes() {
    // Given a number whose onboarding failed at the registration
    let env = TestEnv::new().await;
    let (account, key) = env.account_with_key("acme").await;
    let mut number = sample_number(&account, Status::Failed, 30);
    number.failure_reason = Some(FailureReason {
        step: "REGISTER_NUMBER".into(),
        code: "meta_error".into(),
        message: "Meta refused the registration".into(),
        ..FailureReason::default()
    });
    env.store
        .import_numbers(std::slice::from_ref(&number))
        .await
        .expect("import");
    let router = local_stack(&env);

    // When the customer retries it through the template's routes
    let (status, body) = send(
        &router,
        "POST",
        &format!("/api/numbers/{}/retry", number.id),
        &key,
    )
    .await;

    // Then the numbers API took it, not API Gateway's 404
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["data"]["status"], "PENDING");
    // And the number is pending again, its resumed step queued for it
    let stored = env
        .store
        .get(&account, &number.id)
        .await
        .expect("read")
        .expect("the number");
    assert_eq!(stored.status, Status::Pending);
    let step: Step = serde_json::from_value(body["data"]["provisioningStep"].clone())
        .expect("the step it resumes at");
    assert_eq!(stored.provisioning_step, Some(step));
    let queued = env.drain(Queue::Step(step)).await;
    assert!(
        queued
            .iter()
            .any(|message| message["numberId"] == number.id.as_str()),
        "{queued:?}"
    );
}

#[tokio::test]
async fn a_route_the_template_lacks_is_api_gateways_404_whatever_a_function_serves() {
    // Given the local stack's front and a key
    let env = TestEnv::new().await;
    let (_, key) = env.account_with_key("acme").await;
    let router = local_stack(&env);

    // When a method no HttpApi event routes is asked of a served path
    let (status, body) = send(&router, "PUT", "/api/numbers", &key).await;

    // Then API Gateway answers, not the function (whose answer would be 405)
    assert_eq!(status, 404);
    assert_eq!(body, serde_json::json!({"message": "Not Found"}));
    // And a routed path still reaches its function
    let (status, body) = send(&router, "GET", "/api/numbers", &key).await;
    assert_eq!(status, 200, "{body}");
}
