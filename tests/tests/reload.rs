//! Config edits hot-reloaded under load: valid ones apply in one publish,
//! invalid ones change nothing but the reported error, and a file caught
//! mid-write (truncated, cut after any line) never takes traffic down or
//! loses a runtime decision.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchyard_tests::*;

/// The Controller's `SHRINK_SETTLE`: how long an edit that removes
/// something must stay in the file before it applies.
const SHRINK_SETTLE: Duration = Duration::from_secs(3);
/// Longer than the watcher's 250 ms settle time: a writer that stops this
/// long mid-write has its half-written file read.
const MID_WRITE_PAUSE: Duration = Duration::from_millis(300);

fn routes_with_weight(blue: &Backend, green: &Backend, weight: u8, extra_route: bool) -> String {
    let mut text = two_slot_route("app", "blue", blue, green);
    text.push_str(&format!(
        "[route.canary]\nslot = \"green\"\nweight = {weight}\n"
    ));
    if extra_route {
        text.push_str(&format!(
            "\n[[route]]\nname = \"extra\"\nhosts = [\"extra.test\"]\nactive = \"green\"\n[route.slots]\ngreen = [\"{}\"]\n",
            green.addr
        ));
    }
    text
}

async fn wait_for_reload(proxy: &Proxy, above: u64) -> u64 {
    let status = proxy
        .wait_for_status("a reload", |s| {
            s["config"]["reloads"].as_u64() > Some(above)
        })
        .await;
    status["config"]["reloads"].as_u64().unwrap()
}

/// Opens the config file in place with O_TRUNC and writes `head`: what
/// `cat > file`, editors that do not rename, and copies over the file do.
fn open_in_place(path: &Path, head: &str) -> std::fs::File {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap();
    file.write_all(head.as_bytes()).unwrap();
    file
}

/// Keep-alive clients, one per (host, slot), each sending a request every
/// 2 ms until stopped (at most 30 000): every answer must be a 200 from
/// that slot.
struct Watchdog {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    bad: Arc<Mutex<Vec<String>>>,
    bad_count: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Watchdog {
    fn start(addr: SocketAddr, expected: &[(&str, &str)]) -> Watchdog {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let bad = Arc::new(Mutex::new(Vec::new()));
        let bad_count = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let tasks = expected
            .iter()
            .map(|(host, slot)| {
                let (host, slot) = (host.to_string(), slot.to_string());
                let (stop, ok, bad, bad_count) =
                    (stop.clone(), ok.clone(), bad.clone(), bad_count.clone());
                tokio::spawn(async move {
                    let mut client = Client::new(addr);
                    for _ in 0..30_000 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        match client.get(&host, "/watch").await {
                            Ok(r) if r.status == 200 && r.slot.as_deref() == Some(&*slot) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            other => {
                                bad_count.fetch_add(1, Ordering::Relaxed);
                                let mut list = bad.lock().unwrap();
                                if list.len() < 20 {
                                    let what = match other {
                                        Ok(r) => {
                                            format!("{} from {:?}: {}", r.status, r.slot, r.body)
                                        }
                                        Err(e) => e,
                                    };
                                    list.push(format!(
                                        "{host} at {:?} (wanted {slot}): {what}",
                                        started.elapsed()
                                    ));
                                }
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                })
            })
            .collect();
        Watchdog {
            stop,
            ok,
            bad,
            bad_count,
            tasks,
        }
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Fails the test on any wrong answer so far.
    fn check(&self, when: &str) {
        let bad = self.bad_count.load(Ordering::Relaxed);
        assert_eq!(
            bad,
            0,
            "{when}: {bad} requests failed or went elsewhere: {:#?}",
            self.bad.lock().unwrap()
        );
    }

    /// Stops the clients; returns the number of good answers.
    async fn finish(mut self, when: &str) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
        self.check(when);
        self.ok.load(Ordering::Relaxed)
    }
}

/// `switchyard_config_reloads_total{result=...}` summed over `results`.
async fn reads(admin: SocketAddr, results: &[&str]) -> u64 {
    let text = Client::new(admin)
        .get("admin", "/metrics")
        .await
        .unwrap()
        .body;
    results
        .iter()
        .map(|result| {
            let series = format!("switchyard_config_reloads_total{{result=\"{result}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&series)?.trim().parse::<f64>().ok())
                .unwrap_or(0.0) as u64
        })
        .sum()
}

/// Two routes with blue and green slots and health checks, and a canary
/// on `api`: what a production file looks like, in the README's order.
/// Every line prefix of it that parses is one a whole edit would not be:
/// it has a route, a slot, a section or the canary's weight less.
fn realistic_config(blue: &Backend, green: &Backend) -> String {
    format!(
        r#"# switchyard in front of app and its api
[server]
listen = ["127.0.0.1:0"]
admin_socket = "admin.sock"
state_dir = "state"
drain_timeout = "5s"
threads = 2
admin_http = "127.0.0.1:0"

[[route]]
name = "app"
hosts = ["app.test"]
active = "blue"
retries = 2

[route.slots]
blue = ["{blue}"]
green = ["{green}"]

[route.health]
path = "/health"
interval = "100ms"
timeout = "500ms"
rise = 1
fall = 3

[[route]]
name = "api"
hosts = ["api.test", "*.api.test"]
path_prefix = "/"
active = "blue"

[route.slots]
blue = ["{blue}"]
green = ["{green}"]

[route.health]
path = "/health"
interval = "100ms"
timeout = "500ms"

# a tenth of the clients try green
[route.canary]
slot = "green"
weight = 10
"#,
        blue = blue.addr,
        green = green.addr
    )
}

/// The realistic config running, with runtime decisions the file does not
/// hold: `app` switched to green, `api`'s canary raised to 100 %.
struct Decided {
    _blue: Backend,
    _green: Backend,
    _dir: tempfile::TempDir,
    proxy: Proxy,
    admin: SocketAddr,
    path: PathBuf,
    text: String,
}

impl Decided {
    async fn start() -> Decided {
        let blue = Backend::start("blue").await;
        let green = Backend::start("green").await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("switchyard.toml");
        let text = realistic_config(&blue, &green);
        std::fs::write(&path, &text).unwrap();
        let proxy = Proxy::start_with_file(dir.path(), &path);
        let admin = proxy.admin_http_addr();
        tokio::task::block_in_place(|| {
            proxy.cli_ok(&["switch", "app", "green", "--reason", "runtime decision"]);
            proxy.cli_ok(&["canary", "api", "green", "100"]);
        });
        let decided = Decided {
            _blue: blue,
            _green: green,
            _dir: dir,
            proxy,
            admin,
            path,
            text,
        };
        decided.assert_decisions_kept("at start");
        decided
    }

    /// Status and state.json still hold both routes with the admin's
    /// decisions, and nothing is held or rejected.
    fn assert_decisions_kept(&self, when: &str) {
        let status = tokio::task::block_in_place(|| self.proxy.status());
        let routes = &status["routes"];
        assert_eq!(
            routes.as_array().map(Vec::len),
            Some(2),
            "{when}: {status:#}"
        );
        assert_eq!(routes[0]["name"], "app", "{when}");
        assert_eq!(routes[0]["active"], "green", "{when}: {status:#}");
        assert_eq!(routes[0]["decided_by"], "admin", "{when}: {status:#}");
        assert_eq!(routes[1]["name"], "api", "{when}");
        assert_eq!(routes[1]["active"], "blue", "{when}: {status:#}");
        assert_eq!(
            routes[1]["canary"],
            serde_json::json!({"slot": "green", "weight": 100}),
            "{when}: {status:#}"
        );
        assert!(status["config"]["error"].is_null(), "{when}: {status:#}");
        assert!(
            status["config"]["pending_edit"].is_null(),
            "{when}: {status:#}"
        );
        let state_path = self.proxy.dir.join("state").join("state.json");
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
        assert_eq!(
            state["routes"]["app"]["active"], "green",
            "{when}: {state:#}"
        );
        assert_eq!(
            state["routes"]["api"]["canary"]["weight"], 100,
            "{when}: {state:#}"
        );
    }

    /// Waits until the proxy has read the whole file again after a write
    /// that started when `before` reads had been counted: a read that
    /// applied it or found it unchanged (a half-written file is held or
    /// rejected, which counts otherwise), with nothing held any more.
    async fn wait_for_the_whole_file(&self, before: u64, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let read = reads(self.admin, &["ok", "unchanged"]).await;
            if read > before {
                let status = tokio::task::block_in_place(|| self.proxy.status());
                if status["config"]["pending_edit"].is_null() && status["config"]["error"].is_null()
                {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{what}: the whole file was not read back within 10 s; log:\n{}",
                self.proxy.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn whole_reads(&self) -> u64 {
        reads(self.admin, &["ok", "unchanged"]).await
    }

    /// Rewrites the file in place, stalling after `head`: 300 ms, and
    /// until the proxy has looked at the half-written file (so that every
    /// cut is really seen, however busy the machine); then writes `tail`
    /// and waits until the whole file has been read back.
    async fn write_with_a_stall(&self, head: &str, tail: &str, when: &str) {
        let any = ["ok", "unchanged", "held", "error"];
        let before = reads(self.admin, &any).await;
        let mut file = open_in_place(&self.path, head);
        tokio::time::sleep(MID_WRITE_PAUSE).await;
        let deadline = Instant::now() + Duration::from_secs(5);
        while reads(self.admin, &any).await == before {
            assert!(
                Instant::now() < deadline,
                "{when}: the half-written file was not read within 5 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let whole = self.whole_reads().await;
        file.write_all(tail.as_bytes()).unwrap();
        drop(file);
        self.wait_for_the_whole_file(whole, when).await;
    }

    fn watchdog(&self) -> Watchdog {
        Watchdog::start(
            self.proxy.addr,
            &[("app.test", "green"), ("api.test", "green")],
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_truncated_and_written_again_after_a_pause_fails_no_request_and_keeps_decisions() {
    let site = Decided::start().await;
    let watchdog = site.watchdog();
    eventually(Duration::from_secs(10), "the watchdog to start", || {
        watchdog.ok() > 20
    })
    .await;

    // Truncated (an empty file parses: no routes), 300 ms of nothing, then
    // the same good file.
    site.write_with_a_stall("", &site.text, "truncate, pause, write")
        .await;
    site.assert_decisions_kept("after the file came back");
    let during = watchdog.ok();
    eventually(Duration::from_secs(10), "requests after the edit", || {
        watchdog.ok() > during + 20
    })
    .await;
    let ok = watchdog.finish("truncate, pause, write").await;
    assert!(ok > 100, "only {ok} requests");
    // The empty file was held, not applied, and said so.
    let log = site.proxy.log_text();
    assert!(
        log.contains("config edit removes every route (app, api); applying it if the file stays this way for 3s"),
        "{log}"
    );
    assert!(
        log.contains("withdrawn: the file is back to the running config"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_cut_after_any_line_for_a_moment_moves_no_traffic_and_keeps_decisions() {
    let site = Decided::start().await;
    let watchdog = site.watchdog();
    eventually(Duration::from_secs(10), "the watchdog to start", || {
        watchdog.ok() > 20
    })
    .await;

    // The file rewritten in place, stalling for 300 ms after each line
    // boundary in turn (the empty file included), then finished.
    let text = site.text.clone();
    let mut cuts = vec![0];
    cuts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
    cuts.retain(|&cut| cut < text.len());
    let started = Instant::now();
    let held_before = reads(site.admin, &["held"]).await;
    for &cut in &cuts {
        let line = text[..cut].lines().count() + 1;
        let when = format!("cut before line {line}");
        site.write_with_a_stall(&text[..cut], &text[cut..], &when)
            .await;
        site.assert_decisions_kept(&when);
        watchdog.check(&when);
    }
    let held = reads(site.admin, &["held"]).await - held_before;
    let ok = watchdog.finish("after every cut").await;
    eprintln!(
        "{} cuts ({held} held, the others rejected) in {:?}, {ok} requests, all on the admin's slots",
        cuts.len(),
        started.elapsed()
    );
    assert!(cuts.len() > 30, "{} cuts", cuts.len());
    assert!(held > 10, "only {held} cuts held");
    // The cuts that used to move traffic: after `blue = [...]` of app
    // (green gone), and after the canary's `slot` line (weight 0).
    let log = site.proxy.log_text();
    assert!(
        log.contains(
            "config edit removes slot green of route app, [route.health] of route app, route api;"
        ),
        "{log}"
    );
    assert!(
        log.contains("config edit removes the canary of route api (slot green at weight 10 becomes weight 0)"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_rewritten_in_one_write_fails_no_request_and_keeps_decisions() {
    let site = Decided::start().await;
    let watchdog = site.watchdog();
    eventually(Duration::from_secs(10), "the watchdog to start", || {
        watchdog.ok() > 20
    })
    .await;
    for round in 0..3 {
        let before = site.whole_reads().await;
        drop(open_in_place(&site.path, &site.text));
        let when = format!("O_TRUNC and one write, round {round}");
        site.wait_for_the_whole_file(before, &when).await;
        site.assert_decisions_kept(&when);
    }
    let ok = watchdog.finish("O_TRUNC and one write").await;
    assert!(ok > 20, "only {ok} requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_route_removed_on_purpose_goes_after_the_long_settle_and_a_later_edit_cancels_the_wait() {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    let app = two_slot_route("app", "blue", &blue, &green).replace(
        "name = \"app\"\n",
        "name = \"app\"\nhosts = [\"app.test\"]\n",
    );
    let api = two_slot_route("api", "blue", &blue, &green).replace(
        "name = \"api\"\n",
        "name = \"api\"\nhosts = [\"api.test\"]\n",
    );
    let proxy = Proxy::start(dir.path(), &format!("{app}\n{api}"));
    tokio::task::block_in_place(|| proxy.cli_ok(&["switch", "api", "green"]));
    let mut client = Client::new(proxy.addr);

    // Removed, then put back with another change before 3 s: the removal
    // never applies, the later edit does at once, api keeps its switch.
    proxy.edit_config(&app);
    let status = proxy
        .wait_for_status("the removal held", |s| {
            s["config"]["pending_edit"].is_object()
        })
        .await;
    assert_eq!(
        status["config"]["pending_edit"]["removes"],
        serde_json::json!(["route api"]),
        "{status:#}"
    );
    assert_eq!(status["routes"].as_array().unwrap().len(), 2);
    let api_reply = client.get("api.test", "/").await.unwrap();
    assert_eq!(
        (api_reply.status, api_reply.slot.as_deref()),
        (200, Some("green"))
    );
    let app = app.replace("[route.slots]", "retries = 3\n[route.slots]");
    let reloads = tokio::task::block_in_place(|| proxy.reloads());
    proxy.edit_config(&format!("{app}\n{api}"));
    let status = proxy
        .wait_for_status("the later edit applied", |s| {
            s["config"]["reloads"].as_u64() > Some(reloads)
        })
        .await;
    assert!(status["config"]["pending_edit"].is_null(), "{status:#}");
    assert_eq!(status["routes"].as_array().unwrap().len(), 2);
    assert_eq!(status["routes"][1]["active"], "green");
    assert_eq!(status["routes"][1]["decided_by"], "admin");

    // Removed for good: held for 3 s, then applied.
    let written = Instant::now();
    proxy.edit_config(&app);
    proxy
        .wait_for_status("the removal held", |s| {
            s["config"]["pending_edit"].is_object()
        })
        .await;
    let status = proxy
        .wait_for_status_within(Duration::from_secs(10), "the removal applied", |s| {
            s["routes"].as_array().map(Vec::len) == Some(1)
        })
        .await;
    let waited = written.elapsed();
    assert!(
        waited >= SHRINK_SETTLE,
        "applied after {waited:?}, before the file stayed for {SHRINK_SETTLE:?}"
    );
    assert!(status["config"]["pending_edit"].is_null(), "{status:#}");
    assert_eq!(status["routes"][0]["name"], "app");
    assert_eq!(client.get("api.test", "/").await.unwrap().status, 404);
    let log = proxy.log_text();
    assert!(
        log.contains(
            "config edit removes route api; applying it if the file stays this way for 3s"
        ),
        "{log}"
    );
    assert!(log.contains("withdrawn: a later edit replaced it"), "{log}");
    let history = tokio::task::block_in_place(|| proxy.cli_ok(&["history", "--json"]));
    assert!(
        history.contains("removes route api; the file stayed this way for 3s"),
        "{history}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ordinary_edit_applies_after_the_short_settle() {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let other = Backend::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    let routes = two_slot_route("app", "blue", &blue, &green);
    let proxy = Proxy::start(dir.path(), &routes);
    let mut client = Client::new(proxy.addr);
    // A config switch to a slot not known healthy yet would be held.
    proxy
        .wait_for_status("green healthy", |s| {
            s["routes"][0]["slots"][1]["health"] == "healthy"
        })
        .await;

    // `active` edited (renamed over the file), then green's backend
    // (written in place): each applies well before the long settle, and
    // nothing is ever held.
    let edits = [
        routes.replace("active = \"blue\"", "active = \"green\""),
        routes
            .replace("active = \"blue\"", "active = \"green\"")
            .replace(&green.addr.to_string(), &other.addr.to_string()),
    ];
    for (i, edit) in edits.iter().enumerate() {
        let reloads = tokio::task::block_in_place(|| proxy.reloads());
        let written = Instant::now();
        if i == 0 {
            proxy.edit_config(edit);
        } else {
            drop(open_in_place(&proxy.config, &config_text(edit)));
        }
        proxy
            .wait_for_status("the edit applied", |s| {
                assert!(s["config"]["pending_edit"].is_null(), "held: {s:#}");
                s["config"]["reloads"].as_u64() > Some(reloads)
            })
            .await;
        let waited = written.elapsed();
        assert!(
            waited < SHRINK_SETTLE,
            "edit {i} applied after {waited:?}, not after the short settle"
        );
        assert_eq!(
            tokio::task::block_in_place(|| proxy.status())["routes"][0]["active"],
            "green"
        );
    }
    let reply = client.get("x", "/").await.unwrap();
    assert_eq!(reply.slot.as_deref(), Some("green"));
    assert_eq!(other.requests.load(Ordering::Relaxed), 1, "the new backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reloads_under_load_lose_no_request() {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &routes_with_weight(&blue, &green, 0, false));
    let load = Load::start(proxy.addr, "app.test", 6, 5_000);
    let mut reloads = tokio::task::block_in_place(|| proxy.reloads());

    for i in 0..20u8 {
        proxy.edit_config(&routes_with_weight(&blue, &green, i * 5, i % 2 == 0));
        if i % 2 == 1 {
            // Removing the extra route would wait 3 s for the file to stay
            // that way; `reload` applies it at once.
            tokio::task::block_in_place(|| proxy.cli_ok(&["reload"]));
        }
        reloads = wait_for_reload(&proxy, reloads).await;
        let status = tokio::task::block_in_place(|| proxy.status());
        assert_eq!(status["routes"][0]["canary"]["weight"], i * 5);
        assert_eq!(
            status["routes"].as_array().unwrap().len(),
            if i % 2 == 0 { 2 } else { 1 }
        );
    }
    let (ok, failed, failures) = load.finish().await;
    assert_eq!(failed, 0, "failed requests: {failures:?}");
    assert!(ok > 1_000, "only {ok} requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_invalid_edit_keeps_traffic_on_the_last_good_config_until_fixed() {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    let good = two_slot_route("app", "blue", &blue, &green);
    let proxy = Proxy::start(dir.path(), &good);
    let load = Load::start(proxy.addr, "app.test", 4, 50_000);
    eventually(Duration::from_secs(10), "load to start", || load.ok() > 200).await;

    // A bad slot name in `active` and a bad backend address at once.
    let bad = good
        .replace("active = \"blue\"", "active = \"purple\"")
        .replace(&green.addr.to_string(), "127.0.0.1:99999");
    proxy.edit_config(&bad);
    let status = proxy
        .wait_for_status("the rejected edit in status", |s| {
            s["config"]["error"].is_string()
        })
        .await;
    let error = status["config"]["error"].as_str().unwrap().to_string();
    assert!(error.contains("purple"), "{error}");
    assert!(error.contains("99999"), "{error}");
    assert!(
        error.contains("switchyard.toml:"),
        "errors carry file:line:col: {error}"
    );
    let human = tokio::task::block_in_place(|| proxy.cli_ok(&["status"]));
    assert!(human.contains("CONFIG REJECTED"), "{human}");
    let reload = tokio::task::block_in_place(|| proxy.cli(&["reload"]));
    assert_eq!(
        reload.status.code(),
        Some(1),
        "reload of a bad file is refused"
    );

    let before = load.ok();
    eventually(Duration::from_secs(10), "traffic to keep flowing", || {
        load.ok() > before + 500
    })
    .await;

    proxy.edit_config(&good.replace("active = \"blue\"", "active = \"green\""));
    let status = proxy
        .wait_for_status("the fixed file to apply", |s| {
            s["config"]["error"].is_null() && s["routes"][0]["active"] == "green"
        })
        .await;
    assert_eq!(status["routes"][0]["decided_by"], "config");
    let (_, failed, failures) = load.finish().await;
    assert_eq!(failed, 0, "failed requests: {failures:?}");
    let mut client = Client::new(proxy.addr);
    assert_eq!(
        client.get("x", "/").await.unwrap().slot.as_deref(),
        Some("green")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unchanged_active_in_the_file_keeps_the_runtime_switch() {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    let routes = two_slot_route("app", "blue", &blue, &green);
    let proxy = Proxy::start(dir.path(), &routes);
    tokio::task::block_in_place(|| proxy.cli_ok(&["switch", "app", "green"]));
    let reloads = tokio::task::block_in_place(|| proxy.reloads());
    // An unrelated edit: a new route. `active = "blue"` is unchanged.
    proxy.edit_config(&format!("{routes}\n[[route]]\nname = \"other\"\nhosts = [\"other.test\"]\nactive = \"b\"\n[route.slots]\nb = [\"{}\"]\n", blue.addr));
    wait_for_reload(&proxy, reloads).await;
    let status = tokio::task::block_in_place(|| proxy.status());
    assert_eq!(status["routes"][0]["active"], "green");
    assert_eq!(status["routes"][0]["decided_by"], "admin");
}

#[test]
fn check_reports_every_error_with_its_place_and_exits_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[server]\nlisten = [\"nowhere\"]\n\n[[route]]\nname = \"app\"\nactiv = \"blue\"\n[route.slots]\nblue = []\n",
    )
    .unwrap();
    let out = std::process::Command::new(switchyard_bin())
        .args(["check", "-c"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(
        errors.contains("bad.toml:2:"),
        "listen error at line 2: {errors}"
    );
    assert!(errors.contains("did you mean `active`"), "{errors}");
    assert!(
        errors.contains("bad.toml:8:"),
        "empty slot at line 8: {errors}"
    );

    let good = dir.path().join("good.toml");
    std::fs::write(&good, config_text("[[route]]\nname = \"app\"\nactive = \"blue\"\n[route.slots]\nblue = [\"127.0.0.1:3000\"]\n")).unwrap();
    let out = std::process::Command::new(switchyard_bin())
        .args(["check", "-c"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_edited_upstream_timeout_applies_without_a_restart() {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    let routes = two_slot_route("app", "blue", &blue, &green);
    let proxy = Proxy::start(dir.path(), &routes);
    let mut client = Client::new(proxy.addr);
    assert_eq!(client.get("x", "/slow/400").await.unwrap().status, 200);

    let reloads = tokio::task::block_in_place(|| proxy.reloads());
    proxy.write_config_text(
        &config_text(&routes).replace("threads = 2", "threads = 2\nread_timeout = \"100ms\""),
    );
    wait_for_reload(&proxy, reloads).await;
    let status = tokio::task::block_in_place(|| proxy.status());
    assert_eq!(status["config"]["needs_restart"], serde_json::json!([]));
    let mut client = Client::new(proxy.addr);
    let timed_out = client.get("x", "/slow/400").await.unwrap();
    assert_eq!(timed_out.status, 504, "{}", timed_out.body);
    assert!(timed_out.body.contains("timed out"), "{}", timed_out.body);
}
