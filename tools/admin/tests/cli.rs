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
    assert_eq!(
        muchaw_shared::domain::api_key::check_key(&plain),
        Ok(muchaw_shared::domain::api_key::KeyFormat::Checksummed)
    );
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

/// `muchaw-admin` with no table and AWS pointed nowhere: what runs must run offline.
fn admin_offline(args: &[&str], stdin: Option<&str>) -> (bool, Value, String) {
    use std::io::Write as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_muchaw-admin"))
        .args(args)
        .env_remove("TABLE_NAME")
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("muchaw-admin runs");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .expect("stdin written");
    drop(input);
    let output = child.wait_with_output().expect("muchaw-admin exits");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (output.status.success(), json, format!("{stdout}{stderr}"))
}

#[test]
fn verify_confirms_an_issued_key_offline_without_printing_it() {
    // Given a key as the system issues it
    let key = muchaw_shared::domain::api_key::PlainApiKey::generate();
    // When an operator verifies it, as an argument and from standard input
    for (args, stdin) in [
        (["api-key", "verify", key.expose()], None),
        (
            ["api-key", "verify", "-"],
            Some(format!("{}\n", key.expose())),
        ),
    ] {
        let (ok, result, printed) = admin_offline(&args, stdin.as_deref());
        // Then the checksum is valid and the key is not echoed
        assert!(ok, "{printed}");
        assert_eq!(result["format"], "mk_live");
        assert_eq!(result["checksum"], "valid");
        assert!(!printed.contains(key.expose()));
    }
}

#[test]
fn verify_refuses_a_key_whose_checksum_does_not_match() {
    let key = muchaw_shared::domain::api_key::PlainApiKey::generate()
        .expose()
        .to_string();
    let last = key.len() - 1;
    let typo = format!(
        "{}{}",
        &key[..last],
        if key.ends_with('0') { '1' } else { '0' }
    );
    let (ok, result, printed) = admin_offline(&["api-key", "verify", &typo], None);
    assert!(!ok);
    assert_eq!(result, Value::Null);
    assert!(printed.contains("checksum does not match"), "{printed}");
    assert!(!printed.contains(&typo));
}

#[test]
fn verify_says_an_old_format_key_has_no_checksum() {
    let (ok, result, printed) = admin_offline(
        &[
            "api-key",
            "verify",
            "mk_0A7yb3x-Qz_Lw9fT2pVn5uK8sHd4cJe6gRiMoXaYtBl",
        ],
        None,
    );
    assert!(ok, "{printed}");
    assert_eq!(result["format"], "legacy");
    assert_eq!(result["checksum"], "none");
    let (ok, _, printed) = admin_offline(&["api-key", "verify", "ghp_notours"], None);
    assert!(!ok);
    assert!(printed.contains("not a Muchaw API key"), "{printed}");
}

#[test]
fn webhook_secret_verify_checks_the_checksum_inside_the_base64() {
    let secret = muchaw_shared::webhooks::generate_secret();
    let (ok, result, printed) =
        admin_offline(&["webhook-secret", "verify", "-"], Some(secret.expose()));
    assert!(ok, "{printed}");
    assert_eq!(result["checksum"], "valid");
    assert!(!printed.contains(secret.expose()));
    let mut typo = secret.expose().to_string().into_bytes();
    typo[12] = if typo[12] == b'A' { b'B' } else { b'A' };
    let typo = String::from_utf8(typo).unwrap();
    let (ok, _, printed) = admin_offline(&["webhook-secret", "verify", &typo], None);
    assert!(!ok);
    assert!(printed.contains("checksum does not match"), "{printed}");
}

#[tokio::test]
async fn an_operator_creates_a_read_key_and_lists_keys_with_their_scope_and_last_use() {
    let env = TestEnv::new().await;
    let (_, account, _) = admin(&env, &["account", "create", "--name", "Scoped"]);
    let account_id = account["id"].as_str().unwrap().to_string();
    let (ok, read, _) = admin(
        &env,
        &[
            "api-key",
            "create",
            "--account",
            &account_id,
            "--scope",
            "read",
        ],
    );
    assert!(ok);
    assert_eq!(read["scope"], "read");
    let plain = read["key"].as_str().unwrap().to_string();
    // A read key reads, and may not write.
    assert_eq!(env.get(Some(&plain), "/api/numbers", "").await.status, 200);
    let path = "/api/numbers/abc";
    assert_eq!(env.delete(Some(&plain), path).await.status, 403);

    let (ok, listed, _) = admin(&env, &["api-key", "list", "--account", &account_id]);
    assert!(ok);
    let keys = listed["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["id"], read["id"]);
    assert_eq!(keys[0]["scope"], "read");
    let last_used = keys[0]["lastUsedAt"].as_str().expect("a last use");
    assert!(last_used.ends_with(":00:00.000Z"), "{last_used}");
    assert!(
        !listed.to_string().contains(&plain),
        "the key is never listed"
    );
}

#[tokio::test]
async fn an_unknown_scope_is_refused_and_creates_no_key() {
    let env = TestEnv::new().await;
    let (_, account, _) = admin(&env, &["account", "create", "--name", "Scoped"]);
    let account_id = account["id"].as_str().unwrap().to_string();
    let (ok, _, stderr) = admin(
        &env,
        &[
            "api-key",
            "create",
            "--account",
            &account_id,
            "--scope",
            "admin",
        ],
    );
    assert!(!ok);
    assert!(stderr.contains("read or write"), "{stderr}");
    let (_, listed, _) = admin(&env, &["api-key", "list", "--account", &account_id]);
    assert_eq!(listed["keys"], serde_json::json!([]));
}

#[tokio::test]
async fn reindexing_makes_numbers_stored_before_the_indexes_findable() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let env = TestEnv::new().await;
    let (account, key) = env.account_with_key("reindex").await;
    let mut number =
        muchaw_tests::sample_number(&account, muchaw_shared::domain::Status::Active, 3);
    number.waba_id = "555000000000001".into();
    env.store
        .import_numbers(std::slice::from_ref(&number))
        .await
        .unwrap();
    // Given the number as an older version stored it: without the GSI5 keys
    let client = aws_sdk_dynamodb::Client::new(&env.sdk);
    client
        .update_item()
        .table_name(env.store.table())
        .key("PK", AttributeValue::S(format!("ACCOUNT#{account}")))
        .key("SK", AttributeValue::S(format!("NUMBER#{}", number.id)))
        .update_expression("REMOVE GSI5PK, GSI5SK")
        .send()
        .await
        .unwrap();
    let by_waba = || env.get(Some(&key), "/api/numbers", "wabaId=555000000000001");
    assert_eq!(by_waba().await.body["data"], serde_json::json!([]));
    // When the operator reindexes
    let (ok, output, stderr) = admin(&env, &["numbers", "reindex"]);
    assert!(ok, "{stderr}");
    assert!(output["rewritten"].as_u64().unwrap() >= 1);
    // Then it is found
    assert_eq!(by_waba().await.body["data"][0]["id"], number.id.as_str());
}
