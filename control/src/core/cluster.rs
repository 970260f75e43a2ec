//! The core's side of `[cluster]`: taking decisions other nodes wrote to
//! etcd, and taking automatic decisions only while this node leads.
//!
//! The shell (`crate::controller::cluster`) does the etcd I/O. It writes a
//! route's decision by compare-and-swap before any effect of a local change
//! is carried out, and gives the core [`super::Event::Adopt`] for what the
//! watch brings and for what a lost write must be replaced by.

use std::collections::{BTreeMap, BTreeSet};

use switchyard_conf::RouteConfig;

use super::{describe, Core, Level, Now};
use crate::health::SlotHealth;
use crate::history::{Action, HistoryEntry, Trigger};
use crate::protocol::ClusterStatus;
use crate::state_file::RouteState;
use crate::table::StatsSnapshot;

impl Core {
    /// Every route's decision as the core holds it now.
    pub fn route_states(&self) -> &BTreeMap<String, RouteState> {
        &self.routes
    }

    /// Makes `remote` (route → the decision the cluster holds) this node's
    /// decisions, published at once. Each node keeps its own record of
    /// what its config file said (`file_*`): an edit is judged against
    /// this node's file, not another node's. A decision naming a slot this
    /// node's config lacks is not taken (logged; the route stays as it is).
    pub(super) fn adopt(
        &mut self,
        remote: BTreeMap<String, RouteState>,
        why: &str,
        whole: bool,
        now: Now,
    ) {
        let time = now.rfc3339();
        let mut adopted = BTreeSet::new();
        for (name, mut state) in remote {
            let (Some(route), Some(local)) = (self.config.route(&name), self.routes.get(&name))
            else {
                continue;
            };
            if let Some(problem) = unknown_slot(route, &state) {
                let message = format!("the cluster's decision ({}) is not applied here: {problem}; this node keeps {}",
                    describe(&state), describe(local));
                self.log(Level::Error, Some(&name), message);
                continue;
            }
            if !whole {
                keep_file_record(&mut state, local);
            }
            if *local == state {
                continue;
            }
            // A rollout's checkpoint of its hold clock (every few
            // seconds) changes nothing people see: no entry for it.
            let seen_by_people = describe(local) != describe(&state)
                || local.previous != state.previous
                || local.maintenance != state.maintenance
                || local.source != state.source;
            if seen_by_people {
                self.record(HistoryEntry {
                    from: Some(describe(local)),
                    to: Some(describe(&state)),
                    reason: Some(why.to_string()),
                    generation: Some(self.generation + 1),
                    ..HistoryEntry::new(&time, Trigger::Cluster, &name, Action::Adopt)
                });
                self.log(
                    Level::Info,
                    Some(&name),
                    format!("{} ({why})", describe(&state)),
                );
            }
            self.rollout_clocks.remove(&name);
            self.guards.remove(&name);
            self.routes.insert(name.clone(), state);
            adopted.insert(name);
        }
        if adopted.is_empty() {
            return;
        }
        self.adopting = adopted;
        self.restore_adopted_guards(now);
        self.publish(now);
        self.adopting.clear();
        self.save();
    }

    /// Whether the next publish applies a decision taken elsewhere for
    /// `route`: its switch starts no guard here and its canary keeps the
    /// cohort the deciding node drew.
    pub(super) fn adopting(&self, route: &str) -> bool {
        self.adopting.contains(route)
    }

    /// Takes (or stops taking) the automatic decisions: fail-back, guard
    /// verdicts and rollout steps. A node that starts leading looks at
    /// every route's health at once.
    pub(super) fn set_deciding(&mut self, deciding: bool, now: Now) {
        if self.deciding == deciding {
            return;
        }
        self.deciding = deciding;
        let message = if deciding {
            "this node now takes the automatic decisions (fail-back, guard, rollout steps)"
        } else {
            "another node takes the automatic decisions now"
        };
        self.log(Level::Info, None, message.to_string());
        if !deciding {
            self.critical.clear();
            return;
        }
        self.react_all(now);
    }

    /// What `status` shows of the cluster, with every node's report. The
    /// leader looks at every route again with the reports it brings.
    pub(super) fn set_cluster_status(&mut self, status: ClusterStatus, now: Now) {
        self.peer_counters = status
            .nodes
            .iter()
            .filter(|n| n.node != status.node)
            .map(|n| (n.node.clone(), n.counters.clone()))
            .collect();
        self.cluster = Some(status);
        if self.deciding {
            self.react_all(now);
        }
    }

    /// Lets every route react to the health as it is now (as the leader
    /// sees it), and publishes once if a decision changed.
    fn react_all(&mut self, now: Now) {
        let routes: Vec<String> = self.routes.keys().cloned().collect();
        let mut decided = false;
        for route in routes {
            decided |= self.react(&route, now);
        }
        if decided {
            self.publish(now);
        }
    }

    /// Every slot's health as this node's probes see it, for its report.
    pub fn slot_views(&self) -> BTreeMap<String, BTreeMap<String, SlotHealth>> {
        self.config
            .routes
            .iter()
            .map(|route| {
                let slots = route
                    .slots
                    .keys()
                    .map(|slot| (slot.clone(), self.health.slot_health(&route.name, slot)))
                    .collect();
                (route.name.clone(), slots)
            })
            .collect()
    }

    /// A slot's health as automatic decisions see it: this node's view
    /// alone without `[cluster]`; with it, weighed with the reports of the
    /// other nodes (see [`weigh`]). A report lives under its node's lease:
    /// a node that stops renewing it (stopped, cut off) is not counted
    /// after the lease runs out, whatever the nodes' clocks say.
    pub(super) fn decision_health(&self, route: &str, slot: &str) -> SlotHealth {
        let own = self.health.slot_health(route, slot);
        let Some(cluster) = &self.cluster else {
            return own;
        };
        let others = cluster
            .nodes
            .iter()
            .filter(|n| n.node != cluster.node)
            .filter_map(|n| n.slots.get(route)?.get(slot).copied());
        weigh(std::iter::once(own).chain(others))
    }
}

/// Each node's counters of one slot, this node's under `""`: what the
/// guard and rollout analysis keep at the start of a window and sum over
/// it (see [`sum_since`]).
pub(super) type NodeCounters = BTreeMap<String, StatsSnapshot>;

impl Core {
    /// A slot's counters on this node and, with `[cluster]`, on every node
    /// with a fresh report.
    pub(super) fn counters_by_node(&self, route: &str, slot: &str) -> NodeCounters {
        let mut counters = NodeCounters::new();
        counters.insert(String::new(), self.slot_stats(route, slot));
        for (node, routes) in &self.peer_counters {
            if let Some(stats) = routes.get(route).and_then(|slots| slots.get(slot)) {
                counters.insert(node.clone(), stats.clone());
            }
        }
        counters
    }
}

/// Gives every node in `now` that `base` lacks (its first report came
/// after the window started) or whose counters went back (it restarted)
/// its counters of `now` as its base: it counts from here on. What it
/// served before is unknown, and guessing could only invent errors.
pub(super) fn fill_bases(base: &mut NodeCounters, now: &NodeCounters) {
    for (node, current) in now {
        let stale = base
            .get(node)
            .is_none_or(|earlier| current.requests < earlier.requests);
        if stale {
            base.insert(node.clone(), current.clone());
        }
    }
}

/// What every node counted between `base` and `now`, summed. A node with
/// no base, or whose counters went back, adds nothing (see [`fill_bases`]).
pub(super) fn sum_since(now: &NodeCounters, base: &NodeCounters) -> StatsSnapshot {
    let mut sum = StatsSnapshot::default();
    for (node, current) in now {
        let Some(earlier) = base.get(node) else {
            continue;
        };
        if current.requests >= earlier.requests {
            sum.add(&current.since(earlier));
        }
    }
    sum
}

/// The cluster's verdict on a slot from every node's view of it: unhealthy
/// only when more than half of the nodes see it unhealthy, so a slot down
/// from one node's network alone moves nobody; healthy when any node sees
/// it healthy and no majority sees it down; unknown otherwise.
pub fn weigh(views: impl IntoIterator<Item = SlotHealth>) -> SlotHealth {
    let (mut total, mut healthy, mut unhealthy) = (0, 0, 0);
    for view in views {
        total += 1;
        match view {
            SlotHealth::Healthy => healthy += 1,
            SlotHealth::Unhealthy => unhealthy += 1,
            SlotHealth::Unknown => {}
        }
    }
    if unhealthy * 2 > total {
        SlotHealth::Unhealthy
    } else if healthy > 0 {
        SlotHealth::Healthy
    } else {
        SlotHealth::Unknown
    }
}

/// Why `state` cannot be served by `route` as this node configures it.
fn unknown_slot(route: &RouteConfig, state: &RouteState) -> Option<String> {
    let slots = std::iter::once(&state.active).chain(state.canary.as_ref().map(|c| &c.slot));
    slots
        .filter(|slot| !route.slots.contains_key(*slot))
        .map(|slot| format!("slot {slot:?} is not in this node's config"))
        .next()
}

/// Gives `state` the record of this node's config file that `local` has.
fn keep_file_record(state: &mut RouteState, local: &RouteState) {
    state.file_active = local.file_active.clone();
    state.file_canary = local.file_canary.clone();
    state.file_maintenance = local.file_maintenance;
}

/// Whether `a` and `b` are the same decision, leaving aside what each
/// node's own config file said (`file_*`), which is not shared.
pub fn same_decision(a: &RouteState, b: &RouteState) -> bool {
    let mut b = b.clone();
    keep_file_record(&mut b, a);
    *a == b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_file::{CanaryState, DecisionSource};

    fn state(active: &str, file_active: &str) -> RouteState {
        RouteState {
            active: active.into(),
            previous: None,
            canary: None,
            source: DecisionSource::Admin,
            file_active: file_active.into(),
            file_canary: None,
            changed_at: "2026-12-02T13:00:00Z".into(),
            failed: None,
            pending: None,
            cohort: 0,
            rollout: None,
            maintenance: None,
            file_maintenance: false,
            guard: None,
            recent: Vec::new(),
        }
    }

    #[test]
    fn a_slot_is_down_for_the_cluster_only_when_most_nodes_see_it_down() {
        use SlotHealth::{Healthy as H, Unhealthy as U, Unknown as K};
        assert_eq!(weigh([U]), U, "one node alone decides alone");
        assert_eq!(weigh([U, H, H]), H, "one node's network moves nobody");
        assert_eq!(weigh([U, U, H]), U);
        assert_eq!(weigh([U, H]), H, "a tie moves nobody");
        assert_eq!(weigh([U, U]), U);
        assert_eq!(weigh([U, K, K]), K);
        assert_eq!(weigh([U, U, K]), U);
        assert_eq!(weigh([K, H, K]), H);
    }

    fn stats(requests: u64, errors: u64) -> StatsSnapshot {
        StatsSnapshot {
            requests,
            errors,
            upstream_failures: 0,
            latency: vec![requests],
        }
    }

    #[test]
    fn the_window_sums_what_every_node_counted_since_its_base() {
        let base = NodeCounters::from([
            (String::new(), stats(100, 1)),
            ("b".to_string(), stats(50, 0)),
            ("c".to_string(), stats(500, 5)),
        ]);
        let now = NodeCounters::from([
            (String::new(), stats(200, 11)),
            ("b".to_string(), stats(150, 20)),
            ("c".to_string(), stats(10, 10)),   // restarted: unknown
            ("d".to_string(), stats(900, 900)), // joined since: unknown
        ]);
        assert_eq!(sum_since(&now, &base), stats(200, 30));

        // From here on c and d count from where they are now.
        let mut base = base;
        fill_bases(&mut base, &now);
        assert_eq!(base["c"], stats(10, 10));
        assert_eq!(base["d"], stats(900, 900));
        assert_eq!(base["b"], stats(50, 0), "b keeps its base");
        let later = NodeCounters::from([
            (String::new(), stats(200, 11)),
            ("b".to_string(), stats(150, 20)),
            ("c".to_string(), stats(20, 10)),
            ("d".to_string(), stats(910, 905)),
        ]);
        assert_eq!(sum_since(&later, &base), stats(220, 35));
    }

    #[test]
    fn decisions_compare_without_each_nodes_file_record() {
        assert!(same_decision(
            &state("green", "blue"),
            &state("green", "green")
        ));
        assert!(!same_decision(
            &state("green", "blue"),
            &state("blue", "blue")
        ));
        let mut canary = state("blue", "blue");
        canary.canary = Some(CanaryState {
            slot: "green".into(),
            weight: 10,
        });
        assert!(!same_decision(&state("blue", "blue"), &canary));
        let mut file_canary = state("blue", "blue");
        file_canary.file_canary = canary.canary.clone();
        file_canary.file_maintenance = true;
        assert!(same_decision(&state("blue", "blue"), &file_canary));
    }
}
