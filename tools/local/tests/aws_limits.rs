//! AWS's limits that moto forgives, refused by the local AWS gateway as AWS refuses them
//! (`aws_proxy::limits`; the table in `docs/AWS-LIMITS.md` names these tests).

use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, Put, PutRequest,
    ScalarAttributeType, TransactWriteItem, Update, WriteRequest,
};
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use muchaw_local::aws_proxy::SharedGateway;
use muchaw_local::aws_proxy::limits::{
    API_GATEWAY_MAX_PAYLOAD_BYTES, LAMBDA_MAX_ENVIRONMENT_BYTES,
};
use muchaw_local::{Moto, Template};

/// The operator's configuration through the gateway (no role limits it; AWS's limits do).
async fn through_gateway() -> aws_config::SdkConfig {
    let base = Moto::shared().sdk_config().await;
    base.to_builder()
        .endpoint_url(&SharedGateway::get().url)
        .build()
}

fn error_code<E: aws_sdk_sqs::error::ProvideErrorMetadata>(error: &E) -> String {
    error.code().unwrap_or_default().to_string()
}

async fn queue(sqs: &aws_sdk_sqs::Client) -> String {
    let name = format!("limits-{}", muchaw_local::provision::random_prefix());
    sqs.create_queue()
        .queue_name(name)
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("queue url")
}

#[tokio::test]
async fn sqs_refuses_a_visibility_past_twelve_hours_from_the_receive() {
    let sqs = aws_sdk_sqs::Client::new(&through_gateway().await);
    let url = queue(&sqs).await;
    sqs.send_message()
        .queue_url(&url)
        .message_body("wait")
        .send()
        .await
        .unwrap();
    let received = sqs
        .receive_message()
        .queue_url(&url)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap();
    let receipt = received.messages.unwrap()[0]
        .receipt_handle
        .clone()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // A second after the receive, 12 h from now is past 12 h from the receive.
    let refused = sqs
        .change_message_visibility()
        .queue_url(&url)
        .receipt_handle(&receipt)
        .visibility_timeout(43_200)
        .send()
        .await
        .expect_err("SQS counts 12 h from the receive");
    assert_eq!(error_code(&refused), "InvalidParameterValue");

    // What is left of the 12 h is allowed.
    sqs.change_message_visibility()
        .queue_url(&url)
        .receipt_handle(&receipt)
        .visibility_timeout(43_200 - 60)
        .send()
        .await
        .expect("within 12 h of the receive");
}

#[tokio::test]
async fn sqs_refuses_a_delay_over_fifteen_minutes() {
    let sqs = aws_sdk_sqs::Client::new(&through_gateway().await);
    let url = queue(&sqs).await;
    let refused = sqs
        .send_message()
        .queue_url(&url)
        .message_body("late")
        .delay_seconds(901)
        .send()
        .await
        .expect_err("DelaySeconds is at most 900");
    assert_eq!(error_code(&refused), "InvalidParameterValue");
    sqs.send_message()
        .queue_url(&url)
        .message_body("late")
        .delay_seconds(900)
        .send()
        .await
        .expect("900 s is allowed");
}

#[tokio::test]
async fn sqs_refuses_a_message_over_one_mebibyte() {
    let sqs = aws_sdk_sqs::Client::new(&through_gateway().await);
    let url = queue(&sqs).await;
    let refused = sqs
        .send_message()
        .queue_url(&url)
        .message_body("x".repeat(1_048_577))
        .send()
        .await
        .expect_err("a message is at most 1 MiB");
    assert_eq!(error_code(&refused), "InvalidParameterValue");
}

#[tokio::test]
async fn sqs_refuses_a_batch_of_eleven() {
    let sqs = aws_sdk_sqs::Client::new(&through_gateway().await);
    let url = queue(&sqs).await;
    let entries: Vec<_> = (0..11)
        .map(|i| {
            SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body("m")
                .build()
                .unwrap()
        })
        .collect();
    let refused = sqs
        .send_message_batch()
        .queue_url(&url)
        .set_entries(Some(entries))
        .send()
        .await
        .expect_err("a batch has at most 10 entries");
    assert_eq!(error_code(&refused), "TooManyEntriesInBatchRequest");
}

async fn table(dynamodb: &aws_sdk_dynamodb::Client) -> String {
    let name = format!("limits-{}", muchaw_local::provision::random_prefix());
    dynamodb
        .create_table()
        .table_name(&name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("PK")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("PK")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("create table");
    SharedGateway::get()
        .guards
        .limits
        .register_table(&name, vec!["PK".to_string()]);
    name
}

fn dynamo_code<E: aws_sdk_dynamodb::error::ProvideErrorMetadata>(error: &E) -> String {
    error.code().unwrap_or_default().to_string()
}

#[tokio::test]
async fn dynamodb_refuses_an_item_over_400_kb() {
    let dynamodb = aws_sdk_dynamodb::Client::new(&through_gateway().await);
    let name = table(&dynamodb).await;
    let refused = dynamodb
        .put_item()
        .table_name(&name)
        .item("PK", AttributeValue::S("big".into()))
        .item("blob", AttributeValue::S("x".repeat(400 * 1024)))
        .send()
        .await
        .expect_err("an item is at most 400 KB");
    assert_eq!(dynamo_code(&refused), "ValidationException");
}

#[tokio::test]
async fn dynamodb_refuses_two_actions_on_one_item_in_a_transaction() {
    let dynamodb = aws_sdk_dynamodb::Client::new(&through_gateway().await);
    let name = table(&dynamodb).await;
    let put = TransactWriteItem::builder()
        .put(
            Put::builder()
                .table_name(&name)
                .item("PK", AttributeValue::S("one".into()))
                .build()
                .unwrap(),
        )
        .build();
    let update = TransactWriteItem::builder()
        .update(
            Update::builder()
                .table_name(&name)
                .key("PK", AttributeValue::S("one".into()))
                .update_expression("SET n = :n")
                .expression_attribute_values(":n", AttributeValue::N("1".into()))
                .build()
                .unwrap(),
        )
        .build();
    let refused = dynamodb
        .transact_write_items()
        .transact_items(put)
        .transact_items(update)
        .send()
        .await
        .expect_err("one action per item in a transaction");
    assert_eq!(dynamo_code(&refused), "ValidationException");
}

#[tokio::test]
async fn dynamodb_refuses_a_transaction_of_101_items() {
    let dynamodb = aws_sdk_dynamodb::Client::new(&through_gateway().await);
    let name = table(&dynamodb).await;
    let items: Vec<_> = (0..101)
        .map(|i| {
            TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(&name)
                        .item("PK", AttributeValue::S(format!("item-{i}")))
                        .build()
                        .unwrap(),
                )
                .build()
        })
        .collect();
    let refused = dynamodb
        .transact_write_items()
        .set_transact_items(Some(items))
        .send()
        .await
        .expect_err("a transaction has at most 100 actions");
    assert_eq!(dynamo_code(&refused), "ValidationException");
}

#[tokio::test]
async fn dynamodb_refuses_a_batch_write_of_26() {
    let dynamodb = aws_sdk_dynamodb::Client::new(&through_gateway().await);
    let name = table(&dynamodb).await;
    let requests: Vec<_> = (0..26)
        .map(|i| {
            WriteRequest::builder()
                .put_request(
                    PutRequest::builder()
                        .item("PK", AttributeValue::S(format!("item-{i}")))
                        .build()
                        .unwrap(),
                )
                .build()
        })
        .collect();
    let refused = dynamodb
        .batch_write_item()
        .request_items(&name, requests)
        .send()
        .await
        .expect_err("a batch write has at most 25 requests");
    assert_eq!(dynamo_code(&refused), "ValidationException");
}

#[tokio::test]
async fn every_functions_environment_fits_in_four_kilobytes() {
    // Given the template's resources as a deploy resolves them (ARNs and URLs at full length)
    let template = Template::workspace().unwrap();
    let sdk = Moto::shared().sdk_config().await;
    let stack = muchaw_local::provision(
        &template,
        &sdk,
        &muchaw_local::provision::random_prefix(),
        &muchaw_local::provision::Overrides::default(),
    )
    .await
    .unwrap();
    // Then every function's variables, names and values, fit in Lambda's 4 KB
    for (function, _) in template.resources_of_type("AWS::Serverless::Function") {
        let environment = stack.function_environment(&template, &function).unwrap();
        let size = muchaw_local::aws_proxy::limits::environment_size(
            environment.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        );
        assert!(
            size <= LAMBDA_MAX_ENVIRONMENT_BYTES,
            "{function}: {size} bytes of environment"
        );
    }
}

#[tokio::test]
async fn the_api_refuses_a_body_over_ten_megabytes() {
    use tower::ServiceExt;
    let template = Template::workspace().unwrap();
    let routes = muchaw_local::binaries::http_routes(&template).unwrap();
    let router = muchaw_local::identity::template_routed(
        axum::Router::new().route(
            "/api/signup-links",
            axum::routing::post(|| async { "reached the function" }),
        ),
        routes,
    );
    let request = |length: usize| {
        axum::http::Request::post("/api/signup-links")
            .header("content-length", length.to_string())
            .body(axum::body::Body::empty())
            .unwrap()
    };
    let over = router
        .clone()
        .oneshot(request(API_GATEWAY_MAX_PAYLOAD_BYTES + 1))
        .await
        .unwrap();
    assert_eq!(over.status(), 413);
    let within = router.oneshot(request(0)).await.unwrap();
    assert_eq!(within.status(), 200);
}
