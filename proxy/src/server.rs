//! Running switchyard: bind the listeners, start the Controller, the admin
//! socket, the config watcher and the pingora data plane, then stop them in
//! order on SIGTERM/SIGINT.
//!
//! Why not pingora's `Server`: it cannot report the port of a port-0
//! listener (pingora issue 988), `run_forever` exits the process, and it
//! owns signal handling and runtimes we need to share with the Controller.
//! Instead we bind the listening sockets ourselves (so port 0 works and bind
//! errors are ours to report) and accept on them with our own loops, one per
//! data-plane thread (`dataplane::accept`): a connection costs less than in
//! pingora's listening service (whose per-connection task keeps its TLS
//! handshake's state), writes are gathered only while a response is written,
//! and the TLS handshake is pingora's rustls acceptor run in a future of its
//! own.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_conf::{Config, ServerConfig};
use switchyard_control::admin_server::{self, AdminAccess, AdminLimits};
use switchyard_control::controller::{supervise, ControlPlaneStopped};
use switchyard_control::{Controller, ControllerHandle};
use tokio::sync::watch;

use crate::access_log::AccessLog;
use crate::activation;
use crate::admin_http::{Readiness, Sources};
use crate::dataplane::{Forwarder, Front, InFlight, Listener};
use crate::exporter;

/// How long the config file must be quiet (no write, no rename) before it
/// is read and, when valid, applied: a writer that truncates the file and
/// writes it again, or writes it in pieces, is read only once it paused this
/// long. 250 ms outlasts the gaps between one save's writes, even on a busy
/// machine, and still feels immediate. An edit that removes something (a
/// route, a slot, a section) waits longer: `SHRINK_SETTLE` in the
/// Controller.
const RELOAD_DEBOUNCE: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    AdminSocket(#[from] admin_server::AdminSocketError),
    #[error("cannot watch the config file {path}: {message}")]
    Watch { path: PathBuf, message: String },
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("[tls]: {0}")]
    Certificate(#[from] crate::tls::CertError),
}

/// A started switchyard; [`RunningProxy::stop`] ends it.
pub struct RunningProxy {
    /// The data plane's worker threads, each with its own single-threaded
    /// runtime (pingora's no-steal pool): a connection stays on the thread
    /// that accepted it, which saves the cross-thread wake-ups of a
    /// work-stealing runtime on every read and write.
    dataplane: pingora_runtime::Runtime,
    /// The addresses really bound (a port 0 replaced by the kernel's pick).
    pub listen_addrs: Vec<SocketAddr>,
    /// The same for `[tls] listen`.
    pub tls_listen_addrs: Vec<SocketAddr>,
    /// The same for `admin_http`, when it is on.
    pub admin_http_addr: Option<SocketAddr>,
    pub controller: ControllerHandle,
    /// What `/health/ready` says.
    readiness: Arc<Readiness>,
    admin_http_stop: watch::Sender<bool>,
    shutdown: watch::Sender<bool>,
    in_flight: Arc<InFlight>,
    /// Open client connections.
    connections: Arc<InFlight>,
    admin_socket: PathBuf,
    drain_timeout: Duration,
    /// The accept loops, one per listener and data-plane thread.
    accept_loops: Vec<tokio::task::JoinHandle<()>>,
    /// The Controller's task, watched by [`RunningProxy::until_stopped`].
    control_task: Option<tokio::task::JoinHandle<()>>,
    _watcher: switchyard_conf::watch::ConfigWatcher,
}

/// Starts everything on the current tokio runtime.
pub async fn start(mut config: Config, config_path: &Path) -> Result<RunningProxy, StartError> {
    // Checked before anything binds: a bad file is a clear error and exit
    // code, never pingora's panic.
    let certificates = match &config.tls {
        Some(tls) => Some(crate::tls::load_at_start(tls, &config.server.state_dir)?),
        None => None,
    };
    let Bound {
        listeners,
        tls_listeners,
        listen_addrs,
        tls_listen_addrs,
    } = bind_all(&config)?;

    let server = config.server.clone();
    let tls_proxy_protocol = config.tls.as_ref().is_some_and(|tls| tls.proxy_protocol);
    let admin_listener = admin_server::bind(&server.admin_socket).await?;
    let recorder = start_recorder();
    // Backend names are looked up before anything binds. One that does not
    // answer does not stop the start (`check` refuses it): its slot has no
    // address from it until it does, and it is asked again and again.
    let (names, unresolved) = switchyard_control::names::resolve_config(&mut config).await;
    if let Some(errors) = unresolved {
        for error in &errors.0 {
            tracing::error!("{error}; starting without it, and asking again");
        }
    }
    let (controller, control_task) = Controller::start(config, config_path.to_path_buf(), names);
    let challenges = crate::acme::Challenges::default();
    if let Some(resolver) = &certificates {
        resolver.answer_acme(challenges.clone());
        let reload = Arc::new(tokio::sync::Notify::new());
        tokio::spawn(crate::tls::keep_current(
            resolver.clone(),
            controller.clone(),
            server.state_dir.clone(),
            reload.clone(),
        ));
        // Follows `[tls.acme]` edits; idle without the section.
        let manager = crate::acme::Manager {
            controller: controller.clone(),
            state_dir: server.state_dir.clone(),
            challenges: challenges.clone(),
            reload,
        };
        tokio::spawn(manager.run());
    }

    let (shutdown, shutdown_rx) = watch::channel(false);
    tokio::spawn(admin_server::serve(
        admin_listener,
        controller.clone(),
        AdminAccess::new(&server.admin_uids),
        AdminLimits::default(),
        shutdown_rx.clone(),
    ));

    let readiness = Arc::new(Readiness::default());
    let (admin_http_stop, _) = watch::channel(false);
    let mut admin_http_addr = None;
    if let Some(addr) = server.admin_http {
        let sources = Sources {
            controller: controller.clone(),
            readiness: readiness.clone(),
            recorder,
            token: server.admin_http_token.as_deref().map(Arc::from),
        };
        if sources.token.is_some() {
            warn_if_others_can_read(config_path);
        }
        admin_http_addr = Some(start_admin_http(addr, sources, admin_http_stop.subscribe()).await?);
    }

    let watcher = watch_config(config_path, controller.clone())?;

    let in_flight = Arc::new(InFlight::default());
    let connections = Arc::new(InFlight::default());
    let forwarder = Forwarder::new(
        controller.clone(),
        in_flight.clone(),
        connections.clone(),
        access_log(&server)?,
        // Where `redirect_https` sends clients: the first TLS listener.
        tls_listen_addrs.first().map(|addr| addr.port()),
    )
    .answer_acme(challenges);
    let proxy_protocol = (server.proxy_protocol, tls_proxy_protocol);
    let sockets = sockets(
        listeners,
        tls_listeners,
        certificates.as_ref(),
        proxy_protocol,
    );
    let (dataplane, accept_loops) = start_data_plane(&server, forwarder, sockets, shutdown_rx)?;

    for addr in &listen_addrs {
        tracing::info!("listening on http://{addr}");
    }
    for addr in &tls_listen_addrs {
        tracing::info!("listening on https://{addr}");
    }
    readiness.set(true);
    tokio::spawn(tell_systemd_when_ready(controller.clone()));
    Ok(RunningProxy {
        readiness,
        admin_http_stop,
        dataplane,
        listen_addrs,
        tls_listen_addrs,
        admin_http_addr,
        controller,
        shutdown,
        in_flight,
        connections,
        admin_socket: server.admin_socket,
        drain_timeout: server.drain_timeout,
        accept_loops,
        control_task: Some(control_task),
        _watcher: watcher,
    })
}

/// The Prometheus recorder. Made before the Controller: series registered
/// while no recorder exists would stay no-ops.
fn start_recorder() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    match exporter::handle() {
        Ok(handle) => {
            tokio::spawn(exporter::upkeep(handle.clone()));
            Some(handle)
        }
        Err(e) => {
            tracing::warn!("{e}; /metrics will lack the request counters");
            None
        }
    }
}

/// Tells the Controller each time the config file changed and settled.
fn watch_config(
    config_path: &Path,
    controller: ControllerHandle,
) -> Result<switchyard_conf::watch::ConfigWatcher, StartError> {
    switchyard_conf::watch::ConfigWatcher::start(config_path, RELOAD_DEBOUNCE, move || {
        controller.config_file_changed()
    })
    .map_err(|e| StartError::Watch {
        path: config_path.to_path_buf(),
        message: e.to_string(),
    })
}

/// The listeners the data plane accepts on: plain ones, and TLS ones with
/// one rustls acceptor whose certificates come from the SNI resolver
/// (which reloads swap).
/// `proxy_protocol`: whether the plain and the TLS listeners take PROXY
/// protocol headers.
fn sockets(
    listeners: Vec<(String, TcpListener)>,
    tls_listeners: Vec<(String, TcpListener)>,
    certificates: Option<&Arc<crate::tls::SniResolver>>,
    (plain_proxy_protocol, tls_proxy_protocol): (bool, bool),
) -> Vec<Listener> {
    let acceptor = certificates.map(|resolver| Arc::new(crate::tls::acceptor(resolver.clone())));
    let plain = listeners.into_iter().map(|(_, socket)| Listener {
        socket,
        tls: None,
        proxy_protocol: plain_proxy_protocol,
    });
    let tls = tls_listeners.into_iter().map(|(_, socket)| Listener {
        socket,
        tls: acceptor.clone(),
        proxy_protocol: tls_proxy_protocol,
    });
    plain.chain(tls).collect()
}

/// The plain and TLS listeners, bound (or taken from systemd), with the
/// addresses really bound.
struct Bound {
    listeners: Vec<(String, TcpListener)>,
    tls_listeners: Vec<(String, TcpListener)>,
    listen_addrs: Vec<SocketAddr>,
    tls_listen_addrs: Vec<SocketAddr>,
}

fn bind_all(config: &Config) -> Result<Bound, StartError> {
    let mut inherited = activation::inherited_listeners();
    let listeners = bind_listeners(&config.server.listen, &mut inherited)?;
    let tls_listeners = match &config.tls {
        Some(tls) => bind_listeners(&tls.listen, &mut inherited)?,
        None => Vec::new(),
    };
    for unused in &inherited {
        tracing::warn!(
            "a socket handed in by systemd ({:?}) matches no configured listen address; it is not served",
            unused.local_addr().ok()
        );
    }
    let bound = |listeners: &[(String, TcpListener)]| -> Vec<SocketAddr> {
        listeners
            .iter()
            .map(|(_, l)| l.local_addr().expect("a bound socket has an address"))
            .collect()
    };
    let listen_addrs = bound(&listeners);
    let tls_listen_addrs = bound(&tls_listeners);

    Ok(Bound {
        listeners,
        tls_listeners,
        listen_addrs,
        tls_listen_addrs,
    })
}

/// The dashboard's token is in the config file: a user or process that can
/// read the file could act through the dashboard, past `admin_uids`.
fn warn_if_others_can_read(config_path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(config_path) else {
        return;
    };
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            "{} holds admin_http_token and is readable by group or others (mode {:o}); \
             anyone who can read it can act through the dashboard: chmod 600 it",
            config_path.display(),
            mode & 0o777
        );
    }
}

/// Serves the dashboard, `/metrics`, `/health/*` and `/status` on `addr`
/// until `stop`.
async fn start_admin_http(
    addr: SocketAddr,
    sources: Sources,
    stop: watch::Receiver<bool>,
) -> Result<SocketAddr, StartError> {
    let listener = crate::admin_http::bind(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })?;
    let bound = listener.local_addr().unwrap_or(addr);
    if sources.token.is_some() && !bound.ip().is_loopback() {
        tracing::warn!(
            "admin_http listens on {bound}, not on loopback: the dashboard's token and actions \
             travel in clear text; bind it to loopback and reach it through an SSH tunnel"
        );
    }
    // Ends after the drain, not with the listeners: `/health/ready`
    // answers 503 while the drain lasts.
    tokio::spawn(crate::admin_http::serve(listener, sources, stop));
    tracing::info!(
        "admin http on http://{bound} (the dashboard at /; /metrics /health/live /health/ready /status)"
    );
    Ok(bound)
}

fn access_log(server: &ServerConfig) -> Result<Option<AccessLog>, StartError> {
    if !server.access_log {
        return Ok(None);
    }
    AccessLog::start().map(Some).map_err(StartError::Runtime)
}

/// The worker threads, and on each an accept loop per listener.
fn start_data_plane(
    server: &ServerConfig,
    forwarder: Forwarder,
    sockets: Vec<Listener>,
    shutdown: watch::Receiver<bool>,
) -> Result<(pingora_runtime::Runtime, Vec<tokio::task::JoinHandle<()>>), StartError> {
    let threads = server
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // pingora's sessions time their reads and writes with its "fast"
    // timers, whose clock thread wakes every millisecond for as long as the
    // process lives. Timeouts of a second or more (all of ours) go to each
    // worker's own tokio timer instead, which wakes nobody until one is due.
    pingora_timeout::fast_timeout::set_fast_timeout_to_tokio_threshold(Some(Duration::ZERO));
    let dataplane = pingora_runtime::Runtime::new_no_steal(threads, "switchyard-worker");
    let open_files = crate::limits::raise_open_file_limit();
    let max_connections = server
        .max_connections
        .unwrap_or_else(|| crate::limits::default_max_connections(open_files));
    tracing::info!(max_connections, open_files, "client connection limit");
    let front = Front::new(forwarder, server.h2c, max_connections);
    let accept_loops =
        crate::dataplane::spawn_accept_loops(&dataplane, sockets, Arc::new(front), shutdown)
            .map_err(StartError::Runtime)?;
    Ok((dataplane, accept_loops))
}

/// Binds each address once, keyed by the address as bound.
/// A socket handed in by systemd for an address is used instead of
/// binding it.
fn bind_listeners(
    addrs: &[SocketAddr],
    inherited: &mut Vec<TcpListener>,
) -> Result<Vec<(String, TcpListener)>, StartError> {
    let mut seen = Vec::new();
    let mut bound = Vec::new();
    for addr in addrs {
        if seen.contains(addr) {
            continue;
        }
        seen.push(*addr);
        let listener = match activation::take(inherited, *addr) {
            Some(listener) => listener,
            None => bind_tcp(*addr).map_err(|source| StartError::Listen {
                addr: *addr,
                source,
            })?,
        };
        // Keyed by the address really bound: two port-0 listeners (plain
        // and TLS) configured alike must not share a key.
        let key = listener
            .local_addr()
            .map_err(|source| StartError::Listen {
                addr: *addr,
                source,
            })?
            .to_string();
        bound.push((key, listener));
    }
    Ok(bound)
}

fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv6() {
        tokio::net::TcpSocket::new_v6()?
    } else {
        tokio::net::TcpSocket::new_v4()?
    };
    // A restart must not wait out TIME_WAIT on the listening port.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(1024)?.into_std()?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Why a running proxy stops.
#[derive(Debug)]
pub enum Stop {
    /// SIGTERM or SIGINT.
    Signal,
    /// The control plane ended (a panic): see
    /// `switchyard_control::controller::supervise`.
    ControlPlane(ControlPlaneStopped),
}

impl RunningProxy {
    /// Waits for a stop signal — or for the control plane to die, which is
    /// logged: a proxy that can no longer follow health or take commands
    /// must not pass for a healthy one.
    pub async fn until_stopped(&mut self) -> Stop {
        let Some(task) = self.control_task.take() else {
            stop_signal().await;
            return Stop::Signal;
        };
        tokio::select! {
            _ = stop_signal() => Stop::Signal,
            stopped = supervise(task) => {
                tracing::error!("{stopped}; draining and exiting so that the service manager restarts switchyard from the saved state");
                Stop::ControlPlane(stopped)
            }
        }
    }

    /// Stops accepting, lets in-flight requests finish (up to the config's
    /// `drain_timeout`), and removes the admin socket.
    pub async fn stop(self) {
        self.readiness.set(false);
        if std::env::var_os("NOTIFY_SOCKET").is_some() {
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        }
        let _ = self.shutdown.send(true);
        self.drain().await;
        for accept_loop in &self.accept_loops {
            accept_loop.abort();
        }
        let _ = self.admin_http_stop.send(true);
        let _ = std::fs::remove_file(&self.admin_socket);
        // Joining the worker threads blocks: keep it off the control runtime.
        let dataplane = self.dataplane;
        let _ = tokio::task::spawn_blocking(move || {
            dataplane.shutdown_timeout(Duration::from_millis(200))
        })
        .await;
    }
}

/// Under systemd (`Type=notify`), says READY=1 when `/health/ready` would
/// say 200: the listeners serve and every active slot's backends have a
/// first health verdict. `systemctl start` returns then, so a deploy
/// script that starts switchyard can rely on it knowing its backends.
async fn tell_systemd_when_ready(controller: ControllerHandle) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    loop {
        match controller.unchecked_backends().await {
            None => return,
            Some(unchecked) if unchecked.is_empty() => break,
            Some(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    use sd_notify::NotifyState;
    if let Err(e) = sd_notify::notify(false, &[NotifyState::Ready, NotifyState::Status("serving")])
    {
        tracing::warn!("cannot tell systemd that switchyard is ready: {e}");
    }
}

impl RunningProxy {
    /// Waits, up to `drain_timeout`, until every client connection has
    /// closed. From the stop on, every response says `Connection: close`,
    /// so busy connections end after their current request and their
    /// clients reconnect — to the listening socket, where a restarted
    /// switchyard (socket activation) or another instance picks them up.
    /// Connections that stay idle for [`IDLE_GRACE`] with no request in
    /// flight are closed then: a client whose next request meets the close
    /// retries it on a new connection, as HTTP/1.1 clients do.
    async fn drain(&self) {
        let deadline = Instant::now() + self.drain_timeout;
        let mut quiet_since: Option<Instant> = None;
        loop {
            if self.connections.count() == 0 {
                return;
            }
            if self.in_flight.count() == 0 {
                if quiet_since.get_or_insert_with(Instant::now).elapsed() >= IDLE_GRACE {
                    return;
                }
            } else {
                quiet_since = None;
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    requests = self.in_flight.count(),
                    connections = self.connections.count(),
                    "drain timeout passed with requests still in flight"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// How long idle kept-alive connections get after a stop begins.
const IDLE_GRACE: Duration = Duration::from_secs(1);

/// Waits for SIGTERM or SIGINT.
pub async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining"),
        _ = int.recv() => tracing::info!("SIGINT: draining"),
    }
}

/// The control plane's runtime (Controller, admin socket, config watch):
/// one thread is plenty for a handful of messages a second, and keeps it
/// off the data plane's workers.
pub fn control_runtime() -> Result<tokio::runtime::Runtime, StartError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StartError::Runtime)
}
