//! When each backend is probed: pure arithmetic over offsets from one
//! epoch, so ten thousand backends on a one-second interval are probed ten
//! at a time every millisecond, not ten thousand at once every second.
//!
//! Every backend has a *phase*, a stable offset within its interval drawn
//! from its route, slot and address. It is probed at `epoch + phase +
//! k × interval`; the first probe of a backend new to the monitor comes
//! within [`FIRST_ROUND_SPREAD`] instead, so a new backend gets a verdict
//! quickly without every backend of a reload being probed in one burst.
//! A probe that had to wait for its turn ([`MAX_PROBES_IN_FLIGHT`]) or ran
//! long skips the rounds it missed rather than catching up.

use crate::stable_hash::StableHasher;
use std::time::Duration;

use super::monitor::BackendKey;

/// Probes in flight at once, in the whole process. A probe holds a socket
/// for at most its timeout; this many fit in the open files the proxy keeps
/// besides client connections (`RESERVED_FILES` in `proxy/src/limits.rs`).
/// Probes answered (or refused) within a millisecond run by the hundred
/// thousand a second under this bound; backends that time out are checked
/// at most `MAX_PROBES_IN_FLIGHT / timeout` times a second in all, each in
/// its turn.
pub const MAX_PROBES_IN_FLIGHT: usize = 128;

/// The first probes of backends that appear together (at start, or added
/// by a reload) are spread over this, or over their interval when it is
/// shorter.
pub const FIRST_ROUND_SPREAD: Duration = Duration::from_millis(250);

/// `key`'s phase within `interval`: in `[0, interval)`, the same on every
/// run and every machine, and spread evenly over the interval across keys.
pub fn phase_offset(key: &BackendKey, interval: Duration) -> Duration {
    let nanos = interval.as_nanos();
    if nanos == 0 {
        return Duration::ZERO;
    }
    let offset = u128::from(stable_hash(key)) % nanos;
    // `offset < interval`, which is a valid Duration.
    Duration::from_nanos(u64::try_from(offset).unwrap_or(u64::MAX))
}

/// When the first probe of `key` is due, the monitor having learned of it
/// at `since` (an offset from the epoch, like the result).
pub fn first_due(key: &BackendKey, interval: Duration, since: Duration) -> Duration {
    since + phase_offset(key, interval.min(FIRST_ROUND_SPREAD))
}

/// When the next probe is due, for a backend with `phase` within
/// `interval` whose last probe `started` and `finished` at these offsets
/// from the epoch: its first phase point (`phase + k × interval`) at least
/// half an interval after that probe started and not before it finished.
/// On time, that is one interval after the last; late by half an interval
/// or more, or slower than the interval, the missed rounds are skipped.
pub fn next_due(
    phase: Duration,
    interval: Duration,
    started: Duration,
    finished: Duration,
) -> Duration {
    let earliest = (started + interval / 2).max(finished);
    let step = interval.as_nanos();
    if step == 0 {
        return earliest;
    }
    let phase_nanos = phase.as_nanos() % step;
    let earliest_nanos = earliest.as_nanos();
    let rounds = earliest_nanos.saturating_sub(phase_nanos).div_ceil(step);
    let due = phase_nanos + rounds * step;
    Duration::from_nanos(u64::try_from(due).unwrap_or(u64::MAX))
}

/// FNV-1a over the route, slot and address, finished with splitmix64's
/// mixer so that addresses differing in one port digit land far apart.
fn stable_hash(key: &BackendKey) -> u64 {
    // Seed 0 keeps FNV-1a's own offset basis.
    let mut hasher = StableHasher::new(0);
    hasher.eat(key.route.as_bytes());
    hasher.eat(&[0xff]);
    hasher.eat(key.slot.as_bytes());
    hasher.eat(&[0xff]);
    match key.addr.ip() {
        std::net::IpAddr::V4(ip) => hasher.eat(&ip.octets()),
        std::net::IpAddr::V6(ip) => hasher.eat(&ip.octets()),
    }
    hasher.eat(&key.addr.port().to_be_bytes());
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::sync::Arc;

    fn key(n: u32) -> BackendKey {
        let ip = std::net::Ipv4Addr::from(0x7f2a_0000 + n / 100);
        BackendKey {
            route: Arc::from("app"),
            slot: Arc::from("blue"),
            addr: SocketAddr::from((ip, 3000 + (n % 100) as u16)),
        }
    }

    const SECOND: Duration = Duration::from_secs(1);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_phase_is_within_the_interval_and_the_same_every_time() {
        for n in 0..1000 {
            let phase = phase_offset(&key(n), SECOND);
            assert!(phase < SECOND, "{phase:?}");
            assert_eq!(phase, phase_offset(&key(n), SECOND));
        }
        assert_eq!(phase_offset(&key(1), Duration::ZERO), Duration::ZERO);
        // Pinned: a release that moved every phase would move every probe.
        assert_eq!(
            phase_offset(&key(0), SECOND),
            Duration::from_nanos(505_812_052)
        );
    }

    #[test]
    fn phases_spread_evenly_over_the_interval() {
        // 10,000 backends on neighbouring addresses and ports: every tenth
        // of the interval gets about a tenth of them.
        let mut buckets = [0u32; 10];
        for n in 0..10_000 {
            let phase = phase_offset(&key(n), SECOND);
            buckets[(phase.as_millis() / 100) as usize] += 1;
        }
        for (i, count) in buckets.iter().enumerate() {
            assert!(
                (850..1150).contains(count),
                "tenth {i}: {count} of 10,000 ({buckets:?})"
            );
        }
        // No millisecond gets a crowd either.
        let mut per_ms = vec![0u32; 1000];
        for n in 0..10_000 {
            per_ms[phase_offset(&key(n), SECOND).as_millis() as usize] += 1;
        }
        assert!(
            per_ms.iter().all(|&c| c <= 30),
            "max {:?}",
            per_ms.iter().max()
        );
    }

    #[test]
    fn the_route_and_slot_take_part_in_the_phase() {
        let blue = key(7);
        let green = BackendKey {
            slot: Arc::from("green"),
            ..blue.clone()
        };
        let other = BackendKey {
            route: Arc::from("api"),
            ..blue.clone()
        };
        let phases = [&blue, &green, &other].map(|k| phase_offset(k, SECOND));
        assert_ne!(phases[0], phases[1]);
        assert_ne!(phases[0], phases[2]);
    }

    #[test]
    fn the_first_probe_comes_within_the_first_round_spread() {
        let since = ms(5_000);
        for n in 0..1000 {
            let due = first_due(&key(n), SECOND, since);
            assert!(due >= since && due < since + FIRST_ROUND_SPREAD, "{due:?}");
            // A shorter interval spreads over the interval.
            let due = first_due(&key(n), ms(100), since);
            assert!(due >= since && due < since + ms(100), "{due:?}");
        }
    }

    #[test]
    fn on_time_the_next_probe_is_one_interval_later_on_the_phase() {
        let phase = ms(300);
        // Started on its phase point, answered in 2 ms.
        assert_eq!(next_due(phase, SECOND, ms(4_300), ms(4_302)), ms(5_300));
        // Started a little late: back on the grid, not one interval after.
        assert_eq!(next_due(phase, SECOND, ms(4_420), ms(4_421)), ms(5_300));
    }

    #[test]
    fn a_late_or_slow_probe_skips_the_rounds_it_missed() {
        let phase = ms(300);
        // Waited 600 ms for its turn: the 5.3 s round is too close, 6.3 s.
        assert_eq!(next_due(phase, SECOND, ms(4_900), ms(4_901)), ms(6_300));
        // Took 2.5 s (a timeout longer than the interval): the next phase
        // point after it finished.
        assert_eq!(next_due(phase, SECOND, ms(4_300), ms(6_800)), ms(7_300));
        // Finishing exactly on a phase point probes at that point.
        assert_eq!(next_due(phase, SECOND, ms(4_300), ms(6_300)), ms(6_300));
    }

    #[test]
    fn after_the_first_probe_a_backend_joins_its_phase_at_least_half_an_interval_later() {
        let phase = ms(300);
        // First probe at 10.1 s (within the first-round spread): 10.3 s is
        // too soon after it, so 11.3 s.
        assert_eq!(next_due(phase, SECOND, ms(10_100), ms(10_101)), ms(11_300));
        // First probe at 10.9 s: 11.3 s is only 400 ms later, so 12.3 s.
        assert_eq!(next_due(phase, SECOND, ms(10_900), ms(10_901)), ms(12_300));
        // First probe at 10.7 s: 11.3 s is 600 ms later.
        assert_eq!(next_due(phase, SECOND, ms(10_700), ms(10_701)), ms(11_300));
        // Before the epoch's first phase point.
        assert_eq!(next_due(phase, SECOND, ms(0), ms(1)), ms(1_300));
    }

    #[test]
    fn successive_probes_never_come_closer_than_half_an_interval() {
        for n in 0..200 {
            let interval = ms(100 + u64::from(n) * 37);
            let phase = phase_offset(&key(n), interval);
            let mut started = first_due(&key(n), interval, ms(u64::from(n) * 13));
            for round in 0..50u64 {
                // Vary how late the probe starts and how long it takes.
                let late = ms((round * 7919 + u64::from(n)) % 300);
                let took = ms((round * 104_729) % 150);
                let begun = started + late;
                let next = next_due(phase, interval, begun, begun + took);
                assert!(
                    next >= begun + interval / 2,
                    "{n}/{round}: {begun:?} → {next:?}"
                );
                assert!(next >= begun + took);
                assert!(next < (begun + took).max(begun + interval / 2) + interval);
                assert_eq!(
                    (next.as_nanos() + interval.as_nanos() - phase.as_nanos())
                        % interval.as_nanos(),
                    0,
                    "on its phase"
                );
                started = next;
            }
        }
    }

    #[test]
    fn a_zero_interval_does_not_divide_by_zero() {
        assert_eq!(
            next_due(Duration::ZERO, Duration::ZERO, ms(5), ms(7)),
            ms(7)
        );
    }
}
