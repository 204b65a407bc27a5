//! How Meta's errors are read (META.md "Errors"): branch on `code` and `error_subcode`, never
//! on the message.

use std::fmt;

use super::FailureReason;
use super::Step;

/// What to do about an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Rate limits, maintenance, 5xx, timeouts: retry with backoff.
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
}

const TRANSIENT_CODES: &[i64] = &[
    1, 2, 4, 17, 341, 368, 80007, 130429, 131016, 131057, 133004, 133015,
];
pub const DISPLAY_NAME_NOT_READY: i64 = 2388001;

pub fn classify(http_status: u16, code: i64, subcode: Option<i64>, is_transient: bool) -> Retry {
    if code == 100 && subcode == Some(DISPLAY_NAME_NOT_READY) {
        Retry::Slowly
    } else if http_status >= 500 || is_transient || TRANSIENT_CODES.contains(&code) {
        Retry::Soon
    } else {
        Retry::Never
    }
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
        }
    }

    /// A failure with no usable answer from Meta: always worth retrying.
    pub fn transport(code: &str, message: impl Into<String>) -> MetaError {
        MetaError {
            http_status: 0,
            code: code.to_string(),
            subcode: None,
            message: message.into(),
            retry: Retry::Soon,
        }
    }

    pub fn failure_reason(&self, step: Step) -> FailureReason {
        FailureReason {
            step: step.as_str().to_string(),
            code: match self.subcode {
                Some(sub) if sub != 0 => format!("{}/{sub}", self.code),
                _ => self.code.clone(),
            },
            message: self.message.clone(),
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

    #[test]
    fn rate_limits_and_server_errors_are_retried_soon() {
        for code in [4, 17, 80007, 130429, 133004, 131057] {
            assert_eq!(classify(400, code, None, false), Retry::Soon, "{code}");
        }
        assert_eq!(classify(503, 1, None, false), Retry::Soon);
        assert_eq!(classify(400, 999, None, true), Retry::Soon);
    }

    #[test]
    fn display_name_not_ready_is_retried_slowly() {
        assert_eq!(classify(400, 100, Some(2388001), false), Retry::Slowly);
    }

    #[test]
    fn permissions_pin_and_token_errors_are_permanent() {
        for code in [
            100, 10, 200, 299, 190, 133005, 133006, 133008, 133009, 131031, 133016,
        ] {
            assert_eq!(classify(400, code, None, false), Retry::Never, "{code}");
        }
    }

    #[test]
    fn failure_reasons_carry_code_and_subcode() {
        let err = MetaError::from_envelope(401, 190, Some(463), false, "expired".into());
        let reason = err.failure_reason(Step::RegisterNumber);
        assert_eq!(reason.step, "REGISTER_NUMBER");
        assert_eq!(reason.code, "190/463");
    }
}
