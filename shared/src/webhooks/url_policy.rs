//! Where webhooks may be sent: `https` only, and never to loopback, private, link-local,
//! metadata or otherwise internal addresses, checked on every address a hostname resolves to
//! (when endpoints are created and again before each delivery), unless the deployment allows
//! private targets (`ALLOW_PRIVATE_WEBHOOK_URLS=true`: the local stack and tests).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use url::{Host, Url};

pub const MAX_URL_LENGTH: usize = 2048;
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UrlPolicy {
    pub allow_private: bool,
}

/// Turns a host name into the addresses it stands for: the system's resolver ([`Dns`]) in
/// production; tests that must not depend on a network inject their own.
pub trait Resolver: Send + Sync {
    fn resolve(
        &self,
        name: &str,
        port: u16,
    ) -> impl Future<Output = Result<Vec<IpAddr>, String>> + Send;
}

/// The system's resolver, with a timeout.
#[derive(Clone, Copy, Debug, Default)]
pub struct Dns;

impl Resolver for Dns {
    async fn resolve(&self, name: &str, port: u16) -> Result<Vec<IpAddr>, String> {
        resolve(name, port).await
    }
}

impl UrlPolicy {
    /// The URL, parsed, if webhooks may be delivered to it; otherwise why not, for the caller.
    pub async fn check(&self, raw: &str) -> Result<Url, String> {
        self.check_resolving(raw, &Dns).await
    }

    /// [`UrlPolicy::check`] with host names resolved by `resolver`.
    pub async fn check_resolving<R: Resolver>(
        &self,
        raw: &str,
        resolver: &R,
    ) -> Result<Url, String> {
        if raw.len() > MAX_URL_LENGTH {
            return Err(format!("url must be at most {MAX_URL_LENGTH} characters"));
        }
        let url = Url::parse(raw).map_err(|e| format!("url is not a valid URL: {e}"))?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_private => {}
            _ => return Err("url must use https".into()),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("url must not carry credentials".into());
        }
        if self.allow_private {
            return url
                .host()
                .map(|_| url.clone())
                .ok_or_else(|| "url must have a host".into());
        }
        let port = url.port_or_known_default().unwrap_or(443);
        let addresses: Vec<IpAddr> = match url.host() {
            None => return Err("url must have a host".into()),
            Some(Host::Ipv4(ip)) => vec![IpAddr::V4(ip)],
            Some(Host::Ipv6(ip)) => vec![IpAddr::V6(ip)],
            Some(Host::Domain(name)) => resolver.resolve(name, port).await?,
        };
        if let Some(ip) = addresses.iter().find(|ip| is_internal(**ip)) {
            return Err(format!(
                "url must not point to a loopback, private, link-local or metadata address ({ip})"
            ));
        }
        Ok(url)
    }
}

async fn resolve(name: &str, port: u16) -> Result<Vec<IpAddr>, String> {
    let lookup = tokio::net::lookup_host((name, port));
    let addresses: Vec<IpAddr> = tokio::time::timeout(RESOLVE_TIMEOUT, lookup)
        .await
        .map_err(|_| format!("url host {name} did not resolve in time"))?
        .map_err(|_| format!("url host {name} does not resolve"))?
        .map(|socket| socket.ip())
        .collect();
    if addresses.is_empty() {
        return Err(format!("url host {name} does not resolve"));
    }
    Ok(addresses)
}

/// Addresses no customer endpoint can legitimately have.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => is_internal_v6(v6),
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // 169.254/16, the cloud metadata service among them
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (carrier NAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240 // reserved
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_internal_v4(v4);
    }
    let segments = ip.segments();
    // NAT64 (64:ff9b::/96) reaches the IPv4 address in its last 32 bits.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [.., hi, lo] = segments;
        return is_internal_v4(Ipv4Addr::from(((hi as u32) << 16) | lo as u32));
    }
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (segments[0] & 0xfe00) == 0xfc00 // unique local, AWS's fd00:ec2::254 metadata too
        || (segments[0] & 0xffc0) == 0xfe80 // link-local
        || (segments[0] == 0x2001 && segments[1] == 0x0db8) // documentation
        || segments[..6] == [0, 0, 0, 0, 0, 0] // IPv4-compatible (deprecated)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: UrlPolicy = UrlPolicy {
        allow_private: false,
    };

    #[tokio::test]
    async fn a_public_https_address_is_accepted() {
        assert!(STRICT.check("https://93.184.215.14/hooks").await.is_ok());
        assert!(STRICT.check("https://[2606:4700::1111]/x").await.is_ok());
    }

    #[tokio::test]
    async fn internal_and_non_https_urls_are_refused() {
        for url in [
            "http://93.184.215.14/hooks",
            "ftp://93.184.215.14/",
            "https://127.0.0.1/",
            "https://10.1.2.3/",
            "https://172.16.0.1/",
            "https://192.168.1.1/",
            "https://169.254.169.254/latest/meta-data/",
            "https://100.64.0.1/",
            "https://0.0.0.0/",
            "https://[::1]/",
            "https://[::ffff:127.0.0.1]/",
            "https://[fd00:ec2::254]/",
            "https://[fe80::1]/",
            "https://[64:ff9b::a00:1]/",
            "https://localhost/",
            "https://user:pass@93.184.215.14/",
            "not a url",
        ] {
            assert!(STRICT.check(url).await.is_err(), "{url} was accepted");
        }
    }

    #[tokio::test]
    async fn private_targets_are_allowed_when_the_deployment_says_so() {
        let local = UrlPolicy {
            allow_private: true,
        };
        assert!(local.check("http://127.0.0.1:9000/hooks").await.is_ok());
        assert!(local.check("ftp://127.0.0.1/").await.is_err());
    }
}
