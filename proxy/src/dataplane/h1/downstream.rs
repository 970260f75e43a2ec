//! One request on an HTTP/1.x client connection, after its head was read
//! (`head.rs`) and parsed (`request.rs`): its body read as its head frames
//! it, the response written in the framing its header says, and the
//! connection handed back for the next request with whatever was read past
//! this one (a pipelined request).
//!
//! What pingora's server session did for us is kept, with the changes
//! named where they are made (and listed in `docs/limits.md`): a 1xx answer
//! no longer closes the connection after the request, and none goes to an
//! HTTP/1.0 client; an HTTP/1.0 client gets a chunked response as a body
//! that ends with the connection (it cannot read chunked); `Connection:
//! keep-alive` is said only when the connection is kept.
//!
//! Reads go through the worker's scratch buffer (`read.rs`) and are safe to
//! cancel: the exchange's `select!` may drop a read at any point.

use std::net::IpAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header;
use http::{Method, StatusCode, Version};
use pingora::http::{HeaderNameVariant, RequestHeader, ResponseHeader};
use pingora::protocols::http::date::get_cached_date;
use pingora::protocols::Stream;
use pingora::{Error, ErrorType, Result};
use tokio::io::AsyncWriteExt;

use super::body::{Body, Piece};
use super::read::read_into;
use super::request::{ParsedRequest, RequestBody};
use super::response_head::ResponseHead;
use super::wire::{agreed_length, chunk_size_line, tokens, within};

/// How long a read of the request body may wait, as pingora's session
/// waited.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the last bytes of a connection may take to leave.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);

/// After an answer that left some of the request unread (a `413`, an
/// early answer of the backend's), what the client still sends is read
/// and dropped for at most this long before the connection closes:
/// closing with unread bytes makes the kernel send a reset, and a client
/// still sending would then lose the answer (nginx's "lingering close",
/// also bounded by time alone).
const LINGER_TIME: Duration = Duration::from_secs(5);

/// How the response body goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outgoing {
    /// No final response header yet.
    NotYet,
    /// This many bytes are left; more are dropped.
    Length(u64),
    Chunked,
    /// Until the connection closes (an upgrade, or an HTTP/1.0 client).
    UntilClose,
    Done,
}

/// An HTTP/1.x request being served, and its connection.
pub(crate) struct Http1Downstream {
    stream: Stream,
    request: Box<RequestHeader>,
    client_ip: Option<IpAddr>,
    /// Read and not yet passed on: the rest of the body, then the next
    /// request's bytes.
    buf: BytesMut,
    /// The request body.
    incoming: Body,
    body_empty: bool,
    /// The client lets the connection carry another request.
    client_keep_alive: bool,
    /// We let it: off when the proxy stops, or the exchange says close.
    keep_alive: bool,
    outgoing: Outgoing,
    /// The status of the last response header written (a 1xx, then the
    /// final one).
    status: Option<StatusCode>,
    body_bytes_sent: usize,
    upgraded: bool,
    /// The client closed its side after its request.
    half_closed: bool,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl Http1Downstream {
    /// `buf`: what was read past the request head.
    pub(crate) fn new(
        stream: Stream,
        parsed: ParsedRequest,
        buf: BytesMut,
        client_ip: Option<IpAddr>,
    ) -> Http1Downstream {
        let incoming = match parsed.body {
            RequestBody::None => Body::Done,
            RequestBody::Length(n) => Body::of_length(n),
            RequestBody::Chunked => Body::chunked(),
        };
        Http1Downstream {
            stream,
            request: parsed.header,
            client_ip,
            buf,
            body_empty: matches!(incoming, Body::Done),
            incoming,
            client_keep_alive: parsed.keep_alive,
            keep_alive: true,
            outgoing: Outgoing::NotYet,
            status: None,
            body_bytes_sent: 0,
            upgraded: false,
            half_closed: false,
            read_timeout: Some(BODY_READ_TIMEOUT),
            write_timeout: None,
        }
    }

    pub(crate) fn req_header(&self) -> &RequestHeader {
        &self.request
    }

    pub(crate) fn client_ip(&self) -> Option<IpAddr> {
        self.client_ip
    }

    /// The request has no body at all.
    pub(crate) fn is_body_empty(&self) -> bool {
        self.body_empty
    }

    /// No (more) request body is to be read.
    pub(crate) fn is_body_done(&self) -> bool {
        matches!(self.incoming, Body::Done)
    }

    /// `None`: the connection closes after this request.
    pub(crate) fn set_keepalive(&mut self, seconds: Option<u64>) {
        self.keep_alive = seconds.is_some();
    }

    fn will_keep_alive(&self) -> bool {
        self.keep_alive && self.client_keep_alive && !self.upgraded && !self.half_closed
    }

    pub(crate) fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.read_timeout = timeout;
    }

    pub(crate) fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        self.write_timeout = timeout;
    }

    pub(crate) fn was_upgraded(&self) -> bool {
        self.upgraded
    }

    /// The status of the response header written last.
    pub(crate) fn response_status(&self) -> Option<u16> {
        self.status.map(|s| s.as_u16())
    }

    pub(crate) fn body_bytes_sent(&self) -> usize {
        self.body_bytes_sent
    }

    /// The next piece of the request body; `None` at its end.
    pub(crate) async fn read_body(&mut self) -> Result<Option<Bytes>> {
        loop {
            let piece = self
                .incoming
                .take(&mut self.buf)
                .map_err(|e| Error::explain(ErrorType::Custom("InvalidChunk"), e.to_string()))?;
            match piece {
                Piece::Data(bytes) => return Ok(Some(bytes)),
                Piece::End => return Ok(None),
                Piece::NeedMore => {}
            }
            if self.fill().await? == 0 {
                if self.incoming.closed() {
                    // An upgraded connection's client closed its side.
                    self.half_closed = true;
                    return Ok(None);
                }
                return Err(Error::explain(
                    ErrorType::ConnectionClosed,
                    "the client closed the connection inside the request body",
                ));
            }
        }
    }

    /// Reads what the client sent next into the buffer: the number of
    /// bytes, 0 when it closed.
    async fn fill(&mut self) -> Result<usize> {
        let read = read_into(&mut self.stream, &mut self.buf);
        let kinds = (ErrorType::ReadTimedout, ErrorType::ReadError);
        within(self.read_timeout, read, kinds, "reading the request body").await
    }

    /// The next piece of the request body, as [`Self::read_body`]; once it
    /// ended (or `no_body_expected`), waits for the client to close, which
    /// is an error (it hung up on its request), or forever when it sends
    /// more: that is its next request, kept for after this one.
    pub(crate) async fn read_body_or_idle(
        &mut self,
        no_body_expected: bool,
    ) -> Result<Option<Bytes>> {
        if !no_body_expected && !self.is_body_done() {
            return self.read_body().await;
        }
        if self.half_closed {
            return Err(self.hung_up());
        }
        if !self.buf.is_empty() {
            // The next request is already here; no read until this one ends.
            return std::future::pending().await;
        }
        let read = read_into(&mut self.stream, &mut self.buf).await;
        match read {
            Ok(0) => {
                self.half_closed = true;
                Err(self.hung_up())
            }
            Ok(_) => std::future::pending().await,
            Err(e) => Err(Error::because(
                ErrorType::ReadError,
                "waiting on the client during its request",
                e,
            )),
        }
    }

    fn hung_up(&self) -> Box<Error> {
        Error::explain(
            ErrorType::ConnectionClosed,
            if self.status.is_none() {
                "the client closed before the response header"
            } else {
                "the client closed before the response ended"
            },
        )
    }

    /// Writes a response header of ours (or an h2c backend's): 1xx ones as
    /// they come (101 included), then the final one, whose framing the
    /// body then follows. Nothing is written after the final header.
    pub(crate) async fn write_response_header(
        &mut self,
        response: Box<ResponseHeader>,
    ) -> Result<()> {
        self.write_head(&*response, &[]).await
    }

    /// Writes an HTTP/1 backend's response head as it came, then the
    /// `extra` fields; as [`Self::write_response_header`] otherwise.
    pub(crate) async fn write_response_head(
        &mut self,
        response: &ResponseHead,
        extra: &[(&[u8], &[u8])],
    ) -> Result<()> {
        self.write_head(response, extra).await
    }

    async fn write_head(
        &mut self,
        response: &(dyn Head + Sync),
        extra: &[(&[u8], &[u8])],
    ) -> Result<()> {
        if let Some(previous) = self.status {
            if !previous.is_informational() || self.upgraded {
                tracing::warn!("a response header was already written; not another");
                return Ok(());
            }
        }
        let Some((head, flush)) = self.head_bytes(response, extra) else {
            return Ok(());
        };
        self.write(&[&head], flush, "writing the response header")
            .await
    }

    /// The bytes of a response head, and whether they go out at once.
    fn head_bytes(
        &mut self,
        response: &dyn Head,
        extra: &[(&[u8], &[u8])],
    ) -> Option<(Vec<u8>, bool)> {
        let facts = response.facts(extra);
        let status = facts.status;
        let informational = status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS;
        if informational && self.request.version == Version::HTTP_10 {
            // HTTP/1.0 has no interim answers: its client would take one
            // for the answer (RFC 9110 §15.2).
            return None;
        }
        let mut head = Vec::with_capacity(256);
        write_status_line(&mut head, facts.version, status, response.reason());
        if informational {
            // A 1xx does not answer the request: the connection's future
            // is decided by the final header. (pingora's session closed
            // the connection after any header written before the request
            // body ended, a 100 Continue included.)
            response.for_each_field(&mut |name, value| field(&mut head, name, value));
        } else {
            if !self.is_body_done() {
                // An answer before the request ended: what is left of the
                // request cannot be told from a next request.
                self.keep_alive = false;
            }
            self.outgoing = self.framing(&facts);
            let final_header = status != StatusCode::SWITCHING_PROTOCOLS;
            // A chunked body unchunked for HTTP/1.0 loses its coding.
            let unchunked = self.outgoing == Outgoing::UntilClose && facts.chunked;
            let mut each = |name: &[u8], value: &[u8]| {
                let ours = final_header && (is(name, b"date") || is(name, b"connection"));
                let unchunked_coding = unchunked && is(name, b"transfer-encoding");
                if !ours && !unchunked_coding {
                    field(&mut head, name, value);
                }
            };
            response.for_each_field(&mut each);
            for (name, value) in extra {
                each(name, value);
            }
            if final_header {
                field(&mut head, b"Date", get_cached_date().as_bytes());
                let connection: &[u8] = if self.will_keep_alive() {
                    b"keep-alive"
                } else {
                    b"close"
                };
                field(&mut head, b"Connection", connection);
            }
        }
        head.extend_from_slice(b"\r\n");
        self.status = Some(status);
        // A header without a length goes out now: its body may come slowly
        // (a stream of events); one with a length goes with its body.
        let flush = informational
            || status == StatusCode::SWITCHING_PROTOCOLS
            || matches!(self.outgoing, Outgoing::Done)
            || facts.content_length.is_none();
        Some((head, flush))
    }

    /// How the final response's body goes out, and what it does to the
    /// connection.
    fn framing(&mut self, facts: &Facts) -> Outgoing {
        let status = facts.status;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            if is_upgrade_request(&self.request) && facts.version == Version::HTTP_11 {
                // From here both ways carry the upgraded protocol: what the
                // client sends (and sent already) goes up as it is.
                self.upgraded = true;
                self.incoming = Body::UntilClose;
                return Outgoing::UntilClose;
            }
            return Outgoing::Done;
        }
        if matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED)
            || self.request.method == Method::HEAD
        {
            return Outgoing::Done;
        }
        if facts.chunked {
            if self.request.version == Version::HTTP_10 {
                // HTTP/1.0 has no chunked coding: the body goes as it is and
                // ends with the connection, as nginx sends it.
                self.keep_alive = false;
                return Outgoing::UntilClose;
            }
            return Outgoing::Chunked;
        }
        match facts.content_length {
            Some(0) => Outgoing::Done,
            Some(n) => Outgoing::Length(n),
            None => {
                self.keep_alive = false;
                Outgoing::UntilClose
            }
        }
    }

    /// Writes a piece of the response body in the header's framing.
    pub(crate) async fn write_body(&mut self, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        match self.outgoing {
            Outgoing::NotYet | Outgoing::Done => Ok(()),
            Outgoing::Length(left) => {
                let take = data.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                if take < data.len() {
                    tracing::warn!("the response body is longer than its Content-Length");
                }
                let left = left - take as u64;
                self.outgoing = if left == 0 {
                    Outgoing::Done
                } else {
                    Outgoing::Length(left)
                };
                self.body_bytes_sent += take;
                // Gathered with what follows; the exchange flushes when no
                // more of the body is at hand, and the last byte always
                // goes out.
                self.write(&[&data[..take]], left == 0, "writing the response body")
                    .await
            }
            Outgoing::Chunked => {
                let mut size = [0u8; 18];
                let size = chunk_size_line(data.len(), &mut size);
                self.body_bytes_sent += data.len();
                self.write(&[size, data, b"\r\n"], true, "writing the response body")
                    .await
            }
            Outgoing::UntilClose => {
                self.body_bytes_sent += data.len();
                self.write(&[data], true, "writing the response body").await
            }
        }
    }

    /// Ends the response body: the last chunk when it is chunked. A body
    /// shorter than its length is an error: the connection must close.
    pub(crate) async fn finish_body(&mut self) -> Result<()> {
        let ended = match self.outgoing {
            Outgoing::Length(left) => {
                self.outgoing = Outgoing::Done;
                return Err(Error::explain(
                    ErrorType::WriteError,
                    format!("the response body ended {left} bytes short of its length"),
                ));
            }
            Outgoing::Chunked => {
                self.outgoing = Outgoing::Done;
                self.write(&[b"0\r\n\r\n"], true, "ending the response body")
                    .await
            }
            Outgoing::NotYet | Outgoing::UntilClose | Outgoing::Done => {
                self.outgoing = Outgoing::Done;
                self.flush().await
            }
        };
        if self.upgraded {
            // The response is over, so is the upgraded request.
            self.incoming = Body::Done;
        }
        ended
    }

    /// Writes `data` and ends the body when `end` says so.
    pub(crate) async fn write_response_body(&mut self, data: Bytes, end: bool) -> Result<()> {
        self.write_body(&data).await?;
        if end {
            self.finish_body().await?;
        }
        Ok(())
    }

    /// One of our own answers, after which the connection closes; nothing
    /// when a final response header already went out.
    pub(crate) async fn write_error_response(
        &mut self,
        response: ResponseHeader,
        body: Bytes,
    ) -> Result<()> {
        self.keep_alive = false;
        if self
            .status
            .is_some_and(|s| !s.is_informational() || s == StatusCode::SWITCHING_PROTOCOLS)
        {
            return Ok(());
        }
        self.write_response_header(Box::new(response)).await?;
        self.write_response_body(body, true).await
    }

    /// Writes `parts` (gathered by the stream), flushing when `flush`.
    async fn write(&mut self, parts: &[&[u8]], flush: bool, what: &str) -> Result<()> {
        let write = async {
            for part in parts {
                self.stream.write_all(part).await?;
            }
            if flush {
                self.stream.flush().await?;
            }
            Ok(())
        };
        let kinds = (ErrorType::WriteTimedout, ErrorType::WriteError);
        within(self.write_timeout, write, kinds, what).await
    }

    /// Sends what is gathered of the response.
    pub(crate) async fn flush(&mut self) -> Result<()> {
        self.write(&[], true, "flushing the response").await
    }

    /// Closes the connection's sending side, after what is pending — for
    /// at most [`SHUTDOWN_WAIT`]: a client that reads nothing would hold
    /// the request (and a stop's drain) for ever. Dropping the stream then
    /// closes it whatever is left.
    pub(crate) async fn shutdown(&mut self) {
        let close = pingora::protocols::Shutdown::shutdown(&mut *self.stream);
        if tokio::time::timeout(SHUTDOWN_WAIT, close).await.is_err() {
            tracing::debug!("the client took nothing of what was left to send: closing");
        }
    }

    /// Closes the connection's sending side; then, when some of the request
    /// was not read, reads and drops what the client still sends until it
    /// closes too, for at most [`LINGER_TIME`].
    pub(crate) async fn close(&mut self) {
        self.shutdown().await;
        if self.is_body_done() || self.upgraded {
            return;
        }
        let drain = async {
            loop {
                self.buf.clear();
                if let Ok(0) | Err(_) = read_into(&mut self.stream, &mut self.buf).await {
                    return;
                }
            }
        };
        if tokio::time::timeout(LINGER_TIME, drain).await.is_err() {
            tracing::debug!("the client kept sending after its answer: closing");
        }
    }

    /// Ends the request: the response's end goes out, and the connection
    /// comes back when it can carry another request — with what was read
    /// past this one. What is left of the request body is read first.
    pub(crate) async fn finish(mut self) -> Result<Option<(Stream, Option<BytesMut>)>> {
        self.finish_body().await?;
        if !self.will_keep_alive() {
            self.close().await;
            return Ok(None);
        }
        while self.read_body().await?.is_some() {}
        // Empty lines before the next request line are not part of it
        // (RFC 9112 §2.2): a client that ends a body with a stray CRLF
        // still gets the keep-alive wait, not the head's deadline.
        let blank = self
            .buf
            .iter()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
        let _ = self.buf.split_to(blank);
        let pipelined = (!self.buf.is_empty()).then_some(self.buf);
        Ok(Some((self.stream, pipelined)))
    }
}

/// An upgrade request as pingora's session saw one: HTTP/1.1 with an
/// `Upgrade` header (which protocols a route carries is the exchange's
/// business).
pub(crate) fn is_upgrade_request(request: &RequestHeader) -> bool {
    request.version == Version::HTTP_11 && request.headers.contains_key(header::UPGRADE)
}

/// What a response head says about its body.
struct Facts {
    status: StatusCode,
    version: Version,
    /// The last transfer coding is chunked.
    chunked: bool,
    content_length: Option<u64>,
}

/// A response head the client's codec can write: pingora's header (ours,
/// an h2c backend's) or an HTTP/1 backend's head as it came.
trait Head: Sync {
    /// With `extra` fields written after it (one may be a
    /// `Transfer-Encoding: chunked` the proxy adds).
    fn facts(&self, extra: &[(&[u8], &[u8])]) -> Facts;
    fn reason(&self) -> Option<&[u8]>;
    fn for_each_field(&self, each: &mut dyn FnMut(&[u8], &[u8]));
}

/// Whether `extra` adds `Transfer-Encoding: chunked`.
fn chunked_by_extra(extra: &[(&[u8], &[u8])]) -> bool {
    extra
        .iter()
        .any(|(name, value)| is(name, b"transfer-encoding") && is(value, b"chunked"))
}

impl Head for ResponseHeader {
    fn facts(&self, extra: &[(&[u8], &[u8])]) -> Facts {
        Facts {
            status: self.status,
            version: self.version,
            chunked: last_coding_is_chunked(self) || chunked_by_extra(extra),
            // Lengths that are not one number: the body then ends with the
            // connection, which is always safe to write.
            content_length: agreed_length(&self.headers).ok().flatten(),
        }
    }

    fn reason(&self) -> Option<&[u8]> {
        self.get_reason_phrase().map(str::as_bytes)
    }

    fn for_each_field(&self, each: &mut dyn FnMut(&[u8], &[u8])) {
        let _ = self.map(|name, value| {
            let name: &[u8] = match name {
                HeaderNameVariant::Case(name) => name.as_slice(),
                HeaderNameVariant::Titled(name) => name.as_bytes(),
            };
            each(name, value.as_bytes());
            Ok(())
        });
    }
}

impl Head for ResponseHead {
    fn facts(&self, extra: &[(&[u8], &[u8])]) -> Facts {
        Facts {
            status: self.status,
            version: self.version,
            chunked: self.chunked || chunked_by_extra(extra),
            content_length: self.content_length,
        }
    }

    fn reason(&self) -> Option<&[u8]> {
        ResponseHead::reason(self)
    }

    fn for_each_field(&self, each: &mut dyn FnMut(&[u8], &[u8])) {
        ResponseHead::for_each_field(self, each);
    }
}

fn write_status_line(
    out: &mut Vec<u8>,
    version: Version,
    status: StatusCode,
    reason: Option<&[u8]>,
) {
    out.extend_from_slice(match version {
        Version::HTTP_10 => b"HTTP/1.0 ",
        _ => b"HTTP/1.1 ",
    });
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    match reason {
        Some(reason) => out.extend_from_slice(reason),
        None => out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes()),
    }
    out.extend_from_slice(b"\r\n");
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn is(name: &[u8], lower_case: &[u8]) -> bool {
    name.eq_ignore_ascii_case(lower_case)
}

/// The last transfer coding is chunked (RFC 9112 §6.3).
fn last_coding_is_chunked(response: &ResponseHeader) -> bool {
    tokens(&response.headers, header::TRANSFER_ENCODING)
        .last()
        .is_some_and(|coding| coding.eq_ignore_ascii_case(b"chunked"))
}
