//! The DynamoDB adapter against moto: keys, indexes, conditions, counters and the phone guard.

use muchaw_shared::domain::api_key::KeyHash;
use muchaw_shared::domain::{AccountId, Status, Timestamp, time};
use muchaw_shared::lifecycle::Changed;
use muchaw_shared::ports::{ApiKeyVerifier, NumberReader, Page, ProvisioningStore, Queue};
use muchaw_tests::{TestEnv, sample_number};

fn page(limit: u32, offset: u32) -> Page {
    Page { limit, offset }
}

#[tokio::test]
async fn a_number_is_read_back_exactly_as_written() {
    let env = TestEnv::new().await;
    let account = env.account("acme").await;
    let mut number = sample_number(&account, Status::Active, 5);
    let at = number.created_at;
    number.register_calls = vec![at, at + chrono::Duration::hours(1)];
    env.store
        .import_numbers(std::slice::from_ref(&number))
        .await
        .unwrap();
    let read = env.store.get(&account, &number.id).await.unwrap();
    assert_eq!(read, Some(number));
}

#[tokio::test]
async fn a_number_is_invisible_to_another_account() {
    let env = TestEnv::new().await;
    let owner = env.account("owner").await;
    let other = env.account("other").await;
    let number = sample_number(&owner, Status::Active, 5);
    env.store
        .import_numbers(std::slice::from_ref(&number))
        .await
        .unwrap();
    assert_eq!(env.store.get(&other, &number.id).await.unwrap(), None);
    let listed = env.store.list(&other, None, page(20, 0)).await.unwrap();
    assert!(listed.numbers.is_empty());
    assert_eq!(listed.total, 0);
}

#[tokio::test]
async fn lists_are_newest_first_with_offset_and_limit() {
    let env = TestEnv::new().await;
    let account = env.account("acme").await;
    let numbers: Vec<_> = (0..7)
        .map(|i| sample_number(&account, Status::Active, 100 - i * 10))
        .collect();
    env.store.import_numbers(&numbers).await.unwrap();
    let newest_first: Vec<_> = numbers.iter().rev().map(|n| n.id.clone()).collect();

    let first = env.store.list(&account, None, page(3, 0)).await.unwrap();
    let ids: Vec<_> = first.numbers.iter().map(|n| n.id.clone()).collect();
    assert_eq!(ids, newest_first[..3]);
    assert_eq!(first.total, 7);

    let last = env.store.list(&account, None, page(3, 6)).await.unwrap();
    let ids: Vec<_> = last.numbers.iter().map(|n| n.id.clone()).collect();
    assert_eq!(ids, newest_first[6..]);

    let beyond = env.store.list(&account, None, page(3, 7)).await.unwrap();
    assert!(beyond.numbers.is_empty());
    assert_eq!(beyond.total, 7);
}

#[tokio::test]
async fn the_status_filter_lists_and_counts_only_that_status() {
    let env = TestEnv::new().await;
    let account = env.account("acme").await;
    let mut numbers = Vec::new();
    for (i, status) in [
        Status::Active,
        Status::Pending,
        Status::Active,
        Status::Banned,
    ]
    .into_iter()
    .enumerate()
    {
        numbers.push(sample_number(&account, status, 50 - i as i64));
    }
    env.store.import_numbers(&numbers).await.unwrap();
    let active = env
        .store
        .list(&account, Some(Status::Active), page(20, 0))
        .await
        .unwrap();
    assert_eq!(active.total, 2);
    assert_eq!(active.numbers.len(), 2);
    assert!(active.numbers.iter().all(|n| n.status == Status::Active));
    let failed = env
        .store
        .list(&account, Some(Status::Failed), page(20, 0))
        .await
        .unwrap();
    assert_eq!(failed.total, 0);
    assert!(failed.numbers.is_empty());
}

#[tokio::test]
async fn a_status_change_moves_the_number_between_filters_and_counters() {
    let env = TestEnv::new().await;
    let account = env.account("acme").await;
    let number = sample_number(&account, Status::Active, 5);
    env.store
        .import_numbers(std::slice::from_ref(&number))
        .await
        .unwrap();

    let outcome = env.change_status(&number, Status::Banned).await;
    let Changed::Now(banned) = outcome else {
        panic!("expected the change to apply, got {outcome:?}");
    };
    assert_eq!(banned.status, Status::Banned);
    assert_eq!(
        env.store.get(&account, &number.id).await.unwrap(),
        Some(banned)
    );

    let active = env
        .store
        .list(&account, Some(Status::Active), page(20, 0))
        .await
        .unwrap();
    let banned = env
        .store
        .list(&account, Some(Status::Banned), page(20, 0))
        .await
        .unwrap();
    assert_eq!((active.total, active.numbers.len()), (0, 0));
    assert_eq!((banned.total, banned.numbers.len()), (1, 1));
    assert_eq!(
        env.store
            .list(&account, None, page(20, 0))
            .await
            .unwrap()
            .total,
        1
    );
}

#[tokio::test]
async fn a_change_from_a_stale_status_is_not_applied_and_returns_the_current_number() {
    let env = TestEnv::new().await;
    let account = env.account("acme").await;
    let number = sample_number(&account, Status::Active, 5);
    env.store
        .import_numbers(std::slice::from_ref(&number))
        .await
        .unwrap();
    env.change_status(&number, Status::Disconnected).await;

    // `number` still says ACTIVE: the conditional write finds DISCONNECTED and refuses.
    let outcome = env.change_status(&number, Status::Banned).await;
    match outcome {
        Changed::Refused(current, _) => assert_eq!(current.status, Status::Disconnected),
        other => panic!("expected Refused, got {other:?}"),
    }
    let counts = env
        .store
        .list(&account, Some(Status::Banned), page(1, 0))
        .await
        .unwrap();
    assert_eq!(counts.total, 0);
}

#[tokio::test]
async fn a_final_status_releases_the_phone_guard() {
    let env = TestEnv::new().await;
    let account = env.account("acme").await;
    let number = sample_number(&account, Status::Active, 5);
    env.store
        .import_numbers(std::slice::from_ref(&number))
        .await
        .unwrap();
    let guard_key = format!("PHONE#{}", number.phone_number_id);
    let guarded = env.table_snapshot().await;
    assert!(guarded.iter().any(|item| item.contains(&guard_key)));

    env.change_status(&number, Status::Disconnected).await;
    let released = env.table_snapshot().await;
    assert!(!released.iter().any(|item| item.contains(&guard_key)));
}

#[tokio::test]
async fn a_retry_whose_phone_another_number_took_is_refused_and_writes_nothing() {
    use muchaw_shared::domain::FailureReason;
    use muchaw_shared::domain::lifecycle::{Command, Refusal};
    // Given a failed number, and a new signup of its phone that holds the phone guard
    let env = TestEnv::new().await;
    let account = env.account("acme").await;
    let mut failed = sample_number(&account, Status::Failed, 10);
    failed.failure_reason = Some(FailureReason {
        step: "REGISTER_NUMBER".into(),
        code: "131009".into(),
        message: "Parameter value is not valid".into(),
        ..Default::default()
    });
    let mut again = sample_number(&account, Status::Pending, 0);
    again.phone_number_id = failed.phone_number_id.clone();
    env.store
        .import_numbers(&[failed.clone(), again])
        .await
        .unwrap();
    let before = env.table_snapshot().await;

    // When the retry's write claims the phone (no check ahead of it)
    let outcome = env
        .apply(&failed, Command::Retry { token_usable: true })
        .await;

    // Then it is refused at once for the phone, and nothing was written
    match outcome {
        Changed::Refused(current, Refusal::PhoneTaken) => assert_eq!(current, failed),
        other => panic!("expected the phone to be taken, got {other:?}"),
    }
    assert_eq!(env.table_snapshot().await, before);
}

#[tokio::test]
async fn an_api_key_resolves_to_its_account_until_revoked() {
    let env = TestEnv::new().await;
    let account = env.account("acme").await;
    let created = env
        .store
        .create_api_key(&account, Some("ci"))
        .await
        .unwrap();
    let hash = created.key.hash();
    let key_id = created.id.to_string();
    assert_eq!(
        env.store.account_for_key(&hash).await.unwrap(),
        Some(account.clone())
    );

    env.store
        .revoke_api_key(&account, &key_id.clone().into())
        .await
        .unwrap();
    assert_eq!(env.store.account_for_key(&hash).await.unwrap(), None);
    // Revoking again is harmless.
    env.store
        .revoke_api_key(&account, &key_id.into())
        .await
        .unwrap();
}

#[tokio::test]
async fn only_the_hash_of_an_api_key_is_stored() {
    let env = TestEnv::new().await;
    let (_, key) = env.account_with_key("acme").await;
    let snapshot = env.table_snapshot().await.join("\n");
    assert!(!snapshot.contains(&key));
    assert!(snapshot.contains(KeyHash::of(&key).as_str()));
}

#[tokio::test]
async fn a_key_for_an_unknown_account_is_refused() {
    let env = TestEnv::new().await;
    let result = env
        .store
        .create_api_key(&"acc_missing".to_string().into(), None)
        .await;
    assert!(matches!(
        result,
        Err(muchaw_shared::ports::StoreError::NotFound)
    ));
}

#[tokio::test]
async fn a_status_change_writes_and_publishes_its_event_once() {
    let env = TestEnv::new().await;
    let account = env.account("acme").await;
    let number = sample_number(&account, Status::Active, 5);
    env.store
        .import_numbers(std::slice::from_ref(&number))
        .await
        .unwrap();
    let Changed::Now(banned) = env.change_status(&number, Status::Banned).await else {
        panic!("expected the change to apply");
    };
    // A duplicate (the same change again from the stale copy) changes nothing more.
    let again = env.change_status(&number, Status::Banned).await;
    assert!(matches!(again, Changed::Already(_)), "{again:?}");

    let events = env.drain(Queue::Events).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "number.banned");
    assert_eq!(events[0]["data"]["status"], "BANNED");
    assert_eq!(
        Some(events[0]["id"].as_str().unwrap().to_string()),
        banned.last_event_id
    );
    let banned_total = env
        .store
        .list(&account, Some(Status::Banned), page(1, 0))
        .await
        .unwrap();
    assert_eq!(banned_total.total, 1);
}

#[tokio::test]
async fn a_page_s_opened_report_arriving_after_its_cancel_does_not_undo_it() {
    use muchaw_shared::domain::signup_session::{Report, SessionState, SignupSession};
    use muchaw_shared::ports::{SignupLinks, SignupSessions};
    let env = TestEnv::new().await;
    let account = env.account("acme").await;
    let now = muchaw_shared::domain::time::now();
    let link = SignupSession::new(
        "lnk_outoforder1".into(),
        account.clone(),
        now,
        now + chrono::Duration::hours(24),
        None,
    );
    env.store.save_link(&link).await.unwrap();
    let cancelled = Report::Cancelled {
        step: "PHONE_NUMBER_SETUP".into(),
    };

    assert!(
        env.store
            .record_report(&account, &link.link_id, &cancelled, now)
            .await
            .unwrap()
    );
    assert!(
        env.store
            .record_report(&account, &link.link_id, &Report::Opened, now)
            .await
            .unwrap()
    );

    let stored = env.store.link(&link.link_id).await.unwrap().unwrap();
    assert_eq!(stored.state(now), SessionState::Cancelled);
    assert_eq!(stored.last_report.map(|(r, _)| r), Some(cancelled));
}

#[tokio::test]
async fn a_restart_lease_goes_to_one_caller_until_it_runs_out_and_never_after_the_first_commit() {
    // Given a number as its signup created it
    let env = TestEnv::new().await;
    let account = env.account("acme").await;
    let other = env.account("other").await;
    let number = sample_number(&account, Status::Pending, 0);
    env.store
        .import_numbers(std::slice::from_ref(&number))
        .await
        .unwrap();
    let now = time::now();
    let lease = chrono::Duration::seconds(5);
    let take = |account: &AccountId, at: Timestamp| {
        let store = env.store.clone();
        let (account, id) = (account.clone(), number.id.clone());
        async move {
            store
                .lease_restart(&account, &id, at, at + lease)
                .await
                .unwrap()
        }
    };

    // Then one caller takes the lease, the next is refused while it holds, and another
    // account's caller never gets it
    assert!(take(&account, now).await);
    assert!(!take(&account, now + chrono::Duration::seconds(1)).await);
    assert!(!take(&other, now + chrono::Duration::seconds(10)).await);
    // and the number reads back unchanged
    assert_eq!(
        env.store.get(&account, &number.id).await.unwrap(),
        Some(number.clone())
    );
    // and once the lease ran out it can be taken again
    assert!(take(&account, now + chrono::Duration::seconds(6)).await);

    // When the number is written (it started, or it failed)
    env.change_status(&number, Status::Failed).await;

    // Then no lease is granted any more
    assert!(!take(&account, now + chrono::Duration::seconds(60)).await);
}
