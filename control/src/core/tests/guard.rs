//! The guard after a switch, on the fake clock and the slots' counters.

use std::time::Duration;

use super::*;
use crate::history::{Action, Outcome, Trigger};
use crate::protocol::ErrorKind;
use crate::state_file::DecisionSource;

const GUARD: &str = "[route.guard]\nwindow = \"1m\"\nmin_requests = 20\n";

/// `n` answers on `slot`, `errors` of them 500, each taking `latency`.
fn traffic(rig: &Rig, slot: &str, n: usize, errors: usize, latency: Duration) {
    let load = &rig.core.loads["app"][slot];
    for i in 0..n {
        let status = if i < errors { 500 } else { 200 };
        load.stats.answered(status, latency);
    }
}

/// Blue served 200 fast requests, then the switch to green.
fn switched(extra: &str) -> Rig {
    let mut rig = Rig::new(&app(extra));
    rig.all_healthy();
    traffic(&rig, "blue", 200, 0, Duration::from_millis(4));
    rig.result(switch("green"));
    rig
}

#[test]
fn a_release_failing_a_fifth_of_its_requests_is_rolled_back_with_the_evidence() {
    let mut rig = switched(GUARD);
    assert!(rig.core.guards.contains_key("app"));
    traffic(&rig, "green", 40, 8, Duration::from_millis(4));
    rig.advance(Duration::from_millis(250));
    assert_eq!(rig.active(), "blue");
    assert_eq!(rig.state().source, DecisionSource::Guard);
    assert_eq!(rig.state().failed.as_deref(), Some("green"));
    let entry = rig.history.last().unwrap();
    assert_eq!(
        (entry.trigger, entry.action),
        (Trigger::Guard, Action::Rollback)
    );
    let reason = entry.reason.as_deref().unwrap();
    assert!(
        reason.contains("40 requests") && reason.contains("20.0 % 5xx"),
        "{reason}"
    );
    assert!(reason.contains("limits 5.0 % errors"), "{reason}");
    assert!(
        rig.core.guards.is_empty(),
        "the guard ended with the rollback"
    );
    assert_eq!(rig.last_table().routes[0].active, 0);
    let notice = rig.notices.last().unwrap();
    assert_eq!(notice.event, crate::notify::NoticeKind::GuardRollback);
    let slots = (notice.from.as_deref(), notice.to.as_deref());
    assert_eq!(slots, (Some("green"), Some("blue")));
}

#[test]
fn a_release_three_times_slower_is_rolled_back() {
    let mut rig = switched(GUARD);
    traffic(&rig, "green", 40, 0, Duration::from_millis(12));
    rig.advance(Duration::from_millis(250));
    assert_eq!(rig.active(), "blue");
    let reason = rig.history.last().unwrap().reason.clone().unwrap();
    assert!(reason.contains("above the previous slot's"), "{reason}");
}

#[test]
fn a_healthy_release_passes_at_the_end_of_the_window_and_stays() {
    let mut rig = switched(GUARD);
    traffic(&rig, "green", 40, 1, Duration::from_millis(4));
    rig.advance(Duration::from_secs(59));
    assert!(rig.core.guards.contains_key("app"), "still watching");
    let status = rig.result(Request::Status { route: None });
    let guard = &status["routes"][0]["guard"];
    assert_eq!(guard["slot"], "green");
    assert_eq!(guard["requests"], 40);
    assert_eq!(guard["left_ms"], 1_000);
    rig.advance(Duration::from_secs(1));
    assert!(rig.core.guards.is_empty());
    assert_eq!(rig.active(), "green");
    let entry = rig.history.last().unwrap();
    assert_eq!(
        (entry.trigger, entry.action),
        (Trigger::Guard, Action::GuardPassed)
    );
    assert_eq!(rig.core.next_wakeup(), None, "nothing left to watch");
    let status = rig.result(Request::Status { route: None });
    assert!(status["routes"][0].get("guard").is_none(), "{status}");
}

#[test]
fn fewer_requests_than_min_requests_are_not_judged() {
    let mut rig = switched(GUARD);
    traffic(&rig, "green", 10, 10, Duration::from_millis(4));
    rig.advance(Duration::from_secs(60));
    assert_eq!(rig.active(), "green", "10 requests are not evidence");
    assert_eq!(rig.history.last().unwrap().action, Action::GuardPassed);
}

#[test]
fn a_breach_with_the_previous_slot_down_leaves_the_route_critical() {
    let mut rig = switched(GUARD);
    rig.fail("blue", BLUE, 3);
    traffic(&rig, "green", 40, 20, Duration::from_millis(4));
    rig.advance(Duration::from_millis(250));
    assert_eq!(rig.active(), "green");
    let critical = rig.core.critical["app"].clone();
    assert!(
        critical.contains("guard breached") && critical.contains("unhealthy"),
        "{critical}"
    );
    let entry = rig.history.last().unwrap();
    assert_eq!(entry.action, Action::GuardBreached);
    assert!(matches!(entry.result, Outcome::Failed(_)));
}

#[test]
fn confirm_ends_the_window_as_passed_and_no_guard_skips_it() {
    let mut rig = switched(GUARD);
    let confirm = |route: &str| Request::Confirm {
        route: route.into(),
        reason: Some("looks good".into()),
    };
    let confirmed = rig.result(confirm("app"));
    assert_eq!(confirmed["guard"]["slot"], "green");
    assert!(rig.core.guards.is_empty());
    assert_eq!(rig.history.last().unwrap().action, Action::Confirm);
    let again = rig.run(confirm("app")).error.unwrap();
    assert_eq!(again.kind, ErrorKind::Refused);
    assert_eq!(
        rig.run(confirm("nope")).error.unwrap().kind,
        ErrorKind::NotFound
    );

    let mut unguarded = switch("blue");
    if let Request::Switch { no_guard, .. } = &mut unguarded {
        *no_guard = true;
    }
    rig.result(unguarded);
    assert_eq!(rig.active(), "blue");
    assert!(rig.core.guards.is_empty(), "--no-guard");
    rig.result(switch("green"));
    assert!(rig.core.guards.contains_key("app"), "only once");
}

#[test]
fn fail_back_starts_no_guard_and_a_disabled_guard_watches_nothing() {
    let mut rig = switched(GUARD);
    rig.fail("green", GREEN, 3);
    assert_eq!(rig.active(), "blue");
    assert!(rig.core.guards.is_empty(), "a fail-back is not watched");

    let mut off = switched("[route.guard]\nenabled = false\n");
    assert!(off.core.guards.is_empty());
    traffic(&off, "green", 200, 200, Duration::from_millis(4));
    off.advance(Duration::from_secs(600));
    assert_eq!(off.active(), "green");
}

#[test]
fn a_config_edit_of_active_and_a_rollback_are_guarded_too() {
    let mut rig = Rig::new(&app(GUARD));
    rig.all_healthy();
    rig.file_edited(&app(GUARD).replace("active = \"blue\"", "active = \"green\""));
    assert_eq!(rig.active(), "green");
    assert_eq!(rig.core.guards["app"].slot(), "green");
    let rollback = Request::Rollback {
        route: "app".into(),
        reason: None,
        force: false,
        local: false,
    };
    rig.result(rollback);
    assert_eq!(rig.core.guards["app"].slot(), "blue");
}

/// The state file as the rig last saved it, for a restart.
fn saved(rig: &Rig) -> LoadedState {
    LoadedState {
        routes: rig.saved.clone().expect("the core saved its state"),
        warnings: Vec::new(),
    }
}

#[test]
fn a_restart_goes_on_watching_the_rest_of_the_window_and_can_still_roll_back() {
    let mut rig = switched(GUARD);
    let kept = rig.saved.as_ref().unwrap()["app"].guard.clone().unwrap();
    assert_eq!(kept.slot, "green");
    assert_eq!(kept.previous.as_deref(), Some("blue"));
    assert_eq!(kept.ends_at, "2027-01-15T08:01:00Z");
    assert_eq!(kept.baseline_p95_ms.map(|ms| ms.round()), Some(4.0));
    rig.advance(Duration::from_secs(20));

    // Down for 5 s: 35 s of the window are left.
    let mut restarted = Rig::restored_later(&app(GUARD), saved(&rig), Duration::from_secs(25));
    restarted.all_healthy();
    let status = restarted.result(Request::Status { route: None });
    let guard = &status["routes"][0]["guard"];
    assert_eq!(guard["slot"], "green");
    assert_eq!(guard["left_ms"], 35_000);
    assert_eq!(guard["window_ms"], 60_000);
    assert_eq!(guard["requests"], 0, "counted from the restart");

    traffic(&restarted, "green", 40, 8, Duration::from_millis(4));
    restarted.advance(Duration::from_millis(100));
    assert_eq!(restarted.active(), "blue", "rolled back after the restart");
    assert_eq!(restarted.state().source, DecisionSource::Guard);
    assert!(restarted.saved.as_ref().unwrap()["app"].guard.is_none());
}

#[test]
fn a_window_that_ended_while_stopped_passes_at_start_and_one_on_another_slot_is_dropped() {
    let rig = switched(GUARD);
    let ended = Rig::restored_later(&app(GUARD), saved(&rig), Duration::from_secs(61));
    assert!(ended.core.guards.is_empty());
    assert_eq!(ended.active(), "green");
    let entry = ended.history.last().unwrap();
    assert_eq!(
        (entry.trigger, entry.action),
        (Trigger::Guard, Action::GuardPassed)
    );
    let reason = entry.reason.as_deref().unwrap();
    assert!(
        reason.contains("ended while switchyard was stopped"),
        "{reason}"
    );
    assert!(ended.saved.as_ref().unwrap()["app"].guard.is_none());

    // The file's `active` changed while stopped (saved as green, now
    // blue): the config's slot is active and green's window is over.
    let mut state = saved(&rig);
    state.routes.get_mut("app").unwrap().file_active = "green".into();
    let moved = Rig::restored_later(&app(GUARD), state, Duration::from_secs(5));
    assert_eq!(moved.active(), "blue");
    assert!(moved.core.guards.is_empty());
    assert!(moved.saved.as_ref().unwrap()["app"].guard.is_none());
}

#[test]
fn confirm_and_a_passed_window_clear_the_saved_guard() {
    let mut rig = switched(GUARD);
    rig.result(Request::Confirm {
        route: "app".into(),
        reason: None,
    });
    assert!(rig.saved.as_ref().unwrap()["app"].guard.is_none());

    let mut rig = switched(GUARD);
    rig.advance(Duration::from_secs(60));
    assert!(rig.core.guards.is_empty());
    assert!(rig.saved.as_ref().unwrap()["app"].guard.is_none());
}
