//! The Controller: the thin async shell around the control core.
//!
//! Admin commands, config file changes, health checks, certificate loads
//! and the clock become [`Event`]s for the [`Core`], which decides
//! everything and answers with [`Effect`]s; this task carries them out in
//! order — stores the table in the `ArcSwap`, writes the state file and the
//! history, reads the config file, answers commands, starts probes — and is
//! the only place that does. Nothing else changes state.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use serde_json::Value;
use switchyard_conf::{Config, TlsConfig};
use tokio::sync::{mpsc, oneshot, watch};

use crate::core::{Core, Effect, Event, Level, LogLine, Now, ReloadTrigger, ReplyTo};
use crate::health::changes::CHECK_BATCH;
use crate::health::monitor::{BackendKey, Monitor};
use crate::health::{Check, Failure};
use crate::history::{Caller, History, DEFAULT_HISTORY_MAX_BYTES};
use crate::metrics;
use crate::names::{Answer, Lookup, NameKey, Names};
use crate::notify::{Delivered, Notifier};
use crate::protocol::{ErrorKind, HistoryReply, Request, Response, TlsStatus};
use crate::series::{SeriesBook, SeriesReply, SERIES_INTERVAL};
use crate::state_file::{RouteState, StateFile};
use crate::table::RoutingTable;

mod cluster;
mod fault;
mod names;
mod supervise;

pub use cluster::{CLUSTER_CONNECTED, CLUSTER_LEADER, CLUSTER_WRITES};
pub use supervise::{supervise, ControlPlaneStopped};

/// Messages are small and the Controller answers quickly; this bounds the
/// memory a burst of admin connections can pin.
const MAILBOX: usize = 256;

/// The readers' side of the published table.
pub type SharedTable = Arc<ArcSwap<RoutingTable>>;

/// What the Controller accepts besides health checks.
enum Message {
    /// An admin command from `caller`. Answered on `reply`.
    Command {
        request: Request,
        caller: Caller,
        reply: oneshot::Sender<Response>,
    },
    /// The config file changed on disk and has been quiet since for the
    /// watcher's settle time.
    ConfigFileChanged,
    /// What the certificate loader did, for `status`.
    TlsLoaded(TlsStatus),
    /// How a notice's delivery went.
    Notified(Delivered),
    /// A Prometheus scrape: the text exposition of the current state.
    Metrics { reply: oneshot::Sender<String> },
    /// A readiness check: the backends still waiting for a first verdict.
    Unchecked { reply: oneshot::Sender<Vec<String>> },
    /// The dashboard's charts: every slot's traffic after `since_ms`.
    Series {
        since_ms: u64,
        reply: oneshot::Sender<SeriesReply>,
    },
    /// What the ACME manager did.
    Acme {
        hosts: Vec<crate::protocol::AcmeHostStatus>,
        failed: Option<(String, String)>,
    },
    /// What etcd said (`[cluster]`).
    Cluster(cluster::ClusterMessage),
    /// A refresh of a backend name came back.
    Resolved {
        key: NameKey,
        result: Result<Answer, String>,
    },
    /// The names a config file read brought in, looked up: the read goes
    /// on unless a later read started meanwhile (`seq`).
    ConfigNamesResolved {
        seq: u64,
        trigger: ReloadTrigger,
        config: Box<Config>,
        results: Vec<(NameKey, Result<Answer, String>)>,
    },
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
}

fn stopped() -> Response {
    Response::error(ErrorKind::Internal, "switchyard is shutting down")
}

impl ControllerHandle {
    /// Runs an admin command and returns its response. When the Controller
    /// has stopped, answers with an internal error.
    pub async fn command(&self, request: Request, uid: Option<u32>) -> Response {
        self.command_as(request, Caller::Socket { uid }).await
    }

    /// [`ControllerHandle::command`] from any caller: the dashboard's
    /// actions come here, recorded as the dashboard's.
    pub async fn command_as(&self, request: Request, caller: Caller) -> Response {
        let (reply, answer) = oneshot::channel();
        let message = Message::Command {
            request,
            caller,
            reply,
        };
        if self.mailbox.send(message).await.is_err() {
            return stopped();
        }
        answer.await.unwrap_or_else(|_| stopped())
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
    /// `route/slot/address`. `None` when the Controller has stopped.
    pub async fn unchecked_backends(&self) -> Option<Vec<String>> {
        let (reply, answer) = oneshot::channel();
        self.mailbox.send(Message::Unchecked { reply }).await.ok()?;
        answer.await.ok()
    }

    /// Every slot's request rate, 5xx rate and latency over the last
    /// minutes, the points after `since_ms` (Unix milliseconds; 0 for all).
    /// `None` when the Controller has stopped.
    pub async fn series(&self, since_ms: u64) -> Option<SeriesReply> {
        let (reply, answer) = oneshot::channel();
        self.mailbox
            .send(Message::Series { since_ms, reply })
            .await
            .ok()?;
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

    /// Tells the Controller what the certificate loader did (the
    /// certificates served and the last load's outcome), for `status`.
    /// Waits only while the mailbox is full.
    pub async fn tls_loaded(&self, status: TlsStatus) {
        let _ = self.mailbox.send(Message::TlsLoaded(status)).await;
    }

    /// Tells the Controller how each `[tls.acme]` host stands, and which
    /// order just failed (host, why), for `status` and `[[notify]]`.
    pub async fn acme_report(
        &self,
        hosts: Vec<crate::protocol::AcmeHostStatus>,
        failed: Option<(String, String)>,
    ) {
        let _ = self.mailbox.send(Message::Acme { hosts, failed }).await;
    }
}

/// The shell's own state: the core, and the I/O it carries out for it.
pub struct Controller {
    core: Core,
    config_path: PathBuf,
    table: SharedTable,
    state_file: StateFile,
    history: History,
    monitor: Monitor,
    notifier: Notifier,
    tls_config: watch::Sender<Option<TlsConfig>>,
    /// Commands the core has not answered yet, by the id it knows them by.
    replies: HashMap<ReplyTo, oneshot::Sender<Response>>,
    next_reply: ReplyTo,
    /// What each backend name resolved to.
    names: Names,
    /// Looks names up; why not, when the system's DNS settings are
    /// unreadable.
    lookup: Result<Arc<Lookup>, String>,
    /// Config file reads started, so that a read whose names were still
    /// being looked up when a later one started is dropped, not applied
    /// over it.
    reads: u64,
    /// The mailbox, for lookups that report back; weak, so that it does
    /// not keep the Controller alive once every handle is gone.
    mailbox: mpsc::WeakSender<Message>,
    /// Every slot's recent traffic, read off the counters every
    /// [`SERIES_INTERVAL`], for the dashboard.
    series: SeriesBook,
    series_due: Instant,
    /// `[cluster]`: etcd's side of every decision; `None` without it.
    cluster: Option<cluster::ClusterLink>,
    /// Events the effects of another asked for (a config file read),
    /// applied after it, each through [`Controller::gate`].
    deferred: VecDeque<Event>,
}

impl Controller {
    /// Restores the state file over `config`, publishes the first table and
    /// starts the Controller task on the current tokio runtime. The task
    /// ends only when every handle is gone — or on a panic, which
    /// [`supervise`] turns into a report.
    pub fn start(
        config: Config,
        config_path: PathBuf,
        names: Names,
    ) -> (ControllerHandle, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(MAILBOX);
        let (checks_tx, checks_rx) = mpsc::unbounded_channel();
        let report = checks_tx.clone();
        let monitor = Monitor::new(Arc::new(move |key, check| {
            let _ = report.send((key, check));
        }));
        let state_file = StateFile::new(&config.server.state_dir);
        let loaded = state_file.load();
        let history = History::open(&config.server.state_dir, DEFAULT_HISTORY_MAX_BYTES);
        let (tls_config, tls_config_rx) = watch::channel(config.tls.clone());
        let delivered = tx.clone();
        let notifier = Notifier::start(config.notify.clone(), move |outcome| {
            // A full mailbox loses the report, never the Controller's time.
            let _ = delivered.try_send(Message::Notified(outcome));
        });
        let lookup = Lookup::new(&config.server.resolvers)
            .map(Arc::new)
            .map_err(|e| e.to_string());
        let cluster_config = config.cluster.clone();
        let (mut core, mut effects) = Core::new(config, config_path.clone(), loaded, now());
        let cluster = cluster_config.map(|cluster| {
            // Until this node holds the leader key, another may decide.
            effects.extend(core.apply(Event::Deciding(false), now()));
            cluster::ClusterLink::start(&cluster, core.route_states(), tx.downgrade())
        });
        let mut controller = Controller {
            core,
            config_path,
            table: Arc::new(ArcSwap::from_pointee(RoutingTable::empty())),
            state_file,
            history,
            monitor,
            notifier,
            tls_config,
            replies: HashMap::new(),
            next_reply: 0,
            names,
            lookup,
            series: SeriesBook::default(),
            series_due: Instant::now(),
            reads: 0,
            mailbox: tx.downgrade(),
            cluster,
            deferred: VecDeque::new(),
        };
        controller.carry_out(effects);
        let handle = ControllerHandle {
            mailbox: tx,
            checks: checks_tx,
            table: controller.table.clone(),
            tls_config: tls_config_rx,
        };
        let task = tokio::spawn(controller.run(rx, checks_rx));
        (handle, task)
    }

    async fn run(
        mut self,
        mut mailbox: mpsc::Receiver<Message>,
        mut checks: mpsc::UnboundedReceiver<CheckMessage>,
    ) {
        loop {
            let wake = self.core.next_wakeup();
            let wake_at = tokio::time::Instant::from_std(wake.unwrap_or_else(Instant::now));
            let names_due = self.names.next_due();
            let names_at = tokio::time::Instant::from_std(names_due.unwrap_or_else(Instant::now));
            let event = tokio::select! {
                message = mailbox.recv() => match message {
                    Some(Message::Cluster(message)) => {
                        self.cluster_message(message).await;
                        self.drain().await;
                        None
                    }
                    Some(message) => self.receive(message),
                    None => return,
                },
                Some(first) = checks.recv() => {
                    // Thousands of backends report in bursts: the core
                    // counts what is queued, then reacts and publishes once.
                    let mut batch = vec![first];
                    while batch.len() < CHECK_BATCH {
                        let Ok(check) = checks.try_recv() else { break };
                        batch.push(check);
                    }
                    Some(Event::Checks(batch))
                }
                _ = tokio::time::sleep_until(wake_at), if wake.is_some() => Some(Event::Tick),
                _ = tokio::time::sleep_until(self.series_due.into()) => {
                    self.sample_series();
                    None
                }
                _ = tokio::time::sleep_until(names_at), if names_due.is_some() => {
                    self.refresh_names();
                    None
                }
            };
            if let Some(event) = event {
                self.apply(event).await;
            }
        }
    }

    /// The event a message is, or `None` for the queries answered here.
    fn receive(&mut self, message: Message) -> Option<Event> {
        match message {
            Message::Command {
                request,
                caller,
                reply,
            } => {
                fault::maybe_panic(&request);
                let id = self.next_reply;
                self.next_reply += 1;
                self.replies.insert(id, reply);
                Some(Event::Command {
                    reply: id,
                    request,
                    caller,
                })
            }
            Message::ConfigFileChanged => self.read_config(ReloadTrigger::File),
            Message::TlsLoaded(status) => Some(Event::TlsLoaded(status)),
            Message::Notified(delivered) => Some(Event::Notified(delivered)),
            Message::Metrics { reply } => {
                let _ = reply.send(self.core.metrics());
                None
            }
            Message::Unchecked { reply } => {
                let _ = reply.send(self.core.unchecked_backends());
                None
            }
            Message::Series { since_ms, reply } => {
                let _ = reply.send(self.series.reply(since_ms));
                None
            }
            Message::Cluster(_) => None, // taken in `run`
            Message::Resolved { key, result } => self.name_resolved(key, result),
            Message::Acme { hosts, failed } => Some(Event::AcmeReport { hosts, failed }),
            Message::ConfigNamesResolved {
                seq,
                trigger,
                config,
                results,
            } => self.config_names_resolved(seq, trigger, *config, results),
        }
    }

    /// Reads every slot's counters into the series, and sets the next read.
    fn sample_series(&mut self) {
        self.series
            .sample(SystemTime::now(), self.core.slot_counters());
        self.series_due = Instant::now() + SERIES_INTERVAL;
    }

    /// Applies `event`, and then the events its effects asked for, each
    /// written to etcd first with `[cluster]`.
    async fn apply(&mut self, event: Event) {
        if let Event::Command { reply, request, .. } = &event {
            // A command is judged against etcd's decision as it is now,
            // not as the watch last brought it: else a switch to the slot
            // this node still thinks active would be answered "no change"
            // while another node's switch is on its way.
            if let Err(refused) = self.catch_up_route(request).await {
                self.send(*reply, refused, None);
                return;
            }
        }
        self.deferred.push_back(event);
        self.drain().await;
    }

    /// Applies the events waiting, each written to etcd first with
    /// `[cluster]`.
    async fn drain(&mut self) {
        while let Some(event) = self.deferred.pop_front() {
            let origin = cluster::Origin::of(&event);
            // Only with `[cluster]`: what the batch changes is written.
            let before = match self.cluster {
                Some(_) => self.core.route_states().clone(),
                None => Default::default(),
            };
            let effects = self.core.apply(event, now());
            let effects = self.gate(origin, before, effects).await;
            self.carry_out(effects);
            self.note_progress();
        }
    }

    /// Does what the core asked, in order. Reading the config file gives
    /// the core another event, whose effects follow.
    fn carry_out(&mut self, effects: Vec<Effect>) {
        let mut queue = VecDeque::from(effects);
        // Replies after a failed save say so: the change is live but will
        // not survive a restart.
        let mut unsaved: Option<String> = None;
        while let Some(effect) = queue.pop_front() {
            match effect {
                Effect::Publish(table) => self.table.store(table),
                Effect::SaveState(routes) => {
                    if let Err(warning) = self.save(&routes) {
                        unsaved = Some(warning);
                    }
                }
                Effect::AppendHistory(entry) => {
                    if let Err(e) = self.history.append(&entry) {
                        tracing::error!("cannot append to the history: {e}");
                    }
                }
                Effect::Reply { to, response } => self.send(to, response, unsaved.as_deref()),
                Effect::ReplyHistory { to, route, limit } => {
                    // Reading the file (up to twice its rotation size) is
                    // kept off the Controller, which health checks and
                    // commands must never wait behind.
                    // With `[cluster]`, every node's changes are in etcd;
                    // the local file answers while etcd does not.
                    if let Some(reply) = self.replies.remove(&to) {
                        let history = self.history.clone();
                        let shared = self.history_store();
                        let routes: Vec<String> = match &route {
                            Some(route) => vec![route.clone()],
                            None => (self.core.config().routes.iter())
                                .map(|r| r.name.clone())
                                .collect(),
                        };
                        tokio::spawn(async move {
                            let from_etcd = match shared {
                                Some(mut store) => store.history(&routes, limit).await.ok(),
                                None => None,
                            };
                            let entries = match from_etcd {
                                Some(entries) => entries,
                                None => tokio::task::spawn_blocking(move || {
                                    history.recent(route.as_deref(), limit)
                                })
                                .await
                                .unwrap_or_default(),
                            };
                            let _ = reply.send(Response::ok_with(&HistoryReply { entries }));
                        });
                    }
                }
                Effect::ReadConfig(trigger) => {
                    if let Some(event) = self.read_config(trigger) {
                        self.deferred.push_back(event);
                    }
                }
                Effect::ConfigApplied => {
                    self.names_config_applied();
                    // `status` shows the names the applied config has.
                    let names = self.names.status();
                    let event = Event::NamesResolved {
                        config: None,
                        names,
                    };
                    queue.extend(self.core.apply(event, now()));
                    self.monitor.sync(self.core.config());
                    self.notifier.set_targets(&self.core.config().notify);
                }
                Effect::ServeCertificates(tls) => {
                    self.tls_config.send_replace(Some(tls));
                }
                Effect::Log(line) => log(&line),
                Effect::Notify(notice) => self.notifier.send(notice),
                Effect::CountReload(result) => {
                    ::metrics::counter!(metrics::CONFIG_RELOADS, "result" => result).increment(1);
                }
            }
        }
    }

    /// Writes the state file. A failure does not undo the change (traffic
    /// matters more than the file): it is logged and returned as a warning.
    fn save(&self, routes: &std::collections::BTreeMap<String, RouteState>) -> Result<(), String> {
        self.state_file.save(routes).map_err(|e| {
            let warning = format!(
                "applied, but the state file {} could not be written ({e}); the change will not survive a restart",
                self.state_file.path().display()
            );
            tracing::error!("{warning}");
            warning
        })
    }

    fn send(&mut self, to: ReplyTo, mut response: Response, warning: Option<&str>) {
        if let (Some(warning), Some(Value::Object(result))) = (warning, response.result.as_mut()) {
            result.insert("warning".into(), Value::String(warning.to_string()));
        }
        if let Some(reply) = self.replies.remove(&to) {
            // The peer may have gone: nothing to tell it.
            let _ = reply.send(response);
        }
    }
}

fn now() -> Now {
    Now {
        at: Instant::now(),
        wall: SystemTime::now(),
    }
}

fn log(line: &LogLine) {
    let message = &line.message;
    match (line.level, line.route.as_deref()) {
        (Level::Info, Some(route)) => tracing::info!(route, "{message}"),
        (Level::Info, None) => tracing::info!("{message}"),
        (Level::Warn, Some(route)) => tracing::warn!(route, "{message}"),
        (Level::Warn, None) => tracing::warn!("{message}"),
        (Level::Error, Some(route)) => tracing::error!(route, "{message}"),
        (Level::Error, None) => tracing::error!("{message}"),
    }
}
