//! What every section needs: the template, a stack of its resources on moto, the fake Meta, and
//! the example account, key and number the `events/` files name.

use std::path::PathBuf;

use anyhow::{Context, Result};
use aws_config::SdkConfig;
use fake_meta::FakeMeta;
use muchaw_local::moto::sdk_config_for;
use muchaw_local::provision::{Overrides, Stack, random_prefix};
use muchaw_local::{Template, provision};
use muchaw_shared::adapters::dynamo::DynamoStore;

use crate::proxy::{CountingProxy, Upstreams};

/// The key, account and number the `events/` files use, and their seeding.
pub use muchaw_local::examples::{
    EXAMPLE_ACCOUNT_ID, EXAMPLE_API_KEY, EXAMPLE_NUMBER_ID, seed_account, seed_number,
};
pub const SIGNING_KEY: &str = "bench-signup-link-signing-key";
/// The Meta app secret `events/meta-webhook` is signed with.
pub const EVENTS_APP_SECRET: &str = muchaw_local::examples::EXAMPLE_APP_SECRET;
pub const VERIFY_TOKEN: &str = "bench-verify-token";

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from("."))
}

pub fn template() -> Result<Template> {
    Template::load(workspace_root().join("template.yaml"))
}

/// [`Backend::name`] of moto alone.
pub const MOTO: &str = "moto";

/// The AWS emulators a run talks to: moto for everything, or DynamoDB Local for DynamoDB and
/// moto for the rest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    /// For tables: `moto` or `DynamoDB Local`.
    pub name: String,
    pub upstreams: Upstreams,
}

/// An SDK configuration that reaches a backend without being counted, and what keeps it up.
pub struct Direct {
    pub sdk: SdkConfig,
    _router: Option<CountingProxy>,
}

impl Backend {
    pub fn moto(endpoint: &str) -> Backend {
        Backend {
            name: MOTO.into(),
            upstreams: Upstreams::moto(endpoint),
        }
    }

    pub fn dynamodb_local(moto: &str, dynamodb: &str) -> Backend {
        Backend {
            name: "DynamoDB Local".into(),
            upstreams: Upstreams::with_dynamodb(moto, dynamodb),
        }
    }

    pub fn is_dynamodb_local(&self) -> bool {
        self.upstreams.dynamodb.is_some()
    }

    /// moto itself; with DynamoDB Local, a routing proxy whose records nobody reads (one SDK
    /// configuration has one endpoint).
    pub async fn direct(&self) -> Result<Direct> {
        if !self.is_dynamodb_local() {
            return Ok(Direct {
                sdk: sdk_config_for(&self.upstreams.moto).await,
                _router: None,
            });
        }
        let router = CountingProxy::start_routed(self.upstreams.clone()).await?;
        Ok(Direct {
            sdk: sdk_config_for(&router.url()).await,
            _router: Some(router),
        })
    }
}

/// The template's resources on moto under a fresh prefix, Meta pointed at the fake one.
pub async fn stack(template: &Template, sdk: &SdkConfig, meta: &FakeMeta) -> Result<Stack> {
    let overrides = Overrides::local(meta, VERIFY_TOKEN, SIGNING_KEY);
    provision(template, sdk, &random_prefix(), &overrides)
        .await
        .context("creating the template's resources on the emulators")
}

pub fn table_store(stack: &Stack, sdk: &SdkConfig) -> Result<DynamoStore> {
    Ok(DynamoStore::new(
        aws_sdk_dynamodb::Client::new(sdk),
        stack.table("NumbersTable")?,
    ))
}

/// The environment every function binary gets besides the template's.
pub fn lambda_extra(moto_endpoint: &str) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", moto_endpoint),
        ("AWS_REGION", muchaw_local::moto::REGION),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("RETRY_BASE_SECONDS", "1"),
        ("RETRY_SLOW_SECONDS", "5"),
        ("RUST_LOG", "error"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .to_vec()
}
