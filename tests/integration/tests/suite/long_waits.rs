//! Waits longer than SQS lets a message stay invisible (12 h from the receive that delivered
//! it), through moto and the AWS gateway (which refuses a ChangeMessageVisibility past that, as
//! SQS does), each step running with its own function's rights. Time passes as SQS keeps the
//! message away (the delay it took, else the queue's visibility timeout): the number's stored
//! times move back that far, and the message is made visible again at once.

use muchaw_shared::domain::lifecycle::{Change, Expected, PhoneGuard, REGISTER_BUDGET};
use muchaw_shared::domain::{AccountId, Number, NumberId, Status, Step, time};
use muchaw_shared::ports::{
    CommitOutcome, LifecycleStore, MAX_REDELIVERY_DELAY_SECONDS, NumberReader, Queue,
    REDELIVERY_MARGIN_SECONDS,
};
use muchaw_shared::provisioning::RetryPolicy;
use muchaw_tests::provisioning::{DelayAsked, ProvisioningEnv};

const WABA: &str = "100000000000071";
const PHONE: &str = "200000000000071";
const HOUR: u32 = 3600;

/// Production delays (a wait as long as SQS allows), teardowns at once.
fn production_delays() -> RetryPolicy {
    RetryPolicy {
        step_settle_seconds: 0,
        ..RetryPolicy::default()
    }
}

/// A signup taken through the exchange and the subscription: its register message waits in the
/// register queue (moto).
async fn at_register_step(p: &ProvisioningEnv) -> (AccountId, NumberId) {
    let (account, key) = p.env.account_with_key("acme").await;
    let code = p.meta_phone(WABA, PHONE);
    let response = p.callback(&key, &code, WABA, PHONE).await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    let id = response.body["data"]["id"].as_str().unwrap().to_string();
    for step in [Step::ExchangeToken, Step::SubscribeWaba] {
        let response = p.run_queued(step).await;
        assert!(response.batch_item_failures.is_empty(), "{step}");
    }
    let number = p.number(&account, &id).await;
    assert_eq!(number.provisioning_step, Some(Step::RegisterNumber));
    (account, NumberId::from(id))
}

/// The stored number, changed by `change` and written back by the operator as the next
/// version (straight to moto, conditioned on the version read).
async fn rewrite(
    p: &ProvisioningEnv,
    account: &AccountId,
    id: &NumberId,
    change: impl FnOnce(&mut Number),
) {
    let before = p.env.store.get(account, id).await.unwrap().expect("number");
    let mut after = before.clone();
    change(&mut after);
    after.version = before.version + 1;
    let written = p
        .env
        .store
        .commit(&Change {
            expected: Expected {
                status: before.status,
                step: before.provisioning_step,
                version: before.version,
            },
            number: after,
            counters: Vec::new(),
            phone_guard: PhoneGuard::Keep,
            event: None,
        })
        .await
        .unwrap();
    assert!(
        matches!(written, CommitOutcome::Committed(_)),
        "{written:?}"
    );
}

/// The number's register budget spent by requests `hours_ago` (newest last).
async fn spend_register_budget(
    p: &ProvisioningEnv,
    account: &AccountId,
    id: &NumberId,
    hours_ago: impl Fn(usize) -> i64,
) {
    let now = time::now();
    rewrite(p, account, id, |number| {
        number.register_calls = (0..REGISTER_BUDGET)
            .map(|call| now - chrono::Duration::hours(hours_ago(call)))
            .collect();
    })
    .await;
}

/// As if `seconds` went by: the number's times move that far into the past.
async fn pass(p: &ProvisioningEnv, account: &AccountId, id: &NumberId, seconds: u32) {
    let ago = chrono::Duration::seconds(i64::from(seconds));
    rewrite(p, account, id, |number| {
        number.created_at -= ago;
        number.updated_at -= ago;
        for call in &mut number.register_calls {
            *call -= ago;
        }
    })
    .await;
}

/// The register queue's own visibility timeout (template.yaml): how long a received message
/// stays away when its handler's delay was refused.
fn register_queue_visibility_timeout(p: &ProvisioningEnv) -> u32 {
    p.env
        .template
        .resource("RegisterNumberQueue")
        .unwrap()
        .get("Properties")
        .and_then(|properties| properties.get("VisibilityTimeout"))
        .and_then(|seconds| seconds.as_u64())
        .and_then(|seconds| u32::try_from(seconds).ok())
        .expect("RegisterNumberQueue.VisibilityTimeout in template.yaml")
}

/// How the register message's chain of receives ended.
#[derive(Debug)]
struct Ended {
    /// The receive at which the step deleted the message (`None`: still waiting).
    deleted_at: Option<u32>,
    /// Every delay the step asked for, one per receive before that, and SQS's answers.
    delays: Vec<DelayAsked>,
}

/// The register message received as the register function (through the gateway) and handled,
/// again and again, time passing between receives as SQS keeps it invisible (the delay SQS
/// took, else the queue's visibility timeout), until the step deletes it or `receives` ran out.
async fn receive_until_it_ends(
    p: &ProvisioningEnv,
    account: &AccountId,
    id: &NumberId,
    receives: u32,
) -> Ended {
    let visibility_timeout = register_queue_visibility_timeout(p);
    for receive in 1..=receives {
        let asked_before = p.queue.delays.lock().unwrap().len();
        let response = p.run_queued(Step::RegisterNumber).await;
        let delays = p.queue.delays.lock().unwrap().clone();
        if response.batch_item_failures.is_empty() {
            return Ended {
                deleted_at: Some(receive),
                delays,
            };
        }
        let delay = delays
            .get(asked_before)
            .cloned()
            .unwrap_or_else(|| panic!("receive {receive} kept the message without a delay"));
        assert_eq!(delay.queue, Queue::Step(Step::RegisterNumber));
        let away = match delay.error {
            None => delay.seconds,
            Some(_) => visibility_timeout,
        };
        pass(p, account, id, away).await;
        p.redeliver_now(&delay).await;
    }
    Ended {
        deleted_at: None,
        delays: p.queue.delays.lock().unwrap().clone(),
    }
}

/// Messages in a queue of the stack (by logical id), visible and in flight, as SQS counts them.
async fn messages_in(p: &ProvisioningEnv, logical_id: &str) -> u32 {
    use aws_sdk_sqs::types::QueueAttributeName;
    let url = p.env.stack.queue_url(logical_id).unwrap().to_string();
    let attributes = aws_sdk_sqs::Client::new(&p.env.sdk)
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap();
    let count = |name: QueueAttributeName| {
        attributes
            .attributes()
            .and_then(|a| a.get(&name))
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0)
    };
    count(QueueAttributeName::ApproximateNumberOfMessages)
        + count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
}

#[tokio::test]
async fn a_register_step_waiting_30_h_for_its_budget_defers_within_sqs_limit_then_registers() {
    // Given a number whose register message waits in its queue, its register budget spent:
    // it frees in 30 h (the oldest of its requests was 42 h ago); production's delays
    let p = ProvisioningEnv::with_retry(production_delays()).await;
    let (account, id) = at_register_step(&p).await;
    spend_register_budget(&p, &account, &id, |call| 42 - call as i64).await;

    // When SQS delivers the register message to the register function, and again after each
    // delay it asks for
    let ended = receive_until_it_ends(&p, &account, &id, 6).await;

    // Then SQS took every delay, each within 12 h of its receive: the 30 h took a chain of
    // them, two cut to what SQS allows and the rest
    let delays = &ended.delays;
    let refused: Vec<_> = delays.iter().filter(|d| d.error.is_some()).collect();
    assert!(refused.is_empty(), "delays SQS refused: {refused:#?}");
    let longest = MAX_REDELIVERY_DELAY_SECONDS - REDELIVERY_MARGIN_SECONDS;
    let seconds: Vec<u32> = delays.iter().map(|d| d.seconds).collect();
    assert_eq!(seconds.len(), 3, "{delays:#?}");
    assert!(seconds.iter().all(|s| *s <= longest), "{seconds:?}");
    assert!(
        seconds[..2].iter().all(|s| *s + 60 > longest),
        "{seconds:?}"
    );
    // Short of 30 h by the real time the test took, no more.
    let waited = seconds.iter().sum::<u32>();
    assert!(
        (30 * HOUR - 300..=30 * HOUR).contains(&waited),
        "{waited} s: {seconds:?}"
    );
    // And the number registered at Meta once, on the receive after the last delay (the step
    // answered no failure: the message is deleted), moving on to the PIN; nothing dead-lettered
    assert_eq!(ended.deleted_at, Some(4), "{ended:#?}");
    let registers = p.meta.calls_to(fake_meta::Route::Register);
    assert_eq!(registers.len(), 1, "{registers:?}");
    assert_eq!(registers[0].status, 200);
    let number = p.number(&account, id.as_str()).await;
    assert_eq!(number.status, Status::Pending);
    assert_eq!(number.provisioning_step, Some(Step::ConfigurePin));
    assert!(number.registered);
    // Its request counted in the budget's window, which the oldest one has just left.
    assert_eq!(number.register_calls.len(), REGISTER_BUDGET);
    let counted = *number.register_calls.last().unwrap();
    assert!(
        time::now() - counted < chrono::Duration::minutes(5),
        "{counted}"
    );
    assert_eq!(messages_in(&p, "RegisterNumberDeadLetterQueue").await, 0);
}
