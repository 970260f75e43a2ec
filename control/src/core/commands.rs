//! Admin commands: each is answered by one [`super::Effect::Reply`], now or
//! (a waiting `switch` or `drain`) later.

use switchyard_conf::RouteConfig;

use super::parked::ParkedSwitch;
use super::waits::{parse_wait, DEFAULT_SWITCH_WAIT};
use super::{describe, Core, Effect, Level, Now, ReloadTrigger, ReplyTo};
use crate::decisions::{self, Refusal};
use crate::health::SlotHealth;
use crate::history::{Action, Caller, HistoryEntry, Outcome};
use crate::protocol::{ChangeReply, ErrorKind, Request, Response};
use crate::state_file::{DecisionSource, RouteState};

impl Core {
    pub(super) fn command(&mut self, reply: ReplyTo, request: Request, caller: Caller, now: Now) {
        let response = match request {
            Request::Status { route } => self.status(route.as_deref(), now),
            Request::History { route, limit } => {
                // The history is a file: the shell reads it.
                self.effects.push(Effect::ReplyHistory {
                    to: reply,
                    route,
                    limit: limit.unwrap_or(20),
                });
                return;
            }
            Request::Maintenance {
                route, on, reason, ..
            } => {
                let action = if on {
                    Action::MaintenanceOn
                } else {
                    Action::MaintenanceOff
                };
                let why = reason.clone();
                self.change(&route, action, caller, reason, now, |_, state, at| {
                    Ok(decisions::set_maintenance(state, on, why.as_deref(), at))
                })
            }
            Request::Confirm { route, reason } => {
                return self.confirm(reply, &route, caller, reason, now);
            }
            Request::Reload {} => {
                let trigger = ReloadTrigger::Admin {
                    reply,
                    uid: caller.uid(),
                };
                self.effects.push(Effect::ReadConfig(trigger));
                return;
            }
            Request::Drain {
                route,
                slot,
                wait,
                timeout,
            } => {
                let wait = wait.then_some(timeout.as_deref());
                return self.drain(reply, &route, &slot, wait, now);
            }
            switch @ Request::Switch { .. } => return self.switch(reply, switch, caller, now),
            Request::Rollback {
                route,
                reason,
                force,
                ..
            } => match self.refuse_rollback(&route, caller, &reason, force, now) {
                Some(refusal) => refusal,
                None => self.change(
                    &route,
                    Action::Rollback,
                    caller,
                    reason,
                    now,
                    decisions::rollback,
                ),
            },
            Request::Rollout {
                action,
                route,
                slot,
                reason,
            } => match self.config.route(&route) {
                None => self.no_such_route(&route),
                Some(_) => self.rollout_command(action, &route, slot, caller, reason, now),
            },
            Request::Canary {
                route,
                slot,
                weight,
                reason,
                ..
            } => self.change(
                &route,
                Action::Canary,
                caller,
                reason,
                now,
                |cfg, state, at| decisions::set_canary(cfg, state, &slot, weight, at),
            ),
        };
        self.reply(reply, response);
    }

    /// `switch`: at once when the slot is healthy (or forced), else parked
    /// until it is or the wait is over.
    fn switch(&mut self, reply: ReplyTo, request: Request, caller: Caller, now: Now) {
        let Request::Switch {
            route,
            slot,
            timeout,
            force,
            reason,
            no_guard,
            ..
        } = request
        else {
            unreachable!("switch() is given switches");
        };
        let waited = match parse_wait(timeout.as_deref(), DEFAULT_SWITCH_WAIT) {
            Ok(waited) => waited,
            Err(message) => {
                let refusal = Response::error(ErrorKind::BadRequest, message);
                return self.reply(reply, refusal);
            }
        };
        if !force && self.must_wait(&route, &slot) {
            return self.park_switch(ParkedSwitch {
                reply,
                route,
                slot,
                caller,
                reason,
                waited,
                deadline: now.at + waited,
            });
        }
        if no_guard {
            self.skip_guard.insert(route.clone());
        }
        let response = self.change(
            &route,
            Action::Switch,
            caller,
            reason,
            now,
            |cfg, state, at| decisions::switch(cfg, state, &slot, DecisionSource::Admin, at),
        );
        self.reply(reply, response);
    }

    /// A `switch` waits when its slot exists, is not active, and is not
    /// healthy yet.
    fn must_wait(&self, route: &str, slot: &str) -> bool {
        self.config.route(route).is_some_and(|cfg| {
            cfg.slots.contains_key(slot)
                && self.routes.get(route).is_some_and(|s| s.active != slot)
                && self.health.slot_health(route, slot) != SlotHealth::Healthy
        })
    }

    /// A rollback would put traffic on a previous slot whose every backend
    /// is known unhealthy (its version was stopped after the deploy, say):
    /// refused, like a `switch` to it, unless forced. A slot not checked
    /// yet is not refused: nothing says it is down.
    fn refuse_rollback(
        &mut self,
        route: &str,
        caller: Caller,
        reason: &Option<String>,
        force: bool,
        now: Now,
    ) -> Option<Response> {
        let cfg = self.config.route(route).filter(|_| !force)?;
        let state = self.routes.get(route)?;
        let previous = state.previous.as_deref()?;
        if self.health.slot_health(route, previous) != SlotHealth::Unhealthy {
            return None;
        }
        let message = format!(
            "the previous slot {previous:?} of route {route:?} is unhealthy ({}); nothing changed (--force rolls back anyway)",
            self.slot_evidence(cfg, previous)
        );
        let entry = HistoryEntry {
            uid: caller.uid(),
            from: Some(describe(state)),
            reason: reason.clone(),
            result: Outcome::Refused(message.clone()),
            ..HistoryEntry::new(&now.rfc3339(), caller.trigger(), route, Action::Rollback)
        };
        self.record(entry);
        self.log(Level::Warn, Some(route), message.clone());
        Some(Response::error(ErrorKind::Unhealthy, message))
    }

    /// Applies one admin decision to one route: publish, save, record.
    pub(super) fn change(
        &mut self,
        route_name: &str,
        action: Action,
        caller: Caller,
        reason: Option<String>,
        now: Now,
        decide: impl FnOnce(&RouteConfig, &RouteState, &str) -> Result<RouteState, Refusal>,
    ) -> Response {
        let (Some(route), Some(before)) =
            (self.config.route(route_name), self.routes.get(route_name))
        else {
            return self.no_such_route(route_name);
        };
        let before = before.clone();
        let time = now.rfc3339();
        let mut entry = HistoryEntry {
            uid: caller.uid(),
            from: Some(describe(&before)),
            reason,
            ..HistoryEntry::new(&time, caller.trigger(), route_name, action)
        };
        let after = match decide(route, &before, &time) {
            Ok(after) => after,
            Err(refusal) => {
                entry.result = Outcome::Refused(refusal.to_string());
                self.record(entry);
                let kind = match refusal {
                    Refusal::UnknownSlot { .. } => ErrorKind::NotFound,
                    Refusal::WeightOutOfRange { .. } => ErrorKind::BadRequest,
                    _ => ErrorKind::Refused,
                };
                return Response::error(kind, refusal.to_string());
            }
        };
        let changed = after != before;
        if changed {
            self.routes.insert(route_name.to_string(), after.clone());
            self.publish(now);
            self.save();
        }
        entry.to = Some(describe(&after));
        entry.generation = Some(self.generation);
        entry.result = if changed {
            Outcome::Ok
        } else {
            Outcome::NoChange
        };
        self.log(
            Level::Info,
            Some(route_name),
            format!(
                "route changed by {}: {} → {} (generation {})",
                action.as_str(),
                entry.from.as_deref().unwrap_or_default(),
                entry.to.as_deref().unwrap_or_default(),
                self.generation
            ),
        );
        self.record(entry);
        Response::ok_with(&ChangeReply {
            route: route_name.to_string(),
            changed,
            generation: self.generation,
            active: after.active,
            previous: after.previous,
            canary: after.canary,
            warning: None,
        })
    }

    pub(super) fn no_such_route(&self, name: &str) -> Response {
        let known: Vec<&str> = self.config.routes.iter().map(|r| r.name.as_str()).collect();
        Response::error(
            ErrorKind::NotFound,
            format!("no route {name:?}; routes are {}", known.join(", ")),
        )
    }
}
