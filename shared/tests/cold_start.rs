//! A function's init reads no trust store: every HTTP client a function builds (the AWS SDK
//! clients, Meta's Graph client, the webhook senders) defers TLS to its first HTTPS request.
//!
//! The trust store is a named pipe (`SSL_CERT_FILE`, which rustls-native-certs reads instead of
//! the OS store, for the SDK's connector and ours alike), watched by a thread that counts every
//! open for reading, whoever opens it. Its own test binary: the environment and the process's
//! one HTTP client start fresh.

use std::ffi::CString;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use muchaw_shared::adapters::meta::{GraphClient, MetaConfig};
use muchaw_shared::aws::Clients;
use muchaw_shared::domain::secrets::Secret;
use muchaw_shared::webhooks::sender::Sender;
use muchaw_shared::webhooks::url_policy::UrlPolicy;

/// A port nothing listens on: the requests fail at once, after the client chose its connector.
const CLOSED: &str = "127.0.0.1:9";

/// Counts the opens of a named pipe for reading: a writer's non-blocking open succeeds only
/// while a reader holds it. Each reader gets one real root (the SDK's connector insists on at
/// least one), small enough for the pipe's buffer.
struct WatchedTrustStore {
    reads: Arc<AtomicUsize>,
}

impl WatchedTrustStore {
    fn at(path: &Path) -> WatchedTrustStore {
        let raw = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo only creates the file.
        assert_eq!(unsafe { libc::mkfifo(raw.as_ptr(), 0o600) }, 0, "mkfifo");
        let root = one_root_certificate();
        let reads = Arc::new(AtomicUsize::new(0));
        let counter = reads.clone();
        let path = path.to_path_buf();
        std::thread::spawn(move || {
            loop {
                let opened = std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(&path);
                if let Ok(mut writer) = opened {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let _ = writer.write_all(root.as_bytes());
                    drop(writer);
                    // Until this reader has seen end-of-file and closed its end.
                    std::thread::sleep(Duration::from_millis(20));
                } else {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        WatchedTrustStore { reads }
    }

    /// Reads so far, after giving the watcher time to see a pending one.
    fn reads(&self) -> usize {
        std::thread::sleep(Duration::from_millis(50));
        self.reads.load(Ordering::SeqCst)
    }
}

/// The first certificate of the system's bundle, in PEM.
fn one_root_certificate() -> String {
    const END: &str = "-----END CERTIFICATE-----";
    let bundle = std::fs::read_to_string("/etc/ssl/certs/ca-certificates.crt").unwrap();
    let begin = bundle.find("-----BEGIN CERTIFICATE-----").unwrap();
    let end = bundle[begin..].find(END).unwrap() + begin + END.len();
    format!("{}\n", &bundle[begin..end])
}

fn local_environment(trust_store: &Path) {
    // SAFETY: set before any thread of this test binary reads the environment.
    unsafe {
        std::env::set_var("AWS_REGION", "us-east-1");
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        std::env::set_var("AWS_MAX_ATTEMPTS", "1");
        std::env::set_var("SSL_CERT_FILE", trust_store);
        std::env::remove_var("SSL_CERT_DIR");
    }
}

fn scratch_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{name}-{}", std::process::id()))
}

#[tokio::test]
async fn building_every_client_and_calling_plain_http_reads_no_trust_store_until_the_first_https_request()
 {
    // Given a watched trust store, and every client a function builds at init, built as the
    // functions build them
    let path = scratch_path("muchaw-trust-store");
    let _ = std::fs::remove_file(&path);
    let trust_store = WatchedTrustStore::at(&path);
    local_environment(&path);
    let clients = Clients::load().unwrap();
    let _graph = GraphClient::new(MetaConfig {
        graph_url: format!("http://{CLOSED}"),
        graph_version: "v23.0".into(),
        app_id: "app".into(),
        app_secret: Secret::new(""),
        timeout: Duration::from_secs(1),
    })
    .unwrap();
    let policy = UrlPolicy {
        allow_private: true,
    };
    let _sender = Sender::new(policy, Duration::from_secs(1)).unwrap();
    let _deliveries =
        muchaw_shared::webhooks::sender::http_client(Duration::from_secs(1), policy.resolver())
            .unwrap();
    // When they are built and an SDK client calls a plain-HTTP endpoint (as on the local stack)
    let plain = aws_sdk_sqs::Client::from_conf(
        clients
            .sqs
            .config()
            .to_builder()
            .endpoint_url(format!("http://{CLOSED}"))
            .build(),
    );
    assert!(plain.list_queues().send().await.is_err());
    // Then no trust store has been read
    assert_eq!(trust_store.reads(), 0);

    // When an SDK client makes its first HTTPS request
    let tls = aws_sdk_sqs::Client::from_conf(
        clients
            .sqs
            .config()
            .to_builder()
            .endpoint_url(format!("https://{CLOSED}"))
            .build(),
    );
    assert!(tls.list_queues().send().await.is_err());
    // Then the trust store is read for it (the watch sees reads)
    assert!(trust_store.reads() >= 1);
    let _ = std::fs::remove_file(&path);
}
