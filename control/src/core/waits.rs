//! How long a command may wait: the one parser of the `timeout` that
//! `switch` and `drain --wait` take.

use std::time::Duration;

/// How long `switch` waits for its slot to turn healthy when not told.
pub(super) const DEFAULT_SWITCH_WAIT: Duration = Duration::from_secs(30);
/// How long `drain --wait` waits when not told.
pub(super) const DEFAULT_DRAIN_WAIT: Duration = Duration::from_secs(60);
/// The longest a command may wait: a parked command holds a connection and
/// a reply.
pub(super) const MAX_WAIT: Duration = Duration::from_secs(600);

/// `timeout` as a duration (`"30s"`, `"2m"`), `default` without one.
/// The error is the sentence the client sees.
pub(super) fn parse_wait(timeout: Option<&str>, default: Duration) -> Result<Duration, String> {
    let Some(text) = timeout else {
        return Ok(default);
    };
    match humantime::parse_duration(text) {
        Ok(wait) if wait <= MAX_WAIT => Ok(wait),
        Ok(_) => Err(format!(
            "timeout {text:?} is longer than the {}s a command may wait",
            MAX_WAIT.as_secs()
        )),
        Err(e) => Err(format!(
            "bad timeout {text:?}: {e}; expected e.g. \"{}\"",
            humantime::format_duration(default)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_is_parsed_bounded_and_defaulted() {
        let default = Duration::from_secs(30);
        assert_eq!(parse_wait(None, default), Ok(default));
        assert_eq!(parse_wait(Some("2s"), default), Ok(Duration::from_secs(2)));
        assert_eq!(parse_wait(Some("10m"), default), Ok(MAX_WAIT));
        let long = parse_wait(Some("11m"), default).unwrap_err();
        assert!(long.contains("longer than the 600s"), "{long}");
        let bad = parse_wait(Some("soon"), default).unwrap_err();
        assert!(
            bad.contains("bad timeout \"soon\"") && bad.contains("\"30s\""),
            "{bad}"
        );
    }
}
