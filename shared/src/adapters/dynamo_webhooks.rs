//! Webhook endpoints and the delivery log in the single table.
//! Endpoint: `PK = ACCOUNT#{account}`, `SK = WEBHOOK#{id}` (listed with one Query, no Scan).
//! Delivery: `PK = DELIVERIES#{endpoint}`, `SK = {event createdAt}#{event id}` (an endpoint's
//! deliveries newest first with one Query), every attempt appended by one `UpdateItem`,
//! expiring with the events.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, TransactWriteItem, Update};
use serde::{Deserialize, Serialize};

use super::dynamo::{
    DynamoStore, conditionally_written, event_item, keys, put_new, s, sdk_unavailable, unavailable,
};
use super::dynamo_history::NewestFirst;
use crate::domain::history::EventPosition;
use crate::domain::secrets::Secret;
use crate::domain::{AccountId, EventEnvelope, EventType, Timestamp, time};
use crate::ports::{DeliveryLog, EndpointChange, StoreError, StoreResult, WebhookEndpoints};
use crate::webhooks::WebhookEndpoint;
use crate::webhooks::log::{Attempt, DeliveryKey, DeliveryPage, DeliveryRecord, DeliveryStatus};

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
    /// Absent on endpoints written before endpoints could be disabled.
    #[serde(default)]
    disabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous_secret_expires_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failing_since: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    disabled_event_id: Option<String>,
}

fn endpoint_key(account: &AccountId, id: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("PK".into(), AttributeValue::S(format!("ACCOUNT#{account}"))),
        ("SK".into(), AttributeValue::S(format!("WEBHOOK#{id}"))),
    ])
}

fn deliveries_pk(endpoint_id: &str) -> String {
    format!("DELIVERIES#{endpoint_id}")
}

fn delivery_key(endpoint_id: &str, position: &EventPosition) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("PK".into(), s(deliveries_pk(endpoint_id))),
        ("SK".into(), s(position.sort_key())),
    ])
}

fn from_item(item: HashMap<String, AttributeValue>) -> StoreResult<WebhookEndpoint> {
    let item: EndpointItem = serde_dynamo::from_item(item).map_err(StoreError::corrupt)?;
    let parse = |text: &str| time::parse(text).map_err(StoreError::corrupt);
    Ok(WebhookEndpoint {
        id: item.id,
        account_id: item.account_id,
        url: item.url,
        events: item.events,
        secret: Secret::new(item.secret),
        created_at: parse(&item.created_at)?,
        enabled: !item.disabled,
        previous_secret: item.previous_secret.map(Secret::new),
        previous_secret_expires_at: item
            .previous_secret_expires_at
            .as_deref()
            .map(parse)
            .transpose()?,
        failing_since: item.failing_since.as_deref().map(parse).transpose()?,
        disabled_event_id: item.disabled_event_id,
    })
}

/// An `UpdateItem` on an existing endpoint, answering the endpoint as it is after it (`None`:
/// no such endpoint).
struct EndpointUpdate {
    set: Vec<String>,
    remove: Vec<String>,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl EndpointUpdate {
    fn new() -> Self {
        EndpointUpdate {
            set: Vec::new(),
            remove: Vec::new(),
            names: HashMap::new(),
            values: HashMap::new(),
        }
    }

    /// Attributes go by placeholder: some of ours (`url`) are DynamoDB reserved words.
    fn name(&mut self, attribute: &str) -> String {
        let placeholder = format!("#{attribute}");
        self.names
            .insert(placeholder.clone(), attribute.to_string());
        placeholder
    }

    fn set(&mut self, attribute: &str, value: AttributeValue) {
        let name = self.name(attribute);
        self.set.push(format!("{name} = :{attribute}"));
        self.values.insert(format!(":{attribute}"), value);
    }

    /// `attribute = source`: a copy inside the write.
    fn copy(&mut self, attribute: &str, source: &str) {
        let (name, source) = (self.name(attribute), self.name(source));
        self.set.push(format!("{name} = {source}"));
    }

    fn remove(&mut self, attribute: &str) {
        let name = self.name(attribute);
        self.remove.push(name);
    }

    fn expression(&self) -> String {
        let mut parts = Vec::new();
        if !self.set.is_empty() {
            parts.push(format!("SET {}", self.set.join(", ")));
        }
        if !self.remove.is_empty() {
            parts.push(format!("REMOVE {}", self.remove.join(", ")));
        }
        parts.join(" ")
    }
}

impl DynamoStore {
    async fn update_existing_endpoint(
        &self,
        account: &AccountId,
        id: &str,
        update: EndpointUpdate,
    ) -> StoreResult<Option<WebhookEndpoint>> {
        if update.set.is_empty() && update.remove.is_empty() {
            return self.endpoint(account, id).await;
        }
        let result = self
            .client()
            .update_item()
            .table_name(self.table())
            .set_key(Some(endpoint_key(account, id)))
            .update_expression(update.expression())
            .condition_expression("attribute_exists(PK)")
            .set_expression_attribute_names(Some(update.names))
            .set_expression_attribute_values((!update.values.is_empty()).then_some(update.values))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(output) => output.attributes.map(from_item).transpose(),
            Err(err) if super::dynamo::is_conditional_failure(&err) => Ok(None),
            Err(err) => Err(sdk_unavailable(err)),
        }
    }
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
            disabled: !endpoint.enabled,
            previous_secret: endpoint
                .previous_secret
                .as_ref()
                .map(|s| s.expose().to_string()),
            previous_secret_expires_at: endpoint
                .previous_secret_expires_at
                .as_ref()
                .map(time::format),
            failing_since: endpoint.failing_since.as_ref().map(time::format),
            disabled_event_id: endpoint.disabled_event_id.clone(),
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
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(sdk_unavailable)?;
        Ok(deleted.attributes.is_some_and(|a| !a.is_empty()))
    }

    async fn update_endpoint(
        &self,
        account: &AccountId,
        id: &str,
        change: &EndpointChange,
    ) -> StoreResult<Option<WebhookEndpoint>> {
        let mut update = EndpointUpdate::new();
        if let Some(url) = &change.url {
            update.set("url", s(url.clone()));
        }
        match &change.events {
            None => {}
            Some(None) => update.remove("events"),
            Some(Some(events)) => update.set(
                "events",
                AttributeValue::L(events.iter().map(|e| s(e.as_str())).collect()),
            ),
        }
        if let Some(enabled) = change.enabled {
            update.set("disabled", AttributeValue::Bool(!enabled));
            if enabled {
                update.remove("failingSince");
                update.remove("disabledEventId");
            }
        }
        self.update_existing_endpoint(account, id, update).await
    }

    async fn rotate_secret(
        &self,
        account: &AccountId,
        id: &str,
        secret: &Secret,
        previous_until: Timestamp,
    ) -> StoreResult<Option<WebhookEndpoint>> {
        let mut update = EndpointUpdate::new();
        let until = time::format(&previous_until);
        // The replaced secret is copied inside the write: two rotations at once cannot lose one.
        update.copy("previousSecret", "secret");
        update.set("secret", s(secret.expose()));
        update.set("previousSecretExpiresAt", s(until.clone()));
        // On GSI6 until its grace ends, when the relay forgets it (`forget_previous_secrets`).
        update.set("GSI6PK", s(keys::SECRET_GRACE));
        update.set("GSI6SK", s(until));
        self.update_existing_endpoint(account, id, update).await
    }

    /// The endpoints on GSI6's `WEBHOOKSECRETGRACE` whose grace ended by `now`, each then
    /// written without its previous secret, on the condition that its grace is still the one
    /// the index showed (the index lags; a rotation since has a later one).
    async fn forget_previous_secrets(&self, now: Timestamp, limit: u32) -> StoreResult<u32> {
        let due = self
            .client()
            .query()
            .table_name(self.table())
            .index_name("GSI6")
            .key_condition_expression("GSI6PK = :grace AND GSI6SK <= :now")
            .expression_attribute_values(":grace", s(keys::SECRET_GRACE))
            .expression_attribute_values(":now", s(time::format(&now)))
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(sdk_unavailable)?;
        let mut forgotten = 0;
        for item in due.items.unwrap_or_default() {
            let (Some(pk), Some(sk), Some(until)) =
                (item.get("PK"), item.get("SK"), item.get("GSI6SK"))
            else {
                continue;
            };
            let result = self
                .client()
                .update_item()
                .table_name(self.table())
                .key("PK", pk.clone())
                .key("SK", sk.clone())
                .update_expression("REMOVE previousSecret, previousSecretExpiresAt, GSI6PK, GSI6SK")
                .condition_expression("previousSecretExpiresAt = :until")
                .expression_attribute_values(":until", until.clone())
                .send()
                .await;
            if conditionally_written(result)? {
                forgotten += 1;
            }
        }
        Ok(forgotten)
    }

    async fn note_failing(
        &self,
        account: &AccountId,
        id: &str,
        since: Timestamp,
    ) -> StoreResult<()> {
        let result = self
            .client()
            .update_item()
            .table_name(self.table())
            .set_key(Some(endpoint_key(account, id)))
            .update_expression("SET failingSince = if_not_exists(failingSince, :since)")
            .condition_expression("attribute_exists(PK)")
            .expression_attribute_values(":since", s(time::format(&since)))
            .send()
            .await;
        conditionally_written(result).map(|_| ())
    }

    async fn note_recovered(&self, account: &AccountId, id: &str) -> StoreResult<()> {
        let result = self
            .client()
            .update_item()
            .table_name(self.table())
            .set_key(Some(endpoint_key(account, id)))
            .update_expression("REMOVE failingSince")
            .condition_expression("attribute_exists(PK)")
            .send()
            .await;
        conditionally_written(result).map(|_| ())
    }

    async fn disable_failing(
        &self,
        account: &AccountId,
        id: &str,
        since: Timestamp,
        event: &EventEnvelope,
    ) -> StoreResult<bool> {
        let disable = Update::builder()
            .table_name(self.table())
            .set_key(Some(endpoint_key(account, id)))
            .update_expression("SET disabled = :true, disabledEventId = :event")
            .condition_expression(
                "failingSince = :since AND (attribute_not_exists(disabled) OR disabled = :false)",
            )
            .expression_attribute_values(":true", AttributeValue::Bool(true))
            .expression_attribute_values(":false", AttributeValue::Bool(false))
            .expression_attribute_values(":event", s(event.id.clone()))
            .expression_attribute_values(":since", s(time::format(&since)))
            .build()
            .map_err(unavailable)?;
        let items = vec![
            TransactWriteItem::builder().update(disable).build(),
            put_new(
                self.table(),
                event_item(event, self.retained_until(&event.created_at))?,
            )?,
        ];
        Ok(self.transact(items).await?.is_ok())
    }
}

/// A delivery as kept in the table.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeliveryItem {
    #[serde(rename = "SK")]
    sk: String,
    account_id: AccountId,
    endpoint_id: String,
    event_type: EventType,
    status: DeliveryStatus,
    #[serde(default)]
    attempts: Vec<Attempt>,
    #[serde(default)]
    next_retry_at: Option<String>,
    body: String,
}

fn delivery_from_item(item: HashMap<String, AttributeValue>) -> StoreResult<DeliveryRecord> {
    let item: DeliveryItem = serde_dynamo::from_item(item).map_err(StoreError::corrupt)?;
    let position = EventPosition::from_sort_key(&item.sk)
        .ok_or_else(|| StoreError::corrupt("delivery with an unreadable key"))?;
    Ok(DeliveryRecord {
        key: DeliveryKey {
            account_id: item.account_id,
            endpoint_id: item.endpoint_id,
            position,
            event_type: item.event_type,
        },
        status: item.status,
        attempts: item.attempts,
        next_retry_at: item
            .next_retry_at
            .as_deref()
            .map(time::parse)
            .transpose()
            .map_err(StoreError::corrupt)?,
        body: item.body,
    })
}

impl DeliveryLog for DynamoStore {
    async fn delivery(
        &self,
        endpoint_id: &str,
        position: &EventPosition,
    ) -> StoreResult<Option<DeliveryRecord>> {
        let found = self
            .client()
            .get_item()
            .table_name(self.table())
            .set_key(Some(delivery_key(endpoint_id, position)))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_unavailable)?;
        found.item.map(delivery_from_item).transpose()
    }

    async fn record_attempt(
        &self,
        key: &DeliveryKey,
        body: &str,
        attempt: &Attempt,
        status: DeliveryStatus,
        next_retry_at: Option<Timestamp>,
    ) -> StoreResult<()> {
        let attempt: AttributeValue =
            serde_dynamo::to_attribute_value(attempt).map_err(unavailable)?;
        let mut expression = "SET entity = :entity, accountId = :account, endpointId = :endpoint, \
            eventId = :event, eventType = :type, body = if_not_exists(body, :body), \
            attempts = list_append(if_not_exists(attempts, :none), :attempt), \
            #status = :status, expiresAt = :expires"
            .to_string();
        let mut request = self
            .client()
            .update_item()
            .table_name(self.table())
            .set_key(Some(delivery_key(&key.endpoint_id, &key.position)))
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":entity", s("DELIVERY"))
            .expression_attribute_values(":account", s(key.account_id.as_str()))
            .expression_attribute_values(":endpoint", s(key.endpoint_id.clone()))
            .expression_attribute_values(":event", s(key.position.event_id.clone()))
            .expression_attribute_values(":type", s(key.event_type.as_str()))
            .expression_attribute_values(":body", s(body))
            .expression_attribute_values(":none", AttributeValue::L(Vec::new()))
            .expression_attribute_values(":attempt", AttributeValue::L(vec![attempt]))
            .expression_attribute_values(":status", s(status.as_str()))
            .expression_attribute_values(
                ":expires",
                AttributeValue::N(self.retained_until(&key.position.created_at).to_string()),
            );
        match next_retry_at {
            Some(at) => {
                expression.push_str(", nextRetryAt = :next");
                request = request.expression_attribute_values(":next", s(time::format(&at)));
            }
            None => expression.push_str(" REMOVE nextRetryAt"),
        }
        request
            .update_expression(expression)
            .send()
            .await
            .map_err(sdk_unavailable)?;
        Ok(())
    }

    async fn deliveries(
        &self,
        endpoint_id: &str,
        status: Option<DeliveryStatus>,
        limit: u32,
        after: Option<&EventPosition>,
    ) -> StoreResult<DeliveryPage> {
        let filter = status.map(|status| {
            (
                "#fstatus = :fstatus",
                HashMap::from([("#fstatus".to_string(), "status".to_string())]),
                HashMap::from([(":fstatus".to_string(), s(status.as_str()))]),
            )
        });
        let (items, next) = self
            .newest_first(
                NewestFirst {
                    index: None,
                    pk_name: "PK",
                    pk: deliveries_pk(endpoint_id),
                    sk_name: "SK",
                    before: after,
                    filter,
                },
                limit,
            )
            .await?;
        let deliveries = items
            .into_iter()
            .map(delivery_from_item)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(DeliveryPage { deliveries, next })
    }
}
