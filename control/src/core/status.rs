//! What the core shows: `status`, the Prometheus snapshot, and the
//! backends still waiting for a first verdict (readiness).

use std::net::SocketAddr;

use serde_json::{json, Value};
use switchyard_conf::{HostPattern, RouteConfig};

use super::{rfc3339, Core, Now};
use crate::health::{BackendState, Check, Failure};
use crate::metrics;
use crate::protocol::Response;

impl Core {
    /// `status`: the whole state, or one route's.
    pub(super) fn status(&self, only: Option<&str>, now: Now) -> Response {
        if let Some(name) = only.filter(|name| self.config.route(name).is_none()) {
            return self.no_such_route(name);
        }
        let routes: Vec<Value> = self
            .config
            .routes
            .iter()
            .filter(|r| only.is_none_or(|name| r.name == name))
            .map(|r| self.route_status(r, now))
            .collect();
        Response::ok(json!({
            "generation": self.generation,
            "config": {
                "file": self.config_path.display().to_string(),
                "error": self.config_error,
                "needs_restart": self.needs_restart,
                "reloads": self.reloads,
                "pending_edit": self.pending_edit_status(now),
            },
            "state_warnings": self.state_warnings,
            "tls": self.tls_status,
            "routes": routes,
        }))
    }

    fn route_status(&self, route: &RouteConfig, now: Now) -> Value {
        let state = &self.routes[&route.name];
        let hosts: Vec<String> = route
            .hosts
            .iter()
            .map(|h| match h {
                HostPattern::Exact(name) => name.clone(),
                HostPattern::Suffix(suffix) => format!("*{suffix}"),
            })
            .collect();
        let slots: Vec<Value> = route
            .slots
            .iter()
            .map(|(name, backends)| {
                let backends: Vec<Value> = backends
                    .iter()
                    .map(|addr| self.backend_status(&route.name, name, *addr))
                    .collect();
                let load = self.loads.get(&route.name).and_then(|l| l.get(name));
                json!({
                    "name": name,
                    "health": self.health.slot_health(&route.name, name).as_str(),
                    "in_flight": load.map_or(0, |l| l.requests()),
                    "upgraded": load.map_or(0, |l| l.upgraded()),
                    "backends": backends,
                })
            })
            .collect();
        json!({
            "name": route.name,
            "hosts": hosts,
            "path_prefix": route.path_prefix,
            "active": state.active,
            "previous": state.previous,
            "canary": state.canary,
            "pending": state.pending,
            "failed": state.failed,
            "critical": self.critical.get(&route.name),
            "decided_by": state.source,
            "changed_at": state.changed_at,
            "rollout": self.rollout_status(&route.name, state, now),
            "slots": slots,
        })
    }

    /// `{"address", "state", "since", "last_check": {"ok", "status" | "error", "latency_ms", "at"}}`
    fn backend_status(&self, route: &str, slot: &str, addr: SocketAddr) -> Value {
        let Some(health) = self.health.get(route, slot, addr) else {
            return json!({ "address": addr.to_string(), "state": BackendState::Unknown });
        };
        let last = health.last.as_ref().map(|(check, at)| {
            let (ok, latency, detail) = match check {
                Check::Pass { status, latency } => (true, latency, json!({ "status": status })),
                Check::Fail { failure, latency } => match failure {
                    Failure::Status(code) => (false, latency, json!({ "status": code })),
                    other => (false, latency, json!({ "error": other.to_string() })),
                },
            };
            let mut value = json!({
                "ok": ok,
                "latency_ms": latency.as_secs_f64() * 1000.0,
                "at": rfc3339(*at),
            });
            if let (Some(v), Some(d)) = (value.as_object_mut(), detail.as_object()) {
                v.extend(d.clone());
            }
            value
        });
        json!({
            "address": addr.to_string(),
            "state": health.state,
            "since": rfc3339(health.since),
            "last_check": last,
        })
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
