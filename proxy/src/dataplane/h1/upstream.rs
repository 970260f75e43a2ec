//! One HTTP/1.1 exchange with a backend, on a connection that is ours from
//! the pool to the pool: the request head goes out as the bytes
//! `request_head.rs` wrote, its body framed as that head says, and the
//! response is read into one buffer per exchange, its head parsed once
//! (`response.rs`) and its body decoded as it arrives.
//!
//! Reads go through the worker's scratch buffer (`read.rs`) and only what
//! arrived is copied out, so a small response costs one small allocation
//! and a 16 KiB one arrives, head and body, in one `recv`. Every read is
//! safe to cancel: bytes are moved into the buffer in the same poll that
//! reads them, so the exchange's `select!` may drop a read at any point.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora::protocols::Stream;
use pingora::{Error, ErrorType, Result};
use tokio::io::AsyncWriteExt;

use super::body::{Body, Piece};
use super::read::read_into;
use super::request_head::Written;
use super::response::{self, Framing};
use super::response_head::ResponseHead;
use super::wire::{chunk_size_line, within};
use crate::dataplane::head::head_end;

/// How the request body goes to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestFraming {
    /// No body, or a body of this many bytes, passed as it is.
    Length(u64),
    /// Each piece as a chunk, the last chunk at the end.
    Chunked,
}

/// An HTTP/1.1 connection to a backend, for one exchange.
pub(crate) struct Http1Upstream {
    stream: Stream,
    /// Bytes read and not yet passed on.
    buf: BytesMut,
    pub read_timeout: Option<Duration>,
    pub write_timeout: Option<Duration>,
    request: RequestFraming,
    request_was_head: bool,
    /// The request asked for an upgrade the route carries.
    upgrade_requested: bool,
    upgraded: bool,
    /// After the request's body: raw bytes, for an upgraded connection.
    raw_request_body: bool,
    request_finished: bool,
    /// The response body: `None` until a final (or 101) head is read.
    body: Option<Body>,
    /// The response said the connection may carry another request.
    keep_alive: bool,
    /// Bytes came after the response's end: the connection cannot be
    /// trusted with another request.
    overread: bool,
    /// A write to the backend failed or timed out: where the request
    /// stopped is unknown, so the connection must not carry another.
    write_failed: bool,
}

impl Http1Upstream {
    pub(crate) fn new(stream: Stream) -> Http1Upstream {
        Http1Upstream {
            stream,
            buf: BytesMut::new(),
            read_timeout: None,
            write_timeout: None,
            request: RequestFraming::Length(0),
            request_was_head: false,
            upgrade_requested: false,
            upgraded: false,
            raw_request_body: false,
            request_finished: false,
            body: None,
            keep_alive: false,
            overread: false,
            write_failed: false,
        }
    }

    /// Sends the request head; `written` says how its body is framed and
    /// what the response may be.
    pub(crate) async fn write_request_head(&mut self, head: &[u8], written: Written) -> Result<()> {
        self.request = written.framing;
        self.request_was_head = written.head_request;
        self.upgrade_requested = written.upgrade;
        self.write_all(&[head], "writing the request head").await
    }

    /// Sends a piece of the request body in the head's framing (or as it
    /// is, once upgraded).
    pub(crate) async fn write_body(&mut self, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if self.raw_request_body {
            return self.write_all(&[data], "writing upgraded bytes").await;
        }
        match &mut self.request {
            RequestFraming::Length(left) => {
                // The client's session framed the body by the same length:
                // more than that cannot arrive.
                if data.len() as u64 > *left {
                    return Err(Error::explain(
                        ErrorType::WriteError,
                        "request body longer than its Content-Length",
                    ));
                }
                *left -= data.len() as u64;
                self.write_all(&[data], "writing the request body").await
            }
            RequestFraming::Chunked => {
                let mut size = [0u8; 18];
                let size = chunk_size_line(data.len(), &mut size);
                self.write_all(&[size, data, b"\r\n"], "writing the request body")
                    .await
            }
        }
    }

    /// Ends the request body: the last chunk when it is chunked.
    pub(crate) async fn finish_body(&mut self) -> Result<()> {
        if self.request_finished || self.raw_request_body {
            return Ok(());
        }
        if self.request == RequestFraming::Chunked {
            self.write_all(&[b"0\r\n\r\n"], "ending the request body")
                .await?;
        }
        // Only once the last chunk is out: a connection whose body did not
        // end must never go back to the pool.
        self.request_finished = true;
        Ok(())
    }

    /// Writes `parts` and flushes them (the stream gathers small writes).
    async fn write_all(&mut self, parts: &[&[u8]], what: &str) -> Result<()> {
        let write = async {
            for part in parts {
                self.stream.write_all(part).await?;
            }
            self.stream.flush().await
        };
        let timed_out = ErrorType::WriteTimedout;
        let kinds = (timed_out, ErrorType::WriteError);
        let written = within(self.write_timeout, write, kinds, what).await;
        self.write_failed |= written.is_err();
        written
    }

    /// Reads the next response head: a 1xx, then (on the next call) the
    /// final one. Hop-by-hop headers are already left out.
    pub(crate) async fn read_response(&mut self) -> Result<ResponseHead> {
        // Parsed only once its end is in: a backend that sends its head a
        // byte at a time costs one scan of it, not a parse per byte.
        let mut scanned = 0;
        loop {
            if head_end(&self.buf, scanned).is_some() {
                match response::parse(&mut self.buf, self.request_was_head) {
                    Ok(Some(parsed)) => return Ok(self.start_body(parsed)),
                    Ok(None) => {}
                    Err(e) => {
                        return Err(Error::explain(ErrorType::InvalidHTTPHeader, e.to_string()))
                    }
                }
            }
            // The end may straddle reads: look again from just before.
            scanned = self.buf.len().saturating_sub(3);
            if self.buf.len() > MAX_RESPONSE_HEAD {
                return Err(Error::explain(
                    ErrorType::InvalidHTTPHeader,
                    format!("response head over {MAX_RESPONSE_HEAD} bytes"),
                ));
            }
            let already = self.buf.len();
            if self.fill("reading the response head").await? == 0 {
                // An empty answer on a pooled connection is a backend that
                // closed it while idle: the caller may try a fresh one.
                return Err(Error::explain(
                    ErrorType::ConnectionClosed,
                    format!(
                        "the backend closed the connection after {already} bytes of response head"
                    ),
                ));
            }
        }
    }

    fn start_body(&mut self, parsed: response::Parsed) -> ResponseHead {
        let status = parsed.head.status.as_u16();
        // An upgrade is HTTP/1.1 both ways (RFC 9110 §7.8); an HTTP/1.0
        // 101 is not one, and is answered 502 like an unsolicited one.
        let http11 = parsed.head.version == http::Version::HTTP_11;
        if status == 101 && self.upgrade_requested && http11 {
            self.upgraded = true;
            self.body = Some(Body::UntilClose);
        } else if (100..200).contains(&status) {
            // An informational answer: the final one follows.
            self.body = None;
        } else {
            self.keep_alive = parsed.keep_alive;
            self.body = Some(match parsed.framing {
                Framing::Empty => Body::Done,
                Framing::Length(n) => Body::of_length(n),
                Framing::Chunked => Body::chunked(),
                Framing::UntilClose => Body::UntilClose,
            });
        }
        parsed.head
    }

    /// The next piece of the response body; `None` at its end.
    pub(crate) async fn read_body(&mut self) -> Result<Option<Bytes>> {
        loop {
            let Some(body) = &mut self.body else {
                self.overread |= !self.buf.is_empty();
                return Ok(None);
            };
            let piece = body
                .take(&mut self.buf)
                .map_err(|e| Error::explain(ErrorType::Custom("InvalidChunk"), e.to_string()))?;
            match piece {
                Piece::Data(bytes) => return Ok(Some(bytes)),
                Piece::End => {
                    // Bytes after the response: the connection cannot be
                    // trusted with another request.
                    self.overread |= !self.buf.is_empty();
                    return Ok(None);
                }
                Piece::NeedMore => {}
            }
            if self.fill("reading the response body").await? == 0 {
                if body_closed(&mut self.body) {
                    return Ok(None);
                }
                return Err(Error::explain(
                    ErrorType::ConnectionClosed,
                    "the backend closed the connection inside the response body",
                ));
            }
        }
    }

    /// Reads what the backend sent next into the buffer: the number of
    /// bytes, 0 at the end of the stream.
    async fn fill(&mut self, what: &str) -> Result<usize> {
        let read = read_into(&mut self.stream, &mut self.buf);
        let timed_out = ErrorType::ReadTimedout;
        within(
            self.read_timeout,
            read,
            (timed_out, ErrorType::ReadError),
            what,
        )
        .await
    }

    /// The response body runs until the backend closes (it gave no length
    /// and no transfer coding), the connection not being upgraded.
    pub(crate) fn body_runs_until_close(&self) -> bool {
        matches!(self.body, Some(Body::UntilClose)) && !self.upgraded
    }

    /// Bytes of the response are read and not yet passed on.
    pub(crate) fn has_buffered(&self) -> bool {
        !self.buf.is_empty()
    }

    /// The backend answered 101 to an upgrade the route carries.
    pub(crate) fn was_upgraded(&self) -> bool {
        self.upgraded
    }

    /// From now on, what the client sends goes up as it is.
    pub(crate) fn upgrade_body_writer(&mut self) {
        if self.upgraded {
            self.raw_request_body = true;
        }
    }

    /// The stream, when it may carry another request: the backend allows
    /// it, both messages ended exactly, and nothing came after the response.
    pub(crate) fn reuse(self) -> Option<Stream> {
        let clean = self.keep_alive
            && !self.write_failed
            && !self.upgraded
            && self.request_finished
            && matches!(self.body, Some(Body::Done))
            && !self.overread
            && self.buf.is_empty()
            && matches!(
                self.request,
                RequestFraming::Chunked | RequestFraming::Length(0)
            );
        clean.then_some(self.stream)
    }
}

/// The end of the stream ends a body that runs until then.
fn body_closed(body: &mut Option<Body>) -> bool {
    body.as_mut().is_some_and(Body::closed)
}

/// The largest response head read: as much as a request head may be.
const MAX_RESPONSE_HEAD: usize = crate::dataplane::head::MAX_HEAD;

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::{TcpListener, TcpStream};

    /// A backend that answered at once and then stopped reading: the
    /// request body cannot get out, so its end never reaches the backend
    /// and the connection must not carry another request (the backend
    /// would read that request as body).
    #[tokio::test]
    async fn a_connection_whose_body_did_not_get_out_is_never_reused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (mut backend, _) = accepted.unwrap();
        backend
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .await
            .unwrap();
        let stream: Stream = Box::new(pingora::protocols::l4::stream::Stream::from(
            client.unwrap(),
        ));
        let mut upstream = Http1Upstream::new(stream);
        upstream.write_timeout = Some(Duration::from_millis(100));
        let head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        upstream
            .write_request_head(
                head,
                Written {
                    framing: RequestFraming::Chunked,
                    upgrade: false,
                    head_request: false,
                },
            )
            .await
            .unwrap();
        let response = upstream.read_response().await.unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(upstream.read_body().await.unwrap(), None);

        let piece = vec![b'x'; 1 << 20];
        let mut failed = false;
        for _ in 0..256 {
            if upstream.write_body(&piece).await.is_err() {
                failed = true;
                break;
            }
        }
        assert!(
            failed,
            "a backend that never reads fills the socket buffers"
        );
        let _ = upstream.finish_body().await;
        assert!(
            upstream.reuse().is_none(),
            "a connection inside an unfinished body went back to the pool"
        );
        drop(backend);
    }

    #[test]
    fn chunk_size_lines_are_lower_hex() {
        let mut buf = [0u8; 18];
        for size in [0usize, 1, 15, 16, 255, 4096, 16 * 1024, usize::MAX] {
            assert_eq!(
                chunk_size_line(size, &mut buf),
                format!("{size:x}\r\n").as_bytes()
            );
        }
    }
}
