//! The data plane, written directly on pingora-core: a `ServerApp` that
//! reads each request with pingora's `ServerSession`, sends it upstream on a
//! pooled HTTP/1.1 connection from pingora's `Connector`, and pumps both
//! bodies in one task.
//!
//! Why not pingora-proxy's `ProxyHttp`: its per-request glue (two channels
//! and a second task per request, boxed callback futures, a body buffer
//! sized for caching) cost more CPU than everything else switchyard does;
//! `docs/performance.md` has the profiles and the side-by-side figures.
//! What `ProxyHttp` gave us for free is kept here explicitly: retries
//! before a byte is sent, hop-by-hop headers, upgrades, 502/504 answers,
//! timeouts, and noticing a client that hangs up while we wait upstream.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use pingora::connectors::http::v1::Connector;
use pingora::connectors::http::v2::Connector as H2Connector;
use pingora::connectors::TransportConnector;
use pingora::protocols::http::client::HttpSession;
use pingora::protocols::http::v1::client::HttpSession as UpstreamSession;
use pingora::protocols::http::v2::client::Http2Session;
use pingora::protocols::http::ServerSession;
use pingora::upstreams::peer::HttpPeer;
use pingora::ErrorType;
use switchyard_control::table::{FailureKind, LoadGuard, Reason};
use switchyard_control::{ControllerHandle, Route, RoutingTable, SharedTable};

use crate::access_log::AccessLog;
use crate::hop_by_hop;

mod accept;
mod authority;
mod client_conn;
mod exchange;
mod front;
mod h2_upstream;
mod head;
mod in_flight;
mod redirect;
pub mod request_id;
mod serve;
mod upstream_request;

pub use accept::{spawn_accept_loops, Listener};
use exchange::{exchange, Exchange, Reply};
pub use front::Front;
pub use in_flight::{InFlight, InFlightGuard};
use redirect::https_location;
use upstream_request::upstream_request;

/// Concurrent requests on one HTTP/2 connection to an h2c backend before
/// another connection is opened.
const H2_STREAMS_PER_CONNECTION: usize = 100;

/// Idle pooled upstream connections are closed after this.
const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

const NO_ROUTE_BODY: &[u8] = b"switchyard: no route for this host and path\n";
pub(crate) const BAD_REQUEST_BODY: &[u8] = b"switchyard: the request cannot be framed\n";
pub(crate) const BAD_GATEWAY_BODY: &[u8] = b"switchyard: the upstream failed to answer\n";
pub(crate) const GATEWAY_TIMEOUT_BODY: &[u8] = b"switchyard: the upstream timed out\n";

/// switchyard's HTTP/1.1 proxy application.
pub struct Forwarder {
    table: SharedTable,
    /// Told about connect failures of real requests (passive health check).
    controller: ControllerHandle,
    in_flight: Arc<InFlight>,
    connector: Connector,
    /// HTTP/2 connections to h2c slots, shared by their streams.
    h2: H2Connector,
    /// Opens connections outside the pool, for a retry after a stale one.
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
            connector: Connector::new(None),
            h2: H2Connector::new(None),
            fresh: TransportConnector::new(None),
            stopping: AtomicBool::new(false),
            access_log,
            https_port,
        }
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
    /// The client is gone, or the response broke half-way: close.
    Abandon,
}

/// What the proxy knows of a request besides its header.
#[derive(Clone, Copy)]
struct Incoming<'r> {
    id: &'r HeaderValue,
    /// It came over TLS.
    tls: bool,
}

/// Where a request went, for the access log.
#[derive(Default)]
struct Trail {
    route: Option<Arc<str>>,
    slot: Option<Arc<str>>,
    backend: Option<SocketAddr>,
}

/// Where the request goes, advanced by each failed connect.
struct Target {
    slot: usize,
    backend_start: usize,
    /// Connect attempts so far, the first included.
    attempts: u32,
    attempts_on_slot: usize,
}

impl Forwarder {
    async fn forward(
        &self,
        session: &mut ServerSession,
        table: &RoutingTable,
        incoming: Incoming<'_>,
        trail: &mut Trail,
    ) -> Outcome {
        let request_id = incoming.id;
        let request = session.req_header();
        let host =
            match authority::request_authority(request.version, &request.uri, &request.headers) {
                Ok(host) => host,
                Err(bad) => return Outcome::Reject(400, bad.body()),
            };
        let Some(found) = table.route_ref_for(host, request.uri.path()) else {
            return Outcome::Answer(404, NO_ROUTE_BODY);
        };
        let route = &table.routes[found.index];
        trail.route = Some(route.name.clone());
        if route.redirect_https && !incoming.tls {
            let target = request.uri.path_and_query().map_or("/", |p| p.as_str());
            if let Some(location) =
                https_location(host.unwrap_or_default(), self.https_port, target)
            {
                return Outcome::Redirect(location);
            }
        }
        let client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let choice = route.choose(&request.headers, client_ip, found.preview);
        // A client placed by its bucket gets the cookie that keeps it there.
        let reply = Reply {
            started: Instant::now(),
            set_cookie: (choice.reason == Reason::Bucket).then(|| route.set_cookie(choice.slot)),
            request_id,
            hsts: if incoming.tls {
                route.hsts.as_ref()
            } else {
                None
            },
        };
        let mut target = Target {
            slot: choice.slot,
            backend_start: route.slot(choice.slot).next_start(),
            attempts: 0,
            attempts_on_slot: 0,
        };

        // A pooled connection may have been closed by the backend while idle:
        // that shows as a failure to send the header or an empty answer, and
        // is retried once on a fresh connection. A backend that dies with our
        // request in flight is retried like a failed connect (next backend,
        // then the previous slot) when the request can safely run twice.
        let mut fresh_only = false;
        // An HTTP/2 request body need not declare its length; HTTP/1.1 to
        // the backend then needs chunked framing.
        let unframed_body = session.req_header().version == http::Version::HTTP_2
            && !session.is_body_empty()
            && !session
                .req_header()
                .headers
                .contains_key(header::CONTENT_LENGTH);
        // Counted on its slot from the moment it is chosen (so `drain` never
        // sees an idle slot with a request about to connect to it) until
        // the exchange ends.
        let mut counted = Counted::on(route, target.slot);
        let outcome = loop {
            if route.slot(target.slot).h2c {
                counted.follow(route, target.slot);
                if hop_by_hop::requests_upgrade(&session.req_header().headers, &route.upgrades) {
                    tracing::warn!(
                        route = &*route.name,
                        "an upgrade (WebSocket) cannot go to an h2c slot"
                    );
                    break Outcome::Answer(502, BAD_GATEWAY_BODY);
                }
                let (mut upstream, peer) = match self.connect_h2(route, table, &mut target).await {
                    Ok(Some(connected)) => connected,
                    // Failed; the target moved on to another backend or slot.
                    Ok(None) => continue,
                    Err(e) => break connect_error_answer(route, &e),
                };
                trail.slot = Some(route.slot(target.slot).name.clone());
                trail.backend = peer._address.as_inet().copied();
                let request = upstream_request(session, incoming, false, &route.upgrades);
                let replayable = replayable(session);
                let outcome = h2_upstream::exchange(
                    session,
                    &mut upstream,
                    request,
                    replayable,
                    &mut counted.load,
                    &reply,
                    &table.timeouts,
                )
                .await;
                match outcome {
                    Exchange::Finished { .. } => {
                        self.h2
                            .release_http_session(upstream, &peer, Some(UPSTREAM_IDLE_TIMEOUT));
                        break if session.is_body_done() {
                            Outcome::Done
                        } else {
                            Outcome::DoneClose
                        };
                    }
                    Exchange::Dropped(e) => {
                        if !self.dropped(route, &mut target, &peer, &e) {
                            break Outcome::Answer(502, BAD_GATEWAY_BODY);
                        }
                    }
                    Exchange::Failed(outcome) => break outcome,
                }
                continue;
            }
            let connected = self.connect(route, table, &mut target, fresh_only).await;
            counted.follow(route, target.slot);
            let (mut upstream, reused, peer) = match connected {
                Ok(connected) => {
                    trail.slot = Some(route.slot(target.slot).name.clone());
                    trail.backend = connected.2._address.as_inet().copied();
                    connected
                }
                Err(e) => break connect_error_answer(route, &e),
            };
            upstream.read_timeout = Some(table.timeouts.upstream_read);
            upstream.write_timeout = Some(table.timeouts.upstream_read);
            let upstream_request =
                upstream_request(session, incoming, unframed_body, &route.upgrades);
            let outcome = match upstream.write_request_header(upstream_request).await {
                // The backend cannot have acted on a request it did not get
                // whole: any method may go elsewhere.
                Err(e) => Exchange::Dropped(e),
                Ok(_) => {
                    // Once the request went out, only a request that can
                    // safely run twice is sent again: an idempotent method
                    // without a body.
                    let replayable = replayable(session);
                    exchange(
                        session,
                        &mut upstream,
                        replayable,
                        &mut counted.load,
                        &reply,
                        &table.timeouts,
                    )
                    .await
                }
            };
            match outcome {
                Exchange::Finished { reusable_upstream } => {
                    if reusable_upstream {
                        self.connector
                            .release_http_session(upstream, &peer, Some(UPSTREAM_IDLE_TIMEOUT))
                            .await;
                    }
                    break if session.is_body_done() && !session.was_upgraded() {
                        Outcome::Done
                    } else {
                        Outcome::DoneClose
                    };
                }
                Exchange::Dropped(e) if reused && !fresh_only => {
                    tracing::debug!("pooled upstream connection was stale: {e}");
                    fresh_only = true;
                }
                Exchange::Dropped(e) => {
                    if !self.dropped(route, &mut target, &peer, &e) {
                        break Outcome::Answer(502, BAD_GATEWAY_BODY);
                    }
                    fresh_only = false;
                }
                // `upstream_failed` logged why.
                Exchange::Failed(outcome) => break outcome,
            }
        };
        // Our own 502 and 504 answers count against the slot that failed.
        if let Outcome::Answer(status, _) = outcome {
            counted.load.answered(status, reply.started.elapsed());
        }
        outcome
    }

    /// A backend dropped a request before answering: counted, told to the
    /// health checks, and `target` moved on. `false` when no retry is left.
    fn dropped(
        &self,
        route: &Route,
        target: &mut Target,
        peer: &HttpPeer,
        e: &pingora::Error,
    ) -> bool {
        let slot = route.slot(target.slot);
        let backend = peer._address.as_inet().copied();
        slot.load.upstream_failed(FailureKind::Dropped);
        tracing::warn!(route = &*route.name, slot = &*slot.name, backend = ?backend, "upstream dropped the request: {e}");
        if let Some(backend) = backend {
            self.controller.connect_failed(
                &route.name,
                &slot.name,
                backend,
                format!("dropped the connection before answering: {e}"),
            );
        }
        if advance(route, target) {
            return true;
        }
        tracing::error!(route = &*route.name, "upstream failed: {e}");
        false
    }

    /// One HTTP/2 stream to the target's next backend (h2c, prior
    /// knowledge): on a connection already open to it when one has a free
    /// stream, else on a new one. `Ok(None)` when the connect failed and
    /// `target` moved on to another backend or slot; `Err` when no retry
    /// is left.
    async fn connect_h2(
        &self,
        route: &Route,
        table: &RoutingTable,
        target: &mut Target,
    ) -> pingora::Result<Option<(Http2Session, HttpPeer)>> {
        let (backend, mut peer) = target.next_peer(route, table);
        peer.options.set_http_version(2, 2);
        peer.options.max_h2_streams = H2_STREAMS_PER_CONNECTION;
        let connected = match self.h2.reused_http_session(&peer).await {
            Ok(Some(stream)) => Ok(stream),
            _ => match self.h2.new_http_session::<HttpPeer, ()>(&peer).await {
                Ok(HttpSession::H2(stream)) => Ok(stream),
                Ok(_) => Err(pingora::Error::explain(
                    ErrorType::InternalError,
                    "an h2c backend was spoken to in HTTP/1.1",
                )),
                Err(e) => Err(e),
            },
        };
        match connected {
            Ok(stream) => Ok(Some((stream, peer))),
            Err(e) => {
                self.connect_failed(route, target.slot, backend, &e);
                if advance(route, target) {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Counts a failed connect and tells the health checks.
    fn connect_failed(&self, route: &Route, slot: usize, backend: SocketAddr, e: &pingora::Error) {
        let slot = route.slot(slot);
        tracing::warn!(route = &*route.name, slot = &*slot.name, %backend, "connect failed: {e}");
        slot.load
            .upstream_failed(if e.etype() == &ErrorType::ConnectTimedout {
                FailureKind::Timeout
            } else {
                FailureKind::Connect
            });
        self.controller
            .connect_failed(&route.name, &slot.name, backend, e.to_string());
    }

    /// Connects to the target's next backend, moving on to the slot's other
    /// backends and then to the previous slot while the route's retries
    /// last. No request byte has gone out when this fails, so every retry
    /// is safe, whatever the method.
    async fn connect(
        &self,
        route: &Route,
        table: &RoutingTable,
        target: &mut Target,
        fresh_only: bool,
    ) -> pingora::Result<(UpstreamSession, bool, HttpPeer)> {
        loop {
            let (backend, peer) = target.next_peer(route, table);
            let connected = if fresh_only {
                self.fresh
                    .new_stream(&peer)
                    .await
                    .map(|stream| (UpstreamSession::new_with_options(stream, &peer), false))
            } else {
                self.connector.get_http_session(&peer).await
            };
            match connected {
                Ok((session, reused)) => return Ok((session, reused, peer)),
                Err(e) => {
                    self.connect_failed(route, target.slot, backend, &e);
                    if !advance(route, target) {
                        return Err(e);
                    }
                }
            }
        }
    }
}

/// A request's in-flight count, kept on the slot its target is on.
struct Counted {
    slot: usize,
    load: LoadGuard,
}

impl Counted {
    fn on(route: &Route, slot: usize) -> Counted {
        Counted {
            slot,
            load: route.slot(slot).load.request(),
        }
    }

    /// Moves the count when a retry moved the target to another slot.
    fn follow(&mut self, route: &Route, slot: usize) {
        if slot != self.slot {
            *self = Counted::on(route, slot);
        }
    }
}

impl Target {
    /// The next backend to try and its pingora peer (pooled per slot and
    /// generation), counting the attempt.
    fn next_peer(&mut self, route: &Route, table: &RoutingTable) -> (SocketAddr, HttpPeer) {
        let slot = route.slot(self.slot);
        let backend = slot.backend(self.backend_start, self.attempts_on_slot);
        self.attempts += 1;
        self.attempts_on_slot += 1;
        let mut peer = HttpPeer::new(backend, false, String::new());
        peer.group_key = slot.pool_key;
        peer.options.connection_timeout = Some(table.timeouts.upstream_connect);
        peer.options.idle_timeout = Some(UPSTREAM_IDLE_TIMEOUT);
        (backend, peer)
    }
}

/// Our answer when no backend could be connected to.
fn connect_error_answer(route: &Route, e: &pingora::Error) -> Outcome {
    if e.etype() == &ErrorType::ConnectTimedout {
        tracing::error!(route = &*route.name, "upstream connect timed out: {e}");
        Outcome::Answer(504, GATEWAY_TIMEOUT_BODY)
    } else {
        tracing::error!(route = &*route.name, "upstream unreachable: {e}");
        Outcome::Answer(502, BAD_GATEWAY_BODY)
    }
}

/// Moves `target` on after a failed attempt: the slot's next backend, then
/// the previous slot unless it is known unhealthy, while the route's
/// `retries` last. `false` when none
/// are left.
fn advance(route: &Route, target: &mut Target) -> bool {
    if target.attempts > route.retries {
        return false;
    }
    let slot = route.slot(target.slot);
    if target.attempts_on_slot >= slot.backends.len() {
        // The previous slot is a fallback only while it may work.
        match route
            .previous
            .filter(|&p| p != target.slot && !route.slot(p).unhealthy)
        {
            Some(previous) => {
                target.slot = previous;
                target.backend_start = route.slot(previous).next_start();
                target.attempts_on_slot = 0;
            }
            None if slot.backends.len() == 1 => return false,
            None => {}
        }
    }
    true
}

/// Whether the request may be sent a second time if a pooled connection
/// turns out dead after it was written (RFC 9110 §9.2.2).
fn replayable(session: &mut ServerSession) -> bool {
    use http::Method;
    let idempotent = matches!(
        session.req_header().method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    );
    idempotent && session.is_body_empty() && !session.is_upgrade_req()
}
