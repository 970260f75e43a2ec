//! Rollouts end to end: the real binary walking `[route.rollout]` steps,
//! judging the canary on real traffic, aborting a bad one, and resuming
//! after a restart.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_tests::*;

/// The guard is off: a promotion starts a guard window, and its latency
/// judgement of two equal backends, on a debug build beside the rest of the
/// suite, is the likely reason a promoted rollout was once found off its
/// slot (tests/tests/guard.rs tests the guard).
fn rollout_route(blue: &Backend, green: &Backend, rollout: &str) -> String {
    format!(
        "{}[route.rollout]\n{rollout}\n[route.guard]\nenabled = false\n",
        two_slot_route("app", "blue", blue, green)
    )
}

fn route_status(proxy: &Proxy) -> serde_json::Value {
    tokio::task::block_in_place(|| proxy.status())["routes"][0].clone()
}

fn history(proxy: &Proxy) -> String {
    tokio::task::block_in_place(|| proxy.cli_ok(&["history", "app", "--limit", "50"]))
}

/// Clients from many loopback addresses, each sending requests in a loop
/// (so the canary gets its share) until stopped or `max_per_client`.
struct Traffic {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    fn start(proxy: &Proxy, clients: u32, max_per_client: u64) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let tasks = (0..clients)
            .map(|n| {
                let (stop, sent) = (stop.clone(), sent.clone());
                let mut client = Client::from_address(proxy.addr, client_address(n));
                tokio::spawn(async move {
                    for _ in 0..max_per_client {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let _ = client.get("x", "/").await;
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        Traffic { stop, sent, tasks }
    }

    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        self.sent.load(Ordering::Relaxed)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rollout_walks_its_steps_pauses_and_ends_promoted() {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    let steps = "steps = [{ weight = 10, hold = \"400ms\" }, { weight = 50, hold = \"400ms\" }, { weight = 100 }]\nwindow = \"200ms\"\nmin_requests = 20\n";
    let proxy = Proxy::start(dir.path(), &rollout_route(&blue, &green, steps));
    let traffic = Traffic::start(&proxy, 40, 2_000);

    let started =
        tokio::task::block_in_place(|| proxy.cli_ok(&["rollout", "start", "app", "green"]));
    assert!(started.contains("step 1/3 at 10 %"), "{started}");
    let paused = tokio::task::block_in_place(|| proxy.cli_ok(&["rollout", "pause", "app"]));
    assert!(paused.contains("paused"), "{paused}");
    // While paused, the hold clock stands still. A negative check: past the
    // time the hold would have run out, the Controller judged another
    // analysis window (it does so on the tick that also runs the hold
    // clock), and the rollout is still on step 1 with the time it had left.
    let left = route_status(&proxy)["rollout"]["hold_left_ms"]
        .as_u64()
        .unwrap();
    let hold_would_end = Instant::now() + Duration::from_millis(left);
    let mut verdict_then = None;
    eventually(
        Duration::from_secs(10),
        "a window judged after the hold would have ended",
        || {
            if Instant::now() < hold_would_end {
                return false;
            }
            let verdict = route_status(&proxy)["rollout"]["verdict"].clone();
            match &verdict_then {
                None => {
                    verdict_then = Some(verdict);
                    false
                }
                Some(then) => verdict != *then,
            }
        },
    )
    .await;
    let rollout = route_status(&proxy)["rollout"].clone();
    assert_eq!(rollout["phase"], "paused", "{rollout}");
    assert_eq!(rollout["step"], 0, "{rollout}");
    assert_eq!(rollout["hold_left_ms"].as_u64().unwrap(), left);
    tokio::task::block_in_place(|| proxy.cli_ok(&["rollout", "resume", "app"]));

    eventually(Duration::from_secs(10), "the rollout promoted", || {
        route_status(&proxy)["rollout"]["phase"] == "promoted"
    })
    .await;
    let sent = traffic.stop().await;
    let route = route_status(&proxy);
    assert_eq!(route["active"], "green");
    assert_eq!(route["previous"], "blue");
    assert!(route["canary"].is_null());
    assert_eq!(route["decided_by"], "rollout");
    assert!(green.requests.load(Ordering::Relaxed) > 0 && sent > 0);

    let history = history(&proxy);
    for expected in [
        "rollout start",
        "rollout pause",
        "rollout resume",
        "now step 2/3 at 50 %",
        "now step 3/3 at 100 %",
        "rollout promote",
        "all 3 steps done",
    ] {
        assert!(
            history.contains(expected),
            "{expected:?} missing from:\n{history}"
        );
    }
    // The next rollout needs another slot; this one is active now.
    let again = tokio::task::block_in_place(|| proxy.cli(&["rollout", "start", "app", "green"]));
    assert!(!again.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_answering_30_percent_500s_is_aborted_within_one_window() {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    green.fail_percent.store(30, Ordering::Relaxed);
    let dir = tempfile::tempdir().unwrap();
    let steps = "steps = [{ weight = 50, hold = \"1m\" }, { weight = 100 }]\nwindow = \"1s\"\nmin_requests = 50\n";
    let proxy = Proxy::start(dir.path(), &rollout_route(&blue, &green, steps));
    let traffic = Traffic::start(&proxy, 40, 5_000);
    let started = Instant::now();
    tokio::task::block_in_place(|| proxy.cli_ok(&["rollout", "start", "app", "green"]));
    eventually(Duration::from_secs(10), "the rollout aborted", || {
        route_status(&proxy)["rollout"]["phase"] == "aborted"
    })
    .await;
    let took = started.elapsed();
    traffic.stop().await;
    // One window of 1 s, and the canary has its 50 requests long before.
    assert!(
        took < Duration::from_millis(2_500),
        "aborted after {took:?}"
    );

    let route = route_status(&proxy);
    assert_eq!(route["active"], "blue");
    assert!(route["canary"].is_null());
    let verdict = &route["rollout"]["verdict"];
    assert_eq!(verdict["result"], "fail", "{verdict}");
    let rate = verdict["canary_error_rate"].as_f64().unwrap();
    assert!((0.25..=0.35).contains(&rate), "{verdict}");
    let history = history(&proxy);
    assert!(history.contains("rollout abort"), "{history}");
    assert!(history.contains("above the 5.0 % allowed"), "{history}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_200ms_slower_is_aborted_on_latency() {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    green.delay_ms.store(200, Ordering::Relaxed);
    let dir = tempfile::tempdir().unwrap();
    let steps = "steps = [{ weight = 50, hold = \"1m\" }, { weight = 100 }]\nwindow = \"1s\"\nmin_requests = 20\n";
    let proxy = Proxy::start(dir.path(), &rollout_route(&blue, &green, steps));
    let traffic = Traffic::start(&proxy, 40, 5_000);
    tokio::task::block_in_place(|| proxy.cli_ok(&["rollout", "start", "app", "green"]));
    eventually(Duration::from_secs(10), "the rollout aborted", || {
        route_status(&proxy)["rollout"]["phase"] == "aborted"
    })
    .await;
    traffic.stop().await;
    let route = route_status(&proxy);
    let verdict = &route["rollout"]["verdict"];
    assert_eq!(verdict["result"], "fail", "{verdict}");
    assert!(
        verdict["canary_p95_ms"].as_f64().unwrap() >= 200.0,
        "{verdict}"
    );
    assert!(
        verdict["baseline_p95_ms"].as_f64().unwrap() < 50.0,
        "{verdict}"
    );
    assert_eq!(verdict["canary_error_rate"], 0.0);
    assert!(history(&proxy).contains("p95 latency"));
    assert_eq!(route["active"], "blue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_mid_rollout_resumes_the_same_step_with_the_time_it_had_left() {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    let steps = "steps = [{ weight = 10, hold = \"300ms\" }, { weight = 40, hold = \"1h\" }, { weight = 100 }]\n";
    let proxy = Proxy::start(dir.path(), &rollout_route(&blue, &green, steps));
    tokio::task::block_in_place(|| proxy.cli_ok(&["rollout", "start", "app", "green"]));
    eventually(Duration::from_secs(10), "step 2", || {
        route_status(&proxy)["rollout"]["step"] == 1
    })
    .await;
    let config = proxy.config.clone();
    assert!(proxy.terminate().success());

    let proxy = Proxy::start_with_file(dir.path(), &config);
    let route = route_status(&proxy);
    let rollout = &route["rollout"];
    assert_eq!(rollout["phase"], "running", "{rollout}");
    assert_eq!(rollout["step"], 1, "{rollout}");
    assert_eq!(route["canary"]["weight"], 40, "{route}");
    let left = rollout["hold_left_ms"].as_u64().unwrap();
    assert!(
        (3_590_000..=3_600_000).contains(&left),
        "{left} ms left of the 1 h hold"
    );
    // The restored rollout is live: it can be aborted.
    tokio::task::block_in_place(|| proxy.cli_ok(&["rollout", "abort", "app", "--reason", "test"]));
    let route = route_status(&proxy);
    assert_eq!(route["rollout"]["phase"], "aborted");
    assert_eq!(route["rollout"]["outcome"], "test");
    assert!(route["canary"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rollout_commands_refuse_what_cannot_be_done() {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &two_slot_route("app", "blue", &blue, &green));
    let refused = |args: &[&str], says: &str| {
        let out = tokio::task::block_in_place(|| proxy.cli(args));
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    };
    refused(
        &["rollout", "start", "app", "green"],
        "has no [route.rollout]",
    );
    refused(&["rollout", "pause", "app"], "no rollout in progress");
    refused(&["rollout", "start", "nope", "green"], "no route");

    proxy.edit_config(&rollout_route(
        &blue,
        &green,
        "steps = [{ weight = 10, hold = \"1h\" }, { weight = 100 }]",
    ));
    eventually(Duration::from_secs(10), "the reload", || {
        proxy.reloads() >= 1
    })
    .await;
    refused(&["rollout", "start", "app", "blue"], "already active");
    refused(&["rollout", "start", "app", "teal"], "no slot");
    refused(&["rollout", "start", "app"], "needs the slot");
    tokio::task::block_in_place(|| proxy.cli_ok(&["rollout", "start", "app", "green"]));
    refused(&["rollout", "start", "app", "green"], "in progress");
    // A manual canary change takes the route from the rollout.
    tokio::task::block_in_place(|| proxy.cli_ok(&["canary", "app", "green", "5"]));
    let rollout = route_status(&proxy)["rollout"].clone();
    assert_eq!(rollout["phase"], "aborted", "{rollout}");
    assert!(
        rollout["outcome"].as_str().unwrap().contains("superseded"),
        "{rollout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_failing_its_health_checks_aborts_the_rollout() {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    let routes = format!(
        "{}[route.health]\npath = \"/health\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\nrise = 1\nfall = 3\n",
        rollout_route(&blue, &green, "steps = [{ weight = 20, hold = \"1h\" }, { weight = 100 }]")
    );
    let proxy = Proxy::start(dir.path(), &routes);
    eventually(Duration::from_secs(10), "green healthy", || {
        route_status(&proxy)["slots"][1]["health"] == "healthy"
    })
    .await;
    tokio::task::block_in_place(|| proxy.cli_ok(&["rollout", "start", "app", "green"]));
    green.healthy.store(false, Ordering::Relaxed);
    eventually(Duration::from_secs(10), "the rollout aborted", || {
        route_status(&proxy)["rollout"]["phase"] == "aborted"
    })
    .await;
    let route = route_status(&proxy);
    let outcome = route["rollout"]["outcome"].as_str().unwrap();
    assert!(outcome.starts_with("health check failed"), "{outcome}");
    assert!(outcome.contains("status 500"), "{outcome}");
    assert!(route["canary"].is_null());
    assert_eq!(route["active"], "blue");
}
