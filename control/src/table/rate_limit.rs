//! `[route.limits]`: requests per client over time, as a generic cell rate
//! algorithm (GCRA) — one "theoretical arrival time" per client, moved on
//! by one interval per request allowed; a request that would move it more
//! than the burst ahead of now is refused with how long to wait.
//!
//! The state is a fixed table of atomic cells, one per hash bucket of the
//! client's key: its memory is bounded whatever the number of clients (a
//! flood of distinct addresses only shares buckets), and a request takes
//! no lock, one compare-and-swap. Clients whose keys share a bucket share
//! its allowance: stricter, never looser. The hash is keyed at random per
//! process, so nobody can aim at another client's bucket.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Buckets per limited route: 128 KiB.
const BUCKETS: usize = 16 * 1024;

/// What a route's limit is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitSpec {
    /// `requests` per `per` in the long run …
    pub requests: u32,
    pub per: Duration,
    /// … and this many more at once.
    pub burst: u32,
    pub key: LimitKey,
}

/// Whose allowance a request draws on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    ClientIp,
    /// This header's value (lower-case name); a request without it is
    /// keyed by its client's address.
    Header(String),
}

#[derive(Debug)]
pub struct RateLimit {
    pub spec: LimitSpec,
    /// Nanoseconds since `epoch` of each bucket's theoretical arrival
    /// time; 0 for a bucket never used.
    cells: Box<[AtomicU64]>,
    interval: u64,
    tolerance: u64,
    epoch: Instant,
    hasher: ahash::RandomState,
}

impl RateLimit {
    pub fn new(spec: LimitSpec) -> RateLimit {
        let interval = (spec.per.as_nanos() / u128::from(spec.requests.max(1))).max(1) as u64;
        RateLimit {
            cells: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            interval,
            tolerance: interval.saturating_mul(u64::from(spec.burst)),
            epoch: Instant::now(),
            hasher: ahash::RandomState::new(),
            spec,
        }
    }

    /// Takes one request of `key`'s allowance at `now`: `Err` with how long
    /// until one is allowed.
    pub fn check(&self, key: &[u8], now: Instant) -> Result<(), Duration> {
        let cell = &self.cells[self.hasher.hash_one(key) as usize % BUCKETS];
        // +1: 0 stays "never used", whatever the clock.
        let now = now.saturating_duration_since(self.epoch).as_nanos() as u64 + 1;
        let mut current = cell.load(Ordering::Relaxed);
        loop {
            let tat = current.max(now);
            if tat - now > self.tolerance {
                return Err(Duration::from_nanos(tat - now - self.tolerance));
            }
            match cell.compare_exchange_weak(
                current,
                tat + self.interval,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(seen) => current = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(requests: u32, per: Duration, burst: u32) -> RateLimit {
        RateLimit::new(LimitSpec {
            requests,
            per,
            burst,
            key: LimitKey::ClientIp,
        })
    }

    #[test]
    fn a_burst_then_the_rate() {
        let limit = limit(10, Duration::from_secs(1), 4);
        let t0 = Instant::now();
        // 1 + burst at once.
        for i in 0..5 {
            assert!(limit.check(b"a", t0).is_ok(), "request {i}");
        }
        let wait = limit.check(b"a", t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        // Another client is not held back by this one.
        assert!(limit.check(b"b", t0).is_ok());
        // One interval later, one more; not two.
        let t1 = t0 + Duration::from_millis(100);
        assert!(limit.check(b"a", t1).is_ok());
        assert!(limit.check(b"a", t1).is_err());
        // Over time, the rate: 10 a second.
        let mut allowed = 0;
        for ms in (200..1200).step_by(10) {
            allowed += limit.check(b"a", t0 + Duration::from_millis(ms)).is_ok() as u32;
        }
        assert_eq!(allowed, 10);
        // Idle long enough, the whole burst again.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..5 {
            assert!(limit.check(b"a", later).is_ok());
        }
        assert!(limit.check(b"a", later).is_err());
    }

    #[test]
    fn no_burst_is_one_at_a_time() {
        let limit = limit(2, Duration::from_secs(60), 0);
        let t0 = Instant::now();
        assert!(limit.check(b"k", t0).is_ok());
        assert_eq!(limit.check(b"k", t0), Err(Duration::from_secs(30)));
        assert!(limit.check(b"k", t0 + Duration::from_secs(30)).is_ok());
    }

    #[test]
    fn threads_racing_never_get_more_than_the_burst() {
        let limit = std::sync::Arc::new(limit(1, Duration::from_secs(3600), 99));
        let t0 = Instant::now();
        let allowed: u32 = (0..4)
            .map(|_| {
                let limit = limit.clone();
                std::thread::spawn(move || {
                    (0..100).filter(|_| limit.check(b"x", t0).is_ok()).count() as u32
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(allowed, 100);
    }
}
