//! The customers' webhook endpoints: one plain HTTP/1.1 server on a raw socket (so it can
//! close a connection without answering), `POST /hooks/{account}`. Each request is recorded;
//! at the configured rate it is answered with a 500, held past the delivery timeout, or its
//! connection is closed without an answer.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CustomerFault {
    /// HTTP 500.
    ServerError,
    /// No answer until after the delivery timeout.
    Timeout,
    /// The connection is closed without an answer.
    Closed,
}

impl CustomerFault {
    pub const ALL: [CustomerFault; 3] = [
        CustomerFault::ServerError,
        CustomerFault::Timeout,
        CustomerFault::Closed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            CustomerFault::ServerError => "endpoint answered 500",
            CustomerFault::Timeout => "endpoint timed out",
            CustomerFault::Closed => "endpoint closed the connection",
        }
    }
}

/// One delivery attempt an endpoint received.
#[derive(Clone, Debug)]
pub struct Received {
    /// The path's last segment: whose endpoint it is.
    pub endpoint: String,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    /// `None`: answered 200.
    pub fault: Option<CustomerFault>,
}

struct Inner {
    rate: f64,
    hold: Duration,
    rng: Mutex<StdRng>,
    received: Mutex<Vec<Received>>,
    enabled: AtomicBool,
}

pub struct Customers {
    addr: SocketAddr,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Customers {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Customers {
    /// `hold`: how long a timing-out endpoint holds the request (past the delivery timeout).
    pub async fn start(rate: f64, seed: u64, hold: Duration) -> Result<Customers> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            rate,
            hold,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            received: Mutex::default(),
            enabled: AtomicBool::new(true),
        });
        let shared = inner.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let inner = shared.clone();
                tokio::spawn(async move {
                    let _ = serve(socket, &inner).await;
                });
            }
        });
        Ok(Customers { addr, inner, task })
    }

    pub fn url_for(&self, account: &str) -> String {
        format!("http://{}/hooks/{account}", self.addr)
    }

    pub fn calm(&self) {
        self.inner.enabled.store(false, Ordering::SeqCst);
    }

    pub fn received(&self) -> Vec<Received> {
        lock(&self.inner.received).clone()
    }
}

async fn serve(socket: TcpStream, inner: &Inner) -> Result<()> {
    let mut reader = BufReader::new(socket);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).await? == 0 {
            return Ok(());
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        let mut headers = BTreeMap::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length.min(1 << 20)];
        reader.read_exact(&mut body).await?;
        let fault = {
            let mut rng = lock(&inner.rng);
            (inner.enabled.load(Ordering::SeqCst)
                && inner.rate > 0.0
                && rng.random_bool(inner.rate.min(1.0)))
            .then(|| CustomerFault::ALL[rng.random_range(0..CustomerFault::ALL.len())])
        };
        lock(&inner.received).push(Received {
            endpoint: path.rsplit('/').next().unwrap_or_default().to_string(),
            headers,
            body,
            fault,
        });
        let socket = reader.get_mut();
        match fault {
            None => {
                socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    .await?;
            }
            Some(CustomerFault::ServerError) => {
                socket
                    .write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n")
                    .await?;
            }
            Some(CustomerFault::Timeout) => {
                tokio::time::sleep(inner.hold).await;
                return Ok(());
            }
            Some(CustomerFault::Closed) => {
                let _ = socket.shutdown().await;
                return Ok(());
            }
        }
    }
}
