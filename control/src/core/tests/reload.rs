//! Config reloads in the core: the merge rules, held edits, rejections.

use std::time::Duration;

use super::*;
use crate::history::Outcome;
use crate::protocol::ErrorKind;

fn with_active(active: &str) -> String {
    app("").replace("active = \"blue\"", &format!("active = \"{active}\""))
}

/// `app`, plus a second route `api`.
fn two_routes() -> String {
    app("\n[[route]]\nname = \"api\"\nactive = \"blue\"\nhosts = [\"api.test\"]\n[route.slots]\nblue = [\"127.0.0.1:3003\"]\ngreen = [\"127.0.0.1:3004\"]\n")
}

#[test]
fn a_value_the_file_changed_wins_and_an_unchanged_one_keeps_the_runtime_decision() {
    let mut rig = Rig::new(&app(""));
    rig.all_healthy();
    rig.result(switch("green"));

    // An edit elsewhere (the retries) leaves the switch in place.
    rig.file_edited(&app("").replace("active = \"blue\"", "active = \"blue\"\nretries = 5"));
    assert_eq!(rig.active(), "green", "runtime decision kept");
    assert_eq!(rig.core.reloads, 1);

    // Editing `active` itself is a request: it wins.
    rig.file_edited(&with_active("green"));
    rig.file_edited(&with_active("blue"));
    assert_eq!(rig.active(), "blue");
    assert_eq!(rig.state().previous.as_deref(), Some("green"));
}

#[test]
fn a_config_switch_to_a_slot_not_healthy_is_held_until_it_is() {
    let mut rig = Rig::new(&app(""));
    rig.pass("blue", BLUE, 2);
    let from = rig.history.len();
    rig.file_edited(&with_active("green"));
    assert_eq!(rig.active(), "blue");
    assert_eq!(rig.state().pending.as_deref(), Some("green"));
    assert!(
        rig.entries_since(from)
            .iter()
            .any(|e| e.starts_with("Config switch held: ")),
        "{:?}",
        rig.entries_since(from)
    );
    rig.pass("green", GREEN, 2);
    assert_eq!(rig.active(), "green");
    assert_eq!(rig.state().pending, None);
}

#[test]
fn a_route_removed_and_restored_within_the_settle_time_keeps_its_decision() {
    let mut rig = Rig::new(&two_routes());
    rig.all_healthy();
    rig.result(switch("green"));
    let generation = rig.core.generation;

    rig.file_edited(&app(""));
    assert!(rig.core.pending_edit.is_some(), "a removal is held");
    assert!(rig.core.routes.contains_key("api"));
    rig.advance(Duration::from_secs(1));
    rig.file_edited(&two_routes());
    assert!(rig.core.pending_edit.is_none(), "withdrawn");
    rig.advance(Duration::from_secs(5));
    assert!(rig.reads.is_empty(), "nothing left to settle");
    assert_eq!(rig.active(), "green");
    assert_eq!(rig.core.generation, generation, "nothing was published");
    let last = &rig.history.last().unwrap().result;
    assert!(matches!(last, Outcome::Withdrawn(_)), "{last:?}");
}

#[test]
fn a_removal_that_stays_applies_after_the_settle_time() {
    let mut rig = Rig::new(&two_routes());
    rig.file_edited(&app(""));
    rig.advance(Duration::from_millis(2_900));
    assert!(rig.reads.is_empty());
    rig.advance(Duration::from_millis(100));
    assert_eq!(
        rig.reads,
        vec![ReloadTrigger::Settled],
        "the file is read again"
    );
    rig.reads.clear();
    rig.config_read(ReloadTrigger::Settled, Ok(parse(&app(""))));
    assert!(!rig.core.routes.contains_key("api"));
    assert_eq!(rig.last_table().routes.len(), 1);
}

#[test]
fn a_removal_whose_file_changed_again_by_the_settle_time_is_withdrawn() {
    let mut rig = Rig::new(&two_routes());
    rig.file_edited(&app(""));
    rig.advance(Duration::from_secs(3));
    let rejected = ConfigRejected {
        message: "test.toml:1: bad".into(),
        errors: 1,
    };
    rig.config_read(ReloadTrigger::Settled, Err(rejected));
    assert!(rig.core.routes.contains_key("api"));
    assert!(matches!(
        rig.history.last().unwrap().result,
        Outcome::Withdrawn(_)
    ));
}

#[test]
fn a_rejected_file_changes_nothing_but_the_reported_error() {
    let mut rig = Rig::new(&app(""));
    let tables = rig.tables.len();
    let rejected = ConfigRejected {
        message: "test.toml:3:1: unknown key".into(),
        errors: 1,
    };
    rig.config_read(ReloadTrigger::File, Err(rejected.clone()));
    assert_eq!(rig.tables.len(), tables);
    assert_eq!(
        rig.core.config_error.as_deref(),
        Some("test.toml:3:1: unknown key")
    );
    assert_eq!(
        rig.history.last().unwrap().result,
        Outcome::Failed("1 error(s)".into())
    );

    let reload = rig.command(Request::Reload {});
    let trigger = rig.reads.pop().unwrap();
    rig.config_read(trigger, Err(rejected));
    let error = rig.replies.remove(&reload).unwrap().error.unwrap();
    assert_eq!(error.kind, ErrorKind::InvalidConfig);

    // The same good file again clears the error.
    rig.file_edited(&app(""));
    assert_eq!(rig.core.config_error, None);
}

#[test]
fn the_admin_reload_applies_a_removal_at_once() {
    let mut rig = Rig::new(&two_routes());
    let reload = rig.command(Request::Reload {});
    let trigger = rig.reads.pop().unwrap();
    rig.config_read(trigger, Ok(parse(&app(""))));
    let result = rig.replies.remove(&reload).unwrap().result.unwrap();
    assert_eq!(result["routes"], 1);
    assert!(!rig.core.routes.contains_key("api"));
}

#[test]
fn an_unchanged_file_publishes_nothing() {
    let mut rig = Rig::new(&app(""));
    let tables = rig.tables.len();
    rig.file_edited(&app(""));
    assert_eq!(rig.tables.len(), tables);
    assert_eq!(rig.core.reloads, 0);
}
