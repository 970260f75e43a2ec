//! Switching traffic between slots through the real binary: under load,
//! across restarts, and the basics of the proxying itself.

use std::time::{Duration, Instant};

use bytes::Bytes;
use switchyard_tests::*;

fn cli_in_background(proxy: &Proxy, args: &[&str]) -> std::process::Output {
    proxy.cli(args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn switching_under_load_loses_no_request_and_ends_on_the_new_slot() {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &two_slot_route("app", "blue", &blue, &green));

    let load = Load::start(proxy.addr, "app.test", 8, 10_000);
    let flips = 60;
    let started = Instant::now();
    for i in 0..flips {
        let slot = if i % 2 == 0 { "green" } else { "blue" };
        // No guard: 60 flips in a few seconds on a loaded 2-core machine
        // can legitimately see one slot's p95 jump past the other's, and a
        // guard rollback is not what this test is about.
        let out = tokio::task::block_in_place(|| {
            cli_in_background(&proxy, &["switch", "app", slot, "--no-guard"])
        });
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Spread the flips over the load rather than racing through them.
        let target = (i as u64 + 1) * 20_000 / flips as u64;
        eventually(Duration::from_secs(30), "load to progress", || {
            load.ok() >= target.min(20_000)
        })
        .await;
    }
    let (ok, failed, failures) = load.finish().await;
    assert_eq!(failed, 0, "failed requests: {failures:?}");
    assert!(
        ok >= 20_000,
        "only {ok} requests in {:?}",
        started.elapsed()
    );

    // 60 flips end on blue: every new request must go there.
    let mut client = Client::new(proxy.addr);
    for _ in 0..50 {
        let reply = client.get("app.test", "/after").await.unwrap();
        assert_eq!(
            reply.slot.as_deref(),
            Some("blue"),
            "{}",
            proxy.cli_ok(&["history", "app", "--limit", "5"])
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_switch_reaches_new_requests_on_kept_alive_connections() {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &two_slot_route("app", "blue", &blue, &green));
    let mut client = Client::new(proxy.addr);
    assert_eq!(
        client.get("x", "/").await.unwrap().slot.as_deref(),
        Some("blue")
    );

    tokio::task::block_in_place(|| proxy.cli_ok(&["switch", "app", "green", "--reason", "v42"]));
    let first = client.get("x", "/").await.unwrap();
    assert_eq!(
        first.slot.as_deref(),
        Some("green"),
        "the same connection's next request"
    );

    let status = tokio::task::block_in_place(|| proxy.status());
    let route = &status["routes"][0];
    assert_eq!(route["active"], "green");
    assert_eq!(route["previous"], "blue");
    assert_eq!(route["decided_by"], "admin");

    tokio::task::block_in_place(|| proxy.cli_ok(&["rollback", "app"]));
    assert_eq!(
        client.get("x", "/").await.unwrap().slot.as_deref(),
        Some("blue")
    );
    let history = tokio::task::block_in_place(|| proxy.cli_ok(&["history", "app"]));
    assert!(
        history.contains("switch") && history.contains("v42"),
        "{history}"
    );
    assert!(history.contains("rollback"), "{history}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn canary_weight_splits_clients_and_each_keeps_its_slot() {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &two_slot_route("app", "blue", &blue, &green));
    tokio::task::block_in_place(|| proxy.cli_ok(&["canary", "app", "green", "25"]));
    // 400 clients, each from its own loopback address: the proxy places
    // each by the hash of its address, and a cookie-less client's second
    // request lands where its first did.
    let mut green_count = 0;
    for n in 0..400u32 {
        let mut client = Client::from_address(proxy.addr, client_address(n));
        let first = client.get("x", "/").await.unwrap();
        let again = client.get("x", "/").await.unwrap();
        assert_eq!(first.slot, again.slot, "client {n} moved");
        assert!(
            first.set_cookie.is_some(),
            "a placed client gets its cookie"
        );
        green_count += (first.slot.as_deref() == Some("green")) as u32;
    }
    // 25 % of 400 is 100; the binomial spread is about ±9.
    assert!(
        (60..=140).contains(&green_count),
        "{green_count} of 400 clients on a 25 % canary"
    );
    tokio::task::block_in_place(|| proxy.cli_ok(&["canary", "app", "green", "0"]));
    let mut client = Client::new(proxy.addr);
    for _ in 0..20 {
        let reply = client.get("x", "/").await.unwrap();
        assert_eq!(reply.slot.as_deref(), Some("blue"));
        assert_eq!(reply.set_cookie, None, "no canary, no cookie");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_switched_slot_survives_a_restart_and_a_corrupt_state_file_is_set_aside() {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    let routes = two_slot_route("app", "blue", &blue, &green);
    let proxy = Proxy::start(dir.path(), &routes);
    tokio::task::block_in_place(|| proxy.cli_ok(&["switch", "app", "green"]));
    let config = proxy.config.clone();
    assert!(proxy.terminate().success());

    let proxy = Proxy::start_with_file(dir.path(), &config);
    let mut client = Client::new(proxy.addr);
    assert_eq!(
        client.get("x", "/").await.unwrap().slot.as_deref(),
        Some("green")
    );
    assert_eq!(
        tokio::task::block_in_place(|| proxy.status())["routes"][0]["decided_by"],
        "admin"
    );
    assert!(proxy.terminate().success());

    let state = dir.path().join("state/state.json");
    std::fs::write(&state, b"{ this is not json").unwrap();
    let proxy = Proxy::start_with_file(dir.path(), &config);
    let mut client = Client::new(proxy.addr);
    assert_eq!(
        client.get("x", "/").await.unwrap().slot.as_deref(),
        Some("blue"),
        "back to the file's slot"
    );
    let set_aside: Vec<_> = std::fs::read_dir(dir.path().join("state"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("state.json.corrupt-")
        })
        .collect();
    assert_eq!(set_aside.len(), 1, "the corrupt file is kept aside");
    assert!(
        proxy.log_text().contains("corrupt"),
        "log says why:\n{}",
        proxy.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proxying_basics_404_502_forwarded_headers_and_bodies() {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let routes = format!(
        "{}\n[[route]]\nname = \"down\"\nhosts = [\"down.test\"]\nactive = \"only\"\n[route.slots]\nonly = [\"{dead}\"]\n",
        two_slot_route("app", "blue", &blue, &green).replace("name = \"app\"", "name = \"app\"\nhosts = [\"app.test\", \"*.app.test\"]")
    );
    let proxy = Proxy::start(dir.path(), &routes);
    let mut client = Client::new(proxy.addr);

    let missing = client.get("nothing.test", "/").await.unwrap();
    assert_eq!(missing.status, 404);
    assert!(missing.body.contains("no route"), "{}", missing.body);

    let mut client = Client::new(proxy.addr);
    let down = client.get("down.test", "/").await.unwrap();
    assert_eq!(down.status, 502);
    assert!(down.body.contains("upstream"), "{}", down.body);

    let mut client = Client::new(proxy.addr);
    let headers = client
        .get("API.App.Test:8080", "/echo-headers")
        .await
        .unwrap();
    assert_eq!(
        headers.slot.as_deref(),
        Some("blue"),
        "wildcard host, any case, port ignored"
    );
    assert!(
        headers.body.contains("x-forwarded-for: 127.0.0.1"),
        "{}",
        headers.body
    );
    assert!(
        headers.body.contains("x-forwarded-proto: http"),
        "{}",
        headers.body
    );
    assert!(
        headers.body.contains("x-forwarded-host: API.App.Test:8080"),
        "{}",
        headers.body
    );

    let chained = client
        .send(
            "GET",
            "app.test",
            "/echo-headers",
            &[("x-forwarded-for", "203.0.113.7")],
            Bytes::new(),
        )
        .await
        .unwrap();
    assert!(
        chained
            .body
            .contains("x-forwarded-for: 203.0.113.7, 127.0.0.1"),
        "an incoming list is appended to: {}",
        chained.body
    );

    let big = Bytes::from(vec![b'z'; 1 << 20]);
    let echoed = client
        .send("POST", "app.test", "/echo-body", &[], big.clone())
        .await
        .unwrap();
    assert_eq!(
        echoed.body.len(),
        big.len(),
        "a 1 MiB body streams through both ways"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_lets_in_flight_requests_finish_then_exits_zero() {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &two_slot_route("app", "blue", &blue, &green));
    let addr = proxy.addr;
    let slow = tokio::spawn(async move { Client::new(addr).get("x", "/slow/700").await });
    eventually(
        Duration::from_secs(5),
        "the slow request to reach the backend",
        || blue.requests.load(std::sync::atomic::Ordering::Relaxed) > 0,
    )
    .await;
    let status = tokio::task::block_in_place(|| proxy.terminate());
    assert!(status.success(), "exit status {status:?}");
    let reply = slow
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "blue /slow/700");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_active_backend_is_retried_on_the_previous_slot() {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &two_slot_route("app", "blue", &blue, &green));
    tokio::task::block_in_place(|| proxy.cli_ok(&["switch", "app", "green"]));
    let mut client = Client::new(proxy.addr);
    assert_eq!(
        client.get("x", "/").await.unwrap().slot.as_deref(),
        Some("green")
    );

    green.stop_and_wait().await;
    for _ in 0..20 {
        let reply = client.get("x", "/").await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(
            reply.slot.as_deref(),
            Some("blue"),
            "connect failures fall back to the previous slot"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_hanging_up_is_not_logged_as_an_error_but_a_dead_upstream_is() {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &two_slot_route("app", "blue", &blue, &green));
    let addr = proxy.addr;
    let impatient = tokio::spawn(async move { Client::new(addr).get("x", "/slow/300").await });
    eventually(
        Duration::from_secs(5),
        "the slow request to reach the backend",
        || blue.requests.load(std::sync::atomic::Ordering::Relaxed) > 0,
    )
    .await;
    impatient.abort();
    // The proxy gives the request up and closes its upstream connection;
    // the 502 below is logged after that.
    eventually(
        Duration::from_secs(5),
        "the proxy to drop the upstream connection",
        || {
            blue.connections_closed
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0
        },
    )
    .await;

    green.stop_and_wait().await;
    tokio::task::block_in_place(|| proxy.cli_ok(&["switch", "app", "green", "--force"]));
    blue.stop_and_wait().await;
    let mut client = Client::new(proxy.addr);
    assert_eq!(client.get("x", "/").await.unwrap().status, 502);
    eventually(
        Duration::from_secs(5),
        "the upstream failure in the log",
        || proxy.log_text().contains("level=error"),
    )
    .await;
    let errors: Vec<String> = proxy
        .log_text()
        .lines()
        .filter(|l| l.contains("level=error"))
        .map(str::to_owned)
        .collect();
    assert!(
        errors.iter().all(|l| !l.contains("Downstream")),
        "a client hanging up was logged as an error: {errors:#?}"
    );
}
