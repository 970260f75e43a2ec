//! Backends given as `host:port`: resolved at start, `check` and reload
//! (a name that never resolved is an error there), and again as their
//! answers' TTL runs out; every address is a backend with its own health,
//! addresses that go away stop getting traffic, new ones get it once their
//! probes pass, and a failing lookup keeps the last addresses and shows in
//! `status`. A test DNS server on loopback answers, named by `[server]
//! resolvers`; one test uses the system's settings (`localhost`).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use switchyard_tests::dns::DnsServer;
use switchyard_tests::tls::TestCa;
use switchyard_tests::tls_backend::TlsBackend;
use switchyard_tests::{switchyard_bin, Backend, Client, Proxy};

/// `[server]` for these tests, resolving with `dns`.
fn server(dns: &DnsServer) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin_socket = \"admin.sock\"\nadmin_http = \"127.0.0.1:0\"\nstate_dir = \"state\"\ndrain_timeout = \"5s\"\nthreads = 2\nresolvers = [\"{}\"]\n\n",
        dns.addr
    )
}

/// Route `app` for `a.test` whose slot `blue` is `backends`, probed on
/// `/health` every 100 ms, one pass or failure decides.
fn route(backends: &str) -> String {
    format!(
        "[[route]]\nname = \"app\"\nhosts = [\"a.test\"]\nactive = \"blue\"\n[route.slots]\nblue = [{backends}]\n\
         [route.health]\npath = \"/health\"\ninterval = \"100ms\"\ntimeout = \"1s\"\nrise = 1\nfall = 1\n"
    )
}

fn start(dir: &std::path::Path, text: &str) -> Proxy {
    std::fs::write(dir.join("switchyard.toml"), text).unwrap();
    Proxy::start_with_file(dir, &dir.join("switchyard.toml"))
}

/// Backends on 127.0.0.2, .3 and .4, all on one port (a name has one).
async fn three_backends() -> (u16, Vec<Backend>) {
    for _ in 0..20 {
        let first = Backend::start_on("blue", "127.0.0.2:0".parse().unwrap()).await;
        let port = first.addr.port();
        let mut rest = Vec::new();
        for ip in ["127.0.0.3", "127.0.0.4"] {
            let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
            if std::net::TcpListener::bind(addr).is_ok() {
                rest.push(Backend::start_on("blue", addr).await);
            }
        }
        if rest.len() == 2 {
            let mut all = vec![first];
            all.extend(rest);
            return (port, all);
        }
    }
    panic!("no port free on 127.0.0.2, .3 and .4 in 20 tries");
}

/// The slot's backends as `status` lists them: address → state.
fn backends(status: &serde_json::Value) -> Vec<(String, String)> {
    status["routes"][0]["slots"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["address"].as_str().unwrap().to_string(),
                b["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, s)| (a.to_string(), s.to_string()))
        .collect()
}

/// Sends requests until the published table routes to exactly the
/// backends `serving` marks (a health change is published within 100 ms
/// of `status` showing it), then returns how `n` more spread.
async fn settled_spread(
    proxy: &Proxy,
    backends: &[Backend],
    serving: &[bool],
    n: usize,
) -> Vec<u64> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let served = spread(proxy, backends, 2 * serving.len()).await;
        let routed: Vec<bool> = served.iter().map(|&n| n > 0).collect();
        if routed == serving {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still routed to {served:?}, expected {serving:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    spread(proxy, backends, n).await
}

/// `served` is an even round robin over the backends `serving` marks,
/// give or take one request each (a publish, as when a probe of any
/// backend changes its state, starts the round again).
fn assert_even(served: &[u64], serving: &[bool]) {
    let total: u64 = served.iter().sum();
    let share = total / serving.iter().filter(|&&s| s).count() as u64;
    for (n, on) in served.iter().zip(serving) {
        if *on {
            assert!(n.abs_diff(share) <= 1, "uneven: {served:?}");
        } else {
            assert_eq!(
                *n, 0,
                "a backend out of rotation was sent requests: {served:?}"
            );
        }
    }
}

/// Sends `n` requests and returns how many each backend served.
async fn spread(proxy: &Proxy, backends: &[Backend], n: usize) -> Vec<u64> {
    let before: Vec<u64> = backends
        .iter()
        .map(|b| b.requests.load(Ordering::SeqCst))
        .collect();
    let mut client = Client::new(proxy.addr);
    for _ in 0..n {
        let reply = client.get("a.test", "/").await.unwrap();
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    backends
        .iter()
        .zip(before)
        .map(|(b, was)| b.requests.load(Ordering::SeqCst) - was)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_address_is_a_backend_and_the_set_follows_dns() {
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start().await;
    let (port, all) = three_backends().await;
    dns.set("app.test", &["127.0.0.2", "127.0.0.3"], 1);
    let proxy = start(
        dir.path(),
        &format!("{}{}", server(&dns), route(&format!("\"app.test:{port}\""))),
    );
    let a2 = format!("127.0.0.2:{port}");
    let a3 = format!("127.0.0.3:{port}");
    let a4 = format!("127.0.0.4:{port}");
    proxy
        .wait_for_status("both addresses healthy", |s| {
            backends(s) == pairs(&[(&a2, "healthy"), (&a3, "healthy")])
        })
        .await;
    let served = settled_spread(&proxy, &all, &[true, true, false], 20).await;
    assert_even(&served, &[true, true, false]);
    let status = proxy.status();
    let names = &status["routes"][0]["slots"][0]["names"][0];
    assert_eq!(names["name"], format!("app.test:{port}"));
    assert_eq!(names["addresses"], serde_json::json!([a2, a3]));
    assert!(names.get("error").is_none(), "{names}");

    // .4 joins, but fails its probes: it gets no traffic until it passes.
    all[2].healthy.store(false, Ordering::SeqCst);
    dns.set("app.test", &["127.0.0.2", "127.0.0.3", "127.0.0.4"], 1);
    proxy
        .wait_for_status("the new address probed and found unhealthy", |s| {
            backends(s) == pairs(&[(&a2, "healthy"), (&a3, "healthy"), (&a4, "unhealthy")])
        })
        .await;
    let served = settled_spread(&proxy, &all, &[true, true, false], 20).await;
    assert_even(&served, &[true, true, false]);
    all[2].healthy.store(true, Ordering::SeqCst);
    proxy
        .wait_for_status("the new address healthy", |s| {
            backends(s) == pairs(&[(&a2, "healthy"), (&a3, "healthy"), (&a4, "healthy")])
        })
        .await;
    let served = settled_spread(&proxy, &all, &[true, true, true], 30).await;
    assert_even(&served, &[true, true, true]);

    // .2 goes away from DNS: it gets nothing more.
    dns.set("app.test", &["127.0.0.3", "127.0.0.4"], 1);
    proxy
        .wait_for_status("the gone address removed", |s| {
            backends(s) == pairs(&[(&a3, "healthy"), (&a4, "healthy")])
        })
        .await;
    let served = settled_spread(&proxy, &all, &[false, true, true], 20).await;
    assert_even(&served, &[false, true, true]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_lookup_keeps_the_last_addresses_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start().await;
    let backend = Backend::start_on("blue", "127.0.0.2:0".parse().unwrap()).await;
    let port = backend.addr.port();
    dns.set("app.test", &["127.0.0.2"], 1);
    let proxy = start(
        dir.path(),
        &format!("{}{}", server(&dns), route(&format!("\"app.test:{port}\""))),
    );
    proxy
        .wait_for_status("the backend healthy", |s| {
            s["routes"][0]["slots"][0]["backends"][0]["state"] == "healthy"
        })
        .await;

    dns.fail("app.test");
    let status = proxy
        .wait_for_status_within(Duration::from_secs(10), "the failure shown", |s| {
            s["routes"][0]["slots"][0]["names"][0]
                .get("error")
                .is_some()
        })
        .await;
    let name = &status["routes"][0]["slots"][0]["names"][0];
    assert_eq!(
        name["addresses"],
        serde_json::json!([backend.addr.to_string()])
    );
    assert!(name["failing_since"].as_u64().unwrap() > 0, "{name}");
    let reply = Client::new(proxy.addr).get("a.test", "/").await.unwrap();
    assert_eq!(reply.status, 200, "traffic goes on to the last addresses");
    assert!(proxy
        .log_text()
        .contains("cannot resolve a backend name, keeping its last addresses"));
    let metrics = Client::new(proxy.admin_http_addr())
        .get("admin", "/metrics")
        .await
        .unwrap()
        .body;
    assert!(
        metrics.contains("switchyard_backend_name_lookups_total{result=\"error\"}"),
        "{metrics}"
    );

    dns.set("app.test", &["127.0.0.2"], 1);
    proxy
        .wait_for_status_within(Duration::from_secs(10), "the error cleared", |s| {
            let name = &s["routes"][0]["slots"][0]["names"][0];
            name.get("error").is_none()
                && name["addresses"].as_array().is_some_and(|a| a.len() == 1)
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_never_resolved_fails_check_and_a_reload_but_not_a_start() {
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start().await;
    let backend = Backend::start("blue").await;
    let config = dir.path().join("switchyard.toml");
    let unresolved = format!("{}{}", server(&dns), route("\"late.test:80\""));
    std::fs::write(&config, &unresolved).unwrap();
    let check = std::process::Command::new(switchyard_bin())
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("switchyard.toml:15:9: backend late.test:80 does not resolve: the DNS server knows no such name (NXDOMAIN)"),
        "{stderr}"
    );

    // A start goes on: a slot whose containers are down must not keep the
    // front door shut. The slot has no address until the name answers.
    let proxy = Proxy::start_with_file(dir.path(), &config);
    let reply = Client::new(proxy.addr).get("a.test", "/").await.unwrap();
    assert_eq!(reply.status, 502, "{reply:?}");
    let name = proxy.status()["routes"][0]["slots"][0]["names"][0].clone();
    assert!(
        name["error"].as_str().unwrap().contains("NXDOMAIN"),
        "{name}"
    );
    assert!(proxy
        .log_text()
        .contains("backend late.test:80 does not resolve"));
    dns.set("late.test", &[&backend.addr.ip().to_string()], 30);
    let port = backend.addr.port();
    let fixed = unresolved.replace("late.test:80", &format!("late.test:{port}"));
    // (The port is part of the name: the edit brings in a new one, which
    // resolves now.)
    std::fs::write(&config, &fixed).unwrap();
    proxy.cli_ok(&["reload"]);
    let reply = Client::new(proxy.addr).get("a.test", "/").await.unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");

    // An edit that brings in a name that does not resolve is refused, and
    // the running config keeps serving.
    let edited = fixed.replace(
        &format!("blue = [\"late.test:{port}\"]"),
        &format!("blue = [\"late.test:{port}\", \"nowhere.test:80\"]"),
    );
    std::fs::write(&config, edited).unwrap();
    let out = proxy.cli(&["reload"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{said}");
    // After `blue = ["late.test:PORT", `.
    let column = 23 + port.to_string().len();
    let place = format!("switchyard.toml:15:{column}: backend nowhere.test:80 does not resolve");
    assert!(said.contains(&place), "{said}");
    let reply = Client::new(proxy.addr).get("a.test", "/").await.unwrap();
    assert_eq!(reply.status, 200, "the last good config keeps serving");

    // Once it resolves, the same edit applies.
    dns.set("nowhere.test", &["127.0.0.1"], 30);
    proxy.cli_ok(&["reload"]);
    proxy
        .wait_for_status("both names listed", |s| {
            s["routes"][0]["slots"][0]["names"]
                .as_array()
                .is_some_and(|names| names.len() == 2)
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_starts_resolving_later_gets_its_slot_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start().await;
    let backend = Backend::start("blue").await;
    let text = format!(
        "{}{}",
        server(&dns),
        route(&format!("\"later.test:{}\"", backend.addr.port()))
    );
    let proxy = start(dir.path(), &text);
    assert_eq!(
        Client::new(proxy.addr)
            .get("a.test", "/")
            .await
            .unwrap()
            .status,
        502
    );
    dns.set("later.test", &["127.0.0.1"], 30);
    // Retried 1 s, then 2 s, ... after the failure at start.
    proxy
        .wait_for_status_within(
            Duration::from_secs(10),
            "the name resolved and probed",
            |s| s["routes"][0]["slots"][0]["backends"][0]["state"] == "healthy",
        )
        .await;
    let mut client = Client::new(proxy.addr);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let reply = client.get("a.test", "/").await.unwrap();
        if reply.status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{reply:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn localhost_resolves_with_the_system_settings() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::start("blue").await;
    let text =
        switchyard_tests::config_text(&route(&format!("\"localhost:{}\"", backend.addr.port())));
    let proxy = start(dir.path(), &text);
    let status = proxy
        .wait_for_status("127.0.0.1 healthy", |s| {
            backends(s)
                .iter()
                .any(|(a, st)| *a == backend.addr.to_string() && st == "healthy")
        })
        .await;
    assert_eq!(
        status["routes"][0]["slots"][0]["names"][0]["name"],
        format!("localhost:{}", backend.addr.port())
    );
    let reply = Client::new(proxy.addr).get("a.test", "/").await.unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_backend_by_name_is_checked_for_that_name() {
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start().await;
    let ca = TestCa::new();
    std::fs::write(dir.path().join("ca.pem"), ca.issue(&["x.test"]).ca_pem).unwrap();
    let backend = TlsBackend::start(&ca.issue(&["secure.test"]), &[b"http/1.1"], None).await;
    dns.set("secure.test", &["127.0.0.1"], 30);
    let text = format!(
        "{}[[route]]\nname = \"app\"\nhosts = [\"a.test\"]\nactive = \"blue\"\n[route.slots]\n\
         blue = {{ backends = [\"secure.test:{}\"], protocol = \"https\", ca = \"ca.pem\" }}\n",
        server(&dns),
        backend.addr.port()
    );
    let proxy = start(dir.path(), &text);
    let reply = Client::new(proxy.addr)
        .get("a.test", "/named")
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, "tls HTTP/1.1 /named");
    assert_eq!(backend.served()[0].sni.as_deref(), Some("secure.test"));
}
