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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use pingora::connectors::http::v1::Connector;
use pingora::connectors::http::v2::Connector as H2Connector;
use pingora::connectors::TransportConnector;
use pingora::http::RequestHeader;
use pingora::protocols::http::client::HttpSession;
use pingora::protocols::http::v1::client::HttpSession as UpstreamSession;
use pingora::protocols::http::v2::client::Http2Session;
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use pingora::upstreams::peer::HttpPeer;
use pingora::ErrorType;
use switchyard_control::table::{FailureKind, LoadGuard, Reason, TOKEN_HEADER};
use switchyard_control::{ControllerHandle, Route, RoutingTable, SharedTable};

use crate::access_log::{self, AccessLog};
use crate::hop_by_hop;

mod accept;
mod authority;
mod client_conn;
mod exchange;
mod front;
mod h2_upstream;
mod head;
mod in_flight;
pub mod request_id;

pub use accept::{spawn_accept_loops, Listener};
use exchange::{exchange, Exchange, Reply};
pub use front::Front;
pub use in_flight::{InFlight, InFlightGuard};

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

impl Forwarder {
    /// Serves one HTTP/1.1 client connection: its requests one after
    /// another, for as long as it stays reusable. One task and one boxed
    /// future per connection, not per request.
    ///
    /// Each request head is read by [`head::read_head`] (size and time
    /// limits of our own, a small buffer while idle) and handed to a new
    /// pingora session as its first bytes; the request's own state is
    /// boxed, so an idle connection holds only its socket, that buffer and
    /// this loop.
    pub(crate) async fn serve_http1(
        &self,
        mut stream: Stream,
        tls: bool,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // A new connection gets as long for its first request as a kept-alive
        // one gets for its next: an idle connection is never held forever.
        let mut wait = self.first_request_wait();
        let mut pipelined = None;
        loop {
            let header_timeout = self.header_timeout();
            let head = head::read_head(
                &mut stream,
                pipelined.take(),
                Duration::from_secs(wait),
                header_timeout,
            )
            .await;
            let head::Head::Read(bytes) = head else {
                return None;
            };
            // Boxed: the session and the request's state (the exchange, its
            // select!, retries) live on the heap only while the request
            // does, instead of inflating every connection's task for its
            // whole life.
            let served = Box::pin(self.serve_request(stream, bytes, wait, tls, shutdown));
            (stream, pipelined, wait) = served.await?;
        }
    }

    /// Serves the request whose head is in `head` on a new pingora session
    /// over `stream`, and hands the stream back when it can take another:
    /// with any bytes read past this request and the keep-alive timeout.
    async fn serve_request(
        &self,
        stream: Stream,
        head: BytesMut,
        wait: u64,
        tls: bool,
        shutdown: &ShutdownWatch,
    ) -> Option<(Stream, Option<BytesMut>, u64)> {
        let mut session = ServerSession::new_http1(stream);
        // Pipelined requests are answered in order, one after another
        // (RFC 9112 §9.3.2), as nginx and HAProxy do.
        session.set_pipelining_enabled(true);
        session.set_keepalive(Some(wait));
        session.set_pipelined_prefix(head);
        let wait = self.serve_one(&mut session, tls, shutdown).await?;
        match session.finish().await {
            Ok(Some(reusable)) => {
                let (stream, pipelined) = reusable.into_parts();
                Some((stream, pipelined, wait))
            }
            Ok(None) => None,
            Err(e) => {
                tracing::debug!("client connection ended: {e}");
                None
            }
        }
    }

    /// Seconds a new connection may take to send its first request: the
    /// keep-alive timeout.
    fn first_request_wait(&self) -> u64 {
        self.table.load().timeouts.client_keepalive.as_secs().max(1)
    }

    /// How long a request head may take from its first byte.
    fn header_timeout(&self) -> Duration {
        self.table.load().timeouts.client_header
    }
}

// Idle kept-alive connections are not woken on a stop: `RunningProxy::stop`
// drains in-flight requests and then drops the runtime, which closes them.
// Not selecting on a stop signal saves a `Notify` registration per request.

impl Forwarder {
    /// Reads and serves one request. `None` when the connection must close;
    /// otherwise the keep-alive timeout, in seconds, for the next request.
    async fn serve_one(
        &self,
        session: &mut ServerSession,
        tls: bool,
        shutdown: &ShutdownWatch,
    ) -> Option<u64> {
        // No deadline here: an HTTP/1 head is already whole (`head.rs` read
        // it under `header_timeout`), and an HTTP/2 stream's came with it.
        match session.read_request().await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                tracing::debug!("bad or broken request: {e}");
                if matches!(e.etype(), ErrorType::InvalidHTTPHeader) {
                    let _ = session.respond_error(400).await;
                }
                session.shutdown().await;
                return None;
            }
        }
        let _in_flight = InFlightGuard::new(&self.in_flight);
        let table = self.table.load_full();
        let keepalive = table.timeouts.client_keepalive.as_secs().max(1);
        // A client that takes none of its response for this long is gone.
        session.set_write_timeout(Some(table.timeouts.client_send));
        if *shutdown.borrow() || self.stopping.load(Ordering::Relaxed) {
            session.set_keepalive(None);
        } else {
            session.set_keepalive(Some(keepalive));
        }
        let started = Instant::now();
        let request_id = request_id::for_request(&session.req_header().headers);
        let mut trail = Trail::default();

        let incoming = Incoming {
            id: &request_id,
            tls,
        };
        let next = match self.forward(session, &table, incoming, &mut trail).await {
            Outcome::Done => Some(keepalive),
            Outcome::DoneClose => {
                session.set_keepalive(None);
                Some(keepalive)
            }
            Outcome::Answer(status, body) => {
                // The connection can take another request only if this one
                // was read to its end.
                if !session.is_body_done() {
                    session.set_keepalive(None);
                }
                if let Err(e) = answer(session, status, body, &request_id).await {
                    tracing::debug!("cannot send the {status} answer: {e}");
                }
                Some(keepalive)
            }
            Outcome::Reject(status, body) => {
                session.set_keepalive(None);
                if let Err(e) = answer(session, status, body, &request_id).await {
                    tracing::debug!("cannot send the {status} answer: {e}");
                }
                None
            }
            Outcome::Abandon => {
                session.shutdown().await;
                None
            }
            Outcome::Redirect(location) => {
                if let Err(e) = redirect(session, location, &request_id).await {
                    tracing::debug!("cannot send the redirect: {e}");
                }
                Some(keepalive)
            }
        };
        if let Some(log) = &self.access_log {
            log.record(access_log::Entry {
                client: session
                    .client_addr()
                    .and_then(|a| a.as_inet())
                    .map(|a| a.ip()),
                method: session.req_header().method.clone(),
                uri: session.req_header().uri.clone(),
                route: trail.route,
                slot: trail.slot,
                backend: trail.backend,
                // 0: the client left before any answer.
                status: session.response_written().map_or(0, |r| r.status.as_u16()),
                bytes: session.body_bytes_sent(),
                duration: started.elapsed(),
                request_id,
            });
        }
        next
    }
}

/// One of our own answers (404, 502, 504), with the request's id.
async fn answer(
    session: &mut ServerSession,
    status: u16,
    body: &'static [u8],
    request_id: &HeaderValue,
) -> pingora::Result<()> {
    let mut header = ServerSession::generate_error(status);
    header.set_content_length(body.len())?;
    header.insert_header(request_id::HEADER, request_id.clone())?;
    session
        .write_error_response(header, Bytes::from_static(body))
        .await
}

/// A 301 to HTTPS, with the request's id.
async fn redirect(
    session: &mut ServerSession,
    location: HeaderValue,
    request_id: &HeaderValue,
) -> pingora::Result<()> {
    let mut header = ServerSession::generate_error(301);
    header.set_content_length(0)?;
    header.insert_header(header::LOCATION, location)?;
    header.insert_header(request_id::HEADER, request_id.clone())?;
    session.write_error_response(header, Bytes::new()).await
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

/// The request as the backend gets it: hop-by-hop headers removed, the
/// client's address, scheme and host added.
fn upstream_request(
    session: &ServerSession,
    incoming: Incoming<'_>,
    unframed_body: bool,
    upgrades: &[Box<str>],
) -> Box<RequestHeader> {
    let mut request = Box::new(session.req_header().clone());
    if request.version == http::Version::HTTP_2 {
        request.set_version(http::Version::HTTP_11);
    }
    if request.uri.authority().is_some() {
        to_origin_form(&mut request);
    } else if !matches!(request.raw_path().first(), Some(b'/' | b'*')) {
        // An HTTP/1 absolute-form target: pingora checked that its
        // authority is the Host header's, and kept the path in the Uri.
        let target = request.uri.clone();
        request.set_uri(target);
    }
    hop_by_hop::strip_request(&mut request, upgrades);
    if unframed_body {
        let _ = request.insert_header(header::TRANSFER_ENCODING, "chunked");
    }
    let _ = request.insert_header(request_id::HEADER, incoming.id.clone());
    // The override token is a secret between the tester and the proxy.
    request.remove_header(TOKEN_HEADER);
    if let Some(client) = session.client_addr().and_then(|a| a.as_inet()) {
        let mut ip_buf = [0u8; 64];
        let ip = format_ip(client.ip(), &mut ip_buf);
        let forwarded_for: Vec<u8> = match request.headers.get("x-forwarded-for") {
            Some(existing) => [existing.as_bytes(), b", ", ip].concat(),
            None => ip.to_vec(),
        };
        let _ = request.insert_header("x-forwarded-for", forwarded_for);
    }
    let proto = if incoming.tls { "https" } else { "http" };
    let _ = request.insert_header("x-forwarded-proto", proto);
    if let Some(host) = request.headers.get(header::HOST).cloned() {
        let _ = request.insert_header("x-forwarded-host", host);
    }
    request
}

/// A target with an authority (an HTTP/2 request's `:authority`, an
/// HTTP/1 absolute-form target) as a backend gets it: the authority becomes
/// the Host header (RFC 9113 §8.3.1, RFC 9112 §3.2.3: it wins over a Host
/// the client also sent, and it is what the request was routed by) and the
/// target becomes origin-form.
fn to_origin_form(request: &mut RequestHeader) {
    if let Some(authority) = request.uri.authority().cloned() {
        if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
            let _ = request.insert_header(header::HOST, host);
        }
    }
    // The path and query are shared bytes: no copy, no parse.
    let target = request
        .uri
        .path_and_query()
        .cloned()
        .map_or_else(|| http::Uri::from_static("/"), http::Uri::from);
    request.set_uri(target);
}

/// `https://HOST[:PORT]TARGET` for a Host header (its port dropped) and
/// the HTTPS listener's port (left out when it is 443). `None` when the
/// Host cannot make a valid URL.
fn https_location(host: &str, https_port: Option<u16>, target: &str) -> Option<HeaderValue> {
    let name = match host.strip_prefix('[') {
        // An IPv6 literal keeps its brackets.
        Some(rest) => &host[..rest.find(']')? + 2],
        None => host.split(':').next().unwrap_or_default(),
    };
    if name.is_empty() {
        return None;
    }
    let location = match https_port {
        None | Some(443) => format!("https://{name}{target}"),
        Some(port) => format!("https://{name}:{port}{target}"),
    };
    HeaderValue::from_str(&location).ok()
}

/// Writes the IP's text form into `buf` without a heap string.
fn format_ip(ip: std::net::IpAddr, buf: &mut [u8; 64]) -> &[u8] {
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cursor, "{ip}");
    let len = cursor.position() as usize;
    &buf[..len]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_location_drops_the_host_port_and_adds_the_tls_one() {
        let at = |host, port, target| {
            https_location(host, port, target).map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(
            at("app.test:8080", Some(443), "/a?b=1").as_deref(),
            Some("https://app.test/a?b=1")
        );
        assert_eq!(
            at("app.test", Some(8443), "/").as_deref(),
            Some("https://app.test:8443/")
        );
        assert_eq!(
            at("[::1]:80", Some(8443), "/x").as_deref(),
            Some("https://[::1]:8443/x")
        );
        assert_eq!(at("", Some(443), "/"), None);
        assert_eq!(at("[::1", Some(443), "/"), None);
    }

    #[test]
    fn a_target_with_an_authority_goes_upstream_in_origin_form_with_it_as_host() {
        // As pingora's HTTP/2 server builds it: the target in absolute form.
        let mut request = RequestHeader::build("GET", b"/", None).unwrap();
        request.set_uri("https://app.test:8443/a/b?c=1".parse().unwrap());
        to_origin_form(&mut request);
        assert_eq!(request.uri.to_string(), "/a/b?c=1");
        assert_eq!(request.headers.get(header::HOST).unwrap(), "app.test:8443");

        // `:authority` wins over a Host header the client also sent.
        let mut request = RequestHeader::build("GET", b"/", None).unwrap();
        request.set_uri("https://app.test/".parse().unwrap());
        request.insert_header(header::HOST, "other.test").unwrap();
        to_origin_form(&mut request);
        assert_eq!(request.headers.get(header::HOST).unwrap(), "app.test");
        assert_eq!(request.uri.to_string(), "/");
    }

    #[test]
    fn ip_text_fits_the_stack_buffer() {
        let mut buf = [0u8; 64];
        let v6: std::net::IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
            .parse()
            .unwrap();
        assert_eq!(format_ip(v6, &mut buf), v6.to_string().as_bytes());
        let v4: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(format_ip(v4, &mut buf), b"127.0.0.1");
    }
}
