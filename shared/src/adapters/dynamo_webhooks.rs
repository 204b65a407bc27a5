//! Webhook endpoints and the delivery log in the single table.
//! Endpoint: `PK = ACCOUNT#{account}`, `SK = WEBHOOK#{id}` (listed with one Query, no Scan).
//! Delivery: `PK = DELIVERY#{event}#{endpoint}`, `SK = DELIVERY`, expiring with the events.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};

use super::dynamo::{DynamoStore, sdk_unavailable, unavailable};
use crate::domain::secrets::Secret;
use crate::domain::{AccountId, EventType, time};
use crate::ports::{DeliveryLog, StoreError, StoreResult, WebhookEndpoints};
use crate::webhooks::WebhookEndpoint;

const DELIVERY_RETENTION_DAYS: i64 = 30;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EndpointItem {
    #[serde(rename = "PK")]
    pk: String,
    #[serde(rename = "SK")]
    sk: String,
    entity: String,
    id: String,
    account_id: AccountId,
    url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    events: Option<Vec<EventType>>,
    /// Kept to sign deliveries (encrypted at rest like the whole table); never returned after
    /// creation and never logged.
    secret: String,
    created_at: String,
}

fn endpoint_key(account: &AccountId, id: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("PK".into(), AttributeValue::S(format!("ACCOUNT#{account}"))),
        ("SK".into(), AttributeValue::S(format!("WEBHOOK#{id}"))),
    ])
}

fn delivery_key(event_id: &str, endpoint_id: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (
            "PK".into(),
            AttributeValue::S(format!("DELIVERY#{event_id}#{endpoint_id}")),
        ),
        ("SK".into(), AttributeValue::S("DELIVERY".into())),
    ])
}

fn from_item(item: HashMap<String, AttributeValue>) -> StoreResult<WebhookEndpoint> {
    let item: EndpointItem = serde_dynamo::from_item(item).map_err(StoreError::corrupt)?;
    Ok(WebhookEndpoint {
        id: item.id,
        account_id: item.account_id,
        url: item.url,
        events: item.events,
        secret: Secret::new(item.secret),
        created_at: time::parse(&item.created_at).map_err(StoreError::corrupt)?,
    })
}

impl WebhookEndpoints for DynamoStore {
    async fn save_endpoint(&self, endpoint: &WebhookEndpoint) -> StoreResult<()> {
        let item = EndpointItem {
            pk: format!("ACCOUNT#{}", endpoint.account_id),
            sk: format!("WEBHOOK#{}", endpoint.id),
            entity: "WEBHOOK".into(),
            id: endpoint.id.clone(),
            account_id: endpoint.account_id.clone(),
            url: endpoint.url.clone(),
            events: endpoint.events.clone(),
            secret: endpoint.secret.expose().to_string(),
            created_at: time::format(&endpoint.created_at),
        };
        self.client()
            .put_item()
            .table_name(self.table())
            .set_item(Some(serde_dynamo::to_item(item).map_err(unavailable)?))
            .condition_expression("attribute_not_exists(PK)")
            .send()
            .await
            .map_err(sdk_unavailable)?;
        Ok(())
    }

    async fn endpoints(&self, account: &AccountId) -> StoreResult<Vec<WebhookEndpoint>> {
        let mut endpoints = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client()
                .query()
                .table_name(self.table())
                .key_condition_expression("PK = :pk AND begins_with(SK, :prefix)")
                .expression_attribute_values(":pk", AttributeValue::S(format!("ACCOUNT#{account}")))
                .expression_attribute_values(":prefix", AttributeValue::S("WEBHOOK#".into()))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(sdk_unavailable)?;
            for item in page.items.unwrap_or_default() {
                endpoints.push(from_item(item)?);
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        endpoints.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(endpoints)
    }

    async fn endpoint(
        &self,
        account: &AccountId,
        id: &str,
    ) -> StoreResult<Option<WebhookEndpoint>> {
        let found = self
            .client()
            .get_item()
            .table_name(self.table())
            .set_key(Some(endpoint_key(account, id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_unavailable)?;
        found.item.map(from_item).transpose()
    }

    async fn delete_endpoint(&self, account: &AccountId, id: &str) -> StoreResult<bool> {
        let deleted = self
            .client()
            .delete_item()
            .table_name(self.table())
            .set_key(Some(endpoint_key(account, id)))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(sdk_unavailable)?;
        Ok(deleted.attributes.is_some_and(|a| !a.is_empty()))
    }
}

impl DeliveryLog for DynamoStore {
    async fn was_delivered(&self, event_id: &str, endpoint_id: &str) -> StoreResult<bool> {
        let found = self
            .client()
            .get_item()
            .table_name(self.table())
            .set_key(Some(delivery_key(event_id, endpoint_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_unavailable)?;
        Ok(found.item.is_some())
    }

    async fn mark_delivered(&self, event_id: &str, endpoint_id: &str) -> StoreResult<()> {
        let now = time::now();
        let mut item = delivery_key(event_id, endpoint_id);
        item.insert("entity".into(), AttributeValue::S("DELIVERY".into()));
        item.insert("deliveredAt".into(), AttributeValue::S(time::format(&now)));
        item.insert(
            "expiresAt".into(),
            AttributeValue::N(
                (now + chrono::Duration::days(DELIVERY_RETENTION_DAYS))
                    .timestamp()
                    .to_string(),
            ),
        );
        self.client()
            .put_item()
            .table_name(self.table())
            .set_item(Some(item))
            .send()
            .await
            .map_err(sdk_unavailable)?;
        Ok(())
    }
}
