//! One backend's health: the state machine of `LIFECYCLE.md`, fed by active
//! probes and by connect failures on real traffic alike.

use std::time::{Duration, SystemTime};

/// What switchyard believes about a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendState {
    /// No verdict yet: fewer than `rise` passes and `fall` failures in a row
    /// since the backend appeared.
    Unknown,
    Healthy,
    Unhealthy,
}

/// Why a check failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The probe got an answer outside the expected status range.
    Status(u16),
    /// No answer within the probe's timeout.
    Timeout,
    /// The connection was refused, reset or not established.
    Connect(String),
    /// The backend answered something that is not HTTP.
    Protocol(String),
    /// The status was expected but the body was not (`expect_body`).
    Body(String),
    /// A real request could not connect (passive check).
    Traffic(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Status(code) => write!(f, "status {code}"),
            Failure::Timeout => write!(f, "timed out"),
            Failure::Connect(e) => write!(f, "connect: {e}"),
            Failure::Protocol(e) => write!(f, "bad answer: {e}"),
            Failure::Body(e) => write!(f, "{e}"),
            Failure::Traffic(e) => write!(f, "request connect failed: {e}"),
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// `status` is `None` for a TCP connect probe.
    Pass {
        status: Option<u16>,
        latency: Duration,
    },
    Fail {
        failure: Failure,
        latency: Duration,
    },
}

impl Check {
    pub fn passed(&self) -> bool {
        matches!(self, Check::Pass { .. })
    }
}

/// How many checks in a row change the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Passes in a row to become healthy.
    pub rise: u32,
    /// Failures in a row to become unhealthy.
    pub fall: u32,
}

/// A change of state, with the check that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: BackendState,
    pub to: BackendState,
    pub check: Check,
}

impl Transition {
    /// Whether the data plane must hear of it: it sends requests to a
    /// slot's healthy backends, else to those not known unhealthy, else to
    /// all (`Core::route_spec`), so every change of state may change where
    /// traffic goes — `unknown` → `healthy` too, which is how a new backend
    /// joins a slot that has healthy ones.
    pub fn changes_traffic(&self) -> bool {
        self.from != self.to
    }
}

/// A backend's state and the evidence for it.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendHealth {
    pub state: BackendState,
    /// When `state` began.
    pub since: SystemTime,
    /// Passes in a row (0 after a failure).
    pub passes: u32,
    /// Failures in a row (0 after a pass).
    pub failures: u32,
    /// The last check and when it ended.
    pub last: Option<(Check, SystemTime)>,
}

impl BackendHealth {
    pub fn new(now: SystemTime) -> BackendHealth {
        BackendHealth {
            state: BackendState::Unknown,
            since: now,
            passes: 0,
            failures: 0,
            last: None,
        }
    }

    /// Counts one check; returns the transition when it changes the state.
    /// A backend leaves `unknown` by whichever threshold it reaches first.
    pub fn observe(
        &mut self,
        check: Check,
        thresholds: Thresholds,
        now: SystemTime,
    ) -> Option<Transition> {
        let next = if check.passed() {
            self.failures = 0;
            self.passes = self.passes.saturating_add(1);
            (self.state != BackendState::Healthy && self.passes >= thresholds.rise.max(1))
                .then_some(BackendState::Healthy)
        } else {
            self.passes = 0;
            self.failures = self.failures.saturating_add(1);
            (self.state != BackendState::Unhealthy && self.failures >= thresholds.fall.max(1))
                .then_some(BackendState::Unhealthy)
        };
        self.last = Some((check.clone(), now));
        let to = next?;
        let from = std::mem::replace(&mut self.state, to);
        self.since = now;
        Some(Transition { from, to, check })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds { rise: 2, fall: 3 };

    fn pass() -> Check {
        Check::Pass {
            status: Some(200),
            latency: Duration::from_millis(1),
        }
    }

    fn fail() -> Check {
        Check::Fail {
            failure: Failure::Status(500),
            latency: Duration::from_millis(1),
        }
    }

    fn states(checks: &[Check]) -> Vec<BackendState> {
        let mut health = BackendHealth::new(SystemTime::UNIX_EPOCH);
        checks
            .iter()
            .map(|c| {
                health.observe(c.clone(), T, SystemTime::UNIX_EPOCH);
                health.state
            })
            .collect()
    }

    use BackendState::*;

    #[test]
    fn unknown_becomes_healthy_after_rise_passes_in_a_row() {
        assert_eq!(states(&[pass(), pass()]), [Unknown, Healthy]);
        assert_eq!(
            states(&[pass(), fail(), pass(), pass()]),
            [Unknown, Unknown, Unknown, Healthy],
            "a failure resets the passes"
        );
    }

    #[test]
    fn unknown_becomes_unhealthy_after_fall_failures_in_a_row() {
        assert_eq!(
            states(&[fail(), fail(), fail()]),
            [Unknown, Unknown, Unhealthy]
        );
    }

    #[test]
    fn flapping_below_the_thresholds_changes_nothing() {
        let mut checks = vec![pass(), pass()];
        for _ in 0..20 {
            checks.extend([fail(), fail(), pass()]);
        }
        let seen = states(&checks);
        assert!(seen[1..].iter().all(|s| *s == Healthy), "{seen:?}");
    }

    #[test]
    fn healthy_falls_after_fall_failures_and_rises_again_after_rise_passes() {
        let seen = states(&[pass(), pass(), fail(), fail(), fail(), pass(), pass()]);
        assert_eq!(
            seen,
            [Unknown, Healthy, Healthy, Healthy, Unhealthy, Unhealthy, Healthy]
        );
    }

    #[test]
    fn a_transition_carries_its_evidence_and_moves_since() {
        let mut health = BackendHealth::new(SystemTime::UNIX_EPOCH);
        let later = SystemTime::UNIX_EPOCH + Duration::from_secs(5);
        let refused = Check::Fail {
            failure: Failure::Traffic("connection refused".into()),
            latency: Duration::ZERO,
        };
        let one = Thresholds { rise: 1, fall: 1 };
        let t = health.observe(refused.clone(), one, later).unwrap();
        assert_eq!((t.from, t.to, t.check), (Unknown, Unhealthy, refused));
        assert_eq!(health.since, later);
        assert!(
            health.observe(fail(), one, later).is_none(),
            "no transition within a state"
        );
    }

    #[test]
    fn only_moves_into_or_out_of_unhealthy_change_traffic() {
        let t = |from, to| Transition {
            from,
            to,
            check: pass(),
        };
        assert!(t(Unknown, Unhealthy).changes_traffic());
        assert!(t(Healthy, Unhealthy).changes_traffic());
        assert!(t(Unhealthy, Healthy).changes_traffic());
        assert!(t(Unknown, Healthy).changes_traffic());
    }

    #[test]
    fn zero_thresholds_act_as_one() {
        let zero = Thresholds { rise: 0, fall: 0 };
        let mut health = BackendHealth::new(SystemTime::UNIX_EPOCH);
        health.observe(pass(), zero, SystemTime::UNIX_EPOCH);
        assert_eq!(health.state, Healthy);
    }
}
