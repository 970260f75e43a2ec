//! Commands that wait: a `switch` to a slot that is not healthy yet, and a
//! `drain --wait` for a slot that still has requests in flight. Each has a
//! deadline; each is answered exactly once — when its condition holds, or
//! refused when its time is up.

use std::time::{Duration, Instant};

use super::{Core, Level, Now, ReplyTo};
use crate::decisions;
use crate::health::SlotHealth;
use crate::history::{Action, Caller, HistoryEntry, Outcome};
use crate::protocol::{DrainReply, ErrorKind, Response};
use crate::state_file::DecisionSource;

/// How often waiting drains look at the counters, and how long a slot must
/// stay empty to count as drained (two polls): a request that picked the
/// slot from the table a moment before a switch is counted within
/// microseconds, well inside this.
pub(super) const DRAIN_POLL: Duration = Duration::from_millis(50);

/// A `switch` waiting for its slot to turn healthy.
#[derive(Debug)]
pub(super) struct ParkedSwitch {
    pub reply: ReplyTo,
    pub route: String,
    pub slot: String,
    pub caller: Caller,
    pub reason: Option<String>,
    pub waited: Duration,
    pub deadline: Instant,
}

/// A `drain --wait` waiting for its slot to have nothing in flight.
#[derive(Debug)]
pub(super) struct ParkedDrain {
    pub reply: ReplyTo,
    pub route: String,
    pub slot: String,
    pub waited: Duration,
    pub deadline: Instant,
    /// Polls in a row that found the slot empty.
    pub empty_polls: u32,
    pub next_poll: Instant,
}

#[derive(Debug, Default)]
pub(super) struct Parked {
    pub switches: Vec<ParkedSwitch>,
    pub drains: Vec<ParkedDrain>,
}

impl Parked {
    pub fn next_wakeup(&self) -> Option<Instant> {
        let switches = self.switches.iter().map(|s| s.deadline);
        let drains = self.drains.iter().map(|d| d.next_poll.min(d.deadline));
        switches.chain(drains).min()
    }

    pub fn deadlines(&self) -> impl Iterator<Item = Instant> + '_ {
        let switches = self.switches.iter().map(|s| s.deadline);
        switches.chain(self.drains.iter().map(|d| d.deadline))
    }
}

impl Core {
    /// Parks a `switch` to a slot that is not healthy yet.
    pub(super) fn park_switch(&mut self, switch: ParkedSwitch) {
        self.log(
            Level::Info,
            Some(&switch.route),
            format!("switch waits for the slot to turn healthy: {}", switch.slot),
        );
        self.parked.switches.push(switch);
    }

    /// Runs the parked switches whose slot is healthy now.
    pub(super) fn release_parked(&mut self, now: Now) {
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.parked.switches)
            .into_iter()
            .partition(|w| {
                self.config.route(&w.route).is_none()
                    || self.health.slot_health(&w.route, &w.slot) == SlotHealth::Healthy
            });
        self.parked.switches = waiting;
        for waiter in ready {
            let slot = waiter.slot.clone();
            let response = self.change(
                &waiter.route,
                Action::Switch,
                waiter.caller,
                waiter.reason,
                now,
                |cfg, state, at| decisions::switch(cfg, state, &slot, DecisionSource::Admin, at),
            );
            self.reply(waiter.reply, response);
        }
    }

    /// Refuses the parked switches whose time is up; traffic stays.
    pub(super) fn expire_parked(&mut self, now: Now) {
        let (expired, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.parked.switches)
            .into_iter()
            .partition(|w| w.deadline <= now.at);
        self.parked.switches = waiting;
        for waiter in expired {
            let evidence = match self.config.route(&waiter.route) {
                Some(cfg) => format!(
                    "it is {} ({})",
                    self.health
                        .slot_health(&waiter.route, &waiter.slot)
                        .as_str(),
                    self.slot_evidence(cfg, &waiter.slot)
                ),
                None => "its route is gone".into(),
            };
            let message = format!(
                "slot {:?} of route {:?} did not turn healthy within {}: {evidence}; nothing changed (--force switches anyway)",
                waiter.slot,
                waiter.route,
                humantime::format_duration(waiter.waited)
            );
            self.record(HistoryEntry {
                uid: waiter.caller.uid(),
                from: self.routes.get(&waiter.route).map(super::describe),
                reason: waiter.reason.clone(),
                result: Outcome::Refused(message.clone()),
                ..HistoryEntry::new(
                    &now.rfc3339(),
                    waiter.caller.trigger(),
                    &waiter.route,
                    Action::Switch,
                )
            });
            self.log(Level::Warn, Some(&waiter.route), message.clone());
            self.reply(waiter.reply, Response::error(ErrorKind::Unhealthy, message));
        }
    }

    /// A slot's load, or why there is no such slot.
    pub(super) fn drain_load(&self, route: &str, slot: &str) -> Result<DrainReply, Response> {
        let Some(cfg) = self.config.route(route) else {
            return Err(self.no_such_route(route));
        };
        if !cfg.slots.contains_key(slot) {
            let known: Vec<&str> = cfg.slots.keys().map(String::as_str).collect();
            return Err(Response::error(
                ErrorKind::NotFound,
                format!(
                    "route {route:?} has no slot {slot:?}; its slots are {}",
                    known.join(", ")
                ),
            ));
        }
        let state = &self.routes[route];
        let load = self.loads.get(route).and_then(|l| l.get(slot));
        Ok(DrainReply {
            route: route.to_string(),
            slot: slot.to_string(),
            in_flight: load.map_or(0, |l| l.requests()),
            upgraded: load.map_or(0, |l| l.upgraded()),
            serving: super::serves(state, slot),
        })
    }

    /// `drain`: the slot's load now, or with `wait`, once it is empty.
    pub(super) fn drain(
        &mut self,
        reply: ReplyTo,
        route: &str,
        slot: &str,
        wait: Option<Option<&str>>,
        now: Now,
    ) {
        let load = match self.drain_load(route, slot) {
            Ok(load) => load,
            Err(response) => return self.reply(reply, response),
        };
        let Some(timeout) = wait else {
            return self.reply(reply, Response::ok_with(&load));
        };
        let waited = match super::waits::parse_wait(timeout, super::waits::DEFAULT_DRAIN_WAIT) {
            Ok(waited) => waited,
            Err(message) => {
                return self.reply(reply, Response::error(ErrorKind::BadRequest, message))
            }
        };
        if load.serving {
            let message = format!("slot {slot:?} of route {route:?} still gets new traffic (active or canary): it will not drain; switch away first");
            return self.reply(reply, Response::error(ErrorKind::Refused, message));
        }
        self.parked.drains.push(ParkedDrain {
            reply,
            route: route.to_string(),
            slot: slot.to_string(),
            waited,
            deadline: now.at + waited,
            empty_polls: 0,
            next_poll: now.at,
        });
        self.poll_drains(now);
    }

    /// Answers the waiting drains whose slot has stayed empty for two polls,
    /// and refuses those whose time is up.
    pub(super) fn poll_drains(&mut self, now: Now) {
        for mut waiter in std::mem::take(&mut self.parked.drains) {
            if now.at < waiter.next_poll && now.at < waiter.deadline {
                self.parked.drains.push(waiter);
                continue;
            }
            let load = match self.drain_load(&waiter.route, &waiter.slot) {
                Ok(load) => load,
                Err(response) => {
                    self.reply(waiter.reply, response);
                    continue;
                }
            };
            waiter.empty_polls = if load.is_empty() {
                waiter.empty_polls + 1
            } else {
                0
            };
            if waiter.empty_polls >= 2 {
                self.reply(waiter.reply, Response::ok_with(&load));
            } else if now.at >= waiter.deadline {
                let message = format!(
                    "slot {:?} of route {:?} still has {} requests and {} upgraded connections in flight after {}",
                    waiter.slot,
                    waiter.route,
                    load.in_flight,
                    load.upgraded,
                    humantime::format_duration(waiter.waited)
                );
                self.reply(waiter.reply, Response::error(ErrorKind::Refused, message));
            } else {
                waiter.next_poll = now.at + DRAIN_POLL;
                self.parked.drains.push(waiter);
            }
        }
    }
}
