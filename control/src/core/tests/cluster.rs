//! `[cluster]` in the core: decisions taken from other nodes, and
//! automatic decisions only while leading, weighed with every node's view.

use super::*;
use crate::health::SlotHealth;
use crate::history::{Action, Trigger};
use crate::protocol::{ClusterStatus, NodeView};
use crate::state_file::{CanaryState, DecisionSource};

/// What another node decided: green active, blue previous, a canary of
/// blue with the cohort it drew, and the file record of *its* config.
fn decided_elsewhere(rig: &Rig) -> RouteState {
    let mut state = rig.state().clone();
    state.active = "green".into();
    state.previous = Some("blue".into());
    state.source = DecisionSource::Admin;
    state.canary = Some(CanaryState {
        slot: "blue".into(),
        weight: 10,
    });
    state.cohort = 4242;
    state.file_active = "green".into();
    state
}

fn adopt(rig: &mut Rig, state: RouteState) {
    rig.apply(Event::Adopt {
        routes: BTreeMap::from([("app".to_string(), state)]),
        why: "decided on another node (etcd revision 7)".into(),
        whole: false,
    });
}

fn view(node: &str, green: SlotHealth) -> NodeView {
    NodeView {
        node: node.into(),
        revision: 1,
        generation: 1,
        last_seen: "2026-12-02T13:00:00Z".into(),
        leader: false,
        slots: BTreeMap::from([(
            "app".to_string(),
            BTreeMap::from([
                ("blue".to_string(), SlotHealth::Healthy),
                ("green".to_string(), green),
            ]),
        )]),
        counters: BTreeMap::new(),
        not_applied: Vec::new(),
    }
}

fn cluster(others: Vec<NodeView>) -> ClusterStatus {
    ClusterStatus {
        node: "me".into(),
        connected: true,
        nodes: others,
        ..ClusterStatus::default()
    }
}

#[test]
fn a_decision_from_another_node_is_published_as_it_is() {
    let mut rig = Rig::new(&app(""));
    rig.apply(Event::Deciding(false));
    rig.all_healthy();
    let tables = rig.tables.len();
    let before = rig.history.len();
    let elsewhere = decided_elsewhere(&rig);
    adopt(&mut rig, elsewhere.clone());

    assert_eq!(rig.active(), "green");
    assert_eq!(rig.tables.len(), tables + 1, "published at once");
    assert_eq!(
        rig.state().cohort,
        4242,
        "the cohort is not drawn again here"
    );
    assert_eq!(rig.state().guard, None, "no guard of its own started here");
    assert_eq!(
        rig.state().file_active,
        "blue",
        "this node keeps its own file's record"
    );
    let entry = &rig.history[before];
    assert_eq!(
        (entry.trigger, entry.action),
        (Trigger::Cluster, Action::Adopt)
    );
    assert_eq!(rig.saved.as_ref().unwrap()["app"].active, "green");

    // The same decision again changes nothing.
    let tables = rig.tables.len();
    adopt(&mut rig, elsewhere);
    assert_eq!(rig.tables.len(), tables);
}

#[test]
fn a_decision_naming_a_slot_this_node_lacks_is_not_taken() {
    let mut rig = Rig::new(&app(""));
    let mut state = decided_elsewhere(&rig);
    state.active = "purple".into();
    adopt(&mut rig, state);
    assert_eq!(rig.active(), "blue");
}

#[test]
fn a_node_that_does_not_lead_fails_nothing_back() {
    let mut rig = Rig::new(&app(""));
    rig.all_healthy();
    rig.result(switch("green"));
    rig.apply(Event::Deciding(false));
    rig.fail("green", GREEN, 3);
    assert_eq!(rig.active(), "green", "the leader decides, not this node");

    // Leading, it looks at every route at once.
    rig.apply(Event::Deciding(true));
    assert_eq!(rig.active(), "blue");
}

#[test]
fn the_leader_fails_back_only_when_most_nodes_see_the_slot_down() {
    let mut rig = Rig::new(&app(""));
    rig.all_healthy();
    rig.result(switch("green"));
    rig.apply(Event::ClusterView(cluster(vec![
        view("a", SlotHealth::Healthy),
        view("b", SlotHealth::Healthy),
    ])));
    rig.fail("green", GREEN, 3);
    assert_eq!(rig.active(), "green", "down for this node's network alone");

    rig.apply(Event::ClusterView(cluster(vec![
        view("a", SlotHealth::Unhealthy),
        view("b", SlotHealth::Healthy),
    ])));
    assert_eq!(rig.active(), "blue", "two of three see it down");
}
