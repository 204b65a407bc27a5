//! Muchaw Numbers: the domain, the ports handlers are written against, their adapters, and
//! the handlers themselves. Function binaries are thin wrappers around this crate.

// The functions ship as position-dependent executables (docs/SECURITY.md): the code that reads
// outside input must give an attacker no memory corruption to build on.
#![forbid(unsafe_code)]

pub mod adapters;
pub mod api;
pub mod aws;
pub mod config;
pub mod domain;
pub mod health;
pub mod http_client;
pub mod lifecycle;
pub mod meta_webhook;
pub mod metrics;
pub mod outbox;
pub mod ports;
pub mod provisioning;
pub mod runtime;
pub mod secret_cache;
pub mod sqs_batch;
pub mod telemetry;
pub mod webhooks;
