//! One wiring for the local stack and the tests: moto as AWS, and the tables, queues and secrets
//! created as `template.yaml` declares them, so what runs here is what deploys.

pub mod aws_proxy;
pub mod identity;
pub mod moto;
pub mod pipeline;
pub mod provision;
pub mod template;
pub mod upstreams;

pub use moto::Moto;
pub use provision::{Stack, provision};
pub use template::Template;
pub mod binaries;
pub mod examples;
pub mod gateway;
pub mod runtime_api;
pub mod schedule;
pub mod stack;
