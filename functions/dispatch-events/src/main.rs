// The dispatch future (SQS batch handling over the DynamoDB and SQS clients) nests deeper than the default limit.
#![recursion_limit = "256"]

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    muchaw_shared::runtime::run_dispatch_events().await
}
