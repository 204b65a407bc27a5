//! The Meta app secret and the webhook verify token, as a warm function sees them: read on
//! first use (not at init), re-read when older than [`MAX_AGE`], and re-read at once (at most every
//! [`MIN_REFRESH`]) when Meta says the secret is wrong or a webhook signature does not match.
//! So a secret put in place after the deploy, or reset by the app's owner, takes effect without
//! a cold start.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

use crate::adapters::secrets::AppSecrets;
use crate::domain::secrets::Secret;
use crate::domain::signup_link::LinkSigner;
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
    /// `None` until the first read (a lazy cache, before its first use).
    secrets: Option<AppSecrets>,
    read_at: Option<Instant>,
}

impl std::fmt::Debug for SecretCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretCache(..)")
    }
}

impl SecretCache {
    /// Secrets that never change (tests, the local stack).
    pub fn fixed(secrets: AppSecrets) -> SecretCache {
        SecretCache::build(Some(secrets), None, MAX_AGE, MIN_REFRESH)
    }

    /// Secrets read through `loader` when first needed (not at init: a cold start makes no
    /// Secrets Manager round trip), then as [`SecretCache::current`] says.
    pub fn lazy(loader: Loader) -> SecretCache {
        SecretCache::build(None, Some(loader), MAX_AGE, MIN_REFRESH)
    }

    /// `secrets` as held now, re-read through `loader` with other ages (tests).
    pub fn with_ages(
        secrets: AppSecrets,
        loader: Loader,
        max_age: Duration,
        min_refresh: Duration,
    ) -> SecretCache {
        SecretCache::build(Some(secrets), Some(loader), max_age, min_refresh)
    }

    fn build(
        secrets: Option<AppSecrets>,
        loader: Option<Loader>,
        max_age: Duration,
        min_refresh: Duration,
    ) -> SecretCache {
        let read_at = secrets.as_ref().map(|_| Instant::now());
        SecretCache {
            inner: Arc::new(Inner {
                loader,
                max_age,
                min_refresh,
                state: Mutex::new(State { secrets, read_at }),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The secrets: read first when none are held yet (an error only then: nothing to fall
    /// back on), re-read when older than the cache's age. A failed re-read keeps the secrets
    /// held (logged); the next call tries again.
    pub async fn current(&self) -> Result<AppSecrets, VaultError> {
        let (held, stale) = {
            let state = self.state();
            let stale = state
                .read_at
                .is_none_or(|at| at.elapsed() >= self.inner.max_age);
            (state.secrets.clone(), stale)
        };
        match held {
            None => self.first_read().await,
            Some(held) if stale => {
                self.reload().await;
                Ok(self.state().secrets.clone().unwrap_or(held))
            }
            Some(held) => Ok(held),
        }
    }

    /// Whether [`SecretCache::current`] would wait on a read now (none held yet, or held too
    /// long): a caller may do independent work while it does.
    pub fn reads_on_next_use(&self) -> bool {
        if self.inner.loader.is_none() {
            return false;
        }
        let state = self.state();
        state.secrets.is_none()
            || state
                .read_at
                .is_none_or(|at| at.elapsed() >= self.inner.max_age)
    }

    async fn first_read(&self) -> Result<AppSecrets, VaultError> {
        let Some(loader) = &self.inner.loader else {
            // Only `fixed` has no loader, and it holds its secrets from the start.
            return Err(VaultError::Unavailable("no secrets to read".into()));
        };
        // Two first requests at once may both read; the first answer stays.
        let secrets = loader().await?;
        let mut state = self.state();
        state.read_at = Some(Instant::now());
        Ok(state.secrets.get_or_insert(secrets).clone())
    }

    /// Re-reads now, unless the last read is younger than the minimum interval. `true` when
    /// the secrets read differ from the ones held (a retry with them may succeed).
    pub async fn refresh(&self) -> bool {
        let recent = self
            .state()
            .read_at
            .is_some_and(|at| at.elapsed() < self.inner.min_refresh);
        if self.inner.loader.is_none() || recent {
            return false;
        }
        self.reload().await
    }

    async fn reload(&self) -> bool {
        let Some(loader) = &self.inner.loader else {
            return false;
        };
        // Stamped first, so concurrent callers do not all read at once.
        self.state().read_at = Some(Instant::now());
        match loader().await {
            Ok(secrets) => {
                let mut state = self.state();
                let changed = state.secrets.as_ref().is_none_or(|held| {
                    held.app_secret != secrets.app_secret
                        || held.webhook_verify_token.expose()
                            != secrets.webhook_verify_token.expose()
                });
                if changed && state.secrets.is_some() {
                    tracing::info!("Meta app secrets changed; the new ones are in use");
                }
                state.secrets = Some(secrets);
                changed
            }
            Err(err) => {
                tracing::error!(error = %crate::telemetry::ErrorChain(&err), "Meta app secrets could not be read again; the ones held stay in use");
                false
            }
        }
    }
}

/// Reads the signup links' signing key from where it is kept.
pub type KeyLoader = Arc<dyn Fn() -> BoxFuture<'static, Result<Secret, VaultError>> + Send + Sync>;

/// The signup links' signer, its key read from Secrets Manager on the first link issued or
/// checked (not at init: no round trip in a cold start), then kept while the function is warm
/// (the key changes only with a deploy). A failed read is not kept: the next request reads again.
#[derive(Clone)]
pub struct LinkKeys {
    loader: Option<KeyLoader>,
    signer: Arc<tokio::sync::OnceCell<LinkSigner>>,
}

impl std::fmt::Debug for LinkKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkKeys")
            .field("read", &self.signer.initialized())
            .finish()
    }
}

/// The signing key could not be read.
#[derive(Debug, thiserror::Error)]
#[error("the signup links' signing key is unavailable")]
pub struct KeyUnavailable(#[source] pub VaultError);

impl LinkKeys {
    /// A key read through `loader` on first use.
    pub fn lazy(loader: KeyLoader) -> LinkKeys {
        LinkKeys {
            loader: Some(loader),
            signer: Arc::new(tokio::sync::OnceCell::new()),
        }
    }

    /// Whether the key has been read.
    pub fn is_read(&self) -> bool {
        self.signer.initialized()
    }

    pub async fn signer(&self) -> Result<&LinkSigner, KeyUnavailable> {
        self.signer
            .get_or_try_init(|| async {
                match &self.loader {
                    Some(loader) => loader().await.map(LinkSigner::new).map_err(KeyUnavailable),
                    // Built `From<LinkSigner>`, whose cell is never empty.
                    None => Err(KeyUnavailable(VaultError::Unavailable(
                        "no key source".into(),
                    ))),
                }
            })
            .await
    }
}

/// A signer whose key is already known (tests, the local stack).
impl From<LinkSigner> for LinkKeys {
    fn from(signer: LinkSigner) -> LinkKeys {
        LinkKeys {
            loader: None,
            signer: Arc::new(tokio::sync::OnceCell::new_with(Some(signer))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::secrets::{AppSecret, Secret};

    fn secrets(app_secret: &str) -> AppSecrets {
        AppSecrets {
            app_secret: AppSecret::new(app_secret),
            webhook_verify_token: Secret::new("verify"),
        }
    }

    /// The app secret held, `None` for a placeholder.
    fn app_secret(secrets: AppSecrets) -> Option<String> {
        secrets.app_secret.issued().map(|s| s.expose().to_string())
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
        assert_eq!(
            app_secret(cache.current().await.unwrap()),
            None,
            "the template's placeholder is held as none"
        );

        assert!(cache.refresh().await);
        assert_eq!(
            app_secret(cache.current().await.unwrap()).as_deref(),
            Some("real")
        );
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
        assert_eq!(
            app_secret(cache.current().await.unwrap()).as_deref(),
            Some("b")
        );
    }

    #[tokio::test]
    async fn fixed_secrets_are_never_read_again() {
        let cache = SecretCache::fixed(secrets("a"));
        assert!(!cache.refresh().await);
        assert_eq!(
            app_secret(cache.current().await.unwrap()).as_deref(),
            Some("a")
        );
    }

    #[tokio::test]
    async fn a_lazy_cache_reads_nothing_until_the_secrets_are_first_needed() {
        // Given a lazy cache, as a function builds it at init
        let stored = Arc::new(Mutex::new("s".to_string()));
        let reads = Arc::new(Mutex::new(0));
        let cache = SecretCache::lazy(loader(stored, reads.clone()));
        // Then init made no read
        assert_eq!(*reads.lock().unwrap(), 0);
        // When the secrets are first needed, twice
        assert_eq!(
            app_secret(cache.current().await.unwrap()).as_deref(),
            Some("s")
        );
        assert_eq!(
            app_secret(cache.current().await.unwrap()).as_deref(),
            Some("s")
        );
        // Then they were read once
        assert_eq!(*reads.lock().unwrap(), 1);
    }

    #[tokio::test]
    async fn a_cache_says_when_its_next_use_waits_on_a_read() {
        let stored = Arc::new(Mutex::new("s".to_string()));
        let reads = Arc::new(Mutex::new(0));
        let lazy = SecretCache::lazy(loader(stored.clone(), reads.clone()));
        assert!(lazy.reads_on_next_use(), "nothing held yet");
        lazy.current().await.unwrap();
        assert!(!lazy.reads_on_next_use(), "held and fresh");
        let aged = SecretCache::with_ages(
            secrets("a"),
            loader(stored, reads),
            Duration::ZERO,
            Duration::from_secs(60),
        );
        assert!(aged.reads_on_next_use(), "held too long");
        assert!(
            !SecretCache::fixed(secrets("a")).reads_on_next_use(),
            "never read"
        );
    }

    #[tokio::test]
    async fn a_failed_first_read_is_an_error_and_the_next_use_reads_again() {
        let fail = Arc::new(Mutex::new(true));
        let flag = fail.clone();
        let cache = SecretCache::lazy(Arc::new(move || {
            let fail = *flag.lock().unwrap();
            Box::pin(async move {
                if fail {
                    Err(VaultError::Unavailable("down".into()))
                } else {
                    Ok(secrets("s"))
                }
            })
        }));
        assert!(cache.current().await.is_err());
        *fail.lock().unwrap() = false;
        assert_eq!(
            app_secret(cache.current().await.unwrap()).as_deref(),
            Some("s")
        );
    }

    #[tokio::test]
    async fn the_link_signing_key_is_read_on_first_use_and_kept() {
        // Given link keys read through a counting loader that fails once
        let reads = Arc::new(Mutex::new(0));
        let counter = reads.clone();
        let keys = LinkKeys::lazy(Arc::new(move || {
            let counter = counter.clone();
            Box::pin(async move {
                let mut reads = counter.lock().unwrap();
                *reads += 1;
                if *reads == 1 {
                    Err(VaultError::Unavailable("down".into()))
                } else {
                    Ok(Secret::new("k".repeat(32)))
                }
            })
        }));
        // Then nothing is read at init
        assert!(!keys.is_read());
        // When the first use fails, the next one reads again, and later ones keep the key
        assert!(keys.signer().await.is_err());
        let signer = keys.signer().await.unwrap().clone();
        let issued = signer.issue(
            &crate::domain::ids::AccountId::from("acct".to_string()),
            crate::domain::time::now(),
        );
        let again = keys.signer().await.unwrap();
        assert!(
            again
                .verify(&issued.state, crate::domain::time::now())
                .is_ok()
        );
        assert_eq!(*reads.lock().unwrap(), 2);
    }

    #[test]
    fn the_production_ages_are_five_minutes_and_a_few_seconds() {
        assert_eq!(MAX_AGE, Duration::from_secs(300));
        assert!(MIN_REFRESH <= Duration::from_secs(10));
    }
}
