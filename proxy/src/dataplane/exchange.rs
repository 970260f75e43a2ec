//! One request's exchange with an HTTP/1.1 backend: the request header
//! up, then the request body up and the response down, in one task and one
//! loop (no channels, no second task), with the client watched for hanging
//! up while the backend thinks. Also what both exchanges share: [`Reply`],
//! [`Exchange`] and how a failure maps to the client's answer.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use pingora::http::ResponseHeader;
use pingora::{Error, ErrorType};

use super::body_limit::Allowance;
use super::downstream::Downstream;
use super::h1::request_head::Written;
use super::h1::response_head::ResponseHead;
use super::h1::upstream::Http1Upstream;
use super::retry::{after_header, Retry};
use super::{request_id, Outcome, BAD_GATEWAY_BODY, BAD_REQUEST_BODY, GATEWAY_TIMEOUT_BODY};
use switchyard_control::table::{FailureKind, LoadGuard, Timeouts};

/// The next thing the backend sent: its (next) response header, or body.
enum FromUpstream {
    Header(pingora::Result<ResponseHead>),
    Body(pingora::Result<Option<Bytes>>),
}

/// One future for both upstream reads, so the pump's `select!` borrows the
/// upstream session once.
async fn next_from_upstream(upstream: &mut Http1Upstream, header_sent: bool) -> FromUpstream {
    if header_sent {
        FromUpstream::Body(upstream.read_body().await)
    } else {
        FromUpstream::Header(upstream.read_response().await)
    }
}

/// What the response gets from the proxy, and what it is measured from.
pub(super) struct Reply<'t> {
    /// When the request was read: latency counts from here to the
    /// response header.
    pub started: Instant,
    /// The sticky cookie a newly assigned client gets.
    pub set_cookie: Option<&'t HeaderValue>,
    /// Goes back to the client unless the backend answered with its own.
    pub request_id: &'t HeaderValue,
    /// `Strict-Transport-Security`, for an HTTPS response that lacks one.
    pub hsts: Option<&'t HeaderValue>,
}

impl Reply<'_> {
    /// What the proxy adds to every response it passes on, its hop-by-hop
    /// headers already out: the sticky cookie, HSTS and the request id.
    pub(super) fn decorate(&self, response: &mut ResponseHeader) {
        let extra = self.extra_fields(|name| response.headers.contains_key(name));
        for (name, value) in extra.into_iter().flatten() {
            let _ = response.append_header(name, value.clone());
        }
    }

    /// The fields [`Self::decorate`] adds, for a response that `has` the
    /// fields it has: the cookie always, HSTS and the request id unless
    /// the backend gave its own.
    pub(super) fn extra_fields(
        &self,
        has: impl Fn(&'static str) -> bool,
    ) -> [Option<(&'static str, &HeaderValue)>; 3] {
        let hsts = self
            .hsts
            .filter(|_| !has(header::STRICT_TRANSPORT_SECURITY.as_str()));
        let request_id = Some(self.request_id).filter(|_| !has(request_id::HEADER));
        [
            self.set_cookie.map(|v| (header::SET_COOKIE.as_str(), v)),
            hsts.map(|v| (header::STRICT_TRANSPORT_SECURITY.as_str(), v)),
            request_id.map(|v| (request_id::HEADER, v)),
        ]
    }
}

/// How one attempt at a backend ended.
pub(super) enum Exchange {
    Finished {
        reusable_upstream: bool,
    },
    /// The backend dropped the request before answering, at a point where
    /// it may go again as the [`Retry`] says.
    Dropped(Retry, Box<Error>),
    /// Nothing may follow: the client gets this (the failure is counted).
    Failed(Outcome),
}

/// Sends the request header and then pumps the request body up and the
/// response down until both are done, in one task: no channels and no
/// second task per request. While waiting for the backend it also watches
/// the client, so a client that hangs up ends the upstream request at once.
/// `retry`: what a drop allows before the header went out; `body`: what the
/// route lets the request body be.
#[allow(clippy::too_many_arguments)]
pub(super) async fn exchange(
    session: &mut Downstream,
    upstream: &mut Http1Upstream,
    head: &[u8],
    written: Written,
    retry: Retry,
    load: &mut LoadGuard,
    reply: &Reply<'_>,
    timeouts: &Timeouts,
    body: Allowance,
) -> Exchange {
    upstream.read_timeout = Some(timeouts.upstream_read);
    upstream.write_timeout = Some(timeouts.upstream_read);
    if let Err(e) = upstream.write_request_head(head, written).await {
        // The backend cannot have acted on a request it did not get whole:
        // any method may go again.
        return Exchange::Dropped(retry, e);
    }
    let retry = after_header(retry, session);
    let mut pump = Pump {
        session,
        upstream,
        load,
        reply,
        timeouts,
        retry,
        body,
        request_done: false,
        header_sent: false,
        response_done: false,
        upgrade_watch: None,
        // Set again when an upgrade starts; until then unread.
        last_byte: reply.started,
    };
    pump.run().await
}

/// One exchange's two sessions and where it stands, so that each event of
/// its loop has a handler of its own.
struct Pump<'a, 'r> {
    session: &'a mut Downstream,
    upstream: &'a mut Http1Upstream,
    load: &'a mut LoadGuard,
    reply: &'a Reply<'r>,
    timeouts: &'a Timeouts,
    /// What a drop allows now: `None` once body bytes went up.
    retry: Option<Retry>,
    /// What is left of the request body's `max_body_size`.
    body: Allowance,
    request_done: bool,
    /// The response header went to the client.
    header_sent: bool,
    response_done: bool,
    /// Set once the connection is upgraded: checks its idle time and its
    /// slot, every second.
    upgrade_watch: Option<tokio::time::Interval>,
    last_byte: Instant,
}

impl Pump<'_, '_> {
    async fn run(&mut self) -> Exchange {
        self.request_done = self.session.is_body_empty();
        if self.request_done {
            if let Err(e) = self.upstream.finish_body().await {
                return upstream_failed(e, self.retry, self.load);
            }
        }
        loop {
            if self.response_done {
                // When the backend answered before the request body ended (an
                // early 413, say), neither connection is fit for another
                // request: the caller closes the client's, and the upstream
                // one is dropped.
                return Exchange::Finished {
                    reusable_upstream: self.request_done && !self.upstream.was_upgraded(),
                };
            }
            let ended = tokio::select! {
                biased;
                event = next_from_upstream(self.upstream, self.header_sent), if !self.response_done => {
                    match event {
                        FromUpstream::Header(read) => self.response_header(read).await,
                        FromUpstream::Body(chunk) => self.response_body(chunk).await,
                    }
                }
                chunk = self.session.read_body_or_idle(self.request_done) => {
                    self.request_body(chunk).await
                }
                _ = tick(&mut self.upgrade_watch) => self.check_upgrade(),
            };
            if let Some(ended) = ended {
                return ended;
            }
        }
    }

    /// The backend's (next) response header: passed on, 1xx included.
    /// `Some` when the exchange ends here.
    async fn response_header(&mut self, read: pingora::Result<ResponseHead>) -> Option<Exchange> {
        let head = match read {
            Ok(head) => head,
            Err(e) => return Some(upstream_failed(e, self.retry, self.load)),
        };
        let status = head.status.as_u16();
        if status == 101 && !self.upstream.was_upgraded() {
            // A switch of protocols the client did not ask for (or asked
            // for one we do not carry): passing it on would turn the client
            // connection into a tunnel the client does not expect.
            tracing::warn!("the backend answered 101 to a request that asked for no upgrade");
            self.load.upstream_failed(FailureKind::Protocol);
            return Some(Exchange::Failed(Outcome::Answer(502, BAD_GATEWAY_BODY)));
        }
        if (100..200).contains(&status) && status != 101 {
            // Informational answers go to the client as they are; the final
            // one follows.
            if self
                .session
                .write_backend_head(head, None, false)
                .await
                .is_err()
            {
                return Some(Exchange::Failed(Outcome::Abandon));
            }
            return None;
        }
        self.load.answered(status, self.reply.started.elapsed());
        // A body that ends when the backend closes goes to an HTTP/1.1
        // client chunked, as nginx sends it: the client's connection need
        // not close with the backend's.
        let chunk_it = self.upstream.body_runs_until_close()
            && self.session.req_header().version == http::Version::HTTP_11
            && !head.transfer_encoding;
        let written = self
            .session
            .write_backend_head(head, Some(self.reply), chunk_it)
            .await;
        if let Err(e) = written {
            tracing::debug!("client went away: {e}");
            return Some(Exchange::Failed(Outcome::Abandon));
        }
        self.header_sent = true;
        if self.upstream.was_upgraded() {
            self.start_upgrade();
        }
        None
    }

    /// Both directions now carry raw bytes until one side closes, or the
    /// upgrade's idle timeout or its slot's drain ends it.
    fn start_upgrade(&mut self) {
        self.upstream.upgrade_body_writer();
        // Quiet is the upgrade's own business, timed by `upgrade_idle` in
        // `check_upgrade`: the per-read timeouts of either side would race
        // with it (each loop turn restarts them, so whichever fired first
        // won).
        self.upstream.read_timeout = None;
        self.session.set_read_timeout(None);
        self.request_done = false;
        self.load.upgraded();
        self.upgrade_watch = Some(tokio::time::interval(UPGRADE_CHECK_EVERY));
        self.last_byte = Instant::now();
    }

    /// Some of the response body, or its end. `Some` when the exchange
    /// ends here.
    async fn response_body(&mut self, chunk: pingora::Result<Option<Bytes>>) -> Option<Exchange> {
        match chunk {
            // pingora's reader says "nothing yet" with an empty chunk (a read
            // that ended inside a chunk-size line, say). Written on, it would
            // be the last-chunk marker and end the client's response early.
            Ok(Some(bytes)) if bytes.is_empty() => {}
            Ok(Some(bytes)) => {
                self.last_byte = Instant::now();
                if let Err(e) = self.session.write_response_body(bytes, false).await {
                    tracing::debug!("client went away: {e}");
                    return Some(Exchange::Failed(Outcome::Abandon));
                }
                // Nothing more of the body is at hand: what was written goes
                // out now, not when more arrives. A body of known length
                // may still come slowly (a progress report, a long export),
                // and its client should see each piece as nginx sends it.
                if !self.upstream.has_buffered() {
                    if let Err(e) = self.session.flush().await {
                        tracing::debug!("client went away: {e}");
                        return Some(Exchange::Failed(Outcome::Abandon));
                    }
                }
            }
            Ok(None) => {
                self.response_done = true;
                if self.upstream.was_upgraded() {
                    // The backend closed its side of an upgraded connection:
                    // nothing more will flow.
                    self.request_done = true;
                }
            }
            Err(e) => {
                tracing::warn!("upstream broke off its response: {e}");
                self.load.upstream_failed(FailureKind::Protocol);
                return Some(Exchange::Failed(Outcome::Abandon));
            }
        }
        None
    }

    /// Some of the request body, its end, or (once it ended) the client
    /// hanging up. `Some` when the exchange ends here.
    async fn request_body(&mut self, chunk: pingora::Result<Option<Bytes>>) -> Option<Exchange> {
        let ended = match chunk {
            // Nothing yet (see the response side): an empty write upstream
            // would end the body there, and the rest of it would reach the
            // backend as a request of its own.
            Ok(Some(bytes)) if bytes.is_empty() => {
                !self.upstream.was_upgraded() && self.session.is_body_done()
            }
            Ok(Some(bytes)) => {
                // An upgraded connection's bytes are no request body.
                if !self.upstream.was_upgraded() {
                    if let Err(ended) = self.body.take(bytes.len(), self.header_sent) {
                        return Some(ended);
                    }
                }
                // Body bytes went up: the request may not run again.
                self.retry = None;
                self.last_byte = Instant::now();
                if let Err(e) = self.upstream.write_body(&bytes).await {
                    if self.header_sent {
                        tracing::debug!("upstream stopped reading the body: {e}");
                        self.request_done = true;
                        return None;
                    }
                    return Some(upstream_failed(e, None, self.load));
                }
                // The chunk that ends the body: pingora's HTTP/2 stream never
                // says `None` after it (its next read waits for the stream to
                // close), so look now.
                !self.upstream.was_upgraded() && self.session.is_body_done()
            }
            Ok(None) => true,
            // The upstream connection is dropped with the failed exchange: it
            // never carries bytes after a body we could not frame.
            Err(e) => return Some(client_body_failed(&e, self.header_sent)),
        };
        if ended {
            self.request_done = true;
            if let Err(e) = self.upstream.finish_body().await {
                if !self.header_sent {
                    // The body went up to its end: no retry.
                    return Some(upstream_failed(e, None, self.load));
                }
            }
        }
        None
    }

    /// An upgraded connection's idle time and slot, every
    /// [`UPGRADE_CHECK_EVERY`]. `Some` when the exchange ends here.
    fn check_upgrade(&self) -> Option<Exchange> {
        let timeouts = self.timeouts;
        if self.last_byte.elapsed() >= timeouts.upgrade_idle {
            tracing::debug!(
                "closing an upgraded connection idle for {:?}",
                timeouts.upgrade_idle
            );
            return Some(Exchange::Finished {
                reusable_upstream: false,
            });
        }
        if self
            .load
            .slot()
            .retired_for()
            .is_some_and(|d| d >= timeouts.drain)
        {
            tracing::info!("closing an upgraded connection: its slot has had no new traffic for drain_timeout ({:?})", timeouts.drain);
            return Some(Exchange::Finished {
                reusable_upstream: false,
            });
        }
        None
    }
}

/// How often an upgraded connection's idle time and slot are checked.
const UPGRADE_CHECK_EVERY: Duration = Duration::from_secs(1);

/// The next tick of `watch`, or never when there is none.
async fn tick(watch: &mut Option<tokio::time::Interval>) {
    match watch {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// What a client whose request body broke off gets. A body the proxy
/// cannot frame (a bad chunk size, an over-long chunk extension, a missing
/// CRLF) is answered `400` and the connection closed, when no response
/// began; a client that went away, or one whose response already began,
/// is closed. The caller drops the upstream connection either way.
pub(super) fn client_body_failed(e: &Error, response_started: bool) -> Exchange {
    if !response_started && unframeable_body(e) {
        tracing::debug!("request body cannot be framed: {e}");
        return Exchange::Failed(Outcome::Reject(400, BAD_REQUEST_BODY));
    }
    tracing::debug!("client went away: {e}");
    Exchange::Failed(Outcome::Abandon)
}

/// Whether a body read failed on the bytes themselves rather than on the
/// connection. pingora names its chunked-framing errors only as custom
/// error types.
fn unframeable_body(e: &Error) -> bool {
    match e.etype() {
        ErrorType::Custom(name) => matches!(*name, "InvalidChunk" | "InvalidTrailerEnd"),
        ErrorType::InvalidHTTPHeader => true,
        _ => false,
    }
}

/// Maps an upstream failure before the response header to what the client
/// gets: another try when the backend dropped the connection and `retry`
/// (what the attempt has left) allows one; else 504 on a timeout and 502
/// otherwise.
pub(super) fn upstream_failed(e: Box<Error>, retry: Option<Retry>, load: &LoadGuard) -> Exchange {
    let dropped = matches!(
        e.etype(),
        ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
    );
    if let (true, Some(retry)) = (dropped, retry) {
        return Exchange::Dropped(retry, e);
    }
    match e.etype() {
        ErrorType::ReadTimedout | ErrorType::WriteTimedout | ErrorType::ConnectTimedout => {
            tracing::error!("upstream timed out: {e}");
            load.upstream_failed(FailureKind::Timeout);
            Exchange::Failed(Outcome::Answer(504, GATEWAY_TIMEOUT_BODY))
        }
        _ => {
            tracing::error!("upstream failed: {e}");
            load.upstream_failed(if dropped {
                FailureKind::Dropped
            } else {
                FailureKind::Protocol
            });
            Exchange::Failed(Outcome::Answer(502, BAD_GATEWAY_BODY))
        }
    }
}
