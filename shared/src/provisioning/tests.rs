//! The step runner's decisions, the dead-letter consumer and teardown, against the in-memory
//! adapters: no moto, no network.

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};

use super::*;
use crate::adapters::memory::{
    MemoryQueue, MemoryStore, MemoryVault, MetaCall, MetaCallKind, ScriptedMeta,
};
use crate::domain::lifecycle::{Command, DisconnectedBy};
use crate::domain::messages::TeardownMessage;
use crate::domain::secrets::Secret;
use crate::domain::{AccountId, NumberId};
use crate::ports::{NumberReader, NumberSnapshots, PhoneProfile};

type TestProvisioner = Provisioner<MemoryStore, MemoryQueue, ScriptedMeta, MemoryVault>;

struct Given {
    provisioner: TestProvisioner,
    number: Number,
}

impl Given {
    fn store(&self) -> &MemoryStore {
        &self.provisioner.store
    }

    fn queue(&self) -> &MemoryQueue {
        &self.provisioner.queue
    }

    fn meta(&self) -> &ScriptedMeta {
        &self.provisioner.meta
    }

    fn vault(&self) -> &MemoryVault {
        &self.provisioner.vault
    }

    fn now(&self) -> Number {
        self.store()
            .number(&self.number.account_id, &self.number.id)
            .expect("the number")
    }

    async fn run(&self, step: Step) -> Outcome {
        self.run_message(step_message(&self.number, step)).await
    }

    async fn run_message(&self, message: StepMessage) -> Outcome {
        self.deliver(message, 1).await
    }

    /// The message again after an earlier delivery's run ended without deleting it.
    async fn run_redelivered(&self, message: StepMessage) -> Outcome {
        self.deliver(message, 2).await
    }

    async fn deliver(&self, message: StepMessage, receive_count: u32) -> Outcome {
        let body = serde_json::to_string(&message).unwrap();
        self.deliver_received(message.step, body, None, receive_count)
            .await
    }

    /// A message as the queue holds it (body and number snapshot), delivered to `step`.
    async fn deliver_received(
        &self,
        step: Step,
        body: String,
        number_snapshot: Option<String>,
        receive_count: u32,
    ) -> Outcome {
        let delivery = Delivery {
            message_id: "m-1".into(),
            body,
            receive_count,
            sent_at: Some(time::now()),
            number_snapshot,
        };
        self.provisioner.handle_step(step, delivery).await
    }

    /// The one message sent to `step`'s queue, as received: body and number snapshot.
    fn received_for(&self, step: Step) -> (String, Option<String>) {
        let mut received = self.queue().received_from(Queue::Step(step));
        assert_eq!(received.len(), 1, "one message to {step}");
        received.remove(0)
    }

    fn steps_sent(&self) -> Vec<Step> {
        self.queue()
            .sent()
            .into_iter()
            .filter_map(|(queue, _)| match queue {
                Queue::Step(step) => Some(step),
                _ => None,
            })
            .collect()
    }

    fn events_sent(&self) -> Vec<String> {
        self.queue()
            .sent_to(Queue::Events)
            .into_iter()
            .map(|event| event["type"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

fn step_message(number: &Number, step: Step) -> StepMessage {
    StepMessage::new(
        number.id.clone(),
        number.account_id.clone(),
        step,
        "trc_test".into(),
    )
}

fn secrets() -> NumberSecrets {
    NumberSecrets {
        token: Secret::new("EAAG-token"),
        pin: Secret::new("123456"),
        token_expires_at: None,
        reconnect_id: None,
    }
}

/// A pending number at `step`, its token stored (unless at the exchange).
fn given_pending_at(step: Step) -> Given {
    let mut number = Number::new_pending(
        AccountId::from("acc_1".to_string()),
        "1000".into(),
        "2000".into(),
        time::now(),
    );
    number.provisioning_step = Some(step);
    let provisioner = Provisioner {
        store: MemoryStore::default(),
        queue: MemoryQueue::default(),
        meta: ScriptedMeta::default(),
        vault: MemoryVault::default(),
        retry: RetryPolicy {
            base_seconds: 2,
            slow_seconds: 600,
            max_seconds: 3600,
            failed_token_retention_days: 7,
            // Teardowns at once: the wait for a step in flight has its own tests.
            step_settle_seconds: 0,
            ..RetryPolicy::default()
        },
    };
    provisioner.store.insert_number(number.clone());
    if step != Step::ExchangeToken {
        provisioner.vault.put(&number.id, secrets());
    }
    Given {
        provisioner,
        number,
    }
}

fn refusal(code: i64) -> MetaError {
    MetaError::from_envelope(400, code, None, false, "(#200) Permissions error".into())
}

#[tokio::test]
async fn a_step_at_its_turn_calls_meta_records_itself_and_sends_the_next() {
    let given = given_pending_at(Step::SubscribeWaba);

    let outcome = given.run(Step::SubscribeWaba).await;

    assert_eq!(outcome, Outcome::Done);
    assert_eq!(
        given.meta().calls(),
        vec![MetaCall::SubscribeApp {
            waba_id: "1000".into()
        }]
    );
    let number = given.now();
    assert_eq!(number.provisioning_step, Some(Step::RegisterNumber));
    assert!(number.subscribed);
    assert_eq!(given.steps_sent(), vec![Step::RegisterNumber]);
}

#[tokio::test]
async fn a_step_asks_for_the_token_while_the_number_is_still_being_read() {
    let given = given_pending_at(Step::ConfigurePin);
    let held = given.store().hold_number_reads().await;
    let run = given.run(Step::ConfigurePin);
    tokio::pin!(run);

    let while_held = futures::poll!(&mut run);

    assert!(while_held.is_pending());
    assert_eq!(given.store().number_reads(), 0);
    assert_eq!(given.vault().loads(), 1);
    drop(held);
    assert_eq!(run.await, Outcome::Done);
    assert_eq!(given.vault().loads(), 1);
    assert_eq!(
        given.meta().calls(),
        vec![
            MetaCall::SetPin {
                phone_number_id: "2000".into()
            },
            MetaCall::PhoneProfile {
                phone_number_id: "2000".into()
            },
        ]
    );
}

#[tokio::test]
async fn the_exchange_and_the_activation_read_no_token_ahead() {
    for step in [Step::ExchangeToken, Step::ActivateNumber] {
        let given = given_pending_at(step);
        let held = given.store().hold_number_reads().await;
        let run = given.run(step);
        tokio::pin!(run);

        let while_held = futures::poll!(&mut run);

        assert!(while_held.is_pending());
        assert_eq!(given.vault().loads(), 0, "{step}");
        drop(held);
        run.await;
    }
}

fn profile_of(name: &str) -> PhoneProfile {
    PhoneProfile {
        verified_name: Some(name.into()),
        display_phone_number: Some("+1 555-0100".into()),
        quality_rating: Some("GREEN".into()),
        ..PhoneProfile::default()
    }
}

#[tokio::test]
async fn the_pin_step_reads_the_profile_while_meta_sets_the_pin() {
    let given = given_pending_at(Step::ConfigurePin);
    let held = given.meta().hold_pins().await;
    let run = given.run(Step::ConfigurePin);
    tokio::pin!(run);

    let while_the_pin_is_unanswered = futures::poll!(&mut run);

    assert!(while_the_pin_is_unanswered.is_pending());
    assert_eq!(given.meta().count(MetaCallKind::PhoneProfile), 1);
    drop(held);
    assert_eq!(run.await, Outcome::Done);
    assert_eq!(given.meta().count(MetaCallKind::SetPin), 1);
}

#[tokio::test]
async fn a_pin_set_with_its_profile_read_records_the_profile_and_hands_over_to_the_activation() {
    let given = given_pending_at(Step::ConfigurePin);
    given.meta().set_profile(profile_of("Acme"));

    let outcome = given.run(Step::ConfigurePin).await;

    assert_eq!(outcome, Outcome::Done);
    let number = given.now();
    assert_eq!(number.provisioning_step, Some(Step::ActivateNumber));
    assert_eq!(number.display_name.as_deref(), Some("Acme"));
    assert_eq!(number.display_number.as_deref(), Some("+1 555-0100"));
    assert_eq!(number.quality_rating, Some(QualityRating::Green));
    assert_eq!(given.steps_sent(), vec![Step::ActivateNumber]);
}

#[tokio::test]
async fn a_profile_read_that_failed_beside_the_pin_leaves_the_profile_to_its_own_step() {
    let given = given_pending_at(Step::ConfigurePin);
    given.meta().fail_next(
        MetaCallKind::PhoneProfile,
        MetaError::from_envelope(503, 2, None, true, "Service temporarily unavailable".into()),
    );

    let outcome = given.run(Step::ConfigurePin).await;

    assert_eq!(outcome, Outcome::Done);
    let number = given.now();
    assert_eq!(number.status, Status::Pending);
    assert_eq!(number.provisioning_step, Some(Step::FetchProfile));
    assert_eq!(number.display_name, None);
    assert_eq!(given.steps_sent(), vec![Step::FetchProfile]);
}

#[tokio::test]
async fn a_profile_read_meta_refuses_beside_the_pin_fails_the_number_as_the_profile_step() {
    let given = given_pending_at(Step::ConfigurePin);
    given
        .meta()
        .fail_next(MetaCallKind::PhoneProfile, refusal(190));

    let outcome = given.run(Step::ConfigurePin).await;

    assert_eq!(outcome, Outcome::Done);
    let number = given.now();
    assert_eq!(number.status, Status::Failed);
    let reason = number.failure_reason.expect("failureReason");
    assert_eq!(
        (reason.step.as_str(), reason.code.as_str()),
        ("FETCH_PROFILE", "190")
    );
    assert!(given.steps_sent().is_empty());
}

#[tokio::test]
async fn a_pin_meta_refuses_fails_the_number_as_the_pin_step_and_records_no_profile() {
    let given = given_pending_at(Step::ConfigurePin);
    given.meta().set_profile(profile_of("Acme"));
    given.meta().fail_next(MetaCallKind::SetPin, refusal(190));

    given.run(Step::ConfigurePin).await;

    let number = given.now();
    assert_eq!(number.status, Status::Failed);
    assert_eq!(
        number.failure_reason.map(|reason| reason.step),
        Some("CONFIGURE_PIN".to_string())
    );
    assert_eq!(number.display_name, None);
}

#[tokio::test]
async fn a_retried_pin_reads_no_profile_beside_it() {
    let given = given_pending_at(Step::ConfigurePin);

    let outcome = given
        .run_redelivered(step_message(&given.number, Step::ConfigurePin))
        .await;

    assert_eq!(outcome, Outcome::Done);
    assert_eq!(
        given.meta().calls(),
        vec![MetaCall::SetPin {
            phone_number_id: "2000".into()
        }]
    );
    assert_eq!(given.now().provisioning_step, Some(Step::FetchProfile));
    assert_eq!(given.steps_sent(), vec![Step::FetchProfile]);
}

#[tokio::test]
async fn a_pin_message_again_after_its_run_went_past_the_profile_resends_the_activation() {
    let given = given_pending_at(Step::ActivateNumber);

    let outcome = given
        .run_redelivered(step_message(&given.number, Step::ConfigurePin))
        .await;

    assert_eq!(outcome, Outcome::Done);
    assert!(given.meta().calls().is_empty());
    assert_eq!(given.steps_sent(), vec![Step::ActivateNumber]);
}

#[tokio::test]
async fn a_step_whose_token_is_gone_fails_the_number_with_token_missing() {
    let given = given_pending_at(Step::FetchProfile);
    given
        .vault()
        .schedule_deletion(&given.number.id)
        .await
        .unwrap();

    let outcome = given.run(Step::FetchProfile).await;

    assert_eq!(outcome, Outcome::Done);
    assert!(given.meta().calls().is_empty());
    let number = given.now();
    assert_eq!(number.status, Status::Failed);
    assert_eq!(
        number.failure_reason.map(|reason| reason.code),
        Some("token_missing".to_string())
    );
}

#[tokio::test]
async fn a_number_no_longer_pending_stops_provisioning_without_calling_meta() {
    let given = given_pending_at(Step::SubscribeWaba);
    let disconnect = Command::Disconnect(DisconnectedBy::Customer);
    lifecycle::apply(given.store(), given.queue(), &given.number, disconnect)
        .await
        .unwrap();

    let outcome = given.run(Step::SubscribeWaba).await;

    assert_eq!(outcome, Outcome::Done);
    assert!(given.meta().calls().is_empty());
    assert!(given.steps_sent().is_empty());
}

#[tokio::test]
async fn a_stopped_number_s_unpublished_event_is_published_by_the_next_message() {
    let given = given_pending_at(Step::ActivateNumber);
    given.queue().fail_next_sends(1);
    let crashed = lifecycle::apply(
        given.store(),
        given.queue(),
        &given.number,
        Command::Activate,
    )
    .await;
    assert!(crashed.is_err(), "the event's send was made to fail");
    assert!(given.events_sent().is_empty());

    given.run(Step::ActivateNumber).await;

    assert_eq!(given.events_sent(), vec!["number.activated"]);
}

#[tokio::test]
async fn a_step_already_done_resends_the_next_message_without_calling_meta() {
    let given = given_pending_at(Step::RegisterNumber);

    let outcome = given.run(Step::SubscribeWaba).await;

    assert_eq!(outcome, Outcome::Done);
    assert!(given.meta().calls().is_empty());
    assert_eq!(given.steps_sent(), vec![Step::RegisterNumber]);
}

#[tokio::test]
async fn a_step_that_arrives_before_its_turn_is_dropped() {
    let given = given_pending_at(Step::SubscribeWaba);

    let outcome = given.run(Step::ConfigurePin).await;

    assert_eq!(outcome, Outcome::Done);
    assert!(given.meta().calls().is_empty());
    assert_eq!(given.now().provisioning_step, Some(Step::SubscribeWaba));
    assert!(given.steps_sent().is_empty());
}

#[tokio::test]
async fn meta_refusing_for_good_fails_the_number_with_meta_s_reason() {
    let given = given_pending_at(Step::SubscribeWaba);
    given
        .meta()
        .fail_next(MetaCallKind::SubscribeApp, refusal(200));

    let outcome = given.run(Step::SubscribeWaba).await;

    assert_eq!(outcome, Outcome::Done);
    let number = given.now();
    assert_eq!(number.status, Status::Failed);
    let reason = number.failure_reason.expect("a reason");
    assert_eq!(
        (reason.step.as_str(), reason.code.as_str()),
        ("SUBSCRIBE_WABA", "200")
    );
    assert_eq!(given.events_sent(), vec!["number.failed"]);
    assert_eq!(
        given.store().phone_holder("2000"),
        None,
        "the phone is free again"
    );
    assert!(given.steps_sent().is_empty());
}

#[tokio::test]
async fn a_transient_meta_error_is_retried_later_and_remembered() {
    let given = given_pending_at(Step::RegisterNumber);
    given.meta().fail_next(
        MetaCallKind::Register,
        MetaError::from_envelope(503, 2, None, true, "Service temporarily unavailable".into()),
    );

    let outcome = given.run(Step::RegisterNumber).await;

    assert!(matches!(outcome, Outcome::RetryAfter(seconds) if seconds > 0));
    let number = given.now();
    assert_eq!(number.status, Status::Pending);
    assert_eq!(number.provisioning_step, Some(Step::RegisterNumber));
    assert_eq!(
        number.provisioning_error.map(|r| r.code),
        Some("2".to_string())
    );
    assert!(given.steps_sent().is_empty());
}

#[tokio::test]
async fn the_retry_after_a_transient_error_succeeds_and_forgets_it() {
    let given = given_pending_at(Step::RegisterNumber);
    given.meta().fail_next(
        MetaCallKind::Register,
        MetaError::transport("timeout", "timed out"),
    );
    given.run(Step::RegisterNumber).await;

    let outcome = given.run(Step::RegisterNumber).await;

    assert_eq!(outcome, Outcome::Done);
    let number = given.now();
    assert_eq!(number.provisioning_step, Some(Step::ConfigurePin));
    assert!(number.registered);
    assert_eq!(number.provisioning_error, None);
    assert_eq!(given.meta().count(MetaCallKind::Register), 2);
}

#[tokio::test]
async fn a_retried_exchange_reuses_the_stored_token_instead_of_the_spent_code() {
    let given = given_pending_at(Step::ExchangeToken);
    // Given a token an earlier run stored before it crashed
    given.vault().put(&given.number.id, secrets());
    let mut message = step_message(&given.number, Step::ExchangeToken);
    message.code = Some(Secret::new("AQB-code"));

    // When the message comes back
    given.run_redelivered(message).await;

    // Then the stored token is used and the spent code not sent again
    assert_eq!(given.meta().count(MetaCallKind::ExchangeCode), 0);
    assert_eq!(given.now().provisioning_step, Some(Step::SubscribeWaba));
}

#[tokio::test]
async fn a_first_exchange_with_its_code_reads_no_stored_token() {
    // Given a new signup's first message (sent after the number was written)
    let given = given_pending_at(Step::ExchangeToken);
    let mut message = step_message(&given.number, Step::ExchangeToken);
    message.code = Some(Secret::new("AQB-code"));

    // When the exchange runs
    given.run_message(message).await;

    // Then it exchanges and stores the token without first reading the vault
    assert_eq!(given.meta().count(MetaCallKind::ExchangeCode), 1);
    assert!(given.vault().holds(&given.number.id));
    assert_eq!(given.vault().loads(), 0);
    assert_eq!(given.steps_sent(), vec![Step::SubscribeWaba]);
}

#[tokio::test]
async fn a_resent_first_exchange_uses_the_token_a_copy_sent_before_stored() {
    // Given a token the first copy's run stored (its send's answer was lost, so a repeated
    // callback sent the exchange again)
    let given = given_pending_at(Step::ExchangeToken);
    given.vault().put(&given.number.id, secrets());
    let mut message = step_message(&given.number, Step::ExchangeToken);
    message.code = Some(Secret::new("AQB-code"));
    message.resent = true;

    // When the resent copy is delivered for the first time
    given.run_message(message).await;

    // Then it finds that token and does not spend the code again
    assert_eq!(given.meta().count(MetaCallKind::ExchangeCode), 0);
    assert_eq!(given.now().provisioning_step, Some(Step::SubscribeWaba));
}

/// Meta's answer to a code exchanged before.
fn code_used() -> MetaError {
    MetaError::from_envelope(
        400,
        100,
        Some(crate::domain::meta::CODE_USED),
        false,
        "This authorization code has been used.".into(),
    )
}

#[tokio::test]
async fn an_exchange_whose_code_another_copy_spent_waits_for_that_copy_s_token() {
    // Given two copies of the first message, the other one's run having spent the code
    let given = given_pending_at(Step::ExchangeToken);
    given
        .meta()
        .fail_next(MetaCallKind::ExchangeCode, code_used());
    let mut message = step_message(&given.number, Step::ExchangeToken);
    message.code = Some(Secret::new("AQB-code"));
    message.resent = true;

    // When this copy runs before that token is stored
    let outcome = given.run_message(message.clone()).await;

    // Then it waits, the number untouched
    assert!(matches!(outcome, Outcome::RetryAfter(seconds) if seconds > 0));
    assert_eq!(given.now(), given.number);

    // And its retry, once the other copy stored the token, goes on without the code
    given.vault().put(&given.number.id, secrets());
    given.run_redelivered(message).await;
    assert_eq!(given.meta().count(MetaCallKind::ExchangeCode), 1);
    assert_eq!(given.now().provisioning_step, Some(Step::SubscribeWaba));
}

#[tokio::test]
async fn a_spent_code_with_no_token_after_a_few_waits_fails_the_number() {
    // Given a code spent by a run whose token was never stored
    let given = given_pending_at(Step::ExchangeToken);
    given
        .meta()
        .fail_next(MetaCallKind::ExchangeCode, code_used());
    let mut message = step_message(&given.number, Step::ExchangeToken);
    message.code = Some(Secret::new("AQB-code"));

    // When its last waiting delivery gets Meta's answer again
    given.deliver(message, CODE_USED_WAITS).await;

    // Then the number fails with Meta's code
    let number = given.now();
    assert_eq!(number.status, Status::Failed);
    assert_eq!(
        number.failure_reason.map(|r| r.code),
        Some("100/36009".to_string())
    );
}

#[tokio::test]
async fn the_exchange_stores_the_token_and_its_expiry() {
    let given = given_pending_at(Step::ExchangeToken);
    given.meta().set_token_expires_in(Some(60 * 24 * 3600));
    let mut message = step_message(&given.number, Step::ExchangeToken);
    message.code = Some(Secret::new("AQB-code"));

    given.run_message(message).await;

    assert!(given.vault().holds(&given.number.id));
    assert!(given.now().token_expires_at.is_some());
    assert_eq!(given.steps_sent(), vec![Step::SubscribeWaba]);
}

#[tokio::test]
async fn an_exchange_without_a_code_fails_the_number() {
    let given = given_pending_at(Step::ExchangeToken);

    given.run(Step::ExchangeToken).await;

    let number = given.now();
    assert_eq!(number.status, Status::Failed);
    assert_eq!(
        number.failure_reason.map(|r| r.code),
        Some("missing_code".into())
    );
}

/// A new number at the exchange, signed up while its phone was live in another account or not,
/// and its first message with the code.
fn given_signed_up(phone_elsewhere: bool) -> (Given, StepMessage) {
    let mut given = given_pending_at(Step::ExchangeToken);
    given.number.phone_elsewhere = phone_elsewhere;
    given.store().insert_number(given.number.clone());
    let mut message = step_message(&given.number, Step::ExchangeToken);
    message.code = Some(Secret::new("AQB-code"));
    (given, message)
}

#[tokio::test]
async fn a_number_whose_phone_is_live_elsewhere_fails_at_the_exchange_once_its_token_reads_the_phone()
 {
    // Given a new number signed up while its phone was live in another account
    let (given, message) = given_signed_up(true);

    // When its exchange runs, and the signup's token reads the phone (control at Meta)
    given.run_message(message).await;

    // Then the number fails saying the phone is in use, and nothing else is asked of Meta
    let number = given.now();
    assert_eq!(number.status, Status::Failed);
    let reason = number.failure_reason.expect("a reason");
    assert_eq!(reason.step, "EXCHANGE_TOKEN");
    assert_eq!(reason.code, PHONE_NUMBER_IN_USE);
    assert_eq!(
        given.meta().calls(),
        vec![
            MetaCall::ExchangeCode,
            MetaCall::PhoneProfile {
                phone_number_id: "2000".into()
            },
        ]
    );
    assert!(given.steps_sent().is_empty());
    assert_eq!(given.events_sent(), ["number.failed"]);
}

#[tokio::test]
async fn a_token_that_cannot_read_its_phone_fails_the_number_alike_whether_the_phone_is_live_elsewhere_or_not()
 {
    let mut outcomes = Vec::new();
    for phone_elsewhere in [false, true] {
        // Given a new number, its phone live in another account or not
        let (given, message) = given_signed_up(phone_elsewhere);
        // When its exchange runs and the signup's token cannot read the phone
        given
            .meta()
            .fail_next(MetaCallKind::PhoneProfile, refusal(200));
        given.run_message(message).await;
        let number = given.now();
        outcomes.push((
            number.status,
            number.failure_reason,
            given.steps_sent(),
            given.events_sent(),
        ));
    }
    // Then it fails at the exchange with Meta's answer, the same either way
    assert_eq!(outcomes[0], outcomes[1]);
    let (status, reason, _, _) = &outcomes[0];
    assert_eq!(*status, Status::Failed);
    let reason = reason.as_ref().expect("a reason");
    assert_eq!(
        (reason.step.as_str(), reason.code.as_str()),
        ("EXCHANGE_TOKEN", "200")
    );
}

#[tokio::test]
async fn a_new_number_whose_token_reads_its_phone_goes_on_to_the_waba() {
    let (given, message) = given_signed_up(false);

    given.run_message(message).await;

    assert_eq!(given.meta().count(MetaCallKind::PhoneProfile), 1);
    assert_eq!(given.now().provisioning_step, Some(Step::SubscribeWaba));
    assert_eq!(given.steps_sent(), vec![Step::SubscribeWaba]);
}

#[tokio::test]
async fn the_profile_step_records_what_meta_shows() {
    let given = given_pending_at(Step::FetchProfile);
    given.meta().set_profile(PhoneProfile {
        display_phone_number: Some("+55 11 90000-0000".into()),
        verified_name: Some("Acme".into()),
        quality_rating: Some("GREEN".into()),
        ..PhoneProfile::default()
    });

    given.run(Step::FetchProfile).await;

    let number = given.now();
    assert_eq!(number.display_name.as_deref(), Some("Acme"));
    assert_eq!(number.quality_rating, Some(QualityRating::Green));
    assert_eq!(number.provisioning_step, Some(Step::ActivateNumber));
}

#[tokio::test]
async fn the_last_step_activates_and_announces_it_once() {
    let given = given_pending_at(Step::ActivateNumber);

    given.run(Step::ActivateNumber).await;
    given.run(Step::ActivateNumber).await;

    assert_eq!(given.now().status, Status::Active);
    assert_eq!(given.events_sent(), vec!["number.activated"]);
    assert_eq!(
        given
            .store()
            .count(&given.number.account_id, Status::Active),
        1
    );
    assert_eq!(
        given
            .store()
            .count(&given.number.account_id, Status::Pending),
        0
    );
}

fn sqs_event(body: String) -> SqsEvent {
    let mut message = SqsMessage::default();
    message.message_id = Some("m-1".into());
    message.body = Some(body);
    let mut event = SqsEvent::default();
    event.records = vec![message];
    event
}

#[tokio::test]
async fn a_dead_letter_fails_the_number_with_the_last_error_seen() {
    let given = given_pending_at(Step::RegisterNumber);
    given.meta().fail_next(
        MetaCallKind::Register,
        MetaError::from_envelope(500, 1, None, false, "An unknown error occurred".into()),
    );
    given.run(Step::RegisterNumber).await;
    let dead = serde_json::to_string(&step_message(&given.number, Step::RegisterNumber)).unwrap();

    let response = given.provisioner.handle_dead_letters(sqs_event(dead)).await;

    assert!(response.batch_item_failures.is_empty());
    let number = given.now();
    assert_eq!(number.status, Status::Failed);
    let reason = number.failure_reason.expect("a reason");
    assert_eq!(
        (reason.step.as_str(), reason.code.as_str()),
        ("REGISTER_NUMBER", "1")
    );
    assert_eq!(given.events_sent(), vec!["number.failed"]);
}

#[tokio::test]
async fn a_dead_letter_of_a_number_no_longer_pending_changes_nothing() {
    let given = given_pending_at(Step::ActivateNumber);
    given.run(Step::ActivateNumber).await;
    let dead = serde_json::to_string(&step_message(&given.number, Step::RegisterNumber)).unwrap();

    given.provisioner.handle_dead_letters(sqs_event(dead)).await;

    assert_eq!(given.now().status, Status::Active);
    assert_eq!(given.events_sent(), vec!["number.activated"]);
}

// ---- Teardown ------------------------------------------------------------------------------

/// An active number, registered and subscribed, then disconnected by its customer.
async fn given_disconnected() -> Given {
    let given = given_pending_at(Step::ActivateNumber);
    let mut number = given.now();
    number.registered = true;
    number.subscribed = true;
    given.store().insert_number(number.clone());
    let disconnect = Command::Disconnect(DisconnectedBy::Customer);
    lifecycle::apply(given.store(), given.queue(), &number, disconnect)
        .await
        .unwrap();
    given
}

fn teardown_event(number: &Number) -> SqsEvent {
    let message = TeardownMessage::new(number.id.clone(), number.account_id.clone());
    sqs_event(serde_json::to_string(&message).unwrap())
}

#[tokio::test]
async fn a_teardown_deregisters_unsubscribes_and_deletes_the_token() {
    let given = given_disconnected().await;

    given
        .provisioner
        .handle_teardowns(teardown_event(&given.number))
        .await;

    assert_eq!(
        given.meta().calls(),
        vec![
            MetaCall::Deregister {
                phone_number_id: "2000".into()
            },
            MetaCall::UnsubscribeApp {
                waba_id: "1000".into()
            },
        ]
    );
    assert_eq!(given.vault().deleted(), vec![given.number.id.clone()]);
    assert!(given.now().torn_down_at.is_some());
}

#[tokio::test]
async fn a_teardown_right_after_the_number_ended_waits_for_a_step_still_calling_meta() {
    // Given a number that ended a moment ago, and steps that may run up to their timeout
    let mut given = given_disconnected().await;
    given.provisioner.retry.step_settle_seconds = 15;

    // When its teardown arrives at once
    let response = given
        .provisioner
        .handle_teardowns(teardown_event(&given.number))
        .await;

    // Then nothing is asked of Meta yet, and the teardown comes back once the steps are done
    assert!(given.meta().calls().is_empty());
    assert_eq!(response.batch_item_failures.len(), 1);
    assert!(given.now().torn_down_at.is_none());
}

#[tokio::test]
async fn a_teardown_after_the_settle_time_deregisters() {
    // Given a number that ended longer ago than any step runs
    let mut given = given_disconnected().await;
    given.provisioner.retry.step_settle_seconds = 15;
    let mut ended = given.now();
    ended.updated_at = time::now() - chrono::Duration::seconds(16);
    given.store().insert_number(ended);

    // When its teardown runs
    given
        .provisioner
        .handle_teardowns(teardown_event(&given.number))
        .await;

    // Then it deregisters and unsubscribes
    assert_eq!(given.meta().calls().len(), 2);
    assert!(given.now().torn_down_at.is_some());
}

#[tokio::test]
async fn a_teardown_twice_calls_meta_once() {
    let given = given_disconnected().await;

    given
        .provisioner
        .handle_teardowns(teardown_event(&given.number))
        .await;
    given
        .provisioner
        .handle_teardowns(teardown_event(&given.number))
        .await;

    assert_eq!(given.meta().calls().len(), 2);
}

#[tokio::test]
async fn a_teardown_keeps_the_waba_subscribed_while_a_sibling_lives() {
    let given = given_disconnected().await;
    let mut sibling = Number::new_pending(
        given.number.account_id.clone(),
        "1000".into(),
        "2001".into(),
        time::now(),
    );
    sibling.id = NumberId::from("num_sibling".to_string());
    given.store().insert_number(sibling);

    given
        .provisioner
        .handle_teardowns(teardown_event(&given.number))
        .await;

    assert_eq!(given.meta().count(MetaCallKind::UnsubscribeApp), 0);
    assert_eq!(given.meta().count(MetaCallKind::Deregister), 1);
}

#[tokio::test]
async fn a_teardown_of_a_live_number_is_refused() {
    let given = given_pending_at(Step::ActivateNumber);
    given.run(Step::ActivateNumber).await;

    given
        .provisioner
        .handle_teardowns(teardown_event(&given.number))
        .await;

    assert!(given.meta().calls().is_empty());
    assert!(given.vault().holds(&given.number.id));
}

#[tokio::test]
async fn a_teardown_tolerates_meta_refusing_and_still_deletes_the_token() {
    let given = given_disconnected().await;
    given
        .meta()
        .fail_next(MetaCallKind::Deregister, refusal(190));

    given
        .provisioner
        .handle_teardowns(teardown_event(&given.number))
        .await;

    assert_eq!(given.vault().deleted(), vec![given.number.id.clone()]);
    assert!(given.now().torn_down_at.is_some());
}

#[tokio::test]
async fn every_write_of_a_number_bumps_its_version() {
    let given = given_pending_at(Step::SubscribeWaba);
    given.run(Step::SubscribeWaba).await;
    let read = given
        .store()
        .get(&given.number.account_id, &given.number.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.version, given.number.version + 1);
    assert_eq!(read.status, Status::Pending);
}

// ---- The register budget ----

fn display_name_not_ready() -> MetaError {
    MetaError::from_envelope(
        400,
        100,
        Some(2388001),
        false,
        "(#100) Invalid parameter".into(),
    )
    .with_user_text(crate::domain::meta::UserText::new(
        Some("Display name not processed"),
        Some("Edit the display name in WhatsApp Manager."),
        Some("Display name could not be processed"),
    ))
}

#[tokio::test]
async fn each_register_request_is_counted_on_the_number_before_it_is_sent() {
    let given = given_pending_at(Step::RegisterNumber);

    given.run(Step::RegisterNumber).await;

    assert_eq!(given.meta().count(MetaCallKind::Register), 1);
    assert_eq!(given.now().register_calls.len(), 1);
}

#[tokio::test]
async fn a_display_name_meta_has_not_processed_keeps_the_number_pending_with_meta_s_text() {
    let given = given_pending_at(Step::RegisterNumber);
    given
        .meta()
        .fail_next(MetaCallKind::Register, display_name_not_ready());

    let outcome = given.run(Step::RegisterNumber).await;

    assert!(matches!(outcome, Outcome::RetryAfter(seconds) if seconds > 0));
    let number = given.now();
    assert_eq!(number.status, Status::Pending);
    assert_eq!(number.register_calls.len(), 1);
    let view = crate::domain::view::NumberView::from(&number);
    let pending = view.pending_reason.expect("pendingReason");
    assert_eq!(pending.step, "REGISTER_NUMBER");
    assert_eq!(pending.code, "100/2388001");
    assert_eq!(
        pending.user_message.as_deref(),
        Some("Edit the display name in WhatsApp Manager.")
    );
}

fn phone_in_review() -> PhoneProfile {
    PhoneProfile {
        status: Some("PENDING".into()),
        name_status: Some("PENDING_REVIEW".into()),
        verified_name: Some("Acme".into()),
        code_verification_status: Some("VERIFIED".into()),
        ..PhoneProfile::default()
    }
}

/// A number whose register Meta answered 2388001 `calls` times, with the phone in review.
async fn given_waiting_on_the_display_name(calls: usize) -> Given {
    let given = given_pending_at(Step::RegisterNumber);
    given.meta().set_profile(phone_in_review());
    for _ in 0..calls {
        given
            .meta()
            .fail_next(MetaCallKind::Register, display_name_not_ready());
        given.run(Step::RegisterNumber).await;
    }
    given
}

#[tokio::test]
async fn on_2388001_the_phone_is_read_and_its_name_status_shown() {
    let given = given_waiting_on_the_display_name(1).await;

    let number = given.now();
    assert_eq!(given.meta().count(MetaCallKind::PhoneProfile), 1);
    assert_eq!(number.name_status.as_deref(), Some("PENDING_REVIEW"));
    assert_eq!(
        number.register_waiting_on,
        Some(phone_in_review().fingerprint())
    );
}

#[tokio::test]
async fn an_unchanged_phone_is_not_registered_again_once_the_blind_share_is_spent() {
    let given =
        given_waiting_on_the_display_name(crate::domain::lifecycle::BLIND_REGISTER_CALLS).await;
    assert_eq!(
        given.meta().count(MetaCallKind::Register),
        crate::domain::lifecycle::BLIND_REGISTER_CALLS
    );

    let outcome = given.run(Step::RegisterNumber).await;

    // The phone was read again, showed nothing new, and no register request went out.
    assert!(matches!(outcome, Outcome::RetryAfter(seconds) if seconds > 0));
    assert_eq!(
        given.meta().count(MetaCallKind::Register),
        crate::domain::lifecycle::BLIND_REGISTER_CALLS
    );
    assert_eq!(given.now().status, Status::Pending);
    assert_eq!(
        given.now().register_calls.len(),
        crate::domain::lifecycle::BLIND_REGISTER_CALLS
    );
}

#[tokio::test]
async fn a_phone_whose_name_meta_approved_meanwhile_is_registered_again_at_once() {
    let given =
        given_waiting_on_the_display_name(crate::domain::lifecycle::BLIND_REGISTER_CALLS).await;
    given.meta().set_profile(PhoneProfile {
        name_status: Some("APPROVED".into()),
        ..phone_in_review()
    });

    let outcome = given.run(Step::RegisterNumber).await;

    assert_eq!(outcome, Outcome::Done);
    assert_eq!(
        given.meta().count(MetaCallKind::Register),
        crate::domain::lifecycle::BLIND_REGISTER_CALLS + 1
    );
    let number = given.now();
    assert_eq!(number.provisioning_step, Some(Step::ConfigurePin));
    assert_eq!(number.name_status.as_deref(), Some("APPROVED"));
    assert_eq!(number.register_waiting_on, None);
    assert_eq!(given.steps_sent().last(), Some(&Step::ConfigurePin));
}

#[tokio::test]
async fn an_unchanged_phone_past_the_bound_fails_with_meta_s_text_without_registering() {
    let given =
        given_waiting_on_the_display_name(crate::domain::lifecycle::BLIND_REGISTER_CALLS).await;
    let mut number = given.now();
    number.created_at = time::now() - chrono::Duration::days(8);
    given.store().insert_number(number);

    given.run(Step::RegisterNumber).await;

    let number = given.now();
    assert_eq!(number.status, Status::Failed);
    assert_eq!(
        number
            .failure_reason
            .and_then(|r| r.user_message)
            .as_deref(),
        Some("Edit the display name in WhatsApp Manager.")
    );
    assert_eq!(
        given.meta().count(MetaCallKind::Register),
        crate::domain::lifecycle::BLIND_REGISTER_CALLS
    );
}

#[tokio::test]
async fn no_register_request_is_sent_beyond_the_budget_and_the_step_waits_for_it() {
    let given = given_pending_at(Step::RegisterNumber);
    let mut number = given.now();
    let now = time::now();
    number.register_calls = (0..8).map(|h| now - chrono::Duration::hours(h)).collect();
    given.store().insert_number(number);

    let outcome = given.run(Step::RegisterNumber).await;

    assert_eq!(given.meta().count(MetaCallKind::Register), 0);
    // The oldest of the eight leaves the 72 h window in 65 h; one redelivery waits at most the
    // policy's longest delay.
    assert_eq!(outcome, Outcome::RetryAfter(3600));
    assert_eq!(given.now().status, Status::Pending);
}

#[tokio::test]
async fn a_number_waiting_on_its_display_name_past_the_bound_fails_with_meta_s_text() {
    let given = given_pending_at(Step::RegisterNumber);
    let mut number = given.now();
    number.created_at = time::now() - chrono::Duration::days(8);
    given.store().insert_number(number);
    given
        .meta()
        .fail_next(MetaCallKind::Register, display_name_not_ready());

    let outcome = given.run(Step::RegisterNumber).await;

    assert_eq!(outcome, Outcome::Done);
    let number = given.now();
    assert_eq!(number.status, Status::Failed);
    let reason = number.failure_reason.expect("failureReason");
    assert_eq!(reason.code, "100/2388001");
    assert_eq!(
        reason.user_message.as_deref(),
        Some("Edit the display name in WhatsApp Manager.")
    );
    assert_eq!(given.events_sent(), vec!["number.failed"]);
}

#[tokio::test]
async fn a_spent_budget_past_the_bound_fails_the_number_with_its_last_pending_reason() {
    let given = given_pending_at(Step::RegisterNumber);
    let mut number = given.now();
    let now = time::now();
    number.created_at = now - chrono::Duration::days(8);
    number.register_calls = (0..8).map(|h| now - chrono::Duration::hours(h)).collect();
    number.provisioning_error = Some(display_name_not_ready().failure_reason(Step::RegisterNumber));
    given.store().insert_number(number);

    given.run(Step::RegisterNumber).await;

    assert_eq!(given.meta().count(MetaCallKind::Register), 0);
    let number = given.now();
    assert_eq!(number.status, Status::Failed);
    assert_eq!(
        number
            .failure_reason
            .and_then(|r| r.user_message)
            .as_deref(),
        Some("Edit the display name in WhatsApp Manager.")
    );
}

#[tokio::test]
async fn a_teardown_counts_its_deregister_and_waits_while_the_budget_is_spent() {
    let given = given_disconnected().await;
    let mut number = given.now();
    let now = time::now();
    number.register_calls = (0..8).map(|h| now - chrono::Duration::hours(h)).collect();
    given.store().insert_number(number);

    given
        .provisioner
        .handle_teardowns(teardown_event(&given.number))
        .await;

    assert_eq!(given.meta().count(MetaCallKind::Deregister), 0);
    assert_eq!(given.now().torn_down_at, None);
    assert!(given.vault().deleted().is_empty());
}

#[tokio::test]
async fn a_teardown_deregister_is_counted_on_the_number() {
    let given = given_disconnected().await;

    given
        .provisioner
        .handle_teardowns(teardown_event(&given.number))
        .await;

    let number = given.now();
    assert_eq!(number.register_calls.len(), 1);
    assert!(number.torn_down_at.is_some());
}

#[tokio::test]
async fn an_unfinished_deregistration_is_deregistered_then_registered_again_each_counted() {
    let given = given_pending_at(Step::RegisterNumber);
    given.meta().fail_next(
        MetaCallKind::Register,
        MetaError::from_envelope(500, 133000, None, false, "Incomplete deregistration".into()),
    );

    let outcome = given.run(Step::RegisterNumber).await;

    assert!(matches!(outcome, Outcome::RetryAfter(seconds) if seconds > 0));
    assert_eq!(given.meta().count(MetaCallKind::Deregister), 1);
    assert_eq!(given.now().register_calls.len(), 2);
    assert_eq!(given.now().status, Status::Pending);

    given.run(Step::RegisterNumber).await;
    assert_eq!(given.meta().count(MetaCallKind::Register), 2);
    assert_eq!(given.now().register_calls.len(), 3);
}

// ---- Reconnect ---------------------------------------------------------------------------

const RECONNECT: &str = "rcn_test";

/// An `ACTIVE` number reconnecting, its reconnect at `step`, its first token stored.
fn given_reconnecting_at(step: Step) -> Given {
    let mut given = given_pending_at(Step::FetchProfile);
    let mut number = given.number.clone();
    number.status = Status::Active;
    number.provisioning_step = None;
    number.subscribed = true;
    number.registered = true;
    number.reconnect = Some(crate::domain::Reconnect {
        id: RECONNECT.into(),
        step,
        started_at: time::now(),
        last_error: None,
    });
    given.provisioner.store.insert_number(number.clone());
    given.number = number;
    given
}

fn reconnect_message(number: &Number, step: Step) -> StepMessage {
    let mut message = StepMessage::reconnecting(
        number.id.clone(),
        number.account_id.clone(),
        step,
        "trc_test".into(),
        RECONNECT.into(),
    );
    if step == Step::ExchangeToken {
        message.code = Some(Secret::new("new-code"));
    }
    message
}

impl Given {
    async fn run_reconnect(&self, step: Step) -> Outcome {
        self.run_message(reconnect_message(&self.number, step))
            .await
    }

    fn reconnect_step(&self) -> Option<Step> {
        self.now().reconnect.map(|r| r.step)
    }

    fn reconnect_messages_sent(&self) -> Vec<Step> {
        self.queue()
            .sent()
            .into_iter()
            .filter_map(|(queue, body)| {
                let message: StepMessage = serde_json::from_str(&body).ok()?;
                match queue {
                    Queue::Step(step) if message.reconnect.as_deref() == Some(RECONNECT) => {
                        Some(step)
                    }
                    _ => None,
                }
            })
            .collect()
    }
}

#[tokio::test]
async fn a_reconnect_exchange_stores_the_new_token_as_a_new_version_keeping_the_pin() {
    let given = given_reconnecting_at(Step::ExchangeToken);
    given.meta().set_token_expires_in(Some(3600));

    let outcome = given.run_reconnect(Step::ExchangeToken).await;

    assert_eq!(outcome, Outcome::Done);
    let stored = given.vault().secrets(&given.number.id).unwrap();
    assert_ne!(stored.token, secrets().token);
    assert_eq!(stored.pin, secrets().pin);
    assert_eq!(stored.reconnect_id.as_deref(), Some(RECONNECT));
    assert_eq!(given.vault().versions(&given.number.id), 2);
    let number = given.now();
    assert_eq!(number.status, Status::Active);
    assert_eq!(number.token_expires_at, stored.token_expires_at);
    assert_eq!(given.reconnect_step(), Some(Step::SubscribeWaba));
    assert_eq!(given.reconnect_messages_sent(), vec![Step::SubscribeWaba]);
}

#[tokio::test]
async fn a_redelivered_reconnect_exchange_does_not_spend_the_code_again() {
    let given = given_reconnecting_at(Step::ExchangeToken);
    // A first delivery stored the token, then crashed before recording the step.
    let mut stored = secrets();
    stored.token = Secret::new("EAAG-new");
    stored.reconnect_id = Some(RECONNECT.into());
    given.vault().put(&given.number.id, stored);

    given.run_reconnect(Step::ExchangeToken).await;

    assert_eq!(given.meta().count(MetaCallKind::ExchangeCode), 0);
    assert_eq!(given.reconnect_step(), Some(Step::SubscribeWaba));
    assert_eq!(given.reconnect_messages_sent(), vec![Step::SubscribeWaba]);
}

#[tokio::test]
async fn a_reconnect_subscribes_the_waba_again_and_refreshes_the_profile_without_registering() {
    let given = given_reconnecting_at(Step::SubscribeWaba);
    given.meta().set_profile(PhoneProfile {
        display_phone_number: Some("+55 11 90000-0002".into()),
        verified_name: Some("Acme Two".into()),
        quality_rating: Some("YELLOW".into()),
        platform_type: Some("CLOUD_API".into()),
        ..PhoneProfile::default()
    });

    given.run_reconnect(Step::SubscribeWaba).await;
    given.run_reconnect(Step::FetchProfile).await;

    assert_eq!(given.meta().count(MetaCallKind::SubscribeApp), 1);
    assert_eq!(given.meta().count(MetaCallKind::Register), 0);
    let number = given.now();
    assert_eq!(number.display_name.as_deref(), Some("Acme Two"));
    assert_eq!(number.quality_rating, Some(QualityRating::Yellow));
    assert_eq!(given.reconnect_step(), Some(Step::ActivateNumber));
    assert_eq!(
        given.reconnect_messages_sent(),
        vec![Step::FetchProfile, Step::ActivateNumber]
    );
}

#[tokio::test]
async fn a_reconnect_registers_a_number_meta_says_is_not_registered_counting_the_budget() {
    let given = given_reconnecting_at(Step::FetchProfile);
    given.meta().set_profile(PhoneProfile {
        platform_type: Some("NOT_APPLICABLE".into()),
        ..PhoneProfile::default()
    });

    given.run_reconnect(Step::FetchProfile).await;

    assert_eq!(
        given.meta().calls().last(),
        Some(&MetaCall::Register {
            phone_number_id: "2000".into()
        })
    );
    let number = given.now();
    assert_eq!(number.register_calls.len(), 1);
    assert_eq!(given.reconnect_step(), Some(Step::ActivateNumber));
}

#[tokio::test]
async fn a_reconnect_with_the_register_budget_spent_waits_without_registering() {
    let mut given = given_reconnecting_at(Step::FetchProfile);
    let now = time::now();
    let mut number = given.number.clone();
    number.register_calls = (0..8).map(|h| now - chrono::Duration::hours(h)).collect();
    given.store().insert_number(number.clone());
    given.number = number;
    given.meta().set_profile(PhoneProfile {
        platform_type: Some("NOT_APPLICABLE".into()),
        ..PhoneProfile::default()
    });

    let outcome = given.run_reconnect(Step::FetchProfile).await;

    assert!(matches!(outcome, Outcome::RetryAfter(_)), "{outcome:?}");
    assert_eq!(given.meta().count(MetaCallKind::Register), 0);
    assert_eq!(given.reconnect_step(), Some(Step::FetchProfile));
}

#[tokio::test]
async fn the_last_reconnect_step_announces_number_reconnected_and_keeps_the_status() {
    let given = given_reconnecting_at(Step::ActivateNumber);

    given.run_reconnect(Step::ActivateNumber).await;
    given.run_reconnect(Step::ActivateNumber).await;

    let number = given.now();
    assert_eq!(number.status, Status::Active);
    assert_eq!(number.id, given.number.id);
    assert_eq!(number.reconnect, None);
    assert!(number.reconnected_at.is_some());
    assert_eq!(given.events_sent(), vec!["number.reconnected"]);
}

#[tokio::test]
async fn meta_refusing_a_reconnect_step_abandons_the_reconnect_not_the_number() {
    let given = given_reconnecting_at(Step::SubscribeWaba);
    given
        .meta()
        .fail_next(MetaCallKind::SubscribeApp, refusal(200));

    let outcome = given.run_reconnect(Step::SubscribeWaba).await;

    assert_eq!(outcome, Outcome::Done);
    let number = given.now();
    assert_eq!(number.status, Status::Active);
    assert_eq!(number.reconnect, None);
    assert!(number.reconnect_failure.is_some());
    assert_eq!(given.events_sent(), vec!["number.reconnect_failed"]);
    assert!(given.queue().sent_to(Queue::Teardown).is_empty());
}

#[tokio::test]
async fn a_transient_reconnect_failure_is_retried_and_its_dead_letter_abandons_it_with_meta_s_reason()
 {
    let given = given_reconnecting_at(Step::SubscribeWaba);
    given.meta().fail_next(
        MetaCallKind::SubscribeApp,
        MetaError::from_envelope(500, 2, None, true, "Service temporarily unavailable".into()),
    );

    let outcome = given.run_reconnect(Step::SubscribeWaba).await;
    assert!(matches!(outcome, Outcome::RetryAfter(_)), "{outcome:?}");
    assert_eq!(given.reconnect_step(), Some(Step::SubscribeWaba));

    let message = reconnect_message(&given.number, Step::SubscribeWaba);
    let event = sqs_event(serde_json::to_string(&message).unwrap());
    given.provisioner.handle_dead_letters(event).await;

    let number = given.now();
    assert_eq!(number.status, Status::Active);
    assert_eq!(number.reconnect, None);
    assert_eq!(
        number.reconnect_failure.map(|r| r.step),
        Some("SUBSCRIBE_WABA".to_string())
    );
}

#[tokio::test]
async fn a_message_of_another_reconnect_is_dropped_without_calling_meta() {
    let given = given_reconnecting_at(Step::SubscribeWaba);
    let mut stale = reconnect_message(&given.number, Step::SubscribeWaba);
    stale.reconnect = Some("rcn_older".into());

    let outcome = given.run_message(stale).await;

    assert_eq!(outcome, Outcome::Done);
    assert!(given.meta().calls().is_empty());
    assert_eq!(given.reconnect_step(), Some(Step::SubscribeWaba));
}

#[tokio::test]
async fn a_reconnect_step_already_done_resends_the_next_message() {
    let given = given_reconnecting_at(Step::FetchProfile);

    given.run_reconnect(Step::SubscribeWaba).await;

    assert!(given.meta().calls().is_empty());
    assert_eq!(given.reconnect_messages_sent(), vec![Step::FetchProfile]);
}

#[tokio::test]
async fn a_register_whose_answer_was_lost_is_not_sent_again_when_meta_shows_the_number_registered()
{
    // Given a register request that took effect at Meta but whose answer was lost
    let given = given_pending_at(Step::RegisterNumber);
    given.meta().fail_next(
        MetaCallKind::Register,
        MetaError::transport("timeout", "timed out"),
    );
    given.run(Step::RegisterNumber).await;
    given.meta().set_profile(PhoneProfile {
        platform_type: Some("CLOUD_API".into()),
        ..PhoneProfile::default()
    });

    // When the step runs again
    let outcome = given.run(Step::RegisterNumber).await;

    // Then the phone is read, no second register is sent or counted, and the chain moves on
    assert_eq!(outcome, Outcome::Done);
    assert_eq!(given.meta().count(MetaCallKind::Register), 1);
    let number = given.now();
    assert!(number.registered);
    assert_eq!(number.register_calls.len(), 1);
    assert_eq!(number.provisioning_step, Some(Step::ConfigurePin));
    assert_eq!(given.steps_sent(), vec![Step::ConfigurePin]);
}

#[tokio::test]
async fn a_register_retry_whose_phone_cannot_be_read_waits_instead_of_registering_blind() {
    // Given a register request whose answer was lost (it may have taken effect)
    let given = given_pending_at(Step::RegisterNumber);
    given.meta().fail_next(
        MetaCallKind::Register,
        MetaError::transport("timeout", "timed out"),
    );
    given.run(Step::RegisterNumber).await;
    // and Meta failing the read of the phone on the retry
    given.meta().fail_next(
        MetaCallKind::PhoneProfile,
        MetaError::from_envelope(500, 2, None, true, "Service temporarily unavailable".into()),
    );

    // When the step runs again
    let outcome = given.run(Step::RegisterNumber).await;

    // Then no second register is sent or counted, and the step retries with the read's error
    assert!(matches!(outcome, Outcome::RetryAfter(seconds) if seconds > 0));
    assert_eq!(given.meta().count(MetaCallKind::Register), 1);
    let number = given.now();
    assert_eq!(number.register_calls.len(), 1);
    assert_eq!(number.provisioning_step, Some(Step::RegisterNumber));
    assert_eq!(
        number.provisioning_error.map(|e| e.code),
        Some("2".to_string())
    );
}

#[tokio::test]
async fn a_register_retry_is_sent_again_when_meta_shows_the_number_not_registered() {
    // Given a register request that failed before it took effect
    let given = given_pending_at(Step::RegisterNumber);
    given.meta().fail_next(
        MetaCallKind::Register,
        MetaError::transport("timeout", "timed out"),
    );
    given.run(Step::RegisterNumber).await;
    given.meta().set_profile(PhoneProfile {
        platform_type: Some("NOT_APPLICABLE".into()),
        ..PhoneProfile::default()
    });

    // When the step runs again
    given.run(Step::RegisterNumber).await;

    // Then it registers again, counted
    assert_eq!(given.meta().count(MetaCallKind::Register), 2);
    let number = given.now();
    assert!(number.registered);
    assert_eq!(number.register_calls.len(), 2);
}

#[tokio::test]
async fn the_register_message_carries_its_number_as_the_step_before_committed_it() {
    // Given a number at the subscribe step
    let given = given_pending_at(Step::SubscribeWaba);

    // When the subscribe step is done
    given.run(Step::SubscribeWaba).await;

    // Then the register message carries the number as stored, beside its usual body
    let (body, snapshot) = given.received_for(Step::RegisterNumber);
    let message: StepMessage = serde_json::from_str(&body).unwrap();
    assert_eq!(message.step, Step::RegisterNumber);
    let snapshot = given
        .store()
        .number_from_snapshot(&snapshot.expect("a number snapshot"))
        .unwrap();
    assert_eq!(snapshot, given.now());
}

#[tokio::test]
async fn the_other_steps_messages_carry_no_snapshot() {
    // Given a number at the register step
    let given = given_pending_at(Step::RegisterNumber);

    // When the register step is done
    given.run(Step::RegisterNumber).await;

    // Then the PIN step's message is the body alone
    let (_, snapshot) = given.received_for(Step::ConfigurePin);
    assert_eq!(snapshot, None);
}

#[tokio::test]
async fn a_register_step_given_its_number_s_snapshot_counts_its_request_without_reading_the_number()
{
    // Given the register message the subscribe step sent, with its number's snapshot
    let given = given_pending_at(Step::SubscribeWaba);
    given.run(Step::SubscribeWaba).await;
    let (body, snapshot) = given.received_for(Step::RegisterNumber);
    let reads = given.store().number_reads();

    // When the register step receives it
    let outcome = given
        .deliver_received(Step::RegisterNumber, body, snapshot, 1)
        .await;

    // Then it registers once, counted, and moves on, without reading the number
    assert_eq!(outcome, Outcome::Done);
    assert_eq!(given.store().number_reads(), reads);
    assert_eq!(given.meta().count(MetaCallKind::Register), 1);
    let number = given.now();
    assert!(number.registered);
    assert_eq!(number.register_calls.len(), 1);
    assert_eq!(number.provisioning_step, Some(Step::ConfigurePin));
    assert_eq!(
        given.steps_sent(),
        vec![Step::RegisterNumber, Step::ConfigurePin]
    );
}

#[tokio::test]
async fn a_register_retry_with_its_stale_snapshot_reads_meta_before_registering_again() {
    // Given a register request, counted from the message's snapshot, whose answer was lost
    // though it took effect at Meta
    let given = given_pending_at(Step::SubscribeWaba);
    given.run(Step::SubscribeWaba).await;
    let (body, snapshot) = given.received_for(Step::RegisterNumber);
    given.meta().fail_next(
        MetaCallKind::Register,
        MetaError::transport("timeout", "timed out"),
    );
    let first = given
        .deliver_received(Step::RegisterNumber, body.clone(), snapshot.clone(), 1)
        .await;
    assert!(matches!(first, Outcome::RetryAfter(_)), "{first:?}");
    given.meta().set_profile(PhoneProfile {
        platform_type: Some("CLOUD_API".into()),
        ..PhoneProfile::default()
    });

    // When the same message comes back, its snapshot now older than the number
    let outcome = given
        .deliver_received(Step::RegisterNumber, body, snapshot, 2)
        .await;

    // Then the number as stored decides: the phone is read, no second register is sent or
    // counted, and the chain moves on
    assert_eq!(outcome, Outcome::Done);
    assert_eq!(given.meta().count(MetaCallKind::Register), 1);
    assert_eq!(given.meta().count(MetaCallKind::PhoneProfile), 1);
    let number = given.now();
    assert!(number.registered);
    assert_eq!(number.register_calls.len(), 1);
    assert_eq!(number.provisioning_step, Some(Step::ConfigurePin));
}

#[tokio::test]
async fn a_snapshot_of_another_number_is_not_used() {
    // Given a register message whose snapshot is another number's
    let given = given_pending_at(Step::RegisterNumber);
    let mut other = given.now();
    other.id = NumberId::from("num_other".to_string());
    let snapshot = given.store().number_snapshot(&other).unwrap();
    let body = serde_json::to_string(&step_message(&given.number, Step::RegisterNumber)).unwrap();

    // When the register step receives it
    let outcome = given
        .deliver_received(Step::RegisterNumber, body, Some(snapshot), 1)
        .await;

    // Then it reads its own number and registers it
    assert_eq!(outcome, Outcome::Done);
    assert_eq!(given.store().number_reads(), 1);
    let number = given.now();
    assert!(number.registered);
    assert_eq!(number.register_calls.len(), 1);
}

#[tokio::test]
async fn an_unreadable_snapshot_is_ignored_and_the_number_read() {
    // Given a register message whose snapshot is not a number
    let given = given_pending_at(Step::RegisterNumber);
    let body = serde_json::to_string(&step_message(&given.number, Step::RegisterNumber)).unwrap();

    // When the register step receives it
    let outcome = given
        .deliver_received(Step::RegisterNumber, body, Some("{not a number".into()), 1)
        .await;

    // Then the step runs on the number it read
    assert_eq!(outcome, Outcome::Done);
    assert_eq!(given.store().number_reads(), 1);
    assert!(given.now().registered);
}

mod client_secret;
mod long_waits;
mod rate_limits;
mod waba_only;
