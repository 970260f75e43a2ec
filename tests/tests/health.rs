//! Health checks end to end: the real binary probing real backends, failing
//! traffic back when the active slot breaks.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use switchyard_tests::*;

const INTERVAL_MS: u64 = 200;
const FALL: u64 = 3;

fn health_route(blue: &Backend, green: &Backend, active: &str) -> String {
    format!(
        "{}[route.health]\npath = \"/health\"\ninterval = \"{INTERVAL_MS}ms\"\ntimeout = \"{INTERVAL_MS}ms\"\nrise = 1\nfall = {FALL}\n",
        two_slot_route("app", active, blue, green)
    )
}

fn route_status(proxy: &Proxy) -> serde_json::Value {
    tokio::task::block_in_place(|| proxy.status())["routes"][0].clone()
}

fn slot_health(route: &serde_json::Value, slot: &str) -> String {
    route["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == slot)
        .map(|s| s["health"].as_str().unwrap_or("?").to_string())
        .unwrap_or_default()
}

async fn both_healthy(proxy: &Proxy) {
    eventually(Duration::from_secs(10), "both slots healthy", || {
        let route = route_status(proxy);
        slot_health(&route, "blue") == "healthy" && slot_health(&route, "green") == "healthy"
    })
    .await;
}

/// Both slots probed and healthy, green active after a switch from blue.
async fn green_active_blue_previous() -> (Backend, Backend, tempfile::TempDir, Proxy) {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &health_route(&blue, &green, "blue"));
    both_healthy(&proxy).await;
    tokio::task::block_in_place(|| proxy.cli_ok(&["switch", "app", "green"]));
    (blue, green, dir, proxy)
}

/// Blue active and healthy, green's health path failing and green marked
/// unhealthy.
async fn blue_active_green_sick() -> (Backend, Backend, tempfile::TempDir, Proxy) {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    green.healthy.store(false, Ordering::Relaxed);
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &health_route(&blue, &green, "blue"));
    eventually(Duration::from_secs(10), "green unhealthy", || {
        slot_health(&route_status(&proxy), "green") == "unhealthy"
    })
    .await;
    (blue, green, dir, proxy)
}

/// The first backend of `slot` in a route's status.
fn first_backend(route: &serde_json::Value, slot: &str) -> serde_json::Value {
    route["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == slot)
        .unwrap()["backends"][0]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_active_backend_dying_under_load_fails_back_with_no_failed_request() {
    let (blue, green, _dir, proxy) = green_active_blue_previous().await;

    let load = Load::start(proxy.addr, "x", 4, 1_000_000);
    eventually(Duration::from_secs(10), "load on green", || {
        green.requests.load(Ordering::Relaxed) > 200
    })
    .await;
    let killed = Instant::now();
    green.stop_and_wait().await;
    eventually(Duration::from_secs(10), "fail-back to blue", || {
        route_status(&proxy)["active"] == "blue"
    })
    .await;
    let took = killed.elapsed();
    let bound = Duration::from_millis(INTERVAL_MS * FALL) + Duration::from_secs(1);
    assert!(took < bound, "fail-back took {took:?}, more than {bound:?}");

    let on_blue = blue.requests.load(Ordering::Relaxed);
    eventually(Duration::from_secs(10), "traffic on blue", || {
        blue.requests.load(Ordering::Relaxed) > on_blue + 200
    })
    .await;
    let (ok, failed, failures) = load.finish().await;
    assert_eq!(
        failed,
        0,
        "{ok} ok, {failed} failed: {failures:#?}\nproxy log:\n{}",
        proxy.log_text()
    );

    let route = route_status(&proxy);
    assert_eq!(route["decided_by"], "failback");
    assert_eq!(route["previous"], "green");
    assert_eq!(slot_health(&route, "green"), "unhealthy");
    let history = tokio::task::block_in_place(|| proxy.cli_ok(&["history", "app", "--json"]));
    let failback = history
        .lines()
        .chain(std::iter::once(history.as_str()))
        .find(|l| l.contains("failback"))
        .unwrap_or_else(|| panic!("no failback entry in the history: {history}"));
    assert!(
        failback.contains(&green.addr.to_string()),
        "the entry names the failed backend: {failback}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_health_path_fails_back_and_recovery_does_not_pull_traffic_back() {
    let (_blue, green, _dir, proxy) = green_active_blue_previous().await;

    green.healthy.store(false, Ordering::Relaxed);
    eventually(Duration::from_secs(10), "fail-back to blue", || {
        route_status(&proxy)["active"] == "blue"
    })
    .await;
    let history = tokio::task::block_in_place(|| proxy.cli_ok(&["history", "app"]));
    assert!(history.contains("status 500"), "why: {history}");
    let mut client = Client::new(proxy.addr);
    assert_eq!(
        client.get("x", "/").await.unwrap().slot.as_deref(),
        Some("blue")
    );

    // green recovers: traffic stays on blue until someone says otherwise.
    green.healthy.store(true, Ordering::Relaxed);
    eventually(Duration::from_secs(10), "green healthy again", || {
        slot_health(&route_status(&proxy), "green") == "healthy"
    })
    .await;
    // A negative check: `fall` more passing probes of green reported
    // after it showed healthy, and the route has not moved back to it.
    green.wait_for_probes(FALL).await;
    assert_eq!(route_status(&proxy)["active"], "blue", "no flip-flop");
    tokio::task::block_in_place(|| proxy.cli_ok(&["switch", "app", "green"]));
    assert_eq!(
        client.get("x", "/").await.unwrap().slot.as_deref(),
        Some("green")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_shows_each_backend_state_since_and_last_probe() {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &health_route(&blue, &green, "blue"));
    green.healthy.store(false, Ordering::Relaxed);
    eventually(Duration::from_secs(10), "green unhealthy", || {
        slot_health(&route_status(&proxy), "green") == "unhealthy"
    })
    .await;
    let route = route_status(&proxy);
    let green_backend = first_backend(&route, "green");
    assert_eq!(green_backend["address"], green.addr.to_string());
    assert_eq!(green_backend["state"], "unhealthy");
    assert!(
        green_backend["since"].as_str().unwrap().ends_with('Z'),
        "{green_backend}"
    );
    assert_eq!(green_backend["last_check"]["ok"], false);
    assert_eq!(green_backend["last_check"]["status"], 500);
    assert!(green_backend["last_check"]["latency_ms"].as_f64().is_some());
    assert_eq!(
        route["critical"],
        serde_json::Value::Null,
        "blue is active and fine"
    );

    // A reload that leaves green's backend alone keeps its state.
    let since = green_backend["since"].clone();
    let reloads = tokio::task::block_in_place(|| proxy.reloads());
    proxy.edit_config(&format!(
        "{}[[route]]\nname = \"other\"\nhosts = [\"other.test\"]\nactive = \"only\"\n[route.slots]\nonly = [\"{}\"]\n",
        health_route(&blue, &green, "blue"),
        blue.addr
    ));
    eventually(Duration::from_secs(10), "the reload", || {
        tokio::task::block_in_place(|| proxy.reloads()) > reloads
    })
    .await;
    let route = route_status(&proxy);
    let green_backend = first_backend(&route, "green");
    assert_eq!(green_backend["state"], "unhealthy", "no flap on reload");
    assert_eq!(green_backend["since"], since);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn switch_waits_for_a_healthy_slot_refuses_one_that_stays_sick_and_force_overrides() {
    let (blue, green, _dir, proxy) = blue_active_green_sick().await;

    // Never healthy: refused after the timeout, exit 1, traffic unchanged.
    let refused = tokio::task::block_in_place(|| {
        proxy.cli(&["switch", "app", "green", "--timeout", "600ms"])
    });
    assert_eq!(refused.status.code(), Some(1));
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("did not turn healthy") && why.contains("status 500"),
        "{why}"
    );
    assert_eq!(route_status(&proxy)["active"], "blue");
    let mut client = Client::new(proxy.addr);
    assert_eq!(
        client.get("x", "/").await.unwrap().slot.as_deref(),
        Some("blue")
    );

    // Turns healthy while the command waits: it cuts over then.
    let parked = || {
        proxy
            .log_text()
            .matches("switch waits for the slot to turn healthy")
            .count()
    };
    let parked_before = parked();
    let waiting = {
        let socket = proxy.socket.clone();
        std::thread::spawn(move || {
            std::process::Command::new(switchyard_bin())
                .args(["switch", "app", "green", "--timeout", "10s", "--socket"])
                .arg(socket)
                .output()
                .unwrap()
        })
    };
    // A negative check: the command reached the Controller and was parked
    // (it logs that), then green's next failing probes were reported while
    // it waited, and neither the command nor a probe moved traffic.
    eventually(Duration::from_secs(10), "the switch parked", || {
        parked() > parked_before
    })
    .await;
    green.wait_for_probes(2).await;
    assert!(!waiting.is_finished(), "still waiting");
    assert_eq!(route_status(&proxy)["active"], "blue", "still waiting");
    green.healthy.store(true, Ordering::Relaxed);
    let done = tokio::task::spawn_blocking(move || waiting.join().unwrap())
        .await
        .unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_eq!(route_status(&proxy)["active"], "green");

    // --force goes to a sick slot at once.
    blue.healthy.store(false, Ordering::Relaxed);
    eventually(Duration::from_secs(10), "blue unhealthy", || {
        slot_health(&route_status(&proxy), "blue") == "unhealthy"
    })
    .await;
    tokio::task::block_in_place(|| proxy.cli_ok(&["switch", "app", "blue", "--force"]));
    assert_eq!(route_status(&proxy)["active"], "blue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_config_switch_to_a_sick_slot_is_held_and_applied_when_it_turns_healthy() {
    let (blue, green, _dir, proxy) = blue_active_green_sick().await;

    let reloads = tokio::task::block_in_place(|| proxy.reloads());
    proxy.edit_config(&health_route(&blue, &green, "green"));
    eventually(Duration::from_secs(10), "the reload", || {
        tokio::task::block_in_place(|| proxy.reloads()) > reloads
    })
    .await;
    let route = route_status(&proxy);
    assert_eq!(route["active"], "blue", "held: {route}");
    assert_eq!(route["pending"], "green");
    let mut client = Client::new(proxy.addr);
    assert_eq!(
        client.get("x", "/").await.unwrap().slot.as_deref(),
        Some("blue")
    );

    green.healthy.store(true, Ordering::Relaxed);
    eventually(Duration::from_secs(10), "the held switch applied", || {
        route_status(&proxy)["active"] == "green"
    })
    .await;
    assert_eq!(route_status(&proxy)["pending"], serde_json::Value::Null);
    assert_eq!(
        client.get("x", "/").await.unwrap().slot.as_deref(),
        Some("green")
    );
    let history = tokio::task::block_in_place(|| proxy.cli_ok(&["history", "app"]));
    assert!(history.contains("held"), "{history}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_flapping_below_the_fall_threshold_does_not_move_traffic() {
    let (_blue, green, _dir, proxy) = green_active_blue_previous().await;
    // Each flap: `fall` - 1 failed probes in a row, then a passing one, all
    // of them reported to the proxy before the next flap starts. Never
    // `fall` = 3 failures in a row, but as close to it as can be.
    for flap in 0..5 {
        green.failing_probes.store(FALL - 1, Ordering::SeqCst);
        green.wait_for_probes(FALL).await;
        assert_eq!(
            green.failing_probes.load(Ordering::SeqCst),
            0,
            "flap {flap}: every failure was answered"
        );
    }
    let route = route_status(&proxy);
    assert_eq!(route["active"], "green", "{route}");
    assert_eq!(slot_health(&route, "green"), "healthy");
    let history = tokio::task::block_in_place(|| proxy.cli_ok(&["history", "app"]));
    assert!(!history.contains("failback"), "{history}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_probe_that_times_out_counts_as_a_failure() {
    let (_blue, green, _dir, proxy) = green_active_blue_previous().await;
    // Slower than the 200 ms probe timeout, but it would answer 200.
    green
        .health_delay_ms
        .store(INTERVAL_MS * 3, Ordering::Relaxed);
    eventually(Duration::from_secs(10), "fail-back to blue", || {
        route_status(&proxy)["active"] == "blue"
    })
    .await;
    let backend = first_backend(&route_status(&proxy), "green");
    assert_eq!(backend["last_check"]["error"], "timed out", "{backend}");
    let history = tokio::task::block_in_place(|| proxy.cli_ok(&["history", "app"]));
    assert!(history.contains("timed out"), "{history}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unhealthy_canary_drops_to_weight_zero() {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &health_route(&blue, &green, "blue"));
    both_healthy(&proxy).await;
    tokio::task::block_in_place(|| proxy.cli_ok(&["canary", "app", "green", "50"]));
    let mut on_green = 0;
    for n in 0..20 {
        let mut client = Client::from_address(proxy.addr, client_address(n));
        on_green += (client.get("x", "/").await.unwrap().slot.as_deref() == Some("green")) as u32;
    }
    assert!(on_green > 0, "the canary gets traffic");

    green.healthy.store(false, Ordering::Relaxed);
    eventually(Duration::from_secs(10), "the canary dropped", || {
        route_status(&proxy)["canary"].is_null()
    })
    .await;
    for n in 0..20 {
        let mut client = Client::from_address(proxy.addr, client_address(n));
        assert_eq!(
            client.get("x", "/").await.unwrap().slot.as_deref(),
            Some("blue")
        );
    }
    let history = tokio::task::block_in_place(|| proxy.cli_ok(&["history", "app"]));
    assert!(
        history.contains("canary slot green (weight 50) unhealthy"),
        "{history}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_show_backend_up_inflight_and_failback_switches() {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchyard.toml");
    std::fs::write(
        &config,
        config_text(&health_route(&blue, &green, "blue"))
            .replace("threads = 2", "threads = 2\nadmin_http = \"127.0.0.1:0\""),
    )
    .unwrap();
    let proxy = Proxy::start_with_file(dir.path(), &config);
    let metrics_addr = proxy.admin_http_addr();
    both_healthy(&proxy).await;
    tokio::task::block_in_place(|| proxy.cli_ok(&["switch", "app", "green"]));
    green.stop_and_wait().await;
    eventually(Duration::from_secs(10), "fail-back to blue", || {
        route_status(&proxy)["active"] == "blue"
    })
    .await;

    let scrape = Client::new(metrics_addr)
        .get("x", "/metrics")
        .await
        .unwrap();
    assert_eq!(scrape.status, 200);
    let text = scrape.body;
    for expected in [
        format!(
            "switchyard_backend_up{{route=\"app\",slot=\"green\",backend=\"{}\"}} 0",
            green.addr
        ),
        format!(
            "switchyard_backend_up{{route=\"app\",slot=\"blue\",backend=\"{}\"}} 1",
            blue.addr
        ),
        "switchyard_switches_total{route=\"app\",trigger=\"admin\"} 1".to_string(),
        "switchyard_switches_total{route=\"app\",trigger=\"failback\"} 1".to_string(),
        "switchyard_active_slot{route=\"app\",slot=\"blue\"} 1".to_string(),
        "switchyard_inflight_requests{route=\"app\",slot=\"blue\"} 0".to_string(),
        "switchyard_canary_weight{route=\"app\"} 0".to_string(),
    ] {
        assert!(text.contains(&expected), "missing {expected}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_both_slots_unhealthy_traffic_stays_and_the_route_is_critical() {
    let (blue, green, _dir, proxy) = green_active_blue_previous().await;
    blue.healthy.store(false, Ordering::Relaxed);
    eventually(Duration::from_secs(10), "blue unhealthy", || {
        slot_health(&route_status(&proxy), "blue") == "unhealthy"
    })
    .await;
    green.healthy.store(false, Ordering::Relaxed);
    eventually(Duration::from_secs(10), "green unhealthy", || {
        slot_health(&route_status(&proxy), "green") == "unhealthy"
    })
    .await;
    let route = route_status(&proxy);
    assert_eq!(route["active"], "green", "fail open: {route}");
    let critical = route["critical"].as_str().unwrap_or_default().to_string();
    assert!(
        critical.contains("green") && critical.contains("still routing"),
        "{route}"
    );
    let mut client = Client::new(proxy.addr);
    let reply = client.get("x", "/").await.unwrap();
    assert_eq!((reply.status, reply.slot.as_deref()), (200, Some("green")));
    assert!(
        proxy.log_text().contains("critical"),
        "logged once as critical"
    );

    green.healthy.store(true, Ordering::Relaxed);
    eventually(Duration::from_secs(10), "critical cleared", || {
        route_status(&proxy)["critical"].is_null()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rollback_refuses_an_unhealthy_previous_slot_unless_forced() {
    let (blue, _green, _dir, proxy) = green_active_blue_previous().await;
    // The old version was stopped after the deploy.
    blue.healthy.store(false, Ordering::Relaxed);
    eventually(Duration::from_secs(10), "blue unhealthy", || {
        slot_health(&route_status(&proxy), "blue") == "unhealthy"
    })
    .await;

    let refused = tokio::task::block_in_place(|| proxy.cli(&["rollback", "app"]));
    assert_eq!(refused.status.code(), Some(1));
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("previous slot \"blue\"")
            && why.contains("unhealthy")
            && why.contains("status 500")
            && why.contains("--force"),
        "{why}"
    );
    assert_eq!(route_status(&proxy)["active"], "green", "nothing changed");
    let history = tokio::task::block_in_place(|| proxy.cli_ok(&["history", "app"]));
    assert!(history.contains("refused"), "{history}");

    tokio::task::block_in_place(|| proxy.cli_ok(&["rollback", "app", "--force"]));
    assert_eq!(route_status(&proxy)["active"], "blue");
}

/// `n` backends on closed loopback ports: addresses 127.77.x.y on one port
/// that nothing listens on (not even a wildcard listener: binding the port
/// on one of those addresses succeeded), so every probe is refused at once.
fn closed_backends(n: usize) -> Vec<std::net::SocketAddr> {
    let port = std::net::TcpListener::bind("127.77.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.77.0.1")
        .port();
    (0..n)
        .map(|i| {
            let ip = std::net::Ipv4Addr::new(127, 77, (i / 250) as u8, (i % 250) as u8 + 1);
            std::net::SocketAddr::from((ip, port))
        })
        .collect()
}

/// `big`'s backends in a `status`, each as (state, `last_check.at`).
fn backend_checks(status: &serde_json::Value) -> Vec<(String, String)> {
    status["routes"][0]["slots"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let text = |v: &serde_json::Value| v.as_str().unwrap_or("?").to_string();
            (text(&b["state"]), text(&b["last_check"]["at"]))
        })
        .collect()
}

fn backend_states(status: &serde_json::Value) -> Vec<String> {
    backend_checks(status).into_iter().map(|(s, _)| s).collect()
}

/// The first `status` in which every backend of `big` has a check later
/// than in `before`: the Controller has taken in a whole round of probes
/// since. `last_check.at` is in whole seconds (RFC 3339, so later sorts
/// after), so a check in the same second as the last one is not seen and
/// the wait goes on to the next: a round may be missed, never invented.
async fn checked_again(proxy: &Proxy, before: &serde_json::Value) -> serde_json::Value {
    let before = backend_checks(before);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = tokio::task::block_in_place(|| proxy.status());
        let now = backend_checks(&status);
        if now.len() == before.len() && now.iter().zip(&before).all(|((_, at), (_, was))| at > was)
        {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "not every backend was checked again within 30 s"
        );
        // Each backend is checked once a second and each `status` lists
        // all 2,001: a few looks a second are enough and leave the cores
        // to the proxy.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_dead_backends_leave_status_quick_and_traffic_on_the_live_one() {
    // Probed every second, as in production; 2,000 keeps a debug build on
    // two cores busy enough to show per-check work over all backends.
    const DEAD: usize = 2_000;
    const STATUS_BOUND: Duration = Duration::from_secs(2);
    let live = Backend::start("blue").await;
    let mut backends = vec![live.addr];
    backends.extend(closed_backends(DEAD));
    let list: Vec<String> = backends.iter().map(|a| format!("\"{a}\"")).collect();
    let routes = format!(
        "[[route]]\nname = \"big\"\nactive = \"blue\"\n[route.slots]\nblue = [{}]\n[route.health]\npath = \"/health\"\ninterval = \"1s\"\ntimeout = \"1s\"\nrise = 1\nfall = 1\n",
        list.join(", ")
    );
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &routes);

    // From the start, while every backend gets its first verdict, each
    // `status` (the CLI, start to finish) answers within the bound.
    let started = Instant::now();
    let mut asked = 0;
    let status = loop {
        let before = Instant::now();
        let status = tokio::task::block_in_place(|| proxy.status());
        let took = before.elapsed();
        asked += 1;
        assert!(
            took < STATUS_BOUND,
            "status #{asked} took {took:?}, {:?} after start",
            before - started
        );
        let states: Vec<&str> = status["routes"][0]["slots"][0]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["state"].as_str().unwrap_or("?"))
            .collect();
        assert_eq!(states.len(), DEAD + 1);
        if states[0] == "healthy" && states[1..].iter().all(|s| *s == "unhealthy") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not every backend got its verdict in 30 s: {} unknown",
            states.iter().filter(|s| **s == "unknown").count()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The table is rebuilt when traffic must move, not once per check: a
    // publish per dead backend would make this over 2,000.
    let generation = status["generation"].as_u64().unwrap();
    assert!(generation < 100, "{generation} tables published");

    // Every request goes to the live backend and succeeds.
    let mut client = Client::new(proxy.addr);
    for i in 0..50 {
        let reply = client.get("big.test", "/").await;
        let reply = reply.unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(
            (reply.status, reply.slot.as_deref()),
            (200, Some("blue")),
            "request {i}"
        );
    }
    assert!(live.requests.load(Ordering::Relaxed) >= 50);

    // A negative check: a round of checks that changed no verdict publishes
    // nothing. The last verdicts may still have been owed a publish (at
    // most 100 ms after them) when they showed: count from a round of
    // probes later (each backend is probed once a second).
    let settled = checked_again(&proxy, &status).await;
    let later = checked_again(&proxy, &settled).await;
    assert_eq!(
        backend_states(&later),
        backend_states(&status),
        "no verdict changed"
    );
    assert_eq!(
        later["generation"], settled["generation"],
        "published again without a change of verdict"
    );

    // Still quick once the verdicts are in and the probes go on.
    let before = Instant::now();
    let text = tokio::task::block_in_place(|| proxy.cli_ok(&["status"]));
    assert!(
        before.elapsed() < STATUS_BOUND,
        "took {:?}",
        before.elapsed()
    );
    assert!(text.contains(&live.addr.to_string()));
}
