//! The guard after a switch, with real backends: a release that fails
//! users is rolled back by itself within its window, and no later request
//! reaches it; a slow one too; a good one passes and stays.

use std::sync::atomic::Ordering;

use switchyard_tests::{Backend, Client, Proxy};

fn route(blue: &Backend, green: &Backend, guard: &str) -> String {
    format!(
        "[[route]]\nname = \"app\"\nactive = \"blue\"\n[route.slots]\nblue = [\"{}\"]\ngreen = [\"{}\"]\n\
         [route.health]\npath = \"/health\"\ninterval = \"100ms\"\nrise = 1\nfall = 3\n\
         [route.guard]\n{guard}",
        blue.addr, green.addr
    )
}

/// blue active, green ready, both healthy, with this `[route.guard]`.
async fn start(guard: &str) -> (Proxy, Backend, Backend, tempfile::TempDir) {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &route(&blue, &green, guard));
    both_healthy(&proxy).await;
    (proxy, blue, green, dir)
}

async fn both_healthy(proxy: &Proxy) {
    proxy
        .wait_for_status("both slots healthy", |s| {
            let slots = &s["routes"][0]["slots"];
            slots[0]["health"] == "healthy" && slots[1]["health"] == "healthy"
        })
        .await;
}

/// Sends requests one after another until the route is back on `slot`,
/// at most `limit` of them; returns how many were sent.
async fn until_active(proxy: &Proxy, slot: &str, limit: usize) -> usize {
    let mut client = Client::new(proxy.addr);
    for sent in 1..=limit {
        client.get("x", "/").await.unwrap();
        if sent % 10 == 0 {
            let status = tokio::task::block_in_place(|| proxy.status());
            if status["routes"][0]["active"] == slot {
                return sent;
            }
        }
    }
    panic!("still not on {slot} after {limit} requests");
}

fn last_history(proxy: &Proxy) -> serde_json::Value {
    let out = proxy.cli_ok(&["history", "app", "--json"]);
    let reply: serde_json::Value = serde_json::from_str(&out).unwrap();
    reply["result"]["entries"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_release_failing_a_fifth_of_its_requests_is_rolled_back_and_then_gets_none() {
    let (proxy, _blue, green, _dir) = start("window = \"30s\"\nmin_requests = 20\n").await;
    green.fail_percent.store(20, Ordering::Relaxed);
    tokio::task::block_in_place(|| proxy.cli_ok(&["switch", "app", "green"]));
    let status = tokio::task::block_in_place(|| proxy.status());
    assert_eq!(status["routes"][0]["guard"]["slot"], "green", "{status:#}");

    let sent = until_active(&proxy, "blue", 500).await;
    let entry = tokio::task::block_in_place(|| last_history(&proxy));
    assert_eq!(entry["trigger"], "guard", "{entry:#}");
    assert_eq!(entry["action"], "rollback", "{entry:#}");
    let reason = entry["reason"].as_str().unwrap();
    assert!(
        reason.contains("5xx") && reason.contains("limits 5.0 % errors"),
        "{reason}"
    );
    let status = tokio::task::block_in_place(|| proxy.status());
    assert_eq!(status["routes"][0]["decided_by"], "guard");
    assert!(sent <= 200, "rolled back only after {sent} requests");

    let reached = green.requests.load(Ordering::Relaxed);
    let mut client = Client::new(proxy.addr);
    for _ in 0..50 {
        let reply = client.get("x", "/").await.unwrap();
        assert_eq!((reply.status, reply.slot.as_deref()), (200, Some("blue")));
    }
    assert_eq!(
        green.requests.load(Ordering::Relaxed),
        reached,
        "no request after the rollback reached green"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_release_three_times_slower_is_rolled_back() {
    let (proxy, _blue, green, _dir) = start("window = \"30s\"\nmin_requests = 20\n").await;
    // Blue's answers are the baseline.
    let mut client = Client::new(proxy.addr);
    for _ in 0..50 {
        client.get("x", "/").await.unwrap();
    }
    green.delay_ms.store(30, Ordering::Relaxed);
    tokio::task::block_in_place(|| proxy.cli_ok(&["switch", "app", "green"]));
    until_active(&proxy, "blue", 300).await;
    let entry = tokio::task::block_in_place(|| last_history(&proxy));
    assert_eq!(
        (entry["trigger"].as_str(), entry["action"].as_str()),
        (Some("guard"), Some("rollback"))
    );
    assert!(
        entry["reason"]
            .as_str()
            .unwrap()
            .contains("above the previous slot's"),
        "{entry:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_good_release_passes_its_window_and_stays() {
    let (proxy, _blue, _green, _dir) = start("window = \"2s\"\nmin_requests = 20\n").await;
    tokio::task::block_in_place(|| proxy.cli_ok(&["switch", "app", "green"]));
    let mut client = Client::new(proxy.addr);
    for _ in 0..40 {
        assert_eq!(client.get("x", "/").await.unwrap().status, 200);
    }
    let human = tokio::task::block_in_place(|| proxy.cli_ok(&["status"]));
    assert!(human.contains("guard of green: "), "{human}");
    proxy
        .wait_for_status("the guard window over", |s| {
            s["routes"][0].get("guard").is_none()
        })
        .await;
    let entry = tokio::task::block_in_place(|| last_history(&proxy));
    assert_eq!(entry["action"], "guard passed", "{entry:#}");
    let status = tokio::task::block_in_place(|| proxy.status());
    assert_eq!(status["routes"][0]["active"], "green");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_breach_with_the_previous_slot_down_leaves_the_route_critical_and_confirm_ends_a_window()
{
    let (proxy, blue, green, _dir) = start("window = \"30s\"\nmin_requests = 20\n").await;

    // confirm: the window ends now, as passed.
    tokio::task::block_in_place(|| proxy.cli_ok(&["switch", "app", "green"]));
    let confirmed = tokio::task::block_in_place(|| proxy.cli_ok(&["confirm", "app"]));
    assert!(
        confirmed.contains("guard of green confirmed"),
        "{confirmed}"
    );
    let refused = tokio::task::block_in_place(|| proxy.cli(&["confirm", "app"]));
    assert_eq!(refused.status.code(), Some(1), "nothing left to confirm");

    // A new window; blue goes down, then green fails every request.
    tokio::task::block_in_place(|| proxy.cli_ok(&["switch", "app", "blue"]));
    tokio::task::block_in_place(|| proxy.cli_ok(&["switch", "app", "green"]));
    blue.healthy.store(false, Ordering::Relaxed);
    proxy
        .wait_for_status("blue unhealthy", |s| {
            s["routes"][0]["slots"][0]["health"] == "unhealthy"
        })
        .await;
    green.fail_percent.store(100, Ordering::Relaxed);
    let mut client = Client::new(proxy.addr);
    for _ in 0..30 {
        client.get("x", "/").await.unwrap();
    }
    let status = proxy
        .wait_for_status("the route critical", |s| {
            s["routes"][0]["critical"].is_string()
        })
        .await;
    assert_eq!(status["routes"][0]["active"], "green");
    let critical = status["routes"][0]["critical"].as_str().unwrap();
    assert!(critical.contains("guard breached"), "{critical}");
}

/// A restart in the middle of a window (a crash, a host reboot, an upgrade
/// of switchyard) does not let the release off: the guard goes on for the
/// rest of its window and still rolls back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_in_the_window_goes_on_watching_and_still_rolls_back() {
    let (proxy, blue, green, dir) = start("window = \"5m\"\nmin_requests = 20\n").await;
    tokio::task::block_in_place(|| proxy.cli_ok(&["switch", "app", "green"]));
    let exit = tokio::task::block_in_place(|| proxy.terminate());
    assert!(exit.success(), "{exit}");

    green.fail_percent.store(20, Ordering::Relaxed);
    let proxy = Proxy::start(
        dir.path(),
        &route(&blue, &green, "window = \"5m\"\nmin_requests = 20\n"),
    );
    let status = tokio::task::block_in_place(|| proxy.status());
    let guard = &status["routes"][0]["guard"];
    assert_eq!(guard["slot"], "green", "{status:#}");
    assert_eq!(guard["previous"], "blue", "{status:#}");
    let left = guard["left_ms"].as_u64().unwrap();
    assert!(left <= 300_000 && left > 200_000, "{status:#}");
    both_healthy(&proxy).await;

    until_active(&proxy, "blue", 500).await;
    let entry = tokio::task::block_in_place(|| last_history(&proxy));
    assert_eq!(
        (&entry["trigger"], &entry["action"]),
        (&"guard".into(), &"rollback".into()),
        "{entry:#}"
    );
}
