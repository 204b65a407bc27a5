// The delivery future (reqwest inside SQS batch handling) nests deeper than the default limit.
#![recursion_limit = "256"]

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    muchaw_shared::runtime::run_deliver_webhooks().await
}
