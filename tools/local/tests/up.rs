//! The README's run command, as a new user runs it: the demo signup reaches ACTIVE and its
//! signed webhook arrives and verifies.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn build_function_binaries() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "--workspace", "--bins"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .status()
        .expect("cargo");
    assert!(status.success());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Running {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    base: String,
}

impl Running {
    /// `muchaw-local` as the README runs it, on a free port; `own_moto` makes it start its own
    /// moto instead of using the test run's.
    fn start(extra: &[&str], own_moto: bool) -> Running {
        build_function_binaries();
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_muchaw-local"));
        command
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if own_moto {
            command.env_remove("MOTO_ENDPOINT");
        }
        let mut child = command.spawn().expect("muchaw-local");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Reads output until a line starting with `done` (Ok) or `failed` (Err) appears.
    fn wait_for(&mut self, done: &str, failed: &str) -> Result<String, String> {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(180)) {
                Ok(line) if line.starts_with(done) => return Ok(line),
                Ok(line) if !failed.is_empty() && line.starts_with(failed) => return Err(line),
                Ok(line) => self.seen.push(line),
                Err(_) => return Err(format!("no line starting {done:?}")),
            }
        }
    }

    fn post(&self, path: &str) -> (u16, serde_json::Value) {
        let url = format!("{}{path}", self.base);
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let client = muchaw_shared::http_client::reqwest_builder()
                .unwrap()
                .build()
                .unwrap();
            let response = client.post(url).send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json().await.unwrap())
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_demo(extra: &[&str]) {
    let mut args = vec!["--demo"];
    args.extend_from_slice(extra);
    let mut running = Running::start(&args, false);
    let outcome = running.wait_for("[demo] done", "demo failed");
    assert!(outcome.is_ok(), "{outcome:?}\n{}", running.seen.join("\n"));
    assert!(
        running
            .seen
            .iter()
            .any(|l| l.contains("signature verified"))
    );
    assert!(
        running
            .seen
            .iter()
            .any(|l| l.contains("\"status\":\"ACTIVE\""))
    );

    // The scheduled health sync, on demand: it reads the demo's ACTIVE number from Meta.
    let (status, body) = running.post("/_local/schedules/HealthSyncFunction");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["function"], "HealthSyncFunction");
    assert!(body["output"].is_object(), "{body}");
    let (status, body) = running.post("/_local/schedules/NumbersApiFunction");
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("HealthSyncFunction")
    );
}

#[test]
fn the_local_stack_runs_a_demo_signup_to_active_with_a_verified_webhook() {
    run_demo(&[]);
}

#[test]
fn the_in_process_local_stack_runs_the_same_demo() {
    run_demo(&["--in-process"]);
}

/// Every process descended from `pid`, from /proc.
fn descendants(pid: u32) -> Vec<u32> {
    let mut parents = std::collections::HashMap::<u32, Vec<u32>>::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // The command name is in parentheses and may hold spaces; the parent follows the state.
        let Some(after) = stat.rsplit_once(") ").map(|(_, rest)| rest) else {
            continue;
        };
        if let Some(ppid) = after.split(' ').nth(1).and_then(|p| p.parse().ok()) {
            parents.entry(ppid).or_default().push(child);
        }
    }
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(next) = queue.pop() {
        for &child in parents.get(&next).into_iter().flatten() {
            found.push(child);
            queue.push(child);
        }
    }
    found
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            let state = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next());
            state != Some('Z')
        })
        .unwrap_or(false)
}

#[test]
fn ctrl_c_stops_everything_the_local_stack_started() {
    let mut running = Running::start(&[], true);
    let ready = running.wait_for("Ctrl-C stops everything", "");
    assert!(ready.is_ok(), "{ready:?}\n{}", running.seen.join("\n"));
    let pid = running.child.id();
    let started = descendants(pid);
    // moto and one process per function in the template.
    assert!(started.len() > 10, "{started:?}");

    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = running.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running 30 s after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status:?}");
    std::thread::sleep(Duration::from_millis(500));
    let left: Vec<u32> = started.into_iter().filter(|pid| alive(*pid)).collect();
    assert!(left.is_empty(), "still running after Ctrl-C: {left:?}");
}
