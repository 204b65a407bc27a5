//! `muchaw-admin` as an operator runs it: a separate process, configured by the environment.

use std::process::Command;

use muchaw_shared::domain::api_key::KeyHash;
use muchaw_shared::ports::ApiKeyVerifier;
use muchaw_tests::{TestEnv, moto_env};
use serde_json::Value;

fn admin(env: &TestEnv, args: &[&str]) -> (bool, Value, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_muchaw-admin"))
        .args(args)
        .envs(moto_env())
        .env("TABLE_NAME", env.store.table())
        .output()
        .expect("muchaw-admin runs");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (output.status.success(), json, stderr)
}

#[tokio::test]
async fn an_operator_creates_an_account_and_a_key_that_authenticates_until_revoked() {
    let env = TestEnv::new().await;
    let (ok, account, _) = admin(&env, &["account", "create", "--name", "Acme"]);
    assert!(ok);
    assert_eq!(account["name"], "Acme");
    let account_id = account["id"].as_str().unwrap().to_string();

    let (ok, key, _) = admin(
        &env,
        &[
            "api-key",
            "create",
            "--account",
            &account_id,
            "--name",
            "prod",
        ],
    );
    assert!(ok);
    assert_eq!(key["accountId"], account_id.as_str());
    let plain = key["key"].as_str().unwrap().to_string();
    let key_id = key["id"].as_str().unwrap().to_string();

    let response = env.get(Some(&plain), "/api/numbers", "").await;
    assert_eq!(response.status, 200);

    let (ok, revoked, _) = admin(
        &env,
        &[
            "api-key",
            "revoke",
            "--account",
            &account_id,
            "--key-id",
            &key_id,
        ],
    );
    assert!(ok);
    assert_eq!(revoked["revoked"], true);
    assert_eq!(
        env.store
            .account_for_key(&KeyHash::of(&plain))
            .await
            .unwrap(),
        None
    );
    assert_eq!(env.get(Some(&plain), "/api/numbers", "").await.status, 401);
}

#[tokio::test]
async fn errors_go_to_stderr_with_a_non_zero_exit() {
    let env = TestEnv::new().await;
    let (ok, stdout, stderr) = admin(&env, &["api-key", "create", "--account", "acc_nobody"]);
    assert!(!ok);
    assert_eq!(stdout, Value::Null);
    assert!(stderr.contains("no account acc_nobody"), "{stderr}");
    let (ok, _, stderr) = admin(&env, &["account", "create", "--name", ""]);
    assert!(!ok);
    assert!(stderr.contains("--name"));
}

#[tokio::test]
async fn dlq_redrive_moves_dead_letters_back_to_their_queue() {
    let env = TestEnv::new().await;
    let sqs = aws_sdk_sqs::Client::new(&env.sdk);
    let dlq = env
        .stack
        .queue_url("TeardownDeadLetterQueue")
        .unwrap()
        .to_string();
    for i in 0..3 {
        sqs.send_message()
            .queue_url(&dlq)
            .message_body(format!("{{\"n\":{i}}}"))
            .send()
            .await
            .unwrap();
    }
    let (ok, result, stderr) = admin(&env, &["dlq", "redrive", "--queue", &dlq]);
    assert!(ok, "{stderr}");
    assert_eq!(result["moved"], 3);
    let moved = env.drain(muchaw_shared::ports::Queue::Teardown).await;
    assert_eq!(moved.len(), 3);
}
