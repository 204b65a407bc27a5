//! WABA-only signups (`FINISH_ONLY_WABA`) through the exchange-token queue, against the
//! in-memory adapters.

use super::*;
use crate::domain::lifecycle::waba::LIST_PHONES;
use crate::domain::messages::WabaSignupMessage;
use crate::domain::signup_session::{SessionState, SignupSession};
use crate::domain::waba_signup::{WabaOutcome, WabaSignup};
use crate::ports::{SignupLinks, SignupSessions, WabaSignups};

const WABA: &str = "1000";
const LINK: &str = "lnk_waba";

struct WabaGiven {
    provisioner: TestProvisioner,
    signup: WabaSignup,
}

fn provisioner() -> TestProvisioner {
    Provisioner {
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
    }
}

/// A WABA-only signup just received through a signup link, its WABA listing `phones`,
/// `page_size` per page.
async fn given_waba_signup(phones: &[&str], page_size: usize) -> WabaGiven {
    let provisioner = provisioner();
    let account = AccountId::from("acc_1".to_string());
    let now = time::now();
    let link = SignupSession::new(
        LINK.into(),
        account.clone(),
        now,
        now + chrono::Duration::hours(24),
        None,
    );
    provisioner.store.save_link(&link).await.unwrap();
    let signup = WabaSignup::new(account, WABA.into(), Some(LINK.into()), now);
    assert!(provisioner.store.create_waba_signup(&signup).await.unwrap());
    provisioner.meta.set_waba_phones(phones, page_size);
    WabaGiven {
        provisioner,
        signup,
    }
}

impl WabaGiven {
    fn message(&self) -> WabaSignupMessage {
        let mut message = WabaSignupMessage::new(
            self.signup.id.clone(),
            self.signup.account_id.clone(),
            "trc_waba".into(),
        );
        message.code = Some(Secret::new("AQB-code"));
        message
    }

    async fn run(&self) -> Outcome {
        let delivery = Delivery {
            message_id: "m-1".into(),
            body: serde_json::to_string(&self.message()).unwrap(),
            receive_count: 1,
            sent_at: Some(time::now()),
            number_snapshot: None,
        };
        self.provisioner
            .handle_step(Step::ExchangeToken, delivery)
            .await
    }

    async fn now(&self) -> WabaSignup {
        self.provisioner
            .store
            .waba_signup(&self.signup.account_id, &self.signup.id)
            .await
            .unwrap()
            .expect("the signup")
    }

    async fn link(&self) -> SignupSession {
        self.provisioner
            .store
            .link(LINK)
            .await
            .unwrap()
            .expect("the link")
    }

    fn numbers(&self) -> Vec<Number> {
        let mut numbers = self.provisioner.store.all_numbers();
        numbers.sort_by(|a, b| a.phone_number_id.cmp(&b.phone_number_id));
        numbers
    }

    fn first_steps_sent(&self) -> Vec<StepMessage> {
        self.provisioner
            .queue
            .sent_to(Queue::Step(Step::ExchangeToken))
            .into_iter()
            .map(|body| serde_json::from_value(body).expect("a number's step message"))
            .collect()
    }

    fn number_ids(&self, phones: &[&str]) -> Vec<NumberId> {
        phones
            .iter()
            .map(|p| self.signup.number_id_for(p))
            .collect()
    }
}

#[tokio::test]
async fn a_waba_only_signup_lists_every_page_and_creates_a_pending_number_per_phone() {
    let given = given_waba_signup(&["2001", "2002", "2003"], 2).await;

    let outcome = given.run().await;

    assert_eq!(outcome, Outcome::Done);
    let meta = given.provisioner.meta.calls();
    assert_eq!(meta[0], MetaCall::ExchangeCode);
    assert_eq!(
        meta[1..],
        [
            MetaCall::PhoneNumbers {
                waba_id: WABA.into(),
                after: None
            },
            MetaCall::PhoneNumbers {
                waba_id: WABA.into(),
                after: Some("2".into())
            },
        ]
    );
    let numbers = given.numbers();
    assert_eq!(
        numbers
            .iter()
            .map(|n| n.phone_number_id.as_str())
            .collect::<Vec<_>>(),
        ["2001", "2002", "2003"]
    );
    for number in &numbers {
        assert_eq!(
            number.id,
            given.signup.number_id_for(&number.phone_number_id)
        );
        assert_eq!(number.status, Status::Pending);
        assert_eq!(number.provisioning_step, Some(Step::ExchangeToken));
        assert_eq!(number.waba_id, WABA);
    }
    let sent = given.first_steps_sent();
    assert_eq!(sent.len(), 3, "one first step per number");
    assert!(
        sent.iter().all(|m| m.code.is_none()),
        "no code travels again"
    );
    assert_eq!(
        given.now().await.outcome,
        Some(WabaOutcome::Completed {
            number_ids: given.number_ids(&["2001", "2002", "2003"]),
            skipped: vec![],
        })
    );
}

#[tokio::test]
async fn each_number_gets_its_own_copy_of_the_token_and_the_signup_s_copy_is_deleted() {
    let given = given_waba_signup(&["2001", "2002"], 0).await;

    given.run().await;

    let vault = &given.provisioner.vault;
    let tokens: Vec<String> = given
        .numbers()
        .iter()
        .map(|n| {
            vault
                .secrets(&n.id)
                .expect("its own secret")
                .token
                .expose()
                .to_string()
        })
        .collect();
    assert_eq!(tokens[0], tokens[1], "the one token the code gave");
    let pins: Vec<String> = given
        .numbers()
        .iter()
        .map(|n| vault.secrets(&n.id).unwrap().pin.expose().to_string())
        .collect();
    assert_ne!(pins[0], pins[1], "each number has its own PIN");
    assert!(!vault.holds(&given.signup.vault_key()));
    assert_eq!(vault.deleted(), vec![given.signup.vault_key()]);
    assert!(given.now().await.token_deleted_at.is_some());
}

#[tokio::test]
async fn the_signup_link_completes_with_the_numbers_it_created() {
    let given = given_waba_signup(&["2001", "2002"], 0).await;
    assert_eq!(
        given.link().await.state(time::now()),
        SessionState::Connecting
    );

    given.run().await;

    let link = given.link().await;
    assert_eq!(link.state(time::now()), SessionState::Completed);
    assert_eq!(link.number_ids(), given.number_ids(&["2001", "2002"]));
}

#[tokio::test]
async fn running_the_listing_twice_creates_nothing_more() {
    let given = given_waba_signup(&["2001", "2002"], 0).await;
    given.run().await;
    let numbers = given.numbers();
    let calls = given.provisioner.meta.calls().len();

    let outcome = given.run().await;

    assert_eq!(outcome, Outcome::Done);
    assert_eq!(given.numbers(), numbers);
    assert_eq!(
        given.provisioner.meta.calls().len(),
        calls,
        "Meta is not asked again"
    );
    assert_eq!(given.first_steps_sent().len(), 2);
}

#[tokio::test]
async fn a_crash_midway_is_finished_by_the_redelivery_without_exchanging_the_code_again() {
    let given = given_waba_signup(&["2001", "2002", "2003"], 0).await;
    let first_number = given.signup.number_id_for("2001");
    // The crash: the exchange ran and the first number was written, then the process died
    // before its copy of the token was stored.
    given
        .provisioner
        .vault
        .put(&given.signup.vault_key(), secrets());
    let mut created = Number::new_pending(
        given.signup.account_id.clone(),
        WABA.into(),
        "2001".into(),
        time::now(),
    );
    created.id = first_number.clone();
    given.provisioner.store.insert_number(created);

    let outcome = given.run().await;

    assert_eq!(outcome, Outcome::Done);
    assert_eq!(
        given.provisioner.meta.count(MetaCallKind::ExchangeCode),
        0,
        "the stored token is used: the code is spent"
    );
    assert_eq!(given.numbers().len(), 3);
    let firsts: Vec<NumberId> = given
        .first_steps_sent()
        .into_iter()
        .map(|m| m.number_id)
        .collect();
    assert!(
        firsts.contains(&first_number),
        "the first number's message, which the crash may have lost, is sent again"
    );
    assert_eq!(firsts.len(), 3);
    assert_eq!(
        given
            .provisioner
            .vault
            .secrets(&first_number)
            .map(|s| s.token.expose().to_string()),
        Some(secrets().token.expose().to_string()),
        "its copy of the stored token is written now"
    );
}

#[tokio::test]
async fn a_failed_send_is_retried_and_the_retry_creates_no_second_number() {
    let given = given_waba_signup(&["2001", "2002"], 0).await;
    given.provisioner.queue.fail_next_sends(1);

    let crashed = given.run().await;
    assert!(matches!(crashed, Outcome::RetryAfter(_)), "{crashed:?}");
    assert_eq!(given.now().await.outcome, None);

    let outcome = given.run().await;

    assert_eq!(outcome, Outcome::Done);
    assert_eq!(given.numbers().len(), 2);
    assert_eq!(given.provisioner.meta.count(MetaCallKind::ExchangeCode), 1);
    assert!(given.now().await.outcome.is_some());
}

#[tokio::test]
async fn a_phone_live_in_another_number_is_skipped_and_the_others_onboarded() {
    let given = given_waba_signup(&["2001", "2002", "2003"], 0).await;
    let elsewhere = Number::new_pending(
        AccountId::from("acc_other".to_string()),
        "9999".into(),
        "2002".into(),
        time::now(),
    );
    given.provisioner.store.insert_number(elsewhere.clone());

    given.run().await;

    assert_eq!(
        given.now().await.outcome,
        Some(WabaOutcome::Completed {
            number_ids: given.number_ids(&["2001", "2003"]),
            skipped: vec!["2002".into()],
        })
    );
    let holder = given.provisioner.store.phone_holder("2002").unwrap();
    assert_eq!(
        holder.number_id, elsewhere.id,
        "the phone stays where it is"
    );
    assert!(
        !given
            .provisioner
            .vault
            .holds(&given.signup.number_id_for("2002")),
        "no secret for a number that was never created"
    );
}

#[tokio::test]
async fn a_waba_whose_phones_are_all_connected_elsewhere_fails_saying_so() {
    let given = given_waba_signup(&["2001"], 0).await;
    let elsewhere = Number::new_pending(
        AccountId::from("acc_other".to_string()),
        "9999".into(),
        "2001".into(),
        time::now(),
    );
    given.provisioner.store.insert_number(elsewhere);

    given.run().await;

    let Some(WabaOutcome::Failed(reason)) = given.now().await.outcome else {
        panic!("the signup fails");
    };
    assert_eq!(
        (reason.step.as_str(), reason.code.as_str()),
        (LIST_PHONES, "no_eligible_phones")
    );
    assert!(
        reason.message.contains("already connected"),
        "{}",
        reason.message
    );
    let link = given.link().await;
    assert_eq!(link.state(time::now()), SessionState::Failed);
    assert_eq!(link.waba_failure(), Some(&reason));
    assert!(!given.provisioner.vault.holds(&given.signup.vault_key()));
    assert_eq!(given.numbers().len(), 1, "no number of ours");
}

#[tokio::test]
async fn a_waba_without_phones_fails_saying_it_has_none() {
    let given = given_waba_signup(&[], 0).await;

    given.run().await;

    let Some(WabaOutcome::Failed(reason)) = given.now().await.outcome else {
        panic!("the signup fails");
    };
    assert_eq!(reason.code, "no_eligible_phones");
    assert!(
        reason.message.contains("has no phone numbers"),
        "{}",
        reason.message
    );
    assert!(given.numbers().is_empty());
}

#[tokio::test]
async fn meta_refusing_the_exchange_fails_the_signup_with_meta_s_reason_and_lists_nothing() {
    let given = given_waba_signup(&["2001"], 0).await;
    given
        .provisioner
        .meta
        .fail_next(MetaCallKind::ExchangeCode, code_used());

    given.run().await;

    let Some(WabaOutcome::Failed(reason)) = given.now().await.outcome else {
        panic!("the signup fails");
    };
    assert_eq!(
        (reason.step.as_str(), reason.code.as_str()),
        ("EXCHANGE_TOKEN", "100/36009")
    );
    assert_eq!(given.provisioner.meta.count(MetaCallKind::PhoneNumbers), 0);
    assert!(given.numbers().is_empty());
    assert!(!given.provisioner.vault.holds(&given.signup.vault_key()));
}

#[tokio::test]
async fn an_exchange_refused_for_the_app_secret_is_retried_while_the_code_lives() {
    // Given Meta refusing the app secret once (reset by the app's owner)
    let given = given_waba_signup(&["2001"], 0).await;
    let refused = MetaError::from_envelope(
        400,
        101,
        None,
        false,
        "Error validating client secret.".into(),
    )
    .on_code_exchange();
    given
        .provisioner
        .meta
        .fail_next(MetaCallKind::ExchangeCode, refused);

    // When the signup runs, and runs again
    let first = given.run().await;
    let retry = given.run().await;

    // Then it waited instead of failing, and its retry exchanged the code and went on
    assert!(matches!(first, Outcome::RetryAfter(_)), "{first:?}");
    assert_eq!(retry, Outcome::Done);
    assert_eq!(given.provisioner.meta.count(MetaCallKind::ExchangeCode), 2);
    assert!(matches!(
        given.now().await.outcome,
        Some(WabaOutcome::Completed { .. })
    ));
}

#[tokio::test]
async fn a_listing_meta_refuses_fails_the_signup_and_deletes_its_token() {
    let given = given_waba_signup(&["2001"], 0).await;
    given
        .provisioner
        .meta
        .fail_next(MetaCallKind::PhoneNumbers, refusal(200));

    given.run().await;

    let signup = given.now().await;
    let Some(WabaOutcome::Failed(reason)) = &signup.outcome else {
        panic!("the signup fails");
    };
    assert_eq!(
        (reason.step.as_str(), reason.code.as_str()),
        (LIST_PHONES, "200")
    );
    assert!(signup.token_deleted_at.is_some());
    assert!(!given.provisioner.vault.holds(&given.signup.vault_key()));
}

#[tokio::test]
async fn a_transient_listing_error_is_retried_and_its_dead_letter_fails_the_signup_with_it() {
    let given = given_waba_signup(&["2001", "2002"], 1).await;
    given.provisioner.meta.fail_next(
        MetaCallKind::PhoneNumbers,
        MetaError::from_envelope(500, 2, None, true, "Service temporarily unavailable".into()),
    );

    let outcome = given.run().await;

    assert!(
        matches!(outcome, Outcome::RetryAfter(s) if s > 0),
        "{outcome:?}"
    );
    let signup = given.now().await;
    assert_eq!(signup.outcome, None);
    assert_eq!(
        signup.last_error.as_ref().map(|r| r.code.as_str()),
        Some("2")
    );
    assert!(
        given.numbers().is_empty(),
        "nothing is created from a partial list"
    );

    let dead = serde_json::to_string(&given.message()).unwrap();
    let response = given.provisioner.handle_dead_letters(sqs_event(dead)).await;

    assert!(response.batch_item_failures.is_empty());
    let Some(WabaOutcome::Failed(reason)) = given.now().await.outcome else {
        panic!("the signup fails");
    };
    assert_eq!(
        (reason.step.as_str(), reason.code.as_str()),
        (LIST_PHONES, "2")
    );
    assert!(!given.provisioner.vault.holds(&given.signup.vault_key()));
}

#[tokio::test]
async fn a_message_before_the_callback_s_write_is_retried_shortly() {
    let provisioner = provisioner();
    let message = WabaSignupMessage::new(
        "wsu_notyet".into(),
        AccountId::from("acc_1".to_string()),
        "trc".into(),
    );
    let delivery = Delivery {
        message_id: "m-1".into(),
        body: serde_json::to_string(&message).unwrap(),
        receive_count: 1,
        sent_at: Some(time::now()),
        number_snapshot: None,
    };

    let outcome = provisioner.handle_step(Step::ExchangeToken, delivery).await;

    assert_eq!(outcome, Outcome::RetryAfter(2));
    assert!(provisioner.meta.calls().is_empty());
}

#[tokio::test]
async fn a_waba_signup_on_another_step_s_queue_is_unreadable() {
    let given = given_waba_signup(&["2001"], 0).await;
    let delivery = Delivery {
        message_id: "m-1".into(),
        body: serde_json::to_string(&given.message()).unwrap(),
        receive_count: 1,
        sent_at: Some(time::now()),
        number_snapshot: None,
    };

    let outcome = given
        .provisioner
        .handle_step(Step::SubscribeWaba, delivery)
        .await;

    assert_eq!(outcome, Outcome::Unreadable);
    assert!(given.provisioner.meta.calls().is_empty());
}

/// Runs the chain of every pending number, message by message, until no step message is left.
async fn drain_chain(given: &WabaGiven) {
    let mut handled = 0;
    loop {
        let sent = given.provisioner.queue.sent();
        let Some((queue, body)) = sent.get(handled).cloned() else {
            return;
        };
        handled += 1;
        if let Queue::Step(step) = queue {
            let delivery = Delivery {
                message_id: format!("m-{handled}"),
                body,
                receive_count: 1,
                sent_at: Some(time::now()),
                number_snapshot: None,
            };
            given.provisioner.handle_step(step, delivery).await;
        }
    }
}

#[tokio::test]
async fn each_new_number_continues_down_the_chain_to_active() {
    let given = given_waba_signup(&["2001", "2002"], 0).await;
    given.run().await;

    drain_chain(&given).await;

    for number in given.numbers() {
        assert_eq!(number.status, Status::Active, "{}", number.phone_number_id);
        assert!(number.subscribed && number.registered);
    }
    assert_eq!(
        given.provisioner.meta.count(MetaCallKind::ExchangeCode),
        1,
        "the numbers' exchange step finds their token stored"
    );
    assert_eq!(given.provisioner.meta.count(MetaCallKind::Register), 2);
    assert_eq!(given.provisioner.meta.count(MetaCallKind::SetPin), 2);
}

#[tokio::test]
async fn one_number_s_teardown_deletes_only_its_own_copy_of_the_shared_token() {
    let given = given_waba_signup(&["2001", "2002"], 0).await;
    given.run().await;
    drain_chain(&given).await;
    let numbers = given.numbers();
    let disconnect = Command::Disconnect(DisconnectedBy::Customer);
    lifecycle::apply(
        &given.provisioner.store,
        &given.provisioner.queue,
        &numbers[0],
        disconnect,
    )
    .await
    .unwrap();

    given
        .provisioner
        .handle_teardowns(teardown_event(&numbers[0]))
        .await;

    let vault = &given.provisioner.vault;
    assert!(!vault.holds(&numbers[0].id));
    assert!(vault.holds(&numbers[1].id), "the sibling keeps its token");
    assert!(
        !given
            .provisioner
            .meta
            .calls()
            .contains(&MetaCall::UnsubscribeApp {
                waba_id: WABA.into()
            }),
        "the WABA stays subscribed for the live sibling"
    );
}
