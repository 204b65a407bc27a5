//! The narrow interfaces handlers are written against. Each adapter (DynamoDB, SQS, in-memory)
//! implements the ones it can serve; handlers are generic over them.

use std::future::Future;

use crate::domain::api_key::{KeyHash, KeyScope};
use crate::domain::lifecycle::Change;
use crate::domain::{AccountId, EventEnvelope, Number, NumberId, Status, Timestamp};

/// The cause of an infrastructure error, kept whole so logs can print its chain.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or answered with an error; the cause is for logs only.
    #[error("storage unavailable")]
    Unavailable(#[source] BoxError),
    #[error("stored item is not readable")]
    Corrupt(#[source] BoxError),
    #[error("not found")]
    NotFound,
}

impl StoreError {
    pub fn unavailable(cause: impl Into<BoxError>) -> StoreError {
        StoreError::Unavailable(cause.into())
    }

    pub fn corrupt(cause: impl Into<BoxError>) -> StoreError {
        StoreError::Corrupt(cause.into())
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    pub limit: u32,
    pub offset: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NumberPage {
    pub numbers: Vec<Number>,
    pub total: u64,
}

pub trait NumberReader: Send + Sync {
    fn get(
        &self,
        account: &AccountId,
        id: &NumberId,
    ) -> impl Future<Output = StoreResult<Option<Number>>> + Send;

    /// Newest first (`createdAt` descending, ties by id descending); `total` counts every number
    /// of the account matching `status`.
    fn list(
        &self,
        account: &AccountId,
        status: Option<Status>,
        page: Page,
    ) -> impl Future<Output = StoreResult<NumberPage>> + Send;
}

/// Where a page of a search starts: after `offset` matches, or after a cursor (the last number
/// of an earlier page).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PageStart {
    Offset(u32),
    After(NumberCursor),
}

/// The account's numbers matching every filter given, newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NumberSearch {
    pub status: Option<Status>,
    /// Digits of the display number, matched exactly.
    pub display_digits: Option<String>,
    pub waba_id: Option<String>,
    pub limit: u32,
    pub start: PageStart,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FoundNumbers {
    pub numbers: Vec<Number>,
    /// Every number of the account matching the filters.
    pub total: u64,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<NumberCursor>,
}

/// Finding numbers by status, display number or WABA, each through an index (never a Scan).
pub trait NumberFinder: Send + Sync {
    fn find(
        &self,
        account: &AccountId,
        search: &NumberSearch,
    ) -> impl Future<Output = StoreResult<FoundNumbers>> + Send;
}

pub use crate::domain::number_cursor::NumberCursor;

#[derive(Clone, Debug, PartialEq)]
pub enum CommitOutcome {
    /// Written; the number as it is now.
    Committed(Number),
    /// The stored number was not what the change expected (another writer came first); the
    /// number as it is now, to decide again.
    Conflict(Number),
    /// Not written: the change claims the phone and another number holds it (the phone was
    /// signed up again); the number as it is now.
    PhoneTaken(Number),
}

/// The one way a number changes after its creation: a [`Change`] decided by
/// `domain::lifecycle::decide`, written only if the stored number is still at the expected
/// status, step and version, with its counters, phone guard and event in the same write.
pub trait LifecycleStore: Send + Sync {
    fn commit(&self, change: &Change) -> impl Future<Output = StoreResult<CommitOutcome>> + Send;
}

/// The outbox side of events: what was written with a status change and not yet published.
pub trait EventLog: Send + Sync {
    fn unpublished_event(
        &self,
        event_id: &str,
    ) -> impl Future<Output = StoreResult<Option<EventEnvelope>>> + Send;

    fn mark_published(&self, event_id: &str) -> impl Future<Output = StoreResult<()>> + Send;

    /// Ids of up to `limit` events written before `before` and not published yet (their send
    /// failed after the commit, or the writer crashed in between): what the outbox relay
    /// publishes. History-only events are never among them.
    fn unpublished_before(
        &self,
        before: Timestamp,
        limit: u32,
    ) -> impl Future<Output = StoreResult<Vec<String>>> + Send;
}

/// Whose requests a rate-limit window counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuotaSubject<'a> {
    /// An account's API requests (all its keys together).
    Account(&'a AccountId),
    /// The hosted signup page's no-key routes, per signup link (the state's link id).
    SignupLink(&'a str),
    /// The hosted signup page's no-key routes, per source IP address.
    SourceIp(&'a str),
}

impl QuotaSubject<'_> {
    /// A name unique to the subject (an account id has no `#`).
    pub fn key(&self) -> String {
        match self {
            QuotaSubject::Account(account) => account.to_string(),
            QuotaSubject::SignupLink(link) => format!("PAGE#LINK#{link}"),
            QuotaSubject::SourceIp(ip) => format!("PAGE#IP#{ip}"),
        }
    }
}

/// Request counting for rate limits: fixed one-minute windows, so every function instance
/// shares one count.
pub trait RequestQuota: Send + Sync {
    /// Counts one request of `subject` in the window starting at `window_start` (unix
    /// seconds) if fewer than `limit` were counted there; `false` when the window is full.
    fn count_request(
        &self,
        subject: QuotaSubject<'_>,
        window_start: i64,
        limit: u32,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
}

/// A live key as authentication finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedKey {
    pub account: AccountId,
    pub scope: KeyScope,
    /// The hour it was last used in ([`crate::domain::api_key::use_hour`]), if recorded.
    pub last_used_hour: Option<i64>,
}

pub trait ApiKeyVerifier: Send + Sync {
    /// A live (not revoked) key with this hash.
    fn verify_key(
        &self,
        hash: &KeyHash,
    ) -> impl Future<Output = StoreResult<Option<VerifiedKey>>> + Send;

    /// Records that the key was used in the hour starting at `hour`, unless a later hour is
    /// recorded already. Called once per key per hour, not per request.
    fn record_key_use(
        &self,
        hash: &KeyHash,
        hour: i64,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// The account of a live key with this hash.
    fn account_for_key(
        &self,
        hash: &KeyHash,
    ) -> impl Future<Output = StoreResult<Option<AccountId>>> + Send {
        async move { Ok(self.verify_key(hash).await?.map(|key| key.account)) }
    }
}

// ---- Idempotency keys ------------------------------------------------------------------------

/// A response kept for replaying to a retry with the same `Idempotency-Key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub location: Option<String>,
    /// The answer, without any secret it showed (see `secret_of` and `answered_by_route`).
    pub body: Vec<u8>,
    /// The webhook endpoint whose secret the answer showed: taken out of `body` before it is
    /// kept, and read from the endpoint again on a replay, so no secret sits in the key's item.
    pub secret_of: Option<String>,
    /// The answer showed a signup link's `state`: `body` is kept without it, and a replay is
    /// answered by the route again from `body`, which signs the same state anew.
    pub answered_by_route: bool,
}

/// What an idempotency key holds: the fingerprint of the request that first used it, and that
/// request's response once it has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub fingerprint: String,
    /// `None` while the first request still runs (or died before answering: then its lease
    /// runs out and the next request with the key runs instead).
    pub response: Option<StoredResponse>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The key is this request's: run it, then `complete` or `release`.
    Claimed,
    /// The key is held by an earlier request.
    Held(IdempotencyRecord),
}

/// Idempotency keys, per account, kept for a day (TTL).
pub trait IdempotencyStore: Send + Sync {
    /// Takes `key` for a request with `fingerprint`, unless a live record holds it: one that has
    /// not expired, and is either answered or still within its lease (a request running). An
    /// unanswered record of the same fingerprint whose lease ran out is taken over.
    #[allow(clippy::too_many_arguments)]
    fn claim(
        &self,
        account: &AccountId,
        key: &str,
        fingerprint: &str,
        now: i64,
        lease_until: i64,
        expires_at: i64,
    ) -> impl Future<Output = StoreResult<Claim>> + Send;

    /// Keeps the response of the request that holds `key`.
    fn complete(
        &self,
        account: &AccountId,
        key: &str,
        fingerprint: &str,
        response: &StoredResponse,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Lets go of `key` without a response (the request failed on our side), so a retry runs.
    fn release(
        &self,
        account: &AccountId,
        key: &str,
        fingerprint: &str,
    ) -> impl Future<Output = StoreResult<()>> + Send;
}

pub use crate::domain::messages::{Message, Queue};

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("message could not be encoded")]
    Encode(#[source] serde_json::Error),
    #[error("no URL is configured for the {0:?} queue")]
    Unconfigured(Queue),
    #[error("queue unavailable")]
    Unavailable(#[source] BoxError),
    /// SQS refused a message's new visibility (`InvalidParameterValue`): beyond its 12 h.
    #[error("queue refused the message's visibility")]
    VisibilityRefused(#[source] BoxError),
}

pub trait MessageQueue: Send + Sync {
    /// Sends `message` to the queue it names.
    fn send<M: Message>(&self, message: &M) -> impl Future<Output = Result<(), QueueError>> + Send;
}

// ---- Provisioning -------------------------------------------------------------------------

use crate::domain::Health;
use crate::domain::meta::MetaError;
use crate::domain::secrets::{NumberSecrets, Secret};

#[derive(Clone, Debug)]
pub struct ExchangedToken {
    pub token: Secret,
    pub expires_in_seconds: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct PhoneProfile {
    pub display_phone_number: Option<String>,
    pub verified_name: Option<String>,
    /// As Meta writes it: GREEN/YELLOW/RED, or UNKNOWN/NA when unrated.
    pub quality_rating: Option<String>,
    /// Meta's phone `status`: CONNECTED, BANNED, RESTRICTED, FLAGGED, DISCONNECTED, ...
    pub status: Option<String>,
    /// `health_status`: whether the number can send, and Meta's errors per entity.
    pub health: Option<Health>,
    pub name_status: Option<String>,
    pub code_verification_status: Option<String>,
    pub messaging_limit_tier: Option<String>,
    /// `throughput.level`.
    pub throughput_level: Option<String>,
    /// Meta's `platform_type`: `CLOUD_API` once registered, `NOT_APPLICABLE` when not.
    pub platform_type: Option<String>,
}

impl PhoneProfile {
    /// Meta says the number is not registered for the Cloud API.
    pub fn is_unregistered(&self) -> bool {
        self.platform_type.as_deref() == Some("NOT_APPLICABLE")
    }

    /// Meta says the number is registered for the Cloud API.
    pub fn is_registered(&self) -> bool {
        self.platform_type.as_deref() == Some("CLOUD_API")
    }
}

impl PhoneProfile {
    /// The fields that tell whether Meta's view of the phone moved on since an earlier
    /// reading (register waiting on `2388001` compares them).
    pub fn fingerprint(&self) -> String {
        [
            self.status.as_deref(),
            self.name_status.as_deref(),
            self.verified_name.as_deref(),
            self.code_verification_status.as_deref(),
        ]
        .map(|field| field.unwrap_or("-"))
        .join("|")
    }
}

/// One phone of a WABA as `GET /{waba_id}/phone_numbers` lists it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListedPhone {
    pub phone_number_id: String,
    pub display_phone_number: Option<String>,
    pub verified_name: Option<String>,
}

/// A page of a WABA's phones; `after` is the cursor of the next page, `None` on the last.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PhonePage {
    pub phones: Vec<ListedPhone>,
    pub after: Option<String>,
}

/// What Graph `debug_token` says of a token.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenInfo {
    pub is_valid: bool,
    /// Unix seconds; `None` (Meta's `0`) when it does not expire.
    pub expires_at: Option<i64>,
    pub scopes: Vec<String>,
}

pub type MetaResult<T> = Result<T, MetaError>;

/// The Graph API calls the system makes (META.md), each with the customer's business token.
pub trait MetaGraph: Send + Sync {
    fn exchange_code(&self, code: &str) -> impl Future<Output = MetaResult<ExchangedToken>> + Send;
    fn subscribe_app(
        &self,
        token: &Secret,
        waba_id: &str,
    ) -> impl Future<Output = MetaResult<()>> + Send;
    fn unsubscribe_app(
        &self,
        token: &Secret,
        waba_id: &str,
    ) -> impl Future<Output = MetaResult<()>> + Send;
    fn register(
        &self,
        token: &Secret,
        phone_number_id: &str,
        pin: &Secret,
    ) -> impl Future<Output = MetaResult<()>> + Send;
    fn deregister(
        &self,
        token: &Secret,
        phone_number_id: &str,
    ) -> impl Future<Output = MetaResult<()>> + Send;
    fn set_pin(
        &self,
        token: &Secret,
        phone_number_id: &str,
        pin: &Secret,
    ) -> impl Future<Output = MetaResult<()>> + Send;
    fn phone_profile(
        &self,
        token: &Secret,
        phone_number_id: &str,
    ) -> impl Future<Output = MetaResult<PhoneProfile>> + Send;
    /// Graph `debug_token` for `token`, asked with the app's own token.
    fn debug_token(&self, token: &Secret) -> impl Future<Output = MetaResult<TokenInfo>> + Send;
    /// Whether the app secret is a placeholder (the operator has not put the app's secret in
    /// `MetaAppSecret`): `debug_token` and the code exchange cannot be asked then.
    fn app_secret_is_placeholder(&self) -> impl Future<Output = bool> + Send;
    /// One page of `GET /{waba_id}/phone_numbers`, after the cursor `after` of an earlier one.
    fn phone_numbers(
        &self,
        token: &Secret,
        waba_id: &str,
        after: Option<&str>,
    ) -> impl Future<Output = MetaResult<PhonePage>> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("secret store unavailable")]
    Unavailable(#[source] BoxError),
    #[error("stored secret is not readable")]
    Corrupt(#[source] BoxError),
}

/// One secret per number, holding its token and PIN; never in DynamoDB.
pub trait TokenVault: Send + Sync {
    fn load(
        &self,
        number: &NumberId,
    ) -> impl Future<Output = Result<Option<NumberSecrets>, VaultError>> + Send;
    /// Stores the secrets unless the number already has some; returns what is stored now.
    fn create(
        &self,
        number: &NumberId,
        secrets: &NumberSecrets,
    ) -> impl Future<Output = Result<NumberSecrets, VaultError>> + Send;
    /// Stores `secrets` (a reconnect's new token with the number's PIN) as a new version of the
    /// number's existing secret. Repeating it for the same reconnect writes nothing new.
    fn replace(
        &self,
        number: &NumberId,
        secrets: &NumberSecrets,
    ) -> impl Future<Output = Result<(), VaultError>> + Send;
    /// Deletion with a recovery window; a missing secret is already deleted.
    fn schedule_deletion(
        &self,
        number: &NumberId,
    ) -> impl Future<Output = Result<(), VaultError>> + Send;
}

pub use crate::domain::lifecycle::StepRecord;

#[derive(Clone, Debug, PartialEq)]
pub enum CreateOutcome {
    Created,
    /// The phone is held by a live number (of this account or another).
    PhoneTaken,
    /// The signup link was used already, or has expired.
    LinkUnusable,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhoneOwner {
    pub account_id: AccountId,
    pub number_id: NumberId,
}

pub trait ProvisioningStore: Send + Sync {
    /// Creates a `PENDING` number holding its phone (and consuming the signup link, if any) in
    /// one transaction; one whose phone is live elsewhere (`phone_elsewhere`) holds no guard.
    fn create_pending(
        &self,
        number: &Number,
        signup_link: Option<&str>,
    ) -> impl Future<Output = StoreResult<CreateOutcome>> + Send;
    /// Consumes a usable signup link of `account` for an existing number (a reconnect), as
    /// `create_pending` does for a new one; `false` (nothing written) when it is not usable.
    fn use_link(
        &self,
        account: &AccountId,
        link_id: &str,
        number: &NumberId,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    fn phone_owner(
        &self,
        phone_number_id: &str,
    ) -> impl Future<Output = StoreResult<Option<PhoneOwner>>> + Send;
    fn numbers_of_waba(
        &self,
        waba_id: &str,
    ) -> impl Future<Output = StoreResult<Vec<Number>>> + Send;
    /// Takes the right to send a never-started number's first message again until `until`:
    /// `true` for one caller among any number of concurrent repeats of its signup, and again
    /// once the lease has run out (a resend whose own send failed); `false` when the lease is
    /// held or the number has been written since its creation (it started).
    fn lease_restart(
        &self,
        account: &AccountId,
        number: &NumberId,
        now: Timestamp,
        until: Timestamp,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
}

/// A number as text a queue message can carry beside its body (the SQS message attribute
/// [`crate::domain::messages::NUMBER_SNAPSHOT_ATTRIBUTE`]), in the store's own layout so it
/// reads back as a read of the store would have answered when it was taken. A step that is
/// given one may act on it instead of reading the number, only through a write conditioned on
/// the snapshot's version (`lifecycle::apply_if_current`): a stale one is caught by the store.
pub trait NumberSnapshots: Send + Sync {
    fn number_snapshot(&self, number: &Number) -> Result<String, StoreError>;
    fn number_from_snapshot(&self, text: &str) -> Result<Number, StoreError>;
}

use crate::domain::lifecycle::waba::WabaChange;
use crate::domain::waba_signup::WabaSignup;

#[derive(Clone, Debug, PartialEq)]
pub enum WabaCommit {
    /// Written; the signup as it is now.
    Committed(WabaSignup),
    /// The stored signup was not at the version the change expected; as it is now.
    Conflict(WabaSignup),
}

/// WABA-only signups (`domain::waba_signup`): created by the callback, changed only through
/// `commit_waba_signup` (a change decided by `domain::lifecycle::waba::decide`).
pub trait WabaSignups: Send + Sync {
    /// Creates the signup, consuming the signup link if one came, in one write; `false`
    /// (nothing written) when the link was used already or has expired.
    fn create_waba_signup(
        &self,
        signup: &WabaSignup,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    fn waba_signup(
        &self,
        account: &AccountId,
        id: &str,
    ) -> impl Future<Output = StoreResult<Option<WabaSignup>>> + Send;
    /// Writes the change if the stored signup is still at `expected_version`, with the outcome
    /// on its link (`link_outcome`) in the same write.
    fn commit_waba_signup(
        &self,
        change: &WabaChange,
    ) -> impl Future<Output = StoreResult<WabaCommit>> + Send;
}

/// SQS's ceiling on a message's invisibility, 12 h, counted from the receive that delivered it.
/// A ChangeMessageVisibility reaching past it is rejected, not shortened, so a longer wait is a
/// chain of redeliveries, each one checking again and deferring what is left.
pub const MAX_REDELIVERY_DELAY_SECONDS: u32 = 12 * 60 * 60;

/// Seconds a redelivery delay keeps short of SQS's 12 h, for what the elapsed time misses.
/// That is the receive-to-invoke gap (a batch started after its queue's visibility timeout,
/// 180 s at most here, holds stale receipts anyway) and the request's way to SQS, bounded by
/// the function's timeout (30 s at most for SQS consumers): 300 s covers both with room.
pub const REDELIVERY_MARGIN_SECONDS: u32 = 300;

/// The longest delay SQS still accepts for a message `since_receive` after the receive that
/// delivered it, less [`REDELIVERY_MARGIN_SECONDS`]; 0 once that is spent.
pub fn longest_redelivery_delay(since_receive: std::time::Duration) -> u32 {
    let whole_seconds = since_receive
        .as_secs()
        .saturating_add(u64::from(since_receive.subsec_nanos() > 0));
    MAX_REDELIVERY_DELAY_SECONDS
        .saturating_sub(u32::try_from(whole_seconds).unwrap_or(u32::MAX))
        .saturating_sub(REDELIVERY_MARGIN_SECONDS)
}

/// The delay to ask SQS for a message `since_receive` after its receive when `wanted` seconds
/// are wanted: unchanged when SQS allows it, else the longest it allows (the message comes back
/// early and its handler, checking again, defers what is left).
pub fn redelivery_delay(wanted: u32, since_receive: std::time::Duration) -> u32 {
    wanted.min(longest_redelivery_delay(since_receive))
}

/// When a batch of messages arrived: the start of handling it, right after SQS received them.
/// Monotonic, so a wall-clock step cannot stretch a delay past SQS's limit.
#[derive(Clone, Copy, Debug)]
pub struct Received(std::time::Instant);

impl Received {
    pub fn now() -> Received {
        Received(std::time::Instant::now())
    }

    pub fn elapsed(&self) -> std::time::Duration {
        self.0.elapsed()
    }
}

/// A redelivery delay asked for a received message: the only way to delay one, so every delay
/// is cut to what SQS allows the message since its receive.
#[derive(Clone, Copy, Debug)]
pub struct RedeliveryDelay {
    wanted: u32,
    received: Received,
}

impl RedeliveryDelay {
    pub fn new(wanted: u32, received: Received) -> RedeliveryDelay {
        RedeliveryDelay { wanted, received }
    }

    /// The seconds the handler asked for.
    pub fn wanted(&self) -> u32 {
        self.wanted
    }

    pub fn received(&self) -> Received {
        self.received
    }

    /// The invisibility to ask SQS for at this instant ([`redelivery_delay`]).
    pub fn seconds_now(&self) -> u32 {
        redelivery_delay(self.wanted, self.received.elapsed())
    }
}

/// Stretches a message's invisibility, which is how a retry is delayed.
pub trait Redelivery: Send + Sync {
    /// Fails with [`QueueError::VisibilityRefused`] when SQS refuses the delay.
    fn delay_redelivery(
        &self,
        queue: Queue,
        receipt_handle: &str,
        delay: RedeliveryDelay,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
}

/// Single-use signup-link states.
pub trait SignupLinks: Send + Sync {
    /// Records a newly issued link (unused).
    fn save_link(&self, link: &SignupSession) -> impl Future<Output = StoreResult<()>> + Send;
}

pub use crate::domain::signup_session::{LinkCursor, Report, SignupSession};

/// A page of an account's signup links, newest first; `next` continues after the last one.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkPage {
    pub links: Vec<SignupSession>,
    pub next: Option<LinkCursor>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum RevokeOutcome {
    Revoked(SignupSession),
    /// The link created a number already; nothing changed.
    AlreadyUsed(SignupSession),
    NotFound,
}

/// What happened to each signup link: read by the account (API key) and by the hosted page
/// (the link's state), reported by the page, revoked by the account.
pub trait SignupSessions: Send + Sync {
    /// The link with this id, whoever owns it (callers check the account).
    fn link(
        &self,
        link_id: &str,
    ) -> impl Future<Output = StoreResult<Option<SignupSession>>> + Send;

    /// The account's links, newest first, `limit` of them after the cursor `after` (a `next`
    /// of an earlier page).
    fn links(
        &self,
        account: &AccountId,
        limit: u32,
        after: Option<&LinkCursor>,
    ) -> impl Future<Output = StoreResult<LinkPage>> + Send;

    /// Records the page's report on a link of `account` that is still usable at `at`;
    /// `false` (nothing written) when it is not.
    fn record_report(
        &self,
        account: &AccountId,
        link_id: &str,
        report: &Report,
        at: Timestamp,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// Revokes an unused link of `account` (repeating it changes nothing).
    fn revoke_link(
        &self,
        account: &AccountId,
        link_id: &str,
        at: Timestamp,
    ) -> impl Future<Output = StoreResult<RevokeOutcome>> + Send;
}

// ---- Meta's webhooks and the health sync --------------------------------------------------

/// Meta redelivers and reorders: a ban and its reinstatement may arrive the wrong way round.
/// The latest ban-state change applied to a WABA is remembered (by Meta's `entry.time`) and an
/// older one arriving later is ignored.
pub trait BanClock: Send + Sync {
    /// Advances the WABA's clock to `time` unless it is already later; `false` when the change is
    /// older than one applied before (equal times pass, so a redelivery re-applies harmlessly).
    fn advance_ban_clock(
        &self,
        waba_id: &str,
        time: i64,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
}

/// Every account, for jobs that cover all of them (the health sync), read without a Scan.
pub trait AccountDirectory: Send + Sync {
    fn account_ids(&self) -> impl Future<Output = StoreResult<Vec<AccountId>>> + Send;
}

// ---- Customer webhooks ---------------------------------------------------------------------

use crate::domain::history::EventPosition;
use crate::webhooks::WebhookEndpoint;
use crate::webhooks::log::{Attempt, DeliveryKey, DeliveryPage, DeliveryRecord, DeliveryStatus};

/// What `PATCH /api/webhooks/{id}` changes; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EndpointChange {
    pub url: Option<String>,
    /// `Some(None)`: every event type.
    pub events: Option<Option<Vec<crate::domain::EventType>>>,
    /// Enabling also forgets the failures that disabled it.
    pub enabled: Option<bool>,
}

pub trait WebhookEndpoints: Send + Sync {
    fn save_endpoint(
        &self,
        endpoint: &WebhookEndpoint,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Oldest first.
    fn endpoints(
        &self,
        account: &AccountId,
    ) -> impl Future<Output = StoreResult<Vec<WebhookEndpoint>>> + Send;
    fn endpoint(
        &self,
        account: &AccountId,
        id: &str,
    ) -> impl Future<Output = StoreResult<Option<WebhookEndpoint>>> + Send;
    /// `false` when the account has no such endpoint.
    fn delete_endpoint(
        &self,
        account: &AccountId,
        id: &str,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    /// The endpoint as changed; `None` when the account has no such endpoint.
    fn update_endpoint(
        &self,
        account: &AccountId,
        id: &str,
        change: &EndpointChange,
    ) -> impl Future<Output = StoreResult<Option<WebhookEndpoint>>> + Send;
    /// `secret` signs from now on; the one it replaces also signs until `previous_until`.
    fn rotate_secret(
        &self,
        account: &AccountId,
        id: &str,
        secret: &crate::domain::secrets::Secret,
        previous_until: Timestamp,
    ) -> impl Future<Output = StoreResult<Option<WebhookEndpoint>>> + Send;
    /// Removes from its endpoint every secret a rotation replaced whose grace period ended by
    /// `now` (at most `limit` of them; the rest at the next call): how many it removed.
    fn forget_previous_secrets(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> impl Future<Output = StoreResult<u32>> + Send;
    /// Remembers when the endpoint started failing, unless it is failing already.
    fn note_failing(
        &self,
        account: &AccountId,
        id: &str,
        since: Timestamp,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    fn note_recovered(
        &self,
        account: &AccountId,
        id: &str,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Disables the endpoint if it is still enabled and failing since `since`, writing `event`
    /// (`webhook.disabled`, the outbox) with it; `false` (nothing written) otherwise.
    fn disable_failing(
        &self,
        account: &AccountId,
        id: &str,
        since: Timestamp,
        event: &EventEnvelope,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
}

/// Every attempt of every delivery, per endpoint, newest event first.
pub trait DeliveryLog: Send + Sync {
    fn delivery(
        &self,
        endpoint_id: &str,
        position: &EventPosition,
    ) -> impl Future<Output = StoreResult<Option<DeliveryRecord>>> + Send;
    /// One write: appends `attempt` and sets the delivery's status and next retry, creating
    /// the record (with `body`) on its first attempt.
    fn record_attempt(
        &self,
        key: &DeliveryKey,
        body: &str,
        attempt: &Attempt,
        status: DeliveryStatus,
        next_retry_at: Option<Timestamp>,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// `limit` deliveries after `after` (a `next` of an earlier page), of one status or all. A
    /// filtered page may hold fewer than `limit` and still have a `next`.
    fn deliveries(
        &self,
        endpoint_id: &str,
        status: Option<DeliveryStatus>,
        limit: u32,
        after: Option<&EventPosition>,
    ) -> impl Future<Output = StoreResult<DeliveryPage>> + Send;
}

/// A page of a number's events, newest first.
#[derive(Clone, Debug, PartialEq)]
pub struct EventPage {
    pub events: Vec<EventEnvelope>,
    pub next: Option<EventPosition>,
}

/// The outbox events read back: a number's history and single events, scoped to the account.
pub trait EventHistory: Send + Sync {
    fn number_events(
        &self,
        account: &AccountId,
        number: &NumberId,
        limit: u32,
        after: Option<&EventPosition>,
    ) -> impl Future<Output = StoreResult<EventPage>> + Send;
    fn event(
        &self,
        account: &AccountId,
        event_id: &str,
    ) -> impl Future<Output = StoreResult<Option<EventEnvelope>>> + Send;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const LIMIT: u32 = MAX_REDELIVERY_DELAY_SECONDS;
    const MARGIN: u32 = REDELIVERY_MARGIN_SECONDS;
    const HOUR: u32 = 3600;

    fn seconds(seconds: u32) -> Duration {
        Duration::from_secs(u64::from(seconds))
    }

    #[test]
    fn sqs_counts_twelve_hours_from_the_receive() {
        assert_eq!(LIMIT, 43_200);
    }

    #[test]
    fn a_twenty_hour_wait_5_s_after_the_receive_ends_before_the_twelve_hours() {
        // Given a 20 h wait asked 5 s after the receive
        // When the rule cuts it
        let delay = redelivery_delay(20 * HOUR, seconds(5));

        // Then it is what is left of the 12 h, less the margin
        assert_eq!(delay, LIMIT - 5 - MARGIN);
        assert_eq!(delay, 42_895);
    }

    #[test]
    fn a_six_hour_wait_is_unchanged() {
        assert_eq!(redelivery_delay(6 * HOUR, seconds(5)), 6 * HOUR);
    }

    #[test]
    fn a_wait_of_exactly_what_is_left_is_kept_and_one_second_more_is_cut() {
        // Given 10 s since the receive: 43200 - 10 - margin left
        let left = LIMIT - 10 - MARGIN;

        // Then that much is kept, a second more is cut to it
        assert_eq!(redelivery_delay(left, seconds(10)), left);
        assert_eq!(redelivery_delay(left + 1, seconds(10)), left);
        assert_eq!(redelivery_delay(LIMIT, seconds(10)), left);
    }

    #[test]
    fn a_part_of_a_second_since_the_receive_counts_as_a_whole_one() {
        assert_eq!(redelivery_delay(LIMIT, Duration::ZERO), LIMIT - MARGIN);
        assert_eq!(
            redelivery_delay(LIMIT, Duration::from_millis(1)),
            LIMIT - 1 - MARGIN
        );
        assert_eq!(
            redelivery_delay(LIMIT, Duration::from_millis(5_001)),
            LIMIT - 6 - MARGIN
        );
    }

    #[test]
    fn no_delay_is_left_once_the_twelve_hours_less_the_margin_are_spent() {
        let spent = seconds(LIMIT - MARGIN);

        assert_eq!(redelivery_delay(HOUR, spent - seconds(1)), 1);
        assert_eq!(redelivery_delay(HOUR, spent), 0);
        assert_eq!(redelivery_delay(HOUR, seconds(LIMIT) * 2), 0);
        assert_eq!(redelivery_delay(HOUR, Duration::MAX), 0);
    }

    #[test]
    fn no_wait_stays_no_wait() {
        assert_eq!(redelivery_delay(0, seconds(5)), 0);
    }

    #[test]
    fn a_delay_asked_for_a_batch_is_cut_by_the_time_since_it_arrived() {
        // Given a batch that has just arrived
        let received = Received::now();

        // When its handler asks for 20 h, and for 6 h
        let long = RedeliveryDelay::new(20 * HOUR, received);
        let short = RedeliveryDelay::new(6 * HOUR, received);

        // Then the long one ends before 12 h from the receive, the short one is kept
        assert!(long.seconds_now() <= LIMIT - MARGIN);
        assert!(long.seconds_now() >= LIMIT - 60 - MARGIN);
        assert_eq!(long.wanted(), 20 * HOUR);
        assert_eq!(short.seconds_now(), 6 * HOUR);
    }
}
