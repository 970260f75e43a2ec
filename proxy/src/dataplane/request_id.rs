//! `X-Request-Id`: kept when the client sent one, made up when it did not,
//! and passed to the backend and back to the client, so one id ties the
//! client's report, our access log and the backend's log together.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use http::HeaderValue;

pub const HEADER: &str = "x-request-id";

/// Ids longer than this from a client are replaced: they end up in logs.
const MAX_CLIENT_ID: usize = 200;

/// The request's id: the client's, or a new one.
pub fn for_request(headers: &http::HeaderMap) -> HeaderValue {
    match headers.get(HEADER) {
        Some(given) if !given.is_empty() && given.len() <= MAX_CLIENT_ID => given.clone(),
        _ => generate(),
    }
}

/// 32 hex digits: a random per-process prefix and a mixed counter. Unique
/// within a process without a syscall or a lock per request, and across
/// restarts by the prefix.
pub fn generate() -> HeaderValue {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    // std's hasher keys are random per process.
    let prefix = *PREFIX.get_or_init(|| {
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut text = [0u8; 32];
    hex(prefix, &mut text[..16]);
    // The counter is mixed (a bijection) so that ids do not look sequential.
    hex(mix(n ^ prefix), &mut text[16..]);
    HeaderValue::from_bytes(&text).expect("hex digits are a valid header value")
}

fn hex(mut value: u64, out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(value & 0xf) as usize];
        value >>= 4;
    }
}

/// splitmix64's finaliser: a bijection on u64.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_id_is_kept_and_a_missing_or_oversized_one_is_made_up() {
        let mut headers = http::HeaderMap::new();
        let made = for_request(&headers);
        assert_eq!(made.len(), 32);
        assert!(made.as_bytes().iter().all(u8::is_ascii_hexdigit));
        headers.insert(HEADER, HeaderValue::from_static("abc-123"));
        assert_eq!(for_request(&headers), "abc-123");
        headers.insert(HEADER, HeaderValue::from_str(&"x".repeat(201)).unwrap());
        assert_eq!(for_request(&headers).len(), 32);
    }

    #[test]
    fn generated_ids_do_not_repeat() {
        let ids: std::collections::HashSet<_> = (0..100_000).map(|_| generate()).collect();
        assert_eq!(ids.len(), 100_000);
    }
}
