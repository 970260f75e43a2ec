//! Building and publishing the routing table from the config, the runtime
//! decisions and the health of every backend.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use switchyard_conf::{RateKey, RouteConfig};

use super::{serves, Core, Effect, Level, Now};
use crate::decisions;
use crate::health::{BackendState, SlotHealth};
use crate::state_file::{DecisionSource, RouteState};
use crate::table::{
    Access, AssignmentSpec, HttpsSpec, LimitKey, LimitSpec, RateLimit, RouteSpec, RoutingTable,
    SlotLoad, StatsSnapshot, Timeouts,
};
use crate::tls_client::BackendTls;

/// What the last publish saw of each route.
#[derive(Debug, Default)]
pub(super) struct Published {
    /// Route → its active slot, to count switches and renew pools.
    active: BTreeMap<String, String>,
    /// Route → its canary slot, to renew cohorts.
    canary: BTreeMap<String, Option<String>>,
    /// (route, who decided) → changes of the active slot since start.
    pub switches: BTreeMap<(String, String), u64>,
    /// Route → how many times its active slot changed: part of its pool
    /// keys, so a switch starts every slot's pool afresh and nothing else
    /// does (a health change, a canary weight, a reload of another route).
    pool_epochs: BTreeMap<String, u64>,
    /// Route → its active slot's counters when it became active: what a
    /// guard's baseline is measured from.
    active_since: BTreeMap<String, StatsSnapshot>,
}

impl Core {
    /// Builds the next table and makes it the one new requests see.
    pub(super) fn publish(&mut self, now: Now) {
        self.end_overridden_rollouts(now);
        self.generation += 1;
        // Built from the health as it is now: no health publish is owed.
        self.health_changes.published(now.at);
        if self.renew_cohorts(now) {
            // Cookies handed out from now on name the new cohort: it must
            // survive a restart.
            self.save();
        }
        self.note_switches(now);
        self.update_loads();
        self.update_rate_limits();
        self.update_backend_tls();
        let specs = self
            .config
            .routes
            .iter()
            .map(|route| self.route_spec(route))
            .collect();
        let not_found_page = (self.config.server.error_pages.get(&404))
            .map(|page| bytes::Bytes::from_owner(page.clone()));
        let table = RoutingTable::build(self.generation, specs)
            .with_timeouts(self.timeouts())
            .with_not_found_page(not_found_page)
            .with_max_header_size(self.config.server.max_header_size as usize)
            .with_trusted_proxies(self.config.server.trusted_proxies.clone());
        self.effects.push(Effect::Publish(Arc::new(table)));
    }

    /// Every change of a route's active slot goes through here, with the
    /// source that decided it: counted once, by that source, given a new
    /// pool epoch, and watched by a guard unless health or a guard made it
    /// (or the command said `no_guard`).
    fn note_switches(&mut self, now: Now) {
        let mut switched = Vec::new();
        for (route, state) in &self.routes {
            let before = self
                .published
                .active
                .insert(route.clone(), state.active.clone());
            let Some(from) = before.filter(|b| *b != state.active) else {
                continue;
            };
            let by = (route.clone(), state.source.as_str().to_string());
            *self.published.switches.entry(by).or_default() += 1;
            *self.published.pool_epochs.entry(route.clone()).or_default() += 1;
            switched.push((route.clone(), from, state.source));
        }
        for (route, from, source) in switched {
            let now_active = self.active_stats(&route);
            let from_since = self
                .published
                .active_since
                .insert(route.clone(), now_active)
                .unwrap_or_default();
            if self.adopting(&route) {
                // The node that decided started (or not) the guard, and
                // the decision carries it.
                continue;
            }
            let unguarded = matches!(source, DecisionSource::Failback | DecisionSource::Guard);
            if unguarded || self.skip_guard.remove(&route) {
                self.drop_guard(&route);
            } else {
                self.start_guard(&route, &from, from_since, now);
            }
        }
        self.skip_guard.clear();
    }

    /// The route's active slot's counters now.
    fn active_stats(&self, route: &str) -> StatsSnapshot {
        self.slot_stats(route, &self.routes[route].active)
    }

    /// Every configured slot's counters now, as `(route, slot, counters)`.
    pub fn slot_counters(&self) -> Vec<(String, String, StatsSnapshot)> {
        self.config
            .routes
            .iter()
            .flat_map(|route| {
                route.slots.keys().map(|slot| {
                    let stats = self.slot_stats(&route.name, slot);
                    (route.name.clone(), slot.clone(), stats)
                })
            })
            .collect()
    }

    /// A slot's counters now (zero for a slot not published yet).
    pub(super) fn slot_stats(&self, route: &str, slot: &str) -> StatsSnapshot {
        self.loads
            .get(route)
            .and_then(|l| l.get(slot))
            .map(|l| l.stats.snapshot())
            .unwrap_or_default()
    }

    /// Gives each canary that started, or moved to another slot, since the
    /// last publish a new cohort, so its clients are drawn afresh and
    /// cookies of an earlier canary stop counting. The first publish keeps
    /// the cohort restored from the state file. True when one changed.
    fn renew_cohorts(&mut self, now: Now) -> bool {
        let mut renewed = false;
        for (route, state) in self.routes.iter_mut() {
            let slot = state.canary.as_ref().map(|c| c.slot.clone());
            let before = self.published.canary.insert(route.clone(), slot.clone());
            if self.adopting.contains(route) {
                // Drawn by the node that decided: every node's clients
                // must fall in the same buckets.
                continue;
            }
            let started = slot.is_some()
                && match before {
                    Some(before) => before != slot,
                    None => state.cohort == 0,
                };
            if started {
                state.cohort = new_cohort(state.cohort, now);
                renewed = true;
            }
        }
        renewed
    }

    /// Each slot's counters (kept across publishes), told whether the slot
    /// still gets new traffic: upgraded connections left on one that does
    /// not are closed `drain_timeout` after this.
    fn update_loads(&mut self) {
        for route in &self.config.routes {
            let state = &self.routes[&route.name];
            let loads = self.loads.entry(route.name.clone()).or_default();
            for slot in route.slots.keys() {
                let load = loads
                    .entry(slot.clone())
                    .or_insert_with(|| Arc::new(SlotLoad::new(&route.name, slot)));
                load.set_serving(serves(state, slot));
            }
        }
    }

    /// The route as the data plane sees it. Each slot lists its healthy
    /// backends; with none, those not known unhealthy (at start, all of
    /// them); with none of those either, all of them (fail open: a request
    /// may still find one that recovered). So a backend added to a slot
    /// that has healthy ones — by a reload, or a name that resolves to a
    /// new address — gets traffic once its probes pass.
    fn route_spec(&self, route: &RouteConfig) -> RouteSpec {
        let state = &self.routes[&route.name];
        let usable = |slot: &str, backends: &Vec<SocketAddr>| {
            let in_state = |wanted: &dyn Fn(BackendState) -> bool| -> Vec<SocketAddr> {
                backends
                    .iter()
                    .copied()
                    .filter(|addr| wanted(self.health.state(&route.name, slot, *addr)))
                    .collect()
            };
            let healthy = in_state(&|s| s == BackendState::Healthy);
            if !healthy.is_empty() {
                return healthy;
            }
            let not_down = in_state(&|s| s != BackendState::Unhealthy);
            if !not_down.is_empty() {
                return not_down;
            }
            backends.clone()
        };
        RouteSpec {
            name: route.name.clone(),
            hosts: route.hosts.clone(),
            path_prefix: route.path_prefix.clone(),
            slots: route
                .slots
                .iter()
                .map(|(name, backends)| (name.clone(), usable(name, backends)))
                .collect(),
            active: state.active.clone(),
            previous: state.previous.clone(),
            canary: state.canary.as_ref().map(|c| (c.slot.clone(), c.weight)),
            retries: route.retries,
            loads: self.loads[&route.name].clone(),
            unhealthy: route
                .slots
                .keys()
                .filter(|slot| self.health.slot_health(&route.name, slot) == SlotHealth::Unhealthy)
                .cloned()
                .collect(),
            h2c: route.h2c_slots.iter().cloned().collect(),
            tls: route
                .https_slots
                .keys()
                .filter_map(|slot| {
                    let key = (route.name.clone(), slot.clone());
                    Some((slot.clone(), self.backend_tls.get(&key)?.clone()))
                })
                .collect(),
            backend_hosts: self.backend_hosts(route),
            assignment: assignment_spec(route, state),
            https: HttpsSpec {
                redirect: route.redirect_https,
                hsts_max_age: route.hsts_max_age,
            },
            upgrades: route.upgrades.clone(),
            maintenance: state.maintenance.is_some(),
            error_pages: self
                .config
                .server
                .error_pages
                .iter()
                .chain(&route.error_pages)
                .map(|(status, page)| (*status, bytes::Bytes::from_owner(page.clone())))
                .collect(),
            max_body_size: route.max_body_size.or(self.config.server.max_body_size),
            rate_limit: self.rate_limits.get(&route.name).cloned(),
            access: route.access.as_ref().map(|a| Access {
                allow: a.allow.clone(),
                deny: a.deny.clone(),
                paths: a.paths.clone(),
                basic_auth: a.basic_auth.clone(),
            }),
            pool_epoch: self
                .published
                .pool_epochs
                .get(&route.name)
                .copied()
                .unwrap_or(0),
        }
    }

    /// Each route's limit state: kept while its `[route.limits]` stays the
    /// same, new when it changes, gone with it.
    fn update_rate_limits(&mut self) {
        let mut kept = BTreeMap::new();
        for route in &self.config.routes {
            let Some(config) = &route.rate_limit else {
                continue;
            };
            let spec = LimitSpec {
                requests: config.requests,
                per: config.per,
                burst: config.burst,
                key: match &config.key {
                    RateKey::ClientIp => LimitKey::ClientIp,
                    RateKey::Header(name) => LimitKey::Header(name.clone()),
                },
            };
            let limit = match self.rate_limits.remove(&route.name) {
                Some(limit) if limit.spec == spec => limit,
                _ => Arc::new(RateLimit::new(spec)),
            };
            kept.insert(route.name.clone(), limit);
        }
        self.rate_limits = kept;
    }

    /// For each https slot, the name each address given by name came from.
    fn backend_hosts(
        &self,
        route: &RouteConfig,
    ) -> BTreeMap<String, std::collections::HashMap<SocketAddr, Arc<str>>> {
        let mut hosts: BTreeMap<String, std::collections::HashMap<SocketAddr, Arc<str>>> =
            BTreeMap::new();
        for (slot, name) in route.names() {
            if !route.https_slots.contains_key(slot) {
                continue;
            }
            let Some(status) = self.names.get(&name.key()) else {
                continue;
            };
            let host: Arc<str> = name.host.as_str().into();
            let slot_hosts = hosts.entry(slot.to_string()).or_default();
            for addr in &status.addresses {
                slot_hosts.entry(*addr).or_insert_with(|| host.clone());
            }
        }
        hosts
    }

    /// Each `protocol = "https"` slot's TLS client: kept while the slot's
    /// settings stay the same (and its resumable TLS sessions with it), new
    /// when they change, gone with the slot.
    fn update_backend_tls(&mut self) {
        let mut kept = BTreeMap::new();
        let mut problems = Vec::new();
        for route in &self.config.routes {
            for (slot, config) in &route.https_slots {
                let key = (route.name.clone(), slot.clone());
                let tls = match self.backend_tls.remove(&key) {
                    Some(tls) if tls.source == *config => tls,
                    _ => {
                        let (tls, problem) = BackendTls::new(config);
                        if let Some(problem) = problem {
                            problems.push((
                                route.name.clone(),
                                format!("slot {slot:?}: TLS to its backends will fail: {problem}"),
                            ));
                        }
                        Arc::new(tls)
                    }
                };
                kept.insert(key, tls);
            }
        }
        self.backend_tls = kept;
        for (route, problem) in problems {
            self.log(Level::Error, Some(&route), problem);
        }
    }

    fn timeouts(&self) -> Timeouts {
        let server = &self.config.server;
        Timeouts {
            upstream_connect: server.connect_timeout,
            upstream_read: server.read_timeout,
            client_keepalive: server.keepalive_timeout,
            client_header: server.header_timeout,
            client_send: server.send_timeout,
            upgrade_idle: server.upgrade_idle_timeout,
            drain: server.drain_timeout,
        }
    }
}

/// The route's stickiness settings (defaults without `[route.canary]`),
/// the current canary's cohort, and where preview hosts lead.
fn assignment_spec(route: &RouteConfig, state: &RouteState) -> AssignmentSpec {
    let mut spec = AssignmentSpec {
        cohort: state.cohort,
        preview: route.preview.clone(),
        preview_slot: decisions::preview_slot(route, state),
        ..AssignmentSpec::default()
    };
    if let Some(canary) = &route.canary {
        spec.cookie = canary.sticky_cookie.clone();
        spec.key = canary.sticky_key.clone();
        spec.max_age = canary.sticky_max_age;
    }
    spec
}

/// A cohort that differs from `old`: the clock in milliseconds, which also
/// differs across restarts.
fn new_cohort(old: u64, now: Now) -> u64 {
    let millis = now
        .wall
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as u64);
    if millis == old {
        millis + 1
    } else {
        millis
    }
}
