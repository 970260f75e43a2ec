//! The Controller: the one task that owns switchyard's state.
//!
//! Config reloads, admin commands and (later) health events and rollout
//! steps are messages to it. For each change it computes the next
//! [`RoutingTable`], publishes it with one `ArcSwap::store`, writes the state
//! file and appends to the history. Nothing else changes state.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde_json::{json, Value};
use switchyard_conf::{Config, HostPattern, RouteConfig, ServerConfig};
use tokio::sync::{mpsc, oneshot};

use crate::decisions::{self, Refusal};
use crate::history::{now_rfc3339, History, HistoryEntry, ALL_ROUTES, DEFAULT_HISTORY_MAX_BYTES};
use crate::protocol::{ErrorKind, Request, Response};
use crate::state_file::{DecisionSource, RouteState, StateFile};
use crate::table::{RouteSpec, RoutingTable, Timeouts};

/// Messages are small and the Controller answers quickly; this bounds the
/// memory a burst of admin connections can pin.
const MAILBOX: usize = 256;

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
    /// The config file changed on disk (from the watcher): reload it.
    ConfigFileChanged,
}

/// Where a reload came from, for the history and the log.
#[derive(Debug, Clone, Copy)]
enum ReloadTrigger {
    File,
    Admin,
}

/// Sends messages to the Controller; cheap to clone.
#[derive(Clone)]
pub struct ControllerHandle {
    mailbox: mpsc::Sender<Message>,
    table: SharedTable,
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

    /// The table the data plane reads.
    pub fn table(&self) -> SharedTable {
        self.table.clone()
    }
}

/// The state the Controller owns.
pub struct Controller {
    config_path: PathBuf,
    config: Config,
    /// The `[server]` the process started with: what listeners really are.
    running_server: ServerConfig,
    /// The last reload's errors, while the file stays invalid.
    config_error: Option<String>,
    /// Settings edited in the file that only a restart applies.
    needs_restart: Vec<String>,
    routes: BTreeMap<String, RouteState>,
    generation: u64,
    table: SharedTable,
    state_file: StateFile,
    history: History,
    /// Problems found while restoring the state file, shown in `status`.
    state_warnings: Vec<String>,
}

impl Controller {
    /// Restores the state file over `config`, publishes the first table and
    /// starts the Controller task on the current tokio runtime.
    pub fn start(
        config: Config,
        config_path: PathBuf,
    ) -> (ControllerHandle, tokio::task::JoinHandle<()>) {
        let controller = Controller::new(config, config_path);
        let (tx, rx) = mpsc::channel(MAILBOX);
        let handle = ControllerHandle {
            mailbox: tx,
            table: controller.table.clone(),
        };
        let task = tokio::spawn(controller.run(rx));
        (handle, task)
    }

    fn new(config: Config, config_path: PathBuf) -> Controller {
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
        let mut controller = Controller {
            config_path,
            running_server: config.server.clone(),
            config,
            config_error: None,
            needs_restart: Vec::new(),
            routes,
            generation: 0,
            table: Arc::new(ArcSwap::from_pointee(RoutingTable::empty())),
            state_file,
            history,
            state_warnings: loaded.warnings,
        };
        controller.publish();
        // A failure is logged by persist; starting matters more.
        let _ = controller.persist();
        controller
    }

    async fn run(mut self, mut mailbox: mpsc::Receiver<Message>) {
        while let Some(message) = mailbox.recv().await {
            match message {
                Message::Command {
                    request,
                    uid,
                    reply,
                } => {
                    let response = self.handle(request, uid);
                    let _ = reply.send(response);
                }
                Message::ConfigFileChanged => {
                    self.reload(ReloadTrigger::File, None);
                }
            }
        }
    }

    fn handle(&mut self, request: Request, uid: Option<u32>) -> Response {
        match request {
            Request::Status { route } => self.status(route.as_deref()),
            Request::History { route, limit } => {
                let entries = self.history.recent(route.as_deref(), limit.unwrap_or(20));
                Response::ok(json!({ "entries": entries }))
            }
            Request::Reload {} => self.reload(ReloadTrigger::Admin, uid),
            Request::Switch {
                route,
                slot,
                timeout,
                force: _,
                reason,
            } => {
                // Health gating arrives with health checks; the timeout is
                // checked now so scripts written today keep working.
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
            Request::Rollback { route, reason } => {
                self.change(&route, "rollback", uid, reason, decisions::rollback)
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
    /// reported error; a valid one is applied in one publish.
    fn reload(&mut self, trigger: ReloadTrigger, uid: Option<u32>) -> Response {
        let now = now_rfc3339();
        let trigger_name = match trigger {
            ReloadTrigger::File => "config",
            ReloadTrigger::Admin => "admin",
        };
        let mut entry = HistoryEntry {
            time: now.clone(),
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
                let message = errors.to_string();
                tracing::error!(file = %self.config_path.display(), "config rejected, still running the last good config:\n{message}");
                entry.result = format!("failed: {} error(s)", errors.0.len());
                self.record(&entry);
                self.config_error = Some(message.clone());
                return Response::error(
                    ErrorKind::InvalidConfig,
                    format!("config rejected, still running the last good config:\n{message}"),
                );
            }
        };

        if config == self.config && self.config_error.is_none() {
            // Editors and `touch` fire events without changing anything:
            // publishing anyway would only churn the upstream pools.
            return Response::ok(json!({
                "generation": self.generation,
                "routes": self.config.routes.len(),
                "needs_restart": self.needs_restart,
                "changed": false,
            }));
        }
        self.needs_restart = needs_restart(&self.running_server, &config.server);
        for setting in &self.needs_restart {
            tracing::warn!(setting, "config edit needs a restart to take effect");
        }
        let mut routes = BTreeMap::new();
        for route in &config.routes {
            let prior = self.routes.get(&route.name);
            let next = decisions::after_config_load(route, prior, &now);
            if prior.is_some_and(|p| p.active != next.active) {
                self.record(&HistoryEntry {
                    time: now.clone(),
                    trigger: "config".into(),
                    uid,
                    route: route.name.clone(),
                    action: "switch".into(),
                    from: prior.map(describe),
                    to: Some(describe(&next)),
                    reason: Some("active edited in the config file".into()),
                    result: "ok".into(),
                    generation: Some(self.generation + 1),
                });
            }
            routes.insert(route.name.clone(), next);
        }
        self.routes = routes;
        self.config = config;
        self.config_error = None;
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
        self.generation += 1;
        let specs = self
            .config
            .routes
            .iter()
            .map(|route| route_spec(route, &self.routes[&route.name]))
            .collect();
        let server = &self.config.server;
        let timeouts = Timeouts {
            upstream_connect: server.connect_timeout,
            upstream_read: server.read_timeout,
            client_keepalive: server.keepalive_timeout,
        };
        let table = RoutingTable::build(self.generation, specs).with_timeouts(timeouts);
        self.table.store(Arc::new(table));
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
            .map(|r| route_status(r, &self.routes[&r.name]))
            .collect();
        Response::ok(json!({
            "generation": self.generation,
            "config": {
                "file": self.config_path.display().to_string(),
                "error": self.config_error,
                "needs_restart": self.needs_restart,
            },
            "state_warnings": self.state_warnings,
            "routes": routes,
        }))
    }
}

fn route_spec(route: &RouteConfig, state: &RouteState) -> RouteSpec {
    RouteSpec {
        name: route.name.clone(),
        hosts: route.hosts.clone(),
        path_prefix: route.path_prefix.clone(),
        slots: route
            .slots
            .iter()
            .map(|(name, backends)| (name.clone(), backends.clone()))
            .collect(),
        active: state.active.clone(),
        previous: state.previous.clone(),
        canary: state.canary.as_ref().map(|c| (c.slot.clone(), c.weight)),
        retries: route.retries,
    }
}

fn route_status(route: &RouteConfig, state: &RouteState) -> Value {
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
            json!({
                "name": name,
                "backends": backends.iter().map(|b| b.to_string()).collect::<Vec<_>>(),
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
        "decided_by": state.source,
        "changed_at": state.changed_at,
        "slots": slots,
    })
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
    changed
}
