//! A whole run, from signup to teardown, with every log line captured: the token and the PIN
//! appear nowhere but in Secrets Manager (and the first message's code nowhere after it).

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fake_meta::Route;
use muchaw_shared::domain::Status;
use muchaw_shared::ports::Queue;
use muchaw_tests::provisioning::ProvisioningEnv;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn tokens_pins_and_codes_never_reach_logs_tables_queues_or_responses() {
    let logs = Captured::default();
    // What the functions log in production (telemetry::init), captured.
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_writer(logs.clone()),
        )
        .with(muchaw_shared::telemetry::filter(
            &muchaw_shared::telemetry::DEFAULT_FILTER.replace("info", "debug"),
        ))
        .init();

    let p = ProvisioningEnv::new().await;
    let (account, key) = p.env.account_with_key("acme").await;
    let waba = "100000000000001";
    let phone = "220000000000001";
    let code = p.meta_phone(waba, phone);
    // One transient failure per step, so the retry paths log too.
    p.meta
        .fail_next(Route::Register, 1, fake_meta::Fault::transient_5xx());
    p.meta
        .fail_next(Route::ExchangeCode, 1, fake_meta::Fault::transient_5xx());
    let created = p.callback(&key, &code, waba, phone).await;
    let id = created.body["data"]["id"].as_str().unwrap().to_string();
    let number = p.settled(&account, &id, Duration::from_secs(60)).await;
    assert_eq!(number.status, Status::Active);
    let view = p
        .env
        .get(Some(&key), &format!("/api/numbers/{id}"), "")
        .await;
    let list = p.env.get(Some(&key), "/api/numbers", "").await;
    let deleted = p
        .env
        .delete(Some(&key), &format!("/api/numbers/{id}"))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while p.number(&account, &id).await.torn_down_at.is_none()
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let token = p
        .meta
        .calls_to(Route::SubscribeApp)
        .iter()
        .find_map(|c| c.authorization.clone())
        .expect("the token reached Meta")
        .trim_start_matches("Bearer ")
        .to_string();
    let pin = p
        .meta
        .calls_to(Route::Register)
        .iter()
        .find_map(|c| {
            c.body
                .get("pin")
                .and_then(|p| p.as_str())
                .map(str::to_string)
        })
        .expect("the PIN reached Meta");
    assert!(token.len() > 10 && pin.len() == 6);

    let log_text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(log_text.contains(&id), "the logs do name the number");
    let table = p.env.table_snapshot().await.join("\n");
    let later_messages: Vec<String> = p
        .queue
        .sent
        .lock()
        .unwrap()
        .iter()
        .filter(|(q, _)| *q != Queue::Step(muchaw_shared::domain::Step::ExchangeToken))
        .map(|(_, body)| body.clone())
        .collect();
    let responses = format!(
        "{} {} {} {}",
        created.body, view.body, list.body, deleted.body
    );
    let app_secret = p.meta.app_secret().to_string();

    for (place, text) in [
        ("logs", &log_text),
        ("DynamoDB", &table),
        (
            "SQS bodies after the first step",
            &later_messages.join("\n"),
        ),
        ("API responses", &responses),
    ] {
        assert!(!text.contains(&token), "the token appears in {place}");
        assert!(
            !text.contains(&format!("\"{pin}\"")),
            "the PIN appears in {place}"
        );
        assert!(
            !text.contains(&app_secret),
            "the app secret appears in {place}"
        );
        assert!(!text.contains(&key), "the API key appears in {place}");
    }
    for (place, text) in [
        ("logs", &log_text),
        ("DynamoDB", &table),
        ("API responses", &responses),
    ] {
        assert!(!text.contains(&code), "the signup code appears in {place}");
    }
}
