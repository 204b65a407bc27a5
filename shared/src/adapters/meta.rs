//! Meta's Graph API over HTTPS (reqwest + rustls), base URL and version from configuration.

use std::time::Duration;

use reqwest::{Client, Method, RequestBuilder, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::domain::meta::{ErrorKind, MetaError, UserText, classify, kind_of};
use crate::domain::secrets::{AppSecret, Secret};
use crate::domain::{CanSendMessage, Health, HealthIssue};
use crate::ports::{
    ExchangedToken, ListedPhone, MetaGraph, MetaResult, PhonePage, PhoneProfile, TokenInfo,
};
use crate::secret_cache::SecretCache;

/// What the WABA-only signup reads of each phone `GET /{waba_id}/phone_numbers` lists.
pub const LISTED_PHONE_FIELDS: &str = "id,display_phone_number,verified_name";
/// Phones per page of that listing.
pub const PHONE_PAGE_LIMIT: &str = "100";

pub const PROFILE_FIELDS: &str = "display_phone_number,verified_name,quality_rating,name_status,code_verification_status,platform_type,throughput,status,messaging_limit_tier,health_status";

#[derive(Clone, Debug)]
pub struct MetaConfig {
    pub graph_url: String,
    pub graph_version: String,
    pub app_id: String,
    pub app_secret: Secret,
    pub timeout: Duration,
}

#[derive(Clone)]
pub struct GraphClient {
    http: Client,
    config: MetaConfig,
    /// Where the app secret is re-read from when Meta says it is wrong; without it,
    /// `config.app_secret` is used as is.
    secrets: Option<SecretCache>,
}

#[derive(Deserialize)]
struct Envelope {
    error: EnvelopeError,
}

#[derive(Deserialize)]
struct EnvelopeError {
    #[serde(default)]
    message: String,
    code: i64,
    #[serde(default)]
    error_subcode: Option<i64>,
    #[serde(default)]
    is_transient: bool,
    #[serde(default)]
    error_user_title: Option<String>,
    #[serde(default)]
    error_user_msg: Option<String>,
    #[serde(default)]
    error_data: Option<ErrorData>,
}

#[derive(Deserialize)]
struct ErrorData {
    #[serde(default)]
    details: Option<String>,
}

impl GraphClient {
    pub fn new(config: MetaConfig) -> Result<GraphClient, crate::http_client::ClientBuildError> {
        let http = crate::http_client::reqwest_builder()?
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(GraphClient {
            http,
            config,
            secrets: None,
        })
    }

    /// The app secret is read from `secrets` (kept at most 5 minutes, re-read at once when
    /// Meta answers "Error validating client secret").
    pub fn with_secrets(mut self, secrets: SecretCache) -> GraphClient {
        self.secrets = Some(secrets);
        self
    }

    /// An unreadable secret is a transient failure: the step is retried, as for Meta's own. A
    /// placeholder is never sent: it is answered as Meta answers a wrong secret.
    async fn app_secret(&self) -> MetaResult<Secret> {
        let secret = match &self.secrets {
            Some(cache) => match cache.current().await {
                Ok(secrets) => secrets.app_secret,
                Err(err) => {
                    tracing::error!(error = %crate::telemetry::ErrorChain(&err), "Meta app secret not read");
                    return Err(MetaError::transport(
                        "app_secret_unavailable",
                        "the Meta app secret could not be read",
                    ));
                }
            },
            None => AppSecret::new(self.config.app_secret.expose()),
        };
        secret
            .issued()
            .cloned()
            .ok_or_else(MetaError::app_secret_placeholder)
    }

    async fn exchange_once(&self, code: &str, app_secret: &Secret) -> MetaResult<Value> {
        let request = self.http.get(self.url("oauth/access_token")).query(&[
            ("client_id", self.config.app_id.as_str()),
            ("client_secret", app_secret.expose()),
            ("code", code),
        ]);
        self.send(request)
            .await
            .map_err(MetaError::on_code_exchange)
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}/{}/{}",
            self.config.graph_url.trim_end_matches('/'),
            self.config.graph_version,
            path.trim_start_matches('/')
        )
    }

    fn request(&self, method: Method, path: &str, token: &Secret) -> RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(token.expose())
    }

    /// Every Graph API call goes through here: each error Meta (or the network) answers with is
    /// counted, by Meta's code.
    async fn send(&self, request: RequestBuilder) -> MetaResult<Value> {
        let result = match request.send().await {
            Ok(response) => read(response).await,
            Err(err) => Err(transport_error(err)),
        };
        if let Err(err) = &result {
            crate::metrics::meta_error(&err.code, err.http_status);
        }
        result
    }

    async fn expect_success(&self, request: RequestBuilder) -> MetaResult<()> {
        let body = self.send(request).await?;
        if body.get("success").and_then(Value::as_bool) == Some(false) {
            return Err(MetaError::transport(
                "unsuccessful",
                "Meta answered success: false",
            ));
        }
        Ok(())
    }
}

/// reqwest's errors name the URL, which for the token exchange carries the app secret and the
/// code: it is stripped before anything can log it.
fn transport_error(err: reqwest::Error) -> MetaError {
    let code = if err.is_timeout() {
        "timeout"
    } else if err.is_connect() {
        "network"
    } else {
        "transport"
    };
    MetaError::transport(code, err.without_url().to_string())
}

async fn read(response: Response) -> MetaResult<Value> {
    let status = response.status().as_u16();
    let bytes = response.bytes().await.map_err(transport_error)?;
    if (200..300).contains(&status) {
        return serde_json::from_slice(&bytes)
            .map_err(|_| MetaError::transport("invalid_response", "Meta's answer was not JSON"));
    }
    match serde_json::from_slice::<Envelope>(&bytes) {
        Ok(Envelope { error }) => {
            let user_text = UserText::new(
                error.error_user_title.as_deref(),
                error.error_user_msg.as_deref(),
                error.error_data.as_ref().and_then(|d| d.details.as_deref()),
            );
            Err(MetaError::from_envelope(
                status,
                error.code,
                error.error_subcode,
                error.is_transient,
                error.message,
            )
            .with_user_text(user_text))
        }
        Err(_) => Err(MetaError {
            http_status: status,
            code: format!("http_{status}"),
            subcode: None,
            message: format!("HTTP {status} without Meta's error envelope"),
            retry: classify(status, 0, None, false),
            kind: kind_of(status, 0, None, false),
            user_text: Box::default(),
        }),
    }
}

impl MetaGraph for GraphClient {
    async fn exchange_code(&self, code: &str) -> MetaResult<ExchangedToken> {
        // A placeholder secret is refused as a wrong one, without being sent (`refused`: None).
        let first = match self.app_secret().await {
            Ok(secret) => self
                .exchange_once(code, &secret)
                .await
                .map_err(|err| (err, Some(secret))),
            Err(err) => Err((err, None)),
        };
        let body = match first {
            Ok(body) => body,
            // Meta refuses the secret before it looks at the code, so the code is still good
            // for one more try with the secret read again: by this call, or by another one
            // refused alike a moment before (whose read this one may not repeat so soon).
            Err((err, refused)) if err.kind == ErrorKind::ClientSecret => match &self.secrets {
                Some(cache) => {
                    cache.refresh().await;
                    let again = self.app_secret().await?;
                    if refused.is_some_and(|secret| secret.expose() == again.expose()) {
                        return Err(err);
                    }
                    self.exchange_once(code, &again).await?
                }
                None => return Err(err),
            },
            Err((err, _)) => return Err(err),
        };
        let token = body
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| MetaError::transport("invalid_response", "no access_token in answer"))?;
        Ok(ExchangedToken {
            token: Secret::new(token),
            expires_in_seconds: body.get("expires_in").and_then(Value::as_u64),
        })
    }

    async fn subscribe_app(&self, token: &Secret, waba_id: &str) -> MetaResult<()> {
        let path = format!("{waba_id}/subscribed_apps");
        self.expect_success(self.request(Method::POST, &path, token))
            .await
    }

    async fn unsubscribe_app(&self, token: &Secret, waba_id: &str) -> MetaResult<()> {
        let path = format!("{waba_id}/subscribed_apps");
        self.expect_success(self.request(Method::DELETE, &path, token))
            .await
    }

    async fn register(
        &self,
        token: &Secret,
        phone_number_id: &str,
        pin: &Secret,
    ) -> MetaResult<()> {
        let path = format!("{phone_number_id}/register");
        let body = json!({"messaging_product": "whatsapp", "pin": pin.expose()});
        self.expect_success(self.request(Method::POST, &path, token).json(&body))
            .await
    }

    async fn deregister(&self, token: &Secret, phone_number_id: &str) -> MetaResult<()> {
        let path = format!("{phone_number_id}/deregister");
        self.expect_success(self.request(Method::POST, &path, token))
            .await
    }

    async fn set_pin(&self, token: &Secret, phone_number_id: &str, pin: &Secret) -> MetaResult<()> {
        let body = json!({"pin": pin.expose()});
        self.expect_success(
            self.request(Method::POST, phone_number_id, token)
                .json(&body),
        )
        .await
    }

    async fn phone_profile(
        &self,
        token: &Secret,
        phone_number_id: &str,
    ) -> MetaResult<PhoneProfile> {
        let request = self
            .request(Method::GET, phone_number_id, token)
            .query(&[("fields", PROFILE_FIELDS)]);
        let body = self.send(request).await?;
        let text = |field: &str| body.get(field).and_then(Value::as_str).map(str::to_string);
        Ok(PhoneProfile {
            display_phone_number: text("display_phone_number"),
            verified_name: text("verified_name"),
            quality_rating: text("quality_rating"),
            status: text("status"),
            health: body.get("health_status").and_then(health_of),
            name_status: text("name_status"),
            code_verification_status: text("code_verification_status"),
            messaging_limit_tier: text("messaging_limit_tier"),
            throughput_level: body
                .pointer("/throughput/level")
                .and_then(Value::as_str)
                .map(str::to_string),
            platform_type: text("platform_type"),
        })
    }

    async fn phone_numbers(
        &self,
        token: &Secret,
        waba_id: &str,
        after: Option<&str>,
    ) -> MetaResult<PhonePage> {
        let mut query = vec![("fields", LISTED_PHONE_FIELDS), ("limit", PHONE_PAGE_LIMIT)];
        if let Some(after) = after {
            query.push(("after", after));
        }
        let path = format!("{waba_id}/phone_numbers");
        let body = self
            .send(self.request(Method::GET, &path, token).query(&query))
            .await?;
        phone_page(&body)
    }

    async fn app_secret_is_placeholder(&self) -> bool {
        matches!(self.app_secret().await, Err(err) if err.is_app_secret_placeholder())
    }

    async fn debug_token(&self, token: &Secret) -> MetaResult<TokenInfo> {
        let app_token = Secret::new(format!(
            "{}|{}",
            self.config.app_id,
            self.app_secret().await?.expose()
        ));
        let request = self
            .request(Method::GET, "debug_token", &app_token)
            .query(&[("input_token", token.expose())]);
        let body = self.send(request).await?;
        let data = body.get("data").cloned().unwrap_or(Value::Null);
        Ok(TokenInfo {
            is_valid: data.get("is_valid").and_then(Value::as_bool) == Some(true),
            expires_at: data
                .get("expires_at")
                .and_then(Value::as_i64)
                .filter(|at| *at > 0),
            scopes: data
                .get("scopes")
                .and_then(Value::as_array)
                .map(|scopes| {
                    scopes
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
}

/// A page of `GET /{waba_id}/phone_numbers`: `data[]` and, only while more pages follow,
/// `paging.next` (then `paging.cursors.after` continues). A phone without a numeric id is
/// not one we could onboard: the answer is refused rather than half read.
fn phone_page(body: &Value) -> MetaResult<PhonePage> {
    let invalid = || MetaError::transport("invalid_response", "Meta's phone list was not readable");
    let data = body
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(invalid)?;
    let mut phones = Vec::with_capacity(data.len());
    for phone in data {
        let id = phone
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| crate::api::shape::is_meta_id(id))
            .ok_or_else(invalid)?;
        let text = |field: &str| phone.get(field).and_then(Value::as_str).map(str::to_string);
        phones.push(ListedPhone {
            phone_number_id: id.to_string(),
            display_phone_number: text("display_phone_number"),
            verified_name: text("verified_name"),
        });
    }
    let after = match body.pointer("/paging/next") {
        Some(Value::String(_)) => Some(
            body.pointer("/paging/cursors/after")
                .and_then(Value::as_str)
                .filter(|after| !after.is_empty())
                .ok_or_else(invalid)?
                .to_string(),
        ),
        _ => None,
    };
    Ok(PhonePage { phones, after })
}

/// Meta's `health_status`: `can_send_message` overall, and `entities[]` each with its
/// `entity_type` and, when it cannot send freely, `errors[{error_code, error_description,
/// possible_solution}]`. Unreadable parts are dropped; `None` without a readable overall answer.
pub fn health_of(health_status: &Value) -> Option<Health> {
    let can_send_message = health_status
        .get("can_send_message")
        .and_then(Value::as_str)
        .and_then(CanSendMessage::from_meta)?;
    let mut errors = Vec::new();
    for entity in health_status
        .get("entities")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let kind = entity
            .get("entity_type")
            .and_then(Value::as_str)
            .and_then(crate::domain::number::meta_label)
            .unwrap_or_else(|| "UNKNOWN".into());
        for error in entity
            .get("errors")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let code = match error.get("error_code") {
                Some(Value::Number(n)) => n.as_i64(),
                Some(Value::String(s)) => s.parse().ok(),
                _ => None,
            };
            let Some(error_code) = code else { continue };
            let text = |field: &str| {
                error
                    .get(field)
                    .and_then(Value::as_str)
                    .map(|t| t.chars().take(1000).collect::<String>())
            };
            errors.push(HealthIssue {
                error_code,
                error_description: text("error_description").unwrap_or_default(),
                possible_solution: text("possible_solution"),
                entity: kind.clone(),
            });
        }
    }
    Some(Health {
        can_send_message,
        errors,
    })
}

#[cfg(test)]
mod health_tests {
    use super::*;

    #[test]
    fn health_status_is_read_with_each_entity_s_errors_as_meta_documents_it() {
        let health = health_of(&json!({
            "can_send_message": "BLOCKED",
            "entities": [
                {"entity_type": "PHONE_NUMBER", "id": "1", "can_send_message": "AVAILABLE"},
                {"entity_type": "WABA", "id": "2", "can_send_message": "BLOCKED", "errors": [
                    {"error_code": 141006, "error_description": "Payment issue",
                     "possible_solution": "Add a payment method"}
                ]},
                {"entity_type": "BUSINESS", "id": "3", "can_send_message": "LIMITED", "errors": [
                    {"error_code": "141010", "error_description": "Not verified"}
                ]}
            ]
        }))
        .unwrap();
        assert_eq!(health.can_send_message, CanSendMessage::Blocked);
        assert_eq!(health.errors.len(), 2);
        assert_eq!(health.errors[0].entity, "WABA");
        assert_eq!(health.errors[0].error_code, 141006);
        assert_eq!(
            health.errors[0].possible_solution.as_deref(),
            Some("Add a payment method")
        );
        assert_eq!(health.errors[1].entity, "BUSINESS");
        assert_eq!(health.errors[1].error_code, 141010);
        assert_eq!(health.errors[1].possible_solution, None);
    }

    #[test]
    fn a_phone_page_continues_after_its_cursor_only_while_meta_names_a_next_page() {
        let page = phone_page(&json!({
            "data": [{"id": "200", "display_phone_number": "+55 11 9", "verified_name": "A"}],
            "paging": {"cursors": {"before": "b", "after": "c1"}, "next": "https://graph/next"},
        }))
        .unwrap();
        assert_eq!(page.phones[0].phone_number_id, "200");
        assert_eq!(page.after.as_deref(), Some("c1"));
        let last = phone_page(&json!({
            "data": [{"id": "201"}],
            "paging": {"cursors": {"before": "b", "after": "c2"}},
        }))
        .unwrap();
        assert_eq!(last.after, None, "no next: the last page");
        assert_eq!(
            phone_page(&json!({"data": []})).unwrap(),
            PhonePage::default()
        );
    }

    #[test]
    fn a_phone_list_that_is_not_meta_s_shape_is_refused() {
        for body in [
            json!({}),
            json!({"data": [{"id": "../x"}]}),
            json!({"data": [{"display_phone_number": "+1"}]}),
            json!({"data": [], "paging": {"next": "https://graph/next"}}),
        ] {
            assert!(phone_page(&body).is_err(), "{body}");
        }
    }

    #[test]
    fn a_health_status_without_a_known_answer_is_not_read() {
        assert_eq!(health_of(&json!({"can_send_message": "MAYBE"})), None);
        assert_eq!(health_of(&json!({})), None);
    }
}
