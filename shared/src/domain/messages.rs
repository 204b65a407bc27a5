//! Bodies of the messages that travel between functions through SQS. Versioned, so a body from
//! a newer or older deployment is recognised as such instead of being half-understood.

use serde::{Deserialize, Serialize};

use super::ids::{AccountId, NumberId};
use super::secrets::Secret;
use super::step::Step;

pub const MESSAGE_VERSION: u32 = 1;

/// Where a message goes. Adapters map these to queue URLs from configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Queue {
    Step(Step),
    Events,
    Teardown,
    /// One message per (event, endpoint): each endpoint retries on its own schedule.
    WebhookDeliveries,
}

/// A body that travels between functions: it names its own queue, so a message cannot be sent
/// to a queue whose consumer reads something else, and it is serialised by the queue adapter.
pub trait Message: Serialize + Send + Sync {
    fn queue(&self) -> Queue;

    /// The number as its sender last wrote it, to go beside the body as the message attribute
    /// [`NUMBER_SNAPSHOT_ATTRIBUTE`] (see [`WithSnapshot`]).
    fn number_snapshot(&self) -> Option<&str> {
        None
    }
}

/// The SQS message attribute that carries a number's snapshot (`ports::NumberSnapshots`). An
/// attribute, not a field of the body: a consumer that does not know it (the previous version,
/// during a deploy) reads the body as before and ignores it, where an unknown body field would
/// make the message unreadable (`deny_unknown_fields`).
pub const NUMBER_SNAPSHOT_ATTRIBUTE: &str = "numberSnapshot";

/// A step message with its number as the sender committed it, so the step can condition its
/// first write on that version instead of reading the number first. The body is the step
/// message's own.
#[derive(Clone, Debug)]
pub struct WithSnapshot<'a> {
    pub message: &'a StepMessage,
    pub snapshot: String,
}

impl Serialize for WithSnapshot<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.message.serialize(serializer)
    }
}

impl Message for WithSnapshot<'_> {
    fn queue(&self) -> Queue {
        self.message.queue()
    }

    fn number_snapshot(&self) -> Option<&str> {
        Some(&self.snapshot)
    }
}

impl Message for TeardownMessage {
    fn queue(&self) -> Queue {
        Queue::Teardown
    }
}

impl Message for StepMessage {
    fn queue(&self) -> Queue {
        Queue::Step(self.step)
    }
}

impl Message for super::event::EventEnvelope {
    fn queue(&self) -> Queue {
        Queue::Events
    }
}

/// A WABA-only signup to run: exchange its code, list the WABA's phones, create their numbers.
/// It rides the exchange-token queue, since its first act is the code exchange (Meta's code
/// lives ~30 s): the exchange-token function and the dead-letter consumer read both bodies
/// ([`ExchangeBody`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WabaSignupMessage {
    pub v: u32,
    pub waba_signup_id: String,
    pub account_id: AccountId,
    pub trace_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<Secret>,
}

impl WabaSignupMessage {
    pub fn new(waba_signup_id: String, account_id: AccountId, trace_id: String) -> Self {
        WabaSignupMessage {
            v: MESSAGE_VERSION,
            waba_signup_id,
            account_id,
            trace_id,
            code: None,
        }
    }
}

impl Message for WabaSignupMessage {
    fn queue(&self) -> Queue {
        Queue::Step(Step::ExchangeToken)
    }
}

/// What the exchange-token queue (and its dead letters) carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExchangeBody {
    Step(StepMessage),
    WabaSignup(WabaSignupMessage),
}

/// Reads a step queue's body: a number's step, or a WABA-only signup (told apart by their
/// fields, each message refusing the other's).
pub fn parse_step_body(body: &str) -> Result<ExchangeBody, MessageError> {
    match parse::<StepMessage>(body) {
        Ok(message) => Ok(ExchangeBody::Step(message)),
        Err(MessageError::Malformed(step_error)) => match parse::<WabaSignupMessage>(body) {
            Ok(message) => Ok(ExchangeBody::WabaSignup(message)),
            Err(_) => Err(MessageError::Malformed(step_error)),
        },
        Err(other) => Err(other),
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TeardownMessage {
    pub v: u32,
    pub number_id: NumberId,
    pub account_id: AccountId,
}

impl TeardownMessage {
    pub fn new(number_id: NumberId, account_id: AccountId) -> Self {
        TeardownMessage {
            v: MESSAGE_VERSION,
            number_id,
            account_id,
        }
    }
}

/// One provisioning step to run. Only the first carries something secret: Meta's signup
/// `code`, which lives about 30 seconds and is single use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StepMessage {
    pub v: u32,
    pub number_id: NumberId,
    pub account_id: AccountId,
    pub step: Step,
    pub trace_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<Secret>,
    /// The reconnect this step belongs to (`rcn_…`); absent for provisioning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnect: Option<String>,
    /// Sent again by a repeated signup callback (see `api::signup`): a copy sent before may be
    /// running, so the exchange looks for its token before spending the code.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resent: bool,
}

impl StepMessage {
    pub fn new(number_id: NumberId, account_id: AccountId, step: Step, trace_id: String) -> Self {
        StepMessage {
            v: MESSAGE_VERSION,
            number_id,
            account_id,
            step,
            trace_id,
            code: None,
            reconnect: None,
            resent: false,
        }
    }

    /// What resumes a retried number (`POST /api/numbers/{id}/retry`) at its step, on a new
    /// trace; `None` when it is at no step.
    pub fn resuming(number: &super::Number) -> Option<Self> {
        number.provisioning_step.map(|step| {
            StepMessage::new(
                number.id.clone(),
                number.account_id.clone(),
                step,
                format!("trc_{}", crate::domain::ids::random_id()),
            )
        })
    }

    /// A step of reconnect `reconnect_id`.
    pub fn reconnecting(
        number_id: NumberId,
        account_id: AccountId,
        step: Step,
        trace_id: String,
        reconnect_id: String,
    ) -> Self {
        StepMessage {
            reconnect: Some(reconnect_id),
            ..StepMessage::new(number_id, account_id, step, trace_id)
        }
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("message body is not a recognised message: {0}")]
    Malformed(String),
    #[error("message version {0} is not supported (this deployment reads version 1)")]
    UnknownVersion(u64),
}

/// Reads a versioned body: an unknown version is named as such, not half-understood.
pub fn parse<T: serde::de::DeserializeOwned>(body: &str) -> Result<T, MessageError> {
    let value: serde_json::Value =
        serde_json::from_str(body).map_err(|e| MessageError::Malformed(e.to_string()))?;
    match value.get("v").and_then(serde_json::Value::as_u64) {
        Some(1) => {}
        Some(other) => return Err(MessageError::UnknownVersion(other)),
        None => return Err(MessageError::Malformed("no version field `v`".into())),
    }
    serde_json::from_value(value).map_err(|e| MessageError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_message_round_trips_without_its_code_when_absent() {
        let message = StepMessage::new(
            NumberId::from("n1".to_string()),
            AccountId::from("a1".to_string()),
            Step::RegisterNumber,
            "t".into(),
        );
        let body = serde_json::to_string(&message).unwrap();
        assert!(!body.contains("code"));
        assert_eq!(parse::<StepMessage>(&body).unwrap(), message);
    }

    #[test]
    fn a_waba_signup_message_is_told_apart_from_a_step_message() {
        let mut message = WabaSignupMessage::new(
            "wsu_1".into(),
            AccountId::from("a1".to_string()),
            "t".into(),
        );
        message.code = Some(Secret::new("AQB-code"));
        let body = serde_json::to_string(&message).unwrap();
        assert_eq!(
            parse_step_body(&body).unwrap(),
            ExchangeBody::WabaSignup(message.clone())
        );
        assert_eq!(message.queue(), Queue::Step(Step::ExchangeToken));
        let step = StepMessage::new(
            NumberId::from("n1".to_string()),
            AccountId::from("a1".to_string()),
            Step::ExchangeToken,
            "t".into(),
        );
        let body = serde_json::to_string(&step).unwrap();
        assert_eq!(parse_step_body(&body).unwrap(), ExchangeBody::Step(step));
        assert!(matches!(
            parse_step_body(r#"{"v":1,"numberId":"n"}"#),
            Err(MessageError::Malformed(_))
        ));
    }

    #[test]
    fn unknown_versions_and_garbage_are_told_apart() {
        assert_eq!(
            parse::<StepMessage>(r#"{"v":2,"numberId":"n"}"#),
            Err(MessageError::UnknownVersion(2))
        );
        assert!(matches!(
            parse::<StepMessage>("not json"),
            Err(MessageError::Malformed(_))
        ));
        assert!(matches!(
            parse::<StepMessage>(r#"{"v":1}"#),
            Err(MessageError::Malformed(_))
        ));
    }
}
