//! Hop-by-hop headers (RFC 9110 §7.6.1) describe one connection, not the
//! message: the client's `Connection: close` or `Keep-Alive` must not close
//! or tune our pooled upstream connection, and a backend's `Connection:
//! X-Internal` must not leak its header to the client. They are removed in
//! both directions; an upgrade keeps `Upgrade` and `Connection: upgrade`,
//! which is what carries it across the proxy.
//!
//! Two limits keep a client or a backend from using `Connection` against
//! the proxy: it cannot name a framing header (`Host`, `Content-Length`,
//! `Transfer-Encoding`) into removal, since the message's meaning depends on
//! them; and only a protocol the route allows is upgraded to (its
//! `upgrades`, WebSocket by default, never h2c), so an `Upgrade: h2c`
//! never reaches a backend.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};

/// Always hop-by-hop, whether or not `Connection` names them.
const FIXED: [HeaderName; 5] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
];

const UPGRADE_TOKEN: &str = "upgrade";

/// Headers that frame the message or say where it goes: `Connection` may
/// not remove them (RFC 9110 §7.6.1 lets a sender name only hop-by-hop
/// fields there).
const NEVER_HOP: [HeaderName; 3] = [
    header::HOST,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
];

/// Whether a request asks for an upgrade the route carries: `Upgrade`
/// named in `Connection`, for protocols all in `allowed` (lower-case
/// names; a `/version` is ignored). An upgrade to anything else (`h2c`
/// among them) is not one: its headers are removed and the request goes on
/// as a plain one.
pub fn requests_upgrade(map: &HeaderMap, allowed: &[Box<str>]) -> bool {
    map.contains_key(header::UPGRADE)
        && connection_lists(map, UPGRADE_TOKEN)
        && upgrade_allowed(map, allowed)
}

/// Whether an `Upgrade` header asks only for protocols in `allowed`.
fn upgrade_allowed(map: &HeaderMap, allowed: &[Box<str>]) -> bool {
    let mut protocols = map
        .get_all(header::UPGRADE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(|token| token.trim_ascii())
        .filter(|token| !token.is_empty())
        .peekable();
    protocols.peek().is_some()
        && protocols.all(|token| {
            let name = token.split(|&b| b == b'/').next().unwrap_or_default();
            allowed
                .iter()
                .any(|protocol| protocol.as_bytes().eq_ignore_ascii_case(name))
        })
}

/// A header block that can lose headers: pingora keeps a second map of the
/// original name case, so removal must go through its own methods.
trait Headers {
    fn map(&self) -> &HeaderMap;
    fn remove(&mut self, name: &HeaderName);
    fn set_connection_upgrade(&mut self);
}

impl Headers for RequestHeader {
    fn map(&self) -> &HeaderMap {
        &self.headers
    }
    fn remove(&mut self, name: &HeaderName) {
        self.remove_header(name);
    }
    fn set_connection_upgrade(&mut self) {
        let _ = self.insert_header(header::CONNECTION, HeaderValue::from_static(UPGRADE_TOKEN));
    }
}

impl Headers for ResponseHeader {
    fn map(&self) -> &HeaderMap {
        &self.headers
    }
    fn remove(&mut self, name: &HeaderName) {
        self.remove_header(name);
    }
    fn set_connection_upgrade(&mut self) {
        let _ = self.insert_header(header::CONNECTION, HeaderValue::from_static(UPGRADE_TOKEN));
    }
}

/// Strips the request's hop-by-hop headers before it goes upstream; an
/// upgrade stays when it is to a protocol in `upgrades`.
pub fn strip_request(request: &mut RequestHeader, upgrades: &[Box<str>]) {
    strip(request, upgrades);
}

/// Strips the response's hop-by-hop headers before it goes to the client.
/// A 101 is passed as the backend wrote it: it is the upgrade itself.
pub fn strip_response(response: &mut ResponseHeader) {
    if response.status.as_u16() != 101 {
        strip(response, &[]);
    }
}

fn strip(headers: &mut impl Headers, upgrades: &[Box<str>]) {
    let map = headers.map();
    // The common case (no Connection, no fixed header) costs a few lookups
    // and no allocation.
    let has_connection = map.contains_key(header::CONNECTION);
    if !has_connection
        && !map.contains_key(header::UPGRADE)
        && !FIXED[1..].iter().any(|name| map.contains_key(name))
    {
        return;
    }
    let upgrading = requests_upgrade(map, upgrades);
    // The same rule as for heads handled as bytes: one place says what is
    // hop-by-hop.
    let connection: Vec<&[u8]> = map
        .get_all(header::CONNECTION)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    let hop: Vec<HeaderName> = map
        .keys()
        .filter(|name| is_hop_by_hop_field(name.as_str().as_bytes(), &connection, upgrading))
        .cloned()
        .collect();
    for name in &hop {
        headers.remove(name);
    }
    if upgrading {
        headers.set_connection_upgrade();
    }
}

/// Whether the field `name` stays on its hop: `connection` holds the
/// values of the message's `Connection` headers (those that name only
/// `close`, `keep-alive` or `upgrade` may be left out,
/// [`connection_names_others`]). `keep_upgrade`: the message carries an
/// upgrade, so `Upgrade` stays; `Connection` is always reported, and the
/// caller writes `Connection: upgrade` itself.
pub fn is_hop_by_hop_field(
    name: &[u8],
    connection: &[impl AsRef<[u8]>],
    keep_upgrade: bool,
) -> bool {
    if FIXED
        .iter()
        .any(|fixed| name.eq_ignore_ascii_case(fixed.as_str().as_bytes()))
    {
        return true;
    }
    if name.eq_ignore_ascii_case(b"upgrade") {
        return !keep_upgrade;
    }
    if NEVER_HOP
        .iter()
        .any(|never| name.eq_ignore_ascii_case(never.as_str().as_bytes()))
    {
        return false;
    }
    connection.iter().any(|value| {
        value
            .as_ref()
            .split(|&b| b == b',')
            .any(|token| token.trim_ascii().eq_ignore_ascii_case(name))
    })
}

/// Whether a `Connection` value names any header beyond the ones every
/// proxy handles anyway (`close`, `keep-alive`, `upgrade`): only such a
/// value need be kept for [`is_hop_by_hop_field`].
pub fn connection_names_others(value: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .any(|token| {
            !token.is_empty()
                && !token.eq_ignore_ascii_case(b"close")
                && !token.eq_ignore_ascii_case(b"keep-alive")
                && !token.eq_ignore_ascii_case(b"upgrade")
        })
}

fn connection_lists(map: &HeaderMap, token: &str) -> bool {
    map.get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|list| list.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn websocket() -> Vec<Box<str>> {
        vec!["websocket".into()]
    }

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut request = RequestHeader::build("GET", b"/", None).unwrap();
        for (name, value) in headers {
            request.append_header(name.to_string(), *value).unwrap();
        }
        request
    }

    #[test]
    fn named_and_fixed_hop_headers_go_end_to_end_ones_stay() {
        let mut r = request(&[
            ("Connection", "close, X-Hop"),
            ("Connection", "x-other"),
            ("X-Hop", "1"),
            ("X-Other", "2"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers"),
            ("Upgrade", "h2c"),
            ("X-Kept", "yes"),
        ]);
        strip_request(&mut r, &websocket());
        let names: Vec<&str> = r.headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
    }

    #[test]
    fn an_upgrade_keeps_upgrade_and_a_plain_connection_upgrade() {
        let mut r = request(&[
            ("Connection", "keep-alive, Upgrade, X-Hop"),
            ("Upgrade", "websocket"),
            ("X-Hop", "1"),
            ("Sec-WebSocket-Key", "abc"),
        ]);
        strip_request(&mut r, &websocket());
        assert_eq!(r.headers["upgrade"], "websocket");
        assert_eq!(r.headers["connection"], "upgrade");
        assert_eq!(r.headers["sec-websocket-key"], "abc");
        assert!(r.headers.get("x-hop").is_none());
    }

    #[test]
    fn a_response_loses_its_hop_headers_but_a_101_is_left_whole() {
        let mut ok = ResponseHeader::build(200, None).unwrap();
        ok.append_header("Connection", "X-Secret").unwrap();
        ok.append_header("X-Secret", "1").unwrap();
        ok.append_header("Keep-Alive", "timeout=9").unwrap();
        strip_response(&mut ok);
        assert!(ok.headers.is_empty(), "{:?}", ok.headers);

        let mut switching = ResponseHeader::build(101, None).unwrap();
        switching.append_header("Connection", "Upgrade").unwrap();
        switching.append_header("Upgrade", "websocket").unwrap();
        strip_response(&mut switching);
        assert_eq!(switching.headers.len(), 2);
    }

    #[test]
    fn connection_cannot_name_the_framing_headers_away() {
        let mut r = request(&[
            (
                "Connection",
                "host, content-length, transfer-encoding, x-hop",
            ),
            ("Host", "app.test"),
            ("Content-Length", "4"),
            ("Transfer-Encoding", "chunked"),
            ("X-Hop", "1"),
        ]);
        strip_request(&mut r, &websocket());
        let mut names: Vec<&str> = r.headers.keys().map(|n| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-length", "host", "transfer-encoding"]);
    }

    #[test]
    fn only_a_websocket_upgrade_passes() {
        for (upgrade, passes) in [
            ("websocket", true),
            ("WebSocket", true),
            ("websocket/13", true),
            ("h2c", false),
            ("websocket, h2c", false),
            ("tls/1.2", false),
            ("", false),
        ] {
            let mut r = request(&[
                ("Connection", "Upgrade, HTTP2-Settings"),
                ("Upgrade", upgrade),
            ]);
            assert_eq!(
                requests_upgrade(&r.headers, &websocket()),
                passes,
                "{upgrade:?}"
            );
            strip_request(&mut r, &websocket());
            assert_eq!(r.headers.contains_key("upgrade"), passes, "{upgrade:?}");
            assert!(!r.headers.contains_key("http2-settings"));
        }
        // A route's own list: another protocol, or none at all.
        let r = request(&[("Connection", "upgrade"), ("Upgrade", "custom/2")]);
        assert!(requests_upgrade(&r.headers, &["custom".into()]));
        assert!(!requests_upgrade(&r.headers, &websocket()));
        let r = request(&[("Connection", "upgrade"), ("Upgrade", "websocket")]);
        assert!(!requests_upgrade(&r.headers, &[]));
        // `Upgrade` without `Connection: upgrade` is no upgrade at all.
        let r = request(&[("Upgrade", "websocket")]);
        assert!(!requests_upgrade(&r.headers, &websocket()));
    }

    #[test]
    fn no_hop_headers_means_nothing_changes() {
        let mut r = request(&[("Host", "a"), ("Accept", "*/*")]);
        strip_request(&mut r, &websocket());
        assert_eq!(r.headers.len(), 2);
    }
}
