//! What a change in slot health does to a route: fail back, drop the
//! canary, apply a held config switch, or report that there is nowhere to
//! go. Pure: the core calls it on every health transition and then
//! publishes, persists and records what it returns.

use super::SlotHealth;
use crate::decisions::make_active;
use crate::state_file::{DecisionSource, RouteState};

/// One thing health did to a route, with what the history entry needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reaction {
    /// The active slot turned unhealthy and the previous one is healthy:
    /// traffic moved to it.
    FailBack { from: String, to: String },
    /// The canary slot turned unhealthy: its weight went to 0.
    DropCanary { slot: String, weight: u8 },
    /// A config edit of `active` waited for its slot; the slot is healthy now.
    ApplyPending { from: String, to: String },
    /// The active slot turned unhealthy, there is no previous slot, and
    /// another slot is healthy: traffic moved to it.
    FailOver { from: String, to: String },
    /// The active slot is unhealthy and there is no healthy slot to fail
    /// back to: traffic stays where it is (fail open).
    Critical { active: String, reason: String },
}

/// The route's state after its slots' health is taken into account, and
/// what changed. `health` answers for any slot name; `failover` lists, in
/// order of preference, the slots that may take over an unhealthy active
/// slot when there is no previous slot (none with `failover = "none"`).
pub fn apply_health(
    state: &RouteState,
    health: impl Fn(&str) -> SlotHealth,
    failover: &[String],
    now: &str,
) -> (RouteState, Vec<Reaction>) {
    let mut next = state.clone();
    let mut reactions = Vec::new();

    if let Some(pending) = next.pending.clone() {
        if pending == next.active {
            next.pending = None;
        } else if health(&pending) == SlotHealth::Healthy {
            let from = make_active(&mut next, &pending, DecisionSource::Config, now);
            next.failed = None;
            reactions.push(Reaction::ApplyPending { from, to: pending });
        }
    }

    if health(&next.active) == SlotHealth::Unhealthy {
        let target = next
            .previous
            .clone()
            .filter(|p| Some(p) != next.failed.as_ref());
        match target {
            Some(to) if health(&to) == SlotHealth::Healthy => {
                let from = make_active(&mut next, &to, DecisionSource::Failback, now);
                next.failed = Some(from.clone());
                reactions.push(Reaction::FailBack { from, to });
            }
            None if next.previous.is_none()
                && failover_target(&next, &health, failover).is_some() =>
            {
                let to = failover_target(&next, &health, failover).unwrap_or_default();
                let from = make_active(&mut next, &to, DecisionSource::Failback, now);
                next.failed = Some(from.clone());
                reactions.push(Reaction::FailOver { from, to });
            }
            _ => {
                let reason = match (&next.previous, &next.failed) {
                    (None, _) if failover.is_empty() => "there is no previous slot".to_string(),
                    (None, _) => {
                        "there is no previous slot and no other slot is healthy".to_string()
                    }
                    (Some(p), Some(f)) if p == f => {
                        format!(
                            "the previous slot {p:?} failed before; only a command brings it back"
                        )
                    }
                    (Some(p), _) => format!("the previous slot {p:?} is {}", health(p).as_str()),
                };
                reactions.push(Reaction::Critical {
                    active: next.active.clone(),
                    reason,
                });
            }
        }
    }

    if let Some(canary) = next.canary.clone() {
        if canary.weight > 0 && health(&canary.slot) == SlotHealth::Unhealthy {
            next.canary = None;
            next.changed_at = now.to_string();
            reactions.push(Reaction::DropCanary {
                slot: canary.slot,
                weight: canary.weight,
            });
        }
    }
    (next, reactions)
}

/// The slots that may take over a dead active slot, in order of
/// preference: those active before, the most recent first (`recent`), then
/// the rest of the route's `configured` slots in config order.
pub fn failover_order<'a>(
    recent: &[String],
    configured: impl Iterator<Item = &'a String> + Clone,
) -> Vec<String> {
    let known = |slot: &&String| configured.clone().any(|c| c == *slot);
    let mut order: Vec<String> = recent.iter().filter(known).cloned().collect();
    for slot in configured {
        if !order.contains(slot) {
            order.push(slot.clone());
        }
    }
    order
}

/// The first slot of `failover` that is healthy and neither active nor the
/// one that failed before.
fn failover_target(
    state: &RouteState,
    health: &impl Fn(&str) -> SlotHealth,
    failover: &[String],
) -> Option<String> {
    failover
        .iter()
        .find(|slot| {
            **slot != state.active
                && Some(*slot) != state.failed.as_ref()
                && health(slot) == SlotHealth::Healthy
        })
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_file::CanaryState;
    use SlotHealth::*;

    fn state(active: &str, previous: Option<&str>) -> RouteState {
        RouteState {
            cohort: 0,
            rollout: None,
            active: active.into(),
            previous: previous.map(Into::into),
            canary: None,
            source: DecisionSource::Admin,
            file_active: "blue".into(),
            file_canary: None,
            changed_at: "t0".into(),
            failed: None,
            pending: None,
            maintenance: None,
            file_maintenance: false,
            guard: None,
            recent: Vec::new(),
        }
    }

    fn health(map: &'static [(&'static str, SlotHealth)]) -> impl Fn(&str) -> SlotHealth {
        move |slot| {
            map.iter()
                .find(|(name, _)| *name == slot)
                .map_or(Unknown, |(_, h)| *h)
        }
    }

    #[test]
    fn an_unhealthy_active_fails_back_to_a_healthy_previous_in_one_step() {
        let before = state("green", Some("blue"));
        let (after, reactions) = apply_health(
            &before,
            health(&[("green", Unhealthy), ("blue", Healthy)]),
            &[],
            "t1",
        );
        assert_eq!(after.active, "blue");
        assert_eq!(after.previous.as_deref(), Some("green"));
        assert_eq!(after.failed.as_deref(), Some("green"));
        assert_eq!(after.source, DecisionSource::Failback);
        assert_eq!(
            reactions,
            [Reaction::FailBack {
                from: "green".into(),
                to: "blue".into()
            }]
        );
    }

    #[test]
    fn the_failed_slot_does_not_come_back_by_itself() {
        let (failed_back, _) = apply_health(
            &state("green", Some("blue")),
            health(&[("green", Unhealthy), ("blue", Healthy)]),
            &[],
            "t1",
        );
        // green recovers and blue breaks: no automatic return to green.
        let (after, reactions) = apply_health(
            &failed_back,
            health(&[("green", Healthy), ("blue", Unhealthy)]),
            &[],
            "t2",
        );
        assert_eq!(after.active, "blue", "fail open on blue");
        assert!(
            matches!(&reactions[..], [Reaction::Critical { reason, .. }] if reason.contains("only a command")),
            "{reactions:?}"
        );
    }

    #[test]
    fn both_unhealthy_keeps_routing_to_the_active_and_reports_critical() {
        let before = state("green", Some("blue"));
        let (after, reactions) = apply_health(
            &before,
            health(&[("green", Unhealthy), ("blue", Unhealthy)]),
            &[],
            "t1",
        );
        assert_eq!(after, before);
        assert!(matches!(&reactions[..], [Reaction::Critical { active, .. }] if active == "green"));
    }

    #[test]
    fn an_unknown_previous_is_not_a_fail_back_target() {
        let before = state("green", Some("blue"));
        let (after, reactions) = apply_health(&before, health(&[("green", Unhealthy)]), &[], "t1");
        assert_eq!(after.active, "green");
        assert!(matches!(&reactions[..], [Reaction::Critical { .. }]));
    }

    #[test]
    fn a_healthy_or_unknown_active_changes_nothing() {
        for h in [Healthy, Unknown] {
            let before = state("green", Some("blue"));
            let map: &'static [(&str, SlotHealth)] = match h {
                Healthy => &[("green", Healthy), ("blue", Unhealthy)],
                _ => &[("blue", Healthy)],
            };
            let (after, reactions) = apply_health(&before, health(map), &[], "t1");
            assert_eq!((after, reactions), (before, vec![]));
        }
    }

    #[test]
    fn an_unhealthy_canary_drops_to_weight_zero() {
        let mut before = state("blue", None);
        before.canary = Some(CanaryState {
            slot: "green".into(),
            weight: 20,
        });
        let (after, reactions) = apply_health(
            &before,
            health(&[("blue", Healthy), ("green", Unhealthy)]),
            &[],
            "t1",
        );
        assert_eq!(after.canary, None);
        assert_eq!(after.active, "blue");
        assert_eq!(
            reactions,
            [Reaction::DropCanary {
                slot: "green".into(),
                weight: 20
            }]
        );
    }

    #[test]
    fn a_pending_config_switch_waits_for_a_healthy_slot() {
        let mut before = state("blue", None);
        before.pending = Some("green".into());
        let (held, reactions) = apply_health(
            &before,
            health(&[("blue", Healthy), ("green", Unknown)]),
            &[],
            "t1",
        );
        assert_eq!((held.active.as_str(), reactions.len()), ("blue", 0));
        assert_eq!(held.pending.as_deref(), Some("green"));

        let (applied, reactions) = apply_health(
            &held,
            health(&[("blue", Healthy), ("green", Healthy)]),
            &[],
            "t2",
        );
        assert_eq!(applied.active, "green");
        assert_eq!(applied.previous.as_deref(), Some("blue"));
        assert_eq!(applied.pending, None);
        assert_eq!(applied.source, DecisionSource::Config);
        assert_eq!(
            reactions,
            [Reaction::ApplyPending {
                from: "blue".into(),
                to: "green".into()
            }]
        );
    }

    #[test]
    fn the_failover_order_is_most_recently_active_first_then_config_order() {
        let configured: Vec<String> = ["blue", "green", "red", "gray"].map(String::from).into();
        let recent: Vec<String> = ["gray", "gone", "red"].map(String::from).into();
        assert_eq!(
            failover_order(&recent, configured.iter()),
            ["gray", "red", "blue", "green"]
        );
        assert_eq!(failover_order(&[], configured.iter()), configured);
    }

    #[test]
    fn with_no_previous_slot_a_dead_active_fails_over_to_the_first_healthy_slot() {
        let before = state("green", None);
        let slots = ["blue".to_string(), "green".to_string(), "red".to_string()];
        let map = &[("green", Unhealthy), ("blue", Unknown), ("red", Healthy)];
        let (after, reactions) = apply_health(&before, health(map), &slots, "t1");
        assert_eq!(after.active, "red");
        assert_eq!(after.previous.as_deref(), Some("green"));
        assert_eq!(after.failed.as_deref(), Some("green"));
        assert_eq!(after.source, DecisionSource::Failback);
        let moved = Reaction::FailOver {
            from: "green".into(),
            to: "red".into(),
        };
        assert_eq!(reactions, vec![moved]);

        // `failover = "none"`, or nothing healthy: critical, as before.
        let (stays, reactions) = apply_health(&before, health(map), &[], "t1");
        assert_eq!(stays, before);
        assert!(matches!(&reactions[..], [Reaction::Critical { .. }]));
        let none_healthy = &[("green", Unhealthy), ("red", Unknown)];
        let (stays, reactions) = apply_health(&before, health(none_healthy), &slots, "t1");
        assert_eq!(stays, before);
        assert!(
            matches!(&reactions[..], [Reaction::Critical { reason, .. }] if reason.contains("no other slot is healthy"))
        );
    }
}
