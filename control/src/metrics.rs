//! Prometheus text exposition of the Controller's state: rendered on
//! demand from what the Controller already owns (health, in-flight
//! counters, switch counts), so the request path records nothing extra.

use std::collections::BTreeMap;
use std::fmt::Write;

pub use crate::table::{REQUESTS, REQUEST_DURATION, UPSTREAM_FAILURES};

/// Counted by the Controller through the `metrics` facade, like the
/// request path's series.
pub const CONFIG_RELOADS: &str = "switchyard_config_reloads_total";
/// Lookups of backend names, by result (`ok`, `error`).
pub const NAME_LOOKUPS: &str = "switchyard_backend_name_lookups_total";

/// What one scrape shows.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// (route, slot, backend) → up (healthy) or not.
    pub backend_up: Vec<(String, String, String, bool)>,
    /// (route, slot) → requests in flight.
    pub inflight: Vec<(String, String, usize)>,
    /// (route, slot) → 1 for the active slot, 0 for the others.
    pub active_slot: Vec<(String, String, bool)>,
    /// route → canary weight (0 without a canary).
    pub canary_weight: Vec<(String, u8)>,
    /// (route, trigger) → switches of the active slot since start.
    pub switches: BTreeMap<(String, String), u64>,
}

/// Escapes a label value (backslash, quote, newline).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The text format, version 0.0.4.
pub fn render(snapshot: &Snapshot) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "switchyard_backend_up",
        "gauge",
        "1 while the backend passes its health checks, 0 while it fails them or has no verdict yet.",
    );
    for (route, slot, backend, up) in &snapshot.backend_up {
        let _ = writeln!(
            out,
            "switchyard_backend_up{{route=\"{}\",slot=\"{}\",backend=\"{}\"}} {}",
            label(route),
            label(slot),
            label(backend),
            u8::from(*up)
        );
    }
    family(
        &mut out,
        "switchyard_inflight_requests",
        "gauge",
        "Requests (upgraded connections included) in flight on the slot.",
    );
    for (route, slot, n) in &snapshot.inflight {
        let _ = writeln!(
            out,
            "switchyard_inflight_requests{{route=\"{}\",slot=\"{}\"}} {n}",
            label(route),
            label(slot)
        );
    }
    family(
        &mut out,
        "switchyard_active_slot",
        "gauge",
        "1 for the route's active slot, 0 for its other slots.",
    );
    for (route, slot, active) in &snapshot.active_slot {
        let _ = writeln!(
            out,
            "switchyard_active_slot{{route=\"{}\",slot=\"{}\"}} {}",
            label(route),
            label(slot),
            u8::from(*active)
        );
    }
    family(
        &mut out,
        "switchyard_canary_weight",
        "gauge",
        "Percent of the route's new traffic sent to its canary slot.",
    );
    for (route, weight) in &snapshot.canary_weight {
        let _ = writeln!(
            out,
            "switchyard_canary_weight{{route=\"{}\"}} {weight}",
            label(route)
        );
    }
    family(
        &mut out,
        "switchyard_switches_total",
        "counter",
        "Changes of the route's active slot since start, by what made them (admin, config, failback, rollout).",
    );
    for ((route, trigger), n) in &snapshot.switches {
        let _ = writeln!(
            out,
            "switchyard_switches_total{{route=\"{}\",trigger=\"{}\"}} {n}",
            label(route),
            label(trigger)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_has_help_and_type_and_labels_are_escaped() {
        let mut snapshot = Snapshot {
            backend_up: vec![("app".into(), "blue".into(), "127.0.0.1:3000".into(), true)],
            inflight: vec![("app".into(), "blue".into(), 3)],
            active_slot: vec![
                ("app".into(), "blue".into(), true),
                ("app".into(), "gr\"een".into(), false),
            ],
            canary_weight: vec![("app".into(), 0)],
            ..Snapshot::default()
        };
        snapshot
            .switches
            .insert(("app".into(), "failback".into()), 2);
        let text = render(&snapshot);
        for family in [
            "switchyard_backend_up",
            "switchyard_inflight_requests",
            "switchyard_active_slot",
            "switchyard_canary_weight",
            "switchyard_switches_total",
        ] {
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{family}: {text}"
            );
        }
        assert!(text.contains(
            "switchyard_backend_up{route=\"app\",slot=\"blue\",backend=\"127.0.0.1:3000\"} 1\n"
        ));
        assert!(text.contains("switchyard_inflight_requests{route=\"app\",slot=\"blue\"} 3\n"));
        assert!(text.contains("slot=\"gr\\\"een\"} 0\n"), "{text}");
        assert!(text.contains("switchyard_switches_total{route=\"app\",trigger=\"failback\"} 2\n"));
    }
}
