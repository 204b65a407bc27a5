//! The scheduled health sync: every `ACTIVE` number is held against what Meta shows of it, so a
//! webhook Meta never sent (or we missed) is made up for within the hour. For each number:
//!
//! - its token is checked with Graph `debug_token`: an invalid one is `tokenStatus: INVALID`
//!   with `number.token_invalid` (and nothing else is read with it);
//! - the phone's `status`: `BANNED` bans the number (`number.banned`), `DISCONNECTED`
//!   disconnects it (`disconnectedBy: meta`, `number.disconnected`, torn down), `RESTRICTED`
//!   records the restriction `PHONE_NUMBER_RESTRICTED` (`number.restricted`, lifted with
//!   `number.restriction_lifted` when Meta no longer shows it);
//! - `health_status` (`health`, `number.health_changed`: `BLOCKED`/`LIMITED` with Meta's errors
//!   per entity), the messaging limit and throughput (`number.quality_updated` with the previous
//!   limit), `name_status` (`number.display_name_updated`) and the quality rating
//!   (`number.quality_updated`);
//! - a token expiring within a week is announced as `number.token_expiring`, at most once a day.
//!
//! Every change goes through the lifecycle, conditioned on the version read, so overlapping
//! runs announce each change once; a first reading of a healthy value is recorded quietly.
//!
//! It also settles what a crash left undone: `FAILED` numbers whose teardown is due, and numbers
//! whose signup never sent its first message (see [`STARTLESS_AFTER`]).
//!
//! Meta's rate limits end the run early: the next schedule starts over, and numbers already
//! synced are unchanged then, so nothing is emitted twice.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use futures::StreamExt;
use serde::Serialize;

use crate::domain::lifecycle::{Command, DisconnectedBy, teardown_due};
use crate::domain::messages::{StepMessage, TeardownMessage};
use crate::domain::meta::{ErrorKind, MetaError};
use crate::domain::number::meta_label;
use crate::domain::time;
use crate::domain::{
    AccountId, Number, QualityRating, RestrictionMarker, Status, Step, TokenStatus,
};
use crate::lifecycle::{self, Changed, LifecycleError};
use crate::ports::{
    AccountDirectory, EventLog, LifecycleStore, MessageQueue, MetaGraph, NumberReader, Page,
    QueueError, StoreError, TokenVault, VaultError,
};

pub use crate::domain::lifecycle::TOKEN_WARNING_DAYS;
const PAGE_SIZE: u32 = 100;

/// A `PENDING` number still at the token exchange this long after its signup, with no error
/// recorded, never got its first message: the signup callback sends it right after writing the
/// number, and a crash in between loses it. Meta's code lived ~30 s, so nothing can exchange it
/// now; the sync sends the exchange a message without the code, and the exchange fails the
/// number the usual way (`missing_code`, `number.failed`, teardown), or carries on if a token
/// was stored after all. An hour is far past any exchange's retries of a live message.
pub const STARTLESS_AFTER: chrono::Duration = chrono::Duration::hours(1);

/// Meta's answer is a rate limit (every code Meta documents as one, `meta::RATE_LIMIT_CODES`).
pub fn is_rate_limited(err: &MetaError) -> bool {
    err.kind == ErrorKind::RateLimited
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthSummary {
    pub checked: usize,
    pub updated: usize,
    pub warned: usize,
    /// FAILED numbers whose teardown (the token's deletion, after the retention) was sent.
    pub teardowns: usize,
    /// PENDING numbers whose first message a crash lost, sent to the exchange again.
    pub restarted: usize,
    /// Numbers skipped for an error (no token, Meta refusing, storage); logged each.
    pub errors: usize,
    pub stopped_early: bool,
    /// The Meta app secret is empty or still the template's placeholder: no token was checked
    /// with Meta, and Meta's webhooks are refused, until the app's secret is put there.
    pub app_secret_placeholder: bool,
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
    /// How long a FAILED number keeps its token for a retry; the sync sends the teardown that
    /// deletes it once this is over.
    pub failed_token_retention_days: u32,
}

#[derive(Default)]
struct Counters {
    checked: AtomicUsize,
    updated: AtomicUsize,
    warned: AtomicUsize,
    teardowns: AtomicUsize,
    restarted: AtomicUsize,
    errors: AtomicUsize,
    stop: AtomicBool,
    /// No token can be checked with `debug_token` (asked with the app secret).
    app_secret_placeholder: bool,
}

enum Checked {
    Done,
    RateLimited,
}

/// Still at the exchange, nothing recorded, long after the signup.
fn never_started(number: &Number, now: time::Timestamp) -> bool {
    number.is_unstarted() && now - number.created_at >= STARTLESS_AFTER
}

impl<S, Q, M, V> HealthSync<S, Q, M, V>
where
    S: NumberReader + LifecycleStore + AccountDirectory + EventLog,
    Q: MessageQueue,
    M: MetaGraph,
    V: TokenVault,
{
    pub async fn run(&self) -> Result<HealthSummary, HealthError> {
        let app_secret_placeholder = self.meta.app_secret_is_placeholder().await;
        if app_secret_placeholder {
            tracing::error!(
                secret = "MetaAppSecret",
                "the Meta app secret is empty or still the template's placeholder: Meta's webhooks are refused and no token is checked with Meta; put the app's secret in MetaAppSecret"
            );
        }
        let counters = Counters {
            app_secret_placeholder,
            ..Counters::default()
        };
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
            self.sweep_failed(account, &counters).await?;
            self.sweep_startless(account, &counters).await?;
        }
        let summary = HealthSummary {
            checked: counters.checked.load(Ordering::Relaxed),
            updated: counters.updated.load(Ordering::Relaxed),
            warned: counters.warned.load(Ordering::Relaxed),
            teardowns: counters.teardowns.load(Ordering::Relaxed),
            restarted: counters.restarted.load(Ordering::Relaxed),
            errors: counters.errors.load(Ordering::Relaxed),
            stopped_early: counters.stop.load(Ordering::Relaxed),
            app_secret_placeholder,
        };
        tracing::info!(
            accounts = accounts.len(),
            checked = summary.checked,
            updated = summary.updated,
            warned = summary.warned,
            restarted = summary.restarted,
            errors = summary.errors,
            stopped_early = summary.stopped_early,
            app_secret_placeholder = summary.app_secret_placeholder,
            "health sync finished"
        );
        Ok(summary)
    }

    async fn active_page(
        &self,
        account: &AccountId,
        offset: u32,
    ) -> Result<Vec<Number>, HealthError> {
        self.page(account, Status::Active, offset).await
    }

    async fn page(
        &self,
        account: &AccountId,
        status: Status,
        offset: u32,
    ) -> Result<Vec<Number>, HealthError> {
        let page = self
            .store
            .list(
                account,
                Some(status),
                Page {
                    limit: PAGE_SIZE,
                    offset,
                },
            )
            .await?;
        Ok(page.numbers)
    }

    /// FAILED numbers with a teardown due (their retry window over, or a teardown a crash
    /// lost) get one; the teardown itself decides again, so a repeat is harmless.
    async fn sweep_failed(
        &self,
        account: &AccountId,
        counters: &Counters,
    ) -> Result<(), HealthError> {
        let retention = chrono::Duration::days(i64::from(self.failed_token_retention_days));
        let now = time::now();
        let mut offset = 0;
        loop {
            let page = self.page(account, Status::Failed, offset).await?;
            for number in &page {
                if teardown_due(number, now, retention).is_some() {
                    let message =
                        TeardownMessage::new(number.id.clone(), number.account_id.clone());
                    self.queue.send(&message).await?;
                    counters.teardowns.fetch_add(1, Ordering::Relaxed);
                }
            }
            if (page.len() as u32) < PAGE_SIZE {
                return Ok(());
            }
            offset += PAGE_SIZE;
        }
    }

    /// PENDING numbers that never started (see [`STARTLESS_AFTER`]) get their exchange message;
    /// a repeat is harmless, the exchange decides on what it reads.
    async fn sweep_startless(
        &self,
        account: &AccountId,
        counters: &Counters,
    ) -> Result<(), HealthError> {
        let now = time::now();
        let mut offset = 0;
        loop {
            let page = self.page(account, Status::Pending, offset).await?;
            for number in page.iter().filter(|n| never_started(n, now)) {
                let message = StepMessage::new(
                    number.id.clone(),
                    number.account_id.clone(),
                    Step::FIRST,
                    format!("trc_{}", crate::domain::ids::random_id()),
                );
                self.queue.send(&message).await?;
                tracing::warn!(number_id = %number.id, "a signup that never started; its exchange is sent without the code");
                counters.restarted.fetch_add(1, Ordering::Relaxed);
            }
            if (page.len() as u32) < PAGE_SIZE {
                return Ok(());
            }
            offset += PAGE_SIZE;
        }
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
                tracing::error!(number_id = %number.id, error = %crate::telemetry::ErrorChain(&err), "health check of a number failed");
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
        let Some(secrets) = self.vault.load(&number.id).await? else {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(number_id = %number.id, "active number without a stored token; quality not checked");
            return Ok(Checked::Done);
        };
        // The token first: a revoked one answers nothing else. Without the app's secret it
        // cannot be asked (said once, at the start of the run); the phone is still read.
        let token_info = if counters.app_secret_placeholder {
            None
        } else {
            Some(self.meta.debug_token(&secrets.token).await)
        };
        match token_info {
            None => {}
            Some(Ok(info)) => {
                let status = if info.is_valid {
                    TokenStatus::Valid
                } else {
                    TokenStatus::Invalid
                };
                number = self
                    .record(&number, Command::TokenChecked(status), counters)
                    .await?;
                if status == TokenStatus::Invalid {
                    tracing::warn!(number_id = %number.id, "Meta says the number's token is not valid; the customer must sign up again");
                    return Ok(Checked::Done);
                }
            }
            Some(Err(err)) if is_rate_limited(&err) => return Ok(Checked::RateLimited),
            Some(Err(err)) => {
                // The app's own token may be the problem; the phone is still read.
                tracing::warn!(number_id = %number.id, code = %err.code, http_status = err.http_status, "Meta refused debug_token; token not checked");
            }
        }
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
        // Meta shows the number banned or disconnected while we hold it ACTIVE: the webhook
        // was missed. It is moved, with its event, now; the rest waits for the next run.
        match profile.status.as_deref() {
            Some("BANNED") => {
                if let Changed::Now(banned) =
                    lifecycle::apply(&self.store, &self.queue, &number, Command::Ban).await?
                {
                    counters.updated.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(number_id = %banned.id, "Meta shows the number banned; moved to BANNED");
                }
                return Ok(Checked::Done);
            }
            Some("DISCONNECTED") => {
                let command = Command::Disconnect(DisconnectedBy::Meta);
                match lifecycle::apply(&self.store, &self.queue, &number, command).await? {
                    Changed::Now(disconnected) | Changed::Already(disconnected) => {
                        counters.updated.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(number_id = %disconnected.id, "Meta shows the number disconnected; moved to DISCONNECTED and torn down");
                        let message = TeardownMessage::new(
                            disconnected.id.clone(),
                            disconnected.account_id.clone(),
                        );
                        self.queue.send(&message).await?;
                    }
                    Changed::Refused(_, why) => {
                        tracing::info!(number_id = %number.id, %why, "Meta shows the number disconnected; not moved");
                    }
                }
                return Ok(Checked::Done);
            }
            _ => {}
        }
        let restricted = profile.status.as_deref() == Some("RESTRICTED");
        let marker = Command::MarkRestriction {
            marker: RestrictionMarker::PhoneNumberRestricted,
            on: restricted,
        };
        number = self.record(&number, marker, counters).await?;
        if let Some(health) = profile.health.clone() {
            number = self
                .record(&number, Command::HealthRead(health), counters)
                .await?;
        }
        let limit = Command::LimitRead {
            messaging_limit: profile.messaging_limit_tier.as_deref().and_then(meta_label),
            throughput: profile.throughput_level.as_deref().and_then(meta_label),
            announce_first: false,
        };
        number = self.record(&number, limit, counters).await?;
        if let Some(name_status) = profile.name_status.as_deref().and_then(meta_label) {
            number = self
                .record(&number, Command::NameStatusRead(name_status), counters)
                .await?;
        }
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
            &number,
            Command::QualityChanged(rating),
        )
        .await?
        {
            counters.updated.fetch_add(1, Ordering::Relaxed);
            tracing::info!(number_id = %updated.id, previous = ?previous, now = ?rating, "quality rating changed");
        }
        Ok(Checked::Done)
    }

    /// Applies what Meta shows of the number; the number as it is after (`updated` counts the
    /// changes announced).
    async fn record(
        &self,
        number: &Number,
        command: Command,
        counters: &Counters,
    ) -> Result<Number, HealthError> {
        let name = command.name();
        Ok(
            match lifecycle::apply(&self.store, &self.queue, number, command).await? {
                Changed::Now(after) => {
                    // Counted when announced; a quiet first reading is bookkeeping.
                    if after.last_event_id != number.last_event_id {
                        counters.updated.fetch_add(1, Ordering::Relaxed);
                    }
                    tracing::info!(number_id = %after.id, change = name, "recorded what Meta shows");
                    after
                }
                Changed::Already(number) => number,
                Changed::Refused(number, why) => {
                    tracing::info!(number_id = %number.id, %why, change = name, "not recorded");
                    number
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rate_limit_code_meta_documents_is_recognised() {
        for code in crate::domain::meta::RATE_LIMIT_CODES {
            let err = MetaError::from_envelope(400, code, None, false, "limited".into());
            assert!(is_rate_limited(&err), "{code}");
        }
        let expired = MetaError::from_envelope(401, 190, None, false, "expired".into());
        assert!(!is_rate_limited(&expired));
        assert!(!is_rate_limited(&MetaError::transport(
            "timeout",
            "timed out"
        )));
    }
}

#[cfg(test)]
mod sync_tests {
    //! The health sync against the in-memory adapters.

    use super::*;
    use crate::adapters::memory::{
        MemoryQueue, MemoryStore, MemoryVault, MetaCallKind, ScriptedMeta,
    };
    use crate::domain::secrets::{NumberSecrets, Secret};
    use crate::ports::{PhoneProfile, Queue};

    type Sync = HealthSync<MemoryStore, MemoryQueue, ScriptedMeta, MemoryVault>;

    fn sync() -> Sync {
        HealthSync {
            store: MemoryStore::default(),
            queue: MemoryQueue::default(),
            meta: ScriptedMeta::default(),
            vault: MemoryVault::default(),
            concurrency: 4,
            failed_token_retention_days: 7,
        }
    }

    fn active(sync: &Sync, phone: &str, rating: Option<QualityRating>) -> Number {
        let mut number = Number::new_pending(
            AccountId::from("acc_1".to_string()),
            "1000".into(),
            phone.into(),
            time::now(),
        );
        number.status = Status::Active;
        number.provisioning_step = None;
        number.quality_rating = rating;
        // Checked before: a valid token is not news.
        number.token_status = Some(crate::domain::TokenStatus::Valid);
        sync.store.insert_number(number.clone());
        sync.vault.put(
            &number.id,
            NumberSecrets {
                token: Secret::new("EAAG"),
                pin: Secret::new("123456"),
                token_expires_at: None,
                reconnect_id: None,
            },
        );
        number
    }

    fn rated(sync: &Sync, rating: &str) {
        sync.meta.set_profile(PhoneProfile {
            quality_rating: Some(rating.into()),
            ..PhoneProfile::default()
        });
    }

    fn event_types(sync: &Sync) -> Vec<String> {
        sync.queue
            .sent_to(Queue::Events)
            .iter()
            .map(|e| e["type"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    #[tokio::test]
    async fn a_placeholder_app_secret_is_reported_and_no_token_is_asked_about() {
        // Given the template's placeholder as the app secret, and a number whose quality changed
        let sync = sync();
        let number = active(&sync, "1", Some(QualityRating::Green));
        rated(&sync, "RED");
        sync.meta.set_app_secret_placeholder(true);

        let summary = sync.run().await.unwrap();

        // Then the run says so, asks Meta nothing with the app secret, and still reads the phone
        assert!(summary.app_secret_placeholder, "{summary:?}");
        let output = serde_json::to_value(&summary).unwrap();
        assert_eq!(output["appSecretPlaceholder"], true);
        assert_eq!(sync.meta.count(MetaCallKind::DebugToken), 0);
        assert_eq!((summary.checked, summary.updated), (1, 1));
        let stored = sync.store.number(&number.account_id, &number.id).unwrap();
        assert_eq!(stored.token_status, Some(crate::domain::TokenStatus::Valid));
        // And once the app's secret is in place, it says nothing and checks tokens again
        sync.meta.set_app_secret_placeholder(false);
        let summary = sync.run().await.unwrap();
        assert!(!summary.app_secret_placeholder);
        assert_eq!(sync.meta.count(MetaCallKind::DebugToken), 1);
    }

    #[tokio::test]
    async fn a_changed_quality_is_written_and_announced_once_over_two_runs() {
        let sync = sync();
        let number = active(&sync, "1", Some(QualityRating::Green));
        rated(&sync, "RED");

        let first = sync.run().await.unwrap();
        let second = sync.run().await.unwrap();

        assert_eq!((first.updated, second.updated), (1, 0));
        let stored = sync.store.number(&number.account_id, &number.id).unwrap();
        assert_eq!(stored.quality_rating, Some(QualityRating::Red));
        assert_eq!(event_types(&sync), vec!["number.quality_updated"]);
    }

    #[tokio::test]
    async fn an_unchanged_quality_writes_nothing() {
        let sync = sync();
        let number = active(&sync, "1", Some(QualityRating::Green));
        rated(&sync, "GREEN");

        let summary = sync.run().await.unwrap();

        assert_eq!((summary.checked, summary.updated), (1, 0));
        let stored = sync.store.number(&number.account_id, &number.id).unwrap();
        assert_eq!(stored.version, number.version);
        assert!(event_types(&sync).is_empty());
    }

    #[tokio::test]
    async fn a_token_expiring_this_week_is_announced_once_a_day() {
        let sync = sync();
        let mut number = active(&sync, "1", None);
        number.token_expires_at = Some(time::now() + chrono::Duration::days(2));
        sync.store.insert_number(number);

        let first = sync.run().await.unwrap();
        let second = sync.run().await.unwrap();

        assert_eq!((first.warned, second.warned), (1, 0));
        assert_eq!(event_types(&sync), vec!["number.token_expiring"]);
    }

    #[tokio::test]
    async fn a_failed_number_past_its_retry_window_gets_the_teardown_that_deletes_its_token() {
        let sync = sync();
        let mut failed = active(&sync, "1", None);
        failed.status = Status::Failed;
        failed.failure_reason = Some(crate::domain::FailureReason {
            step: "REGISTER_NUMBER".into(),
            code: "131009".into(),
            message: "Parameter value is not valid".into(),
            ..Default::default()
        });
        failed.torn_down_at = Some(time::now());
        failed.updated_at = time::now() - chrono::Duration::days(8);
        sync.store.insert_number(failed.clone());
        let mut recent = failed.clone();
        recent.id = crate::domain::NumberId::from("num_recent".to_string());
        recent.updated_at = time::now();
        sync.store.insert_number(recent);

        let summary = sync.run().await.unwrap();

        assert_eq!(summary.teardowns, 1);
        let sent = sync.queue.sent_to(Queue::Teardown);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0]["numberId"], failed.id.as_str());
    }

    fn pending_at_exchange(sync: &Sync, phone: &str, age: chrono::Duration) -> Number {
        let number = Number::new_pending(
            AccountId::from("acc_1".to_string()),
            "1000".into(),
            phone.into(),
            time::now() - age,
        );
        sync.store.insert_number(number.clone());
        number
    }

    #[tokio::test]
    async fn a_signup_whose_first_message_was_lost_is_sent_to_the_exchange_without_its_code() {
        // Given a number at the exchange for over an hour, with nothing recorded
        let sync = sync();
        let lost = pending_at_exchange(&sync, "1", STARTLESS_AFTER + chrono::Duration::minutes(1));

        // When the health sync runs
        let summary = sync.run().await.unwrap();

        // Then the exchange gets a message for it, without a code
        assert_eq!(summary.restarted, 1);
        let sent = sync.queue.sent_to(Queue::Step(Step::ExchangeToken));
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0]["numberId"], lost.id.as_str());
        assert!(sent[0].get("code").is_none_or(|code| code.is_null()));
    }

    #[tokio::test]
    async fn a_recent_or_retrying_signup_at_the_exchange_is_left_to_its_own_message() {
        // Given a signup from a minute ago, and an old one whose exchange recorded an error
        let sync = sync();
        pending_at_exchange(&sync, "1", chrono::Duration::minutes(1));
        let mut retrying = pending_at_exchange(&sync, "2", chrono::Duration::hours(3));
        retrying.provisioning_error = Some(crate::domain::FailureReason {
            step: "EXCHANGE_TOKEN".into(),
            code: "2".into(),
            message: "Service temporarily unavailable".into(),
            ..Default::default()
        });
        sync.store.insert_number(retrying);

        // When the health sync runs
        let summary = sync.run().await.unwrap();

        // Then neither is sent again
        assert_eq!(summary.restarted, 0);
        assert!(
            sync.queue
                .sent_to(Queue::Step(Step::ExchangeToken))
                .is_empty()
        );
    }

    #[tokio::test]
    async fn meta_s_rate_limit_ends_the_run_early() {
        let sync = sync();
        active(&sync, "1", None);
        sync.meta.fail_next(
            MetaCallKind::PhoneProfile,
            MetaError::from_envelope(400, 80007, None, false, "rate limited".into()),
        );

        let summary = sync.run().await.unwrap();

        assert!(summary.stopped_early);
        assert_eq!(summary.updated, 0);
    }

    #[tokio::test]
    async fn a_number_meta_shows_banned_is_moved_with_its_event_in_one_run() {
        let sync = sync();
        let number = active(&sync, "1", Some(QualityRating::Green));
        sync.meta.set_profile(PhoneProfile {
            quality_rating: Some("GREEN".into()),
            status: Some("BANNED".into()),
            health: Some(blocked_health()),
            ..PhoneProfile::default()
        });

        let summary = sync.run().await.unwrap();

        assert_eq!(summary.updated, 1);
        let stored = sync.store.number(&number.account_id, &number.id).unwrap();
        assert_eq!(stored.status, Status::Banned);
        assert_eq!(event_types(&sync), vec!["number.banned"]);

        // Banned numbers are not polled as active ones: the next run changes nothing.
        sync.run().await.unwrap();
        assert_eq!(event_types(&sync), vec!["number.banned"]);
    }

    fn blocked_health() -> crate::domain::Health {
        crate::domain::Health {
            can_send_message: crate::domain::CanSendMessage::Blocked,
            errors: vec![crate::domain::HealthIssue {
                error_code: 141006,
                error_description: "There is an error with the payment method.".into(),
                possible_solution: Some("Add a new payment method to the account.".into()),
                entity: "WABA".into(),
            }],
        }
    }

    fn stored(sync: &Sync, number: &Number) -> Number {
        sync.store.number(&number.account_id, &number.id).unwrap()
    }

    #[tokio::test]
    async fn a_number_meta_shows_disconnected_is_disconnected_by_meta_and_torn_down_in_one_run() {
        let sync = sync();
        let number = active(&sync, "1", None);
        sync.meta.set_profile(PhoneProfile {
            status: Some("DISCONNECTED".into()),
            ..PhoneProfile::default()
        });

        sync.run().await.unwrap();

        let after = stored(&sync, &number);
        assert_eq!(after.status, Status::Disconnected);
        assert_eq!(
            after.disconnected_by,
            Some(crate::domain::lifecycle::DisconnectedBy::Meta)
        );
        assert_eq!(event_types(&sync), vec!["number.disconnected"]);
        assert_eq!(sync.queue.sent_to(Queue::Teardown).len(), 1);
    }

    #[tokio::test]
    async fn a_blocked_number_shows_meta_s_errors_and_is_announced_once() {
        let sync = sync();
        let number = active(&sync, "1", None);
        sync.meta.set_profile(PhoneProfile {
            status: Some("CONNECTED".into()),
            health: Some(blocked_health()),
            ..PhoneProfile::default()
        });

        let first = sync.run().await.unwrap();
        let second = sync.run().await.unwrap();

        assert_eq!((first.updated, second.updated), (1, 0));
        let after = stored(&sync, &number);
        assert_eq!(after.status, Status::Active);
        assert_eq!(after.health, Some(blocked_health()));
        assert_eq!(event_types(&sync), vec!["number.health_changed"]);
        let event = &sync.queue.sent_to(Queue::Events)[0];
        assert_eq!(event["data"]["health"]["errors"][0]["errorCode"], 141006);
    }

    #[tokio::test]
    async fn a_number_meta_shows_restricted_is_restricted_until_meta_no_longer_does() {
        let sync = sync();
        let number = active(&sync, "1", None);
        sync.meta.set_profile(PhoneProfile {
            status: Some("RESTRICTED".into()),
            ..PhoneProfile::default()
        });
        sync.run().await.unwrap();
        let kinds: Vec<String> = stored(&sync, &number)
            .restrictions
            .iter()
            .map(|r| r.kind.clone())
            .collect();
        assert_eq!(kinds, ["PHONE_NUMBER_RESTRICTED"]);

        sync.meta.set_profile(PhoneProfile {
            status: Some("CONNECTED".into()),
            ..PhoneProfile::default()
        });
        sync.run().await.unwrap();

        assert!(stored(&sync, &number).restrictions.is_empty());
        assert_eq!(
            event_types(&sync),
            vec!["number.restricted", "number.restriction_lifted"]
        );
    }

    #[tokio::test]
    async fn a_token_checked_for_the_first_time_is_recorded_valid_without_an_event() {
        let sync = sync();
        let mut number = active(&sync, "1", None);
        number.token_status = None;
        sync.store.insert_number(number.clone());

        let summary = sync.run().await.unwrap();

        assert_eq!(summary.updated, 0);
        assert_eq!(
            stored(&sync, &number).token_status,
            Some(crate::domain::TokenStatus::Valid)
        );
        assert!(event_types(&sync).is_empty());
    }

    #[tokio::test]
    async fn a_revoked_token_shows_on_the_number_and_is_announced_once() {
        let sync = sync();
        let number = active(&sync, "1", None);
        sync.meta.set_token_info(crate::ports::TokenInfo {
            is_valid: false,
            expires_at: None,
            scopes: Vec::new(),
        });

        sync.run().await.unwrap();
        sync.run().await.unwrap();

        assert_eq!(
            stored(&sync, &number).token_status,
            Some(crate::domain::TokenStatus::Invalid)
        );
        assert_eq!(event_types(&sync), vec!["number.token_invalid"]);
        // Nothing else is asked with a token Meta refuses.
        assert_eq!(sync.meta.count(MetaCallKind::PhoneProfile), 0);
    }

    #[tokio::test]
    async fn a_first_healthy_reading_is_recorded_without_an_event() {
        let sync = sync();
        let number = active(&sync, "1", Some(QualityRating::Green));
        sync.meta.set_profile(PhoneProfile {
            quality_rating: Some("GREEN".into()),
            status: Some("CONNECTED".into()),
            name_status: Some("APPROVED".into()),
            messaging_limit_tier: Some("TIER_1K".into()),
            throughput_level: Some("STANDARD".into()),
            health: Some(crate::domain::Health {
                can_send_message: crate::domain::CanSendMessage::Available,
                errors: Vec::new(),
            }),
            ..PhoneProfile::default()
        });

        let summary = sync.run().await.unwrap();

        assert_eq!(summary.updated, 0);
        let after = stored(&sync, &number);
        assert_eq!(after.messaging_limit.as_deref(), Some("TIER_1K"));
        assert_eq!(after.throughput.as_deref(), Some("STANDARD"));
        assert_eq!(after.name_status.as_deref(), Some("APPROVED"));
        assert!(event_types(&sync).is_empty());
    }

    #[tokio::test]
    async fn a_changed_messaging_limit_is_announced_with_the_previous_one() {
        let sync = sync();
        let mut number = active(&sync, "1", None);
        number.messaging_limit = Some("TIER_1K".into());
        sync.store.insert_number(number.clone());
        sync.meta.set_profile(PhoneProfile {
            messaging_limit_tier: Some("TIER_250".into()),
            ..PhoneProfile::default()
        });

        sync.run().await.unwrap();

        assert_eq!(
            stored(&sync, &number).messaging_limit.as_deref(),
            Some("TIER_250")
        );
        let events = sync.queue.sent_to(Queue::Events);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["type"], "number.quality_updated");
        assert_eq!(events[0]["data"]["previousMessagingLimit"], "TIER_1K");
    }
}
