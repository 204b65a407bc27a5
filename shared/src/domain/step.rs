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

    /// The step whose Meta call this one makes beside its own: the PIN step reads the phone's
    /// profile while it sets the PIN (Meta's two calls are independent, and the profile is what
    /// registration made of the phone, which the PIN leaves as it is), so a chain whose two
    /// answers both arrived skips [`Step::FetchProfile`] and one Meta call's wait.
    pub fn runs_beside(self) -> Option<Step> {
        match self {
            Step::ConfigurePin => Some(Step::FetchProfile),
            _ => None,
        }
    }

    /// The steps a message of this step's run may have sent, done: the next one, and when this
    /// step ran the next one's call beside its own, the one after it.
    pub fn may_hand_over_to(self, onboarding: Onboarding) -> [Option<Step>; 2] {
        let next = self.next_for(onboarding);
        let past_beside = next
            .filter(|next| self.runs_beside() == Some(*next))
            .and_then(|beside| beside.next_for(onboarding));
        [next, past_beside]
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
    fn the_pin_step_reads_the_profile_beside_the_pin_and_no_other_step_runs_one_beside() {
        assert_eq!(Step::ConfigurePin.runs_beside(), Some(Step::FetchProfile));
        for step in Step::ALL.into_iter().filter(|s| *s != Step::ConfigurePin) {
            assert_eq!(step.runs_beside(), None, "{step}");
        }
    }

    #[test]
    fn the_pin_step_may_have_handed_over_to_the_profile_or_past_it_to_the_activation() {
        assert_eq!(
            Step::ConfigurePin.may_hand_over_to(Onboarding::CloudApi),
            [Some(Step::FetchProfile), Some(Step::ActivateNumber)]
        );
        assert_eq!(
            Step::RegisterNumber.may_hand_over_to(Onboarding::CloudApi),
            [Some(Step::ConfigurePin), None]
        );
        assert_eq!(
            Step::SubscribeWaba.may_hand_over_to(Onboarding::Coexistence),
            [Some(Step::FetchProfile), None]
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
