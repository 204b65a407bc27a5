//! The account, API key and number the `events/` files name, seeded into a stack's table so
//! those files run against it (`muchaw-local env`, the benchmarks).

use anyhow::{Context, Result};
use muchaw_shared::adapters::dynamo::DynamoStore;
use muchaw_shared::domain::api_key::PlainApiKey;
use muchaw_shared::domain::{Number, Status, time};

pub const EXAMPLE_API_KEY: &str = "mk_example_local_key_0000000000000000000000000000";
pub const EXAMPLE_NUMBER_ID: &str = "clexamplenumber00000000001";
pub const EXAMPLE_ACCOUNT_ID: &str = "acc_examples";
/// The Meta app secret `events/meta-webhook` is signed with, put in `MetaAppSecret` wherever
/// those files run: the template's own placeholder verifies no signature.
pub const EXAMPLE_APP_SECRET: &str = "example-app-secret-of-the-events-files";

/// `MetaAppSecret` for a stack the `events/` files run against: [`EXAMPLE_APP_SECRET`] and a
/// verify token none of them sends.
pub fn example_meta_app_secret() -> String {
    serde_json::json!({
        "appSecret": EXAMPLE_APP_SECRET,
        "webhookVerifyToken": "example-verify-token",
    })
    .to_string()
}

/// The example account and its key (once per stack).
pub async fn seed_account(store: &DynamoStore) -> Result<()> {
    let account = store
        .create_account_with_id(EXAMPLE_ACCOUNT_ID.to_string().into(), "Examples")
        .await?;
    let key = PlainApiKey::from_existing(EXAMPLE_API_KEY.into()).context("example key")?;
    store
        .store_api_key(&account.id, Some("examples"), key)
        .await?;
    Ok(())
}

/// (Re)writes the example number as ACTIVE, undoing what an event did to it.
pub async fn seed_number(store: &DynamoStore) -> Result<()> {
    let mut number = Number::new_pending(
        EXAMPLE_ACCOUNT_ID.to_string().into(),
        "100000000000001".into(),
        "200000000000001".into(),
        time::now(),
    );
    number.id = EXAMPLE_NUMBER_ID.to_string().into();
    number.status = Status::Active;
    number.provisioning_step = None;
    number.display_number = Some("+55 11 99999-0000".into());
    store.import_numbers(&[number]).await?;
    Ok(())
}
