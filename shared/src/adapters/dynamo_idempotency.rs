//! Idempotency keys in the table: one item per (account, key), `IDEMPOTENCY#{account}` /
//! `KEY#{sha256 of the key}` (the key is the client's text: hashed, it is bounded and safe in a
//! sort key). TTL on `expiresAt` removes them a day after the first request; until TTL runs
//! (it may lag), an expired item counts as absent.

use std::collections::HashMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use sha2::{Digest, Sha256};

use super::dynamo::{DynamoStore, conditionally_written, key, n, s, sdk_unavailable};
use crate::domain::AccountId;
use crate::ports::{
    Claim, IdempotencyRecord, IdempotencyStore, StoreError, StoreResult, StoredResponse,
};

fn slot(account: &AccountId, idempotency_key: &str) -> HashMap<String, AttributeValue> {
    key(
        format!("IDEMPOTENCY#{account}"),
        format!(
            "KEY#{}",
            hex::encode(Sha256::digest(idempotency_key.as_bytes()))
        ),
    )
}

/// Taken when there is no item, it expired, or it is an unanswered attempt at the same request
/// whose lease ran out (the Lambda running it died).
const CLAIMABLE: &str = "attribute_not_exists(PK) OR expiresAt <= :now \
    OR (fingerprint = :fingerprint AND attribute_not_exists(responseStatus) AND leaseUntil <= :now)";

fn record_from_item(item: &HashMap<String, AttributeValue>) -> StoreResult<IdempotencyRecord> {
    let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
    let fingerprint = text("fingerprint")
        .ok_or_else(|| StoreError::corrupt("idempotency key without fingerprint"))?;
    let response = match item.get("responseStatus") {
        None => None,
        Some(status) => {
            let status = status
                .as_n()
                .ok()
                .and_then(|v| v.parse::<u16>().ok())
                .ok_or_else(|| StoreError::corrupt("idempotency response without status"))?;
            let body = item
                .get("responseBody")
                .and_then(|v| v.as_b().ok())
                .map(|b| b.as_ref().to_vec())
                .unwrap_or_default();
            Some(StoredResponse {
                status,
                content_type: text("responseContentType"),
                location: text("responseLocation"),
                body,
                secret_of: text("responseSecretOf"),
                answered_by_route: item
                    .get("responseAnsweredByRoute")
                    .and_then(|v| v.as_bool().ok())
                    .is_some_and(|answered| *answered),
            })
        }
    };
    Ok(IdempotencyRecord {
        fingerprint,
        response,
    })
}

fn expired(item: &HashMap<String, AttributeValue>, now: i64) -> bool {
    item.get("expiresAt")
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse::<i64>().ok())
        .is_none_or(|at| at <= now)
}

/// A claim that lost a race with an item that then vanished (released, expired) is tried
/// again, this many times in all.
const CLAIM_ATTEMPTS: u32 = 3;

impl IdempotencyStore for DynamoStore {
    async fn claim(
        &self,
        account: &AccountId,
        idempotency_key: &str,
        fingerprint: &str,
        now: i64,
        lease_until: i64,
        expires_at: i64,
    ) -> StoreResult<Claim> {
        for _ in 0..CLAIM_ATTEMPTS {
            let mut item = slot(account, idempotency_key);
            item.insert("entity".into(), s("IDEMPOTENCY"));
            item.insert("fingerprint".into(), s(fingerprint));
            item.insert("leaseUntil".into(), n(lease_until));
            item.insert("expiresAt".into(), n(expires_at));
            let result = self
                .client()
                .put_item()
                .table_name(self.table())
                .set_item(Some(item))
                .condition_expression(CLAIMABLE)
                .expression_attribute_values(":now", n(now))
                .expression_attribute_values(":fingerprint", s(fingerprint))
                .send()
                .await;
            if conditionally_written(result)? {
                return Ok(Claim::Claimed);
            }
            let held = self
                .client()
                .get_item()
                .table_name(self.table())
                .set_key(Some(slot(account, idempotency_key)))
                .consistent_read(true)
                .send()
                .await
                .map_err(sdk_unavailable)?
                .item;
            match held {
                Some(item) if !expired(&item, now) => {
                    return Ok(Claim::Held(record_from_item(&item)?));
                }
                _ => continue,
            }
        }
        Err(StoreError::unavailable(
            "idempotency key kept changing while being claimed",
        ))
    }

    async fn complete(
        &self,
        account: &AccountId,
        idempotency_key: &str,
        fingerprint: &str,
        response: &StoredResponse,
    ) -> StoreResult<()> {
        let mut update = self
            .client()
            .update_item()
            .table_name(self.table())
            .set_key(Some(slot(account, idempotency_key)))
            .condition_expression("fingerprint = :fingerprint")
            .expression_attribute_values(":fingerprint", s(fingerprint))
            .expression_attribute_values(":status", n(i64::from(response.status)))
            .expression_attribute_values(
                ":body",
                AttributeValue::B(Blob::new(response.body.clone())),
            );
        let mut sets = vec!["responseStatus = :status", "responseBody = :body"];
        if let Some(content_type) = &response.content_type {
            update = update.expression_attribute_values(":contentType", s(content_type.clone()));
            sets.push("responseContentType = :contentType");
        }
        if let Some(location) = &response.location {
            update = update.expression_attribute_values(":location", s(location.clone()));
            sets.push("responseLocation = :location");
        }
        if let Some(endpoint) = &response.secret_of {
            update = update.expression_attribute_values(":secretOf", s(endpoint.clone()));
            sets.push("responseSecretOf = :secretOf");
        }
        if response.answered_by_route {
            update = update.expression_attribute_values(":byRoute", AttributeValue::Bool(true));
            sets.push("responseAnsweredByRoute = :byRoute");
        }
        let result = update
            .update_expression(format!("SET {} REMOVE leaseUntil", sets.join(", ")))
            .send()
            .await;
        if conditionally_written(result)? {
            Ok(())
        } else {
            Err(StoreError::NotFound)
        }
    }

    async fn release(
        &self,
        account: &AccountId,
        idempotency_key: &str,
        fingerprint: &str,
    ) -> StoreResult<()> {
        let result = self
            .client()
            .delete_item()
            .table_name(self.table())
            .set_key(Some(slot(account, idempotency_key)))
            .condition_expression(
                "fingerprint = :fingerprint AND attribute_not_exists(responseStatus)",
            )
            .expression_attribute_values(":fingerprint", s(fingerprint))
            .send()
            .await;
        conditionally_written(result).map(|_| ())
    }
}
