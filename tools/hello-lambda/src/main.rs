//! The benchmark baseline: the smallest `lambda_runtime` function, built like the real ones.
//! It echoes its event, so its init and request times are the runtime's own cost.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

async fn echo(event: LambdaEvent<Value>) -> Result<Value, Error> {
    Ok(event.payload)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(echo)).await
}
