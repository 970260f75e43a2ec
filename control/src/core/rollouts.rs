//! Rollouts in the core: the `rollout` command, the hold
//! clock, the analysis windows, and ending a rollout that something else
//! took the canary from. The decisions themselves are in [`crate::rollout`].

use std::time::{Duration, Instant};

use super::cluster::{fill_bases, sum_since, NodeCounters};
use super::{describe, Core, Level, Now};
use crate::decisions;
use crate::health::SlotHealth;
use crate::history::{Action, Caller, HistoryEntry, Outcome, Trigger};
use crate::notify::NoticeKind;
use crate::protocol::{ErrorKind, Response, RolloutAction, RolloutReply, RolloutStatus};
use crate::rollout::{judge, Next, Phase, Plan, Rollout, VerdictResult};
use crate::state_file::{CanaryState, DecisionSource, RouteState};

/// How often a running rollout's clock and counters are looked at.
pub(super) const ROLLOUT_TICK: Duration = Duration::from_millis(100);
/// How often the time left in a step is written to the state file: a crash
/// repeats at most this much of a hold.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);

/// A rollout's clock and analysis window; not persisted (the state file
/// keeps the time left in the step).
#[derive(Debug)]
pub(super) struct RolloutClock {
    /// When `hold_left_ms` was last brought up to date.
    since: Instant,
    window_start: Instant,
    canary_base: NodeCounters,
    active_base: NodeCounters,
    /// The active slot's p95 from the last window where it had enough
    /// requests to tell.
    baseline_p95: Option<Duration>,
    last_checkpoint: Instant,
}

impl Core {
    /// Whether any route's rollout still needs the clock.
    pub(super) fn rollouts_in_progress(&self) -> bool {
        self.routes
            .values()
            .any(|s| s.rollout.as_ref().is_some_and(Rollout::in_progress))
    }

    pub(super) fn rollout_command(
        &mut self,
        action: RolloutAction,
        route_name: &str,
        slot: Option<String>,
        caller: Caller,
        reason: Option<String>,
        now: Now,
    ) -> Response {
        let Some(route) = self.config.route(route_name).cloned() else {
            return self.no_such_route(route_name);
        };
        let before = self.routes[route_name].clone();
        let time = now.rfc3339();
        let decided = self.rollout_action(
            action,
            &route,
            &before,
            slot.as_deref(),
            reason.clone(),
            now,
        );
        let mut entry = HistoryEntry {
            uid: caller.uid(),
            from: Some(describe(&before)),
            reason,
            ..HistoryEntry::new(&time, caller.trigger(), route_name, Action::rollout(action))
        };
        let after = match decided {
            Ok(after) => after,
            Err((kind, message)) => {
                entry.result = Outcome::Refused(message.clone());
                self.record(entry);
                return Response::error(kind, message);
            }
        };
        if action == RolloutAction::Start {
            let clock = self.fresh_clock(route_name, &after, now);
            self.rollout_clocks.insert(route_name.to_string(), clock);
        }
        self.settle_rollout(route_name, &before, after.clone(), now);
        entry.to = Some(describe(&after));
        entry.generation = Some(self.generation);
        self.record(entry);
        Response::ok_with(&RolloutReply {
            route: route_name.to_string(),
            rollout: self.rollout_status(route_name, &after, now),
            active: after.active,
            canary: after.canary,
            warning: None,
        })
    }

    /// What `action` makes of the route's state `before`, or why it is
    /// refused.
    fn rollout_action(
        &mut self,
        action: RolloutAction,
        route: &switchyard_conf::RouteConfig,
        before: &RouteState,
        slot: Option<&str>,
        reason: Option<String>,
        now: Now,
    ) -> Result<RouteState, (ErrorKind, String)> {
        let route_name = route.name.as_str();
        let time = now.rfc3339();
        let mut after = before.clone();
        let running = before.rollout.as_ref().filter(|r| r.in_progress());
        let refused = |kind, message: String| Err::<(), _>((kind, message));
        let checked = match (action, running) {
            (RolloutAction::Start, Some(r)) => refused(
                ErrorKind::Refused,
                format!("a rollout of slot {} is in progress on route {route_name}; promote or abort it first", r.slot),
            ),
            (RolloutAction::Start, None) => {
                self.start_rollout(route, &mut after, slot, &time)
            }
            (_, None) => refused(
                ErrorKind::Refused,
                format!("route {route_name} has no rollout in progress"),
            ),
            (_, Some(r)) if slot.is_some_and(|s| s != r.slot) => refused(
                ErrorKind::Refused,
                format!(
                    "the rollout in progress on route {route_name} is of slot {}, not {}",
                    r.slot,
                    slot.unwrap_or_default()
                ),
            ),
            (RolloutAction::Pause, Some(r)) if r.phase == Phase::Paused => Ok(()),
            (RolloutAction::Pause, Some(_)) => {
                self.checkpoint(route_name, &mut after, now);
                if let Some(r) = after.rollout.as_mut() {
                    r.phase = Phase::Paused;
                }
                Ok(())
            }
            (RolloutAction::Resume, Some(_)) => {
                if let Some(clock) = self.rollout_clocks.get_mut(route_name) {
                    clock.since = now.at;
                }
                if let Some(r) = after.rollout.as_mut() {
                    r.phase = Phase::Running;
                }
                Ok(())
            }
            (RolloutAction::Promote, Some(_)) => {
                let why = reason
                    .unwrap_or_else(|| "promoted by admin".to_string());
                after = promote(route, before, why, &time);
                Ok(())
            }
            (RolloutAction::Abort, Some(_)) => {
                let why = reason
                    .unwrap_or_else(|| "aborted by admin".to_string());
                after = abort(before, why, &time);
                Ok(())
            }
        };
        checked.map(|()| after)
    }

    fn start_rollout(
        &self,
        route: &switchyard_conf::RouteConfig,
        state: &mut RouteState,
        slot: Option<&str>,
        now: &str,
    ) -> Result<(), (ErrorKind, String)> {
        let Some(config) = &route.rollout else {
            return Err((
                ErrorKind::Refused,
                format!(
                    "route {} has no [route.rollout]; add steps = [{{ weight = 10, hold = \"5m\" }}, ...] to its config",
                    route.name
                ),
            ));
        };
        let Some(slot) = slot else {
            return Err((
                ErrorKind::BadRequest,
                "rollout start needs the slot to roll out".into(),
            ));
        };
        let known = route.slots.keys().cloned().collect::<Vec<_>>().join(", ");
        if !route.slots.contains_key(slot) {
            return Err((
                ErrorKind::NotFound,
                format!(
                    "route {} has no slot {slot:?}; its slots are {known}",
                    route.name
                ),
            ));
        }
        if state.active == slot {
            return Err((
                ErrorKind::Refused,
                format!("slot {slot} is already active on route {}", route.name),
            ));
        }
        if self.health.slot_health(&route.name, slot) == SlotHealth::Unhealthy {
            return Err((
                ErrorKind::Unhealthy,
                format!(
                    "slot {slot} is unhealthy: {}",
                    self.slot_evidence(route, slot)
                ),
            ));
        }
        let rollout = Rollout::start(Plan::from_config(config), slot, now);
        set_weight(state, slot, rollout.weight());
        state.rollout = Some(rollout);
        state.source = DecisionSource::Rollout;
        state.changed_at = now.to_string();
        Ok(())
    }

    /// Publishes and saves a rollout's change of `route`'s state.
    fn settle_rollout(&mut self, route: &str, before: &RouteState, after: RouteState, now: Now) {
        if after.rollout.as_ref().is_none_or(|r| !r.in_progress()) {
            self.rollout_clocks.remove(route);
        }
        let changed_routing = after.active != before.active || after.canary != before.canary;
        self.routes.insert(route.to_string(), after);
        if changed_routing {
            self.publish(now);
        }
        self.save();
    }

    fn fresh_clock(&self, route: &str, state: &RouteState, now: Now) -> RolloutClock {
        let now = now.at;
        let (canary_base, active_base) = self.window_counters(route, state);
        RolloutClock {
            since: now,
            window_start: now,
            canary_base,
            active_base,
            baseline_p95: None,
            last_checkpoint: now,
        }
    }

    /// The canary's and the active slot's counters now, on every node.
    fn window_counters(&self, route: &str, state: &RouteState) -> (NodeCounters, NodeCounters) {
        let canary = state
            .rollout
            .as_ref()
            .map(|r| self.counters_by_node(route, &r.slot))
            .unwrap_or_default();
        (canary, self.counters_by_node(route, &state.active))
    }

    /// Brings the time left in the current step up to date.
    fn checkpoint(&mut self, route: &str, state: &mut RouteState, now: Now) {
        let now = now.at;
        let Some(rollout) = state.rollout.as_mut() else {
            return;
        };
        let Some(clock) = self.rollout_clocks.get_mut(route) else {
            return;
        };
        if rollout.phase == Phase::Running {
            let spent = now.duration_since(clock.since).as_millis() as u64;
            rollout.hold_left_ms = rollout.hold_left_ms.saturating_sub(spent);
        }
        clock.since = now;
    }

    /// The time left in the step as of `now`.
    fn hold_left(&self, route: &str, rollout: &Rollout, now: Now) -> Duration {
        let spent = match (rollout.phase, self.rollout_clocks.get(route)) {
            (Phase::Running, Some(clock)) => now.at.saturating_duration_since(clock.since),
            _ => Duration::ZERO,
        };
        Duration::from_millis(rollout.hold_left_ms).saturating_sub(spent)
    }

    /// Moves every rollout in progress along: judges a window that ended,
    /// aborts on a failing verdict, steps or promotes when a hold ran out,
    /// and checkpoints the time left.
    pub(super) fn tick_rollouts(&mut self, now: Now) {
        let routes: Vec<String> = self
            .routes
            .iter()
            .filter(|(_, s)| s.rollout.as_ref().is_some_and(Rollout::in_progress))
            .map(|(name, _)| name.clone())
            .collect();
        for route in routes {
            self.tick_rollout(&route, now);
        }
    }

    fn tick_rollout(&mut self, route_name: &str, now: Now) {
        let Some(route) = self.config.route(route_name).cloned() else {
            return;
        };
        let before = self.routes[route_name].clone();
        let Some(rollout) = before.rollout.clone() else {
            return;
        };
        if !self.rollout_clocks.contains_key(route_name) {
            // Restored from the state file: the step resumes with the time
            // it had left.
            let clock = self.fresh_clock(route_name, &before, now);
            self.rollout_clocks.insert(route_name.to_string(), clock);
        }
        let now_text = now.rfc3339();

        if let Some(verdict) = self.judge_window(route_name, &before, &rollout, now) {
            let mut after = before.clone();
            let failed = verdict.failed();
            let reason = verdict.reason.clone();
            if let Some(r) = after.rollout.as_mut() {
                r.verdict = Some(verdict);
            }
            if failed {
                let after = abort(&after, format!("analysis failed: {reason}"), &now_text);
                self.rollout_event(
                    route_name,
                    &before,
                    after,
                    Action::RolloutAbort,
                    reason,
                    now,
                );
                return;
            }
            self.routes.insert(route_name.to_string(), after);
        }

        self.follow_hold_clock(&route, &rollout, now);
    }

    /// Holds (checkpointing the time left now and then), steps, or
    /// promotes, as the hold clock of the current step says.
    fn follow_hold_clock(
        &mut self,
        route: &switchyard_conf::RouteConfig,
        rollout: &Rollout,
        now: Now,
    ) {
        let route_name = route.name.as_str();
        let before = self.routes[route_name].clone();
        let left = self.hold_left(route_name, rollout, now);
        match rollout.next(left) {
            Next::Hold => {
                let due = self.rollout_clocks.get(route_name).is_some_and(|c| {
                    now.at.saturating_duration_since(c.last_checkpoint) >= CHECKPOINT_EVERY
                });
                if due {
                    let mut after = before;
                    self.checkpoint(route_name, &mut after, now);
                    if let Some(clock) = self.rollout_clocks.get_mut(route_name) {
                        clock.last_checkpoint = now.at;
                    }
                    self.routes.insert(route_name.to_string(), after);
                    self.save();
                }
            }
            Next::Step { index, weight } => {
                let mut after = before.clone();
                if let Some(r) = after.rollout.as_mut() {
                    r.enter_step(index);
                }
                set_weight(&mut after, &rollout.slot, weight);
                after.source = DecisionSource::Rollout;
                after.changed_at = now.rfc3339();
                let step = after
                    .rollout
                    .as_ref()
                    .map(Rollout::describe_step)
                    .unwrap_or_default();
                let reason = format!("hold of {} done; now {step}", rollout.describe_step());
                let clock = self.fresh_clock(route_name, &after, now);
                self.rollout_clocks.insert(route_name.to_string(), clock);
                self.rollout_event(route_name, &before, after, Action::RolloutStep, reason, now);
            }
            Next::Promote => {
                let reason = format!("all {} steps done", rollout.plan.steps.len());
                let after = promote(route, &before, reason.clone(), &now.rfc3339());
                self.rollout_event(
                    route_name,
                    &before,
                    after,
                    Action::RolloutPromote,
                    reason,
                    now,
                );
            }
        }
    }

    /// The verdict of the window that just ended, if one did. A window
    /// with fewer canary requests than a verdict needs is extended until
    /// it has them.
    fn judge_window(
        &mut self,
        route: &str,
        state: &RouteState,
        rollout: &Rollout,
        now: Now,
    ) -> Option<crate::rollout::Verdict> {
        let window = rollout.plan.window();
        let clock = self.rollout_clocks.get(route)?;
        if now.at.saturating_duration_since(clock.window_start) < window {
            return None;
        }
        let (canary_now, active_now) = self.window_counters(route, state);
        let clock = self.rollout_clocks.get_mut(route)?;
        fill_bases(&mut clock.canary_base, &canary_now);
        fill_bases(&mut clock.active_base, &active_now);
        let canary = sum_since(&canary_now, &clock.canary_base);
        let active = sum_since(&active_now, &clock.active_base);
        if active.requests >= rollout.plan.min_requests {
            clock.baseline_p95 = active.quantile(0.95);
        }
        let verdict = judge(&rollout.plan, &canary, clock.baseline_p95);
        if verdict.result != VerdictResult::Waiting {
            clock.window_start = now.at;
            clock.canary_base = canary_now;
            clock.active_base = active_now;
        }
        Some(verdict)
    }

    /// Applies a change the rollout itself made, with its history entry.
    fn rollout_event(
        &mut self,
        route: &str,
        before: &RouteState,
        after: RouteState,
        action: Action,
        reason: String,
        now: Now,
    ) {
        self.log(
            Level::Info,
            Some(route),
            format!("{}: {reason}", action.as_str()),
        );
        let to = describe(&after);
        let slot = before.rollout.as_ref().map(|r| r.slot.clone());
        let kind = match action {
            Action::RolloutAbort => Some(NoticeKind::RolloutAborted),
            Action::RolloutPromote => Some(NoticeKind::RolloutPromoted),
            _ => None,
        };
        if let Some(kind) = kind {
            self.notify(kind, Some(route), (slot.as_deref(), None), &reason, now);
        }
        self.settle_rollout(route, before, after, now);
        let entry = HistoryEntry {
            from: Some(describe(before)),
            to: Some(to),
            reason: Some(reason),
            generation: Some(self.generation),
            ..HistoryEntry::new(&now.rfc3339(), Trigger::Rollout, route, action)
        };
        self.record(entry);
    }

    /// Ends, as aborted, every rollout whose canary something else changed
    /// (a `switch`, a `canary` command, a config edit, a fail-back): the
    /// rollout no longer steers the route, and `status` says why.
    pub(super) fn end_overridden_rollouts(&mut self, now: Now) {
        let time = now.rfc3339();
        let mut ended = Vec::new();
        for (route, state) in self.routes.iter_mut() {
            let Some(rollout) = state.rollout.as_mut().filter(|r| r.in_progress()) else {
                continue;
            };
            let expected = expected_canary(&rollout.slot, rollout.weight());
            if state.canary == expected && state.active != rollout.slot {
                continue;
            }
            let by = state.source.as_str();
            let outcome =
                format!("superseded: the route was changed outside the rollout (by {by})");
            rollout.end(Phase::Aborted, outcome.clone());
            ended.push((route.clone(), outcome));
        }
        for (route, outcome) in ended {
            self.rollout_clocks.remove(&route);
            self.log(
                Level::Warn,
                Some(&route),
                format!("rollout ended: {outcome}"),
            );
            let entry = HistoryEntry {
                reason: Some(outcome),
                generation: Some(self.generation),
                ..HistoryEntry::new(&time, Trigger::Rollout, &route, Action::RolloutAbort)
            };
            self.record(entry);
        }
    }

    /// The rollout as `status` shows it, with the time left as of now.
    pub(super) fn rollout_status(
        &self,
        route: &str,
        state: &RouteState,
        now: Now,
    ) -> Option<RolloutStatus> {
        let rollout = state.rollout.as_ref()?;
        Some(RolloutStatus::new(
            rollout,
            self.hold_left(route, rollout, now),
        ))
    }
}

fn expected_canary(slot: &str, weight: u8) -> Option<CanaryState> {
    (weight > 0).then(|| CanaryState {
        slot: slot.to_string(),
        weight,
    })
}

fn set_weight(state: &mut RouteState, slot: &str, weight: u8) {
    state.canary = expected_canary(slot, weight);
}

/// The rollout's slot becomes active; the old active slot becomes previous.
fn promote(
    route: &switchyard_conf::RouteConfig,
    state: &RouteState,
    reason: String,
    now: &str,
) -> RouteState {
    let mut rollout = state.rollout.clone();
    let slot = rollout.as_ref().map(|r| r.slot.clone()).unwrap_or_default();
    let mut next = decisions::switch(route, state, &slot, DecisionSource::Rollout, now)
        .unwrap_or_else(|_| state.clone());
    next.canary = None;
    if let Some(r) = rollout.as_mut() {
        r.end(Phase::Promoted, reason);
    }
    next.rollout = rollout;
    next
}

/// The canary's weight goes to 0; the active slot stays.
fn abort(state: &RouteState, reason: String, now: &str) -> RouteState {
    let mut next = state.clone();
    next.canary = None;
    next.source = DecisionSource::Rollout;
    next.changed_at = now.to_string();
    if let Some(r) = next.rollout.as_mut() {
        r.end(Phase::Aborted, reason);
    }
    next
}
