//! Upstream connections are pooled per route and slot, and kept across
//! everything that does not change where a route sends its traffic: a
//! backend of another route going down and up, a canary weight, a reload
//! that edits another route. A switch still never sends a request down a
//! connection pooled before it.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};

use switchyard_tests::wire::recording_backend;
use switchyard_tests::{config_text, Backend, Client, Proxy};

/// `app` on two recording backends; `other` on two plain ones, probed
/// every 100 ms so that its blue backend can be made to flap quickly.
fn routes(app_blue: &str, app_green: &str, other: &[&Backend; 2], other_retries: u32) -> String {
    format!(
        "[[route]]\nname = \"app\"\nactive = \"blue\"\nhosts = [\"app.test\"]\n\
         [route.slots]\nblue = [\"{app_blue}\"]\ngreen = [\"{app_green}\"]\n\n\
         [[route]]\nname = \"other\"\nactive = \"blue\"\nhosts = [\"other.test\"]\nretries = {other_retries}\n\
         [route.slots]\nblue = [\"{}\"]\ngreen = [\"{}\"]\n\
         [route.health]\npath = \"/health\"\ninterval = \"100ms\"\nrise = 1\nfall = 1\n",
        other[0].addr, other[1].addr
    )
}

fn backend_state(status: &serde_json::Value, route: &str) -> String {
    let route = status["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == route)
        .unwrap();
    route["slots"][0]["backends"][0]["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pooled_connections_survive_unrelated_changes_but_not_a_switch() {
    let (app_blue, app_blue_seen) = recording_backend().await;
    let (app_green, _) = recording_backend().await;
    let other_blue = Backend::start("other-blue").await;
    let other_green = Backend::start("other-green").await;
    let (blue, green) = (app_blue.addr.to_string(), app_green.addr.to_string());
    let others = [&other_blue, &other_green];
    let dir = tempfile::tempdir().unwrap();
    // One data-plane thread: with two, a run once saw a second upstream
    // connection although no pool key had changed (most likely a request
    // accepted on the other worker thread, which does not reuse what the
    // first one pooled).
    let config = dir.path().join("switchyard.toml");
    let text =
        config_text(&routes(&blue, &green, &others, 2)).replace("threads = 2", "threads = 1");
    std::fs::write(&config, text).unwrap();
    let proxy = Proxy::start_with_file(dir.path(), &config);
    proxy
        .wait_for_status("other's blue backend healthy", |s| {
            backend_state(s, "other") == "healthy"
        })
        .await;

    // Each request on a new client connection: only the proxy's upstream
    // pool can put two of them on one backend connection.
    let request = || async {
        let reply = Client::new(proxy.addr).get("app.test", "/").await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
    };
    let connections_used = || -> BTreeSet<usize> {
        let seen = app_blue_seen.lock().unwrap();
        seen.requests.iter().map(|(conn, _)| *conn).collect()
    };
    request().await;
    assert_eq!(connections_used().len(), 1);

    // Another route's backend goes down and comes back: two publishes.
    let generation = proxy.generation();
    other_blue.healthy.store(false, Ordering::Relaxed);
    proxy
        .wait_for_status("other's blue backend down", |s| {
            backend_state(s, "other") == "unhealthy"
        })
        .await;
    other_blue.healthy.store(true, Ordering::Relaxed);
    proxy
        .wait_for_status("other's blue backend back", |s| {
            backend_state(s, "other") == "healthy"
        })
        .await;
    assert!(
        proxy.generation() > generation,
        "health changes were published"
    );
    request().await;

    // Canary weights on this route (on and off again, so that no request
    // goes to green), then a reload that edits the other route.
    for weight in ["50", "0"] {
        tokio::task::block_in_place(|| proxy.cli_ok(&["canary", "app", "green", weight]));
    }
    let reloads = proxy.reloads();
    let edited =
        config_text(&routes(&blue, &green, &others, 3)).replace("threads = 2", "threads = 1");
    proxy.write_config_text(&edited);
    proxy
        .wait_for_status("the edit of other applied", |s| {
            s["config"]["reloads"].as_u64() > Some(reloads)
        })
        .await;
    request().await;
    assert_eq!(
        connections_used().len(),
        1,
        "every request so far went down the first pooled connection"
    );

    // A switch away and back: the connection pooled before it is not used.
    for slot in ["green", "blue"] {
        tokio::task::block_in_place(|| proxy.cli_ok(&["switch", "app", slot, "--force"]));
    }
    let before = connections_used();
    request().await;
    let after = connections_used();
    assert_eq!(after.len(), 2, "a new connection after the switch");
    assert!(after.is_superset(&before));
    drop(app_green);
}

/// The proxy with one data-plane thread (so every request sees one pool)
/// and one route to `backend`.
fn one_worker_proxy(backend: std::net::SocketAddr) -> (Proxy, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchyard.toml");
    let routes = format!(
        "[[route]]\nname = \"app\"\nactive = \"blue\"\n[route.slots]\nblue = [\"{backend}\"]\n"
    );
    let text = config_text(&routes).replace("threads = 2", "threads = 1");
    std::fs::write(&config, text).unwrap();
    (Proxy::start_with_file(dir.path(), &config), dir)
}

/// A backend that closes a connection after `idle` without a request (as
/// Node's 5 s keep-alive timeout does), answering each request with its
/// body; it counts the connections that carried a request, and those of
/// them it closed (the health checks' bare connects are not counted).
async fn closing_backend(
    idle: std::time::Duration,
) -> (
    switchyard_tests::raw::ScriptedBackend,
    std::sync::Arc<(AtomicU64, AtomicU64)>,
) {
    use switchyard_tests::wire::Conn;
    use tokio::io::AsyncWriteExt;
    let counts = std::sync::Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let seen = counts.clone();
    let backend = switchyard_tests::raw::ScriptedBackend::start(move |stream| {
        let seen = seen.clone();
        async move {
            let mut conn = Conn::new(stream);
            let mut served = false;
            while let Ok(Ok(request)) = tokio::time::timeout(idle, conn.read_message(false)).await {
                if !std::mem::replace(&mut served, true) {
                    seen.0.fetch_add(1, Ordering::SeqCst);
                }
                let mut response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                    request.body.len()
                )
                .into_bytes();
                response.extend_from_slice(&request.body);
                if conn.stream.write_all(&response).await.is_err() {
                    break;
                }
            }
            drop(conn);
            if served {
                seen.1.fetch_add(1, Ordering::SeqCst);
            }
        }
    })
    .await;
    (backend, counts)
}

/// Our pool notices a backend that closed an idle connection before a
/// request is written to it, so even a POST (which may not be sent twice)
/// right after the close gets through: 0 errors. Requests close together
/// share one connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_the_backend_closed_while_idle_is_not_used_again() {
    let (backend, counts) = closing_backend(std::time::Duration::from_secs(1)).await;
    let (proxy, _dir) = one_worker_proxy(backend.addr);
    let mut client = Client::new(proxy.addr);
    for round in 1..=3u64 {
        for i in 0..5 {
            let body = format!("round {round} request {i}");
            let reply = client
                .send(
                    "POST",
                    "x",
                    "/orders",
                    &[],
                    bytes::Bytes::from(body.clone()),
                )
                .await
                .unwrap();
            assert_eq!((reply.status, reply.body.as_str()), (200, body.as_str()));
        }
        assert_eq!(
            counts.0.load(Ordering::SeqCst),
            round,
            "one connection a round"
        );
        // The backend times the idle connection out; the next request
        // follows right behind its close.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while counts.1.load(Ordering::SeqCst) < round {
            assert!(
                std::time::Instant::now() < deadline,
                "the backend never closed"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
}

/// An idle connection its backend closed is closed by the proxy too, even
/// when no request comes to take it: the pool's sweep leaves no socket
/// half-open. The backend half-closes after its idle timeout and waits for
/// the proxy's end of the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_connection_closed_by_its_backend_is_closed_without_further_traffic() {
    use switchyard_tests::wire::Conn;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (closed_tx, mut closed_rx) = tokio::sync::mpsc::unbounded_channel();
    let backend = switchyard_tests::raw::ScriptedBackend::start(move |stream| {
        let closed_tx = closed_tx.clone();
        async move {
            let mut conn = Conn::new(stream);
            let idle = std::time::Duration::from_millis(300);
            let mut served = false;
            while let Ok(Ok(request)) = tokio::time::timeout(idle, conn.read_message(false)).await {
                served = true;
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                    request.body.len()
                );
                if conn.stream.write_all(response.as_bytes()).await.is_err() {
                    return;
                }
            }
            if !served {
                return; // a health check's bare connect
            }
            let _ = conn.stream.shutdown().await;
            let started = std::time::Instant::now();
            let mut rest = Vec::new();
            let _ = conn.stream.read_to_end(&mut rest).await;
            let _ = closed_tx.send(started.elapsed());
        }
    })
    .await;
    let (proxy, _dir) = one_worker_proxy(backend.addr);
    let mut client = Client::new(proxy.addr);
    assert_eq!(client.get("x", "/").await.unwrap().status, 200);
    // The sweep runs every 5 s: the proxy's close follows within that.
    let waited = tokio::time::timeout(std::time::Duration::from_secs(15), closed_rx.recv())
        .await
        .expect("the proxy kept the closed connection open")
        .unwrap();
    assert!(
        waited <= std::time::Duration::from_secs(6),
        "closed after {waited:?}"
    );
}
