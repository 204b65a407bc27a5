pub mod dynamo;
pub mod memory;
pub mod meta;
pub mod secrets;
pub mod sqs;
