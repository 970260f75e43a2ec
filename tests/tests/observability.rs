//! `server.admin_http`: the request series in `/metrics` after real
//! traffic, `/health/live`, `/health/ready` before the first health
//! verdicts and while draining, and `/status`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use switchyard_tests::{config_text, eventually, Backend, Client, Proxy};

fn with_admin_http(routes: &str) -> String {
    config_text(routes).replace("threads = 2", "threads = 2\nadmin_http = \"127.0.0.1:0\"")
}

fn start(dir: &std::path::Path, routes: &str) -> Proxy {
    let config = dir.join("switchyard.toml");
    std::fs::write(&config, with_admin_http(routes)).unwrap();
    Proxy::start_with_file(dir, &config)
}

/// The value of the series line that starts with `series` (name and labels).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

async fn get(addr: std::net::SocketAddr, path: &str) -> switchyard_tests::Reply {
    Client::new(addr).get("admin", path).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_count_requests_by_code_durations_upstream_failures_and_reloads() {
    let blue = Backend::start("blue").await;
    let gone = Backend::start("gone").await;
    gone.stop_and_wait().await;
    let dir = tempfile::tempdir().unwrap();
    // Blue's second backend refuses connections: its requests are retried
    // on the first and counted as connect failures.
    let route = format!(
        "[[route]]\nname = \"app\"\nactive = \"blue\"\n[route.slots]\nblue = [\"{}\", \"{}\"]\n",
        blue.addr, gone.addr
    );
    let proxy = start(dir.path(), &route);
    let admin = proxy.admin_http_addr();

    let mut client = Client::new(proxy.addr);
    let mut ok = 0;
    for _ in 0..20 {
        assert_eq!(client.get("x", "/").await.unwrap().status, 200);
        ok += 1;
    }
    blue.fail_percent.store(100, Ordering::Relaxed);
    for _ in 0..3 {
        assert_eq!(client.get("x", "/").await.unwrap().status, 500);
    }
    blue.fail_percent.store(0, Ordering::Relaxed);

    // One good edit, one bad one.
    proxy.write_config_text(&with_admin_http(
        &route.replace("[route.slots]", "retries = 3\n[route.slots]"),
    ));
    eventually(Duration::from_secs(10), "the reload", || {
        proxy.reloads() >= 1
    })
    .await;
    proxy.write_config_text("[server\n");
    eventually(Duration::from_secs(10), "the rejected edit", || {
        tokio::task::block_in_place(|| proxy.status())["config"]["error"].is_string()
    })
    .await;

    let scrape = get(admin, "/metrics").await;
    assert_eq!(scrape.status, 200);
    let text = scrape.body;
    let series = |s: &str| value(&text, s).unwrap_or_else(|| panic!("no {s} in:\n{text}"));
    assert_eq!(
        series("switchyard_requests_total{route=\"app\",slot=\"blue\",code=\"200\"}"),
        f64::from(ok)
    );
    assert_eq!(
        series("switchyard_requests_total{route=\"app\",slot=\"blue\",code=\"500\"}"),
        3.0
    );
    assert_eq!(
        series("switchyard_request_duration_seconds_count{route=\"app\",slot=\"blue\"}"),
        23.0
    );
    assert_eq!(
        series(
            "switchyard_request_duration_seconds_bucket{route=\"app\",slot=\"blue\",le=\"+Inf\"}"
        ),
        23.0
    );
    assert!(
        text.contains("# TYPE switchyard_request_duration_seconds histogram"),
        "{text}"
    );
    assert!(
        series("switchyard_upstream_failures_total{route=\"app\",slot=\"blue\",kind=\"connect\"}")
            >= 1.0
    );
    assert_eq!(
        series("switchyard_config_reloads_total{result=\"ok\"}"),
        1.0
    );
    assert_eq!(
        series("switchyard_config_reloads_total{result=\"error\"}"),
        1.0
    );
    // The Controller's state series are there too.
    assert_eq!(
        series("switchyard_active_slot{route=\"app\",slot=\"blue\"}"),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ready_waits_for_the_first_health_verdicts_and_ends_with_the_drain() {
    let blue = Backend::start("blue").await;
    let dir = tempfile::tempdir().unwrap();
    // Ten passing probes 300 ms apart before blue has a verdict.
    let route = format!(
        "[[route]]\nname = \"app\"\nactive = \"blue\"\n[route.slots]\nblue = [\"{}\"]\n[route.health]\npath = \"/health\"\ninterval = \"300ms\"\nrise = 10\n",
        blue.addr
    );
    let proxy = start(dir.path(), &route);
    let admin = proxy.admin_http_addr();

    assert_eq!(get(admin, "/health/live").await.status, 200);
    let early = get(admin, "/health/ready").await;
    assert_eq!(early.status, 503, "{}", early.body);
    assert!(
        early.body.contains(&format!("app/blue/{}", blue.addr)),
        "{}",
        early.body
    );
    // Traffic flows meanwhile: not ready is advice, not a refusal.
    assert_eq!(
        Client::new(proxy.addr).get("x", "/").await.unwrap().status,
        200
    );

    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let ready = get(admin, "/health/ready").await;
        if ready.status == 200 {
            assert_eq!(ready.body, "ready\n");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never ready: {}",
            ready.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A stop drains a slow request; meanwhile ready says 503.
    let slow = {
        let addr = proxy.addr;
        tokio::spawn(async move { Client::new(addr).get("x", "/slow/1500").await })
    };
    eventually(Duration::from_secs(5), "the slow request in flight", || {
        blue.requests.load(Ordering::Relaxed) >= 2
    })
    .await;
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(proxy.pid(), libc::SIGTERM) };
    let draining = {
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        loop {
            let ready = get(admin, "/health/ready").await;
            if ready.status == 503 || std::time::Instant::now() > deadline {
                break ready;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    assert_eq!(draining.status, 503, "{}", draining.body);
    assert!(draining.body.contains("draining"), "{}", draining.body);
    assert_eq!(slow.await.unwrap().unwrap().status, 200);
    assert!(tokio::task::block_in_place(|| proxy.terminate()).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_is_the_admin_status_json_and_nothing_changes_state() {
    let blue = Backend::start("blue").await;
    let dir = tempfile::tempdir().unwrap();
    let route = format!(
        "[[route]]\nname = \"app\"\nactive = \"blue\"\n[route.slots]\nblue = [\"{}\"]\n",
        blue.addr
    );
    let proxy = start(dir.path(), &route);
    let admin = proxy.admin_http_addr();

    let status = get(admin, "/status").await;
    assert_eq!(status.status, 200);
    let json: serde_json::Value = serde_json::from_str(&status.body).unwrap();
    let admin_status = tokio::task::block_in_place(|| proxy.status());
    // The same document; health checks may land between the two reads,
    // so compare what they cannot change.
    let keys = |v: &serde_json::Value| {
        let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    assert_eq!(keys(&json), keys(&admin_status), "{json}");
    assert_eq!(json["generation"], admin_status["generation"], "{json}");
    for field in ["name", "active", "slots"] {
        let slots_or_value = |v: &serde_json::Value| match field {
            "slots" => v["routes"][0]["slots"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["name"].clone())
                .collect::<Vec<_>>(),
            _ => vec![v["routes"][0][field].clone()],
        };
        assert_eq!(
            slots_or_value(&json),
            slots_or_value(&admin_status),
            "{field}: {json}"
        );
    }
    let one: serde_json::Value =
        serde_json::from_str(&get(admin, "/status?route=app").await.body).unwrap();
    assert_eq!(one["routes"][0]["name"], "app", "{one}");
    assert_eq!(get(admin, "/status?route=nope").await.status, 404);
    assert_eq!(get(admin, "/nope").await.status, 404);
    let post = Client::new(admin)
        .send("POST", "admin", "/status", &[], Bytes::from_static(b"{}"))
        .await
        .unwrap();
    assert_eq!(post.status, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn request_ids_go_upstream_and_back_and_every_request_has_an_access_log_line() {
    let blue = Backend::start("blue").await;
    let dir = tempfile::tempdir().unwrap();
    let route = format!(
        "[[route]]\nname = \"app\"\nhosts = [\"app.test\"]\nactive = \"blue\"\n[route.slots]\nblue = [\"{}\"]\n",
        blue.addr
    );
    let config = dir.path().join("switchyard.toml");
    std::fs::write(
        &config,
        config_text(&route).replace("threads = 2", "threads = 2\naccess_log = true"),
    )
    .unwrap();
    let proxy = Proxy::start_with_file(dir.path(), &config);
    let mut client = Client::new(proxy.addr);

    // Made up when missing: the backend and the client see the same one.
    let made = client.get("app.test", "/echo-headers").await.unwrap();
    let id = made.headers["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 32, "{id}");
    assert!(
        made.body.contains(&format!("x-request-id: {id}\n")),
        "{}",
        made.body
    );
    // Kept when the client sent one.
    let kept = client
        .send(
            "GET",
            "app.test",
            "/echo-headers",
            &[("x-request-id", "trace-42")],
            Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(kept.headers["x-request-id"], "trace-42");
    assert!(
        kept.body.contains("x-request-id: trace-42\n"),
        "{}",
        kept.body
    );
    // Our own answers carry it too.
    let no_route = Client::new(proxy.addr)
        .send(
            "GET",
            "other.test",
            "/",
            &[("x-request-id", "lost-1")],
            Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        (
            no_route.status,
            no_route.headers["x-request-id"].to_str().unwrap()
        ),
        (404, "lost-1")
    );

    let line_with = |needle: &str| {
        proxy
            .log_text()
            .lines()
            .find(|l| l.contains("target=access") && l.contains(needle))
            .map(str::to_owned)
    };
    eventually(Duration::from_secs(5), "the access log lines", || {
        line_with("request_id=trace-42").is_some() && line_with("request_id=lost-1").is_some()
    })
    .await;
    let line = line_with("request_id=trace-42").unwrap();
    for field in [
        "method=GET".to_string(),
        "uri=/echo-headers".to_string(),
        "route=app".to_string(),
        "slot=blue".to_string(),
        format!("backend={}", blue.addr),
        "status=200".to_string(),
        format!("bytes={}", kept.body.len()),
        "duration_ms=".to_string(),
        "client=127.0.0.1".to_string(),
    ] {
        assert!(line.contains(&field), "{field} missing in {line}");
    }
    let unrouted = line_with("request_id=lost-1").unwrap();
    assert!(
        unrouted.contains("route=- slot=- backend=- status=404"),
        "{unrouted}"
    );
    assert!(line_with(&format!("request_id={id}")).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn systemd_hears_ready_after_the_first_verdicts_and_stopping_on_sigterm() {
    let blue = Backend::start("blue").await;
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let route = format!(
        "[[route]]\nname = \"app\"\nactive = \"blue\"\n[route.slots]\nblue = [\"{}\"]\n[route.health]\npath = \"/health\"\ninterval = \"300ms\"\nrise = 10\n",
        blue.addr
    );
    let config = dir.path().join("switchyard.toml");
    std::fs::write(&config, with_admin_http(&route)).unwrap();
    let proxy = Proxy::start_with_env(
        dir.path(),
        &config,
        &[("NOTIFY_SOCKET", notify_path.to_str().unwrap())],
    );
    let admin = proxy.admin_http_addr();
    let receive = || {
        let mut buf = [0u8; 256];
        notify
            .recv(&mut buf)
            .ok()
            .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
    };

    // Listening, but blue has no verdict yet: not ready for systemd either.
    assert_eq!(get(admin, "/health/ready").await.status, 503);
    assert_eq!(tokio::task::block_in_place(receive), None);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let ready = loop {
        if let Some(message) = tokio::task::block_in_place(receive) {
            break message;
        }
        assert!(std::time::Instant::now() < deadline, "no READY=1");
    };
    assert_eq!(ready, "READY=1\nSTATUS=serving\n");
    assert_eq!(get(admin, "/health/ready").await.status, 200);

    // SAFETY: a signal to our own child.
    unsafe { libc::kill(proxy.pid(), libc::SIGTERM) };
    let stopping = loop {
        if let Some(message) = tokio::task::block_in_place(receive) {
            break message;
        }
        assert!(std::time::Instant::now() < deadline, "no STOPPING=1");
    };
    assert_eq!(stopping, "STOPPING=1\n");
    assert!(tokio::task::block_in_place(|| proxy.terminate()).success());
}
