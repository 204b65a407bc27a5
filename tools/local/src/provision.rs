//! Creates in moto what `template.yaml` declares (tables with their indexes, queues with their
//! redrive policies, secrets), under a name prefix so many stacks share one moto server.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, Result, anyhow, bail};
use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;
use rand::Rng;
use serde_yaml::Value;

use crate::moto::REGION;
use crate::template::{Intrinsic, Template, intrinsic, scalar};

pub const ACCOUNT_ID: &str = "123456789012";

/// What was created, by logical id, and how to resolve the template's references to it.
#[derive(Debug, Clone, Default)]
pub struct Stack {
    pub prefix: String,
    pub parameters: HashMap<String, String>,
    pub tables: HashMap<String, String>,
    pub queue_urls: HashMap<String, String>,
    pub queue_arns: HashMap<String, String>,
    pub secret_arns: HashMap<String, String>,
}

#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub parameters: HashMap<String, String>,
    /// `SecretString` of a secret resource, by logical id, instead of a generated one.
    pub secrets: HashMap<String, String>,
    /// Caps every queue's `VisibilityTimeout` (seconds): a message whose function was killed
    /// comes back this soon instead of after the template's (up to 180 s). For short runs
    /// that kill functions on purpose; it must stay above the functions' timeouts.
    pub visibility_timeout_cap: Option<u32>,
}

impl Overrides {
    /// A local stack's: Meta is the fake one (its URL, app id and app secret), private webhook
    /// targets allowed, stage `local`, and the given webhook verify token and signup-link key.
    pub fn local(meta: &fake_meta::FakeMeta, verify_token: &str, signing_key: &str) -> Overrides {
        Overrides {
            parameters: HashMap::from([
                ("MetaGraphUrl".to_string(), meta.base_url()),
                ("MetaAppId".to_string(), meta.app_id().to_string()),
                ("AllowPrivateWebhookUrls".to_string(), "true".to_string()),
                ("Stage".to_string(), "local".to_string()),
                ("MetaSdkUrl".to_string(), meta.sdk_url()),
                ("MetaOrigin".to_string(), meta.base_url()),
                (
                    "EmbeddedSignupConfigId".to_string(),
                    fake_meta::SIGNUP_CONFIG_ID.to_string(),
                ),
            ]),
            secrets: HashMap::from([
                (
                    "MetaAppSecret".to_string(),
                    serde_json::json!({"appSecret": meta.app_secret(), "webhookVerifyToken": verify_token})
                        .to_string(),
                ),
                ("SignupLinkSigningKey".to_string(), signing_key.to_string()),
            ]),
            visibility_timeout_cap: None,
        }
    }
}

pub fn random_prefix() -> String {
    let n: u64 = rand::rng().random();
    format!("t{:010x}", n & 0xff_ffff_ffff)
}

/// Deletes the stack's table `id` and creates it again, empty, as the template defines it: a
/// benchmark that must start each measurement from the same state.
pub async fn recreate_table(
    template: &Template,
    config: &SdkConfig,
    stack: &Stack,
    id: &str,
) -> Result<()> {
    let name = stack.table(id)?;
    let props = template
        .resources_of_type("AWS::DynamoDB::Table")
        .into_iter()
        .find(|(table, _)| table == id)
        .map(|(_, props)| props)
        .with_context(|| format!("no table {id} in the template"))?;
    let dynamodb = aws_sdk_dynamodb::Client::new(config);
    dynamodb
        .delete_table()
        .table_name(name)
        .send()
        .await
        .with_context(|| format!("deleting table {id}"))?;
    create_table(&dynamodb, name, props)
        .await
        .with_context(|| format!("creating table {id} again"))
}

pub async fn provision(
    template: &Template,
    config: &SdkConfig,
    prefix: &str,
    overrides: &Overrides,
) -> Result<Stack> {
    let mut stack = Stack {
        prefix: prefix.to_string(),
        ..Stack::default()
    };
    for name in template.parameter_names() {
        let value = overrides
            .parameters
            .get(&name)
            .cloned()
            .or_else(|| template.parameter_default(&name))
            .unwrap_or_default();
        stack.parameters.insert(name, value);
    }
    // Stacks sharing one moto keep their secrets apart, under the names their roles grant.
    if !overrides.parameters.contains_key("Stage") && template.has_parameter("Stage") {
        stack
            .parameters
            .insert("Stage".to_string(), prefix.to_ascii_lowercase());
    }
    let dynamodb = aws_sdk_dynamodb::Client::new(config);
    for (id, props) in template.resources_of_type("AWS::DynamoDB::Table") {
        let name = format!("{prefix}-{id}");
        create_table(&dynamodb, &name, props)
            .await
            .with_context(|| format!("creating table {id}"))?;
        stack.tables.insert(id, name);
    }
    let sqs = aws_sdk_sqs::Client::new(config);
    let queues = template.resources_of_type("AWS::SQS::Queue");
    // Dead-letter queues first, so redrive policies can name them.
    let (plain, redriven): (Vec<_>, Vec<_>) = queues
        .into_iter()
        .partition(|(_, props)| props.get("RedrivePolicy").is_none());
    for (id, props) in plain.into_iter().chain(redriven) {
        create_queue(
            &sqs,
            &mut stack,
            &id,
            props,
            overrides.visibility_timeout_cap,
        )
        .await
        .with_context(|| format!("creating queue {id}"))?;
    }
    let secrets = aws_sdk_secretsmanager::Client::new(config);
    for (id, props) in template.resources_of_type("AWS::SecretsManager::Secret") {
        let value = match overrides.secrets.get(&id) {
            Some(value) => value.clone(),
            None => generated_secret(props)?,
        };
        let name = format!("{prefix}/{id}");
        let created = secrets
            .create_secret()
            .name(&name)
            .secret_string(value)
            .send()
            .await
            .with_context(|| format!("creating secret {id}"))?;
        let arn = created
            .arn
            .ok_or_else(|| anyhow!("secret {id} created without an ARN"))?;
        stack.secret_arns.insert(id, arn);
    }
    Ok(stack)
}

fn list<'a>(value: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    value
        .get(key)
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
}

fn field(value: &Value, key: &str) -> Result<String> {
    value
        .get(key)
        .and_then(scalar)
        .ok_or_else(|| anyhow!("missing {key}"))
}

fn key_schema(value: &Value) -> Result<Vec<KeySchemaElement>> {
    list(value, "KeySchema")
        .map(|k| {
            Ok(KeySchemaElement::builder()
                .attribute_name(field(k, "AttributeName")?)
                .key_type(KeyType::from(field(k, "KeyType")?.as_str()))
                .build()?)
        })
        .collect()
}

async fn create_table(client: &aws_sdk_dynamodb::Client, name: &str, props: &Value) -> Result<()> {
    let attributes = list(props, "AttributeDefinitions")
        .map(|a| {
            Ok(AttributeDefinition::builder()
                .attribute_name(field(a, "AttributeName")?)
                .attribute_type(ScalarAttributeType::from(
                    field(a, "AttributeType")?.as_str(),
                ))
                .build()?)
        })
        .collect::<Result<Vec<_>>>()?;
    let indexes = list(props, "GlobalSecondaryIndexes")
        .map(|index| {
            let projection = index
                .get("Projection")
                .map(|p| field(p, "ProjectionType"))
                .transpose()?
                .unwrap_or_else(|| "ALL".into());
            // An INCLUDE projection names the attributes it adds to the keys.
            let included: Option<Vec<String>> = index
                .get("Projection")
                .and_then(|p| p.get("NonKeyAttributes"))
                .and_then(|a| a.as_sequence())
                .map(|names| names.iter().filter_map(scalar).collect());
            Ok(GlobalSecondaryIndex::builder()
                .index_name(field(index, "IndexName")?)
                .set_key_schema(Some(key_schema(index)?))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::from(projection.as_str()))
                        .set_non_key_attributes(included)
                        .build(),
                )
                .build()?)
        })
        .collect::<Result<Vec<_>>>()?;
    let billing = props
        .get("BillingMode")
        .and_then(scalar)
        .unwrap_or_else(|| "PAY_PER_REQUEST".into());
    if billing != "PAY_PER_REQUEST" {
        bail!("only on-demand (PAY_PER_REQUEST) tables can run locally, not {billing}");
    }
    client
        .create_table()
        .table_name(name)
        .set_attribute_definitions(Some(attributes))
        .set_key_schema(Some(key_schema(props)?))
        .set_global_secondary_indexes((!indexes.is_empty()).then_some(indexes))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await?;
    if let Some(ttl) = props.get("TimeToLiveSpecification") {
        client
            .update_time_to_live()
            .table_name(name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(field(ttl, "AttributeName")?)
                    .enabled(true)
                    .build()?,
            )
            .send()
            .await?;
    }
    Ok(())
}

async fn create_queue(
    client: &aws_sdk_sqs::Client,
    stack: &mut Stack,
    id: &str,
    props: &Value,
    visibility_timeout_cap: Option<u32>,
) -> Result<()> {
    let mut attributes = HashMap::new();
    let copied = [
        ("VisibilityTimeout", QueueAttributeName::VisibilityTimeout),
        (
            "MessageRetentionPeriod",
            QueueAttributeName::MessageRetentionPeriod,
        ),
        ("DelaySeconds", QueueAttributeName::DelaySeconds),
        (
            "ReceiveMessageWaitTimeSeconds",
            QueueAttributeName::ReceiveMessageWaitTimeSeconds,
        ),
    ];
    for (property, attribute) in copied {
        if let Some(value) = props.get(property) {
            attributes.insert(attribute, stack.resolve(value)?);
        }
    }
    if let Some(cap) = visibility_timeout_cap {
        let visibility = attributes
            .get(&QueueAttributeName::VisibilityTimeout)
            .and_then(|v| v.parse::<u32>().ok())
            // SQS's default when the template names none.
            .unwrap_or(30);
        attributes.insert(
            QueueAttributeName::VisibilityTimeout,
            visibility.min(cap).to_string(),
        );
    }
    if let Some(redrive) = props.get("RedrivePolicy") {
        let target = redrive
            .get("deadLetterTargetArn")
            .ok_or_else(|| anyhow!("RedrivePolicy without deadLetterTargetArn"))?;
        let max_receive = redrive
            .get("maxReceiveCount")
            .map(|v| stack.resolve(v))
            .transpose()?
            .unwrap_or_else(|| "3".into());
        let policy = serde_json::json!({
            "deadLetterTargetArn": stack.resolve(target)?,
            "maxReceiveCount": max_receive.parse::<u32>().context("maxReceiveCount")?,
        });
        attributes.insert(QueueAttributeName::RedrivePolicy, policy.to_string());
    }
    let name = format!("{}-{id}", stack.prefix);
    let url = client
        .create_queue()
        .queue_name(&name)
        .set_attributes((!attributes.is_empty()).then_some(attributes))
        .send()
        .await?
        .queue_url
        .ok_or_else(|| anyhow!("queue created without a URL"))?;
    let arn = client
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .ok_or_else(|| anyhow!("queue without an ARN"))?;
    stack.queue_urls.insert(id.to_string(), url);
    stack.queue_arns.insert(id.to_string(), arn);
    Ok(())
}

fn random_text(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn generated_secret(props: &Value) -> Result<String> {
    let Some(generate) = props.get("GenerateSecretString") else {
        return props
            .get("SecretString")
            .and_then(scalar)
            .ok_or_else(|| anyhow!("a secret needs SecretString or GenerateSecretString"));
    };
    let length = generate
        .get("PasswordLength")
        .and_then(scalar)
        .and_then(|l| l.parse().ok())
        .unwrap_or(32);
    let value = random_text(length);
    match (
        generate.get("SecretStringTemplate").and_then(scalar),
        generate.get("GenerateStringKey").and_then(scalar),
    ) {
        (Some(template), Some(key)) => {
            let mut json: serde_json::Value =
                serde_json::from_str(&template).context("SecretStringTemplate")?;
            json[key] = serde_json::Value::String(value);
            Ok(json.to_string())
        }
        _ => Ok(value),
    }
}

impl Stack {
    /// Resolves a template value against what was created; anything that cannot exist locally
    /// is an error that names it.
    pub fn resolve(&self, value: &Value) -> Result<String> {
        match intrinsic(value)? {
            Intrinsic::Literal(text) => Ok(text),
            Intrinsic::Ref(name) => self.resolve_ref(&name),
            Intrinsic::GetAtt(id, attr) => self.resolve_att(&id, &attr),
            Intrinsic::Sub(text) => self.substitute(&text),
        }
    }

    fn resolve_ref(&self, name: &str) -> Result<String> {
        let pseudo = match name {
            "AWS::Region" => Some(REGION.to_string()),
            "AWS::AccountId" => Some(ACCOUNT_ID.to_string()),
            "AWS::Partition" => Some("aws".to_string()),
            "AWS::URLSuffix" => Some("amazonaws.com".to_string()),
            "AWS::StackName" => Some(self.prefix.clone()),
            _ => None,
        };
        pseudo
            .or_else(|| self.parameters.get(name).cloned())
            .or_else(|| self.tables.get(name).cloned())
            .or_else(|| self.queue_urls.get(name).cloned())
            .or_else(|| self.secret_arns.get(name).cloned())
            .ok_or_else(|| anyhow!("cannot resolve !Ref {name} locally"))
    }

    fn resolve_att(&self, id: &str, attr: &str) -> Result<String> {
        let found = match attr {
            "Arn" => self
                .queue_arns
                .get(id)
                .cloned()
                .or_else(|| {
                    self.tables
                        .get(id)
                        .map(|name| format!("arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/{name}"))
                })
                .or_else(|| self.secret_arns.get(id).cloned()),
            "QueueUrl" => self.queue_urls.get(id).cloned(),
            "QueueName" => self
                .queue_urls
                .get(id)
                .and_then(|url| url.rsplit('/').next().map(str::to_string)),
            _ => None,
        };
        found.ok_or_else(|| anyhow!("cannot resolve !GetAtt {id}.{attr} locally"))
    }

    fn substitute(&self, text: &str) -> Result<String> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| anyhow!("unclosed ${{ in !Sub {text}"))?;
            let name = &after[..end];
            let value = match name.split_once('.') {
                Some((id, attr)) if !name.starts_with("AWS::") => self.resolve_att(id, attr)?,
                _ => self.resolve_ref(name)?,
            };
            out.push_str(&value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    pub fn table(&self, id: &str) -> Result<&str> {
        self.tables
            .get(id)
            .map(String::as_str)
            .ok_or_else(|| anyhow!("no table {id}"))
    }

    pub fn queue_url(&self, id: &str) -> Result<&str> {
        self.queue_urls
            .get(id)
            .map(String::as_str)
            .ok_or_else(|| anyhow!("no queue {id}"))
    }

    /// The environment a function gets from the template, resolved.
    pub fn function_environment(
        &self,
        template: &Template,
        function_id: &str,
    ) -> Result<BTreeMap<String, String>> {
        let mut env = BTreeMap::new();
        let sources = [
            template
                .function_globals()
                .and_then(|g| g.get("Environment"))
                .and_then(|e| e.get("Variables")),
            template
                .resource(function_id)?
                .get("Properties")
                .and_then(|p| p.get("Environment"))
                .and_then(|e| e.get("Variables")),
        ];
        for variables in sources.into_iter().flatten() {
            let Some(map) = variables.as_mapping() else {
                continue;
            };
            for (name, value) in map {
                let name = name
                    .as_str()
                    .ok_or_else(|| anyhow!("environment variable name in {function_id}"))?;
                let value = self
                    .resolve(value)
                    .with_context(|| format!("{function_id} environment {name}"))?;
                env.insert(name.to_string(), value);
            }
        }
        Ok(env)
    }
}

/// Tells the limits hook each table's key attributes, from the template's `KeySchema`.
pub fn register_tables(
    template: &Template,
    stack: &Stack,
    limits: &crate::aws_proxy::limits::Limits,
) -> Result<()> {
    for (id, props) in template.resources_of_type("AWS::DynamoDB::Table") {
        let keys = list(props, "KeySchema")
            .map(|k| field(k, "AttributeName"))
            .collect::<Result<Vec<_>>>()?;
        if let Ok(table) = stack.table(&id) {
            limits.register_table(table, keys);
        }
    }
    Ok(())
}
