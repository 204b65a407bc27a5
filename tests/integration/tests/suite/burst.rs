//! A burst of signups at once. It loads the shared moto server more than any other test, so
//! `make test` runs it on its own after the rest (a test beside it would wait on moto, not on
//! the code it checks).

use std::time::Duration;

use muchaw_shared::domain::Status;
use muchaw_shared::ports::{NumberReader, Page};
use muchaw_tests::provisioning::ProvisioningEnv;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

const WABA: &str = "100000000000001";

#[tokio::test]
async fn two_hundred_signups_at_once_all_become_active_with_exact_totals() {
    let _ = tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer())
        .with(muchaw_shared::telemetry::filter(
            &std::env::var("TEST_LOG").unwrap_or_else(|_| "error".into()),
        ))
        .try_init();
    let p = ProvisioningEnv::new().await;
    let (account, key) = p.env.account_with_key("burst").await;
    let phones: Vec<String> = (0..200).map(|i| format!("2300000{i:08}")).collect();
    let codes: Vec<String> = phones
        .iter()
        .map(|phone| p.meta_phone(WABA, phone))
        .collect();
    // moto answers ~100 requests/s, a few hundred times slower than DynamoDB, SQS and Secrets
    // Manager: 200 exchanges at once cannot all start within Meta's 30 s here. What this test
    // checks is that none is lost or counted twice; the first-step latency is tested elsewhere.
    p.meta.set_code_lifetime(Duration::from_secs(600));
    p.start();
    let responses = futures::future::join_all(
        phones
            .iter()
            .zip(&codes)
            .map(|(phone, code)| p.callback(&key, code, WABA, phone)),
    )
    .await;
    assert!(
        responses.iter().all(|r| r.status == 202),
        "{:?}",
        responses.iter().find(|r| r.status != 202)
    );
    let total = |status| {
        let p = &p;
        let account = account.clone();
        async move {
            p.env
                .store
                .list(
                    &account,
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
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    loop {
        let (active, pending) = (
            total(Some(Status::Active)).await,
            total(Some(Status::Pending)).await,
        );
        if active == 200 || (pending == 0 && active > 0) || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let failed = p
        .env
        .store
        .list(
            &account,
            Some(Status::Failed),
            Page {
                limit: 100,
                offset: 0,
            },
        )
        .await
        .unwrap();
    let reasons: Vec<_> = failed
        .numbers
        .iter()
        .map(|n| format!("{:?}", n.failure_reason))
        .collect();
    assert_eq!(
        total(Some(Status::Active)).await,
        200,
        "failed: {} {reasons:?}",
        failed.total
    );
    assert_eq!(total(Some(Status::Pending)).await, 0);
    assert_eq!(total(Some(Status::Failed)).await, 0);
    assert_eq!(total(None).await, 200);
    let listed = p
        .env
        .store
        .list(
            &account,
            None,
            Page {
                limit: 100,
                offset: 100,
            },
        )
        .await
        .unwrap();
    assert!(listed.numbers.iter().all(|n| n.status == Status::Active));
}
