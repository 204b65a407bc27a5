//! Bodies of the messages that travel between functions through SQS. Versioned, so a body from
//! a newer or older deployment is recognised as such instead of being half-understood.

use serde::{Deserialize, Serialize};

use super::ids::{AccountId, NumberId};
use super::step::Step;

pub const MESSAGE_VERSION: u32 = 1;

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

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepMessage {
    pub v: u32,
    pub number_id: NumberId,
    pub account_id: AccountId,
    pub step: Step,
    pub trace_id: String,
}
