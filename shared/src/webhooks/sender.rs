//! Signing and posting one body to one endpoint, the same way for a queued delivery, a resend
//! and a test event: Standard Webhooks headers (every signing secret's signature in
//! `webhook-signature`, space-separated), the URL policy checked first, names resolved only by
//! the guarded resolver.

use std::time::{Duration, Instant};

use super::WebhookEndpoint;
use super::log::Attempt;
use super::resolver::{GuardedResolver, find_resolve_error};
use super::url_policy::UrlPolicy;
use crate::domain::secrets::Secret;
use crate::domain::time::{self, Timestamp};
use crate::http_client::ClientBuildError;

/// The HTTP client deliveries use: the contract's 10 s; no redirects (a redirect could lead
/// anywhere, past the URL policy); no proxy (a proxy would resolve the name itself); and names
/// resolved only by `resolver`, which never hands it an internal address (use
/// [`UrlPolicy::resolver`]).
pub fn http_client(
    timeout: Duration,
    resolver: GuardedResolver,
) -> Result<reqwest::Client, ClientBuildError> {
    Ok(crate::http_client::reqwest_builder()?
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(std::sync::Arc::new(resolver))
        .user_agent("Muchaw-Webhooks/1")
        .build()?)
}

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("endpoint secret unreadable")]
    Secret,
    #[error("body not signable")]
    Body,
}

/// `webhook-signature`: `v1,{signature}` per secret, space-separated, the current secret first.
pub fn signature_header(
    secrets: &[&Secret],
    webhook_id: &str,
    timestamp: i64,
    body: &str,
) -> Result<String, SignError> {
    let mut signatures = Vec::with_capacity(secrets.len());
    for secret in secrets {
        let webhook =
            standardwebhooks::Webhook::new(secret.expose()).map_err(|_| SignError::Secret)?;
        signatures.push(
            webhook
                .sign(webhook_id, timestamp, body.as_bytes())
                .map_err(|_| SignError::Body)?,
        );
    }
    Ok(signatures.join(" "))
}

#[derive(Clone)]
pub struct Sender {
    pub http: reqwest::Client,
    pub policy: UrlPolicy,
}

impl Sender {
    /// A sender whose client resolves through the policy's own guarded resolver.
    pub fn new(policy: UrlPolicy, timeout: Duration) -> Result<Sender, ClientBuildError> {
        Ok(Sender {
            http: http_client(timeout, policy.resolver())?,
            policy,
        })
    }

    /// Posts `body` signed as `webhook_id`; what happened, timed. Never carries the URL (it
    /// can hold a customer's token) nor a secret.
    pub async fn send(&self, endpoint: &WebhookEndpoint, webhook_id: &str, body: &str) -> Attempt {
        let at = time::now();
        let started = Instant::now();
        let (status, error) = match self.post(endpoint, webhook_id, body, at).await {
            Ok(status) => (Some(status), None),
            Err(err) => (None, Some(err)),
        };
        Attempt {
            at,
            status,
            error,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        }
    }

    async fn post(
        &self,
        endpoint: &WebhookEndpoint,
        webhook_id: &str,
        body: &str,
        at: Timestamp,
    ) -> Result<u16, String> {
        // Checked again now, without DNS: the connection resolves the name, through a resolver
        // that drops internal addresses (a name can start resolving somewhere internal).
        self.policy
            .check_target(&endpoint.url)
            .map_err(|reason| format!("URL refused: {reason}"))?;
        let timestamp = at.timestamp();
        let signature =
            signature_header(&endpoint.signing_secrets(at), webhook_id, timestamp, body)
                .map_err(|err| err.to_string())?;
        let response = self
            .http
            .post(&endpoint.url)
            .header("content-type", "application/json")
            .header(standardwebhooks::HEADER_WEBHOOK_ID, webhook_id)
            .header(
                standardwebhooks::HEADER_WEBHOOK_TIMESTAMP,
                timestamp.to_string(),
            )
            .header(standardwebhooks::HEADER_WEBHOOK_SIGNATURE, signature)
            .body(body.to_string())
            .send()
            .await
            .map_err(|err| match find_resolve_error(&err) {
                Some(refused) => format!("endpoint refused: {refused}"),
                // Without the URL: it can carry a customer's token in its query.
                None => format!("endpoint unreachable: {}", err.without_url()),
            })?;
        Ok(response.status().as_u16())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifies(secret: &Secret, signature: &str, body: &str, timestamp: i64) -> bool {
        let webhook = standardwebhooks::Webhook::new(secret.expose()).unwrap();
        let mut headers = http::HeaderMap::new();
        headers.insert("webhook-id", "evt_1".parse().unwrap());
        headers.insert("webhook-timestamp", timestamp.to_string().parse().unwrap());
        headers.insert("webhook-signature", signature.parse().unwrap());
        webhook.verify(body.as_bytes(), &headers).is_ok()
    }

    #[test]
    fn during_a_rotation_the_header_carries_both_signatures_and_each_secret_verifies() {
        let (new, old) = (
            super::super::generate_secret(),
            super::super::generate_secret(),
        );
        let now = chrono::Utc::now().timestamp();
        let header = signature_header(&[&new, &old], "evt_1", now, "{}").unwrap();
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.starts_with("v1,")));
        assert!(verifies(&new, &header, "{}", now));
        assert!(verifies(&old, &header, "{}", now));
        let other = super::super::generate_secret();
        assert!(!verifies(&other, &header, "{}", now));
    }

    #[test]
    fn one_secret_gives_one_signature() {
        let secret = super::super::generate_secret();
        let header = signature_header(&[&secret], "evt_1", 1, "{}").unwrap();
        assert!(!header.contains(' '));
    }
}
