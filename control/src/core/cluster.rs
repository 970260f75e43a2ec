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
use crate::history::{Action, HistoryEntry, Trigger};
use crate::protocol::ClusterStatus;
use crate::state_file::RouteState;

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
        let routes: Vec<String> = self.routes.keys().cloned().collect();
        let mut decided = false;
        for route in routes {
            decided |= self.react(&route, now);
        }
        if decided {
            self.publish(now);
        }
    }

    /// What `status` shows of the cluster.
    pub(super) fn set_cluster_status(&mut self, status: ClusterStatus) {
        self.cluster = Some(status);
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
