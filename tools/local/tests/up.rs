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

fn run_demo(extra: &[&str]) {
    build_function_binaries();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_muchaw-local"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--demo"])
        .args(extra)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("muchaw-local");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let outcome = loop {
        match rx.recv_timeout(Duration::from_secs(180)) {
            Ok(line) if line.starts_with("[demo] done") => break Ok(()),
            Ok(line) if line.starts_with("demo failed") => break Err(line),
            Ok(line) => seen.push(line),
            Err(_) => break Err("no demo result".to_string()),
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(outcome.is_ok(), "{outcome:?}\n{}", seen.join("\n"));
    assert!(seen.iter().any(|l| l.contains("signature verified")));
    assert!(seen.iter().any(|l| l.contains("\"status\":\"ACTIVE\"")));
}

#[test]
fn the_local_stack_runs_a_demo_signup_to_active_with_a_verified_webhook() {
    run_demo(&[]);
}

#[test]
fn the_in_process_local_stack_runs_the_same_demo() {
    run_demo(&["--in-process"]);
}
