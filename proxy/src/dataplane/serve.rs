//! A client connection's requests, one after another: reading each one,
//! handing it to [`Forwarder::forward`], answering what `forward` could
//! not pass on, and the access log record.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::HeaderValue;
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;

use super::downstream::Downstream;
use super::forward::{Incoming, Trail};
use super::h1::downstream::Http1Downstream;
use super::h1::request;
use super::redirect::redirect;
use super::{client_ip, head, request_id, Forwarder, InFlightGuard, Outcome};
use crate::access_log;

impl Forwarder {
    /// Serves one HTTP/1.x client connection: its requests one after
    /// another, for as long as it stays reusable. One task and one boxed
    /// future per connection, not per request.
    ///
    /// Each request head is read by [`head::read_head`] (size and time
    /// limits of our own, no buffer while idle) and parsed by
    /// [`request::parse`]; the request's own state is boxed, so an idle
    /// connection holds only its socket and this loop.
    pub(crate) async fn serve_http1(
        &self,
        mut stream: Stream,
        tls: bool,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let client_ip = stream
            .get_socket_digest()
            .and_then(|digest| digest.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        // A new connection gets as long for its first request as a kept-alive
        // one gets for its next: an idle connection is never held forever.
        let mut wait = self.first_request_wait();
        let mut pipelined = None;
        loop {
            let head = head::read_head(&mut stream, pipelined.take(), self.head_limits(wait)).await;
            let head::Head::Read(mut bytes) = head else {
                return None;
            };
            let parsed = match request::parse(&mut bytes) {
                Ok(Some(parsed)) => parsed,
                // `read_head` found the head's end, so a head httparse
                // still finds partial is one it reads differently: bad.
                Ok(None) => {
                    return head::refuse_bad_request(&mut stream, "an unreadable request head")
                        .await
                }
                Err(e) => return head::refuse_bad_request(&mut stream, &e.to_string()).await,
            };
            let downstream = Http1Downstream::new(stream, parsed, bytes, client_ip);
            // Boxed: the request's state (the exchange, its select!,
            // retries) lives on the heap only while the request does,
            // instead of inflating every connection's task for its whole
            // life.
            let served = Box::pin(self.serve_request(downstream, tls, shutdown));
            (stream, pipelined, wait) = served.await?;
        }
    }

    /// Serves one request, and hands the stream back when it can take
    /// another: with any bytes read past this request and the keep-alive
    /// timeout.
    async fn serve_request(
        &self,
        downstream: Http1Downstream,
        tls: bool,
        shutdown: &ShutdownWatch,
    ) -> Option<(Stream, Option<BytesMut>, u64)> {
        let mut downstream = Downstream::H1(downstream);
        let wait = self.serve_one(&mut downstream, tls, shutdown).await?;
        let Downstream::H1(downstream) = downstream else {
            unreachable!("an HTTP/1 request stays one");
        };
        match downstream.finish().await {
            Ok(Some((stream, pipelined))) => Some((stream, pipelined, wait)),
            Ok(None) => None,
            Err(e) => {
                tracing::debug!("client connection ended: {e}");
                None
            }
        }
    }

    /// Seconds a new connection may take to send its first request: the
    /// keep-alive timeout.
    pub(super) fn first_request_wait(&self) -> u64 {
        self.table.load().timeouts.client_keepalive.as_secs().max(1)
    }

    /// How long a request head may take from its first byte.
    pub(super) fn header_timeout(&self) -> Duration {
        self.table.load().timeouts.client_header
    }

    /// How long the next request head may be waited for (`wait` seconds
    /// for its first byte), take, and how large it may be.
    fn head_limits(&self, wait: u64) -> head::HeadLimits {
        let table = self.table.load();
        head::HeadLimits {
            keepalive: Duration::from_secs(wait),
            header_timeout: table.timeouts.client_header,
            max_size: table.max_header_size,
        }
    }
}

// Idle kept-alive connections are not woken on a stop: `RunningProxy::stop`
// drains in-flight requests and then drops the runtime, which closes them.
// Not selecting on a stop signal saves a `Notify` registration per request.

impl Forwarder {
    /// Reads and serves one request. `None` when the connection must close;
    /// otherwise the keep-alive timeout, in seconds, for the next request.
    pub(super) async fn serve_one(
        &self,
        session: &mut Downstream,
        tls: bool,
        shutdown: &ShutdownWatch,
    ) -> Option<u64> {
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
        let client = client_ip::of_request(
            session.client_ip(),
            &session.req_header().headers,
            &table.trusted_proxies,
        );
        let mut trail = Trail::default();

        let incoming = Incoming {
            id: &request_id,
            tls,
            started,
            client,
        };
        let outcome = self.forward(session, &table, incoming, &mut trail).await;
        let next = finish_request(session, outcome, keepalive, &request_id).await;
        self.record_access(session, trail, started, request_id, client.ip);
        next
    }

    /// The access log's record of a request, when the log is on.
    fn record_access(
        &self,
        session: &Downstream,
        trail: Trail,
        started: Instant,
        request_id: HeaderValue,
        client: Option<std::net::IpAddr>,
    ) {
        if let Some(log) = &self.access_log {
            log.record(access_log::Entry {
                client,
                method: session.req_header().method.clone(),
                uri: session.req_header().uri.clone(),
                route: trail.route,
                slot: trail.slot,
                backend: trail.backend,
                // 0: the client left before any answer.
                status: session.response_status().unwrap_or(0),
                bytes: session.body_bytes_sent(),
                duration: started.elapsed(),
                request_id,
            });
        }
    }
}

/// Sends what `forward` left to answer (our own answers, a redirect) and
/// decides whether the connection takes another request: `None` when it
/// must close, else the keep-alive timeout for the next one.
async fn finish_request(
    session: &mut Downstream,
    outcome: Outcome,
    keepalive: u64,
    request_id: &HeaderValue,
) -> Option<u64> {
    match outcome {
        Outcome::Done => Some(keepalive),
        Outcome::DoneClose => {
            session.set_keepalive(None);
            Some(keepalive)
        }
        Outcome::Answer(status, body) => {
            answer_and_go_on(session, status, Bytes::from_static(body), None, request_id).await;
            Some(keepalive)
        }
        Outcome::Reject(status, body) => {
            session.set_keepalive(None);
            if let Err(e) = answer(session, status, body, request_id).await {
                tracing::debug!("cannot send the {status} answer: {e}");
            }
            session.close().await;
            None
        }
        Outcome::Abandon => {
            session.shutdown().await;
            None
        }
        Outcome::AnswerWith(own) => {
            let super::OwnAnswer {
                status,
                body,
                header,
            } = *own;
            answer_and_go_on(session, status, body, Some(header), request_id).await;
            Some(keepalive)
        }
        Outcome::Page {
            status,
            page,
            retry_after,
        } => {
            if !session.is_body_done() {
                session.set_keepalive(None);
            }
            if let Err(e) = page_answer(session, status, page, retry_after, request_id).await {
                tracing::debug!("cannot send the {status} page: {e}");
            }
            Some(keepalive)
        }
        Outcome::Redirect(location) => {
            if let Err(e) = redirect(session, location, request_id).await {
                tracing::debug!("cannot send the redirect: {e}");
            }
            Some(keepalive)
        }
    }
}

/// `status` with an HTML page — or, to a client that asks for JSON and not
/// HTML (an API client), `{"status": 503, "error": "Service Unavailable"}`.
async fn page_answer(
    session: &mut Downstream,
    status: u16,
    page: Bytes,
    retry_after: Option<&str>,
    request_id: &HeaderValue,
) -> pingora::Result<()> {
    let (content_type, body) = if wants_json(session) {
        let reason = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("error");
        let json = format!("{{\"status\":{status},\"error\":\"{reason}\"}}\n");
        ("application/json", Bytes::from(json))
    } else {
        ("text/html; charset=utf-8", page)
    };
    let mut header = ServerSession::generate_error(status);
    header.set_content_length(body.len())?;
    header.insert_header(http::header::CONTENT_TYPE, content_type)?;
    if let Some(retry_after) = retry_after {
        header.insert_header(http::header::RETRY_AFTER, retry_after)?;
    }
    header.insert_header(request_id::HEADER, request_id.clone())?;
    session.write_error_response(header, body).await
}

/// The client's `Accept` names JSON and not HTML.
fn wants_json(session: &Downstream) -> bool {
    let (mut json, mut html) = (false, false);
    for value in session.req_header().headers.get_all(http::header::ACCEPT) {
        json |= contains_ignoring_case(value.as_bytes(), b"application/json");
        html |= contains_ignoring_case(value.as_bytes(), b"text/html");
    }
    json && !html
}

fn contains_ignoring_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// One of our own answers (404, 502, 504), with the request's id.
async fn answer(
    session: &mut Downstream,
    status: u16,
    body: &'static [u8],
    request_id: &HeaderValue,
) -> pingora::Result<()> {
    answer_with(session, status, Bytes::from_static(body), None, request_id).await
}

/// An answer of ours on a connection that may carry on: only if the
/// request was read to its end.
async fn answer_and_go_on(
    session: &mut Downstream,
    status: u16,
    body: Bytes,
    extra: Option<(http::header::HeaderName, HeaderValue)>,
    request_id: &HeaderValue,
) {
    if !session.is_body_done() {
        session.set_keepalive(None);
    }
    if let Err(e) = answer_with(session, status, body, extra, request_id).await {
        tracing::debug!("cannot send the {status} answer: {e}");
    }
}

/// [`answer`] with one more header field when given (`Retry-After`,
/// `WWW-Authenticate`).
async fn answer_with(
    session: &mut Downstream,
    status: u16,
    body: Bytes,
    extra: Option<(http::header::HeaderName, HeaderValue)>,
    request_id: &HeaderValue,
) -> pingora::Result<()> {
    let mut header = ServerSession::generate_error(status);
    header.set_content_length(body.len())?;
    if let Some((name, value)) = extra {
        header.insert_header(name, value)?;
    }
    header.insert_header(request_id::HEADER, request_id.clone())?;
    session.write_error_response(header, body).await
}
