//! The provisioning chain: one handler per step, each idempotent and safe to crash anywhere.
//!
//! A step loads the number; stops if it is no longer `PENDING`; acknowledges a step already
//! done (re-sending the next message, which a crash may have lost); calls Meta; records the
//! step done with a condition on the step it expects; sends the next message.

mod reconnect;
mod teardown;
#[cfg(test)]
mod tests;
mod waba_only;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use rand::Rng;
use tracing::Instrument;

use crate::domain::lifecycle::{self as lifecycle_rules, Command, Readiness, Refusal, StepRecord};
use crate::domain::messages::{self, ExchangeBody, StepMessage, TeardownMessage, WithSnapshot};
use crate::domain::meta::{ErrorKind, MetaError, Retry};
use crate::domain::number::meta_label;
use crate::domain::secrets::{NumberSecrets, Secret, generate_pin};
use crate::domain::{FailureReason, Number, QualityRating, Status, Step, time};
use crate::lifecycle::{self, Changed, LifecycleError};
use crate::ports::{
    EventLog, LifecycleStore, MessageQueue, MetaGraph, NumberReader, NumberSnapshots, PhoneProfile,
    ProvisioningStore, Queue, QueueError, Redelivery, StoreError, TokenVault, VaultError,
    WabaSignups,
};
use crate::sqs_batch::{Delivery, Outcome, process_batch};

/// How long retries wait. Production values by default; tests shorten them.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub base_seconds: u32,
    pub slow_seconds: u32,
    pub max_seconds: u32,
    /// How long a FAILED number keeps its token for a customer's retry.
    pub failed_token_retention_days: u32,
    /// How long after its signup a number waiting on Meta (2388001, the register budget) stays
    /// `PENDING` before it fails with Meta's last answer.
    pub max_pending_seconds: u32,
    /// How long after a number ended its teardown waits before calling Meta: longer than a
    /// step function's timeout (template.yaml: 10 s), so a step that read the number just
    /// before it ended has made its Meta call by then (else a PIN could be set, or a phone
    /// registered, after the teardown deregistered it: the chaos run found one).
    pub step_settle_seconds: u32,
    /// The shortest and the longest wait of a step on Meta's rate limit
    /// ([`RetryPolicy::rate_limit_delay`]).
    pub rate_limit_seconds: u32,
    pub rate_limit_max_seconds: u32,
}

/// The default of [`RetryPolicy::step_settle_seconds`].
pub const DEFAULT_STEP_SETTLE_SECONDS: u32 = 15;

/// The default bound of a number's wait for Meta (template parameter `MaxPendingDays`).
/// A wait on `2388001` that long, at the slow retries' nominal pace, ends at the register
/// queue's 46th receive of 50 (a rate-limit wait, near the 24th); beyond 8 days its dead-letter
/// queue ends the wait first (failing the number with its last reason, as the bound would).
pub const DEFAULT_MAX_PENDING_DAYS: u32 = 7;

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base_seconds: 2,
            slow_seconds: 600,
            max_seconds: crate::ports::MAX_REDELIVERY_DELAY_SECONDS,
            failed_token_retention_days: 7,
            max_pending_seconds: DEFAULT_MAX_PENDING_DAYS * 24 * 3600,
            step_settle_seconds: DEFAULT_STEP_SETTLE_SECONDS,
            rate_limit_seconds: 120,
            rate_limit_max_seconds: crate::ports::MAX_REDELIVERY_DELAY_SECONDS,
        }
    }
}

impl RetryPolicy {
    /// When a number still waiting on Meta fails: `max_pending_seconds` after its signup.
    pub fn pending_until(&self, number: &Number) -> time::Timestamp {
        number.created_at + chrono::Duration::seconds(i64::from(self.max_pending_seconds))
    }

    /// Whether the number has waited for Meta as long as it may.
    pub fn waited_too_long(&self, number: &Number, now: time::Timestamp) -> bool {
        now >= self.pending_until(number)
    }

    /// Seconds a step that began at `began` waits before asking Meta again after a rate limit:
    /// about as long as it has waited so far (each wait doubles the wait, and needs no state),
    /// jittered, from `rate_limit_seconds` to `rate_limit_max_seconds`, never past the number's
    /// bound.
    pub fn rate_limit_delay(
        &self,
        began: time::Timestamp,
        number: &Number,
        now: time::Timestamp,
    ) -> u32 {
        let nominal = self.nominal_rate_limit_delay(now - began);
        let until_bound = seconds_until(self.pending_until(number), now, self.max_seconds);
        self.jittered(nominal).min(until_bound)
    }

    /// [`Self::rate_limit_delay`] before its jitter and the bound, after waiting `waited`.
    pub fn nominal_rate_limit_delay(&self, waited: chrono::Duration) -> u32 {
        let waited = u32::try_from(waited.num_seconds().max(0)).unwrap_or(u32::MAX);
        let longest = self.rate_limit_max_seconds.max(self.rate_limit_seconds);
        waited
            .clamp(self.rate_limit_seconds, longest)
            .min(self.max_seconds)
    }

    /// How long an exchange refused for our app secret waits before it exchanges its code
    /// again: long enough for the secret to be read again (`secret_cache::MIN_REFRESH`), and
    /// only while the code lives and its queue has a receive left (`None`: the number fails).
    pub fn client_secret_retry(
        &self,
        code_age: chrono::Duration,
        receive_count: u32,
        attempt_delay: u32,
    ) -> Option<u32> {
        let refresh = u32::try_from(crate::secret_cache::MIN_REFRESH.as_secs()).unwrap_or(5);
        let left = (CODE_LIFETIME - code_age).num_seconds();
        let left = u32::try_from(left).unwrap_or(0);
        let has_receive = receive_count < step_queue_max_receives(Step::ExchangeToken);
        (has_receive && left > refresh).then(|| attempt_delay.clamp(refresh, left))
    }
}

/// How long Meta's Embedded Signup code can be exchanged after Meta gives it out (about 30 s,
/// as the fake Meta keeps it too).
pub const CODE_LIFETIME: chrono::Duration = chrono::Duration::seconds(30);

/// How often SQS delivers a step's message before its queue dead-letters it: the
/// `maxReceiveCount` template.yaml gives the step's queue (a test holds the two equal). The
/// queues of the steps that wait on Meta hold days of waiting in redeliveries.
pub fn step_queue_max_receives(step: Step) -> u32 {
    match step {
        Step::ExchangeToken | Step::ActivateNumber => 5,
        Step::SubscribeWaba | Step::RegisterNumber | Step::ConfigurePin | Step::FetchProfile => 50,
    }
}

/// The receives a step's message gets for Meta's transient failures before the number fails:
/// its queue's, but 5 where the queue allows 50 for rate-limit waits (the register step's
/// transient retries always ran as long as its waits).
pub fn transient_receives(step: Step) -> u32 {
    match step {
        Step::RegisterNumber => step_queue_max_receives(step),
        _ => 5,
    }
}

/// Whether this delivery is the last of the transient retries its step gets, on a queue
/// that would deliver the message again.
pub(crate) fn runs_out_of_transient_retries(step: Step, delivery: &Delivery) -> bool {
    let retries = transient_receives(step);
    retries < step_queue_max_receives(step) && delivery.receive_count >= retries
}

/// Whether a step waits Meta's rate limits out in minutes, up to the number's bound: not the
/// exchange, whose code lives about 30 s (it retries as for a transient error), nor the
/// activation, which does not call Meta.
pub fn waits_out_rate_limits(step: Step) -> bool {
    !matches!(step, Step::ExchangeToken | Step::ActivateNumber)
}

impl RetryPolicy {
    /// Exponential for `Soon` (2 s, 4 s, 8 s ... up to 15 min), linear in tens of minutes for
    /// `Slowly` (2388001 clears in hours), each with ±50 % jitter so a burst spreads out.
    pub fn delay(&self, attempt: u32, retry: Retry) -> u32 {
        self.jittered(self.nominal_delay(attempt, retry))
    }

    /// `nominal` ±50 %, at most `max_seconds`.
    fn jittered(&self, nominal: u32) -> u32 {
        if nominal == 0 {
            return 0;
        }
        let jitter = rand::rng().random_range(nominal / 2..=nominal.saturating_add(nominal / 2));
        jitter.min(self.max_seconds)
    }

    /// [`Self::delay`] before its jitter.
    pub fn nominal_delay(&self, attempt: u32, retry: Retry) -> u32 {
        let nominal = match retry {
            Retry::Slowly => self.slow_seconds.saturating_mul(attempt.max(1)),
            _ => self
                .base_seconds
                .saturating_mul(1u32 << attempt.clamp(1, 9).saturating_sub(1)),
        };
        nominal.min(self.max_seconds).min(match retry {
            Retry::Slowly => self.max_seconds,
            _ => 900,
        })
    }
}

/// Deliveries of an exchange that wait for another copy's token before a spent code fails
/// the number.
const CODE_USED_WAITS: u32 = 4;
/// The failure code of a number signed up while its phone is live in another account, once the
/// signup's token has shown control of the phone.
pub const PHONE_NUMBER_IN_USE: &str = "phone_number_in_use";

#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
}

/// The number's secrets as read beside the number (`None`: not read ahead).
type TokenReadAhead = Option<Result<Option<NumberSecrets>, VaultError>>;

enum StepFailure {
    Meta(MetaError),
    Permanent(FailureReason),
    Infra(StepError),
}

impl<E: Into<StepError>> From<E> for StepFailure {
    fn from(err: E) -> Self {
        StepFailure::Infra(err.into())
    }
}

/// Everything the provisioning handlers (the steps, reconnects, WABA-only signups, teardown)
/// ask of the store: one name for the bound their impls share.
pub trait ProvisioningStores:
    NumberReader + LifecycleStore + EventLog + ProvisioningStore + WabaSignups + NumberSnapshots
{
}

impl<T> ProvisioningStores for T where
    T: NumberReader + LifecycleStore + EventLog + ProvisioningStore + WabaSignups + NumberSnapshots
{
}

pub struct Provisioner<S, Q, M, V> {
    pub store: S,
    pub queue: Q,
    pub meta: M,
    pub vault: V,
    pub retry: RetryPolicy,
}

impl<S, Q, M, V> Provisioner<S, Q, M, V>
where
    S: ProvisioningStores,
    Q: MessageQueue + Redelivery,
    M: MetaGraph,
    V: TokenVault,
{
    pub async fn handle_batch(&self, step: Step, event: SqsEvent) -> SqsBatchResponse {
        process_batch(event, Some(Queue::Step(step)), &self.queue, |d| {
            self.handle_step(step, d)
        })
        .await
    }

    pub async fn handle_step(&self, step: Step, delivery: Delivery) -> Outcome {
        let message: StepMessage = match messages::parse_step_body(&delivery.body) {
            Ok(ExchangeBody::Step(message)) => message,
            Ok(ExchangeBody::WabaSignup(message)) if step == Step::ExchangeToken => {
                return self.handle_waba_signup(&message, &delivery).await;
            }
            Ok(ExchangeBody::WabaSignup(_)) => {
                tracing::error!(message_id = %delivery.message_id, %step, "WABA signup on another step's queue");
                return Outcome::Unreadable;
            }
            Err(err) => {
                tracing::error!(error = %crate::telemetry::ErrorChain(&err), message_id = %delivery.message_id, %step, "unreadable step message");
                return Outcome::Unreadable;
            }
        };
        if message.step != step {
            tracing::error!(message_id = %delivery.message_id, %step, got = %message.step, "message for another step");
            return Outcome::Unreadable;
        }
        let span = tracing::info_span!(
            "step",
            number_id = %message.number_id,
            step = %step,
            attempt = delivery.receive_count,
            trace_id = %message.trace_id,
        );
        async {
            match self.run(step, &message, &delivery).await {
                Ok(outcome) => outcome,
                Err(err) => {
                    tracing::error!(error = %crate::telemetry::ErrorChain(&err), "step failed; will retry");
                    Outcome::RetryAfter(self.retry.delay(delivery.receive_count, Retry::Soon))
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn run(
        &self,
        step: Step,
        message: &StepMessage,
        delivery: &Delivery,
    ) -> Result<Outcome, StepError> {
        // The token is read beside the number, not after it: the two reads are independent
        // (both keyed by the message's number), and a step that calls Meta needs both.
        let (loaded, token) = futures::join!(
            self.load_for_step(step, message, delivery),
            self.read_token_ahead(step, message),
        );
        let (number, register_counted) = match loaded? {
            Some(loaded) => loaded,
            None => {
                // Every message is sent after its number's write: this one's number is gone.
                tracing::warn!("no such number; dropping the message");
                return Ok(Outcome::Done);
            }
        };
        if let Some(id) = &message.reconnect {
            return self
                .run_reconnect(step, id, number, message, delivery)
                .await;
        }
        match lifecycle_rules::readiness(&number, step) {
            Readiness::Stopped { status } => {
                // Activation or failure may have been written by a run that crashed before
                // publishing its event.
                lifecycle::finish_publishing(&self.store, &self.queue, &number).await?;
                tracing::info!(%status, "number is no longer pending; provisioning stops");
                return Ok(Outcome::Done);
            }
            Readiness::Done { resend } => {
                if let Some(next) = resend {
                    // Done before; the next message may have been lost in a crash.
                    self.send_step(&number, next, &message.trace_id).await?;
                }
                tracing::info!("step already done");
                return Ok(Outcome::Done);
            }
            Readiness::Early { at } => {
                tracing::warn!(%at, "step arrived before its turn; dropping");
                return Ok(Outcome::Done);
            }
            // Only a reconnect's readiness says this.
            Readiness::Superseded => return Ok(Outcome::Done),
            Readiness::Run => {}
        }
        // Every register request counts toward Meta's limit whatever its answer: it is
        // written before the request is sent, and none is sent beyond the budget.
        let (number, known) = if step == Step::RegisterNumber && !register_counted {
            let number = match self.before_register(&number, delivery).await? {
                Ok(number) => number,
                Err(outcome) => return Ok(outcome),
            };
            match self.registered_at_meta(&number).await? {
                (number, AtMeta::Registered) => {
                    tracing::info!(
                        "Meta shows the number registered by an earlier request; not registering again"
                    );
                    let record = StepRecord {
                        registered: true,
                        ..StepRecord::default()
                    };
                    (number, Some(Ok(Some(record))))
                }
                // Registering blind could repeat a request that took effect (and spend Meta's
                // budget): the read is retried as a Meta error of the step.
                (number, AtMeta::Unread(err)) => {
                    tracing::warn!(code = %err.code, "an earlier register may have taken effect and the phone could not be read; retrying the read");
                    (number, Some(Err(StepFailure::Meta(err))))
                }
                (number, AtMeta::NotRegistered) => match self.count_register_call(&number).await? {
                    Ok(number) => (number, None),
                    Err(outcome) => return Ok(outcome),
                },
            }
        } else {
            (number, None)
        };
        let performed = match known {
            Some(known) => known,
            None => self.perform(step, &number, message, delivery, token).await,
        };
        match performed {
            Ok(Some(record)) => {
                let done = Command::StepDone { step, record };
                match lifecycle::apply(&self.store, &self.queue, &number, done).await? {
                    Changed::Now(number) | Changed::Already(number) => {
                        if let Some(next) = number.provisioning_step {
                            self.send_step(&number, next, &message.trace_id).await?;
                        }
                        tracing::info!("step done");
                    }
                    Changed::Refused(_, why) => {
                        tracing::info!(%why, "step done at Meta, but the number moved on");
                    }
                }
                Ok(Outcome::Done)
            }
            Ok(None) => {
                tracing::info!("step done");
                Ok(Outcome::Done)
            }
            // Two copies of the first message (a repeated callback sent it again): the other
            // copy's run spent the code and is storing the token or has moved the number on.
            // The retry finds either; only when none of a few does was the token lost, and the
            // number fails as Meta says.
            Err(StepFailure::Meta(err))
                if step == Step::ExchangeToken
                    && err.is_code_used()
                    && delivery.receive_count < CODE_USED_WAITS =>
            {
                tracing::info!(
                    "the code was spent by another copy of this exchange; waiting for its token"
                );
                Ok(Outcome::RetryAfter(
                    self.retry.delay(delivery.receive_count, Retry::Soon),
                ))
            }
            Err(StepFailure::Meta(err))
                if err.kind == ErrorKind::RateLimited && waits_out_rate_limits(step) =>
            {
                self.wait_out_rate_limit(step, &number, &err, delivery)
                    .await
            }
            // Meta refuses the secret before it looks at the code: the exchange's retry reads
            // the secret again and exchanges the same code, while the code lives.
            Err(StepFailure::Meta(err))
                if step == Step::ExchangeToken && err.kind == ErrorKind::ClientSecret =>
            {
                let sent_at = delivery.sent_at.unwrap_or(number.created_at);
                let retry = self.retry.client_secret_retry(
                    time::now() - sent_at,
                    delivery.receive_count,
                    self.retry.delay(delivery.receive_count, Retry::Soon),
                );
                let Some(wait) = retry else {
                    tracing::error!(code = %err.code, "Meta refused the app secret while the code lived; the number fails");
                    self.fail(&number, err.failure_reason(step)).await?;
                    return Ok(Outcome::Done);
                };
                tracing::error!(code = %err.code, wait, "Meta refused the app secret; exchanging again once it is read again");
                let retried = Command::StepRetried {
                    step,
                    reason: err.failure_reason(step),
                    attempt: delivery.receive_count,
                };
                lifecycle::apply(&self.store, &self.queue, &number, retried).await?;
                Ok(Outcome::RetryAfter(wait))
            }
            Err(StepFailure::Meta(err)) if err.retry == Retry::Never => {
                tracing::warn!(code = %err.code, subcode = ?err.subcode, "Meta refused; the number fails");
                self.fail(&number, err.failure_reason(step)).await?;
                Ok(Outcome::Done)
            }
            Err(StepFailure::Meta(err))
                if err.retry == Retry::Slowly
                    && self.retry.waited_too_long(&number, time::now()) =>
            {
                tracing::warn!(code = %err.code, subcode = ?err.subcode, "waited for Meta as long as a number may; the number fails");
                self.fail(&number, err.failure_reason(step)).await?;
                Ok(Outcome::Done)
            }
            Err(StepFailure::Meta(err))
                if step == Step::RegisterNumber && err.kind == ErrorKind::DeregisterFirst =>
            {
                // 133000: a deregistration did not finish at Meta. Deregister (counted like a
                // register), then the retry registers again.
                tracing::warn!(code = %err.code, "Meta asks for a deregistration first");
                let number = match self.count_register_call(&number).await? {
                    Ok(number) => number,
                    Err(outcome) => return Ok(outcome),
                };
                if let Some(secrets) = self.vault.load(&number.id).await?
                    && let Err(deregister) = self
                        .meta
                        .deregister(&secrets.token, &number.phone_number_id)
                        .await
                {
                    tracing::warn!(code = %deregister.code, "deregistration before registering again failed");
                }
                let retried = Command::StepRetried {
                    step,
                    reason: err.failure_reason(step),
                    attempt: delivery.receive_count,
                };
                lifecycle::apply(&self.store, &self.queue, &number, retried).await?;
                Ok(Outcome::RetryAfter(
                    self.retry.delay(delivery.receive_count, Retry::Soon),
                ))
            }
            Err(StepFailure::Meta(err))
                if step == Step::RegisterNumber && err.kind == ErrorKind::DisplayNameNotReady =>
            {
                // 2388001: often the customer's to fix (edit the name, free the number from
                // another WhatsApp account). The phone is read now, so the next attempt
                // registers again only when Meta's view of it moved on.
                tracing::warn!(code = %err.code, subcode = ?err.subcode, "Meta has not processed the display name; waiting");
                let (number, phone) = self.read_phone(&number).await?;
                let waits = Command::RegisterWaits {
                    reason: err.failure_reason(step),
                    phone: phone.as_ref().map(PhoneProfile::fingerprint),
                    attempt: delivery.receive_count,
                };
                lifecycle::apply(&self.store, &self.queue, &number, waits).await?;
                Ok(Outcome::RetryAfter(
                    self.retry.delay(delivery.receive_count, Retry::Slowly),
                ))
            }
            // The step's queue holds more receives than its transient retries get (for rate-limit
            // waits): the number fails where the queue would have dead-lettered the message.
            Err(StepFailure::Meta(err)) if runs_out_of_transient_retries(step, delivery) => {
                tracing::warn!(code = %err.code, subcode = ?err.subcode, http_status = err.http_status, "Meta kept failing; the number fails");
                self.fail(&number, err.failure_reason(step)).await?;
                Ok(Outcome::Done)
            }
            Err(StepFailure::Meta(err)) => {
                tracing::warn!(code = %err.code, subcode = ?err.subcode, http_status = err.http_status, "Meta failed transiently; retrying");
                let retried = Command::StepRetried {
                    step,
                    reason: err.failure_reason(step),
                    attempt: delivery.receive_count,
                };
                lifecycle::apply(&self.store, &self.queue, &number, retried).await?;
                Ok(Outcome::RetryAfter(
                    self.retry.delay(delivery.receive_count, err.retry),
                ))
            }
            Err(StepFailure::Permanent(reason)) => {
                tracing::warn!(code = %reason.code, "step cannot succeed; the number fails");
                self.fail(&number, reason).await?;
                Ok(Outcome::Done)
            }
            Err(StepFailure::Infra(err)) => Err(err),
        }
    }

    /// Meta throttles the app, the WABA or a use case: the number waits (its `pendingReason`
    /// says until when) and the step asks again in minutes, failing the number at its bound.
    async fn wait_out_rate_limit(
        &self,
        step: Step,
        number: &Number,
        err: &MetaError,
        delivery: &Delivery,
    ) -> Result<Outcome, StepError> {
        let now = time::now();
        let until = self.retry.pending_until(number);
        let reason = err.rate_limit_reason(step, until);
        if now >= until {
            tracing::warn!(code = %err.code, "rate limited past the wait allowed; the number fails");
            self.fail(number, reason).await?;
            return Ok(Outcome::Done);
        }
        let retried = Command::StepRetried {
            step,
            reason,
            attempt: delivery.receive_count,
        };
        if let Changed::Refused(_, why) =
            lifecycle::apply(&self.store, &self.queue, number, retried).await?
        {
            tracing::info!(%why, "rate limit not recorded: the number moved on");
            return Ok(Outcome::Done);
        }
        // The step's message was sent when the step began: how long it has waited so far.
        let began = delivery.sent_at.unwrap_or(number.created_at);
        let wait = self.retry.rate_limit_delay(began, number, now);
        tracing::warn!(code = %err.code, wait, %until, "Meta's rate limit; waiting");
        Ok(Outcome::RetryAfter(wait))
    }

    /// Exchanges the signup's code for a long-lived token: `(token, when it expires)`. No code
    /// (it never reached the exchange) is a permanent failure of the exchange.
    async fn exchange_code(
        &self,
        code: Option<&Secret>,
    ) -> Result<(Secret, Option<time::Timestamp>), StepFailure> {
        let code = code.ok_or_else(|| {
            StepFailure::Permanent(FailureReason {
                step: Step::ExchangeToken.as_str().into(),
                code: "missing_code".into(),
                message: "the signup code never reached the exchange".into(),
                ..FailureReason::default()
            })
        })?;
        let exchanged = self
            .meta
            .exchange_code(code.expose())
            .await
            .map_err(StepFailure::Meta)?;
        let expires_at = exchanged
            .expires_in_seconds
            .map(|s| time::now() + chrono::Duration::seconds(s.min(i64::MAX as u64) as i64));
        Ok((exchanged.token, expires_at))
    }

    /// The signup's token must read the phone it names: what shows the caller controls it at
    /// Meta. Every new number is checked alike, so a refusal reads the same whether or not the
    /// phone is live in another account; only a caller who passes is told that it is.
    async fn check_control(&self, number: &Number, token: &Secret) -> Result<(), StepFailure> {
        self.meta
            .phone_profile(token, &number.phone_number_id)
            .await
            .map_err(StepFailure::Meta)?;
        if number.phone_elsewhere {
            tracing::warn!("the phone is live in another account; the number fails");
            return Err(StepFailure::Permanent(FailureReason {
                step: Step::ExchangeToken.as_str().into(),
                code: PHONE_NUMBER_IN_USE.into(),
                message: "this phone number is connected to another account".into(),
                ..FailureReason::default()
            }));
        }
        Ok(())
    }

    /// Calls Meta for `step`. `Some(record)` is what to record as the step done; `None` when the
    /// step changed the number itself (activation).
    async fn perform(
        &self,
        step: Step,
        number: &Number,
        message: &StepMessage,
        delivery: &Delivery,
        token: TokenReadAhead,
    ) -> Result<Option<StepRecord>, StepFailure> {
        let record = match step {
            Step::ExchangeToken => {
                // A first delivery with its code has nothing stored to find (the callback sent
                // it after writing the number), so it spares Secrets Manager a read; a retry, a
                // message without the code, or one a repeated callback sent again looks for the
                // token an earlier run stored.
                let first_run = delivery.receive_count <= 1
                    && message.code.is_some()
                    && !message.resent
                    && number.provisioning_error.is_none();
                let stored = if first_run {
                    None
                } else {
                    self.vault.load(&number.id).await?
                };
                let secrets = match stored {
                    // A retry after the exchange: the code is spent, the token is kept.
                    Some(secrets) => {
                        self.check_control(number, &secrets.token).await?;
                        secrets
                    }
                    None => {
                        let (token, token_expires_at) =
                            self.exchange_code(message.code.as_ref()).await?;
                        let secrets = NumberSecrets {
                            token,
                            pin: generate_pin(),
                            token_expires_at,
                            reconnect_id: None,
                        };
                        // The phone is read beside the token's store: both need only the token.
                        let (stored, control) = futures::join!(
                            self.vault.create(&number.id, &secrets),
                            self.check_control(number, &secrets.token),
                        );
                        control?;
                        stored?
                    }
                };
                StepRecord {
                    token_expires_at: secrets.token_expires_at,
                    ..StepRecord::default()
                }
            }
            Step::SubscribeWaba => {
                let secrets = self.stored_secrets(step, number, token).await?;
                self.meta
                    .subscribe_app(&secrets.token, &number.waba_id)
                    .await
                    .map_err(StepFailure::Meta)?;
                StepRecord {
                    subscribed: true,
                    ..StepRecord::default()
                }
            }
            Step::RegisterNumber => {
                let secrets = self.stored_secrets(step, number, token).await?;
                self.meta
                    .register(&secrets.token, &number.phone_number_id, &secrets.pin)
                    .await
                    .map_err(StepFailure::Meta)?;
                StepRecord {
                    registered: true,
                    ..StepRecord::default()
                }
            }
            Step::ConfigurePin => {
                let secrets = self.stored_secrets(step, number, token).await?;
                // The profile is read beside the PIN (`Step::runs_beside`) on the step's first
                // delivery only: a PIN retried after a failure reads none, so a failing PIN
                // costs Meta one unused read at most, and the profile step reads it then.
                let read_beside = delivery.receive_count <= 1;
                let (pin, profile) = futures::join!(
                    self.meta
                        .set_pin(&secrets.token, &number.phone_number_id, &secrets.pin),
                    async {
                        if read_beside {
                            Some(
                                self.meta
                                    .phone_profile(&secrets.token, &number.phone_number_id)
                                    .await,
                            )
                        } else {
                            None
                        }
                    },
                );
                pin.map_err(StepFailure::Meta)?;
                match profile {
                    Some(Ok(profile)) => StepRecord {
                        beside_done: true,
                        ..profile_record(profile)
                    },
                    // Meta refused the read for good (the token is no longer valid, the phone
                    // is not the app's): the profile step's read would be refused alike.
                    Some(Err(err)) if err.retry == Retry::Never => {
                        tracing::warn!(code = %err.code, subcode = ?err.subcode, "Meta refused the profile read beside the PIN; the number fails");
                        return Err(StepFailure::Permanent(
                            err.failure_reason(Step::FetchProfile),
                        ));
                    }
                    Some(Err(err)) => {
                        tracing::info!(code = %err.code, http_status = err.http_status, "the profile read beside the PIN failed; the profile step reads it");
                        StepRecord::default()
                    }
                    None => StepRecord::default(),
                }
            }
            Step::FetchProfile => {
                let secrets = self.stored_secrets(step, number, token).await?;
                let profile = self
                    .meta
                    .phone_profile(&secrets.token, &number.phone_number_id)
                    .await
                    .map_err(StepFailure::Meta)?;
                profile_record(profile)
            }
            Step::ActivateNumber => {
                let changed =
                    lifecycle::apply(&self.store, &self.queue, number, Command::Activate).await?;
                if let Changed::Refused(_, why) = changed {
                    tracing::info!(%why, "activation refused by the lifecycle");
                }
                return Ok(None);
            }
        };
        Ok(Some(record))
    }

    /// While register waits on `2388001`: the phone is read again (its `name_status` recorded
    /// on the number), and register is sent again only when the phone changed or the blind
    /// share of the budget has room (`lifecycle::register_again`). Otherwise the step waits
    /// again, slowly, and fails with Meta's text once the number has waited as long as it may.
    async fn before_register(
        &self,
        number: &Number,
        delivery: &Delivery,
    ) -> Result<Result<Number, Outcome>, StepError> {
        if number.register_waiting_on.is_none() {
            return Ok(Ok(number.clone()));
        }
        let (number, phone) = self.read_phone(number).await?;
        let now = time::now();
        let phone = phone.as_ref().map(PhoneProfile::fingerprint);
        if lifecycle_rules::register_again(&number, phone.as_deref(), now) {
            return Ok(Ok(number));
        }
        if self.retry.waited_too_long(&number, now) {
            let reason = number.provisioning_error.clone().unwrap_or(FailureReason {
                step: Step::RegisterNumber.as_str().into(),
                code: "display_name_not_ready".into(),
                message: "Meta did not accept the display name in time".into(),
                ..FailureReason::default()
            });
            tracing::warn!(code = %reason.code, "waited for Meta as long as a number may; the number fails");
            self.fail(&number, reason).await?;
            return Ok(Err(Outcome::Done));
        }
        tracing::info!(
            "the phone is as it was when Meta answered 2388001; waiting before registering again"
        );
        Ok(Err(Outcome::RetryAfter(
            self.retry.delay(delivery.receive_count, Retry::Slowly),
        )))
    }

    /// Whether an earlier register request of this number took effect at Meta though its answer
    /// never reached the number (a timeout, a crash before the step was recorded). Asked only
    /// when a register request was already counted and Meta did not refuse it (`2388001` is
    /// read by `before_register`): one read instead of a request that spends Meta's budget.
    async fn registered_at_meta(&self, number: &Number) -> Result<(Number, AtMeta), StepError> {
        if number.register_calls.is_empty() || number.register_waiting_on.is_some() {
            return Ok((number.clone(), AtMeta::NotRegistered));
        }
        let (number, phone) = self.try_read_phone(number).await?;
        let at_meta = match phone {
            Ok(Some(phone)) if phone.is_registered() => AtMeta::Registered,
            // No token: the register itself fails the number (`token_missing`).
            Ok(_) => AtMeta::NotRegistered,
            Err(err) => AtMeta::Unread(err),
        };
        Ok((number, at_meta))
    }

    /// Meta's view of the phone now, its `name_status` recorded on the number; `None` when
    /// Meta does not answer (logged: waiting goes on without it).
    async fn read_phone(
        &self,
        number: &Number,
    ) -> Result<(Number, Option<PhoneProfile>), StepError> {
        let (number, phone) = self.try_read_phone(number).await?;
        Ok((number, phone.ok().flatten()))
    }

    /// [`Self::read_phone`] with Meta's error kept; `Ok(None)` when no token is stored.
    async fn try_read_phone(
        &self,
        number: &Number,
    ) -> Result<(Number, Result<Option<PhoneProfile>, MetaError>), StepError> {
        let Some(secrets) = self.vault.load(&number.id).await? else {
            return Ok((number.clone(), Ok(None)));
        };
        let profile = match self
            .meta
            .phone_profile(&secrets.token, &number.phone_number_id)
            .await
        {
            Ok(profile) => profile,
            Err(err) => {
                tracing::warn!(code = %err.code, http_status = err.http_status, "the phone could not be read");
                return Ok((number.clone(), Err(err)));
            }
        };
        let mut number = number.clone();
        if let Some(status) = profile.name_status.as_deref().and_then(meta_label) {
            match lifecycle::apply(
                &self.store,
                &self.queue,
                &number,
                Command::NameStatusRead(status),
            )
            .await?
            {
                Changed::Now(read) | Changed::Already(read) => number = read,
                Changed::Refused(_, why) => tracing::info!(%why, "name status not recorded"),
            }
        }
        Ok((number, Ok(Some(profile))))
    }

    /// The number a step runs on, and whether the register budget's count was already written
    /// on it (from the message's snapshot); `None` when the number is gone.
    async fn load_for_step(
        &self,
        step: Step,
        message: &StepMessage,
        delivery: &Delivery,
    ) -> Result<Option<(Number, bool)>, StepError> {
        Ok(
            match self
                .count_register_call_from_snapshot(step, message, delivery)
                .await?
            {
                Some(Ok(counted)) => Some((counted, true)),
                Some(Err(current)) => Some((current, false)),
                None => self
                    .store
                    .get(&message.account_id, &message.number_id)
                    .await?
                    .map(|number| (number, false)),
            },
        )
    }

    /// The token of the message's number, for a step that calls Meta with the stored token.
    /// A message that finds its step done or its number ended has read it for nothing: rare
    /// (redeliveries), and cheaper than a read in series on every first run.
    async fn read_token_ahead(&self, step: Step, message: &StepMessage) -> TokenReadAhead {
        let calls_meta_with_stored_token = matches!(
            step,
            Step::SubscribeWaba | Step::RegisterNumber | Step::ConfigurePin | Step::FetchProfile
        );
        if !calls_meta_with_stored_token || message.reconnect.is_some() {
            return None;
        }
        Some(self.vault.load(&message.number_id).await)
    }

    /// The register step's first request counted on the snapshot its message carries (the
    /// number as the step before committed it), in place of reading the number and then
    /// counting: one write instead of a read and a write. Taken only when the snapshot is a
    /// number whose register would be sent at once (at this step, no request counted, not
    /// waiting on Meta), and written only if it is still the stored number, so the result is
    /// what the read would have led to. `None`: no usable snapshot, read the number;
    /// `Some(Err)`: the number changed since, as it is now (what the read would have found).
    async fn count_register_call_from_snapshot(
        &self,
        step: Step,
        message: &StepMessage,
        delivery: &Delivery,
    ) -> Result<Option<Result<Number, Number>>, StepError> {
        if step != Step::RegisterNumber || message.reconnect.is_some() {
            return Ok(None);
        }
        let Some(text) = delivery.number_snapshot.as_deref() else {
            return Ok(None);
        };
        let snapshot = match self.store.number_from_snapshot(text) {
            Ok(number) => number,
            Err(err) => {
                tracing::warn!(error = %crate::telemetry::ErrorChain(&err), "unreadable number snapshot; reading the number");
                return Ok(None);
            }
        };
        let registers_at_once = snapshot.id == message.number_id
            && snapshot.account_id == message.account_id
            && lifecycle_rules::readiness(&snapshot, step) == Readiness::Run
            && snapshot.register_calls.is_empty()
            && snapshot.register_waiting_on.is_none();
        if !registers_at_once {
            return Ok(None);
        }
        let counted = lifecycle::apply_if_current(
            &self.store,
            &self.queue,
            &snapshot,
            Command::CountRegisterCall,
        )
        .await?;
        Ok(match counted {
            Ok(Changed::Now(counted)) => Some(Ok(counted)),
            Ok(Changed::Already(_) | Changed::Refused(..)) => None,
            Err(current) => {
                tracing::info!("the number changed since its snapshot; going on from it as it is");
                Some(Err(current))
            }
        })
    }

    /// Counts a register request against the number's budget. `Err` is what to do instead of
    /// sending it: wait until the budget frees, or stop (the number failed or moved on).
    async fn count_register_call(
        &self,
        number: &Number,
    ) -> Result<Result<Number, Outcome>, StepError> {
        match lifecycle::apply(&self.store, &self.queue, number, Command::CountRegisterCall).await?
        {
            Changed::Now(number) | Changed::Already(number) => Ok(Ok(number)),
            Changed::Refused(number, Refusal::RegisterBudgetSpent { until }) => {
                let now = time::now();
                if self.retry.waited_too_long(&number, now) {
                    let reason = number.provisioning_error.clone().unwrap_or(FailureReason {
                        step: Step::RegisterNumber.as_str().into(),
                        code: "register_budget".into(),
                        message: "the register requests allowed for this number are spent".into(),
                        ..FailureReason::default()
                    });
                    tracing::warn!(code = %reason.code, "register budget spent past the wait allowed; the number fails");
                    self.fail(&number, reason).await?;
                    return Ok(Err(Outcome::Done));
                }
                let wait = seconds_until(until, now, self.retry.max_seconds);
                tracing::info!(%until, wait, "register budget spent; waiting before registering again");
                Ok(Err(Outcome::RetryAfter(wait)))
            }
            Changed::Refused(_, why) => {
                tracing::info!(%why, "no register request for this number");
                Ok(Err(Outcome::Done))
            }
        }
    }

    async fn secrets(&self, step: Step, number: &Number) -> Result<NumberSecrets, StepFailure> {
        self.stored_secrets(step, number, None).await
    }

    /// The number's token and PIN: as read ahead beside the number, else read now.
    async fn stored_secrets(
        &self,
        step: Step,
        number: &Number,
        read_ahead: TokenReadAhead,
    ) -> Result<NumberSecrets, StepFailure> {
        let stored = match read_ahead {
            Some(read) => read?,
            None => self.vault.load(&number.id).await?,
        };
        stored.ok_or_else(|| {
            StepFailure::Permanent(FailureReason {
                step: step.as_str().into(),
                code: "token_missing".into(),
                message: "the number's token is not in the secret store".into(),
                ..FailureReason::default()
            })
        })
    }

    async fn send_step(
        &self,
        number: &Number,
        step: Step,
        trace_id: &str,
    ) -> Result<(), StepError> {
        let message = StepMessage::new(
            number.id.clone(),
            number.account_id.clone(),
            step,
            trace_id.to_string(),
        );
        // Register writes before its Meta request (the budget's count): with the number beside
        // the message, that write needs no read before it (`count_register_call_from_snapshot`).
        if step == Step::RegisterNumber {
            let snapshot = self.store.number_snapshot(number)?;
            self.queue
                .send(&WithSnapshot {
                    message: &message,
                    snapshot,
                })
                .await?;
        } else {
            self.queue.send(&message).await?;
        }
        Ok(())
    }

    /// Fails the number and tears down what it did at Meta (sent again for a repeated failure,
    /// in case a crash lost the first; teardown is idempotent).
    async fn fail(&self, number: &Number, reason: FailureReason) -> Result<(), StepError> {
        let changed =
            lifecycle::apply(&self.store, &self.queue, number, Command::Fail(reason)).await?;
        match changed {
            Changed::Now(failed) | Changed::Already(failed) => {
                let message = TeardownMessage::new(failed.id.clone(), failed.account_id.clone());
                self.queue.send(&message).await?;
            }
            Changed::Refused(_, why) => {
                tracing::info!(%why, "failure not recorded: the number moved on");
            }
        }
        Ok(())
    }

    /// A step's dead letter: its retries ran out, so the number fails with the last error seen.
    /// Unreadable dead letters stay where they are, for an operator (the DLQ alarm fires).
    pub async fn handle_dead_letters(&self, event: SqsEvent) -> SqsBatchResponse {
        process_batch(event, None, &self.queue, |d| self.handle_dead_letter(d)).await
    }

    async fn handle_dead_letter(&self, delivery: Delivery) -> Outcome {
        let message: StepMessage = match messages::parse_step_body(&delivery.body) {
            Ok(ExchangeBody::Step(message)) => message,
            Ok(ExchangeBody::WabaSignup(message)) => {
                let span =
                    tracing::info_span!("dead_letter", waba_signup_id = %message.waba_signup_id);
                return match self.waba_dead_letter(&message).instrument(span).await {
                    Ok(()) => Outcome::Done,
                    Err(err) => {
                        tracing::error!(error = %crate::telemetry::ErrorChain(&err), "dead letter not handled; will retry");
                        Outcome::RetryAfter(self.retry.base_seconds)
                    }
                };
            }
            Err(err) => {
                tracing::error!(error = %crate::telemetry::ErrorChain(&err), message_id = %delivery.message_id, "unreadable dead letter kept in its queue");
                return Outcome::Unreadable;
            }
        };
        let span = tracing::info_span!("dead_letter", number_id = %message.number_id, step = %message.step);
        async {
            let result: Result<Outcome, StepError> = async {
                let Some(number) = self
                    .store
                    .get(&message.account_id, &message.number_id)
                    .await?
                else {
                    return Ok(Outcome::Done);
                };
                if let Some(id) = &message.reconnect {
                    // A reconnect's retries ran out: it is abandoned, the number stays as it is.
                    let Some(reconnect) = number.reconnect.as_ref().filter(|r| &r.id == id) else {
                        return Ok(Outcome::Done);
                    };
                    let reason = reconnect.last_error.clone().unwrap_or(FailureReason {
                        step: message.step.as_str().into(),
                        code: "retries_exhausted".into(),
                        message: "the reconnect step kept failing and was given up".into(),
                        ..FailureReason::default()
                    });
                    tracing::warn!(code = %reason.code, "reconnect retries exhausted; abandoned");
                    self.abandon_reconnect(&number, id, reason).await?;
                    return Ok(Outcome::Done);
                }
                if number.status != Status::Pending {
                    return Ok(Outcome::Done);
                }
                if let Some(kept) = self.rate_limited_dead_letter(&number, message.step) {
                    return Ok(kept);
                }
                let reason = number.provisioning_error.clone().unwrap_or(FailureReason {
                    step: message.step.as_str().into(),
                    code: "retries_exhausted".into(),
                    message: "the step kept failing and was given up".into(),
                    ..FailureReason::default()
                });
                tracing::warn!(code = %reason.code, "retries exhausted; the number fails");
                self.fail(&number, reason).await?;
                Ok(Outcome::Done)
            }
            .await;
            match result {
                Ok(outcome) => outcome,
                Err(err) => {
                    tracing::error!(error = %crate::telemetry::ErrorChain(&err), "dead letter not handled; will retry");
                    Outcome::RetryAfter(self.retry.base_seconds)
                }
            }
        }
        .instrument(span)
        .await
    }

    /// What becomes of a step's dead letter while its number waits on Meta's rate limit within
    /// its bound (`None`: the number is not waiting so, and fails). The number is not failed:
    /// the dead letter of its current step stays in the queue, for `muchaw-admin dlq redrive` to
    /// resume the wait (this function may not send to the step queues), until the bound fails
    /// it; one of an earlier step is dropped, its current step's message waiting on.
    fn rate_limited_dead_letter(&self, number: &Number, step: Step) -> Option<Outcome> {
        let rate_limited = number
            .provisioning_error
            .as_ref()
            .is_some_and(crate::domain::meta::is_rate_limit);
        if !rate_limited
            || !waits_out_rate_limits(step)
            || self.retry.waited_too_long(number, time::now())
        {
            return None;
        }
        if number.provisioning_step != Some(step) {
            tracing::info!(
                "dead letter of an earlier step while the number waits on a rate limit; dropped"
            );
            return Some(Outcome::Done);
        }
        tracing::error!(
            until = %self.retry.pending_until(number),
            "the step's message dead-lettered while its number waits on Meta's rate limit; kept for a redrive until the number's bound"
        );
        Some(Outcome::RetryAfter(self.retry.base_seconds))
    }
}

/// Whole seconds from `now` to `until`, rounded up (a wait cut a fraction short costs a receive
/// more), from 1 to `max`. A longer wait is waited in turns: each redelivery checks again.
fn seconds_until(until: time::Timestamp, now: time::Timestamp, max: u32) -> u32 {
    let millis = (until - now).num_milliseconds().max(1);
    let seconds = millis.saturating_add(999) / 1000;
    u32::try_from(seconds).unwrap_or(u32::MAX).min(max.max(1))
}

/// What the profile step records of the phone Meta answered with.
fn profile_record(profile: PhoneProfile) -> StepRecord {
    StepRecord {
        display_number: profile.display_phone_number,
        display_name: profile.verified_name,
        quality_rating: profile
            .quality_rating
            .as_deref()
            .and_then(QualityRating::from_meta),
        health: profile.health,
        messaging_limit: profile.messaging_limit_tier.as_deref().and_then(meta_label),
        throughput: profile.throughput_level.as_deref().and_then(meta_label),
        name_status: profile.name_status.as_deref().and_then(meta_label),
        ..StepRecord::default()
    }
}

/// What Meta says of a phone an earlier register request of the number may have registered.
enum AtMeta {
    Registered,
    NotRegistered,
    /// The phone could not be read: Meta's answer.
    Unread(MetaError),
}
