//! What Meta's webhooks and the health sync write on numbers, and the account directory the
//! health sync pages through.
//!
//! | item                | PK         | SK                |
//! |---------------------|------------|-------------------|
//! | account directory   | `ACCOUNTS` | `ACCOUNT#{a}`     |
//! | WABA ban clock      | `WABA#{w}` | `BANSTATE`        |
//!
//! The directory entry is written with the account (`DynamoStore::create_account_with_id`), so
//! jobs covering every account read one partition instead of scanning the table. Accounts
//! created before the directory existed need one `register_account` each (a backfill).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use aws_sdk_dynamodb::types::{TransactWriteItem, Update};

use super::dynamo::{
    DynamoStore, conditionally_written, event_item, is_conditional_failure, keys, put_new, s,
    sdk_unavailable,
};
use crate::domain::time;
use crate::domain::{AccountId, EventEnvelope, Number, QualityRating};
use crate::ports::{AccountDirectory, ProfileWriter, StoreError, StoreResult};

const ACCOUNTS: &str = "ACCOUNTS";

fn number_key(number: &Number) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("PK".to_string(), s(keys::account(&number.account_id))),
        ("SK".to_string(), s(keys::number(&number.id))),
    ])
}

fn rating_value(rating: QualityRating) -> StoreResult<AttributeValue> {
    serde_dynamo::to_attribute_value(rating).map_err(|e| StoreError::Unavailable(e.to_string()))
}

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
                    None => return Err(StoreError::Corrupt("account entry without id".into())),
                }
            }
            match output.last_evaluated_key {
                Some(next) if !next.is_empty() => start = Some(next),
                _ => return Ok(ids),
            }
        }
    }
}

impl ProfileWriter for DynamoStore {
    async fn set_display_name(&self, number: &Number, display_name: &str) -> StoreResult<()> {
        let result = self
            .client()
            .update_item()
            .table_name(self.table())
            .set_key(Some(number_key(number)))
            .update_expression("SET displayName = :name, updatedAt = :at")
            .condition_expression("attribute_exists(PK)")
            .expression_attribute_values(":name", s(display_name))
            .expression_attribute_values(":at", s(time::format(&time::now())))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if is_conditional_failure(&err) => Err(StoreError::NotFound),
            Err(err) => Err(sdk_unavailable(err)),
        }
    }

    async fn set_quality_rating(
        &self,
        number: &Number,
        previous: Option<QualityRating>,
        now: Option<QualityRating>,
        event: &EventEnvelope,
    ) -> StoreResult<bool> {
        let mut values = HashMap::new();
        let (set, remove) = match now {
            Some(rating) => {
                values.insert(":now".to_string(), rating_value(rating)?);
                (vec!["qualityRating = :now", "updatedAt = :at"], None)
            }
            None => (vec!["updatedAt = :at"], Some("qualityRating")),
        };
        let condition = match previous {
            Some(rating) => {
                values.insert(":prev".into(), rating_value(rating)?);
                "qualityRating = :prev"
            }
            None => "attribute_not_exists(qualityRating)",
        };
        values.insert(":at".into(), s(time::format(&event.created_at)));
        self.update_number_with_event(number, &set, remove, condition, values, event)
            .await
    }

    async fn mark_token_expiry_warned(
        &self,
        number: &Number,
        day: &str,
        event: &EventEnvelope,
    ) -> StoreResult<bool> {
        self.update_number_with_event(
            number,
            &["tokenExpiryWarnedOn = :day"],
            None,
            "(attribute_not_exists(tokenExpiryWarnedOn) OR tokenExpiryWarnedOn <> :day)",
            HashMap::from([(":day".to_string(), s(day))]),
            event,
        )
        .await
    }
}

impl DynamoStore {
    /// Updates the number and writes `event` as its latest event in one transaction: the
    /// outbox, so a crash before the event is published leaves it for `finish_publishing`.
    /// Conditioned on `condition` and on no other event having been written since `number` was
    /// read (which also keeps an unpublished earlier event from being overwritten). `false` when
    /// a condition failed.
    async fn update_number_with_event(
        &self,
        number: &Number,
        set: &[&str],
        remove: Option<&str>,
        condition: &str,
        mut values: HashMap<String, AttributeValue>,
        event: &EventEnvelope,
    ) -> StoreResult<bool> {
        values.insert(":event".into(), s(event.id.clone()));
        let latest_event = match &number.last_event_id {
            Some(seen) => {
                values.insert(":seen".into(), s(seen.clone()));
                "lastEventId = :seen"
            }
            None => "attribute_not_exists(lastEventId)",
        };
        let mut expression = format!("SET {}, lastEventId = :event", set.join(", "));
        if let Some(remove) = remove {
            expression.push_str(&format!(" REMOVE {remove}"));
        }
        let update = Update::builder()
            .table_name(self.table())
            .set_key(Some(number_key(number)))
            .update_expression(expression)
            .condition_expression(format!(
                "attribute_exists(PK) AND {condition} AND {latest_event}"
            ))
            .set_expression_attribute_values(Some(values))
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let items = vec![
            TransactWriteItem::builder().update(update).build(),
            put_new(self.table(), event_item(event)?)?,
        ];
        Ok(self.transact(items).await?.is_ok())
    }
}

/// `WABA#{w}` / `BANSTATE`: Meta's time of the latest ban-state change applied to the WABA.
impl crate::meta_webhook::BanClock for DynamoStore {
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
