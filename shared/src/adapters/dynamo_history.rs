//! Reading the outbox back: a number's history (its events on GSI3, newest first) and single
//! events by id. Also the newest-first paging both the history and the delivery log use.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::dynamo::{DynamoStore, keys, s, sdk_unavailable};
use crate::domain::history::EventPosition;
use crate::domain::{AccountId, EventEnvelope, NumberId};
use crate::ports::{EventHistory, EventPage, StoreError, StoreResult};

pub(crate) type Item = HashMap<String, AttributeValue>;

/// The most DynamoDB pages one API page reads: a filtered list (deliveries by status) stops
/// there and hands back a cursor, so a request costs O(page), never O(endpoint).
const MAX_PAGES_PER_REQUEST: usize = 10;

/// A newest-first Query over one partition: `pk_name = pk`, sort keys `{createdAt}#{eventId}`
/// in `sk_name`, starting below `before`, optionally filtered.
pub(crate) struct NewestFirst<'a> {
    pub index: Option<&'a str>,
    pub pk_name: &'a str,
    pub pk: String,
    pub sk_name: &'a str,
    pub before: Option<&'a EventPosition>,
    /// A filter expression and its values (`:f...`, names `#f...`).
    pub filter: Option<(&'a str, HashMap<String, String>, Item)>,
}

impl DynamoStore {
    /// Up to `limit` items and where the next page starts (`None`: the partition is read).
    pub(crate) async fn newest_first(
        &self,
        query: NewestFirst<'_>,
        limit: u32,
    ) -> StoreResult<(Vec<Item>, Option<EventPosition>)> {
        let wanted = limit as usize;
        let mut items: Vec<Item> = Vec::new();
        let mut start: Option<Item> = None;
        for _ in 0..MAX_PAGES_PER_REQUEST {
            let mut condition = format!("{} = :pk", query.pk_name);
            let mut values: Item = HashMap::from([(":pk".to_string(), s(query.pk.clone()))]);
            if let Some(before) = query.before {
                condition.push_str(&format!(" AND {} < :before", query.sk_name));
                values.insert(":before".into(), s(before.sort_key()));
            }
            let mut request = self
                .client()
                .query()
                .table_name(self.table())
                .set_index_name(query.index.map(str::to_string))
                .key_condition_expression(condition)
                .scan_index_forward(false)
                .limit(page_limit(wanted + 1 - items.len(), query.filter.is_some()))
                .set_exclusive_start_key(start.take());
            if let Some((expression, names, filter_values)) = &query.filter {
                values.extend(filter_values.clone());
                request = request
                    .filter_expression(*expression)
                    .set_expression_attribute_names(Some(names.clone()));
            }
            let output = request
                .set_expression_attribute_values(Some(values))
                .send()
                .await
                .map_err(sdk_unavailable)?;
            self.stats()
                .record_items(output.scanned_count().max(0) as u64);
            items.extend(output.items.unwrap_or_default());
            if items.len() > wanted {
                items.truncate(wanted);
                let next = items
                    .last()
                    .and_then(|item| sort_key_position(item, query.sk_name));
                return Ok((items, next));
            }
            match output.last_evaluated_key {
                Some(next) if !next.is_empty() => start = Some(next),
                _ => return Ok((items, None)),
            }
        }
        // Page budget spent (a sparse filter): continue below the last key evaluated.
        let next = start
            .as_ref()
            .and_then(|key| sort_key_position(key, query.sk_name));
        Ok((items, next))
    }
}

/// One more than the page, to know whether another follows; a filtered query reads wider pages
/// (DynamoDB applies `Limit` before the filter).
fn page_limit(remaining: usize, filtered: bool) -> i32 {
    let items = if filtered {
        remaining.max(100)
    } else {
        remaining
    };
    i32::try_from(items).unwrap_or(i32::MAX)
}

fn sort_key_position(item: &Item, sk_name: &str) -> Option<EventPosition> {
    item.get(sk_name)
        .and_then(|v| v.as_s().ok())
        .and_then(|key| EventPosition::from_sort_key(key))
}

fn event_from_item(item: &Item) -> StoreResult<EventEnvelope> {
    let body = item
        .get("body")
        .and_then(|v| v.as_s().ok())
        .ok_or_else(|| StoreError::corrupt("event without body"))?;
    serde_json::from_str(body).map_err(StoreError::corrupt)
}

impl EventHistory for DynamoStore {
    async fn number_events(
        &self,
        account: &AccountId,
        number: &NumberId,
        limit: u32,
        after: Option<&EventPosition>,
    ) -> StoreResult<EventPage> {
        let (items, next) = self
            .newest_first(
                NewestFirst {
                    index: Some("GSI3"),
                    pk_name: "GSI3PK",
                    pk: keys::history(account, number.as_str()),
                    sk_name: "GSI3SK",
                    before: after,
                    filter: None,
                },
                limit,
            )
            .await?;
        let events = items
            .iter()
            .map(event_from_item)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(EventPage { events, next })
    }

    async fn event(
        &self,
        account: &AccountId,
        event_id: &str,
    ) -> StoreResult<Option<EventEnvelope>> {
        let found = self
            .client()
            .get_item()
            .table_name(self.table())
            .set_key(Some(super::dynamo::key(keys::event(event_id), keys::EVENT)))
            .send()
            .await
            .map_err(sdk_unavailable)?;
        let Some(item) = found.item else {
            return Ok(None);
        };
        let event = event_from_item(&item)?;
        Ok((&event.account_id == account).then_some(event))
    }
}
