//! A WABA-only signup (Meta's `FINISH_ONLY_WABA`: a WABA shared, no phone picked), run from the
//! exchange-token queue. Its code is exchanged and the token kept under the signup's own key;
//! the WABA's phones are listed (every page); each phone not live elsewhere gets a `PENDING`
//! number whose id is derived from the signup and the phone, with its own copy of the token in
//! its own secret (so a number's teardown deletes only its copy), and starts the normal chain
//! at the exchange, which finds its token stored and moves on. Then the signup ends
//! `completed` with its numbers (or `failed` when no phone was eligible) and its own copy of
//! the token is deleted.
//!
//! Safe to run twice or to crash anywhere: the exchange is skipped when the token is stored; a
//! number found under its derived id was created by an earlier run (its copy of the token is
//! stored and its first message sent again while it waits at the exchange); a number is written
//! before its secret, so a skipped phone never has one; the end is a conditioned write, and the
//! token's deletion is recorded after it is done.

use tracing::Instrument;

use super::{Provisioner, StepError, StepFailure};

/// A message about a WABA signup not written yet: its callback sends it before the write, so
/// for a short while this is expected.
const CREATION_GRACE: std::time::Duration = std::time::Duration::from_secs(60);
use crate::domain::lifecycle::waba::{self, LIST_PHONES, WabaCommand, WabaReadiness};
use crate::domain::lifecycle::{Readiness, readiness};
use crate::domain::messages::{StepMessage, WabaSignupMessage};
use crate::domain::meta::{ErrorKind, MetaError, Retry};
use crate::domain::secrets::{NumberSecrets, generate_pin};
use crate::domain::waba_signup::WabaSignup;
use crate::domain::{FailureReason, Number, NumberId, Step, time};
use crate::lifecycle::{self, WabaChanged};
use crate::ports::{CreateOutcome, ListedPhone, MessageQueue, MetaGraph, Redelivery, TokenVault};
use crate::sqs_batch::{Delivery, Outcome};

/// Pages of a WABA's phones read at most (100 each): far beyond what Meta lets one WABA hold,
/// so a listing that never ends (a cursor Meta keeps answering) stops.
const MAX_PHONE_PAGES: usize = 50;

impl<S, Q, M, V> Provisioner<S, Q, M, V>
where
    S: super::ProvisioningStores,
    Q: MessageQueue + Redelivery,
    M: MetaGraph,
    V: TokenVault,
{
    pub(super) async fn handle_waba_signup(
        &self,
        message: &WabaSignupMessage,
        delivery: &Delivery,
    ) -> Outcome {
        let span = tracing::info_span!(
            "waba_signup",
            waba_signup_id = %message.waba_signup_id,
            attempt = delivery.receive_count,
            trace_id = %message.trace_id,
        );
        async {
            match self.run_waba_signup(message, delivery).await {
                Ok(outcome) => outcome,
                Err(err) => {
                    tracing::error!(error = %crate::telemetry::ErrorChain(&err), "WABA signup step failed; will retry");
                    Outcome::RetryAfter(self.retry.delay(delivery.receive_count, Retry::Soon))
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn run_waba_signup(
        &self,
        message: &WabaSignupMessage,
        delivery: &Delivery,
    ) -> Result<Outcome, StepError> {
        let Some(signup) = self
            .store
            .waba_signup(&message.account_id, &message.waba_signup_id)
            .await?
        else {
            // The callback sends this message before its write (`api::signup::waba_only`).
            let young = delivery.sent_at.is_none_or(|sent| {
                (time::now() - sent).to_std().unwrap_or_default() < CREATION_GRACE
            });
            if young {
                return Ok(Outcome::RetryAfter(self.retry.base_seconds.max(1)));
            }
            tracing::warn!("no such WABA signup; dropping the message");
            return Ok(Outcome::Done);
        };
        match waba::readiness(&signup) {
            WabaReadiness::Done => {
                tracing::info!("WABA signup already ended");
                return Ok(Outcome::Done);
            }
            WabaReadiness::DeleteToken => {
                self.delete_waba_token(&signup).await?;
                return Ok(Outcome::Done);
            }
            WabaReadiness::Run => {}
        }
        let token = match self.waba_token(&signup, message).await {
            Ok(token) => token,
            Err(failure) => {
                return self
                    .waba_step_failed(&signup, failure, Step::ExchangeToken.as_str(), delivery)
                    .await;
            }
        };
        let phones = match self.waba_phones(&token, &signup.waba_id).await {
            Ok(phones) => phones,
            Err(failure) => {
                return self
                    .waba_step_failed(&signup, failure, LIST_PHONES, delivery)
                    .await;
            }
        };
        let mut number_ids = Vec::new();
        let mut skipped = Vec::new();
        for phone in &phones {
            match self
                .onboard_phone(&signup, &token, phone, &message.trace_id)
                .await?
            {
                Some(id) => number_ids.push(id),
                None => skipped.push(phone.phone_number_id.clone()),
            }
        }
        tracing::info!(
            phones = phones.len(),
            onboarded = number_ids.len(),
            skipped = skipped.len(),
            "WABA's phones listed"
        );
        let listed = WabaCommand::Listed {
            number_ids,
            skipped,
        };
        self.end_waba_signup(&signup, listed).await?;
        Ok(Outcome::Done)
    }

    /// The signup's token: stored by an earlier run (the code is spent), or exchanged now.
    async fn waba_token(
        &self,
        signup: &WabaSignup,
        message: &WabaSignupMessage,
    ) -> Result<NumberSecrets, StepFailure> {
        if let Some(stored) = self.vault.load(&signup.vault_key()).await? {
            return Ok(stored);
        }
        let (token, token_expires_at) = self.exchange_code(message.code.as_ref()).await?;
        let secrets = NumberSecrets {
            token,
            // The secret's shape wants one; each number gets its own PIN.
            pin: generate_pin(),
            token_expires_at,
            reconnect_id: None,
        };
        Ok(self.vault.create(&signup.vault_key(), &secrets).await?)
    }

    /// Every phone of the WABA, page after page, in Meta's order.
    async fn waba_phones(
        &self,
        token: &NumberSecrets,
        waba_id: &str,
    ) -> Result<Vec<ListedPhone>, StepFailure> {
        let mut phones: Vec<ListedPhone> = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_PHONE_PAGES {
            let page = self
                .meta
                .phone_numbers(&token.token, waba_id, after.as_deref())
                .await
                .map_err(StepFailure::Meta)?;
            for phone in page.phones {
                if !phones
                    .iter()
                    .any(|p| p.phone_number_id == phone.phone_number_id)
                {
                    phones.push(phone);
                }
            }
            match page.after {
                Some(next) if after.as_deref() != Some(next.as_str()) => after = Some(next),
                _ => return Ok(phones),
            }
        }
        Err(StepFailure::Permanent(FailureReason {
            step: LIST_PHONES.into(),
            code: "too_many_pages".into(),
            message: format!(
                "Meta's list of the WABA's phone numbers did not end after {MAX_PHONE_PAGES} pages"
            ),
            ..FailureReason::default()
        }))
    }

    /// The number of `phone` (created now, or found from an earlier run), or `None` when the
    /// phone is live in another number and is left alone. The number is written before its
    /// copy of the token, so no secret is ever stored for a number that does not exist (a
    /// phone taken meanwhile leaves nothing behind); the copy is stored before the number's
    /// first message, whose exchange step then finds it.
    async fn onboard_phone(
        &self,
        signup: &WabaSignup,
        token: &NumberSecrets,
        phone: &ListedPhone,
        trace_id: &str,
    ) -> Result<Option<NumberId>, StepError> {
        let id = signup.number_id_for(&phone.phone_number_id);
        // Its own copy of the token, in its own secret: its teardown deletes only that one.
        let copy = NumberSecrets {
            token: token.token.clone(),
            pin: generate_pin(),
            token_expires_at: token.token_expires_at,
            reconnect_id: None,
        };
        if let Some(number) = self.store.get(&signup.account_id, &id).await? {
            // Created by an earlier run, which may have crashed before storing its copy of the
            // token or sending its first message (a stored copy is kept as it is).
            if readiness(&number, Step::ExchangeToken) == Readiness::Run {
                self.vault.create(&id, &copy).await?;
                self.send_first_step(&number, trace_id).await?;
            }
            return Ok(Some(id));
        }
        if self
            .store
            .phone_owner(&phone.phone_number_id)
            .await?
            .is_some()
        {
            tracing::info!(phone_number_id = %phone.phone_number_id, "phone live in another number; skipped");
            return Ok(None);
        }
        let mut number = Number::new_pending(
            signup.account_id.clone(),
            signup.waba_id.clone(),
            phone.phone_number_id.clone(),
            time::now(),
        );
        number.id = id.clone();
        match self.store.create_pending(&number, None).await? {
            CreateOutcome::Created => {
                self.vault.create(&id, &copy).await?;
                self.send_first_step(&number, trace_id).await?;
                crate::metrics::signup(
                    number.id.as_str(),
                    crate::metrics::onboarding_name(number.onboarding),
                );
                tracing::info!(number_id = %number.id, phone_number_id = %phone.phone_number_id, "number created for the WABA's phone");
                Ok(Some(id))
            }
            CreateOutcome::PhoneTaken | CreateOutcome::LinkUnusable => {
                // A concurrent delivery of this signup may have created this very number just
                // now: then it is one of ours (that delivery stores its token and sends it on).
                let ours = self
                    .store
                    .phone_owner(&phone.phone_number_id)
                    .await?
                    .is_some_and(|owner| owner.number_id == id);
                if !ours {
                    tracing::info!(phone_number_id = %phone.phone_number_id, "phone taken meanwhile; skipped");
                }
                Ok(ours.then_some(id))
            }
        }
    }

    /// The number's first step: the exchange, which finds the token stored and moves on.
    async fn send_first_step(&self, number: &Number, trace_id: &str) -> Result<(), StepError> {
        let message = StepMessage::new(
            number.id.clone(),
            number.account_id.clone(),
            Step::FIRST,
            trace_id.to_string(),
        );
        self.queue.send(&message).await?;
        Ok(())
    }

    async fn waba_step_failed(
        &self,
        signup: &WabaSignup,
        failure: StepFailure,
        step: &str,
        delivery: &Delivery,
    ) -> Result<Outcome, StepError> {
        let reason = |err: &MetaError| FailureReason {
            step: step.into(),
            ..err.failure_reason(Step::ExchangeToken)
        };
        // Meta refuses the secret before it looks at the code: exchanged again, with the
        // secret read again, while the code lives.
        let client_secret_retry = match &failure {
            StepFailure::Meta(err) if err.kind == ErrorKind::ClientSecret => {
                let sent_at = delivery.sent_at.unwrap_or(signup.created_at);
                self.retry.client_secret_retry(
                    time::now() - sent_at,
                    delivery.receive_count,
                    self.retry.delay(delivery.receive_count, Retry::Soon),
                )
            }
            _ => None,
        };
        match failure {
            StepFailure::Meta(err) if let Some(wait) = client_secret_retry => {
                tracing::error!(code = %err.code, %step, wait, "Meta refused the app secret; exchanging again once it is read again");
                lifecycle::apply_waba(&self.store, signup, WabaCommand::Retried(reason(&err)))
                    .await?;
                Ok(Outcome::RetryAfter(wait))
            }
            StepFailure::Meta(err) if err.retry == Retry::Never => {
                tracing::warn!(code = %err.code, subcode = ?err.subcode, %step, "Meta refused; the WABA signup fails");
                self.end_waba_signup(signup, WabaCommand::Fail(reason(&err)))
                    .await?;
                Ok(Outcome::Done)
            }
            StepFailure::Meta(err) => {
                tracing::warn!(code = %err.code, http_status = err.http_status, %step, "Meta failed transiently; retrying the WABA signup");
                lifecycle::apply_waba(&self.store, signup, WabaCommand::Retried(reason(&err)))
                    .await?;
                Ok(Outcome::RetryAfter(
                    self.retry.delay(delivery.receive_count, err.retry),
                ))
            }
            StepFailure::Permanent(reason) => {
                tracing::warn!(code = %reason.code, %step, "the WABA signup cannot succeed");
                self.end_waba_signup(signup, WabaCommand::Fail(reason))
                    .await?;
                Ok(Outcome::Done)
            }
            StepFailure::Infra(err) => Err(err),
        }
    }

    /// Records how the signup ended (with its link), then deletes its copy of the token.
    async fn end_waba_signup(
        &self,
        signup: &WabaSignup,
        command: WabaCommand,
    ) -> Result<(), StepError> {
        match lifecycle::apply_waba(&self.store, signup, command).await? {
            WabaChanged::Now(ended) | WabaChanged::Already(ended) => {
                self.delete_waba_token(&ended).await
            }
            WabaChanged::Refused(current, why) => {
                tracing::info!(%why, "WABA signup ended already");
                self.delete_waba_token(&current).await
            }
        }
    }

    /// The signup's copy of the token goes once it has ended (each number keeps its own).
    async fn delete_waba_token(&self, signup: &WabaSignup) -> Result<(), StepError> {
        if waba::readiness(signup) != WabaReadiness::DeleteToken {
            return Ok(());
        }
        self.vault.schedule_deletion(&signup.vault_key()).await?;
        lifecycle::apply_waba(&self.store, signup, WabaCommand::TokenDeleted).await?;
        Ok(())
    }

    /// A WABA signup's dead letter: its retries ran out, so it fails with the last error seen.
    pub(super) async fn waba_dead_letter(
        &self,
        message: &WabaSignupMessage,
    ) -> Result<(), StepError> {
        let Some(signup) = self
            .store
            .waba_signup(&message.account_id, &message.waba_signup_id)
            .await?
        else {
            return Ok(());
        };
        if signup.outcome.is_some() {
            return self.delete_waba_token(&signup).await;
        }
        let reason = signup.last_error.clone().unwrap_or(FailureReason {
            step: LIST_PHONES.into(),
            code: "retries_exhausted".into(),
            message: "the WABA signup kept failing and was given up".into(),
            ..FailureReason::default()
        });
        tracing::warn!(code = %reason.code, "WABA signup retries exhausted; it fails");
        self.end_waba_signup(&signup, WabaCommand::Fail(reason))
            .await
    }
}
