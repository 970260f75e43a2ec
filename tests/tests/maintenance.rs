//! `switchyard maintenance ROUTE on|off`: users get 503 with a page and
//! `Retry-After`, a tester's override still reaches the slots, health
//! probes go on, and the decision survives a restart.

use switchyard_tests::{Backend, Client, Proxy};

fn route(blue: &Backend, green: &Backend) -> String {
    format!(
        "[[route]]\nname = \"app\"\nactive = \"blue\"\n[route.slots]\nblue = [\"{}\"]\ngreen = [\"{}\"]\n\
         [route.preview]\noverride_token = \"s3cret\"\n",
        blue.addr, green.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn maintenance_answers_503_lets_overrides_through_and_survives_a_restart() {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    let routes = route(&blue, &green);
    let proxy = Proxy::start(dir.path(), &routes);
    let out = tokio::task::block_in_place(|| {
        proxy.cli_ok(&["maintenance", "app", "on", "--reason", "db migration"])
    });
    assert!(out.contains("app"), "{out}");

    let mut client = Client::new(proxy.addr);
    let reply = client.get("x", "/").await.unwrap();
    assert_eq!(reply.status, 503);
    assert_eq!(reply.headers["retry-after"], "60");
    assert!(reply.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(
        reply.body.contains("Down for maintenance"),
        "{}",
        reply.body
    );
    assert_eq!(reply.slot, None, "no backend was asked");

    // A tester behind the page: the override still reaches a slot.
    let headers = [
        ("x-switchyard-slot", "green"),
        ("x-switchyard-token", "s3cret"),
    ];
    let through = client
        .send("GET", "x", "/", &headers, bytes::Bytes::new())
        .await
        .unwrap();
    assert_eq!(
        (through.status, through.slot.as_deref()),
        (200, Some("green"))
    );

    let human = tokio::task::block_in_place(|| proxy.cli_ok(&["status"]));
    assert!(
        human.contains("MAINTENANCE (503 to users): db migration"),
        "{human}"
    );
    let history = tokio::task::block_in_place(|| proxy.cli_ok(&["history", "app"]));
    assert!(history.contains("maintenance on"), "{history}");

    let stopped = tokio::task::block_in_place(|| proxy.terminate());
    assert!(stopped.success());
    let restarted = Proxy::start(dir.path(), &routes);
    let mut client = Client::new(restarted.addr);
    assert_eq!(
        client.get("x", "/").await.unwrap().status,
        503,
        "kept across the restart"
    );
    tokio::task::block_in_place(|| restarted.cli_ok(&["maintenance", "app", "off"]));
    let reply = client.get("x", "/").await.unwrap();
    assert_eq!((reply.status, reply.slot.as_deref()), (200, Some("blue")));
}

/// A route's own pages for switchyard's answers: a dead backend's 502 and
/// the maintenance 503 come as the route's HTML, and as JSON to a client
/// that asks for JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_routes_error_pages_replace_switchyards_own_answers() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("502.html"),
        "<h1>Our app is restarting</h1>\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("503.html"),
        "<h1>Planned work tonight</h1>\n",
    )
    .unwrap();
    let routes = format!(
        "[[route]]\nname = \"app\"\nactive = \"blue\"\nerror_pages = {{ 502 = \"502.html\", 503 = \"503.html\" }}\n\
         [route.slots]\nblue = [\"{dead}\"]\ngreen = [\"{dead}\"]\n"
    );
    let proxy = Proxy::start(dir.path(), &routes);
    let mut client = Client::new(proxy.addr);
    let reply = client.get("x", "/").await.unwrap();
    assert_eq!(reply.status, 502);
    assert_eq!(reply.body, "<h1>Our app is restarting</h1>\n");
    assert!(reply.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));

    let json = [("accept", "application/json")];
    let reply = client
        .send("GET", "x", "/", &json, bytes::Bytes::new())
        .await
        .unwrap();
    assert_eq!(reply.status, 502);
    assert_eq!(reply.headers["content-type"], "application/json");
    assert_eq!(reply.body, "{\"status\":502,\"error\":\"Bad Gateway\"}\n");

    tokio::task::block_in_place(|| proxy.cli_ok(&["maintenance", "app", "on"]));
    let reply = client.get("x", "/").await.unwrap();
    assert_eq!(reply.status, 503);
    assert_eq!(reply.body, "<h1>Planned work tonight</h1>\n");
    assert_eq!(reply.headers["retry-after"], "60");
}
