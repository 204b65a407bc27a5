//! In-memory adapters behind the same ports, for unit tests and for measuring the handlers'
//! own overhead. They keep the same promises as DynamoDB: conditional status changes, scoping.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::domain::api_key::KeyHash;
use crate::domain::{AccountId, EventEnvelope, Number, NumberId, Status};
use crate::ports::{
    ApiKeyVerifier, ChangeOutcome, EventLog, MessageQueue, NumberPage, NumberReader, Page, Queue,
    QueueError, RequestQuota, StatusChange, StatusWriter, StoreError, StoreResult,
};

#[derive(Default)]
struct State {
    numbers: HashMap<(AccountId, NumberId), Number>,
    keys: HashMap<KeyHash, (AccountId, bool)>,
    events: HashMap<String, (EventEnvelope, bool)>,
    requests: HashMap<(AccountId, i64), u32>,
}

#[derive(Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
}

impl MemoryStore {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn insert_number(&self, number: Number) {
        self.state()
            .numbers
            .insert((number.account_id.clone(), number.id.clone()), number);
    }

    pub fn add_key(&self, key: &str, account: &AccountId) {
        self.state()
            .keys
            .insert(KeyHash::of(key), (account.clone(), false));
    }

    pub fn revoke_key(&self, key: &str) {
        if let Some(entry) = self.state().keys.get_mut(&KeyHash::of(key)) {
            entry.1 = true;
        }
    }

    pub fn all_numbers(&self) -> Vec<Number> {
        let mut numbers: Vec<Number> = self.state().numbers.values().cloned().collect();
        numbers.sort_by(|a, b| a.id.cmp(&b.id));
        numbers
    }
}

impl NumberReader for MemoryStore {
    async fn get(&self, account: &AccountId, id: &NumberId) -> StoreResult<Option<Number>> {
        Ok(self
            .state()
            .numbers
            .get(&(account.clone(), id.clone()))
            .cloned())
    }

    async fn list(
        &self,
        account: &AccountId,
        status: Option<Status>,
        page: Page,
    ) -> StoreResult<NumberPage> {
        let state = self.state();
        let mut matching: Vec<&Number> = state
            .numbers
            .values()
            .filter(|n| &n.account_id == account && status.is_none_or(|s| n.status == s))
            .collect();
        matching.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        Ok(NumberPage {
            total: matching.len() as u64,
            numbers: matching
                .into_iter()
                .skip(page.offset as usize)
                .take(page.limit as usize)
                .cloned()
                .collect(),
        })
    }
}

impl StatusWriter for MemoryStore {
    async fn change_status(
        &self,
        number: &Number,
        change: StatusChange,
        event: &EventEnvelope,
    ) -> StoreResult<ChangeOutcome> {
        let mut state = self.state();
        let stored = state
            .numbers
            .get_mut(&(number.account_id.clone(), number.id.clone()))
            .ok_or(StoreError::NotFound)?;
        if stored.status != change.transition.from() {
            return Ok(ChangeOutcome::NotApplied(stored.clone()));
        }
        *stored = change.applied_to(stored);
        stored.last_event_id = Some(event.id.clone());
        let applied = stored.clone();
        state
            .events
            .insert(event.id.clone(), (event.clone(), false));
        Ok(ChangeOutcome::Applied(applied))
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
}

impl ApiKeyVerifier for MemoryStore {
    async fn account_for_key(&self, hash: &KeyHash) -> StoreResult<Option<AccountId>> {
        Ok(self
            .state()
            .keys
            .get(hash)
            .filter(|(_, revoked)| !revoked)
            .map(|(account, _)| account.clone()))
    }
}

impl RequestQuota for MemoryStore {
    async fn count_request(
        &self,
        account: &AccountId,
        window_start: i64,
        limit: u32,
    ) -> StoreResult<bool> {
        let mut state = self.state();
        let count = state
            .requests
            .entry((account.clone(), window_start))
            .or_default();
        if *count >= limit {
            return Ok(false);
        }
        *count += 1;
        Ok(true)
    }
}

#[derive(Clone, Default)]
pub struct MemoryQueue {
    sent: Arc<Mutex<Vec<(Queue, String)>>>,
}

impl MemoryQueue {
    pub fn sent(&self) -> Vec<(Queue, String)> {
        self.sent
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

impl MessageQueue for MemoryQueue {
    async fn send(&self, queue: Queue, body: String) -> Result<(), QueueError> {
        self.sent
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push((queue, body));
        Ok(())
    }
}
