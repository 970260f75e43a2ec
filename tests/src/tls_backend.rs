//! A backend that speaks TLS, for slots with `protocol = "https"`: it
//! answers over HTTP/1.1 or HTTP/2 as ALPN settles it, may ask for a client
//! certificate, and records what each request came with (the protocol, the
//! SNI name, whether a client certificate was shown, the connection).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;

use crate::tls::{Issued, TestCa};

/// What one request arrived with.
#[derive(Debug, Clone)]
pub struct TlsRequest {
    pub path: String,
    pub version: hyper::Version,
    pub sni: Option<String>,
    pub client_certificate: bool,
    /// Numbered in accept order, from 1.
    pub connection: u64,
}

/// Serves on 127.0.0.1 with an ephemeral port. `/health` answers 200
/// `ok`; `/echo-body` returns the request body; `/upgrade` (HTTP/1.1 with
/// `Upgrade: echo`) switches protocols and echoes every byte back;
/// anything else `tls <version> <path>`.
pub struct TlsBackend {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<TlsRequest>>>,
    /// Handshakes that failed (a client that did not trust us, or showed
    /// no certificate when one was required).
    pub failed_handshakes: Arc<AtomicU64>,
}

/// `101` to `Upgrade: echo`, then every byte the client sends comes back.
fn switch_to_echo(req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    tokio::spawn(async move {
        if let Ok(upgraded) = hyper::upgrade::on(req).await {
            let (mut reader, mut writer) = tokio::io::split(TokioIo::new(upgraded));
            let _ = tokio::io::copy(&mut reader, &mut writer).await;
        }
    });
    Response::builder()
        .status(101)
        .header("connection", "upgrade")
        .header("upgrade", "echo")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

impl TlsBackend {
    /// With `issued` as its certificate, offering `alpn`; with
    /// `client_ca`, it requires a client certificate that CA issued.
    pub async fn start(issued: &Issued, alpn: &[&[u8]], client_ca: Option<&TestCa>) -> TlsBackend {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(issued.fullchain_pem().as_bytes())
                .map(Result::unwrap)
                .collect();
        let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            Some(ca) => builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(Arc::new(ca.roots()), provider)
                    .build()
                    .unwrap(),
            ),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(chain, key).unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let failed_handshakes = Arc::new(AtomicU64::new(0));
        let (seen, failed) = (requests.clone(), failed_handshakes.clone());
        tokio::spawn(async move {
            let mut accepted = 0;
            while let Ok((tcp, _)) = listener.accept().await {
                accepted += 1;
                let connection = accepted;
                let (acceptor, seen, failed) = (acceptor.clone(), seen.clone(), failed.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        failed.fetch_add(1, Ordering::SeqCst);
                        return;
                    };
                    let (_, session) = tls.get_ref();
                    let h2 = session.alpn_protocol() == Some(b"h2");
                    let sni = session.server_name().map(str::to_string);
                    let client_certificate = session.peer_certificates().is_some();
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let path = req.uri().path().to_string();
                        seen.lock().unwrap().push(TlsRequest {
                            path: path.clone(),
                            version: req.version(),
                            sni: sni.clone(),
                            client_certificate,
                            connection,
                        });
                        async move {
                            if path == "/upgrade" {
                                return Ok::<_, Infallible>(switch_to_echo(req));
                            }
                            let body = match path.as_str() {
                                "/health" => Bytes::from_static(b"ok"),
                                "/echo-body" => req.into_body().collect().await.unwrap().to_bytes(),
                                _ => Bytes::from(format!("tls {:?} {path}", req.version())),
                            };
                            Ok::<_, Infallible>(Response::new(Full::new(body)))
                        }
                    });
                    let io = TokioIo::new(tls);
                    if h2 {
                        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(io, service)
                            .await;
                    } else {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, service)
                            .with_upgrades()
                            .await;
                    }
                });
            }
        });
        TlsBackend {
            addr,
            requests,
            failed_handshakes,
        }
    }

    /// The requests so far, `/health` probes left out.
    pub fn served(&self) -> Vec<TlsRequest> {
        let requests = self.requests.lock().unwrap();
        requests
            .iter()
            .filter(|r| r.path != "/health")
            .cloned()
            .collect()
    }

    /// The `/health` probes so far.
    pub fn probes(&self) -> Vec<TlsRequest> {
        let requests = self.requests.lock().unwrap();
        requests
            .iter()
            .filter(|r| r.path == "/health")
            .cloned()
            .collect()
    }
}
