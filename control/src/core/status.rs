//! What the core shows: `status`, the Prometheus snapshot, and the
//! backends still waiting for a first verdict (readiness).

use std::net::SocketAddr;

use switchyard_conf::{HostPattern, RouteConfig};

use super::{Core, Now};
use crate::health::BackendState;
use crate::metrics;
use crate::protocol::{
    BackendStatus, ConfigStatus, Response, RouteStatus, SlotStatus, StatusReply,
};

impl Core {
    /// `status`: the whole state, or one route's.
    pub(super) fn status(&self, only: Option<&str>, now: Now) -> Response {
        if let Some(name) = only.filter(|name| self.config.route(name).is_none()) {
            return self.no_such_route(name);
        }
        let routes = self
            .config
            .routes
            .iter()
            .filter(|r| only.is_none_or(|name| r.name == name))
            .map(|r| self.route_status(r, now))
            .collect();
        Response::ok_with(&StatusReply {
            generation: self.generation,
            config: ConfigStatus {
                file: self.config_path.display().to_string(),
                error: self.config_error.clone(),
                needs_restart: self.needs_restart.clone(),
                reloads: self.reloads,
                pending_edit: self.pending_edit_status(now),
            },
            state_warnings: self.state_warnings.clone(),
            tls: self.tls_status.clone(),
            acme: self.acme_status.clone(),
            notify: self.notify_status.values().cloned().collect(),
            cluster: self.cluster.as_ref().map(|cluster| {
                // The counters are for the leader's sums, not for people.
                let mut shown = cluster.clone();
                shown.nodes.iter_mut().for_each(|n| n.counters.clear());
                Box::new(shown)
            }),
            routes,
        })
    }

    fn route_status(&self, route: &RouteConfig, now: Now) -> RouteStatus {
        let state = &self.routes[&route.name];
        let hosts = route
            .hosts
            .iter()
            .map(|h| match h {
                HostPattern::Exact(name) => name.clone(),
                HostPattern::Suffix(suffix) => format!("*{suffix}"),
            })
            .collect();
        let slots = route
            .slots
            .iter()
            .map(|(name, backends)| {
                let load = self.loads.get(&route.name).and_then(|l| l.get(name));
                SlotStatus {
                    name: name.clone(),
                    health: self.health.slot_health(&route.name, name),
                    in_flight: load.map_or(0, |l| l.requests()),
                    upgraded: load.map_or(0, |l| l.upgraded()),
                    backends: backends
                        .iter()
                        .map(|addr| self.backend_status(&route.name, name, *addr))
                        .collect(),
                    names: self.slot_names(&route.name, name),
                }
            })
            .collect();
        RouteStatus {
            name: route.name.clone(),
            hosts,
            path_prefix: route.path_prefix.clone(),
            active: state.active.clone(),
            previous: state.previous.clone(),
            canary: state.canary.clone(),
            pending: state.pending.clone(),
            failed: state.failed.clone(),
            critical: self.critical.get(&route.name).cloned(),
            decided_by: state.source,
            changed_at: state.changed_at.clone(),
            rollout: self.rollout_status(&route.name, state, now),
            guard: self.guard_status(&route.name, now),
            maintenance: state.maintenance.clone(),
            slots,
        }
    }

    fn backend_status(&self, route: &str, slot: &str, addr: SocketAddr) -> BackendStatus {
        match self.health.get(route, slot, addr) {
            None => BackendStatus::untracked(addr),
            Some(health) => BackendStatus::tracked(
                addr,
                health.state,
                health.since,
                health.last.as_ref().map(|(check, at)| (check, *at)),
            ),
        }
    }

    /// The backends of active slots that have no health verdict yet, as
    /// `route/slot/address`: empty once the proxy knows where it can send
    /// traffic.
    pub fn unchecked_backends(&self) -> Vec<String> {
        let mut unchecked = Vec::new();
        for route in &self.config.routes {
            let active = &self.routes[&route.name].active;
            for addr in route.slots.get(active).into_iter().flatten() {
                if self.health.state(&route.name, active, *addr) == BackendState::Unknown {
                    unchecked.push(format!("{}/{active}/{addr}", route.name));
                }
            }
        }
        unchecked
    }

    /// The metrics in Prometheus text format.
    pub fn metrics(&self) -> String {
        let mut snapshot = metrics::Snapshot {
            switches: self.published.switches.clone(),
            ..metrics::Snapshot::default()
        };
        for route in &self.config.routes {
            let state = &self.routes[&route.name];
            for (slot, backends) in &route.slots {
                for addr in backends {
                    let up = self.health.state(&route.name, slot, *addr) == BackendState::Healthy;
                    let labels = (route.name.clone(), slot.clone(), addr.to_string(), up);
                    snapshot.backend_up.push(labels);
                }
                let load = self.loads.get(&route.name).and_then(|l| l.get(slot));
                let in_flight = load.map_or(0, |l| l.requests());
                snapshot
                    .inflight
                    .push((route.name.clone(), slot.clone(), in_flight));
                let active = *slot == state.active;
                snapshot
                    .active_slot
                    .push((route.name.clone(), slot.clone(), active));
            }
            let weight = state.canary.as_ref().map_or(0, |c| c.weight);
            snapshot.canary_weight.push((route.name.clone(), weight));
        }
        metrics::render(&snapshot)
    }
}
