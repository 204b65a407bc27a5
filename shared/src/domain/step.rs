use std::fmt;

use serde::{Deserialize, Serialize};

use super::number::Onboarding;

/// The provisioning chain, in order. Each step knows its successor; the last one hands over to
/// the events queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Step {
    ExchangeToken,
    SubscribeWaba,
    RegisterNumber,
    ConfigurePin,
    FetchProfile,
    ActivateNumber,
}

impl Step {
    pub const FIRST: Step = Step::ExchangeToken;
    pub const ALL: [Step; 6] = [
        Step::ExchangeToken,
        Step::SubscribeWaba,
        Step::RegisterNumber,
        Step::ConfigurePin,
        Step::FetchProfile,
        Step::ActivateNumber,
    ];

    /// Whether a number onboarded this way runs this step.
    pub fn applies_to(self, onboarding: Onboarding) -> bool {
        !(onboarding == Onboarding::Coexistence
            && matches!(self, Step::RegisterNumber | Step::ConfigurePin))
    }

    /// The next step a number onboarded this way runs.
    pub fn next_for(self, onboarding: Onboarding) -> Option<Step> {
        let mut next = self.next();
        while let Some(step) = next {
            if step.applies_to(onboarding) {
                return Some(step);
            }
            next = step.next();
        }
        None
    }

    /// The step after this one in a reconnect of a live number: the new code is exchanged, the
    /// WABA subscribed again, the profile refreshed (registering the number only if Meta says it
    /// is not), and `ActivateNumber` finishes the reconnect. Register and PIN are not its steps.
    pub fn next_in_reconnect(self) -> Option<Step> {
        match self {
            Step::ExchangeToken => Some(Step::SubscribeWaba),
            Step::SubscribeWaba => Some(Step::FetchProfile),
            Step::RegisterNumber | Step::ConfigurePin | Step::FetchProfile => {
                Some(Step::ActivateNumber)
            }
            Step::ActivateNumber => None,
        }
    }

    pub fn next(self) -> Option<Step> {
        let position = Step::ALL.iter().position(|s| *s == self)?;
        Step::ALL.get(position + 1).copied()
    }

    /// Position in the chain, so "is this step already done?" is a comparison.
    pub fn ordinal(self) -> usize {
        Step::ALL.iter().position(|s| *s == self).unwrap_or(0)
    }

    /// The step named by [`Step::as_str`].
    pub fn parse(name: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|step| step.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Step::ExchangeToken => "EXCHANGE_TOKEN",
            Step::SubscribeWaba => "SUBSCRIBE_WABA",
            Step::RegisterNumber => "REGISTER_NUMBER",
            Step::ConfigurePin => "CONFIGURE_PIN",
            Step::FetchProfile => "FETCH_PROFILE",
            Step::ActivateNumber => "ACTIVATE_NUMBER",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_follow_the_documented_order() {
        let mut step = Step::FIRST;
        let mut seen = vec![step];
        while let Some(next) = step.next() {
            seen.push(next);
            step = next;
        }
        assert_eq!(seen, Step::ALL);
        assert_eq!(Step::ActivateNumber.next(), None);
    }

    #[test]
    fn a_reconnect_exchanges_subscribes_refreshes_and_finishes() {
        let mut step = Step::FIRST;
        let mut seen = vec![step];
        while let Some(next) = step.next_in_reconnect() {
            seen.push(next);
            step = next;
        }
        assert_eq!(
            seen,
            [
                Step::ExchangeToken,
                Step::SubscribeWaba,
                Step::FetchProfile,
                Step::ActivateNumber
            ]
        );
    }

    #[test]
    fn a_coexistence_number_skips_registration_and_the_pin() {
        assert_eq!(
            Step::SubscribeWaba.next_for(Onboarding::Coexistence),
            Some(Step::FetchProfile)
        );
        assert_eq!(
            Step::SubscribeWaba.next_for(Onboarding::CloudApi),
            Some(Step::RegisterNumber)
        );
        assert!(!Step::ConfigurePin.applies_to(Onboarding::Coexistence));
        assert!(Step::FetchProfile.applies_to(Onboarding::Coexistence));
    }
}
