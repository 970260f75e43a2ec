//! What must hold after every event, checked in debug builds (tests, and
//! anyone running a debug binary): a violation is a bug in the core, and
//! panics with the state that broke it.

use super::waits::MAX_WAIT;
use super::{Core, Now};

impl Core {
    pub(super) fn check_invariants(&self, now: Now) {
        if cfg!(debug_assertions) {
            if let Err(broken) = self.invariants(now) {
                panic!("control core invariant broken: {broken}");
            }
        }
    }

    /// The first invariant that does not hold, said in a sentence.
    pub(super) fn invariants(&self, now: Now) -> Result<(), String> {
        let configured: Vec<&str> = self.config.routes.iter().map(|r| r.name.as_str()).collect();
        let decided: Vec<&str> = self.routes.keys().map(String::as_str).collect();
        let mut sorted = configured.clone();
        sorted.sort_unstable();
        if sorted != decided {
            return Err(format!(
                "routes decided {decided:?} differ from the config's {configured:?}"
            ));
        }
        for route in &self.config.routes {
            let state = &self.routes[&route.name];
            let name = &route.name;
            let exists = |slot: &str| route.slots.contains_key(slot);
            if !exists(&state.active) {
                return Err(format!(
                    "route {name}: active slot {} does not exist",
                    state.active
                ));
            }
            if let Some(previous) = &state.previous {
                if previous == &state.active || !exists(previous) {
                    return Err(format!(
                        "route {name}: previous slot {previous} is active or gone"
                    ));
                }
            }
            if let Some(canary) = &state.canary {
                if canary.slot == state.active || !exists(&canary.slot) {
                    return Err(format!(
                        "route {name}: canary slot {} is active or gone",
                        canary.slot
                    ));
                }
                if canary.weight > 100 {
                    return Err(format!(
                        "route {name}: canary weight {} above 100",
                        canary.weight
                    ));
                }
            }
            let saved_guard = state.guard.as_ref().map(|g| g.slot.as_str());
            let running_guard = self.guards.get(name).map(|g| g.slot());
            if saved_guard != running_guard {
                return Err(format!(
                    "route {name}: the state file's guard on {saved_guard:?} is not the running one on {running_guard:?}"
                ));
            }
            if let Some(pending) = &state.pending {
                if pending == &state.active || !exists(pending) {
                    return Err(format!(
                        "route {name}: held switch to {pending} is active or gone"
                    ));
                }
            }
            if let Some(rollout) = state.rollout.as_ref().filter(|r| r.in_progress()) {
                let steering = state.canary.as_ref().is_none_or(|c| c.slot == rollout.slot);
                if !steering || rollout.slot == state.active {
                    return Err(format!(
                        "route {name}: rollout of {} in progress but not steering",
                        rollout.slot
                    ));
                }
            }
        }
        if let Some(late) = self.parked.deadlines().find(|d| *d > now.at + MAX_WAIT) {
            return Err(format!(
                "a parked command waits {:?} past the longest wait",
                late - now.at
            ));
        }
        if self
            .rollout_clocks
            .keys()
            .any(|r| !self.routes.contains_key(r))
        {
            return Err("a rollout clock runs for a route that is gone".into());
        }
        Ok(())
    }
}
