//! What the control core owes for the health changes it counted: the routes
//! whose decisions must be looked at again, and a routing table to publish,
//! paced. Pure bookkeeping over instants the caller passes in.
//!
//! A route's decision (fail back, drop a canary, apply a held switch) is
//! published at once. A change that only moves a backend from one state to
//! another (which backends of a slot get traffic) is published at once
//! too, unless another publish happened less than [`HEALTH_PUBLISH_GAP`]
//! ago: then at the end of that gap, together with every other such change
//! meanwhile. A route with thousands of backends coming and going this way
//! costs at most one table rebuild per gap, not one per backend. A check
//! that changes no state publishes nothing.

use std::collections::BTreeSet;
use std::time::Duration;

use std::time::Instant;

use super::book::Observed;

/// The least time between two publishes made only because backends moved
/// into or out of `unhealthy`. Meanwhile a request may still be sent to a
/// backend just marked down; it fails to connect and is retried on the
/// next backend, as it would have been before the mark.
pub const HEALTH_PUBLISH_GAP: Duration = Duration::from_millis(100);

/// Checks the Controller hands the core in one go before it reacts and publishes:
/// bounded, so a flood of checks never keeps an admin command waiting long.
pub const CHECK_BATCH: usize = 1024;

#[derive(Debug, Default)]
pub struct HealthChanges {
    /// Routes with a slot whose health changed since they last reacted.
    react: BTreeSet<String>,
    /// Since when the published table is out of date, if it is.
    stale_since: Option<Instant>,
    last_publish: Option<Instant>,
}

impl HealthChanges {
    /// Notes a change of `route`'s backend, counted at `now`.
    pub fn note(&mut self, route: &str, observed: &Observed, now: Instant) {
        if observed.slot_changed && !self.react.contains(route) {
            self.react.insert(route.to_string());
        }
        if observed.transition.changes_traffic() && self.stale_since.is_none() {
            self.stale_since = Some(now);
        }
    }

    /// The routes that must react, each once however many changes it had.
    pub fn take_routes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.react).into_iter().collect()
    }

    /// A table was published at `at`: it holds every change noted so far.
    pub fn published(&mut self, at: Instant) {
        self.stale_since = None;
        self.last_publish = Some(at);
    }

    /// When to publish for the changes noted: `None` when the table is up
    /// to date, else as soon as they are noted but not within
    /// [`HEALTH_PUBLISH_GAP`] of the last publish.
    pub fn publish_due(&self) -> Option<Instant> {
        let stale = self.stale_since?;
        Some(match self.last_publish {
            Some(last) => stale.max(last + HEALTH_PUBLISH_GAP),
            None => stale,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{BackendState, Check, Transition};
    use BackendState::*;

    fn observed(from: BackendState, to: BackendState, slot_changed: bool) -> Observed {
        Observed {
            transition: Transition {
                from,
                to,
                check: Check::Pass {
                    status: None,
                    latency: Duration::ZERO,
                },
            },
            slot_changed,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn nothing_noted_owes_nothing() {
        let mut changes = HealthChanges::default();
        assert_eq!(changes.publish_due(), None);
        assert!(changes.take_routes().is_empty());
    }

    #[test]
    fn a_backend_that_turns_healthy_owes_a_publish_but_no_reaction() {
        let mut changes = HealthChanges::default();
        let t0 = Instant::now();
        // unknown → healthy: it may now get traffic (it joins a slot that
        // has healthy backends); here its slot's health did not change.
        changes.note("app", &observed(Unknown, Healthy, false), t0);
        assert_eq!(changes.publish_due(), Some(t0));
        assert!(changes.take_routes().is_empty());
    }

    #[test]
    fn a_backend_marked_down_long_after_the_last_publish_is_published_at_once() {
        let t0 = Instant::now();
        let mut changes = HealthChanges::default();
        changes.published(t0);
        let later = t0 + ms(500);
        changes.note("app", &observed(Healthy, Unhealthy, false), later);
        assert_eq!(changes.publish_due(), Some(later));
    }

    #[test]
    fn changes_within_the_gap_wait_for_its_end_and_go_out_together() {
        let t0 = Instant::now();
        let mut changes = HealthChanges::default();
        changes.published(t0);
        changes.note("app", &observed(Unknown, Unhealthy, false), t0 + ms(10));
        changes.note("app", &observed(Unhealthy, Healthy, false), t0 + ms(40));
        changes.note("api", &observed(Unknown, Unhealthy, false), t0 + ms(90));
        assert_eq!(changes.publish_due(), Some(t0 + HEALTH_PUBLISH_GAP));
        changes.published(t0 + HEALTH_PUBLISH_GAP);
        assert_eq!(changes.publish_due(), None, "all went out");
        // The next one waits for the next gap's end.
        changes.note("app", &observed(Unknown, Unhealthy, false), t0 + ms(120));
        assert_eq!(changes.publish_due(), Some(t0 + ms(200)));
    }

    #[test]
    fn any_publish_takes_the_noted_changes_along() {
        let t0 = Instant::now();
        let mut changes = HealthChanges::default();
        changes.note("app", &observed(Unknown, Unhealthy, false), t0);
        assert_eq!(changes.publish_due(), Some(t0), "never published: at once");
        // A command's publish (or a route's reaction) happened meanwhile.
        changes.published(t0 + ms(1));
        assert_eq!(changes.publish_due(), None);
    }

    #[test]
    fn a_slot_health_change_makes_its_route_react_once() {
        let t0 = Instant::now();
        let mut changes = HealthChanges::default();
        changes.note("app", &observed(Unknown, Unhealthy, true), t0);
        changes.note("app", &observed(Unhealthy, Healthy, true), t0);
        changes.note("api", &observed(Unknown, Healthy, true), t0);
        changes.note("web", &observed(Unknown, Unhealthy, false), t0);
        assert_eq!(changes.take_routes(), ["api", "app"]);
        assert!(changes.take_routes().is_empty());
    }
}
