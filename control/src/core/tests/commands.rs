//! Admin commands in the core: drains, refusals, restarts, invariants.

use std::time::Duration;

use super::*;
use crate::history::{Action, Outcome, Trigger};
use crate::protocol::ErrorKind;

fn drain(slot: &str, wait: bool, timeout: Option<&str>) -> Request {
    Request::Drain {
        route: "app".into(),
        slot: slot.into(),
        wait,
        timeout: timeout.map(str::to_string),
    }
}

#[test]
fn a_drain_is_answered_once_the_slot_stays_empty() {
    let mut rig = Rig::new(&app(""));
    rig.all_healthy();
    rig.result(switch("green"));
    let load = rig.core.loads["app"]["blue"].clone();
    let request = load.request();
    let reply = rig.command(drain("blue", true, None));
    rig.advance(Duration::from_secs(1));
    assert!(!rig.replies.contains_key(&reply), "a request is in flight");
    drop(request);
    rig.advance(Duration::from_millis(120));
    let response = rig.replies.remove(&reply).expect("drained");
    let result = response.result.unwrap();
    assert_eq!(result["in_flight"], 0);
    assert_eq!(result["serving"], false);
    assert_eq!(rig.core.parked.next_wakeup(), None, "nothing parked");
}

#[test]
fn a_drain_that_does_not_empty_is_refused_at_its_timeout() {
    let mut rig = Rig::new(&app(""));
    rig.all_healthy();
    rig.result(switch("green"));
    let _request = rig.core.loads["app"]["blue"].request();
    let reply = rig.command(drain("blue", true, Some("1s")));
    rig.advance(Duration::from_secs(1));
    let error = rig.replies.remove(&reply).unwrap().error.unwrap();
    assert_eq!(error.kind, ErrorKind::Refused);
    assert!(error.message.contains("1 requests"), "{}", error.message);
}

#[test]
fn draining_a_slot_that_still_serves_or_a_bad_timeout_is_refused_at_once() {
    let mut rig = Rig::new(&app(""));
    let serving = rig.run(drain("blue", true, None)).error.unwrap();
    assert!(
        serving.message.contains("still gets new traffic"),
        "{}",
        serving.message
    );
    let bad = rig.run(drain("green", true, Some("soon"))).error.unwrap();
    assert_eq!(bad.kind, ErrorKind::BadRequest);
    let too_long = rig.run(switch_with_timeout("green", "1h")).error.unwrap();
    assert_eq!(too_long.kind, ErrorKind::BadRequest);
    assert_eq!(rig.core.next_wakeup(), None, "nothing parked");
}

fn switch_with_timeout(slot: &str, timeout: &str) -> Request {
    let mut request = switch(slot);
    if let Request::Switch { timeout: t, .. } = &mut request {
        *t = Some(timeout.into());
    }
    request
}

#[test]
fn a_rollback_to_a_previous_slot_known_down_is_refused_unless_forced() {
    let mut rig = Rig::new(&app(""));
    rig.all_healthy();
    rig.result(switch("green"));
    rig.fail("blue", BLUE, 3);
    let rollback = |force| Request::Rollback {
        route: "app".into(),
        reason: None,
        force,
        local: false,
    };
    let refused = rig.run(rollback(false)).error.unwrap();
    assert_eq!(refused.kind, ErrorKind::Unhealthy);
    assert_eq!(rig.active(), "green");
    let entry = rig.history.last().unwrap();
    assert_eq!(
        (entry.trigger, entry.action),
        (Trigger::Admin, Action::Rollback)
    );
    assert!(matches!(entry.result, Outcome::Refused(_)));
    assert!(rig.run(rollback(true)).ok);
    assert_eq!(rig.active(), "blue");
}

#[test]
fn refusals_are_typed_and_recorded() {
    let mut rig = Rig::new(&app(""));
    let canary = |slot: &str, weight| Request::Canary {
        route: "app".into(),
        slot: slot.into(),
        weight,
        reason: None,
        local: false,
    };
    assert_eq!(
        rig.run(canary("red", 10)).error.unwrap().kind,
        ErrorKind::NotFound
    );
    assert_eq!(
        rig.run(canary("green", 101)).error.unwrap().kind,
        ErrorKind::BadRequest
    );
    assert_eq!(
        rig.run(canary("blue", 10)).error.unwrap().kind,
        ErrorKind::Refused
    );
    let nowhere = Request::Status {
        route: Some("nope".into()),
    };
    assert_eq!(rig.run(nowhere).error.unwrap().kind, ErrorKind::NotFound);
    let results: Vec<_> = rig.history.iter().map(|e| e.result.to_string()).collect();
    assert_eq!(results.len(), 3);
    assert!(
        results.iter().all(|r| r.starts_with("refused: ")),
        "{results:?}"
    );
    let unchanged = rig.result(switch("blue"));
    assert_eq!(unchanged["changed"], false);
    assert_eq!(rig.history.last().unwrap().result, Outcome::NoChange);
}

#[test]
fn history_and_reload_are_left_to_the_shell() {
    let mut rig = Rig::new(&app(""));
    let history = rig.command(Request::History {
        route: None,
        limit: None,
    });
    assert_eq!(rig.history_reads, 1);
    assert!(!rig.replies.contains_key(&history));
    let reload = rig.command(Request::Reload {});
    assert_eq!(
        rig.reads,
        vec![ReloadTrigger::Admin {
            reply: reload,
            uid: Some(1000)
        }]
    );
}

#[test]
fn a_restart_restores_every_decision_from_the_saved_state() {
    let text = app("[route.canary]\nslot = \"green\"\nweight = 0\n");
    let mut rig = Rig::new(&text);
    rig.all_healthy();
    rig.result(switch("green"));
    let canary = Request::Canary {
        route: "app".into(),
        slot: "blue".into(),
        weight: 20,
        reason: None,
        local: false,
    };
    rig.result(canary);
    let saved = rig.saved.clone().unwrap();
    let loaded = LoadedState {
        routes: saved.clone(),
        warnings: Vec::new(),
    };
    let restarted = Rig::restored(&text, loaded);
    assert_eq!(restarted.core.routes, saved);
    let table = restarted.last_table();
    assert_eq!(&*table.routes[0].slot(table.routes[0].active).name, "green");
    assert_eq!(table.routes[0].canary.map(|c| c.weight), Some(20));
}

#[test]
fn the_invariants_catch_a_broken_state() {
    let mut rig = Rig::new(&app(""));
    assert_eq!(rig.core.invariants(rig.now), Ok(()));
    let state = rig.core.routes.get_mut("app").unwrap();
    state.previous = Some("blue".into());
    let broken = rig.core.invariants(rig.now).unwrap_err();
    assert!(broken.contains("previous slot blue"), "{broken}");
    let state = rig.core.routes.get_mut("app").unwrap();
    state.previous = None;
    state.active = "red".into();
    assert!(rig.core.invariants(rig.now).is_err());
}

#[test]
fn maintenance_is_a_runtime_decision_saved_recorded_and_overridden_by_a_file_edit() {
    let maintenance = |on| Request::Maintenance {
        route: "app".into(),
        on,
        reason: Some("db migration".into()),
        local: false,
    };
    let text = app("");
    let mut rig = Rig::new(&text);
    assert!(!rig.last_table().routes[0].maintenance);
    rig.result(maintenance(true));
    assert!(rig.last_table().routes[0].maintenance);
    assert_eq!(rig.state().maintenance.as_deref(), Some("db migration"));
    assert_eq!(rig.history.last().unwrap().action, Action::MaintenanceOn);
    let status = rig.result(Request::Status { route: None });
    assert_eq!(status["routes"][0]["maintenance"], "db migration");

    // A restart keeps it; an edit elsewhere in the file keeps it.
    let loaded = LoadedState {
        routes: rig.saved.clone().unwrap(),
        warnings: Vec::new(),
    };
    let mut restarted = Rig::restored(&text, loaded);
    assert!(restarted.last_table().routes[0].maintenance);
    restarted.file_edited(&app("").replace("active = \"blue\"", "active = \"blue\"\nretries = 5"));
    assert!(restarted.state().maintenance.is_some());
    // The file saying `maintenance = false` does not end it: the value
    // did not change in the file. Saying true, then false, does.
    let on = app("").replace("active = \"blue\"", "active = \"blue\"\nmaintenance = true");
    restarted.file_edited(&on);
    restarted.file_edited(&app(""));
    assert_eq!(restarted.state().maintenance, None);
    assert!(!restarted.last_table().routes[0].maintenance);

    rig.result(maintenance(false));
    assert_eq!(rig.state().maintenance, None);
    assert_eq!(rig.history.last().unwrap().action, Action::MaintenanceOff);
    let again = rig.result(maintenance(false));
    assert_eq!(again["changed"], false);
}
