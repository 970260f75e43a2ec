//! The guard: after every switch (`switch`, `rollback`, a config edit of
//! `active`, a rollout's promotion) the new active slot is watched for the
//! route's `[route.guard] window`. A breach — 5xx above `max_error_rate`, or
//! a p95 more than `max_latency_increase` above the previous slot's — rolls
//! back at once when the previous slot is healthy; otherwise the route is
//! marked critical and stays. The counters are the data plane's per-slot
//! statistics, read here: nothing on the request path takes a lock for it.

use std::time::{Duration, Instant, SystemTime};

use super::{describe, Core, Level, Now, ReplyTo};
use crate::decisions;
use crate::health::SlotHealth;
use crate::history::{Action, Caller, HistoryEntry, Outcome, Trigger};
use crate::notify::NoticeKind;
use crate::protocol::{ConfirmReply, ErrorKind, GuardStatus, Response};
use crate::rollout::{judge_against, Limits, Verdict};
use crate::state_file::{DecisionSource, GuardState};
use crate::table::StatsSnapshot;

/// How often a guarded slot's counters are looked at: a look reads one
/// slot's counters, and at 20,000 requests a second every 50 ms is about a
/// thousand more requests on a failing release (bench: `--only-guard`).
pub(super) const GUARD_TICK: Duration = Duration::from_millis(50);

/// What the previous slot's p95 is called in a breach's reason.
const BASELINE: &str = "the previous slot's";

/// One route's watch after a switch.
#[derive(Debug, Clone)]
pub(super) struct Guard {
    /// The slot switched to.
    slot: String,
    /// The slot switched from: where a breach rolls back to.
    previous: Option<String>,
    /// The switch, on the wall clock (kept in the state file).
    started_at: SystemTime,
    /// The whole window, from the switch.
    window: Duration,
    /// When the window ends on this process's clock.
    ends: Instant,
    /// The slot's counters at the switch, on every node.
    base: super::cluster::NodeCounters,
    /// The previous slot's p95 over its time as active, up to the switch.
    baseline_p95: Option<Duration>,
    limits: Limits,
}

impl Guard {
    fn ends(&self) -> Instant {
        self.ends
    }

    /// What the state file keeps of it.
    fn saved(&self) -> GuardState {
        GuardState {
            slot: self.slot.clone(),
            previous: self.previous.clone(),
            started_at: super::rfc3339(self.started_at),
            ends_at: super::rfc3339(self.started_at + self.window),
            baseline_p95_ms: self.baseline_p95.map(|d| d.as_secs_f64() * 1000.0),
        }
    }

    /// The slot under watch.
    pub(super) fn slot(&self) -> &str {
        &self.slot
    }
}

impl Core {
    /// Watches `route`'s new active slot, switched to from `from` (with the
    /// previous slot's statistics `from_since` as its baseline), unless the
    /// route's guard is off.
    pub(super) fn start_guard(
        &mut self,
        route: &str,
        from: &str,
        from_since: StatsSnapshot,
        now: Now,
    ) {
        let Some(config) = self.config.route(route).map(|r| r.guard.clone()) else {
            return;
        };
        let slot = self.routes[route].active.clone();
        let before = self.slot_stats(route, from).since(&from_since);
        let baseline_p95 = (before.requests >= config.min_requests)
            .then(|| before.quantile(0.95))
            .flatten();
        let guard = Guard {
            previous: Some(from.to_string()),
            started_at: now.wall,
            window: config.window,
            ends: now.at + config.window,
            base: self.counters_by_node(route, &slot),
            baseline_p95,
            limits: Limits {
                max_error_rate: config.max_error_rate,
                max_latency_increase: config.max_latency_increase,
                min_requests: config.min_requests,
            },
            slot,
        };
        if config.enabled {
            self.set_guard(route, guard);
        } else {
            self.drop_guard(route);
        }
    }

    /// Starts watching with `guard`, in the core and in the route's saved
    /// state alike.
    fn set_guard(&mut self, route: &str, guard: Guard) {
        if let Some(state) = self.routes.get_mut(route) {
            state.guard = Some(guard.saved());
        }
        self.guards.insert(route.to_string(), guard);
    }

    /// Stops watching `route`, in the core and in its saved state alike.
    pub(super) fn drop_guard(&mut self, route: &str) {
        if let Some(state) = self.routes.get_mut(route) {
            state.guard = None;
        }
        self.guards.remove(route);
    }

    /// At start: goes on watching the guard windows the state file says
    /// were running, for the rest of their time, against the requests from
    /// now on. A window that ended while switchyard was stopped passes.
    pub(super) fn restore_guards(&mut self, now: Now) {
        self.restore_guards_of(|_| true, true, now);
    }

    /// Watches the guard windows that decisions taken from the cluster
    /// carry, for the rest of their time, so `status` shows them here too.
    /// Only the node that leads judges them (and passes a window that
    /// ended): the others keep what the cluster says.
    pub(super) fn restore_adopted_guards(&mut self, now: Now) {
        let adopting = std::mem::take(&mut self.adopting);
        self.restore_guards_of(|route| adopting.contains(route), false, now);
        self.adopting = adopting;
    }

    fn restore_guards_of(&mut self, wanted: impl Fn(&str) -> bool, pass_ended: bool, now: Now) {
        let saved: Vec<(String, GuardState)> = self
            .routes
            .iter()
            .filter(|(route, _)| wanted(route))
            .filter_map(|(route, state)| Some((route.clone(), state.guard.clone()?)))
            .collect();
        for (route, saved) in saved {
            if pass_ended {
                self.drop_guard(&route);
            } else {
                self.guards.remove(&route);
            }
            let Some(config) = self.config.route(&route).map(|r| r.guard.clone()) else {
                continue;
            };
            let times = (humantime::parse_rfc3339(&saved.started_at).ok())
                .zip(humantime::parse_rfc3339(&saved.ends_at).ok());
            let Some((started_at, ends_at)) = times else {
                let problem = format!(
                    "the saved guard window of {} has unreadable times ({:?}, {:?}); it is dropped",
                    saved.slot, saved.started_at, saved.ends_at
                );
                self.log(Level::Warn, Some(&route), problem);
                continue;
            };
            if self.routes[&route].active != saved.slot || !config.enabled {
                continue;
            }
            let guard = Guard {
                base: self.counters_by_node(&route, &saved.slot),
                slot: saved.slot,
                previous: saved.previous,
                started_at,
                window: ends_at.duration_since(started_at).unwrap_or_default(),
                ends: now.at + ends_at.duration_since(now.wall).unwrap_or_default(),
                baseline_p95: (saved.baseline_p95_ms)
                    .filter(|ms| ms.is_finite() && *ms >= 0.0)
                    .map(|ms| Duration::from_secs_f64(ms / 1000.0)),
                limits: Limits {
                    max_error_rate: config.max_error_rate,
                    max_latency_increase: config.max_latency_increase,
                    min_requests: config.min_requests,
                },
            };
            if now.wall >= ends_at && !pass_ended {
                continue;
            } else if now.wall >= ends_at {
                self.guard_passed(
                    &route,
                    &guard,
                    "the window ended while switchyard was stopped",
                    now,
                );
            } else {
                let left = humantime::format_duration(Duration::from_secs(
                    ends_at
                        .duration_since(now.wall)
                        .unwrap_or_default()
                        .as_secs(),
                ));
                let message = format!(
                    "guard on {} goes on for the {left} left of its window, judging requests from now on",
                    guard.slot
                );
                self.log(Level::Info, Some(&route), message);
                self.set_guard(&route, guard);
            }
        }
    }

    /// When the guards next need the clock.
    pub(super) fn guard_wakeup(&self) -> Option<Instant> {
        let next_look = self.last_guard_tick.unwrap_or(self.started) + GUARD_TICK;
        let first_end = self.guards.values().map(Guard::ends).min()?;
        Some(next_look.min(first_end))
    }

    /// Judges every guarded route: a breach rolls back (or marks the route
    /// critical), a window that ended passes.
    pub(super) fn tick_guards(&mut self, now: Now) {
        self.last_guard_tick = Some(now.at);
        let routes: Vec<String> = self.guards.keys().cloned().collect();
        for route in routes {
            let Some(guard) = self.guards.get(&route).cloned() else {
                continue;
            };
            if self
                .routes
                .get(&route)
                .is_none_or(|s| s.active != guard.slot)
            {
                // Switched again since (that switch has its own guard), or
                // the route is gone.
                self.drop_guard(&route);
                continue;
            }
            // Nodes that reported first (or restarted) since the switch
            // count from now on.
            let now_counters = self.counters_by_node(&route, &guard.slot);
            let guard = match self.guards.get_mut(&route) {
                Some(stored) => {
                    super::cluster::fill_bases(&mut stored.base, &now_counters);
                    stored.clone()
                }
                None => guard,
            };
            let verdict = self.judge_guard(&route, &guard);
            if verdict.failed() {
                self.drop_guard(&route);
                self.breach(&route, &guard, &verdict, now);
            } else if now.at >= guard.ends() {
                self.drop_guard(&route);
                self.guard_passed(&route, &guard, &verdict.reason, now);
            }
        }
    }

    fn judge_guard(&self, route: &str, guard: &Guard) -> Verdict {
        let seen = self.guard_counters(route, guard);
        judge_against(&guard.limits, &seen, guard.baseline_p95, BASELINE)
    }

    /// The guarded slot's requests since the switch (or the restart), on
    /// every node.
    fn guard_counters(&self, route: &str, guard: &Guard) -> StatsSnapshot {
        super::cluster::sum_since(&self.counters_by_node(route, &guard.slot), &guard.base)
    }

    /// Rolls back to the previous slot if it is healthy; else the route is
    /// critical and stays.
    fn breach(&mut self, route: &str, guard: &Guard, verdict: &Verdict, now: Now) {
        let evidence = self.guard_evidence(guard, verdict);
        let before = self.routes[route].clone();
        let time = now.rfc3339();
        let target = guard
            .previous
            .clone()
            .filter(|p| self.decision_health(route, p) == SlotHealth::Healthy);
        let rolled_back = match (&target, self.config.route(route)) {
            (Some(previous), Some(cfg)) => {
                decisions::switch(cfg, &before, previous, DecisionSource::Guard, &time).ok()
            }
            _ => None,
        };
        let Some(mut after) = rolled_back else {
            let why = match &guard.previous {
                Some(p) => format!(
                    "the previous slot {p} is {}",
                    self.decision_health(route, p).as_str()
                ),
                None => "there is no previous slot".to_string(),
            };
            let reason = format!(
                "guard breached on active slot {} ({evidence}) and {why}: still routing to it",
                guard.slot
            );
            self.mark_critical(route, Some(reason), now);
            self.save();
            self.record(HistoryEntry {
                from: Some(describe(&before)),
                reason: Some(evidence),
                result: Outcome::Failed(why),
                ..HistoryEntry::new(&time, Trigger::Guard, route, Action::GuardBreached)
            });
            return;
        };
        // Like a fail-back: the slot that failed is not a fail-back target
        // until a command says so.
        after.failed = Some(guard.slot.clone());
        self.routes.insert(route.to_string(), after.clone());
        self.publish(now);
        self.save();
        self.log(
            Level::Warn,
            Some(route),
            format!("guard rolled back: {evidence}"),
        );
        let slots = (Some(guard.slot.as_str()), Some(after.active.as_str()));
        self.notify(
            NoticeKind::GuardRollback,
            Some(route),
            slots,
            &evidence,
            now,
        );
        self.record(HistoryEntry {
            from: Some(describe(&before)),
            to: Some(describe(&after)),
            reason: Some(evidence),
            generation: Some(self.generation),
            ..HistoryEntry::new(&time, Trigger::Guard, route, Action::Rollback)
        });
    }

    fn guard_passed(&mut self, route: &str, guard: &Guard, why: &str, now: Now) {
        let reason = format!(
            "{} watched for {}: {why}",
            guard.slot,
            humantime::format_duration(guard.window),
        );
        self.log(Level::Info, Some(route), format!("guard passed: {reason}"));
        let slots = (Some(guard.slot.as_str()), None);
        self.notify(NoticeKind::GuardPassed, Some(route), slots, &reason, now);
        self.record(HistoryEntry {
            reason: Some(reason),
            ..HistoryEntry::new(&now.rfc3339(), Trigger::Guard, route, Action::GuardPassed)
        });
        self.save();
    }

    /// `confirm`: the route's guard ends now, as passed.
    pub(super) fn confirm(
        &mut self,
        reply: ReplyTo,
        route: &str,
        caller: Caller,
        reason: Option<String>,
        now: Now,
    ) {
        if self.config.route(route).is_none() {
            let response = self.no_such_route(route);
            return self.reply(reply, response);
        }
        let Some(status) = self.guard_status(route, now) else {
            let message =
                format!("route {route:?} has no guard window running; nothing to confirm");
            return self.reply(reply, Response::error(ErrorKind::Refused, message));
        };
        self.drop_guard(route);
        self.save();
        self.record(HistoryEntry {
            uid: caller.uid(),
            reason,
            ..HistoryEntry::new(&now.rfc3339(), caller.trigger(), route, Action::Confirm)
        });
        let confirmed = ConfirmReply {
            route: route.to_string(),
            guard: status,
        };
        self.reply(reply, Response::ok_with(&confirmed));
    }

    /// The route's guard as `status` shows it; `None` when none runs.
    pub(super) fn guard_status(&self, route: &str, now: Now) -> Option<GuardStatus> {
        let guard = self.guards.get(route)?;
        let seen = self.guard_counters(route, guard);
        let millis = |d: Duration| d.as_secs_f64() * 1000.0;
        Some(GuardStatus {
            slot: guard.slot.clone(),
            previous: guard.previous.clone(),
            requests: seen.requests,
            errors: seen.errors,
            error_rate: seen.error_rate(),
            p95_ms: seen.quantile(0.95).map(millis),
            baseline_p95_ms: guard.baseline_p95.map(millis),
            left_ms: guard.ends().saturating_duration_since(now.at).as_millis() as u64,
            window_ms: guard.window.as_millis() as u64,
            max_error_rate: guard.limits.max_error_rate,
            max_latency_increase: guard.limits.max_latency_increase,
            min_requests: guard.limits.min_requests,
        })
    }

    /// `guard on green: error rate 20.0 % (...) ...; 120 requests, 24 5xx, p95 3.1 ms
    /// (previous slot 2.9 ms); limits 5.0 % errors, p95 +50 %`.
    fn guard_evidence(&self, guard: &Guard, verdict: &Verdict) -> String {
        let ms = |v: Option<f64>| v.map_or("n/a".to_string(), |m| format!("{m:.1} ms"));
        format!(
            "slot {}: {}; {} requests, {:.1} % 5xx, p95 {} (previous slot {}); limits {:.1} % errors, p95 +{:.0} %",
            guard.slot,
            verdict.reason,
            verdict.canary_requests,
            verdict.canary_error_rate * 100.0,
            ms(verdict.canary_p95_ms),
            ms(verdict.baseline_p95_ms),
            guard.limits.max_error_rate * 100.0,
            guard.limits.max_latency_increase * 100.0
        )
    }
}
