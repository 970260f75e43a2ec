//! The request header as an h2c backend gets it (pingora's HTTP/2 client
//! takes a `RequestHeader`): what the proxy removes from the client's
//! header and what it adds. An HTTP/1.1 backend gets the same head written
//! as bytes by `h1/request_head.rs`.

use http::header::{self, HeaderValue};
use pingora::http::RequestHeader;
use switchyard_control::table::TOKEN_HEADER;

use super::downstream::Downstream;
use super::forward::Incoming;
use super::h1::wire::format_ip;
use super::request_id;
use crate::hop_by_hop;

/// The request as the backend gets it: hop-by-hop headers removed, the
/// client's address, scheme and host added.
pub(super) fn upstream_request(
    session: &Downstream,
    incoming: Incoming<'_>,
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
    let _ = request.insert_header(request_id::HEADER, incoming.id.clone());
    // The override token is a secret between the tester and the proxy.
    request.remove_header(TOKEN_HEADER);
    if let Some(client) = session.client_ip() {
        let mut ip_buf = [0u8; 64];
        let ip = format_ip(client, &mut ip_buf);
        let existing = request
            .headers
            .get("x-forwarded-for")
            .filter(|_| incoming.client.keep_forwarded);
        let forwarded_for: Vec<u8> = match existing {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
