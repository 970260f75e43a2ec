//! When to order: pure arithmetic over a certificate's validity, the
//! failures so far and a random draw, so the times are tested without a
//! CA or a clock.

use std::time::Duration;

/// The first retry after a failed order; each failure doubles it.
pub const FIRST_RETRY: Duration = Duration::from_secs(60);
/// The longest wait between tries: well under a day, so a short outage of
/// the CA costs hours, not a certificate.
pub const LONGEST_RETRY: Duration = Duration::from_secs(6 * 3600);

/// Unix seconds at which a certificate valid from `not_before` to
/// `not_after` is renewed: two thirds of the way through its lifetime
/// (day 60 of Let's Encrypt's 90).
pub fn renew_at(not_before: i64, not_after: i64) -> i64 {
    let lifetime = (not_after - not_before).max(0);
    not_before + lifetime * 2 / 3
}

/// The wait after `failures` failed orders in a row (1 for the first),
/// doubling from [`FIRST_RETRY`] up to [`LONGEST_RETRY`], then moved by up
/// to a fifth either way by `draw` (uniform in 0..=u32::MAX) so that many
/// proxies that failed together do not retry together.
pub fn retry_after(failures: u32, draw: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    let base = FIRST_RETRY
        .saturating_mul(1u32 << doublings)
        .min(LONGEST_RETRY);
    // -20 % .. +20 %.
    let fraction = f64::from(draw) / f64::from(u32::MAX);
    base.mul_f64(0.8 + 0.4 * fraction)
}

/// A uniform draw from the system's random source.
pub fn draw() -> u32 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 4];
    // The system source does not fail on Linux; a zero draw is still a
    // valid (earliest) retry time.
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    u32::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_at_two_thirds_of_the_lifetime() {
        let day = 86_400;
        assert_eq!(renew_at(0, 90 * day), 60 * day);
        assert_eq!(renew_at(1_000, 1_009), 1_006);
        assert_eq!(renew_at(50, 10), 50, "an inverted validity renews at once");
    }

    #[test]
    fn retries_back_off_with_jitter_within_a_fifth() {
        let mins = |failures, draw| retry_after(failures, draw).as_secs_f64() / 60.0;
        let middle = u32::MAX / 2;
        for (failures, expected) in [
            (1, 1.0),
            (2, 2.0),
            (3, 4.0),
            (9, 256.0),
            (10, 360.0),
            (40, 360.0),
        ] {
            assert!(
                (mins(failures, middle) - expected).abs() < 0.01,
                "{failures}: {}",
                mins(failures, middle)
            );
            assert!((mins(failures, 0) - expected * 0.8).abs() < 0.01);
            assert!((mins(failures, u32::MAX) - expected * 1.2).abs() < 0.01);
        }
    }
}
