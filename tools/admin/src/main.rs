//! `muchaw-admin`: reads the same configuration as the functions (`TABLE_NAME`, the AWS
//! environment); JSON on stdout, errors on stderr with a non-zero exit.

use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use clap::{Parser, Subcommand};
use muchaw_shared::adapters::dynamo::DynamoStore;
use muchaw_shared::domain::api_key::{KeyFormat, KeyScope, check_key};
use muchaw_shared::domain::{AccountId, ApiKeyId};
use muchaw_shared::ports::StoreError;
use muchaw_shared::webhooks::{SecretFormat, check_secret};
use muchaw_shared::{aws, config};
use serde_json::json;

#[derive(Parser)]
#[command(name = "muchaw-admin", about = "Operate Muchaw Numbers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Customer accounts.
    Account {
        #[command(subcommand)]
        command: AccountCommand,
    },
    /// API keys of an account.
    ApiKey {
        #[command(subcommand)]
        command: ApiKeyCommand,
    },
    /// Webhook endpoint secrets.
    WebhookSecret {
        #[command(subcommand)]
        command: WebhookSecretCommand,
    },
    /// Numbers in the table.
    Numbers {
        #[command(subcommand)]
        command: NumbersCommand,
    },
    /// Dead-letter queues.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
}

#[derive(Subcommand)]
enum AccountCommand {
    Create {
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand)]
enum ApiKeyCommand {
    /// Prints the key once; only its hash is stored.
    Create {
        #[arg(long)]
        account: String,
        #[arg(long)]
        name: Option<String>,
        /// `read` (GET requests only) or `write` (everything).
        #[arg(long, default_value = "write", value_parser = parse_scope)]
        scope: KeyScope,
    },
    /// The account's keys (never the keys themselves), with the hour each was last used in.
    List {
        #[arg(long)]
        account: String,
    },
    Revoke {
        #[arg(long)]
        account: String,
        #[arg(long = "key-id")]
        key_id: String,
    },
    /// Checks a key's format and checksum offline (no AWS access): is a string found in a leak
    /// one of our keys? Prints nothing of the key.
    Verify {
        /// The key; `-` reads it from standard input (keeps it out of shell history).
        key: String,
    },
}

#[derive(Subcommand)]
enum WebhookSecretCommand {
    /// Checks a webhook secret's format and checksum offline. Prints nothing of the secret.
    Verify {
        /// The secret; `-` reads it from standard input.
        secret: String,
    },
}

#[derive(Subcommand)]
enum NumbersCommand {
    /// Rewrites every number in the current layout, so numbers stored before an index existed
    /// are found through it (`GET /api/numbers?phoneNumber=` / `?wabaId=`). Run once after
    /// deploying a version that adds one; safe to repeat and to run while the API serves.
    Reindex,
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Moves every message of a dead-letter queue back to the queue it came from.
    Redrive {
        /// The dead-letter queue's name or URL.
        #[arg(long)]
        queue: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command).await {
        Ok(output) => {
            println!("{output}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{}", json!({"error": format!("{err:#}")}));
            ExitCode::FAILURE
        }
    }
}

fn parse_scope(text: &str) -> Result<KeyScope, String> {
    text.parse()
        .map_err(|e: muchaw_shared::domain::api_key::UnknownScope| e.to_string())
}

async fn store() -> Result<DynamoStore> {
    let table = config::required(config::TABLE_NAME)?;
    Ok(DynamoStore::new(aws::dynamodb().await, table))
}

/// The argument, or standard input for `-`, without surrounding whitespace.
fn argument_or_stdin(value: String) -> Result<String> {
    if value != "-" {
        return Ok(value.trim().to_string());
    }
    let read = std::io::read_to_string(std::io::stdin()).context("reading standard input")?;
    Ok(read.trim().to_string())
}

async fn run(command: Command) -> Result<serde_json::Value> {
    match command {
        Command::Account {
            command: AccountCommand::Create { name },
        } => {
            let name = name.trim();
            if name.is_empty() || name.len() > 200 {
                return Err(anyhow!("--name must be 1 to 200 characters"));
            }
            let account = store().await?.create_account(name).await?;
            Ok(json!({"id": account.id, "name": account.name}))
        }
        Command::ApiKey {
            command:
                ApiKeyCommand::Create {
                    account,
                    name,
                    scope,
                },
        } => {
            let account = AccountId::from(account);
            let created = store()
                .await?
                .create_scoped_api_key(&account, name.as_deref(), scope)
                .await
                .map_err(|e| match e {
                    StoreError::NotFound => anyhow!("no account {account}"),
                    other => other.into(),
                })?;
            Ok(json!({
                "id": created.id,
                "key": created.key.expose(),
                "accountId": created.account_id,
                "scope": created.scope,
            }))
        }
        Command::ApiKey {
            command: ApiKeyCommand::List { account },
        } => {
            let account = AccountId::from(account);
            let keys = store().await?.list_api_keys(&account).await?;
            Ok(json!({"accountId": account, "keys": keys}))
        }
        Command::ApiKey {
            command: ApiKeyCommand::Revoke { account, key_id },
        } => {
            let account = AccountId::from(account);
            let key_id = ApiKeyId::from(key_id);
            store()
                .await?
                .revoke_api_key(&account, &key_id)
                .await
                .map_err(|e| match e {
                    StoreError::NotFound => anyhow!("account {account} has no key {key_id}"),
                    other => other.into(),
                })?;
            Ok(json!({"id": key_id, "accountId": account, "revoked": true}))
        }
        Command::ApiKey {
            command: ApiKeyCommand::Verify { key },
        } => {
            let key = argument_or_stdin(key)?;
            match check_key(&key)? {
                KeyFormat::Checksummed => Ok(json!({"format": "mk_live", "checksum": "valid"})),
                KeyFormat::Legacy => Ok(json!({
                    "format": "legacy",
                    "checksum": "none",
                    "note": "an older mk_ key carries no checksum; only a lookup can tell whether it is live",
                })),
            }
        }
        Command::WebhookSecret {
            command: WebhookSecretCommand::Verify { secret },
        } => {
            let secret = argument_or_stdin(secret)?;
            match check_secret(&secret)? {
                SecretFormat::Checksummed => {
                    Ok(json!({"format": "whsec_mUch", "checksum": "valid"}))
                }
                SecretFormat::Legacy => Ok(json!({
                    "format": "legacy",
                    "checksum": "none",
                    "note": "a whsec_ secret without the whsec_mUch marker carries no checksum: older, or not ours",
                })),
            }
        }
        Command::Numbers {
            command: NumbersCommand::Reindex,
        } => {
            let (rewritten, skipped) = store().await?.reindex_numbers().await?;
            Ok(json!({"rewritten": rewritten, "changedMeanwhile": skipped}))
        }
        Command::Dlq {
            command: DlqCommand::Redrive { queue },
        } => {
            let client = aws_sdk_sqs::Client::new(&aws::sdk_config().await);
            let moved = muchaw_shared::adapters::sqs::redrive(&client, &queue)
                .await
                .context("redriving")?;
            Ok(json!({"queue": queue, "moved": moved}))
        }
    }
}
