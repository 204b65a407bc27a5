//! The lifecycle, pair by pair: every command against a number in every status, then what each
//! allowed change implies.

use super::*;
use crate::domain::time;
use crate::domain::{AccountId, CanSendMessage, EventType, HealthIssue};

fn at(text: &str) -> Timestamp {
    time::parse(text).unwrap()
}

fn now() -> Timestamp {
    at("2026-12-01T12:00:00Z")
}

fn reason(code: &str) -> FailureReason {
    FailureReason {
        step: "SUBSCRIBE_WABA".into(),
        code: code.into(),
        message: format!("Meta said {code}"),
        ..FailureReason::default()
    }
}

/// A number in `status`: `PENDING` ones are at `SUBSCRIBE_WABA`; every one is rated GREEN, named
/// "Old name", and holds a token that expires in three days.
fn number(status: Status) -> Number {
    let mut number = Number::new_pending(
        AccountId::from("acc_1".to_string()),
        "1000".into(),
        "2000".into(),
        at("2026-11-01T00:00:00Z"),
    );
    number.status = status;
    number.provisioning_step = (status == Status::Pending).then_some(Step::SubscribeWaba);
    number.quality_rating = Some(QualityRating::Green);
    number.display_name = Some("Old name".into());
    number.token_expires_at = Some(at("2026-12-04T12:00:00Z"));
    number.version = 7;
    if status == Status::Failed {
        number.failure_reason = Some(reason("131009"));
        number.subscribed = true;
    }
    number
}

fn step_done() -> Command {
    Command::StepDone {
        step: Step::SubscribeWaba,
        record: StepRecord {
            subscribed: true,
            ..StepRecord::default()
        },
    }
}

fn step_retried() -> Command {
    step_retried_with("2", 1)
}

fn step_retried_with(code: &str, attempt: u32) -> Command {
    Command::StepRetried {
        step: Step::SubscribeWaba,
        reason: reason(code),
        attempt,
    }
}

fn quality_red() -> Command {
    Command::QualityChanged(Some(QualityRating::Red))
}

fn approved(name: &str) -> NameDecision {
    NameDecision {
        decision: "APPROVED".into(),
        requested_verified_name: name.into(),
        rejection_reason: None,
    }
}

fn display_name() -> Command {
    Command::NameDecided(approved("New name"))
}

fn disconnect() -> Command {
    Command::Disconnect(DisconnectedBy::Customer)
}

fn torn_down() -> Command {
    Command::TornDown(Teardown {
        deregistered: true,
        unsubscribed: true,
        token_deleted: true,
    })
}

fn retry() -> Command {
    Command::Retry { token_usable: true }
}

fn fail() -> Command {
    Command::Fail(reason("131009"))
}

#[derive(Debug)]
enum Expect {
    ChangesTo(Status),
    Already,
    Refused,
}

fn check(status: Status, command: Command, expect: Expect) {
    let before = number(status);
    let decision = decide(&before, command.clone(), now());
    match (expect, &decision) {
        (Expect::ChangesTo(to), Decision::Change(change)) => {
            assert_eq!(change.number.status, to, "{status} + {command:?}");
            assert_eq!(change.expected.status, status);
            assert_eq!(change.expected.version, before.version);
            assert_eq!(change.number.version, before.version + 1);
        }
        (Expect::Already, Decision::Already) | (Expect::Refused, Decision::Refused(_)) => {}
        (expect, decision) => {
            panic!("{status} + {command:?}: expected {expect:?}, decided {decision:?}")
        }
    }
}

macro_rules! pair {
    ($name:ident, $status:ident, $command:expr, Changes($to:ident)) => {
        #[test]
        fn $name() {
            check(Status::$status, $command, Expect::ChangesTo(Status::$to));
        }
    };
    ($name:ident, $status:ident, $command:expr, $expect:ident) => {
        #[test]
        fn $name() {
            check(Status::$status, $command, Expect::$expect);
        }
    };
}

// PENDING: provisioning runs; it ends active, failed or disconnected.
pair!(
    pending_activate_becomes_active,
    Pending,
    Command::Activate,
    Changes(Active)
);
pair!(
    pending_fail_becomes_failed,
    Pending,
    fail(),
    Changes(Failed)
);
pair!(
    pending_disconnect_becomes_disconnected,
    Pending,
    disconnect(),
    Changes(Disconnected)
);
pair!(pending_ban_is_refused, Pending, Command::Ban, Refused);
pair!(
    pending_reinstate_is_refused,
    Pending,
    Command::Reinstate,
    Refused
);
pair!(
    pending_step_done_stays_pending,
    Pending,
    step_done(),
    Changes(Pending)
);
pair!(
    pending_step_retried_stays_pending,
    Pending,
    step_retried(),
    Changes(Pending)
);
pair!(
    pending_quality_change_is_recorded,
    Pending,
    quality_red(),
    Changes(Pending)
);
pair!(
    pending_display_name_is_recorded,
    Pending,
    display_name(),
    Changes(Pending)
);
pair!(
    pending_token_expiry_is_warned,
    Pending,
    Command::WarnTokenExpiry,
    Changes(Pending)
);
pair!(pending_teardown_is_refused, Pending, torn_down(), Refused);

// ACTIVE: live; Meta may ban it, the customer may end it.
pair!(
    active_activate_is_already_done,
    Active,
    Command::Activate,
    Already
);
pair!(active_fail_is_refused, Active, fail(), Refused);
pair!(
    active_disconnect_becomes_disconnected,
    Active,
    disconnect(),
    Changes(Disconnected)
);
pair!(
    active_ban_becomes_banned,
    Active,
    Command::Ban,
    Changes(Banned)
);
pair!(
    active_reinstate_is_already_done,
    Active,
    Command::Reinstate,
    Already
);
pair!(active_step_done_is_refused, Active, step_done(), Refused);
pair!(
    active_step_retried_is_refused,
    Active,
    step_retried(),
    Refused
);
pair!(
    active_quality_change_is_recorded,
    Active,
    quality_red(),
    Changes(Active)
);
pair!(
    active_display_name_is_recorded,
    Active,
    display_name(),
    Changes(Active)
);
pair!(
    active_token_expiry_is_warned,
    Active,
    Command::WarnTokenExpiry,
    Changes(Active)
);
pair!(active_teardown_is_refused, Active, torn_down(), Refused);

// BANNED: Meta may reinstate it; the customer may end it.
pair!(
    banned_activate_is_refused,
    Banned,
    Command::Activate,
    Refused
);
pair!(banned_fail_is_refused, Banned, fail(), Refused);
pair!(
    banned_disconnect_becomes_disconnected,
    Banned,
    disconnect(),
    Changes(Disconnected)
);
pair!(banned_ban_is_already_done, Banned, Command::Ban, Already);
pair!(
    banned_reinstate_becomes_active,
    Banned,
    Command::Reinstate,
    Changes(Active)
);
pair!(banned_step_done_is_refused, Banned, step_done(), Refused);
pair!(
    banned_step_retried_is_refused,
    Banned,
    step_retried(),
    Refused
);
pair!(
    banned_quality_change_is_recorded,
    Banned,
    quality_red(),
    Changes(Banned)
);
pair!(
    banned_display_name_is_recorded,
    Banned,
    display_name(),
    Changes(Banned)
);
pair!(
    banned_token_expiry_is_warned,
    Banned,
    Command::WarnTokenExpiry,
    Changes(Banned)
);
pair!(banned_teardown_is_refused, Banned, torn_down(), Refused);

// FAILED: final.
pair!(
    failed_activate_is_refused,
    Failed,
    Command::Activate,
    Refused
);
pair!(failed_fail_is_already_done, Failed, fail(), Already);
pair!(
    failed_disconnect_becomes_disconnected,
    Failed,
    disconnect(),
    Changes(Disconnected)
);
pair!(failed_ban_is_refused, Failed, Command::Ban, Refused);
pair!(
    failed_reinstate_is_refused,
    Failed,
    Command::Reinstate,
    Refused
);
pair!(failed_step_done_is_refused, Failed, step_done(), Refused);
pair!(
    failed_step_retried_is_refused,
    Failed,
    step_retried(),
    Refused
);
pair!(
    failed_quality_change_is_refused,
    Failed,
    quality_red(),
    Refused
);
pair!(
    failed_display_name_is_refused,
    Failed,
    display_name(),
    Refused
);
pair!(
    failed_token_expiry_is_refused,
    Failed,
    Command::WarnTokenExpiry,
    Refused
);
pair!(
    failed_teardown_is_recorded,
    Failed,
    torn_down(),
    Changes(Failed)
);

// DISCONNECTED: final; only its teardown is recorded.
pair!(
    disconnected_activate_is_refused,
    Disconnected,
    Command::Activate,
    Refused
);
pair!(disconnected_fail_is_refused, Disconnected, fail(), Refused);
pair!(
    disconnected_disconnect_is_already_done,
    Disconnected,
    disconnect(),
    Already
);
pair!(
    disconnected_ban_is_refused,
    Disconnected,
    Command::Ban,
    Refused
);
pair!(
    disconnected_reinstate_is_refused,
    Disconnected,
    Command::Reinstate,
    Refused
);
pair!(
    disconnected_step_done_is_refused,
    Disconnected,
    step_done(),
    Refused
);
pair!(
    disconnected_step_retried_is_refused,
    Disconnected,
    step_retried(),
    Refused
);
pair!(
    disconnected_quality_change_is_refused,
    Disconnected,
    quality_red(),
    Refused
);
pair!(
    disconnected_display_name_is_refused,
    Disconnected,
    display_name(),
    Refused
);
pair!(
    disconnected_token_expiry_is_refused,
    Disconnected,
    Command::WarnTokenExpiry,
    Refused
);
pair!(
    disconnected_teardown_is_recorded,
    Disconnected,
    torn_down(),
    Changes(Disconnected)
);

// Retry: only a FAILED number goes back to PENDING; a PENDING one is already retrying.
pair!(
    pending_retry_is_already_under_way,
    Pending,
    retry(),
    Already
);
pair!(active_retry_is_refused, Active, retry(), Refused);
pair!(banned_retry_is_refused, Banned, retry(), Refused);
pair!(
    failed_retry_becomes_pending,
    Failed,
    retry(),
    Changes(Pending)
);
pair!(
    disconnected_retry_is_refused,
    Disconnected,
    retry(),
    Refused
);

// ---- What an allowed change implies --------------------------------------------------------

fn change_of(status: Status, command: Command) -> Change {
    match decide(&number(status), command, now()) {
        Decision::Change(change) => *change,
        other => panic!("expected a change, decided {other:?}"),
    }
}

fn refusal_of(number: &Number, command: Command) -> Refusal {
    match decide(number, command, now()) {
        Decision::Refused(why) => why,
        other => panic!("expected a refusal, decided {other:?}"),
    }
}

#[test]
fn a_status_change_moves_one_count_between_statuses_and_announces_itself() {
    let change = change_of(Status::Active, Command::Ban);
    assert_eq!(
        change.counters,
        vec![(Status::Active, -1), (Status::Banned, 1)]
    );
    let event = change.event.expect("an event");
    assert_eq!(event.event_type, EventType::NumberBanned);
    assert_eq!(event.data["status"], "BANNED");
    assert_eq!(
        change.number.last_event_id.as_deref(),
        Some(event.id.as_str())
    );
    assert_eq!(change.number.updated_at, now());
}

#[test]
fn each_move_announces_its_own_event() {
    let cases = [
        (
            Status::Pending,
            Command::Activate,
            EventType::NumberActivated,
        ),
        (Status::Pending, fail(), EventType::NumberFailed),
        (Status::Active, Command::Ban, EventType::NumberBanned),
        (
            Status::Banned,
            Command::Reinstate,
            EventType::NumberReinstated,
        ),
        (Status::Banned, disconnect(), EventType::NumberDisconnected),
    ];
    for (status, command, event) in cases {
        let change = change_of(status, command);
        assert_eq!(change.event.map(|e| e.event_type), Some(event));
    }
}

#[test]
fn a_final_status_releases_the_phone_and_a_live_one_keeps_it() {
    assert_eq!(
        change_of(Status::Active, disconnect()).phone_guard,
        PhoneGuard::Release
    );
    assert_eq!(
        change_of(Status::Pending, fail()).phone_guard,
        PhoneGuard::Release
    );
    assert_eq!(
        change_of(Status::Active, Command::Ban).phone_guard,
        PhoneGuard::Keep
    );
    assert_eq!(
        change_of(Status::Pending, Command::Activate).phone_guard,
        PhoneGuard::Keep
    );
}

#[test]
fn a_number_whose_phone_is_live_elsewhere_never_touches_the_phone_guard() {
    // Given a pending number signed up while its phone was live in another account
    let mut elsewhere = number(Status::Pending);
    elsewhere.phone_elsewhere = true;
    // When it fails or is disconnected, the guard (the other number's) is left as it is
    for command in [fail(), disconnect()] {
        let Decision::Change(change) = decide(&elsewhere, command, now()) else {
            panic!("expected a change");
        };
        assert_eq!(change.phone_guard, PhoneGuard::Keep);
    }
}

#[test]
fn leaving_pending_clears_the_step_and_a_failure_keeps_its_reason() {
    let change = change_of(Status::Pending, fail());
    assert_eq!(change.number.provisioning_step, None);
    assert_eq!(change.number.failure_reason, Some(reason("131009")));
    assert_eq!(change.expected.step, Some(Step::SubscribeWaba));
    assert_eq!(
        change_of(Status::Pending, Command::Activate)
            .number
            .provisioning_step,
        None
    );
}

#[test]
fn activation_and_failure_are_provisioning_s_alone() {
    assert_eq!(
        refusal_of(&number(Status::Banned), Command::Activate),
        Refusal::NotPending {
            status: Status::Banned
        }
    );
    assert_eq!(
        refusal_of(&number(Status::Active), fail()),
        Refusal::NotPending {
            status: Status::Active
        }
    );
}

#[test]
fn a_step_done_moves_to_the_next_step_with_its_record_and_forgets_the_last_error() {
    let mut before = number(Status::Pending);
    before.provisioning_error = Some(reason("2"));
    let Decision::Change(change) = decide(&before, step_done(), now()) else {
        panic!("expected a change");
    };
    assert_eq!(change.number.provisioning_step, Some(Step::RegisterNumber));
    assert!(change.number.subscribed);
    assert_eq!(change.number.provisioning_error, None);
    assert!(change.counters.is_empty());
    assert_eq!(change.event, None);
    assert_eq!(change.phone_guard, PhoneGuard::Keep);
}

#[test]
fn a_step_done_twice_is_already_done() {
    let mut later = number(Status::Pending);
    later.provisioning_step = Some(Step::RegisterNumber);
    assert_eq!(decide(&later, step_done(), now()), Decision::Already);
}

#[test]
fn a_step_before_its_turn_is_refused() {
    let mut earlier = number(Status::Pending);
    earlier.provisioning_step = Some(Step::ExchangeToken);
    assert_eq!(
        refusal_of(&earlier, step_done()),
        Refusal::StepNotReached {
            step: Step::SubscribeWaba,
            at: Step::ExchangeToken
        }
    );
}

#[test]
fn the_last_step_is_finished_by_activation_not_as_a_step() {
    let mut last = number(Status::Pending);
    last.provisioning_step = Some(Step::ActivateNumber);
    let command = Command::StepDone {
        step: Step::ActivateNumber,
        record: StepRecord::default(),
    };
    assert_eq!(
        refusal_of(&last, command),
        Refusal::LastStep {
            step: Step::ActivateNumber
        }
    );
}

#[test]
fn a_step_done_keeps_fields_its_record_does_not_name() {
    let change = change_of(Status::Pending, step_done());
    assert_eq!(change.number.display_name.as_deref(), Some("Old name"));
    assert_eq!(change.number.quality_rating, Some(QualityRating::Green));
}

#[test]
fn a_retry_keeps_the_error_without_touching_updated_at_and_the_same_error_is_no_write() {
    let change = change_of(Status::Pending, step_retried());
    assert_eq!(change.number.provisioning_error, Some(reason("2")));
    assert_eq!(change.number.updated_at, number(Status::Pending).updated_at);
    assert_eq!(
        decide(&change.number, step_retried(), now()),
        Decision::Already
    );
}

#[test]
fn a_step_retried_with_a_new_reason_is_a_history_entry_with_meta_s_answer_and_the_attempt() {
    // Given a pending number whose step failed once with code 2
    let first = change_of(Status::Pending, step_retried_with("2", 1));
    // When its third attempt fails with another code
    let Decision::Change(change) = decide(&first.number, step_retried_with("4", 3), now()) else {
        panic!("a new reason is recorded");
    };
    // Then the change carries a history-only event with the step, Meta's answer and attempt 3
    let event = change.event.expect("a history entry");
    assert_eq!(event.event_type, EventType::NumberStepRetried);
    assert!(!event.event_type.is_published());
    assert_eq!(event.data["retry"]["attempt"], 3);
    assert_eq!(event.data["retry"]["reason"]["step"], "SUBSCRIBE_WABA");
    assert_eq!(event.data["retry"]["reason"]["code"], "4");
    assert_eq!(event.created_at, now());
    let changed: Vec<&str> = event.changes.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(changed, ["pendingReason"]);
    assert_eq!(event.changes[0].previous["code"], "2");
}

#[test]
fn a_history_only_entry_leaves_the_event_a_repeat_may_still_publish_as_the_latest() {
    // Given a pending number whose latest published event is evt_retried
    let mut before = number(Status::Pending);
    before.last_event_id = Some("evt_retried".into());
    // When a step of it is retried
    let Decision::Change(change) = decide(&before, step_retried(), now()) else {
        panic!("the retry is recorded");
    };
    // Then the history entry is written, and evt_retried stays the one to finish publishing
    assert!(change.event.is_some());
    assert_eq!(change.number.last_event_id.as_deref(), Some("evt_retried"));
}

#[test]
fn a_quality_change_announces_the_previous_rating_and_the_same_rating_is_no_change() {
    let change = change_of(Status::Active, quality_red());
    let event = change.event.expect("an event");
    assert_eq!(event.event_type, EventType::NumberQualityUpdated);
    assert_eq!(event.data["qualityRating"], "RED");
    assert_eq!(event.data["previousQualityRating"], "GREEN");
    assert_eq!(
        decide(
            &number(Status::Active),
            Command::QualityChanged(Some(QualityRating::Green)),
            now()
        ),
        Decision::Already
    );
}

#[test]
fn a_token_expiry_is_warned_once_a_day_within_the_week() {
    let change = change_of(Status::Active, Command::WarnTokenExpiry);
    assert_eq!(
        change.number.token_expiry_warned_on.as_deref(),
        Some("2026-12-01")
    );
    assert_eq!(
        change.event.map(|e| e.event_type),
        Some(EventType::NumberTokenExpiring)
    );
    assert_eq!(
        decide(&change.number, Command::WarnTokenExpiry, now()),
        Decision::Already
    );
    let next_day = at("2026-12-02T00:30:00Z");
    assert!(matches!(
        decide(&change.number, Command::WarnTokenExpiry, next_day),
        Decision::Change(_)
    ));
}

#[test]
fn a_token_far_from_expiry_or_without_one_is_not_warned() {
    let mut far = number(Status::Active);
    far.token_expires_at = Some(at("2027-02-01T00:00:00Z"));
    assert_eq!(
        refusal_of(&far, Command::WarnTokenExpiry),
        Refusal::TokenNotExpiring
    );
    far.token_expires_at = None;
    assert_eq!(
        refusal_of(&far, Command::WarnTokenExpiry),
        Refusal::TokenNotExpiring
    );
}

#[test]
fn a_teardown_is_recorded_once() {
    let change = change_of(Status::Disconnected, torn_down());
    assert_eq!(change.number.torn_down_at, Some(now()));
    assert_eq!(
        decide(&change.number, torn_down(), now()),
        Decision::Already
    );
}

#[test]
fn an_approved_name_is_set_and_announced_once_with_meta_s_decision() {
    let change = change_of(Status::Active, display_name());
    assert_eq!(change.number.display_name.as_deref(), Some("New name"));
    assert_eq!(change.number.name_status.as_deref(), Some("APPROVED"));
    let event = change.event.clone().expect("an event");
    assert_eq!(event.event_type, EventType::NumberDisplayNameUpdated);
    assert_eq!(event.data["displayName"], "New name");
    assert_eq!(event.data["nameDecision"]["decision"], "APPROVED");
    assert_eq!(
        decide(&change.number, display_name(), now()),
        Decision::Already
    );
}

#[test]
fn a_rejected_name_keeps_the_old_name_and_shows_it_declined_with_the_reason() {
    let rejected = NameDecision {
        decision: "REJECTED".into(),
        requested_verified_name: "Best Bank".into(),
        rejection_reason: Some("NAME_NOT_ALLOWED".into()),
    };
    let change = change_of(Status::Active, Command::NameDecided(rejected));
    assert_eq!(change.number.display_name.as_deref(), Some("Old name"));
    assert_eq!(change.number.name_status.as_deref(), Some("DECLINED"));
    let event = change.event.expect("an event");
    assert_eq!(
        event.data["nameDecision"]["rejectionReason"],
        "NAME_NOT_ALLOWED"
    );
}

// ---- Readiness of a step -------------------------------------------------------------------

#[test]
fn a_step_runs_only_at_its_turn() {
    let pending = number(Status::Pending);
    assert_eq!(readiness(&pending, Step::SubscribeWaba), Readiness::Run);
    assert_eq!(
        readiness(&pending, Step::RegisterNumber),
        Readiness::Early {
            at: Step::SubscribeWaba
        }
    );
}

#[test]
fn a_step_done_before_resends_only_the_step_the_number_is_at() {
    let pending = number(Status::Pending);
    assert_eq!(
        readiness(&pending, Step::ExchangeToken),
        Readiness::Done {
            resend: Some(Step::SubscribeWaba)
        }
    );
    let mut further = pending.clone();
    further.provisioning_step = Some(Step::FetchProfile);
    assert_eq!(
        readiness(&further, Step::ExchangeToken),
        Readiness::Done { resend: None }
    );
}

#[test]
fn no_step_runs_once_the_number_left_pending() {
    assert_eq!(
        readiness(&number(Status::Disconnected), Step::SubscribeWaba),
        Readiness::Stopped {
            status: Status::Disconnected
        }
    );
}

// ---- Retry and teardown of a failed number ---------------------------------------------------

fn failed_at(step: Step) -> Number {
    let mut number = number(Status::Failed);
    number.failure_reason = Some(FailureReason {
        step: step.as_str().into(),
        code: "131009".into(),
        message: "Parameter value is not valid".into(),
        ..FailureReason::default()
    });
    number.subscribed = step.ordinal() > Step::SubscribeWaba.ordinal();
    number.registered = step.ordinal() > Step::RegisterNumber.ordinal();
    number.torn_down_at = Some(at("2026-11-30T00:00:00Z"));
    number
}

#[test]
fn a_retry_resumes_at_the_failed_step_holding_the_phone_again() {
    let Decision::Change(change) = decide(&failed_at(Step::ConfigurePin), retry(), now()) else {
        panic!("expected a change");
    };
    assert_eq!(change.number.status, Status::Pending);
    assert_eq!(change.number.provisioning_step, Some(Step::ConfigurePin));
    assert_eq!(change.number.failure_reason, None);
    assert_eq!(change.number.torn_down_at, None);
    assert_eq!(change.phone_guard, PhoneGuard::Claim);
    assert_eq!(
        change.counters,
        vec![(Status::Failed, -1), (Status::Pending, 1)]
    );
    assert_eq!(
        change.event.map(|e| e.event_type),
        Some(EventType::NumberRetried)
    );
}

#[test]
fn a_retry_resumes_where_the_teardown_undid_something_at_meta() {
    let mut number = failed_at(Step::FetchProfile);
    number.subscribed = false;
    let Decision::Change(change) = decide(&number, retry(), now()) else {
        panic!("expected a change");
    };
    assert_eq!(change.number.provisioning_step, Some(Step::SubscribeWaba));
    number.subscribed = true;
    number.registered = false;
    assert_eq!(resume_step(&number), Some(Step::RegisterNumber));
}

#[test]
fn a_failed_code_exchange_needs_a_new_signup() {
    assert!(matches!(
        refusal_of(&failed_at(Step::ExchangeToken), retry()),
        Refusal::ReauthorizationRequired { .. }
    ));
}

#[test]
fn a_retry_without_a_usable_token_needs_a_new_signup() {
    let refusal = refusal_of(
        &failed_at(Step::RegisterNumber),
        Command::Retry {
            token_usable: false,
        },
    );
    assert!(matches!(refusal, Refusal::ReauthorizationRequired { .. }));
    assert!(refusal.to_string().contains("new signup link"));
}

#[test]
fn disconnecting_a_failed_number_leaves_the_phone_to_whoever_holds_it() {
    let change = change_of(Status::Failed, disconnect());
    assert_eq!(change.phone_guard, PhoneGuard::Keep);
    assert_eq!(
        change.counters,
        vec![(Status::Failed, -1), (Status::Disconnected, 1)]
    );
}

#[test]
fn a_disconnected_number_is_torn_down_at_meta_and_loses_its_token_at_once() {
    let number = number(Status::Disconnected);
    assert_eq!(
        teardown_due(&number, now(), Duration::days(7)),
        Some(TeardownPlan {
            meta: true,
            delete_token: true
        })
    );
}

#[test]
fn a_retriable_failure_keeps_its_token_for_the_retention_period() {
    let mut number = failed_at(Step::RegisterNumber);
    number.torn_down_at = None;
    number.updated_at = now();
    assert_eq!(
        teardown_due(&number, now(), Duration::days(7)),
        Some(TeardownPlan {
            meta: true,
            delete_token: false
        })
    );
    number.torn_down_at = Some(now());
    assert_eq!(teardown_due(&number, now(), Duration::days(7)), None);
    let later = now() + Duration::days(7);
    assert_eq!(
        teardown_due(&number, later, Duration::days(7)),
        Some(TeardownPlan {
            meta: false,
            delete_token: true
        })
    );
}

#[test]
fn a_failure_no_retry_can_resume_loses_its_token_at_once() {
    let mut number = failed_at(Step::ExchangeToken);
    number.torn_down_at = None;
    number.updated_at = now();
    assert_eq!(
        teardown_due(&number, now(), Duration::days(7)),
        Some(TeardownPlan {
            meta: true,
            delete_token: true
        })
    );
}

#[test]
fn a_live_number_has_no_teardown_due() {
    for status in [Status::Pending, Status::Active, Status::Banned] {
        assert_eq!(
            teardown_due(&number(status), now(), Duration::days(7)),
            None
        );
    }
}

#[test]
fn a_teardown_clears_what_it_undid() {
    let mut number = failed_at(Step::ConfigurePin);
    number.torn_down_at = None;
    let command = Command::TornDown(Teardown {
        deregistered: true,
        unsubscribed: true,
        token_deleted: false,
    });
    let Decision::Change(change) = decide(&number, command, now()) else {
        panic!("expected a change");
    };
    assert!(!change.number.registered && !change.number.subscribed);
    assert_eq!(change.number.token_deleted_at, None);
    assert_eq!(change.number.torn_down_at, Some(now()));
}

// ---- Register budget, restrictions, scheduled bans ------------------------------------------

fn restriction() -> Restriction {
    Restriction {
        kind: "RESTRICTED_BIZ_INITIATED_MESSAGING".into(),
        expires_at: Some(at("2026-12-08T00:00:00Z")),
    }
}

fn restrict() -> Command {
    Command::Restrict(vec![restriction()])
}

pair!(
    pending_count_register_call_is_counted,
    Pending,
    Command::CountRegisterCall,
    Changes(Pending)
);
pair!(
    pending_restrict_is_recorded,
    Pending,
    restrict(),
    Changes(Pending)
);
pair!(
    pending_schedule_ban_is_announced,
    Pending,
    Command::ScheduleBan,
    Changes(Pending)
);
pair!(
    active_count_register_call_is_refused,
    Active,
    Command::CountRegisterCall,
    Refused
);
pair!(
    active_restrict_is_recorded,
    Active,
    restrict(),
    Changes(Active)
);
pair!(
    active_schedule_ban_is_announced,
    Active,
    Command::ScheduleBan,
    Changes(Active)
);
pair!(
    banned_count_register_call_is_refused,
    Banned,
    Command::CountRegisterCall,
    Refused
);
pair!(
    banned_restrict_is_recorded,
    Banned,
    restrict(),
    Changes(Banned)
);
pair!(
    banned_schedule_ban_is_refused,
    Banned,
    Command::ScheduleBan,
    Refused
);
pair!(
    failed_count_register_call_is_counted_for_its_teardown,
    Failed,
    Command::CountRegisterCall,
    Changes(Failed)
);
pair!(failed_restrict_is_refused, Failed, restrict(), Refused);
pair!(
    failed_schedule_ban_is_refused,
    Failed,
    Command::ScheduleBan,
    Refused
);
pair!(
    disconnected_count_register_call_is_counted,
    Disconnected,
    Command::CountRegisterCall,
    Changes(Disconnected)
);
pair!(
    disconnected_restrict_is_refused,
    Disconnected,
    restrict(),
    Refused
);
pair!(
    disconnected_schedule_ban_is_refused,
    Disconnected,
    Command::ScheduleBan,
    Refused
);

#[test]
fn register_calls_are_counted_up_to_the_budget_in_any_window() {
    let mut number = number(Status::Pending);
    for hour in 0..REGISTER_BUDGET as i64 {
        let at = now() + Duration::hours(hour);
        let Decision::Change(change) = decide(&number, Command::CountRegisterCall, at) else {
            panic!("call {hour} is within the budget");
        };
        assert_eq!(change.number.updated_at, number.updated_at);
        assert_eq!(change.event, None);
        number = change.number;
    }
    let ninth = now() + Duration::hours(8);
    assert_eq!(
        decide(&number, Command::CountRegisterCall, ninth),
        Decision::Refused(Refusal::RegisterBudgetSpent {
            until: now() + Duration::hours(REGISTER_WINDOW_HOURS)
        })
    );
    // Once the first call leaves the window there is room for one more, and the old calls
    // are forgotten.
    let later = now() + Duration::hours(REGISTER_WINDOW_HOURS);
    let Decision::Change(change) = decide(&number, Command::CountRegisterCall, later) else {
        panic!("the window moved on");
    };
    assert_eq!(change.number.register_calls.len(), REGISTER_BUDGET);
    assert_eq!(change.number.register_calls.last(), Some(&later));
}

#[test]
fn a_torn_down_number_sends_no_more_register_requests() {
    let mut number = number(Status::Disconnected);
    number.torn_down_at = Some(now());
    assert!(matches!(
        decide(&number, Command::CountRegisterCall, now()),
        Decision::Refused(Refusal::NoRegisterCall { .. })
    ));
}

#[test]
fn a_restriction_is_announced_then_the_same_one_is_no_change_and_its_end_is_announced() {
    let change = change_of(Status::Active, restrict());
    assert_eq!(change.number.restrictions, vec![restriction()]);
    assert_eq!(
        change.event.as_ref().map(|e| e.event_type),
        Some(EventType::NumberRestricted)
    );
    assert_eq!(decide(&change.number, restrict(), now()), Decision::Already);
    let Decision::Change(lifted) = decide(&change.number, Command::Restrict(Vec::new()), now())
    else {
        panic!("lifting changes the number");
    };
    assert!(lifted.number.restrictions.is_empty());
    assert_eq!(
        lifted.event.map(|e| e.event_type),
        Some(EventType::NumberRestrictionLifted)
    );
}

#[test]
fn a_scheduled_ban_is_announced_once_and_the_ban_clears_it() {
    let change = change_of(Status::Active, Command::ScheduleBan);
    assert!(change.number.ban_scheduled);
    assert_eq!(change.number.status, Status::Active);
    assert_eq!(
        change.event.map(|e| e.event_type),
        Some(EventType::NumberBanScheduled)
    );
    assert_eq!(
        decide(&change.number, Command::ScheduleBan, now()),
        Decision::Already
    );
    let Decision::Change(banned) = decide(&change.number, Command::Ban, now()) else {
        panic!("the ban follows");
    };
    assert!(!banned.number.ban_scheduled);
}

#[test]
fn no_restriction_means_none_is_lifted() {
    assert_eq!(
        decide(
            &number(Status::Active),
            Command::Restrict(Vec::new()),
            now()
        ),
        Decision::Already
    );
}

// ---- Reconnect ---------------------------------------------------------------------------

fn start_reconnect() -> Command {
    Command::StartReconnect { id: "rcn_1".into() }
}

pair!(
    pending_reconnect_is_refused,
    Pending,
    start_reconnect(),
    Refused
);
pair!(
    active_reconnect_starts_and_stays_active,
    Active,
    start_reconnect(),
    Changes(Active)
);
pair!(
    banned_reconnect_starts_and_stays_banned,
    Banned,
    start_reconnect(),
    Changes(Banned)
);
pair!(
    failed_reconnect_is_refused,
    Failed,
    start_reconnect(),
    Refused
);
pair!(
    disconnected_reconnect_is_refused,
    Disconnected,
    start_reconnect(),
    Refused
);

fn changed(number: &Number, command: Command, at: Timestamp) -> Number {
    match decide(number, command.clone(), at) {
        Decision::Change(change) => change.number,
        other => panic!("{command:?}: expected a change, decided {other:?}"),
    }
}

fn reconnecting(status: Status) -> Number {
    changed(&number(status), start_reconnect(), now())
}

fn reconnect_step_done(step: Step, record: StepRecord) -> Command {
    Command::ReconnectStepDone {
        id: "rcn_1".into(),
        step,
        record,
    }
}

#[test]
fn a_reconnect_starts_at_the_exchange_with_no_event_and_keeps_the_number() {
    let before = number(Status::Active);
    let Decision::Change(change) = decide(&before, start_reconnect(), now()) else {
        panic!("no change");
    };
    let reconnect = change.number.reconnect.clone().expect("a reconnect marker");
    assert_eq!(reconnect.id, "rcn_1");
    assert_eq!(reconnect.step, Step::ExchangeToken);
    assert_eq!(change.number.id, before.id);
    assert_eq!(change.event, None);
    assert_eq!(change.phone_guard, PhoneGuard::Keep);
    assert!(change.counters.is_empty());
}

#[test]
fn a_reconnect_step_retried_is_a_history_entry_once_per_reason() {
    // Given an active number reconnecting, at the code exchange
    let number = reconnecting(Status::Active);
    let retried = |attempt| Command::ReconnectStepRetried {
        id: "rcn_1".into(),
        step: Step::ExchangeToken,
        reason: reason("2"),
        attempt,
    };
    // When the exchange fails transiently
    let Decision::Change(change) = decide(&number, retried(1), now()) else {
        panic!("the retry is recorded");
    };
    // Then the history has an entry with Meta's answer and the attempt, the status unchanged
    let event = change.event.expect("a history entry");
    assert_eq!(event.event_type, EventType::NumberStepRetried);
    assert_eq!(event.data["retry"]["attempt"], 1);
    assert_eq!(event.data["retry"]["reason"]["code"], "2");
    assert_eq!(event.data["status"], "ACTIVE");
    // And the same answer at the next attempt writes nothing
    assert_eq!(decide(&change.number, retried(2), now()), Decision::Already);
}

#[test]
fn a_second_signup_during_a_reconnect_restarts_nothing() {
    let number = reconnecting(Status::Active);
    let another = Command::StartReconnect { id: "rcn_2".into() };
    let later = now() + Duration::minutes(RECONNECT_STALE_MINUTES - 1);
    assert_eq!(decide(&number, another, later), Decision::Already);
}

#[test]
fn a_stale_reconnect_is_replaced_by_a_new_signup() {
    let number = reconnecting(Status::Active);
    let another = Command::StartReconnect { id: "rcn_2".into() };
    let later = now() + Duration::minutes(RECONNECT_STALE_MINUTES);
    let replaced = changed(&number, another, later);
    assert_eq!(replaced.reconnect.map(|r| r.id), Some("rcn_2".into()));
}

#[test]
fn reconnect_steps_follow_the_reconnect_chain_and_record_the_new_token() {
    let number = reconnecting(Status::Active);
    let new_expiry = at("2027-02-01T00:00:00Z");
    let exchanged = changed(
        &number,
        reconnect_step_done(
            Step::ExchangeToken,
            StepRecord {
                token_expires_at: Some(new_expiry),
                token_replaced: true,
                ..StepRecord::default()
            },
        ),
        now(),
    );
    assert_eq!(exchanged.token_expires_at, Some(new_expiry));
    assert_eq!(
        exchanged.reconnect.as_ref().map(|r| r.step),
        Some(Step::SubscribeWaba)
    );
    assert_eq!(exchanged.status, Status::Active);
    let subscribed = changed(
        &exchanged,
        reconnect_step_done(Step::SubscribeWaba, StepRecord::default()),
        now(),
    );
    assert_eq!(
        subscribed.reconnect.as_ref().map(|r| r.step),
        Some(Step::FetchProfile)
    );
    assert_eq!(
        reconnect_readiness(&subscribed, "rcn_1", Step::FetchProfile),
        Readiness::Run
    );
    assert_eq!(
        reconnect_readiness(&subscribed, "rcn_1", Step::SubscribeWaba),
        Readiness::Done {
            resend: Some(Step::FetchProfile)
        }
    );
    assert_eq!(
        reconnect_readiness(&subscribed, "rcn_0", Step::FetchProfile),
        Readiness::Superseded
    );
}

#[test]
fn a_token_that_never_expires_replaces_one_that_did() {
    let number = reconnecting(Status::Active);
    let exchanged = changed(
        &number,
        reconnect_step_done(
            Step::ExchangeToken,
            StepRecord {
                token_expires_at: None,
                token_replaced: true,
                ..StepRecord::default()
            },
        ),
        now(),
    );
    assert_eq!(exchanged.token_expires_at, None);
}

#[test]
fn a_step_of_a_reconnect_that_is_not_the_current_one_is_refused() {
    let number = reconnecting(Status::Active);
    let stale = Command::ReconnectStepDone {
        id: "rcn_0".into(),
        step: Step::ExchangeToken,
        record: StepRecord::default(),
    };
    assert!(matches!(
        decide(&number, stale, now()),
        Decision::Refused(Refusal::NoSuchReconnect { .. })
    ));
}

#[test]
fn a_finished_reconnect_announces_number_reconnected_once() {
    let mut number = reconnecting(Status::Banned);
    if let Some(r) = number.reconnect.as_mut() {
        r.step = Step::ActivateNumber;
    }
    number.token_expiry_warned_on = Some("2026-12-01".into());
    let finish = Command::FinishReconnect { id: "rcn_1".into() };
    let Decision::Change(change) = decide(&number, finish.clone(), now()) else {
        panic!("no change");
    };
    assert_eq!(
        change.event.as_ref().map(|e| e.event_type),
        Some(EventType::NumberReconnected)
    );
    assert_eq!(change.number.reconnect, None);
    assert_eq!(change.number.reconnected_at, Some(now()));
    assert_eq!(change.number.status, Status::Banned);
    assert_eq!(change.number.token_expiry_warned_on, None);
    assert_eq!(decide(&change.number, finish, now()), Decision::Already);
}

#[test]
fn an_abandoned_reconnect_announces_its_reason_and_keeps_the_status() {
    let number = reconnecting(Status::Active);
    let abandon = Command::AbandonReconnect {
        id: "rcn_1".into(),
        reason: reason("190"),
    };
    let Decision::Change(change) = decide(&number, abandon.clone(), now()) else {
        panic!("no change");
    };
    assert_eq!(
        change.event.as_ref().map(|e| e.event_type),
        Some(EventType::NumberReconnectFailed)
    );
    assert_eq!(change.number.reconnect, None);
    assert_eq!(change.number.reconnect_failure, Some(reason("190")));
    assert_eq!(change.number.status, Status::Active);
    assert_eq!(decide(&change.number, abandon, now()), Decision::Already);
}

#[test]
fn a_disconnect_ends_a_reconnect_in_progress() {
    let number = reconnecting(Status::Active);
    let ended = changed(&number, disconnect(), now());
    assert_eq!(ended.reconnect, None);
    assert_eq!(
        reconnect_readiness(&ended, "rcn_1", Step::SubscribeWaba),
        Readiness::Stopped {
            status: Status::Disconnected
        }
    );
}

#[test]
fn a_reconnect_may_count_a_register_request_and_a_live_number_without_one_may_not() {
    assert!(matches!(
        decide(&number(Status::Active), Command::CountRegisterCall, now()),
        Decision::Refused(Refusal::NoRegisterCall { .. })
    ));
    assert!(matches!(
        decide(
            &reconnecting(Status::Active),
            Command::CountRegisterCall,
            now()
        ),
        Decision::Change(_)
    ));
}

// ---- What Meta reports of the phone: health, limit, name status, token, markers -------------

fn health(can_send: CanSendMessage) -> Health {
    Health {
        can_send_message: can_send,
        errors: if can_send == CanSendMessage::Available {
            Vec::new()
        } else {
            vec![HealthIssue {
                error_code: 141006,
                error_description: "Payment method issue".into(),
                possible_solution: Some("Add a payment method".into()),
                entity: "WABA".into(),
            }]
        },
    }
}

fn blocked() -> Command {
    Command::HealthRead(health(CanSendMessage::Blocked))
}

fn limit_10k() -> Command {
    Command::LimitRead {
        messaging_limit: Some("TIER_10K".into()),
        throughput: None,
        announce_first: false,
    }
}

fn token_invalid() -> Command {
    Command::TokenChecked(TokenStatus::Invalid)
}

fn offboarded() -> Command {
    Command::MarkRestriction {
        marker: RestrictionMarker::AccountOffboarded,
        on: true,
    }
}

fn name_pending_review() -> Command {
    Command::NameStatusRead("PENDING_REVIEW".into())
}

pair!(
    pending_health_is_recorded,
    Pending,
    blocked(),
    Changes(Pending)
);
pair!(
    active_health_is_recorded,
    Active,
    blocked(),
    Changes(Active)
);
pair!(
    banned_health_is_recorded,
    Banned,
    blocked(),
    Changes(Banned)
);
pair!(failed_health_is_refused, Failed, blocked(), Refused);
pair!(
    disconnected_health_is_refused,
    Disconnected,
    blocked(),
    Refused
);
pair!(
    pending_limit_is_recorded,
    Pending,
    limit_10k(),
    Changes(Pending)
);
pair!(
    active_limit_is_recorded,
    Active,
    limit_10k(),
    Changes(Active)
);
pair!(
    banned_limit_is_recorded,
    Banned,
    limit_10k(),
    Changes(Banned)
);
pair!(failed_limit_is_refused, Failed, limit_10k(), Refused);
pair!(
    disconnected_limit_is_refused,
    Disconnected,
    limit_10k(),
    Refused
);
pair!(
    pending_token_status_is_recorded,
    Pending,
    token_invalid(),
    Changes(Pending)
);
pair!(
    active_token_status_is_recorded,
    Active,
    token_invalid(),
    Changes(Active)
);
pair!(
    banned_token_status_is_recorded,
    Banned,
    token_invalid(),
    Changes(Banned)
);
pair!(
    failed_token_status_is_refused,
    Failed,
    token_invalid(),
    Refused
);
pair!(
    disconnected_token_status_is_refused,
    Disconnected,
    token_invalid(),
    Refused
);
pair!(
    pending_marker_is_recorded,
    Pending,
    offboarded(),
    Changes(Pending)
);
pair!(
    active_marker_is_recorded,
    Active,
    offboarded(),
    Changes(Active)
);
pair!(
    banned_marker_is_recorded,
    Banned,
    offboarded(),
    Changes(Banned)
);
pair!(failed_marker_is_refused, Failed, offboarded(), Refused);
pair!(
    disconnected_marker_is_refused,
    Disconnected,
    offboarded(),
    Refused
);
pair!(
    pending_name_status_is_recorded,
    Pending,
    name_pending_review(),
    Changes(Pending)
);
pair!(
    active_name_status_is_recorded,
    Active,
    name_pending_review(),
    Changes(Active)
);
pair!(
    banned_name_status_is_recorded,
    Banned,
    name_pending_review(),
    Changes(Banned)
);
pair!(
    failed_name_status_is_refused,
    Failed,
    name_pending_review(),
    Refused
);
pair!(
    disconnected_name_status_is_refused,
    Disconnected,
    name_pending_review(),
    Refused
);

#[test]
fn a_blocked_health_is_announced_and_the_same_health_is_no_change() {
    let change = change_of(Status::Active, blocked());
    let event = change.event.clone().expect("an event");
    assert_eq!(event.event_type, EventType::NumberHealthChanged);
    assert_eq!(event.data["health"]["canSendMessage"], "BLOCKED");
    assert_eq!(event.data["health"]["errors"][0]["errorCode"], 141006);
    assert_eq!(event.data["health"]["errors"][0]["entity"], "WABA");
    assert_eq!(decide(&change.number, blocked(), now()), Decision::Already);
    let Decision::Change(back) = decide(
        &change.number,
        Command::HealthRead(health(CanSendMessage::Available)),
        now(),
    ) else {
        panic!("available again is a change");
    };
    assert_eq!(
        back.event.map(|e| e.event_type),
        Some(EventType::NumberHealthChanged)
    );
}

#[test]
fn a_first_health_reading_that_is_available_is_recorded_quietly() {
    let change = change_of(
        Status::Active,
        Command::HealthRead(health(CanSendMessage::Available)),
    );
    assert!(change.number.health.is_some());
    assert_eq!(change.event, None);
}

#[test]
fn a_changed_limit_is_announced_as_a_quality_update_with_the_previous_limit() {
    let mut before = number(Status::Active);
    before.messaging_limit = Some("TIER_1K".into());
    let Decision::Change(change) = decide(&before, limit_10k(), now()) else {
        panic!("a new limit is a change");
    };
    assert_eq!(change.number.messaging_limit.as_deref(), Some("TIER_10K"));
    let event = change.event.clone().expect("an event");
    assert_eq!(event.event_type, EventType::NumberQualityUpdated);
    assert_eq!(event.data["messagingLimit"], "TIER_10K");
    assert_eq!(event.data["previousMessagingLimit"], "TIER_1K");
    assert_eq!(event.data["previousQualityRating"], "GREEN");
    assert_eq!(
        decide(&change.number, limit_10k(), now()),
        Decision::Already
    );
}

#[test]
fn a_first_limit_is_quiet_when_read_and_announced_when_meta_pushed_it() {
    let read = change_of(Status::Active, limit_10k());
    assert_eq!(read.event, None);
    let pushed = change_of(
        Status::Active,
        Command::LimitRead {
            messaging_limit: Some("TIER_10K".into()),
            throughput: Some("HIGH".into()),
            announce_first: true,
        },
    );
    assert_eq!(pushed.number.throughput.as_deref(), Some("HIGH"));
    assert_eq!(
        pushed.event.map(|e| e.event_type),
        Some(EventType::NumberQualityUpdated)
    );
}

#[test]
fn an_invalid_token_is_announced_once() {
    let change = change_of(Status::Active, token_invalid());
    assert_eq!(change.number.token_status, Some(TokenStatus::Invalid));
    let event = change.event.clone().expect("an event");
    assert_eq!(event.event_type, EventType::NumberTokenInvalid);
    assert_eq!(event.data["tokenStatus"], "INVALID");
    assert_eq!(
        decide(&change.number, token_invalid(), now()),
        Decision::Already
    );
    let valid = change_of(Status::Active, Command::TokenChecked(TokenStatus::Valid));
    assert_eq!(valid.event, None);
}

#[test]
fn an_offboarding_marks_a_restriction_that_meta_s_list_keeps_and_reconnection_lifts() {
    let change = change_of(Status::Active, offboarded());
    assert_eq!(
        change.event.as_ref().map(|e| e.event_type),
        Some(EventType::NumberRestricted)
    );
    let Decision::Change(listed) = decide(&change.number, restrict(), now()) else {
        panic!("Meta's list is a change");
    };
    let kinds: Vec<&str> = listed
        .number
        .restrictions
        .iter()
        .map(|r| r.kind.as_str())
        .collect();
    assert_eq!(
        kinds,
        ["RESTRICTED_BIZ_INITIATED_MESSAGING", "ACCOUNT_OFFBOARDED"]
    );
    let reconnected = Command::MarkRestriction {
        marker: RestrictionMarker::AccountOffboarded,
        on: false,
    };
    let Decision::Change(lifted) = decide(&change.number, reconnected.clone(), now()) else {
        panic!("the reconnection lifts it");
    };
    assert!(lifted.number.restrictions.is_empty());
    assert_eq!(
        lifted.event.map(|e| e.event_type),
        Some(EventType::NumberRestrictionLifted)
    );
    assert_eq!(
        decide(&lifted.number, reconnected, now()),
        Decision::Already
    );
}

#[test]
fn a_changed_name_status_is_announced_and_a_first_one_is_quiet() {
    let first = change_of(Status::Pending, name_pending_review());
    assert_eq!(first.event, None);
    let Decision::Change(approved) = decide(
        &first.number,
        Command::NameStatusRead("APPROVED".into()),
        now(),
    ) else {
        panic!("a new name status is a change");
    };
    assert_eq!(
        approved.event.map(|e| e.event_type),
        Some(EventType::NumberDisplayNameUpdated)
    );
}

#[test]
fn a_disconnection_records_who_disconnected() {
    let change = change_of(Status::Active, Command::Disconnect(DisconnectedBy::Meta));
    assert_eq!(change.number.disconnected_by, Some(DisconnectedBy::Meta));
    let event = change.event.expect("an event");
    assert_eq!(event.data["disconnectedBy"], "meta");
}

// ---- Register waiting on 2388001 ------------------------------------------------------------

fn at_register() -> Number {
    let mut number = number(Status::Pending);
    number.provisioning_step = Some(Step::RegisterNumber);
    number
}

fn name_not_ready() -> FailureReason {
    FailureReason {
        step: "REGISTER_NUMBER".into(),
        code: "100/2388001".into(),
        message: "(#100) Invalid parameter".into(),
        ..FailureReason::default()
    }
}

#[test]
fn a_register_waiting_on_meta_keeps_the_phone_as_read_and_its_step_done_forgets_it() {
    let waits = Command::RegisterWaits {
        reason: name_not_ready(),
        phone: Some("CONNECTED|PENDING_REVIEW".into()),
        attempt: 1,
    };
    let Decision::Change(change) = decide(&at_register(), waits.clone(), now()) else {
        panic!("waiting is recorded");
    };
    assert_eq!(change.number.provisioning_error, Some(name_not_ready()));
    assert_eq!(
        change.number.register_waiting_on.as_deref(),
        Some("CONNECTED|PENDING_REVIEW")
    );
    assert_eq!(change.number.updated_at, at_register().updated_at);
    assert_eq!(decide(&change.number, waits, now()), Decision::Already);
    let done = Command::StepDone {
        step: Step::RegisterNumber,
        record: StepRecord {
            registered: true,
            ..StepRecord::default()
        },
    };
    let Decision::Change(done) = decide(&change.number, done, now()) else {
        panic!("the step is done");
    };
    assert_eq!(done.number.register_waiting_on, None);
}

#[test]
fn a_register_waiting_on_meta_is_in_the_history_once_per_reason_not_per_phone_reading() {
    // Given a register that waits on 2388001 (a history entry)
    let waits = |phone: &str, attempt| Command::RegisterWaits {
        reason: name_not_ready(),
        phone: Some(phone.into()),
        attempt,
    };
    let Decision::Change(first) =
        decide(&at_register(), waits("CONNECTED|PENDING_REVIEW", 1), now())
    else {
        panic!("waiting is recorded");
    };
    let event = first.event.clone().expect("a history entry");
    assert_eq!(event.event_type, EventType::NumberStepRetried);
    assert_eq!(event.data["retry"]["reason"]["code"], "100/2388001");
    // When the next attempt meets the same answer with the phone read differently
    let Decision::Change(second) = decide(&first.number, waits("CONNECTED|APPROVED", 2), now())
    else {
        panic!("the new reading is recorded");
    };
    // Then the reading is written without another entry
    assert_eq!(second.event, None);
}

#[test]
fn an_unchanged_phone_is_registered_again_only_while_the_blind_share_of_the_budget_lasts() {
    let mut number = at_register();
    number.register_waiting_on = Some("CONNECTED|PENDING_REVIEW".into());
    let unchanged = Some("CONNECTED|PENDING_REVIEW");
    for hour in 0..BLIND_REGISTER_CALLS as i64 {
        assert!(register_again(&number, unchanged, now()));
        number.register_calls.push(now() - Duration::hours(hour));
    }
    assert!(!register_again(&number, unchanged, now()));
    assert!(!register_again(&number, None, now()));
    assert!(register_again(&number, Some("CONNECTED|APPROVED"), now()));
    let window_later = now() + Duration::hours(REGISTER_WINDOW_HOURS);
    assert!(register_again(&number, unchanged, window_later));
}

fn pending_at(step: Step) -> Number {
    let mut number = number(Status::Pending);
    number.provisioning_step = Some(step);
    number
}

fn pin_done(beside_done: bool) -> Command {
    Command::StepDone {
        step: Step::ConfigurePin,
        record: StepRecord {
            display_name: beside_done.then(|| "New name".to_string()),
            beside_done,
            ..StepRecord::default()
        },
    }
}

#[test]
fn a_pin_done_with_the_profile_read_beside_it_goes_past_the_profile_step_to_the_activation() {
    let number = pending_at(Step::ConfigurePin);

    let after = changed(&number, pin_done(true), now());

    assert_eq!(after.provisioning_step, Some(Step::ActivateNumber));
    assert_eq!(after.display_name.as_deref(), Some("New name"));
}

#[test]
fn a_pin_done_without_the_profile_goes_on_to_the_profile_step() {
    let number = pending_at(Step::ConfigurePin);

    let after = changed(&number, pin_done(false), now());

    assert_eq!(after.provisioning_step, Some(Step::FetchProfile));
}

#[test]
fn a_record_saying_beside_done_skips_nothing_after_a_step_that_runs_nothing_beside() {
    let number = pending_at(Step::RegisterNumber);
    let done = Command::StepDone {
        step: Step::RegisterNumber,
        record: StepRecord {
            registered: true,
            beside_done: true,
            ..StepRecord::default()
        },
    };

    let after = changed(&number, done, now());

    assert_eq!(after.provisioning_step, Some(Step::ConfigurePin));
}

#[test]
fn a_pin_step_whose_run_went_past_the_profile_resends_the_activation_it_handed_over_to() {
    let past_the_profile = pending_at(Step::ActivateNumber);
    let at_the_profile = pending_at(Step::FetchProfile);

    assert_eq!(
        readiness(&past_the_profile, Step::ConfigurePin),
        Readiness::Done {
            resend: Some(Step::ActivateNumber)
        }
    );
    assert_eq!(
        readiness(&at_the_profile, Step::ConfigurePin),
        Readiness::Done {
            resend: Some(Step::FetchProfile)
        }
    );
    assert_eq!(
        readiness(&past_the_profile, Step::RegisterNumber),
        Readiness::Done { resend: None }
    );
}
