//! A function runs as its real binary under the local Lambda Runtime API, with the environment
//! template.yaml gives it, against moto.

use std::path::PathBuf;
use std::time::Duration;

use muchaw_local::provision::{Overrides, random_prefix};
use muchaw_local::runtime_api::{Invocation, LocalFunction};
use muchaw_local::{Moto, Template, provision};
use serde_json::Value;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds a function's binary (debug) and returns its path.
fn built(package: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "--quiet", "-p", package])
        .current_dir(workspace())
        .status()
        .expect("cargo");
    assert!(status.success(), "building {package}");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace().join("target"));
    target.join("debug").join(package)
}

fn event(path: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(workspace().join(path)).unwrap()).unwrap()
}

fn failures(invocation: Invocation) -> usize {
    match invocation {
        Invocation::Response(body) => body["batchItemFailures"].as_array().unwrap().len(),
        Invocation::Error(error) => panic!("the function failed: {error}"),
    }
}

#[tokio::test]
async fn a_function_binary_answers_invocations_through_the_runtime_api() {
    let binary = built("dispatch-events");
    let moto = Moto::shared();
    let sdk = moto.sdk_config().await;
    let template = Template::workspace().unwrap();
    let stack = provision(&template, &sdk, &random_prefix(), &Overrides::default())
        .await
        .unwrap();
    let mut environment: Vec<(String, String)> = stack
        .function_environment(&template, "DispatchEventsFunction")
        .unwrap()
        .into_iter()
        .collect();
    environment.extend([
        ("AWS_ENDPOINT_URL".to_string(), moto.endpoint().to_string()),
        ("AWS_REGION".into(), "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID".into(), "test".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
    ]);
    let mut function = LocalFunction::start(
        "DispatchEventsFunction",
        &binary,
        &environment,
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let unreadable = function
        .invoke(event("events/dispatch-events/unreadable.json"))
        .await
        .unwrap();
    assert_eq!(failures(unreadable), 1);
    let readable = function
        .invoke(event("events/dispatch-events/event.json"))
        .await
        .unwrap();
    assert_eq!(
        failures(readable),
        0,
        "an account without endpoints: nothing to send"
    );
    assert!(function.init_duration().is_some());
}

#[tokio::test]
async fn a_killed_process_is_replaced_at_the_next_invocation_as_lambda_starts_a_new_environment() {
    let binary = built("dispatch-events");
    let moto = Moto::shared();
    let sdk = moto.sdk_config().await;
    let template = Template::workspace().unwrap();
    let stack = provision(&template, &sdk, &random_prefix(), &Overrides::default())
        .await
        .unwrap();
    let mut environment: Vec<(String, String)> = stack
        .function_environment(&template, "DispatchEventsFunction")
        .unwrap()
        .into_iter()
        .collect();
    environment.extend([
        ("AWS_ENDPOINT_URL".to_string(), moto.endpoint().to_string()),
        ("AWS_REGION".into(), "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID".into(), "test".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
    ]);
    let mut function = LocalFunction::start(
        "DispatchEventsFunction",
        &binary,
        &environment,
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let unreadable = event("events/dispatch-events/unreadable.json");
    assert_eq!(
        failures(function.invoke(unreadable.clone()).await.unwrap()),
        1
    );
    let process = function.process();
    let first_pid = process.pid.load(std::sync::atomic::Ordering::SeqCst);
    assert!(!process.kill_if_busy(), "an idle process is not killed");
    // SAFETY: kill(2) on the process this test started.
    assert_eq!(unsafe { libc::kill(first_pid as i32, libc::SIGKILL) }, 0);

    let answer = function.invoke(unreadable.clone()).await;
    // The kill may land before the process takes the event (then this invocation fails, as
    // Lambda's does) or between invocations; the next one always runs in a new process.
    let answer = match answer {
        Ok(answer) => answer,
        Err(_) => function.invoke(unreadable).await.unwrap(),
    };

    assert_eq!(failures(answer), 1);
    assert_eq!(
        process.restarts.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert_ne!(
        process.pid.load(std::sync::atomic::Ordering::SeqCst),
        first_pid
    );
}

#[tokio::test]
async fn a_function_missing_its_configuration_fails_its_init_and_says_why() {
    let binary = built("dispatch-events");
    let mut function = LocalFunction::start(
        "DispatchEventsFunction",
        &binary,
        // What Lambda gives every function, and none of the function's own configuration.
        &[
            ("AWS_REGION".to_string(), "us-east-1".to_string()),
            ("AWS_ACCESS_KEY_ID".to_string(), "test".to_string()),
            ("AWS_SECRET_ACCESS_KEY".to_string(), "test".to_string()),
        ],
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let error = function
        .invoke(serde_json::json!({"Records": []}))
        .await
        .expect_err("no configuration: the init fails");
    // The first variable it reads and misses is named (the queue's URL or the table's name).
    let text = error.to_string();
    assert!(
        text.contains("EVENTS_QUEUE_URL") || text.contains("TABLE_NAME"),
        "{error:#}"
    );
}

/// `GET /api/numbers/{id}` with `key`, as API Gateway hands it to the numbers API.
fn get_number(id: &str, key: &str) -> Value {
    let mut event = event("events/numbers-api/get.json");
    let path = format!("/api/numbers/{id}");
    event["rawPath"] = path.clone().into();
    event["requestContext"]["http"]["path"] = path.into();
    event["pathParameters"]["id"] = id.into();
    event["headers"]["authorization"] = format!("Bearer {key}").into();
    event
}

#[tokio::test]
async fn a_function_whose_dynamodb_endpoint_is_set_apart_reads_dynamodb_there() {
    // Given a number in the table on moto, and a key of its account
    let binary = built("numbers-api");
    let moto = Moto::shared();
    let sdk = moto.sdk_config().await;
    let template = Template::workspace().unwrap();
    let stack = provision(&template, &sdk, &random_prefix(), &Overrides::default())
        .await
        .unwrap();
    let store = muchaw_shared::adapters::dynamo::DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        stack.table("NumbersTable").unwrap(),
    );
    let account = store.create_account("acme").await.unwrap();
    let key = store.create_api_key(&account.id, None).await.unwrap();
    let number = muchaw_shared::domain::Number::new_pending(
        account.id.clone(),
        "230000000000001".into(),
        "200000000000001".into(),
        muchaw_shared::domain::time::now(),
    );
    store
        .import_numbers(std::slice::from_ref(&number))
        .await
        .unwrap();
    let request = get_number(number.id.as_str(), key.key.expose());
    // And the numbers API's environment with every AWS endpoint dead but DynamoDB's
    let start = |dynamodb: Option<&str>| {
        let mut environment: Vec<(String, String)> = stack
            .function_environment(&template, "NumbersApiFunction")
            .unwrap()
            .into_iter()
            .collect();
        environment.extend([
            ("AWS_ENDPOINT_URL".to_string(), "http://127.0.0.1:9".into()),
            ("AWS_MAX_ATTEMPTS".into(), "1".into()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID".into(), "test".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
        ]);
        if let Some(endpoint) = dynamodb {
            environment.push(("AWS_ENDPOINT_URL_DYNAMODB".into(), endpoint.into()));
        }
        let binary = binary.clone();
        async move {
            LocalFunction::start(
                "NumbersApiFunction",
                &binary,
                &environment,
                Duration::from_secs(30),
            )
            .await
            .unwrap()
        }
    };
    let mut function = start(Some(moto.endpoint())).await;

    // When the number is asked for
    let answer = function.invoke(request.clone()).await.unwrap();

    // Then the function read it from moto
    let Invocation::Response(response) = answer else {
        panic!("the function failed: {answer:?}");
    };
    assert_eq!(response["statusCode"], 200, "{response}");
    let body: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["data"]["id"], number.id.as_str());
    // And without DynamoDB's own endpoint it would have gone to the dead one
    let mut everything_dead = start(None).await;
    let Invocation::Response(response) = everything_dead.invoke(request).await.unwrap() else {
        panic!("the function failed");
    };
    assert_eq!(response["statusCode"], 500, "{response}");
}
