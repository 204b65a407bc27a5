//! Meta's webhooks, sent by the fake as Meta sends them: a `POST` of
//! `{"object": "whatsapp_business_account", "entry": [{"id", "time", "changes": [{"value",
//! "field"}]}]}` to the app's callback URL, signed `X-Hub-Signature-256: sha256=<hex
//! HMAC-SHA256 of the raw body keyed with the app secret>`.
//!
//! The `value` builders follow Meta's webhook reference for each field
//! (`account_update`, `phone_number_quality_update`, `phone_number_name_update`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

/// Why a webhook could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("no webhook callback URL is configured")]
    NoCallback,
    #[error("the fake knows no such phone")]
    UnknownPhone,
    #[error("the callback could not be reached")]
    Unreachable(#[source] reqwest::Error),
}

/// `sha256=<hex>` of `body` keyed with `app_secret`, as Meta writes `X-Hub-Signature-256`.
pub fn signature(app_secret: &str, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(app_secret.as_bytes()) else {
        return String::new();
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// One delivery with one entry and one change, as Meta batches them (`entry.time` now).
pub fn delivery(entry_id: &str, field: &str, value: Value) -> Value {
    let time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    json!({
        "object": "whatsapp_business_account",
        "entry": [{
            "id": entry_id,
            "time": time,
            "changes": [{"value": value, "field": field}],
        }],
    })
}

/// A reqwest client builder for the fake's own requests. The workspace builds reqwest without a
/// crypto provider of its own (ring is the workspace's, see muchaw-shared's `http_client`), so the
/// fake installs ring as the process's default before its first client.
pub fn http_client_builder() -> reqwest::ClientBuilder {
    // Err only when a provider is installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

/// Posts `body` to `callback` signed with `app_secret`; the callback's HTTP status.
pub async fn post(callback: &str, app_secret: &str, body: &Value) -> Result<u16, WebhookError> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let client = http_client_builder()
        .timeout(Duration::from_secs(20))
        .build()
        .map_err(WebhookError::Unreachable)?;
    let response = client
        .post(callback)
        .header("content-type", "application/json")
        .header("user-agent", "facebookexternalua")
        .header("x-hub-signature-256", signature(app_secret, &bytes))
        .body(bytes)
        .send()
        .await
        .map_err(WebhookError::Unreachable)?;
    Ok(response.status().as_u16())
}

/// `account_update` for a WABA event (`DISABLED_UPDATE` takes `ban_info`, use
/// [`account_ban`]): `{"event": ...}`, the WABA being the entry's id.
pub fn account_event(event: &str) -> Value {
    json!({"event": event})
}

/// `account_update` `DISABLED_UPDATE` with `ban_info.waba_ban_state` (`DISABLE`, `REINSTATE`,
/// `SCHEDULE_FOR_DISABLE`).
pub fn account_ban(state: &str) -> Value {
    json!({
        "event": "DISABLED_UPDATE",
        "ban_info": {"waba_ban_state": state, "waba_ban_date": "2026-12-01"},
    })
}

/// `account_update` `PARTNER_*` events: the entry's id is the partner's business, the
/// customer's WABA is in `waba_info`.
pub fn partner_event(event: &str, waba_id: &str, owner_business_id: &str, app_id: &str) -> Value {
    let mut waba_info = json!({"waba_id": waba_id, "owner_business_id": owner_business_id});
    if event == "PARTNER_APP_INSTALLED" || event == "PARTNER_APP_UNINSTALLED" {
        waba_info["partner_app_id"] = json!(app_id);
    }
    json!({"event": event, "waba_info": waba_info})
}

/// `account_update` `ACCOUNT_RESTRICTION` with `restriction_info[{restriction_type,
/// expiration}]` (`expiration` in Unix seconds).
pub fn account_restriction(restrictions: &[(&str, i64)]) -> Value {
    let info: Vec<Value> = restrictions
        .iter()
        .map(|(kind, expiration)| json!({"restriction_type": kind, "expiration": expiration}))
        .collect();
    json!({"event": "ACCOUNT_RESTRICTION", "restriction_info": info})
}

/// `phone_number_quality_update`: `event` (`UPGRADE`, `DOWNGRADE`, `FLAGGED`, `UNFLAGGED`,
/// `ONBOARDING`, `THROUGHPUT_UPGRADE`), `old_limit` only for a messaging limit change, and the
/// limit both as `current_limit` (being removed) and `max_daily_conversations_per_business`.
pub fn quality_update(
    display_phone_number: &str,
    event: &str,
    old_limit: Option<&str>,
    limit: &str,
) -> Value {
    let mut value = json!({
        "display_phone_number": display_phone_number,
        "event": event,
        "current_limit": limit,
        "max_daily_conversations_per_business": limit,
    });
    if let Some(old) = old_limit {
        value["old_limit"] = json!(old);
    }
    value
}

/// `phone_number_name_update`: `decision` (`APPROVED`, `DEFERRED`, `REJECTED`), the
/// requested name, and `rejection_reason` (`NONE` unless rejected).
pub fn name_update(
    display_phone_number: &str,
    decision: &str,
    requested_verified_name: &str,
    rejection_reason: Option<&str>,
) -> Value {
    json!({
        "display_phone_number": display_phone_number,
        "decision": decision,
        "requested_verified_name": requested_verified_name,
        "rejection_reason": rejection_reason.unwrap_or("NONE"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hex_hmac_of_the_raw_body() {
        // HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog")
        assert_eq!(
            signature("key", b"The quick brown fox jumps over the lazy dog"),
            "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    #[test]
    fn a_delivery_has_one_entry_with_one_change_as_meta_batches_them() {
        let body = delivery(
            "123",
            "phone_number_quality_update",
            json!({"event": "UPGRADE"}),
        );
        assert_eq!(body["object"], "whatsapp_business_account");
        assert_eq!(body["entry"][0]["id"], "123");
        assert!(body["entry"][0]["time"].as_u64().unwrap() > 1_700_000_000);
        assert_eq!(
            body["entry"][0]["changes"][0]["field"],
            "phone_number_quality_update"
        );
    }
}
