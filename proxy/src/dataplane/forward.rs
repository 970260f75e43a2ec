//! One request, from its route to the end of its backend's answer, in
//! named phases:
//!
//! 1. **route** ([`Forwarder::route`]): its authority, its route, or our
//!    own 400, 404 or 301;
//! 2. **pick** (`pick.rs`): the slot, then a backend per attempt;
//! 3. **connect with retries** (`connect.rs`);
//! 4. **exchange**: `exchange.rs` for an HTTP/1.1 backend, `h2_upstream.rs`
//!    for an h2c one.
//!
//! An attempt that fails says in its [`Retry`] what may follow it;
//! [`Forwarder::attempts`] acts on that.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use switchyard_control::table::{LimitKey, RateLimit, Reason, RouteRef, Verdict};
use switchyard_control::RoutingTable;

use super::client_ip::Client;
use super::connect::{Connection, Upstream};
use super::downstream::Downstream;
use super::exchange::Exchange;
use super::h1::request_head;
use super::pick::{pick, Pick};
use super::redirect::https_location;
use super::retry::Retry;
use super::upstream_request::upstream_request;
use super::{
    authority, basic_auth, body_limit, exchange, h2_upstream, Forwarder, Outcome, BAD_GATEWAY_BODY,
    TOO_MANY_BODY, UNAUTHORIZED_BODY,
};

const NO_ROUTE_BODY: &[u8] = b"switchyard: no route for this host and path\n";

const FORBIDDEN_BODY: &[u8] = b"switchyard: this client may not reach this address\n";

const NO_CONNECT_BODY: &[u8] = b"switchyard: CONNECT is not served by a reverse proxy\n";

/// What a route in maintenance answers, unless it has its own 503 page.
const MAINTENANCE_PAGE: &[u8] = b"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Down for maintenance</title>\n<meta name=\"viewport\" content=\"width=device-width\"></head>\n<body style=\"font-family:sans-serif;max-width:36em;margin:4em auto;padding:0 1em\">\n<h1>Down for maintenance</h1><p>We will be back shortly. Please try again in a minute.</p>\n</body></html>\n";

/// How long a client is asked to wait before trying a route in maintenance
/// again.
const MAINTENANCE_RETRY_AFTER: &str = "60";

/// What the proxy knows of a request besides its header.
#[derive(Clone, Copy)]
pub(super) struct Incoming<'r> {
    pub id: &'r HeaderValue,
    /// It came over TLS.
    pub tls: bool,
    /// When its head had been read: the start of its latency, for the
    /// slot's series and the access log alike (one clock read).
    pub started: Instant,
    /// Whose request it is (`client_ip.rs`).
    pub client: Client,
}

/// Where a request went, for the access log.
#[derive(Default)]
pub(super) struct Trail {
    pub route: Option<Arc<str>>,
    pub slot: Option<Arc<str>>,
    pub backend: Option<SocketAddr>,
}

impl Forwarder {
    /// Sends the request to its route's backend and its answer back to the
    /// client; what is left to answer (our own answers, a redirect) is in
    /// the outcome.
    pub(super) async fn forward(
        &self,
        session: &mut Downstream,
        table: &RoutingTable,
        incoming: Incoming<'_>,
        trail: &mut Trail,
    ) -> Outcome {
        if let (Some(challenges), false) = (&self.acme, incoming.tls) {
            if let Some(answer) = challenges.answer(session.req_header().uri.path()) {
                let text = (header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                return Outcome::answer_with(200, Bytes::from(answer), text);
            }
        }
        let found = match self.route(session, table, incoming.tls, trail) {
            Ok(found) => found,
            Err(answer) => return answer,
        };
        let route = &table.routes[found.index];
        if let Some(access) = &route.access {
            match access.judge(incoming.client.ip, session.req_header().uri.path()) {
                Verdict::Pass => {}
                Verdict::Forbidden => return Outcome::Answer(403, FORBIDDEN_BODY),
                Verdict::Login(users) => {
                    let given = session.req_header().headers.get(header::AUTHORIZATION);
                    if !basic_auth::admits(users, given.map(|v| v.as_bytes())).await {
                        return unauthorized(&route.name);
                    }
                }
            }
        }
        let mut pick = pick(session, route, found.preview, incoming);
        if pick.route.maintenance && !matches!(pick.reason, Reason::Override | Reason::Preview) {
            return Outcome::Page {
                status: 503,
                page: (pick.route.error_pages.get(&503).cloned())
                    .unwrap_or_else(|| Bytes::from_static(MAINTENANCE_PAGE)),
                retry_after: Some(MAINTENANCE_RETRY_AFTER),
            };
        }
        if let Some(limit) = &pick.route.rate_limit {
            if let Err(wait) = rate_limited(limit, session, incoming) {
                let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
                let retry_after = (header::RETRY_AFTER, HeaderValue::from(seconds));
                return Outcome::answer_with(429, Bytes::from_static(TOO_MANY_BODY), retry_after);
            }
        }
        if body_limit::declared_too_large(session.req_header(), pick.route.max_body_size) {
            // Refused before a byte goes up, and before a `100 Continue`
            // could ask the client for the body.
            return Outcome::Reject(413, body_limit::TOO_LARGE_BODY);
        }
        let outcome = self
            .attempts(session, table, incoming, &mut pick, trail)
            .await;
        // Our own 502 and 504 answers count against the slot that failed,
        // and go out as the route's own page when it has one.
        if let Outcome::Answer(status, _) = outcome {
            pick.counted
                .load
                .answered(status, pick.reply.started.elapsed());
            if let Some(page) = pick.route.error_pages.get(&status) {
                let page = page.clone();
                return Outcome::Page {
                    status,
                    page,
                    retry_after: None,
                };
            }
        }
        outcome
    }

    /// The request's route. `Err` when it goes to none: 400 for an
    /// authority that cannot be routed by, 404 when no route matches, a
    /// 301 when the route wants HTTPS and this is plain HTTP.
    fn route(
        &self,
        session: &Downstream,
        table: &RoutingTable,
        tls: bool,
        trail: &mut Trail,
    ) -> Result<RouteRef, Outcome> {
        let request = session.req_header();
        if request.method == http::Method::CONNECT {
            // A tunnel to wherever the client names is a forward proxy's
            // job; passed on, the tunnel's bytes would be read as HTTP
            // (RFC 9112 §6.3 item 2).
            return Err(Outcome::Reject(405, NO_CONNECT_BODY));
        }
        let host =
            match authority::request_authority(request.version, &request.uri, &request.headers) {
                Ok(host) => host,
                Err(bad) => return Err(Outcome::Reject(400, bad.body())),
            };
        let Some(found) = table.route_ref_for(host, request.uri.path()) else {
            return Err(match table.not_found_page(host) {
                Some(page) => Outcome::Page {
                    status: 404,
                    page: page.clone(),
                    retry_after: None,
                },
                None => Outcome::Answer(404, NO_ROUTE_BODY),
            });
        };
        let route = &table.routes[found.index];
        trail.route = Some(route.name.clone());
        if route.redirect_https && !tls {
            let target = request.uri.path_and_query().map_or("/", |p| p.as_str());
            if let Some(location) =
                https_location(host.unwrap_or_default(), self.https_port, target)
            {
                return Err(Outcome::Redirect(location));
            }
        }
        Ok(found)
    }

    /// Connects and exchanges until an attempt finishes or what its failure
    /// allows ([`Retry`]) is used up.
    async fn attempts(
        &self,
        session: &mut Downstream,
        table: &RoutingTable,
        incoming: Incoming<'_>,
        pick: &mut Pick<'_>,
        trail: &mut Trail,
    ) -> Outcome {
        let route = pick.route;
        // An HTTP/2 request body need not declare its length; HTTP/1.1 to
        // the backend then needs chunked framing.
        let unframed_body = session.req_header().version == http::Version::HTTP_2
            && !session.is_body_empty()
            && !session
                .req_header()
                .headers
                .contains_key(header::CONTENT_LENGTH);
        let mut fresh = false;
        loop {
            let connected = self.connect_with_retries(session, table, pick, fresh).await;
            let mut connection = match connected {
                Ok(connection) => connection,
                Err(answer) => return answer,
            };
            trail.slot = Some(route.slot(pick.target.slot).name.clone());
            trail.backend = Some(connection.backend);
            let ended = exchange(
                session,
                &mut connection,
                incoming,
                unframed_body,
                pick,
                table,
            )
            .await;
            match ended {
                Exchange::Finished { reusable_upstream } => {
                    if reusable_upstream {
                        self.release(connection).await;
                    }
                    return if session.is_body_done() && !session.was_upgraded() {
                        Outcome::Done
                    } else {
                        Outcome::DoneClose
                    };
                }
                Exchange::Dropped(Retry::Fresh, e) => {
                    tracing::debug!("pooled upstream connection was stale: {e}");
                    fresh = true;
                }
                Exchange::Dropped(Retry::Elsewhere, e) => {
                    if !self.dropped(pick, connection.backend, &e) {
                        return Outcome::Answer(502, BAD_GATEWAY_BODY);
                    }
                    fresh = false;
                }
                // `upstream_failed` logged why.
                Exchange::Failed(outcome) => return outcome,
            }
        }
    }
}

/// The exchange phase, on whichever protocol the connection speaks, with
/// the request as that protocol's backend gets it. `unframed_body`: an
/// HTTP/2 request body of no declared length (chunked to an HTTP/1.1
/// backend).
async fn exchange(
    session: &mut Downstream,
    connection: &mut Connection,
    incoming: Incoming<'_>,
    unframed_body: bool,
    pick: &mut Pick<'_>,
    table: &RoutingTable,
) -> Exchange {
    let retry = connection.retry();
    let upgrades = &pick.route.upgrades;
    let load = &mut pick.counted.load;
    let reply = &pick.reply;
    let timeouts = &table.timeouts;
    let body = body_limit::Allowance::new(pick.route.max_body_size);
    match &mut connection.upstream {
        Upstream::Http1 { session: up, .. } => {
            let client = session.client_ip();
            let mut head = Vec::with_capacity(512);
            let request = session.req_header();
            let Some(written) = request_head::write(
                &mut head,
                request,
                client,
                incoming,
                unframed_body,
                upgrades,
            ) else {
                return Exchange::Failed(Outcome::Reject(400, super::BAD_REQUEST_BODY));
            };
            exchange::exchange(
                session, up, &head, written, retry, load, reply, timeouts, body,
            )
            .await
        }
        Upstream::H2(up) => {
            let request = upstream_request(session, incoming, upgrades);
            let up = &mut up.session;
            h2_upstream::exchange(session, up, request, retry, load, reply, timeouts, body).await
        }
    }
}

/// `401` with a Basic challenge for the route's realm (its name).
fn unauthorized(realm: &str) -> Outcome {
    // A realm is a quoted string: the route's name is a config token, but
    // quotes and backslashes are kept out regardless.
    let realm: String = realm.chars().filter(|c| !matches!(c, '"' | '\\')).collect();
    let challenge = format!("Basic realm=\"{realm}\", charset=\"UTF-8\"");
    let challenge = HeaderValue::from_str(&challenge)
        .unwrap_or_else(|_| HeaderValue::from_static("Basic charset=\"UTF-8\""));
    Outcome::answer_with(
        401,
        Bytes::from_static(UNAUTHORIZED_BODY),
        (header::WWW_AUTHENTICATE, challenge),
    )
}

/// Takes one request of its client's allowance under `limit`: `Err` with
/// how long until the next is allowed.
fn rate_limited(
    limit: &RateLimit,
    session: &Downstream,
    incoming: Incoming<'_>,
) -> Result<(), std::time::Duration> {
    let header = match &limit.spec.key {
        LimitKey::Header(name) => session.req_header().headers.get(name.as_str()),
        LimitKey::ClientIp => None,
    };
    match (header, incoming.client.ip) {
        (Some(value), _) => limit.check(value.as_bytes(), incoming.started),
        (None, Some(std::net::IpAddr::V4(ip))) => limit.check(&ip.octets(), incoming.started),
        (None, Some(std::net::IpAddr::V6(ip))) => limit.check(&ip.octets(), incoming.started),
        (None, None) => limit.check(b"", incoming.started),
    }
}
