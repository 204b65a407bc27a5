pub mod api_key;
pub mod event;
pub mod ids;
pub mod messages;
pub mod meta;
pub mod number;
pub mod secrets;
pub mod signup_link;
pub mod status;
pub mod step;
pub mod time;

pub use event::{EventEnvelope, EventType};
pub use ids::{AccountId, ApiKeyId, NumberId};
pub use number::{FailureReason, Number, QualityRating};
pub use status::{RefusedTransition, Status, Transition, UnknownStatus, transition};
pub use step::Step;
pub use time::Timestamp;
