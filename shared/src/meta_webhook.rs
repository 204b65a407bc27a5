//! Meta's webhooks (`GET`/`POST /webhooks/meta`): the subscription handshake, the signature
//! check over the raw body, and what `account_update`, `phone_number_quality_update` and
//! `phone_number_name_update` changes do to our numbers (the table in `docs/openapi.yaml`,
//! `receiveMetaWebhook`, lists each effect).
//!
//! Changes are handled inline, before answering: each is one GSI3 query for the WABA and a few
//! conditional writes (every change through [`lifecycle::apply`]), which stays
//! well within Meta's timeout for the payloads it sends; a store failure answers `500` so Meta
//! redelivers, and every write is idempotent, so a redelivery is harmless. A queue in between
//! would only be needed for very large deliveries (Meta batches up to 1000 changes).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::api::Routes;
use crate::domain::lifecycle::{Command, DisconnectedBy};
use crate::domain::messages::TeardownMessage;
use crate::domain::number::meta_label;
use crate::domain::secrets::{AppSecret, Secret};
use crate::domain::{NameDecision, Number, Restriction, RestrictionMarker};
use crate::lifecycle::{self, Changed, LifecycleError};
use crate::ports::{
    EventLog, LifecycleStore, MessageQueue, ProvisioningStore, QueueError, StoreError,
};
use crate::secret_cache::SecretCache;

pub use crate::ports::BanClock;

pub const PATH: &str = "/webhooks/meta";
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

// ---- Signature -------------------------------------------------------------------------------

/// Whether `header` (`sha256=<hex>`) is the HMAC-SHA256 of `body` keyed with `app_secret`,
/// compared in constant time. A placeholder app secret (or an empty one) verifies nothing:
/// anyone could sign with the template's.
pub fn signature_valid(app_secret: &AppSecret, header: Option<&str>, body: &[u8]) -> bool {
    let Some(secret) = app_secret.issued().map(Secret::expose) else {
        return false;
    };
    if secret.is_empty() {
        return false;
    }
    let Some(hex_sig) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// The header Meta would send for `body` (tests, sample events).
pub fn sign(app_secret: &str, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(app_secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

// ---- Payloads --------------------------------------------------------------------------------
//
// Read leniently, piece by piece: a delivery is a JSON object with a list of entries, each with
// a list of changes, and whatever of it cannot be read is skipped on its own (with its reason,
// for the logs) while the rest is applied. Meta's published examples differ in places (changes
// without `field`, `field`/`object` on the entry instead), so both places are read.

/// The object our deliveries are about.
pub const OBJECT: &str = "whatsapp_business_account";

/// A delivery as read: the entries that could be read, and why the others were skipped.
#[derive(Debug, Default)]
pub struct Envelope {
    pub object: Option<String>,
    pub entry: Vec<Entry>,
    /// What was skipped before reaching a change (unreadable entries, another object).
    pub skipped: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Entry {
    pub id: String,
    /// Unix seconds of the change at Meta; orders ban-state changes of a WABA.
    pub time: Option<i64>,
    pub changes: Vec<Change>,
    /// Why changes of this entry were skipped.
    pub skipped: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Change {
    pub field: String,
    pub value: Value,
}

impl<'de> Deserialize<'de> for Envelope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Envelope, D::Error> {
        Ok(Envelope::read(&Value::deserialize(d)?))
    }
}

fn text_of(value: Option<&Value>) -> Option<String> {
    value.cloned().and_then(id_text).filter(|t| !t.is_empty())
}

impl Envelope {
    /// Reads a delivery's JSON; never fails (what cannot be read is in `skipped`).
    pub fn read(body: &Value) -> Envelope {
        let object = text_of(body.get("object"));
        let mut envelope = Envelope {
            object: object.clone(),
            ..Envelope::default()
        };
        let entries = match body.get("entry") {
            Some(Value::Array(entries)) => entries,
            Some(_) => {
                envelope.skipped.push("`entry` is not a list".into());
                return envelope;
            }
            None => {
                envelope.skipped.push("no `entry`".into());
                return envelope;
            }
        };
        for (index, entry) in entries.iter().enumerate() {
            match Entry::read(entry, object.as_deref()) {
                Ok(entry) => envelope.entry.push(entry),
                Err(why) => envelope.skipped.push(format!("entry {index}: {why}")),
            }
        }
        envelope
    }
}

impl Entry {
    fn read(entry: &Value, envelope_object: Option<&str>) -> Result<Entry, String> {
        if !entry.is_object() {
            return Err("not an object".into());
        }
        let object = text_of(entry.get("object")).or(envelope_object.map(str::to_string));
        if let Some(object) = object.filter(|o| o != OBJECT) {
            return Err(format!("for object {object}"));
        }
        let id = text_of(entry.get("id")).ok_or("without an id")?;
        let time = match entry.get("time") {
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) => s.parse().ok(),
            _ => None,
        };
        let entry_field = text_of(entry.get("field"));
        let mut read = Entry {
            id,
            time,
            ..Entry::default()
        };
        match entry.get("changes") {
            Some(Value::Array(changes)) => {
                for (index, change) in changes.iter().enumerate() {
                    match Change::read(change, entry_field.as_deref()) {
                        Ok(change) => read.changes.push(change),
                        Err(why) => read.skipped.push(format!("change {index}: {why}")),
                    }
                }
            }
            // The entry is the change itself (`field` and `value` on the entry).
            None if entry_field.is_some() && entry.get("value").is_some() => {
                match Change::read(entry, None) {
                    Ok(change) => read.changes.push(change),
                    Err(why) => read.skipped.push(why),
                }
            }
            Some(_) => read.skipped.push("`changes` is not a list".into()),
            None => read.skipped.push("no `changes`".into()),
        }
        Ok(read)
    }
}

impl Change {
    fn read(change: &Value, entry_field: Option<&str>) -> Result<Change, String> {
        if !change.is_object() {
            return Err("not an object".into());
        }
        let field = text_of(change.get("field"))
            .or(entry_field.map(str::to_string))
            .ok_or("without `field`")?;
        let value = change.get("value").cloned().unwrap_or(Value::Null);
        Ok(Change { field, value })
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct AccountUpdate {
    #[serde(default)]
    pub event: String,
    #[serde(default)]
    pub ban_info: Option<BanInfo>,
    #[serde(default)]
    pub waba_info: Option<WabaInfo>,
}

#[derive(Debug, Default, Deserialize)]
pub struct BanInfo {
    #[serde(default)]
    pub waba_ban_state: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct WabaInfo {
    #[serde(default, deserialize_with = "opt_string_or_number")]
    pub waba_id: Option<String>,
}

/// `phone_number_name_update`: Meta's decision on a requested display name.
#[derive(Debug, Default, Deserialize)]
pub struct NameUpdate {
    #[serde(default, deserialize_with = "opt_string_or_number")]
    pub display_phone_number: Option<String>,
    /// `APPROVED`, `DEFERRED` or `REJECTED`.
    #[serde(default)]
    pub decision: Option<String>,
    #[serde(default)]
    pub requested_verified_name: Option<String>,
    #[serde(default)]
    pub rejection_reason: Option<String>,
}

/// `phone_number_quality_update`: a change of the phone's messaging limit or throughput.
#[derive(Debug, Default, Deserialize)]
pub struct QualityUpdate {
    #[serde(default, deserialize_with = "opt_string_or_number")]
    pub display_phone_number: Option<String>,
    /// `ONBOARDING`, `UPGRADE`, `DOWNGRADE`, `FLAGGED`, `UNFLAGGED`, `THROUGHPUT_UPGRADE`...
    #[serde(default)]
    pub event: Option<String>,
    /// Being removed by Meta (February 2026) in favour of the next one.
    #[serde(default)]
    pub current_limit: Option<String>,
    #[serde(default)]
    pub old_limit: Option<String>,
    #[serde(default)]
    pub max_daily_conversations_per_business: Option<String>,
}

fn id_text(value: Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn opt_string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(id_text(Value::deserialize(d)?))
}

/// What one change asks of our numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Ban {
        waba_id: String,
    },
    Reinstate {
        waba_id: String,
    },
    Disconnect {
        waba_id: String,
    },
    /// Meta's restrictions in force on the WABA now (empty: lifted).
    Restrict {
        waba_id: String,
        restrictions: Vec<Restriction>,
    },
    /// Meta will disable the WABA.
    ScheduleBan {
        waba_id: String,
    },
    /// Meta decided on the display name requested for the WABA's number with this display
    /// phone number.
    NameDecided {
        waba_id: String,
        display_phone_number: String,
        decision: NameDecision,
    },
    /// The messaging limit (and throughput) of the WABA's number with this display phone number.
    Limit {
        waba_id: String,
        display_phone_number: String,
        messaging_limit: Option<String>,
        throughput: Option<String>,
    },
    /// A restriction known from an event rather than Meta's list, on or lifted.
    Mark {
        waba_id: String,
        marker: RestrictionMarker,
        on: bool,
    },
    /// Logged, nothing changes.
    Ignore {
        reason: String,
    },
}

impl Action {
    /// The WABA whose numbers the action reads (`None`: it reads none).
    pub fn waba_id(&self) -> Option<&str> {
        match self {
            Action::Ban { waba_id }
            | Action::Reinstate { waba_id }
            | Action::Disconnect { waba_id }
            | Action::Restrict { waba_id, .. }
            | Action::ScheduleBan { waba_id }
            | Action::NameDecided { waba_id, .. }
            | Action::Limit { waba_id, .. }
            | Action::Mark { waba_id, .. } => Some(waba_id),
            Action::Ignore { .. } => None,
        }
    }
}

/// Decodes one change of an entry (never fails: what we do not act on is `Ignore`).
pub fn action_of(entry_id: &str, change: &Change) -> Action {
    match change.field.as_str() {
        "account_update" => {
            let update: AccountUpdate = match serde_json::from_value(change.value.clone()) {
                Ok(update) => update,
                Err(_) => {
                    return Action::Ignore {
                        reason: "unreadable account_update".into(),
                    };
                }
            };
            let named = update
                .waba_info
                .as_ref()
                .and_then(|w| w.waba_id.clone())
                .filter(|w| !w.is_empty());
            // For the partner events entry.id is the partner's business id, not a WABA: only
            // waba_info names the WABA (PARTNER_REMOVED has come without it, on the WABA's entry).
            let waba_id = match named {
                Some(waba_id) => waba_id,
                None if update.event.starts_with("PARTNER_")
                    && update.event != "PARTNER_REMOVED" =>
                {
                    return Action::Ignore {
                        reason: format!("account_update {} without waba_info", update.event),
                    };
                }
                None => entry_id.to_string(),
            };
            match update.event.as_str() {
                "DISABLED_UPDATE" => {
                    match update.ban_info.and_then(|b| b.waba_ban_state).as_deref() {
                        Some("DISABLE") => Action::Ban { waba_id },
                        Some("REINSTATE") => Action::Reinstate { waba_id },
                        Some("SCHEDULE_FOR_DISABLE") => Action::ScheduleBan { waba_id },
                        Some(other) => Action::Ignore {
                            reason: format!("DISABLED_UPDATE {other}"),
                        },
                        None => Action::Ignore {
                            reason: "DISABLED_UPDATE without ban state".into(),
                        },
                    }
                }
                "PARTNER_REMOVED" | "PARTNER_APP_UNINSTALLED" | "ACCOUNT_DELETED" => {
                    Action::Disconnect { waba_id }
                }
                // A coexistence number's Cloud API companion was offboarded (the customer
                // changed devices or registered the number again in the app); Meta reconnects
                // it when the customer keeps the opt-in.
                "ACCOUNT_OFFBOARDED" => Action::Mark {
                    waba_id,
                    marker: RestrictionMarker::AccountOffboarded,
                    on: true,
                },
                "ACCOUNT_RECONNECTED" => Action::Mark {
                    waba_id,
                    marker: RestrictionMarker::AccountOffboarded,
                    on: false,
                },
                "ACCOUNT_RESTRICTION" => match restrictions_of(&change.value) {
                    Some(restrictions) => Action::Restrict {
                        waba_id,
                        restrictions,
                    },
                    None => Action::Ignore {
                        reason: "ACCOUNT_RESTRICTION without a readable restriction_info".into(),
                    },
                },
                // Recorded in the logs with what Meta names; no status of ours follows from it.
                "ACCOUNT_VIOLATION" => {
                    let violation = change
                        .value
                        .pointer("/violation_info/violation_type")
                        .and_then(Value::as_str)
                        .unwrap_or("unnamed");
                    Action::Ignore {
                        reason: format!(
                            "account_update ACCOUNT_VIOLATION {violation} of WABA {waba_id}"
                        ),
                    }
                }
                other => Action::Ignore {
                    reason: format!("account_update {other}"),
                },
            }
        }
        "phone_number_name_update" => {
            let update: NameUpdate =
                serde_json::from_value(change.value.clone()).unwrap_or_default();
            let decision = update
                .decision
                .filter(|d| matches!(d.as_str(), "APPROVED" | "DEFERRED" | "REJECTED"));
            let name = update.requested_verified_name.unwrap_or_default();
            match (decision, update.display_phone_number) {
                (Some(decision), Some(display)) if !(decision == "APPROVED" && name.is_empty()) => {
                    Action::NameDecided {
                        waba_id: entry_id.to_string(),
                        display_phone_number: display,
                        decision: NameDecision {
                            decision,
                            requested_verified_name: name,
                            rejection_reason: update
                                .rejection_reason
                                .filter(|r| !r.is_empty() && r != "NONE"),
                        },
                    }
                }
                (decision, _) => Action::Ignore {
                    reason: format!(
                        "name update {}",
                        decision
                            .as_deref()
                            .unwrap_or("without a known decision or number")
                    ),
                },
            }
        }
        "phone_number_quality_update" => {
            let update: QualityUpdate =
                serde_json::from_value(change.value.clone()).unwrap_or_default();
            let event = update.event.unwrap_or_default();
            let Some(display) = update.display_phone_number else {
                return Action::Ignore {
                    reason: format!("quality update {event} without display_phone_number"),
                };
            };
            // Meta replaces `current_limit` with `max_daily_conversations_per_business`.
            let messaging_limit = update
                .max_daily_conversations_per_business
                .or(update.current_limit)
                .as_deref()
                .and_then(meta_label)
                .filter(|limit| limit.starts_with("TIER_"));
            let throughput = (event == "THROUGHPUT_UPGRADE").then(|| "HIGH".to_string());
            if messaging_limit.is_none() && throughput.is_none() {
                return Action::Ignore {
                    reason: format!("quality update {event} without a limit"),
                };
            }
            Action::Limit {
                waba_id: entry_id.to_string(),
                display_phone_number: display,
                messaging_limit,
                throughput,
            }
        }
        other => Action::Ignore {
            reason: format!("field {other}"),
        },
    }
}

/// `restriction_info: [{restriction_type, expiration}]` (`expiration` in Unix seconds); an
/// entry without a type is skipped. `None` when the list itself is not there.
fn restrictions_of(value: &Value) -> Option<Vec<Restriction>> {
    let list = value.get("restriction_info")?.as_array()?;
    Some(
        list.iter()
            .filter_map(|item| {
                let kind = text_of(item.get("restriction_type"))?;
                let expires_at = match item.get("expiration") {
                    Some(Value::Number(n)) => n.as_i64(),
                    Some(Value::String(s)) => s.parse().ok(),
                    _ => None,
                }
                .and_then(|seconds| chrono::DateTime::from_timestamp(seconds, 0));
                Some(Restriction { kind, expires_at })
            })
            .collect(),
    )
}

fn digits(text: &str) -> String {
    text.chars().filter(char::is_ascii_digit).collect()
}

// ---- Handling --------------------------------------------------------------------------------

#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
}

/// A WABA's numbers as read while the delivery waited on the app secret, before its signature
/// was checked: used, once, by the delivery's first change, and only once the signature holds.
#[derive(Debug)]
pub struct ReadAhead {
    waba_id: String,
    numbers: Vec<Number>,
}

/// The WABA whose numbers the first change of a delivery's raw `body` reads, when one does.
pub fn waba_read_first(body: &[u8]) -> Option<String> {
    let body = serde_json::from_slice::<Value>(body).ok()?;
    Envelope::read(&body).entry.iter().find_map(|entry| {
        let change = entry.changes.first()?;
        action_of(&entry.id, change).waba_id().map(str::to_string)
    })
}

/// What a delivery changed, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Handled {
    pub status_changes: usize,
    pub names_set: usize,
    pub teardowns: usize,
    pub ignored: usize,
}

pub struct MetaWebhook<S, Q> {
    pub store: S,
    pub queue: Q,
    /// The app secret (signatures) and the verify token (the handshake), re-read when they
    /// may have changed.
    pub secrets: SecretCache,
}

impl<S, Q> MetaWebhook<S, Q>
where
    S: ProvisioningStore + LifecycleStore + EventLog + BanClock,
    Q: MessageQueue,
{
    /// Applies every change that could be read, each on its own; what could not be read is
    /// logged and counted as ignored. Only a store or queue failure stops it (Meta redelivers).
    pub async fn handle(&self, envelope: &Envelope) -> Result<Handled, HandleError> {
        self.handle_read_ahead(envelope, None).await
    }

    /// As [`MetaWebhook::handle`], the first change that reads `read_ahead`'s WABA taking its
    /// numbers from there.
    pub async fn handle_read_ahead(
        &self,
        envelope: &Envelope,
        mut read_ahead: Option<ReadAhead>,
    ) -> Result<Handled, HandleError> {
        let mut handled = Handled::default();
        for reason in &envelope.skipped {
            tracing::warn!(%reason, object = ?envelope.object, "Meta webhook part skipped");
            handled.ignored += 1;
        }
        for entry in &envelope.entry {
            for reason in &entry.skipped {
                tracing::warn!(%reason, entry_id = %entry.id, "Meta webhook change skipped");
                handled.ignored += 1;
            }
            for change in &entry.changes {
                let action = action_of(&entry.id, change);
                self.apply(action, entry.time, &mut handled, &mut read_ahead)
                    .await?;
            }
        }
        Ok(handled)
    }

    /// The numbers of the WABA the first change of `body` reads, when it names one (nothing
    /// applied: the body is not verified yet). A failed read is no read ahead: the change reads
    /// again when it applies.
    pub async fn read_ahead(&self, body: &[u8]) -> Option<ReadAhead> {
        let waba_id = waba_read_first(body)?;
        match self.store.numbers_of_waba(&waba_id).await {
            Ok(numbers) => Some(ReadAhead { waba_id, numbers }),
            Err(err) => {
                tracing::warn!(error = %crate::telemetry::ErrorChain(&err), "WABA's numbers not read ahead; read when applied");
                None
            }
        }
    }

    /// The WABA's numbers: `read_ahead`'s when they are of this WABA (taken: a later change reads
    /// what the earlier ones wrote), else read now.
    async fn numbers_of_waba(
        &self,
        waba_id: &str,
        read_ahead: &mut Option<ReadAhead>,
    ) -> Result<Vec<Number>, HandleError> {
        if let Some(ahead) = read_ahead.take()
            && ahead.waba_id == waba_id
        {
            return Ok(ahead.numbers);
        }
        Ok(self.store.numbers_of_waba(waba_id).await?)
    }

    async fn apply(
        &self,
        action: Action,
        time: Option<i64>,
        handled: &mut Handled,
        read_ahead: &mut Option<ReadAhead>,
    ) -> Result<(), HandleError> {
        match action {
            Action::Ignore { reason } => {
                tracing::info!(%reason, "Meta webhook change ignored");
                handled.ignored += 1;
            }
            Action::Ban { waba_id } => {
                self.apply_to_waba(&waba_id, Command::Ban, time, handled, read_ahead)
                    .await?;
            }
            Action::Reinstate { waba_id } => {
                self.apply_to_waba(&waba_id, Command::Reinstate, time, handled, read_ahead)
                    .await?;
            }
            Action::Restrict {
                waba_id,
                restrictions,
            } => {
                self.apply_to_waba(
                    &waba_id,
                    Command::Restrict(restrictions),
                    None,
                    handled,
                    read_ahead,
                )
                .await?;
            }
            Action::ScheduleBan { waba_id } => {
                tracing::warn!(waba_id = %waba_id, "Meta scheduled the WABA to be disabled");
                self.apply_to_waba(&waba_id, Command::ScheduleBan, None, handled, read_ahead)
                    .await?;
            }
            Action::Disconnect { waba_id } => {
                // Final: nothing comes after it, so no clock.
                let command = Command::Disconnect(DisconnectedBy::Meta);
                for number in self
                    .apply_to_waba(&waba_id, command, None, handled, read_ahead)
                    .await?
                {
                    if number.torn_down_at.is_some() {
                        continue;
                    }
                    // As the API's DELETE: teardown is idempotent and tolerates Meta refusing
                    // (a removed partner can no longer deregister); it still schedules the
                    // token secret's deletion. Sent again for a redelivery, in case a crash
                    // lost the first.
                    let message =
                        TeardownMessage::new(number.id.clone(), number.account_id.clone());
                    self.queue.send(&message).await?;
                    handled.teardowns += 1;
                }
            }
            Action::NameDecided {
                waba_id,
                display_phone_number,
                decision,
            } => {
                let command = Command::NameDecided(decision);
                let changed = self
                    .apply_to_phone(&waba_id, &display_phone_number, command, read_ahead)
                    .await?;
                handled.names_set += changed;
            }
            Action::Limit {
                waba_id,
                display_phone_number,
                messaging_limit,
                throughput,
            } => {
                let command = Command::LimitRead {
                    messaging_limit,
                    throughput,
                    announce_first: true,
                };
                let changed = self
                    .apply_to_phone(&waba_id, &display_phone_number, command, read_ahead)
                    .await?;
                handled.status_changes += changed;
            }
            Action::Mark {
                waba_id,
                marker,
                on,
            } => {
                let command = Command::MarkRestriction { marker, on };
                self.apply_to_waba(&waba_id, command, None, handled, read_ahead)
                    .await?;
            }
        }
        Ok(())
    }

    /// Applies `command` to the WABA's numbers whose display number is `display_phone_number`
    /// (digits compared); how many changed.
    async fn apply_to_phone(
        &self,
        waba_id: &str,
        display_phone_number: &str,
        command: Command,
        read_ahead: &mut Option<ReadAhead>,
    ) -> Result<usize, HandleError> {
        let wanted = digits(display_phone_number);
        let numbers = self.numbers_of_waba(waba_id, read_ahead).await?;
        if numbers.is_empty() {
            tracing::info!(waba_id = %waba_id, "Meta webhook for an unknown WABA; ignored");
        }
        let mut changed = 0;
        for number in numbers {
            let matches = !wanted.is_empty()
                && number.display_number.as_deref().map(digits) == Some(wanted.clone());
            if !matches {
                continue;
            }
            match lifecycle::apply(&self.store, &self.queue, &number, command.clone()).await? {
                Changed::Now(number) => {
                    tracing::info!(number_id = %number.id, command = command.name(), "Meta's phone change recorded");
                    changed += 1;
                }
                Changed::Already(_) => {}
                Changed::Refused(number, why) => {
                    tracing::info!(number_id = %number.id, %why, command = command.name(), "Meta webhook change does not apply to this number");
                }
            }
        }
        Ok(changed)
    }

    /// Applies `command` to every number of the WABA, through the lifecycle (which decides what
    /// it means for each). Returns the numbers where the command has taken effect, by this
    /// delivery or an earlier one.
    async fn apply_to_waba(
        &self,
        waba_id: &str,
        command: Command,
        ban_clock: Option<i64>,
        handled: &mut Handled,
        read_ahead: &mut Option<ReadAhead>,
    ) -> Result<Vec<Number>, HandleError> {
        let numbers = self.numbers_of_waba(waba_id, read_ahead).await?;
        if numbers.is_empty() {
            tracing::info!(waba_id = %waba_id, "Meta webhook for an unknown WABA; ignored");
            return Ok(Vec::new());
        }
        if let Some(time) = ban_clock
            && !self.store.advance_ban_clock(waba_id, time).await?
        {
            tracing::info!(waba_id = %waba_id, command = command.name(), "ban-state change older than one applied already; ignored");
            handled.ignored += 1;
            return Ok(Vec::new());
        }
        let mut applied = Vec::new();
        for number in &numbers {
            match lifecycle::apply(&self.store, &self.queue, number, command.clone()).await? {
                Changed::Now(number) => {
                    handled.status_changes += 1;
                    applied.push(number);
                }
                Changed::Already(number) => applied.push(number),
                Changed::Refused(number, why) => {
                    tracing::info!(number_id = %number.id, %why, command = command.name(), "Meta webhook change does not apply to this number");
                }
            }
        }
        Ok(applied)
    }
}

// ---- HTTP ------------------------------------------------------------------------------------

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

/// What the meta-webhook function serves: `GET`/`POST /webhooks/meta`.
pub fn served<S, Q>(handler: MetaWebhook<S, Q>) -> Routes
where
    S: ProvisioningStore + LifecycleStore + EventLog + BanClock + 'static,
    Q: MessageQueue + 'static,
{
    Routes::new()
        .get(PATH, verify::<S, Q>)
        .post(PATH, deliver::<S, Q>)
        .with_state(Arc::new(handler))
}

/// [`served`], finished: no API key (Meta signs its deliveries instead), and this route's own
/// error bodies for other paths and methods.
pub fn routes<S, Q>(handler: MetaWebhook<S, Q>) -> Router
where
    S: ProvisioningStore + LifecycleStore + EventLog + BanClock + 'static,
    Q: MessageQueue + 'static,
{
    served(handler)
        .into_router()
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "route not found") })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this method is not allowed on this path",
            )
        })
}

/// The app secrets could not be read (first use, Secrets Manager down): `503`, so Meta tries
/// again later rather than the delivery being judged forged.
fn secrets_unavailable(err: &crate::ports::VaultError) -> Response {
    tracing::error!(error = %crate::telemetry::ErrorChain(err), "Meta app secrets not read");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "temporarily unavailable",
    )
}

async fn verify<S, Q>(
    State(handler): State<Arc<MetaWebhook<S, Q>>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let given = params.get("hub.verify_token").map(String::as_bytes);
    let matches = |token: &Secret| {
        let expected = token.expose().as_bytes();
        !expected.is_empty() && given.is_some_and(|given| bool::from(given.ct_eq(expected)))
    };
    let secrets = match handler.secrets.current().await {
        Ok(secrets) => secrets,
        Err(err) => return secrets_unavailable(&err),
    };
    if secrets.webhook_verify_token.expose().is_empty() {
        tracing::warn!("webhookVerifyToken is empty: Meta's subscription handshake is refused");
    }
    let mut token_ok = matches(&secrets.webhook_verify_token);
    // The token may have been changed since it was read.
    if !token_ok && handler.secrets.refresh().await {
        token_ok = handler
            .secrets
            .current()
            .await
            .is_ok_and(|secrets| matches(&secrets.webhook_verify_token));
    }
    let mode_ok = params.get("hub.mode").map(String::as_str) == Some("subscribe");
    match params.get("hub.challenge") {
        Some(challenge) if token_ok && mode_ok => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            challenge.clone(),
        )
            .into_response(),
        _ => {
            tracing::warn!("Meta webhook verification refused");
            error(StatusCode::FORBIDDEN, "forbidden", "verification failed")
        }
    }
}

async fn deliver<S, Q>(
    State(handler): State<Arc<MetaWebhook<S, Q>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response
where
    S: ProvisioningStore + LifecycleStore + EventLog + BanClock,
    Q: MessageQueue,
{
    let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    // When the app secret is to be read (a cold start's first delivery, or every few minutes),
    // the WABA's numbers are read meanwhile rather than after it: one round trip less to wait
    // for. Nothing is applied before the signature checks; a warm delivery reads nothing ahead,
    // so a forged one costs no read.
    let (secrets, read_ahead) = if handler.secrets.reads_on_next_use() {
        futures::join!(handler.secrets.current(), handler.read_ahead(&body))
    } else {
        (handler.secrets.current().await, None)
    };
    let mut secrets = match secrets {
        Ok(secrets) => secrets,
        Err(err) => return secrets_unavailable(&err),
    };
    let mut valid = signature_valid(&secrets.app_secret, signature, &body);
    // The app secret may have been reset since it was read: read it again (spaced, so forged
    // deliveries cannot turn into a flood of reads) and check once more.
    if !valid
        && signature.is_some()
        && handler.secrets.refresh().await
        && let Ok(again) = handler.secrets.current().await
    {
        secrets = again;
        valid = signature_valid(&secrets.app_secret, signature, &body);
    }
    if !valid {
        if secrets.app_secret.is_placeholder() {
            tracing::error!(
                signed = signature.is_some(),
                "Meta webhook refused: the Meta app secret (MetaAppSecret) is a placeholder, so no signature verifies"
            );
        } else {
            tracing::warn!(
                signed = signature.is_some(),
                "Meta webhook with a bad signature refused"
            );
        }
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "invalid signature",
        );
    }
    // Any JSON is read, piece by piece; only a body that is not JSON at all is refused.
    let envelope = match serde_json::from_slice::<Value>(&body) {
        Ok(body) => Envelope::read(&body),
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "body is not JSON",
            );
        }
    };
    match handler.handle_read_ahead(&envelope, read_ahead).await {
        Ok(handled) => {
            tracing::info!(
                status_changes = handled.status_changes,
                names_set = handled.names_set,
                teardowns = handled.teardowns,
                ignored = handled.ignored,
                "Meta webhook handled"
            );
            (StatusCode::OK, axum::Json(json!({"received": true}))).into_response()
        }
        Err(err) => {
            tracing::error!(error = %crate::telemetry::ErrorChain(&err), "Meta webhook handling failed; Meta will redeliver");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_of_the_raw_body_verifies_and_others_do_not() {
        let secret = AppSecret::new("app-secret");
        let body = br#"{"object":"whatsapp_business_account","entry":[]}"#;
        let header = sign("app-secret", body);
        assert!(signature_valid(&secret, Some(&header), body));
        assert!(!signature_valid(&secret, None, body));
        assert!(!signature_valid(&secret, Some("sha256=00"), body));
        assert!(!signature_valid(&secret, Some("sha256=zz"), body));
        assert!(!signature_valid(&secret, Some(&header[7..]), body));
        assert!(!signature_valid(&secret, Some(&header), b"{}"));
        assert!(!signature_valid(
            &AppSecret::Issued(Secret::new("")),
            Some(&sign("", body)),
            body
        ));
    }

    #[test]
    fn a_delivery_signed_with_the_placeholder_app_secret_never_verifies() {
        let body = br#"{"object":"whatsapp_business_account","entry":[{"id":"1000","changes":[{"field":"account_update","value":{"event":"PARTNER_REMOVED"}}]}]}"#;
        // Whoever knows the template signs with its placeholder (or with nothing).
        for stored in ["change-me", "", " CHANGE-ME "] {
            let held = AppSecret::new(stored);
            assert!(
                !signature_valid(&held, Some(&sign(stored, body)), body),
                "{stored:?}"
            );
            assert!(!signature_valid(&held, Some(&sign("", body)), body));
        }
        let real = AppSecret::new("the-app-s-real-secret");
        assert!(signature_valid(
            &real,
            Some(&sign("the-app-s-real-secret", body)),
            body
        ));
        assert!(!signature_valid(
            &real,
            Some(&sign("change-me", body)),
            body
        ));
    }

    fn change(field: &str, value: Value) -> Change {
        Change {
            field: field.into(),
            value,
        }
    }

    #[test]
    fn account_updates_map_to_actions_preferring_waba_info() {
        let ban = change(
            "account_update",
            json!({"event":"DISABLED_UPDATE","ban_info":{"waba_ban_state":"DISABLE"}}),
        );
        assert_eq!(
            action_of("1", &ban),
            Action::Ban {
                waba_id: "1".into()
            }
        );
        let reinstate = change(
            "account_update",
            json!({"event":"DISABLED_UPDATE","ban_info":{"waba_ban_state":"REINSTATE"}}),
        );
        assert_eq!(
            action_of("1", &reinstate),
            Action::Reinstate {
                waba_id: "1".into()
            }
        );
        let uninstalled = change(
            "account_update",
            json!({"event":"PARTNER_APP_UNINSTALLED","waba_info":{"waba_id":"2"}}),
        );
        assert_eq!(
            action_of("1", &uninstalled),
            Action::Disconnect {
                waba_id: "2".into()
            }
        );
        let scheduled = change(
            "account_update",
            json!({"event":"DISABLED_UPDATE","ban_info":{"waba_ban_state":"SCHEDULE_FOR_DISABLE"}}),
        );
        assert_eq!(
            action_of("1", &scheduled),
            Action::ScheduleBan {
                waba_id: "1".into()
            }
        );
        assert!(matches!(
            action_of("1", &change("account_update", json!("nonsense"))),
            Action::Ignore { .. }
        ));
    }

    #[test]
    fn a_violation_is_recorded_with_its_type_and_changes_nothing() {
        let violation = change(
            "account_update",
            json!({"event":"ACCOUNT_VIOLATION","violation_info":{"violation_type":"SCAM"}}),
        );
        let Action::Ignore { reason } = action_of("1", &violation) else {
            panic!("a violation changes nothing");
        };
        assert!(
            reason.contains("SCAM") && reason.contains("WABA 1"),
            "{reason}"
        );
    }

    #[test]
    fn name_updates_carry_meta_s_decision_as_published() {
        let approved = change(
            "phone_number_name_update",
            json!({"display_phone_number":"+55 11 9000","decision":"APPROVED","requested_verified_name":"Acme Ltd","rejection_reason":"NONE"}),
        );
        assert_eq!(
            action_of("1", &approved),
            Action::NameDecided {
                waba_id: "1".into(),
                display_phone_number: "+55 11 9000".into(),
                decision: NameDecision {
                    decision: "APPROVED".into(),
                    requested_verified_name: "Acme Ltd".into(),
                    rejection_reason: None,
                },
            }
        );
        let rejected = change(
            "phone_number_name_update",
            json!({"display_phone_number":"15550783881","decision":"REJECTED","requested_verified_name":"Bank","rejection_reason":"NAME_NOT_ALLOWED"}),
        );
        let Action::NameDecided { decision, .. } = action_of("1", &rejected) else {
            panic!("a rejection is a decision");
        };
        assert_eq!(
            decision.rejection_reason.as_deref(),
            Some("NAME_NOT_ALLOWED")
        );
        let unknown = change(
            "phone_number_name_update",
            json!({"display_phone_number":"1","decision":"MAYBE","requested_verified_name":"X"}),
        );
        assert!(matches!(action_of("1", &unknown), Action::Ignore { .. }));
        assert_eq!(digits("+55 (11) 9000-1"), "551190001");
    }

    #[test]
    fn a_quality_update_prefers_max_daily_conversations_per_business_over_current_limit() {
        let update = change(
            "phone_number_quality_update",
            json!({"display_phone_number":"15550783881","event":"UPGRADE","old_limit":"TIER_250","current_limit":"TIER_1K","max_daily_conversations_per_business":"TIER_2K"}),
        );
        assert_eq!(
            action_of("1", &update),
            Action::Limit {
                waba_id: "1".into(),
                display_phone_number: "15550783881".into(),
                messaging_limit: Some("TIER_2K".into()),
                throughput: None,
            }
        );
        let old_style = change(
            "phone_number_quality_update",
            json!({"display_phone_number":"15550783881","event":"DOWNGRADE","current_limit":"TIER_250"}),
        );
        assert!(matches!(
            action_of("1", &old_style),
            Action::Limit { messaging_limit: Some(limit), .. } if limit == "TIER_250"
        ));
        let throughput = change(
            "phone_number_quality_update",
            json!({"display_phone_number":"15550783881","event":"THROUGHPUT_UPGRADE","current_limit":"TIER_UNLIMITED"}),
        );
        assert!(matches!(
            action_of("1", &throughput),
            Action::Limit { throughput: Some(level), .. } if level == "HIGH"
        ));
        let flagged = change(
            "phone_number_quality_update",
            json!({"display_phone_number":"15550783881","event":"FLAGGED"}),
        );
        assert!(matches!(action_of("1", &flagged), Action::Ignore { .. }));
    }

    #[test]
    fn an_offboarding_marks_the_waba_s_numbers_and_a_reconnection_lifts_it() {
        let offboarded = change(
            "account_update",
            json!({"event":"ACCOUNT_OFFBOARDED","waba_info":{"waba_id":"2"}}),
        );
        assert_eq!(
            action_of("1", &offboarded),
            Action::Mark {
                waba_id: "2".into(),
                marker: RestrictionMarker::AccountOffboarded,
                on: true
            }
        );
        let reconnected = change("account_update", json!({"event":"ACCOUNT_RECONNECTED"}));
        assert_eq!(
            action_of("1", &reconnected),
            Action::Mark {
                waba_id: "1".into(),
                marker: RestrictionMarker::AccountOffboarded,
                on: false
            }
        );
    }

    #[test]
    fn entry_ids_may_be_numbers() {
        let envelope: Envelope = serde_json::from_str(
            r#"{"object":"whatsapp_business_account","entry":[{"id":123,"changes":[]}]}"#,
        )
        .unwrap();
        assert_eq!(envelope.entry[0].id, "123");
    }
}

#[cfg(test)]
mod handling_tests {
    //! What Meta's changes do to our numbers, against the in-memory adapters.

    use super::*;
    use crate::adapters::memory::{MemoryQueue, MemoryStore};
    use crate::adapters::secrets::AppSecrets;
    use crate::domain::{AccountId, Status, time};
    use crate::ports::Queue;

    fn webhook() -> MetaWebhook<MemoryStore, MemoryQueue> {
        MetaWebhook {
            store: MemoryStore::default(),
            queue: MemoryQueue::default(),
            secrets: SecretCache::fixed(AppSecrets {
                app_secret: AppSecret::new("app-secret"),
                webhook_verify_token: Secret::new("verify"),
            }),
        }
    }

    fn number_of_waba(
        handler: &MetaWebhook<MemoryStore, MemoryQueue>,
        phone: &str,
        status: Status,
    ) -> Number {
        let mut number = Number::new_pending(
            AccountId::from("acc_1".to_string()),
            "1000".into(),
            phone.into(),
            time::now(),
        );
        number.status = status;
        number.provisioning_step = None;
        number.display_number = Some(format!("+55 11 {phone}"));
        handler.store.insert_number(number.clone());
        number
    }

    fn envelope(time: i64, value: Value) -> Envelope {
        serde_json::from_value(json!({
            "object": "whatsapp_business_account",
            "entry": [{"id": "1000", "time": time, "changes": [{"field": "account_update", "value": value}]}]
        }))
        .unwrap()
    }

    fn ban_state(state: &str) -> Value {
        json!({"event": "DISABLED_UPDATE", "ban_info": {"waba_ban_state": state}})
    }

    fn status_of(handler: &MetaWebhook<MemoryStore, MemoryQueue>, number: &Number) -> Status {
        handler
            .store
            .number(&number.account_id, &number.id)
            .unwrap()
            .status
    }

    fn event_types(handler: &MetaWebhook<MemoryStore, MemoryQueue>) -> Vec<String> {
        handler
            .queue
            .sent_to(Queue::Events)
            .iter()
            .map(|e| e["type"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    #[tokio::test]
    async fn a_ban_bans_the_waba_s_active_numbers_and_leaves_pending_ones() {
        let handler = webhook();
        let active = number_of_waba(&handler, "1", Status::Active);
        let pending = number_of_waba(&handler, "2", Status::Pending);

        let handled = handler
            .handle(&envelope(100, ban_state("DISABLE")))
            .await
            .unwrap();

        assert_eq!(handled.status_changes, 1);
        assert_eq!(status_of(&handler, &active), Status::Banned);
        assert_eq!(status_of(&handler, &pending), Status::Pending);
        assert_eq!(event_types(&handler), vec!["number.banned"]);
    }

    #[tokio::test]
    async fn a_redelivered_ban_changes_nothing_more() {
        let handler = webhook();
        number_of_waba(&handler, "1", Status::Active);
        handler
            .handle(&envelope(100, ban_state("DISABLE")))
            .await
            .unwrap();

        let handled = handler
            .handle(&envelope(100, ban_state("DISABLE")))
            .await
            .unwrap();

        assert_eq!(handled.status_changes, 0);
        assert_eq!(event_types(&handler), vec!["number.banned"]);
    }

    #[tokio::test]
    async fn a_ban_older_than_the_reinstatement_applied_is_ignored() {
        let handler = webhook();
        let number = number_of_waba(&handler, "1", Status::Banned);
        handler
            .handle(&envelope(200, ban_state("REINSTATE")))
            .await
            .unwrap();

        handler
            .handle(&envelope(100, ban_state("DISABLE")))
            .await
            .unwrap();

        assert_eq!(status_of(&handler, &number), Status::Active);
        assert_eq!(event_types(&handler), vec!["number.reinstated"]);
    }

    #[tokio::test]
    async fn a_removed_partner_disconnects_every_number_of_the_waba_and_tears_each_down() {
        let handler = webhook();
        let active = number_of_waba(&handler, "1", Status::Active);
        let banned = number_of_waba(&handler, "2", Status::Banned);
        let failed = number_of_waba(&handler, "3", Status::Failed);
        let removed = json!({"event": "PARTNER_REMOVED", "waba_info": {"waba_id": "1000"}});

        let handled = handler.handle(&envelope(100, removed)).await.unwrap();

        assert_eq!(handled.status_changes, 3);
        assert_eq!(handled.teardowns, 3);
        assert_eq!(status_of(&handler, &active), Status::Disconnected);
        assert_eq!(status_of(&handler, &banned), Status::Disconnected);
        assert_eq!(status_of(&handler, &failed), Status::Disconnected);
        assert_eq!(handler.queue.sent_to(Queue::Teardown).len(), 3);
    }

    #[tokio::test]
    async fn a_redelivered_removal_sends_the_teardown_again_but_not_the_event() {
        let handler = webhook();
        number_of_waba(&handler, "1", Status::Active);
        let removed = json!({"event": "PARTNER_REMOVED", "waba_info": {"waba_id": "1000"}});
        handler
            .handle(&envelope(100, removed.clone()))
            .await
            .unwrap();

        handler.handle(&envelope(100, removed)).await.unwrap();

        assert_eq!(handler.queue.sent_to(Queue::Teardown).len(), 2);
        assert_eq!(event_types(&handler), vec!["number.disconnected"]);
    }

    #[tokio::test]
    async fn an_approved_name_is_set_on_the_number_with_that_display_number_only() {
        let handler = webhook();
        let named = number_of_waba(&handler, "1", Status::Active);
        let other = number_of_waba(&handler, "2", Status::Active);
        let approved: Envelope = serde_json::from_value(json!({
            "object": "whatsapp_business_account",
            "entry": [{"id": "1000", "changes": [{"field": "phone_number_name_update", "value": {
                "display_phone_number": "55111", "decision": "APPROVED", "requested_verified_name": "Acme"
            }}]}]
        }))
        .unwrap();

        let handled = handler.handle(&approved).await.unwrap();

        assert_eq!(handled.names_set, 1);
        let name = |n: &Number| {
            handler
                .store
                .number(&n.account_id, &n.id)
                .unwrap()
                .display_name
        };
        assert_eq!(name(&named).as_deref(), Some("Acme"));
        assert_eq!(name(&other), None);
    }

    // ---- Reading each entry and change on its own ----

    fn delivery(value: Value) -> Envelope {
        Envelope::read(&value)
    }

    #[tokio::test]
    async fn a_good_change_beside_bad_ones_is_applied_and_the_bad_ones_are_skipped() {
        let handler = webhook();
        let number = number_of_waba(&handler, "1", Status::Active);
        let mixed = delivery(json!({
            "object": "whatsapp_business_account",
            "entry": [
                "not an entry",
                {"time": 100, "changes": []},
                {"id": "1000", "time": 100, "changes": [
                    {"value": {"event": "DISABLED_UPDATE"}},
                    42,
                    {"field": "account_update", "value": "nonsense"},
                    {"field": "account_update", "value": {"event": "SOMETHING_NEW"}},
                    {"field": "messages", "value": {}},
                    {"field": "account_update", "value": ban_state("DISABLE")}
                ]}
            ]
        }));

        let handled = handler.handle(&mixed).await.unwrap();

        assert_eq!(status_of(&handler, &number), Status::Banned);
        assert_eq!(handled.status_changes, 1);
        assert_eq!(handled.ignored, 7);
        assert_eq!(event_types(&handler), vec!["number.banned"]);
    }

    #[tokio::test]
    async fn field_and_object_on_the_entry_are_read_as_meta_s_examples_place_them() {
        let handler = webhook();
        let number = number_of_waba(&handler, "1", Status::Active);
        let on_entry = delivery(json!({"entry": [{
            "id": 1000, "time": 100, "object": "whatsapp_business_account",
            "field": "account_update", "changes": [{"value": ban_state("DISABLE")}]
        }]}));

        handler.handle(&on_entry).await.unwrap();

        assert_eq!(status_of(&handler, &number), Status::Banned);
    }

    #[tokio::test]
    async fn an_entry_that_is_itself_the_change_is_read() {
        let handler = webhook();
        let number = number_of_waba(&handler, "1", Status::Active);
        let flat = delivery(json!({"entry": [{
            "id": "1000", "time": 100, "field": "account_update", "value": ban_state("DISABLE")
        }]}));

        handler.handle(&flat).await.unwrap();

        assert_eq!(status_of(&handler, &number), Status::Banned);
    }

    #[tokio::test]
    async fn entries_of_another_object_are_skipped() {
        let handler = webhook();
        let number = number_of_waba(&handler, "1", Status::Active);
        let other = delivery(json!({"object": "page", "entry": [{
            "id": "1000", "time": 100, "changes": [{"field": "account_update", "value": ban_state("DISABLE")}]
        }]}));

        let handled = handler.handle(&other).await.unwrap();

        assert_eq!(handled.ignored, 1);
        assert_eq!(status_of(&handler, &number), Status::Active);
    }

    #[tokio::test]
    async fn a_partner_event_names_the_waba_in_waba_info_never_in_the_entry_id() {
        let handler = webhook();
        let number = number_of_waba(&handler, "1", Status::Active);
        // entry.id is the partner's business id; without waba_info nothing is known.
        let without = json!({"event": "PARTNER_APP_UNINSTALLED"});
        handler.handle(&envelope(100, without)).await.unwrap();
        assert_eq!(status_of(&handler, &number), Status::Active);

        let partner_entry = delivery(json!({"object": "whatsapp_business_account", "entry": [{
            "id": "777", "time": 100, "changes": [{"field": "account_update", "value": {
                "event": "PARTNER_APP_UNINSTALLED", "waba_info": {"waba_id": 1000, "owner_business_id": "9"}
            }}]
        }]}));
        handler.handle(&partner_entry).await.unwrap();
        assert_eq!(status_of(&handler, &number), Status::Disconnected);
    }

    #[tokio::test]
    async fn a_partner_added_changes_nothing() {
        let handler = webhook();
        let number = number_of_waba(&handler, "1", Status::Active);
        let added = json!({"event": "PARTNER_ADDED", "waba_info": {"waba_id": "1000", "owner_business_id": "9"}});

        let handled = handler.handle(&envelope(100, added)).await.unwrap();

        assert_eq!(handled.ignored, 1);
        assert_eq!(status_of(&handler, &number), Status::Active);
    }

    // ---- Over HTTP ----

    async fn post(
        handler: MetaWebhook<MemoryStore, MemoryQueue>,
        body: &str,
        signature: Option<String>,
    ) -> StatusCode {
        use tower::ServiceExt;
        let mut request =
            axum::http::Request::post(PATH).header("content-type", "application/json");
        if let Some(signature) = signature {
            request = request.header(SIGNATURE_HEADER, signature);
        }
        let request = request
            .body(axum::body::Body::from(body.to_string()))
            .unwrap();
        routes(handler).oneshot(request).await.unwrap().status()
    }

    fn shared(
        handler: &MetaWebhook<MemoryStore, MemoryQueue>,
    ) -> MetaWebhook<MemoryStore, MemoryQueue> {
        MetaWebhook {
            store: handler.store.clone(),
            queue: handler.queue.clone(),
            secrets: SecretCache::fixed(AppSecrets {
                app_secret: AppSecret::new("app-secret"),
                webhook_verify_token: Secret::new("verify"),
            }),
        }
    }

    #[tokio::test]
    async fn every_signed_json_delivery_is_200_however_odd() {
        let handler = webhook();
        let number = number_of_waba(&handler, "1", Status::Active);
        for body in [
            "{}",
            "[]",
            "null",
            r#"{"entry": "x"}"#,
            r#"{"object": "whatsapp_business_account", "entry": [{"id": "1000", "changes": [{"value": {}}]}]}"#,
        ] {
            let signature = sign("app-secret", body.as_bytes());
            assert_eq!(
                post(shared(&handler), body, Some(signature)).await,
                StatusCode::OK,
                "{body}"
            );
        }
        assert_eq!(status_of(&handler, &number), Status::Active);
        assert!(handler.queue.sent_to(Queue::Events).is_empty());
    }

    #[tokio::test]
    async fn a_bad_signature_is_401_before_anything_is_read() {
        let handler = webhook();
        let number = number_of_waba(&handler, "1", Status::Active);
        let body =
            json!({"object": "whatsapp_business_account", "entry": [{"id": "1000", "time": 100,
            "changes": [{"field": "account_update", "value": ban_state("DISABLE")}]}]})
            .to_string();

        let wrong = sign("another-secret", body.as_bytes());
        assert_eq!(
            post(shared(&handler), &body, Some(wrong)).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            post(shared(&handler), "not json", None).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(status_of(&handler, &number), Status::Active);

        let right = sign("app-secret", body.as_bytes());
        assert_eq!(
            post(shared(&handler), &body, Some(right)).await,
            StatusCode::OK
        );
        assert_eq!(status_of(&handler, &number), Status::Banned);
    }

    #[tokio::test]
    async fn a_partner_removed_signed_with_the_placeholder_app_secret_is_401_and_changes_nothing() {
        // Given a function whose MetaAppSecret still holds the template's placeholder
        let handler = webhook();
        let number = number_of_waba(&handler, "1", Status::Active);
        let with_placeholder = |handler: &MetaWebhook<MemoryStore, MemoryQueue>| MetaWebhook {
            store: handler.store.clone(),
            queue: handler.queue.clone(),
            secrets: SecretCache::fixed(AppSecrets {
                app_secret: AppSecret::new("change-me"),
                webhook_verify_token: Secret::new("verify"),
            }),
        };
        let removed = json!({"object": "whatsapp_business_account", "entry": [{"id": "1000",
            "time": 100, "changes": [{"field": "account_update",
            "value": {"event": "PARTNER_REMOVED"}}]}]})
        .to_string();
        let before = handler.store.snapshot();

        // When anyone signs a removal with the placeholder (or with nothing)
        for key in ["change-me", ""] {
            let forged = sign(key, removed.as_bytes());
            assert_eq!(
                post(with_placeholder(&handler), &removed, Some(forged)).await,
                StatusCode::UNAUTHORIZED
            );
        }

        // Then it is refused as a bad signature is, and nothing changed or was sent
        assert!(handler.store.snapshot() == before);
        assert!(handler.queue.sent().is_empty());
        // While the real secret still verifies Meta's own delivery
        let signed = sign("app-secret", removed.as_bytes());
        assert_eq!(
            post(shared(&handler), &removed, Some(signed)).await,
            StatusCode::OK
        );
        assert_eq!(status_of(&handler, &number), Status::Disconnected);
    }

    // ---- Restrictions and scheduled bans ----

    #[tokio::test]
    async fn a_restriction_is_recorded_on_the_waba_s_numbers_and_announced_then_lifted() {
        let handler = webhook();
        let number = number_of_waba(&handler, "1", Status::Active);
        let restricted = json!({"event": "ACCOUNT_RESTRICTION", "restriction_info": [
            {"restriction_type": "RESTRICTED_BIZ_INITIATED_MESSAGING", "expiration": 1796000000},
            {"expiration": 1}
        ]});

        handler
            .handle(&envelope(100, restricted.clone()))
            .await
            .unwrap();
        handler.handle(&envelope(100, restricted)).await.unwrap();

        let stored = handler
            .store
            .number(&number.account_id, &number.id)
            .unwrap();
        assert_eq!(stored.restrictions.len(), 1);
        assert_eq!(
            stored.restrictions[0].kind,
            "RESTRICTED_BIZ_INITIATED_MESSAGING"
        );
        assert_eq!(
            stored.restrictions[0].expires_at,
            chrono::DateTime::from_timestamp(1796000000, 0)
        );
        assert_eq!(stored.status, Status::Active);

        let lifted = json!({"event": "ACCOUNT_RESTRICTION", "restriction_info": []});
        handler.handle(&envelope(200, lifted)).await.unwrap();
        assert_eq!(
            event_types(&handler),
            vec!["number.restricted", "number.restriction_lifted"]
        );
    }

    #[tokio::test]
    async fn a_scheduled_disable_is_announced_once_and_keeps_the_status() {
        let handler = webhook();
        let number = number_of_waba(&handler, "1", Status::Active);

        handler
            .handle(&envelope(100, ban_state("SCHEDULE_FOR_DISABLE")))
            .await
            .unwrap();
        handler
            .handle(&envelope(100, ban_state("SCHEDULE_FOR_DISABLE")))
            .await
            .unwrap();

        assert_eq!(status_of(&handler, &number), Status::Active);
        assert_eq!(event_types(&handler), vec!["number.ban_scheduled"]);
    }

    #[tokio::test]
    async fn an_account_deleted_disconnects_the_waba_s_numbers() {
        let handler = webhook();
        let number = number_of_waba(&handler, "1", Status::Active);

        handler
            .handle(&envelope(100, json!({"event": "ACCOUNT_DELETED"})))
            .await
            .unwrap();

        assert_eq!(status_of(&handler, &number), Status::Disconnected);
        assert_eq!(handler.queue.sent_to(Queue::Teardown).len(), 1);
    }

    #[tokio::test]
    async fn a_reset_app_secret_is_used_without_a_restart() {
        use std::sync::{Arc, Mutex};
        let stored = Arc::new(Mutex::new("new-secret".to_string()));
        let loader: crate::secret_cache::Loader = {
            let stored = stored.clone();
            Arc::new(move || {
                let stored = stored.clone();
                Box::pin(async move {
                    Ok(AppSecrets {
                        app_secret: AppSecret::new(stored.lock().unwrap().clone()),
                        webhook_verify_token: Secret::new("verify"),
                    })
                })
            })
        };
        let handler = webhook();
        let number = number_of_waba(&handler, "1", Status::Active);
        let rotated = MetaWebhook {
            store: handler.store.clone(),
            queue: handler.queue.clone(),
            secrets: SecretCache::with_ages(
                AppSecrets {
                    app_secret: AppSecret::new("change-me"),
                    webhook_verify_token: Secret::new("verify"),
                },
                loader,
                std::time::Duration::from_secs(300),
                std::time::Duration::ZERO,
            ),
        };
        let body =
            json!({"object": "whatsapp_business_account", "entry": [{"id": "1000", "time": 100,
            "changes": [{"field": "account_update", "value": ban_state("DISABLE")}]}]})
            .to_string();

        let signature = sign("new-secret", body.as_bytes());
        assert_eq!(post(rotated, &body, Some(signature)).await, StatusCode::OK);
        assert_eq!(status_of(&handler, &number), Status::Banned);
    }

    /// A handler sharing `handler`'s store and queue whose app secret is read (as a cold start
    /// does) only once `gate` gives a permit.
    fn cold(
        handler: &MetaWebhook<MemoryStore, MemoryQueue>,
        gate: Arc<tokio::sync::Semaphore>,
    ) -> MetaWebhook<MemoryStore, MemoryQueue> {
        let loader: crate::secret_cache::Loader = Arc::new(move || {
            let gate = gate.clone();
            Box::pin(async move {
                let _read = gate.acquire().await;
                Ok(AppSecrets {
                    app_secret: AppSecret::new("app-secret"),
                    webhook_verify_token: Secret::new("verify"),
                })
            })
        });
        MetaWebhook {
            store: handler.store.clone(),
            queue: handler.queue.clone(),
            secrets: SecretCache::lazy(loader),
        }
    }

    fn ban_body(time: i64) -> String {
        json!({"object": "whatsapp_business_account", "entry": [{"id": "1000", "time": time,
            "changes": [{"field": "account_update", "value": ban_state("DISABLE")}]}]})
        .to_string()
    }

    #[tokio::test]
    async fn a_first_delivery_reads_the_waba_s_numbers_while_the_app_secret_is_read() {
        // Given a function whose app secret is not read yet, and Secrets Manager slow to answer
        let handler = webhook();
        let number = number_of_waba(&handler, "1", Status::Active);
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let body = ban_body(100);
        let signature = sign("app-secret", body.as_bytes());
        let delivery = post(cold(&handler, gate.clone()), &body, Some(signature));
        let mut delivery = std::pin::pin!(delivery);

        // When the delivery waits on the secret
        assert!(futures::poll!(delivery.as_mut()).is_pending());

        // Then the WABA's numbers have been read, and nothing applied yet
        assert_eq!(handler.store.waba_reads(), 1);
        assert_eq!(status_of(&handler, &number), Status::Active);
        // And once the secret is there, the ban applies to what was read, read no second time
        gate.add_permits(1);
        assert_eq!(delivery.await, StatusCode::OK);
        assert_eq!(status_of(&handler, &number), Status::Banned);
        assert_eq!(handler.store.waba_reads(), 1);
    }

    #[tokio::test]
    async fn a_forged_first_delivery_changes_nothing_though_its_waba_was_read_ahead() {
        let handler = webhook();
        let number = number_of_waba(&handler, "1", Status::Active);
        let gate = Arc::new(tokio::sync::Semaphore::new(1));
        let body = ban_body(100);
        let before = handler.store.snapshot();

        let forged = sign("not-the-app-secret", body.as_bytes());
        let status = post(cold(&handler, gate), &body, Some(forged)).await;

        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(handler.store.snapshot(), before);
        assert_eq!(status_of(&handler, &number), Status::Active);
        assert!(handler.queue.sent_to(Queue::Events).is_empty());
    }

    #[tokio::test]
    async fn a_delivery_to_a_warm_function_reads_nothing_before_its_signature_checks() {
        // Given a function holding the app secret
        let handler = webhook();
        number_of_waba(&handler, "1", Status::Active);
        let body = ban_body(100);

        // When a forged delivery comes
        let forged = sign("not-the-app-secret", body.as_bytes());
        let status = post(shared(&handler), &body, Some(forged)).await;

        // Then it is refused without a read of the store
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(handler.store.waba_reads(), 0);
    }

    #[tokio::test]
    async fn only_the_first_change_takes_the_numbers_read_ahead() {
        // Given a delivery that bans the WABA and then lifts the ban, its numbers read ahead
        let handler = webhook();
        let number = number_of_waba(&handler, "1", Status::Active);
        let body = json!({"object": "whatsapp_business_account", "entry": [
            {"id": "1000", "time": 100, "changes": [{"field": "account_update", "value": ban_state("DISABLE")}]},
            {"id": "1000", "time": 200, "changes": [{"field": "account_update", "value": ban_state("REINSTATE")}]}
        ]})
        .to_string();
        let read_ahead = handler.read_ahead(body.as_bytes()).await;
        assert!(read_ahead.is_some());

        // When it is handled
        let envelope = Envelope::read(&serde_json::from_str(&body).unwrap());
        handler
            .handle_read_ahead(&envelope, read_ahead)
            .await
            .unwrap();

        // Then the lift saw the ban (it read the numbers again): the number is active again
        assert_eq!(status_of(&handler, &number), Status::Active);
        assert_eq!(
            event_types(&handler),
            ["number.banned", "number.reinstated"]
        );
        assert_eq!(handler.store.waba_reads(), 2);
    }

    fn phone_change(field: &str, value: Value) -> Envelope {
        serde_json::from_value(json!({
            "object": "whatsapp_business_account",
            "entry": [{"id": "1000", "time": 100, "changes": [{"field": field, "value": value}]}]
        }))
        .unwrap()
    }

    fn stored(handler: &MetaWebhook<MemoryStore, MemoryQueue>, number: &Number) -> Number {
        handler
            .store
            .number(&number.account_id, &number.id)
            .unwrap()
    }

    #[tokio::test]
    async fn a_quality_update_records_the_limit_of_that_phone_and_announces_it_once() {
        let handler = webhook();
        let number = number_of_waba(&handler, "1", Status::Active);
        let other = number_of_waba(&handler, "2", Status::Active);
        let upgrade = phone_change(
            "phone_number_quality_update",
            json!({"display_phone_number": "55111", "event": "UPGRADE",
                   "old_limit": "TIER_1K", "current_limit": "TIER_10K",
                   "max_daily_conversations_per_business": "TIER_10K"}),
        );

        handler.handle(&upgrade).await.unwrap();
        handler.handle(&upgrade).await.unwrap();

        assert_eq!(
            stored(&handler, &number).messaging_limit.as_deref(),
            Some("TIER_10K")
        );
        assert_eq!(stored(&handler, &other).messaging_limit, None);
        assert_eq!(event_types(&handler), vec!["number.quality_updated"]);
        let event = &handler.queue.sent_to(Queue::Events)[0];
        assert_eq!(event["data"]["messagingLimit"], "TIER_10K");
    }

    #[tokio::test]
    async fn a_rejected_name_is_announced_with_meta_s_reason_and_keeps_the_name() {
        let handler = webhook();
        let number = number_of_waba(&handler, "1", Status::Active);
        let rejected = phone_change(
            "phone_number_name_update",
            json!({"display_phone_number": "55111", "decision": "REJECTED",
                   "requested_verified_name": "Bank", "rejection_reason": "NAME_NOT_ALLOWED"}),
        );

        handler.handle(&rejected).await.unwrap();

        let after = stored(&handler, &number);
        assert_eq!(after.display_name, None);
        assert_eq!(after.name_status.as_deref(), Some("DECLINED"));
        let events = handler.queue.sent_to(Queue::Events);
        assert_eq!(events[0]["type"], "number.display_name_updated");
        assert_eq!(
            events[0]["data"]["nameDecision"]["rejectionReason"],
            "NAME_NOT_ALLOWED"
        );
    }

    #[tokio::test]
    async fn an_offboarded_waba_restricts_its_numbers_until_it_is_reconnected() {
        let handler = webhook();
        let number = number_of_waba(&handler, "1", Status::Active);

        handler
            .handle(&envelope(100, json!({"event": "ACCOUNT_OFFBOARDED"})))
            .await
            .unwrap();
        let kinds: Vec<String> = stored(&handler, &number)
            .restrictions
            .iter()
            .map(|r| r.kind.clone())
            .collect();
        assert_eq!(kinds, ["ACCOUNT_OFFBOARDED"]);
        assert_eq!(status_of(&handler, &number), Status::Active);

        handler
            .handle(&envelope(101, json!({"event": "ACCOUNT_RECONNECTED"})))
            .await
            .unwrap();
        assert!(stored(&handler, &number).restrictions.is_empty());
        assert_eq!(
            event_types(&handler),
            vec!["number.restricted", "number.restriction_lifted"]
        );
    }

    #[tokio::test]
    async fn an_uninstalled_app_disconnects_the_waba_named_in_waba_info_by_meta() {
        let handler = webhook();
        let number = number_of_waba(&handler, "1", Status::Active);
        let uninstalled: Envelope = serde_json::from_value(json!({
            "object": "whatsapp_business_account",
            "entry": [{"id": "777000", "time": 100, "changes": [{"field": "account_update", "value": {
                "event": "PARTNER_APP_UNINSTALLED",
                "waba_info": {"waba_id": "1000", "owner_business_id": "555", "partner_app_id": "42"}
            }}]}]
        }))
        .unwrap();

        handler.handle(&uninstalled).await.unwrap();

        let after = stored(&handler, &number);
        assert_eq!(after.status, Status::Disconnected);
        assert_eq!(
            after.disconnected_by,
            Some(crate::domain::lifecycle::DisconnectedBy::Meta)
        );
        assert_eq!(handler.queue.sent_to(Queue::Teardown).len(), 1);
    }
}
