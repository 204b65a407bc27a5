// The dispatch future (SQS batch handling over the DynamoDB and SQS clients) nests deeper than the default limit.
#![recursion_limit = "256"]

// One invocation at a time per execution environment, on a share of a vCPU: the current-thread
// scheduler, without the worker threads a multi-thread runtime starts at init.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    muchaw_shared::runtime::run_dispatch_events().await
}
