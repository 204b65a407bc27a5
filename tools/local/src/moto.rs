//! moto server on loopback, started and stopped by whoever needs it.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aws_config::{BehaviorVersion, Region, SdkConfig};

pub const REGION: &str = "us-east-1";

/// A moto server process, killed when this is dropped (and, through `PR_SET_PDEATHSIG`, when
/// the process that started it dies).
pub struct Moto {
    endpoint: String,
    child: Option<Child>,
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from("."))
}

/// How moto is started: `MOTO_SERVER` (a `moto_server` executable) when set, else the repo's
/// `scripts/moto_server.py` (stock moto with atomic DynamoDB writes) under the `.venv` Python,
/// else whatever `moto_server` is on the PATH.
fn moto_command() -> (PathBuf, Vec<String>) {
    if let Ok(path) = std::env::var("MOTO_SERVER") {
        return (PathBuf::from(path), Vec::new());
    }
    let root = workspace_root();
    let python = root.join(".venv/bin/python");
    let launcher = root.join("scripts/moto_server.py");
    if python.exists() && launcher.exists() {
        return (python, vec![launcher.display().to_string()]);
    }
    (PathBuf::from("moto_server"), Vec::new())
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Moto {
    pub fn start() -> Result<Moto> {
        Moto::start_on(free_port()?)
    }

    pub fn start_on(port: u16) -> Result<Moto> {
        let (binary, launcher) = moto_command();
        let mut command = Command::new(&binary);
        command
            .args(launcher)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: prctl is async-signal-safe and touches only the child's own state.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command.spawn().with_context(|| {
            format!("starting {} (pip install 'moto[server]')", binary.display())
        })?;
        let moto = Moto {
            endpoint: format!("http://127.0.0.1:{port}"),
            child: Some(child),
        };
        moto.wait_ready(Duration::from_secs(30))?;
        Ok(moto)
    }

    /// A moto server someone else runs (the test script, the local stack).
    pub fn external(endpoint: impl Into<String>) -> Moto {
        Moto {
            endpoint: endpoint.into(),
            child: None,
        }
    }

    fn wait_ready(&self, limit: Duration) -> Result<()> {
        let address: SocketAddr = self
            .endpoint
            .trim_start_matches("http://")
            .parse()
            .context("moto endpoint")?;
        let started = Instant::now();
        while started.elapsed() < limit {
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "moto server did not listen on {} within {limit:?}",
            self.endpoint
        )
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// SDK configuration aimed at this server, with dummy credentials; nothing in the process
    /// environment is changed, so tests can run in parallel.
    pub async fn sdk_config(&self) -> SdkConfig {
        sdk_config_for(&self.endpoint).await
    }

    /// One moto for every test of a process: `MOTO_ENDPOINT` when a script started one, else one
    /// started here on first use and killed when the process exits.
    pub fn shared() -> &'static Moto {
        static SHARED: OnceLock<Moto> = OnceLock::new();
        SHARED.get_or_init(|| {
            if let Ok(endpoint) = std::env::var("MOTO_ENDPOINT") {
                return Moto::external(endpoint);
            }
            // The death signal follows the thread that spawned the child, so that thread must
            // live as long as the process.
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let started = Moto::start();
                let _ = tx.send(started);
                loop {
                    std::thread::park();
                }
            });
            match rx.recv() {
                Ok(Ok(moto)) => moto,
                Ok(Err(err)) => panic!("moto server could not start: {err:#}"),
                Err(err) => panic!("moto server could not start: {err}"),
            }
        })
    }
}

/// moto answers an occasional 500 when many transactions hit it at once (real DynamoDB does
/// not); more retry attempts than the SDK's default three absorb that. Each configuration has
/// connections of its own: a test's runtime ends with the test, and its pooled connections with it.
pub async fn sdk_config_for(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(muchaw_shared::http_client::aws_http_client_of_its_own())
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(10))
        .endpoint_url(endpoint)
        .region(Region::new(REGION))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test", "test", None, None, "moto",
        ))
        .load()
        .await
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
