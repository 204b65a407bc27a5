//! Meta's rate limits: a step waits them out in minutes, growing, up to the number's bound,
//! within its queue's receives; the dead-letter consumer does not fail such a number before the
//! bound.

use super::long_waits::{Ended, SqsQueueSetup};
use super::*;

/// Meta's answer when the app (code 4), a WABA (80007) or a use case is throttled.
fn rate_limited(code: i64) -> MetaError {
    MetaError::from_envelope(
        400,
        code,
        None,
        true,
        format!("(#{code}) rate limit reached"),
    )
}

/// The number's own queue as template.yaml sets it up, by step.
fn queue_resource(step: Step) -> &'static str {
    match step {
        Step::ExchangeToken => "ExchangeTokenQueue",
        Step::SubscribeWaba => "SubscribeWabaQueue",
        Step::RegisterNumber => "RegisterNumberQueue",
        Step::ConfigurePin => "ConfigurePinQueue",
        Step::FetchProfile => "FetchProfileQueue",
        Step::ActivateNumber => "ActivateNumberQueue",
    }
}

/// When a number signed up now stops waiting, under the policy the tests use.
fn bound_of(given: &Given) -> time::Timestamp {
    let number = given.now();
    number.created_at
        + chrono::Duration::seconds(i64::from(given.provisioner.retry.max_pending_seconds))
}

#[tokio::test]
async fn a_rate_limit_waits_minutes_and_the_pending_reason_says_until_when() {
    // Given Meta throttling the app when the WABA is subscribed
    let given = given_pending_at(Step::SubscribeWaba).with_production_delays();
    given
        .meta()
        .fail_next(MetaCallKind::SubscribeApp, rate_limited(4));

    // When the step runs
    let outcome = given.run(Step::SubscribeWaba).await;

    // Then it waits a minute or more, the number still pending with Meta's code, and its
    // pending reason says it is a rate limit waited out until the number's bound
    assert!(
        matches!(outcome, Outcome::RetryAfter(seconds) if seconds >= 60),
        "{outcome:?}"
    );
    let number = given.now();
    assert_eq!(number.status, Status::Pending);
    let reason = number.provisioning_error.expect("pendingReason");
    assert_eq!(
        (reason.step.as_str(), reason.code.as_str()),
        ("SUBSCRIBE_WABA", "4")
    );
    assert!(
        reason
            .user_title
            .as_deref()
            .is_some_and(|t| t.contains("rate limit")),
        "{reason:?}"
    );
    let until = time::format(&bound_of(&given));
    assert!(
        reason
            .user_message
            .as_deref()
            .is_some_and(|m| m.contains(&until)),
        "{reason:?} should name {until}"
    );
    assert!(given.steps_sent().is_empty());
}

#[tokio::test]
async fn graph_and_business_use_case_rate_limits_wait_instead_of_failing_the_number() {
    for code in [32, 613, 80008, 80014] {
        let given = given_pending_at(Step::FetchProfile).with_production_delays();
        given
            .meta()
            .fail_next(MetaCallKind::PhoneProfile, rate_limited(code));

        let outcome = given.run(Step::FetchProfile).await;

        assert!(
            matches!(outcome, Outcome::RetryAfter(seconds) if seconds >= 60),
            "{code}: {outcome:?}"
        );
        assert_eq!(given.now().status, Status::Pending, "{code}");
    }
}

#[tokio::test]
async fn a_rate_limit_past_the_number_s_bound_fails_it_with_meta_s_code() {
    // Given a number signed up longer ago than a number may wait
    let given = given_pending_at(Step::ConfigurePin).with_production_delays();
    given.pass(given.provisioner.retry.max_pending_seconds + 60);
    given
        .meta()
        .fail_next(MetaCallKind::SetPin, rate_limited(80007));

    // When Meta still throttles the WABA
    let outcome = given.run(Step::ConfigurePin).await;

    // Then the number fails with Meta's code
    assert_eq!(outcome, Outcome::Done);
    let number = given.now();
    assert_eq!(number.status, Status::Failed);
    let reason = number.failure_reason.expect("failureReason");
    assert_eq!(
        (reason.step.as_str(), reason.code.as_str()),
        ("CONFIGURE_PIN", "80007")
    );
}

fn step_body(given: &Given, step: Step) -> String {
    serde_json::to_string(&step_message(&given.number, step)).unwrap()
}

#[tokio::test]
async fn a_rate_limit_lasting_hours_is_waited_out_in_growing_waits_then_the_step_runs() {
    // Given Meta throttling the WABA's subscription for its next 15 calls
    let given = given_pending_at(Step::SubscribeWaba).with_production_delays();
    for _ in 0..15 {
        given
            .meta()
            .fail_next(MetaCallKind::SubscribeApp, rate_limited(80007));
    }

    // When SQS delivers the step's message as template.yaml sets up its queue
    let ended = given
        .receive_until_it_ends(
            Queue::Step(Step::SubscribeWaba),
            "SubscribeWabaQueue",
            &step_body(&given, Step::SubscribeWaba),
        )
        .await;

    // Then every wait was at least a minute, they grew to hours, and the step ran once Meta
    // took it, well within the queue's receives
    let delays = given.delays_within_sqs_limit();
    // How many waits it takes depends on each wait's jitter.
    let waits = delays.len();
    assert!((10..=20).contains(&waits), "{delays:?}");
    assert!(delays.iter().all(|d| *d >= 60), "{delays:?}");
    assert!(delays[..3].iter().all(|d| *d <= 12 * 60), "{delays:?}");
    assert!(delays.iter().sum::<u32>() >= 12 * 3600, "{delays:?}");
    let max_receive_count = SqsQueueSetup::of("SubscribeWabaQueue").max_receive_count;
    let receives = waits + 1;
    assert_eq!(
        ended,
        Ended::DeletedAt {
            receive: receives as u32
        }
    );
    assert!((receives as u32) < max_receive_count);
    assert_eq!(given.meta().count(MetaCallKind::SubscribeApp), receives);
    assert_eq!(given.now().provisioning_step, Some(Step::RegisterNumber));
    assert_eq!(given.now().provisioning_error, None);
}

#[tokio::test]
async fn the_longest_rate_limit_wait_fails_the_number_at_its_bound_before_the_queue_dead_letters() {
    // Given the longest bound a number may wait (`MaxPendingDays` at its maximum, 8) and Meta
    // throttling the profile step's reads for good
    let mut given = given_pending_at(Step::FetchProfile).with_production_delays();
    given.provisioner.retry.max_pending_seconds = 8 * 24 * 3600;
    for _ in 0..100 {
        given
            .meta()
            .fail_next(MetaCallKind::PhoneProfile, rate_limited(4));
    }

    // When SQS delivers the step's message as template.yaml sets up its queue
    let ended = given
        .receive_until_it_ends(
            Queue::Step(Step::FetchProfile),
            "FetchProfileQueue",
            &step_body(&given, Step::FetchProfile),
        )
        .await;

    // Then the number failed with Meta's code once it had waited its 8 days, before the
    // queue's last receive
    let number = given.now();
    assert_eq!(number.status, Status::Failed);
    assert_eq!(number.failure_reason.map(|r| r.code), Some("4".into()));
    let waited: u32 = given.delays_within_sqs_limit().iter().sum();
    assert!(
        (8 * 24 * 3600..8 * 24 * 3600 + 60).contains(&waited),
        "{waited}"
    );
    let max_receive_count = SqsQueueSetup::of("FetchProfileQueue").max_receive_count;
    let Ended::DeletedAt { receive } = ended else {
        panic!("dead-lettered after {max_receive_count} receives");
    };
    assert!(receive < max_receive_count, "{receive} receives");
}

/// The receives a rate-limit wait of `days` costs a step's message, each wait the shortest
/// its jitter allows and cut as SQS requires: the most it can cost.
fn receives_of_a_rate_limit_wait(policy: &RetryPolicy, days: u32) -> u32 {
    let bound = i64::from(days) * 24 * 3600;
    let run = std::time::Duration::from_secs(10);
    let mut waited = 0;
    let mut receive = 1;
    while waited < bound {
        let nominal = policy.nominal_rate_limit_delay(chrono::Duration::seconds(waited));
        let shortest = nominal / 2;
        waited += i64::from(crate::ports::redelivery_delay(shortest, run));
        receive += 1;
    }
    receive
}

#[test]
fn a_rate_limit_wait_as_long_as_the_longest_bound_fits_each_waiting_step_s_queue() {
    // Given production delays and the longest bound (`MaxPendingDays` at most 8)
    let policy = RetryPolicy::default();

    // When a step waits on a rate limit that long, every wait as short as its jitter allows
    let receives = receives_of_a_rate_limit_wait(&policy, 8);

    // Then the receive that fails the number comes before the queue of each step that waits
    // dead-letters the message
    for step in Step::ALL.into_iter().filter(|s| waits_out_rate_limits(*s)) {
        let max_receive_count = SqsQueueSetup::of(queue_resource(step)).max_receive_count;
        assert!(receives < max_receive_count, "{step}: {receives}");
    }
}

#[tokio::test]
async fn transient_failures_still_fail_the_number_at_the_fifth_receive_on_a_queue_of_50() {
    // Given Meta failing the PIN transiently, on a queue that holds 50 receives
    let given = given_pending_at(Step::ConfigurePin).with_production_delays();
    given.meta().fail_next(
        MetaCallKind::SetPin,
        MetaError::from_envelope(503, 2, None, true, "Service temporarily unavailable".into()),
    );

    // When that answer comes on the fifth receive
    let outcome = given
        .deliver(step_message(&given.number, Step::ConfigurePin), 5)
        .await;

    // Then the number fails with it, as when the queue dead-lettered it there
    assert_eq!(outcome, Outcome::Done);
    let number = given.now();
    assert_eq!(number.status, Status::Failed);
    assert_eq!(number.failure_reason.map(|r| r.code), Some("2".into()));
}

#[tokio::test]
async fn a_dead_letter_of_a_number_waiting_on_a_rate_limit_is_kept_until_the_bound() {
    // Given a number whose last answer from Meta was a rate limit
    let given = given_pending_at(Step::RegisterNumber).with_production_delays();
    given
        .meta()
        .fail_next(MetaCallKind::Register, rate_limited(4));
    given.run(Step::RegisterNumber).await;
    let dead = serde_json::to_string(&step_message(&given.number, Step::RegisterNumber)).unwrap();

    // When its message reaches the dead-letter queue before the bound
    let response = given
        .provisioner
        .handle_dead_letters(sqs_event(dead.clone()))
        .await;

    // Then the number still waits and the dead letter stays for a redrive
    assert_eq!(response.batch_item_failures.len(), 1);
    assert_eq!(given.now().status, Status::Pending);
    assert!(given.events_sent().is_empty());

    // And once past the bound, the dead letter fails it with Meta's code
    given.pass(given.provisioner.retry.max_pending_seconds);
    let response = given.provisioner.handle_dead_letters(sqs_event(dead)).await;
    assert!(response.batch_item_failures.is_empty());
    let number = given.now();
    assert_eq!(number.status, Status::Failed);
    assert_eq!(number.failure_reason.map(|r| r.code), Some("4".into()));
}

#[tokio::test]
async fn a_rate_limited_register_waits_minutes_its_request_counted() {
    let given = given_pending_at(Step::RegisterNumber).with_production_delays();
    given
        .meta()
        .fail_next(MetaCallKind::Register, rate_limited(613));

    let outcome = given.run(Step::RegisterNumber).await;

    assert!(
        matches!(outcome, Outcome::RetryAfter(seconds) if seconds >= 60),
        "{outcome:?}"
    );
    let number = given.now();
    assert_eq!(number.status, Status::Pending);
    assert_eq!(number.register_calls.len(), 1);
}

#[test]
fn each_step_queue_s_receives_are_the_template_s() {
    for step in Step::ALL {
        let template = SqsQueueSetup::of(queue_resource(step)).max_receive_count;
        assert_eq!(step_queue_max_receives(step), template, "{step}");
    }
}

#[test]
fn rate_limit_waits_start_at_two_minutes_and_grow_with_the_wait_up_to_sqs_s_12_h() {
    let policy = RetryPolicy::default();
    let after = |minutes| policy.nominal_rate_limit_delay(chrono::Duration::minutes(minutes));

    assert_eq!(after(0), 120);
    assert_eq!(after(1), 120);
    assert_eq!(after(5), 300);
    assert_eq!(after(90), 90 * 60);
    assert_eq!(after(10 * 60), 10 * 3600);
    assert_eq!(after(3 * 24 * 60), 12 * 3600);
}

#[test]
fn a_rate_limit_wait_is_jittered_and_never_ends_past_the_number_s_bound() {
    let policy = RetryPolicy::default();
    let mut number = given_pending_at(Step::SubscribeWaba).number;
    let now = time::now();
    number.created_at = now;
    for _ in 0..100 {
        let wait = policy.rate_limit_delay(now, &number, now);
        assert!((60..=180).contains(&wait), "{wait}");
    }

    number.created_at = now - chrono::Duration::seconds(i64::from(policy.max_pending_seconds))
        + chrono::Duration::seconds(100);
    let began = now - chrono::Duration::hours(3);
    assert!(policy.rate_limit_delay(began, &number, now) <= 100);
}

#[test]
fn the_exchange_waits_rate_limits_out_only_within_its_code_s_life() {
    assert!(!waits_out_rate_limits(Step::ExchangeToken));
    for step in [
        Step::SubscribeWaba,
        Step::RegisterNumber,
        Step::ConfigurePin,
        Step::FetchProfile,
    ] {
        assert!(waits_out_rate_limits(step), "{step}");
    }
}
