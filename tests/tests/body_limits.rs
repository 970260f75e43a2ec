//! `max_body_size` and `max_header_size` through the real binary: a body
//! declared too long is refused before the backend sees a byte of it, a
//! chunked one is cut where it passes the limit, the limit itself passes,
//! a route's own limit wins over `[server]`'s, and a client that sends
//! its whole refused upload before reading still gets its `413`.

use std::net::SocketAddr;
use std::time::Duration;

use switchyard_tests::wire::{encode_chunked, recording_backend, Conn};
use switchyard_tests::{config_text, Proxy};
use tokio::io::AsyncWriteExt;

fn config(server_extra: &str, route_extra: &str, backend: SocketAddr) -> String {
    let text = config_text(&format!(
        "[[route]]\nname = \"app\"\nactive = \"only\"\n{route_extra}[route.slots]\nonly = [\"{backend}\"]\n"
    ));
    text.replacen("[server]\n", &format!("[server]\n{server_extra}"), 1)
}

fn start(dir: &std::path::Path, text: &str) -> Proxy {
    let path = dir.join("switchyard.toml");
    std::fs::write(&path, text).unwrap();
    Proxy::start_with_file(dir, &path)
}

fn post_with_length(body: &[u8], extra: &str) -> Vec<u8> {
    let mut request = format!(
        "POST /up HTTP/1.1\r\nHost: app.test\r\nContent-Length: {}\r\n{extra}\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

fn post_chunked(body: &[u8], chunk: usize) -> Vec<u8> {
    let sizes: Vec<usize> = body.chunks(chunk).map(<[u8]>::len).collect();
    let mut request =
        b"POST /up HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    request.extend_from_slice(&encode_chunked(body, &sizes, "", ""));
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_length_over_the_limit_is_refused_before_the_backend_sees_it() {
    let (backend, seen) = recording_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = start(
        dir.path(),
        &config("max_body_size = 100\n", "", backend.addr),
    );

    // The limit itself passes, whole.
    let body = vec![b'a'; 100];
    let mut conn = Conn::connect(proxy.addr).await;
    conn.stream
        .write_all(&post_with_length(&body, ""))
        .await
        .unwrap();
    let response = conn.read_message(false).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.body, body);

    // One byte more: 413, and the connection closes (the body was not read).
    let mut conn = Conn::connect(proxy.addr).await;
    conn.stream
        .write_all(&post_with_length(&[b'b'; 101], ""))
        .await
        .unwrap();
    let response = conn.read_message(false).await.unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(response.header("connection"), Some("close"));
    assert!(String::from_utf8_lossy(&response.body).contains("too large"));
    assert!(conn.closes().await);

    // With `Expect: 100-continue` the client is refused without being
    // asked for the body: the first answer is the 413.
    let mut conn = Conn::connect(proxy.addr).await;
    conn.stream
        .write_all(b"POST /up HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(conn.read_message(false).await.unwrap().status(), 413);
    assert!(conn.closes().await);

    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.requests.len(),
        1,
        "only the request at the limit went up"
    );
    assert!(seen.bad_framing.is_empty(), "{:?}", seen.bad_framing);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_is_cut_where_it_passes_the_limit() {
    let (backend, seen) = recording_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = start(
        dir.path(),
        &config("max_body_size = 100\n", "", backend.addr),
    );

    // Exactly the limit, in chunks of 7: passes.
    let body: Vec<u8> = (0..100u8).collect();
    let mut conn = Conn::connect(proxy.addr).await;
    conn.stream
        .write_all(&post_chunked(&body, 7))
        .await
        .unwrap();
    let response = conn.read_message(false).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.body, body);

    // 150 bytes in chunks of 10: the backend (which answers only once a
    // body is whole) never gets a whole request; the client gets 413.
    let body = vec![b'c'; 150];
    let mut conn = Conn::connect(proxy.addr).await;
    conn.stream
        .write_all(&post_chunked(&body, 10))
        .await
        .unwrap();
    let response = conn.read_message(false).await.unwrap();
    assert_eq!(response.status(), 413);
    assert!(conn.closes().await);

    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.requests.len(),
        1,
        "the cut request never arrived whole"
    );
    assert_eq!(seen.requests[0].1.body.len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routes_own_limit_wins_over_the_servers_and_no_limit_is_the_default() {
    let (backend, _seen) = recording_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = start(
        dir.path(),
        &config(
            "max_body_size = 100\n",
            "max_body_size = \"1K\"\n",
            backend.addr,
        ),
    );
    let mut conn = Conn::connect(proxy.addr).await;
    conn.stream
        .write_all(&post_with_length(&[b'd'; 1024], ""))
        .await
        .unwrap();
    assert_eq!(conn.read_message(false).await.unwrap().status(), 200);
    conn.stream
        .write_all(&post_with_length(&[b'd'; 1025], ""))
        .await
        .unwrap();
    assert_eq!(conn.read_message(false).await.unwrap().status(), 413);
    // Closing ends the proxy's wait for the rest of the refused body.
    drop(conn);
    drop(proxy);

    let dir = tempfile::tempdir().unwrap();
    let proxy = start(dir.path(), &config("", "", backend.addr));
    let big = vec![b'e'; 3 * 1024 * 1024];
    let mut conn = Conn::connect(proxy.addr).await;
    // The backend answers once it has the whole body: writing it all
    // before reading cannot stall.
    conn.stream
        .write_all(&post_with_length(&big, ""))
        .await
        .unwrap();
    let response = conn.read_message(false).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.body.len(), big.len());
}

/// A client that writes its whole upload before it reads (as curl and most
/// libraries do) must still read the 413: were the proxy to close with the
/// upload unread, its kernel would reset the connection under the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_its_whole_refused_upload_first_still_reads_the_413() {
    let (backend, seen) = recording_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = start(
        dir.path(),
        &config("max_body_size = \"1K\"\n", "", backend.addr),
    );
    for _ in 0..3 {
        let mut conn = Conn::connect(proxy.addr).await;
        // More than loopback's socket buffers hold: the client is still
        // writing when the answer comes.
        let request = post_with_length(&vec![b'f'; 32 * 1024 * 1024], "");
        tokio::time::timeout(Duration::from_secs(10), conn.stream.write_all(&request))
            .await
            .expect("the upload is read (and dropped) while the client sends it")
            .expect("the proxy does not reset a client still sending");
        assert_eq!(conn.read_message(false).await.unwrap().status(), 413);
        assert!(conn.closes().await);
    }
    assert!(seen.lock().unwrap().requests.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_header_size_sets_the_largest_head_taken() {
    let (backend, _seen) = recording_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = start(
        dir.path(),
        &config("max_header_size = \"2K\"\n", "", backend.addr),
    );
    let head = |filler: usize| {
        format!(
            "GET / HTTP/1.1\r\nHost: app.test\r\nX-Fill: {}\r\n\r\n",
            "x".repeat(filler)
        )
    };
    let mut conn = Conn::connect(proxy.addr).await;
    conn.stream.write_all(head(1800).as_bytes()).await.unwrap();
    assert_eq!(conn.read_message(false).await.unwrap().status(), 200);

    let mut conn = Conn::connect(proxy.addr).await;
    let _ = conn.stream.write_all(head(2100).as_bytes()).await;
    assert_eq!(conn.read_message(false).await.unwrap().status(), 431);
    assert!(conn.closes().await);
}
