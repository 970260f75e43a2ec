//! The deploy kit of `examples/compose/`: `deploy.sh` and `rollback.sh` run
//! against the real switchyard binary on loopback. There is no Docker
//! engine here, so the slots are python3 processes that the scripts'
//! `START_SLOT` and `STOP_SLOT` hooks start and kill through pid files, as
//! `docker compose up -d` / `stop` would start and stop containers. Each
//! test asserts what a pipeline relies on: the exit code, where traffic
//! goes, which slot processes run, and the history.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use switchyard_tests::{switchyard_bin, wait_until, Proxy};

/// The stages a deploy or rollback that goes all the way reports, in order.
const EVERY_STAGE: [&str; 9] = [
    "preflight",
    "start",
    "health",
    "smoke",
    "switch",
    "guard",
    "drain",
    "stop",
    "done",
];

/// The route's `override_token`, and the scripts' `OVERRIDE_TOKEN`.
const TOKEN: &str = "smoke-secret";

/// A slot's app: every path answers `<slot> <version>`. A version
/// containing "sick" fails `/health`; one containing "broken" answers 500
/// on every other path; one containing "flaky" answers 500 under `/api/`
/// (the smoke test's `/` passes, users' requests fail); `/slow/<seconds>`
/// answers after that long.
const APP: &str = r#"
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

slot, version, port = sys.argv[1], sys.argv[2], int(sys.argv[3])


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path == "/health":
            status = 503 if "sick" in version else 200
        else:
            status = 500 if "broken" in version else 200
            if "flaky" in version and self.path.startswith("/api/"):
                status = 500
        if self.path.startswith("/slow/"):
            time.sleep(float(self.path[len("/slow/"):]))
        body = f"{slot} {version}\n".encode()
        self.send_response(status)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
"#;

/// `START_SLOT`: the slot's app in the background, its pid in a file.
const START_SLOT: &str = r#"#!/usr/bin/env bash
set -euo pipefail
slot=$1 version=$2
case $slot in
blue) port=$BLUE_PORT ;;
green) port=$GREEN_PORT ;;
*) echo "no port for slot $slot" >&2; exit 1 ;;
esac
python3 "$TEST_DIR/app.py" "$slot" "$version" "$port" >>"$TEST_DIR/$slot.log" 2>&1 </dev/null &
echo $! >"$TEST_DIR/$slot.pid"
"#;

/// `STOP_SLOT`: kills the slot's app and returns once it is gone (or a
/// zombie nobody reaped yet: its port is closed either way).
const STOP_SLOT: &str = r#"#!/usr/bin/env bash
set -euo pipefail
pidfile=$TEST_DIR/$1.pid
[[ -f $pidfile ]] || exit 0
pid=$(<"$pidfile")
kill "$pid" 2>/dev/null || true
for _ in $(seq 200); do
  state=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -c1) || true
  if [[ -z $state || $state == Z ]]; then
    rm -f "$pidfile"
    exit 0
  fi
  sleep 0.05
done
echo "pid $pid did not stop" >&2
exit 1
"#;

/// A proxy with route `app` (slots blue and green on two free loopback
/// ports, fast health checks, an override token), and blue running v1.
struct Kit {
    proxy: Proxy,
    blue_port: u16,
    green_port: u16,
    dir: tempfile::TempDir,
}

/// What a script run left: its exit code and its stderr.
struct Run {
    code: Option<i32>,
    stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {:?}, stderr:\n{}", self.code, self.stderr)
    }
}

impl Kit {
    fn start() -> Kit {
        let dir = tempfile::tempdir().unwrap();
        write_file(&dir.path().join("app.py"), APP, 0o644);
        write_file(&dir.path().join("start-slot.sh"), START_SLOT, 0o755);
        write_file(&dir.path().join("stop-slot.sh"), STOP_SLOT, 0o755);
        // Both listeners open at once, so the two ports differ.
        let (blue_port, green_port) = {
            let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            (
                a.local_addr().unwrap().port(),
                b.local_addr().unwrap().port(),
            )
        };
        let routes = format!(
            r#"[[route]]
name = "app"
active = "blue"
[route.slots]
blue = ["127.0.0.1:{blue_port}"]
green = ["127.0.0.1:{green_port}"]
[route.health]
path = "/health"
interval = "100ms"
timeout = "500ms"
rise = 2
fall = 2
[route.preview]
override_token = "{TOKEN}"
[route.guard]
window = "1s"
min_requests = 5
"#
        );
        let proxy = Proxy::start(dir.path(), &routes);
        let kit = Kit {
            proxy,
            blue_port,
            green_port,
            dir,
        };
        // Started like the scripts start a slot, once `kit` can clean up.
        let started = Command::new(kit.dir.path().join("start-slot.sh"))
            .args(["blue", "v1"])
            .env("TEST_DIR", kit.dir.path())
            .env("BLUE_PORT", blue_port.to_string())
            .env("GREEN_PORT", green_port.to_string())
            .status()
            .unwrap();
        assert!(started.success(), "blue v1 did not start");
        wait_until(Duration::from_secs(10), "blue healthy", || {
            kit.health("blue") == "healthy"
        });
        kit
    }

    /// Runs `examples/compose/<script>` from `/` (nothing may depend on the
    /// working directory) with a clean environment: the test's hooks and
    /// proxy, then `extra`. Killed, with its process group, after 30 s.
    fn run(&self, script: &str, args: &[&str], extra: &[(&str, &str)]) -> Run {
        let path = kit_dir().join(script);
        let mut command = Command::new(&path);
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("TEST_DIR", self.dir.path())
            .env("BLUE_PORT", self.blue_port.to_string())
            .env("GREEN_PORT", self.green_port.to_string())
            .env("SWITCHYARD", switchyard_bin())
            .env("SWITCHYARD_SOCKET", &self.proxy.socket)
            .env("FRONT_URL", format!("http://{}", self.proxy.addr))
            .env("OVERRIDE_TOKEN", TOKEN)
            // Proves the override reached the new slot, not the active one.
            .env("SMOKE_BODY", "{slot} {version}")
            .env("START_SLOT", r#""$TEST_DIR/start-slot.sh" "$1" "$2""#)
            .env("STOP_SLOT", r#""$TEST_DIR/stop-slot.sh" "$1""#)
            .env("DEPLOY_STATE_DIR", self.dir.path().join("kit-state"))
            .env("POLL_INTERVAL", "0.1")
            .env("HEALTH_TIMEOUT", "10")
            .env("SWITCH_TIMEOUT", "5")
            .env("DRAIN_TIMEOUT", "5")
            .envs(extra.iter().copied())
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = command.spawn().expect("run the script");
        let mut stderr = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                // SAFETY: kill only signals the script's own process group.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                let _ = child.wait();
                panic!(
                    "{script} {args:?} ran over 30 s:\n{}",
                    reader.join().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let run = Run {
            code: status.code(),
            stderr: reader.join().unwrap(),
        };
        eprintln!("{script} {args:?}: {run}");
        run
    }

    /// `app`'s route object from `status --json`.
    fn route(&self) -> serde_json::Value {
        self.proxy.status()["routes"][0].clone()
    }

    fn active(&self) -> String {
        self.route()["active"].as_str().unwrap().to_string()
    }

    /// Slot `name`'s object in `app`'s status.
    fn slot(&self, name: &str) -> serde_json::Value {
        let route = self.route();
        route["slots"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no slot {name}: {route:#}"))
            .clone()
    }

    fn health(&self, slot: &str) -> String {
        self.slot(slot)["health"].as_str().unwrap().to_string()
    }

    /// The body a front-door GET of `path` gets, after checking for a 200.
    fn front_body(&self, path: &str) -> String {
        let (status, body) = get(self.proxy.addr, path);
        assert_eq!(status, 200, "GET {path} through the front door: {body}");
        body
    }

    /// Whether a slot's app process runs: its pid file is there and its
    /// port takes connections.
    fn running(&self, slot: &str) -> bool {
        let port = if slot == "blue" {
            self.blue_port
        } else {
            self.green_port
        };
        let pid_file = self.dir.path().join(format!("{slot}.pid")).exists();
        let listening = TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(1),
        )
        .is_ok();
        assert_eq!(
            pid_file, listening,
            "{slot}: a pid file ({pid_file}) and a listening port ({listening}) must agree"
        );
        listening
    }

    /// `app`'s switches in history, oldest first, as (from, to, reason).
    fn switches(&self) -> Vec<(String, String, String)> {
        let out = self.proxy.cli_ok(&["history", "app", "--json"]);
        let history: serde_json::Value = serde_json::from_str(&out).unwrap();
        history["result"]["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "switch" && e["result"] == "ok")
            .map(|e| {
                let text = |k: &str| e[k].as_str().unwrap_or_default().to_string();
                (text("from"), text("to"), text("reason"))
            })
            .collect()
    }
}

impl Drop for Kit {
    /// Slot processes a failed test left behind die with it.
    fn drop(&mut self) {
        for slot in ["blue", "green"] {
            let pid_file = self.dir.path().join(format!("{slot}.pid"));
            if let Some(pid) = std::fs::read_to_string(pid_file)
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
            {
                // SAFETY: kill only signals the slot process this test started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

fn kit_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/compose")
}

fn write_file(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// GET `path` on one new connection: (status, body).
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The stage names of a run's `SCRIPT: STAGE: ...` lines, in order.
fn stages(run: &Run, script: &str) -> Vec<String> {
    let prefix = format!("{script}: ");
    run.stderr
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|l| l.split_once(':').map(|(stage, _)| stage.to_string()))
        .collect()
}

#[test]
fn deploy_moves_traffic_to_the_new_version_and_stops_the_old_one() {
    let kit = Kit::start();
    assert!(kit.front_body("/").contains("blue v1"));

    let run = kit.run("deploy.sh", &["v2"], &[("REASON", "ci job 17")]);
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(stages(&run, "deploy"), EVERY_STAGE, "{run}");

    for _ in 0..5 {
        assert!(kit.front_body("/").contains("green v2"));
    }
    assert_eq!(kit.active(), "green");
    assert_eq!(kit.route()["previous"], "blue");
    assert!(!kit.running("blue"), "the old version is stopped");
    assert!(kit.running("green"));
    assert_eq!(
        kit.switches(),
        [(
            "active=blue".to_string(),
            "active=green".to_string(),
            "deploy v2 to green: ci job 17".to_string()
        )]
    );
}

#[test]
fn a_version_that_never_turns_healthy_exits_3_and_leaves_traffic_alone() {
    let kit = Kit::start();

    let run = kit.run("deploy.sh", &["v2-sick"], &[("HEALTH_TIMEOUT", "2")]);
    assert_eq!(run.code, Some(3), "{run}");
    assert!(
        run.stderr.contains("FAILED at health") && run.stderr.contains("status 503"),
        "the reason, with the failing check: {run}"
    );
    assert!(run.stderr.contains("traffic untouched on blue"), "{run}");

    assert!(kit.front_body("/").contains("blue v1"));
    assert_eq!(kit.active(), "blue");
    assert!(!kit.running("green"), "the new version is stopped again");
    assert!(kit.running("blue"));
    assert!(kit.switches().is_empty(), "{:?}", kit.switches());
}

#[test]
fn a_version_failing_the_smoke_test_exits_4_and_leaves_traffic_alone() {
    let kit = Kit::start();

    // Healthy on /health, 500 on / through the front door.
    let run = kit.run("deploy.sh", &["v2-broken"], &[]);
    assert_eq!(run.code, Some(4), "{run}");
    assert!(
        run.stderr.contains("answered 500") && run.stderr.contains("green v2-broken"),
        "the smoke test reached the new version, not the active one: {run}"
    );

    assert!(kit.front_body("/").contains("blue v1"));
    assert_eq!(kit.active(), "blue");
    assert!(!kit.running("green"), "the new version is stopped again");
    assert!(kit.running("blue"));
    assert!(kit.switches().is_empty(), "{:?}", kit.switches());
}

#[test]
fn rollback_after_a_deploy_puts_blue_back() {
    let kit = Kit::start();
    let deployed = kit.run("deploy.sh", &["v2"], &[]);
    assert_eq!(deployed.code, Some(0), "{deployed}");
    assert!(kit.front_body("/").contains("green v2"));

    // blue was started before the kit: no version recorded for it.
    let run = kit.run("rollback.sh", &["v1"], &[]);
    assert_eq!(run.code, Some(0), "{run}");
    // A rollback is the way back to a known version: it does not wait for
    // the guard before it stops what it replaced.
    let rollback_stages: Vec<&str> = EVERY_STAGE.into_iter().filter(|s| *s != "guard").collect();
    assert_eq!(stages(&run, "rollback"), rollback_stages, "{run}");

    assert!(kit.front_body("/").contains("blue v1"));
    assert_eq!(kit.active(), "blue");
    assert!(kit.running("blue"));
    assert!(!kit.running("green"), "the rolled-back version is stopped");
    let switches = kit.switches();
    assert_eq!(switches.len(), 2, "{switches:?}");
    assert_eq!(
        switches[1],
        (
            "active=green".to_string(),
            "active=blue".to_string(),
            "rollback to v1 in blue".to_string()
        )
    );
}

#[test]
fn rollback_without_a_version_restarts_what_the_last_deploy_put_there() {
    let kit = Kit::start();
    for version in ["v2", "v3"] {
        let run = kit.run("deploy.sh", &[version], &[]);
        assert_eq!(run.code, Some(0), "{run}");
    }
    assert!(kit.front_body("/").contains("blue v3"));

    let run = kit.run("rollback.sh", &[], &[]);
    assert_eq!(run.code, Some(0), "{run}");
    assert!(kit.front_body("/").contains("green v2"));
    assert!(!kit.running("blue"));

    // Nothing recorded for a slot: the version must be named.
    let kit = Kit::start();
    let deployed = kit.run("deploy.sh", &["v2"], &[]);
    assert_eq!(deployed.code, Some(0), "{deployed}");
    let run = kit.run("rollback.sh", &[], &[]);
    assert_eq!(run.code, Some(2), "{run}");
    assert!(run.stderr.contains("no version recorded for blue"), "{run}");
    assert_eq!(kit.active(), "green");
    assert!(!kit.running("blue"));
}

#[test]
fn a_drain_that_times_out_exits_6_with_traffic_already_on_the_new_version() {
    let kit = Kit::start();
    let addr = kit.proxy.addr;
    // Longer than a deploy takes on a loaded 2-core machine (a 4 s request
    // was sometimes done before the drain began), so the drain must time out.
    let slow = std::thread::spawn(move || get(addr, "/slow/15"));
    wait_until(Duration::from_secs(5), "the slow request on blue", || {
        kit.slot("blue")["in_flight"] == 1
    });

    let run = kit.run("deploy.sh", &["v2"], &[("DRAIN_TIMEOUT", "1")]);
    assert_eq!(run.code, Some(6), "{run}");
    assert!(run.stderr.contains("traffic IS on green"), "{run}");

    assert!(kit.front_body("/").contains("green v2"));
    assert!(
        kit.running("blue"),
        "the undrained old version is left running"
    );
    let (status, body) = slow.join().unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "blue v1\n"),
        "the slow request finished on blue"
    );
}

#[test]
fn refusals_exit_2_and_change_nothing() {
    let kit = Kit::start();
    let unchanged = |kit: &Kit| {
        assert_eq!(kit.active(), "blue");
        assert!(kit.running("blue"));
        assert!(!kit.running("green"));
        assert!(kit.switches().is_empty());
    };

    for (args, env, why) in [
        (&[][..], &[][..], "usage"),
        (&["v2", "v3"][..], &[][..], "usage"),
        (&["v2"][..], &[("ROUTE", "nope")][..], "no route \"nope\""),
        (&["v2"][..], &[("SMOKE_EXPECT", "ok")][..], "SMOKE_EXPECT"),
        (
            &["v2"][..],
            &[("SWITCHYARD_SOCKET", "/nonexistent/admin.sock")][..],
            "cannot connect",
        ),
    ] {
        let run = kit.run("deploy.sh", args, env);
        assert_eq!(run.code, Some(2), "{args:?} {env:?}: {run}");
        assert!(run.stderr.contains(why), "{args:?} {env:?}: {run}");
    }
    // No previous slot yet.
    let run = kit.run("rollback.sh", &["v0"], &[]);
    assert_eq!(run.code, Some(2), "{run}");
    assert!(run.stderr.contains("no previous slot"), "{run}");
    unchanged(&kit);

    // OVERRIDE_TOKEN unset, not empty: the smoke test would silently reach
    // blue.
    let mut no_token = Command::new(kit_dir().join("deploy.sh"));
    no_token
        .arg("v2")
        .env_remove("OVERRIDE_TOKEN")
        .env("SWITCHYARD", switchyard_bin())
        .env("SWITCHYARD_SOCKET", &kit.proxy.socket)
        .env("DEPLOY_STATE_DIR", kit.dir.path().join("kit-state"))
        .current_dir("/");
    let out = no_token.output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("OVERRIDE_TOKEN is not set"));

    // Another deploy of the route holds the lock.
    let state = kit.dir.path().join("kit-state");
    std::fs::create_dir_all(&state).unwrap();
    let lock = std::fs::File::create(state.join("app.lock")).unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file this test owns.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let run = kit.run("deploy.sh", &["v2"], &[]);
    assert_eq!(run.code, Some(2), "{run}");
    assert!(run.stderr.contains("another deploy"), "{run}");
    drop(lock);

    // A canary with weight on the route (green is down for good by now, so
    // no health change takes the weight away meanwhile).
    wait_until(Duration::from_secs(5), "green seen down", || {
        kit.health("green") == "unhealthy"
    });
    kit.proxy.cli_ok(&["canary", "app", "green", "10"]);
    let run = kit.run("deploy.sh", &["v2"], &[]);
    assert_eq!(run.code, Some(2), "{run}");
    assert!(run.stderr.contains("a canary on green at 10 %"), "{run}");
    kit.proxy.cli_ok(&["canary", "app", "green", "0"]);
    unchanged(&kit);
}

/// The compose files cannot run here (no Docker engine); this keeps them
/// valid and in agreement with each other and with the scripts' defaults.
#[test]
fn the_compose_files_agree_with_each_other_and_the_scripts() {
    let dir = kit_dir();
    // The service names resolve only on the compose network: `check` runs
    // with a test DNS server that knows them.
    let toml = std::fs::read_to_string(dir.join("switchyard.toml")).unwrap();
    for line in [
        r#"name = "app""#,
        r#"blue = ["app-blue:3000"]"#,
        r#"green = ["app-green:3000"]"#,
        r#"listen = ["0.0.0.0:80"]"#,
    ] {
        assert!(toml.contains(line), "switchyard.toml lacks {line}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dns = runtime.block_on(switchyard_tests::dns::DnsServer::start());
    dns.set("app-blue", &["127.0.0.1"], 600);
    dns.set("app-green", &["127.0.0.1"], 600);
    let scratch = tempfile::tempdir().unwrap();
    let config = scratch.path().join("switchyard.toml");
    let with_dns = format!("[server]\nresolvers = [\"{}\"]\n", dns.addr);
    std::fs::write(&config, toml.replacen("[server]\n", &with_dns, 1)).unwrap();
    let check = Command::new(switchyard_bin())
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(dns.questions() > 0, "check asked the test DNS server");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout) + String::from_utf8_lossy(&check.stderr)
    );

    for script in ["deploy.sh", "rollback.sh", "cutover.sh"] {
        let syntax = Command::new("bash")
            .arg("-n")
            .arg(dir.join(script))
            .output()
            .unwrap();
        assert!(
            syntax.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&syntax.stderr)
        );
    }
    if let Ok(out) = Command::new("shellcheck")
        .arg("-x")
        .args(["deploy.sh", "rollback.sh", "cutover.sh"])
        .current_dir(&dir)
        .output()
    {
        assert!(
            out.status.success(),
            "shellcheck:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    let defaults = std::fs::read_to_string(dir.join("cutover.sh")).unwrap();
    for hook in [
        r#"APP_VERSION="$2" docker compose --profile slots up -d "app-$1""#,
        r#"docker compose --profile slots stop "app-$1""#,
    ] {
        assert!(
            defaults.contains(hook),
            "cutover.sh lacks the default {hook}"
        );
    }

    // The services the default hooks name, on the project's network (no
    // host networking), on the port switchyard.toml lists; only switchyard
    // publishes one.
    let parse = Command::new("python3")
        .arg("-c")
        .arg(
            "import json, sys, yaml\n\
             print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        )
        .arg(dir.join("docker-compose.yml"))
        .output()
        .unwrap();
    // PyYAML comes with `make test` (scripts/ensure-build-deps.sh).
    assert!(
        parse.status.success(),
        "docker-compose.yml does not parse: {}",
        String::from_utf8_lossy(&parse.stderr)
    );
    let compose: serde_json::Value = serde_json::from_slice(&parse.stdout).unwrap();
    let services = &compose["services"];
    assert_eq!(
        services["switchyard"]["ports"],
        serde_json::json!(["80:80"])
    );
    for (service, port) in [
        ("switchyard", None),
        ("app-blue", Some("3000")),
        ("app-green", Some("3000")),
    ] {
        let s = &services[service];
        assert!(s.get("network_mode").is_none(), "{service}: {s:#}");
        if let Some(port) = port {
            assert!(
                s.get("ports").is_none(),
                "{service} is reachable from switchyard only: {s:#}"
            );
            assert_eq!(s["environment"]["PORT"], port, "{service}: {s:#}");
            assert_eq!(
                s["profiles"],
                serde_json::json!(["slots"]),
                "{service}: {s:#}"
            );
            assert!(
                s["image"].as_str().unwrap().contains("${APP_VERSION"),
                "{service}: the default START_SLOT sets APP_VERSION: {s:#}"
            );
        }
    }
    assert_eq!(
        services["switchyard"]["build"]["dockerfile"],
        "examples/compose/Dockerfile"
    );
    assert!(dir.join("Dockerfile").exists());
}

#[test]
fn a_release_the_guard_rolls_back_exits_8_with_traffic_on_the_warm_old_version() {
    let kit = Kit::start();
    let addr = kit.proxy.addr;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Users' traffic during the deploy: the flaky version fails it.
    let users = {
        let done = done.clone();
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                get(addr, "/api/orders");
            }
        })
    };
    let run = kit.run("deploy.sh", &["v2-flaky"], &[("GUARD_TIMEOUT", "20")]);
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    users.join().unwrap();
    assert_eq!(run.code, Some(8), "{run}");
    assert!(run.stderr.contains("traffic went back to blue"), "{run}");
    assert_eq!(kit.active(), "blue");
    assert!(kit.running("blue"), "the old version was kept warm");
    assert!(
        !kit.running("green"),
        "the rolled-back version is stopped again"
    );
    assert!(run.stderr.contains("cleanup: green stopped again"), "{run}");
    assert!(kit.front_body("/").contains("blue v1"));
}

#[test]
fn no_wait_returns_after_the_switch_and_the_next_deploy_stops_the_old_slot() {
    let kit = Kit::start();
    let run = kit.run("deploy.sh", &["--no-wait", "v2"], &[]);
    assert_eq!(run.code, Some(0), "{run}");
    assert!(
        !stages(&run, "deploy").contains(&"guard".to_string()),
        "{run}"
    );
    assert_eq!(kit.active(), "green");
    assert!(kit.running("blue"), "left running for the guard");

    let next = kit.run("deploy.sh", &["v3"], &[]);
    assert_eq!(next.code, Some(0), "{next}");
    assert_eq!(kit.active(), "blue");
    assert!(kit.front_body("/").contains("blue v3"));
    assert!(!kit.running("green"));
}
