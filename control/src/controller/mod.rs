//! The Controller: the one task that owns switchyard's state.
//!
//! Config reloads, admin commands, health checks (probes and failed
//! connects of real requests) and the rollout clock are messages to it. For each change it computes the next
//! [`RoutingTable`], publishes it with one `ArcSwap::store`, writes the state
//! file and appends to the history. Nothing else changes state.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::{ArcSwap, ArcSwapOption};
use serde_json::{json, Value};
use switchyard_conf::{Config, HostPattern, RouteConfig, ServerConfig, TlsConfig};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::sleep_until;

use crate::decisions::{self, Refusal};
use crate::health::changes::CHECK_BATCH;
use crate::health::monitor::{BackendKey, Monitor};
use crate::health::{
    apply_health, BackendState, Check, Failure, HealthBook, HealthChanges, Reaction, SlotHealth,
};
use crate::history::{now_rfc3339, History, HistoryEntry, ALL_ROUTES, DEFAULT_HISTORY_MAX_BYTES};
use crate::metrics;
use crate::protocol::{ErrorKind, Request, Response};
use crate::state_file::{DecisionSource, RouteState, StateFile};
use crate::table::{AssignmentSpec, HttpsSpec, RouteSpec, RoutingTable, SlotLoad, Timeouts};

mod rollouts;
mod settle;

/// Messages are small and the Controller answers quickly; this bounds the
/// memory a burst of admin connections can pin.
const MAILBOX: usize = 256;

/// Backends named, with their last check, where a slot's health is
/// explained (history, refusals, `critical`).
const EVIDENCE_BACKENDS: usize = 10;

/// How long `switch` waits for its slot to turn healthy when not told.
const DEFAULT_SWITCH_WAIT: std::time::Duration = std::time::Duration::from_secs(30);
/// The longest wait a `switch` may ask for: a parked command holds a
/// connection and a reply channel.
const MAX_SWITCH_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// How long `drain --wait` waits when not told.
const DEFAULT_DRAIN_WAIT: std::time::Duration = std::time::Duration::from_secs(60);
/// How often waiting drains look at the counters, and how long a slot must
/// stay empty to count as drained: a request that picked the slot from the
/// table a moment before a switch is counted within microseconds, well
/// inside this.
const DRAIN_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// The readers' side of the published table.
pub type SharedTable = Arc<ArcSwap<RoutingTable>>;

/// What the Controller accepts.
enum Message {
    /// An admin command from a peer with this uid. Answered on `reply`.
    Command {
        request: Request,
        uid: Option<u32>,
        reply: oneshot::Sender<Response>,
    },
    /// The config file changed on disk and has been quiet since for the
    /// watcher's settle time: reload it (an edit that removes something
    /// waits longer, see [`settle`]).
    ConfigFileChanged,
    /// A Prometheus scrape: the text exposition of the current state.
    Metrics { reply: oneshot::Sender<String> },
    /// A readiness check: the backends still waiting for a first verdict.
    Unchecked { reply: oneshot::Sender<Vec<String>> },
}

/// Where a reload came from, for the history and the log.
#[derive(Debug, Clone, Copy)]
enum ReloadTrigger {
    File,
    Admin,
}

/// One health check of one backend, from a probe or from a real request.
type CheckMessage = (BackendKey, Check);

/// Sends messages to the Controller; cheap to clone.
#[derive(Clone)]
pub struct ControllerHandle {
    mailbox: mpsc::Sender<Message>,
    /// Checks have their own queue: they arrive at the probes' pace (or at
    /// the pace of failing connects, until the backend is marked down), and
    /// must never wait behind, or crowd out, admin commands.
    checks: mpsc::UnboundedSender<CheckMessage>,
    table: SharedTable,
    /// `[tls]` of the config in force, for whoever serves the certificates.
    tls_config: watch::Receiver<Option<TlsConfig>>,
    /// What the certificate loader last reported, shown in `status`.
    tls_status: Arc<ArcSwapOption<Value>>,
}

impl ControllerHandle {
    /// Runs an admin command and returns its response. When the Controller
    /// has stopped, answers with an internal error.
    pub async fn command(&self, request: Request, uid: Option<u32>) -> Response {
        let (reply, answer) = oneshot::channel();
        let sent = self
            .mailbox
            .send(Message::Command {
                request,
                uid,
                reply,
            })
            .await;
        if sent.is_err() {
            return Response::error(ErrorKind::Internal, "switchyard is shutting down");
        }
        answer
            .await
            .unwrap_or_else(|_| Response::error(ErrorKind::Internal, "switchyard is shutting down"))
    }

    /// Tells the Controller the config file changed. Never blocks: when a
    /// reload is already queued, another one adds nothing.
    pub fn config_file_changed(&self) {
        let _ = self.mailbox.try_send(Message::ConfigFileChanged);
    }

    /// A real request could not connect to `backend` (passive check). Never
    /// blocks.
    pub fn connect_failed(&self, route: &str, slot: &str, backend: SocketAddr, error: String) {
        let key = BackendKey {
            route: Arc::from(route),
            slot: Arc::from(slot),
            addr: backend,
        };
        let check = Check::Fail {
            failure: Failure::Traffic(error),
            latency: std::time::Duration::ZERO,
        };
        let _ = self.checks.send((key, check));
    }

    /// The metrics in Prometheus text format; `None` when the Controller
    /// has stopped.
    pub async fn metrics(&self) -> Option<String> {
        let (reply, answer) = oneshot::channel();
        self.mailbox.send(Message::Metrics { reply }).await.ok()?;
        answer.await.ok()
    }

    /// The backends of active slots that have no health verdict yet, as
    /// `route/slot/address`: empty once the proxy knows where it can send
    /// traffic. `None` when the Controller has stopped.
    pub async fn unchecked_backends(&self) -> Option<Vec<String>> {
        let (reply, answer) = oneshot::channel();
        self.mailbox.send(Message::Unchecked { reply }).await.ok()?;
        answer.await.ok()
    }

    /// The table the data plane reads.
    pub fn table(&self) -> SharedTable {
        self.table.clone()
    }

    /// `[tls]` of the config in force; changes when a reload edits it.
    pub fn tls_config(&self) -> watch::Receiver<Option<TlsConfig>> {
        self.tls_config.clone()
    }

    /// Sets what `status` shows under `tls` (the certificates served and
    /// the last load's outcome).
    pub fn set_tls_status(&self, status: Value) {
        self.tls_status.store(Some(Arc::new(status)));
    }
}

/// A `switch` waiting for its slot to turn healthy.
struct WaitingSwitch {
    route: String,
    slot: String,
    uid: Option<u32>,
    reason: Option<String>,
    waited: std::time::Duration,
    deadline: tokio::time::Instant,
    reply: oneshot::Sender<Response>,
}

/// A `drain --wait` waiting for a slot to have nothing in flight.
struct WaitingDrain {
    route: String,
    slot: String,
    waited: std::time::Duration,
    deadline: tokio::time::Instant,
    /// Polls in a row that found the slot empty.
    empty_polls: u32,
    reply: oneshot::Sender<Response>,
}

/// The state the Controller owns.
pub struct Controller {
    config_path: PathBuf,
    config: Config,
    /// The `[server]` the process started with: what listeners really are.
    running_server: ServerConfig,
    /// The last reload's errors, while the file stays invalid.
    config_error: Option<String>,
    /// A valid edit of the file that removes something, waiting to be
    /// applied until the file has stayed that way for `SHRINK_SETTLE`.
    pending_edit: Option<settle::PendingEdit>,
    /// Settings edited in the file that only a restart applies.
    needs_restart: Vec<String>,
    /// Config reloads applied since start (health changes also publish new
    /// generations; this counts only the config's).
    reloads: u64,
    routes: BTreeMap<String, RouteState>,
    generation: u64,
    table: SharedTable,
    state_file: StateFile,
    history: History,
    /// Problems found while restoring the state file, shown in `status`.
    state_warnings: Vec<String>,
    /// Every configured backend's health; unchanged backends keep theirs
    /// across reloads.
    health: HealthBook,
    /// What health changes still ask of the Controller: routes to react,
    /// a paced publish.
    health_changes: HealthChanges,
    monitor: Monitor,
    /// Routes whose active slot is unhealthy with nowhere to fail back to,
    /// and why; shown in `status` and logged once.
    critical: BTreeMap<String, String>,
    /// `switch` commands waiting for a healthy slot, answered when it is or
    /// when their time is up.
    waiting: Vec<WaitingSwitch>,
    /// Route → slot → its in-flight counters, shared by every generation.
    loads: BTreeMap<String, BTreeMap<String, Arc<SlotLoad>>>,
    draining: Vec<WaitingDrain>,
    /// Each route's active slot as last published, to count switches.
    published_active: BTreeMap<String, String>,
    /// (route, trigger) → changes of the active slot since start.
    switches: BTreeMap<(String, String), u64>,
    /// Each route's canary slot as last published, to renew cohorts.
    published_canary: BTreeMap<String, Option<String>>,
    /// Route → its rollout's clock and analysis window.
    rollout_clocks: BTreeMap<String, rollouts::RolloutClock>,
    /// `[tls]` of the config in force, published on each reload.
    tls_config: watch::Sender<Option<TlsConfig>>,
    tls_status: Arc<ArcSwapOption<Value>>,
}

impl Controller {
    /// Restores the state file over `config`, publishes the first table and
    /// starts the Controller task on the current tokio runtime.
    pub fn start(
        config: Config,
        config_path: PathBuf,
    ) -> (ControllerHandle, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(MAILBOX);
        let (checks_tx, checks_rx) = mpsc::unbounded_channel();
        let report = checks_tx.clone();
        let monitor = Monitor::new(Arc::new(move |key, check| {
            let _ = report.send((key, check));
        }));
        let controller = Controller::new(config, config_path, monitor);
        let handle = ControllerHandle {
            mailbox: tx,
            checks: checks_tx,
            table: controller.table.clone(),
            tls_config: controller.tls_config.subscribe(),
            tls_status: controller.tls_status.clone(),
        };
        let task = tokio::spawn(controller.run(rx, checks_rx));
        (handle, task)
    }

    fn new(config: Config, config_path: PathBuf, monitor: Monitor) -> Controller {
        let state_file = StateFile::new(&config.server.state_dir);
        let loaded = state_file.load();
        let history = History::open(&config.server.state_dir, DEFAULT_HISTORY_MAX_BYTES);
        let now = now_rfc3339();
        let routes = config
            .routes
            .iter()
            .map(|r| {
                let state = decisions::after_config_load(r, loaded.routes.get(&r.name), &now);
                (r.name.clone(), state)
            })
            .collect();
        let (tls_config, _) = watch::channel(config.tls.clone());
        let mut controller = Controller {
            tls_config,
            tls_status: Arc::new(ArcSwapOption::empty()),
            config_path,
            running_server: config.server.clone(),
            config,
            config_error: None,
            pending_edit: None,
            needs_restart: Vec::new(),
            reloads: 0,
            routes,
            generation: 0,
            table: Arc::new(ArcSwap::from_pointee(RoutingTable::empty())),
            state_file,
            history,
            state_warnings: loaded.warnings,
            health: HealthBook::default(),
            health_changes: HealthChanges::default(),
            monitor,
            critical: BTreeMap::new(),
            waiting: Vec::new(),
            loads: BTreeMap::new(),
            draining: Vec::new(),
            published_active: BTreeMap::new(),
            switches: BTreeMap::new(),
            published_canary: BTreeMap::new(),
            rollout_clocks: BTreeMap::new(),
        };
        controller.track_backends();
        controller.publish();
        // A failure is logged by persist; starting matters more.
        let _ = controller.persist();
        controller
    }

    async fn run(
        mut self,
        mut mailbox: mpsc::Receiver<Message>,
        mut checks: mpsc::UnboundedReceiver<CheckMessage>,
    ) {
        let mut drain_poll = tokio::time::interval(DRAIN_POLL);
        drain_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut rollout_tick = tokio::time::interval(rollouts::ROLLOUT_TICK);
        rollout_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next_deadline = self.waiting.iter().map(|w| w.deadline).min();
            // Only polled when something waits (the branch is disabled
            // otherwise), so the placeholder instant never fires.
            let wake_at = next_deadline.unwrap_or_else(tokio::time::Instant::now);
            let settle_deadline = self.pending_edit.as_ref().map(|p| p.deadline);
            let settle_at = settle_deadline.unwrap_or_else(tokio::time::Instant::now);
            let health_publish_due = self.health_changes.publish_due();
            let health_publish_at = health_publish_due.unwrap_or_else(tokio::time::Instant::now);
            tokio::select! {
                message = mailbox.recv() => match message {
                    Some(Message::Command { request, uid, reply }) => {
                        self.command(request, uid, reply);
                    }
                    Some(Message::ConfigFileChanged) => {
                        self.reload(ReloadTrigger::File, None);
                    }
                    Some(Message::Metrics { reply }) => {
                        let _ = reply.send(self.metrics());
                    }
                    Some(Message::Unchecked { reply }) => {
                        let _ = reply.send(self.unchecked_backends());
                    }
                    None => return,
                },
                Some((key, check)) = checks.recv() => {
                    // Thousands of backends report in bursts: count what is
                    // queued, then react and publish once for all of it.
                    self.observe(key, check);
                    for _ in 1..CHECK_BATCH {
                        let Ok((key, check)) = checks.try_recv() else { break };
                        self.observe(key, check);
                    }
                    self.settle_health();
                }
                _ = sleep_until(health_publish_at), if health_publish_due.is_some() => self.publish(),
                _ = sleep_until(wake_at), if next_deadline.is_some() => {
                    self.expire_waiting();
                }
                _ = sleep_until(settle_at), if settle_deadline.is_some() => {
                    self.settle_pending_edit();
                }
                _ = drain_poll.tick(), if !self.draining.is_empty() => self.poll_draining(),
                _ = rollout_tick.tick(), if self.rollouts_in_progress() => self.tick_rollouts(),
            }
        }
    }

    /// Answers a command now, or parks a `switch` whose slot is not healthy
    /// yet (unless forced) until it is or its time is up.
    fn command(&mut self, request: Request, uid: Option<u32>, reply: oneshot::Sender<Response>) {
        if let Request::Switch {
            route,
            slot,
            timeout,
            force: false,
            reason,
        } = &request
        {
            let waited = match timeout.as_deref().map(humantime::parse_duration) {
                None => Ok(DEFAULT_SWITCH_WAIT),
                Some(Ok(t)) if t <= MAX_SWITCH_WAIT => Ok(t),
                Some(Ok(_)) => Err(format!(
                    "timeout {:?} is longer than the {}s a switch may wait",
                    timeout.as_deref().unwrap_or_default(),
                    MAX_SWITCH_WAIT.as_secs()
                )),
                Some(Err(e)) => Err(format!(
                    "bad timeout {:?}: {e}; expected e.g. \"30s\"",
                    timeout.as_deref().unwrap_or_default()
                )),
            };
            let waited = match waited {
                Ok(waited) => waited,
                Err(message) => {
                    let _ = reply.send(Response::error(ErrorKind::BadRequest, message));
                    return;
                }
            };
            let must_wait = self.config.route(route).is_some_and(|cfg| {
                cfg.slots.contains_key(slot.as_str())
                    && self.routes.get(route).is_some_and(|s| s.active != *slot)
                    && self.slot_health(cfg, slot) != SlotHealth::Healthy
            });
            if must_wait {
                tracing::info!(route, slot, "switch waits for the slot to turn healthy");
                self.waiting.push(WaitingSwitch {
                    route: route.clone(),
                    slot: slot.clone(),
                    uid,
                    reason: reason.clone(),
                    waited,
                    deadline: tokio::time::Instant::now() + waited,
                    reply,
                });
                return;
            }
        }
        if let Request::Drain {
            route,
            slot,
            wait: true,
            timeout,
        } = &request
        {
            match self.start_drain(route, slot, timeout.as_deref()) {
                Ok(waited) => self.draining.push(WaitingDrain {
                    route: route.clone(),
                    slot: slot.clone(),
                    waited,
                    deadline: tokio::time::Instant::now() + waited,
                    empty_polls: 0,
                    reply,
                }),
                Err(response) => {
                    let _ = reply.send(response);
                }
            }
            return;
        }
        let response = self.handle(request, uid);
        let _ = reply.send(response);
    }

    /// Checks a `drain --wait`: the slot exists and is not serving new
    /// traffic (it would never drain). Returns how long to wait.
    fn start_drain(
        &self,
        route: &str,
        slot: &str,
        timeout: Option<&str>,
    ) -> Result<std::time::Duration, Response> {
        let waited = match timeout.map(humantime::parse_duration) {
            None => DEFAULT_DRAIN_WAIT,
            Some(Ok(t)) => t,
            Some(Err(e)) => {
                return Err(Response::error(
                    ErrorKind::BadRequest,
                    format!(
                        "bad timeout {:?}: {e}; expected e.g. \"60s\"",
                        timeout.unwrap_or_default()
                    ),
                ))
            }
        };
        let load = self.drain_load(route, slot)?;
        if load["serving"] == Value::Bool(true) {
            return Err(Response::error(
                ErrorKind::Refused,
                format!("slot {slot:?} of route {route:?} still gets new traffic (active or canary): it will not drain; switch away first"),
            ));
        }
        Ok(waited)
    }

    fn unchecked_backends(&self) -> Vec<String> {
        let mut unchecked = Vec::new();
        for route in &self.config.routes {
            let active = &self.routes[&route.name].active;
            for addr in route.slots.get(active).into_iter().flatten() {
                if self.backend_state(&route.name, active, *addr) == BackendState::Unknown {
                    unchecked.push(format!("{}/{active}/{addr}", route.name));
                }
            }
        }
        unchecked
    }

    fn metrics(&self) -> String {
        let mut snapshot = metrics::Snapshot {
            switches: self.switches.clone(),
            ..metrics::Snapshot::default()
        };
        for route in &self.config.routes {
            let state = &self.routes[&route.name];
            for (slot, backends) in &route.slots {
                for addr in backends {
                    let up = self.backend_state(&route.name, slot, *addr) == BackendState::Healthy;
                    snapshot.backend_up.push((
                        route.name.clone(),
                        slot.clone(),
                        addr.to_string(),
                        up,
                    ));
                }
                let load = self.loads.get(&route.name).and_then(|l| l.get(slot));
                snapshot.inflight.push((
                    route.name.clone(),
                    slot.clone(),
                    load.map_or(0, |l| l.requests()),
                ));
                snapshot.active_slot.push((
                    route.name.clone(),
                    slot.clone(),
                    *slot == state.active,
                ));
            }
            snapshot.canary_weight.push((
                route.name.clone(),
                state.canary.as_ref().map_or(0, |c| c.weight),
            ));
        }
        metrics::render(&snapshot)
    }

    /// `{"route", "slot", "in_flight", "upgraded", "serving"}`, or not found.
    fn drain_load(&self, route: &str, slot: &str) -> Result<Value, Response> {
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
        let serving = state.active == slot
            || state
                .canary
                .as_ref()
                .is_some_and(|c| c.slot == slot && c.weight > 0);
        let load = self.loads.get(route).and_then(|l| l.get(slot));
        Ok(json!({
            "route": route,
            "slot": slot,
            "in_flight": load.map_or(0, |l| l.requests()),
            "upgraded": load.map_or(0, |l| l.upgraded()),
            "serving": serving,
        }))
    }

    /// Answers the waiting drains whose slot has stayed empty for two polls,
    /// and refuses those whose time is up.
    fn poll_draining(&mut self) {
        let now = tokio::time::Instant::now();
        for mut waiter in std::mem::take(&mut self.draining) {
            let load = match self.drain_load(&waiter.route, &waiter.slot) {
                Ok(load) => load,
                Err(response) => {
                    let _ = waiter.reply.send(response);
                    continue;
                }
            };
            let empty = load["in_flight"] == 0 && load["upgraded"] == 0;
            waiter.empty_polls = if empty { waiter.empty_polls + 1 } else { 0 };
            if waiter.empty_polls >= 2 {
                let _ = waiter.reply.send(Response::ok(load));
            } else if now >= waiter.deadline {
                let message = format!(
                    "slot {:?} of route {:?} still has {} requests and {} upgraded connections in flight after {}",
                    waiter.slot,
                    waiter.route,
                    load["in_flight"],
                    load["upgraded"],
                    humantime::format_duration(waiter.waited)
                );
                let _ = waiter
                    .reply
                    .send(Response::error(ErrorKind::Refused, message));
            } else {
                self.draining.push(waiter);
            }
        }
    }

    /// Runs the parked switches whose slot is healthy now.
    fn release_waiting(&mut self) {
        let mut still = Vec::new();
        for waiter in std::mem::take(&mut self.waiting) {
            let ready = self
                .config
                .route(&waiter.route)
                .is_none_or(|cfg| self.slot_health(cfg, &waiter.slot) == SlotHealth::Healthy);
            if !ready {
                still.push(waiter);
                continue;
            }
            let slot = waiter.slot.clone();
            let response = self.change(
                &waiter.route,
                "switch",
                waiter.uid,
                waiter.reason,
                |cfg, state, now| decisions::switch(cfg, state, &slot, DecisionSource::Admin, now),
            );
            let _ = waiter.reply.send(response);
        }
        self.waiting.extend(still);
    }

    /// Refuses the parked switches whose time is up; traffic stays.
    fn expire_waiting(&mut self) {
        let now = tokio::time::Instant::now();
        let (expired, still): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|w| w.deadline <= now);
        self.waiting = still;
        for waiter in expired {
            let evidence = self
                .config
                .route(&waiter.route)
                .map(|cfg| {
                    format!(
                        "it is {} ({})",
                        self.slot_health(cfg, &waiter.slot).as_str(),
                        self.slot_evidence(cfg, &waiter.slot)
                    )
                })
                .unwrap_or_else(|| "its route is gone".into());
            let message = format!(
                "slot {:?} of route {:?} did not turn healthy within {}: {evidence}; nothing changed (--force switches anyway)",
                waiter.slot,
                waiter.route,
                humantime::format_duration(waiter.waited)
            );
            self.record(&HistoryEntry {
                time: now_rfc3339(),
                trigger: "admin".into(),
                uid: waiter.uid,
                route: waiter.route.clone(),
                action: "switch".into(),
                from: self.routes.get(&waiter.route).map(describe),
                to: None,
                reason: waiter.reason.clone(),
                result: format!("refused: {message}"),
                generation: None,
            });
            tracing::warn!(route = waiter.route, slot = waiter.slot, "{message}");
            let _ = waiter
                .reply
                .send(Response::error(ErrorKind::Unhealthy, message));
        }
    }

    /// Probes exactly the configured backends, and keeps health only for
    /// them: a backend whose route, slot and address are unchanged keeps its
    /// state across a reload.
    fn track_backends(&mut self) {
        self.monitor.sync(&self.config);
        self.health.sync(&self.config, SystemTime::now());
    }

    fn backend_state(&self, route: &str, slot: &str, addr: SocketAddr) -> BackendState {
        self.health.state(route, slot, addr)
    }

    fn slot_health(&self, route: &RouteConfig, slot: &str) -> SlotHealth {
        self.health.slot_health(&route.name, slot)
    }

    /// Counts one check. A change of state is noted; the route reacts and
    /// the table is published by [`Self::settle_health`], once for all the
    /// checks queued together.
    fn observe(&mut self, key: BackendKey, check: Check) {
        let Some(thresholds) = self.monitor.spec(&key).map(|s| s.thresholds) else {
            return; // a backend the config no longer has
        };
        let Some(observed) = self
            .health
            .observe(&key, check, thresholds, SystemTime::now())
        else {
            return;
        };
        let transition = &observed.transition;
        let evidence = describe_check(&transition.check);
        match transition.to {
            BackendState::Healthy => {
                tracing::info!(backend = %key, from = ?transition.from, "backend healthy: {evidence}")
            }
            _ => {
                tracing::warn!(backend = %key, from = ?transition.from, "backend unhealthy: {evidence}")
            }
        }
        self.health_changes
            .note(&key.route, &observed, tokio::time::Instant::now());
    }

    /// Lets each route whose slot health changed react (fail back, drop the
    /// canary, apply a held switch), and publishes: at once when a route's
    /// decision changed; for backends that only moved into or out of
    /// `unhealthy` (the data plane skips unhealthy backends), at once or,
    /// within `HEALTH_PUBLISH_GAP` of the last publish, at its end.
    fn settle_health(&mut self) {
        let mut decided = false;
        for route in self.health_changes.take_routes() {
            decided |= self.react(&route);
        }
        let due = self.health_changes.publish_due();
        if decided || due.is_some_and(|at| at <= tokio::time::Instant::now()) {
            self.publish();
        }
        self.release_waiting();
    }

    /// Applies what the route's slot health asks for, with history entries
    /// that say why. True when the route's state changed.
    fn react(&mut self, route_name: &str) -> bool {
        let Some(before) = self.routes.get(route_name).cloned() else {
            return false;
        };
        let now = now_rfc3339();
        let (mut after, reactions) = apply_health(
            &before,
            |slot| self.health.slot_health(route_name, slot),
            &now,
        );
        if reactions.is_empty() && after == before {
            self.critical.remove(route_name);
            return false;
        }
        let Some(route) = self.config.route(route_name).cloned() else {
            return false;
        };
        let mut critical = None;
        for reaction in reactions {
            let (trigger, action, reason) = match &reaction {
                Reaction::FailBack { from, .. } => (
                    "failback",
                    "switch",
                    format!(
                        "slot {from} unhealthy: {}",
                        self.slot_evidence(&route, from)
                    ),
                ),
                Reaction::DropCanary { slot, weight } => {
                    let reason = format!(
                        "canary slot {slot} (weight {weight}) unhealthy: {}",
                        self.slot_evidence(&route, slot)
                    );
                    // A rollout of that slot is over: health is one of its
                    // verdicts.
                    if let Some(rollout) = after.rollout.as_mut().filter(|r| r.in_progress()) {
                        rollout.end(
                            crate::rollout::Phase::Aborted,
                            format!("health check failed: {reason}"),
                        );
                        self.rollout_clocks.remove(route_name);
                        ("rollout", "rollout abort", reason)
                    } else {
                        ("failback", "canary", reason)
                    }
                }
                Reaction::ApplyPending { to, .. } => (
                    "config",
                    "switch",
                    format!("held config switch applied: slot {to} is healthy"),
                ),
                Reaction::Critical { active, reason } => {
                    critical = Some(format!(
                        "active slot {active} is unhealthy ({}) and {reason}: still routing to it",
                        self.slot_evidence(&route, active)
                    ));
                    continue;
                }
            };
            tracing::warn!(route = route_name, trigger, action, "{reason}");
            self.record(&HistoryEntry {
                time: now.clone(),
                trigger: trigger.into(),
                uid: None,
                route: route_name.to_string(),
                action: action.into(),
                from: Some(describe(&before)),
                to: Some(describe(&after)),
                reason: Some(reason),
                result: "ok".into(),
                generation: Some(self.generation + 1),
            });
        }
        match critical {
            Some(reason) => {
                if self.critical.get(route_name) != Some(&reason) {
                    tracing::error!(route = route_name, "critical: {reason}");
                }
                self.critical.insert(route_name.to_string(), reason);
            }
            None => {
                self.critical.remove(route_name);
            }
        }
        let changed = after != before;
        if changed {
            self.routes.insert(route_name.to_string(), after);
            let _ = self.persist();
        }
        changed
    }

    /// `127.0.0.1:3001 connect: refused; 127.0.0.1:3002 status 500`.
    /// A rollback would put traffic on a previous slot whose every backend
    /// is known unhealthy (its version was stopped after the deploy, say):
    /// refused, like a `switch` to it, unless forced. A slot not checked
    /// yet is not refused: nothing says it is down.
    fn rollback_to_unhealthy(
        &mut self,
        route: &str,
        uid: Option<u32>,
        reason: &Option<String>,
    ) -> Option<Response> {
        let cfg = self.config.route(route)?;
        let state = self.routes.get(route)?;
        let previous = state.previous.as_deref()?;
        if self.slot_health(cfg, previous) != SlotHealth::Unhealthy {
            return None;
        }
        let message = format!(
            "the previous slot {previous:?} of route {route:?} is unhealthy ({}); nothing changed (--force rolls back anyway)",
            self.slot_evidence(cfg, previous)
        );
        let entry = HistoryEntry {
            time: now_rfc3339(),
            trigger: "admin".into(),
            uid,
            route: route.to_string(),
            action: "rollback".into(),
            from: Some(describe(state)),
            to: None,
            reason: reason.clone(),
            result: format!("refused: {message}"),
            generation: None,
        };
        self.record(&entry);
        tracing::warn!(route, "{message}");
        Some(Response::error(ErrorKind::Unhealthy, message))
    }

    /// The first `EVIDENCE_BACKENDS` backends of the slot and their last
    /// checks; the others are counted, so that a history entry about a slot
    /// of thousands stays a line.
    fn slot_evidence(&self, route: &RouteConfig, slot: &str) -> String {
        let backends = route.slots.get(slot).map(Vec::as_slice).unwrap_or(&[]);
        let mut evidence: Vec<String> = backends
            .iter()
            .take(EVIDENCE_BACKENDS)
            .map(|addr| {
                let last = self
                    .health
                    .get(&route.name, slot, *addr)
                    .and_then(|h| h.last.as_ref())
                    .map_or("no check yet".to_string(), |(check, _)| {
                        describe_check(check)
                    });
                format!("{addr} {last}")
            })
            .collect();
        if backends.len() > EVIDENCE_BACKENDS {
            evidence.push(format!(
                "and {} more backends",
                backends.len() - EVIDENCE_BACKENDS
            ));
        }
        evidence.join("; ")
    }

    fn handle(&mut self, request: Request, uid: Option<u32>) -> Response {
        match request {
            Request::Status { route } => self.status(route.as_deref()),
            Request::History { route, limit } => {
                let entries = self.history.recent(route.as_deref(), limit.unwrap_or(20));
                Response::ok(json!({ "entries": entries }))
            }
            Request::Reload {} => self.reload(ReloadTrigger::Admin, uid),
            Request::Drain { route, slot, .. } => match self.drain_load(&route, &slot) {
                Ok(load) => Response::ok(load),
                Err(response) => response,
            },
            Request::Switch {
                route,
                slot,
                timeout,
                force: _,
                reason,
            } => {
                // Reached with a healthy slot, or with --force: the timeout
                // is still checked so a typo is never ignored.
                if let Some(t) = &timeout {
                    if let Err(e) = humantime::parse_duration(t) {
                        return Response::error(
                            ErrorKind::BadRequest,
                            format!("bad timeout {t:?}: {e}; expected e.g. \"30s\""),
                        );
                    }
                }
                self.change(&route, "switch", uid, reason, |cfg, state, now| {
                    decisions::switch(cfg, state, &slot, DecisionSource::Admin, now)
                })
            }
            Request::Rollback {
                route,
                reason,
                force,
            } => {
                if !force {
                    if let Some(refusal) = self.rollback_to_unhealthy(&route, uid, &reason) {
                        return refusal;
                    }
                }
                self.change(&route, "rollback", uid, reason, decisions::rollback)
            }
            Request::Rollout {
                action,
                route,
                slot,
                reason,
            } => {
                if self.config.route(&route).is_none() {
                    return self.no_such_route(&route);
                }
                self.rollout_command(action, &route, slot, uid, reason)
            }
            Request::Canary {
                route,
                slot,
                weight,
                reason,
            } => self.change(&route, "canary", uid, reason, |cfg, state, now| {
                decisions::set_canary(cfg, state, &slot, weight, now)
            }),
        }
    }

    /// Applies one decision to one route: publish, persist, record.
    fn change(
        &mut self,
        route_name: &str,
        action: &str,
        uid: Option<u32>,
        reason: Option<String>,
        decide: impl FnOnce(&RouteConfig, &RouteState, &str) -> Result<RouteState, Refusal>,
    ) -> Response {
        let Some(route) = self.config.route(route_name) else {
            return self.no_such_route(route_name);
        };
        let Some(before) = self.routes.get(route_name).cloned() else {
            return self.no_such_route(route_name);
        };
        let now = now_rfc3339();
        let mut entry = HistoryEntry {
            time: now.clone(),
            trigger: "admin".into(),
            uid,
            route: route_name.to_string(),
            action: action.to_string(),
            from: Some(describe(&before)),
            to: None,
            reason,
            result: String::new(),
            generation: None,
        };
        let after = match decide(route, &before, &now) {
            Ok(after) => after,
            Err(refusal) => {
                entry.result = format!("refused: {refusal}");
                self.record(&entry);
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
            self.publish();
        }
        let persisted = if changed { self.persist() } else { Ok(()) };
        entry.to = Some(describe(&after));
        entry.generation = Some(self.generation);
        entry.result = if changed {
            "ok".into()
        } else {
            "ok: no change".into()
        };
        self.record(&entry);
        tracing::info!(
            route = route_name,
            action,
            from = entry.from,
            to = entry.to,
            generation = self.generation,
            "route changed"
        );
        let mut result = json!({
            "route": route_name,
            "changed": changed,
            "generation": self.generation,
            "active": after.active,
            "previous": after.previous,
            "canary": after.canary,
        });
        if let Err(warning) = persisted {
            result["warning"] = Value::String(warning);
        }
        Response::ok(result)
    }

    fn no_such_route(&self, name: &str) -> Response {
        let known: Vec<&str> = self.config.routes.iter().map(|r| r.name.as_str()).collect();
        Response::error(
            ErrorKind::NotFound,
            format!("no route {name:?}; routes are {}", known.join(", ")),
        )
    }

    /// Re-reads the config file. An invalid file changes nothing but the
    /// reported error; a valid one is applied in one publish — after the
    /// longer settle time when it came from the watcher and removes
    /// something (see [`settle`]). `switchyard reload` applies the file as
    /// it is at once.
    fn reload(&mut self, trigger: ReloadTrigger, uid: Option<u32>) -> Response {
        let trigger_name = match trigger {
            ReloadTrigger::File => "config",
            ReloadTrigger::Admin => "admin",
        };
        let mut entry = HistoryEntry {
            time: now_rfc3339(),
            trigger: trigger_name.into(),
            uid,
            route: ALL_ROUTES.into(),
            action: "reload".into(),
            from: Some(format!("generation {}", self.generation)),
            to: None,
            reason: None,
            result: String::new(),
            generation: None,
        };
        let config = match switchyard_conf::load(&self.config_path) {
            Ok(config) => config,
            Err(errors) => {
                self.withdraw_pending_edit("the file no longer parses");
                let message = errors.to_string();
                tracing::error!(file = %self.config_path.display(), "config rejected, still running the last good config:\n{message}");
                entry.result = format!("failed: {} error(s)", errors.0.len());
                self.record(&entry);
                count_reload("error");
                self.config_error = Some(message.clone());
                return Response::error(
                    ErrorKind::InvalidConfig,
                    format!("config rejected, still running the last good config:\n{message}"),
                );
            }
        };

        if config == self.config && self.config_error.is_none() {
            // Editors and `touch` fire events without changing anything:
            // publishing anyway would only churn the upstream pools. An
            // editor that truncated the file and wrote it again lands here
            // too, after its truncated state was held.
            self.withdraw_pending_edit("the file is back to the running config");
            count_reload("unchanged");
            return Response::ok(json!({
                "generation": self.generation,
                "routes": self.config.routes.len(),
                "needs_restart": self.needs_restart,
                "changed": false,
            }));
        }
        if let ReloadTrigger::File = trigger {
            let removals = switchyard_conf::shrink::removals(&self.config, &config);
            if !removals.is_empty() {
                return self.hold_edit(config, removals);
            }
        }
        match trigger {
            ReloadTrigger::File => self.withdraw_pending_edit("a later edit replaced it"),
            ReloadTrigger::Admin => {
                self.withdraw_pending_edit("`switchyard reload` applied the file")
            }
        }
        self.apply_config(config, entry, uid)
    }

    /// Applies a valid config: every route's decision (runtime decisions
    /// kept unless the file changed that value), health tracking, one
    /// publish, the state file and `entry` in the history.
    fn apply_config(
        &mut self,
        config: Config,
        mut entry: HistoryEntry,
        uid: Option<u32>,
    ) -> Response {
        let now = entry.time.clone();
        self.needs_restart = needs_restart(&self.running_server, &config.server);
        if listen_of(self.tls_config.borrow().as_ref()) != listen_of(config.tls.as_ref()) {
            self.needs_restart.push("tls.listen".to_string());
        }
        for setting in &self.needs_restart {
            tracing::warn!(setting, "config edit needs a restart to take effect");
        }
        let mut routes = BTreeMap::new();
        for route in &config.routes {
            let prior = self.routes.get(&route.name).cloned();
            let prior = prior.as_ref();
            let mut next = decisions::after_config_load(route, prior, &now);
            if let Some(prior) = prior.filter(|p| p.active != next.active) {
                let health = self.slot_health(route, &next.active);
                if health != SlotHealth::Healthy {
                    next = decisions::hold_switch(prior, next);
                    let held = next.pending.clone().unwrap_or_default();
                    tracing::warn!(
                        route = route.name,
                        slot = held,
                        "config switch held until the slot is healthy"
                    );
                    self.record(&config_switch_entry(
                        &now,
                        uid,
                        &route.name,
                        describe(prior),
                        format!("active={held}"),
                        format!(
                            "held: slot {held} is {}; applied when it turns healthy",
                            health.as_str()
                        ),
                        None,
                    ));
                }
            }
            if let Some(prior) = prior.filter(|p| p.active != next.active) {
                self.record(&config_switch_entry(
                    &now,
                    uid,
                    &route.name,
                    describe(prior),
                    describe(&next),
                    "ok".into(),
                    Some(self.generation + 1),
                ));
            }
            routes.insert(route.name.clone(), next);
        }
        self.routes = routes;
        self.tls_config.send_if_modified(|running| {
            let Some(edited) = &config.tls else {
                // Without `[tls]` now: the listeners stay until a restart,
                // serving the certificates they have.
                return false;
            };
            match running {
                // Started without `[tls]`: nothing listens for it until a
                // restart (`needs_restart` says so).
                None => false,
                Some(running) if running.certificates == edited.certificates => false,
                // Only the certificates: `listen` stays what is bound.
                Some(running) => {
                    running.certificates = edited.certificates.clone();
                    true
                }
            }
        });
        self.config = config;
        self.config_error = None;
        self.reloads += 1;
        count_reload("ok");
        self.track_backends();
        self.publish();
        let persisted = self.persist();
        entry.to = Some(format!("generation {}", self.generation));
        entry.generation = Some(self.generation);
        entry.result = "ok".into();
        self.record(&entry);
        tracing::info!(
            generation = self.generation,
            routes = self.config.routes.len(),
            "config reloaded"
        );
        let mut result = json!({
            "generation": self.generation,
            "routes": self.config.routes.len(),
            "needs_restart": self.needs_restart,
        });
        if let Err(warning) = persisted {
            result["warning"] = Value::String(warning);
        }
        Response::ok(result)
    }

    /// Builds the next table from the config and the runtime decisions, and
    /// makes it the one new requests see.
    fn publish(&mut self) {
        self.end_overridden_rollouts();
        self.generation += 1;
        // Built from the health as it is now: no health publish is owed.
        self.health_changes.published(tokio::time::Instant::now());
        if self.renew_cohorts() {
            // Cookies handed out from now on name the new cohort: it must
            // survive a restart. A failure is logged by persist.
            let _ = self.persist();
        }
        // Every change of a route's active slot goes through here, with the
        // source that decided it: count it once, by that source.
        for (route, state) in &self.routes {
            let before = self
                .published_active
                .insert(route.clone(), state.active.clone());
            if before.is_some_and(|b| b != state.active) {
                let trigger = serde_json::to_value(state.source)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                *self.switches.entry((route.clone(), trigger)).or_default() += 1;
            }
        }
        for route in &self.config.routes {
            let state = &self.routes[&route.name];
            let loads = self.loads.entry(route.name.clone()).or_default();
            for slot in route.slots.keys() {
                let load = loads
                    .entry(slot.clone())
                    .or_insert_with(|| Arc::new(SlotLoad::new(&route.name, slot)));
                // Upgraded connections left on a slot that no longer gets
                // new traffic are closed `drain_timeout` after this.
                load.set_serving(
                    *slot == state.active
                        || state
                            .canary
                            .as_ref()
                            .is_some_and(|c| c.slot == *slot && c.weight > 0),
                );
            }
        }
        let specs = self
            .config
            .routes
            .iter()
            .map(|route| {
                let mut spec = route_spec(route, &self.routes[&route.name], |slot, addr| {
                    self.backend_state(&route.name, slot, addr)
                });
                spec.loads = self.loads[&route.name].clone();
                spec.unhealthy = route
                    .slots
                    .keys()
                    .filter(|slot| self.slot_health(route, slot) == SlotHealth::Unhealthy)
                    .cloned()
                    .collect();
                spec
            })
            .collect();
        let server = &self.config.server;
        let timeouts = Timeouts {
            upstream_connect: server.connect_timeout,
            upstream_read: server.read_timeout,
            client_keepalive: server.keepalive_timeout,
            client_header: server.header_timeout,
            client_send: server.send_timeout,
            upgrade_idle: server.upgrade_idle_timeout,
            drain: server.drain_timeout,
        };
        let table = RoutingTable::build(self.generation, specs).with_timeouts(timeouts);
        self.table.store(Arc::new(table));
    }

    /// Gives each canary that started, or moved to another slot, since the
    /// last publish a new cohort, so its clients are drawn afresh and
    /// cookies of an earlier canary stop counting. The first publish keeps
    /// the cohort restored from the state file. True when one changed.
    fn renew_cohorts(&mut self) -> bool {
        let mut renewed = false;
        for (route, state) in self.routes.iter_mut() {
            let slot = state.canary.as_ref().map(|c| c.slot.clone());
            let before = self.published_canary.insert(route.clone(), slot.clone());
            let started = slot.is_some()
                && match before {
                    Some(before) => before != slot,
                    None => state.cohort == 0,
                };
            if started {
                state.cohort = new_cohort(state.cohort);
                renewed = true;
            }
        }
        renewed
    }

    /// Writes the state file. A failure does not undo the change (traffic
    /// matters more than the file): it is logged and returned as a warning.
    fn persist(&mut self) -> Result<(), String> {
        self.state_file.save(&self.routes).map_err(|e| {
            let warning = format!(
                "applied, but the state file {} could not be written ({e}); the change will not survive a restart",
                self.state_file.path().display()
            );
            tracing::error!("{warning}");
            warning
        })
    }

    fn record(&mut self, entry: &HistoryEntry) {
        if let Err(e) = self.history.append(entry) {
            tracing::error!("cannot append to the history: {e}");
        }
    }

    fn status(&self, only: Option<&str>) -> Response {
        if let Some(name) = only {
            if self.config.route(name).is_none() {
                return self.no_such_route(name);
            }
        }
        let routes: Vec<Value> = self
            .config
            .routes
            .iter()
            .filter(|r| only.is_none_or(|name| r.name == name))
            .map(|r| self.route_status(r))
            .collect();
        Response::ok(json!({
            "generation": self.generation,
            "config": {
                "file": self.config_path.display().to_string(),
                "error": self.config_error,
                "needs_restart": self.needs_restart,
                "reloads": self.reloads,
                "pending_edit": self.pending_edit_status(),
            },
            "state_warnings": self.state_warnings,
            "tls": self.tls_status.load_full().as_deref(),
            "routes": routes,
        }))
    }
}

/// The route as the data plane sees it. Each slot lists the backends that
/// are not known to be unhealthy; when that is none of them, all of them
/// (fail open: a request may still find one that recovered).
fn route_spec(
    route: &RouteConfig,
    state: &RouteState,
    backend_state: impl Fn(&str, SocketAddr) -> BackendState,
) -> RouteSpec {
    RouteSpec {
        name: route.name.clone(),
        hosts: route.hosts.clone(),
        path_prefix: route.path_prefix.clone(),
        slots: route
            .slots
            .iter()
            .map(|(name, backends)| {
                let usable: Vec<SocketAddr> = backends
                    .iter()
                    .copied()
                    .filter(|addr| backend_state(name, *addr) != BackendState::Unhealthy)
                    .collect();
                let usable = if usable.is_empty() {
                    backends.clone()
                } else {
                    usable
                };
                (name.clone(), usable)
            })
            .collect(),
        active: state.active.clone(),
        previous: state.previous.clone(),
        canary: state.canary.as_ref().map(|c| (c.slot.clone(), c.weight)),
        retries: route.retries,
        loads: BTreeMap::new(),
        unhealthy: Vec::new(),
        h2c: route.h2c_slots.iter().cloned().collect(),
        assignment: assignment_spec(route, state),
        https: HttpsSpec {
            redirect: route.redirect_https,
            hsts_max_age: route.hsts_max_age,
        },
        upgrades: route.upgrades.clone(),
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

impl Controller {
    fn route_status(&self, route: &RouteConfig) -> Value {
        let state = &self.routes[&route.name];
        let hosts: Vec<String> = route
            .hosts
            .iter()
            .map(|h| match h {
                HostPattern::Exact(name) => name.clone(),
                HostPattern::Suffix(suffix) => format!("*{suffix}"),
            })
            .collect();
        let slots: Vec<Value> = route
            .slots
            .iter()
            .map(|(name, backends)| {
                let backends: Vec<Value> = backends
                    .iter()
                    .map(|addr| self.backend_status(&route.name, name, *addr))
                    .collect();
                let load = self.loads.get(&route.name).and_then(|l| l.get(name));
                json!({
                    "name": name,
                    "health": self.slot_health(route, name).as_str(),
                    "in_flight": load.map_or(0, |l| l.requests()),
                    "upgraded": load.map_or(0, |l| l.upgraded()),
                    "backends": backends,
                })
            })
            .collect();
        json!({
            "name": route.name,
            "hosts": hosts,
            "path_prefix": route.path_prefix,
            "active": state.active,
            "previous": state.previous,
            "canary": state.canary,
            "pending": state.pending,
            "failed": state.failed,
            "critical": self.critical.get(&route.name),
            "decided_by": state.source,
            "changed_at": state.changed_at,
            "rollout": self.rollout_status(&route.name, state),
            "slots": slots,
        })
    }

    /// `{"address", "state", "since", "last_check": {"ok", "status" | "error", "latency_ms", "at"}}`
    fn backend_status(&self, route: &str, slot: &str, addr: SocketAddr) -> Value {
        let Some(health) = self.health.get(route, slot, addr) else {
            return json!({ "address": addr.to_string(), "state": BackendState::Unknown });
        };
        let last = health.last.as_ref().map(|(check, at)| {
            let (ok, latency, detail) = match check {
                Check::Pass { status, latency } => (true, latency, json!({ "status": status })),
                Check::Fail { failure, latency } => match failure {
                    Failure::Status(code) => (false, latency, json!({ "status": code })),
                    other => (false, latency, json!({ "error": other.to_string() })),
                },
            };
            let mut value = json!({
                "ok": ok,
                "latency_ms": latency.as_secs_f64() * 1000.0,
                "at": rfc3339(*at),
            });
            if let (Some(v), Some(d)) = (value.as_object_mut(), detail.as_object()) {
                v.extend(d.clone());
            }
            value
        });
        json!({
            "address": addr.to_string(),
            "state": health.state,
            "since": rfc3339(health.since),
            "last_check": last,
        })
    }
}

/// `pass 200 in 1.2ms`, `status 500 in 3.0ms`, `timed out in 1000.0ms`.
fn describe_check(check: &Check) -> String {
    match check {
        Check::Pass {
            status: Some(code),
            latency,
        } => {
            format!("pass {code} in {:.1}ms", latency.as_secs_f64() * 1000.0)
        }
        Check::Pass {
            status: None,
            latency,
        } => {
            format!("connect ok in {:.1}ms", latency.as_secs_f64() * 1000.0)
        }
        Check::Fail { failure, latency } => {
            format!("{failure} in {:.1}ms", latency.as_secs_f64() * 1000.0)
        }
    }
}

/// A cohort that differs from `old`: the clock in milliseconds, which also
/// differs across restarts.
fn new_cohort(old: u64) -> u64 {
    let millis = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as u64);
    if millis == old {
        millis + 1
    } else {
        millis
    }
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

/// The history entry of a config edit of `active`.
fn config_switch_entry(
    now: &str,
    uid: Option<u32>,
    route: &str,
    from: String,
    to: String,
    result: String,
    generation: Option<u64>,
) -> HistoryEntry {
    HistoryEntry {
        time: now.to_string(),
        trigger: "config".into(),
        uid,
        route: route.to_string(),
        action: "switch".into(),
        from: Some(from),
        to: Some(to),
        reason: Some("active edited in the config file".into()),
        result,
        generation,
    }
}

/// `active=green canary=blue:10`, for history entries.
fn describe(state: &RouteState) -> String {
    match &state.canary {
        Some(c) => format!("active={} canary={}:{}", state.active, c.slot, c.weight),
        None => format!("active={}", state.active),
    }
}

/// The `[server]` settings that differ and cannot change while running.
fn needs_restart(running: &ServerConfig, edited: &ServerConfig) -> Vec<String> {
    let mut changed = Vec::new();
    if running.listen != edited.listen {
        changed.push("server.listen".to_string());
    }
    if running.threads != edited.threads {
        changed.push("server.threads".to_string());
    }
    if running.admin_socket != edited.admin_socket {
        changed.push("server.admin_socket".to_string());
    }
    if running.admin_uids != edited.admin_uids {
        changed.push("server.admin_uids".to_string());
    }
    if running.state_dir != edited.state_dir {
        changed.push("server.state_dir".to_string());
    }
    if running.max_connections != edited.max_connections {
        changed.push("server.max_connections".to_string());
    }
    if running.admin_http != edited.admin_http {
        changed.push("server.admin_http".to_string());
    }
    if running.log_format != edited.log_format {
        changed.push("server.log_format".to_string());
    }
    if running.access_log != edited.access_log {
        changed.push("server.access_log".to_string());
    }
    if running.h2c != edited.h2c {
        changed.push("server.h2c".to_string());
    }
    changed
}

/// The TLS listen addresses of a `[tls]`, none without one.
fn listen_of(tls: Option<&TlsConfig>) -> &[SocketAddr] {
    tls.map_or(&[], |tls| tls.listen.as_slice())
}

/// `switchyard_config_reloads_total{result}`: ok (applied), error (rejected,
/// the last good config still runs), unchanged (nothing to apply) or held
/// (an edit that removes something, waiting for the file to stay that way).
fn count_reload(result: &'static str) {
    ::metrics::counter!(metrics::CONFIG_RELOADS, "result" => result).increment(1);
}
