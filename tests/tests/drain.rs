//! `drain --wait`: a deploy script's signal that the old slot is idle.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use switchyard_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drain_wait_returns_only_after_slow_requests_on_the_old_slot_finish() {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &two_slot_route("app", "blue", &blue, &green));

    // Slow enough that the status, drain and switch commands below (each a
    // CLI process) all run while they are in flight, even on a busy machine.
    let slow: Vec<_> = (0..3)
        .map(|_| {
            let addr = proxy.addr;
            tokio::spawn(async move {
                let reply = Client::new(addr).get("x", "/slow/4000").await;
                (reply, Instant::now())
            })
        })
        .collect();
    eventually(Duration::from_secs(5), "the slow requests on blue", || {
        blue.requests.load(Ordering::Relaxed) >= 3
    })
    .await;
    let status = tokio::task::block_in_place(|| proxy.status());
    let blue_slot = status["routes"][0]["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "blue")
        .unwrap()
        .clone();
    assert_eq!(blue_slot["in_flight"], 3, "{blue_slot}");

    // Blue is still active: waiting for it to drain would never end.
    let refused = tokio::task::block_in_place(|| proxy.cli(&["drain", "app", "blue", "--wait"]));
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("switch away first"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    tokio::task::block_in_place(|| proxy.cli_ok(&["switch", "app", "green"]));
    // Too short a wait: refused, with what is left.
    let early = tokio::task::block_in_place(|| {
        proxy.cli(&["drain", "app", "blue", "--wait", "--timeout", "100ms"])
    });
    assert_eq!(early.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&early.stderr).contains("3 requests"),
        "{}",
        String::from_utf8_lossy(&early.stderr)
    );

    let drained = tokio::task::block_in_place(|| {
        proxy.cli_ok(&["drain", "app", "blue", "--wait", "--timeout", "10s"])
    });
    let returned = Instant::now();
    assert!(drained.contains("drained"), "{drained}");
    for request in slow {
        let (reply, finished) = request.await.unwrap();
        assert_eq!(
            reply.unwrap().status,
            200,
            "the slow requests finish on blue"
        );
        assert!(
            finished <= returned,
            "drain returned before a request finished"
        );
    }
    let now = tokio::task::block_in_place(|| proxy.cli_ok(&["drain", "app", "blue"]));
    assert!(now.contains("0 requests"), "{now}");
}
