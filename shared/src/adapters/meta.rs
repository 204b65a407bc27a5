//! Meta's Graph API over HTTPS (reqwest + rustls), base URL and version from configuration.

use std::time::Duration;

use reqwest::{Client, Method, RequestBuilder, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::domain::meta::{ErrorKind, MetaError, UserText, classify, kind_of};
use crate::domain::secrets::Secret;
use crate::ports::{ExchangedToken, MetaGraph, MetaResult, PhoneProfile};
use crate::secret_cache::SecretCache;

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
    pub fn new(config: MetaConfig) -> Result<GraphClient, reqwest::Error> {
        let http = Client::builder()
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

    async fn app_secret(&self) -> Secret {
        match &self.secrets {
            Some(cache) => cache.current().await.app_secret,
            None => self.config.app_secret.clone(),
        }
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
        let body = match self.exchange_once(code, &self.app_secret().await).await {
            // Meta refuses the secret before it looks at the code, so the code is still good
            // for one more try with a secret read again (if it changed).
            Err(err) if err.kind == ErrorKind::ClientSecret => match &self.secrets {
                Some(cache) if cache.refresh().await => {
                    self.exchange_once(code, &self.app_secret().await).await?
                }
                _ => return Err(err),
            },
            other => other?,
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
            can_send_message: body
                .pointer("/health_status/can_send_message")
                .and_then(Value::as_str)
                .map(str::to_string),
            name_status: text("name_status"),
            messaging_limit_tier: text("messaging_limit_tier"),
            throughput_level: body
                .pointer("/throughput/level")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }
}
