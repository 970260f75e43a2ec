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

/// A request no route takes gets the 404 page of a route its host leads to
/// (whatever that route's path prefix), else `[server] error_pages`' 404,
/// else switchyard's own short text; server pages also stand in for a
/// route's missing 502. The server's pages follow config edits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn not_found_pages_come_from_the_hosts_route_then_the_server() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    for (file, text) in [
        ("shop-404.html", "<h1>No such shop page</h1>\n"),
        ("404.html", "<h1>Nothing here</h1>\n"),
        ("502.html", "<h1>Down for a moment</h1>\n"),
        ("404-new.html", "<h1>Still nothing here</h1>\n"),
    ] {
        std::fs::write(dir.path().join(file), text).unwrap();
    }
    let routes = format!(
        "[[route]]\nname = \"shop\"\nhosts = [\"shop.example\"]\npath_prefix = \"/shop\"\nactive = \"blue\"\n\
         error_pages = {{ 404 = \"shop-404.html\" }}\n[route.slots]\nblue = [\"{dead}\"]\n"
    );
    let server_pages = |page: &str| {
        switchyard_tests::config_text(&routes).replacen(
            "threads = 2\n",
            &format!("threads = 2\nerror_pages = {{ 404 = \"{page}\", 502 = \"502.html\" }}\n"),
            1,
        )
    };
    let config = dir.path().join("switchyard.toml");
    std::fs::write(&config, switchyard_tests::config_text(&routes)).unwrap();
    let proxy = Proxy::start_with_file(dir.path(), &config);
    let mut client = Client::new(proxy.addr);

    let reply = client.get("shop.example", "/elsewhere").await.unwrap();
    assert_eq!(reply.status, 404);
    assert_eq!(reply.body, "<h1>No such shop page</h1>\n");
    let reply = client.get("other.example", "/").await.unwrap();
    assert_eq!(reply.status, 404);
    assert_eq!(reply.body, "switchyard: no route for this host and path\n");

    proxy.write_config_text(&server_pages("404.html"));
    tokio::task::block_in_place(|| proxy.cli_ok(&["reload"]));
    let reply = client.get("other.example", "/").await.unwrap();
    assert_eq!(reply.status, 404);
    assert_eq!(reply.body, "<h1>Nothing here</h1>\n");
    assert!(reply.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let reply = client.get("shop.example", "/elsewhere").await.unwrap();
    assert_eq!(reply.body, "<h1>No such shop page</h1>\n");
    let reply = client.get("shop.example", "/shop").await.unwrap();
    assert_eq!(reply.status, 502);
    assert_eq!(reply.body, "<h1>Down for a moment</h1>\n");
    let json = [("accept", "application/json")];
    let reply = client
        .send("GET", "other.example", "/", &json, bytes::Bytes::new())
        .await
        .unwrap();
    assert_eq!(reply.body, "{\"status\":404,\"error\":\"Not Found\"}\n");

    proxy.write_config_text(&server_pages("404-new.html"));
    tokio::task::block_in_place(|| proxy.cli_ok(&["reload"]));
    let reply = client.get("other.example", "/").await.unwrap();
    assert_eq!(reply.body, "<h1>Still nothing here</h1>\n");
}
