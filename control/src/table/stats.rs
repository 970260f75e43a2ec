//! Per-slot request counters for rollout analysis: requests, errors,
//! upstream failures and a latency histogram, all relaxed atomics so the
//! request path takes no lock. The Controller reads a [`StatsSnapshot`] at
//! the start and the end of each analysis window and compares the
//! difference.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Sub-buckets per power of two: each bucket is about 19 % wide, so a p95
/// read from the histogram is within 19 % of the true one.
const SUB_BUCKETS_LOG2: u32 = 2;
/// Latencies are kept in microseconds up to 2^27 µs (about 134 s); longer
/// ones land in the last bucket.
const MAX_LOG2: u32 = 27;
pub const LATENCY_BUCKETS: usize = (MAX_LOG2 << SUB_BUCKETS_LOG2) as usize;

/// What the request path counts on one slot. Shared by every generation's
/// table, like the in-flight counts.
#[derive(Debug)]
pub struct SlotStats {
    requests: AtomicU64,
    /// Answers with status 500–599, the backend's or our own 502/504.
    errors: AtomicU64,
    /// Failed connects and dropped requests, retried or not.
    upstream_failures: AtomicU64,
    latency: [AtomicU64; LATENCY_BUCKETS],
}

impl Default for SlotStats {
    fn default() -> Self {
        SlotStats {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            upstream_failures: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl SlotStats {
    /// One answered request: its status and the time to its response header.
    pub fn answered(&self, status: u16, latency: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.latency[bucket_of(latency)].fetch_add(1, Ordering::Relaxed);
    }

    /// A connect that failed or a request the backend dropped.
    pub fn upstream_failed(&self) {
        self.upstream_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            upstream_failures: self.upstream_failures.load(Ordering::Relaxed),
            latency: self
                .latency
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
        }
    }
}

/// The counters at one moment, or (after [`StatsSnapshot::since`]) over a
/// window.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StatsSnapshot {
    pub requests: u64,
    pub errors: u64,
    pub upstream_failures: u64,
    /// Counts per bucket; see [`bucket_of`].
    pub latency: Vec<u64>,
}

impl StatsSnapshot {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &StatsSnapshot) -> StatsSnapshot {
        StatsSnapshot {
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
            upstream_failures: self
                .upstream_failures
                .saturating_sub(earlier.upstream_failures),
            latency: self
                .latency
                .iter()
                .enumerate()
                .map(|(i, n)| n.saturating_sub(earlier.latency.get(i).copied().unwrap_or(0)))
                .collect(),
        }
    }

    /// Adds `other`'s counts to these (another node's, for the cluster's
    /// sum).
    pub fn add(&mut self, other: &StatsSnapshot) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.upstream_failures += other.upstream_failures;
        if self.latency.len() < other.latency.len() {
            self.latency.resize(other.latency.len(), 0);
        }
        for (mine, theirs) in self.latency.iter_mut().zip(&other.latency) {
            *mine += theirs;
        }
    }

    /// Errors per request, 0 without requests.
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }

    /// The latency under which `q` (0–1) of the requests answered: the
    /// upper bound of the bucket holding that rank. `None` without requests.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.latency.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(bucket_upper_bound(i));
            }
        }
        Some(bucket_upper_bound(self.latency.len() - 1))
    }
}

/// Log-linear buckets: bucket `e * 4 + m` holds latencies from
/// `2^e × (1 + m/4)` µs up to the next bucket's start.
fn bucket_of(latency: Duration) -> usize {
    let micros = latency.as_micros().clamp(1, (1u128 << MAX_LOG2) - 1) as u64;
    let exponent = 63 - micros.leading_zeros();
    let mantissa = if exponent >= SUB_BUCKETS_LOG2 {
        (micros >> (exponent - SUB_BUCKETS_LOG2)) & ((1 << SUB_BUCKETS_LOG2) - 1)
    } else {
        (micros << (SUB_BUCKETS_LOG2 - exponent)) & ((1 << SUB_BUCKETS_LOG2) - 1)
    };
    ((exponent << SUB_BUCKETS_LOG2) as u64 + mantissa) as usize
}

fn bucket_upper_bound(bucket: usize) -> Duration {
    let exponent = (bucket >> SUB_BUCKETS_LOG2) as u32;
    let mantissa = (bucket & ((1 << SUB_BUCKETS_LOG2) - 1)) as u64 + 1;
    let sub = 1u64 << SUB_BUCKETS_LOG2;
    Duration::from_micros(((1u64 << exponent) * (sub + mantissa)).div_ceil(sub))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_grow_by_a_quarter_power_of_two_and_bound_their_values() {
        for micros in [1u64, 2, 3, 5, 100, 999, 1_000, 12_345, 200_000, 5_000_000] {
            let d = Duration::from_micros(micros);
            let b = bucket_of(d);
            assert!(bucket_upper_bound(b) >= d, "{micros} µs in bucket {b}");
            if b > 0 {
                assert!(bucket_upper_bound(b - 1) <= d, "{micros} µs in bucket {b}");
            }
            // Each bucket is at most 25 % wider than the value it holds.
            assert!(bucket_upper_bound(b).as_micros() as f64 <= micros as f64 * 1.25 + 1.0);
        }
        assert_eq!(bucket_of(Duration::from_secs(3600)), LATENCY_BUCKETS - 1);
        assert_eq!(bucket_of(Duration::ZERO), 0);
    }

    #[test]
    fn p95_over_a_window_ignores_what_came_before() {
        let stats = SlotStats::default();
        for _ in 0..100 {
            stats.answered(200, Duration::from_millis(200));
        }
        let start = stats.snapshot();
        for i in 0..100 {
            let status = if i % 10 == 0 { 503 } else { 200 };
            let latency = if i < 95 { 2 } else { 50 };
            stats.answered(status, Duration::from_millis(latency));
        }
        let window = stats.snapshot().since(&start);
        assert_eq!(window.requests, 100);
        assert_eq!(window.errors, 10);
        assert!((window.error_rate() - 0.1).abs() < 1e-9);
        let p95 = window.quantile(0.95).unwrap();
        assert!(
            p95 >= Duration::from_millis(2) && p95 <= Duration::from_micros(2_500),
            "{p95:?}"
        );
        let p99 = window.quantile(0.99).unwrap();
        assert!(p99 >= Duration::from_millis(50), "{p99:?}");
        assert_eq!(StatsSnapshot::default().quantile(0.95), None);
    }
}
