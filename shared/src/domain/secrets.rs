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

/// What the template puts in `MetaAppSecret` until the operator puts the app's secret there.
pub const APP_SECRET_PLACEHOLDER: &str = "change-me";

/// The Meta app secret as stored: the one Meta issued for the app, or a placeholder standing
/// for none (the template's `change-me`, or nothing). A placeholder holds no value: no
/// signature is checked against it and it is never sent to Meta.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "String")]
pub enum AppSecret {
    Issued(Secret),
    Placeholder,
}

impl AppSecret {
    /// `value` as stored: empty or the template's placeholder (trimmed, any case) is
    /// [`AppSecret::Placeholder`].
    pub fn new(value: impl Into<String>) -> AppSecret {
        let value = value.into();
        let trimmed = value.trim();
        if trimmed.is_empty() || trimmed.eq_ignore_ascii_case(APP_SECRET_PLACEHOLDER) {
            AppSecret::Placeholder
        } else {
            AppSecret::Issued(Secret(value))
        }
    }

    /// The secret Meta issued; `None` for a placeholder.
    pub fn issued(&self) -> Option<&Secret> {
        match self {
            AppSecret::Issued(secret) => Some(secret),
            AppSecret::Placeholder => None,
        }
    }

    pub fn is_placeholder(&self) -> bool {
        matches!(self, AppSecret::Placeholder)
    }
}

impl From<String> for AppSecret {
    fn from(value: String) -> AppSecret {
        AppSecret::new(value)
    }
}

impl fmt::Debug for AppSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppSecret::Issued(_) => f.write_str("Issued(<redacted>)"),
            AppSecret::Placeholder => f.write_str("Placeholder"),
        }
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
    fn an_empty_or_template_app_secret_is_a_placeholder_and_holds_no_value() {
        for stored in ["change-me", "", "  ", "CHANGE-ME", " change-me\n"] {
            let secret = AppSecret::new(stored);
            assert!(secret.is_placeholder(), "{stored:?}");
            assert_eq!(secret.issued(), None, "{stored:?}");
        }
        let read: AppSecret = serde_json::from_str(r#""change-me""#).unwrap();
        assert_eq!(read, AppSecret::Placeholder);
        let issued = AppSecret::new("0123456789abcdef");
        assert_eq!(
            issued.issued().map(Secret::expose),
            Some("0123456789abcdef")
        );
        assert!(!format!("{issued:?}").contains("0123"));
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
