use muchaw_shared::domain::Step;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    muchaw_shared::runtime::run_step(Step::ConfigurePin).await
}
