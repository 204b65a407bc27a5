//! DNS rebinding (OWASP SSRF prevention): a hostname that answers with a public address when the
//! endpoint is checked and with `127.0.0.1` / `169.254.169.254` when the delivery connects never
//! gets a connection to the internal address. The real deliverer, against moto.

use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use muchaw_shared::domain::history::EventPosition;
use muchaw_shared::domain::{EventType, time};
use muchaw_shared::ports::{
    DeliveryLog, Message, MessageQueue, Queue, QueueError, Redelivery, RedeliveryDelay,
    WebhookEndpoints,
};
use muchaw_shared::webhooks::WebhookEndpoint;
use muchaw_shared::webhooks::delivery::{Deliverer, DeliveryMessage, http_client};
use muchaw_shared::webhooks::log::DeliveryStatus;
use muchaw_shared::webhooks::resolver::{GuardedResolver, Lookup, NameLookup};
use muchaw_shared::webhooks::url_policy::UrlPolicy;
use muchaw_tests::TestEnv;
use serde_json::json;
use tracing_subscriber::fmt::MakeWriter;

/// A name server that answers differently on each call: `first`, then `after` on every later one.
struct Rebinding {
    calls: AtomicUsize,
    first: Vec<IpAddr>,
    after: Vec<IpAddr>,
}

impl Rebinding {
    fn new(first: &[&str], after: &[&str]) -> Arc<Rebinding> {
        let parse = |list: &[&str]| list.iter().map(|a| a.parse().unwrap()).collect();
        Arc::new(Rebinding {
            calls: AtomicUsize::new(0),
            first: parse(first),
            after: parse(after),
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl NameLookup for Rebinding {
    fn lookup<'a>(&'a self, _host: &'a str) -> Lookup<'a> {
        let answer = if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            self.first.clone()
        } else {
            self.after.clone()
        };
        Box::pin(async move { Ok(answer) })
    }
}

/// An "internal service" on loopback that counts the connections it accepts.
struct InternalService {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

impl InternalService {
    async fn start() -> InternalService {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                drop(socket);
            }
        });
        InternalService { port, accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Retries are only reported here; the test looks at the batch response.
struct NoRedelivery;

impl Redelivery for NoRedelivery {
    async fn delay_redelivery(
        &self,
        _: Queue,
        _: &str,
        _: RedeliveryDelay,
    ) -> Result<(), QueueError> {
        Ok(())
    }
}

impl MessageQueue for NoRedelivery {
    async fn send<M: Message>(&self, _: &M) -> Result<(), QueueError> {
        Err(QueueError::Unconfigured(Queue::Events))
    }
}

const EVENT_CREATED_AT: &str = "2026-11-25T10:00:00.000Z";

/// Whether the delivery log says the event reached the endpoint.
async fn delivered(env: &TestEnv, endpoint_id: &str, event_id: &str) -> bool {
    let position = EventPosition {
        created_at: time::parse(EVENT_CREATED_AT).unwrap(),
        event_id: event_id.into(),
    };
    env.store
        .delivery(endpoint_id, &position)
        .await
        .unwrap()
        .is_some_and(|d| d.status == DeliveryStatus::Succeeded)
}

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

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).to_string()
    }
}

struct Attempt {
    retried: bool,
    delivered: bool,
    logs: String,
}

/// Creates an endpoint on a rebinding name after the creation check, then delivers one event
/// to it through the deliverer the function builds.
async fn deliver_through_rebinding_name(
    policy: UrlPolicy,
    lookup: Arc<Rebinding>,
    service: &InternalService,
) -> Attempt {
    let env = TestEnv::new().await;
    let account = env.account("acme").await;
    let resolver = GuardedResolver::new(lookup, policy.allow_private);
    let url = format!("https://rebind.muchaw.test:{}/hooks", service.port);
    policy
        .check_with(&url, &resolver)
        .await
        .expect("the name is public when the endpoint is created");
    let endpoint = WebhookEndpoint::new(account.clone(), url, None, time::now());
    env.store.save_endpoint(&endpoint).await.unwrap();

    let deliverer = Deliverer {
        store: env.store.clone(),
        queue: NoRedelivery,
        http: http_client(Duration::from_secs(2), resolver).unwrap(),
        policy,
        retry_schedule: vec![1],
    };
    let message = DeliveryMessage {
        v: muchaw_shared::domain::messages::MESSAGE_VERSION,
        event_id: "evt_rebinding".into(),
        event_type: EventType::NumberActivated,
        account_id: account,
        endpoint_id: endpoint.id.clone(),
        body: json!({"id": "evt_rebinding", "type": "number.activated", "createdAt": EVENT_CREATED_AT})
            .to_string(),
    };
    let event = serde_json::from_value(json!({"Records": [{
        "messageId": "m1", "receiptHandle": "r1",
        "body": serde_json::to_string(&message).unwrap(),
        "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {}
    }]}))
    .unwrap();

    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(logs.clone())
        .finish();
    let response = {
        let _default = tracing::subscriber::set_default(subscriber);
        deliverer.handle_deliveries(event).await
    };
    Attempt {
        retried: response.batch_item_failures.len() == 1,
        delivered: delivered(&env, &endpoint.id, "evt_rebinding").await,
        logs: logs.text(),
    }
}

#[tokio::test]
async fn a_name_rebound_to_internal_addresses_after_the_check_is_never_connected_to() {
    // Given an internal service on loopback and a name that is public at the creation check,
    // then answers with that loopback address and the metadata address
    let service = InternalService::start().await;
    let lookup = Rebinding::new(&["93.184.215.14"], &["127.0.0.1", "169.254.169.254"]);

    // When a delivery to that endpoint is attempted under the production policy
    let attempt = deliver_through_rebinding_name(
        UrlPolicy {
            allow_private: false,
        },
        lookup.clone(),
        &service,
    )
    .await;

    // Then the connection resolved the name again, got only internal addresses and opened none
    assert!(
        lookup.calls() >= 2,
        "the connection resolved the name itself"
    );
    assert_eq!(service.accepted(), 0, "the internal service was reached");
    // and the delivery failed (to be retried) with the reason in its log
    assert!(attempt.retried);
    assert!(!attempt.delivered);
    assert!(
        attempt
            .logs
            .contains("url host rebind.muchaw.test resolves only to internal addresses"),
        "{}",
        attempt.logs
    );
}

#[tokio::test]
async fn with_private_targets_allowed_the_same_name_is_connected_to() {
    // Given the same rebinding name, in a deployment with ALLOW_PRIVATE_WEBHOOK_URLS=true
    let service = InternalService::start().await;
    // (no creation check resolves it then, so the connection gets the loopback answer)
    let lookup = Rebinding::new(&["127.0.0.1"], &["127.0.0.1"]);

    // When a delivery is attempted
    let attempt = deliver_through_rebinding_name(
        UrlPolicy {
            allow_private: true,
        },
        lookup,
        &service,
    )
    .await;

    // Then the loopback service gets the connection (the guard above is what stops it)
    assert!(service.accepted() >= 1, "{}", attempt.logs);
    assert!(!attempt.logs.contains("resolves only to internal addresses"));
}

#[tokio::test]
async fn a_redirect_from_an_endpoint_is_not_followed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Given an internal service, and an endpoint that answers every delivery with a redirect
    // to it
    let internal = InternalService::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint_port = listener.local_addr().unwrap().port();
    let redirect = format!(
        "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{}/latest/meta-data/\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        internal.port
    );
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buffer = [0u8; 4096];
            let _ = socket.read(&mut buffer).await;
            let _ = socket.write_all(redirect.as_bytes()).await;
        }
    });
    let env = TestEnv::new().await;
    let account = env.account("acme").await;
    let url = format!("http://127.0.0.1:{endpoint_port}/hooks");
    let endpoint = WebhookEndpoint::new(account.clone(), url, None, time::now());
    env.store.save_endpoint(&endpoint).await.unwrap();
    let policy = UrlPolicy {
        allow_private: true,
    };
    let deliverer = Deliverer {
        store: env.store.clone(),
        queue: NoRedelivery,
        http: http_client(Duration::from_secs(2), policy.resolver()).unwrap(),
        policy,
        retry_schedule: vec![1],
    };
    let message = DeliveryMessage {
        v: muchaw_shared::domain::messages::MESSAGE_VERSION,
        event_id: "evt_redirect".into(),
        event_type: EventType::NumberActivated,
        account_id: account,
        endpoint_id: endpoint.id.clone(),
        body: json!({"id": "evt_redirect", "createdAt": EVENT_CREATED_AT}).to_string(),
    };
    let event = serde_json::from_value(json!({"Records": [{
        "messageId": "m1", "receiptHandle": "r1",
        "body": serde_json::to_string(&message).unwrap(),
        "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {}
    }]}))
    .unwrap();

    // When the event is delivered
    let response = deliverer.handle_deliveries(event).await;

    // Then the redirect is a failed delivery (retried), and its target is never contacted
    assert_eq!(response.batch_item_failures.len(), 1);
    assert!(!delivered(&env, &endpoint.id, "evt_redirect").await);
    assert_eq!(internal.accepted(), 0);
}
