//! One request's exchange with a backend that speaks HTTP/2 without TLS
//! (`protocol = "h2c"` on its slot): one stream of a shared connection.
//!
//! Simpler than the HTTP/1.1 pump in `exchange.rs`, on purpose: the
//! request body goes up whole before the response is read. That serves
//! every request/response API (gRPC unary calls included); a backend that
//! answers while still reading an upload (bidirectional streaming) waits
//! for the upload to finish. Upgrades do not exist in HTTP/2 and are
//! refused before they get here.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::v2::client::Http2Session;
use switchyard_control::table::{FailureKind, LoadGuard, Timeouts};

use super::body_limit::Allowance;
use super::downstream::Downstream;
use super::exchange::{client_body_failed, upstream_failed, Exchange, Reply};
use super::retry::{after_header, Retry};
use super::Outcome;

/// Sends the request (header and whole body) on the stream, then relays
/// the response. `retry`: what a drop allows before the header went out;
/// `body`: what the route lets its body be.
#[allow(clippy::too_many_arguments)]
pub(super) async fn exchange(
    session: &mut Downstream,
    upstream: &mut Http2Session,
    request: Box<RequestHeader>,
    retry: Retry,
    load: &mut LoadGuard,
    reply: &Reply<'_>,
    timeouts: &Timeouts,
    body: Allowance,
) -> Exchange {
    upstream.read_timeout = Some(timeouts.upstream_read);
    upstream.write_timeout = Some(timeouts.upstream_read);
    let retry = match send_request(session, upstream, request, retry, load, body).await {
        Ok(retry) => retry,
        Err(ended) => return ended,
    };
    if let Err(e) = upstream.read_response_header().await {
        return upstream_failed(e, retry, load);
    }
    relay_response(session, upstream, load, reply).await
}

/// Sends the request header and the whole body. `Ok` with what a drop
/// still allows once it went out; `Err` when the exchange ends here.
async fn send_request(
    session: &mut Downstream,
    upstream: &mut Http2Session,
    mut request: Box<RequestHeader>,
    retry: Retry,
    load: &LoadGuard,
    mut body: Allowance,
) -> Result<Option<Retry>, Exchange> {
    // HTTP/2 frames its own bodies; a chunked HTTP/1.1 upload loses the
    // header (RFC 9113 §8.2.2 forbids it).
    request.remove_header(&header::TRANSFER_ENCODING);
    let body_empty = session.is_body_empty();
    if let Err(e) = upstream.write_request_header(request, body_empty) {
        // Nothing reached the backend: any method may go elsewhere.
        return Err(Exchange::Dropped(retry, e));
    }
    let mut retry = after_header(retry, session);
    if body_empty {
        return Ok(retry);
    }
    loop {
        let chunk = match session.read_request_body().await {
            Ok(chunk) => chunk,
            Err(e) => return Err(client_body_failed(&e, false)),
        };
        let written = match chunk {
            // "Nothing yet" from pingora's HTTP/1 reader: no frame.
            Some(bytes) if bytes.is_empty() && !session.is_body_done() => Ok(false),
            Some(bytes) => {
                // No response can have begun while the body goes up.
                body.take(bytes.len(), false)?;
                // Body bytes went up: the request may not run again.
                retry = None;
                // pingora's HTTP/2 server never says `None` after the
                // chunk that ends the body: look now.
                let end = session.is_body_done();
                upstream.write_request_body(bytes, end).await.map(|()| end)
            }
            None => upstream.finish_request_body().map(|()| true),
        };
        match written {
            Ok(true) => return Ok(retry),
            Ok(false) => {}
            Err(e) => return Err(upstream_failed(e, None, load)),
        }
    }
}

/// Passes the response on, its header read: header, body, end.
async fn relay_response(
    session: &mut Downstream,
    upstream: &mut Http2Session,
    load: &mut LoadGuard,
    reply: &Reply<'_>,
) -> Exchange {
    let Some(head) = upstream.response_header() else {
        load.upstream_failed(FailureKind::Protocol);
        return Exchange::Failed(Outcome::Answer(502, super::BAD_GATEWAY_BODY));
    };
    let status = head.status.as_u16();
    load.answered(status, reply.started.elapsed());
    let mut response: Box<ResponseHeader> = Box::new(head.clone());
    for_client(&mut response, session, reply);
    if let Err(e) = session.write_response_header(response).await {
        tracing::debug!("client went away: {e}");
        return Exchange::Failed(Outcome::Abandon);
    }
    loop {
        match upstream.read_response_body().await {
            // An empty DATA frame: written to an HTTP/1.1 client it would
            // be the last chunk.
            Ok(Some(bytes)) if bytes.is_empty() => {}
            Ok(Some(bytes)) => {
                // Each frame goes out as it came (an HTTP/1 client's
                // connection gathers writes until a flush).
                let written = match session.write_response_body(bytes, false).await {
                    Ok(()) => session.flush().await,
                    Err(e) => Err(e),
                };
                if let Err(e) = written {
                    tracing::debug!("client went away: {e}");
                    return Exchange::Failed(Outcome::Abandon);
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!("upstream broke off its response: {e}");
                load.upstream_failed(FailureKind::Protocol);
                return Exchange::Failed(Outcome::Abandon);
            }
        }
    }
    if let Err(e) = session.write_response_body(Bytes::new(), true).await {
        tracing::debug!("client went away: {e}");
        return Exchange::Failed(Outcome::Abandon);
    }
    Exchange::Finished {
        reusable_upstream: true,
    }
}

/// The backend's HTTP/2 response as the client gets it: what the proxy
/// adds to every response, and for an HTTP/1.1 client its version and
/// framing (chunked when the backend gave no length, so the connection
/// stays reusable).
fn for_client(response: &mut ResponseHeader, session: &Downstream, reply: &Reply<'_>) {
    crate::hop_by_hop::strip_response(response);
    reply.decorate(response);
    if session.req_header().version != http::Version::HTTP_2 {
        response.set_version(http::Version::HTTP_11);
        let bodiless = matches!(response.status.as_u16(), 204 | 304)
            || session.req_header().method == http::Method::HEAD;
        if !bodiless && !response.headers.contains_key(header::CONTENT_LENGTH) {
            let _ = response.insert_header(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
        }
    }
}
