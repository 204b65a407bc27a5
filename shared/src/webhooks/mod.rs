//! Customer webhooks (CONTRACT §1 `/api/webhooks`, §2): endpoints, the URL policy that keeps
//! deliveries off private networks, and delivery signed per Standard Webhooks.

pub mod delivery;
pub mod resolver;
pub mod url_policy;

use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::domain::secrets::Secret;
use crate::domain::{AccountId, EventType, Timestamp};

/// The most endpoints one account may register: each event fans out to all of them.
pub const MAX_ENDPOINTS_PER_ACCOUNT: usize = 20;

/// Every event type a customer can subscribe to, in the order the contract lists them.
pub const SUBSCRIBABLE_EVENTS: [EventType; 13] = [
    EventType::NumberActivated,
    EventType::NumberFailed,
    EventType::NumberDisconnected,
    EventType::NumberBanned,
    EventType::NumberReinstated,
    EventType::NumberQualityUpdated,
    EventType::NumberTokenExpiring,
    EventType::NumberRestricted,
    EventType::NumberRestrictionLifted,
    EventType::NumberBanScheduled,
    EventType::NumberHealthChanged,
    EventType::NumberDisplayNameUpdated,
    EventType::NumberTokenInvalid,
];

#[derive(Clone, Debug, PartialEq)]
pub struct WebhookEndpoint {
    pub id: String,
    pub account_id: AccountId,
    pub url: String,
    /// `None`: every event type, including ones added later.
    pub events: Option<Vec<EventType>>,
    pub secret: Secret,
    pub created_at: Timestamp,
}

impl WebhookEndpoint {
    pub fn new(
        account_id: AccountId,
        url: String,
        events: Option<Vec<EventType>>,
        at: Timestamp,
    ) -> Self {
        WebhookEndpoint {
            id: format!("whk_{}", cuid2::create_id()),
            account_id,
            url,
            events,
            secret: generate_secret(),
            created_at: at,
        }
    }

    pub fn wants(&self, event: EventType) -> bool {
        self.events
            .as_ref()
            .is_none_or(|events| events.contains(&event))
    }
}

/// The first three bytes of every secret issued now: base64 `mUch`, so the secret text starts
/// `whsec_mUch` and scanners can tell it from other services' `whsec_` secrets.
const SECRET_MARKER: [u8; 3] = [0x99, 0x47, 0x21];
const SECRET_BYTES: usize = 32;
/// Marker and random bytes: what the CRC32 in the last 4 bytes covers.
const SECRET_CHECKED: usize = SECRET_BYTES - 4;
/// What secret scanners match (then confirm with the checksum): documented in docs/SECURITY.md.
pub const SECRET_SCANNER_REGEX: &str = r"\bwhsec_mUch[A-Za-z0-9+/]{39}=";

/// `whsec_` + base64 of 32 bytes, the form every Standard Webhooks library reads: 3 marker
/// bytes, 25 random bytes (200 bits), then the big-endian CRC32 of the 28 before it. The
/// marker and checksum stay inside the base64, so the secret is still a plain Standard
/// Webhooks secret (HMAC keyed with all 32 bytes).
pub fn generate_secret() -> Secret {
    let mut bytes = [0u8; SECRET_BYTES];
    bytes[..SECRET_MARKER.len()].copy_from_slice(&SECRET_MARKER);
    rand::rng().fill_bytes(&mut bytes[SECRET_MARKER.len()..SECRET_CHECKED]);
    let crc = crc32fast::hash(&bytes[..SECRET_CHECKED]);
    bytes[SECRET_CHECKED..].copy_from_slice(&crc.to_be_bytes());
    Secret::new(format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    ))
}

/// What a webhook secret's text says about it, offline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretFormat {
    /// `whsec_mUch…` whose checksum matches: issued by this system since secrets carry one.
    Checksummed,
    /// Any other valid `whsec_` secret (endpoints created before): no checksum; still used.
    Legacy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretCheckError {
    #[error("not a webhook secret: secrets are whsec_ and base64")]
    NotASecret,
    #[error(
        "the checksum does not match: the secret is mistyped, cut short or not one Muchaw issued"
    )]
    BadChecksum,
}

/// Checks a webhook secret's format and checksum. Never includes the secret in its answer.
pub fn check_secret(secret: &str) -> Result<SecretFormat, SecretCheckError> {
    let bytes = secret
        .strip_prefix("whsec_")
        .and_then(|encoded| {
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()
        })
        .ok_or(SecretCheckError::NotASecret)?;
    if bytes.len() != SECRET_BYTES || !bytes.starts_with(&SECRET_MARKER) {
        return Ok(SecretFormat::Legacy);
    }
    let (checked, sum) = bytes.split_at(SECRET_CHECKED);
    if crc32fast::hash(checked).to_be_bytes() == sum {
        Ok(SecretFormat::Checksummed)
    } else {
        Err(SecretCheckError::BadChecksum)
    }
}

/// The endpoint as the API shows it; `secret` only in the response that created it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EndpointView {
    pub id: String,
    pub url: String,
    pub events: Vec<EventType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub created_at: String,
}

impl EndpointView {
    pub fn of(endpoint: &WebhookEndpoint, with_secret: bool) -> Self {
        EndpointView {
            id: endpoint.id.clone(),
            url: endpoint.url.clone(),
            events: endpoint
                .events
                .clone()
                .unwrap_or_else(|| SUBSCRIBABLE_EVENTS.to_vec()),
            secret: with_secret.then(|| endpoint.secret.expose().to_string()),
            created_at: crate::domain::time::format(&endpoint.created_at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_whsec_and_base64_of_at_least_24_bytes() {
        let secret = generate_secret();
        let encoded = secret.expose().strip_prefix("whsec_").unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        assert!(bytes.len() >= 24);
        assert_ne!(generate_secret(), secret);
    }

    #[test]
    fn a_secret_carries_the_marker_and_a_checksum_and_still_signs_per_standard_webhooks() {
        // Given a new secret
        let secret = generate_secret();
        // Then it starts with the documented marker and passes its checksum
        assert!(secret.expose().starts_with("whsec_mUch"));
        assert_eq!(check_secret(secret.expose()), Ok(SecretFormat::Checksummed));
        // and a Standard Webhooks implementation signs and verifies with it
        let webhook = standardwebhooks::Webhook::new(secret.expose()).unwrap();
        let now = chrono::Utc::now().timestamp();
        let signature = webhook.sign("evt_1", now, b"{}").unwrap();
        let mut headers = http::HeaderMap::new();
        headers.insert("webhook-id", "evt_1".parse().unwrap());
        headers.insert("webhook-timestamp", now.to_string().parse().unwrap());
        headers.insert("webhook-signature", signature.parse().unwrap());
        assert!(webhook.verify(b"{}", &headers).is_ok());
    }

    #[test]
    fn a_secret_with_a_changed_character_fails_its_checksum() {
        let secret = generate_secret().expose().to_string();
        let mut changed = 0;
        // Every base64 character after the marker, except the last one before the padding,
        // whose low bits base64 ignores.
        for i in "whsec_mUch".len()..secret.len() - 2 {
            let mut bytes = secret.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let typo = String::from_utf8(bytes).unwrap();
            assert_eq!(
                check_secret(&typo),
                Err(SecretCheckError::BadChecksum),
                "at {i}"
            );
            changed += 1;
        }
        assert_eq!(changed, 38);
    }

    #[test]
    fn the_scanner_regex_finds_new_secrets_and_not_other_whsec_secrets() {
        let scanner = regex::Regex::new(SECRET_SCANNER_REGEX).unwrap();
        let secret = generate_secret();
        let text = format!("WEBHOOK_SECRET=\"{}\"", secret.expose());
        let found: Vec<&str> = scanner.find_iter(&text).map(|m| m.as_str()).collect();
        assert_eq!(found, [secret.expose()]);
        // Other services' (and our older) whsec_ secrets: random bytes without the marker.
        let mut matched = 0;
        for _ in 0..1000 {
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            if bytes.starts_with(&SECRET_MARKER) {
                continue;
            }
            let other = format!(
                "whsec_{}",
                base64::engine::general_purpose::STANDARD.encode(bytes)
            );
            matched += usize::from(scanner.is_match(&other));
        }
        assert_eq!(matched, 0);
    }

    #[test]
    fn secrets_issued_before_are_legacy_and_garbage_is_not_a_secret() {
        let old = format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode([7u8; 32])
        );
        assert_eq!(check_secret(&old), Ok(SecretFormat::Legacy));
        assert_eq!(check_secret("whsec_***"), Err(SecretCheckError::NotASecret));
        assert_eq!(check_secret("sk_live_x"), Err(SecretCheckError::NotASecret));
    }

    #[test]
    fn an_endpoint_without_a_filter_wants_every_event() {
        let endpoint = WebhookEndpoint::new(
            AccountId::from("acc".to_string()),
            "https://example.com".into(),
            None,
            crate::domain::time::now(),
        );
        assert!(SUBSCRIBABLE_EVENTS.iter().all(|e| endpoint.wants(*e)));
    }

    #[test]
    fn a_filtered_endpoint_wants_only_its_events() {
        let endpoint = WebhookEndpoint::new(
            AccountId::from("acc".to_string()),
            "https://example.com".into(),
            Some(vec![EventType::NumberBanned]),
            crate::domain::time::now(),
        );
        assert!(endpoint.wants(EventType::NumberBanned));
        assert!(!endpoint.wants(EventType::NumberActivated));
    }
}
