//! The rustls certificate resolver the TLS listener is built with: the
//! current [`CertStore`], swappable on reload.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::store::{CertStore, CertSummary};

/// Picks each handshake's certificate from the current [`CertStore`].
///
/// A handshake loads the store once, lock-free; [`SniResolver::replace`]
/// publishes a new one for the handshakes that follow. An open connection
/// keeps the certificate it was handshaken with: rustls asks for one only
/// during the handshake.
#[derive(Debug)]
pub struct SniResolver {
    /// `None` only while `[tls.acme]` has not got its first certificate
    /// and none is configured: handshakes fail until one is.
    store: ArcSwapOption<CertStore>,
    /// `[tls.acme]`'s TLS-ALPN-01 certificates, shown to a ClientHello
    /// that asks for `acme-tls/1` alone.
    acme: std::sync::OnceLock<crate::acme::Challenges>,
}

impl SniResolver {
    pub fn new(store: CertStore) -> Self {
        Self {
            store: ArcSwapOption::from_pointee(store),
            acme: std::sync::OnceLock::new(),
        }
    }

    /// A resolver with nothing to serve yet.
    pub fn empty() -> Self {
        Self {
            store: ArcSwapOption::empty(),
            acme: std::sync::OnceLock::new(),
        }
    }

    /// Shows `challenges`' TLS-ALPN-01 certificates to ACME validations.
    pub fn answer_acme(&self, challenges: crate::acme::Challenges) {
        let _ = self.acme.set(challenges);
    }

    /// Serves `store` to every handshake from now on (a reload).
    pub fn replace(&self, store: CertStore) {
        self.store.store(Some(Arc::new(store)));
    }

    /// The certificates being served, for `switchyard status`.
    pub fn summary(&self) -> Vec<CertSummary> {
        self.store
            .load()
            .as_ref()
            .map(|store| store.summary())
            .unwrap_or_default()
    }
}

impl ResolvesServerCert for SniResolver {
    /// Called by rustls once per handshake, after the ClientHello arrived.
    /// `None` (which aborts the handshake) only while there is no
    /// certificate at all: a name without one gets the default, as with
    /// [`CertStore::choose`].
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(challenges) = self.acme.get() {
            // RFC 8737: the validation offers `acme-tls/1` and nothing else.
            let only_acme = client_hello.alpn().is_some_and(|mut offered| {
                offered.next() == Some(super::ACME_TLS_ALPN) && offered.next().is_none()
            });
            if only_acme {
                return challenges.tls_alpn_certificate(client_hello.server_name()?);
            }
        }
        let store = self.store.load();
        Some(store.as_ref()?.choose(client_hello.server_name()))
    }
}

#[cfg(test)]
mod tests {
    //! Real rustls handshakes in memory, against the `ServerConfig` the
    //! listeners use ([`crate::tls::server_config`]).

    use std::io::{Read, Write};
    use std::path::Path;
    use std::sync::Arc;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use rustls::{
        ClientConfig, ClientConnection, ProtocolVersion, ServerConfig, ServerConnection,
        SupportedProtocolVersion,
    };
    use switchyard_conf::CertificateConfig;
    use switchyard_tests::tls::{remembering_verifier, TestCa};

    use super::*;

    fn server_config(resolver: Arc<SniResolver>) -> Arc<ServerConfig> {
        crate::tls::server_config(resolver)
    }

    struct Handshake {
        /// The client's verdict: `Ok` when the handshake completed.
        result: Result<(), rustls::Error>,
        /// The leaf the server presented.
        leaf: Vec<u8>,
        client: ClientConnection,
        server: ServerConnection,
    }

    fn handshake(
        server: &Arc<ServerConfig>,
        roots: &rustls::RootCertStore,
        sni: &str,
        version: &'static SupportedProtocolVersion,
    ) -> Handshake {
        handshake_offering(server, roots, sni, version, &[b"h2", b"http/1.1"])
    }

    fn handshake_offering(
        server: &Arc<ServerConfig>,
        roots: &rustls::RootCertStore,
        sni: &str,
        version: &'static SupportedProtocolVersion,
        alpn: &[&[u8]],
    ) -> Handshake {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (verifier, seen) = remembering_verifier(roots.clone());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let name = ServerName::try_from(sni.to_string()).unwrap();
        let mut client = ClientConnection::new(Arc::new(config), name).unwrap();
        let mut server = ServerConnection::new(server.clone()).unwrap();
        let result = pump(&mut client, &mut server);
        let leaf = seen.lock().unwrap().take().unwrap_or_default();
        Handshake {
            result,
            leaf,
            client,
            server,
        }
    }

    /// Moves TLS records both ways until neither side has any to send.
    /// Returns the first error either side raised while reading.
    fn pump(
        client: &mut ClientConnection,
        server: &mut ServerConnection,
    ) -> Result<(), rustls::Error> {
        loop {
            let mut moved = false;
            while client.wants_write() {
                let mut records = Vec::new();
                client.write_tls(&mut records).unwrap();
                moved = true;
                let mut rest = records.as_slice();
                while !rest.is_empty() {
                    server.read_tls(&mut rest).unwrap();
                    server.process_new_packets()?;
                }
            }
            while server.wants_write() {
                let mut records = Vec::new();
                server.write_tls(&mut records).unwrap();
                moved = true;
                let mut rest = records.as_slice();
                while !rest.is_empty() {
                    client.read_tls(&mut rest).unwrap();
                    client.process_new_packets()?;
                }
            }
            if !moved {
                return Ok(());
            }
        }
    }

    /// `a.test`, `b.test`, `*.wild.test`, in that order: `a.test` is the default.
    struct Fixture {
        _dir: tempfile::TempDir,
        ca: TestCa,
        roots: rustls::RootCertStore,
        a: Vec<u8>,
        b: Vec<u8>,
        wild: Vec<u8>,
        resolver: Arc<SniResolver>,
        server: Arc<ServerConfig>,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new();
        let a = ca.issue(&["a.test"]);
        let b = ca.issue(&["b.test"]);
        let wild = ca.issue(&["*.wild.test"]);
        let store = CertStore::load(&[
            a.write(dir.path(), "a"),
            b.write(dir.path(), "b"),
            wild.write(dir.path(), "wild"),
        ])
        .unwrap();
        let resolver = Arc::new(SniResolver::new(store));
        let server = server_config(resolver.clone());
        Fixture {
            _dir: dir,
            a: a.der().to_vec(),
            b: b.der().to_vec(),
            wild: wild.der().to_vec(),
            roots: ca.roots(),
            ca,
            resolver,
            server,
        }
    }

    #[test]
    fn each_name_gets_its_certificate() {
        let f = fixture();
        for (sni, expected) in [("a.test", &f.a), ("b.test", &f.b), ("B.Test", &f.b)] {
            let hs = handshake(&f.server, &f.roots, sni, &rustls::version::TLS13);
            hs.result.unwrap_or_else(|e| panic!("{sni}: {e}"));
            assert_eq!(&hs.leaf, expected, "{sni}");
            // pingora's enable_h2: h2 preferred, http/1.1 allowed.
            assert_eq!(hs.client.alpn_protocol(), Some(&b"h2"[..]));
            assert_eq!(
                hs.server.server_name(),
                Some(sni.to_ascii_lowercase().as_str())
            );
        }
    }

    #[test]
    fn a_wildcard_covers_one_label() {
        let f = fixture();
        let hs = handshake(&f.server, &f.roots, "x.wild.test", &rustls::version::TLS13);
        hs.result.unwrap();
        assert_eq!(hs.leaf, f.wild);

        // Two labels: no certificate fits, the default is served and the
        // client rightly refuses it.
        let hs = handshake(
            &f.server,
            &f.roots,
            "y.x.wild.test",
            &rustls::version::TLS13,
        );
        assert_eq!(hs.leaf, f.a);
        assert!(hs.result.is_err());
    }

    #[test]
    fn an_unknown_name_gets_the_default_certificate() {
        let f = fixture();
        let hs = handshake(&f.server, &f.roots, "unknown.test", &rustls::version::TLS13);
        assert_eq!(hs.leaf, f.a, "the first certificate of the config");
        let err = hs.result.unwrap_err();
        assert!(
            matches!(err, rustls::Error::InvalidCertificate(_)),
            "the client checks the name: {err:?}"
        );
    }

    #[test]
    fn tls12_and_tls13_clients_both_handshake() {
        let f = fixture();
        for (version, wire) in [
            (&rustls::version::TLS12, ProtocolVersion::TLSv1_2),
            (&rustls::version::TLS13, ProtocolVersion::TLSv1_3),
        ] {
            let hs = handshake(&f.server, &f.roots, "b.test", version);
            hs.result.unwrap_or_else(|e| panic!("{wire:?}: {e}"));
            assert_eq!(hs.leaf, f.b);
            assert_eq!(hs.client.protocol_version(), Some(wire));
        }
    }

    #[test]
    fn replace_serves_new_handshakes_and_leaves_open_connections_alone() {
        let f = fixture();
        let mut open = handshake(&f.server, &f.roots, "a.test", &rustls::version::TLS13);
        open.result.unwrap();
        assert_eq!(open.leaf, f.a);

        let dir = tempfile::tempdir().unwrap();
        let renewed = f.ca.issue(&["a.test"]);
        let store = CertStore::load(&[renewed.write(dir.path(), "renewed")]).unwrap();
        f.resolver.replace(store);

        let hs = handshake(&f.server, &f.roots, "a.test", &rustls::version::TLS13);
        hs.result.unwrap();
        assert_eq!(
            hs.leaf,
            renewed.der(),
            "a new handshake sees the new certificate"
        );
        assert_ne!(hs.leaf, f.a);
        // `b.test` is gone from the new store: the default (now `renewed`) answers.
        let hs = handshake(&f.server, &f.roots, "b.test", &rustls::version::TLS13);
        assert_eq!(hs.leaf, renewed.der());
        assert_eq!(f.resolver.summary().len(), 1);

        // The connection made before the swap still carries data both ways.
        open.client.writer().write_all(b"ping").unwrap();
        pump(&mut open.client, &mut open.server).unwrap();
        let mut got = [0u8; 4];
        open.server.reader().read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        open.server.writer().write_all(b"pong").unwrap();
        pump(&mut open.client, &mut open.server).unwrap();
        open.client.reader().read_exact(&mut got).unwrap();
        assert_eq!(&got, b"pong");
    }

    #[test]
    fn rsa_ecdsa_and_ed25519_keys_in_every_pem_form_handshake() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new();
        let ed = ca.issue_with_key(&["ed.test"], &rcgen::PKCS_ED25519);
        let p384 = ca.issue_with_key(&["p384.test"], &rcgen::PKCS_ECDSA_P384_SHA384);
        // rcgen writes PKCS#8 only and makes no RSA keys with ring: these
        // self-signed OpenSSL files hold an RSA key as PKCS#1 and a P-256
        // key as SEC1 (testdata/README.md).
        let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/tls/testdata");
        let openssl = |stem: &str| CertificateConfig {
            cert: testdata.join(format!("{stem}.pem")),
            key: testdata.join(format!("{stem}.key")),
        };
        let store = CertStore::load(&[
            ed.write(dir.path(), "ed"),
            p384.write(dir.path(), "p384"),
            openssl("rsa-pkcs1"),
            openssl("ec-sec1"),
        ])
        .unwrap();
        let server = server_config(Arc::new(SniResolver::new(store)));

        let mut roots = ca.roots();
        for stem in ["rsa-pkcs1", "ec-sec1"] {
            let pem = std::fs::read(testdata.join(format!("{stem}.pem"))).unwrap();
            roots
                .add(CertificateDer::from_pem_slice(&pem).unwrap())
                .unwrap();
        }
        for sni in ["ed.test", "p384.test", "rsa.test", "ec.test"] {
            for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
                let hs = handshake(&server, &roots, sni, version);
                hs.result
                    .unwrap_or_else(|e| panic!("{sni} {:?}: {e}", version.version));
            }
        }
    }

    #[test]
    fn only_a_hello_asking_for_acme_tls_alone_gets_the_challenge_certificate() {
        let f = fixture();
        let challenges = crate::acme::Challenges::default();
        f.resolver.answer_acme(challenges.clone());
        let validator = f.ca.issue(&["a.test"]);
        let key =
            rustls::pki_types::PrivateKeyDer::from_pem_slice(validator.key_pem.as_bytes()).unwrap();
        let signing = rustls::crypto::ring::sign::any_supported_type(&key).unwrap();
        let cert = rustls::pki_types::CertificateDer::from(validator.der().to_vec());
        challenges.add_tls_alpn("a.test", Arc::new(CertifiedKey::new(vec![cert], signing)));
        let tls13 = &rustls::version::TLS13;

        let acme = handshake_offering(&f.server, &f.roots, "a.test", tls13, &[b"acme-tls/1"]);
        assert!(acme.result.is_ok(), "{:?}", acme.result);
        assert_eq!(acme.leaf, validator.der(), "the challenge certificate");
        assert_eq!(acme.client.alpn_protocol(), Some(&b"acme-tls/1"[..]));

        // A browser that also offers it, or a name with no challenge, gets
        // what is served anyway.
        let mixed = handshake_offering(
            &f.server,
            &f.roots,
            "a.test",
            tls13,
            &[b"h2", b"acme-tls/1"],
        );
        assert_eq!(mixed.leaf, f.a);
        assert_eq!(mixed.client.alpn_protocol(), Some(&b"h2"[..]));
        let other = handshake_offering(&f.server, &f.roots, "b.test", tls13, &[b"acme-tls/1"]);
        assert!(
            other.result.is_err(),
            "no challenge for b.test: no certificate"
        );
        challenges.remove_tls_alpn("a.test");
        let gone = handshake_offering(&f.server, &f.roots, "a.test", tls13, &[b"acme-tls/1"]);
        assert!(gone.result.is_err());
    }
}
