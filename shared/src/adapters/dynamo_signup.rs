//! Signup links and what happened to them, in the single table.
//! Link: `PK = SIGNUPLINK#{id}`, `SK = SIGNUPLINK`; listed per account through GSI1 (keys only)
//! under `ACCOUNT#{a}#SIGNUPLINKS` / `{createdAt}#{id}`, newest first. `linkExpiresAt` is when
//! the link stops working; `expiresAt` (the table's TTL) keeps the record readable for
//! [`RECORD_RETENTION`] after that. The number's creation consumes the link (`usedAt`,
//! `usedBy`) in its own transaction (`dynamo.rs`); a WABA-only signup's creation consumes it
//! (`usedByWabaSignup`) and its end records the outcome on it (`dynamo_waba.rs`).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, ReturnValue};
use chrono::DateTime;

use super::dynamo::{DynamoStore, conditionally_written, key, keys, n, s, sdk_unavailable};
use crate::domain::signup_session::{
    LinkCursor, MetaSignupError, RECORD_RETENTION, Report, SignupSession,
};
use crate::domain::{AccountId, NumberId, time};
use crate::ports::{LinkPage, RevokeOutcome, SignupLinks, SignupSessions, StoreError, StoreResult};

type Item = HashMap<String, AttributeValue>;

pub(crate) const INDEX: &str = "GSI1";

/// The condition under which a link still works: not used, not revoked, not expired (links
/// written before `linkExpiresAt` existed expire at `expiresAt`).
pub(crate) const USABLE: &str = "attribute_not_exists(usedAt) AND attribute_not_exists(revokedAt) AND (linkExpiresAt > :epoch OR (attribute_not_exists(linkExpiresAt) AND expiresAt > :epoch))";

pub(crate) fn account_links(account: &AccountId) -> String {
    format!("ACCOUNT#{account}#SIGNUPLINKS")
}

fn text(item: &Item, name: &str) -> Option<String> {
    item.get(name).and_then(|v| v.as_s().ok()).cloned()
}

fn timestamp(item: &Item, name: &str) -> StoreResult<Option<time::Timestamp>> {
    text(item, name)
        .map(|t| time::parse(&t).map_err(StoreError::corrupt))
        .transpose()
}

fn epoch(item: &Item, name: &str) -> Option<time::Timestamp> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse::<i64>().ok())
        .and_then(|secs| DateTime::from_timestamp(secs, 0))
}

fn from_item(item: &Item) -> StoreResult<SignupSession> {
    let link_id = text(item, "PK")
        .and_then(|pk| pk.strip_prefix("SIGNUPLINK#").map(str::to_string))
        .ok_or_else(|| StoreError::corrupt("signup link without id"))?;
    let account = text(item, "accountId")
        .ok_or_else(|| StoreError::corrupt("signup link without account"))?;
    let created_at = timestamp(item, "createdAt")?
        .ok_or_else(|| StoreError::corrupt("signup link without createdAt"))?;
    let expires_at = epoch(item, "linkExpiresAt")
        .or_else(|| epoch(item, "expiresAt"))
        .ok_or_else(|| StoreError::corrupt("signup link without expiry"))?;
    let report_at = timestamp(item, "reportAt")?;
    let report = match text(item, "reportKind").as_deref() {
        Some("opened") => Some(Report::Opened),
        Some("cancelled") => Some(Report::Cancelled {
            step: text(item, "cancelStep").unwrap_or_default(),
        }),
        Some("failed") => Some(Report::Failed(MetaSignupError {
            message: text(item, "errorMessage").unwrap_or_default(),
            error_id: text(item, "errorId"),
            session_id: text(item, "sessionId"),
        })),
        _ => None,
    };
    Ok(SignupSession {
        link_id,
        account_id: AccountId::from(account),
        created_at,
        expires_at,
        redirect_url: text(item, "redirectUrl"),
        number_id: text(item, "usedBy").map(NumberId::from),
        used_at: timestamp(item, "usedAt")?,
        revoked_at: timestamp(item, "revokedAt")?,
        opened_at: timestamp(item, "openedAt")?,
        last_report: report.zip(report_at),
        waba_signup: match text(item, "usedByWabaSignup") {
            Some(id) => Some((id, super::dynamo_waba::link_outcome(item)?)),
            None => None,
        },
    })
}

fn link_key(link_id: &str) -> Item {
    key(keys::signup_link(link_id), keys::SIGNUP_LINK)
}

impl DynamoStore {
    async fn read_link(&self, link_id: &str) -> StoreResult<Option<SignupSession>> {
        let output = self
            .client()
            .get_item()
            .table_name(self.table())
            .set_key(Some(link_key(link_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_unavailable)?;
        output.item.as_ref().map(from_item).transpose()
    }

    async fn batch_get_links(&self, ids: &[String]) -> StoreResult<HashMap<String, SignupSession>> {
        let mut found = HashMap::new();
        let mut pending: Vec<Item> = ids.iter().map(|id| link_key(id)).collect();
        let mut attempt = 0;
        while !pending.is_empty() {
            let request = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut pending)))
                .consistent_read(true)
                .build()
                .map_err(StoreError::unavailable)?;
            let output = self
                .client()
                .batch_get_item()
                .request_items(self.table(), request)
                .send()
                .await
                .map_err(sdk_unavailable)?;
            for item in output
                .responses
                .unwrap_or_default()
                .remove(self.table())
                .unwrap_or_default()
            {
                let link = from_item(&item)?;
                found.insert(link.link_id.clone(), link);
            }
            pending = output
                .unprocessed_keys
                .unwrap_or_default()
                .remove(self.table())
                .map(|k| k.keys)
                .unwrap_or_default();
            attempt += 1;
            if !pending.is_empty() {
                if attempt > 8 {
                    return Err(StoreError::unavailable("signup links left unprocessed"));
                }
                tokio::time::sleep(std::time::Duration::from_millis(20 << attempt.min(5))).await;
            }
        }
        Ok(found)
    }
}

impl SignupLinks for DynamoStore {
    async fn save_link(&self, link: &SignupSession) -> StoreResult<()> {
        let mut item = link_key(&link.link_id);
        item.insert("entity".into(), s("SIGNUPLINK"));
        item.insert("accountId".into(), s(link.account_id.as_str()));
        item.insert("createdAt".into(), s(time::format(&link.created_at)));
        item.insert("linkExpiresAt".into(), n(link.expires_at.timestamp()));
        item.insert(
            "expiresAt".into(),
            n((link.expires_at + RECORD_RETENTION).timestamp()),
        );
        item.insert("GSI1PK".into(), s(account_links(&link.account_id)));
        item.insert("GSI1SK".into(), s(LinkCursor::of(link).sort_key()));
        if let Some(url) = &link.redirect_url {
            item.insert("redirectUrl".into(), s(url.as_str()));
        }
        self.client()
            .put_item()
            .table_name(self.table())
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(PK)")
            .send()
            .await
            .map_err(sdk_unavailable)?;
        Ok(())
    }
}

impl SignupSessions for DynamoStore {
    async fn link(&self, link_id: &str) -> StoreResult<Option<SignupSession>> {
        self.read_link(link_id).await
    }

    async fn links(
        &self,
        account: &AccountId,
        limit: u32,
        after: Option<&LinkCursor>,
    ) -> StoreResult<LinkPage> {
        let start = after.map(|cursor| {
            let mut start = link_key(&cursor.link_id);
            start.insert("GSI1PK".into(), s(account_links(account)));
            start.insert("GSI1SK".into(), s(cursor.sort_key()));
            start
        });
        let output = self
            .client()
            .query()
            .table_name(self.table())
            .index_name(INDEX)
            .key_condition_expression("GSI1PK = :pk")
            .expression_attribute_values(":pk", s(account_links(account)))
            .scan_index_forward(false)
            .limit(i32::try_from(limit.max(1)).unwrap_or(100))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(sdk_unavailable)?;
        let ids: Vec<String> = output
            .items
            .unwrap_or_default()
            .iter()
            .filter_map(|item| {
                text(item, "PK").and_then(|pk| pk.strip_prefix("SIGNUPLINK#").map(str::to_string))
            })
            .collect();
        let mut found = self.batch_get_links(&ids).await?;
        let links: Vec<SignupSession> = ids.iter().filter_map(|id| found.remove(id)).collect();
        let more = output
            .last_evaluated_key
            .is_some_and(|last| !last.is_empty());
        let next = if more {
            links.last().map(LinkCursor::of)
        } else {
            None
        };
        Ok(LinkPage { links, next })
    }

    async fn record_report(
        &self,
        account: &AccountId,
        link_id: &str,
        report: &Report,
        at: time::Timestamp,
    ) -> StoreResult<bool> {
        // The page reports "opened" and, later, what happened, each without waiting: should the
        // two arrive the wrong way round, "opened" must not overwrite the later report.
        let mut sets = match report {
            Report::Opened => vec![
                "reportKind = if_not_exists(reportKind, :kind)",
                "reportAt = if_not_exists(reportAt, :at)",
            ],
            _ => vec!["reportKind = :kind", "reportAt = :at"],
        };
        let mut removes: Vec<&str> = Vec::new();
        let mut values: Vec<(&str, AttributeValue)> = vec![
            (":kind", s(report.kind())),
            (":at", s(time::format(&at))),
            (":account", s(account.as_str())),
            (":epoch", n(at.timestamp())),
        ];
        let mut optional =
            |name: &'static str, placeholder: &'static str, value: Option<&str>| match value {
                Some(value) => {
                    sets.push(name);
                    values.push((placeholder, s(value)));
                }
                None => removes.push(name.split(' ').next().unwrap_or(name)),
            };
        match report {
            Report::Opened => {}
            Report::Cancelled { step } => {
                optional("cancelStep = :step", ":step", Some(step));
                optional("errorMessage = :message", ":message", None);
                optional("errorId = :error", ":error", None);
                optional("sessionId = :session", ":session", None);
            }
            Report::Failed(error) => {
                optional("cancelStep = :step", ":step", None);
                optional("errorMessage = :message", ":message", Some(&error.message));
                optional("errorId = :error", ":error", error.error_id.as_deref());
                optional(
                    "sessionId = :session",
                    ":session",
                    error.session_id.as_deref(),
                );
            }
        }
        sets.push("openedAt = if_not_exists(openedAt, :at)");
        let mut expression = format!("SET {}", sets.join(", "));
        if !removes.is_empty() {
            expression.push_str(&format!(" REMOVE {}", removes.join(", ")));
        }
        let mut request = self
            .client()
            .update_item()
            .table_name(self.table())
            .set_key(Some(link_key(link_id)))
            .update_expression(expression)
            .condition_expression(format!(
                "attribute_exists(PK) AND accountId = :account AND {USABLE}"
            ));
        for (placeholder, value) in values {
            request = request.expression_attribute_values(placeholder, value);
        }
        conditionally_written(request.send().await)
    }

    async fn revoke_link(
        &self,
        account: &AccountId,
        link_id: &str,
        at: time::Timestamp,
    ) -> StoreResult<RevokeOutcome> {
        let result = self
            .client()
            .update_item()
            .table_name(self.table())
            .set_key(Some(link_key(link_id)))
            .update_expression("SET revokedAt = if_not_exists(revokedAt, :at)")
            .condition_expression(
                "attribute_exists(PK) AND accountId = :account AND attribute_not_exists(usedAt)",
            )
            .expression_attribute_values(":at", s(time::format(&at)))
            .expression_attribute_values(":account", s(account.as_str()))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(output) => match output.attributes {
                Some(item) => Ok(RevokeOutcome::Revoked(from_item(&item)?)),
                None => Err(StoreError::corrupt("revoked link returned no attributes")),
            },
            Err(err) if super::dynamo::is_conditional_failure(&err) => {
                match self.read_link(link_id).await? {
                    Some(link) if &link.account_id == account => {
                        Ok(RevokeOutcome::AlreadyUsed(link))
                    }
                    _ => Ok(RevokeOutcome::NotFound),
                }
            }
            Err(err) => Err(sdk_unavailable(err)),
        }
    }
}
