//! Whose request it is: the connection's peer, or — when that peer is one
//! of `[server] trusted_proxies` (a load balancer, a CDN) — the rightmost
//! address in `X-Forwarded-For` that is not itself trusted. A PROXY
//! protocol header has already made its client the connection's peer
//! (`proxy_protocol.rs`). The address found here is what routing
//! (`sticky_key`, `override_cidrs`) and the access log see.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use pingora::http::HMap;

/// The client of one request, and what becomes of the
/// `X-Forwarded-For` it came with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Client {
    pub ip: Option<IpAddr>,
    /// The incoming `X-Forwarded-For` goes on to the backend, the peer
    /// appended: it came from a trusted proxy, or no proxy is trusted
    /// (every hop passed on as it came, as nginx does). From an untrusted
    /// peer, while some are trusted, it is dropped: the backend must not
    /// take a client's word for where it is.
    pub keep_forwarded: bool,
}

/// The client of a request from `peer` with these headers. With no proxy
/// trusted (the default) the headers are not even looked at.
pub(crate) fn of_request(peer: Option<IpAddr>, headers: &HMap, trusted: &[IpNet]) -> Client {
    if trusted.is_empty() {
        return Client {
            ip: peer,
            keep_forwarded: true,
        };
    }
    let values = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.as_bytes());
    resolve(peer, values, trusted)
}

/// The client of a request from `peer` with these `X-Forwarded-For`
/// values (each a comma-separated list), given the trusted proxies.
pub(crate) fn resolve<'v>(
    peer: Option<IpAddr>,
    forwarded_for: impl DoubleEndedIterator<Item = &'v [u8]>,
    trusted: &[IpNet],
) -> Client {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    match peer {
        Some(peer) if !trusted.is_empty() => {
            if !is_trusted(&peer) {
                return Client {
                    ip: Some(peer),
                    keep_forwarded: false,
                };
            }
            // Right to left: each hop was added by the one after it; the
            // first a trusted proxy did not vouch for is the client. A hop
            // that is not an address ends the walk: what is left of it
            // cannot be trusted either.
            let mut client = peer;
            let hops = forwarded_for
                .rev()
                .flat_map(|value| value.rsplit(|&b| b == b','));
            for hop in hops {
                match parse_hop(hop.trim_ascii()) {
                    Some(ip) => {
                        client = ip;
                        if !is_trusted(&ip) {
                            break;
                        }
                    }
                    None => break,
                }
            }
            Client {
                ip: Some(client),
                keep_forwarded: true,
            }
        }
        _ => Client {
            ip: peer,
            keep_forwarded: true,
        },
    }
}

/// One `X-Forwarded-For` hop: an address, maybe with a port
/// (`192.0.2.7:5060`, `[2001:db8::7]:443`).
fn parse_hop(hop: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(hop).ok()?;
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn client(peer: &str, xff: &[&str], trusted: &[&str]) -> Client {
        resolve(
            Some(peer.parse().unwrap()),
            xff.iter().map(|v| v.as_bytes()),
            &nets(trusted),
        )
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client_and_the_header_goes_on() {
        let c = client("192.0.2.1", &["203.0.113.9"], &[]);
        assert_eq!(
            c,
            Client {
                ip: ip("192.0.2.1"),
                keep_forwarded: true
            }
        );
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let c = client("198.51.100.4", &["203.0.113.9"], &["10.0.0.0/8"]);
        assert_eq!(
            c,
            Client {
                ip: ip("198.51.100.4"),
                keep_forwarded: false
            }
        );
    }

    #[test]
    fn from_a_trusted_peer_the_rightmost_untrusted_hop_is_the_client() {
        let trusted = ["10.0.0.0/8", "2001:db8:ffff::/48"];
        // A client's own claim at the left is skipped over.
        let c = client("10.0.0.2", &["1.1.1.1, 203.0.113.9, 10.0.0.7"], &trusted);
        assert_eq!(
            c,
            Client {
                ip: ip("203.0.113.9"),
                keep_forwarded: true
            }
        );
        // Several header fields are one list, in order.
        let c = client(
            "10.0.0.2",
            &["1.1.1.1", "203.0.113.9", "10.0.0.7"],
            &trusted,
        );
        assert_eq!(c.ip, ip("203.0.113.9"));
        // Ports and IPv6, bracketed or not.
        let c = client("2001:db8:ffff::1", &["[2001:db8::7]:443"], &trusted);
        assert_eq!(c.ip, ip("2001:db8::7"));
        let c = client("10.0.0.2", &["198.51.100.4:5060"], &trusted);
        assert_eq!(c.ip, ip("198.51.100.4"));
        // Every hop trusted: the leftmost is as far as it goes.
        let c = client("10.0.0.2", &["10.1.1.1, 10.0.0.7"], &trusted);
        assert_eq!(c.ip, ip("10.1.1.1"));
        // No header: the trusted peer itself.
        let c = client("10.0.0.2", &[], &trusted);
        assert_eq!(c.ip, ip("10.0.0.2"));
        // Garbage ends the walk at the last address a trusted hop gave.
        let c = client("10.0.0.2", &["203.0.113.9, unknown, 10.0.0.7"], &trusted);
        assert_eq!(c.ip, ip("10.0.0.7"));
        let c = client("10.0.0.2", &["203.0.113.9,"], &trusted);
        assert_eq!(c.ip, ip("10.0.0.2"));
    }
}
