//! The request head an HTTP/1.1 backend gets, written as bytes straight
//! from the client's parsed header: hop-by-hop headers left out, the
//! client's address, scheme and host added, in the header names' own case.
//! Nothing is cloned and no header map is built for it.

use std::net::IpAddr;

use http::{Method, Version};
use pingora::http::HeaderNameVariant;
use pingora::http::{HMap, RequestHeader};
use switchyard_control::table::TOKEN_HEADER;

use super::upstream::RequestFraming;
use super::wire::format_ip;
use crate::dataplane::forward::Incoming;
use crate::dataplane::request_id;
use crate::hop_by_hop;

/// What the head written says about the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Written {
    pub framing: RequestFraming,
    /// It asks for an upgrade the route carries.
    pub upgrade: bool,
    pub head_request: bool,
}

/// Headers the proxy writes itself, so the client's are left out.
const REPLACED: [&str; 4] = [
    request_id::HEADER,
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
];

/// Writes the head of `request` as the backend gets it into `out`.
/// `client`: the address X-Forwarded-For gains. `unframed_body`: the
/// request (HTTP/2) has a body of no declared length, which goes chunked.
/// `None` when the target holds bytes no HTTP/1.1 request line may carry.
pub(crate) fn write(
    out: &mut Vec<u8>,
    request: &RequestHeader,
    client: Option<IpAddr>,
    incoming: Incoming<'_>,
    unframed_body: bool,
    upgrades: &[Box<str>],
) -> Option<Written> {
    let headers = &request.headers;
    // An upgrade is HTTP/1.1 only (RFC 9110 §7.8), as pingora's client
    // side sees it too: an HTTP/1.0 request's Upgrade is dropped.
    let upgrade =
        request.version == Version::HTTP_11 && hop_by_hop::requests_upgrade(headers, upgrades);
    // An authority in the target (an HTTP/2 request's `:authority`, an
    // HTTP/1 absolute-form target) is what the request was routed by: it
    // becomes the Host header and wins over one the client also sent
    // (RFC 9113 §8.3.1, RFC 9112 §3.2.3), and the target goes origin-form.
    let authority = request.uri.authority().map(|a| a.as_str().as_bytes());
    let target = target(request);
    if target
        .iter()
        .any(|&b| matches!(b, 0 | b'\r' | b'\n' | b' '))
    {
        return None;
    }

    out.extend_from_slice(request.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target);
    out.extend_from_slice(if request.version == Version::HTTP_10 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    if let Some(authority) = authority {
        header_line(out, b"Host", authority);
    }

    let connection: Vec<&[u8]> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .map(|v| v.as_bytes())
        .filter(|v| hop_by_hop::connection_names_others(v))
        .collect();
    let framing = framing(headers, unframed_body);
    let mut length_written = false;
    let _ = request.map(|name, value| {
        let name: &[u8] = match name {
            HeaderNameVariant::Case(name) => name.as_slice(),
            HeaderNameVariant::Titled(name) => name.as_bytes(),
        };
        let left_out = hop_by_hop::is_hop_by_hop_field(name, &connection, upgrade)
            || REPLACED.iter().any(|r| name.eq_ignore_ascii_case(r.as_bytes()))
            // The override token is a secret between the tester and the
            // proxy.
            || name.eq_ignore_ascii_case(TOKEN_HEADER.as_bytes())
            || (authority.is_some() && name.eq_ignore_ascii_case(b"host"))
            || framing_lookalike(name);
        if left_out {
            return Ok(());
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            // Identical duplicates (which pingora's session accepted) go on
            // as the one length they are, so the backend cannot read them
            // differently.
            if let (RequestFraming::Length(length), false) = (framing, length_written) {
                use std::io::Write;
                out.extend_from_slice(name);
                let _ = write!(out, ": {length}\r\n");
                length_written = true;
            }
            return Ok(());
        }
        header_line(out, name, value.as_bytes());
        Ok(())
    });

    if upgrade {
        header_line(out, b"Connection", b"upgrade");
    }
    if unframed_body {
        header_line(out, b"Transfer-Encoding", b"chunked");
    }
    header_line(out, request_id::HEADER.as_bytes(), incoming.id.as_bytes());
    forwarded_for(out, headers, client, incoming.client.keep_forwarded);
    let proto: &[u8] = if incoming.tls { b"https" } else { b"http" };
    header_line(out, b"x-forwarded-proto", proto);
    let host = authority.or_else(|| headers.get(http::header::HOST).map(|h| h.as_bytes()));
    if let Some(host) = host {
        header_line(out, b"x-forwarded-host", host);
    }
    out.extend_from_slice(b"\r\n");

    Some(Written {
        framing,
        upgrade,
        head_request: request.method == Method::HEAD,
    })
}

/// `Content_Length` or `Transfer_Encoding` (any case): a backend (or its
/// framework) that reads `_` as `-` would frame the request by a field the
/// proxy did not, so they are left out, as nginx leaves out every name
/// with `_` by default.
fn framing_lookalike(name: &[u8]) -> bool {
    name.contains(&b'_')
        && [&b"content-length"[..], b"transfer-encoding"]
            .iter()
            .any(|framing| {
                name.len() == framing.len()
                    && name
                        .iter()
                        .zip(framing.iter())
                        .all(|(&a, &b)| a.to_ascii_lowercase() == b || (a == b'_' && b == b'-'))
            })
}

/// The target as the backend gets it: the client's own bytes when it was
/// origin-form (or `*`), else the path and query.
fn target(request: &RequestHeader) -> &[u8] {
    let raw = request.raw_path();
    if request.uri.authority().is_none() && matches!(raw.first(), Some(b'/' | b'*')) {
        return raw;
    }
    request
        .uri
        .path_and_query()
        .map_or(b"/", |p| p.as_str().as_bytes())
}

/// X-Forwarded-For: the list the request came with (every header of it,
/// in order) unless `keep` says it is not to be believed, and the peer's
/// address after it.
fn forwarded_for(out: &mut Vec<u8>, headers: &HMap, client: Option<IpAddr>, keep: bool) {
    let mut existing = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter(|_| keep)
        .peekable();
    if existing.peek().is_none() && client.is_none() {
        return;
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    let mut first = true;
    for value in existing {
        if !first {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(value.as_bytes());
        first = false;
    }
    if let Some(ip) = client {
        if !first {
            out.extend_from_slice(b", ");
        }
        let mut text = [0u8; 64];
        out.extend_from_slice(format_ip(ip, &mut text));
    }
    out.extend_from_slice(b"\r\n");
}

/// How the body after the head is framed: chunked when the head says so
/// (the client's session decoded the client's chunks; they go up
/// re-encoded), else by its length, else there is none. A request is never
/// framed by the connection closing (RFC 9112 §6.3).
fn framing(headers: &HMap, unframed_body: bool) -> RequestFraming {
    if unframed_body || headers.contains_key(http::header::TRANSFER_ENCODING) {
        return RequestFraming::Chunked;
    }
    let length = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    RequestFraming::Length(length)
}

fn header_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderValue;

    fn written(request: &RequestHeader, tls: bool) -> (String, Written) {
        let id = HeaderValue::from_static("id-1");
        let mut out = Vec::new();
        let written = write(
            &mut out,
            request,
            Some("10.0.0.9".parse().unwrap()),
            Incoming {
                id: &id,
                tls,
                started: std::time::Instant::now(),
                client: crate::dataplane::client_ip::Client {
                    ip: Some("10.0.0.9".parse().unwrap()),
                    keep_forwarded: true,
                },
            },
            false,
            &["websocket".into()],
        )
        .unwrap();
        (String::from_utf8(out).unwrap(), written)
    }

    fn build(method: &str, target: &[u8], headers: &[(&str, &str)]) -> RequestHeader {
        let mut request = RequestHeader::build(method, target, None).unwrap();
        for (name, value) in headers {
            request.append_header(name.to_string(), *value).unwrap();
        }
        request
    }

    #[test]
    fn hop_by_hop_and_replaced_headers_go_ours_come_last_in_case() {
        let request = build(
            "POST",
            b"/a?b=1",
            &[
                ("Host", "app.test"),
                ("Connection", "keep-alive, X-Hop"),
                ("X-Hop", "1"),
                ("X-Forwarded-For", "1.1.1.1"),
                ("x-forwarded-for", "2.2.2.2"),
                ("X-Request-Id", "client's"),
                ("X-Switchyard-Token", "secret"),
                ("Content-Length", "3"),
                ("X-Kept", "yes"),
                ("Content_Length", "9"),
                ("transfer_ENCODING", "chunked"),
                ("X_Kept_Too", "yes"),
            ],
        );
        let (head, written) = written(&request, true);
        assert_eq!(
            head,
            "POST /a?b=1 HTTP/1.1\r\nHost: app.test\r\nContent-Length: 3\r\nX-Kept: yes\r\nX_Kept_Too: yes\r\n\
             x-request-id: id-1\r\nx-forwarded-for: 1.1.1.1, 2.2.2.2, 10.0.0.9\r\n\
             x-forwarded-proto: https\r\nx-forwarded-host: app.test\r\n\r\n"
        );
        assert_eq!(written.framing, RequestFraming::Length(3));
        assert!(!written.upgrade && !written.head_request);
    }

    #[test]
    fn an_authority_in_the_target_becomes_the_host_and_the_target_origin_form() {
        let mut request = build("GET", b"/", &[("Host", "other.test")]);
        request.set_uri("https://app.test:8443/a/b?c=1".parse().unwrap());
        let (head, _) = written(&request, false);
        assert!(
            head.starts_with("GET /a/b?c=1 HTTP/1.1\r\nHost: app.test:8443\r\nx-request-id"),
            "{head}"
        );
        assert!(
            head.contains("x-forwarded-host: app.test:8443\r\n"),
            "{head}"
        );
        assert!(!head.contains("other.test"), "{head}");
    }

    #[test]
    fn an_upgrade_keeps_upgrade_and_says_connection_upgrade() {
        let request = build(
            "GET",
            b"/ws",
            &[
                ("Host", "app.test"),
                ("Connection", "Upgrade"),
                ("Upgrade", "websocket"),
            ],
        );
        let (head, written) = written(&request, false);
        assert!(
            head.contains("Upgrade: websocket\r\nConnection: upgrade\r\n"),
            "{head}"
        );
        assert!(written.upgrade);
    }

    #[test]
    fn identical_duplicate_lengths_go_up_as_one() {
        let request = build(
            "POST",
            b"/",
            &[
                ("Host", "a"),
                ("Content-Length", "3, 3"),
                ("content-length", "3"),
            ],
        );
        let (head, written) = written(&request, false);
        assert_eq!(
            head.matches("ontent-Length").count() + head.matches("ontent-length").count(),
            1,
            "{head}"
        );
        assert!(head.contains("Content-Length: 3\r\n"), "{head}");
        assert_eq!(written.framing, RequestFraming::Length(3));
    }

    #[test]
    fn chunked_and_head_requests_are_known() {
        let request = build(
            "PUT",
            b"/",
            &[("Host", "a"), ("Transfer-Encoding", "chunked")],
        );
        assert_eq!(written(&request, false).1.framing, RequestFraming::Chunked);
        let request = build("HEAD", b"/", &[("Host", "a")]);
        let (_, head) = written(&request, false);
        assert!(head.head_request);
        assert_eq!(head.framing, RequestFraming::Length(0));
    }
}
