//! TLS for the tests, end-to-end and the proxy's own unit tests alike: a
//! throwaway CA issuing rcgen certificates as the PEM files an operator
//! configures, and a rustls client that verifies against that CA and
//! remembers which certificate it was shown.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SignatureAlgorithm,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme, SupportedProtocolVersion};
use switchyard_conf::CertificateConfig;
use time::OffsetDateTime;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The leaf certificate (DER) a server showed in the last full handshake.
pub type ShownCert = Arc<Mutex<Option<Vec<u8>>>>;

/// A certificate authority that exists for one test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate and its key, issued by a [`TestCa`].
pub struct Issued {
    /// The leaf alone.
    pub cert_pem: String,
    /// PKCS#8.
    pub key_pem: String,
    /// The issuing CA's certificate.
    pub ca_pem: String,
    der: CertificateDer<'static>,
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCa {
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "switchyard test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        TestCa { issuer }
    }

    /// A client trust store holding only this CA.
    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        roots
    }

    /// An ECDSA P-256 leaf for the DNS `names`.
    pub fn issue(&self, names: &[&str]) -> Issued {
        self.issue_params(leaf_params(names), KeyPair::generate().unwrap())
    }

    /// A leaf valid only from `not_before` to `not_after`.
    pub fn issue_valid(
        &self,
        names: &[&str],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Issued {
        let mut params = leaf_params(names);
        params.not_before = not_before;
        params.not_after = not_after;
        self.issue_params(params, KeyPair::generate().unwrap())
    }

    /// A leaf with a key of the algorithm `alg`.
    pub fn issue_with_key(&self, names: &[&str], alg: &'static SignatureAlgorithm) -> Issued {
        self.issue_params(leaf_params(names), KeyPair::generate_for(alg).unwrap())
    }

    fn issue_params(&self, params: CertificateParams, key: KeyPair) -> Issued {
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            ca_pem: self.issuer.pem(),
            der: cert.der().clone(),
        }
    }

    /// A client config trusting only this CA, offering `alpn` and the TLS
    /// `versions`; the returned slot holds the leaf the server showed.
    pub fn client(
        &self,
        alpn: &[&[u8]],
        versions: &[&'static SupportedProtocolVersion],
    ) -> (Arc<ClientConfig>, ShownCert) {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (verifier, seen) = remembering_verifier(self.roots());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        // Every connection a full handshake: a resumed session shows no
        // certificate, and the tests look at which one was shown.
        config.resumption = rustls::client::Resumption::disabled();
        (Arc::new(config), seen)
    }
}

fn leaf_params(names: &[&str]) -> CertificateParams {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    CertificateParams::new(names).unwrap()
}

impl Issued {
    /// The leaf certificate, DER.
    pub fn der(&self) -> &[u8] {
        self.der.as_ref()
    }

    /// The leaf then the CA, as in a `fullchain.pem`.
    pub fn fullchain_pem(&self) -> String {
        format!("{}{}", self.cert_pem, self.ca_pem)
    }

    /// Writes `<stem>.pem` (the full chain) and `<stem>.key` into `dir`.
    pub fn write(&self, dir: &Path, stem: &str) -> CertificateConfig {
        let config = CertificateConfig {
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}.key")),
        };
        std::fs::write(&config.cert, self.fullchain_pem()).unwrap();
        std::fs::write(&config.key, &self.key_pem).unwrap();
        config
    }
}

/// A verifier that checks as a browser would (against `roots`, for the SNI
/// name) after noting the leaf it was shown, so a test can tell which
/// certificate was chosen even when it does not fit the name.
pub fn remembering_verifier(roots: rustls::RootCertStore) -> (Arc<Remembering>, ShownCert) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .unwrap();
    let seen = ShownCert::default();
    let verifier = Arc::new(Remembering {
        webpki,
        seen: seen.clone(),
    });
    (verifier, seen)
}

/// See [`remembering_verifier`].
#[derive(Debug)]
pub struct Remembering {
    webpki: Arc<WebPkiServerVerifier>,
    seen: ShownCert,
}

impl ServerCertVerifier for Remembering {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().unwrap() = Some(end_entity.to_vec());
        self.webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// A TLS connection to `addr` naming `sni`.
pub async fn connect(
    config: Arc<ClientConfig>,
    addr: SocketAddr,
    sni: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_string())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    TlsConnector::from(config).connect(name, tcp).await
}
