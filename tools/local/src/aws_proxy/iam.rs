//! The authorizer: each function's AWS requests checked against the policy its role has in
//! `template.yaml`, as IAM evaluates them. A request's IAM actions and resource ARNs follow the
//! Service Authorization Reference: a transaction's items each with their own action on their
//! table, `Query`/`Scan` on an index against the index ARN, SQS batch calls as the single
//! call's action, Secrets Manager ARNs with their random suffix. An explicit `Deny` wins; what
//! no `Allow` grants is denied with AWS's `AccessDenied` answer and recorded, and every grant a
//! request used is recorded, so a run reports both ways (`report`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Result, anyhow, bail};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_yaml::Value as Yaml;

use super::{Answer, AwsCall, Hook, Service, Verdict, aws_error};
use crate::moto::REGION;
use crate::provision::{ACCOUNT_ID, Stack};
use crate::template::{Template, scalar};

/// The access key id a function of a stack signs with locally: the authorizer maps it to that
/// function's role, as AWS maps a role's session credentials to the role.
pub fn function_access_key(stack_prefix: &str, function_id: &str) -> String {
    let prefix: String = stack_prefix
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    format!("{FUNCTION_KEY_PREFIX}{prefix}{function_id}")
}

/// Every function's access key starts so; an unknown one of this shape is denied everything.
pub const FUNCTION_KEY_PREFIX: &str = "LOCAL";

/// What SAM gives every function with an `SQS` event: the managed policy
/// `AWSLambdaSQSQueueExecutionRole`, which Lambda's event source mapping polls with.
const SQS_EXECUTION_ROLE: &str = "AWSLambdaSQSQueueExecutionRole";

/// One permission a request needs: an IAM action on a resource ARN.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Permission {
    pub action: String,
    pub resource: String,
}

/// One statement of a role's policy, its resources resolved against a stack.
#[derive(Clone, Debug)]
pub struct Statement {
    /// Its place in the function's `Policies` (or the managed policy's name).
    pub source: String,
    pub allow: bool,
    pub actions: Vec<String>,
    pub not_actions: Vec<String>,
    /// (resolved ARN pattern, the template's expression for it)
    pub resources: Vec<(String, String)>,
    pub not_resources: Vec<String>,
    pub has_condition: bool,
}

/// A function's role: its statements, resolved for one stack.
#[derive(Clone, Debug)]
pub struct Role {
    pub function_id: String,
    pub stack_prefix: String,
    pub statements: Vec<Statement>,
}

/// A grant of the template: (function, statement, action, resource expression).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Grant {
    pub function: String,
    pub statement: String,
    pub action: String,
    pub resource: String,
}

/// A request the authorizer refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Denial {
    pub function: String,
    pub stack_prefix: String,
    pub api_action: String,
    pub permission: Permission,
}

/// One line of the usage log a run writes (`MUCHAW_IAM_LOG_DIR`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LogLine {
    Used(Grant),
    Denied(Denial),
}

/// Every policy statement of every function in the template, unresolved: what a report lists.
pub fn template_grants(template: &Template) -> Result<Vec<Grant>> {
    let mut grants = Vec::new();
    for (function_id, _) in template.resources_of_type("AWS::Serverless::Function") {
        for (index, statement) in policy_statements(template, &function_id)? {
            for action in strings(statement.get("Action")) {
                for resource in statement_resources(statement) {
                    grants.push(Grant {
                        function: function_id.clone(),
                        statement: statement_source(index),
                        action: action.clone(),
                        resource: expression_text(resource),
                    });
                }
            }
        }
    }
    Ok(grants)
}

fn statement_source(index: usize) -> String {
    format!("Policies[0].Statement[{index}]")
}

/// The inline statements of a function's `Policies`. What SAM would have to expand (policy
/// templates, managed policies, connectors) or a role of its own is refused, naming it: expand
/// it with `aws-sam-translator` before it can be modelled here.
fn policy_statements<'t>(
    template: &'t Template,
    function_id: &str,
) -> Result<Vec<(usize, &'t Yaml)>> {
    let properties = template
        .resource(function_id)?
        .get("Properties")
        .ok_or_else(|| anyhow!("{function_id} has no Properties"))?;
    if properties.get("Role").is_some() {
        bail!("{function_id}: a Role of its own is not modelled; use Policies");
    }
    if template.resource(function_id)?.get("Connectors").is_some() {
        bail!(
            "{function_id}: SAM connectors are not modelled; expand them with aws-sam-translator"
        );
    }
    let Some(policies) = properties.get("Policies") else {
        return Ok(Vec::new());
    };
    let policies = match policies.as_sequence() {
        Some(list) => list.iter().collect::<Vec<_>>(),
        None => vec![policies],
    };
    let mut statements = Vec::new();
    for policy in policies {
        let Some(document) = policy.get("Statement") else {
            bail!(
                "{function_id}: the policy {policy:?} is a SAM policy template or a managed policy; \
                 expand it with aws-sam-translator before it can be modelled"
            );
        };
        let list = match document.as_sequence() {
            Some(list) => list.iter().collect::<Vec<_>>(),
            None => vec![document],
        };
        statements.extend(list);
    }
    Ok(statements.into_iter().enumerate().collect())
}

fn strings(value: Option<&Yaml>) -> Vec<String> {
    match value {
        None => Vec::new(),
        Some(Yaml::Sequence(items)) => items.iter().filter_map(scalar).collect(),
        Some(other) => scalar(other).into_iter().collect(),
    }
}

fn statement_resources(statement: &Yaml) -> Vec<&Yaml> {
    match statement.get("Resource") {
        None => Vec::new(),
        Some(Yaml::Sequence(items)) => items.iter().collect(),
        Some(one) => vec![one],
    }
}

/// A template value as the template writes it: `!GetAtt Queue.Arn`, `!Sub "..."`, a literal.
pub fn expression_text(value: &Yaml) -> String {
    match value {
        Yaml::Tagged(tagged) => {
            let inner = match &tagged.value {
                Yaml::String(text) => text.clone(),
                Yaml::Sequence(items) => items
                    .iter()
                    .filter_map(scalar)
                    .collect::<Vec<_>>()
                    .join("."),
                other => format!("{other:?}"),
            };
            format!("{} {inner}", tagged.tag)
        }
        Yaml::Mapping(map) => map
            .iter()
            .next()
            .map(|(key, inner)| {
                let name = scalar(key).unwrap_or_default();
                let name = name.trim_start_matches("Fn::");
                format!("!{name} {}", expression_text(inner))
            })
            .unwrap_or_default(),
        Yaml::Sequence(items) => items
            .iter()
            .map(expression_text)
            .collect::<Vec<_>>()
            .join("."),
        other => scalar(other).unwrap_or_default(),
    }
}

impl Role {
    /// A function's role in `template`, its resources resolved against `stack`.
    pub fn of(template: &Template, stack: &Stack, function_id: &str) -> Result<Role> {
        let mut statements = Vec::new();
        for (index, statement) in policy_statements(template, function_id)? {
            let effect = statement.get("Effect").and_then(scalar).unwrap_or_default();
            let mut resources = Vec::new();
            for resource in statement_resources(statement) {
                resources.push((stack.resolve(resource)?, expression_text(resource)));
            }
            let not_resources = match statement.get("NotResource") {
                None => Vec::new(),
                Some(Yaml::Sequence(items)) => items
                    .iter()
                    .map(|item| stack.resolve(item))
                    .collect::<Result<_>>()?,
                Some(one) => vec![stack.resolve(one)?],
            };
            statements.push(Statement {
                source: statement_source(index),
                allow: effect == "Allow",
                actions: strings(statement.get("Action")),
                not_actions: strings(statement.get("NotAction")),
                resources,
                not_resources,
                has_condition: statement.get("Condition").is_some(),
            });
        }
        let has_sqs_event = template
            .function_events()
            .iter()
            .any(|event| event.function_id == function_id && event.kind == "SQS");
        if has_sqs_event {
            statements.push(Statement {
                source: SQS_EXECUTION_ROLE.to_string(),
                allow: true,
                actions: [
                    "sqs:ReceiveMessage",
                    "sqs:DeleteMessage",
                    "sqs:GetQueueAttributes",
                    "logs:CreateLogGroup",
                    "logs:CreateLogStream",
                    "logs:PutLogEvents",
                ]
                .map(String::from)
                .to_vec(),
                not_actions: Vec::new(),
                resources: vec![("*".to_string(), "*".to_string())],
                not_resources: Vec::new(),
                has_condition: false,
            });
        }
        Ok(Role {
            function_id: function_id.to_string(),
            stack_prefix: stack.prefix.clone(),
            statements,
        })
    }

    /// IAM's evaluation of one permission: an explicit deny wins, else an allow grants, else
    /// it is denied (`None`). Answers the grants that allowed it: (statement, action, resource).
    pub fn evaluate(&self, permission: &Permission) -> Option<Vec<(String, String, String)>> {
        let mut granted = Vec::new();
        for statement in &self.statements {
            let action_pattern = statement
                .actions
                .iter()
                .find(|pattern| action_matches(pattern, &permission.action));
            let action_hit = if statement.actions.is_empty() {
                !statement.not_actions.is_empty()
                    && !statement
                        .not_actions
                        .iter()
                        .any(|pattern| action_matches(pattern, &permission.action))
            } else {
                action_pattern.is_some()
            };
            if !action_hit {
                continue;
            }
            let resource_pattern = statement
                .resources
                .iter()
                .find(|(pattern, _)| wildcard_matches(pattern, &permission.resource));
            let resource_hit = if statement.resources.is_empty() {
                !statement.not_resources.is_empty()
                    && !statement
                        .not_resources
                        .iter()
                        .any(|pattern| wildcard_matches(pattern, &permission.resource))
            } else {
                resource_pattern.is_some()
            };
            if !resource_hit {
                continue;
            }
            // Conditions are not modelled: they never grant and always deny, the safe way round.
            if !statement.allow {
                return None;
            }
            if statement.has_condition {
                continue;
            }
            granted.push((
                statement.source.clone(),
                action_pattern
                    .cloned()
                    .unwrap_or_else(|| "NotAction".into()),
                resource_pattern
                    .map(|(_, expression)| expression.clone())
                    .unwrap_or_else(|| "NotResource".into()),
            ));
        }
        (!granted.is_empty()).then_some(granted)
    }
}

/// IAM action names match case-insensitively, with `*` and `?` wildcards.
pub fn action_matches(pattern: &str, action: &str) -> bool {
    wildcard_matches(&pattern.to_ascii_lowercase(), &action.to_ascii_lowercase())
}

/// IAM's resource matching: case-sensitive, `*` any run of characters, `?` any one.
pub fn wildcard_matches(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

fn table_arn(name: &str) -> String {
    if name.starts_with("arn:") {
        return name.to_string();
    }
    format!("arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/{name}")
}

/// `https://host/123456789012/name` → the queue's ARN.
pub fn queue_arn(url: &str) -> String {
    let mut parts = url.trim_end_matches('/').rsplit('/');
    let name = parts.next().unwrap_or_default();
    let account = parts.next().filter(|a| !a.is_empty()).unwrap_or(ACCOUNT_ID);
    format!("arn:aws:sqs:{REGION}:{account}:{name}")
}

/// What IAM checks for one request: each (action, resource) it needs.
pub fn required_permissions(
    call: &AwsCall,
    secret_arn: &dyn Fn(&str) -> String,
) -> Vec<Permission> {
    let body = &call.json;
    let prefix = call.service.iam_prefix();
    let permission = |action: &str, resource: String| Permission {
        action: format!("{prefix}:{action}"),
        resource,
    };
    match call.service {
        Service::DynamoDb => {
            let table = body["TableName"].as_str().map(table_arn);
            match call.action.as_str() {
                "Query" | "Scan" => {
                    let table = table.unwrap_or_default();
                    let resource = match body["IndexName"].as_str() {
                        Some(index) => format!("{table}/index/{index}"),
                        None => table,
                    };
                    vec![permission(&call.action, resource)]
                }
                "BatchGetItem" | "BatchWriteItem" => body["RequestItems"]
                    .as_object()
                    .map(|tables| {
                        tables
                            .keys()
                            .map(|name| permission(&call.action, table_arn(name)))
                            .collect()
                    })
                    .unwrap_or_default(),
                "TransactWriteItems" | "TransactGetItems" => body["TransactItems"]
                    .as_array()
                    .map(|items| {
                        items
                            .iter()
                            .filter_map(|item| {
                                let (kind, inner) = item.as_object()?.iter().next()?;
                                let action = match kind.as_str() {
                                    "Put" => "PutItem",
                                    "Update" => "UpdateItem",
                                    "Delete" => "DeleteItem",
                                    "ConditionCheck" => "ConditionCheckItem",
                                    "Get" => "GetItem",
                                    _ => return None,
                                };
                                let name = inner["TableName"].as_str()?;
                                Some(permission(action, table_arn(name)))
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                "ListTables" => vec![permission("ListTables", "*".into())],
                action => vec![permission(action, table.unwrap_or_else(|| "*".into()))],
            }
        }
        Service::Sqs => {
            let queue = body["QueueUrl"]
                .as_str()
                .map(queue_arn)
                .or_else(|| {
                    body["QueueName"]
                        .as_str()
                        .map(|name| format!("arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{name}"))
                })
                .unwrap_or_else(|| "*".into());
            let action = match call.action.as_str() {
                "SendMessageBatch" => "SendMessage",
                "DeleteMessageBatch" => "DeleteMessage",
                "ChangeMessageVisibilityBatch" => "ChangeMessageVisibility",
                other => other,
            };
            vec![permission(action, queue)]
        }
        Service::SecretsManager => {
            let id = body["SecretId"]
                .as_str()
                .or_else(|| body["Name"].as_str())
                .map(secret_arn)
                .unwrap_or_else(|| "*".into());
            let mut needed = vec![permission(&call.action, id.clone())];
            if call.action == "CreateSecret" {
                if body["Tags"].as_array().is_some_and(|tags| !tags.is_empty()) {
                    needed.push(permission("TagResource", id.clone()));
                }
                if body["AddReplicaRegions"]
                    .as_array()
                    .is_some_and(|regions| !regions.is_empty())
                {
                    needed.push(permission("ReplicateSecretToRegions", id));
                }
            }
            needed
        }
        Service::Other => vec![Permission {
            action: format!("unknown:{}", call.action),
            resource: "*".into(),
        }],
    }
}

/// The authorizer hook; see the module's documentation.
pub struct Authorizer {
    roles: Mutex<HashMap<String, Arc<Role>>>,
    secret_arns: Mutex<HashMap<String, String>>,
    used: Mutex<BTreeSet<Grant>>,
    denials: Mutex<Vec<Denial>>,
    log: Option<PathBuf>,
}

/// Where a run's usage log goes: one file per process in this directory.
pub const LOG_DIR_VARIABLE: &str = "MUCHAW_IAM_LOG_DIR";

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Default for Authorizer {
    fn default() -> Self {
        Authorizer::new(None)
    }
}

impl Authorizer {
    /// An authorizer that appends what it sees to `log_dir`, when given.
    pub fn new(log_dir: Option<PathBuf>) -> Authorizer {
        Authorizer {
            roles: Mutex::default(),
            secret_arns: Mutex::default(),
            used: Mutex::default(),
            denials: Mutex::default(),
            log: log_dir,
        }
    }

    /// Logging to `MUCHAW_IAM_LOG_DIR` when it is set.
    pub fn from_environment() -> Authorizer {
        Authorizer::new(std::env::var_os(LOG_DIR_VARIABLE).map(PathBuf::from))
    }

    /// Gives every function of `stack` its role: requests signed with
    /// [`function_access_key`] are checked against it from now on.
    pub fn register(&self, template: &Template, stack: &Stack) -> Result<()> {
        let mut roles = HashMap::new();
        for (function_id, _) in template.resources_of_type("AWS::Serverless::Function") {
            let role = Role::of(template, stack, &function_id)?;
            roles.insert(
                function_access_key(&stack.prefix, &function_id),
                Arc::new(role),
            );
        }
        lock(&self.roles).extend(roles);
        let mut secrets = lock(&self.secret_arns);
        for arn in stack.secret_arns.values() {
            if let Some(name) = secret_name_of(arn) {
                secrets.insert(name, arn.clone());
            }
        }
        Ok(())
    }

    /// The denials of one stack's functions so far.
    pub fn denials_of(&self, stack_prefix: &str) -> Vec<Denial> {
        lock(&self.denials)
            .iter()
            .filter(|denial| denial.stack_prefix == stack_prefix)
            .cloned()
            .collect()
    }

    pub fn denials(&self) -> Vec<Denial> {
        lock(&self.denials).clone()
    }

    pub fn used(&self) -> BTreeSet<Grant> {
        lock(&self.used).clone()
    }

    fn secret_arn(&self, id: &str) -> String {
        if id.starts_with("arn:") {
            return id.to_string();
        }
        lock(&self.secret_arns)
            .get(id)
            .cloned()
            // A secret this authorizer has not seen created: its ARN has a suffix all the same.
            .unwrap_or_else(|| {
                format!("arn:aws:secretsmanager:{REGION}:{ACCOUNT_ID}:secret:{id}-??????")
            })
    }

    fn write_log(&self, line: &LogLine) {
        let Some(dir) = &self.log else { return };
        let _ = std::fs::create_dir_all(dir);
        let path = dir.join(format!("{}.jsonl", std::process::id()));
        if let (Ok(mut file), Ok(text)) = (
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path),
            serde_json::to_string(line),
        ) {
            let _ = writeln!(file, "{text}");
        }
    }

    /// Checks one call; `None` when every permission it needs is granted.
    pub fn check(&self, call: &AwsCall) -> Option<Denial> {
        let key = call.access_key.clone().unwrap_or_default();
        let role = lock(&self.roles).get(&key).cloned();
        let Some(role) = role else {
            if key.starts_with(FUNCTION_KEY_PREFIX) {
                let permission = required_permissions(call, &|id| self.secret_arn(id))
                    .into_iter()
                    .next()?;
                return Some(self.deny(&key, "", call, permission));
            }
            // Not a function's: the operator's or a test's own setup, which IAM does not limit here.
            return None;
        };
        for permission in required_permissions(call, &|id| self.secret_arn(id)) {
            match role.evaluate(&permission) {
                Some(grants) => {
                    for (statement, action, resource) in grants {
                        let grant = Grant {
                            function: role.function_id.clone(),
                            statement,
                            action,
                            resource,
                        };
                        if lock(&self.used).insert(grant.clone()) {
                            self.write_log(&LogLine::Used(grant));
                        }
                    }
                }
                None => {
                    return Some(self.deny(
                        &role.function_id,
                        &role.stack_prefix,
                        call,
                        permission,
                    ));
                }
            }
        }
        None
    }

    fn deny(&self, function: &str, prefix: &str, call: &AwsCall, permission: Permission) -> Denial {
        let denial = Denial {
            function: function.to_string(),
            stack_prefix: prefix.to_string(),
            api_action: call.action.clone(),
            permission,
        };
        tracing::warn!(
            function,
            action = %denial.permission.action,
            resource = %denial.permission.resource,
            "AccessDenied"
        );
        lock(&self.denials).push(denial.clone());
        self.write_log(&LogLine::Denied(denial.clone()));
        denial
    }
}

fn secret_name_of(arn: &str) -> Option<String> {
    let name = arn.split(":secret:").nth(1)?;
    // Secrets Manager's suffix: a hyphen and six characters.
    let cut = name.len().checked_sub(7)?;
    (name.as_bytes().get(cut) == Some(&b'-')).then(|| name[..cut].to_string())
}

impl Hook for Authorizer {
    fn before(&self, call: &AwsCall) -> Verdict {
        match self.check(call) {
            None => Verdict::Forward,
            Some(denial) => {
                let role = format!(
                    "arn:aws:sts::{ACCOUNT_ID}:assumed-role/{}Role/{}",
                    denial.function, denial.function
                );
                let message = format!(
                    "User: {role} is not authorized to perform: {} on resource: {} because no \
                     identity-based policy allows the {} action",
                    denial.permission.action, denial.permission.resource, denial.permission.action
                );
                let (status, code) = match call.service {
                    Service::Sqs => (StatusCode::FORBIDDEN, "AccessDenied"),
                    _ => (StatusCode::BAD_REQUEST, "AccessDeniedException"),
                };
                Verdict::Refuse(aws_error(call.service, status, code, &message))
            }
        }
    }

    fn after(&self, call: &AwsCall, answer: &Answer) {
        if call.service == Service::SecretsManager
            && call.action == "CreateSecret"
            && answer.status.is_success()
            && let Ok(created) = serde_json::from_slice::<Value>(&answer.body)
            && let (Some(name), Some(arn)) = (created["Name"].as_str(), created["ARN"].as_str())
        {
            lock(&self.secret_arns).insert(name.to_string(), arn.to_string());
        }
    }
}

/// Every log line under `dir` (each process's file).
pub fn read_logs(dir: &Path) -> Result<Vec<LogLine>> {
    let mut lines = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(lines);
    };
    for entry in entries.flatten() {
        let text = std::fs::read_to_string(entry.path())?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            lines.push(serde_json::from_str(line)?);
        }
    }
    Ok(lines)
}

/// The reason a function's template metadata gives for a grant no local request uses
/// (`Metadata.UnexercisedGrants`, by action).
pub fn unexercised_reasons(template: &Template, function_id: &str) -> BTreeMap<String, String> {
    template
        .resource(function_id)
        .ok()
        .and_then(|resource| resource.get("Metadata"))
        .and_then(|metadata| metadata.get("UnexercisedGrants"))
        .and_then(Yaml::as_mapping)
        .map(|map| {
            map.iter()
                .filter_map(|(action, reason)| Some((scalar(action)?, scalar(reason)?)))
                .collect()
        })
        .unwrap_or_default()
}

/// The least-privilege report of a run: per function, each grant of its policy with whether a
/// request used it (and, when none did, the template's reason), then every denial.
pub struct Report {
    pub markdown: String,
    pub denials: Vec<Denial>,
    /// Grants no request used and no reason covers.
    pub unexplained: Vec<Grant>,
}

pub fn report(template: &Template, lines: &[LogLine]) -> Result<Report> {
    // A grant is what it allows, wherever in the policy it sits: (function, action, resource).
    let used: BTreeSet<(String, String, String)> = lines
        .iter()
        .filter_map(|line| match line {
            LogLine::Used(grant) => Some((
                grant.function.clone(),
                grant.action.clone(),
                grant.resource.clone(),
            )),
            LogLine::Denied(_) => None,
        })
        .collect();
    let mut denials: Vec<Denial> = Vec::new();
    for line in lines {
        if let LogLine::Denied(denial) = line
            && !denials.iter().any(|d| {
                d.function == denial.function && d.permission.action == denial.permission.action
            })
        {
            denials.push(denial.clone());
        }
    }
    let mut out = String::new();
    out.push_str("# Least privilege: what each function's role grants and what the tests used\n\n");
    out.push_str(
        "Generated by `make test` (`scripts/test.sh` → `muchaw-local iam-report`) from the \
         authorizer's log: every AWS request of every test, `make run`-style binary and \
         in-process handler went through the local AWS gateway with its function's own role \
         (`tools/local/src/aws_proxy/iam.rs`). Do not edit by hand.\n\n",
    );
    out.push_str(&format!(
        "Denied requests in this run: **{}**.\n\n",
        denials.len()
    ));
    for denial in &denials {
        out.push_str(&format!(
            "- DENIED {} `{}` on `{}` ({})\n",
            denial.function,
            denial.permission.action,
            denial.permission.resource,
            denial.api_action
        ));
    }
    let mut unexplained = Vec::new();
    let grants = template_grants(template)?;
    let mut by_function: BTreeMap<&str, Vec<&Grant>> = BTreeMap::new();
    for grant in &grants {
        by_function.entry(&grant.function).or_default().push(grant);
    }
    for (function, grants) in by_function {
        let reasons = unexercised_reasons(template, function);
        out.push_str(&format!("\n## {function}\n\n"));
        out.push_str("| statement | action | resource | used by a test | why kept if unused |\n");
        out.push_str("|---|---|---|---|---|\n");
        for grant in grants {
            let is_used = used.contains(&(
                grant.function.clone(),
                grant.action.clone(),
                grant.resource.clone(),
            ));
            let reason = if is_used {
                String::new()
            } else {
                match reasons.get(&grant.action) {
                    Some(reason) => reason.clone(),
                    None => {
                        unexplained.push(grant.clone());
                        "**no reason: remove it**".to_string()
                    }
                }
            };
            out.push_str(&format!(
                "| {} | `{}` | `{}` | {} | {} |\n",
                grant.statement.trim_start_matches("Policies[0]."),
                grant.action,
                grant.resource,
                if is_used { "yes" } else { "no" },
                reason
            ));
        }
    }
    Ok(Report {
        markdown: out,
        denials,
        unexplained,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Bytes;
    use axum::http::HeaderMap;

    fn call(target: &str, body: Value) -> AwsCall {
        let mut headers = HeaderMap::new();
        headers.insert("x-amz-target", target.parse().unwrap());
        AwsCall::read(&headers, None, Bytes::from(body.to_string()))
    }

    fn needs(target: &str, body: Value) -> Vec<(String, String)> {
        required_permissions(&call(target, body), &|id| format!("arn:secret:{id}-abcdef"))
            .into_iter()
            .map(|p| (p.action, p.resource))
            .collect()
    }

    #[test]
    fn a_transaction_needs_each_items_own_action_on_its_table() {
        let needed = needs(
            "DynamoDB_20120810.TransactWriteItems",
            serde_json::json!({"TransactItems": [
                {"Put": {"TableName": "t"}},
                {"Delete": {"TableName": "t"}},
                {"ConditionCheck": {"TableName": "t"}},
                {"Update": {"TableName": "t"}}
            ]}),
        );
        let table = format!("arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/t");
        assert_eq!(
            needed,
            vec![
                ("dynamodb:PutItem".to_string(), table.clone()),
                ("dynamodb:DeleteItem".to_string(), table.clone()),
                ("dynamodb:ConditionCheckItem".to_string(), table.clone()),
                ("dynamodb:UpdateItem".to_string(), table),
            ]
        );
    }

    #[test]
    fn a_query_on_an_index_needs_the_index_arn() {
        let needed = needs(
            "DynamoDB_20120810.Query",
            serde_json::json!({"TableName": "t", "IndexName": "GSI1"}),
        );
        assert_eq!(
            needed[0].1,
            format!("arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/t/index/GSI1")
        );
    }

    #[test]
    fn sqs_batches_need_the_single_calls_action() {
        let needed = needs(
            "AmazonSQS.DeleteMessageBatch",
            serde_json::json!({"QueueUrl": "http://localhost:5000/123456789012/q"}),
        );
        assert_eq!(
            needed,
            vec![(
                "sqs:DeleteMessage".to_string(),
                format!("arn:aws:sqs:{REGION}:123456789012:q")
            )]
        );
    }

    #[test]
    fn a_secret_created_with_tags_needs_tag_resource_too() {
        let needed = needs(
            "secretsmanager.CreateSecret",
            serde_json::json!({"Name": "muchaw/x/numbers/n1", "Tags": [{"Key": "a", "Value": "b"}]}),
        );
        assert_eq!(
            needed,
            vec![
                (
                    "secretsmanager:CreateSecret".to_string(),
                    "arn:secret:muchaw/x/numbers/n1-abcdef".to_string()
                ),
                (
                    "secretsmanager:TagResource".to_string(),
                    "arn:secret:muchaw/x/numbers/n1-abcdef".to_string()
                ),
            ]
        );
    }

    fn role(statements: Vec<Statement>) -> Role {
        Role {
            function_id: "F".into(),
            stack_prefix: "p".into(),
            statements,
        }
    }

    fn statement(allow: bool, actions: &[&str], resources: &[&str]) -> Statement {
        Statement {
            source: "s".into(),
            allow,
            actions: actions.iter().map(|a| a.to_string()).collect(),
            not_actions: Vec::new(),
            resources: resources
                .iter()
                .map(|r| (r.to_string(), r.to_string()))
                .collect(),
            not_resources: Vec::new(),
            has_condition: false,
        }
    }

    fn permission(action: &str, resource: &str) -> Permission {
        Permission {
            action: action.into(),
            resource: resource.into(),
        }
    }

    #[test]
    fn what_no_statement_allows_is_denied_and_an_explicit_deny_wins() {
        let role = role(vec![
            statement(
                true,
                &["dynamodb:Get*"],
                &["arn:table/t", "arn:table/t/index/*"],
            ),
            statement(false, &["dynamodb:GetItem"], &["arn:table/secret"]),
            statement(true, &["dynamodb:*"], &["arn:table/secret"]),
        ]);
        assert!(
            role.evaluate(&permission("dynamodb:GetItem", "arn:table/t"))
                .is_some()
        );
        assert!(
            role.evaluate(&permission("DynamoDB:getitem", "arn:table/t"))
                .is_some()
        );
        assert!(
            role.evaluate(&permission("dynamodb:PutItem", "arn:table/t"))
                .is_none()
        );
        assert!(
            role.evaluate(&permission("dynamodb:GetItem", "arn:table/other"))
                .is_none()
        );
        assert!(
            role.evaluate(&permission("dynamodb:GetItem", "arn:table/secret"))
                .is_none()
        );
        assert!(
            role.evaluate(&permission("dynamodb:PutItem", "arn:table/secret"))
                .is_some()
        );
    }

    #[test]
    fn wildcards_match_as_iam_matches_them() {
        assert!(wildcard_matches(
            "arn:secret:muchaw/dev/numbers/*",
            "arn:secret:muchaw/dev/numbers/n1-abcdef"
        ));
        assert!(wildcard_matches("arn:x:??", "arn:x:ab"));
        assert!(!wildcard_matches("arn:x:??", "arn:x:abc"));
        assert!(!wildcard_matches("arn:table/t", "arn:table/t/index/GSI1"));
        assert!(wildcard_matches("*", "anything"));
        assert!(wildcard_matches("a*b*c", "axxbyyc"));
        assert!(!wildcard_matches("a*b*c", "axxbyy"));
    }

    #[test]
    fn a_secrets_name_is_its_arn_without_the_suffix() {
        assert_eq!(
            secret_name_of("arn:aws:secretsmanager:us-east-1:1:secret:muchaw/dev/app-AbCdEf"),
            Some("muchaw/dev/app".to_string())
        );
    }

    #[test]
    fn every_statement_of_the_template_is_modelled() {
        let template = Template::workspace().unwrap();
        let grants = template_grants(&template).unwrap();
        assert!(
            grants
                .iter()
                .any(|g| g.function == "HealthSyncFunction" && g.action == "dynamodb:DeleteItem")
        );
    }
}
