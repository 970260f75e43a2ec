//! Which host a request is for, checked before it is routed.
//!
//! The proxy routes by host and the backend serves by host: if the two
//! could read a request differently, a client could reach a route through
//! another route's backend. So a request names exactly one valid
//! authority, or it is answered `400`:
//! - HTTP/1.1 needs a `Host` (RFC 9112 §3.2); HTTP/1.0 may go without one
//!   and is routed as "any host".
//! - Two `Host` headers, or one that is a list (`a.test, b.test`), an empty
//!   one, or one with a path, user info or spaces, is not one authority.
//! - A target in absolute form (`GET http://a.test/ HTTP/1.1`), and an
//!   HTTP/2 `:authority`, win over `Host` (RFC 9112 §3.2.3, RFC 9113
//!   §8.3.1); the backend then gets that authority as its `Host`.

use http::header::{self, HeaderMap};
use http::Uri;

/// Why a request has no usable authority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BadHost {
    /// HTTP/1.1 (or HTTP/2) without any host.
    Missing,
    /// More than one `Host` header.
    Repeated,
    /// A `Host` or target authority that is not `host[:port]`.
    Invalid,
}

impl BadHost {
    pub(crate) fn body(self) -> &'static [u8] {
        match self {
            BadHost::Missing => b"switchyard: the request has no Host header\n",
            BadHost::Repeated => b"switchyard: the request has more than one Host header\n",
            BadHost::Invalid => b"switchyard: the Host header is not one valid host[:port]\n",
        }
    }
}

/// The authority a request is for: the target's when it has one, else the
/// single `Host` header's. `Ok(None)` for an HTTP/1.0 request without one.
pub(crate) fn request_authority<'r>(
    version: http::Version,
    uri: &'r Uri,
    headers: &'r HeaderMap,
) -> Result<Option<&'r str>, BadHost> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(BadHost::Repeated);
    }
    if let Some(authority) = uri.authority() {
        let authority = authority.as_str();
        return if valid_authority(authority.as_bytes()) {
            Ok(Some(authority))
        } else {
            Err(BadHost::Invalid)
        };
    }
    match host {
        Some(value) if valid_authority(value.as_bytes()) => {
            // `valid_authority` admits ASCII only.
            Ok(value.to_str().ok())
        }
        Some(_) => Err(BadHost::Invalid),
        None if version <= http::Version::HTTP_10 => Ok(None),
        None => Err(BadHost::Missing),
    }
}

/// `host [":" port]`, where host is a DNS name or IPv4 address (letters,
/// digits, `-`, `.`, `_`, `~`) or a bracketed IPv6 literal, and port is 1
/// to 5 digits up to 65535. Stricter than RFC 3986's reg-name, which also
/// allows `,`, `;` and other sub-delimiters no DNS name has: those are how
/// a list or a smuggled value would look.
pub(crate) fn valid_authority(authority: &[u8]) -> bool {
    let (host, port) = match authority.first() {
        Some(b'[') => {
            let Some(close) = authority.iter().position(|&b| b == b']') else {
                return false;
            };
            let literal = &authority[1..close];
            let ipv6 = std::str::from_utf8(literal)
                .ok()
                .and_then(|s| s.parse::<std::net::Ipv6Addr>().ok())
                .is_some();
            if !ipv6 {
                return false;
            }
            match &authority[close + 1..] {
                [] => (&authority[..=close], None),
                [b':', port @ ..] => (&authority[..=close], Some(port)),
                _ => return false,
            }
        }
        _ => match authority.iter().position(|&b| b == b':') {
            Some(colon) => (&authority[..colon], Some(&authority[colon + 1..])),
            None => (authority, None),
        },
    };
    let host_ok = host.first() == Some(&b'[')
        || (!host.is_empty()
            && host.len() <= 253
            && host
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')));
    let port_ok = port.is_none_or(|port| {
        !port.is_empty()
            && port.len() <= 5
            && port.iter().all(u8::is_ascii_digit)
            && std::str::from_utf8(port)
                .ok()
                .and_then(|p| p.parse::<u16>().ok())
                .is_some()
    });
    host_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderValue, Version};

    fn headers(hosts: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for host in hosts {
            map.append(header::HOST, HeaderValue::from_bytes(host).unwrap());
        }
        map
    }

    fn authority_of(
        version: Version,
        target: &str,
        hosts: &[&[u8]],
    ) -> Result<Option<String>, BadHost> {
        let uri: Uri = target.parse().unwrap();
        let map = headers(hosts);
        request_authority(version, &uri, &map).map(|a| a.map(str::to_owned))
    }

    #[test]
    fn one_valid_host_is_the_authority() {
        for host in [
            "app.test",
            "app.test:8080",
            "127.0.0.1",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:443",
            "under_score.test",
            "x",
        ] {
            assert_eq!(
                authority_of(Version::HTTP_11, "/", &[host.as_bytes()]),
                Ok(Some(host.to_owned())),
                "{host}"
            );
        }
    }

    #[test]
    fn lists_empties_and_junk_are_not_an_authority() {
        for host in [
            &b"a.test, b.test"[..],
            b"a.test,b.test",
            b"",
            b" ",
            b"a.test/path",
            b"user@a.test",
            b"a.test:",
            b"a.test:99999",
            b"a.test:8o",
            b"a.test:80:80",
            b"[::1",
            b"[not-ipv6]",
            b"[::1]x",
            b"a test",
            b"a.test;b",
            b"caf\xc3\xa9.test",
        ] {
            assert_eq!(
                authority_of(Version::HTTP_11, "/", &[host]),
                Err(BadHost::Invalid),
                "{}",
                host.escape_ascii()
            );
        }
    }

    #[test]
    fn http11_needs_a_host_http10_does_not() {
        assert_eq!(
            authority_of(Version::HTTP_11, "/", &[]),
            Err(BadHost::Missing)
        );
        assert_eq!(authority_of(Version::HTTP_10, "/", &[]), Ok(None));
        assert_eq!(
            authority_of(Version::HTTP_11, "/", &[b"a.test", b"a.test"]),
            Err(BadHost::Repeated)
        );
        assert_eq!(
            authority_of(Version::HTTP_10, "/", &[b"a.test", b"b.test"]),
            Err(BadHost::Repeated)
        );
    }

    #[test]
    fn the_target_authority_wins_over_host() {
        assert_eq!(
            authority_of(Version::HTTP_11, "http://b.test:81/x", &[b"a.test"]),
            Ok(Some("b.test:81".to_owned()))
        );
        assert_eq!(
            authority_of(Version::HTTP_11, "http://b.test/x", &[]),
            Ok(Some("b.test".to_owned()))
        );
        assert_eq!(
            authority_of(Version::HTTP_11, "http://user@b.test/x", &[b"a.test"]),
            Err(BadHost::Invalid)
        );
    }
}
