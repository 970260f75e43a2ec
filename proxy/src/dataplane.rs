//! The data plane: pingora's `ProxyHttp` callbacks for switchyard.
//!
//! Each request loads the published [`RoutingTable`] once and keeps that
//! generation to the end: a request that started before a switch finishes on
//! the slot it was sent to, new requests see the new table at once. Choosing
//! the route, slot and backend takes no lock and no allocation.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::header;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType};
use switchyard_control::{RoutingTable, SharedTable};

/// Idle pooled upstream connections are closed after this.
const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Requests being served right now, for a graceful stop.
#[derive(Debug, Default)]
pub struct InFlight(AtomicUsize);

impl InFlight {
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// Counts one request while it lives; dropped with the request's context,
/// whichever way the request ends.
pub struct InFlightGuard(Arc<InFlight>);

impl InFlightGuard {
    pub fn new(counter: &Arc<InFlight>) -> InFlightGuard {
        counter.0.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(counter.clone())
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// switchyard's `ProxyHttp`.
pub struct Switchyard {
    table: SharedTable,
    in_flight: Arc<InFlight>,
}

impl Switchyard {
    pub fn new(table: SharedTable, in_flight: Arc<InFlight>) -> Switchyard {
        Switchyard { table, in_flight }
    }
}

/// Where one request goes, decided once in `request_filter`.
pub struct RequestCtx {
    /// The generation this request is served from, to its end.
    table: Option<Arc<RoutingTable>>,
    route: usize,
    slot: usize,
    /// Connect attempts made so far (first try included).
    attempts: u32,
    /// Where this request entered the current slot's round-robin.
    backend_start: usize,
    /// Connect attempts made on the current slot, to move to the next backend.
    attempts_on_slot: usize,
    _in_flight: InFlightGuard,
}

const NO_ROUTE_BODY: &[u8] = b"switchyard: no route for this host and path\n";
const BAD_GATEWAY_BODY: &[u8] = b"switchyard: the upstream failed to answer\n";
const GATEWAY_TIMEOUT_BODY: &[u8] = b"switchyard: the upstream timed out\n";

#[async_trait]
impl ProxyHttp for Switchyard {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            table: None,
            route: 0,
            slot: 0,
            attempts: 0,
            backend_start: 0,
            attempts_on_slot: 0,
            _in_flight: InFlightGuard::new(&self.in_flight),
        }
    }

    /// Response compression is off in switchyard: leave the module out
    /// instead of running it disabled on every request.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    /// Called once per request after its header is read: picks the route and
    /// slot, or answers 404 when no route matches.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let table = self.table.load_full();
        session.set_keepalive(Some(table.timeouts.client_keepalive.as_secs().max(1)));
        let request = session.req_header();
        let host = request
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| request.uri.host());
        let Some(route_index) = table.route_index_for(host, request.uri.path()) else {
            session
                .respond_error_with_body(404, Bytes::from_static(NO_ROUTE_BODY))
                .await?;
            return Ok(true);
        };
        ctx.route = route_index;
        let route = &table.routes[route_index];
        ctx.slot = route.pick_slot();
        ctx.backend_start = route.slot(ctx.slot).next_start();
        ctx.table = Some(table);
        Ok(false)
    }

    /// Called before each connect attempt: the next backend of the chosen
    /// slot (round-robin; later attempts move on to other backends).
    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let Some(table) = ctx.table.as_ref() else {
            return Err(Error::explain(ErrorType::InternalError, "no route chosen"));
        };
        let slot = table.routes[ctx.route].slot(ctx.slot);
        let backend: SocketAddr = slot.backend(ctx.backend_start, ctx.attempts_on_slot);
        ctx.attempts += 1;
        ctx.attempts_on_slot += 1;
        let mut peer = HttpPeer::new(backend, false, String::new());
        peer.group_key = slot.pool_key;
        peer.options.connection_timeout = Some(table.timeouts.upstream_connect);
        peer.options.read_timeout = Some(table.timeouts.upstream_read);
        peer.options.idle_timeout = Some(UPSTREAM_IDLE_TIMEOUT);
        Ok(Box::new(peer))
    }

    /// Called when connecting failed: no request byte went out, so the request
    /// may go elsewhere — another backend of the slot, then the previous
    /// slot — up to the route's `retries`.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let Some(table) = ctx.table.as_ref() else {
            return e;
        };
        let route = &table.routes[ctx.route];
        tracing::warn!(route = &*route.name, slot = &*route.slot(ctx.slot).name, backend = %peer._address, "connect failed: {e}");
        if ctx.attempts > route.retries {
            return e;
        }
        if ctx.attempts_on_slot >= route.slot(ctx.slot).backends.len() {
            match route.previous.filter(|&p| p != ctx.slot) {
                Some(previous) => {
                    ctx.slot = previous;
                    ctx.backend_start = route.slot(previous).next_start();
                    ctx.attempts_on_slot = 0;
                }
                None if route.slot(ctx.slot).backends.len() == 1 => return e,
                None => {}
            }
        }
        e.set_retry(true);
        e
    }

    /// Called before the request goes upstream: tells the backend who the
    /// client is and what it asked for.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        crate::hop_by_hop::strip_request(upstream_request);
        if let Some(client) = session.client_addr().and_then(|a| a.as_inet()) {
            let ip = client.ip().to_string();
            let forwarded_for = match upstream_request.headers.get("x-forwarded-for") {
                Some(existing) => {
                    let mut list = existing.as_bytes().to_vec();
                    list.extend_from_slice(b", ");
                    list.extend_from_slice(ip.as_bytes());
                    list
                }
                None => ip.into_bytes(),
            };
            upstream_request.insert_header("x-forwarded-for", forwarded_for)?;
        }
        upstream_request.insert_header("x-forwarded-proto", "http")?;
        if let Some(host) = session.req_header().headers.get(header::HOST).cloned() {
            upstream_request.insert_header("x-forwarded-host", host)?;
        }
        Ok(())
    }

    /// Called when the upstream's response header arrives: its hop-by-hop
    /// headers stay on the upstream hop.
    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        crate::hop_by_hop::strip_response(upstream_response);
        Ok(())
    }

    /// Called before pingora logs a request's final error at ERROR level.
    /// A client that hangs up before its answer is normal traffic, not a
    /// fault of ours or of the upstream: it goes to debug instead.
    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, error: &Error) -> bool {
        let client_gone = error.esource() == &ErrorSource::Downstream
            && matches!(
                error.etype(),
                ErrorType::ConnectionClosed | ErrorType::WriteError | ErrorType::ReadError
            );
        if client_gone {
            tracing::debug!("client went away: {error}");
        }
        client_gone
    }

    /// Called when the request failed for good: a short 502 (or 504 on a
    /// timeout) when the upstream is at fault.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        _ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let (code, body): (u16, &'static [u8]) = match e.etype() {
            ErrorType::HTTPStatus(code) => (*code, b""),
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
                if e.esource() == &ErrorSource::Upstream =>
            {
                (504, GATEWAY_TIMEOUT_BODY)
            }
            _ => match e.esource() {
                ErrorSource::Upstream => (502, BAD_GATEWAY_BODY),
                ErrorSource::Downstream => match e.etype() {
                    // The client is gone: nobody to answer.
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => {
                        (0, b"")
                    }
                    _ => (400, b""),
                },
                _ => (500, b""),
            },
        };
        if code > 0 {
            if let Err(write_error) = session
                .respond_error_with_body(code, Bytes::from_static(body))
                .await
            {
                tracing::debug!("cannot send the error response: {write_error}");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }
}
