//! Secrets Manager: one secret per number (`{prefix}{numberId}`) and the app's own secrets.

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::operation::create_secret::CreateSecretError;
use aws_sdk_secretsmanager::operation::delete_secret::DeleteSecretError;
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
use aws_sdk_secretsmanager::operation::put_secret_value::PutSecretValueError;
use serde::Deserialize;

use crate::domain::NumberId;
use crate::domain::secrets::{AppSecret, NumberSecrets, Secret};
use crate::ports::{TokenVault, VaultError};

/// Days a deleted number's secret can still be restored.
const RECOVERY_WINDOW_DAYS: i64 = 7;

#[derive(Clone)]
pub struct SecretsVault {
    client: Client,
    prefix: String,
}

fn vault_error<
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
>(
    err: aws_sdk_secretsmanager::error::SdkError<E, R>,
) -> VaultError {
    VaultError::Unavailable(err.into())
}

impl SecretsVault {
    pub fn new(client: Client, prefix: impl Into<String>) -> SecretsVault {
        SecretsVault {
            client,
            prefix: prefix.into(),
        }
    }

    fn name(&self, number: &NumberId) -> String {
        format!("{}{number}", self.prefix)
    }
}

impl TokenVault for SecretsVault {
    async fn load(&self, number: &NumberId) -> Result<Option<NumberSecrets>, VaultError> {
        let result = self
            .client
            .get_secret_value()
            .secret_id(self.name(number))
            .send()
            .await;
        match result {
            Ok(output) => {
                let text = output.secret_string.unwrap_or_default();
                serde_json::from_str(&text)
                    .map(Some)
                    // serde's message may quote the secret: only say which secret it is.
                    .map_err(|_| VaultError::Corrupt("a number's secret is not readable".into()))
            }
            Err(err)
                if matches!(
                    err.as_service_error(),
                    Some(GetSecretValueError::ResourceNotFoundException(_))
                ) =>
            {
                Ok(None)
            }
            // A secret scheduled for deletion answers InvalidRequest: it is gone for us.
            Err(err)
                if matches!(
                    err.as_service_error(),
                    Some(GetSecretValueError::InvalidRequestException(_))
                ) =>
            {
                Ok(None)
            }
            Err(err) => Err(vault_error(err)),
        }
    }

    async fn create(
        &self,
        number: &NumberId,
        secrets: &NumberSecrets,
    ) -> Result<NumberSecrets, VaultError> {
        let text = serde_json::to_string(secrets).map_err(|e| VaultError::Corrupt(e.into()))?;
        let result = self
            .client
            .create_secret()
            .name(self.name(number))
            .description("Muchaw Numbers: Meta business token and 2FA PIN of one number")
            .secret_string(text)
            .tags(
                aws_sdk_secretsmanager::types::Tag::builder()
                    .key("muchaw:number")
                    .value(number.as_str())
                    .build(),
            )
            .send()
            .await;
        match result {
            Ok(_) => Ok(secrets.clone()),
            Err(err)
                if matches!(
                    err.as_service_error(),
                    Some(CreateSecretError::ResourceExistsException(_))
                ) =>
            {
                self.load(number)
                    .await?
                    .ok_or_else(|| VaultError::Corrupt("secret exists but cannot be read".into()))
            }
            Err(err) => Err(vault_error(err)),
        }
    }

    async fn replace(&self, number: &NumberId, secrets: &NumberSecrets) -> Result<(), VaultError> {
        let text = serde_json::to_string(secrets).map_err(|e| VaultError::Corrupt(e.into()))?;
        let mut request = self
            .client
            .put_secret_value()
            .secret_id(self.name(number))
            .secret_string(text);
        // The reconnect's id names the version: a repeat of the same write is no new version.
        if let Some(id) = &secrets.reconnect_id {
            request = request.client_request_token(version_token(id));
        }
        match request.send().await {
            Ok(_) => Ok(()),
            // This reconnect's version exists already (written by an earlier delivery).
            Err(err)
                if matches!(
                    err.as_service_error(),
                    Some(PutSecretValueError::ResourceExistsException(_))
                ) =>
            {
                Ok(())
            }
            Err(err) => Err(vault_error(err)),
        }
    }

    async fn schedule_deletion(&self, number: &NumberId) -> Result<(), VaultError> {
        let result = self
            .client
            .delete_secret()
            .secret_id(self.name(number))
            .recovery_window_in_days(RECOVERY_WINDOW_DAYS)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err)
                if matches!(
                    err.as_service_error(),
                    Some(DeleteSecretError::ResourceNotFoundException(_))
                        | Some(DeleteSecretError::InvalidRequestException(_))
                ) =>
            {
                Ok(())
            }
            Err(err) => Err(vault_error(err)),
        }
    }
}

/// A secret version id for a reconnect: Secrets Manager wants 32 to 64 characters.
fn version_token(reconnect_id: &str) -> String {
    let token = format!("{reconnect_id}-reconnect-version-token");
    token.chars().take(64).collect()
}

/// `META_APP_SECRET_ARN`'s JSON.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppSecrets {
    pub app_secret: AppSecret,
    #[serde(default = "no_token")]
    pub webhook_verify_token: Secret,
}

fn no_token() -> Secret {
    Secret::new("")
}

/// Reads a secret's string once, at start-up.
pub async fn read_secret_string(client: &Client, arn: &str) -> Result<Secret, VaultError> {
    let output = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(vault_error)?;
    output
        .secret_string
        .map(Secret::new)
        .ok_or_else(|| VaultError::Corrupt(format!("secret {arn} has no SecretString").into()))
}

/// Reads the app's secrets (each read, a function's first included); a placeholder app secret
/// is logged as an error naming the secret, never its value.
pub async fn read_app_secrets(client: &Client, arn: &str) -> Result<AppSecrets, VaultError> {
    let text = read_secret_string(client, arn).await?;
    let secrets: AppSecrets = serde_json::from_str(text.expose()).map_err(|_| {
        VaultError::Corrupt(
            format!("secret {arn} is not {{\"appSecret\", \"webhookVerifyToken\"}} JSON").into(),
        )
    })?;
    if secrets.app_secret.is_placeholder() {
        log_placeholder(arn);
    }
    Ok(secrets)
}

/// The error a placeholder app secret is logged with, naming where it is kept.
fn log_placeholder(secret: &str) {
    tracing::error!(
        secret,
        "the Meta app secret (MetaAppSecret's appSecret) is empty or still the template's placeholder: every Meta webhook is refused (401, as a bad signature) and nothing is asked of Meta with it until the app's secret is put there"
    );
}
