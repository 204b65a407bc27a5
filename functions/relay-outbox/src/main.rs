#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    muchaw_shared::runtime::run_outbox_relay().await
}
