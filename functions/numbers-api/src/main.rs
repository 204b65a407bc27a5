use muchaw_shared::adapters::{dynamo::DynamoStore, sqs::SqsQueue};
use muchaw_shared::{api, aws, config::ApiConfig, telemetry};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    telemetry::init();
    let config = ApiConfig::from_env()?;
    let clients = aws::Clients::load().await;
    let store = DynamoStore::new(clients.dynamodb, config.table_name);
    let queue = SqsQueue::new(clients.sqs, config.queues);
    lambda_http::run(api::router(store, queue)).await
}
