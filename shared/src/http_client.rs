//! The HTTP stack of a process: one client shared by every AWS SDK client, and TLS trust roots
//! read on the first TLS handshake rather than at init.
//!
//! Why not the SDK's default client: it builds a TLS connector for each SDK client as the client
//! is constructed (`validate_base_client_config`, so that the OS trust store is read at init), and
//! a function builds three or four of them (DynamoDB, SQS, Secrets Manager, the STS client of the
//! credentials chain). That read was most of every function's init (one `openat` per file of
//! `/etc/ssl/certs` here, `docs/PERFORMANCE.md`). Here nothing is built until the first request,
//! a plain-HTTP endpoint (the local stack, the emulators of the tests) never builds TLS at all,
//! and an HTTPS endpoint builds it once per process.
//!
//! The reqwest clients (Meta's Graph API, customer webhooks) take [`rustls_config`]: the same
//! rustls and ring as the SDK, with a verifier whose roots are loaded on first use and shared
//! by every reqwest client of the process.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use aws_smithy_async::rt::sleep::SharedAsyncSleep;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_http_client::{Connector, proxy::ProxyConfig};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::shared::IntoShared;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The HTTP client every AWS SDK client of this process uses.
pub fn aws_http_client() -> SharedHttpClient {
    static CLIENT: OnceLock<SharedHttpClient> = OnceLock::new();
    CLIENT
        .get_or_init(|| SchemeRoutedClient::default().into_shared())
        .clone()
}

/// An HTTP client of its own, for AWS SDK clients that live on one of many runtimes a process
/// runs one after another (each test's): pooled connections die with the runtime that made
/// them, so a client shared across runtimes would hand a later one a dead connection.
pub fn aws_http_client_of_its_own() -> SharedHttpClient {
    SchemeRoutedClient::default().into_shared()
}

/// The connectors are cached by their timeouts, as the SDK's own client caches them, so every
/// request with the same settings reuses one connection pool.
#[derive(Debug, Default)]
struct SchemeRoutedClient {
    connectors: RwLock<HashMap<Timeouts, SharedHttpConnector>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Timeouts {
    connect: Option<Duration>,
    read: Option<Duration>,
}

impl From<&HttpConnectorSettings> for Timeouts {
    fn from(settings: &HttpConnectorSettings) -> Timeouts {
        Timeouts {
            connect: settings.connect_timeout(),
            read: settings.read_timeout(),
        }
    }
}

impl HttpClient for SchemeRoutedClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        let key = Timeouts::from(settings);
        if let Some(connector) = self
            .connectors
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return connector.clone();
        }
        self.connectors
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_insert_with(|| {
                SchemeRouted::new(settings.clone(), components.sleep_impl()).into_shared()
            })
            .clone()
    }

    // `validate_base_client_config` keeps its default (nothing built): the SDK's own client
    // builds a TLS connector there, which is what read the trust store at init.

    fn connector_metadata(
        &self,
    ) -> Option<aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata> {
        Some(
            aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata::new(
                "hyper",
                Some(std::borrow::Cow::Borrowed("1.x")),
            ),
        )
    }
}

/// Plain HTTP at once (cheap: a TCP connector), TLS on the first `https` request.
#[derive(Debug)]
struct SchemeRouted {
    settings: HttpConnectorSettings,
    sleep: Option<SharedAsyncSleep>,
    plain: Connector,
    tls: OnceLock<Connector>,
}

impl SchemeRouted {
    fn new(settings: HttpConnectorSettings, sleep: Option<SharedAsyncSleep>) -> SchemeRouted {
        let plain = Self::builder(&settings, &sleep).build_http();
        SchemeRouted {
            settings,
            sleep,
            plain,
            tls: OnceLock::new(),
        }
    }

    /// What the SDK's default client configures: the request's timeouts, the runtime's sleep
    /// (the timeouts need it), and the proxy from the environment.
    fn builder(
        settings: &HttpConnectorSettings,
        sleep: &Option<SharedAsyncSleep>,
    ) -> aws_smithy_http_client::ConnectorBuilder {
        let mut builder = Connector::builder()
            .connector_settings(settings.clone())
            .proxy_config(ProxyConfig::from_env());
        builder.set_sleep_impl(sleep.clone());
        builder
    }

    fn tls(&self) -> &Connector {
        self.tls.get_or_init(|| {
            Self::builder(&self.settings, &self.sleep)
                .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
                .build()
        })
    }
}

impl HttpConnector for SchemeRouted {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        if request.uri().starts_with("https:") {
            self.tls().call(request)
        } else {
            self.plain.call(request)
        }
    }
}

/// Why a reqwest client of this process could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientBuildError {
    #[error("TLS configuration refused")]
    Tls(#[from] rustls::Error),
    #[error("HTTP client not built")]
    Http(#[from] reqwest::Error),
}

/// Every reqwest client of the workspace starts here. reqwest is built without a crypto provider
/// of its own (its default would bring aws-lc back into every zip), so a client built without a
/// preconfigured TLS stack would panic at `build`.
pub fn reqwest_builder() -> Result<reqwest::ClientBuilder, rustls::Error> {
    Ok(reqwest::Client::builder().tls_backend_preconfigured(rustls_config()?))
}

/// The TLS configuration of the process's reqwest clients: ring, the safe default protocol
/// versions, and the OS trust roots read on the first handshake (once per process).
pub fn rustls_config() -> Result<rustls::ClientConfig, rustls::Error> {
    let verifier = lazy_roots_verifier();
    Ok(
        rustls::ClientConfig::builder_with_provider(verifier.provider.clone())
            .with_safe_default_protocol_versions()?
            // Not a weakened check: the verifier is rustls's WebPKI verifier, built on first use.
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth(),
    )
}

fn lazy_roots_verifier() -> Arc<LazyRootsVerifier> {
    static VERIFIER: OnceLock<Arc<LazyRootsVerifier>> = OnceLock::new();
    VERIFIER
        .get_or_init(|| {
            Arc::new(LazyRootsVerifier::new(
                Arc::new(rustls::crypto::ring::default_provider()),
                load_native_roots,
            ))
        })
        .clone()
}

/// The OS trust store (on Lambda, one bundle file).
fn load_native_roots() -> Vec<CertificateDer<'static>> {
    let result = rustls_native_certs::load_native_certs();
    for error in &result.errors {
        tracing::warn!(%error, "a trust root could not be read");
    }
    result.certs
}

/// rustls's WebPKI verifier, its roots loaded by `load` on the first certificate to verify.
pub struct LazyRootsVerifier {
    provider: Arc<CryptoProvider>,
    load: fn() -> Vec<CertificateDer<'static>>,
    inner: OnceLock<Result<Arc<WebPkiServerVerifier>, rustls::Error>>,
}

impl std::fmt::Debug for LazyRootsVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyRootsVerifier")
            .field("roots_loaded", &self.roots_loaded())
            .finish()
    }
}

impl LazyRootsVerifier {
    pub fn new(
        provider: Arc<CryptoProvider>,
        load: fn() -> Vec<CertificateDer<'static>>,
    ) -> LazyRootsVerifier {
        LazyRootsVerifier {
            provider,
            load,
            inner: OnceLock::new(),
        }
    }

    /// Whether the roots have been loaded (by a first handshake).
    pub fn roots_loaded(&self) -> bool {
        self.inner.get().is_some()
    }

    fn verifier(&self) -> Result<&Arc<WebPkiServerVerifier>, rustls::Error> {
        self.inner
            .get_or_init(|| {
                let mut roots = RootCertStore::empty();
                let (_, ignored) = roots.add_parsable_certificates((self.load)());
                if ignored > 0 {
                    tracing::warn!(ignored, "trust roots that do not parse were ignored");
                }
                if roots.is_empty() {
                    return Err(rustls::Error::General("no trust roots found".into()));
                }
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                    .build()
                    .map_err(|error| rustls::Error::General(error.to_string()))
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl ServerCertVerifier for LazyRootsVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verifier()?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    // The signatures are checked with the provider's algorithms; they need no roots.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_roots() -> Vec<CertificateDer<'static>> {
        Vec::new()
    }

    fn verifier_without_roots() -> LazyRootsVerifier {
        LazyRootsVerifier::new(Arc::new(rustls::crypto::ring::default_provider()), no_roots)
    }

    #[test]
    fn the_trust_roots_are_not_read_until_a_certificate_is_verified() {
        // Given a verifier, as every reqwest client of a process is built with
        let verifier = verifier_without_roots();
        // When nothing has been verified yet, then its roots have not been read
        assert!(!verifier.roots_loaded());
        // When a first certificate is verified
        let name = ServerName::try_from("graph.facebook.com").unwrap();
        let outcome = verifier.verify_server_cert(
            &CertificateDer::from(vec![0u8; 8]),
            &[],
            &name,
            &[],
            UnixTime::now(),
        );
        // Then the roots were read, and an empty store refuses rather than trusting anything
        assert!(verifier.roots_loaded());
        assert!(outcome.is_err());
    }

    #[test]
    fn a_reqwest_client_builds_with_the_lazy_tls_configuration() {
        let client = reqwest_builder().unwrap().build();
        assert!(client.is_ok());
    }
}
