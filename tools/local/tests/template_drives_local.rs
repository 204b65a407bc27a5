//! What runs locally is read from template.yaml, with no second place to edit: a changed
//! `BatchSize` or environment variable changes the local stack.

use muchaw_local::pipeline::sqs_sources;
use muchaw_local::provision::{Overrides, random_prefix};
use muchaw_local::{Moto, Template, provision};

fn edited_template(edit: impl Fn(String) -> String) -> Template {
    let original = std::fs::read_to_string(Template::workspace().unwrap().path()).unwrap();
    let edited = edit(original.clone());
    assert_ne!(edited, original, "the edit applied");
    let path = std::env::temp_dir().join(format!("template-{}.yaml", random_prefix()));
    std::fs::write(&path, edited).unwrap();
    Template::load(&path).unwrap()
}

fn teardown_batch_size(template: &Template) -> i32 {
    sqs_sources(template)
        .unwrap()
        .into_iter()
        .find(|s| s.function_id == "TeardownNumberFunction")
        .unwrap()
        .batch_size
}

#[test]
fn a_changed_batch_size_in_the_template_is_the_batch_size_polled_locally() {
    let original = Template::workspace().unwrap();
    let before = teardown_batch_size(&original);
    let edited = edited_template(|text| {
        let start = text.find("  TeardownNumberFunction:").unwrap();
        let at = start + text[start..].find("BatchSize: ").unwrap();
        let end = at + text[at..].find('\n').unwrap();
        format!("{}BatchSize: {}{}", &text[..at], before + 2, &text[end..])
    });
    assert_eq!(teardown_batch_size(&edited), before + 2);
}

#[tokio::test]
async fn a_new_environment_variable_in_the_template_reaches_the_local_function() {
    let edited = edited_template(|text| {
        let start = text.find("  NumbersApiFunction:").unwrap();
        let at = start + text[start..].find("        Variables:\n").unwrap();
        let insert = at + "        Variables:\n".len();
        format!(
            "{}          GREETING: from-the-template\n{}",
            &text[..insert],
            &text[insert..]
        )
    });
    let sdk = Moto::shared().sdk_config().await;
    let stack = provision(&edited, &sdk, &random_prefix(), &Overrides::default())
        .await
        .unwrap();
    let environment = stack
        .function_environment(&edited, "NumbersApiFunction")
        .unwrap();
    assert!(
        environment
            .iter()
            .any(|(name, value)| name == "GREETING" && value == "from-the-template")
    );
}

#[tokio::test]
async fn a_function_with_a_queue_and_no_local_handler_is_an_error_naming_it() {
    let template = Template::workspace().unwrap();
    let sdk = Moto::shared().sdk_config().await;
    let stack = provision(&template, &sdk, &random_prefix(), &Overrides::default())
        .await
        .unwrap();
    let error = muchaw_local::pipeline::Pipeline::new(
        &template,
        &stack,
        aws_sdk_sqs::Client::new(&sdk),
        &std::collections::HashMap::new(),
        &[],
    )
    .err()
    .expect("refused");
    assert!(error.to_string().contains("Function"), "{error}");
}

#[test]
fn an_event_source_the_local_stack_cannot_run_is_refused_naming_it() {
    let edited = edited_template(|text| {
        let start = text.find("  HealthSyncFunction:").unwrap();
        let at = start + text[start..].find("        Hourly:\n").unwrap();
        format!(
            "{}        Uploads:\n          Type: S3\n          Properties:\n            Bucket: !Ref Bucket\n            Events: s3:ObjectCreated:*\n{}",
            &text[..at],
            &text[at..]
        )
    });
    let error = muchaw_local::schedule::check_runnable(&edited).expect_err("refused");
    let message = error.to_string();
    assert!(message.contains("HealthSyncFunction"), "{message}");
    assert!(message.contains("Uploads"), "{message}");
    assert!(message.contains("S3"), "{message}");
}

#[test]
fn a_schedule_rate_changed_in_the_template_is_the_local_rate() {
    let edited = edited_template(|text| text.replace("rate(1 hour)", "rate(10 minutes)"));
    let schedules = muchaw_local::schedule::schedules(&edited).unwrap();
    assert_eq!(
        schedules[0].every,
        Some(std::time::Duration::from_secs(600))
    );
}
