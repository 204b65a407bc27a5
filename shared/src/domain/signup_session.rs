//! What happened to a signup link: issued, opened in the hosted page, cancelled at a step,
//! failed with Meta's error, completed with a number, revoked or expired. The link's `state`
//! token (see [`super::signup_link`]) is the credential; this is its record.

use serde::Serialize;

use super::ids::{AccountId, NumberId};
use super::number::FailureReason;
use super::time::{self, Timestamp};
use super::waba_signup::WabaOutcome;

/// Longest texts the page may report (Meta's error messages are short sentences).
pub const MAX_STEP_LEN: usize = 64;
pub const MAX_ERROR_MESSAGE_LEN: usize = 500;
pub const MAX_ERROR_ID_LEN: usize = 64;

/// How long a link's record stays readable after the link expires (then the table's TTL
/// removes it).
pub const RECORD_RETENTION: chrono::Duration = chrono::Duration::days(30);

/// What the hosted page reported last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    /// The page was opened in a browser (its script ran).
    Opened,
    /// The user left Embedded Signup at `step` (Meta's `current_step`).
    Cancelled { step: String },
    /// Meta's flow reported an error.
    Failed(MetaSignupError),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MetaSignupError {
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

impl Report {
    pub fn kind(&self) -> &'static str {
        match self {
            Report::Opened => "opened",
            Report::Cancelled { .. } => "cancelled",
            Report::Failed(_) => "failed",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignupSession {
    pub link_id: String,
    pub account_id: AccountId,
    pub created_at: Timestamp,
    /// When the link stops working.
    pub expires_at: Timestamp,
    pub redirect_url: Option<String>,
    /// The number the link created (the link is used).
    pub number_id: Option<NumberId>,
    pub used_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    /// The first time the page was opened.
    pub opened_at: Option<Timestamp>,
    /// The page's latest report and when it came.
    pub last_report: Option<(Report, Timestamp)>,
    /// The WABA-only signup that consumed the link (`wsu_…`), and how it ended once it did.
    pub waba_signup: Option<(String, Option<WabaOutcome>)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    Unused,
    Opened,
    Cancelled,
    Failed,
    /// A WABA-only signup used the link and is listing the WABA's phones.
    Connecting,
    Completed,
    Expired,
    Revoked,
}

impl SessionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Unused => "unused",
            SessionState::Opened => "opened",
            SessionState::Cancelled => "cancelled",
            SessionState::Failed => "failed",
            SessionState::Connecting => "connecting",
            SessionState::Completed => "completed",
            SessionState::Expired => "expired",
            SessionState::Revoked => "revoked",
        }
    }
}

impl SignupSession {
    pub fn new(
        link_id: String,
        account_id: AccountId,
        created_at: Timestamp,
        expires_at: Timestamp,
        redirect_url: Option<String>,
    ) -> SignupSession {
        SignupSession {
            link_id,
            account_id,
            created_at,
            expires_at,
            redirect_url,
            number_id: None,
            used_at: None,
            revoked_at: None,
            opened_at: None,
            last_report: None,
            waba_signup: None,
        }
    }

    /// The numbers the link created: its own, or those of its WABA-only signup.
    pub fn number_ids(&self) -> Vec<NumberId> {
        match (&self.number_id, &self.waba_signup) {
            (Some(number), _) => vec![number.clone()],
            (None, Some((_, Some(WabaOutcome::Completed { number_ids, .. })))) => {
                number_ids.clone()
            }
            _ => Vec::new(),
        }
    }

    /// Why the link's WABA-only signup onboarded nothing.
    pub fn waba_failure(&self) -> Option<&FailureReason> {
        match &self.waba_signup {
            Some((_, Some(WabaOutcome::Failed(reason)))) => Some(reason),
            _ => None,
        }
    }

    /// Completed and revoked are final; an unused link past its expiry is expired; otherwise
    /// the page's latest report (a cancelled or failed signup can be tried again while the link
    /// lives).
    pub fn state(&self, now: Timestamp) -> SessionState {
        if !self.number_ids().is_empty() {
            return SessionState::Completed;
        }
        // A WABA-only signup consumed the link: it ends with its own outcome.
        if let Some((_, outcome)) = &self.waba_signup {
            return match outcome {
                None => SessionState::Connecting,
                Some(_) => SessionState::Failed,
            };
        }
        if self.revoked_at.is_some() {
            return SessionState::Revoked;
        }
        if self.expires_at <= now {
            return SessionState::Expired;
        }
        match &self.last_report {
            None => SessionState::Unused,
            Some((Report::Opened, _)) => SessionState::Opened,
            Some((Report::Cancelled { .. }, _)) => SessionState::Cancelled,
            Some((Report::Failed(_), _)) => SessionState::Failed,
        }
    }

    /// Whether a callback or the page may still use the link.
    pub fn is_usable(&self, now: Timestamp) -> bool {
        self.used_at.is_none()
            && self.number_id.is_none()
            && self.waba_signup.is_none()
            && self.revoked_at.is_none()
            && self.expires_at > now
    }

    /// The contract's `SignupLink` object.
    pub fn view(&self, now: Timestamp) -> serde_json::Value {
        let mut view = serde_json::json!({
            "id": self.link_id,
            "state": self.state(now).as_str(),
            "createdAt": time::format(&self.created_at),
            "expiresAt": time::format(&self.expires_at),
        });
        let mut set = |name: &str, value: serde_json::Value| {
            if let Some(object) = view.as_object_mut() {
                object.insert(name.to_string(), value);
            }
        };
        if let Some(url) = &self.redirect_url {
            set("redirectUrl", url.clone().into());
        }
        if let Some(number) = &self.number_id {
            set("numberId", number.as_str().into());
        }
        if let Some((id, outcome)) = &self.waba_signup {
            set("wabaSignupId", id.clone().into());
            set("numberIds", serde_json::json!(self.number_ids()));
            if let Some(WabaOutcome::Failed(reason)) = outcome {
                set(
                    "failureReason",
                    serde_json::to_value(reason).unwrap_or_default(),
                );
            }
        }
        if let Some(at) = &self.used_at {
            set("completedAt", time::format(at).into());
        }
        if let Some(at) = &self.revoked_at {
            set("revokedAt", time::format(at).into());
        }
        if let Some(at) = &self.opened_at {
            set("openedAt", time::format(at).into());
        }
        if let Some((report, at)) = &self.last_report {
            match report {
                Report::Opened => {}
                Report::Cancelled { step } => {
                    set("cancelledAt", time::format(at).into());
                    set("cancelledAtStep", step.clone().into());
                }
                Report::Failed(error) => {
                    set("failedAt", time::format(at).into());
                    set("metaError", serde_json::to_value(error).unwrap_or_default());
                }
            }
        }
        view
    }
}

/// Where a page of links ends, to continue after it: the last link's creation time and id
/// (the list's order), as an opaque URL-safe text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkCursor {
    pub created_at: Timestamp,
    pub link_id: String,
}

impl LinkCursor {
    pub fn of(link: &SignupSession) -> LinkCursor {
        LinkCursor {
            created_at: link.created_at,
            link_id: link.link_id.clone(),
        }
    }

    /// The sort key of the list order: `{createdAt}#{linkId}`.
    pub fn sort_key(&self) -> String {
        format!("{}#{}", time::format(&self.created_at), self.link_id)
    }

    /// `{createdAt in unix milliseconds}.{linkId}`: plain, so the document's pattern for it
    /// (`^[0-9]{1,15}\.lnk_[A-Za-z0-9]{1,60}$`) says exactly what [`LinkCursor::parse`] takes.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.created_at.timestamp_millis(), self.link_id)
    }

    /// `None` for anything outside [`LinkCursor::encode`]'s shape.
    pub fn parse(text: &str) -> Option<LinkCursor> {
        let (millis, link_id) = text.split_once('.')?;
        let digits =
            !millis.is_empty() && millis.len() <= 15 && millis.bytes().all(|b| b.is_ascii_digit());
        let suffix = link_id.strip_prefix("lnk_")?;
        let plausible_id = !suffix.is_empty()
            && suffix.len() <= 60
            && suffix.bytes().all(|b| b.is_ascii_alphanumeric());
        if !(digits && plausible_id) {
            return None;
        }
        let created_at = chrono::DateTime::from_timestamp_millis(millis.parse().ok()?)?;
        Some(LinkCursor {
            created_at,
            link_id: link_id.to_string(),
        })
    }
}

/// Link ids come from URLs: anything the signer could not have issued is simply not found.
pub fn plausible_link_id(text: &str) -> bool {
    text.len() > 4
        && text.len() <= 64
        && text.starts_with("lnk_")
        && text[4..].bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn session() -> SignupSession {
        let now = time::now();
        SignupSession::new(
            "lnk_1".into(),
            AccountId::from("acc_1".to_string()),
            now,
            now + Duration::hours(24),
            None,
        )
    }

    #[test]
    fn a_link_moves_through_its_states() {
        let now = time::now();
        let mut link = session();
        assert_eq!(link.state(now), SessionState::Unused);
        link.last_report = Some((Report::Opened, now));
        assert_eq!(link.state(now), SessionState::Opened);
        link.last_report = Some((
            Report::Cancelled {
                step: "PHONE_NUMBER_SETUP".into(),
            },
            now,
        ));
        assert_eq!(link.state(now), SessionState::Cancelled);
        assert_eq!(link.view(now)["cancelledAtStep"], "PHONE_NUMBER_SETUP");
        assert!(link.is_usable(now), "a cancelled signup can be tried again");
        assert_eq!(link.state(now + Duration::hours(25)), SessionState::Expired);
        link.number_id = Some(NumberId::from("num_1".to_string()));
        assert_eq!(
            link.state(now + Duration::hours(25)),
            SessionState::Completed
        );
        assert!(!link.is_usable(now));
    }

    #[test]
    fn a_cursor_reads_back_and_garbage_is_refused() {
        let cursor = LinkCursor::of(&session());
        let read = LinkCursor::parse(&cursor.encode()).expect("a cursor reads back");
        // The list order is by the sort key, to the millisecond, as the index stores it.
        assert_eq!(read.sort_key(), cursor.sort_key());
        for bad in [
            "",
            "!!!",
            "bm90aGluZw",
            &"a".repeat(300),
            "1.lnk_",
            "x1.lnk_a",
            "1.abc_a",
            "1234567890123456.lnk_a",
            "1.lnk_a-b",
        ] {
            assert_eq!(LinkCursor::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_waba_only_signup_connects_then_completes_with_its_numbers_or_fails_with_why() {
        let now = time::now();
        let mut link = session();
        link.used_at = Some(now);
        link.waba_signup = Some(("wsu_1".into(), None));
        assert_eq!(link.state(now), SessionState::Connecting);
        assert!(!link.is_usable(now));
        assert_eq!(link.view(now)["numberIds"], serde_json::json!([]));

        let numbers = vec![
            NumberId::from("n1".to_string()),
            NumberId::from("n2".to_string()),
        ];
        link.waba_signup = Some((
            "wsu_1".into(),
            Some(WabaOutcome::Completed {
                number_ids: numbers.clone(),
                skipped: vec![],
            }),
        ));
        assert_eq!(
            link.state(now + Duration::hours(25)),
            SessionState::Completed
        );
        assert_eq!(link.number_ids(), numbers);
        assert_eq!(link.view(now)["numberIds"], serde_json::json!(["n1", "n2"]));

        let reason = crate::domain::lifecycle::waba::no_eligible_phones(0);
        link.waba_signup = Some(("wsu_1".into(), Some(WabaOutcome::Failed(reason))));
        assert_eq!(link.state(now), SessionState::Failed);
        assert_eq!(
            link.view(now)["failureReason"]["code"],
            "no_eligible_phones"
        );
        assert!(!link.is_usable(now), "a used link is not tried again");
    }

    #[test]
    fn a_revoked_link_is_revoked_and_unusable() {
        let now = time::now();
        let mut link = session();
        link.revoked_at = Some(now);
        assert_eq!(link.state(now), SessionState::Revoked);
        assert!(!link.is_usable(now));
    }
}
