//! The routing table: an immutable value the Controller builds and publishes,
//! and the request path reads.
//!
//! Deciding where a request goes — [`RoutingTable::route_for`],
//! [`Route::choose`], [`Slot::backend`] — takes no lock and allocates
//! nothing: lookups use a lower-cased copy of the host on the stack, and the
//! only mutable parts are relaxed atomic counters for round-robin.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use std::time::Instant;

use switchyard_conf::HostPattern;

mod access;
mod assign;
mod lookup;
mod rate_limit;
mod series;
mod stats;

pub use access::{Access, Verdict};
pub use assign::{AssignmentSpec, Choice, Reason, Split, TOKEN_HEADER};
pub use rate_limit::{LimitKey, LimitSpec, RateLimit};
use series::SlotSeries;
pub use series::{FailureKind, REQUESTS, REQUEST_DURATION, UPSTREAM_FAILURES};
pub use stats::{SlotStats, StatsSnapshot};

/// Timeouts of the data plane, published with the table so that an edit
/// applies to new requests at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub upstream_connect: Duration,
    pub upstream_read: Duration,
    pub client_keepalive: Duration,
    /// A request head must arrive whole within this from its first byte.
    pub client_header: Duration,
    /// A client that reads none of its response for this long is closed.
    pub client_send: Duration,
    /// An upgraded connection (a WebSocket) with no byte either way for
    /// this long is closed.
    pub upgrade_idle: Duration,
    /// How long upgraded connections may stay on a slot that no longer
    /// gets new traffic.
    pub drain: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            upstream_connect: Duration::from_secs(3),
            upstream_read: Duration::from_secs(60),
            client_keepalive: Duration::from_secs(60),
            client_header: Duration::from_secs(10),
            client_send: Duration::from_secs(60),
            upgrade_idle: Duration::from_secs(3600),
            drain: Duration::from_secs(30),
        }
    }
}

/// One published generation of routing decisions.
#[derive(Debug)]
pub struct RoutingTable {
    pub generation: u64,
    pub routes: Vec<Route>,
    pub timeouts: Timeouts,
    /// Exact host → routes, longest path prefix first. aHash rather
    /// than SipHash: clients only look up (keys come from the config, so
    /// there is nothing to flood), and the lookup is on every request.
    exact: HashMap<Box<str>, Vec<RouteRef>, ahash::RandomState>,
    /// `(suffix with leading dot, routes longest prefix first)`,
    /// longest suffix first so the most specific wildcard wins.
    suffixes: Vec<(Box<str>, Vec<RouteRef>)>,
    /// Routes without hosts, longest path prefix first.
    any_host: Vec<RouteRef>,
    /// `[server] error_pages` 404: for a host no route's page covers.
    not_found_page: Option<bytes::Bytes>,
    /// The largest HTTP/1 request head taken (`[server] max_header_size`).
    pub max_header_size: usize,
    /// Peers whose `X-Forwarded-For` names the client
    /// (`[server] trusted_proxies`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// A route a host leads to, and whether the host is one of its preview
/// hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRef {
    pub index: usize,
    pub preview: bool,
}

/// A route of the table: its slots, which one is active, and the canary.
#[derive(Debug)]
pub struct Route {
    pub name: Arc<str>,
    pub path_prefix: Box<str>,
    pub slots: Vec<Slot>,
    /// Index into `slots`.
    pub active: usize,
    /// Index into `slots`: the fail-back target and the retry slot.
    pub previous: Option<usize>,
    pub canary: Option<Canary>,
    pub retries: u32,
    /// Plain-HTTP requests get a 301 to HTTPS.
    pub redirect_https: bool,
    /// Added to HTTPS responses that lack one.
    pub hsts: Option<http::HeaderValue>,
    /// Protocols a client may upgrade to, lower-case: an `Upgrade` for
    /// anything else is removed before the request goes upstream.
    pub upgrades: Box<[Box<str>]>,
    /// In maintenance: requests get 503 with a page, but those a preview
    /// host or an authorised override sends to a slot.
    pub maintenance: bool,
    /// Status (502, 503, 504) → the route's own page for it.
    pub error_pages: BTreeMap<u16, bytes::Bytes>,
    /// The largest request body passed on: `413` past it.
    pub max_body_size: Option<u64>,
    /// `[route.limits]`: `429` past it.
    pub rate_limit: Option<Arc<RateLimit>>,
    /// `[route.access]`: `403` for whom it does not permit.
    pub access: Option<Access>,
    /// Stickiness, overrides and previews; see [`Route::choose`].
    assigner: assign::Assigner,
    slot_names: Vec<Arc<str>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Canary {
    pub slot: usize,
    /// 0–100.
    pub weight: u8,
}

#[derive(Debug)]
pub struct Slot {
    pub name: Arc<str>,
    pub backends: Vec<SocketAddr>,
    /// Separates pooled upstream connections by route, slot and the route's
    /// pool epoch (see [`RouteSpec::pool_epoch`]): no connection opened
    /// before a switch is reused after it, and nothing else empties a pool.
    pub pool_key: u64,
    next_backend: AtomicUsize,
    /// What the slot is serving right now; shared by every generation's
    /// table, so a request counts on the slot it went to whatever was
    /// published since.
    pub load: Arc<SlotLoad>,
    /// Every backend of the slot is known unhealthy: a retry does not fall
    /// back to it.
    pub unhealthy: bool,
    /// Its backends speak HTTP/2 without TLS (`protocol = "h2c"`).
    pub h2c: bool,
    /// Its backends speak TLS (`protocol = "https"`), this way.
    pub tls: Option<Arc<crate::tls_client::BackendTls>>,
    /// The name each backend address given by a `host:port` came from:
    /// what TLS checks when there is no `tls_server_name`.
    pub hosts: HashMap<SocketAddr, Arc<str>>,
}

impl Slot {
    /// The host `backend` was configured by: its name, or else its IP
    /// address.
    pub fn host_of(&self, backend: SocketAddr) -> std::borrow::Cow<'_, str> {
        match self.hosts.get(&backend) {
            Some(host) => std::borrow::Cow::Borrowed(host),
            None => std::borrow::Cow::Owned(backend.ip().to_string()),
        }
    }
}

/// The process's clock origin for [`SlotLoad`]'s timestamps.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Requests and upgraded connections in flight on one slot, and what it
/// answered so far: for rollout analysis and for `/metrics`.
#[derive(Debug)]
pub struct SlotLoad {
    requests: AtomicUsize,
    upgraded: AtomicUsize,
    /// Milliseconds since [`epoch`] when the slot stopped getting new
    /// traffic (plus one, so 0 can mean "serving").
    retired_at: AtomicU64,
    pub stats: SlotStats,
    series: SlotSeries,
}

impl SlotLoad {
    pub fn new(route: &str, slot: &str) -> SlotLoad {
        SlotLoad {
            requests: AtomicUsize::new(0),
            upgraded: AtomicUsize::new(0),
            retired_at: AtomicU64::new(0),
            stats: SlotStats::default(),
            series: SlotSeries::new(route, slot),
        }
    }

    /// Whether the slot gets new traffic (it is active, or a canary with a
    /// weight). Set by the Controller on every publish.
    pub fn set_serving(&self, serving: bool) {
        if serving {
            self.retired_at.store(0, Ordering::Release);
        } else {
            let now = epoch().elapsed().as_millis() as u64 + 1;
            let _ = self
                .retired_at
                .compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    /// How long ago the slot stopped getting new traffic; `None` while it
    /// gets some.
    pub fn retired_for(&self) -> Option<Duration> {
        match self.retired_at.load(Ordering::Acquire) {
            0 => None,
            at => Some(
                epoch()
                    .elapsed()
                    .saturating_sub(Duration::from_millis(at - 1)),
            ),
        }
    }

    /// An upstream exchange of this slot failed. Failed connects and
    /// dropped requests also count in the analysis' failure rate; a
    /// timeout or a broken answer ends in our own 502/504, which counts
    /// there as an error already.
    pub fn upstream_failed(&self, kind: FailureKind) {
        if matches!(kind, FailureKind::Connect | FailureKind::Dropped) {
            self.stats.upstream_failed();
        }
        self.series.upstream_failed(kind);
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Acquire)
    }

    pub fn upgraded(&self) -> usize {
        self.upgraded.load(Ordering::Acquire)
    }

    /// Counts one request until the guard drops.
    pub fn request(self: &Arc<Self>) -> LoadGuard {
        self.requests.fetch_add(1, Ordering::AcqRel);
        LoadGuard {
            load: self.clone(),
            upgraded: false,
        }
    }
}

/// One request (or upgraded connection) counted on a slot while it lives.
#[derive(Debug)]
pub struct LoadGuard {
    load: Arc<SlotLoad>,
    upgraded: bool,
}

impl LoadGuard {
    /// The request became an upgraded connection (a WebSocket, say): it now
    /// counts as one until it closes.
    pub fn upgraded(&mut self) {
        if !self.upgraded {
            self.upgraded = true;
            self.load.upgraded.fetch_add(1, Ordering::AcqRel);
        }
    }
}

impl LoadGuard {
    /// The slot this request counts on; see [`SlotLoad::retired_for`].
    pub fn slot(&self) -> &SlotLoad {
        &self.load
    }

    /// The request got its answer: `status` after `latency`.
    pub fn answered(&self, status: u16, latency: Duration) {
        self.load.stats.answered(status, latency);
        self.load.series.answered(status, latency);
    }

    /// An upstream exchange of this request failed.
    pub fn upstream_failed(&self, kind: FailureKind) {
        self.load.upstream_failed(kind);
    }
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.load.requests.fetch_sub(1, Ordering::AcqRel);
        if self.upgraded {
            self.load.upgraded.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// What the Controller hands to [`RoutingTable::build`] for one route.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub name: String,
    pub hosts: Vec<HostPattern>,
    pub path_prefix: String,
    /// Slot name → backends, in a stable order.
    pub slots: Vec<(String, Vec<SocketAddr>)>,
    pub active: String,
    pub previous: Option<String>,
    pub canary: Option<(String, u8)>,
    pub retries: u32,
    /// Each slot's in-flight counters, kept across generations by the
    /// Controller; a slot without one gets a fresh one.
    pub loads: BTreeMap<String, Arc<SlotLoad>>,
    /// Slots whose every backend is known unhealthy.
    pub unhealthy: Vec<String>,
    /// Slots whose backends speak h2c.
    pub h2c: Vec<String>,
    /// Slots whose backends speak TLS, and how.
    pub tls: BTreeMap<String, Arc<crate::tls_client::BackendTls>>,
    /// Slot → the name each of its addresses came from, for those given
    /// by name (needed only by https slots).
    pub backend_hosts: BTreeMap<String, HashMap<SocketAddr, Arc<str>>>,
    /// Stickiness, overrides and previews.
    pub assignment: AssignmentSpec,
    pub https: HttpsSpec,
    /// Protocols a client may upgrade to (lower-case `Upgrade` tokens).
    pub upgrades: Vec<String>,
    /// Changes each time the route's active slot changes, and only then:
    /// part of every slot's pool key.
    pub pool_epoch: u64,
    /// Answer 503 with the maintenance page (but to previews and overrides).
    pub maintenance: bool,
    /// Status → the page switchyard answers with instead of its own text.
    pub error_pages: BTreeMap<u16, bytes::Bytes>,
    /// The route's `max_body_size`, else `[server]`'s; `None`: no limit.
    pub max_body_size: Option<u64>,
    /// Kept by the Controller across publishes, so a switch or a health
    /// change does not hand every client a fresh allowance.
    pub rate_limit: Option<Arc<RateLimit>>,
    pub access: Option<Access>,
}

/// What a route does about HTTPS.
#[derive(Debug, Clone, Default)]
pub struct HttpsSpec {
    /// Plain-HTTP requests are redirected to HTTPS.
    pub redirect: bool,
    /// HTTPS responses say `Strict-Transport-Security: max-age=…`.
    pub hsts_max_age: Option<Duration>,
}

impl RoutingTable {
    /// An empty table: every request gets the no-route answer.
    pub fn empty() -> RoutingTable {
        RoutingTable::build(0, Vec::new())
    }

    /// Builds generation `generation` from route specs. Slot names that are
    /// not in a spec's `slots` are ignored (the Controller validates first).
    pub fn build(generation: u64, specs: Vec<RouteSpec>) -> RoutingTable {
        let mut exact: HashMap<Box<str>, Vec<RouteRef>, ahash::RandomState> = HashMap::default();
        let mut suffixes: HashMap<Box<str>, Vec<RouteRef>> = HashMap::new();
        let mut any_host = Vec::new();
        let mut routes = Vec::with_capacity(specs.len());

        for (index, spec) in specs.into_iter().enumerate() {
            if spec.hosts.is_empty() {
                any_host.push(RouteRef {
                    index,
                    preview: false,
                });
            }
            let preview_hosts = spec
                .assignment
                .preview
                .iter()
                .flat_map(|p| &p.preview_hosts);
            let hosts = spec.hosts.iter().map(|h| (h, false));
            for (host, preview) in hosts.chain(preview_hosts.map(|h| (h, true))) {
                let entry = RouteRef { index, preview };
                match host {
                    HostPattern::Exact(h) => {
                        exact.entry(h.as_str().into()).or_default().push(entry)
                    }
                    HostPattern::Suffix(s) => {
                        suffixes.entry(s.as_str().into()).or_default().push(entry)
                    }
                }
            }
            routes.push(Route::from_spec(spec));
        }

        let by_longest_prefix = |list: &mut Vec<RouteRef>| {
            list.sort_by_key(|r| std::cmp::Reverse(routes[r.index].path_prefix.len()));
        };
        exact.values_mut().for_each(by_longest_prefix);
        by_longest_prefix(&mut any_host);
        let mut suffixes: Vec<(Box<str>, Vec<RouteRef>)> = suffixes.into_iter().collect();
        suffixes
            .iter_mut()
            .for_each(|(_, list)| by_longest_prefix(list));
        suffixes.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));

        RoutingTable {
            generation,
            routes,
            timeouts: Timeouts::default(),
            exact,
            suffixes,
            any_host,
            not_found_page: None,
            max_header_size: switchyard_conf::DEFAULT_MAX_HEADER_SIZE as usize,
            trusted_proxies: Vec::new(),
        }
    }

    pub fn with_timeouts(mut self, timeouts: Timeouts) -> RoutingTable {
        self.timeouts = timeouts;
        self
    }

    pub fn with_not_found_page(mut self, page: Option<bytes::Bytes>) -> RoutingTable {
        self.not_found_page = page;
        self
    }

    pub fn with_max_header_size(mut self, bytes: usize) -> RoutingTable {
        self.max_header_size = bytes;
        self
    }

    pub fn with_trusted_proxies(mut self, trusted: Vec<ipnet::IpNet>) -> RoutingTable {
        self.trusted_proxies = trusted;
        self
    }
}

impl Route {
    fn from_spec(spec: RouteSpec) -> Route {
        let index_of = |name: &str| spec.slots.iter().position(|(n, _)| n == name);
        let active = index_of(&spec.active).unwrap_or(0);
        let previous = spec
            .previous
            .as_deref()
            .and_then(index_of)
            .filter(|&p| p != active);
        let canary = spec.canary.as_ref().and_then(|(slot, weight)| {
            let slot = index_of(slot).filter(|&s| s != active)?;
            Some(Canary {
                slot,
                weight: (*weight).min(100),
            })
        });
        let route_name: Arc<str> = spec.name.as_str().into();
        let slot_names: Vec<Arc<str>> = spec.slots.iter().map(|(n, _)| n.as_str().into()).collect();
        let names: Vec<&str> = slot_names.iter().map(|n| &**n).collect();
        let assigner = assign::Assigner::new(spec.assignment.clone(), &names);
        let slots = spec
            .slots
            .into_iter()
            .map(|(name, backends)| Slot {
                pool_key: pool_key(&route_name, &name, spec.pool_epoch),
                load: spec
                    .loads
                    .get(&name)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(SlotLoad::new(&route_name, &name))),
                unhealthy: spec.unhealthy.contains(&name),
                h2c: spec.h2c.contains(&name),
                tls: spec.tls.get(&name).cloned(),
                hosts: spec.backend_hosts.get(&name).cloned().unwrap_or_default(),
                name: name.as_str().into(),
                backends,
                next_backend: AtomicUsize::new(0),
            })
            .collect();
        Route {
            name: route_name,
            path_prefix: spec.path_prefix.into(),
            slots,
            active,
            previous,
            canary,
            retries: spec.retries,
            redirect_https: spec.https.redirect,
            hsts: spec.https.hsts_max_age.and_then(|age| {
                http::HeaderValue::from_str(&format!("max-age={}", age.as_secs())).ok()
            }),
            upgrades: spec.upgrades.into_iter().map(Into::into).collect(),
            maintenance: spec.maintenance,
            error_pages: spec.error_pages,
            max_body_size: spec.max_body_size,
            rate_limit: spec.rate_limit,
            access: spec.access,
            assigner,
            slot_names,
        }
    }

    /// The slot for a new request: a preview host's slot, an authorised
    /// override, the sticky cookie of the current canary, else the client's
    /// stable bucket against the canary weight. See [`assign`].
    pub fn choose(
        &self,
        headers: &http::HeaderMap,
        client_ip: Option<std::net::IpAddr>,
        via_preview_host: bool,
    ) -> Choice {
        let split = Split {
            active: self.active,
            canary: self
                .canary
                .filter(|c| c.weight > 0)
                .map(|c| (c.slot, c.weight)),
        };
        self.assigner.choose(
            split,
            &self.slot_names,
            headers,
            client_ip,
            via_preview_host,
        )
    }

    /// The `Set-Cookie` header that keeps a client on `slot` for this
    /// canary.
    pub fn set_cookie(&self, slot: usize) -> &http::HeaderValue {
        self.assigner.set_cookie(slot)
    }

    pub fn slot(&self, index: usize) -> &Slot {
        &self.slots[index]
    }

    pub fn active_slot(&self) -> &Slot {
        &self.slots[self.active]
    }
}

impl Slot {
    /// Where a new request starts in the round-robin.
    pub fn next_start(&self) -> usize {
        self.next_backend.fetch_add(1, Ordering::Relaxed)
    }

    /// The backend for try number `attempt` (0 first) of a request that
    /// started at `start`: retries move on to the following backends.
    pub fn backend(&self, start: usize, attempt: usize) -> SocketAddr {
        self.backends[start.wrapping_add(attempt) % self.backends.len()]
    }
}

fn pool_key(route: &str, slot: &str, epoch: u64) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
    let mut hasher =
        BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().build_hasher();
    hasher.write(route.as_bytes());
    hasher.write_u8(0);
    hasher.write(slot.as_bytes());
    hasher.write_u64(epoch);
    hasher.finish()
}

#[cfg(test)]
mod tests;
