//! The client's side of one request, whichever protocol it came in:
//! HTTP/1.x on our own codec (`h1/downstream.rs`), or an HTTP/2 stream on
//! pingora's server session. The rest of the data plane sees only this.

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::ServerSession;
use pingora::Result;

use super::exchange::Reply;
use super::h1::downstream::{is_upgrade_request, Http1Downstream};
use super::h1::response_head::ResponseHead;

pub(crate) enum Downstream {
    H1(Http1Downstream),
    /// Always `ServerSession::H2`: pingora's HTTP/2 server hands us one per
    /// stream. Boxed: it is four times the size of ours, and an HTTP/1
    /// request's future would carry that size.
    H2(Box<ServerSession>),
}

impl Downstream {
    pub(crate) fn req_header(&self) -> &RequestHeader {
        match self {
            Downstream::H1(s) => s.req_header(),
            Downstream::H2(s) => s.req_header(),
        }
    }

    pub(crate) fn client_ip(&self) -> Option<IpAddr> {
        match self {
            Downstream::H1(s) => s.client_ip(),
            Downstream::H2(s) => s.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip()),
        }
    }

    /// The request has no body at all.
    pub(crate) fn is_body_empty(&mut self) -> bool {
        match self {
            Downstream::H1(s) => s.is_body_empty(),
            Downstream::H2(s) => s.is_body_empty(),
        }
    }

    /// No (more) request body is to be read.
    pub(crate) fn is_body_done(&mut self) -> bool {
        match self {
            Downstream::H1(s) => s.is_body_done(),
            Downstream::H2(s) => s.is_body_done(),
        }
    }

    /// An HTTP/1.1 request with an `Upgrade` header.
    pub(crate) fn is_upgrade_req(&self) -> bool {
        is_upgrade_request(self.req_header())
    }

    pub(crate) fn was_upgraded(&self) -> bool {
        match self {
            Downstream::H1(s) => s.was_upgraded(),
            Downstream::H2(_) => false,
        }
    }

    /// `None`: the connection closes after this request (HTTP/1 only).
    pub(crate) fn set_keepalive(&mut self, seconds: Option<u64>) {
        if let Downstream::H1(s) = self {
            s.set_keepalive(seconds);
        }
    }

    pub(crate) fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        match self {
            Downstream::H1(s) => s.set_read_timeout(timeout),
            Downstream::H2(s) => s.set_read_timeout(timeout),
        }
    }

    pub(crate) fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        match self {
            Downstream::H1(s) => s.set_write_timeout(timeout),
            Downstream::H2(s) => s.set_write_timeout(timeout),
        }
    }

    /// The status of the response header written last, if any.
    pub(crate) fn response_status(&self) -> Option<u16> {
        match self {
            Downstream::H1(s) => s.response_status(),
            Downstream::H2(s) => s.response_written().map(|r| r.status.as_u16()),
        }
    }

    pub(crate) fn body_bytes_sent(&self) -> usize {
        match self {
            Downstream::H1(s) => s.body_bytes_sent(),
            Downstream::H2(s) => s.body_bytes_sent(),
        }
    }

    /// The next piece of the request body; `None` at its end.
    pub(crate) async fn read_request_body(&mut self) -> Result<Option<Bytes>> {
        match self {
            Downstream::H1(s) => s.read_body().await,
            Downstream::H2(s) => s.read_request_body().await,
        }
    }

    /// The request body, then (once it ended, or `no_body_expected`) an
    /// error when the client hangs up; see
    /// [`Http1Downstream::read_body_or_idle`].
    pub(crate) async fn read_body_or_idle(
        &mut self,
        no_body_expected: bool,
    ) -> Result<Option<Bytes>> {
        match self {
            Downstream::H1(s) => s.read_body_or_idle(no_body_expected).await,
            Downstream::H2(s) => s.read_body_or_idle(no_body_expected).await,
        }
    }

    pub(crate) async fn write_response_header(
        &mut self,
        response: Box<ResponseHeader>,
    ) -> Result<()> {
        match self {
            Downstream::H1(s) => s.write_response_header(response).await,
            Downstream::H2(s) => s.write_response_header(response).await,
        }
    }

    /// An HTTP/1 backend's response head, with what the proxy adds to it
    /// (`reply`; none to a 1xx) and, when `chunk_it`, chunked framing for a
    /// body that would otherwise end with the connection.
    pub(crate) async fn write_backend_head(
        &mut self,
        head: ResponseHead,
        reply: Option<&Reply<'_>>,
        chunk_it: bool,
    ) -> Result<()> {
        match self {
            Downstream::H1(s) => {
                // At most the three of `extra_fields` and the coding.
                let mut extra: [(&[u8], &[u8]); 4] = [(b"", b""); 4];
                let mut count = 0;
                let has = |name: &str| head.has(name.as_bytes());
                let ours = reply.map(|r| r.extra_fields(has)).unwrap_or_default();
                for (name, value) in ours.into_iter().flatten() {
                    extra[count] = (name.as_bytes(), value.as_bytes());
                    count += 1;
                }
                if chunk_it {
                    extra[count] = (b"Transfer-Encoding", b"chunked");
                    count += 1;
                }
                s.write_response_head(&head, &extra[..count]).await
            }
            Downstream::H2(s) => {
                let mut response = head.to_response_header()?;
                if let Some(reply) = reply {
                    reply.decorate(&mut response);
                }
                s.write_response_header(response).await
            }
        }
    }

    pub(crate) async fn write_response_body(&mut self, data: Bytes, end: bool) -> Result<()> {
        match self {
            Downstream::H1(s) => s.write_response_body(data, end).await,
            Downstream::H2(s) => s.write_response_body(data, end).await,
        }
    }

    /// Sends what is gathered of the response (HTTP/1; an HTTP/2 stream
    /// sends each piece as it is written).
    pub(crate) async fn flush(&mut self) -> Result<()> {
        match self {
            Downstream::H1(s) => s.flush().await,
            Downstream::H2(_) => Ok(()),
        }
    }

    /// One of our own answers; the connection closes after it.
    pub(crate) async fn write_error_response(
        &mut self,
        response: ResponseHeader,
        body: Bytes,
    ) -> Result<()> {
        match self {
            Downstream::H1(s) => s.write_error_response(response, body).await,
            Downstream::H2(s) => s.write_error_response(response, body).await,
        }
    }

    /// Closes the connection (HTTP/1) or resets the stream (HTTP/2).
    pub(crate) async fn shutdown(&mut self) {
        match self {
            Downstream::H1(s) => s.shutdown().await,
            Downstream::H2(s) => s.shutdown().await,
        }
    }

    /// Ends the connection after an answer that may have left some of the
    /// request unread ([`Http1Downstream::close`]); an HTTP/2 stream just
    /// ends.
    pub(crate) async fn close(&mut self) {
        match self {
            Downstream::H1(s) => s.close().await,
            Downstream::H2(s) => s.shutdown().await,
        }
    }
}
