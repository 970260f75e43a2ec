//! Progressive rollouts as plain data: the plan a rollout follows, the step
//! it is on, and the verdict of each analysis window. No clock and no I/O:
//! the Controller passes the time that went by and the counters it read,
//! and applies what comes back.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchyard_conf::RolloutConfig;

use crate::table::StatsSnapshot;

/// Latency differences smaller than this never abort: at sub-millisecond
/// latencies on loopback or a LAN, "+50 %" is scheduling noise.
pub const LATENCY_SLACK: Duration = Duration::from_millis(5);

/// A rollout of one route, as persisted in the state file.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Rollout {
    /// The slot being rolled out (the canary).
    pub slot: String,
    /// The plan as it was when the rollout started: edits of
    /// `[route.rollout]` apply to the next rollout, not to this one.
    pub plan: Plan,
    /// Index into `plan.steps`.
    pub step: usize,
    pub phase: Phase,
    /// Time left in the current step's hold, as of the last checkpoint. A
    /// restart resumes the step with this much left.
    pub hold_left_ms: u64,
    /// RFC 3339.
    pub started_at: String,
    /// The latest analysis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// Why it ended, once promoted or aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub max_error_rate: f64,
    pub max_latency_increase: f64,
    pub min_requests: u64,
    pub window_ms: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub weight: u8,
    /// `None` on the last step: promote when it is reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_ms: Option<u64>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Running,
    Paused,
    Promoted,
    Aborted,
}

/// What one analysis window found.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Verdict {
    pub result: VerdictResult,
    /// One sentence with the figures.
    pub reason: String,
    pub canary_requests: u64,
    pub canary_error_rate: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_p95_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_p95_ms: Option<f64>,
}

/// A window's finding; on the wire and in the state file `"pass"`,
/// `"fail"` or `"waiting"`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum VerdictResult {
    Pass,
    Fail,
    /// Fewer than `min_requests` so far: the window goes on.
    Waiting,
}

/// As on the wire: `pass`, `fail`, `waiting`.
impl std::fmt::Display for VerdictResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            VerdictResult::Pass => "pass",
            VerdictResult::Fail => "fail",
            VerdictResult::Waiting => "waiting",
        })
    }
}

impl Verdict {
    pub fn failed(&self) -> bool {
        self.result == VerdictResult::Fail
    }
}

/// What the hold clock asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Stay on this step.
    Hold,
    /// Move to step `index` at `weight`.
    Step { index: usize, weight: u8 },
    /// The last step is reached: the canary becomes active.
    Promote,
}

impl Plan {
    pub fn from_config(config: &RolloutConfig) -> Plan {
        Plan {
            steps: config
                .steps
                .iter()
                .map(|s| Step {
                    weight: s.weight,
                    hold_ms: s.hold.map(|h| h.as_millis() as u64),
                })
                .collect(),
            max_error_rate: config.max_error_rate,
            max_latency_increase: config.max_latency_increase,
            min_requests: config.min_requests,
            window_ms: config.window.as_millis() as u64,
        }
    }

    pub fn window(&self) -> Duration {
        Duration::from_millis(self.window_ms)
    }
}

impl Rollout {
    /// A rollout of `slot` on step 1 of `plan`.
    pub fn start(plan: Plan, slot: &str, now: &str) -> Rollout {
        let hold_left_ms = plan.steps[0].hold_ms.unwrap_or(0);
        Rollout {
            slot: slot.to_string(),
            plan,
            step: 0,
            phase: Phase::Running,
            hold_left_ms,
            started_at: now.to_string(),
            verdict: None,
            outcome: None,
        }
    }

    /// What makes a rollout read from the state file unusable, if anything.
    pub fn problem(&self) -> Option<String> {
        if self.step >= self.plan.steps.len() {
            return Some(format!(
                "is on step {} of a plan with {} steps",
                self.step + 1,
                self.plan.steps.len()
            ));
        }
        if self.plan.steps.iter().any(|s| s.weight > 100) {
            return Some("has a weight above 100".into());
        }
        if self.plan.window_ms == 0 {
            return Some("has an analysis window of 0".into());
        }
        None
    }

    /// Running or paused: it still steers the canary.
    pub fn in_progress(&self) -> bool {
        matches!(self.phase, Phase::Running | Phase::Paused)
    }

    pub fn weight(&self) -> u8 {
        self.plan.steps[self.step].weight
    }

    /// `step 2/3 at 50 %`.
    pub fn describe_step(&self) -> String {
        format!(
            "step {}/{} at {} %",
            self.step + 1,
            self.plan.steps.len(),
            self.weight()
        )
    }

    /// Where the hold clock stands once `left` is what remains of the
    /// current step's hold: the next step when it ran out (and the rollout
    /// is not paused), promotion after the last.
    pub fn next(&self, left: Duration) -> Next {
        if self.phase != Phase::Running {
            return Next::Hold;
        }
        let last = self.step + 1 == self.plan.steps.len();
        let on_hold = self.plan.steps[self.step].hold_ms.is_some();
        if last && !on_hold {
            return Next::Promote;
        }
        if !left.is_zero() {
            return Next::Hold;
        }
        if last {
            return Next::Promote;
        }
        Next::Step {
            index: self.step + 1,
            weight: self.plan.steps[self.step + 1].weight,
        }
    }

    /// Moves to step `index`, with its whole hold ahead.
    pub fn enter_step(&mut self, index: usize) {
        self.step = index;
        self.hold_left_ms = self.plan.steps[index].hold_ms.unwrap_or(0);
    }

    pub fn end(&mut self, phase: Phase, outcome: String) {
        self.phase = phase;
        self.outcome = Some(outcome);
        self.hold_left_ms = 0;
    }
}

/// Judges one window: the canary's error rate against `max_error_rate`,
/// and its p95 against the baseline's p95 × (1 + `max_latency_increase`)
/// (plus [`LATENCY_SLACK`]). `baseline_p95` is the active slot's p95 over
/// this window, or over the last window where it had enough requests (at
/// a high weight the active slot may see few). No verdict is drawn before
/// the canary served `min_requests`.
pub fn judge(plan: &Plan, canary: &StatsSnapshot, baseline_p95: Option<Duration>) -> Verdict {
    let limits = Limits {
        max_error_rate: plan.max_error_rate,
        max_latency_increase: plan.max_latency_increase,
        min_requests: plan.min_requests,
    };
    judge_against(&limits, canary, baseline_p95, "the active slot's")
}

/// The thresholds a window of requests is judged by: a rollout's analysis
/// and the guard after a switch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub max_error_rate: f64,
    pub max_latency_increase: f64,
    pub min_requests: u64,
}

/// Judges `seen` (the requests of the slot under watch) against `limits`
/// and `baseline_p95`, which `baseline` names in the reason (`"the
/// previous slot's"`).
pub fn judge_against(
    plan: &Limits,
    canary: &StatsSnapshot,
    baseline_p95: Option<Duration>,
    baseline: &str,
) -> Verdict {
    let millis = |d: Duration| d.as_secs_f64() * 1000.0;
    let canary_p95 = canary.quantile(0.95);
    let errors = canary.errors;
    let rate = canary.error_rate();
    let mut verdict = Verdict {
        result: VerdictResult::Waiting,
        reason: String::new(),
        canary_requests: canary.requests,
        canary_error_rate: rate,
        canary_p95_ms: canary_p95.map(millis),
        baseline_p95_ms: baseline_p95.map(millis),
    };
    if canary.requests < plan.min_requests {
        verdict.reason = format!(
            "{} of the {} requests a verdict needs so far",
            canary.requests, plan.min_requests
        );
        return verdict;
    }
    if rate > plan.max_error_rate {
        verdict.result = VerdictResult::Fail;
        verdict.reason = format!(
            "error rate {:.1} % ({errors} of {} requests) is above the {:.1} % allowed",
            rate * 100.0,
            canary.requests,
            plan.max_error_rate * 100.0
        );
        return verdict;
    }
    if let (Some(p95), Some(base)) = (canary_p95, baseline_p95) {
        let limit = base.mul_f64(1.0 + plan.max_latency_increase);
        if p95 > limit && p95 > base + LATENCY_SLACK {
            verdict.result = VerdictResult::Fail;
            verdict.reason = format!(
                "p95 latency {:.1} ms is above {baseline} {:.1} ms × {:.2}",
                millis(p95),
                millis(base),
                1.0 + plan.max_latency_increase
            );
            return verdict;
        }
    }
    verdict.result = VerdictResult::Pass;
    verdict.reason = format!(
        "error rate {:.1} % over {} requests, p95 {}",
        rate * 100.0,
        canary.requests,
        match (canary_p95, baseline_p95) {
            (Some(p95), Some(base)) => format!(
                "{:.1} ms against the active slot's {:.1} ms",
                millis(p95),
                millis(base)
            ),
            (Some(p95), None) => format!("{:.1} ms (no baseline yet)", millis(p95)),
            _ => "unknown".into(),
        }
    );
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::SlotStats;

    fn plan(steps: &[(u8, Option<u64>)]) -> Plan {
        Plan {
            steps: steps
                .iter()
                .map(|&(weight, hold_ms)| Step { weight, hold_ms })
                .collect(),
            max_error_rate: 0.05,
            max_latency_increase: 0.5,
            min_requests: 100,
            window_ms: 1000,
        }
    }

    fn window(requests: u64, failing: u64, latency_ms: u64) -> StatsSnapshot {
        let stats = SlotStats::default();
        for i in 0..requests {
            let status = if i < failing { 500 } else { 200 };
            stats.answered(status, Duration::from_millis(latency_ms));
        }
        stats.snapshot()
    }

    #[test]
    fn steps_follow_their_holds_and_the_last_promotes() {
        let mut r = Rollout::start(
            plan(&[(10, Some(500)), (50, Some(500)), (100, None)]),
            "green",
            "t",
        );
        assert_eq!(r.hold_left_ms, 500);
        assert_eq!(r.next(Duration::from_millis(1)), Next::Hold);
        assert_eq!(
            r.next(Duration::ZERO),
            Next::Step {
                index: 1,
                weight: 50
            }
        );
        r.enter_step(1);
        assert_eq!(r.describe_step(), "step 2/3 at 50 %");
        r.phase = Phase::Paused;
        assert_eq!(r.next(Duration::ZERO), Next::Hold, "a paused rollout holds");
        r.phase = Phase::Running;
        assert_eq!(
            r.next(Duration::ZERO),
            Next::Step {
                index: 2,
                weight: 100
            }
        );
        r.enter_step(2);
        assert_eq!(r.next(Duration::from_secs(9)), Next::Promote);
        // A last step with a hold is held before promoting.
        let held = Rollout::start(plan(&[(100, Some(500))]), "green", "t");
        assert_eq!(held.next(Duration::from_millis(1)), Next::Hold);
        assert_eq!(held.next(Duration::ZERO), Next::Promote);
    }

    #[test]
    fn errors_above_the_limit_fail_once_there_are_enough_requests() {
        let p = plan(&[(10, None)]);
        let few = judge(&p, &window(50, 25, 1), None);
        assert_eq!(few.result, VerdictResult::Waiting, "{}", few.reason);
        let bad = judge(&p, &window(200, 60, 1), Some(Duration::from_millis(1)));
        assert!(bad.failed());
        assert!(bad.reason.contains("error rate 30.0 %"), "{}", bad.reason);
        let fine = judge(&p, &window(200, 5, 1), Some(Duration::from_millis(1)));
        assert_eq!(fine.result, VerdictResult::Pass, "{}", fine.reason);
    }

    #[test]
    fn latency_fails_above_the_baseline_times_the_allowed_increase() {
        let p = plan(&[(10, None)]);
        let base = Some(Duration::from_millis(10));
        let slow = judge(&p, &window(200, 0, 210), base);
        assert!(slow.failed());
        assert!(slow.reason.contains("p95 latency"), "{}", slow.reason);
        assert_eq!(
            judge(&p, &window(200, 0, 12), base).result,
            VerdictResult::Pass
        );
        // Sub-millisecond noise does not count, whatever the ratio.
        let tiny = judge(&p, &window(200, 0, 3), Some(Duration::from_micros(300)));
        assert_eq!(tiny.result, VerdictResult::Pass, "{}", tiny.reason);
        // Without a baseline, only errors can fail.
        assert_eq!(
            judge(&p, &window(200, 0, 500), None).result,
            VerdictResult::Pass
        );
    }
}
