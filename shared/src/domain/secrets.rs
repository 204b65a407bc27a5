//! What each number keeps in Secrets Manager: Meta's business token and the 2FA PIN. These
//! types never print their values.

use std::fmt;

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::time::Timestamp;

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A random 6-digit PIN, generated and stored before the register call so a retry sends the
/// same one.
pub fn generate_pin() -> Secret {
    Secret(format!("{:06}", rand::rng().random_range(0..1_000_000u32)))
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NumberSecrets {
    pub token: Secret,
    pub pin: Secret,
    /// Not secret; kept here so a retried exchange step still knows it.
    #[serde(default, with = "super::time::option")]
    pub token_expires_at: Option<Timestamp>,
    /// The reconnect whose code gave this token (`None`: the signup's own), so a redelivered
    /// reconnect exchange knows its code is already spent and its token stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnect_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_six_digits() {
        for _ in 0..100 {
            let pin = generate_pin();
            assert_eq!(pin.expose().len(), 6);
            assert!(pin.expose().bytes().all(|b| b.is_ascii_digit()));
        }
    }

    #[test]
    fn secrets_never_print() {
        let secrets = NumberSecrets {
            token: Secret::new("EAAG-token"),
            pin: Secret::new("123456"),
            token_expires_at: None,
            reconnect_id: None,
        };
        let printed = format!("{secrets:?}");
        assert!(!printed.contains("EAAG"));
        assert!(!printed.contains("123456"));
    }
}
