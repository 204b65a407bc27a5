//! The relay over the in-memory store and queue: what it publishes, what it leaves alone.

use super::*;
use crate::adapters::memory::{MemoryQueue, MemoryStore};
use crate::domain::lifecycle::Command;
use crate::domain::{AccountId, FailureReason, Number};
use crate::lifecycle::{Changed, apply, apply_then_send};
use crate::ports::Queue;

/// A pending number at its last step, everything before it done.
fn pending_number(store: &MemoryStore) -> Number {
    let number = pending();
    store.insert_number(number.clone());
    number
}

fn pending() -> Number {
    let mut number = Number::new_pending(
        AccountId::from("acc_1".to_string()),
        "1000".into(),
        "2000".into(),
        time::now(),
    );
    number.provisioning_step = Some(Step::ActivateNumber);
    number.subscribed = true;
    number.registered = true;
    number
}

/// A number that failed at `step` with Meta's 131000, everything before it done.
fn failed_at(store: &MemoryStore, step: &str) -> Number {
    let mut number = pending();
    number.status = crate::domain::Status::Failed;
    number.provisioning_step = None;
    number.failure_reason = Some(FailureReason {
        step: step.into(),
        code: "131000".into(),
        message: "Something went wrong".into(),
        ..FailureReason::default()
    });
    store.insert_number(number.clone());
    number
}

fn relay(
    store: &MemoryStore,
    queue: &MemoryQueue,
    grace: Duration,
) -> OutboxRelay<MemoryStore, MemoryQueue> {
    OutboxRelay {
        store: store.clone(),
        queue: queue.clone(),
        grace,
    }
}

/// Outbox times are in milliseconds: once one has passed, a zero grace period has too.
async fn past_grace() {
    tokio::time::sleep(Duration::from_millis(5)).await;
}

fn event_ids_sent(queue: &MemoryQueue) -> Vec<String> {
    queue
        .sent_to(Queue::Events)
        .into_iter()
        .map(|event| event["id"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// An activation committed whose publish failed: its event is in the outbox, unpublished.
async fn activation_with_a_lost_publish(store: &MemoryStore, queue: &MemoryQueue) -> String {
    let number = pending_number(store);
    queue.fail_next_sends(1);
    let lost = apply(store, queue, &number, Command::Activate).await;
    assert!(lost.is_err(), "the publish fails after the commit");
    let (event, published) = store.events().pop().expect("the outbox event");
    assert!(!published);
    event.id
}

#[tokio::test]
async fn an_event_whose_publish_failed_after_its_commit_is_published_by_the_relay() {
    // Given an activation whose event's send failed after the commit
    let (store, queue) = (MemoryStore::default(), MemoryQueue::default());
    let event_id = activation_with_a_lost_publish(&store, &queue).await;
    // When the relay runs past the grace period
    past_grace().await;
    let summary = relay(&store, &queue, Duration::ZERO).run().await.unwrap();
    // Then the event is published once, under its own id, and marked published
    assert_eq!(summary.published, 1);
    assert_eq!(event_ids_sent(&queue), [event_id]);
    assert!(store.events().iter().all(|(_, published)| *published));
    // And the next run finds nothing left
    let again = relay(&store, &queue, Duration::ZERO).run().await.unwrap();
    assert_eq!(again, RelaySummary::default());
    assert_eq!(event_ids_sent(&queue).len(), 1);
}

#[tokio::test]
async fn an_event_within_the_grace_period_is_left_to_its_writer() {
    // Given an event unpublished for less than the grace period
    let (store, queue) = (MemoryStore::default(), MemoryQueue::default());
    activation_with_a_lost_publish(&store, &queue).await;
    // When the relay runs
    let summary = relay(&store, &queue, DEFAULT_GRACE).run().await.unwrap();
    // Then it publishes nothing yet
    assert_eq!(summary.found, 0);
    assert!(event_ids_sent(&queue).is_empty());
}

#[tokio::test]
async fn a_relay_whose_send_fails_again_leaves_the_event_for_the_next_run() {
    // Given an unpublished event and SQS still failing
    let (store, queue) = (MemoryStore::default(), MemoryQueue::default());
    let event_id = activation_with_a_lost_publish(&store, &queue).await;
    queue.fail_next_sends(1);
    // When the relay runs twice
    past_grace().await;
    let first = relay(&store, &queue, Duration::ZERO).run().await.unwrap();
    let second = relay(&store, &queue, Duration::ZERO).run().await.unwrap();
    // Then the first run counts a failure and the second publishes it
    assert_eq!((first.found, first.failed, first.published), (1, 1, 0));
    assert_eq!(second.published, 1);
    assert_eq!(event_ids_sent(&queue), [event_id]);
}

#[tokio::test]
async fn a_history_only_entry_is_never_relayed() {
    // Given a step retried (a history-only entry) and nothing else
    let (store, queue) = (MemoryStore::default(), MemoryQueue::default());
    let number = pending_number(&store);
    let retried = Command::StepRetried {
        step: Step::ActivateNumber,
        reason: FailureReason {
            step: "ACTIVATE_NUMBER".into(),
            code: "2".into(),
            message: "Service temporarily unavailable".into(),
            ..FailureReason::default()
        },
        attempt: 1,
    };
    let changed = apply(&store, &queue, &number, retried).await.unwrap();
    assert!(matches!(changed, Changed::Now(_)));
    assert_eq!(store.events().len(), 1);
    // When the relay runs
    past_grace().await;
    let summary = relay(&store, &queue, Duration::ZERO).run().await.unwrap();
    // Then nothing is published
    assert_eq!(summary.found, 0);
    assert!(queue.sent().is_empty());
}

#[tokio::test]
async fn a_retried_number_whose_step_message_and_event_were_lost_is_resumed_by_the_relay() {
    // Given a failed number retried while SQS fails every send (the step and the event lost)
    let (store, queue) = (MemoryStore::default(), MemoryQueue::default());
    let number = failed_at(&store, "ACTIVATE_NUMBER");
    // (the step message's send fails, so the event's is never tried)
    queue.fail_next_sends(1);
    let command = Command::Retry { token_usable: true };
    let lost = apply_then_send(&store, &queue, &number, command, StepMessage::resuming).await;
    assert!(lost.is_err());
    assert!(queue.sent().is_empty());
    // When the relay runs
    past_grace().await;
    relay(&store, &queue, Duration::ZERO).run().await.unwrap();
    // Then the step message goes out before the number.retried event
    let sent: Vec<Queue> = queue.sent().into_iter().map(|(q, _)| q).collect();
    assert_eq!(sent, [Queue::Step(Step::ActivateNumber), Queue::Events]);
}

#[tokio::test]
async fn a_retried_number_that_moved_on_gets_no_second_step_message() {
    // Given a retry whose step message went out but whose event did not, and that step done
    let (store, queue) = (MemoryStore::default(), MemoryQueue::default());
    let number = failed_at(&store, "FETCH_PROFILE");
    queue.fail_next_sends(1);
    let lost = apply(
        &store,
        &queue,
        &number,
        Command::Retry { token_usable: true },
    )
    .await;
    assert!(lost.is_err(), "the event's send fails");
    let retried = store.number(&number.account_id, &number.id).unwrap();
    let message = StepMessage::resuming(&retried).expect("a step to resume at");
    queue.send(&message).await.unwrap();
    let done = Command::StepDone {
        step: Step::FetchProfile,
        record: crate::domain::lifecycle::StepRecord::default(),
    };
    apply(&store, &queue, &retried, done).await.unwrap();
    let steps_before = queue.sent().len();
    // When the relay runs
    past_grace().await;
    relay(&store, &queue, Duration::ZERO).run().await.unwrap();
    // Then only the event goes out
    let after: Vec<Queue> = queue.sent()[steps_before..]
        .iter()
        .map(|(q, _)| *q)
        .collect();
    assert_eq!(after, [Queue::Events]);
}

#[tokio::test]
async fn a_rotated_out_webhook_secret_is_forgotten_by_the_first_run_after_its_grace_period() {
    use crate::ports::WebhookEndpoints;
    use crate::webhooks::{SECRET_ROTATION_GRACE_HOURS, WebhookEndpoint, generate_secret};
    // Given an endpoint whose secret was rotated, the old one signing until `grace_ends`
    let (store, queue) = (MemoryStore::default(), MemoryQueue::default());
    let account = AccountId::from("acc_1".to_string());
    let endpoint = WebhookEndpoint::new(
        account.clone(),
        "https://example.com/hooks".into(),
        None,
        time::now(),
    );
    store.save_endpoint(&endpoint).await.unwrap();
    let grace_ends = time::now() + chrono::Duration::hours(SECRET_ROTATION_GRACE_HOURS);
    store
        .rotate_secret(&account, &endpoint.id, &generate_secret(), grace_ends)
        .await
        .unwrap();
    let relay = relay(&store, &queue, Duration::ZERO);
    let stored = || async {
        store
            .endpoint(&account, &endpoint.id)
            .await
            .unwrap()
            .unwrap()
    };

    // When the relay runs a second before the grace period ends
    let almost = grace_ends - chrono::Duration::seconds(1);
    assert_eq!(relay.run_at(almost).await.unwrap().secrets_forgotten, 0);
    // Then the old secret is kept, and signs beside the new one
    let kept = stored().await;
    assert_eq!(kept.previous_secret.as_ref(), Some(&endpoint.secret));
    assert_eq!(kept.signing_secrets(almost).len(), 2);

    // When it runs as the grace period ends
    assert_eq!(relay.run_at(grace_ends).await.unwrap().secrets_forgotten, 1);
    // Then the old secret is gone from the endpoint, and the new one alone signs
    let rotated = stored().await;
    assert_eq!(rotated.previous_secret, None);
    assert_eq!(rotated.previous_secret_expires_at, None);
    assert_eq!(rotated.signing_secrets(grace_ends), [&rotated.secret]);
    // And a later run has nothing left to forget
    let later = grace_ends + chrono::Duration::hours(1);
    assert_eq!(relay.run_at(later).await.unwrap().secrets_forgotten, 0);
}
