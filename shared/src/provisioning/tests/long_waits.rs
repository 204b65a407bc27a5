//! Waits longer than SQS's 12 h of invisibility (the register budget, a teardown's deregister)
//! through the batch runner, with SQS played as template.yaml sets up each queue: the message
//! comes back after each accepted delay, or after the queue's visibility timeout when none was
//! accepted, and dead-letters past its `maxReceiveCount`.

use super::*;
use crate::domain::lifecycle::{REGISTER_BUDGET, REGISTER_WINDOW_HOURS};
use crate::ports::{MAX_REDELIVERY_DELAY_SECONDS, REDELIVERY_MARGIN_SECONDS};

const TEMPLATE: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml"));

/// A whole-number property of a resource of template.yaml (`VisibilityTimeout`,
/// `maxReceiveCount`, ...).
pub(super) fn template_setting(resource: &str, key: &str) -> u32 {
    let header = format!("  {resource}:");
    let mut lines = TEMPLATE.lines().skip_while(|line| *line != header);
    assert!(lines.next().is_some(), "{resource} in template.yaml");
    lines
        // Up to the next resource.
        .take_while(|line| !line.starts_with("  ") || line.starts_with("   "))
        .find_map(|line| line.trim().strip_prefix(&format!("{key}:")))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("{resource}.{key} in template.yaml"))
}

/// How SQS holds a queue's messages, as template.yaml sets it up.
pub(super) struct SqsQueueSetup {
    pub(super) visibility_timeout: u32,
    pub(super) max_receive_count: u32,
}

impl SqsQueueSetup {
    pub(super) fn of(resource: &str) -> SqsQueueSetup {
        SqsQueueSetup {
            visibility_timeout: template_setting(resource, "VisibilityTimeout"),
            max_receive_count: template_setting(resource, "maxReceiveCount"),
        }
    }
}

#[derive(Debug, PartialEq)]
pub(super) enum Ended {
    /// Handled and deleted at this receive.
    DeletedAt {
        receive: u32,
    },
    DeadLettered,
}

impl Given {
    /// Production delays (up to SQS's 12 h) and teardowns at once.
    pub(super) fn with_production_delays(mut self) -> Given {
        self.provisioner.retry = RetryPolicy {
            step_settle_seconds: 0,
            ..RetryPolicy::default()
        };
        self
    }

    /// As if `seconds` went by: the number's times move that far into the past.
    pub(super) fn pass(&self, seconds: u32) {
        let ago = chrono::Duration::seconds(i64::from(seconds));
        let mut number = self.now();
        number.created_at -= ago;
        number.updated_at -= ago;
        for call in &mut number.register_calls {
            *call -= ago;
        }
        self.store().insert_number(number);
    }

    /// The number's register budget spent by requests `hours_ago` (newest last).
    fn spend_register_budget(&self, hours_ago: impl Fn(usize) -> i64) {
        let mut number = self.now();
        let now = time::now();
        number.register_calls = (0..REGISTER_BUDGET)
            .map(|call| now - chrono::Duration::hours(hours_ago(call)))
            .collect();
        self.store().insert_number(number);
    }

    /// `body` received from `queue` (set up as template.yaml's `resource`) again and again,
    /// time passing between receives as SQS keeps the message invisible, until the handler
    /// deletes it or it dead-letters. Every delay asked for is checked against SQS's rule.
    pub(super) async fn receive_until_it_ends(
        &self,
        queue: Queue,
        resource: &str,
        body: &str,
    ) -> Ended {
        let setup = SqsQueueSetup::of(resource);
        for receive in 1..=setup.max_receive_count {
            let asked_before = self.queue().delays().len() + self.queue().refused().len();
            let event = received(body, receive);
            let response = match queue {
                Queue::Step(step) => self.provisioner.handle_batch(step, event).await,
                Queue::Teardown => self.provisioner.handle_teardowns(event).await,
                other => panic!("no consumer of {other:?} here"),
            };
            if response.batch_item_failures.is_empty() {
                return Ended::DeletedAt { receive };
            }
            let accepted = self.queue().delays().get(asked_before).map(|d| d.2);
            self.pass(accepted.unwrap_or(setup.visibility_timeout));
        }
        Ended::DeadLettered
    }

    /// Every delay asked for, each within what SQS allows after a receive, none refused.
    pub(super) fn delays_within_sqs_limit(&self) -> Vec<u32> {
        assert_eq!(self.queue().refused(), vec![], "delays SQS refuses");
        let delays: Vec<u32> = self.queue().delays().into_iter().map(|d| d.2).collect();
        let longest = MAX_REDELIVERY_DELAY_SECONDS - REDELIVERY_MARGIN_SECONDS;
        assert!(delays.iter().all(|s| *s <= longest), "{delays:?}");
        delays
    }
}

/// The message as the event source mapping hands it over at its `receive`th receive.
pub(super) fn received(body: &str, receive: u32) -> SqsEvent {
    let mut message = SqsMessage::default();
    message.message_id = Some("m-1".into());
    message.receipt_handle = Some(format!("receipt-{receive}"));
    message.body = Some(body.into());
    message
        .attributes
        .insert("ApproximateReceiveCount".into(), receive.to_string());
    let mut event = SqsEvent::default();
    event.records = vec![message];
    event
}

fn register_body(number: &Number) -> String {
    serde_json::to_string(&step_message(number, Step::RegisterNumber)).unwrap()
}

fn teardown_body(number: &Number) -> String {
    serde_json::to_string(&TeardownMessage::new(
        number.id.clone(),
        number.account_id.clone(),
    ))
    .unwrap()
}

#[tokio::test]
async fn a_register_step_waiting_30_h_for_its_budget_defers_within_sqs_limit_then_registers() {
    // Given a number at register whose budget frees in 30 h (the oldest of its requests was
    // 42 h ago)
    let given = given_pending_at(Step::RegisterNumber).with_production_delays();
    given.spend_register_budget(|call| 42 - call as i64);

    // When SQS delivers the register message again after each delay
    let ended = given
        .receive_until_it_ends(
            Queue::Step(Step::RegisterNumber),
            "RegisterNumberQueue",
            &register_body(&given.number),
        )
        .await;

    // Then each delay ended within 12 h of its receive, the wait took a chain of them, and the
    // number registered once the budget freed, without dead-lettering
    let delays = given.delays_within_sqs_limit();
    assert!(delays.len() >= 3, "{delays:?}");
    assert!(delays.iter().sum::<u32>() >= 30 * 3600, "{delays:?}");
    assert!(
        matches!(ended, Ended::DeletedAt { receive } if receive <= 5),
        "{ended:?}"
    );
    assert_eq!(given.meta().count(MetaCallKind::Register), 1);
    assert_eq!(given.now().provisioning_step, Some(Step::ConfigurePin));
    assert_eq!(given.now().status, Status::Pending);
    assert_eq!(given.steps_sent(), vec![Step::ConfigurePin]);
}

/// The longest wait a register step or a teardown chains: the budget frees within
/// `REGISTER_WINDOW_HOURS` of its newest request, whatever `MaxPendingDays` says, since each
/// receive checks the budget again.
const LONGEST_CHAINED_WAIT_HOURS: i64 = REGISTER_WINDOW_HOURS;

#[tokio::test]
async fn the_longest_budget_wait_costs_the_register_queue_a_few_of_its_receives() {
    // Given a number whose whole budget was spent just now: it frees in 72 h
    let given = given_pending_at(Step::RegisterNumber).with_production_delays();
    given.spend_register_budget(|_| 0);

    // When SQS delivers the register message until it is handled
    let ended = given
        .receive_until_it_ends(
            Queue::Step(Step::RegisterNumber),
            "RegisterNumberQueue",
            &register_body(&given.number),
        )
        .await;

    // Then it took 7 chained delays and the receive that registers: well under the queue's
    // maxReceiveCount (50)
    given.delays_within_sqs_limit();
    let max_receive_count = SqsQueueSetup::of("RegisterNumberQueue").max_receive_count;
    let Ended::DeletedAt { receive } = ended else {
        panic!("dead-lettered after {max_receive_count} receives");
    };
    // Whole turns of 12 h less the margin and a step's 10 s run, the rest, the register.
    let chained = (LONGEST_CHAINED_WAIT_HOURS * 3600) as u32
        / (MAX_REDELIVERY_DELAY_SECONDS - REDELIVERY_MARGIN_SECONDS - 10)
        + 1;
    assert_eq!((chained, receive), (7, 8));
    assert!(receive * 4 <= max_receive_count, "{receive} receives");
    assert_eq!(given.meta().count(MetaCallKind::Register), 1);
}

#[tokio::test]
async fn a_teardown_waiting_72_h_for_the_budget_defers_within_sqs_limit_then_deregisters() {
    // Given a disconnected number whose budget was spent just now: its deregister waits 72 h
    let given = given_disconnected().await.with_production_delays();
    given.spend_register_budget(|_| 0);

    // When SQS delivers the teardown message again after each delay
    let ended = given
        .receive_until_it_ends(
            Queue::Teardown,
            "TeardownQueue",
            &teardown_body(&given.number),
        )
        .await;

    // Then each delay ended within 12 h of its receive, and the teardown deregistered and
    // deleted the token well before the queue's maxReceiveCount (20)
    given.delays_within_sqs_limit();
    let max_receive_count = SqsQueueSetup::of("TeardownQueue").max_receive_count;
    assert!(
        matches!(ended, Ended::DeletedAt { receive } if receive * 2 <= max_receive_count),
        "{ended:?}"
    );
    assert_eq!(given.meta().count(MetaCallKind::Deregister), 1);
    assert!(given.now().torn_down_at.is_some());
    assert_eq!(given.vault().deleted(), vec![given.number.id.clone()]);
}

#[test]
fn a_wait_until_an_instant_is_rounded_up_to_whole_seconds_within_the_policy_s_longest() {
    let now = time::now();
    let later = |millis| now + chrono::Duration::milliseconds(millis);

    assert_eq!(seconds_until(later(1_500), now, 3600), 2);
    assert_eq!(seconds_until(later(2_000), now, 3600), 2);
    assert_eq!(seconds_until(later(-5_000), now, 3600), 1);
    assert_eq!(seconds_until(later(72 * 3_600_000), now, 43_200), 43_200);
}

/// The receive at which a number waiting on `2388001` from its signup finds it has waited
/// `days`, each slow retry at its nominal pace and cut as SQS requires.
fn receive_ending_a_display_name_wait(policy: &RetryPolicy, days: u32) -> u32 {
    let bound = u64::from(days) * 24 * 3600;
    let run = std::time::Duration::from_secs(10);
    let mut waited = 0;
    let mut receive = 1;
    while waited < bound {
        let wanted = policy.nominal_delay(receive, Retry::Slowly);
        waited += u64::from(crate::ports::redelivery_delay(wanted, run));
        receive += 1;
    }
    receive
}

#[test]
fn a_display_name_wait_as_long_as_the_default_bound_ends_before_the_dead_letter_queue() {
    // Given production delays and the default bound
    let policy = RetryPolicy::default();
    let max_receive_count = SqsQueueSetup::of("RegisterNumberQueue").max_receive_count;

    // When a number waits on its display name that long
    let receive = receive_ending_a_display_name_wait(&policy, DEFAULT_MAX_PENDING_DAYS);

    // Then the receive that fails it with Meta's text comes before the queue's last
    assert_eq!(receive, 46);
    assert!(receive <= max_receive_count);
    assert!(receive_ending_a_display_name_wait(&policy, 8) <= max_receive_count);
    assert!(receive_ending_a_display_name_wait(&policy, 9) > max_receive_count);
}
