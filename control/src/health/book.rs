//! Every configured backend's health, kept so that counting a check,
//! reading a backend's state and knowing a slot's health each take the
//! same time with ten backends on a route as with ten thousand: backends
//! are found by route, slot and address without building a key, and each
//! slot keeps the number of its backends in each state.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use switchyard_conf::Config;

use super::monitor::BackendKey;
use super::slot::StateCounts;
use super::{BackendHealth, BackendState, Check, SlotHealth, Thresholds, Transition};

/// Route → slot → the slot's backends.
#[derive(Debug, Default)]
pub struct HealthBook {
    routes: HashMap<Arc<str>, HashMap<Arc<str>, SlotBook>>,
}

#[derive(Debug, Default)]
struct SlotBook {
    backends: HashMap<SocketAddr, BackendHealth>,
    counts: StateCounts,
}

/// A check that changed its backend's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub transition: Transition,
    /// The backend's slot has another health than before the check: its
    /// route's decisions may change (`apply_health`).
    pub slot_changed: bool,
}

impl HealthBook {
    /// Tracks exactly the backends of `config`: one whose route, slot and
    /// address are unchanged keeps its state, a new one starts unknown
    /// (since `now`), a removed one is forgotten.
    pub fn sync(&mut self, config: &Config, now: SystemTime) {
        let mut old = std::mem::take(&mut self.routes);
        for route in &config.routes {
            let mut old_route = old.remove(route.name.as_str()).unwrap_or_default();
            let slots = self
                .routes
                .entry(Arc::from(route.name.as_str()))
                .or_default();
            for (slot, backends) in &route.slots {
                let mut old_slot = old_route.remove(slot.as_str()).unwrap_or_default();
                let book = slots.entry(Arc::from(slot.as_str())).or_default();
                for addr in backends {
                    if book.backends.contains_key(addr) {
                        continue; // listed twice
                    }
                    let health = old_slot
                        .backends
                        .remove(addr)
                        .unwrap_or_else(|| BackendHealth::new(now));
                    book.counts.add(health.state);
                    book.backends.insert(*addr, health);
                }
            }
        }
    }

    /// A configured backend's health.
    pub fn get(&self, route: &str, slot: &str, addr: SocketAddr) -> Option<&BackendHealth> {
        self.routes.get(route)?.get(slot)?.backends.get(&addr)
    }

    /// A backend's state; unknown for one not configured.
    pub fn state(&self, route: &str, slot: &str, addr: SocketAddr) -> BackendState {
        self.get(route, slot, addr)
            .map_or(BackendState::Unknown, |h| h.state)
    }

    /// The health of a slot's backends ([`super::slot_health`]); unknown
    /// for a slot without backends or not configured.
    pub fn slot_health(&self, route: &str, slot: &str) -> SlotHealth {
        self.routes
            .get(route)
            .and_then(|slots| slots.get(slot))
            .map_or(SlotHealth::Unknown, |book| book.counts.slot_health())
    }

    /// Counts one check of a configured backend; returns what changed when
    /// its state did. A check of a backend not configured is ignored.
    pub fn observe(
        &mut self,
        key: &BackendKey,
        check: Check,
        thresholds: Thresholds,
        now: SystemTime,
    ) -> Option<Observed> {
        let book = self.routes.get_mut(&*key.route)?.get_mut(&*key.slot)?;
        let health = book.backends.get_mut(&key.addr)?;
        let transition = health.observe(check, thresholds, now)?;
        let before = book.counts.slot_health();
        book.counts.moved(transition.from, transition.to);
        let slot_changed = book.counts.slot_health() != before;
        Some(Observed {
            transition,
            slot_changed,
        })
    }

    /// The backends tracked, in all.
    pub fn len(&self) -> usize {
        self.routes
            .values()
            .flat_map(HashMap::values)
            .map(|book| book.backends.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{slot_health, Failure};
    use std::time::Duration;

    const ONE: Thresholds = Thresholds { rise: 1, fall: 1 };

    fn config(blue: &[u16], green: &[u16]) -> Config {
        let list = |ports: &[u16]| {
            ports
                .iter()
                .map(|p| format!("\"127.0.0.1:{p}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n\n[[route]]\nname = \"app\"\nactive = \"blue\"\n[route.slots]\nblue = [{}]\ngreen = [{}]\n",
            list(blue),
            list(green)
        );
        switchyard_conf::parse("test.toml", &text, std::path::Path::new("/tmp")).unwrap()
    }

    fn key(slot: &str, port: u16) -> BackendKey {
        BackendKey {
            route: Arc::from("app"),
            slot: Arc::from(slot),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn pass() -> Check {
        Check::Pass {
            status: Some(200),
            latency: Duration::ZERO,
        }
    }

    fn fail() -> Check {
        Check::Fail {
            failure: Failure::Status(500),
            latency: Duration::ZERO,
        }
    }

    #[test]
    fn a_check_changes_its_backend_and_says_when_the_slot_changed() {
        let mut book = HealthBook::default();
        book.sync(&config(&[1, 2], &[3]), SystemTime::UNIX_EPOCH);
        let now = SystemTime::UNIX_EPOCH;
        assert_eq!(book.slot_health("app", "blue"), SlotHealth::Unknown);

        let first = book.observe(&key("blue", 1), fail(), ONE, now).unwrap();
        assert_eq!(first.transition.to, BackendState::Unhealthy);
        assert!(!first.slot_changed, "one of two unhealthy: still unknown");
        let second = book.observe(&key("blue", 2), fail(), ONE, now).unwrap();
        assert!(second.slot_changed);
        assert_eq!(book.slot_health("app", "blue"), SlotHealth::Unhealthy);
        assert!(
            book.observe(&key("blue", 2), fail(), ONE, now).is_none(),
            "no change, nothing to say"
        );
        let back = book.observe(&key("blue", 1), pass(), ONE, now).unwrap();
        assert!(back.slot_changed);
        assert_eq!(book.slot_health("app", "blue"), SlotHealth::Healthy);
        assert_eq!(book.state("app", "blue", addr(1)), BackendState::Healthy);
        assert_eq!(book.slot_health("app", "green"), SlotHealth::Unknown);
        assert!(book.observe(&key("nope", 1), fail(), ONE, now).is_none());
        assert_eq!(book.state("app", "nope", addr(1)), BackendState::Unknown);
        assert_eq!(book.slot_health("other", "blue"), SlotHealth::Unknown);
    }

    #[test]
    fn a_reload_keeps_the_state_of_unchanged_backends_only() {
        let mut book = HealthBook::default();
        let start = SystemTime::UNIX_EPOCH;
        book.sync(&config(&[1, 2], &[3]), start);
        book.observe(&key("blue", 1), pass(), ONE, start);
        book.observe(&key("blue", 2), fail(), ONE, start);
        book.observe(&key("green", 3), fail(), ONE, start);

        let later = start + Duration::from_secs(9);
        // 2 leaves blue, 4 joins it; 1 moves to green as well.
        book.sync(&config(&[1, 4], &[3, 1]), later);
        assert_eq!(book.len(), 4);
        assert_eq!(book.state("app", "blue", addr(1)), BackendState::Healthy);
        assert_eq!(book.get("app", "blue", addr(1)).unwrap().since, start);
        assert!(book.get("app", "blue", addr(2)).is_none());
        assert_eq!(book.state("app", "blue", addr(4)), BackendState::Unknown);
        assert_eq!(book.get("app", "blue", addr(4)).unwrap().since, later);
        assert_eq!(book.state("app", "green", addr(3)), BackendState::Unhealthy);
        assert_eq!(
            book.state("app", "green", addr(1)),
            BackendState::Unknown,
            "the same address in another slot is another backend"
        );
        assert_eq!(book.slot_health("app", "blue"), SlotHealth::Healthy);
        assert_eq!(book.slot_health("app", "green"), SlotHealth::Unknown);
    }

    #[test]
    fn slot_health_from_the_counts_matches_the_backends_after_any_checks() {
        let ports: Vec<u16> = (1..=5).collect();
        let mut book = HealthBook::default();
        book.sync(&config(&ports, &[9]), SystemTime::UNIX_EPOCH);
        let thresholds = Thresholds { rise: 2, fall: 2 };
        // A fixed pseudo-random walk of passes and failures.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let port = ports[(seed % 5) as usize];
            let check = match (seed >> 8) % 3 {
                0 => pass(),
                _ => fail(),
            };
            book.observe(
                &key("blue", port),
                check,
                thresholds,
                SystemTime::UNIX_EPOCH,
            );
            let states = ports.iter().map(|p| book.state("app", "blue", addr(*p)));
            assert_eq!(book.slot_health("app", "blue"), slot_health(states));
        }
    }
}
