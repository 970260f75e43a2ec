//! `[cluster]`: several switchyard nodes share their decisions through a
//! real 3-member etcd on loopback. Each node is the real binary with its
//! own config, state and probes; the backends are shared, as they are
//! behind several front doors.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_tests::etcd::EtcdCluster;
use switchyard_tests::{client_address, config_text, eventually, Backend, Client, Load, Proxy};

/// Probes often and fail fast, so health moves within a test's time.
const HEALTH: &str =
    "[route.health]\npath = \"/health\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\nrise = 1\nfall = 2\n";

struct Nodes {
    nodes: Vec<Proxy>,
    _dirs: Vec<tempfile::TempDir>,
}

/// Node `i` on `etcd`, route `app` with blue active in its file and its
/// own view of where blue and green are.
fn start_node(
    i: usize,
    etcd: &EtcdCluster,
    prefix: &str,
    blue: SocketAddr,
    green: SocketAddr,
) -> (Proxy, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let routes = format!(
        "[cluster]\netcd = {}\nprefix = \"{prefix}\"\nnode = \"node{i}\"\n\n[[route]]\nname = \"app\"\nactive = \"blue\"\n[route.slots]\nblue = [\"{blue}\"]\ngreen = [\"{green}\"]\n{HEALTH}",
        etcd.toml_endpoints(),
    );
    let config = dir.path().join("switchyard.toml");
    let text =
        config_text(&routes).replacen("[server]\n", "[server]\nadmin_http = \"127.0.0.1:0\"\n", 1);
    std::fs::write(&config, text).unwrap();
    (Proxy::start_with_file(dir.path(), &config), dir)
}

/// `n` nodes on `etcd`, all seeing the same blue and green.
fn start_nodes(
    n: usize,
    etcd: &EtcdCluster,
    prefix: &str,
    blue: &Backend,
    green: &Backend,
) -> Nodes {
    let (nodes, dirs) = (1..=n)
        .map(|i| start_node(i, etcd, prefix, blue.addr, green.addr))
        .unzip();
    Nodes { nodes, _dirs: dirs }
}

/// Three nodes on `etcd` where node3 starts first and leads, seeing green
/// at `green3`; the others see `green`.
async fn node3_leading(
    etcd: &EtcdCluster,
    prefix: &str,
    blue: &Backend,
    green: &Backend,
    green3: SocketAddr,
) -> Nodes {
    let (node3, dir3) = start_node(3, etcd, prefix, blue.addr, green3);
    node3
        .wait_for_status_within(Duration::from_secs(20), "node3 leads", |s| {
            cluster_of(s)["leader"] == "node3"
        })
        .await;
    let (node1, dir1) = start_node(1, etcd, prefix, blue.addr, green.addr);
    let (node2, dir2) = start_node(2, etcd, prefix, blue.addr, green.addr);
    let nodes = Nodes {
        nodes: vec![node1, node2, node3],
        _dirs: vec![dir1, dir2, dir3],
    };
    wait_connected(&nodes).await;
    nodes
}

fn cluster_of(status: &Value) -> &Value {
    &status["cluster"]
}

fn active(status: &Value) -> &str {
    status["routes"][0]["active"].as_str().unwrap_or("?")
}

/// Waits until every node reached etcd and one of them leads.
async fn wait_connected(nodes: &Nodes) {
    for node in &nodes.nodes {
        node.wait_for_status_within(
            Duration::from_secs(20),
            "etcd connected and a leader",
            |s| cluster_of(s)["connected"] == true && cluster_of(s)["leader"].is_string(),
        )
        .await;
    }
}

/// Waits until `node` serves `slot` to a new request, and says when.
async fn wait_serving(node: &Proxy, slot: &str, limit: Duration) -> Instant {
    let deadline = Instant::now() + limit;
    let mut client = Client::new(node.addr);
    loop {
        if let Ok(reply) = client.get("app", "/which").await {
            if reply.slot.as_deref() == Some(slot) {
                return Instant::now();
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} never served {slot} within {limit:?}: {:#}",
            node.addr,
            tokio::task::block_in_place(|| node.status())
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn cli_in(node: &Proxy, args: &[&str]) -> std::process::Output {
    tokio::task::block_in_place(|| node.cli(args))
}

fn history_json(node: &Proxy) -> Vec<Value> {
    let out = tokio::task::block_in_place(|| {
        node.cli_ok(&["history", "app", "--json", "--limit", "100"])
    });
    let reply: Value = serde_json::from_str(&out).unwrap();
    reply["result"]["entries"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_switch_on_one_node_moves_every_node_with_no_failed_request() {
    let etcd = EtcdCluster::start(3);
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let nodes = start_nodes(3, &etcd, "/switchyard/switch", &blue, &green);
    wait_connected(&nodes).await;

    let loads: Vec<Load> = nodes
        .nodes
        .iter()
        .map(|node| Load::start(node.addr, "app", 4, 20_000))
        .collect();
    eventually(
        Duration::from_secs(10),
        "traffic through every node",
        || loads.iter().all(|l| l.ok() > 50),
    )
    .await;

    let switched = Instant::now();
    // No guard: under a loaded test machine green's p95 may legitimately
    // jump past blue's, and a guard rollback is not what this test is about.
    let out = cli_in(
        &nodes.nodes[0],
        &[
            "switch",
            "app",
            "green",
            "--reason",
            "release 2",
            "--no-guard",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut slowest = Duration::ZERO;
    for node in &nodes.nodes[1..] {
        let at = wait_serving(node, "green", Duration::from_secs(5)).await;
        slowest = slowest.max(at - switched);
    }
    println!("switch on node1 -> first green response on every other node: {slowest:?}");

    for node in &nodes.nodes {
        let status = node
            .wait_for_status("green active and every node agreeing", |s| {
                active(s) == "green" && cluster_of(s)["agree"] == true
            })
            .await;
        assert_eq!(status["routes"][0]["previous"], "blue");
        assert_eq!(cluster_of(&status)["nodes"].as_array().unwrap().len(), 3);
    }
    let on_green = green.requests.load(Ordering::Relaxed);
    eventually(Duration::from_secs(10), "traffic on green", || {
        green.requests.load(Ordering::Relaxed) > on_green + 100
    })
    .await;
    for (i, load) in loads.into_iter().enumerate() {
        let (ok, failed, failures) = load.finish().await;
        assert_eq!(
            failed,
            0,
            "node{}: {ok} ok, {failed} failed: {failures:#?}",
            i + 1
        );
    }
    // Any node's history, read from etcd, has the switch and who made it.
    let history = history_json(&nodes.nodes[2]);
    assert!(
        history.iter().any(|e| e["trigger"] == "admin"
            && e["action"] == "switch"
            && e["node"] == "node1"
            && e["reason"] == "release 2"),
        "{history:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_etcd_nodes_serve_the_last_decision_refuse_commands_and_catch_up() {
    let mut etcd = EtcdCluster::start(3);
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let nodes = start_nodes(2, &etcd, "/switchyard/static", &blue, &green);
    wait_connected(&nodes).await;
    let load = Load::start(nodes.nodes[1].addr, "app", 2, 100_000);

    etcd.kill_all();
    for node in &nodes.nodes {
        node.wait_for_status_within(Duration::from_secs(15), "etcd unreachable", |s| {
            cluster_of(s)["connected"] == false && cluster_of(s)["error"].is_string()
        })
        .await;
    }
    let metric = |node: &Proxy| {
        let addr = node.admin_http_addr();
        let text = tokio::task::block_in_place(|| {
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            use std::io::{Read, Write};
            stream
                .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
                .unwrap();
            let mut text = String::new();
            stream.read_to_string(&mut text).unwrap();
            text
        });
        text.lines()
            .find(|l| l.starts_with("switchyard_cluster_connected "))
            .map(str::to_string)
    };
    assert_eq!(
        metric(&nodes.nodes[0]).as_deref(),
        Some("switchyard_cluster_connected 0")
    );
    // Traffic flows on the last decision.
    let before = load.ok();
    eventually(Duration::from_secs(5), "traffic without etcd", || {
        load.ok() > before + 200
    })
    .await;

    // A command that needs etcd is refused, saying why and what to do.
    let out = cli_in(&nodes.nodes[0], &["switch", "app", "green"]);
    assert!(!out.status.success());
    let said =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("etcd") && said.contains("--local"), "{said}");
    let status = tokio::task::block_in_place(|| nodes.nodes[0].status());
    assert_eq!(active(&status), "blue", "a refused switch changes nothing");

    // --local applies on this node alone, and says so.
    let out = cli_in(
        &nodes.nodes[0],
        &["switch", "app", "green", "--local", "--reason", "emergency"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = tokio::task::block_in_place(|| nodes.nodes[0].status());
    assert_eq!(active(&status), "green");
    assert_eq!(
        cluster_of(&status)["local_only"],
        serde_json::json!(["app"])
    );
    let other = tokio::task::block_in_place(|| nodes.nodes[1].status());
    assert_eq!(active(&other), "blue", "node2 did not hear of it");
    // Without etcd, `history` reads the node's own file.
    let history = history_json(&nodes.nodes[0]);
    assert!(
        history.iter().any(|e| e["action"] == "switch"
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("emergency") && r.contains("--local"))),
        "{history:#?}"
    );

    // etcd returns: nobody changed the route meanwhile, so the local
    // change is written and every node takes it.
    etcd.restart_stopped();
    for node in &nodes.nodes {
        node.wait_for_status_within(
            Duration::from_secs(20),
            "connected again, green everywhere",
            |s| cluster_of(s)["connected"] == true && active(s) == "green",
        )
        .await;
    }
    assert_eq!(
        metric(&nodes.nodes[1]).as_deref(),
        Some("switchyard_cluster_connected 1")
    );
    let (ok, failed, failures) = load.finish().await;
    assert_eq!(failed, 0, "{ok} ok, {failed} failed: {failures:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_etcd_leader_loses_no_acknowledged_switch() {
    let mut etcd = EtcdCluster::start(3);
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let nodes = start_nodes(3, &etcd, "/switchyard/raft", &blue, &green);
    wait_connected(&nodes).await;

    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for i in 0..12 {
        if i == 4 {
            let leader = etcd.leader().await;
            etcd.kill(leader);
        }
        let slot = if i % 2 == 0 { "green" } else { "blue" };
        let node = &nodes.nodes[i % 3];
        let out = cli_in(node, &["switch", "app", slot, "--force", "--no-guard"]);
        if out.status.success() {
            acknowledged.push(slot);
        } else {
            refused += 1;
            let said = String::from_utf8_lossy(&out.stderr).to_string();
            assert!(
                said.contains("etcd") || said.contains("another node"),
                "{said}"
            );
        }
    }
    let last = *acknowledged.last().expect("some switch was acknowledged");
    println!(
        "{} switches acknowledged, {refused} refused while etcd elected a new leader",
        acknowledged.len()
    );
    for node in &nodes.nodes {
        node.wait_for_status_within(
            Duration::from_secs(20),
            "the last acknowledged switch everywhere",
            |s| active(s) == last && cluster_of(s)["agree"] == true,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fail_back_is_taken_once_by_the_leader() {
    let etcd = EtcdCluster::start(3);
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let nodes = start_nodes(3, &etcd, "/switchyard/failback", &blue, &green);
    wait_connected(&nodes).await;
    let out = cli_in(&nodes.nodes[1], &["switch", "app", "green", "--no-guard"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for node in &nodes.nodes {
        node.wait_for_status("green everywhere", |s| active(s) == "green")
            .await;
    }

    green.healthy.store(false, Ordering::Relaxed);
    for node in &nodes.nodes {
        node.wait_for_status_within(Duration::from_secs(10), "failed back to blue", |s| {
            active(s) == "blue"
        })
        .await;
    }
    // Every node reads the one fail-back from etcd, made by the leader.
    let leader =
        cluster_of(&tokio::task::block_in_place(|| nodes.nodes[0].status()))["leader"].clone();
    for node in &nodes.nodes {
        assert_eq!(
            failbacks_by(node),
            vec![leader.clone()],
            "one node (the leader) decides the fail-back"
        );
    }
    let leaders: Vec<Value> = nodes
        .nodes
        .iter()
        .map(|n| cluster_of(&tokio::task::block_in_place(|| n.status()))["leader"].clone())
        .collect();
    assert!(leaders.windows(2).all(|w| w[0] == w[1]), "{leaders:?}");
}

/// The node that made each fail-back in `node`'s history.
fn failbacks_by(node: &Proxy) -> Vec<Value> {
    history_json(node)
        .iter()
        .filter(|e| e["trigger"] == "failback")
        .map(|e| e["node"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slot_down_for_one_node_alone_moves_nobody_and_down_for_most_fails_back_once() {
    let etcd = EtcdCluster::start(3);
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    // node3 sees green at an address nothing listens on (its own network
    // to green is broken), and starts first so that it leads: its own
    // probes alone would fail everyone back.
    let nowhere = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let nodes = node3_leading(&etcd, "/switchyard/views", &blue, &green, nowhere).await;
    let node3 = &nodes.nodes[2];
    node3
        .wait_for_status_within(Duration::from_secs(10), "every node reporting", |s| {
            cluster_of(s)["nodes"]
                .as_array()
                .is_some_and(|n| n.len() == 3)
        })
        .await;
    let out = cli_in(&nodes.nodes[0], &["switch", "app", "green", "--no-guard"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The leader reads node3's own view (green down) and the two others'
    // (green up), and looks at the route again with them, twice more.
    let weighing = |s: &Value| {
        let nodes = cluster_of(s)["nodes"].as_array()?;
        let green_of = |name: &str| {
            nodes
                .iter()
                .find(|n| n["node"] == name)
                .map(|n| n["slots"]["app"]["green"].clone())
        };
        let views = [green_of("node1")?, green_of("node2")?, green_of("node3")?];
        (views == ["healthy", "healthy", "unhealthy"]).then(|| cluster_of(s)["rounds"].as_u64())?
    };
    let first = node3
        .wait_for_status_within(
            Duration::from_secs(10),
            "the leader reading every view",
            |s| weighing(s).is_some(),
        )
        .await;
    let first = weighing(&first).unwrap();
    node3
        .wait_for_status_within(Duration::from_secs(10), "two more rounds", |s| {
            cluster_of(s)["rounds"]
                .as_u64()
                .is_some_and(|r| r >= first + 2)
        })
        .await;
    for node in &nodes.nodes {
        let status = tokio::task::block_in_place(|| node.status());
        assert_eq!(
            active(&status),
            "green",
            "one node's view moved the route: {status:#}"
        );
        assert_eq!(failbacks_by(node), Vec::<Value>::new());
    }

    // Green goes down for everyone: a majority sees it, the leader fails
    // back once, and every node follows.
    green.healthy.store(false, Ordering::Relaxed);
    for node in &nodes.nodes {
        node.wait_for_status_within(Duration::from_secs(10), "failed back to blue", |s| {
            active(s) == "blue"
        })
        .await;
    }
    for node in &nodes.nodes {
        assert_eq!(
            failbacks_by(node),
            vec![Value::from("node3")],
            "once, by node3, the leader"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_moving_between_nodes_stays_in_its_canary_bucket() {
    let etcd = EtcdCluster::start(3);
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let nodes = start_nodes(3, &etcd, "/switchyard/canary", &blue, &green);
    wait_connected(&nodes).await;
    let out = cli_in(&nodes.nodes[1], &["canary", "app", "green", "30"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for node in &nodes.nodes {
        let status = node
            .wait_for_status("the canary everywhere", |s| {
                s["routes"][0]["canary"]["weight"] == 30
            })
            .await;
        assert_eq!(status["routes"][0]["canary"]["slot"], "green");
    }

    // Each client, from its own address, lands on the same slot through
    // every node; its cookie from one node is honoured by the others.
    let mut on_green = 0;
    for n in 0..60 {
        let from = client_address(n);
        let mut slots = Vec::new();
        let mut cookie = None;
        for node in &nodes.nodes {
            let reply = Client::from_address(node.addr, from)
                .get("app", "/")
                .await
                .unwrap();
            slots.push(reply.slot.clone().unwrap());
            cookie = cookie.or(reply.set_cookie.clone());
        }
        assert!(
            slots.iter().all(|s| *s == slots[0]),
            "client {from}: {slots:?}"
        );
        on_green += usize::from(slots[0] == "green");
        // The cookie one node set takes a client from elsewhere to the
        // same slot on another node.
        let cookie = cookie
            .expect("a canary sets a cookie")
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let elsewhere = client_address(n + 1_000);
        let reply = Client::from_address(nodes.nodes[2].addr, elsewhere)
            .send(
                "GET",
                "app",
                "/",
                &[("cookie", &cookie)],
                Default::default(),
            )
            .await
            .unwrap();
        assert_eq!(reply.slot.unwrap(), slots[0], "{cookie}");
    }
    assert!(
        (5..=35).contains(&on_green),
        "about 30 % of 60 on the canary: {on_green}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_leaders_guard_judges_the_requests_every_node_served() {
    let etcd = EtcdCluster::start(3);
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    // node3 leads and serves no request at all: alone, its guard would see
    // nothing to judge.
    let nodes = node3_leading(&etcd, "/switchyard/guard", &blue, &green, green.addr).await;

    // A release answering every request with 500, switched to with the
    // guard on (its default: 5 % of at least 100 requests).
    green.fail_percent.store(100, Ordering::Relaxed);
    let out = cli_in(
        &nodes.nodes[0],
        &["switch", "app", "green", "--reason", "bad release"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut clients = [
        Client::new(nodes.nodes[0].addr),
        Client::new(nodes.nodes[1].addr),
    ];
    // Reports carry counters every 5 s: the rollback comes within seconds.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut sent = 0;
    loop {
        let status = tokio::task::block_in_place(|| nodes.nodes[2].status());
        if active(&status) == "blue" && status["routes"][0]["decided_by"] == "guard" {
            break;
        }
        assert!(
            Instant::now() < deadline && sent < 60_000,
            "no guard rollback after {sent} requests: {status:#}"
        );
        for client in &mut clients {
            let _ = client.get("app", "/").await;
            sent += 1;
        }
    }
    for node in &nodes.nodes {
        node.wait_for_status("blue everywhere", |s| active(s) == "blue")
            .await;
    }
    let rollback = history_json(&nodes.nodes[0])
        .into_iter()
        .find(|e| e["trigger"] == "guard" && e["action"] == "rollback")
        .expect("a guard rollback in the shared history");
    assert_eq!(rollback["node"], "node3", "{rollback:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreadable_decision_in_etcd_is_refused_and_takes_nothing_down() {
    let etcd = EtcdCluster::start(3);
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let nodes = start_nodes(2, &etcd, "/switchyard/garbage", &blue, &green);
    wait_connected(&nodes).await;
    let mut client = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .unwrap();
    client
        .put("/switchyard/garbage/routes/app", "{not json", None)
        .await
        .unwrap();

    // Both nodes stay connected, on the decision they had, and serve it.
    for node in &nodes.nodes {
        node.wait_for_status_within(Duration::from_secs(5), "still connected on blue", |s| {
            cluster_of(s)["connected"] == true && active(s) == "blue"
        })
        .await;
        wait_serving(node, "blue", Duration::from_secs(5)).await;
    }
    // A command on the route says what is wrong instead of overwriting it.
    let out = cli_in(&nodes.nodes[0], &["switch", "app", "green"]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("unreadable"), "{said}");
    let status = tokio::task::block_in_place(|| nodes.nodes[0].status());
    assert_eq!(active(&status), "blue");

    // Deleting the bad value lets the next command write a good one.
    client
        .delete("/switchyard/garbage/routes/app", None)
        .await
        .unwrap();
    let out = cli_in(&nodes.nodes[0], &["switch", "app", "green"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    nodes.nodes[1]
        .wait_for_status("green on the other node", |s| active(s) == "green")
        .await;
}
