//! 5,000 numbers in one account: a page and its total cost O(limit) reads, never a Scan.

use muchaw_shared::domain::Status;
use muchaw_shared::ports::{NumberReader, Page};
use muchaw_tests::{TestEnv, sample_number};

const ACCOUNT_SIZE: usize = 5_000;

#[tokio::test]
async fn the_first_page_and_total_of_a_large_account_read_only_the_page() {
    let env = TestEnv::new().await;
    let account = env.account("big").await;
    let neighbour = env.account("neighbour").await;
    let mut numbers: Vec<_> = (0..ACCOUNT_SIZE)
        .map(|i| {
            let status = if i % 5 == 0 {
                Status::Pending
            } else {
                Status::Active
            };
            sample_number(&account, status, i as i64)
        })
        .collect();
    numbers.push(sample_number(&neighbour, Status::Active, 0));
    env.store.import_numbers(&numbers).await.unwrap();
    let pending = ACCOUNT_SIZE as u64 / 5;
    let active = ACCOUNT_SIZE as u64 - pending;

    env.store.stats().reset();
    env.dynamo_operations.reset();
    let first = env
        .store
        .list(
            &account,
            None,
            Page {
                limit: 20,
                offset: 0,
            },
        )
        .await
        .unwrap();
    let cost = env.store.stats().snapshot();
    assert_eq!(first.total, ACCOUNT_SIZE as u64);
    assert_eq!(first.numbers.len(), 20);
    assert_eq!(first.numbers[0].id, numbers[0].id, "newest first");
    assert_eq!(
        env.dynamo_operations.count("Scan"),
        0,
        "sent: {:?}",
        env.dynamo_operations.sent()
    );
    assert_eq!(
        env.dynamo_operations.sent().len() as u64,
        cost.requests,
        "the adapter's own count agrees with what left the SDK"
    );
    assert!(
        cost.requests <= 3,
        "one index query, one batch read, one counter read: {cost:?}"
    );
    assert!(
        cost.items_read <= 41,
        "20 index keys + 20 numbers + 1 counter item: {cost:?}"
    );

    env.store.stats().reset();
    let filtered = env
        .store
        .list(
            &account,
            Some(Status::Active),
            Page {
                limit: 20,
                offset: 0,
            },
        )
        .await
        .unwrap();
    let cost = env.store.stats().snapshot();
    assert_eq!(filtered.total, active);
    assert!(filtered.numbers.iter().all(|n| n.status == Status::Active));
    assert!(cost.items_read <= 41, "{cost:?}");

    env.store.stats().reset();
    let deep = env
        .store
        .list(
            &account,
            None,
            Page {
                limit: 20,
                offset: 4_990,
            },
        )
        .await
        .unwrap();
    let cost = env.store.stats().snapshot();
    assert_eq!(deep.numbers.len(), 10);
    assert_eq!(
        deep.numbers.last().map(|n| &n.id),
        Some(&numbers[ACCOUNT_SIZE - 1].id)
    );
    assert!(
        cost.items_read <= 5_000 + 10 + 1,
        "the offset is skipped on the keys-only index only: {cost:?}"
    );

    // Totals follow status changes exactly.
    for number in numbers
        .iter()
        .filter(|n| n.status == Status::Active)
        .take(10)
    {
        env.change_status(number, Status::Banned).await;
    }
    let total = |status| {
        let env = &env;
        let account = &account;
        async move {
            env.store
                .list(
                    account,
                    status,
                    Page {
                        limit: 1,
                        offset: 0,
                    },
                )
                .await
                .unwrap()
                .total
        }
    };
    assert_eq!(total(Some(Status::Active)).await, active - 10);
    assert_eq!(total(Some(Status::Banned)).await, 10);
    assert_eq!(total(Some(Status::Pending)).await, pending);
    assert_eq!(total(None).await, ACCOUNT_SIZE as u64);
}
