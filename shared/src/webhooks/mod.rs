//! Customer webhooks (CONTRACT §1 `/api/webhooks`, §2): endpoints, the URL policy that keeps
//! deliveries off private networks, and delivery signed per Standard Webhooks.

pub mod delivery;
pub mod url_policy;

use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::domain::secrets::Secret;
use crate::domain::{AccountId, EventType, Timestamp};

/// The most endpoints one account may register: each event fans out to all of them.
pub const MAX_ENDPOINTS_PER_ACCOUNT: usize = 20;

/// Every event type a customer can subscribe to, in the order the contract lists them.
pub const SUBSCRIBABLE_EVENTS: [EventType; 10] = [
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

/// `whsec_` + base64 of 32 random bytes: the form every Standard Webhooks library reads.
pub fn generate_secret() -> Secret {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    Secret::new(format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    ))
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
