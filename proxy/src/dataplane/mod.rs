//! The data plane, written directly on pingora-core's listeners, TLS and
//! HTTP/2: a `ServerApp` that reads each HTTP/1.x request with our own
//! codec (`h1/`; an HTTP/2 stream comes through pingora's server session,
//! and both meet as a `Downstream`), sends it upstream on a pooled
//! HTTP/1.1 connection of our own (or an h2c stream through pingora's
//! connector), and pumps both bodies in one task.
//!
//! Why not pingora-proxy's `ProxyHttp`: its per-request glue (two channels
//! and a second task per request, boxed callback futures, a body buffer
//! sized for caching) cost more CPU than everything else switchyard does;
//! `docs/performance.md` has the profiles and the side-by-side figures.
//! What `ProxyHttp` gave us for free is kept here explicitly: retries
//! before a byte is sent, hop-by-hop headers, upgrades, 502/504 answers,
//! timeouts, and noticing a client that hangs up while we wait upstream.
//!
//! The modules, in the order a request meets them: `accept.rs` and
//! `front.rs` take connections, `head.rs` and `serve.rs` read and answer
//! requests (`downstream.rs` is the client's side of one), `forward.rs` runs one request through its phases (`pick.rs`,
//! `connect.rs`, then `exchange.rs` or `h2_upstream.rs`), `retry.rs` says
//! what may follow a failed attempt.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderValue;
use pingora::connectors::http::v2::Connector as H2Connector;
use pingora::connectors::TransportConnector;
use switchyard_control::{ControllerHandle, SharedTable};

use crate::access_log::AccessLog;

mod accept;
mod authority;
pub mod basic_auth;
mod body_limit;
mod client_conn;
mod client_ip;
mod connect;
mod downstream;
mod exchange;
mod forward;
mod front;
mod h1;
mod h2_upstream;
mod head;
mod in_flight;
mod pick;
mod pool;
mod proxy_protocol;
mod redirect;
pub mod request_id;
mod retry;
mod serve;
mod upstream_request;

pub use accept::{spawn_accept_loops, Listener};
pub use front::Front;
pub use in_flight::{InFlight, InFlightGuard};

/// Concurrent requests on one HTTP/2 connection to an h2c backend before
/// another connection is opened.
const H2_STREAMS_PER_CONNECTION: usize = 100;

/// Idle pooled upstream connections are closed after this.
const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) const BAD_REQUEST_BODY: &[u8] = b"switchyard: the request cannot be framed\n";
pub(crate) const BAD_GATEWAY_BODY: &[u8] = b"switchyard: the upstream failed to answer\n";
pub(crate) const GATEWAY_TIMEOUT_BODY: &[u8] = b"switchyard: the upstream timed out\n";
pub(crate) const UNAUTHORIZED_BODY: &[u8] = b"switchyard: this address needs a user and password\n";
pub(crate) const TOO_MANY_BODY: &[u8] = b"switchyard: too many requests; try again later\n";

/// switchyard's HTTP/1.1 proxy application.
pub struct Forwarder {
    table: SharedTable,
    /// Told about connect failures of real requests (passive health check).
    controller: ControllerHandle,
    in_flight: Arc<InFlight>,
    /// HTTP/2 connections to h2c slots, shared by their streams.
    h2: H2Connector,
    /// Opens new HTTP/1.1 connections (idle ones are in `pool`).
    fresh: TransportConnector,
    /// Set when the service stops listening: requests still arriving on
    /// kept-alive connections are answered with `Connection: close`.
    stopping: AtomicBool,
    /// Open client connections, for a graceful stop.
    connections: Arc<InFlight>,
    /// `None` when `[server] access_log` is off.
    access_log: Option<AccessLog>,
    /// Where `redirect_https` sends clients: the first `[tls]` listener's
    /// port.
    https_port: Option<u16>,
    /// `[tls.acme]`'s HTTP-01 tokens, answered on the plain listeners
    /// before any routing.
    acme: Option<crate::acme::Challenges>,
}

impl Forwarder {
    pub fn new(
        controller: ControllerHandle,
        in_flight: Arc<InFlight>,
        connections: Arc<InFlight>,
        access_log: Option<AccessLog>,
        https_port: Option<u16>,
    ) -> Forwarder {
        Forwarder {
            table: controller.table(),
            controller,
            in_flight,
            connections,
            h2: H2Connector::new(None),
            fresh: TransportConnector::new(None),
            stopping: AtomicBool::new(false),
            access_log,
            https_port,
            acme: None,
        }
    }

    /// Answers `challenges`' HTTP-01 tokens on the plain listeners.
    pub fn answer_acme(mut self, challenges: crate::acme::Challenges) -> Forwarder {
        self.acme = Some(challenges);
        self
    }
}

/// How one request ended, for the answer, the log and whether the client
/// connection can take another request.
pub(crate) enum Outcome {
    /// The exchange completed; the connection may be reused.
    Done,
    /// The response went out but the connection must close (an early
    /// response before the request body ended, an upgrade).
    DoneClose,
    /// Nothing was sent to the client yet: answer with this status.
    Answer(u16, &'static [u8]),
    /// Answer with this status and close: the request could not be read
    /// as one message, so nothing after it on the connection can be
    /// trusted to start a request.
    Reject(u16, &'static [u8]),
    /// A plain-HTTP request to a route that wants HTTPS: 301 to here.
    Redirect(HeaderValue),
    /// Nothing was sent to the client yet: answer with this status and
    /// this HTML page (a route's own page, or the maintenance page), and
    /// with `Retry-After` when it says when to come back.
    Page {
        status: u16,
        page: bytes::Bytes,
        retry_after: Option<&'static str>,
    },
    /// The client is gone, or the response broke half-way: close.
    Abandon,
    /// Nothing was sent to the client yet: answer with this status, body
    /// and one header field of its own (a 429's `Retry-After`, a 401's
    /// `WWW-Authenticate`, an ACME token's `Content-Type`). Boxed: these
    /// are rare, and every request's state is sized by its largest
    /// outcome.
    AnswerWith(Box<OwnAnswer>),
}

/// An answer of ours with a header field of its own.
pub(crate) struct OwnAnswer {
    pub status: u16,
    pub body: bytes::Bytes,
    pub header: (http::header::HeaderName, http::HeaderValue),
}

impl Outcome {
    pub(crate) fn answer_with(
        status: u16,
        body: bytes::Bytes,
        header: (http::header::HeaderName, http::HeaderValue),
    ) -> Outcome {
        Outcome::AnswerWith(Box::new(OwnAnswer {
            status,
            body,
            header,
        }))
    }
}
