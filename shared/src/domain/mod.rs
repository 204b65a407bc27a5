pub mod api_key;
pub mod event;
pub mod history;
pub mod ids;
pub mod lifecycle;
pub mod messages;
pub mod meta;
pub mod number;
pub mod number_cursor;
pub mod secrets;
pub mod signup_link;
pub mod signup_session;
pub mod status;
pub mod step;
pub mod time;
pub mod view;
pub mod waba_signup;

pub use event::{EventEnvelope, EventType, new_event_id};
pub use ids::{AccountId, ApiKeyId, NumberId};
pub use number::{
    CanSendMessage, FailureReason, Health, HealthIssue, NameDecision, Number, Onboarding,
    QualityRating, Reconnect, Restriction, RestrictionMarker, TokenStatus,
};
pub use status::{Move, RefusedTransition, Status, Transition, UnknownStatus, transition};
pub use step::Step;
pub use time::Timestamp;
