//! Teardown of a number that ended (disconnected, or failed): deregister it, unsubscribe our app
//! from its WABA only when no other live number of ours uses that WABA, and schedule its token
//! secret's deletion: at once for a disconnected number or a failure no retry can resume; for a
//! failure a retry can resume, once the retention period is over (the health sync sends that
//! teardown). What is due is `domain::lifecycle::teardown_due`; every part is safe to repeat,
//! and a transient failure retries the whole message.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use tracing::Instrument;

use super::{Provisioner, StepError};
use crate::domain::lifecycle::{self as lifecycle_rules, Command, Refusal, Teardown};
use crate::domain::messages::{self, TeardownMessage};
use crate::domain::meta::{MetaError, Retry};
use crate::domain::{Number, time};
use crate::lifecycle::{self, Changed};
use crate::ports::{MessageQueue, MetaGraph, Queue, Redelivery, TokenVault};
use crate::sqs_batch::{Delivery, Outcome, process_batch};

enum TeardownError {
    Meta(MetaError),
    /// The number's register budget is spent: deregister once it frees, in this many seconds.
    Deferred(u32),
    /// The number ended moments ago: a step may still be calling Meta for it; in this many
    /// seconds it has finished.
    Settling(u32),
    Infra(StepError),
}

impl<E: Into<StepError>> From<E> for TeardownError {
    fn from(err: E) -> Self {
        TeardownError::Infra(err.into())
    }
}

impl<S, Q, M, V> Provisioner<S, Q, M, V>
where
    S: super::ProvisioningStores,
    Q: MessageQueue + Redelivery,
    M: MetaGraph,
    V: TokenVault,
{
    pub async fn handle_teardowns(&self, event: SqsEvent) -> SqsBatchResponse {
        process_batch(event, Some(Queue::Teardown), &self.queue, |d| {
            self.handle_teardown(d)
        })
        .await
    }

    async fn handle_teardown(&self, delivery: Delivery) -> Outcome {
        let message: TeardownMessage = match messages::parse(&delivery.body) {
            Ok(message) => message,
            Err(err) => {
                tracing::error!(error = %crate::telemetry::ErrorChain(&err), message_id = %delivery.message_id, "unreadable teardown message");
                return Outcome::Unreadable;
            }
        };
        let span = tracing::info_span!("teardown", number_id = %message.number_id, attempt = delivery.receive_count);
        async {
            match self.tear_down(&message).await {
                Ok(()) => Outcome::Done,
                Err(TeardownError::Meta(err)) => {
                    tracing::warn!(code = %err.code, http_status = err.http_status, "Meta failed during teardown; retrying");
                    Outcome::RetryAfter(self.retry.delay(delivery.receive_count, err.retry))
                }
                Err(TeardownError::Deferred(seconds)) => {
                    tracing::info!(seconds, "register budget spent; deregistering later");
                    Outcome::RetryAfter(seconds)
                }
                Err(TeardownError::Settling(seconds)) => {
                    tracing::info!(seconds, "the number just ended; tearing down once any step in flight has finished");
                    Outcome::RetryAfter(seconds)
                }
                Err(TeardownError::Infra(err)) => {
                    tracing::error!(error = %crate::telemetry::ErrorChain(&err), "teardown failed; retrying");
                    Outcome::RetryAfter(self.retry.delay(delivery.receive_count, Retry::Soon))
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn tear_down(&self, message: &TeardownMessage) -> Result<(), TeardownError> {
        let Some(number) = self
            .store
            .get(&message.account_id, &message.number_id)
            .await?
        else {
            return Ok(());
        };
        let retention = chrono::Duration::days(i64::from(self.retry.failed_token_retention_days));
        let Some(plan) = lifecycle_rules::teardown_due(&number, time::now(), retention) else {
            tracing::info!(status = %number.status, "nothing to tear down");
            return Ok(());
        };
        let mut done = Teardown::default();
        if plan.meta {
            let settled_at = number.updated_at
                + chrono::Duration::seconds(i64::from(self.retry.step_settle_seconds));
            let wait = (settled_at - time::now()).num_seconds();
            if wait > 0 {
                return Err(TeardownError::Settling(
                    u32::try_from(wait).unwrap_or(u32::MAX),
                ));
            }
            let secrets = self.vault.load(&number.id).await?;
            if number.registered {
                if let Some(secrets) = &secrets {
                    // Counted before it is sent, as Meta counts it whatever the answer.
                    match lifecycle::apply(
                        &self.store,
                        &self.queue,
                        &number,
                        Command::CountRegisterCall,
                    )
                    .await?
                    {
                        Changed::Refused(_, Refusal::RegisterBudgetSpent { until }) => {
                            return Err(TeardownError::Deferred(super::seconds_until(
                                until,
                                time::now(),
                                self.retry.max_seconds,
                            )));
                        }
                        Changed::Refused(_, why) => {
                            tracing::warn!(%why, "deregister not counted");
                        }
                        Changed::Now(_) | Changed::Already(_) => {}
                    }
                    tolerate_refusal(
                        "deregister",
                        self.meta
                            .deregister(&secrets.token, &number.phone_number_id)
                            .await,
                    )?;
                }
                done.deregistered = true;
            }
            if number.subscribed {
                // With a live sibling on the WABA the subscription stays, theirs now: this number
                // no longer counts on it either way (a retry subscribes again).
                if let Some(secrets) = &secrets
                    && !self.waba_shared(&number).await?
                {
                    tolerate_refusal(
                        "unsubscribe",
                        self.meta
                            .unsubscribe_app(&secrets.token, &number.waba_id)
                            .await,
                    )?;
                }
                done.unsubscribed = true;
            }
        }
        if plan.delete_token {
            self.vault.schedule_deletion(&number.id).await?;
            done.token_deleted = true;
        }
        lifecycle::apply(&self.store, &self.queue, &number, Command::TornDown(done)).await?;
        tracing::info!(
            meta = plan.meta,
            token_deleted = plan.delete_token,
            "teardown done"
        );
        Ok(())
    }

    /// Unsubscribing stops webhooks for every number of the WABA, so it waits for the last one
    /// (not for one whose phone is live elsewhere: it fails at its exchange, subscribing nothing).
    async fn waba_shared(&self, number: &Number) -> Result<bool, TeardownError> {
        let siblings = self.store.numbers_of_waba(&number.waba_id).await?;
        Ok(siblings
            .iter()
            .any(|other| other.id != number.id && other.status.is_live() && !other.phone_elsewhere))
    }
}

/// Meta refusing a teardown call (already deregistered, token revoked by the owner) means
/// there is nothing left for us to undo; only transient failures are retried.
fn tolerate_refusal(what: &str, result: Result<(), MetaError>) -> Result<(), TeardownError> {
    match result {
        Ok(()) => Ok(()),
        Err(err) if err.retry == Retry::Never => {
            tracing::warn!(code = %err.code, call = what, "Meta refused a teardown call; nothing to undo");
            Ok(())
        }
        Err(err) => Err(TeardownError::Meta(err)),
    }
}
