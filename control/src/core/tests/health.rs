//! Health in the core: fail-back, flapping, held switches, pools.

use std::time::Duration;

use super::*;
use crate::history::{Action, Outcome, Trigger};
use crate::protocol::ErrorKind;
use crate::state_file::DecisionSource;

fn pool_keys(table: &RoutingTable) -> Vec<u64> {
    table.routes[0].slots.iter().map(|s| s.pool_key).collect()
}

#[test]
fn the_active_slot_failing_moves_traffic_back_with_the_evidence() {
    let mut rig = Rig::new(&app(""));
    rig.all_healthy();
    assert!(rig.result(switch("green"))["changed"].as_bool().unwrap());
    let before = rig.history.len();

    rig.fail("green", GREEN, 3);

    assert_eq!(rig.active(), "blue");
    assert_eq!(rig.state().failed.as_deref(), Some("green"));
    assert_eq!(rig.state().source, DecisionSource::Failback);
    let entry = rig.history.last().unwrap();
    assert_eq!(rig.history.len(), before + 1);
    assert_eq!(
        (entry.trigger, entry.action),
        (Trigger::Failback, Action::Switch)
    );
    let reason = entry.reason.as_deref().unwrap();
    assert!(
        reason.contains(GREEN) && reason.contains("status 500"),
        "{reason}"
    );
    assert_eq!(rig.last_table().routes[0].active, 0, "blue is slot 0");
    assert_eq!(rig.saved.as_ref().unwrap()["app"].active, "blue");
}

#[test]
fn failures_below_fall_change_nothing() {
    let mut rig = Rig::new(&app(""));
    rig.all_healthy();
    rig.result(switch("green"));
    let (history, tables) = (rig.history.len(), rig.tables.len());
    for _ in 0..20 {
        rig.fail("green", GREEN, 2);
        rig.pass("green", GREEN, 1);
    }
    assert_eq!(rig.active(), "green");
    assert_eq!(rig.history.len(), history);
    assert_eq!(rig.tables.len(), tables, "nothing to publish");
}

#[test]
fn with_nowhere_to_fail_back_the_route_is_critical_and_stays() {
    let mut rig = Rig::new(&app(""));
    rig.pass("blue", BLUE, 2);
    rig.fail("blue", BLUE, 3);
    assert_eq!(rig.active(), "blue");
    let critical = rig.core.critical["app"].clone();
    assert!(critical.contains("no previous slot"), "{critical}");
    rig.pass("blue", BLUE, 2);
    assert!(rig.core.critical.is_empty());
}

#[test]
fn a_switch_to_a_slot_not_healthy_yet_waits_and_runs_once_it_is() {
    let mut rig = Rig::new(&app(""));
    rig.pass("blue", BLUE, 2);
    let reply = rig.command(switch("green"));
    assert!(!rig.replies.contains_key(&reply), "parked");
    rig.advance(Duration::from_secs(5));
    rig.pass("green", GREEN, 1);
    assert!(!rig.replies.contains_key(&reply), "one pass is not rise");
    rig.pass("green", GREEN, 1);
    let response = rig
        .replies
        .remove(&reply)
        .expect("answered once green is healthy");
    assert!(response.ok, "{response:?}");
    assert_eq!(rig.active(), "green");
    assert_eq!(
        rig.core.parked.next_wakeup(),
        None,
        "nothing parked any more"
    );
}

#[test]
fn a_waiting_switch_is_refused_at_its_timeout_and_nothing_changes() {
    let mut rig = Rig::new(&app(""));
    rig.pass("blue", BLUE, 2);
    let mut request = switch("green");
    if let Request::Switch { timeout, .. } = &mut request {
        *timeout = Some("2s".into());
    }
    let reply = rig.command(request);
    rig.fail("green", GREEN, 1);
    rig.advance(Duration::from_millis(1_999));
    assert!(!rig.replies.contains_key(&reply));
    rig.advance(Duration::from_millis(1));
    let response = rig.replies.remove(&reply).expect("refused at 2 s");
    let error = response.error.unwrap();
    assert_eq!(error.kind, ErrorKind::Unhealthy);
    assert!(
        error.message.contains("did not turn healthy within 2s"),
        "{}",
        error.message
    );
    assert!(error.message.contains(GREEN), "evidence: {}", error.message);
    assert_eq!(rig.active(), "blue");
    let entry = rig.history.last().unwrap();
    assert!(matches!(entry.result, Outcome::Refused(_)), "{entry:?}");
}

#[test]
fn a_forced_switch_does_not_wait() {
    let mut rig = Rig::new(&app(""));
    let mut request = switch("green");
    if let Request::Switch { force, .. } = &mut request {
        *force = true;
    }
    assert!(rig.run(request).ok);
    assert_eq!(rig.active(), "green");
}

#[test]
fn pools_survive_health_changes_and_canary_weights_but_not_a_switch() {
    let mut rig = Rig::new(&app("[route.canary]\nslot = \"green\"\nweight = 0\n"));
    rig.all_healthy();
    let keys = pool_keys(rig.last_table());

    // Another backend of blue flapping publishes tables; pools stay.
    let tables = rig.tables.len();
    rig.fail("green", GREEN, 3);
    rig.advance(Duration::from_secs(1));
    rig.pass("green", GREEN, 2);
    rig.advance(Duration::from_secs(1));
    assert!(rig.tables.len() > tables, "health changes were published");
    assert_eq!(pool_keys(rig.last_table()), keys);

    let canary = Request::Canary {
        route: "app".into(),
        slot: "green".into(),
        weight: 30,
        reason: None,
        local: false,
    };
    rig.result(canary);
    assert_eq!(pool_keys(rig.last_table()), keys);

    rig.result(switch("green"));
    let switched = pool_keys(rig.last_table());
    assert!(
        switched.iter().all(|k| !keys.contains(k)),
        "a switch starts every pool of the route afresh"
    );
}

#[test]
fn with_no_previous_slot_a_dead_active_fails_over_to_a_healthy_slot_unless_none() {
    let mut rig = Rig::new(&app(""));
    rig.all_healthy();
    rig.fail("blue", BLUE, 3);
    assert_eq!(rig.active(), "green");
    assert_eq!(rig.state().failed.as_deref(), Some("blue"));
    let entry = rig.history.last().unwrap();
    assert_eq!(
        (entry.trigger, entry.action),
        (Trigger::Failback, Action::Switch)
    );
    let reason = entry.reason.as_deref().unwrap();
    assert!(
        reason.contains("failed over to green") && reason.contains(BLUE),
        "{reason}"
    );
    assert!(rig.core.critical.is_empty());

    let mut none = Rig::new(&app("").replace(
        "active = \"blue\"\n",
        "active = \"blue\"\nfailover = \"none\"\n",
    ));
    none.all_healthy();
    none.fail("blue", BLUE, 3);
    assert_eq!(none.active(), "blue");
    assert!(none.core.critical["app"].contains("no previous slot"));
}

/// Four slots in config order blue, green, red, gray, with `slots` in
/// `[route.slots]` (a subset keeps that order).
fn four_slots(slots: &[&str]) -> String {
    let addr = |slot: &str| match slot {
        "blue" => BLUE,
        "green" => GREEN,
        "red" => "127.0.0.1:3003",
        _ => "127.0.0.1:3004",
    };
    let lines: String = slots
        .iter()
        .map(|slot| format!("{slot} = [\"{}\"]\n", addr(slot)))
        .collect();
    app("").replace(
        &format!("blue = [\"{BLUE}\"]\ngreen = [\"{GREEN}\"]\n"),
        &lines,
    )
}

#[test]
fn with_no_previous_slot_the_slot_active_most_recently_takes_over() {
    let mut rig = Rig::new(&four_slots(&["blue", "green", "red", "gray"]));
    rig.all_healthy();
    rig.pass("red", "127.0.0.1:3003", 2);
    rig.pass("gray", "127.0.0.1:3004", 2);
    for slot in ["gray", "red", "green"] {
        rig.result(switch(slot));
    }
    assert_eq!(rig.state().recent, ["red", "gray", "blue"]);
    // The previous slot leaves the config: green has no fail-back target,
    // and blue comes first in config order, but gray was active later.
    let edited = four_slots(&["blue", "green", "gray"]);
    rig.file_edited(&edited);
    rig.advance(Duration::from_secs(3));
    rig.config_read(ReloadTrigger::Settled, Ok(parse(&edited)));
    assert_eq!(rig.state().previous, None);
    assert_eq!(rig.state().recent, ["gray", "blue"]);
    rig.fail("green", GREEN, 3);
    assert_eq!(rig.active(), "gray");
    let entry = rig.history.last().unwrap();
    assert!(
        entry
            .reason
            .as_deref()
            .unwrap()
            .contains("failed over to gray"),
        "{entry:?}"
    );
    assert_eq!(rig.state().recent, ["green", "blue"]);
}

#[test]
fn a_fail_back_and_a_critical_route_are_told_to_the_notify_targets() {
    use crate::notify::NoticeKind;
    let mut rig = Rig::new(&app(""));
    rig.all_healthy();
    rig.result(switch("green"));
    rig.fail("green", GREEN, 3);
    let notice = rig.notices.last().unwrap().clone();
    assert_eq!(notice.event, NoticeKind::Failback);
    assert_eq!(
        (notice.from.as_deref(), notice.to.as_deref()),
        (Some("green"), Some("blue"))
    );
    assert_eq!(notice.route.as_deref(), Some("app"));
    assert!(notice.evidence.contains(GREEN), "{}", notice.evidence);

    rig.fail("blue", BLUE, 3);
    let critical = rig.notices.last().unwrap();
    assert_eq!(critical.event, NoticeKind::RouteCritical);
    let told = rig.notices.len();
    rig.fail("blue", BLUE, 3);
    assert_eq!(rig.notices.len(), told, "told once, not on every check");

    let rejected = ConfigRejected {
        message: "test.toml:1:1: bad".into(),
        errors: 1,
    };
    rig.config_read(ReloadTrigger::File, Err(rejected));
    assert_eq!(
        rig.notices.last().unwrap().event,
        NoticeKind::ConfigRejected
    );
}
