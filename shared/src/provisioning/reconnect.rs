//! A reconnect's steps: a new signup of a live number (`ACTIVE` or `BANNED`, same account) runs
//! on the provisioning queues with the reconnect's id in each message. The new code is
//! exchanged and the token stored as a new version of the number's secret (the PIN kept), the
//! WABA subscribed again, the profile refreshed (the number registered again only when Meta
//! says it is not, within the register budget), and the last step announces
//! `number.reconnected`. The number keeps its id and status throughout.
//!
//! Each step is idempotent like a provisioning step: it runs only where the number's reconnect
//! marker is (`domain::lifecycle::reconnect_readiness`), re-sends the next message when it finds
//! its work done, and a message of another reconnect (finished, abandoned or replaced) is
//! dropped. The exchange is the one step that cannot be repeated at Meta (the code is single
//! use): the stored secret names the reconnect whose code produced it, so a redelivery after a
//! crash finds the token stored and does not exchange again.

use super::{Provisioner, StepError, StepFailure};
use crate::domain::lifecycle::{self as lifecycle_rules, Command, Readiness, StepRecord};
use crate::domain::messages::StepMessage;
use crate::domain::meta::{ErrorKind, Retry};
use crate::domain::secrets::NumberSecrets;
use crate::domain::{FailureReason, Number, Onboarding, QualityRating, Step, time};
use crate::lifecycle::{self, Changed};
use crate::ports::{MessageQueue, MetaGraph, Redelivery, TokenVault};
use crate::sqs_batch::{Delivery, Outcome};

impl<S, Q, M, V> Provisioner<S, Q, M, V>
where
    S: super::ProvisioningStores,
    Q: MessageQueue + Redelivery,
    M: MetaGraph,
    V: TokenVault,
{
    pub(super) async fn run_reconnect(
        &self,
        step: Step,
        id: &str,
        number: Number,
        message: &StepMessage,
        delivery: &Delivery,
    ) -> Result<Outcome, StepError> {
        match lifecycle_rules::reconnect_readiness(&number, id, step) {
            Readiness::Stopped { status } => {
                lifecycle::finish_publishing(&self.store, &self.queue, &number).await?;
                tracing::info!(%status, "number is no longer live; the reconnect stops");
                return Ok(Outcome::Done);
            }
            Readiness::Superseded => {
                lifecycle::finish_publishing(&self.store, &self.queue, &number).await?;
                tracing::info!("not the number's reconnect in progress; dropping");
                return Ok(Outcome::Done);
            }
            Readiness::Done { resend } => {
                if let Some(next) = resend {
                    self.send_reconnect_step(&number, id, next, &message.trace_id)
                        .await?;
                }
                tracing::info!("reconnect step already done");
                return Ok(Outcome::Done);
            }
            Readiness::Early { at } => {
                tracing::warn!(%at, "reconnect step arrived before its turn; dropping");
                return Ok(Outcome::Done);
            }
            Readiness::Run => {}
        }
        if step == Step::ActivateNumber {
            let finish = Command::FinishReconnect { id: id.into() };
            match lifecycle::apply(&self.store, &self.queue, &number, finish).await? {
                Changed::Refused(_, why) => tracing::info!(%why, "reconnect not finished"),
                _ => tracing::info!("number reconnected"),
            }
            return Ok(Outcome::Done);
        }
        let started_at = number
            .reconnect
            .as_ref()
            .map_or(number.created_at, |r| r.started_at);
        match self.perform_reconnect(step, id, &number, message).await {
            Ok(Ok(record)) => {
                let done = Command::ReconnectStepDone {
                    id: id.into(),
                    step,
                    record,
                };
                match lifecycle::apply(&self.store, &self.queue, &number, done).await? {
                    Changed::Now(number) | Changed::Already(number) => {
                        if let Some(next) = number
                            .reconnect
                            .as_ref()
                            .filter(|r| r.id == id)
                            .map(|r| r.step)
                        {
                            self.send_reconnect_step(&number, id, next, &message.trace_id)
                                .await?;
                        }
                        tracing::info!("reconnect step done");
                    }
                    Changed::Refused(_, why) => {
                        tracing::info!(%why, "reconnect step done at Meta, but the number moved on");
                    }
                }
                Ok(Outcome::Done)
            }
            // The register budget is spent: wait for it (the outcome says how long).
            Ok(Err(wait)) => Ok(wait),
            // Meta refuses the secret before it looks at the code: exchanged again, with the
            // secret read again, while the code lives.
            Err(StepFailure::Meta(err))
                if err.kind == ErrorKind::ClientSecret
                    && let Some(wait) = self.retry.client_secret_retry(
                        time::now() - delivery.sent_at.unwrap_or(started_at),
                        delivery.receive_count,
                        self.retry.delay(delivery.receive_count, Retry::Soon),
                    ) =>
            {
                tracing::error!(code = %err.code, wait, "Meta refused the app secret; exchanging again once it is read again");
                let retried = Command::ReconnectStepRetried {
                    id: id.into(),
                    step,
                    reason: err.failure_reason(step),
                    attempt: delivery.receive_count,
                };
                lifecycle::apply(&self.store, &self.queue, &number, retried).await?;
                Ok(Outcome::RetryAfter(wait))
            }
            Err(StepFailure::Meta(err)) if err.retry == Retry::Never => {
                tracing::warn!(code = %err.code, subcode = ?err.subcode, "Meta refused; the reconnect is abandoned");
                self.abandon_reconnect(&number, id, err.failure_reason(step))
                    .await?;
                Ok(Outcome::Done)
            }
            Err(StepFailure::Meta(err))
                if self.reconnect_waited_too_long(&number)
                    || super::runs_out_of_transient_retries(step, delivery) =>
            {
                tracing::warn!(code = %err.code, "the reconnect's retries ran out, or it waited as long as it may; abandoned");
                self.abandon_reconnect(&number, id, err.failure_reason(step))
                    .await?;
                Ok(Outcome::Done)
            }
            Err(StepFailure::Meta(err)) => {
                tracing::warn!(code = %err.code, subcode = ?err.subcode, "Meta failed transiently; retrying the reconnect step");
                let retried = Command::ReconnectStepRetried {
                    id: id.into(),
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
                tracing::warn!(code = %reason.code, "the reconnect cannot succeed; abandoned");
                self.abandon_reconnect(&number, id, reason).await?;
                Ok(Outcome::Done)
            }
            Err(StepFailure::Infra(err)) => Err(err),
        }
    }

    fn reconnect_waited_too_long(&self, number: &Number) -> bool {
        number.reconnect.as_ref().is_some_and(|r| {
            time::now() - r.started_at
                >= chrono::Duration::seconds(i64::from(self.retry.max_pending_seconds))
        })
    }

    /// Calls Meta for a reconnect step: what to record, or (inner `Err`) the wait for the
    /// register budget before trying again.
    async fn perform_reconnect(
        &self,
        step: Step,
        id: &str,
        number: &Number,
        message: &StepMessage,
    ) -> Result<Result<StepRecord, Outcome>, StepFailure> {
        let stored = self.secrets(step, number).await?;
        let record = match step {
            Step::ExchangeToken => {
                if stored.reconnect_id.as_deref() == Some(id) {
                    // Exchanged and stored by an earlier delivery: the code is spent.
                    StepRecord {
                        token_expires_at: stored.token_expires_at,
                        token_replaced: true,
                        ..StepRecord::default()
                    }
                } else {
                    let (token, token_expires_at) =
                        self.exchange_code(message.code.as_ref()).await?;
                    let secrets = NumberSecrets {
                        token,
                        pin: stored.pin,
                        token_expires_at,
                        reconnect_id: Some(id.into()),
                    };
                    self.vault.replace(&number.id, &secrets).await?;
                    StepRecord {
                        token_expires_at: secrets.token_expires_at,
                        token_replaced: true,
                        ..StepRecord::default()
                    }
                }
            }
            Step::SubscribeWaba => {
                self.meta
                    .subscribe_app(&stored.token, &number.waba_id)
                    .await
                    .map_err(StepFailure::Meta)?;
                StepRecord {
                    subscribed: true,
                    ..StepRecord::default()
                }
            }
            Step::FetchProfile => {
                let profile = self
                    .meta
                    .phone_profile(&stored.token, &number.phone_number_id)
                    .await
                    .map_err(StepFailure::Meta)?;
                // Registered again only when Meta says it is not (a coexistence number never
                // is), counted against the budget before the request.
                let registered =
                    if number.onboarding == Onboarding::CloudApi && profile.is_unregistered() {
                        let counted = match self.count_register_call(number).await? {
                            Ok(counted) => counted,
                            Err(wait @ Outcome::RetryAfter(_)) => return Ok(Err(wait)),
                            Err(_) => {
                                return Err(StepFailure::Permanent(FailureReason {
                                    step: Step::RegisterNumber.as_str().into(),
                                    code: "register_budget".into(),
                                    message: "the number could not be registered again".into(),
                                    ..FailureReason::default()
                                }));
                            }
                        };
                        tracing::info!("Meta says the number is not registered; registering it");
                        self.meta
                            .register(&stored.token, &counted.phone_number_id, &stored.pin)
                            .await
                            .map_err(StepFailure::Meta)?;
                        true
                    } else {
                        false
                    };
                StepRecord {
                    display_number: profile.display_phone_number,
                    display_name: profile.verified_name,
                    quality_rating: profile
                        .quality_rating
                        .as_deref()
                        .and_then(QualityRating::from_meta),
                    registered,
                    ..StepRecord::default()
                }
            }
            Step::RegisterNumber | Step::ConfigurePin | Step::ActivateNumber => {
                return Err(StepFailure::Permanent(FailureReason {
                    step: step.as_str().into(),
                    code: "not_a_reconnect_step".into(),
                    message: "this step is not part of a reconnect".into(),
                    ..FailureReason::default()
                }));
            }
        };
        Ok(Ok(record))
    }

    pub(super) async fn send_reconnect_step(
        &self,
        number: &Number,
        id: &str,
        step: Step,
        trace_id: &str,
    ) -> Result<(), StepError> {
        let message = StepMessage::reconnecting(
            number.id.clone(),
            number.account_id.clone(),
            step,
            trace_id.to_string(),
            id.to_string(),
        );
        self.queue.send(&message).await?;
        Ok(())
    }

    /// The reconnect stops; the number keeps its status and the token it had (unless the
    /// exchange had stored the new one already, which then stays: it is the newer).
    pub(super) async fn abandon_reconnect(
        &self,
        number: &Number,
        id: &str,
        reason: FailureReason,
    ) -> Result<(), StepError> {
        let abandon = Command::AbandonReconnect {
            id: id.into(),
            reason,
        };
        if let Changed::Refused(_, why) =
            lifecycle::apply(&self.store, &self.queue, number, abandon).await?
        {
            tracing::info!(%why, "reconnect not abandoned");
        }
        Ok(())
    }
}
