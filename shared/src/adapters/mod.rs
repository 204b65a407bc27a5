pub mod dynamo;
pub mod dynamo_profile;
pub mod dynamo_signup;
pub mod dynamo_webhooks;
pub mod memory;
pub mod meta;
pub mod secrets;
pub mod sqs;
