//! The control plane's core: every decision switchyard takes, as one
//! synchronous state machine.
//!
//! [`Core::apply`] takes an [`Event`] (an admin command, a config file that
//! was read, health checks, the clock passing a deadline, a certificate
//! load) and the time it happened, changes the state, and returns what the
//! outside world must do about it as [`Effect`]s: publish a routing table,
//! save the state file, append to the history, answer a command, read the
//! config file, log, count. The core does no I/O, reads no clock and knows
//! nothing of tokio, so its tests drive it with a fake clock in
//! microseconds (`tests.rs`). The shell (`crate::controller`) owns the
//! files, sockets, timers and the `ArcSwap`, and carries effects out in
//! order. When the core wants to be woken, [`Core::next_wakeup`] says when.
//!
//! In debug builds every `apply` ends by checking the invariants
//! (`invariants.rs`). `LIFECYCLE.md` beside this file draws the states.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use switchyard_conf::{Config, ServerConfig, TlsConfig};

use crate::health::monitor::BackendKey;
use crate::health::{Check, HealthBook, HealthChanges, Thresholds};
use crate::history::{Caller, HistoryEntry};
use crate::notify::{Delivered, Notice, NoticeKind};
use crate::protocol::{NotifyTargetStatus, Request, Response, TlsStatus};
use crate::state_file::{LoadedState, RouteState};
use crate::table::{RoutingTable, SlotLoad};

mod cluster;
mod commands;
mod guard;
mod health;
mod invariants;
mod names;
mod parked;
mod publish;
mod reload;
mod rollouts;
mod settle;
mod status;
#[cfg(test)]
mod tests;
mod waits;

pub use cluster::same_decision;
pub use reload::ReloadTrigger;

/// The time an event happened: the monotonic instant for deadlines and
/// the wall clock for what people read (history, `changed_at`). The shell
/// reads the clock; tests make it up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub at: Instant,
    pub wall: SystemTime,
}

impl Now {
    /// The same moment `elapsed` later.
    pub fn after(self, elapsed: Duration) -> Now {
        Now {
            at: self.at + elapsed,
            wall: self.wall + elapsed,
        }
    }

    /// RFC 3339 UTC to the second, as history entries and the state file
    /// write time.
    pub fn rfc3339(self) -> String {
        rfc3339(self.wall)
    }
}

pub(crate) fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

/// Names a command's answer that the shell is waiting to send.
pub type ReplyTo = u64;

/// What the core reacts to.
#[derive(Debug)]
pub enum Event {
    /// An admin command from `caller`, answered by an
    /// [`Effect::Reply`] to `reply` — now, or later for a `switch` that
    /// waits for its slot or a `drain --wait`.
    Command {
        reply: ReplyTo,
        request: Request,
        caller: Caller,
    },
    /// The config file was read because of `trigger`.
    ConfigRead {
        trigger: ReloadTrigger,
        result: Result<Box<Config>, ConfigRejected>,
    },
    /// Health checks of backends, from probes or from real requests that
    /// could not connect, counted together.
    Checks(Vec<(BackendKey, Check)>),
    /// The time [`Core::next_wakeup`] asked for has come (or passed).
    Tick,
    /// What the certificate loader last did, shown in `status`.
    TlsLoaded(TlsStatus),
    /// How delivering a notice to a `[[notify]]` target went.
    Notified(Delivered),
    /// What the ACME manager did: every host's state, and the order that
    /// just failed (host, why), if one did.
    AcmeReport {
        hosts: Vec<crate::protocol::AcmeHostStatus>,
        failed: Option<(String, String)>,
    },
    /// Backend names were looked up again: `config` is the running config
    /// with its slots' new addresses, when they changed; `names` is what
    /// `status` shows of every name.
    NamesResolved {
        config: Option<Box<Config>>,
        names: BTreeMap<crate::names::NameKey, crate::names::NameStatus>,
    },
    /// `[cluster]`: make these decisions (route → state) this node's,
    /// because `why` (another node wrote them; a write of ours lost).
    /// `whole`: take their record of the config file too (going back on a
    /// change etcd did not take); else this node keeps its own.
    Adopt {
        routes: BTreeMap<String, RouteState>,
        why: String,
        whole: bool,
    },
    /// `[cluster]`: whether this node takes the automatic decisions
    /// (it holds the leader key). Without `[cluster]` it always does.
    Deciding(bool),
    /// `[cluster]`: what `status` shows of the cluster.
    ClusterView(crate::protocol::ClusterStatus),
}

/// A config file that does not parse or validate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigRejected {
    /// Every error, one per line, for the log and the reply.
    pub message: String,
    pub errors: usize,
}

/// What the shell must do, in the order given.
#[derive(Debug)]
pub enum Effect {
    /// Make this the table new requests see.
    Publish(Arc<RoutingTable>),
    /// Write the state file. A failure does not undo anything (traffic
    /// matters more): the shell logs it and adds a warning to the replies
    /// that follow in the same batch.
    SaveState(BTreeMap<String, RouteState>),
    AppendHistory(HistoryEntry),
    Reply {
        to: ReplyTo,
        response: Response,
    },
    /// Answer `history` from the history file: the newest `limit`
    /// entries of `route` (and the server-wide ones), or of every route.
    ReplyHistory {
        to: ReplyTo,
        route: Option<String>,
        limit: usize,
    },
    /// Read the config file and apply [`Event::ConfigRead`] with this
    /// trigger.
    ReadConfig(ReloadTrigger),
    /// A config was applied: probe exactly the backends of
    /// [`Core::config`], and notify its `[[notify]]` targets.
    ConfigApplied,
    /// The `[tls]` certificates to serve changed.
    ServeCertificates(TlsConfig),
    Log(LogLine),
    /// `switchyard_config_reloads_total{result}`.
    CountReload(&'static str),
    /// Tell the `[[notify]]` targets.
    Notify(Notice),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: Level,
    pub route: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// All of switchyard's control state.
pub struct Core {
    config_path: PathBuf,
    config: Config,
    /// The `[server]` the process started with: what listeners really are.
    running_server: ServerConfig,
    /// `[cluster]` as the process started with it: joining or leaving a
    /// cluster needs a restart.
    running_cluster: Option<switchyard_conf::ClusterConfig>,
    /// `[tls]` as served: its `listen` is what is bound, its certificates
    /// follow the file.
    tls: Option<TlsConfig>,
    /// What the certificate loader last reported.
    tls_status: Option<TlsStatus>,
    /// What the ACME manager last reported, host by host.
    acme_status: Vec<crate::protocol::AcmeHostStatus>,
    /// The last reload's errors, while the file stays invalid.
    config_error: Option<String>,
    /// A valid edit that removes something, waiting (see `settle.rs`).
    pending_edit: Option<settle::PendingEdit>,
    /// Settings edited in the file that only a restart applies.
    needs_restart: Vec<String>,
    /// Config reloads applied since start.
    reloads: u64,
    routes: BTreeMap<String, RouteState>,
    generation: u64,
    /// Problems found while restoring the state file, shown in `status`.
    state_warnings: Vec<String>,
    /// Every configured backend's health.
    health: HealthBook,
    /// Route → slot → its checks' `rise` and `fall`.
    thresholds: BTreeMap<String, BTreeMap<String, Thresholds>>,
    /// What health changes still ask for: routes to react, a paced publish.
    health_changes: HealthChanges,
    /// Routes whose active slot is unhealthy with nowhere to fail back to,
    /// and why.
    critical: BTreeMap<String, String>,
    /// Commands waiting: switches for a healthy slot, drains for an empty
    /// one.
    parked: parked::Parked,
    /// Route → slot → its in-flight counters and statistics, shared with
    /// every table published and with the data plane.
    loads: BTreeMap<String, BTreeMap<String, Arc<SlotLoad>>>,
    /// What the last publish saw, to count switches, renew canary cohorts
    /// and keep upstream pools.
    published: publish::Published,
    /// Route → its rollout's clock and analysis window.
    rollout_clocks: BTreeMap<String, rollouts::RolloutClock>,
    last_rollout_tick: Option<Instant>,
    /// Route → the watch after its last switch, while it lasts.
    guards: BTreeMap<String, guard::Guard>,
    last_guard_tick: Option<Instant>,
    /// Routes whose next switch starts no guard (`switch --no-guard`).
    skip_guard: std::collections::BTreeSet<String>,
    /// `[[notify]]` target → how its deliveries went, for `status`.
    notify_status: BTreeMap<String, NotifyTargetStatus>,
    /// Route → its `[route.limits]` state, kept across publishes and
    /// replaced only when the route's limit changes.
    rate_limits: BTreeMap<String, std::sync::Arc<crate::table::RateLimit>>,
    /// Each `protocol = "https"` slot's TLS client, by route and slot:
    /// kept while its settings stay the same (see `update_backend_tls`).
    backend_tls: BTreeMap<(String, String), std::sync::Arc<crate::tls_client::BackendTls>>,
    /// What `status` shows of each backend name.
    names: BTreeMap<crate::names::NameKey, crate::names::NameStatus>,
    /// Whether this node takes automatic decisions (fail-back, guard
    /// verdicts, rollout steps): always without `[cluster]`, only while it
    /// leads with it.
    deciding: bool,
    /// Routes whose decision the publish under way takes from the cluster.
    adopting: std::collections::BTreeSet<String>,
    /// What `status` shows of `[cluster]`; `None` without it.
    cluster: Option<crate::protocol::ClusterStatus>,
    /// `[cluster]`: every other node's counters by route and slot, from
    /// its last fresh report.
    peer_counters:
        BTreeMap<String, BTreeMap<String, BTreeMap<String, crate::table::StatsSnapshot>>>,
    /// When the core was made: the rollout clock's first reference.
    started: Instant,
    /// What this `apply` asks of the shell so far.
    effects: Vec<Effect>,
}

impl Core {
    /// The core for `config`, with the decisions `loaded` from the state
    /// file restored over it; the effects publish the first table, start
    /// the probes and save the state.
    pub fn new(
        config: Config,
        config_path: PathBuf,
        loaded: LoadedState,
        now: Now,
    ) -> (Core, Vec<Effect>) {
        let changed_at = now.rfc3339();
        let routes = config
            .routes
            .iter()
            .map(|r| {
                let state =
                    crate::decisions::after_config_load(r, loaded.routes.get(&r.name), &changed_at);
                (r.name.clone(), state)
            })
            .collect();
        let mut core = Core {
            config_path,
            running_server: config.server.clone(),
            running_cluster: config.cluster.clone(),
            tls: config.tls.clone(),
            tls_status: None,
            acme_status: Vec::new(),
            config,
            config_error: None,
            pending_edit: None,
            needs_restart: Vec::new(),
            reloads: 0,
            routes,
            generation: 0,
            state_warnings: loaded.warnings,
            health: HealthBook::default(),
            thresholds: BTreeMap::new(),
            health_changes: HealthChanges::default(),
            critical: BTreeMap::new(),
            parked: parked::Parked::default(),
            loads: BTreeMap::new(),
            published: publish::Published::default(),
            rollout_clocks: BTreeMap::new(),
            last_rollout_tick: None,
            guards: BTreeMap::new(),
            last_guard_tick: None,
            skip_guard: Default::default(),
            notify_status: BTreeMap::new(),
            rate_limits: BTreeMap::new(),
            backend_tls: BTreeMap::new(),
            names: BTreeMap::new(),
            deciding: true,
            adopting: Default::default(),
            cluster: None,
            peer_counters: BTreeMap::new(),
            started: now.at,
            effects: Vec::new(),
        };
        core.track_backends(now);
        core.publish(now);
        core.restore_guards(now);
        core.save();
        core.check_invariants(now);
        let effects = std::mem::take(&mut core.effects);
        (core, effects)
    }

    /// Takes one event at `now`; returns what the shell must do.
    pub fn apply(&mut self, event: Event, now: Now) -> Vec<Effect> {
        match event {
            Event::Command {
                reply,
                request,
                caller,
            } => self.command(reply, request, caller, now),
            Event::ConfigRead { trigger, result } => self.config_read(trigger, result, now),
            Event::Checks(checks) => self.checks(checks, now),
            Event::Tick => self.tick(now),
            Event::TlsLoaded(status) => self.tls_loaded(status, now),
            Event::Notified(delivered) => self.notified(delivered, now),
            Event::NamesResolved { config, names } => self.names_resolved(config, names, now),
            Event::AcmeReport { hosts, failed } => self.acme_report(hosts, failed, now),
            Event::Adopt { routes, why, whole } => self.adopt(routes, &why, whole, now),
            Event::Deciding(deciding) => self.set_deciding(deciding, now),
            Event::ClusterView(status) => self.set_cluster_status(status, now),
        }
        self.check_invariants(now);
        std::mem::take(&mut self.effects)
    }

    /// When the core next needs an [`Event::Tick`]: the earliest of a
    /// waiting command's deadline or poll, a held edit's settle time, a
    /// paced health publish and a running rollout's clock. `None`: only
    /// another event changes anything.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let rollout = (self.deciding && self.rollouts_in_progress())
            .then(|| self.last_rollout_tick.unwrap_or(self.started) + rollouts::ROLLOUT_TICK);
        [
            self.parked.next_wakeup(),
            self.pending_edit
                .as_ref()
                .and_then(settle::PendingEdit::wakeup),
            self.health_changes.publish_due(),
            rollout,
            self.guard_wakeup().filter(|_| self.deciding),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The routing table generation in force.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The config in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Every time the clock passes something the core waits for.
    fn tick(&mut self, now: Now) {
        self.expire_parked(now);
        self.poll_drains(now);
        if let Some(pending) = self
            .pending_edit
            .as_mut()
            .filter(|p| p.wakeup().is_some_and(|at| at <= now.at))
        {
            pending.reading = true;
            self.effects
                .push(Effect::ReadConfig(ReloadTrigger::Settled));
        }
        if self
            .health_changes
            .publish_due()
            .is_some_and(|due| due <= now.at)
        {
            self.publish(now);
        }
        let rollout_due = self
            .last_rollout_tick
            .is_none_or(|last| now.at >= last + rollouts::ROLLOUT_TICK);
        if self.deciding && self.rollouts_in_progress() && rollout_due {
            self.last_rollout_tick = Some(now.at);
            self.tick_rollouts(now);
        }
        if self.deciding && self.guard_wakeup().is_some_and(|at| at <= now.at) {
            self.tick_guards(now);
        }
    }

    /// Writes the state file (an effect).
    fn save(&mut self) {
        self.effects.push(Effect::SaveState(self.routes.clone()));
    }

    fn record(&mut self, entry: HistoryEntry) {
        self.effects.push(Effect::AppendHistory(entry));
    }

    fn reply(&mut self, to: ReplyTo, response: Response) {
        self.effects.push(Effect::Reply { to, response });
    }

    /// Tells the `[[notify]]` targets of `kind` on `route`.
    fn notify(
        &mut self,
        kind: NoticeKind,
        route: Option<&str>,
        slots: (Option<&str>, Option<&str>),
        evidence: &str,
        now: Now,
    ) {
        self.effects.push(Effect::Notify(Notice {
            event: kind,
            route: route.map(str::to_string),
            from: slots.0.map(str::to_string),
            to: slots.1.map(str::to_string),
            evidence: evidence.to_string(),
            time: now.rfc3339(),
        }));
    }

    fn tls_loaded(&mut self, status: TlsStatus, now: Now) {
        if let Some(error) = &status.last_load.error {
            let evidence =
                format!("certificate reload rejected, the previous ones still serve: {error}");
            self.notify(
                NoticeKind::CertificateReloadFailed,
                None,
                (None, None),
                &evidence,
                now,
            );
        }
        self.tls_status = Some(status);
    }

    fn acme_report(
        &mut self,
        hosts: Vec<crate::protocol::AcmeHostStatus>,
        failed: Option<(String, String)>,
        now: Now,
    ) {
        if let Some((host, error)) = failed {
            let evidence = format!(
                "the certificate order for {host} failed, the current certificate (if any) still serves: {error}"
            );
            self.log(Level::Error, None, evidence.clone());
            self.notify(
                NoticeKind::CertificateOrderFailed,
                None,
                (None, None),
                &evidence,
                now,
            );
        }
        self.acme_status = hosts;
    }

    fn notified(&mut self, delivered: Delivered, now: Now) {
        let target = self
            .notify_status
            .entry(delivered.target.clone())
            .or_insert_with(|| NotifyTargetStatus {
                target: delivered.target.clone(),
                ..NotifyTargetStatus::default()
            });
        match delivered.result {
            Ok(()) => target.delivered += 1,
            Err(error) => {
                target.failed += 1;
                target.last_error = Some(error);
                target.last_error_at = Some(now.rfc3339());
            }
        }
    }

    fn log(&mut self, level: Level, route: Option<&str>, message: String) {
        self.effects.push(Effect::Log(LogLine {
            level,
            route: route.map(str::to_string),
            message,
        }));
    }
}

/// `active=green canary=blue:10`, for history entries and messages.
pub(crate) fn describe(state: &RouteState) -> String {
    match &state.canary {
        Some(c) => format!("active={} canary={}:{}", state.active, c.slot, c.weight),
        None => format!("active={}", state.active),
    }
}

/// Whether `slot` gets new traffic: it is active, or a canary with weight.
fn serves(state: &RouteState, slot: &str) -> bool {
    state.active == slot
        || state
            .canary
            .as_ref()
            .is_some_and(|c| c.slot == slot && c.weight > 0)
}
