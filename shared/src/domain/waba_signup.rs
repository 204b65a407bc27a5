//! A WABA-only signup: Meta's Embedded Signup finished with `FINISH_ONLY_WABA` (the customer
//! shared a WhatsApp Business Account but picked no phone number), so the signup names a WABA
//! and a code, not a phone. After the code exchange the chain lists the WABA's phone numbers
//! and creates one `PENDING` number per phone that is not live elsewhere; each continues down
//! the normal chain. Its lifecycle is pure code in `domain::lifecycle::waba`.

use sha2::{Digest, Sha256};

use super::ids::{AccountId, NumberId};
use super::number::FailureReason;
use super::time::{self, Timestamp};

/// `wsu_…`: the signup's id, in its messages and in the callback's answer.
pub fn generate_id() -> String {
    format!("wsu_{}", crate::domain::ids::random_id())
}

/// Ids come from messages: anything [`generate_id`] could not have made is not one.
pub fn plausible_id(text: &str) -> bool {
    text.len() > 4
        && text.len() <= 64
        && text.starts_with("wsu_")
        && text[4..]
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// How a WABA-only signup ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WabaOutcome {
    /// Every eligible phone has its number (`number_ids`, in Meta's order); `skipped` are the
    /// phones already live in a number (of any account), left alone.
    Completed {
        number_ids: Vec<NumberId>,
        skipped: Vec<String>,
    },
    /// Nothing was onboarded: the exchange or the listing failed, or no phone was eligible.
    Failed(FailureReason),
}

impl WabaOutcome {
    pub fn state(&self) -> &'static str {
        match self {
            WabaOutcome::Completed { .. } => "completed",
            WabaOutcome::Failed(_) => "failed",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct WabaSignup {
    pub id: String,
    pub account_id: AccountId,
    pub waba_id: String,
    /// The signup link the callback consumed, if it came with one (the link then shows the
    /// outcome too).
    pub link_id: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// `None` while the exchange and the listing run.
    pub outcome: Option<WabaOutcome>,
    /// The last transient error; becomes the outcome's failure if the retries run out.
    pub last_error: Option<FailureReason>,
    /// When the signup's own copy of the token was scheduled for deletion (each number keeps
    /// its own copy in its own secret).
    pub token_deleted_at: Option<Timestamp>,
    /// Bumped by every write; each write is conditioned on the version it read.
    pub version: u64,
}

impl WabaSignup {
    pub fn new(
        account_id: AccountId,
        waba_id: String,
        link_id: Option<String>,
        at: Timestamp,
    ) -> WabaSignup {
        WabaSignup {
            id: generate_id(),
            account_id,
            waba_id,
            link_id,
            created_at: at,
            updated_at: at,
            outcome: None,
            last_error: None,
            token_deleted_at: None,
            version: 1,
        }
    }

    /// Where the exchanged token waits in the vault until each number has its own copy: the
    /// vault is keyed by number id, and a `wsu_` id can never be one (number ids have no `_`).
    pub fn vault_key(&self) -> NumberId {
        NumberId::from(self.id.clone())
    }

    /// The number this signup creates for `phone_number_id`: derived from the signup, its WABA
    /// and the phone, so a listing run twice (a redelivery, a crash midway) finds the numbers
    /// the first run created instead of creating more. The signup's id is part of it because
    /// the same WABA signed up again later (after a disconnect) must get new numbers.
    pub fn number_id_for(&self, phone_number_id: &str) -> NumberId {
        let digest = Sha256::digest(format!(
            "{}\n{}\n{}",
            self.id, self.waba_id, phone_number_id
        ));
        let hex = hex::encode(digest);
        NumberId::from(hex[..32].to_string())
    }

    /// The contract's `WabaSignup` object.
    pub fn view(&self) -> serde_json::Value {
        let mut view = serde_json::json!({
            "id": self.id,
            "wabaId": self.waba_id,
            "state": self.outcome.as_ref().map_or("pending", WabaOutcome::state),
            "numberIds": [],
            "createdAt": time::format(&self.created_at),
            "updatedAt": time::format(&self.updated_at),
        });
        match &self.outcome {
            Some(WabaOutcome::Completed {
                number_ids,
                skipped,
            }) => {
                view["numberIds"] = serde_json::json!(number_ids);
                view["skippedPhoneNumberIds"] = serde_json::json!(skipped);
            }
            Some(WabaOutcome::Failed(reason)) => {
                view["failureReason"] = serde_json::to_value(reason).unwrap_or_default();
            }
            None => {}
        }
        view
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signup() -> WabaSignup {
        WabaSignup::new(
            AccountId::from("acc_1".to_string()),
            "100".into(),
            None,
            time::now(),
        )
    }

    #[test]
    fn a_phone_s_number_id_is_the_same_every_time_and_a_valid_number_id() {
        let signup = signup();
        let id = signup.number_id_for("200");
        assert_eq!(id, signup.number_id_for("200"));
        assert_ne!(id, signup.number_id_for("201"));
        assert!(NumberId::parse(id.as_str()).is_some());
    }

    #[test]
    fn another_signup_of_the_same_waba_gets_other_numbers() {
        assert_ne!(signup().number_id_for("200"), signup().number_id_for("200"));
    }

    #[test]
    fn the_vault_key_is_never_a_number_id() {
        let signup = signup();
        assert!(plausible_id(&signup.id));
        assert!(NumberId::parse(signup.vault_key().as_str()).is_none());
    }
}
