//! Pure decisions over a route's runtime state: what a config edit, a
//! switch, a rollback or a canary change turns it into. No I/O: the
//! core calls these and then asks for the publish, the save and the record.

use switchyard_conf::RouteConfig;

use crate::state_file::{CanaryState, DecisionSource, RouteState};

/// Why a command cannot be applied to a route as it stands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("route {route:?} has no slot {slot:?}; its slots are {known}")]
    UnknownSlot {
        route: String,
        slot: String,
        known: String,
    },
    #[error("route {route:?} has no previous slot to roll back to")]
    NoPrevious { route: String },
    #[error("slot {slot:?} is the active slot of route {route:?}; a canary must be another slot")]
    CanaryIsActive { route: String, slot: String },
    #[error("canary weight {weight} is outside 0–100")]
    WeightOutOfRange { weight: u8 },
}

fn file_canary(route: &RouteConfig) -> Option<CanaryState> {
    route.canary.as_ref().map(|c| CanaryState {
        slot: c.slot.clone(),
        weight: c.weight,
    })
}

/// The runtime state of `route` after the config file was (re)loaded.
///
/// A value the file *changed* since `prior` was decided is an explicit
/// request and wins; an unchanged one leaves the runtime decision (a switch,
/// a canary set over the socket) in place. Slots the file no longer has are
/// dropped from the decision.
pub fn after_config_load(route: &RouteConfig, prior: Option<&RouteState>, now: &str) -> RouteState {
    let from_file = file_canary(route);
    let Some(prior) = prior else {
        return RouteState {
            failed: None,
            pending: None,
            cohort: 0,
            rollout: None,
            active: route.active.clone(),
            previous: None,
            canary: from_file.clone(),
            source: DecisionSource::Config,
            file_active: route.active.clone(),
            file_canary: from_file,
            changed_at: now.to_string(),
            maintenance: file_maintenance(route),
            file_maintenance: route.maintenance,
            guard: None,
            recent: Vec::new(),
        };
    };

    let mut next = prior.clone();
    let active_edited = prior.file_active != route.active;
    let active_gone = !route.slots.contains_key(&prior.active);
    if (active_edited || active_gone) && next.active != route.active {
        make_active(&mut next, &route.active, DecisionSource::Config, now);
        next.pending = None;
        next.failed = None;
    }
    if prior.file_canary != from_file {
        next.canary = from_file.clone();
        next.source = DecisionSource::Config;
        next.changed_at = now.to_string();
    }
    if prior.file_maintenance != route.maintenance {
        next.maintenance = file_maintenance(route);
        next.changed_at = now.to_string();
    }
    next.file_active = route.active.clone();
    next.file_canary = from_file;
    next.file_maintenance = route.maintenance;
    keep_consistent(route, next)
}

/// Keeps `prior`'s active slot while the config's new one is not healthy:
/// the edit waits in `pending` (see `health::apply_health`). Everything
/// else the edit changed (the canary) stands.
pub fn hold_switch(prior: &RouteState, mut edited: RouteState) -> RouteState {
    let wanted = std::mem::replace(&mut edited.active, prior.active.clone());
    edited.previous = prior.previous.clone();
    edited.failed = prior.failed.clone();
    edited.source = prior.source;
    edited.pending = Some(wanted);
    if edited
        .canary
        .as_ref()
        .is_some_and(|c| c.slot == edited.active)
    {
        edited.canary = None;
    }
    edited
}

/// Drops a previous or canary slot that no longer exists or that is the
/// active slot.
fn keep_consistent(route: &RouteConfig, mut state: RouteState) -> RouteState {
    let usable = |slot: &str| route.slots.contains_key(slot) && slot != state.active;
    if state.previous.as_deref().is_some_and(|p| !usable(p)) {
        state.previous = None;
    }
    if state.canary.as_ref().is_some_and(|c| !usable(&c.slot)) {
        state.canary = None;
    }
    if state.pending.as_deref().is_some_and(|p| !usable(p)) {
        state.pending = None;
    }
    let active = state.active.clone();
    state
        .recent
        .retain(|slot| route.slots.contains_key(slot) && *slot != active);
    if state
        .failed
        .as_deref()
        .is_some_and(|f| !route.slots.contains_key(f))
    {
        state.failed = None;
    }
    state
}

fn check_slot(route: &RouteConfig, slot: &str) -> Result<(), Refusal> {
    if route.slots.contains_key(slot) {
        return Ok(());
    }
    Err(Refusal::UnknownSlot {
        route: route.name.clone(),
        slot: slot.to_string(),
        known: route.slots.keys().cloned().collect::<Vec<_>>().join(", "),
    })
}

/// `slot` becomes active and the old active slot becomes previous. A canary
/// on the new active slot ends: its traffic is now all of it.
pub fn switch(
    route: &RouteConfig,
    state: &RouteState,
    slot: &str,
    source: DecisionSource,
    now: &str,
) -> Result<RouteState, Refusal> {
    check_slot(route, slot)?;
    if state.active == slot {
        return Ok(state.clone());
    }
    let mut next = state.clone();
    make_active(&mut next, slot, source, now);
    // An explicit switch supersedes a held config switch, and makes every
    // slot a fail-back target again.
    next.pending = None;
    next.failed = None;
    Ok(keep_consistent(route, next))
}

/// `slot` becomes the active slot and the old active slot the previous
/// one, decided by `source` at `now`; a canary on `slot` ends (its traffic
/// is now all of it), and so does a held switch to it. The one place a
/// route changes its active slot: commands, config edits, held switches
/// and fail-back all come here. Returns the slot that was active.
pub fn make_active(
    state: &mut RouteState,
    slot: &str,
    source: DecisionSource,
    now: &str,
) -> String {
    let from = std::mem::replace(&mut state.active, slot.to_string());
    note_was_active(&mut state.recent, &from, slot);
    state.previous = Some(from.clone());
    state.source = source;
    state.changed_at = now.to_string();
    if state.canary.as_ref().is_some_and(|c| c.slot == slot) {
        state.canary = None;
    }
    if state.pending.as_deref() == Some(slot) {
        state.pending = None;
    }
    from
}

/// Puts `was` first in `recent`, the slots active before, most recent
/// first; the new active slot `now_active` leaves it. Bounded: a route has
/// few slots, and a slot appears once.
fn note_was_active(recent: &mut Vec<String>, was: &str, now_active: &str) {
    const KEPT: usize = 16;
    recent.retain(|slot| slot != was && slot != now_active);
    if was != now_active {
        recent.insert(0, was.to_string());
    }
    recent.truncate(KEPT);
}

/// The route's maintenance as the config file sets it.
fn file_maintenance(route: &RouteConfig) -> Option<String> {
    route
        .maintenance
        .then(|| "maintenance = true in the config file".to_string())
}

/// Puts the route in maintenance (with why) or takes it out.
pub fn set_maintenance(
    state: &RouteState,
    on: bool,
    reason: Option<&str>,
    now: &str,
) -> RouteState {
    let mut next = state.clone();
    next.maintenance = on.then(|| reason.unwrap_or("switchyard maintenance").to_string());
    if next.maintenance.is_some() != state.maintenance.is_some() {
        next.source = DecisionSource::Admin;
        next.changed_at = now.to_string();
    } else if on {
        // Already on: the reason stays what it was.
        next.maintenance = state.maintenance.clone();
    }
    next
}

/// The previous slot becomes active again, and the active one previous.
pub fn rollback(route: &RouteConfig, state: &RouteState, now: &str) -> Result<RouteState, Refusal> {
    let previous = state.previous.clone().ok_or_else(|| Refusal::NoPrevious {
        route: route.name.clone(),
    })?;
    switch(route, state, &previous, DecisionSource::Admin, now)
}

/// Sends `weight` % of new requests to `slot`; weight 0 ends the canary.
pub fn set_canary(
    route: &RouteConfig,
    state: &RouteState,
    slot: &str,
    weight: u8,
    now: &str,
) -> Result<RouteState, Refusal> {
    check_slot(route, slot)?;
    if weight > 100 {
        return Err(Refusal::WeightOutOfRange { weight });
    }
    if state.active == slot {
        return Err(Refusal::CanaryIsActive {
            route: route.name.clone(),
            slot: slot.to_string(),
        });
    }
    let mut next = state.clone();
    next.canary = (weight > 0).then(|| CanaryState {
        slot: slot.to_string(),
        weight,
    });
    next.source = DecisionSource::Admin;
    next.changed_at = now.to_string();
    Ok(next)
}

/// Where a route's preview hosts lead: the newest slot that is not active.
/// That is the canary's slot while there is one, else a held config switch's
/// slot, else a slot that is neither active nor previous (a third slot
/// being readied), else the previous slot — with two slots, simply the
/// inactive one, which is where a pipeline deploys the next version.
pub fn preview_slot(route: &RouteConfig, state: &RouteState) -> Option<String> {
    if let Some(canary) = &state.canary {
        return Some(canary.slot.clone());
    }
    if let Some(pending) = &state.pending {
        return Some(pending.clone());
    }
    let inactive = || route.slots.keys().filter(|s| **s != state.active);
    inactive()
        .find(|s| state.previous.as_ref() != Some(*s))
        .or_else(|| inactive().next())
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use switchyard_conf::CanaryConfig;

    fn route(active: &str, canary: Option<(&str, u8)>) -> RouteConfig {
        let addr = "127.0.0.1:1".parse().unwrap();
        RouteConfig {
            name: "app".into(),
            hosts: vec![],
            path_prefix: "/".into(),
            active: active.into(),
            retries: 2,
            redirect_https: false,
            hsts_max_age: None,
            upgrades: vec!["websocket".into()],
            slots: BTreeMap::from([
                ("blue".to_string(), vec![addr]),
                ("green".to_string(), vec![addr]),
                ("v3".to_string(), vec![addr]),
            ]),
            backends: ["blue", "green", "v3"]
                .iter()
                .map(|slot| {
                    (
                        slot.to_string(),
                        vec![switchyard_conf::BackendSpec::Address(addr)],
                    )
                })
                .collect(),
            h2c_slots: Default::default(),
            https_slots: Default::default(),
            health: None,
            canary: canary.map(|(slot, weight)| CanaryConfig {
                slot: slot.into(),
                weight,
                sticky_cookie: "switchyard-slot".into(),
                sticky_key: switchyard_conf::StickyKey::ClientIp,
                sticky_max_age: switchyard_conf::DEFAULT_STICKY_MAX_AGE,
            }),
            preview: None,
            rollout: None,
            guard: Default::default(),
            failover: true,
            maintenance: false,
            error_pages: Default::default(),
            max_body_size: None,
            rate_limit: None,
            access: None,
        }
    }

    #[test]
    fn first_load_takes_the_file() {
        let s = after_config_load(&route("blue", Some(("green", 10))), None, "t0");
        assert_eq!(s.active, "blue");
        assert_eq!(s.previous, None);
        assert_eq!(
            s.canary,
            Some(CanaryState {
                slot: "green".into(),
                weight: 10
            })
        );
        assert_eq!(s.source, DecisionSource::Config);
    }

    #[test]
    fn an_unchanged_file_keeps_the_runtime_switch() {
        let cfg = route("blue", None);
        let loaded = after_config_load(&cfg, None, "t0");
        let switched = switch(&cfg, &loaded, "green", DecisionSource::Admin, "t1").unwrap();
        let reloaded = after_config_load(&cfg, Some(&switched), "t2");
        assert_eq!(reloaded.active, "green");
        assert_eq!(reloaded.previous.as_deref(), Some("blue"));
        assert_eq!(reloaded.source, DecisionSource::Admin);
    }

    #[test]
    fn an_edited_active_wins_over_the_runtime_switch() {
        let switched = switch(
            &route("blue", None),
            &after_config_load(&route("blue", None), None, "t0"),
            "green",
            DecisionSource::Admin,
            "t1",
        )
        .unwrap();
        let edited = after_config_load(&route("v3", None), Some(&switched), "t2");
        assert_eq!(edited.active, "v3");
        assert_eq!(edited.previous.as_deref(), Some("green"));
        assert_eq!(edited.source, DecisionSource::Config);
    }

    #[test]
    fn preview_goes_to_the_newest_inactive_slot() {
        let route = route("blue", None);
        let mut state = after_config_load(&route, None, "t0");
        // Three slots, nothing decided yet: the first that is not active.
        assert_eq!(preview_slot(&route, &state).as_deref(), Some("green"));
        state = switch(&route, &state, "green", DecisionSource::Admin, "t1").unwrap();
        // blue is the fail-back target; v3 is the one being readied.
        assert_eq!(preview_slot(&route, &state).as_deref(), Some("v3"));
        state = set_canary(&route, &state, "blue", 5, "t2").unwrap();
        assert_eq!(preview_slot(&route, &state).as_deref(), Some("blue"));
    }

    #[test]
    fn an_edited_canary_wins_and_an_unchanged_one_keeps_the_runtime_weight() {
        let cfg = route("blue", Some(("green", 10)));
        let loaded = after_config_load(&cfg, None, "t0");
        let raised = set_canary(&cfg, &loaded, "green", 40, "t1").unwrap();
        assert_eq!(
            after_config_load(&cfg, Some(&raised), "t2")
                .canary
                .unwrap()
                .weight,
            40
        );
        let edited = after_config_load(&route("blue", Some(("green", 20))), Some(&raised), "t3");
        assert_eq!(edited.canary.unwrap().weight, 20);
        let removed = after_config_load(&route("blue", None), Some(&raised), "t3");
        assert_eq!(removed.canary, None);
    }

    #[test]
    fn a_slot_removed_from_the_file_is_dropped_from_the_decision() {
        let cfg = route("blue", None);
        let loaded = after_config_load(&cfg, None, "t0");
        let on_v3 = switch(&cfg, &loaded, "v3", DecisionSource::Admin, "t1").unwrap();
        let mut without_v3 = route("blue", None);
        without_v3.slots.remove("v3");
        let reloaded = after_config_load(&without_v3, Some(&on_v3), "t2");
        assert_eq!(reloaded.active, "blue");
        assert_eq!(reloaded.previous, None, "v3 is gone, and blue is active");
    }

    #[test]
    fn a_held_config_switch_keeps_the_running_slot_and_remembers_the_wanted_one() {
        let running = after_config_load(&route("blue", None), None, "t0");
        let edited = after_config_load(&route("green", None), Some(&running), "t1");
        assert_eq!(edited.active, "green");
        let held = hold_switch(&running, edited);
        assert_eq!(held.active, "blue");
        assert_eq!(held.previous, running.previous);
        assert_eq!(held.pending.as_deref(), Some("green"));
        assert_eq!(held.file_active, "green", "the edit itself is remembered");
    }

    #[test]
    fn an_explicit_switch_clears_a_held_switch_and_the_fail_back_block() {
        let cfg = route("blue", None);
        let mut s = after_config_load(&cfg, None, "t0");
        s.pending = Some("green".into());
        s.failed = Some("green".into());
        let switched = switch(&cfg, &s, "green", DecisionSource::Admin, "t1").unwrap();
        assert_eq!((switched.pending, switched.failed), (None, None));
    }

    #[test]
    fn switch_rollback_and_canary_refusals() {
        let cfg = route("blue", None);
        let s = after_config_load(&cfg, None, "t0");
        assert!(matches!(
            switch(&cfg, &s, "nope", DecisionSource::Admin, "t"),
            Err(Refusal::UnknownSlot { .. })
        ));
        assert!(matches!(
            rollback(&cfg, &s, "t"),
            Err(Refusal::NoPrevious { .. })
        ));
        assert!(matches!(
            set_canary(&cfg, &s, "blue", 10, "t"),
            Err(Refusal::CanaryIsActive { .. })
        ));
        assert!(matches!(
            set_canary(&cfg, &s, "green", 101, "t"),
            Err(Refusal::WeightOutOfRange { .. })
        ));
    }

    #[test]
    fn switching_to_the_canary_ends_it_and_rollback_swaps_back() {
        let cfg = route("blue", Some(("green", 10)));
        let s = after_config_load(&cfg, None, "t0");
        let switched = switch(&cfg, &s, "green", DecisionSource::Admin, "t1").unwrap();
        assert_eq!(switched.canary, None);
        let back = rollback(&cfg, &switched, "t2").unwrap();
        assert_eq!(
            (back.active.as_str(), back.previous.as_deref()),
            ("blue", Some("green"))
        );
        let zero = set_canary(&cfg, &back, "green", 0, "t3").unwrap();
        assert_eq!(zero.canary, None);
    }
}
