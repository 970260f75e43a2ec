//! The application our accept loops (`accept.rs`) hand each client
//! connection to: it sorts them by protocol. HTTP/1.1 goes to [`Forwarder::serve_http1`]'s
//! loop; HTTP/2 (ALPN `h2` over TLS, or the h2c preface on a plain
//! listener when `[server] h2c` is on) goes through pingora's HTTP/2 server,
//! which hands us one session per stream. Either way every request is
//! served by the same [`Forwarder::serve_one`], and goes to its backend as
//! HTTP/1.1.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;

use super::downstream::Downstream;
use super::{Forwarder, InFlightGuard};

/// What an HTTP/2 client connection opens with (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Sorts client connections by protocol; see the module comment. Cheap to
/// clone: pingora's TLS service and our plain-TCP accept loops share one.
#[derive(Clone)]
pub struct Front {
    forwarder: Arc<Forwarder>,
    h2: Arc<H2Streams>,
    /// `[server] h2c`: plain-text listeners also take HTTP/2 with prior
    /// knowledge.
    h2c: bool,
    /// `[server] max_connections`: past it, a new connection is closed as
    /// soon as it is accepted, and those already open are served on.
    max_connections: usize,
}

impl Front {
    pub fn new(forwarder: Forwarder, h2c: bool, max_connections: usize) -> Front {
        let forwarder = Arc::new(forwarder);
        let mut options = HttpServerOptions::default();
        // The connections handed to `H2Streams` are HTTP/2 already; this
        // only lets pingora's server see the h2c preface as such.
        options.h2c = true;
        Front {
            h2: Arc::new(H2Streams {
                forwarder: forwarder.clone(),
                options,
            }),
            forwarder,
            h2c,
            max_connections,
        }
    }

    /// How long a request head, or a TLS handshake, may take.
    pub(super) fn header_timeout(&self) -> std::time::Duration {
        self.forwarder.header_timeout()
    }

    /// Client connections open now.
    pub(super) fn open_connections(&self) -> usize {
        self.forwarder.connections.count()
    }

    /// Whether a plain-text connection opens with the HTTP/2 preface. The
    /// peek reads 24 bytes and puts them back; a client that sends fewer
    /// and waits gets the first-request timeout, then the close.
    async fn opens_with_h2_preface(&self, stream: &mut Stream) -> Option<bool> {
        let wait = self.forwarder.first_request_wait();
        let mut buf = [0u8; H2_PREFACE.len()];
        match tokio::time::timeout(Duration::from_secs(wait), stream.try_peek(&mut buf)).await {
            Ok(Ok(true)) => Some(buf == H2_PREFACE),
            Ok(Ok(false)) => Some(false),
            Ok(Err(e)) => {
                tracing::debug!("client connection ended before its first request: {e}");
                None
            }
            Err(_) => None,
        }
    }
}

#[async_trait]
impl ServerApp for Front {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if self.forwarder.connections.count() >= self.max_connections {
            // Refused at accept: closing costs less than serving, and the
            // connections already open keep their share of the process.
            metrics::counter!("switchyard_connections_refused_total").increment(1);
            tracing::debug!(
                max_connections = self.max_connections,
                "connection refused: max_connections reached"
            );
            return None;
        }
        let _connection = InFlightGuard::new(&self.forwarder.connections);
        let tls = stream.get_ssl_digest().is_some();
        let h2 = if tls {
            matches!(stream.selected_alpn_proto(), Some(ALPN::H2))
        } else if self.h2c {
            self.opens_with_h2_preface(&mut stream).await?
        } else {
            false
        };
        if h2 {
            // pingora's HTTP/2 server: the handshake, one task per stream,
            // GOAWAY on shutdown; each stream comes back to `H2Streams`.
            self.h2.process_new(stream, shutdown).await
        } else {
            self.forwarder.serve_http1(stream, tls, shutdown).await
        }
    }

    async fn cleanup(&self) {
        self.forwarder.stopping.store(true, Ordering::Relaxed);
    }
}

/// The HTTP/2 side: each stream is one request, served like an HTTP/1.1
/// one.
struct H2Streams {
    forwarder: Arc<Forwarder>,
    options: HttpServerOptions,
}

#[async_trait]
impl HttpServerApp for H2Streams {
    async fn process_new_http(
        self: &Arc<Self>,
        session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let tls = session
            .digest()
            .is_some_and(|digest| digest.ssl_digest.is_some());
        let mut downstream = Downstream::H2(Box::new(session));
        self.forwarder
            .serve_one(&mut downstream, tls, shutdown)
            .await;
        let Downstream::H2(session) = downstream else {
            unreachable!("an HTTP/2 stream stays one");
        };
        // Ends the stream (END_STREAM or RST) if the exchange did not.
        if let Err(e) = session.finish().await {
            tracing::debug!("HTTP/2 stream ended badly: {e}");
        }
        None
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        Some(&self.options)
    }
}
