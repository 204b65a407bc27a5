//! Signup-link `state` tokens: signed (HMAC-SHA256), expiring, naming the account. Single use
//! is enforced by the store, which consumes the link in the transaction creating the number.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::ids::AccountId;
use super::secrets::Secret;
use super::time::Timestamp;

const VERSION: &str = "v1";
pub const LINK_LIFETIME: Duration = Duration::hours(24);

#[derive(Clone)]
pub struct LinkSigner {
    key: Secret,
}

#[derive(Serialize, Deserialize)]
struct Claims {
    a: String,
    l: String,
    e: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedLink {
    pub state: String,
    pub link_id: String,
    pub expires_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedLink {
    pub account_id: AccountId,
    pub link_id: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("the signup link is not valid")]
    Invalid,
    #[error("the signup link has expired")]
    Expired,
}

impl LinkSigner {
    pub fn new(key: Secret) -> LinkSigner {
        LinkSigner { key }
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length.
        Hmac::<Sha256>::new_from_slice(self.key.expose().as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"))
    }

    pub fn issue(&self, account: &AccountId, now: Timestamp) -> IssuedLink {
        let link_id = format!("lnk_{}", crate::domain::ids::random_id());
        let lifetime_end = now + LINK_LIFETIME;
        let expires_at =
            DateTime::from_timestamp(lifetime_end.timestamp(), 0).unwrap_or(lifetime_end);
        IssuedLink {
            state: self.state(account, &link_id, expires_at),
            link_id,
            expires_at,
        }
    }

    /// The `state` of the link `link_id` of `account` expiring at `expires_at` (whole seconds):
    /// the same text every time, so a link's state need not be kept to be shown again.
    pub fn state(&self, account: &AccountId, link_id: &str, expires_at: Timestamp) -> String {
        let claims = Claims {
            a: account.to_string(),
            l: link_id.to_string(),
            e: expires_at.timestamp(),
        };
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap_or_default());
        let mut mac = self.mac();
        mac.update(format!("{VERSION}.{payload}").as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{VERSION}.{payload}.{signature}")
    }

    pub fn verify(&self, state: &str, now: Timestamp) -> Result<VerifiedLink, LinkError> {
        let mut parts = state.split('.');
        let (Some(VERSION), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(LinkError::Invalid);
        };
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| LinkError::Invalid)?;
        let mut mac = self.mac();
        mac.update(format!("{VERSION}.{payload}").as_bytes());
        mac.verify_slice(&signature)
            .map_err(|_| LinkError::Invalid)?;
        let claims: Claims = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or(LinkError::Invalid)?;
        if claims.e <= now.timestamp() {
            return Err(LinkError::Expired);
        }
        Ok(VerifiedLink {
            account_id: AccountId::from(claims.a),
            link_id: claims.l,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time;

    fn signer() -> LinkSigner {
        LinkSigner::new(Secret::new("k".repeat(64)))
    }

    #[test]
    fn an_issued_state_verifies_to_its_account() {
        let account = AccountId::from("acc_1".to_string());
        let issued = signer().issue(&account, time::now());
        let verified = signer().verify(&issued.state, time::now()).unwrap();
        assert_eq!(verified.account_id, account);
        assert_eq!(verified.link_id, issued.link_id);
    }

    #[test]
    fn a_tampered_state_is_invalid() {
        let issued = signer().issue(&AccountId::from("acc_1".to_string()), time::now());
        let forged_claims = URL_SAFE_NO_PAD.encode(br#"{"a":"acc_2","l":"x","e":99999999999}"#);
        let parts: Vec<&str> = issued.state.split('.').collect();
        let forged = format!("{}.{}.{}", parts[0], forged_claims, parts[2]);
        assert_eq!(
            signer().verify(&forged, time::now()),
            Err(LinkError::Invalid)
        );
        let other_key = LinkSigner::new(Secret::new("other"));
        assert_eq!(
            other_key.verify(&issued.state, time::now()),
            Err(LinkError::Invalid)
        );
        assert_eq!(
            signer().verify("garbage", time::now()),
            Err(LinkError::Invalid)
        );
    }

    #[test]
    fn a_links_state_signed_again_is_the_state_it_was_issued_with() {
        let account = AccountId::from("acc_1".to_string());
        let issued = signer().issue(&account, time::now());
        assert_eq!(
            signer().state(&account, &issued.link_id, issued.expires_at),
            issued.state
        );
    }

    #[test]
    fn an_old_state_has_expired() {
        let issued = signer().issue(&AccountId::from("acc_1".to_string()), time::now());
        let later = time::now() + LINK_LIFETIME + Duration::seconds(1);
        assert_eq!(
            signer().verify(&issued.state, later),
            Err(LinkError::Expired)
        );
    }
}
