//! Rollouts in the core: steps and holds on the fake clock, the commands,
//! and the analysis windows over the slots' counters.

use std::time::Duration;

use super::*;
use crate::history::Action;
use crate::protocol::RolloutAction;
use crate::rollout::Phase;

const ROLLOUT: &str = "[route.rollout]\nsteps = [{ weight = 10, hold = \"1m\" }, { weight = 50, hold = \"1m\" }, { weight = 100 }]\nmin_requests = 20\nwindow = \"10s\"\n";

fn rollout(action: RolloutAction) -> Request {
    Request::Rollout {
        action,
        route: "app".into(),
        slot: (action == RolloutAction::Start).then(|| "green".to_string()),
        reason: None,
    }
}

fn started() -> Rig {
    let mut rig = Rig::new(&app(ROLLOUT));
    rig.all_healthy();
    rig.result(rollout(RolloutAction::Start));
    rig
}

fn weight(rig: &Rig) -> Option<u8> {
    rig.state().canary.as_ref().map(|c| c.weight)
}

fn phase(rig: &Rig) -> Phase {
    rig.state().rollout.as_ref().unwrap().phase
}

/// `n` answers on `slot`, `errors` of them 500, each taking `latency`.
fn traffic(rig: &Rig, slot: &str, n: usize, errors: usize, latency: Duration) {
    let load = &rig.core.loads["app"][slot];
    for i in 0..n {
        let status = if i < errors { 500 } else { 200 };
        load.stats.answered(status, latency);
    }
}

#[test]
fn each_step_holds_then_the_last_promotes() {
    let mut rig = started();
    assert_eq!(weight(&rig), Some(10));
    rig.advance(Duration::from_secs(59));
    assert_eq!(weight(&rig), Some(10));
    rig.advance(Duration::from_secs(1));
    assert_eq!(weight(&rig), Some(50));
    rig.advance(Duration::from_secs(60));
    assert_eq!(weight(&rig), Some(100), "the last step has no hold");
    rig.advance(Duration::from_millis(100));
    assert_eq!(rig.active(), "green");
    assert_eq!(weight(&rig), None);
    assert_eq!(phase(&rig), Phase::Promoted);
    let actions: Vec<_> = rig.history.iter().map(|e| e.action).collect();
    assert!(
        actions.ends_with(&[Action::RolloutStep, Action::RolloutPromote]),
        "{actions:?}"
    );
    assert!(
        !rig.core.rollouts_in_progress(),
        "the clock stops with the rollout"
    );
    assert_eq!(
        rig.core.guards["app"].slot(),
        "green",
        "the promotion is guarded"
    );
}

#[test]
fn a_pause_stops_the_hold_clock_and_resume_goes_on_with_the_time_left() {
    let mut rig = started();
    rig.advance(Duration::from_secs(40));
    rig.result(rollout(RolloutAction::Pause));
    rig.advance(Duration::from_secs(600));
    assert_eq!(weight(&rig), Some(10));
    assert_eq!(phase(&rig), Phase::Paused);
    rig.result(rollout(RolloutAction::Resume));
    rig.advance(Duration::from_secs(19));
    assert_eq!(weight(&rig), Some(10));
    rig.advance(Duration::from_secs(1));
    assert_eq!(weight(&rig), Some(50));
}

#[test]
fn promote_and_abort_end_it_at_once() {
    let mut rig = started();
    rig.result(rollout(RolloutAction::Promote));
    assert_eq!(rig.active(), "green");
    assert_eq!(phase(&rig), Phase::Promoted);

    let mut rig = started();
    rig.result(rollout(RolloutAction::Abort));
    assert_eq!(rig.active(), "blue");
    assert_eq!(weight(&rig), None);
    assert_eq!(phase(&rig), Phase::Aborted);
    let refused = rig.run(rollout(RolloutAction::Pause)).error.unwrap();
    assert!(
        refused.message.contains("no rollout in progress"),
        "{}",
        refused.message
    );
}

#[test]
fn a_window_with_too_many_errors_aborts_the_rollout() {
    let mut rig = started();
    traffic(&rig, "blue", 200, 0, Duration::from_millis(5));
    traffic(&rig, "green", 30, 6, Duration::from_millis(5));
    rig.advance(Duration::from_secs(10));
    assert_eq!(phase(&rig), Phase::Aborted);
    assert_eq!(weight(&rig), None);
    assert_eq!(rig.active(), "blue");
    let entry = rig.history.last().unwrap();
    assert_eq!(entry.action, Action::RolloutAbort);
    assert!(
        entry.reason.as_deref().unwrap().contains("error rate"),
        "{entry:?}"
    );
}

#[test]
fn a_window_without_enough_requests_waits_and_a_good_one_passes() {
    let mut rig = started();
    traffic(&rig, "green", 5, 5, Duration::from_millis(5));
    rig.advance(Duration::from_secs(10));
    assert_eq!(phase(&rig), Phase::Running, "5 requests: no verdict yet");
    traffic(&rig, "blue", 200, 0, Duration::from_millis(5));
    traffic(&rig, "green", 200, 0, Duration::from_millis(5));
    rig.advance(Duration::from_millis(100));
    let verdict = rig
        .state()
        .rollout
        .as_ref()
        .unwrap()
        .verdict
        .clone()
        .unwrap();
    assert!(!verdict.failed(), "{verdict:?}");
    assert_eq!(phase(&rig), Phase::Running);
}

#[test]
fn a_switch_during_a_rollout_ends_it_as_superseded() {
    let mut rig = started();
    rig.result(switch("green"));
    let rollout = rig.state().rollout.clone().unwrap();
    assert_eq!(rollout.phase, Phase::Aborted);
    assert!(format!("{rollout:?}").contains("superseded"), "{rollout:?}");
    assert!(rig.core.rollout_clocks.is_empty());
}

#[test]
fn the_canary_slot_failing_its_checks_aborts_the_rollout() {
    let mut rig = started();
    rig.fail("green", GREEN, 3);
    assert_eq!(phase(&rig), Phase::Aborted);
    assert_eq!(weight(&rig), None);
}
