//! How Meta's errors are read (META.md "Errors"): branch on `code` and `error_subcode`, never
//! on the message.

use std::fmt;

use super::FailureReason;
use super::Step;
use super::time::{self, Timestamp};

/// What to do about an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Maintenance, 5xx, timeouts, rate limits: retry with backoff (a provisioning step waits
    /// a rate limit out in minutes, `provisioning::RetryPolicy::rate_limit_delay`).
    Soon,
    /// 2388001, the display name is not provisioned yet: retry for hours, not seconds.
    Slowly,
    /// Permissions, invalid parameters, PIN mismatch, expired token: the number fails.
    Never,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaError {
    /// 0 when no HTTP response came back (timeouts, connection errors).
    pub http_status: u16,
    /// Meta's `code`, or a name of ours for failures without one (`timeout`, `network`, ...).
    pub code: String,
    pub subcode: Option<i64>,
    pub message: String,
    pub retry: Retry,
    pub kind: ErrorKind,
    /// Meta's text for the end user (`error_user_title`, `error_user_msg`) and its
    /// `error_data.details`, when it sends them; scrubbed of anything that looks like a secret.
    pub user_text: Box<UserText>,
}

/// The parts of Meta's error envelope meant for people.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserText {
    pub title: Option<String>,
    pub message: Option<String>,
    pub details: Option<String>,
}

/// Longest text kept from Meta's envelope.
const MAX_TEXT: usize = 1000;

/// Meta's text as we keep it: trimmed, bounded, and with any long token-like run (an access
/// token, a secret, a code echoed back) replaced, so nothing secret reaches a client or a log.
pub fn scrub(text: &str) -> Option<String> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(text.len().min(MAX_TEXT));
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= 32 {
            out.push_str("[redacted]");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    if out.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    Some(out)
}

impl UserText {
    pub fn new(title: Option<&str>, message: Option<&str>, details: Option<&str>) -> UserText {
        UserText {
            title: title.and_then(scrub),
            message: message.and_then(scrub),
            details: details.and_then(scrub),
        }
    }
}

/// What an error means, read from its code (and subcode), never from its text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// [`RATE_LIMIT_CODES`], and an HTTP 429 with or without Meta's envelope.
    RateLimited,
    /// 5xx, `is_transient`, 2, 341, 131016, 131057, 133004, 133015, and no answer at all.
    Transient,
    /// 100/2388001 on register: Meta has not processed the display name (often the customer's
    /// to fix).
    DisplayNameNotReady,
    /// 133008 / 133009: too many PIN guesses, or too fast; retry after the time Meta names.
    TimeLimited,
    /// 133000: a deregistration did not finish; deregister, then register.
    DeregisterFirst,
    /// 133016: the register/deregister limit per number (10 in 72 h) is spent; lifts 72 h on.
    RegisterLimit,
    /// 368: the WABA is restricted or disabled for a policy violation.
    PolicyBlocked,
    /// Code 1 (or 101) on the code exchange, "Error validating client secret": our app
    /// secret is wrong, a configuration error of ours, not an outage at Meta.
    ClientSecret,
    /// 190: the token is invalid, expired (463) or revoked (460).
    TokenInvalid,
    /// 10 and 200–299.
    Permission,
    /// 133005, 133006, 131031, and every other parameter error.
    Permanent,
}

pub const DISPLAY_NAME_NOT_READY: i64 = 2388001;

/// Every code Meta documents as a rate limit: the caller is throttled a while, nothing refused.
/// Graph API (developers.facebook.com/docs/graph-api/overview/rate-limiting): 4 app, 17 user,
/// 32 page, 613 custom; its Business Use Case limits 80000-80006, 80008, 80009 and 80014.
/// WhatsApp (/docs/whatsapp/cloud-api/support/error-codes, "Throttling errors"): 80007 WABA,
/// 130429 throughput, 131048 spam, 131056 pair. (133016 lifts 72 h on: `RegisterLimit`.)
pub const RATE_LIMIT_CODES: [i64; 18] = [
    4, 17, 32, 613, 80000, 80001, 80002, 80003, 80004, 80005, 80006, 80007, 80008, 80009, 80014,
    130429, 131048, 131056,
];

/// The title a rate-limit wait shows the customer when Meta sends none.
pub const RATE_LIMIT_TITLE: &str = "Meta rate limit reached";

pub const REGISTER_LIMIT: i64 = 133016;
/// 100/36009 on the code exchange: "This authorization code has been used."
pub const CODE_USED: i64 = 36009;
/// Our code for a call not made because the app secret is a placeholder.
pub const APP_SECRET_PLACEHOLDER_CODE: &str = "app_secret_placeholder";

pub fn kind_of(http_status: u16, code: i64, subcode: Option<i64>, is_transient: bool) -> ErrorKind {
    match code {
        100 if subcode == Some(DISPLAY_NAME_NOT_READY) => ErrorKind::DisplayNameNotReady,
        133016 => ErrorKind::RegisterLimit,
        133008 | 133009 => ErrorKind::TimeLimited,
        133000 => ErrorKind::DeregisterFirst,
        368 => ErrorKind::PolicyBlocked,
        190 => ErrorKind::TokenInvalid,
        code if RATE_LIMIT_CODES.contains(&code) => ErrorKind::RateLimited,
        _ if http_status == 429 => ErrorKind::RateLimited,
        10 | 200..=299 => ErrorKind::Permission,
        1 | 2 | 341 | 131016 | 131057 | 133004 | 133015 => ErrorKind::Transient,
        _ if http_status >= 500 || is_transient => ErrorKind::Transient,
        _ => ErrorKind::Permanent,
    }
}

impl ErrorKind {
    pub fn retry(self) -> Retry {
        match self {
            ErrorKind::RateLimited | ErrorKind::Transient | ErrorKind::DeregisterFirst => {
                Retry::Soon
            }
            ErrorKind::DisplayNameNotReady | ErrorKind::TimeLimited => Retry::Slowly,
            ErrorKind::RegisterLimit
            | ErrorKind::PolicyBlocked
            | ErrorKind::ClientSecret
            | ErrorKind::TokenInvalid
            | ErrorKind::Permission
            | ErrorKind::Permanent => Retry::Never,
        }
    }
}

pub fn classify(http_status: u16, code: i64, subcode: Option<i64>, is_transient: bool) -> Retry {
    kind_of(http_status, code, subcode, is_transient).retry()
}

/// Whether a reason recorded from Meta's answer ([`MetaError::failure_reason`]) is a rate
/// limit: Meta's code (before any `/subcode`) is one, or an HTTP 429 came without Meta's
/// envelope (`http_429`).
pub fn is_rate_limit(reason: &FailureReason) -> bool {
    if reason.code == "http_429" {
        return true;
    }
    reason
        .code
        .split('/')
        .next()
        .and_then(|code| code.parse::<i64>().ok())
        .is_some_and(|code| RATE_LIMIT_CODES.contains(&code))
}

impl MetaError {
    pub fn from_envelope(
        http_status: u16,
        code: i64,
        subcode: Option<i64>,
        is_transient: bool,
        message: String,
    ) -> MetaError {
        MetaError {
            http_status,
            code: code.to_string(),
            subcode,
            message,
            retry: classify(http_status, code, subcode, is_transient),
            kind: kind_of(http_status, code, subcode, is_transient),
            user_text: Box::default(),
        }
    }

    /// The error as the code exchange reads it: there, code 1 (Meta's "Error validating
    /// client secret"; 101 in older answers) is our wrong app secret, not an outage.
    pub fn on_code_exchange(mut self) -> MetaError {
        if matches!(self.code.as_str(), "1" | "101") && self.http_status < 500 {
            self.kind = ErrorKind::ClientSecret;
            self.retry = Retry::Never;
        }
        self
    }

    /// Meta's answer to a code exchanged before (`100`/`36009`).
    pub fn is_code_used(&self) -> bool {
        self.code == "100" && self.subcode == Some(CODE_USED)
    }

    /// The same error with Meta's text for people.
    pub fn with_user_text(mut self, user_text: UserText) -> MetaError {
        self.user_text = Box::new(user_text);
        self
    }

    /// The app secret is a placeholder: nothing is asked of Meta with it, and the answer is
    /// the one Meta gives a wrong secret (a configuration error of ours, never retried).
    pub fn app_secret_placeholder() -> MetaError {
        MetaError {
            http_status: 0,
            code: APP_SECRET_PLACEHOLDER_CODE.to_string(),
            subcode: None,
            message:
                "the Meta app secret (MetaAppSecret) is empty or still the template's placeholder"
                    .into(),
            retry: Retry::Never,
            kind: ErrorKind::ClientSecret,
            user_text: Box::default(),
        }
    }

    /// Whether this is [`MetaError::app_secret_placeholder`]'s answer.
    pub fn is_app_secret_placeholder(&self) -> bool {
        self.code == APP_SECRET_PLACEHOLDER_CODE
    }

    /// A failure with no usable answer from Meta: always worth retrying.
    pub fn transport(code: &str, message: impl Into<String>) -> MetaError {
        MetaError {
            http_status: 0,
            code: code.to_string(),
            subcode: None,
            message: message.into(),
            retry: Retry::Soon,
            kind: ErrorKind::Transient,
            user_text: Box::default(),
        }
    }

    /// Why a step waits out this rate limit (its `pendingReason`), and fails with it at `until`:
    /// Meta's reason, with our text for the customer when Meta sends none.
    pub fn rate_limit_reason(&self, step: Step, until: Timestamp) -> FailureReason {
        let mut reason = self.failure_reason(step);
        reason
            .user_title
            .get_or_insert_with(|| RATE_LIMIT_TITLE.to_string());
        reason.user_message.get_or_insert_with(|| {
            format!(
                "Meta is limiting how often this app may call it. This step is tried again, \
                 every few minutes at first and less often the longer the limit lasts, until \
                 {}; the number fails if the limit has not lifted by then.",
                time::format(&until)
            )
        });
        reason
    }

    pub fn failure_reason(&self, step: Step) -> FailureReason {
        FailureReason {
            step: step.as_str().to_string(),
            code: match self.subcode {
                Some(sub) if sub != 0 => format!("{}/{sub}", self.code),
                _ => self.code.clone(),
            },
            message: self.message.clone(),
            user_title: self.user_text.title.clone().or_else(|| {
                (self.kind == ErrorKind::RegisterLimit)
                    .then(|| "Registration limit reached".to_string())
            }),
            user_message: self.user_text.message.clone().or_else(|| {
                (self.kind == ErrorKind::RegisterLimit).then(|| {
                    "Meta allows 10 register and deregister requests per number in 72 hours; \
                     this number can be registered again 72 hours after the last of them."
                        .to_string()
                })
            }),
            details: self.user_text.details.clone(),
        }
    }
}

impl fmt::Display for MetaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Meta error {} (HTTP {})", self.code, self.http_status)?;
        if let Some(sub) = self.subcode {
            write!(f, " subcode {sub}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for MetaError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(http_status: u16, code: i64, subcode: Option<i64>) -> ErrorKind {
        kind_of(http_status, code, subcode, false)
    }

    #[test]
    fn code_4_is_a_rate_limit_retried_soon() {
        assert_eq!(kind(400, 4, None), ErrorKind::RateLimited);
        assert_eq!(classify(400, 4, None, false), Retry::Soon);
    }

    #[test]
    fn code_17_is_a_rate_limit() {
        assert_eq!(kind(400, 17, None), ErrorKind::RateLimited);
    }

    #[test]
    fn code_80007_is_the_waba_rate_limit() {
        assert_eq!(kind(400, 80007, None), ErrorKind::RateLimited);
    }

    #[test]
    fn code_130429_is_the_throughput_limit() {
        assert_eq!(kind(400, 130429, None), ErrorKind::RateLimited);
    }

    #[test]
    fn every_rate_limit_code_meta_documents_is_a_rate_limit_retried_not_a_failure() {
        // Graph API platform limits (app, user, page, custom), the Business Use Case limits,
        // the WABA's, and Cloud API's throughput, spam and pair limits.
        let documented = [
            4, 17, 32, 613, 80000, 80001, 80002, 80003, 80004, 80005, 80006, 80007, 80008, 80009,
            80014, 130429, 131048, 131056,
        ];
        for code in documented {
            assert_eq!(kind(400, code, None), ErrorKind::RateLimited, "{code}");
            assert_ne!(classify(400, code, None, false), Retry::Never, "{code}");
        }
        assert_eq!(kind(400, 17, Some(2446079)), ErrorKind::RateLimited);
    }

    #[test]
    fn a_reason_recorded_from_a_rate_limit_is_known_as_one() {
        let reason = |code: i64, subcode| {
            MetaError::from_envelope(400, code, subcode, false, "limited".into())
                .failure_reason(Step::SubscribeWaba)
        };
        assert!(is_rate_limit(&reason(4, None)));
        assert!(is_rate_limit(&reason(17, Some(2446079))));
        assert!(is_rate_limit(&reason(80008, None)));
        assert!(!is_rate_limit(&reason(2, None)));
        assert!(!is_rate_limit(&reason(100, Some(2388001))));
        assert!(!is_rate_limit(&reason(133016, None)));
        let bare_429 = FailureReason {
            code: "http_429".into(),
            ..FailureReason::default()
        };
        assert!(is_rate_limit(&bare_429));
    }

    #[test]
    fn a_rate_limit_s_reason_tells_the_customer_until_when_it_is_waited_out() {
        let until = time::parse("2024-01-22T10:00:00Z").unwrap();
        let err = MetaError::from_envelope(400, 4, None, true, "(#4) limit reached".into());

        let reason = err.rate_limit_reason(Step::RegisterNumber, until);

        assert_eq!(
            (reason.step.as_str(), reason.code.as_str()),
            ("REGISTER_NUMBER", "4")
        );
        assert_eq!(reason.message, "(#4) limit reached");
        assert_eq!(reason.user_title.as_deref(), Some(RATE_LIMIT_TITLE));
        assert!(
            reason
                .user_message
                .as_deref()
                .is_some_and(|m| m.contains("2024-01-22T10:00:00.000Z")),
            "{reason:?}"
        );
        let from_meta = err.with_user_text(UserText::new(Some("Slow down"), Some("Later."), None));
        let reason = from_meta.rate_limit_reason(Step::RegisterNumber, until);
        assert_eq!(reason.user_title.as_deref(), Some("Slow down"));
        assert_eq!(reason.user_message.as_deref(), Some("Later."));
    }

    #[test]
    fn an_http_429_is_a_rate_limit_with_or_without_meta_s_envelope() {
        assert_eq!(kind(429, 0, None), ErrorKind::RateLimited);
        assert_eq!(kind(429, 999, None), ErrorKind::RateLimited);
        assert_eq!(classify(429, 0, None, false), Retry::Soon);
    }

    #[test]
    fn server_errors_and_transient_answers_are_retried_soon() {
        assert_eq!(classify(503, 999, None, false), Retry::Soon);
        assert_eq!(classify(400, 999, None, true), Retry::Soon);
        for code in [2, 341, 131016, 131057, 133004, 133015] {
            assert_eq!(kind(400, code, None), ErrorKind::Transient, "{code}");
        }
    }

    #[test]
    fn code_1_is_unknown_and_retried_except_on_the_code_exchange() {
        assert_eq!(classify(400, 1, None, false), Retry::Soon);
        let exchange = MetaError::from_envelope(
            400,
            1,
            None,
            false,
            "Error validating client secret.".into(),
        )
        .on_code_exchange();
        assert_eq!(exchange.kind, ErrorKind::ClientSecret);
        assert_eq!(exchange.retry, Retry::Never);
        let outage =
            MetaError::from_envelope(500, 1, None, true, "unknown".into()).on_code_exchange();
        assert_eq!(outage.retry, Retry::Soon);
    }

    #[test]
    fn display_name_not_ready_is_retried_slowly() {
        assert_eq!(
            kind(400, 100, Some(2388001)),
            ErrorKind::DisplayNameNotReady
        );
        assert_eq!(classify(400, 100, Some(2388001), false), Retry::Slowly);
    }

    #[test]
    fn code_133008_too_many_pin_guesses_is_time_limited() {
        assert_eq!(kind(400, 133008, None), ErrorKind::TimeLimited);
        assert_eq!(classify(400, 133008, None, false), Retry::Slowly);
    }

    #[test]
    fn code_133009_pin_entered_too_fast_is_time_limited() {
        assert_eq!(kind(400, 133009, None), ErrorKind::TimeLimited);
        assert_eq!(classify(400, 133009, None, false), Retry::Slowly);
    }

    #[test]
    fn code_133000_asks_for_a_deregistration_first() {
        assert_eq!(kind(500, 133000, None), ErrorKind::DeregisterFirst);
        assert_eq!(kind(400, 133000, None), ErrorKind::DeregisterFirst);
    }

    #[test]
    fn code_368_is_a_policy_block_not_an_outage() {
        assert_eq!(kind(400, 368, None), ErrorKind::PolicyBlocked);
        assert_eq!(classify(400, 368, None, false), Retry::Never);
    }

    #[test]
    fn code_133016_is_the_register_limit_and_says_when_it_lifts() {
        let err = MetaError::from_envelope(400, 133016, None, false, "rate limit exceeded".into());
        assert_eq!(err.kind, ErrorKind::RegisterLimit);
        assert_eq!(err.retry, Retry::Never);
        let reason = err.failure_reason(Step::RegisterNumber);
        assert_eq!(reason.code, "133016");
        assert_eq!(
            reason.user_title.as_deref(),
            Some("Registration limit reached")
        );
        assert!(reason.user_message.unwrap().contains("72 hours"));
    }

    #[test]
    fn code_190_is_an_invalid_token() {
        for subcode in [None, Some(463), Some(460)] {
            assert_eq!(kind(401, 190, subcode), ErrorKind::TokenInvalid);
        }
        assert_eq!(classify(401, 190, Some(463), false), Retry::Never);
    }

    #[test]
    fn permissions_are_permanent() {
        for code in [10, 200, 250, 299] {
            assert_eq!(kind(403, code, None), ErrorKind::Permission, "{code}");
            assert_eq!(classify(403, code, None, false), Retry::Never);
        }
    }

    #[test]
    fn pin_mismatch_reverification_locked_account_and_bad_parameters_are_permanent() {
        for code in [133005, 133006, 131031, 100] {
            assert_eq!(kind(400, code, None), ErrorKind::Permanent, "{code}");
            assert_eq!(classify(400, code, None, false), Retry::Never);
        }
    }

    #[test]
    fn failure_reasons_carry_code_and_subcode() {
        let err = MetaError::from_envelope(401, 190, Some(463), false, "expired".into());
        let reason = err.failure_reason(Step::RegisterNumber);
        assert_eq!(reason.step, "REGISTER_NUMBER");
        assert_eq!(reason.code, "190/463");
    }

    #[test]
    fn failure_reasons_carry_meta_s_text_for_the_end_user() {
        let err = MetaError::from_envelope(
            400,
            100,
            Some(2388001),
            false,
            "(#100) Invalid parameter".into(),
        )
        .with_user_text(UserText::new(
            Some("Display name not approved"),
            Some("Edit the display name in WhatsApp Manager, then try again."),
            Some("Display name could not be processed"),
        ));
        let reason = err.failure_reason(Step::RegisterNumber);
        assert_eq!(
            reason.user_title.as_deref(),
            Some("Display name not approved")
        );
        assert_eq!(
            reason.user_message.as_deref(),
            Some("Edit the display name in WhatsApp Manager, then try again.")
        );
        assert_eq!(
            reason.details.as_deref(),
            Some("Display name could not be processed")
        );
        let json = serde_json::to_value(&reason).unwrap();
        assert_eq!(
            json["userMessage"],
            "Edit the display name in WhatsApp Manager, then try again."
        );
        assert_eq!(json["userTitle"], "Display name not approved");
    }

    #[test]
    fn without_meta_s_text_the_reason_has_none_of_it() {
        let reason = MetaError::from_envelope(400, 10, None, false, "(#10) no".into())
            .failure_reason(Step::SubscribeWaba);
        let json = serde_json::to_value(&reason).unwrap();
        assert_eq!(json.as_object().unwrap().len(), 3, "{json}");
    }

    #[test]
    fn token_like_runs_never_survive_in_meta_s_text() {
        let token = "EAAGm0PX4ZCpsBAKZAZBxyz0123456789abcdefghijklmnop";
        let text = scrub(&format!("Token {token} is invalid.")).unwrap();
        assert_eq!(text, "Token [redacted] is invalid.");
        assert_eq!(scrub("   "), None);
        assert!(scrub(&"é".repeat(2000)).unwrap().len() <= 1000);
    }
}
