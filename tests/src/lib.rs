//! The end-to-end harness: the real `switchyard` binary started on loopback
//! with ephemeral ports, real hyper backends, and a keep-alive HTTP client
//! for load. Every wait is on a condition with a deadline.
//!
//! The binary is the one cargo built in this target directory. Run these
//! tests with `--workspace` (as `make test` does) or together with
//! `-p switchyard`: `-p switchyard-tests` alone does not rebuild the binary
//! and would test a stale one.

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

pub mod browser;
pub mod dns;
pub mod etcd;
pub mod pebble;
pub mod raw;
pub mod tls;
pub mod tls_backend;
pub mod wire;

/// The `switchyard` binary cargo built next to this test.
pub fn switchyard_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("SWITCHYARD_BIN") {
        return PathBuf::from(path);
    }
    // target/<profile>/deps/<test> → target/<profile>/switchyard
    let exe = std::env::current_exe().expect("the test knows its own path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("switchyard"))
        .expect("test binary lives in target/<profile>/deps");
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (which builds it) or set SWITCHYARD_BIN",
        bin.display()
    );
    bin
}

/// Polls `condition` until it holds or `limit` passes.
pub fn wait_until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A backend that answers `<slot> <path>` and can be told to be slow.
pub struct Backend {
    pub addr: SocketAddr,
    pub slot: String,
    /// Requests served, health probes (`/health`) excluded.
    pub requests: Arc<AtomicU64>,
    /// Connections that served a request and have ended (closed by either
    /// side); a probe's bare connect does not count.
    pub connections_closed: Arc<AtomicU64>,
    /// `/health` answers 200 while this is true, 500 otherwise.
    pub healthy: Arc<AtomicBool>,
    /// `/health` waits this many milliseconds before answering.
    pub health_delay_ms: Arc<AtomicU64>,
    /// `/health` requests received (counted as they arrive).
    pub probes: Arc<AtomicU64>,
    /// The next this many `/health` requests answered get a 500, whatever
    /// `healthy` says (each answer takes one off).
    pub failing_probes: Arc<AtomicU64>,
    /// Of every 100 requests (health probes excluded), this many get a 500.
    pub fail_percent: Arc<AtomicU64>,
    /// Every request (health probes excluded) waits this many milliseconds.
    pub delay_ms: Arc<AtomicU64>,
    stop: tokio::sync::watch::Sender<bool>,
}

/// The behaviour a test can change while the backend runs.
#[derive(Clone)]
struct Knobs {
    healthy: Arc<AtomicBool>,
    health_delay_ms: Arc<AtomicU64>,
    probes: Arc<AtomicU64>,
    failing_probes: Arc<AtomicU64>,
    fail_percent: Arc<AtomicU64>,
    delay_ms: Arc<AtomicU64>,
}

impl Backend {
    /// Starts on 127.0.0.1 with an ephemeral port. `/slow/<ms>` waits that
    /// long before answering; `/echo-headers` answers with the request
    /// headers; `/health` answers 200 or 500 as `healthy` says.
    pub async fn start(slot: &str) -> Backend {
        Backend::start_on(slot, "127.0.0.1:0".parse().unwrap()).await
    }

    /// As [`Backend::start`], on `addr` (another loopback address, a
    /// given port).
    pub async fn start_on(slot: &str, addr: SocketAddr) -> Backend {
        let listener = TcpListener::bind(addr).await.expect("bind backend");
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicU64::new(0));
        let connections_closed = Arc::new(AtomicU64::new(0));
        let knobs = Knobs {
            healthy: Arc::new(AtomicBool::new(true)),
            health_delay_ms: Arc::new(AtomicU64::new(0)),
            probes: Arc::new(AtomicU64::new(0)),
            failing_probes: Arc::new(AtomicU64::new(0)),
            fail_percent: Arc::new(AtomicU64::new(0)),
            delay_ms: Arc::new(AtomicU64::new(0)),
        };
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let name: Arc<str> = slot.into();
        let counter = requests.clone();
        let closed = connections_closed.clone();
        let health = knobs.clone();
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    accepted = listener.accept() => match accepted { Ok((s, _)) => s, Err(_) => continue },
                    _ = stopped.changed() => return,
                };
                let name = name.clone();
                let counter = counter.clone();
                let closed = closed.clone();
                let health = health.clone();
                let mut conn_stop = stopped.clone();
                tokio::spawn(async move {
                    let served = Arc::new(AtomicBool::new(false));
                    let served_here = served.clone();
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let name = name.clone();
                        let counter = counter.clone();
                        let health = health.clone();
                        served_here.store(true, Ordering::Relaxed);
                        async move { Ok::<_, Infallible>(answer(&name, req, &counter, &health).await) }
                    });
                    let conn =
                        http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = conn => {}
                        _ = conn_stop.changed() => {}
                    }
                    if served.load(Ordering::Relaxed) {
                        closed.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        Backend {
            addr,
            slot: slot.to_string(),
            requests,
            connections_closed,
            healthy: knobs.healthy,
            health_delay_ms: knobs.health_delay_ms,
            probes: knobs.probes,
            failing_probes: knobs.failing_probes,
            fail_percent: knobs.fail_percent,
            delay_ms: knobs.delay_ms,
            stop,
        }
    }

    /// Waits until the proxy has answered and reported `n` health probes of
    /// this backend that arrived after the call (so they saw every knob set
    /// before it). The proxy probes a backend one probe at a time and sends
    /// each result to its Controller before the next probe starts, so the
    /// arrival of probe n + 1 proves probe n was reported. Counted here, on
    /// the backend's side: `status` has no check counter, and its
    /// `last_check.at` is in whole seconds.
    pub async fn wait_for_probes(&self, n: u64) {
        let seen = self.probes.load(Ordering::SeqCst);
        let what = format!("{n} more health probes of {} reported", self.slot);
        eventually(Duration::from_secs(10), &what, || {
            self.probes.load(Ordering::SeqCst) > seen + n
        })
        .await;
    }

    /// Tells the listener and every open connection to close, and returns
    /// at once: they close a moment later. A test that needs the backend
    /// gone before its next step uses [`Backend::stop_and_wait`].
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Closes the listener and every open connection, and returns once all
    /// of them are closed: each holds a receiver of the stop channel until
    /// its socket is dropped, so the channel closing proves it.
    pub async fn stop_and_wait(&self) {
        self.stop();
        tokio::time::timeout(Duration::from_secs(5), self.stop.closed())
            .await
            .unwrap_or_else(|_| panic!("backend {} still open 5 s after stop", self.slot));
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn answer(
    slot: &str,
    req: Request<hyper::body::Incoming>,
    counter: &AtomicU64,
    knobs: &Knobs,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    if path == "/health" {
        knobs.probes.fetch_add(1, Ordering::SeqCst);
        let delay = knobs.health_delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let forced_failure = knobs
            .failing_probes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let status = if knobs.healthy.load(Ordering::Relaxed) && !forced_failure {
            200
        } else {
            500
        };
        return Response::builder()
            .status(status)
            .header("x-slot", slot)
            .body(Full::new(Bytes::from_static(b"health")))
            .unwrap();
    }
    let n = counter.fetch_add(1, Ordering::Relaxed);
    let delay = knobs.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    // Failures spread evenly: request n fails when its place in each
    // hundred is below the percentage.
    if (n % 100) < knobs.fail_percent.load(Ordering::Relaxed) {
        return Response::builder()
            .status(500)
            .header("x-slot", slot)
            .body(Full::new(Bytes::from_static(b"failing on purpose")))
            .unwrap();
    }
    if let Some(ms) = path
        .strip_prefix("/slow/")
        .and_then(|ms| ms.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let body = if path == "/echo-headers" {
        let mut text = String::new();
        for (name, value) in req.headers() {
            text.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
        }
        text
    } else if path == "/echo-body" {
        let bytes = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return Response::builder()
            .header("x-slot", slot)
            .body(Full::new(bytes))
            .unwrap();
    } else {
        format!("{slot} {path}")
    };
    Response::builder()
        .header("x-slot", slot)
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// A running `switchyard run`, stopped with SIGTERM on drop.
pub struct Proxy {
    pub addr: SocketAddr,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub socket: PathBuf,
    child: Child,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    /// Writes `[server]` (listen on port 0, admin socket and state in `dir`)
    /// followed by `routes` into `dir/switchyard.toml` and starts the proxy.
    pub fn start(dir: &Path, routes: &str) -> Proxy {
        let config = dir.join("switchyard.toml");
        std::fs::write(&config, config_text(routes)).unwrap();
        Proxy::start_with_file(dir, &config)
    }

    /// Starts the proxy on an existing config file.
    pub fn start_with_file(dir: &Path, config: &Path) -> Proxy {
        Proxy::start_with_env(dir, config, &[])
    }

    /// Starts the proxy on an existing config file with these environment
    /// variables set.
    pub fn start_with_env(dir: &Path, config: &Path, env: &[(&str, &str)]) -> Proxy {
        let mut command = Command::new(switchyard_bin());
        command
            .args(["run", "-c"])
            .arg(config)
            .envs(env.iter().copied());
        Proxy::spawn(dir, config, command)
    }

    /// Starts the proxy the way systemd's socket activation does: with
    /// `listener` as file descriptor 3, `LISTEN_FDS=1` and `LISTEN_PID` set
    /// to the proxy's own pid.
    pub fn start_activated(dir: &Path, config: &Path, listener: &std::net::TcpListener) -> Proxy {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let fd = listener.as_raw_fd();
        let mut command = Command::new("sh");
        // `exec` keeps the shell's pid, so `$$` is the proxy's.
        command
            .arg("-c")
            .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" run -c \"$1\"")
            .arg(switchyard_bin())
            .arg(config);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if fd == 3 {
                    let flags = libc::fcntl(3, libc::F_GETFD);
                    libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
                } else if libc::dup2(fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Proxy::spawn(dir, config, command)
    }

    fn spawn(dir: &Path, config: &Path, mut command: Command) -> Proxy {
        let mut child = command
            .env("SWITCHYARD_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn switchyard");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("listening on http://").nth(1) {
                    // logfmt quotes the message.
                    let addr = addr.trim().trim_end_matches('"');
                    let _ = addr_tx.send(addr.parse::<SocketAddr>().unwrap());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let addr = match addr_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "switchyard did not start; log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        Proxy {
            addr,
            dir: dir.to_path_buf(),
            config: config.to_path_buf(),
            socket: dir.join("admin.sock"),
            child,
            log,
        }
    }

    /// Runs `switchyard ARGS --socket <this proxy's socket>`.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(switchyard_bin())
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .output()
            .expect("run the switchyard CLI")
    }

    /// Runs a CLI command that must succeed; returns its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "switchyard {args:?} failed ({:?}): {}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `status --json`, parsed.
    pub fn status(&self) -> serde_json::Value {
        let out = self.cli_ok(&["status", "--json"]);
        let response: serde_json::Value = serde_json::from_str(&out).unwrap();
        response["result"].clone()
    }

    /// Polls `status` (without blocking the runtime) until `condition`
    /// holds for it, and returns that status.
    pub async fn wait_for_status(
        &self,
        what: &str,
        condition: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        self.wait_for_status_within(Duration::from_secs(5), what, condition)
            .await
    }

    /// As [`Proxy::wait_for_status`], with another deadline: for what takes
    /// seconds by design (a config edit that removes a route is applied
    /// only after the file stayed that way for 3 s).
    pub async fn wait_for_status_within(
        &self,
        limit: Duration,
        what: &str,
        condition: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + limit;
        loop {
            let status = tokio::task::block_in_place(|| self.status());
            if condition(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} waiting for {what}: {status:#}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Config reloads the proxy has applied (health changes publish new
    /// table generations too; this counts only reloads).
    pub fn reloads(&self) -> u64 {
        self.status()["config"]["reloads"]
            .as_u64()
            .expect("status has a reload count")
    }

    /// The current generation of the routing table.
    pub fn generation(&self) -> u64 {
        self.status()["generation"]
            .as_u64()
            .expect("status has a generation")
    }

    /// Rewrites the config file the way editors do: write a temp file, rename
    /// it over the original.
    pub fn edit_config(&self, routes: &str) {
        self.write_config_text(&config_text(routes));
    }

    pub fn write_config_text(&self, text: &str) {
        let tmp = self.dir.join(".switchyard.toml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.config).unwrap();
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        self.signal_and_wait()
    }

    /// Waits for the proxy to exit by itself and returns its status.
    pub fn wait_for_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "switchyard did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn signal_and_wait(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill only sends a signal to our own child.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("switchyard did not stop within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The first `[tls] listen` address as bound, from the start-up log
    /// (written just after the plain listeners').
    pub fn tls_addr(&self) -> SocketAddr {
        let mut found = None;
        wait_until(Duration::from_secs(5), "the https listener", || {
            found = self.log_text().lines().find_map(|l| {
                let rest = l.split("listening on https://").nth(1)?;
                rest.trim().trim_end_matches('"').parse().ok()
            });
            found.is_some()
        });
        found.unwrap()
    }

    /// The address `server.admin_http` bound, from the start-up log.
    pub fn admin_http_addr(&self) -> SocketAddr {
        let log = self.log_text();
        let line = log
            .lines()
            .find(|l| l.contains("admin http on http://"))
            .unwrap_or_else(|| panic!("no admin http address in the log:\n{log}"));
        let rest = line.split("admin http on http://").nth(1).unwrap();
        rest.split_whitespace().next().unwrap().parse().unwrap()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal_and_wait();
        }
    }
}

/// `[server]` for tests, then `routes`.
pub fn config_text(routes: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin_socket = \"admin.sock\"\nstate_dir = \"state\"\ndrain_timeout = \"5s\"\nthreads = 2\n\n{routes}"
    )
}

/// A two-slot route `name` with `active` active.
pub fn two_slot_route(name: &str, active: &str, blue: &Backend, green: &Backend) -> String {
    format!(
        "[[route]]\nname = \"{name}\"\nactive = \"{active}\"\n[route.slots]\nblue = [\"{}\"]\ngreen = [\"{}\"]\n",
        blue.addr, green.addr
    )
}

/// The `n`th of many client addresses, all in 127.0.0.0/8 and none of
/// them 127.0.0.1: 127.1.x.y.
pub fn client_address(n: u32) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(0x7f01_0000 + (n % 65_000) + 1)
}

/// One keep-alive HTTP/1.1 connection.
pub struct Client {
    addr: SocketAddr,
    /// The loopback address the client connects from, when not the default.
    from: Option<std::net::IpAddr>,
    sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

/// A response's status, `x-slot` header and body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub slot: Option<String>,
    /// The `Set-Cookie` header, if any.
    pub set_cookie: Option<String>,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client {
            addr,
            from: None,
            sender: None,
        }
    }

    /// A client that connects from `from`, another loopback address
    /// (127.0.0.0/8), so the proxy sees a different client IP.
    pub fn from_address(addr: SocketAddr, from: std::net::Ipv4Addr) -> Client {
        assert!(from.is_loopback(), "tests stay on loopback");
        Client {
            addr,
            from: Some(from.into()),
            sender: None,
        }
    }

    async fn connect(
        &mut self,
    ) -> Result<&mut hyper::client::conn::http1::SendRequest<Full<Bytes>>, String> {
        let reusable = self.sender.as_ref().is_some_and(|s| !s.is_closed());
        if !reusable {
            let stream = match self.from {
                None => TcpStream::connect(self.addr).await,
                Some(from) => {
                    let socket =
                        tokio::net::TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
                    socket
                        .bind(SocketAddr::new(from, 0))
                        .map_err(|e| format!("bind {from}: {e}"))?;
                    socket.connect(self.addr).await
                }
            }
            .map_err(|e| format!("connect: {e}"))?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            tokio::spawn(conn);
            self.sender = Some(sender);
        }
        Ok(self.sender.as_mut().unwrap())
    }

    /// GET `path` with `Host: host`.
    pub async fn get(&mut self, host: &str, path: &str) -> Result<Reply, String> {
        self.send("GET", host, path, &[], Bytes::new()).await
    }

    pub async fn send(
        &mut self,
        method: &str,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Reply, String> {
        // Like a browser or hyper's pooled client: a kept-alive connection
        // the server closed before this request went out (a `Connection:
        // close` answer, a server stopping) is replaced, once.
        if self.connect().await?.ready().await.is_err() {
            self.sender = None;
            self.connect()
                .await?
                .ready()
                .await
                .map_err(|e| format!("not ready: {e}"))?;
        }
        let sender = self.connect().await?;
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", host);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(body)).unwrap();
        let result = sender.send_request(request).await;
        let response = match result {
            Ok(r) => r,
            Err(e) => {
                self.sender = None;
                return Err(format!("request: {e}"));
            }
        };
        let status = response.status().as_u16();
        let slot = response
            .headers()
            .get("x-slot")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let set_cookie = response
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok(Reply {
            status,
            slot,
            set_cookie,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// Keep-alive clients hammering the proxy until stopped; counts successes
/// and failures (anything but a 200 from a backend counts as failed).
pub struct Load {
    stop: Arc<AtomicBool>,
    pub ok: Arc<AtomicU64>,
    pub failed: Arc<AtomicU64>,
    pub failures: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// `clients` connections, each sending up to `max_per_client` requests.
    pub fn start(addr: SocketAddr, host: &str, clients: usize, max_per_client: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..clients)
            .map(|_| {
                let (stop, ok, failed, failures) =
                    (stop.clone(), ok.clone(), failed.clone(), failures.clone());
                let host = host.to_string();
                tokio::spawn(async move {
                    let mut client = Client::new(addr);
                    for _ in 0..max_per_client {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        match client.get(&host, "/load").await {
                            Ok(reply) if reply.status == 200 && reply.slot.is_some() => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            other => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                let mut list = failures.lock().unwrap();
                                if list.len() < 20 {
                                    list.push(format!("{other:?}"));
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            failures,
            tasks,
        }
    }

    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops the clients and returns (ok, failed, first failures).
    pub async fn finish(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        let failures = self.failures.lock().unwrap().clone();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            failures,
        )
    }
}

/// Waits, without blocking the runtime, until `condition` holds.
pub async fn eventually(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
