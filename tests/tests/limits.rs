//! Limits that keep hostile or broken clients cheap: a request head has a
//! total deadline from its first byte, a client that reads none of its
//! response is closed, and past `max_connections` new connections are
//! closed at accept while the open ones are served on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_tests::raw::ScriptedBackend;
use switchyard_tests::wire::Conn;
use switchyard_tests::{config_text, eventually, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(server_extra: &str, backend: std::net::SocketAddr) -> String {
    let text = config_text(&format!(
        "[[route]]\nname = \"app\"\nactive = \"only\"\n[route.slots]\nonly = [\"{backend}\"]\n"
    ));
    text.replacen("[server]\n", &format!("[server]\n{server_extra}"), 1)
}

fn start(dir: &std::path::Path, text: &str) -> Proxy {
    let path = dir.join("switchyard.toml");
    std::fs::write(&path, text).unwrap();
    Proxy::start_with_file(dir, &path)
}

/// Answers every request with `ok`.
async fn ok_backend() -> ScriptedBackend {
    ScriptedBackend::start(|stream: TcpStream| async move {
        let mut conn = Conn::new(stream);
        while conn.read_message(false).await.is_ok() {
            if conn
                .stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await
                .is_err()
            {
                return;
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_dripped_a_line_at_a_time_is_cut_off_at_header_timeout() {
    let backend = ok_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = start(
        dir.path(),
        &config(
            "header_timeout = \"1s\"\nkeepalive_timeout = \"20s\"\n",
            backend.addr,
        ),
    );

    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let started = Instant::now();
    // One header line every 200 ms for up to 10 s: each read is quick, the
    // head never ends.
    let mut cut_off = false;
    for i in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if stream
            .write_all(format!("X-Drip-{i}: 1\r\n").as_bytes())
            .await
            .is_err()
        {
            cut_off = true;
            break;
        }
        let mut byte = [0u8; 512];
        if let Ok(read) =
            tokio::time::timeout(Duration::from_millis(1), stream.read(&mut byte)).await
        {
            // A 408, a close or a reset: the proxy gave up on the head.
            let _ = read;
            cut_off = true;
            break;
        }
    }
    assert!(cut_off, "a head dripped for 10 s was never cut off");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cut off after {:?}, with header_timeout = 1s",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keep_alive_wait_is_not_part_of_the_head_deadline() {
    let backend = ok_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = start(
        dir.path(),
        &config(
            "header_timeout = \"1s\"\nkeepalive_timeout = \"20s\"\n",
            backend.addr,
        ),
    );

    let mut conn = Conn::connect(proxy.addr).await;
    for _ in 0..2 {
        conn.stream
            .write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(conn.read_message(false).await.unwrap().body, b"ok");
        // Idle past header_timeout, well inside keepalive_timeout: until a
        // head begun after this idle wait began has been cut off, so any
        // head deadline counted from the wait would have run out too.
        head_cut_off(proxy.addr).await;
    }
}

/// Starts a request head on a new connection, never ends it, and returns
/// once the proxy has given up on it at `header_timeout`.
async fn head_cut_off(proxy: std::net::SocketAddr) {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let mut rest = Vec::new();
    // A 408 then a close, or a reset: either ends the read.
    let ended = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "an unfinished head was never cut off");
    assert!(
        rest.is_empty() || rest.starts_with(b"HTTP/1.1 408"),
        "cut off for another reason than its deadline: {}",
        String::from_utf8_lossy(&rest)
    );
}

/// A backend that answers with far more than socket buffers hold — one
/// length-framed body, or many small chunks — and tells, through its flag,
/// when the proxy closed its connection mid-response.
async fn flooding_backend(chunked: bool) -> (ScriptedBackend, Arc<AtomicBool>) {
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 4096; // 256 MiB: more than any socket buffers hold
    let cut = Arc::new(AtomicBool::new(false));
    let backend = ScriptedBackend::start({
        let cut = cut.clone();
        move |stream: TcpStream| {
            let cut = cut.clone();
            async move {
                let mut conn = Conn::new(stream);
                if conn.read_message(false).await.is_err() {
                    return;
                }
                let head = if chunked {
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_string()
                } else {
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                        CHUNK * CHUNKS
                    )
                };
                if conn.stream.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk: Vec<u8> = if chunked {
                    // Small chunks: each goes to the client as a small write
                    // the proxy gathers before sending.
                    let one: Vec<u8> = [&b"100\r\n"[..], &[b'x'; 256], b"\r\n"].concat();
                    one.repeat(CHUNK / one.len())
                } else {
                    vec![b'x'; CHUNK]
                };
                for _ in 0..CHUNKS {
                    if conn.stream.write_all(&chunk).await.is_err() {
                        cut.store(true, Ordering::SeqCst);
                        return;
                    }
                }
            }
        }
    })
    .await;
    (backend, cut)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_nothing_of_its_response_is_closed_after_send_timeout() {
    const ALL: usize = 256 * 1024 * 1024;
    let (backend, cut) = flooding_backend(false).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = start(
        dir.path(),
        &config(
            "send_timeout = \"1s\"\nread_timeout = \"30s\"\n",
            backend.addr,
        ),
    );

    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET /big HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    // Read nothing until the proxy gave up on this client (send_timeout is
    // 1 s) and so dropped the exchange: the backend's writes fail. Then
    // read everything there is.
    eventually(
        Duration::from_secs(20),
        "the proxy to drop the response it could not send",
        || cut.load(Ordering::SeqCst),
    )
    .await;
    let mut total = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the connection stayed open ({total} bytes read)"
    );
    assert!(
        total < ALL,
        "the whole response arrived: the stalled client was never closed"
    );
}

/// The same client, sent small chunks: what the proxy gathered and could
/// not send is given up with the connection, so the request ends and a
/// stop does not wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_does_not_hold_its_request_open_after_send_timeout() {
    let (backend, cut) = flooding_backend(true).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = start(
        dir.path(),
        &config("send_timeout = \"1s\"\naccess_log = true\n", backend.addr),
    );
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET /chunks HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "the proxy to drop the response it could not send",
        || cut.load(Ordering::SeqCst),
    )
    .await;
    // Never read. The request must still end (its access log line is
    // written when it does), and then a stop has nothing to wait for.
    eventually(
        Duration::from_secs(10),
        "the stalled request to end and be logged",
        || proxy.log_text().contains("/chunks"),
    )
    .await;
    let status = tokio::task::block_in_place(|| proxy.terminate());
    assert!(status.success(), "exit status {status:?}");
    drop(stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_new_ones_are_closed_and_open_ones_served() {
    let backend = ok_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = start(dir.path(), &config("max_connections = 3\n", backend.addr));

    let mut open = Vec::new();
    for _ in 0..3 {
        let mut conn = Conn::connect(proxy.addr).await;
        conn.stream
            .write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(conn.read_message(false).await.unwrap().body, b"ok");
        open.push(conn);
    }
    let mut refused = Conn::connect(proxy.addr).await;
    let _ = refused
        .stream
        .write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await;
    assert!(
        refused.read_message(false).await.is_err(),
        "a fourth connection is closed unanswered"
    );
    for conn in &mut open {
        conn.stream
            .write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(conn.read_message(false).await.unwrap().body, b"ok");
    }
    // One closes: a new connection is served again once the proxy saw it go.
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut conn = Conn::connect(proxy.addr).await;
        let _ = conn
            .stream
            .write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
            .await;
        if let Ok(reply) = conn.read_message(false).await {
            assert_eq!(reply.body, b"ok");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no connection served after one closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_over_64_kib_is_refused_and_one_under_it_served() {
    let backend = ok_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = start(dir.path(), &config("", backend.addr));

    let mut conn = Conn::connect(proxy.addr).await;
    let big = "x".repeat(60 * 1024);
    let request = format!("GET / HTTP/1.1\r\nHost: app.test\r\nX-Big: {big}\r\n\r\n");
    conn.stream.write_all(request.as_bytes()).await.unwrap();
    assert_eq!(conn.read_message(false).await.unwrap().status(), 200);

    let mut conn = Conn::connect(proxy.addr).await;
    let too_big = "x".repeat(70 * 1024);
    let request = format!("GET / HTTP/1.1\r\nHost: app.test\r\nX-Big: {too_big}\r\n\r\n");
    // The proxy may stop reading once it has seen enough.
    let _ = conn.stream.write_all(request.as_bytes()).await;
    let response = conn.read_message(false).await.unwrap();
    assert_eq!(response.status(), 431);
    assert!(conn.closes().await);
}
