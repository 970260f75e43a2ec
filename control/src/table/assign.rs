//! Which slot a request goes to: a preview host, an authorised override
//! header, the sticky cookie, or the client's bucket against the canary
//! weight, in that order.
//!
//! A client's bucket (0–9,999) comes from a stable hash of its sticky key
//! (client IP or a named header) and the canary's cohort. It is on the
//! canary while `bucket < weight × 100`, so raising the weight only adds
//! clients to the canary and never moves one back. The cohort is new for
//! each canary, so a different set of users takes each one's risk, and a
//! cookie from an earlier canary is reassigned rather than trusted.
//!
//! Nothing here locks or allocates: the cookie values and `Set-Cookie`
//! headers are built with the table.

use crate::stable_hash::StableHasher;
use std::net::IpAddr;
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue, COOKIE};
use ipnet::IpNet;
use switchyard_conf::{PreviewConfig, StickyKey};

/// Buckets per client; weights are percent, so each percent is 100 buckets.
pub const BUCKETS: u64 = 10_000;

/// The header that authorises an override when it carries the token.
pub const TOKEN_HEADER: &str = "x-switchyard-token";

/// How a route assigns clients to slots, as the Controller configures it.
#[derive(Debug, Clone)]
pub struct AssignmentSpec {
    pub cookie: String,
    pub key: StickyKey,
    pub max_age: Duration,
    /// Names the current canary; new when a canary starts.
    pub cohort: u64,
    pub preview: Option<PreviewConfig>,
    /// Where preview hosts and no other slot go: the newest non-active slot.
    pub preview_slot: Option<String>,
}

impl Default for AssignmentSpec {
    fn default() -> Self {
        AssignmentSpec {
            cookie: "switchyard-slot".into(),
            key: StickyKey::ClientIp,
            max_age: switchyard_conf::DEFAULT_STICKY_MAX_AGE,
            cohort: 0,
            preview: None,
            preview_slot: None,
        }
    }
}

/// A route's assignment rules, ready for the request path.
#[derive(Debug)]
pub struct Assigner {
    cookie: Box<str>,
    key: Key,
    cohort: u64,
    /// Per slot: the cookie value that names it in this cohort.
    cookie_values: Vec<Box<str>>,
    /// Per slot: the `Set-Cookie` header that hands that value out.
    set_cookies: Vec<HeaderValue>,
    overrides: Option<Overrides>,
    preview_slot: Option<usize>,
}

#[derive(Debug)]
enum Key {
    ClientIp,
    Header(HeaderName),
}

#[derive(Debug)]
struct Overrides {
    header: HeaderName,
    token: Option<Box<[u8]>>,
    cidrs: Vec<IpNet>,
}

/// Why a request went where it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No canary: the active slot.
    Active,
    /// The client's bucket against the canary weight; the response hands
    /// out the cookie.
    Bucket,
    /// The sticky cookie of the current cohort.
    Cookie,
    /// An authorised override header.
    Override,
    /// A preview host.
    Preview,
}

/// Where one request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub slot: usize,
    pub reason: Reason,
}

/// What [`Assigner::choose`] needs to know of the route's state.
#[derive(Debug, Clone, Copy)]
pub struct Split {
    pub active: usize,
    /// The canary slot and its weight, when the weight is above 0.
    pub canary: Option<(usize, u8)>,
}

impl Assigner {
    pub fn new(spec: AssignmentSpec, slot_names: &[&str]) -> Assigner {
        let cookie_values: Vec<Box<str>> = slot_names
            .iter()
            .map(|slot| format!("{slot}.{:x}", spec.cohort).into())
            .collect();
        let set_cookies = cookie_values
            .iter()
            .map(|value| {
                let text = format!(
                    "{}={value}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax",
                    spec.cookie,
                    spec.max_age.as_secs()
                );
                // Cookie and slot names are validated tokens.
                HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static(""))
            })
            .collect();
        let key = match &spec.key {
            StickyKey::ClientIp => Key::ClientIp,
            StickyKey::Header(name) => HeaderName::from_bytes(name.as_bytes())
                .map(Key::Header)
                .unwrap_or(Key::ClientIp),
        };
        let overrides = spec.preview.as_ref().and_then(|p| {
            Some(Overrides {
                header: HeaderName::from_bytes(p.override_header.as_bytes()).ok()?,
                token: p.override_token.as_ref().map(|t| t.as_bytes().into()),
                cidrs: p.override_cidrs.clone(),
            })
        });
        let preview_slot = spec
            .preview_slot
            .as_deref()
            .and_then(|name| slot_names.iter().position(|s| *s == name));
        Assigner {
            cookie: spec.cookie.into(),
            key,
            cohort: spec.cohort,
            cookie_values,
            set_cookies,
            overrides,
            preview_slot,
        }
    }

    /// The slot for a request. `slot_names` are the route's, by index.
    pub fn choose(
        &self,
        split: Split,
        slot_names: &[std::sync::Arc<str>],
        headers: &HeaderMap,
        client_ip: Option<IpAddr>,
        via_preview_host: bool,
    ) -> Choice {
        if via_preview_host {
            if let Some(slot) = self.preview_slot {
                return Choice {
                    slot,
                    reason: Reason::Preview,
                };
            }
        }
        if let Some(slot) = self.overridden(slot_names, headers, client_ip) {
            return Choice {
                slot,
                reason: Reason::Override,
            };
        }
        let Some((canary, weight)) = split.canary else {
            return Choice {
                slot: split.active,
                reason: Reason::Active,
            };
        };
        if let Some(value) = self.cookie_value(headers) {
            for slot in [split.active, canary] {
                if self.cookie_values[slot].as_bytes() == value {
                    return Choice {
                        slot,
                        reason: Reason::Cookie,
                    };
                }
            }
        }
        let slot = if self.bucket(headers, client_ip) < u64::from(weight) * (BUCKETS / 100) {
            canary
        } else {
            split.active
        };
        Choice {
            slot,
            reason: Reason::Bucket,
        }
    }

    /// The `Set-Cookie` header that keeps a client on `slot`.
    pub fn set_cookie(&self, slot: usize) -> &HeaderValue {
        &self.set_cookies[slot]
    }

    /// The slot an override header names, when the request may choose:
    /// it carries the token or comes from an allowed network. Anything
    /// else is ignored, not refused: an override is a tester's tool, and
    /// a user who sends the header by chance is simply routed as usual.
    fn overridden(
        &self,
        slot_names: &[std::sync::Arc<str>],
        headers: &HeaderMap,
        client_ip: Option<IpAddr>,
    ) -> Option<usize> {
        let overrides = self.overrides.as_ref()?;
        let wanted = headers.get(&overrides.header)?.as_bytes();
        let slot = slot_names.iter().position(|s| s.as_bytes() == wanted)?;
        let by_token = overrides.token.as_deref().is_some_and(|token| {
            headers
                .get(TOKEN_HEADER)
                .is_some_and(|given| same_secret(given.as_bytes(), token))
        });
        let by_network = client_ip.is_some_and(|ip| {
            let ip = canonical(ip);
            overrides.cidrs.iter().any(|net| net.contains(&ip))
        });
        (by_token || by_network).then_some(slot)
    }

    /// The sticky cookie's value, from any `Cookie` header. Read as bytes:
    /// validating the whole header as text first would cost more than
    /// finding our one pair in it.
    fn cookie_value<'h>(&self, headers: &'h HeaderMap) -> Option<&'h [u8]> {
        let name = self.cookie.as_bytes();
        headers.get_all(COOKIE).iter().find_map(|header| {
            header.as_bytes().split(|&b| b == b';').find_map(|pair| {
                let value = pair.trim_ascii().strip_prefix(name)?.strip_prefix(b"=")?;
                Some(trim_quotes(value))
            })
        })
    }

    /// The client's bucket in this cohort: the hash of its sticky key. A
    /// request without the configured header falls back to its IP.
    fn bucket(&self, headers: &HeaderMap, client_ip: Option<IpAddr>) -> u64 {
        let from_header = match &self.key {
            Key::Header(name) => headers.get(name).map(HeaderValue::as_bytes),
            Key::ClientIp => None,
        };
        let hash = match (from_header, client_ip.map(canonical)) {
            (Some(key), _) => stable_hash(key, self.cohort),
            (None, Some(IpAddr::V4(ip))) => stable_hash(&ip.octets(), self.cohort),
            (None, Some(IpAddr::V6(ip))) => stable_hash(&ip.octets(), self.cohort),
            (None, None) => stable_hash(b"", self.cohort),
        };
        hash % BUCKETS
    }
}

/// An IPv4 client seen through an IPv6 socket counts as its IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A cookie value without the double quotes RFC 6265 allows around it.
fn trim_quotes(value: &[u8]) -> &[u8] {
    let start = value.iter().position(|&b| b != b'"').unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|&b| b != b'"')
        .map_or(start, |i| i + 1);
    &value[start..end]
}

/// Compares a secret in time that does not depend on where it differs.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

/// FNV-1a, seeded with the cohort and finished with splitmix64's mixer:
/// the same on every machine and every release, so several proxies (or a
/// restarted one) put a client in the same bucket.
fn stable_hash(key: &[u8], cohort: u64) -> u64 {
    let mut hasher = StableHasher::new(cohort);
    hasher.eat(key);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    const BLUE: usize = 0;
    const GREEN: usize = 1;

    fn names() -> Vec<Arc<str>> {
        vec!["blue".into(), "green".into()]
    }

    fn assigner(spec: AssignmentSpec) -> Assigner {
        Assigner::new(spec, &["blue", "green"])
    }

    fn split(weight: u8) -> Split {
        Split {
            active: BLUE,
            canary: (weight > 0).then_some((GREEN, weight)),
        }
    }

    fn client(n: u32) -> Option<IpAddr> {
        Some(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n)))
    }

    fn choose(a: &Assigner, weight: u8, headers: &HeaderMap, ip: Option<IpAddr>) -> Choice {
        a.choose(split(weight), &names(), headers, ip, false)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn ten_percent_is_ten_percent_of_100_000_clients() {
        let a = assigner(AssignmentSpec {
            cohort: 0x5eed,
            ..Default::default()
        });
        let none = HeaderMap::new();
        for weight in [1u8, 10, 50] {
            let on_canary = (0..100_000)
                .filter(|&n| choose(&a, weight, &none, client(n)).slot == GREEN)
                .count();
            let expected = weight as usize * 1_000;
            assert!(
                on_canary.abs_diff(expected) <= 1_000,
                "weight {weight}: {on_canary} of 100,000 on the canary"
            );
        }
    }

    #[test]
    fn raising_the_weight_only_moves_clients_to_the_canary() {
        let a = assigner(AssignmentSpec {
            cohort: 7,
            ..Default::default()
        });
        let none = HeaderMap::new();
        for n in 0..20_000 {
            let mut was_on_canary = false;
            for weight in [0u8, 1, 5, 10, 25, 50, 99, 100] {
                let on_canary = choose(&a, weight, &none, client(n)).slot == GREEN;
                assert!(
                    on_canary || !was_on_canary,
                    "client {n} moved back at {weight} %"
                );
                was_on_canary = on_canary;
            }
            assert!(was_on_canary, "at 100 % everybody is on the canary");
        }
    }

    #[test]
    fn the_hash_key_can_be_a_header_and_is_stable() {
        let a = assigner(AssignmentSpec {
            key: StickyKey::Header("x-user".into()),
            cohort: 1,
            ..Default::default()
        });
        let on_canary = (0..10_000)
            .filter(|n| {
                let h = headers(&[("x-user", &format!("user-{n}"))]);
                // Same user from any address: the same slot.
                let first = choose(&a, 30, &h, client(1)).slot;
                assert_eq!(first, choose(&a, 30, &h, client(2)).slot);
                first == GREEN
            })
            .count();
        assert!(on_canary.abs_diff(3_000) <= 300, "{on_canary}");
        // A request without the header falls back to its address.
        let none = HeaderMap::new();
        let by_ip = choose(&a, 30, &none, client(5));
        assert_eq!(by_ip, choose(&a, 30, &none, client(5)));
    }

    #[test]
    fn a_new_cohort_draws_different_clients() {
        let none = HeaderMap::new();
        let picked = |cohort| {
            let a = assigner(AssignmentSpec {
                cohort,
                ..Default::default()
            });
            (0..1_000)
                .filter(|&n| choose(&a, 10, &none, client(n)).slot == GREEN)
                .collect::<Vec<_>>()
        };
        assert_eq!(picked(1), picked(1));
        assert_ne!(picked(1), picked(2));
    }

    #[test]
    fn the_cookie_of_this_cohort_keeps_a_client_where_it_was() {
        let a = assigner(AssignmentSpec {
            cookie: "sy".into(),
            cohort: 0xabc,
            ..Default::default()
        });
        let on_blue = headers(&[("cookie", "a=1; sy=blue.abc; b=2")]);
        let on_green = headers(&[("cookie", "x=1"), ("cookie", " sy=\"green.abc\" ")]);
        for weight in [1u8, 50, 100] {
            assert_eq!(choose(&a, weight, &on_blue, client(1)).slot, BLUE);
            assert_eq!(
                choose(&a, weight, &on_blue, client(1)).reason,
                Reason::Cookie
            );
            assert_eq!(choose(&a, weight, &on_green, client(1)).slot, GREEN);
        }
        // No canary any more: everybody is on the active slot.
        assert_eq!(choose(&a, 0, &on_green, client(1)).slot, BLUE);
        // A cookie of another cohort, or naming a slot that is gone, is
        // reassigned by bucket.
        for stale in ["sy=green.abd", "sy=teal.abc", "sy=", "sy"] {
            let h = headers(&[("cookie", stale)]);
            assert_eq!(
                choose(&a, 100, &h, client(1)).reason,
                Reason::Bucket,
                "{stale}"
            );
        }
        assert_eq!(
            a.set_cookie(GREEN).to_str().unwrap(),
            "sy=green.abc; Path=/; Max-Age=86400; HttpOnly; SameSite=Lax"
        );
    }

    fn with_preview(token: Option<&str>, cidrs: &[&str]) -> Assigner {
        assigner(AssignmentSpec {
            preview: Some(PreviewConfig {
                override_header: "x-switchyard-slot".into(),
                override_token: token.map(str::to_owned),
                override_cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
                preview_hosts: vec![],
            }),
            preview_slot: Some("green".into()),
            ..Default::default()
        })
    }

    #[test]
    fn the_override_header_needs_the_token_or_an_allowed_network() {
        let a = with_preview(Some("s3cret"), &["192.168.0.0/16"]);
        let ask = |pairs: &[(&'static str, &str)], ip: [u8; 4]| {
            choose(&a, 0, &headers(pairs), Some(IpAddr::from(ip)))
        };
        let outside = [10, 0, 0, 1];
        assert_eq!(
            ask(
                &[("x-switchyard-slot", "green"), (TOKEN_HEADER, "s3cret")],
                outside
            )
            .reason,
            Reason::Override
        );
        assert_eq!(ask(&[("x-switchyard-slot", "green")], outside).slot, BLUE);
        assert_eq!(
            ask(
                &[("x-switchyard-slot", "green"), (TOKEN_HEADER, "s3cre")],
                outside
            )
            .slot,
            BLUE
        );
        assert_eq!(
            ask(&[("x-switchyard-slot", "green")], [192, 168, 3, 4]).slot,
            GREEN
        );
        assert_eq!(
            ask(&[("x-switchyard-slot", "teal")], [192, 168, 3, 4]).slot,
            BLUE
        );
        // An IPv4 client on an IPv6 socket is matched as IPv4.
        let mapped: IpAddr = "::ffff:192.168.1.1".parse().unwrap();
        assert_eq!(
            choose(
                &a,
                0,
                &headers(&[("x-switchyard-slot", "green")]),
                Some(mapped)
            )
            .slot,
            GREEN
        );
        // Without a token or networks configured, nobody may override.
        let closed = with_preview(None, &[]);
        let h = headers(&[("x-switchyard-slot", "green"), (TOKEN_HEADER, "")]);
        assert_eq!(choose(&closed, 0, &h, client(1)).slot, BLUE);
    }

    #[test]
    fn preview_hosts_go_to_the_preview_slot() {
        let a = with_preview(None, &[]);
        let none = HeaderMap::new();
        let choice = a.choose(split(0), &names(), &none, client(1), true);
        assert_eq!((choice.slot, choice.reason), (GREEN, Reason::Preview));
    }
}
