//! The account directory the health sync pages through, and the WABA ban clocks Meta's
//! webhooks keep. (What they change on numbers goes through `LifecycleStore::commit`.)
//!
//! | item                | PK         | SK                |
//! |---------------------|------------|-------------------|
//! | account directory   | `ACCOUNTS` | `ACCOUNT#{a}`     |
//! | WABA ban clock      | `WABA#{w}` | `BANSTATE`        |
//!
//! The directory entry is written with the account (`DynamoStore::create_account_with_id`), so
//! jobs covering every account read one partition instead of scanning the table. Accounts
//! created before the directory existed need one `register_account` each (a backfill).

use aws_sdk_dynamodb::types::AttributeValue;

use super::dynamo::{DynamoStore, conditionally_written, keys, s, sdk_unavailable};
use crate::domain::AccountId;
use crate::ports::{AccountDirectory, StoreError, StoreResult};

const ACCOUNTS: &str = "ACCOUNTS";

impl DynamoStore {
    /// Lists the account in the directory; repeating it is harmless.
    pub async fn register_account(&self, account: &AccountId) -> StoreResult<()> {
        self.client()
            .put_item()
            .table_name(self.table())
            .item("PK", s(ACCOUNTS))
            .item("SK", s(keys::account(account)))
            .item("entity", s("ACCOUNTREF"))
            .item("accountId", s(account.as_str()))
            .send()
            .await
            .map_err(sdk_unavailable)?;
        Ok(())
    }
}

impl AccountDirectory for DynamoStore {
    async fn account_ids(&self) -> StoreResult<Vec<AccountId>> {
        let mut ids = Vec::new();
        let mut start = None;
        loop {
            let output = self
                .client()
                .query()
                .table_name(self.table())
                .key_condition_expression("PK = :pk")
                .expression_attribute_values(":pk", s(ACCOUNTS))
                .projection_expression("accountId")
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(sdk_unavailable)?;
            for item in output.items.unwrap_or_default() {
                match item.get("accountId").and_then(|v| v.as_s().ok()) {
                    Some(id) => ids.push(AccountId::from(id.clone())),
                    None => return Err(StoreError::corrupt("account entry without id")),
                }
            }
            match output.last_evaluated_key {
                Some(next) if !next.is_empty() => start = Some(next),
                _ => return Ok(ids),
            }
        }
    }
}

/// `WABA#{w}` / `BANSTATE`: Meta's time of the latest ban-state change applied to the WABA.
impl crate::ports::BanClock for DynamoStore {
    async fn advance_ban_clock(&self, waba_id: &str, time: i64) -> StoreResult<bool> {
        let result = self
            .client()
            .put_item()
            .table_name(self.table())
            .item("PK", s(keys::waba(waba_id)))
            .item("SK", s("BANSTATE"))
            .item("entity", s("BANSTATE"))
            .item("eventTime", AttributeValue::N(time.to_string()))
            .condition_expression("attribute_not_exists(PK) OR eventTime <= :time")
            .expression_attribute_values(":time", AttributeValue::N(time.to_string()))
            .send()
            .await;
        conditionally_written(result)
    }
}
