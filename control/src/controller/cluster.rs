//! The Controller's side of `[cluster]`: the etcd I/O around the core.
//!
//! - **Writes.** A change the core makes to a route's decision takes effect
//!   on this node only once etcd took it: [`Controller::gate`] writes it by
//!   compare-and-swap on the revision this node last saw *before* the
//!   batch's effects (publish, state file, history, reply) are carried out.
//!   A lost race or an unreachable etcd undoes the change in the core (it
//!   takes the winner's decision, or goes back to its own before the
//!   batch) and the command is answered with why.
//! - **Reads.** [`follow`], a task of its own, reads every decision, then
//!   watches the prefix from the next revision, renews this node's lease,
//!   reports the node and tries to lead; the Controller adopts what it
//!   brings ([`Controller::cluster_message`]).
//! - **Fail static.** While etcd is unreachable the node serves the last
//!   decisions it knew, takes no automatic decision, and refuses commands
//!   unless `--local`; when etcd answers again it re-reads everything, and
//!   a `--local` change wins only if nobody changed the route since.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use switchyard_conf::ClusterConfig;
use tokio::sync::mpsc;

use super::{Controller, Message};
use crate::cluster::leader::Leadership;
use crate::cluster::store::{Change, Decision, Store, StoreError, Written};
use crate::core::{describe, same_decision, Effect, Event};
use crate::health::SlotHealth;
use crate::history::HistoryEntry;
use crate::protocol::{ClusterStatus, ErrorKind, NodeView, Request, Response};
use crate::state_file::RouteState;
use crate::table::StatsSnapshot;

/// A node that stops renewing loses its report and, if it led, the leader
/// key this long after.
const LEASE_TTL_SECONDS: i64 = 5;
/// How often the lease is renewed, the report written and the others read.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// How often the counters are read for the report (they are read off
/// every slot's atomics; the report goes out every second).
const COUNTERS_EVERY: Duration = Duration::from_secs(5);
/// How long a write may take before the change is refused and the
/// connection read again: the Controller waits for it.
const WRITE_DEADLINE: Duration = Duration::from_secs(2);
/// How long one report round (renew, try to lead, report, read the
/// others) may take before the member is given up for the next.
const REPORT_DEADLINE: Duration = Duration::from_secs(2);
/// History entries kept in etcd per route (the newest).
const HISTORY_KEPT: i64 = 1_000;
/// A report that did not change is written again this often, so
/// `status` shows when each node last reported.
const REPORT_HEARTBEAT: Duration = Duration::from_secs(10);
/// How long a lost connection waits before the next try.
const RETRY_EVERY: Duration = Duration::from_millis(500);

/// `switchyard_cluster_connected`: 1 while etcd answers.
pub const CLUSTER_CONNECTED: &str = "switchyard_cluster_connected";
/// `switchyard_cluster_leader`: 1 while this node takes the automatic
/// decisions.
pub const CLUSTER_LEADER: &str = "switchyard_cluster_leader";
/// `switchyard_cluster_writes_total{result}`: decisions written to etcd
/// (`ok`), lost to another node's (`conflict`), or not written
/// (`unavailable`).
pub const CLUSTER_WRITES: &str = "switchyard_cluster_writes_total";

/// `call`, given up after `deadline` as [`StoreError::TimedOut`]: an etcd
/// stream or a blackholed member can otherwise keep a caller waiting for
/// minutes.
async fn within<T>(
    deadline: Duration,
    call: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(deadline, call)
        .await
        .unwrap_or(Err(StoreError::TimedOut))
}

/// What the [`follow`] task tells the Controller.
pub(super) enum ClusterMessage {
    /// etcd answered: every decision it holds, and the connection to
    /// write with.
    Read {
        store: Box<Store>,
        decisions: BTreeMap<String, Decision>,
    },
    /// Decisions written since (by any node).
    Changes(Vec<Change>),
    /// Every node's report and the leader; `leading`: the leader key's
    /// `create_revision` while this node holds it.
    Report {
        nodes: Vec<NodeView>,
        leader: Option<String>,
        leading: Option<i64>,
    },
    /// etcd stopped answering.
    Down(String),
}

/// What the follow task reads of this node for its report.
#[derive(Default)]
pub(super) struct NodeProgress {
    generation: AtomicU64,
    revision: AtomicI64,
    /// Route → slot → health as this node sees it.
    slots: std::sync::Mutex<BTreeMap<String, BTreeMap<String, SlotHealth>>>,
    /// Route → slot → this node's counters, read at most every
    /// [`COUNTERS_EVERY`].
    counters: std::sync::Mutex<SlotCounters>,
    /// The Controller asks the follow task to read everything again (a
    /// write failed).
    resync: tokio::sync::Notify,
    /// Routes whose cluster decision this node cannot serve.
    not_applied: std::sync::Mutex<Vec<String>>,
}

type SlotCounters = BTreeMap<String, BTreeMap<String, StatsSnapshot>>;

/// A route's decision as etcd holds it, with this node's file record.
#[derive(Debug, Clone)]
struct Known {
    state: RouteState,
    /// `None`: not in etcd yet (or not read yet).
    revision: Option<i64>,
}

/// What made a batch of changes, which says how it may be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// An admin command; `local`: `--local`.
    Command { local: bool },
    /// This node's config file.
    Config,
    /// Health, the guard or a rollout's clock: only the leader writes it.
    Automatic,
    /// Taken from etcd: nothing to write.
    Adopted,
}

impl Origin {
    pub(super) fn of(event: &Event) -> Origin {
        match event {
            Event::Command { request, .. } => Origin::Command {
                local: request.local(),
            },
            Event::ConfigRead { .. } | Event::NamesResolved { .. } => Origin::Config,
            Event::Adopt { .. } => Origin::Adopted,
            _ => Origin::Automatic,
        }
    }
}

/// The Controller's view of the cluster.
pub(super) struct ClusterLink {
    config: ClusterConfig,
    /// Set once etcd first answered.
    store: Option<Store>,
    known: BTreeMap<String, Known>,
    /// etcd answered and was read since it last failed.
    connected: bool,
    error: Option<String>,
    disconnected_since: Option<SystemTime>,
    /// The leader key's `create_revision` while this node holds it.
    leading: Option<i64>,
    leader: Option<String>,
    nodes: Vec<NodeView>,
    /// Decisions this node serves that etcd has not taken yet.
    local_only: BTreeSet<String>,
    /// Routes whose cluster decision this node's config cannot serve.
    not_applied: BTreeSet<String>,
    /// Report rounds read since start.
    rounds: u64,
    /// The outage under way was logged.
    down_logged: bool,
    /// The newest revision applied.
    revision: i64,
    progress: Arc<NodeProgress>,
    /// When the counters were last read for the report.
    counters_read: Option<Instant>,
}

impl ClusterLink {
    /// The link for `config`, knowing `routes` (this node's decisions at
    /// start) as not yet confirmed by etcd; spawns the task that follows
    /// etcd.
    pub(super) fn start(
        config: &ClusterConfig,
        routes: &BTreeMap<String, RouteState>,
        mailbox: mpsc::WeakSender<Message>,
    ) -> ClusterLink {
        let progress = Arc::new(NodeProgress::default());
        tokio::spawn(follow(config.clone(), progress.clone(), mailbox));
        ::metrics::gauge!(CLUSTER_CONNECTED).set(0.0);
        ::metrics::gauge!(CLUSTER_LEADER).set(0.0);
        ClusterLink {
            config: config.clone(),
            store: None,
            known: routes
                .iter()
                .map(|(route, state)| {
                    let known = Known {
                        state: state.clone(),
                        revision: None,
                    };
                    (route.clone(), known)
                })
                .collect(),
            connected: false,
            error: Some("etcd not reached yet".to_string()),
            disconnected_since: Some(SystemTime::now()),
            leading: None,
            leader: None,
            nodes: Vec::new(),
            local_only: BTreeSet::new(),
            not_applied: BTreeSet::new(),
            rounds: 0,
            down_logged: false,
            revision: 0,
            progress,
            counters_read: None,
        }
    }

    /// What `status` shows.
    fn status(&self, generation: u64) -> ClusterStatus {
        let mut nodes = self.nodes.clone();
        if !nodes.iter().any(|n| n.node == self.config.node) {
            nodes.push(self.own_view(generation));
        }
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        let agree = self.connected
            && self.not_applied.is_empty()
            && nodes
                .iter()
                .all(|n| n.revision == self.revision && n.not_applied.is_empty());
        ClusterStatus {
            node: self.config.node.clone(),
            etcd: self.config.etcd.clone(),
            prefix: self.config.prefix.clone(),
            connected: self.connected,
            error: self.error.clone(),
            disconnected_since: self.disconnected_since.map(crate::core::rfc3339),
            leader: self.leader.clone(),
            revision: self.revision,
            local_only: self.local_only.iter().cloned().collect(),
            not_applied: self.not_applied.iter().cloned().collect(),
            rounds: self.rounds,
            nodes,
            agree,
        }
    }

    fn own_view(&self, generation: u64) -> NodeView {
        NodeView {
            node: self.config.node.clone(),
            revision: self.revision,
            generation,
            last_seen: crate::core::rfc3339(SystemTime::now()),
            leader: self.leading.is_some(),
            slots: BTreeMap::new(),
            counters: BTreeMap::new(),
            not_applied: self.not_applied.iter().cloned().collect(),
        }
    }

    /// etcd holds `state` for `route` at `revision`, and this node has it.
    fn know(&mut self, route: String, state: RouteState, revision: i64) {
        self.know_only(route, state, revision);
        self.saw_revision(revision);
    }

    /// etcd holds `state` for `route` at `revision`.
    fn know_only(&mut self, route: String, state: RouteState, revision: i64) {
        let revision = Some(revision);
        self.known.insert(route, Known { state, revision });
    }

    /// etcd holds no decision for `route` (any more).
    fn forget_revision(&mut self, route: &str) {
        if let Some(known) = self.known.get_mut(route) {
            known.revision = None;
        }
    }

    /// Why a change cannot be made while etcd does not answer.
    fn unreachable(&self) -> String {
        format!(
            "etcd cannot be reached ({}); nothing changed on any node. `--local` applies it on this node alone",
            self.error.as_deref().unwrap_or("not connected")
        )
    }

    fn saw_revision(&mut self, revision: i64) {
        self.revision = self.revision.max(revision);
        self.progress
            .revision
            .store(self.revision, Ordering::Relaxed);
    }
}

/// A route's change that was not written, and why.
struct Failed {
    route: String,
    /// The decision another node wrote first, which this node takes.
    winner: Option<RouteState>,
    why: String,
}

impl Controller {
    /// Writes the decisions this batch changed to etcd before its effects
    /// are carried out (see the module's doc). `before`: every route's
    /// decision before the batch, so that only what the batch itself
    /// changed is written. Returns what to carry out: `effects`, or, when
    /// a write failed, what is left of them followed by the core's return
    /// to what it should serve.
    pub(super) async fn gate(
        &mut self,
        origin: Origin,
        before: BTreeMap<String, RouteState>,
        mut effects: Vec<Effect>,
    ) -> Vec<Effect> {
        let Some(link) = self.cluster.as_mut() else {
            return effects;
        };
        if origin == Origin::Adopted {
            return effects;
        }
        let changed: Vec<(String, RouteState)> = self
            .core
            .route_states()
            .iter()
            .filter(|(route, state)| before.get(*route) != Some(*state))
            .filter(|(route, state)| {
                link.known.get(*route).is_none_or(|known| {
                    known.revision.is_none() || !same_decision(&known.state, state)
                })
            })
            .map(|(route, state)| (route.clone(), state.clone()))
            .collect();
        if changed.is_empty() {
            return effects;
        }
        // A command that waited (a switch for its slot's health) is
        // answered in the batch of the checks that let it through: it is
        // still the command's change.
        let answers_a_command = effects.iter().any(|e| matches!(e, Effect::Reply { .. }));
        let origin = match origin {
            Origin::Automatic if answers_a_command => Origin::Command { local: false },
            other => other,
        };
        let failed_all = |why: String| -> Vec<Failed> {
            changed
                .iter()
                .map(|(route, _)| Failed {
                    route: route.clone(),
                    winner: None,
                    why: why.clone(),
                })
                .collect()
        };
        if origin == (Origin::Command { local: true }) {
            if link.connected {
                let why =
                    "etcd is reachable: without --local the change reaches every node".to_string();
                return self.undo(failed_all(why), ErrorKind::Refused, &before, effects);
            }
            for (route, _) in changed {
                tracing::warn!(
                    route,
                    "applied on this node alone (--local) while etcd is unreachable; offered to etcd when it returns"
                );
                link.local_only.insert(route);
            }
            for effect in &mut effects {
                if let Effect::AppendHistory(entry) = effect {
                    let reason = entry.reason.take().unwrap_or_default();
                    entry.reason = Some(
                        format!("{reason} [--local: this node alone, etcd unreachable]")
                            .trim_start()
                            .to_string(),
                    );
                }
            }
            warn_replies(
                &mut effects,
                "applied on this node alone (--local): etcd is unreachable; the change is offered to etcd when it returns, and kept only if no other node changed the route meanwhile",
            );
            self.show_cluster();
            return effects;
        }
        let leader = match origin {
            Origin::Automatic => match link.leading {
                Some(created) => Some(created),
                None => {
                    let why = "only the leader takes automatic decisions".to_string();
                    return self.undo(failed_all(why), ErrorKind::Refused, &before, effects);
                }
            },
            _ => None,
        };
        let (true, Some(mut store)) = (link.connected, link.store.clone()) else {
            let why = link.unreachable();
            ::metrics::counter!(CLUSTER_WRITES, "result" => "unavailable")
                .increment(changed.len() as u64);
            return self.undo(
                failed_all(why),
                ErrorKind::ClusterUnavailable,
                &before,
                effects,
            );
        };
        // Every entry says which node made it; a route's entries go to
        // etcd with its decision.
        let mut history: BTreeMap<String, Vec<HistoryEntry>> = BTreeMap::new();
        for effect in &mut effects {
            if let Effect::AppendHistory(entry) = effect {
                entry.node = Some(link.config.node.clone());
                history
                    .entry(entry.route.clone())
                    .or_default()
                    .push(entry.clone());
            }
        }
        let mut failed = Vec::new();
        let mut kind = ErrorKind::Conflict;
        for (route, state) in changed {
            let seen = link.known.get(&route).and_then(|k| k.revision);
            let entries = history.get(&route).map_or(&[][..], Vec::as_slice);
            let write = store.write(&route, &state, seen, leader, entries);
            match within(WRITE_DEADLINE, write).await {
                Ok(Written::Done { revision }) => {
                    ::metrics::counter!(CLUSTER_WRITES, "result" => "ok").increment(1);
                    if !entries.is_empty() {
                        let (mut store, route) = (store.clone(), route.clone());
                        tokio::spawn(async move {
                            if let Err(error) = store.trim_history(&route, HISTORY_KEPT).await {
                                tracing::warn!(route, "cannot trim the history in etcd: {error}");
                            }
                        });
                    }
                    link.know(route, state, revision);
                }
                Ok(Written::Lost { current }) => {
                    ::metrics::counter!(CLUSTER_WRITES, "result" => "conflict").increment(1);
                    let why = format!(
                        "another node changed route {route:?} meanwhile{}; this node has that decision now: look at `status` and ask again",
                        current
                            .as_ref()
                            .map(|c| format!(" (now {})", describe(&c.state)))
                            .unwrap_or_default()
                    );
                    match &current {
                        Some(current) => {
                            link.know(route.clone(), current.state.clone(), current.revision)
                        }
                        // Deleted from etcd: the next write creates it.
                        None => link.forget_revision(&route),
                    }
                    failed.push(Failed {
                        route,
                        winner: current.map(|c| c.state),
                        why,
                    });
                }
                Err(error) => {
                    ::metrics::counter!(CLUSTER_WRITES, "result" => "unavailable").increment(1);
                    kind = ErrorKind::ClusterUnavailable;
                    // Whatever went wrong, read everything again.
                    link.progress.resync.notify_one();
                    let why = format!("etcd did not take the change ({error}); nothing changed on any node; ask again");
                    failed.push(Failed {
                        route,
                        winner: None,
                        why,
                    });
                }
            }
        }
        if failed.is_empty() {
            return effects;
        }
        self.undo(failed, kind, &before, effects)
    }

    /// Answers the batch's commands with why, drops its notices and the
    /// failed routes' history, and has the core serve, for each failed
    /// route: the decision that won (another node's), else what this node
    /// served before the batch. A route new in this batch that etcd never
    /// had stays as it is, to be written when etcd answers.
    fn undo(
        &mut self,
        failed: Vec<Failed>,
        kind: ErrorKind,
        before: &BTreeMap<String, RouteState>,
        effects: Vec<Effect>,
    ) -> Vec<Effect> {
        let link = self.cluster.as_mut().expect("undo needs [cluster]");
        let routes: BTreeSet<String> = failed.iter().map(|f| f.route.clone()).collect();
        let message = failed
            .iter()
            .map(|f| f.why.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        tracing::warn!("not applied: {message}");
        let mut kept: Vec<Effect> = effects
            .into_iter()
            .filter_map(|effect| match effect {
                // Other routes' changes in the batch still publish; the
                // core publishes again when it goes back.
                Effect::Notify(_) => None,
                Effect::AppendHistory(entry) if routes.contains(&entry.route) => None,
                Effect::Reply { to, .. } => Some(Effect::Reply {
                    to,
                    response: Response::error(kind, &message),
                }),
                other => Some(other),
            })
            .collect();
        let mut winners = BTreeMap::new();
        let mut back = BTreeMap::new();
        for failure in failed {
            match (failure.winner, before.get(&failure.route)) {
                (Some(winner), _) => {
                    winners.insert(failure.route, winner);
                }
                (None, Some(previous)) => {
                    back.insert(failure.route, previous.clone());
                }
                (None, None) => {
                    link.local_only.insert(failure.route);
                }
            }
        }
        let now = super::now();
        if !winners.is_empty() {
            let why = "another node's decision won the race".to_string();
            let event = Event::Adopt {
                routes: winners,
                why,
                whole: false,
            };
            kept.extend(self.core.apply(event, now));
        }
        if !back.is_empty() {
            let why = "the change could not be written to etcd".to_string();
            let event = Event::Adopt {
                routes: back,
                why,
                whole: true,
            };
            kept.extend(self.core.apply(event, now));
        }
        kept
    }

    /// What the follow task brought.
    pub(super) async fn cluster_message(&mut self, message: ClusterMessage) {
        let Some(link) = self.cluster.as_mut() else {
            return;
        };
        match message {
            ClusterMessage::Read { store, decisions } => {
                link.store = Some(*store);
                link.down_logged = false;
                // The revision of the newest decision, not of the read: the
                // reports move etcd's revision every second.
                let newest = decisions.values().map(|d| d.revision).max().unwrap_or(0);
                if !link.connected {
                    tracing::info!(revision = newest, "etcd answers: reading every decision");
                }
                link.connected = true;
                link.error = None;
                link.disconnected_since = None;
                link.saw_revision(newest);
                ::metrics::gauge!(CLUSTER_CONNECTED).set(1.0);
                self.catch_up(decisions).await;
            }
            ClusterMessage::Changes(changes) => {
                let mut adopt = BTreeMap::new();
                let mut newest = 0;
                for change in changes {
                    let (route, decision) = match change {
                        Change::Decided { route, decision } => (route, decision),
                        Change::Removed { route, revision } => {
                            // Someone deleted it: this node keeps its own
                            // decision, and its next change creates the key.
                            tracing::warn!(route, revision, "the route's decision was deleted from etcd; this node keeps its own");
                            link.forget_revision(&route);
                            continue;
                        }
                    };
                    newest = newest.max(decision.revision);
                    let stale = link
                        .known
                        .get(&route)
                        .and_then(|k| k.revision)
                        .is_some_and(|seen| seen >= decision.revision);
                    if stale {
                        continue; // our own write, or older than what we hold
                    }
                    link.know_only(route.clone(), decision.state.clone(), decision.revision);
                    adopt.insert(route, decision.state);
                }
                link.saw_revision(newest);
                if !adopt.is_empty() {
                    let why = format!("decided on another node (etcd revision {newest})");
                    self.apply_adopted(adopt, why);
                }
            }
            ClusterMessage::Report {
                nodes,
                leader,
                leading,
            } => {
                link.nodes = nodes;
                link.leader = leader;
                link.rounds += 1;
                let was = link.leading.is_some();
                link.leading = leading;
                if was != leading.is_some() {
                    let gauge = if leading.is_some() { 1.0 } else { 0.0 };
                    ::metrics::gauge!(CLUSTER_LEADER).set(gauge);
                    // A new leader looks at the routes with every node's
                    // latest report, not the one it had before.
                    self.show_cluster();
                    self.apply(Event::Deciding(leading.is_some())).await;
                }
            }
            ClusterMessage::Down(error) => {
                if link.connected || !link.down_logged {
                    // Once per outage, the one at start included.
                    tracing::error!("etcd cannot be reached: {error}; serving the last decisions known (fail static)");
                    link.down_logged = true;
                }
                if link.connected {
                    link.disconnected_since = Some(SystemTime::now());
                }
                link.connected = false;
                link.error = Some(error);
                let was_leading = link.leading.take().is_some();
                ::metrics::gauge!(CLUSTER_CONNECTED).set(0.0);
                ::metrics::gauge!(CLUSTER_LEADER).set(0.0);
                if was_leading {
                    self.apply(Event::Deciding(false)).await;
                }
            }
        }
        self.show_cluster();
    }

    /// After a (re)connect: takes what etcd holds, writes what it lacks,
    /// and offers it the `--local` changes made meanwhile.
    async fn catch_up(&mut self, decisions: BTreeMap<String, Decision>) {
        let Some(link) = self.cluster.as_mut() else {
            return;
        };
        let Some(mut store) = link.store.clone() else {
            return;
        };
        let local_only = std::mem::take(&mut link.local_only);
        let mut adopt = BTreeMap::new();
        let mut why = "read from etcd".to_string();
        let ours: Vec<(String, RouteState)> = self
            .core
            .route_states()
            .iter()
            .map(|(r, s)| (r.clone(), s.clone()))
            .collect();
        for (route, state) in ours {
            let in_etcd = decisions.get(&route);
            let offer = local_only.contains(&route) || in_etcd.is_none();
            if offer {
                let seen = in_etcd.and_then(|_| link.known.get(&route).and_then(|k| k.revision));
                match store.write(&route, &state, seen, None, &[]).await {
                    Ok(Written::Done { revision }) => {
                        if local_only.contains(&route) {
                            tracing::info!(
                                route,
                                revision,
                                "the --local change was written to etcd: every node takes it"
                            );
                        }
                        link.know(route, state, revision);
                        continue;
                    }
                    Ok(Written::Lost { .. }) => {
                        if local_only.contains(&route) {
                            tracing::warn!(route, "another node changed the route while etcd was unreachable: its decision replaces the --local one");
                            why = "read from etcd; it replaces a --local change".to_string();
                        }
                    }
                    Err(error) => {
                        tracing::warn!(route, "etcd did not take this node's decision: {error}");
                        link.local_only.insert(route.clone());
                        continue;
                    }
                }
            }
            if let Some(decision) = in_etcd {
                link.know_only(route.clone(), decision.state.clone(), decision.revision);
                adopt.insert(route, decision.state.clone());
            }
        }
        if !adopt.is_empty() {
            self.apply_adopted(adopt, why);
        }
    }

    /// Before a command that may change a route: reads the route's
    /// decision from etcd and takes it if it is newer than the one this
    /// node has. While etcd does not answer, the command is refused here
    /// (unless `--local`), even one that would change nothing.
    pub(super) async fn catch_up_route(&mut self, request: &Request) -> Result<(), Response> {
        let (Some(link), Some(route)) = (self.cluster.as_mut(), request.changes_route()) else {
            return Ok(());
        };
        let (true, Some(mut store)) = (link.connected, link.store.clone()) else {
            if request.local() {
                return Ok(());
            }
            let why = link.unreachable();
            return Err(Response::error(ErrorKind::ClusterUnavailable, &why));
        };
        let current = match within(WRITE_DEADLINE, store.decision(route)).await {
            Ok(current) => current,
            Err(error) => {
                if !matches!(error, StoreError::Unreadable { .. }) {
                    link.progress.resync.notify_one();
                }
                let why = format!("cannot read the route's decision from etcd ({error}); nothing changed on any node");
                return Err(Response::error(ErrorKind::ClusterUnavailable, &why));
            }
        };
        let seen = link.known.get(route).and_then(|k| k.revision);
        match current {
            Some(decision) if seen.is_none_or(|seen| decision.revision > seen) => {
                link.know(route.to_string(), decision.state.clone(), decision.revision);
                let why = format!(
                    "read from etcd before a command (revision {})",
                    decision.revision
                );
                self.apply_adopted(BTreeMap::from([(route.to_string(), decision.state)]), why);
            }
            None => link.forget_revision(route),
            Some(_) => {}
        }
        Ok(())
    }

    /// Has the core take decisions etcd holds.
    fn apply_adopted(&mut self, routes: BTreeMap<String, RouteState>, why: String) {
        let event = Event::Adopt {
            routes,
            why,
            whole: false,
        };
        let effects = self.core.apply(event, super::now());
        self.carry_out(effects);
        self.note_not_applied();
        self.note_progress();
    }

    /// Which routes this node serves differently from etcd's decision
    /// (its config cannot serve it): `status` and the report say so.
    fn note_not_applied(&mut self) {
        let Some(link) = self.cluster.as_mut() else {
            return;
        };
        let routes = self.core.route_states();
        link.not_applied = link
            .known
            .iter()
            .filter(|(route, known)| {
                known.revision.is_some()
                    && !link.local_only.contains(*route)
                    && routes
                        .get(*route)
                        .is_some_and(|state| !same_decision(&known.state, state))
            })
            .map(|(route, _)| route.clone())
            .collect();
        *link
            .progress
            .not_applied
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = link.not_applied.iter().cloned().collect();
    }

    /// The connection to read the shared history with, while etcd answers.
    pub(super) fn history_store(&self) -> Option<Store> {
        let link = self.cluster.as_ref()?;
        link.store.clone().filter(|_| link.connected)
    }

    /// Tells the follow task what this node has applied, for its report.
    pub(super) fn note_progress(&mut self) {
        if let Some(link) = &mut self.cluster {
            let due = link
                .counters_read
                .is_none_or(|at| at.elapsed() >= COUNTERS_EVERY);
            if due {
                link.counters_read = Some(Instant::now());
                let mut counters = SlotCounters::new();
                for (route, slot, stats) in self.core.slot_counters() {
                    counters.entry(route).or_default().insert(slot, stats);
                }
                *link
                    .progress
                    .counters
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = counters;
            }
            let generation = self.core.generation();
            link.progress
                .generation
                .store(generation, Ordering::Relaxed);
            let views = self.core.slot_views();
            let mut slots = link
                .progress
                .slots
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if *slots != views {
                *slots = views;
            }
        }
    }

    /// Shows the cluster as it is now in `status`, and gives the leader
    /// the nodes' reports to weigh: an event of its own, through the gate,
    /// applied once the one under way is done.
    fn show_cluster(&mut self) {
        let Some(link) = &self.cluster else { return };
        let status = link.status(self.core.generation());
        self.deferred.push_back(Event::ClusterView(status));
    }
}

/// Adds `warning` to every reply among `effects`.
fn warn_replies(effects: &mut [Effect], warning: &str) {
    for effect in effects {
        if let Effect::Reply { response, .. } = effect {
            if let Some(Value::Object(result)) = response.result.as_mut() {
                result.insert("warning".into(), Value::String(warning.to_string()));
            }
        }
    }
}

/// Follows etcd for as long as the Controller lives: reads every decision,
/// watches from the next revision, renews the lease, reports this node and
/// tries to lead, on one member. A failure starts the whole again on the
/// next member: at once until every member failed in a row (one going away
/// breaks the streams while the others still answer), then every
/// [`RETRY_EVERY`], telling the Controller etcd is down.
async fn follow(
    config: ClusterConfig,
    progress: Arc<NodeProgress>,
    mailbox: mpsc::WeakSender<Message>,
) {
    let mut failures = 0u32;
    let mut attempt = 0usize;
    loop {
        attempt += 1;
        let error = match session(&config, attempt, &progress, &mailbox, &mut failures).await {
            Ok(()) => return, // the Controller is gone
            Err(error) => error,
        };
        failures += 1;
        if (failures as usize) < config.etcd.len() {
            continue; // the next member, at once
        }
        let Some(mailbox) = mailbox.upgrade() else {
            return;
        };
        let message = Message::Cluster(ClusterMessage::Down(error.to_string()));
        if mailbox.send(message).await.is_err() {
            return;
        }
        drop(mailbox);
        tokio::time::sleep(RETRY_EVERY).await;
    }
}

/// One connected stretch; `Ok` only when the Controller is gone.
async fn session(
    config: &ClusterConfig,
    attempt: usize,
    progress: &NodeProgress,
    mailbox: &mpsc::WeakSender<Message>,
    failures: &mut u32,
) -> Result<(), StoreError> {
    let send = |message: ClusterMessage| {
        let mailbox = mailbox.upgrade();
        async move {
            match mailbox {
                Some(mailbox) => mailbox.send(Message::Cluster(message)).await.is_ok(),
                None => false,
            }
        }
    };
    let node = config.node.as_str();
    let mut store = Store::connect(config, attempt).await?;
    let (decisions, revision) = store.decisions().await?;
    let mut leadership = Leadership::new(
        store.client(),
        store.keys().clone(),
        node,
        LEASE_TTL_SECONDS,
    )
    .await?;
    let mut watch = store.watch(revision + 1).await?;
    let read = ClusterMessage::Read {
        store: Box::new(store.clone()),
        decisions,
    };
    if !send(read).await {
        return Ok(());
    }
    *failures = 0;
    let mut report = tokio::time::interval(REPORT_EVERY);
    let mut last_report = None;
    loop {
        tokio::select! {
            changes = watch.next() => {
                let Some(changes) = changes? else {
                    return Err(StoreError::Ended);
                };
                if !send(ClusterMessage::Changes(changes)).await {
                    return Ok(());
                }
            }
            _ = progress.resync.notified() => return Err(StoreError::Resync),
            _ = report.tick() => {
                let round = report_round(&mut store, &mut leadership, node, progress, &mut last_report);
                let (nodes, leader, leading) = within(REPORT_DEADLINE, round).await?;
                if !send(ClusterMessage::Report { nodes, leader, leading }).await {
                    return Ok(());
                }
            }
        }
    }
}

/// Renews the lease, tries to lead, writes this node's report when it
/// changed (or every [`REPORT_HEARTBEAT`]) and reads every node's: the
/// nodes, the leader, and the leader key's creation revision while this
/// node holds it.
async fn report_round(
    store: &mut Store,
    leadership: &mut Leadership,
    node: &str,
    progress: &NodeProgress,
    last: &mut Option<(NodeView, Instant)>,
) -> Result<(Vec<NodeView>, Option<String>, Option<i64>), StoreError> {
    if !leadership.renew().await? {
        return Err(StoreError::LeaseLost);
    }
    let leading = leadership
        .try_lead()
        .await?
        .then(|| leadership.held_since())
        .flatten();
    let mut view = NodeView {
        node: node.to_string(),
        revision: progress.revision.load(Ordering::Relaxed),
        generation: progress.generation.load(Ordering::Relaxed),
        last_seen: String::new(),
        leader: leading.is_some(),
        slots: progress
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
        counters: progress
            .counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
        not_applied: progress
            .not_applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
    };
    // etcd keeps every revision until it is compacted: a report goes out
    // when something in it changed, else as a heartbeat now and then.
    let due = last
        .as_ref()
        .is_none_or(|(sent, at)| *sent != view || at.elapsed() >= REPORT_HEARTBEAT);
    if due {
        let unstamped = view.clone();
        view.last_seen = crate::core::rfc3339(SystemTime::now());
        store.report(&view, leadership.lease()).await?;
        *last = Some((unstamped, Instant::now()));
    }
    let (nodes, leader) = store.nodes().await?;
    Ok((nodes, leader, leading))
}
