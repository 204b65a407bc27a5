//! `muchaw-admin`: reads the same configuration as the functions (`TABLE_NAME`, the AWS
//! environment); JSON on stdout, errors on stderr with a non-zero exit.

use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use clap::{Parser, Subcommand};
use muchaw_shared::adapters::dynamo::DynamoStore;
use muchaw_shared::domain::{AccountId, ApiKeyId};
use muchaw_shared::ports::StoreError;
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
    },
    Revoke {
        #[arg(long)]
        account: String,
        #[arg(long = "key-id")]
        key_id: String,
    },
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

async fn store() -> Result<DynamoStore> {
    let table = config::required(config::TABLE_NAME)?;
    Ok(DynamoStore::new(aws::dynamodb().await, table))
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
            command: ApiKeyCommand::Create { account, name },
        } => {
            let account = AccountId::from(account);
            let created = store()
                .await?
                .create_api_key(&account, name.as_deref())
                .await
                .map_err(|e| match e {
                    StoreError::NotFound => anyhow!("no account {account}"),
                    other => other.into(),
                })?;
            Ok(json!({
                "id": created.id,
                "key": created.key.expose(),
                "accountId": created.account_id,
            }))
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
