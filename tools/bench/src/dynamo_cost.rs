//! DynamoDB cost of the API's reads and of a status change, counted at the proxy.

use anyhow::{Context, Result};
use muchaw_shared::adapters::dynamo::DynamoStore;
use muchaw_shared::adapters::sqs::SqsQueue;
use muchaw_shared::domain::{AccountId, Status};
use muchaw_shared::ports::{NumberReader, Page};

use crate::proxy::{CountingProxy, Counts};

#[derive(Clone, Debug)]
pub struct ListCost {
    pub label: String,
    pub account_size: usize,
    pub offset: u32,
    pub counts: Counts,
}

#[derive(Clone, Debug)]
pub struct DynamoCost {
    pub lists: Vec<ListCost>,
    pub status_change: Counts,
    pub status_change_label: String,
    /// A number item's size in bytes (for the write-unit estimate).
    pub number_item_bytes: u64,
}

pub struct ListCase<'a> {
    pub label: &'a str,
    pub account: &'a AccountId,
    pub account_size: usize,
    pub status: Option<Status>,
    pub offset: u32,
}

/// `store` and `queue` must reach moto through `proxy`; `direct` reaches it without.
pub async fn measure(
    proxy: &CountingProxy,
    store: &DynamoStore,
    queue: &SqsQueue,
    direct: &DynamoStore,
    cases: &[ListCase<'_>],
    change_in: &AccountId,
) -> Result<DynamoCost> {
    let mut lists = Vec::new();
    for case in cases {
        let mark = proxy.mark();
        let page = store
            .list(
                case.account,
                case.status,
                Page {
                    limit: 20,
                    offset: case.offset,
                },
            )
            .await?;
        let counts = Counts::of(&proxy.records_since(mark));
        eprintln!(
            "dynamodb: list {} -> {} numbers, {} requests, {} items read, {:.1} RCU",
            case.label,
            page.numbers.len(),
            counts.ours_total(),
            counts.items_read,
            counts.read_units
        );
        lists.push(ListCost {
            label: case.label.to_string(),
            account_size: case.account_size,
            offset: case.offset,
            counts,
        });
    }
    let number = direct
        .list(
            change_in,
            Some(Status::Active),
            Page {
                limit: 1,
                offset: 0,
            },
        )
        .await?
        .numbers
        .into_iter()
        .next()
        .context("no ACTIVE number to change")?;
    let item = direct
        .client()
        .get_item()
        .table_name(direct.table())
        .key(
            "PK",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("ACCOUNT#{}", number.account_id)),
        )
        .key(
            "SK",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("NUMBER#{}", number.id)),
        )
        .send()
        .await?
        .item
        .unwrap_or_default();
    let number_item_bytes = item_bytes(&item);
    let mark = proxy.mark();
    muchaw_shared::lifecycle::apply(
        store,
        queue,
        &number,
        muchaw_shared::domain::lifecycle::Command::Ban,
    )
    .await
    .context("status change")?;
    let status_change = Counts::of(&proxy.records_since(mark));
    eprintln!(
        "dynamodb: status change ACTIVE -> BANNED: {} requests, {} items written in {} transaction(s) of {} items, {:.0} WCU",
        status_change.ours_total(),
        status_change.items_written,
        status_change.transactions,
        status_change.max_transaction_size,
        status_change.write_units
    );
    Ok(DynamoCost {
        lists,
        status_change,
        status_change_label: "ACTIVE → BANNED (lifecycle::change_status)".into(),
        number_item_bytes,
    })
}

/// An item's size as DynamoDB counts it: attribute names plus values.
pub fn item_bytes(
    item: &std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>,
) -> u64 {
    item.iter()
        .map(|(k, v)| k.len() as u64 + attribute_size(v))
        .sum()
}

fn attribute_size(value: &aws_sdk_dynamodb::types::AttributeValue) -> u64 {
    use aws_sdk_dynamodb::types::AttributeValue as A;
    match value {
        A::S(s) => s.len() as u64,
        A::N(n) => (n.len() as u64).div_ceil(2) + 1,
        A::B(b) => b.as_ref().len() as u64,
        A::Bool(_) | A::Null(_) => 1,
        A::Ss(v) => v.iter().map(|s| s.len() as u64).sum(),
        A::M(m) => {
            3 + m
                .iter()
                .map(|(k, v)| 1 + k.len() as u64 + attribute_size(v))
                .sum::<u64>()
        }
        A::L(l) => 3 + l.iter().map(|v| 1 + attribute_size(v)).sum::<u64>(),
        _ => 0,
    }
}
