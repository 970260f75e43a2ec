//! TLS clients switchyard opens connections with: to `https://` webhooks,
//! and to the backends of `protocol = "https"` slots (requests and
//! probes). Each trusts a configured `ca` or else the system's roots.

use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use switchyard_conf::BackendTlsConfig;

/// The certificates in `ca`, or the system's trusted roots.
pub(crate) fn roots(ca: Option<&[u8]>) -> Result<Arc<rustls::RootCertStore>, String> {
    let Some(pem) = ca else {
        return system_roots();
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("`ca`: {e}"))?;
        roots.add(cert).map_err(|e| format!("`ca`: {e}"))?;
    }
    Ok(Arc::new(roots))
}

/// The system's trusted roots (`/etc/ssl/certs`, or `SSL_CERT_FILE`),
/// read once and kept.
fn system_roots() -> Result<Arc<rustls::RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<rustls::RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let certs = rustls_native_certs::load_native_certs()
                .map_err(|e| format!("cannot read the system's trusted certificates: {e}"))?;
            let mut roots = rustls::RootCertStore::empty();
            let (added, _unusable) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err("the system has no trusted certificates to check a TLS server against (install ca-certificates, or set `ca`)".to_string());
            }
            Ok(Arc::new(roots))
        })
        .clone()
}

fn builder() -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())
}

/// A client for one HTTP/1.1 request (webhooks).
pub(crate) fn http1_client(ca: Option<&[u8]>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut config = builder()?
        .with_root_certificates(roots(ca)?)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// How switchyard speaks TLS to one `protocol = "https"` slot's backends.
/// Built when a config is applied and kept while the slot's settings stay
/// the same, so TLS sessions are resumed across publishes.
#[derive(Debug)]
pub struct BackendTls {
    /// Offers h2 and http/1.1: the backend's choice decides.
    pub client: Arc<rustls::ClientConfig>,
    /// Offers http/1.1 only: for upgrades (WebSocket), which HTTP/2 does
    /// not carry.
    pub http1_client: Arc<rustls::ClientConfig>,
    /// What it was built from.
    pub source: BackendTlsConfig,
}

impl BackendTls {
    /// The client for `source`, and what went wrong building it. The config
    /// was checked when it was read, so what can still go wrong is the
    /// system's roots having gone missing since: the client is then built
    /// without them (every handshake fails, and each 502 says why) rather
    /// than leaving the slot without TLS.
    pub fn new(source: &BackendTlsConfig) -> (BackendTls, Option<String>) {
        match BackendTls::build(source, None) {
            Ok(tls) => (tls, None),
            Err(problem) => {
                let empty = Arc::new(rustls::RootCertStore::empty());
                let tls = BackendTls::build(source, Some(empty.clone()))
                    .or_else(|_| {
                        let without_identity = BackendTlsConfig {
                            client_identity: None,
                            ..source.clone()
                        };
                        BackendTls::build(&without_identity, Some(empty))
                    })
                    .expect("a client with no roots and no identity always builds");
                (
                    BackendTls {
                        source: source.clone(),
                        ..tls
                    },
                    Some(problem),
                )
            }
        }
    }

    fn build(
        source: &BackendTlsConfig,
        roots_override: Option<Arc<rustls::RootCertStore>>,
    ) -> Result<BackendTls, String> {
        let roots = match roots_override {
            Some(roots) => roots,
            None => roots(source.ca.as_deref())?,
        };
        let with_roots = builder()?.with_root_certificates(roots);
        let mut client = match &source.client_identity {
            None => with_roots.with_no_client_auth(),
            Some(identity) => {
                let chain: Vec<CertificateDer<'static>> =
                    CertificateDer::pem_slice_iter(&identity.cert_chain)
                        .collect::<Result<_, _>>()
                        .map_err(|e| format!("`client_cert`: {e}"))?;
                let key = PrivateKeyDer::from_pem_slice(&identity.key)
                    .map_err(|e| format!("`client_key`: {e}"))?;
                with_roots
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("`client_cert` and `client_key`: {e}"))?
            }
        };
        let mut http1_client = client.clone();
        client.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        http1_client.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(BackendTls {
            client: Arc::new(client),
            http1_client: Arc::new(http1_client),
            source: source.clone(),
        })
    }

    /// The name sent as SNI and checked in the backend's certificate:
    /// `tls_server_name`, else the backend's `host` (an IP address is
    /// checked against the certificate's IP addresses, and sends no SNI).
    pub fn server_name<'a>(&'a self, host: &'a str) -> &'a str {
        self.source.server_name.as_deref().unwrap_or(host)
    }
}
