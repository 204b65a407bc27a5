#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    muchaw_shared::runtime::run_numbers_api().await
}
