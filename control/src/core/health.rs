//! Health checks in the core: counting them, and what a change of a slot's
//! health does to its route (the rules are `crate::health::apply_health`).

use switchyard_conf::RouteConfig;

use super::{describe, Core, Level, Now};
use crate::health::monitor::BackendKey;
use crate::health::probe::ProbeSpec;
use crate::health::{apply_health, failover_order, BackendState, Check, Reaction};
use crate::history::{Action, HistoryEntry, Trigger};
use crate::notify::NoticeKind;
use crate::rollout::Phase;
use crate::state_file::RouteState;

/// Backends named, with their last check, where a slot's health is
/// explained (history, refusals, `critical`).
const EVIDENCE_BACKENDS: usize = 10;

impl Core {
    /// Tracks exactly the configured backends: one whose route, slot and
    /// address are unchanged keeps its state across a reload; the shell
    /// probes the same set.
    pub(super) fn track_backends(&mut self, now: Now) {
        self.health.sync(&self.config, now.wall);
        self.thresholds = self
            .config
            .routes
            .iter()
            .map(|route| {
                let slots = route
                    .slots
                    .keys()
                    .map(|slot| (slot.clone(), ProbeSpec::for_slot(route, slot).thresholds))
                    .collect();
                (route.name.clone(), slots)
            })
            .collect();
        self.effects.push(super::Effect::ConfigApplied);
    }

    /// Counts checks, then lets each route whose slot health changed react
    /// once for all of them, and publishes: at once when a decision
    /// changed; for backends that only moved into or out of `unhealthy`,
    /// paced (see `crate::health::changes`).
    pub(super) fn checks(&mut self, checks: Vec<(BackendKey, Check)>, now: Now) {
        for (key, check) in checks {
            self.observe(key, check, now);
        }
        let mut decided = false;
        for route in self.health_changes.take_routes() {
            decided |= self.react(&route, now);
        }
        let due = self.health_changes.publish_due();
        if decided || due.is_some_and(|at| at <= now.at) {
            self.publish(now);
        }
        self.release_parked(now);
    }

    fn observe(&mut self, key: BackendKey, check: Check, now: Now) {
        let thresholds = self
            .thresholds
            .get(&*key.route)
            .and_then(|slots| slots.get(&*key.slot));
        let Some(&thresholds) = thresholds else {
            return; // a backend the config no longer has
        };
        let Some(observed) = self.health.observe(&key, check, thresholds, now.wall) else {
            return;
        };
        let transition = &observed.transition;
        let (level, verdict) = match transition.to {
            BackendState::Healthy => (Level::Info, "healthy"),
            _ => (Level::Warn, "unhealthy"),
        };
        let message = format!(
            "backend {key} {verdict} (was {:?}): {}",
            transition.from,
            describe_check(&transition.check)
        );
        self.log(level, Some(&key.route), message);
        self.health_changes.note(&key.route, &observed, now.at);
    }

    /// Applies what the route's slot health asks for, with history entries
    /// that say why. True when the route's state changed.
    pub(super) fn react(&mut self, route_name: &str, now: Now) -> bool {
        if !self.deciding {
            // In a cluster the leader decides, once for every node.
            return false;
        }
        let (Some(route), Some(before)) =
            (self.config.route(route_name), self.routes.get(route_name))
        else {
            return false;
        };
        let route = route.clone();
        let before = before.clone();
        let time = now.rfc3339();
        // With no previous slot, any other healthy slot may take over: the
        // one active most recently first, then config order (none with
        // `failover = "none"`).
        let failover: Vec<String> = if route.failover {
            failover_order(&before.recent, route.slots.keys())
        } else {
            Vec::new()
        };
        let (mut after, reactions) = apply_health(
            &before,
            |slot| self.decision_health(route_name, slot),
            &failover,
            &time,
        );
        let mut critical = None;
        for reaction in reactions {
            let (trigger, action, reason) = match self.explain(&route, &reaction, &mut after) {
                Explained::Change(trigger, action, reason) => (trigger, action, reason),
                Explained::Critical(reason) => {
                    critical = Some(reason);
                    continue;
                }
            };
            self.log(
                Level::Warn,
                Some(route_name),
                format!("{}: {reason}", action.as_str()),
            );
            let notice = match &reaction {
                Reaction::FailBack { from, to } | Reaction::FailOver { from, to } => {
                    Some((NoticeKind::Failback, Some(from.as_str()), Some(to.as_str())))
                }
                Reaction::DropCanary { slot, .. } if trigger == Trigger::Rollout => {
                    Some((NoticeKind::RolloutAborted, Some(slot.as_str()), None))
                }
                _ => None,
            };
            if let Some((kind, from, to)) = notice {
                self.notify(kind, Some(route_name), (from, to), &reason, now);
            }
            self.record(HistoryEntry {
                from: Some(describe(&before)),
                to: Some(describe(&after)),
                reason: Some(reason),
                generation: Some(self.generation + 1),
                ..HistoryEntry::new(&time, trigger, route_name, action)
            });
        }
        self.mark_critical(route_name, critical, now);
        let changed = after != before;
        if changed {
            self.routes.insert(route_name.to_string(), after);
            self.save();
        }
        changed
    }

    /// Who decided a reaction, what it did and why, for the history and
    /// the log; or why the route is critical. A canary dropped while its
    /// rollout runs ends the rollout (in `after`): health is one of its
    /// verdicts.
    fn explain(
        &mut self,
        route: &RouteConfig,
        reaction: &Reaction,
        after: &mut RouteState,
    ) -> Explained {
        let (trigger, action, reason) = match reaction {
            Reaction::FailBack { from, .. } => (
                Trigger::Failback,
                Action::Switch,
                format!("slot {from} unhealthy: {}", self.slot_evidence(route, from)),
            ),
            Reaction::FailOver { from, to } => (
                Trigger::Failback,
                Action::Switch,
                format!(
                    "slot {from} unhealthy and there is no previous slot: failed over to {to}, the first healthy slot: {}",
                    self.slot_evidence(route, from)
                ),
            ),
            Reaction::DropCanary { slot, weight } => {
                let reason = format!(
                    "canary slot {slot} (weight {weight}) unhealthy: {}",
                    self.slot_evidence(route, slot)
                );
                if let Some(rollout) = after.rollout.as_mut().filter(|r| r.in_progress()) {
                    rollout.end(Phase::Aborted, format!("health check failed: {reason}"));
                    self.rollout_clocks.remove(&route.name);
                    (Trigger::Rollout, Action::RolloutAbort, reason)
                } else {
                    (Trigger::Failback, Action::Canary, reason)
                }
            }
            Reaction::ApplyPending { to, .. } => (
                Trigger::Config,
                Action::Switch,
                format!("held config switch applied: slot {to} is healthy"),
            ),
            Reaction::Critical { active, reason } => {
                return Explained::Critical(format!(
                    "active slot {active} is unhealthy ({}) and {reason}: still routing to it",
                    self.slot_evidence(route, active)
                ))
            }
        };
        Explained::Change(trigger, action, reason)
    }

    /// Notes (and logs once) or clears that a route has nowhere to go.
    pub(super) fn mark_critical(&mut self, route: &str, critical: Option<String>, now: Now) {
        let Some(reason) = critical else {
            self.critical.remove(route);
            return;
        };
        if self.critical.get(route) != Some(&reason) {
            self.log(Level::Error, Some(route), format!("critical: {reason}"));
            self.notify(
                NoticeKind::RouteCritical,
                Some(route),
                (None, None),
                &reason,
                now,
            );
        }
        self.critical.insert(route.to_string(), reason);
    }

    /// `127.0.0.1:3001 connect: refused; 127.0.0.1:3002 status 500`: the
    /// first `EVIDENCE_BACKENDS` backends of the slot and their last checks;
    /// the others are counted, so that a history entry about a slot of
    /// thousands stays a line.
    pub(super) fn slot_evidence(&self, route: &RouteConfig, slot: &str) -> String {
        let backends = route.slots.get(slot).map(Vec::as_slice).unwrap_or(&[]);
        let mut evidence: Vec<String> = backends
            .iter()
            .take(EVIDENCE_BACKENDS)
            .map(|addr| {
                let last = self
                    .health
                    .get(&route.name, slot, *addr)
                    .and_then(|h| h.last.as_ref())
                    .map_or("no check yet".to_string(), |(check, _)| {
                        describe_check(check)
                    });
                format!("{addr} {last}")
            })
            .collect();
        if backends.len() > EVIDENCE_BACKENDS {
            evidence.push(format!(
                "and {} more backends",
                backends.len() - EVIDENCE_BACKENDS
            ));
        }
        evidence.join("; ")
    }
}

/// A reaction as the history and the log tell it.
enum Explained {
    /// The route changed: who decided, what, and why.
    Change(Trigger, Action, String),
    /// Nothing changed, and the route has nowhere to go: why.
    Critical(String),
}

/// `pass 200 in 1.2ms`, `status 500 in 3.0ms`, `timed out in 1000.0ms`.
pub(super) fn describe_check(check: &Check) -> String {
    let millis = |d: &std::time::Duration| d.as_secs_f64() * 1000.0;
    match check {
        Check::Pass {
            status: Some(code),
            latency,
        } => format!("pass {code} in {:.1}ms", millis(latency)),
        Check::Pass {
            status: None,
            latency,
        } => format!("connect ok in {:.1}ms", millis(latency)),
        Check::Fail { failure, latency } => format!("{failure} in {:.1}ms", millis(latency)),
    }
}
