//! In-memory adapters behind the same ports, for unit tests and for measuring the handlers'
//! own overhead. They keep DynamoDB's promises: writes conditioned on what they expect, one live
//! number per phone, single-use signup links, an outbox, scoping by account.
//!
//! - [`MemoryStore`]: numbers, counters, phone guards, signup links, events, API keys, ban
//!   clocks, webhook endpoints and delivery marks.
//! - [`MemoryQueue`]: records what was sent (and redelivery delays, refusing those SQS refuses);
//!   can fail sends on demand.
//! - [`MemoryVault`]: the per-number secrets.
//! - [`ScriptedMeta`]: Meta's Graph API answering from a script, recording every call.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::domain::api_key::{KeyHash, KeyScope};
use crate::domain::lifecycle::{Change, PhoneGuard};
use crate::domain::meta::MetaError;
use crate::domain::secrets::{NumberSecrets, Secret};
use crate::domain::{AccountId, EventEnvelope, Number, NumberId, Status, Timestamp, time};

use crate::domain::history::EventPosition;
use crate::domain::lifecycle::waba::WabaChange;
use crate::domain::waba_signup::WabaSignup;
use crate::ports::{
    AccountDirectory, ApiKeyVerifier, BanClock, CommitOutcome, CreateOutcome, DeliveryLog,
    EventLog, ExchangedToken, LifecycleStore, MAX_REDELIVERY_DELAY_SECONDS, Message, MessageQueue,
    MetaGraph, MetaResult, NumberPage, NumberReader, Page, PhoneOwner, PhoneProfile,
    ProvisioningStore, Queue, QueueError, QuotaSubject, Redelivery, RedeliveryDelay, RequestQuota,
    SignupLinks, StoreError, StoreResult, TokenInfo, TokenVault, VaultError, WebhookEndpoints,
};
use crate::ports::{
    Claim, FoundNumbers, IdempotencyRecord, IdempotencyStore, NumberCursor, NumberFinder,
    NumberSearch, PageStart, StoredResponse, VerifiedKey,
};
use crate::ports::{EndpointChange, EventHistory, EventPage};
use crate::ports::{LinkCursor, LinkPage, Report, RevokeOutcome, SignupSessions};
use crate::ports::{ListedPhone, PhonePage, WabaCommit, WabaSignups};
use crate::webhooks::WebhookEndpoint;
use crate::webhooks::log::{Attempt, DeliveryKey, DeliveryPage, DeliveryRecord, DeliveryStatus};

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Newest first: `createdAt` descending, ties by id descending, as the DynamoDB indexes order.
type Order = Reverse<(Timestamp, NumberId)>;

type SignupLink = crate::domain::signup_session::SignupSession;

#[derive(Clone, Debug, PartialEq)]
struct MemoryKey {
    account: AccountId,
    scope: KeyScope,
    revoked: bool,
    last_used_hour: Option<i64>,
}

#[derive(Clone, Debug, PartialEq)]
struct MemoryIdempotency {
    record: IdempotencyRecord,
    lease_until: i64,
    expires_at: i64,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct State {
    numbers: HashMap<(AccountId, NumberId), Number>,
    /// Per account, and per account and status: the list order, so a page costs its own size
    /// (plus the offset), never a sort of the whole account.
    by_account: HashMap<AccountId, BTreeSet<Order>>,
    by_status: HashMap<(AccountId, Status), BTreeSet<Order>>,
    phones: HashMap<String, PhoneOwner>,
    links: HashMap<String, SignupLink>,
    waba_signups: HashMap<String, WabaSignup>,
    keys: HashMap<KeyHash, MemoryKey>,
    idempotency: HashMap<(AccountId, String), MemoryIdempotency>,
    events: HashMap<String, (EventEnvelope, bool)>,
    requests: HashMap<(String, i64), u32>,
    accounts: Vec<AccountId>,
    ban_clocks: HashMap<String, i64>,
    endpoints: Vec<WebhookEndpoint>,
    /// By endpoint, then `{createdAt}#{eventId}`: the DynamoDB item's key.
    deliveries: BTreeMap<(String, String), DeliveryRecord>,
    /// Never-started numbers whose first message is being sent again, until when.
    restart_leases: HashMap<NumberId, Timestamp>,
}

impl State {
    fn index(&mut self, number: &Number) {
        let order = Reverse((number.created_at, number.id.clone()));
        self.by_account
            .entry(number.account_id.clone())
            .or_default()
            .insert(order.clone());
        self.by_status
            .entry((number.account_id.clone(), number.status))
            .or_default()
            .insert(order);
    }

    fn unindex(&mut self, number: &Number) {
        let order = Reverse((number.created_at, number.id.clone()));
        if let Some(set) = self.by_account.get_mut(&number.account_id) {
            set.remove(&order);
        }
        if let Some(set) = self
            .by_status
            .get_mut(&(number.account_id.clone(), number.status))
        {
            set.remove(&order);
        }
    }

    fn put_number(&mut self, number: Number) {
        if let Some(old) = self
            .numbers
            .remove(&(number.account_id.clone(), number.id.clone()))
        {
            self.unindex(&old);
        }
        self.index(&number);
        self.numbers
            .insert((number.account_id.clone(), number.id.clone()), number);
    }
}

#[derive(Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    /// Reads of a number through `NumberReader::get`, for tests of what a handler reads.
    number_reads: Arc<std::sync::atomic::AtomicU64>,
    /// Reads of a WABA's numbers through `ProvisioningStore::numbers_of_waba`.
    waba_reads: Arc<std::sync::atomic::AtomicU64>,
    /// Held by a test to keep `NumberReader::get` from answering (see `hold_number_reads`).
    number_read_gate: Arc<tokio::sync::RwLock<()>>,
    /// Held by a test to keep `LifecycleStore::commit` from writing (see `hold_commits`).
    commit_gate: Arc<tokio::sync::RwLock<()>>,
}

/// Everything a [`MemoryStore`] holds at one moment, to tell whether anything was written.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreSnapshot(State);

impl MemoryStore {
    fn state(&self) -> MutexGuard<'_, State> {
        locked(&self.state)
    }

    /// How many times a number was read through `NumberReader::get`.
    pub fn number_reads(&self) -> u64 {
        self.number_reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many times a WABA's numbers were read through `numbers_of_waba`.
    pub fn waba_reads(&self) -> u64 {
        self.waba_reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Keeps every `NumberReader::get` from answering until the returned guard is dropped, so a
    /// test can see what a handler asks for while its read of a number is still in flight.
    pub async fn hold_number_reads(&self) -> tokio::sync::OwnedRwLockWriteGuard<()> {
        self.number_read_gate.clone().write_owned().await
    }

    /// Keeps every `LifecycleStore::commit` from writing until the returned guard is dropped,
    /// so a test can change the store between a handler's reads and its write.
    pub async fn hold_commits(&self) -> tokio::sync::OwnedRwLockWriteGuard<()> {
        self.commit_gate.clone().write_owned().await
    }

    /// A copy of everything stored now: equal snapshots mean nothing was written in between.
    /// A key's last use is left out: authenticating records it (once an hour) whatever the
    /// request turns out to be, as bookkeeping, not as the request's effect.
    pub fn snapshot(&self) -> StoreSnapshot {
        let mut state = self.state().clone();
        for key in state.keys.values_mut() {
            key.last_used_hour = None;
        }
        StoreSnapshot(state)
    }

    /// Stores a number as it is, holding its phone while it is live (seeding tests).
    pub fn insert_number(&self, number: Number) {
        let mut state = self.state();
        if number.status.is_live() && !number.phone_elsewhere {
            state.phones.insert(
                number.phone_number_id.clone(),
                PhoneOwner {
                    account_id: number.account_id.clone(),
                    number_id: number.id.clone(),
                },
            );
        }
        if !state.accounts.contains(&number.account_id) {
            state.accounts.push(number.account_id.clone());
        }
        state.put_number(number);
    }

    pub fn add_account(&self, account: &AccountId) {
        let mut state = self.state();
        if !state.accounts.contains(account) {
            state.accounts.push(account.clone());
        }
    }

    pub fn add_key(&self, key: &str, account: &AccountId) {
        self.add_scoped_key(key, account, KeyScope::Write);
    }

    pub fn add_scoped_key(&self, key: &str, account: &AccountId, scope: KeyScope) {
        self.state().keys.insert(
            KeyHash::of(key),
            MemoryKey {
                account: account.clone(),
                scope,
                revoked: false,
                last_used_hour: None,
            },
        );
    }

    pub fn revoke_key(&self, key: &str) {
        if let Some(entry) = self.state().keys.get_mut(&KeyHash::of(key)) {
            entry.revoked = true;
        }
    }

    /// The hour a key's last use is recorded for.
    pub fn key_last_used_hour(&self, key: &str) -> Option<i64> {
        self.state()
            .keys
            .get(&KeyHash::of(key))
            .and_then(|k| k.last_used_hour)
    }

    /// How many idempotency keys the account holds (answered or running).
    pub fn idempotency_keys(&self, account: &AccountId) -> usize {
        self.state()
            .idempotency
            .keys()
            .filter(|(a, _)| a == account)
            .count()
    }

    pub fn all_numbers(&self) -> Vec<Number> {
        let mut numbers: Vec<Number> = self.state().numbers.values().cloned().collect();
        numbers.sort_by(|a, b| a.id.cmp(&b.id));
        numbers
    }

    pub fn number(&self, account: &AccountId, id: &NumberId) -> Option<Number> {
        self.state()
            .numbers
            .get(&(account.clone(), id.clone()))
            .cloned()
    }

    /// Every event written, published or not, oldest first by creation time.
    pub fn events(&self) -> Vec<(EventEnvelope, bool)> {
        let mut events: Vec<_> = self.state().events.values().cloned().collect();
        events.sort_by(|a, b| (a.0.created_at, &a.0.id).cmp(&(b.0.created_at, &b.0.id)));
        events
    }

    /// The per-status count of an account, as the counters item would hold it.
    pub fn count(&self, account: &AccountId, status: Status) -> u64 {
        self.state()
            .by_status
            .get(&(account.clone(), status))
            .map_or(0, |set| set.len() as u64)
    }

    pub fn phone_holder(&self, phone_number_id: &str) -> Option<PhoneOwner> {
        self.state().phones.get(phone_number_id).cloned()
    }
}

impl NumberReader for MemoryStore {
    async fn get(&self, account: &AccountId, id: &NumberId) -> StoreResult<Option<Number>> {
        let _open = self.number_read_gate.read().await;
        self.number_reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(self.number(account, id))
    }

    async fn list(
        &self,
        account: &AccountId,
        status: Option<Status>,
        page: Page,
    ) -> StoreResult<NumberPage> {
        let state = self.state();
        let order = match status {
            Some(status) => state.by_status.get(&(account.clone(), status)),
            None => state.by_account.get(account),
        };
        let Some(order) = order else {
            return Ok(NumberPage {
                numbers: Vec::new(),
                total: 0,
            });
        };
        let numbers = order
            .iter()
            .skip(page.offset as usize)
            .take(page.limit as usize)
            .filter_map(|Reverse((_, id))| state.numbers.get(&(account.clone(), id.clone())))
            .cloned()
            .collect();
        Ok(NumberPage {
            numbers,
            total: order.len() as u64,
        })
    }
}

impl LifecycleStore for MemoryStore {
    async fn commit(&self, change: &Change) -> StoreResult<CommitOutcome> {
        let _open = self.commit_gate.read().await;
        let mut state = self.state();
        let number = &change.number;
        let stored = state
            .numbers
            .get(&(number.account_id.clone(), number.id.clone()))
            .cloned()
            .ok_or(StoreError::NotFound)?;
        let expected = &change.expected;
        let holder = state
            .phones
            .get(&number.phone_number_id)
            .map(|owner| owner.number_id.clone());
        if stored.status != expected.status
            || stored.provisioning_step != expected.step
            || stored.version != expected.version
        {
            return Ok(CommitOutcome::Conflict(stored));
        }
        if change.phone_guard == PhoneGuard::Claim && holder.is_some() {
            return Ok(CommitOutcome::PhoneTaken(stored));
        }
        if let Some(event) = &change.event {
            if state.events.contains_key(&event.id) {
                return Err(StoreError::unavailable("event id written twice"));
            }
            // A history-only event has nothing to publish: it counts as published.
            let published = !event.event_type.is_published();
            state
                .events
                .insert(event.id.clone(), (event.clone(), published));
        }
        match change.phone_guard {
            PhoneGuard::Keep => {}
            PhoneGuard::Release => {
                if holder.as_ref() == Some(&number.id) {
                    state.phones.remove(&number.phone_number_id);
                }
            }
            PhoneGuard::Claim => {
                state.phones.insert(
                    number.phone_number_id.clone(),
                    PhoneOwner {
                        account_id: number.account_id.clone(),
                        number_id: number.id.clone(),
                    },
                );
            }
        }
        state.put_number(number.clone());
        Ok(CommitOutcome::Committed(number.clone()))
    }
}

impl EventLog for MemoryStore {
    async fn unpublished_event(&self, event_id: &str) -> StoreResult<Option<EventEnvelope>> {
        Ok(self
            .state()
            .events
            .get(event_id)
            .filter(|(_, published)| !published)
            .map(|(event, _)| event.clone()))
    }

    async fn mark_published(&self, event_id: &str) -> StoreResult<()> {
        if let Some(entry) = self.state().events.get_mut(event_id) {
            entry.1 = true;
        }
        Ok(())
    }

    async fn unpublished_before(&self, before: Timestamp, limit: u32) -> StoreResult<Vec<String>> {
        let state = self.state();
        let mut due: Vec<&EventEnvelope> = state
            .events
            .values()
            .filter(|(event, published)| !published && event.created_at < before)
            .map(|(event, _)| event)
            .collect();
        due.sort_by_key(|event| (event.created_at, event.id.clone()));
        Ok(due
            .into_iter()
            .take(limit as usize)
            .map(|event| event.id.clone())
            .collect())
    }
}

impl NumberFinder for MemoryStore {
    async fn find(&self, account: &AccountId, search: &NumberSearch) -> StoreResult<FoundNumbers> {
        let state = self.state();
        let filtered = search.display_digits.is_some() || search.waba_id.is_some();
        Ok(if filtered {
            state.find_by_scan(account, search)
        } else {
            state.find_by_index(account, search)
        })
    }
}

impl State {
    /// The status filter alone, or none: a page costs its own size (plus the offset), read from
    /// the list order, never a walk of the whole account.
    fn find_by_index(&self, account: &AccountId, search: &NumberSearch) -> FoundNumbers {
        let order = match search.status {
            Some(status) => self.by_status.get(&(account.clone(), status)),
            None => self.by_account.get(account),
        };
        let Some(order) = order else {
            return found(std::iter::empty(), 0, search.limit);
        };
        let after: Box<dyn Iterator<Item = &Order>> = match &search.start {
            PageStart::Offset(offset) => Box::new(order.iter().skip(*offset as usize)),
            PageStart::After(cursor) => Box::new(order.range((
                Bound::Excluded(Reverse((cursor.created_at, cursor.number_id.clone()))),
                Bound::Unbounded,
            ))),
        };
        let page =
            after.filter_map(|Reverse((_, id))| self.numbers.get(&(account.clone(), id.clone())));
        found(page, order.len() as u64, search.limit)
    }

    /// Filters without an index here (display digits, WABA): every number of the account is
    /// looked at.
    fn find_by_scan(&self, account: &AccountId, search: &NumberSearch) -> FoundNumbers {
        let Some(order) = self.by_account.get(account) else {
            return found(std::iter::empty(), 0, search.limit);
        };
        let matching: Vec<&Number> = order
            .iter()
            .filter_map(|Reverse((_, id))| self.numbers.get(&(account.clone(), id.clone())))
            .filter(|number| search.status.is_none_or(|s| number.status == s))
            .filter(|number| {
                search.display_digits.as_ref().is_none_or(|digits| {
                    number
                        .display_number
                        .as_deref()
                        .and_then(crate::domain::number_cursor::display_digits)
                        .as_ref()
                        == Some(digits)
                })
            })
            .filter(|number| search.waba_id.as_ref().is_none_or(|w| &number.waba_id == w))
            .collect();
        let total = matching.len() as u64;
        let page: Vec<&Number> = match &search.start {
            PageStart::Offset(offset) => matching.into_iter().skip(*offset as usize).collect(),
            PageStart::After(cursor) => {
                let position = Reverse((cursor.created_at, cursor.number_id.clone()));
                matching
                    .into_iter()
                    .filter(|n| Reverse((n.created_at, n.id.clone())) > position)
                    .collect()
            }
        };
        found(page.into_iter(), total, search.limit)
    }
}

/// A page of `limit` from the numbers after its start (one more than the page tells whether
/// another follows).
fn found<'a>(after: impl Iterator<Item = &'a Number>, total: u64, limit: u32) -> FoundNumbers {
    let limit = limit as usize;
    let mut numbers: Vec<Number> = after.take(limit + 1).cloned().collect();
    let more = numbers.len() > limit;
    numbers.truncate(limit);
    let next = more.then(|| numbers.last().map(NumberCursor::of)).flatten();
    FoundNumbers {
        numbers,
        total,
        next,
    }
}

impl crate::ports::NumberSnapshots for MemoryStore {
    fn number_snapshot(&self, number: &Number) -> StoreResult<String> {
        super::dynamo::number_snapshot(number)
    }

    fn number_from_snapshot(&self, text: &str) -> StoreResult<Number> {
        super::dynamo::number_from_snapshot(text)
    }
}

impl ProvisioningStore for MemoryStore {
    async fn create_pending(
        &self,
        number: &Number,
        signup_link: Option<&str>,
    ) -> StoreResult<CreateOutcome> {
        let mut state = self.state();
        if let Some(link) = signup_link {
            let usable = state
                .links
                .get(link)
                .is_some_and(|l| l.account_id == number.account_id && l.is_usable(time::now()));
            if !usable {
                return Ok(CreateOutcome::LinkUnusable);
            }
        }
        if !number.phone_elsewhere && state.phones.contains_key(&number.phone_number_id) {
            return Ok(CreateOutcome::PhoneTaken);
        }
        if let Some(link) = signup_link.and_then(|id| state.links.get_mut(id)) {
            link.number_id = Some(number.id.clone());
            link.used_at = Some(time::now());
        }
        if !number.phone_elsewhere {
            state.phones.insert(
                number.phone_number_id.clone(),
                PhoneOwner {
                    account_id: number.account_id.clone(),
                    number_id: number.id.clone(),
                },
            );
        }
        state.put_number(number.clone());
        Ok(CreateOutcome::Created)
    }

    async fn use_link(
        &self,
        account: &AccountId,
        link_id: &str,
        number: &NumberId,
    ) -> StoreResult<bool> {
        let mut state = self.state();
        let now = time::now();
        match state.links.get_mut(link_id) {
            Some(link) if &link.account_id == account && link.is_usable(now) => {
                link.number_id = Some(number.clone());
                link.used_at = Some(now);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn phone_owner(&self, phone_number_id: &str) -> StoreResult<Option<PhoneOwner>> {
        Ok(self.phone_holder(phone_number_id))
    }

    async fn numbers_of_waba(&self, waba_id: &str) -> StoreResult<Vec<Number>> {
        self.waba_reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut numbers: Vec<Number> = self
            .state()
            .numbers
            .values()
            .filter(|n| n.waba_id == waba_id)
            .cloned()
            .collect();
        numbers.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(numbers)
    }

    async fn lease_restart(
        &self,
        account: &AccountId,
        number: &NumberId,
        now: Timestamp,
        until: Timestamp,
    ) -> StoreResult<bool> {
        let mut state = self.state();
        let created_only = state
            .numbers
            .get(&(account.clone(), number.clone()))
            .is_some_and(|n| n.version == Number::CREATED_VERSION);
        let free = state
            .restart_leases
            .get(number)
            .is_none_or(|held_until| *held_until < now);
        if !(created_only && free) {
            return Ok(false);
        }
        state.restart_leases.insert(number.clone(), until);
        Ok(true)
    }
}

impl SignupLinks for MemoryStore {
    async fn save_link(&self, link: &SignupLink) -> StoreResult<()> {
        let mut state = self.state();
        if state.links.contains_key(&link.link_id) {
            return Err(StoreError::unavailable("signup link id written twice"));
        }
        state.links.insert(link.link_id.clone(), link.clone());
        Ok(())
    }
}

impl SignupSessions for MemoryStore {
    async fn link(&self, link_id: &str) -> StoreResult<Option<SignupLink>> {
        Ok(self.state().links.get(link_id).cloned())
    }

    async fn links(
        &self,
        account: &AccountId,
        limit: u32,
        after: Option<&LinkCursor>,
    ) -> StoreResult<LinkPage> {
        let state = self.state();
        let mut links: Vec<&SignupLink> = state
            .links
            .values()
            .filter(|l| &l.account_id == account)
            .collect();
        // Newest first, as the index orders `{createdAt}#{id}`.
        links.sort_by_key(|l| Reverse(LinkCursor::of(l).sort_key()));
        let after = after.map(LinkCursor::sort_key);
        let rest: Vec<SignupLink> = links
            .into_iter()
            .filter(|l| {
                after
                    .as_ref()
                    .is_none_or(|a| LinkCursor::of(l).sort_key() < *a)
            })
            .cloned()
            .collect();
        let limit = limit.max(1) as usize;
        let next = (rest.len() > limit)
            .then(|| rest.get(limit - 1).map(LinkCursor::of))
            .flatten();
        Ok(LinkPage {
            links: rest.into_iter().take(limit).collect(),
            next,
        })
    }

    async fn record_report(
        &self,
        account: &AccountId,
        link_id: &str,
        report: &Report,
        at: Timestamp,
    ) -> StoreResult<bool> {
        let mut state = self.state();
        let Some(link) = state.links.get_mut(link_id) else {
            return Ok(false);
        };
        if &link.account_id != account || !link.is_usable(at) {
            return Ok(false);
        }
        link.opened_at.get_or_insert(at);
        // "opened" never overwrites a later report that arrived first.
        if *report != Report::Opened || link.last_report.is_none() {
            link.last_report = Some((report.clone(), at));
        }
        Ok(true)
    }

    async fn revoke_link(
        &self,
        account: &AccountId,
        link_id: &str,
        at: Timestamp,
    ) -> StoreResult<RevokeOutcome> {
        let mut state = self.state();
        match state.links.get_mut(link_id) {
            Some(link) if &link.account_id == account => {
                if link.used_at.is_some() {
                    return Ok(RevokeOutcome::AlreadyUsed(link.clone()));
                }
                link.revoked_at.get_or_insert(at);
                Ok(RevokeOutcome::Revoked(link.clone()))
            }
            _ => Ok(RevokeOutcome::NotFound),
        }
    }
}

impl MemoryStore {
    /// Every WABA-only signup, whatever its account.
    pub fn all_waba_signups(&self) -> Vec<WabaSignup> {
        self.state().waba_signups.values().cloned().collect()
    }
}

impl WabaSignups for MemoryStore {
    async fn create_waba_signup(&self, signup: &WabaSignup) -> StoreResult<bool> {
        let mut state = self.state();
        if state.waba_signups.contains_key(&signup.id) {
            return Err(StoreError::unavailable("WABA signup id written twice"));
        }
        if let Some(link_id) = &signup.link_id {
            let now = time::now();
            match state.links.get_mut(link_id) {
                Some(link) if link.account_id == signup.account_id && link.is_usable(now) => {
                    link.used_at = Some(now);
                    link.waba_signup = Some((signup.id.clone(), None));
                }
                _ => return Ok(false),
            }
        }
        state.waba_signups.insert(signup.id.clone(), signup.clone());
        Ok(true)
    }

    async fn waba_signup(&self, account: &AccountId, id: &str) -> StoreResult<Option<WabaSignup>> {
        Ok(self
            .state()
            .waba_signups
            .get(id)
            .filter(|s| &s.account_id == account)
            .cloned())
    }

    async fn commit_waba_signup(&self, change: &WabaChange) -> StoreResult<WabaCommit> {
        let mut state = self.state();
        let Some(stored) = state.waba_signups.get(&change.signup.id).cloned() else {
            return Err(StoreError::NotFound);
        };
        if stored.version != change.expected_version {
            return Ok(WabaCommit::Conflict(stored));
        }
        if let Some((link_id, outcome)) = &change.link_outcome
            && let Some(link) = state.links.get_mut(link_id)
        {
            link.waba_signup = Some((change.signup.id.clone(), Some(outcome.clone())));
        }
        state
            .waba_signups
            .insert(change.signup.id.clone(), change.signup.clone());
        Ok(WabaCommit::Committed(change.signup.clone()))
    }
}

impl AccountDirectory for MemoryStore {
    async fn account_ids(&self) -> StoreResult<Vec<AccountId>> {
        Ok(self.state().accounts.clone())
    }
}

impl BanClock for MemoryStore {
    async fn advance_ban_clock(&self, waba_id: &str, time: i64) -> StoreResult<bool> {
        let mut state = self.state();
        let clock = state.ban_clocks.entry(waba_id.to_string()).or_insert(time);
        if *clock > time {
            return Ok(false);
        }
        *clock = time;
        Ok(true)
    }
}

impl ApiKeyVerifier for MemoryStore {
    async fn verify_key(&self, hash: &KeyHash) -> StoreResult<Option<VerifiedKey>> {
        Ok(self
            .state()
            .keys
            .get(hash)
            .filter(|key| !key.revoked)
            .map(|key| VerifiedKey {
                account: key.account.clone(),
                scope: key.scope,
                last_used_hour: key.last_used_hour,
            }))
    }

    async fn record_key_use(&self, hash: &KeyHash, hour: i64) -> StoreResult<()> {
        if let Some(key) = self.state().keys.get_mut(hash) {
            key.last_used_hour = Some(key.last_used_hour.map_or(hour, |h| h.max(hour)));
        }
        Ok(())
    }
}

impl IdempotencyStore for MemoryStore {
    async fn claim(
        &self,
        account: &AccountId,
        key: &str,
        fingerprint: &str,
        now: i64,
        lease_until: i64,
        expires_at: i64,
    ) -> StoreResult<Claim> {
        let mut state = self.state();
        let slot = (account.clone(), key.to_string());
        if let Some(held) = state.idempotency.get(&slot) {
            let live = held.expires_at > now;
            let running = held.record.response.is_none() && held.lease_until > now;
            let answered = held.record.response.is_some();
            let taken_over = held.record.fingerprint == fingerprint && !answered && !running;
            if live && !taken_over {
                return Ok(Claim::Held(held.record.clone()));
            }
        }
        state.idempotency.insert(
            slot,
            MemoryIdempotency {
                record: IdempotencyRecord {
                    fingerprint: fingerprint.to_string(),
                    response: None,
                },
                lease_until,
                expires_at,
            },
        );
        Ok(Claim::Claimed)
    }

    async fn complete(
        &self,
        account: &AccountId,
        key: &str,
        fingerprint: &str,
        response: &StoredResponse,
    ) -> StoreResult<()> {
        let mut state = self.state();
        match state
            .idempotency
            .get_mut(&(account.clone(), key.to_string()))
        {
            Some(held) if held.record.fingerprint == fingerprint => {
                held.record.response = Some(response.clone());
                Ok(())
            }
            _ => Err(StoreError::NotFound),
        }
    }

    async fn release(&self, account: &AccountId, key: &str, fingerprint: &str) -> StoreResult<()> {
        let mut state = self.state();
        let slot = (account.clone(), key.to_string());
        if state.idempotency.get(&slot).is_some_and(|held| {
            held.record.fingerprint == fingerprint && held.record.response.is_none()
        }) {
            state.idempotency.remove(&slot);
        }
        Ok(())
    }
}

impl RequestQuota for MemoryStore {
    async fn count_request(
        &self,
        subject: QuotaSubject<'_>,
        window_start: i64,
        limit: u32,
    ) -> StoreResult<bool> {
        let mut state = self.state();
        let count = state
            .requests
            .entry((subject.key(), window_start))
            .or_default();
        if *count >= limit {
            return Ok(false);
        }
        *count += 1;
        Ok(true)
    }
}

impl WebhookEndpoints for MemoryStore {
    async fn save_endpoint(&self, endpoint: &WebhookEndpoint) -> StoreResult<()> {
        let mut state = self.state();
        state.endpoints.retain(|e| e.id != endpoint.id);
        state.endpoints.push(endpoint.clone());
        Ok(())
    }

    async fn endpoints(&self, account: &AccountId) -> StoreResult<Vec<WebhookEndpoint>> {
        let mut endpoints: Vec<WebhookEndpoint> = self
            .state()
            .endpoints
            .iter()
            .filter(|e| &e.account_id == account)
            .cloned()
            .collect();
        endpoints.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(endpoints)
    }

    async fn endpoint(
        &self,
        account: &AccountId,
        id: &str,
    ) -> StoreResult<Option<WebhookEndpoint>> {
        Ok(self
            .state()
            .endpoints
            .iter()
            .find(|e| &e.account_id == account && e.id == id)
            .cloned())
    }

    async fn delete_endpoint(&self, account: &AccountId, id: &str) -> StoreResult<bool> {
        let mut state = self.state();
        let before = state.endpoints.len();
        state
            .endpoints
            .retain(|e| !(&e.account_id == account && e.id == id));
        Ok(state.endpoints.len() < before)
    }

    async fn update_endpoint(
        &self,
        account: &AccountId,
        id: &str,
        change: &EndpointChange,
    ) -> StoreResult<Option<WebhookEndpoint>> {
        Ok(self.with_endpoint(account, id, |endpoint| {
            MemoryStore::apply_endpoint_change(endpoint, change);
            endpoint.clone()
        }))
    }

    async fn rotate_secret(
        &self,
        account: &AccountId,
        id: &str,
        secret: &Secret,
        previous_until: Timestamp,
    ) -> StoreResult<Option<WebhookEndpoint>> {
        Ok(self.with_endpoint(account, id, |endpoint| {
            endpoint.previous_secret =
                Some(std::mem::replace(&mut endpoint.secret, secret.clone()));
            endpoint.previous_secret_expires_at = Some(previous_until);
            endpoint.clone()
        }))
    }

    async fn forget_previous_secrets(&self, now: Timestamp, limit: u32) -> StoreResult<u32> {
        let mut state = self.state();
        let mut forgotten = 0;
        for endpoint in state.endpoints.iter_mut() {
            if forgotten >= limit {
                break;
            }
            if endpoint.previous_secret.is_some()
                && endpoint
                    .previous_secret_expires_at
                    .is_none_or(|until| until <= now)
            {
                endpoint.previous_secret = None;
                endpoint.previous_secret_expires_at = None;
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
        self.with_endpoint(account, id, |endpoint| {
            endpoint.failing_since.get_or_insert(since);
        });
        Ok(())
    }

    async fn note_recovered(&self, account: &AccountId, id: &str) -> StoreResult<()> {
        self.with_endpoint(account, id, |endpoint| endpoint.failing_since = None);
        Ok(())
    }

    async fn disable_failing(
        &self,
        account: &AccountId,
        id: &str,
        since: Timestamp,
        event: &EventEnvelope,
    ) -> StoreResult<bool> {
        let disabled = self.with_endpoint(account, id, |endpoint| {
            let failing = endpoint.enabled && endpoint.failing_since == Some(since);
            if failing {
                endpoint.enabled = false;
                endpoint.disabled_event_id = Some(event.id.clone());
            }
            failing
        });
        if disabled == Some(true) {
            self.state()
                .events
                .insert(event.id.clone(), (event.clone(), false));
            return Ok(true);
        }
        Ok(false)
    }
}

impl MemoryStore {
    fn with_endpoint<T>(
        &self,
        account: &AccountId,
        id: &str,
        change: impl FnOnce(&mut WebhookEndpoint) -> T,
    ) -> Option<T> {
        self.state()
            .endpoints
            .iter_mut()
            .find(|e| &e.account_id == account && e.id == id)
            .map(change)
    }

    /// Every delivery recorded, in key order (tests).
    pub fn all_deliveries(&self) -> Vec<DeliveryRecord> {
        self.state().deliveries.values().cloned().collect()
    }
}

impl MemoryStore {
    pub(crate) fn apply_endpoint_change(endpoint: &mut WebhookEndpoint, change: &EndpointChange) {
        if let Some(url) = &change.url {
            endpoint.url = url.clone();
        }
        if let Some(events) = &change.events {
            endpoint.events = events.clone();
        }
        if let Some(enabled) = change.enabled {
            endpoint.enabled = enabled;
            if enabled {
                endpoint.failing_since = None;
                endpoint.disabled_event_id = None;
            }
        }
    }
}

impl DeliveryLog for MemoryStore {
    async fn delivery(
        &self,
        endpoint_id: &str,
        position: &EventPosition,
    ) -> StoreResult<Option<DeliveryRecord>> {
        Ok(self
            .state()
            .deliveries
            .get(&(endpoint_id.to_string(), position.sort_key()))
            .cloned())
    }

    async fn record_attempt(
        &self,
        key: &DeliveryKey,
        body: &str,
        attempt: &Attempt,
        status: DeliveryStatus,
        next_retry_at: Option<Timestamp>,
    ) -> StoreResult<()> {
        let mut state = self.state();
        let record = state
            .deliveries
            .entry((key.endpoint_id.clone(), key.position.sort_key()))
            .or_insert_with(|| DeliveryRecord {
                key: key.clone(),
                status,
                attempts: Vec::new(),
                next_retry_at: None,
                body: body.to_string(),
            });
        record.attempts.push(attempt.clone());
        record.status = status;
        record.next_retry_at = next_retry_at;
        Ok(())
    }

    async fn deliveries(
        &self,
        endpoint_id: &str,
        status: Option<DeliveryStatus>,
        limit: u32,
        after: Option<&EventPosition>,
    ) -> StoreResult<DeliveryPage> {
        let state = self.state();
        let after = after.map(EventPosition::sort_key);
        let mut matching = state
            .deliveries
            .iter()
            .rev()
            .filter(|((endpoint, _), _)| endpoint == endpoint_id)
            .filter(|((_, sort), _)| after.as_ref().is_none_or(|after| sort < after))
            .map(|(_, record)| record)
            .filter(|record| status.is_none_or(|s| record.status == s));
        let deliveries: Vec<DeliveryRecord> =
            matching.by_ref().take(limit as usize).cloned().collect();
        let next = match matching.next() {
            Some(_) => deliveries.last().map(|r| r.key.position.clone()),
            None => None,
        };
        Ok(DeliveryPage { deliveries, next })
    }
}

impl EventHistory for MemoryStore {
    async fn number_events(
        &self,
        account: &AccountId,
        number: &NumberId,
        limit: u32,
        after: Option<&EventPosition>,
    ) -> StoreResult<EventPage> {
        let state = self.state();
        let mut events: Vec<&EventEnvelope> = state
            .events
            .values()
            .map(|(event, _)| event)
            .filter(|e| &e.account_id == account && e.number_id == number.as_str())
            .filter(|e| {
                after.is_none_or(|after| EventPosition::of(e).sort_key() < after.sort_key())
            })
            .collect();
        events.sort_by_key(|e| Reverse(EventPosition::of(e).sort_key()));
        let more = events.len() > limit as usize;
        let events: Vec<EventEnvelope> = events.into_iter().take(limit as usize).cloned().collect();
        let next = if more {
            events.last().map(EventPosition::of)
        } else {
            None
        };
        Ok(EventPage { events, next })
    }

    async fn event(
        &self,
        account: &AccountId,
        event_id: &str,
    ) -> StoreResult<Option<EventEnvelope>> {
        Ok(self
            .state()
            .events
            .get(event_id)
            .map(|(event, _)| event.clone())
            .filter(|event| &event.account_id == account))
    }
}

// ---- Queues --------------------------------------------------------------------------------

/// One message as SQS would hold it: its queue, its JSON body and its number snapshot attribute
/// (`Message::number_snapshot`).
struct SentMessage {
    queue: Queue,
    body: String,
    number_snapshot: Option<String>,
}

#[derive(Default)]
struct QueueState {
    sent: Vec<SentMessage>,
    delays: Vec<(Queue, String, u32)>,
    refused: Vec<(Queue, String, u32)>,
    /// How long before its batch arrived SQS received a message (`set_receive_latency`).
    receive_latency: std::time::Duration,
    failures_left: usize,
}

#[derive(Clone, Default)]
pub struct MemoryQueue {
    state: Arc<Mutex<QueueState>>,
}

impl MemoryQueue {
    /// Every message sent, in order, as its queue and JSON body.
    pub fn sent(&self) -> Vec<(Queue, String)> {
        locked(&self.state)
            .sent
            .iter()
            .map(|sent| (sent.queue, sent.body.clone()))
            .collect()
    }

    /// The bodies sent to `queue`, parsed.
    pub fn sent_to(&self, queue: Queue) -> Vec<serde_json::Value> {
        self.sent()
            .into_iter()
            .filter(|(q, _)| *q == queue)
            .filter_map(|(_, body)| serde_json::from_str(&body).ok())
            .collect()
    }

    /// The messages sent to `queue` as a consumer receives them: body and number snapshot.
    pub fn received_from(&self, queue: Queue) -> Vec<(String, Option<String>)> {
        locked(&self.state)
            .sent
            .iter()
            .filter(|sent| sent.queue == queue)
            .map(|sent| (sent.body.clone(), sent.number_snapshot.clone()))
            .collect()
    }

    /// The next `count` sends fail, as an unreachable SQS would.
    pub fn fail_next_sends(&self, count: usize) {
        locked(&self.state).failures_left = count;
    }

    /// Redelivery delays accepted: queue, receipt handle, seconds.
    pub fn delays(&self) -> Vec<(Queue, String, u32)> {
        locked(&self.state).delays.clone()
    }

    /// Redelivery delays refused as SQS refuses them (beyond 12 h from the receive).
    pub fn refused(&self) -> Vec<(Queue, String, u32)> {
        locked(&self.state).refused.clone()
    }

    /// SQS received each message this long before its batch arrived (the event source
    /// mapping's latency), which the 12 h limit counts too.
    pub fn set_receive_latency(&self, latency: std::time::Duration) {
        locked(&self.state).receive_latency = latency;
    }
}

impl MessageQueue for MemoryQueue {
    async fn send<M: Message>(&self, message: &M) -> Result<(), QueueError> {
        let body = serde_json::to_string(message).map_err(QueueError::Encode)?;
        let mut state = locked(&self.state);
        if state.failures_left > 0 {
            state.failures_left -= 1;
            return Err(QueueError::Unavailable("injected send failure".into()));
        }
        state.sent.push(SentMessage {
            queue: message.queue(),
            body,
            number_snapshot: message.number_snapshot().map(str::to_string),
        });
        Ok(())
    }
}

impl Redelivery for MemoryQueue {
    /// Refuses, as SQS does, a visibility reaching past 12 h from the receive.
    async fn delay_redelivery(
        &self,
        queue: Queue,
        receipt_handle: &str,
        delay: RedeliveryDelay,
    ) -> Result<(), QueueError> {
        let seconds = delay.seconds_now();
        let mut state = locked(&self.state);
        let since_receive = delay.received().elapsed() + state.receive_latency;
        let invisible_until = since_receive + std::time::Duration::from_secs(u64::from(seconds));
        let entry = (queue, receipt_handle.to_string(), seconds);
        if invisible_until > std::time::Duration::from_secs(u64::from(MAX_REDELIVERY_DELAY_SECONDS))
        {
            state.refused.push(entry);
            return Err(QueueError::VisibilityRefused(
                format!(
                    "InvalidParameterValue: visibility {seconds} s, {} s after the receive, passes 12 h",
                    since_receive.as_secs()
                )
                .into(),
            ));
        }
        state.delays.push(entry);
        Ok(())
    }
}

// ---- Secrets -------------------------------------------------------------------------------

#[derive(Clone, Default)]
pub struct MemoryVault {
    secrets: Arc<Mutex<HashMap<NumberId, NumberSecrets>>>,
    deleted: Arc<Mutex<Vec<NumberId>>>,
    /// Versions written by `replace` after the first (absent: one version).
    versions: Arc<Mutex<HashMap<NumberId, u32>>>,
    /// Reads by `load` (each a Secrets Manager request in production).
    loads: Arc<Mutex<usize>>,
}

impl MemoryVault {
    pub fn put(&self, number: &NumberId, secrets: NumberSecrets) {
        locked(&self.secrets).insert(number.clone(), secrets);
    }

    pub fn holds(&self, number: &NumberId) -> bool {
        locked(&self.secrets).contains_key(number)
    }

    /// How many versions the number's secret has had (0: none).
    pub fn versions(&self, number: &NumberId) -> u32 {
        match locked(&self.versions).get(number) {
            Some(count) => *count,
            None => u32::from(self.holds(number)),
        }
    }

    pub fn secrets(&self, number: &NumberId) -> Option<NumberSecrets> {
        locked(&self.secrets).get(number).cloned()
    }

    /// Numbers whose secret was scheduled for deletion, in order.
    pub fn deleted(&self) -> Vec<NumberId> {
        locked(&self.deleted).clone()
    }

    /// How many times a secret was read.
    pub fn loads(&self) -> usize {
        *locked(&self.loads)
    }
}

impl TokenVault for MemoryVault {
    async fn load(&self, number: &NumberId) -> Result<Option<NumberSecrets>, VaultError> {
        *locked(&self.loads) += 1;
        Ok(locked(&self.secrets).get(number).cloned())
    }

    async fn create(
        &self,
        number: &NumberId,
        secrets: &NumberSecrets,
    ) -> Result<NumberSecrets, VaultError> {
        Ok(locked(&self.secrets)
            .entry(number.clone())
            .or_insert_with(|| secrets.clone())
            .clone())
    }

    async fn replace(&self, number: &NumberId, secrets: &NumberSecrets) -> Result<(), VaultError> {
        let mut stored = locked(&self.secrets);
        match stored.get_mut(number) {
            Some(current) => {
                if current != secrets {
                    *current = secrets.clone();
                    *locked(&self.versions).entry(number.clone()).or_insert(1) += 1;
                }
                Ok(())
            }
            None => Err(VaultError::Unavailable(
                "no secret to replace for this number".into(),
            )),
        }
    }

    async fn schedule_deletion(&self, number: &NumberId) -> Result<(), VaultError> {
        if locked(&self.secrets).remove(number).is_some() {
            locked(&self.deleted).push(number.clone());
        }
        Ok(())
    }
}

// ---- Meta ----------------------------------------------------------------------------------

/// One Graph API call, as [`ScriptedMeta`] records it (no tokens or PINs: only what was asked).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MetaCall {
    ExchangeCode,
    SubscribeApp {
        waba_id: String,
    },
    UnsubscribeApp {
        waba_id: String,
    },
    Register {
        phone_number_id: String,
    },
    Deregister {
        phone_number_id: String,
    },
    SetPin {
        phone_number_id: String,
    },
    PhoneProfile {
        phone_number_id: String,
    },
    DebugToken,
    PhoneNumbers {
        waba_id: String,
        after: Option<String>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetaCallKind {
    ExchangeCode,
    SubscribeApp,
    UnsubscribeApp,
    Register,
    Deregister,
    SetPin,
    PhoneProfile,
    DebugToken,
    PhoneNumbers,
}

impl MetaCall {
    pub fn kind(&self) -> MetaCallKind {
        match self {
            MetaCall::ExchangeCode => MetaCallKind::ExchangeCode,
            MetaCall::SubscribeApp { .. } => MetaCallKind::SubscribeApp,
            MetaCall::UnsubscribeApp { .. } => MetaCallKind::UnsubscribeApp,
            MetaCall::Register { .. } => MetaCallKind::Register,
            MetaCall::Deregister { .. } => MetaCallKind::Deregister,
            MetaCall::SetPin { .. } => MetaCallKind::SetPin,
            MetaCall::PhoneProfile { .. } => MetaCallKind::PhoneProfile,
            MetaCall::DebugToken => MetaCallKind::DebugToken,
            MetaCall::PhoneNumbers { .. } => MetaCallKind::PhoneNumbers,
        }
    }
}

#[derive(Default)]
struct Script {
    calls: Vec<MetaCall>,
    errors: HashMap<MetaCallKind, VecDeque<MetaError>>,
    profile: PhoneProfile,
    /// Profiles answered before `profile`, one per call (a phone that changes between reads).
    next_profiles: VecDeque<PhoneProfile>,
    token_expires_in: Option<u64>,
    /// `debug_token`'s answer; `None`: the token is valid.
    token_info: Option<TokenInfo>,
    /// The phones `phone_numbers` lists, in Meta's order, `page_size` per page (0: all).
    waba_phones: Vec<String>,
    page_size: usize,
    /// The app secret is a placeholder: what needs it is refused without a call.
    app_secret_placeholder: bool,
}

/// Meta answering from a script: every call succeeds unless an error was queued for its kind
/// (each queued error answers one call); the profile is whatever was set.
#[derive(Clone, Default)]
pub struct ScriptedMeta {
    script: Arc<Mutex<Script>>,
    /// Held by a test to keep `set_pin` from answering (see `hold_pins`).
    pin_gate: Arc<tokio::sync::RwLock<()>>,
}

impl ScriptedMeta {
    /// Until the guard drops, PIN requests wait before they are answered (and logged).
    pub async fn hold_pins(&self) -> tokio::sync::OwnedRwLockWriteGuard<()> {
        self.pin_gate.clone().write_owned().await
    }

    /// The next call of `kind` answers `error` (queue several for several calls).
    pub fn fail_next(&self, kind: MetaCallKind, error: MetaError) {
        locked(&self.script)
            .errors
            .entry(kind)
            .or_default()
            .push_back(error);
    }

    pub fn set_profile(&self, profile: PhoneProfile) {
        locked(&self.script).profile = profile;
    }

    /// The next profile read answers `profile` (queue several for several reads); the one set
    /// with `set_profile` answers after them.
    pub fn profile_next(&self, profile: PhoneProfile) {
        locked(&self.script).next_profiles.push_back(profile);
    }

    /// From now on the app secret is a placeholder (`true`) or the app's (`false`).
    pub fn set_app_secret_placeholder(&self, placeholder: bool) {
        locked(&self.script).app_secret_placeholder = placeholder;
    }

    /// What `debug_token` answers from now on.
    pub fn set_token_info(&self, info: TokenInfo) {
        locked(&self.script).token_info = Some(info);
    }

    /// The phones the WABA lists (any WABA asked), `page_size` per page (0: one page).
    pub fn set_waba_phones(&self, phones: &[&str], page_size: usize) {
        let mut script = locked(&self.script);
        script.waba_phones = phones.iter().map(|p| p.to_string()).collect();
        script.page_size = page_size;
    }

    pub fn set_token_expires_in(&self, seconds: Option<u64>) {
        locked(&self.script).token_expires_in = seconds;
    }

    pub fn calls(&self) -> Vec<MetaCall> {
        locked(&self.script).calls.clone()
    }

    pub fn count(&self, kind: MetaCallKind) -> usize {
        self.calls().iter().filter(|c| c.kind() == kind).count()
    }

    fn answer(&self, call: MetaCall) -> MetaResult<()> {
        let mut script = locked(&self.script);
        let kind = call.kind();
        script.calls.push(call);
        match script.errors.get_mut(&kind).and_then(VecDeque::pop_front) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

impl MetaGraph for ScriptedMeta {
    async fn exchange_code(&self, _code: &str) -> MetaResult<ExchangedToken> {
        self.answer(MetaCall::ExchangeCode)?;
        Ok(ExchangedToken {
            token: Secret::new(format!("EAAG{}", crate::domain::ids::random_id())),
            expires_in_seconds: locked(&self.script).token_expires_in,
        })
    }

    async fn subscribe_app(&self, _token: &Secret, waba_id: &str) -> MetaResult<()> {
        self.answer(MetaCall::SubscribeApp {
            waba_id: waba_id.into(),
        })
    }

    async fn unsubscribe_app(&self, _token: &Secret, waba_id: &str) -> MetaResult<()> {
        self.answer(MetaCall::UnsubscribeApp {
            waba_id: waba_id.into(),
        })
    }

    async fn register(
        &self,
        _token: &Secret,
        phone_number_id: &str,
        _pin: &Secret,
    ) -> MetaResult<()> {
        self.answer(MetaCall::Register {
            phone_number_id: phone_number_id.into(),
        })
    }

    async fn deregister(&self, _token: &Secret, phone_number_id: &str) -> MetaResult<()> {
        self.answer(MetaCall::Deregister {
            phone_number_id: phone_number_id.into(),
        })
    }

    async fn set_pin(
        &self,
        _token: &Secret,
        phone_number_id: &str,
        _pin: &Secret,
    ) -> MetaResult<()> {
        let _open = self.pin_gate.read().await;
        self.answer(MetaCall::SetPin {
            phone_number_id: phone_number_id.into(),
        })
    }

    async fn phone_profile(
        &self,
        _token: &Secret,
        phone_number_id: &str,
    ) -> MetaResult<PhoneProfile> {
        self.answer(MetaCall::PhoneProfile {
            phone_number_id: phone_number_id.into(),
        })?;
        let mut script = locked(&self.script);
        Ok(match script.next_profiles.pop_front() {
            Some(profile) => profile,
            None => script.profile.clone(),
        })
    }

    async fn phone_numbers(
        &self,
        _token: &Secret,
        waba_id: &str,
        after: Option<&str>,
    ) -> MetaResult<PhonePage> {
        self.answer(MetaCall::PhoneNumbers {
            waba_id: waba_id.into(),
            after: after.map(str::to_string),
        })?;
        let script = locked(&self.script);
        // The cursor is the position the page starts at.
        let start: usize = after.and_then(|a| a.parse().ok()).unwrap_or(0);
        let size = match script.page_size {
            0 => script.waba_phones.len().max(1),
            size => size,
        };
        let end = (start + size).min(script.waba_phones.len());
        let phones = script.waba_phones[start.min(end)..end]
            .iter()
            .map(|id| ListedPhone {
                phone_number_id: id.clone(),
                display_phone_number: Some(format!("+55 11 9{id}")),
                verified_name: Some("Scripted".into()),
            })
            .collect();
        Ok(PhonePage {
            phones,
            after: (end < script.waba_phones.len()).then(|| end.to_string()),
        })
    }

    async fn app_secret_is_placeholder(&self) -> bool {
        locked(&self.script).app_secret_placeholder
    }

    async fn debug_token(&self, _token: &Secret) -> MetaResult<TokenInfo> {
        if locked(&self.script).app_secret_placeholder {
            return Err(MetaError::app_secret_placeholder());
        }
        self.answer(MetaCall::DebugToken)?;
        Ok(locked(&self.script)
            .token_info
            .clone()
            .unwrap_or_else(|| TokenInfo {
                is_valid: true,
                expires_at: None,
                scopes: vec![
                    "whatsapp_business_management".into(),
                    "whatsapp_business_messaging".into(),
                ],
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account_of(count: i64) -> (MemoryStore, AccountId) {
        let store = MemoryStore::default();
        let account = AccountId::from("acc_find".to_string());
        let start = time::now();
        for i in 0..count {
            let mut number = Number::new_pending(
                account.clone(),
                "1000".into(),
                format!("2000{i}"),
                start - chrono::Duration::seconds(i / 2),
            );
            number.status = [Status::Active, Status::Pending, Status::Failed][(i % 3) as usize];
            store.insert_number(number);
        }
        (store, account)
    }

    fn search(status: Option<Status>, limit: u32, start: PageStart) -> NumberSearch {
        NumberSearch {
            status,
            display_digits: None,
            waba_id: None,
            limit,
            start,
        }
    }

    #[test]
    fn an_indexed_page_is_the_page_a_scan_of_the_account_finds() {
        // Given an account of numbers in three statuses, some created in the same second
        let (store, account) = account_of(47);
        let state = store.state();
        for status in [None, Some(Status::Active), Some(Status::Failed)] {
            // When every page is read by offset and by cursor, through the index and by a scan
            for limit in [1, 5, 20] {
                for offset in [0, 3, 16, 46, 60] {
                    let by_offset = search(status, limit, PageStart::Offset(offset));
                    // Then both ways find the same numbers, total and next cursor
                    assert_eq!(
                        state.find_by_index(&account, &by_offset),
                        state.find_by_scan(&account, &by_offset)
                    );
                }
                let mut cursor: Option<NumberCursor> = None;
                loop {
                    let start = cursor
                        .clone()
                        .map_or(PageStart::Offset(0), PageStart::After);
                    let page = search(status, limit, start);
                    let indexed = state.find_by_index(&account, &page);
                    assert_eq!(indexed, state.find_by_scan(&account, &page));
                    match indexed.next {
                        Some(next) => cursor = Some(next),
                        None => break,
                    }
                }
            }
        }
    }
}
