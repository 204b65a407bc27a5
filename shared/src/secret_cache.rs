//! The Meta app secret and the webhook verify token, as a warm function sees them: read at
//! start, re-read when older than [`MAX_AGE`], and re-read at once (at most every
//! [`MIN_REFRESH`]) when Meta says the secret is wrong or a webhook signature does not match.
//! So a secret put in place after the deploy, or reset by the app's owner, takes effect without
//! a cold start.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

use crate::adapters::secrets::AppSecrets;
use crate::ports::VaultError;

/// The longest a read secret is used before it is read again.
pub const MAX_AGE: Duration = Duration::from_secs(5 * 60);
/// The shortest time between two reads asked for by a mismatch (a flood of forged webhooks
/// must not become a flood of Secrets Manager calls).
pub const MIN_REFRESH: Duration = Duration::from_secs(5);

/// Reads the secrets from where they are kept.
pub type Loader = Arc<dyn Fn() -> BoxFuture<'static, Result<AppSecrets, VaultError>> + Send + Sync>;

#[derive(Clone)]
pub struct SecretCache {
    inner: Arc<Inner>,
}

struct Inner {
    loader: Option<Loader>,
    max_age: Duration,
    min_refresh: Duration,
    state: Mutex<State>,
}

struct State {
    secrets: AppSecrets,
    read_at: Instant,
}

impl std::fmt::Debug for SecretCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretCache(..)")
    }
}

impl SecretCache {
    /// Secrets that never change (tests, the local stack).
    pub fn fixed(secrets: AppSecrets) -> SecretCache {
        SecretCache::build(secrets, None, MAX_AGE, MIN_REFRESH)
    }

    /// `secrets` as read at start, re-read through `loader`.
    pub fn new(secrets: AppSecrets, loader: Loader) -> SecretCache {
        SecretCache::build(secrets, Some(loader), MAX_AGE, MIN_REFRESH)
    }

    /// As [`SecretCache::new`], with other ages (tests).
    pub fn with_ages(
        secrets: AppSecrets,
        loader: Loader,
        max_age: Duration,
        min_refresh: Duration,
    ) -> SecretCache {
        SecretCache::build(secrets, Some(loader), max_age, min_refresh)
    }

    fn build(
        secrets: AppSecrets,
        loader: Option<Loader>,
        max_age: Duration,
        min_refresh: Duration,
    ) -> SecretCache {
        SecretCache {
            inner: Arc::new(Inner {
                loader,
                max_age,
                min_refresh,
                state: Mutex::new(State {
                    secrets,
                    read_at: Instant::now(),
                }),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The secrets, re-read first when older than the cache's age. A failed read keeps the
    /// secrets held (logged); the next call tries again.
    pub async fn current(&self) -> AppSecrets {
        let stale = self.state().read_at.elapsed() >= self.inner.max_age;
        if stale {
            self.reload().await;
        }
        self.state().secrets.clone()
    }

    /// Re-reads now, unless the last read is younger than the minimum interval. `true` when
    /// the secrets read differ from the ones held (a retry with them may succeed).
    pub async fn refresh(&self) -> bool {
        if self.inner.loader.is_none() || self.state().read_at.elapsed() < self.inner.min_refresh {
            return false;
        }
        self.reload().await
    }

    async fn reload(&self) -> bool {
        let Some(loader) = &self.inner.loader else {
            return false;
        };
        // Stamped first, so concurrent callers do not all read at once.
        self.state().read_at = Instant::now();
        match loader().await {
            Ok(secrets) => {
                let mut state = self.state();
                let changed = state.secrets.app_secret.expose() != secrets.app_secret.expose()
                    || state.secrets.webhook_verify_token.expose()
                        != secrets.webhook_verify_token.expose();
                if changed {
                    tracing::info!("Meta app secrets changed; the new ones are in use");
                }
                state.secrets = secrets;
                changed
            }
            Err(err) => {
                tracing::error!(error = %crate::telemetry::ErrorChain(&err), "Meta app secrets could not be read again; the ones held stay in use");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::secrets::Secret;

    fn secrets(app_secret: &str) -> AppSecrets {
        AppSecrets {
            app_secret: Secret::new(app_secret),
            webhook_verify_token: Secret::new("verify"),
        }
    }

    /// A loader reading whatever `stored` holds, counting its reads.
    fn loader(stored: Arc<Mutex<String>>, reads: Arc<Mutex<usize>>) -> Loader {
        Arc::new(move || {
            let stored = stored.clone();
            let reads = reads.clone();
            Box::pin(async move {
                *reads.lock().unwrap() += 1;
                Ok(secrets(&stored.lock().unwrap()))
            })
        })
    }

    #[tokio::test]
    async fn a_changed_secret_is_seen_on_refresh_and_refreshes_are_spaced() {
        let stored = Arc::new(Mutex::new("change-me".to_string()));
        let reads = Arc::new(Mutex::new(0));
        let cache = SecretCache::with_ages(
            secrets("change-me"),
            loader(stored.clone(), reads.clone()),
            Duration::from_secs(300),
            Duration::ZERO,
        );
        *stored.lock().unwrap() = "real".into();
        assert_eq!(cache.current().await.app_secret.expose(), "change-me");

        assert!(cache.refresh().await);
        assert_eq!(cache.current().await.app_secret.expose(), "real");
        assert!(!cache.refresh().await, "nothing changed this time");
        assert_eq!(*reads.lock().unwrap(), 2);
    }

    #[tokio::test]
    async fn refreshes_within_the_minimum_interval_do_not_read() {
        let stored = Arc::new(Mutex::new("a".to_string()));
        let reads = Arc::new(Mutex::new(0));
        let cache = SecretCache::with_ages(
            secrets("a"),
            loader(stored.clone(), reads.clone()),
            Duration::from_secs(300),
            Duration::from_secs(60),
        );
        *stored.lock().unwrap() = "b".into();
        for _ in 0..10 {
            assert!(!cache.refresh().await);
        }
        assert_eq!(*reads.lock().unwrap(), 0);
    }

    #[tokio::test]
    async fn a_secret_older_than_the_age_is_read_again() {
        let stored = Arc::new(Mutex::new("a".to_string()));
        let reads = Arc::new(Mutex::new(0));
        let cache = SecretCache::with_ages(
            secrets("a"),
            loader(stored.clone(), reads.clone()),
            Duration::ZERO,
            Duration::from_secs(60),
        );
        *stored.lock().unwrap() = "b".into();
        assert_eq!(cache.current().await.app_secret.expose(), "b");
    }

    #[tokio::test]
    async fn fixed_secrets_are_never_read_again() {
        let cache = SecretCache::fixed(secrets("a"));
        assert!(!cache.refresh().await);
        assert_eq!(cache.current().await.app_secret.expose(), "a");
    }

    #[test]
    fn the_production_ages_are_five_minutes_and_a_few_seconds() {
        assert_eq!(MAX_AGE, Duration::from_secs(300));
        assert!(MIN_REFRESH <= Duration::from_secs(10));
    }
}
