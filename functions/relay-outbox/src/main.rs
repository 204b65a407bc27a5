// The relay's future (a Query per outbox shard, then the SQS sends) nests deeper than the default limit.
#![recursion_limit = "256"]

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    muchaw_shared::runtime::run_outbox_relay().await
}
