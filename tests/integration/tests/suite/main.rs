//! Every integration test, one binary: CI links once. Each module is one area of the system,
//! against moto and the fake Meta, through the real handlers.

mod api_operations;
mod burst;
mod dynamo_store;
mod key_formats;
mod large_account;
mod long_waits;
mod meta_webhooks;
mod not_run;
mod numbers_api;
mod openapi_contract;
mod provisioning;
mod races;
mod rate_limit;
mod reconnect;
mod secrets_never_leak;
mod signup;
mod signup_page;
mod template_routes;
mod token_lifetime;
mod webhook_operations;
mod webhook_rebinding;
mod webhooks;
