//! Finding an account's numbers by status, display number or WABA: each filter has its index
//! (GSI1 status, GSI4 display number, GSI5 WABA, GSI2 all), so a search is Queries on one
//! partition of the account and a `BatchGetItem` of the page, never a Scan.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, Select};

use super::dynamo::{DynamoStore, keys, s, sdk_unavailable};
use crate::domain::AccountId;
use crate::ports::{
    FoundNumbers, NumberCursor, NumberFinder, NumberSearch, PageStart, StoreError, StoreResult,
};

type Item = HashMap<String, AttributeValue>;

/// The index a search reads, its partition, and what is filtered on the attributes it projects.
struct IndexPlan {
    index: &'static str,
    partition_attr: &'static str,
    sort_attr: &'static str,
    partition: String,
    /// `(attribute, value)` pairs every match must have (`status`, `wabaId`).
    filters: Vec<(&'static str, String)>,
    /// Whether the account's counters hold this search's total.
    counted: bool,
}

impl IndexPlan {
    fn for_search(account: &AccountId, search: &NumberSearch) -> IndexPlan {
        let status = search.status.map(|s| ("status", s.as_str().to_string()));
        if let Some(digits) = &search.display_digits {
            let mut filters: Vec<_> = status.into_iter().collect();
            if let Some(waba) = &search.waba_id {
                filters.push(("wabaId", waba.clone()));
            }
            return IndexPlan {
                index: "GSI4",
                partition_attr: "GSI4PK",
                sort_attr: "GSI4SK",
                partition: keys::account_display(account, digits),
                filters,
                counted: false,
            };
        }
        if let Some(waba) = &search.waba_id {
            return IndexPlan {
                index: "GSI5",
                partition_attr: "GSI5PK",
                sort_attr: "GSI5SK",
                partition: keys::account_waba(account, waba),
                filters: status.into_iter().collect(),
                counted: false,
            };
        }
        match search.status {
            Some(status) => IndexPlan {
                index: "GSI1",
                partition_attr: "GSI1PK",
                sort_attr: "GSI1SK",
                partition: keys::account_status(account, status),
                filters: Vec::new(),
                counted: true,
            },
            None => IndexPlan {
                index: "GSI2",
                partition_attr: "GSI2PK",
                sort_attr: "GSI2SK",
                partition: keys::account(account),
                filters: Vec::new(),
                counted: true,
            },
        }
    }

    /// The index entry of the cursor's number, where the next page starts (exclusive).
    fn start_after(&self, account: &AccountId, cursor: &NumberCursor) -> Item {
        HashMap::from([
            ("PK".to_string(), s(keys::account(account))),
            ("SK".to_string(), s(keys::number(&cursor.number_id))),
            (self.partition_attr.to_string(), s(self.partition.clone())),
            (self.sort_attr.to_string(), s(cursor.sort_key())),
        ])
    }

    fn filter_expression(&self) -> Option<String> {
        (!self.filters.is_empty()).then(|| {
            (0..self.filters.len())
                .map(|i| format!("#f{i} = :f{i}"))
                .collect::<Vec<_>>()
                .join(" AND ")
        })
    }

    fn query(
        &self,
        store: &DynamoStore,
    ) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
        let mut query = store
            .client()
            .query()
            .table_name(store.table())
            .index_name(self.index)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", self.partition_attr)
            .expression_attribute_values(":pk", s(self.partition.clone()))
            .set_filter_expression(self.filter_expression());
        for (i, (attr, value)) in self.filters.iter().enumerate() {
            query = query
                .expression_attribute_names(format!("#f{i}"), *attr)
                .expression_attribute_values(format!(":f{i}"), s(value.clone()));
        }
        query
    }
}

impl DynamoStore {
    /// Keys of up to `wanted` matches after skipping `skip`, from `start` on.
    async fn matching_keys(
        &self,
        plan: &IndexPlan,
        mut start: Option<Item>,
        mut skip: usize,
        wanted: usize,
    ) -> StoreResult<Vec<Item>> {
        let mut keys = Vec::with_capacity(wanted);
        loop {
            let output = plan
                .query(self)
                .scan_index_forward(false)
                .limit((skip + wanted - keys.len()).clamp(1, 1000) as i32)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(sdk_unavailable)?;
            self.stats().record(output.scanned_count().max(0) as u64);
            for item in output.items.unwrap_or_default() {
                if skip > 0 {
                    skip -= 1;
                    continue;
                }
                if keys.len() < wanted {
                    let (Some(pk), Some(sk)) = (item.get("PK"), item.get("SK")) else {
                        return Err(StoreError::corrupt("index entry without keys"));
                    };
                    keys.push(HashMap::from([
                        ("PK".to_string(), pk.clone()),
                        ("SK".to_string(), sk.clone()),
                    ]));
                }
            }
            match output.last_evaluated_key {
                Some(next) if !next.is_empty() && keys.len() < wanted => start = Some(next),
                _ => return Ok(keys),
            }
        }
    }

    /// Matches in the plan's partition, counted by DynamoDB (`Select: COUNT`): index entries
    /// of a few bytes each, never the numbers themselves.
    async fn count_matches(&self, plan: &IndexPlan) -> StoreResult<u64> {
        let mut total = 0u64;
        let mut start = None;
        loop {
            let output = plan
                .query(self)
                .select(Select::Count)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(sdk_unavailable)?;
            self.stats().record(output.scanned_count().max(0) as u64);
            total += output.count().max(0) as u64;
            match output.last_evaluated_key {
                Some(next) if !next.is_empty() => start = Some(next),
                _ => return Ok(total),
            }
        }
    }
}

impl NumberFinder for DynamoStore {
    async fn find(&self, account: &AccountId, search: &NumberSearch) -> StoreResult<FoundNumbers> {
        let plan = IndexPlan::for_search(account, search);
        let (start, skip) = match &search.start {
            PageStart::Offset(offset) => (None, *offset as usize),
            PageStart::After(cursor) => (Some(plan.start_after(account, cursor)), 0),
        };
        let limit = search.limit as usize;
        // One more than the page: whether it exists says whether there is a next page.
        let mut keys = self.matching_keys(&plan, start, skip, limit + 1).await?;
        let more = keys.len() > limit;
        keys.truncate(limit);
        let numbers = self.batch_get_numbers(keys).await?;
        let total = if plan.counted {
            self.count(account, search.status).await?
        } else {
            self.count_matches(&plan).await?
        };
        let next = more.then(|| numbers.last().map(NumberCursor::of)).flatten();
        Ok(FoundNumbers {
            numbers,
            total,
            next,
        })
    }
}
