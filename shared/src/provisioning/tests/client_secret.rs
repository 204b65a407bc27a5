//! A reset app secret: the exchange reads the secret again and exchanges with it; a refusal
//! after that is retried while Meta's code can live, and only then fails the number.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;

use super::*;
use crate::adapters::meta::{GraphClient, MetaConfig};
use crate::adapters::secrets::AppSecrets;
use crate::ports::MetaGraph;
use crate::secret_cache::{Loader, SecretCache};

/// Meta's answer to a wrong client secret, as the code exchange reads it (the fake Meta
/// answers `101`, Meta's older code; `1` reads the same).
fn client_secret_refused() -> MetaError {
    MetaError::from_envelope(
        400,
        101,
        None,
        false,
        "Error validating client secret.".into(),
    )
    .on_code_exchange()
}

fn exchange_message(number: &Number) -> StepMessage {
    let mut message = step_message(number, Step::ExchangeToken);
    message.code = Some(Secret::new("AQB-code"));
    message
}

/// The exchange message at its `receive`th receive, first sent `sent_ago` before now.
fn exchange_delivery(message: &StepMessage, receive: u32, sent_ago: Duration) -> Delivery {
    Delivery {
        message_id: "m-1".into(),
        body: serde_json::to_string(message).unwrap(),
        receive_count: receive,
        sent_at: Some(time::now() - chrono::Duration::from_std(sent_ago).unwrap()),
        number_snapshot: None,
    }
}

#[tokio::test]
async fn a_client_secret_refusal_is_retried_while_the_code_can_live() {
    // Given Meta refusing the app secret once (the owner reset it; it is read again meanwhile)
    let given = given_pending_at(Step::ExchangeToken);
    given
        .meta()
        .fail_next(MetaCallKind::ExchangeCode, client_secret_refused());
    let message = exchange_message(&given.number);

    // When the signup's exchange runs
    let outcome = given.run_message(message.clone()).await;

    // Then the number waits, its pending reason Meta's, and the retry comes after the secret
    // may be read again
    let refresh = crate::secret_cache::MIN_REFRESH.as_secs() as u32;
    assert!(
        matches!(outcome, Outcome::RetryAfter(seconds) if seconds >= refresh),
        "{outcome:?}"
    );
    let number = given.now();
    assert_eq!(number.status, Status::Pending);
    assert_eq!(
        number.provisioning_error.map(|r| (r.step, r.code)),
        Some(("EXCHANGE_TOKEN".to_string(), "101".to_string()))
    );

    // And the retry exchanges the same code and goes on
    let outcome = given.run_redelivered(message).await;
    assert_eq!(outcome, Outcome::Done);
    assert_eq!(given.meta().count(MetaCallKind::ExchangeCode), 2);
    assert!(given.vault().holds(&given.number.id));
    assert_eq!(given.steps_sent(), vec![Step::SubscribeWaba]);
}

#[tokio::test]
async fn a_client_secret_refusal_once_the_code_can_no_longer_live_fails_the_number() {
    // Given an exchange whose code Meta gave out longer ago than a code lives
    let given = given_pending_at(Step::ExchangeToken);
    given
        .meta()
        .fail_next(MetaCallKind::ExchangeCode, client_secret_refused());
    let message = exchange_message(&given.number);
    let delivery = exchange_delivery(&message, 3, Duration::from_secs(40));

    // When Meta refuses the secret again
    let outcome = given
        .provisioner
        .handle_step(Step::ExchangeToken, delivery)
        .await;

    // Then the number fails at the exchange with Meta's code
    assert_eq!(outcome, Outcome::Done);
    let number = given.now();
    assert_eq!(number.status, Status::Failed);
    assert_eq!(
        number.failure_reason.map(|r| (r.step, r.code)),
        Some(("EXCHANGE_TOKEN".to_string(), "101".to_string()))
    );
}

/// Meta's token endpoint, as far as the exchange goes: it takes the app's current secret
/// only, and answers a wrong one as the fake Meta does.
struct OauthEndpoint {
    url: String,
    exchanges: Arc<Mutex<Vec<String>>>,
}

impl OauthEndpoint {
    async fn start(secret: &str) -> OauthEndpoint {
        type Shared = (String, Arc<Mutex<Vec<String>>>);
        let exchanges: Arc<Mutex<Vec<String>>> = Arc::default();
        let app = Router::new()
            .route(
                "/v25.0/oauth/access_token",
                get(
                    |State((secret, exchanges)): State<Shared>,
                     Query(query): Query<HashMap<String, String>>| async move {
                        let given = query.get("client_secret").cloned().unwrap_or_default();
                        exchanges.lock().unwrap().push(given.clone());
                        if given == secret {
                            let body = serde_json::json!({
                                "access_token": "EAAG-new-token",
                                "token_type": "bearer",
                                "expires_in": 5_184_000,
                            });
                            (StatusCode::OK, axum::Json(body))
                        } else {
                            let body = serde_json::json!({"error": {
                                "message": "Error validating client secret.",
                                "type": "OAuthException",
                                "code": 101,
                                "fbtrace_id": "Atest",
                            }});
                            (StatusCode::BAD_REQUEST, axum::Json(body))
                        }
                    },
                ),
            )
            // The exchange reads the number's phone with the new token: any phone is Acme's.
            .route(
                "/v25.0/{phone_number_id}",
                get(
                    |axum::extract::Path(id): axum::extract::Path<String>| async move {
                        axum::Json(serde_json::json!({
                            "id": id,
                            "display_phone_number": "+55 11 99999-0000",
                            "verified_name": "Acme",
                            "quality_rating": "GREEN",
                        }))
                    },
                ),
            )
            .with_state((secret.to_string(), exchanges.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        OauthEndpoint {
            url: format!("http://{addr}"),
            exchanges,
        }
    }

    fn exchanges(&self) -> Vec<String> {
        self.exchanges.lock().unwrap().clone()
    }
}

/// A warm exchange function's Graph client: it holds `held`, read just now, while the secret
/// store holds `stored`; it may read again `min_refresh` after its last read.
fn warm_graph(url: &str, held: &str, stored: &str, min_refresh: Duration) -> GraphClient {
    let app_secrets = |secret: &str| AppSecrets {
        app_secret: crate::domain::secrets::AppSecret::new(secret),
        webhook_verify_token: Secret::new("verify-me"),
    };
    let stored = stored.to_string();
    let loader: Loader = Arc::new(move || {
        let secrets = app_secrets(&stored);
        Box::pin(async move { Ok(secrets) })
    });
    let cache = SecretCache::with_ages(
        app_secrets(held),
        loader,
        crate::secret_cache::MAX_AGE,
        min_refresh,
    );
    GraphClient::new(MetaConfig {
        graph_url: url.to_string(),
        graph_version: "v25.0".into(),
        app_id: "app-1".into(),
        app_secret: Secret::new(""),
        timeout: Duration::from_secs(5),
    })
    .unwrap()
    .with_secrets(cache)
}

#[tokio::test]
async fn a_warm_function_that_read_the_old_secret_just_before_the_reset_exchanges_on_retry() {
    // Given the owner reset the secret at Meta and put the new one in place, just after a warm
    // exchange function read the old one
    let meta = OauthEndpoint::start("new-secret").await;
    let min_refresh = Duration::from_millis(300);
    let provisioner = Provisioner {
        store: MemoryStore::default(),
        queue: MemoryQueue::default(),
        meta: warm_graph(&meta.url, "old-secret", "new-secret", min_refresh),
        vault: MemoryVault::default(),
        retry: RetryPolicy {
            step_settle_seconds: 0,
            ..RetryPolicy::default()
        },
    };
    let number = given_pending_at(Step::ExchangeToken).number;
    provisioner.store.insert_number(number.clone());
    let message = exchange_message(&number);

    // When the next signup's exchange runs
    let first = provisioner
        .handle_step(
            Step::ExchangeToken,
            exchange_delivery(&message, 1, Duration::ZERO),
        )
        .await;

    // Then Meta refused the old secret, and the number waits instead of failing
    assert!(matches!(first, Outcome::RetryAfter(_)), "{first:?}");
    let waiting = provisioner
        .store
        .number(&number.account_id, &number.id)
        .unwrap();
    assert_eq!(waiting.status, Status::Pending);

    // And its retry, once the function may read the secret again, exchanges the same code
    // with the new secret and goes on
    tokio::time::sleep(min_refresh).await;
    let retry = provisioner
        .handle_step(
            Step::ExchangeToken,
            exchange_delivery(&message, 2, min_refresh),
        )
        .await;
    assert_eq!(retry, Outcome::Done);
    let number = provisioner
        .store
        .number(&number.account_id, &number.id)
        .unwrap();
    assert_eq!(number.provisioning_step, Some(Step::SubscribeWaba));
    assert!(provisioner.vault.holds(&number.id));
    assert_eq!(
        meta.exchanges().last().map(String::as_str),
        Some("new-secret")
    );
}

#[tokio::test]
async fn two_exchanges_refused_at_once_after_a_reset_both_use_the_secret_read_again() {
    // Given a warm function holding the old secret, read long enough ago to read it again
    let meta = OauthEndpoint::start("new-secret").await;
    let min_refresh = Duration::from_millis(50);
    let graph = warm_graph(&meta.url, "old-secret", "new-secret", min_refresh);
    tokio::time::sleep(min_refresh).await;

    // When two signups' codes are exchanged at once (one batch), both refused at first
    let (a, b) = futures::join!(graph.exchange_code("code-a"), graph.exchange_code("code-b"));

    // Then each exchanged its code again with the secret one of them read, and both succeed
    assert!(a.is_ok(), "{:?}", a.err());
    assert!(b.is_ok(), "{:?}", b.err());
    let exchanges = meta.exchanges();
    assert_eq!(
        exchanges.iter().filter(|s| *s == "new-secret").count(),
        2,
        "{exchanges:?}"
    );
}

#[test]
fn a_refused_secret_is_retried_once_it_may_be_read_again_only_while_the_code_lives() {
    let policy = RetryPolicy::default();
    let age = chrono::Duration::seconds;
    let refresh = crate::secret_cache::MIN_REFRESH.as_secs() as u32;

    // Never sooner than the secret may be read again, never past the code's life
    assert_eq!(policy.client_secret_retry(age(0), 1, 2), Some(refresh));
    assert_eq!(policy.client_secret_retry(age(10), 2, 8), Some(8));
    assert_eq!(policy.client_secret_retry(age(20), 3, 16), Some(10));
    // Not when the code dies before the secret may be read again, nor on the last receive
    assert_eq!(policy.client_secret_retry(age(26), 3, 8), None);
    assert_eq!(policy.client_secret_retry(age(40), 2, 8), None);
    let last = step_queue_max_receives(Step::ExchangeToken);
    assert_eq!(policy.client_secret_retry(age(0), last, 2), None);
}

#[tokio::test]
async fn a_reconnect_exchange_refused_for_the_secret_is_retried_not_abandoned() {
    // Given a reconnect whose exchange Meta refuses once for the app secret
    let given = given_reconnecting_at(Step::ExchangeToken);
    given
        .meta()
        .fail_next(MetaCallKind::ExchangeCode, client_secret_refused());

    // When it runs, and again
    let first = given.run_reconnect(Step::ExchangeToken).await;
    let retry = given
        .run_redelivered(reconnect_message(&given.number, Step::ExchangeToken))
        .await;

    // Then it waited instead of abandoning, and the retry exchanged the code
    assert!(matches!(first, Outcome::RetryAfter(_)), "{first:?}");
    assert_eq!(retry, Outcome::Done);
    assert_eq!(given.meta().count(MetaCallKind::ExchangeCode), 2);
    assert_eq!(given.reconnect_step(), Some(Step::SubscribeWaba));
    assert_eq!(given.now().reconnect_failure, None);
}
