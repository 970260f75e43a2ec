//! A throwaway certificate authority for the `tls` tests: rcgen certificates
//! written as the PEM files an operator would configure.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SignatureAlgorithm,
};
use rustls_pki_types::CertificateDer;
use switchyard_conf::CertificateConfig;
use time::OffsetDateTime;

pub(crate) struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate and its key, issued by a [`TestCa`].
pub(crate) struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    /// The CA's certificate, written after the leaf as in a `fullchain.pem`.
    pub ca_pem: String,
    der: CertificateDer<'static>,
}

impl TestCa {
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "switchyard test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    /// A client trust store holding only this CA.
    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        roots
    }

    /// An ECDSA P-256 leaf for `names` (DNS names), valid 1975–4096.
    pub fn issue(&self, names: &[&str]) -> Issued {
        self.issue_params(leaf_params(names), KeyPair::generate().unwrap())
    }

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

    /// Writes `<stem>.pem` (leaf then CA) and `<stem>.key` (PKCS#8) into `dir`.
    pub fn write(&self, dir: &Path, stem: &str) -> CertificateConfig {
        let config = CertificateConfig {
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}.key")),
        };
        std::fs::write(&config.cert, format!("{}{}", self.cert_pem, self.ca_pem)).unwrap();
        std::fs::write(&config.key, &self.key_pem).unwrap();
        config
    }
}
