//! The DNS resolver every webhook connection uses. It drops the internal addresses a name
//! resolves to ([`is_internal`], the URL policy's own test), so the address a connection opens
//! is always one the policy accepts: a name that answered with a public address when it was
//! checked and with `127.0.0.1` or `169.254.169.254` a moment later (DNS rebinding) cannot reach
//! the internal one. Endpoint creation checks names through the same resolver.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::url_policy::is_internal;

pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// The addresses a name resolves to, as a future.
pub type Lookup<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send + 'a>>;

/// Where names get their addresses: the system resolver in production, a scripted one in tests.
pub trait NameLookup: Send + Sync {
    fn lookup<'a>(&'a self, host: &'a str) -> Lookup<'a>;
}

/// The operating system's resolver (`getaddrinfo`, through tokio).
pub struct SystemLookup;

impl NameLookup for SystemLookup {
    fn lookup<'a>(&'a self, host: &'a str) -> Lookup<'a> {
        Box::pin(async move {
            let addresses = tokio::net::lookup_host((host, 0)).await?;
            Ok(addresses.map(|socket| socket.ip()).collect())
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("url host {host} does not resolve")]
    NotFound {
        host: String,
        #[source]
        source: io::Error,
    },
    #[error("url host {host} did not resolve in time")]
    Timeout { host: String },
    #[error("url host {host} resolves only to internal addresses")]
    OnlyInternal { host: String },
}

/// A resolver that never hands an internal address to a connection, unless the deployment
/// allows private targets (`ALLOW_PRIVATE_WEBHOOK_URLS=true`).
#[derive(Clone)]
pub struct GuardedResolver {
    lookup: Arc<dyn NameLookup>,
    allow_private: bool,
}

impl GuardedResolver {
    pub fn system(allow_private: bool) -> GuardedResolver {
        GuardedResolver::new(Arc::new(SystemLookup), allow_private)
    }

    pub fn new(lookup: Arc<dyn NameLookup>, allow_private: bool) -> GuardedResolver {
        GuardedResolver {
            lookup,
            allow_private,
        }
    }

    pub fn allows_private(&self) -> bool {
        self.allow_private
    }

    /// Every address the name resolves to, internal ones included (at least one).
    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, ResolveError> {
        let found = tokio::time::timeout(RESOLVE_TIMEOUT, self.lookup.lookup(host))
            .await
            .map_err(|_| ResolveError::Timeout { host: host.into() })?
            .map_err(|source| ResolveError::NotFound {
                host: host.into(),
                source,
            })?;
        if found.is_empty() {
            return Err(ResolveError::NotFound {
                host: host.into(),
                source: io::Error::new(io::ErrorKind::NotFound, "no addresses"),
            });
        }
        Ok(found)
    }

    /// The addresses a connection may open: the public ones (all, when private targets are
    /// allowed); an error when none is left.
    pub async fn connectable(&self, host: &str) -> Result<Vec<IpAddr>, ResolveError> {
        let found = self.addresses(host).await?;
        if self.allow_private {
            return Ok(found);
        }
        let public: Vec<IpAddr> = found.into_iter().filter(|ip| !is_internal(*ip)).collect();
        if public.is_empty() {
            return Err(ResolveError::OnlyInternal { host: host.into() });
        }
        Ok(public)
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let resolver = self.clone();
        Box::pin(async move {
            let public = resolver.connectable(name.as_str()).await?;
            // Port 0: the connector puts in the URL's port.
            let addrs: Addrs = Box::new(public.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// A [`ResolveError`] somewhere in an error's chain (a refused connection names it).
pub fn find_resolve_error<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a ResolveError> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<ResolveError>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Vec<IpAddr>);

    impl NameLookup for Fixed {
        fn lookup<'a>(&'a self, _host: &'a str) -> Lookup<'a> {
            let found = self.0.clone();
            Box::pin(async move { Ok(found) })
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn resolver(answers: &[&str], allow_private: bool) -> GuardedResolver {
        GuardedResolver::new(
            Arc::new(Fixed(answers.iter().map(|a| ip(a)).collect())),
            allow_private,
        )
    }

    #[tokio::test]
    async fn a_connection_gets_only_the_public_addresses_of_a_mixed_answer() {
        // Given a name answering with a public, a loopback and a metadata address
        let mixed = resolver(&["93.184.215.14", "127.0.0.1", "169.254.169.254"], false);
        // When a connection resolves it
        let connectable = mixed.connectable("mixed.example").await.unwrap();
        // Then only the public address is offered
        assert_eq!(connectable, vec![ip("93.184.215.14")]);
    }

    #[tokio::test]
    async fn a_name_with_only_internal_addresses_is_refused_with_that_reason() {
        let internal = resolver(&["127.0.0.1", "169.254.169.254", "::1"], false);
        let err = internal.connectable("rebind.example").await.unwrap_err();
        assert!(matches!(err, ResolveError::OnlyInternal { .. }));
        assert_eq!(
            err.to_string(),
            "url host rebind.example resolves only to internal addresses"
        );
    }

    #[tokio::test]
    async fn private_targets_pass_when_the_deployment_allows_them() {
        let local = resolver(&["127.0.0.1"], true);
        assert_eq!(
            local.connectable("localhost").await.unwrap(),
            vec![ip("127.0.0.1")]
        );
    }

    #[tokio::test]
    async fn a_name_without_addresses_does_not_resolve() {
        let nothing = resolver(&[], false);
        assert!(matches!(
            nothing.connectable("nowhere.example").await,
            Err(ResolveError::NotFound { .. })
        ));
    }

    #[test]
    fn the_refusal_is_found_in_an_error_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("connect failed")]
        struct Outer(#[source] ResolveError);
        let outer = Outer(ResolveError::OnlyInternal { host: "h".into() });
        assert!(matches!(
            find_resolve_error(&outer),
            Some(ResolveError::OnlyInternal { .. })
        ));
        let plain = io::Error::other("refused");
        assert!(find_resolve_error(&plain).is_none());
    }
}
