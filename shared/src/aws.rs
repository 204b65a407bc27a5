//! The one way AWS clients are built. `AWS_ENDPOINT_URL` (honoured by the SDK itself) points
//! every client at an emulator for local runs and tests.

use aws_config::{BehaviorVersion, SdkConfig};

/// The configuration every client is built from, on the process's one HTTP client (which builds
/// nothing until the first request; `http_client.rs` says why).
pub async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(crate::http_client::aws_http_client())
        .load()
        .await
}

pub async fn dynamodb() -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&sdk_config().await)
}

pub struct Clients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
}

impl Clients {
    pub async fn load() -> Clients {
        let config = sdk_config().await;
        Clients {
            dynamodb: aws_sdk_dynamodb::Client::new(&config),
            sqs: aws_sdk_sqs::Client::new(&config),
            secrets: aws_sdk_secretsmanager::Client::new(&config),
        }
    }
}
