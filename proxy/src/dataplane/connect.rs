//! Connect with retries: a connection to the target's next backend, in
//! the protocol its slot speaks (HTTP/1.1, pooled or new; a stream of a
//! shared h2c connection; or over TLS, either of them as ALPN settles it).
//! A failed connect is counted, reported to the health checks and moves
//! the target on.

use std::net::SocketAddr;

use pingora::connectors::http::v2::{self, H2HandshakeSettings};
use pingora::protocols::http::client::HttpSession;
use pingora::protocols::http::v2::client::Http2Session;
use pingora::protocols::{Ssl, Stream, ALPN};
use pingora::upstreams::peer::{HttpPeer, Peer};
use pingora::ErrorType;
use switchyard_control::table::{FailureKind, Slot};
use switchyard_control::tls_client::BackendTls;
use switchyard_control::{Route, RoutingTable};

use super::downstream::Downstream;
use super::h1::upstream::Http1Upstream;
use super::pick::{advance, peer_for, to_previous, Pick};
use super::pool::{self, PoolKey};
use super::retry::Retry;
use super::{
    Forwarder, Outcome, BAD_GATEWAY_BODY, GATEWAY_TIMEOUT_BODY, H2_STREAMS_PER_CONNECTION,
    UPSTREAM_IDLE_TIMEOUT,
};
use crate::hop_by_hop;

/// A connection to a backend, for one attempt.
pub(super) struct Connection {
    pub upstream: Upstream,
    pub backend: SocketAddr,
}

/// A stream of a shared HTTP/2 connection (h2c, or h2 over TLS), and the
/// peer it goes back to.
pub(super) struct H2Stream {
    pub session: Http2Session,
    peer: HttpPeer,
}

/// The session an attempt talks to its backend on.
pub(super) enum Upstream {
    /// `reused`: it came from the pool.
    Http1 {
        session: Http1Upstream,
        reused: bool,
        /// Where it goes back to when it is done.
        pool: PoolKey,
    },
    /// One stream; the connection is shared with other requests. Boxed:
    /// pingora's session and peer are over 1 KiB, and the rarer HTTP/2
    /// path should not size every request's state.
    H2(Box<H2Stream>),
}

impl Connection {
    /// What a drop allows before any of the request went out. A pooled
    /// HTTP/1.1 connection may have been closed by the backend while idle,
    /// which says nothing about the backend. An HTTP/2 connection's
    /// streams are not retried that way: a dead shared connection fails
    /// them all.
    pub(super) fn retry(&self) -> Retry {
        match self.upstream {
            Upstream::Http1 { reused: true, .. } => Retry::Fresh,
            _ => Retry::Elsewhere,
        }
    }
}

impl Forwarder {
    /// Connects to the target's next backend, moving on to the slot's
    /// other backends and then to the previous slot while the route's
    /// retries last. No request byte has gone out when this fails, so every
    /// retry is safe, whatever the method. `fresh`: HTTP/1.1 connections
    /// are new, not from the pool (after a stale one). `Err` is the
    /// client's answer.
    pub(super) async fn connect_with_retries(
        &self,
        session: &Downstream,
        table: &RoutingTable,
        pick: &mut Pick<'_>,
        fresh: bool,
    ) -> Result<Connection, Outcome> {
        let route = pick.route;
        // Asked only of slots that may speak HTTP/2, which cannot carry one.
        let upgrade =
            || hop_by_hop::requests_upgrade(&session.req_header().headers, &route.upgrades);
        loop {
            // Each attempt speaks its slot's protocol: a failed connect may
            // move the target to a previous slot of another kind.
            let slot = route.slot(pick.target.slot);
            if slot.backends.is_empty() {
                // Its names never resolved: the previous slot, if it may work.
                if to_previous(route, &mut pick.target) {
                    continue;
                }
                pick.follow();
                tracing::warn!(
                    route = &*route.name,
                    slot = &*slot.name,
                    "the slot has no backend address: its names have not resolved"
                );
                return Err(Outcome::Answer(502, BAD_GATEWAY_BODY));
            }
            if slot.h2c {
                // Counted on the slot it is about to connect to.
                pick.follow();
                if upgrade() {
                    tracing::warn!(
                        route = &*route.name,
                        "an upgrade (WebSocket) cannot go to an h2c slot"
                    );
                    return Err(Outcome::Answer(502, BAD_GATEWAY_BODY));
                }
            }
            let backend = pick.target.next_backend(route);
            let pool = PoolKey {
                slot_pool: slot.pool_key,
                backend,
            };
            let connected = if let Some(tls) = &slot.tls {
                // Boxed for the same reason as a new HTTP/1.1 connection.
                Box::pin(self.connect_tls(slot, pool, tls, upgrade(), fresh, table)).await
            } else if slot.h2c {
                let peer = peer_for(backend, pool.slot_pool, table);
                Box::pin(self.connect_h2c(backend, peer)).await
            } else {
                self.connect_http1(pool, fresh, table).await
            };
            match connected {
                Ok(connection) => {
                    pick.follow();
                    return Ok(connection);
                }
                Err(e) => {
                    self.connect_failed(route, pick.target.slot, backend, &e);
                    if !advance(route, &mut pick.target) {
                        pick.follow();
                        return Err(connect_error_answer(route, &e));
                    }
                }
            }
        }
    }

    /// An HTTP/1.1 connection to `pool`'s backend: an idle one of `pool`
    /// unless `fresh`, else a new one.
    async fn connect_http1(
        &self,
        pool: PoolKey,
        fresh: bool,
        table: &RoutingTable,
    ) -> pingora::Result<Connection> {
        let idle = if fresh { None } else { pool::take(pool) };
        let reused = idle.is_some();
        let stream = match idle {
            Some(stream) => stream,
            // Boxed: pingora's connect future is 8 KiB (and its peer 672
            // bytes), and unboxed they would size every request's state
            // (copied into its box per request) for the rare request that
            // opens a connection.
            None => Box::pin(self.open_http1(pool, table)).await?,
        };
        Ok(http1_connection(stream, reused, pool))
    }

    /// A new connection to `pool`'s backend.
    async fn open_http1(
        &self,
        pool: PoolKey,
        table: &RoutingTable,
    ) -> pingora::Result<pingora::protocols::Stream> {
        let peer = peer_for(pool.backend, pool.slot_pool, table);
        self.fresh.new_stream(&peer).await
    }

    /// One HTTP/2 stream to `peer` (h2c, prior knowledge): on a connection
    /// already open to it when one has a free stream, else on a new one.
    async fn connect_h2c(
        &self,
        backend: SocketAddr,
        mut peer: HttpPeer,
    ) -> pingora::Result<Connection> {
        peer.options.set_http_version(2, 2);
        peer.options.max_h2_streams = H2_STREAMS_PER_CONNECTION;
        let session = match self.h2.reused_http_session(&peer).await {
            Ok(Some(stream)) => stream,
            _ => match self.h2.new_http_session::<HttpPeer, ()>(&peer).await? {
                HttpSession::H2(stream) => stream,
                _ => {
                    return Err(pingora::Error::explain(
                        ErrorType::InternalError,
                        "an h2c backend was spoken to in HTTP/1.1",
                    ))
                }
            },
        };
        Ok(Connection {
            upstream: Upstream::H2(Box::new(H2Stream { session, peer })),
            backend,
        })
    }

    /// A connection to `slot`'s backend, `slot` being `protocol = "https"`:
    /// an idle HTTP/1.1 one of `pool` (unless `fresh`), a stream of an
    /// HTTP/2 connection already open to it (not for an upgrade, which
    /// HTTP/2 does not carry), else a new TLS connection, in the protocol
    /// the backend picks by ALPN. The name checked in the certificate is
    /// worked out only for a new connection: the slot (its pool key) and
    /// the address already decide it, so reuse needs neither.
    async fn connect_tls(
        &self,
        slot: &Slot,
        pool: PoolKey,
        tls: &BackendTls,
        upgrade: bool,
        fresh: bool,
        table: &RoutingTable,
    ) -> pingora::Result<Connection> {
        if !fresh {
            if let Some(stream) = pool::take(pool) {
                return Ok(http1_connection(stream, true, pool));
            }
        }
        let backend = pool.backend;
        let peer = peer_for(backend, pool.slot_pool, table);
        if !upgrade {
            if let Ok(Some(session)) = self.h2.reused_http_session(&peer).await {
                return Ok(h2_connection(session, peer, backend));
            }
        }
        // pingora's connector opens the TCP connection (timeout, socket
        // options) as for plain HTTP/1.1; the TLS is ours, with the slot's
        // client config, so sessions resume across connections.
        let tcp = self.fresh.new_stream(&peer).await?;
        let tcp = tcp
            .into_any()
            .downcast::<pingora::protocols::l4::stream::Stream>()
            .map_err(|_| {
                pingora::Error::explain(ErrorType::InternalError, "a new connection was not TCP")
            })?;
        let client = if upgrade {
            tls.http1_client.clone()
        } else {
            tls.client.clone()
        };
        let connector = pingora::tls::TlsConnector::from(client);
        let timeout = table.timeouts.upstream_connect;
        let host = slot.host_of(backend);
        let server_name = tls.server_name(&host);
        let handshake = pingora::protocols::tls::client::handshake(&connector, server_name, *tcp);
        let stream = match pingora_timeout::timeout(timeout, handshake).await {
            Ok(stream) => stream?,
            Err(_) => {
                return pingora::Error::e_explain(
                    ErrorType::ConnectTimedout,
                    format!("TLS handshake with {backend} took over {timeout:?}"),
                )
            }
        };
        if stream.selected_alpn_proto() != Some(ALPN::H2) {
            return Ok(http1_connection(Box::new(stream), false, pool));
        }
        let mut settings = H2HandshakeSettings::new();
        settings.max_streams = H2_STREAMS_PER_CONNECTION;
        let connection = v2::handshake(Box::new(stream), settings).await?;
        let session = connection.spawn_stream().await?.ok_or_else(|| {
            pingora::Error::explain(
                ErrorType::H2Error,
                "a new HTTP/2 connection had no free stream (the backend sent GOAWAY)",
            )
        })?;
        if connection.more_streams_allowed() {
            self.h2.in_use_pool().insert(peer.reuse_hash(), connection);
        }
        Ok(h2_connection(session, peer, backend))
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

    /// Gives a connection whose exchange finished cleanly back for the next
    /// request: to the pool (HTTP/1.1) or to the shared connection (h2c).
    pub(super) async fn release(&self, connection: Connection) {
        match connection.upstream {
            Upstream::Http1 { session, pool, .. } => {
                // A backend's `Connection: close` (or HTTP/1.0 without
                // keep-alive) ends the connection here.
                if let Some(stream) = session.reuse() {
                    pool::put(pool, stream);
                }
            }
            Upstream::H2(stream) => {
                let H2Stream { session, peer } = *stream;
                self.h2
                    .release_http_session(session, &peer, Some(UPSTREAM_IDLE_TIMEOUT));
            }
        }
    }
}

fn http1_connection(stream: Stream, reused: bool, pool: PoolKey) -> Connection {
    Connection {
        upstream: Upstream::Http1 {
            session: Http1Upstream::new(stream),
            reused,
            pool,
        },
        backend: pool.backend,
    }
}

fn h2_connection(session: Http2Session, peer: HttpPeer, backend: SocketAddr) -> Connection {
    Connection {
        upstream: Upstream::H2(Box::new(H2Stream { session, peer })),
        backend,
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
