//! Customer webhooks (CONTRACT §1 `/api/webhooks`, §2): endpoints, the URL policy that keeps
//! deliveries off private networks, and delivery signed per Standard Webhooks.

pub mod delivery;
pub mod log;
pub mod resolver;
pub mod sender;
pub mod url_policy;

use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::domain::secrets::Secret;
use strum::VariantArray;

use crate::domain::{AccountId, EventType, Timestamp};

/// The most endpoints one account may register: each event fans out to all of them.
pub const MAX_ENDPOINTS_PER_ACCOUNT: usize = 20;

/// Every event type a customer can subscribe to, in declaration order: every variant
/// (`strum::VariantArray`) that `EventType::is_subscribable` admits, so none can be left out.
pub fn subscribable_events() -> impl Iterator<Item = EventType> {
    EventType::VARIANTS
        .iter()
        .copied()
        .filter(|event| event.is_subscribable())
}

/// How long a replaced secret keeps signing after a rotation (both signatures are sent).
pub const SECRET_ROTATION_GRACE_HOURS: i64 = 24;
/// An endpoint failing every delivery for this long is disabled.
pub const DISABLE_AFTER_FAILING_DAYS: i64 = 5;

#[derive(Clone, Debug, PartialEq)]
pub struct WebhookEndpoint {
    pub id: String,
    pub account_id: AccountId,
    pub url: String,
    /// `None`: every event type, including ones added later.
    pub events: Option<Vec<EventType>>,
    pub secret: Secret,
    pub created_at: Timestamp,
    pub enabled: bool,
    /// The secret a rotation replaced, still signing until `previous_secret_expires_at`.
    pub previous_secret: Option<Secret>,
    pub previous_secret_expires_at: Option<Timestamp>,
    /// When the current run of failed deliveries began (none since the last success).
    pub failing_since: Option<Timestamp>,
    /// The `webhook.disabled` event written when it was disabled for failing.
    pub disabled_event_id: Option<String>,
}

impl WebhookEndpoint {
    pub fn new(
        account_id: AccountId,
        url: String,
        events: Option<Vec<EventType>>,
        at: Timestamp,
    ) -> Self {
        WebhookEndpoint {
            id: format!("whk_{}", crate::domain::ids::random_id()),
            account_id,
            url,
            events,
            secret: generate_secret(),
            created_at: at,
            enabled: true,
            previous_secret: None,
            previous_secret_expires_at: None,
            failing_since: None,
            disabled_event_id: None,
        }
    }

    pub fn wants(&self, event: EventType) -> bool {
        self.enabled
            && event.is_subscribable()
            && self
                .events
                .as_ref()
                .is_none_or(|events| events.contains(&event))
    }

    /// The secrets that sign at `now`: the current one, and the one a rotation replaced while
    /// its grace period lasts.
    pub fn signing_secrets(&self, now: Timestamp) -> Vec<&Secret> {
        let mut secrets = vec![&self.secret];
        if let (Some(previous), Some(until)) =
            (&self.previous_secret, self.previous_secret_expires_at)
            && now < until
        {
            secrets.push(previous);
        }
        secrets
    }

    /// Failing every delivery for [`DISABLE_AFTER_FAILING_DAYS`] by `now`.
    pub fn failing_too_long(&self, now: Timestamp) -> bool {
        self.failing_since
            .is_some_and(|since| now - since >= chrono::Duration::days(DISABLE_AFTER_FAILING_DAYS))
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
    pub enabled: bool,
    /// While a rotated-out secret still signs: when it stops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret_expires_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<String>,
}

impl EndpointView {
    pub fn of(endpoint: &WebhookEndpoint, with_secret: bool) -> Self {
        EndpointView {
            id: endpoint.id.clone(),
            url: endpoint.url.clone(),
            events: endpoint
                .events
                .clone()
                .unwrap_or_else(|| subscribable_events().collect()),
            secret: with_secret.then(|| endpoint.secret.expose().to_string()),
            created_at: crate::domain::time::format(&endpoint.created_at),
            enabled: endpoint.enabled,
            previous_secret_expires_at: endpoint
                .previous_secret_expires_at
                .filter(|until| *until > crate::domain::time::now())
                .as_ref()
                .map(crate::domain::time::format),
            failing_since: endpoint
                .failing_since
                .as_ref()
                .map(crate::domain::time::format),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_but_the_test_event_can_be_subscribed_to() {
        // Given every event type the contract's EventType lists
        let every: Vec<&str> = EventType::VARIANTS.iter().map(|e| e.as_str()).collect();
        // When the subscribable ones are listed
        let subscribable: Vec<&str> = subscribable_events().map(|e| e.as_str()).collect();
        // Then each is there once, `webhook.test` and the history-only `number.step_retried`
        // excepted (number.retried included)
        let mut expected: Vec<&str> = every
            .iter()
            .copied()
            .filter(|e| !matches!(*e, "webhook.test" | "number.step_retried"))
            .collect();
        expected.dedup();
        assert_eq!(subscribable, expected);
        assert!(subscribable.contains(&"number.retried"));
        let mut unique = every.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), every.len());
    }

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
        assert!(subscribable_events().all(|e| endpoint.wants(e)));
    }

    #[test]
    fn a_disabled_endpoint_wants_nothing_and_no_endpoint_subscribes_to_test_events() {
        let mut endpoint = WebhookEndpoint::new(
            AccountId::from("acc".to_string()),
            "https://example.com".into(),
            None,
            crate::domain::time::now(),
        );
        assert!(!endpoint.wants(EventType::WebhookTest));
        endpoint.enabled = false;
        assert!(subscribable_events().all(|e| !endpoint.wants(e)));
    }

    #[test]
    fn a_rotated_out_secret_signs_until_its_grace_period_ends() {
        let now = crate::domain::time::now();
        let mut endpoint = WebhookEndpoint::new(
            AccountId::from("acc".to_string()),
            "https://example.com".into(),
            None,
            now,
        );
        assert_eq!(endpoint.signing_secrets(now).len(), 1);
        endpoint.previous_secret = Some(generate_secret());
        endpoint.previous_secret_expires_at = Some(now + chrono::Duration::hours(24));
        assert_eq!(
            endpoint.signing_secrets(now),
            [&endpoint.secret, endpoint.previous_secret.as_ref().unwrap()]
        );
        assert_eq!(
            endpoint.signing_secrets(now + chrono::Duration::hours(24)),
            [&endpoint.secret]
        );
    }

    #[test]
    fn an_endpoint_failing_for_five_days_is_failing_too_long() {
        let now = crate::domain::time::now();
        let mut endpoint = WebhookEndpoint::new(
            AccountId::from("acc".to_string()),
            "https://example.com".into(),
            None,
            now,
        );
        assert!(!endpoint.failing_too_long(now));
        endpoint.failing_since =
            Some(now - chrono::Duration::days(5) + chrono::Duration::seconds(1));
        assert!(!endpoint.failing_too_long(now));
        endpoint.failing_since = Some(now - chrono::Duration::days(5));
        assert!(endpoint.failing_too_long(now));
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
