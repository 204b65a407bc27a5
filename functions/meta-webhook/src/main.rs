// One invocation at a time per execution environment, on a share of a vCPU: the current-thread
// scheduler, without the worker threads a multi-thread runtime starts at init.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    muchaw_shared::runtime::run_meta_webhook().await
}
