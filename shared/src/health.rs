//! The scheduled health sync: Meta no longer pushes quality changes (META.md), so every `ACTIVE`
//! number's profile is polled, a changed `quality_rating` is written (conditioned on the old
//! value, so overlapping runs emit once) and announced as `number.quality_updated`; a token
//! expiring within a week is announced as `number.token_expiring`, at most once a day per
//! number (the day is kept on the number as `tokenExpiryWarnedOn`).
//!
//! Meta's rate limits end the run early: the next schedule starts over, and numbers already
//! synced are unchanged then, so nothing is emitted twice.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use futures::StreamExt;
use serde::Serialize;

use crate::domain::lifecycle::Command;
use crate::domain::meta::MetaError;
use crate::domain::time;
use crate::domain::{AccountId, Number, QualityRating, Status};
use crate::lifecycle::{self, Changed, LifecycleError};
use crate::ports::{
    AccountDirectory, EventLog, LifecycleStore, MessageQueue, MetaGraph, NumberReader, Page,
    QueueError, StoreError, TokenVault, VaultError,
};

/// Meta's rate-limit codes (app, user, WABA, Cloud API).
const RATE_LIMIT_CODES: [&str; 4] = ["4", "17", "80007", "130429"];
pub use crate::domain::lifecycle::TOKEN_WARNING_DAYS;
const PAGE_SIZE: u32 = 100;

pub fn is_rate_limited(err: &MetaError) -> bool {
    RATE_LIMIT_CODES.contains(&err.code.as_str())
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthSummary {
    pub checked: usize,
    pub updated: usize,
    pub warned: usize,
    /// Numbers skipped for an error (no token, Meta refusing, storage); logged each.
    pub errors: usize,
    pub stopped_early: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(transparent)]
    Lifecycle(LifecycleError),
}

impl From<LifecycleError> for HealthError {
    fn from(err: LifecycleError) -> Self {
        match err {
            LifecycleError::Store(err) => HealthError::Store(err),
            LifecycleError::Queue(err) => HealthError::Queue(err),
            other => HealthError::Lifecycle(other),
        }
    }
}

pub struct HealthSync<S, Q, M, V> {
    pub store: S,
    pub queue: Q,
    pub meta: M,
    pub vault: V,
    /// Numbers checked at once.
    pub concurrency: usize,
}

#[derive(Default)]
struct Counters {
    checked: AtomicUsize,
    updated: AtomicUsize,
    warned: AtomicUsize,
    errors: AtomicUsize,
    stop: AtomicBool,
}

enum Checked {
    Done,
    RateLimited,
}

impl<S, Q, M, V> HealthSync<S, Q, M, V>
where
    S: NumberReader + LifecycleStore + AccountDirectory + EventLog,
    Q: MessageQueue,
    M: MetaGraph,
    V: TokenVault,
{
    pub async fn run(&self) -> Result<HealthSummary, HealthError> {
        let counters = Counters::default();
        let accounts = self.store.account_ids().await?;
        'accounts: for account in &accounts {
            let mut offset = 0;
            loop {
                if counters.stop.load(Ordering::Relaxed) {
                    break 'accounts;
                }
                let page = self.active_page(account, offset).await?;
                let fetched = page.len() as u32;
                futures::stream::iter(page.iter())
                    .map(|number| self.check_counted(number, &counters))
                    .buffer_unordered(self.concurrency.max(1))
                    .collect::<Vec<()>>()
                    .await;
                if fetched < PAGE_SIZE {
                    break;
                }
                offset += fetched;
            }
        }
        let summary = HealthSummary {
            checked: counters.checked.load(Ordering::Relaxed),
            updated: counters.updated.load(Ordering::Relaxed),
            warned: counters.warned.load(Ordering::Relaxed),
            errors: counters.errors.load(Ordering::Relaxed),
            stopped_early: counters.stop.load(Ordering::Relaxed),
        };
        tracing::info!(
            accounts = accounts.len(),
            checked = summary.checked,
            updated = summary.updated,
            warned = summary.warned,
            errors = summary.errors,
            stopped_early = summary.stopped_early,
            "health sync finished"
        );
        Ok(summary)
    }

    async fn active_page(
        &self,
        account: &AccountId,
        offset: u32,
    ) -> Result<Vec<Number>, HealthError> {
        let page = self
            .store
            .list(
                account,
                Some(Status::Active),
                Page {
                    limit: PAGE_SIZE,
                    offset,
                },
            )
            .await?;
        Ok(page.numbers)
    }

    async fn check_counted(&self, number: &Number, counters: &Counters) {
        if counters.stop.load(Ordering::Relaxed) {
            return;
        }
        counters.checked.fetch_add(1, Ordering::Relaxed);
        match self.check(number, counters).await {
            Ok(Checked::Done) => {}
            Ok(Checked::RateLimited) => {
                if !counters.stop.swap(true, Ordering::Relaxed) {
                    tracing::warn!(number_id = %number.id, "Meta rate limit reached; the health sync stops here and the next run continues");
                }
            }
            Err(err) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(number_id = %number.id, error = %err, "health check of a number failed");
            }
        }
    }

    async fn check(&self, number: &Number, counters: &Counters) -> Result<Checked, HealthError> {
        // An event a crash left in the outbox (this job's or any other writer's) goes out first.
        lifecycle::finish_publishing(&self.store, &self.queue, number).await?;
        let mut number = number.clone();
        if let Changed::Now(warned) =
            lifecycle::apply(&self.store, &self.queue, &number, Command::WarnTokenExpiry).await?
        {
            counters.warned.fetch_add(1, Ordering::Relaxed);
            if let Some(expires) = warned.token_expires_at {
                tracing::warn!(number_id = %warned.id, expires_at = %time::format(&expires), "the number's Meta token expires within a week");
            }
            number = warned;
        }
        let number = &number;
        let Some(secrets) = self.vault.load(&number.id).await? else {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(number_id = %number.id, "active number without a stored token; quality not checked");
            return Ok(Checked::Done);
        };
        let profile = match self
            .meta
            .phone_profile(&secrets.token, &number.phone_number_id)
            .await
        {
            Ok(profile) => profile,
            Err(err) if is_rate_limited(&err) => return Ok(Checked::RateLimited),
            Err(err) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(number_id = %number.id, code = %err.code, http_status = err.http_status, "Meta refused the profile; quality not checked");
                return Ok(Checked::Done);
            }
        };
        let rating = profile
            .quality_rating
            .as_deref()
            .and_then(QualityRating::from_meta);
        let previous = number.quality_rating;
        // Overlapping runs decide against the same version: one writes, the other finds the
        // rating already there, so the event goes out once.
        if let Changed::Now(updated) = lifecycle::apply(
            &self.store,
            &self.queue,
            number,
            Command::QualityChanged(rating),
        )
        .await?
        {
            counters.updated.fetch_add(1, Ordering::Relaxed);
            tracing::info!(number_id = %updated.id, previous = ?previous, now = ?rating, "quality rating changed");
        }
        Ok(Checked::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_codes_are_recognised() {
        for code in ["4", "17", "80007", "130429"] {
            assert!(is_rate_limited(&MetaError::transport(code, "limited")));
        }
        assert!(!is_rate_limited(&MetaError::transport("190", "expired")));
    }
}
