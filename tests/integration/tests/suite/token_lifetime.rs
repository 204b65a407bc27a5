//! A number that ends takes its Meta token with it: after teardown the stored token is scheduled
//! for deletion and can no longer be read.

use std::time::Duration;

use muchaw_shared::domain::Status;
use muchaw_tests::provisioning::ProvisioningEnv;

const WABA: &str = "430000000000001";
const SETTLE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_disconnected_numbers_token_is_scheduled_for_deletion_and_unreadable() {
    // Given an ACTIVE number whose token sits in Secrets Manager
    let p = ProvisioningEnv::new().await;
    let (account, key) = p.env.account_with_key("acme").await;
    let phone = "430000000000101";
    let code = p.meta_phone(WABA, phone);
    let created = p.callback(&key, &code, WABA, phone).await;
    assert_eq!(created.status, 202, "{:?}", created.body);
    let id = created.body["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        p.settled(&account, &id, SETTLE).await.status,
        Status::Active
    );
    let secrets = aws_sdk_secretsmanager::Client::new(&p.env.sdk);
    let name = p.token_secret_name(&id);
    let before = secrets.describe_secret().secret_id(&name).send().await;
    assert!(before.unwrap().deleted_date().is_none());

    // When the customer disconnects it and teardown runs
    let deleted = p
        .env
        .delete(Some(&key), &format!("/api/numbers/{id}"))
        .await;
    assert_eq!(deleted.status, 200);
    let deadline = tokio::time::Instant::now() + SETTLE;
    while p.number(&account, &id).await.torn_down_at.is_none()
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(p.number(&account, &id).await.torn_down_at.is_some());

    // Then the token's secret is scheduled for deletion and its value is no longer served
    let after = secrets
        .describe_secret()
        .secret_id(&name)
        .send()
        .await
        .unwrap();
    assert!(after.deleted_date().is_some(), "{after:?}");
    assert!(
        secrets
            .get_secret_value()
            .secret_id(&name)
            .send()
            .await
            .is_err()
    );
}
