//! pebble, the ACME test CA (Debian package `pebble`), with its DNS
//! companion pebble-challtestsrv, started on loopback for one test: names
//! resolve only once the test adds them, validation does not sleep, no
//! nonce is refused and no authorization is reused, so orders are quick
//! and deterministic. Both processes are killed on drop.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::tls::TestCa;

pub struct Pebble {
    /// The ACME directory URL.
    pub directory: String,
    /// PEM: what pebble's own HTTPS is signed by (`ca_roots`).
    pub https_ca_pem: String,
    management: SocketAddr,
    challtestsrv: SocketAddr,
    https_client: Arc<rustls::ClientConfig>,
    processes: Vec<Child>,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in &mut self.processes {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A port free on 127.0.0.1 at the time of the call.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Pebble {
    /// Starts pebble validating HTTP-01 on `http_port` (the proxy's plain
    /// listener) with certificates valid for `validity` (its default, five
    /// years, when `None`); files go in `dir`.
    pub fn start(dir: &Path, http_port: u16, validity: Option<Duration>) -> Pebble {
        Pebble::start_with_tls_port(dir, http_port, free_port(), validity)
    }

    /// As [`Pebble::start`], validating TLS-ALPN-01 on `tls_port` (the
    /// proxy's TLS listener).
    pub fn start_with_tls_port(
        dir: &Path,
        http_port: u16,
        tls_port: u16,
        validity: Option<Duration>,
    ) -> Pebble {
        // Its own ports are picked free and then bound by pebble: another
        // test may take one in between. Such a start fails at once, and is
        // tried again with other ports.
        let mut failures = Vec::new();
        for _ in 0..5 {
            match Pebble::try_start(dir, http_port, tls_port, validity) {
                Ok(pebble) => return pebble,
                Err(why) => failures.push(why),
            }
        }
        panic!("pebble did not start: {failures:#?}");
    }

    fn try_start(
        dir: &Path,
        http_port: u16,
        tls_port: u16,
        validity: Option<Duration>,
    ) -> Result<Pebble, String> {
        for program in ["pebble", "pebble-challtestsrv"] {
            assert!(
                Command::new("sh")
                    .args(["-c", &format!("command -v {program}")])
                    .stdout(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success()),
                "{program} is not installed: `make test` installs the Debian package pebble"
            );
        }
        let ca = TestCa::new();
        let issued = ca.issue(&["localhost", "127.0.0.1"]);
        let (cert, key) = (dir.join("pebble.pem"), dir.join("pebble.key"));
        std::fs::write(&cert, issued.fullchain_pem()).unwrap();
        std::fs::write(&key, &issued.key_pem).unwrap();
        let (acme, management, dns, challtestsrv) =
            (free_port(), free_port(), free_port(), free_port());
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{acme}"),
                "managementListenAddress": format!("127.0.0.1:{management}"),
                "certificate": cert,
                "privateKey": key,
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
                "certificateValidityPeriod": validity.map_or(0, |v| v.as_secs()),
            }
        });
        let config_path = dir.join("pebble-config.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log = |name: &str| std::fs::File::create(dir.join(name)).unwrap();
        let dns_server = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-management", &format!("127.0.0.1:{challtestsrv}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-defaultIPv4", "", "-defaultIPv6", ""])
            .stdout(log("challtestsrv.log"))
            .stderr(log("challtestsrv.err"))
            .spawn()
            .expect("start pebble-challtestsrv");
        let ca_server = Command::new("pebble")
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log("pebble.log"))
            .stderr(log("pebble.err"))
            .spawn()
            .expect("start pebble");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let https_client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(ca.roots())
            .with_no_client_auth();
        let mut pebble = Pebble {
            directory: format!("https://127.0.0.1:{acme}/dir"),
            https_ca_pem: issued.ca_pem.clone(),
            management: ([127, 0, 0, 1], management).into(),
            challtestsrv: ([127, 0, 0, 1], challtestsrv).into(),
            https_client: Arc::new(https_client),
            processes: vec![dns_server, ca_server],
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        for port in [acme, management, challtestsrv] {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                let exited = pebble
                    .processes
                    .iter_mut()
                    .any(|child| child.try_wait().is_ok_and(|status| status.is_some()));
                if exited || Instant::now() > deadline {
                    let err =
                        |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
                    return Err(format!(
                        "not listening on {port}: {}{}",
                        err("pebble.err"),
                        err("challtestsrv.err")
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(pebble)
    }

    /// `host` resolves to 127.0.0.1 for pebble's validation.
    pub async fn add_host(&self, host: &str) {
        let body = serde_json::json!({ "host": host, "addresses": ["127.0.0.1"] });
        self.challtestsrv_post("/add-a", body).await;
    }

    /// `host` no longer resolves for pebble's validation.
    pub async fn remove_host(&self, host: &str) {
        self.challtestsrv_post("/clear-a", serde_json::json!({ "host": host }))
            .await;
    }

    async fn challtestsrv_post(&self, path: &str, body: serde_json::Value) {
        let tcp = tokio::net::TcpStream::connect(self.challtestsrv)
            .await
            .unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(connection);
        let request = hyper::Request::post(path)
            .header("host", self.challtestsrv.to_string())
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        let status = sender.send_request(request).await.unwrap().status();
        assert!(status.is_success(), "challtestsrv {path}: {status}");
    }

    /// pebble's root (made anew at each start): what its certificates
    /// chain to.
    pub async fn root(&self) -> rustls::RootCertStore {
        let tcp = tokio::net::TcpStream::connect(self.management)
            .await
            .unwrap();
        let tls = tokio_rustls::TlsConnector::from(self.https_client.clone())
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(connection);
        let request = hyper::Request::get("/roots/0")
            .header("host", self.management.to_string())
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let pem = response.into_body().collect().await.unwrap().to_bytes();
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert.unwrap()).unwrap();
        }
        assert!(!roots.is_empty(), "pebble gave no root");
        roots
    }
}
