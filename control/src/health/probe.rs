//! Active probes: one check of one backend, over a fresh connection of its
//! own (never the proxy's pool, so a probe sees what a new client would).
//! An HTTP probe sends `GET path` with the route's Host and judges the
//! status; a route without `[route.health]` gets a TCP connect probe.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use switchyard_conf::{BodyExpectation, HealthConfig, RouteConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::body::{judge_body, MAX_PROBE_BODY};
use super::{Check, Failure, Thresholds};
use crate::tls_client::BackendTls;

/// Defaults for a route without `[route.health]`: a TCP connect every
/// second, 1 s to connect, healthy after 2 and unhealthy after 3 in a row
/// (the same numbers as `[route.health]`'s defaults).
pub const TCP_INTERVAL: Duration = Duration::from_secs(1);
pub const TCP_TIMEOUT: Duration = Duration::from_secs(1);
pub const TCP_THRESHOLDS: Thresholds = Thresholds { rise: 2, fall: 3 };

/// How one route's backends are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    pub kind: ProbeKind,
    pub interval: Duration,
    pub timeout: Duration,
    pub thresholds: Thresholds,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeKind {
    Http {
        path: String,
        /// `None`: the backend's address.
        host: Option<String>,
        /// Inclusive.
        expect: (u16, u16),
        /// The backend speaks HTTP/2 without TLS (its slot's `protocol =
        /// "h2c"`): the probe does too.
        h2c: bool,
        /// What the body must say too.
        expect_body: Option<BodyExpectation>,
        /// The backend speaks TLS (its slot's `protocol = "https"`): the
        /// probe does too, checked and offering what requests offer, and
        /// speaks HTTP/2 when the backend picks it.
        tls: Option<ProbeTls>,
    },
    Tcp,
}

/// A slot's TLS client, compared by what it was built from.
#[derive(Debug, Clone)]
pub struct ProbeTls(pub Arc<BackendTls>);

impl PartialEq for ProbeTls {
    fn eq(&self, other: &ProbeTls) -> bool {
        self.0.source == other.0.source
    }
}

impl Eq for ProbeTls {}

impl ProbeSpec {
    pub fn for_route(route: &RouteConfig) -> ProbeSpec {
        match &route.health {
            Some(HealthConfig {
                path,
                host,
                interval,
                timeout,
                rise,
                fall,
                expect_status,
                expect_body,
            }) => ProbeSpec {
                kind: ProbeKind::Http {
                    path: path.clone(),
                    host: host.clone(),
                    expect: *expect_status,
                    h2c: false,
                    expect_body: expect_body.clone(),
                    tls: None,
                },
                interval: *interval,
                timeout: *timeout,
                thresholds: Thresholds {
                    rise: *rise,
                    fall: *fall,
                },
            },
            None => ProbeSpec {
                kind: ProbeKind::Tcp,
                interval: TCP_INTERVAL,
                timeout: TCP_TIMEOUT,
                thresholds: TCP_THRESHOLDS,
            },
        }
    }

    /// The spec for the backends of `slot` of `route`: HTTP probes speak
    /// the slot's protocol.
    pub fn for_slot(route: &RouteConfig, slot: &str) -> ProbeSpec {
        let mut spec = ProbeSpec::for_route(route);
        if let ProbeKind::Http { h2c, tls, .. } = &mut spec.kind {
            *h2c = route.h2c_slots.contains(slot);
            *tls = route
                .https_slots
                .get(slot)
                .map(|config| ProbeTls(Arc::new(BackendTls::new(config).0)));
        }
        spec
    }
}

/// Checks `backend` once; never takes longer than the spec's timeout.
pub async fn probe(spec: &ProbeSpec, backend: SocketAddr) -> Check {
    let started = Instant::now();
    let outcome = tokio::time::timeout(spec.timeout, attempt(&spec.kind, backend)).await;
    let latency = started.elapsed();
    match outcome {
        Err(_) => Check::Fail {
            failure: Failure::Timeout,
            latency,
        },
        Ok(Err(failure)) => Check::Fail { failure, latency },
        Ok(Ok(status)) => Check::Pass { status, latency },
    }
}

/// The probe itself: `Ok(status)` on a pass (`None` for TCP).
async fn attempt(kind: &ProbeKind, backend: SocketAddr) -> Result<Option<u16>, Failure> {
    let stream = TcpStream::connect(backend)
        .await
        .map_err(|e| Failure::Connect(e.to_string()))?;
    let (path, host, expect, h2c, expect_body, tls) = match kind {
        ProbeKind::Tcp => return Ok(None),
        ProbeKind::Http {
            path,
            host,
            expect,
            h2c,
            expect_body,
            tls,
        } => (path, host, expect, *h2c, expect_body, tls),
    };
    let _ = stream.set_nodelay(true);
    let host = host.clone().unwrap_or_else(|| backend.to_string());
    let result = match tls {
        Some(ProbeTls(tls)) => {
            let ip = backend.ip().to_string();
            let stream = tls_handshake(tls, tls.server_name(&ip), stream).await?;
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            if h2 {
                send_h2(stream, &format!("https://{host}{path}")).await?
            } else {
                send_http1(stream, &host, path).await?
            }
        }
        None if h2c => send_h2(stream, &format!("http://{host}{path}")).await?,
        None => send_http1(stream, &host, path).await?,
    };
    let response = result.map_err(|e| {
        if e.is_incomplete_message() || e.is_canceled() {
            Failure::Connect(e.to_string())
        } else {
            Failure::Protocol(e.to_string())
        }
    })?;
    let status = response.status().as_u16();
    if !(expect.0..=expect.1).contains(&status) {
        return Err(Failure::Status(status));
    }
    if let Some(expect_body) = expect_body {
        let body = read_body(response.into_body()).await?;
        judge_body(expect_body, &body).map_err(Failure::Body)?;
    }
    Ok(Some(status))
}

/// TLS as the slot's requests speak it; a certificate the slot does not
/// accept fails the probe as a failed connect would.
async fn tls_handshake(
    tls: &BackendTls,
    server_name: &str,
    stream: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Failure> {
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string())
        .map_err(|e| Failure::Connect(format!("TLS server name {server_name:?}: {e}")))?;
    tokio_rustls::TlsConnector::from(tls.client.clone())
        .connect(name, stream)
        .await
        .map_err(|e| Failure::Connect(format!("TLS handshake: {e}")))
}

/// The body, up to [`MAX_PROBE_BODY`] bytes.
async fn read_body(mut body: hyper::body::Incoming) -> Result<Vec<u8>, Failure> {
    let mut bytes = Vec::new();
    while bytes.len() < MAX_PROBE_BODY {
        let Some(frame) = body.frame().await else {
            break;
        };
        let frame = frame.map_err(|e| Failure::Protocol(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            bytes.extend_from_slice(&data);
        }
    }
    bytes.truncate(MAX_PROBE_BODY);
    Ok(bytes)
}

/// One GET on an HTTP/1.1 connection that closes after it.
async fn send_http1<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    host: &str,
    path: &str,
) -> Result<hyper::Result<hyper::Response<hyper::body::Incoming>>, Failure> {
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Failure::Protocol(e.to_string()))?;
    // The connection task ends with the probe, also when it times out:
    // the socket must not outlive the probe's place among those in flight.
    let _driver = AbortOnDrop(tokio::spawn(connection));
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::USER_AGENT, "switchyard-health")
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| Failure::Protocol(e.to_string()))?;
    Ok(sender.send_request(request).await)
}

/// One GET on an HTTP/2 connection (h2c with prior knowledge, or h2 that
/// TLS settled on) to `url`, whose authority is the probe's Host.
async fn send_h2<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    url: &str,
) -> Result<hyper::Result<hyper::Response<hyper::body::Incoming>>, Failure> {
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| Failure::Protocol(e.to_string()))?;
    let _driver = AbortOnDrop(tokio::spawn(connection));
    let request = hyper::Request::get(url)
        .header(hyper::header::USER_AGENT, "switchyard-health")
        .body(Empty::<Bytes>::new())
        .map_err(|e| Failure::Protocol(e.to_string()))?;
    Ok(sender.send_request(request).await)
}

/// A spawned task that ends when this is dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn http(path: &str, interval_ms: u64, timeout_ms: u64) -> ProbeSpec {
        ProbeSpec {
            kind: ProbeKind::Http {
                path: path.into(),
                host: Some("app.test".into()),
                expect: (200, 399),
                h2c: false,
                expect_body: None,
                tls: None,
            },
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_millis(timeout_ms),
            thresholds: Thresholds { rise: 2, fall: 3 },
        }
    }

    /// A backend answering each connection with `status` after `delay`,
    /// and reporting the request head it got.
    async fn backend(
        status: u16,
        delay: Duration,
    ) -> (SocketAddr, tokio::sync::mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    let _ = tx
                        .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                        .await;
                    tokio::time::sleep(delay).await;
                    let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
                    let _ = stream.write_all(answer.as_bytes()).await;
                });
            }
        });
        (addr, rx)
    }

    fn closed_port() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    }

    #[tokio::test]
    async fn an_expected_status_passes_and_the_probe_sends_path_and_host() {
        let (addr, mut seen) = backend(204, Duration::ZERO).await;
        let check = probe(&http("/health/ready", 1000, 1000), addr).await;
        assert!(
            matches!(
                check,
                Check::Pass {
                    status: Some(204),
                    ..
                }
            ),
            "{check:?}"
        );
        let head = seen.recv().await.unwrap().to_ascii_lowercase();
        assert!(head.starts_with("get /health/ready http/1.1"), "{head}");
        assert!(head.contains("host: app.test"), "{head}");
    }

    #[tokio::test]
    async fn a_status_outside_the_range_fails_with_the_status() {
        let (addr, _seen) = backend(500, Duration::ZERO).await;
        let check = probe(&http("/", 1000, 1000), addr).await;
        assert!(
            matches!(
                check,
                Check::Fail {
                    failure: Failure::Status(500),
                    ..
                }
            ),
            "{check:?}"
        );
    }

    #[tokio::test]
    async fn a_probe_that_times_out_is_a_failure() {
        let (addr, _seen) = backend(200, Duration::from_millis(500)).await;
        let check = probe(&http("/", 1000, 50), addr).await;
        assert!(
            matches!(check, Check::Fail { failure: Failure::Timeout, latency } if latency < Duration::from_millis(400)),
            "{check:?}"
        );
    }

    #[tokio::test]
    async fn a_refused_connection_fails_for_http_and_tcp_probes() {
        let addr = closed_port();
        let check = probe(&http("/", 1000, 1000), addr).await;
        assert!(
            matches!(
                check,
                Check::Fail {
                    failure: Failure::Connect(_),
                    ..
                }
            ),
            "{check:?}"
        );
        let tcp = ProbeSpec {
            kind: ProbeKind::Tcp,
            interval: TCP_INTERVAL,
            timeout: TCP_TIMEOUT,
            thresholds: TCP_THRESHOLDS,
        };
        let check = probe(&tcp, addr).await;
        assert!(
            matches!(
                check,
                Check::Fail {
                    failure: Failure::Connect(_),
                    ..
                }
            ),
            "{check:?}"
        );
    }

    #[tokio::test]
    async fn a_tcp_probe_passes_on_connect_alone() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let spec = ProbeSpec {
            kind: ProbeKind::Tcp,
            interval: TCP_INTERVAL,
            timeout: TCP_TIMEOUT,
            thresholds: TCP_THRESHOLDS,
        };
        let check = probe(&spec, listener.local_addr().unwrap()).await;
        assert!(
            matches!(check, Check::Pass { status: None, .. }),
            "{check:?}"
        );
    }

    #[tokio::test]
    async fn garbage_instead_of_http_fails_as_a_bad_answer() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            if let Ok((mut stream, _)) = listener.accept().await {
                let _ = stream.write_all(b"NOT HTTP AT ALL\r\n\r\n").await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        let check = probe(&http("/", 1000, 1000), addr).await;
        assert!(
            matches!(
                check,
                Check::Fail {
                    failure: Failure::Protocol(_),
                    ..
                }
            ),
            "{check:?}"
        );
    }

    /// A backend answering every connection 200 with `body`.
    async fn answering(body: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let _ = stream.read(&mut buf).await;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_200_whose_body_says_degraded_fails_when_the_body_is_expected() {
        let mut spec = http("/health", 1000, 1000);
        if let ProbeKind::Http { expect_body, .. } = &mut spec.kind {
            *expect_body = Some(BodyExpectation::JsonField {
                field: "status".into(),
                value: "healthy".into(),
            });
        }
        let healthy = answering(r#"{"status":"healthy"}"#).await;
        assert!(probe(&spec, healthy).await.passed());
        let degraded = answering(r#"{"status":"degraded"}"#).await;
        let check = probe(&spec, degraded).await;
        match check {
            Check::Fail {
                failure: Failure::Body(why),
                ..
            } => assert_eq!(why, "status is \"degraded\", not \"healthy\""),
            other => panic!("{other:?}"),
        }
        // Without `expect_body` the status alone decides.
        assert!(probe(&http("/health", 1000, 1000), degraded).await.passed());
    }
}
