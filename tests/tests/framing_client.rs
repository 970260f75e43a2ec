//! The client's side of the HTTP/1 codec, through the real binary: a
//! pipeline of requests cut anywhere is read as the same requests, each
//! reaching the backend once; an HTTP/1.0 client gets only what HTTP/1.0
//! can read; a `100 Continue` passes and the connection carries on.

use std::net::SocketAddr;

use switchyard_tests::raw::ScriptedBackend;
use switchyard_tests::wire::{recording_backend, Conn, SPLIT_PAUSE};
use switchyard_tests::Proxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn route(backend: SocketAddr) -> String {
    format!("[[route]]\nname = \"app\"\nactive = \"only\"\n[route.slots]\nonly = [\"{backend}\"]\n")
}

/// Four requests in one write — a leading empty line, a chunked body with
/// an extension and a trailer, a length-framed body that looks like a
/// request, and a last one that asks to close — cut in two at every byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_cut_at_every_byte_is_read_as_the_same_requests() {
    let (backend, seen) = recording_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &route(backend.addr));

    let pipeline: &[u8] = b"\r\nGET /p/1 HTTP/1.1\r\nHost: app.test\r\n\r\n\
POST /p/2 HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n3;x=\"a;b\"\r\ntwo\r\n0\r\nX-T: 1\r\n\r\n\
PUT /p/3 HTTP/1.1\r\nHost: app.test\r\nContent-Length: 24\r\n\r\nGET /smuggled HTTP/1.1\r\n\
GET /p/4 HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n";
    let expected: [&[u8]; 4] = [b"", b"two", b"GET /smuggled HTTP/1.1\r\n", b""];
    for split in 1..pipeline.len() {
        let mut conn = Conn::connect(proxy.addr).await;
        conn.write_parts(&[&pipeline[..split], &pipeline[split..]], SPLIT_PAUSE)
            .await
            .unwrap();
        for (i, body) in expected.iter().enumerate() {
            let response = conn
                .read_message(false)
                .await
                .unwrap_or_else(|e| panic!("split at {split}, response {}: {e}", i + 1));
            assert_eq!(
                response.status(),
                200,
                "split at {split}, response {}",
                i + 1
            );
            assert_eq!(
                &response.body[..],
                *body,
                "split at {split}, response {}",
                i + 1
            );
            let connection = if i == 3 { "close" } else { "keep-alive" };
            assert_eq!(response.header("connection"), Some(connection));
        }
        assert!(
            conn.closes().await,
            "split at {split}: not closed after close"
        );
    }

    let seen = seen.lock().unwrap();
    assert!(seen.bad_framing.is_empty(), "{:?}", seen.bad_framing);
    let cuts = pipeline.len() - 1;
    assert_eq!(
        seen.requests.len(),
        4 * cuts,
        "each request once, nothing else"
    );
    for (i, (_, request)) in seen.requests.iter().enumerate() {
        let n = i % 4;
        assert_eq!(request.target(), format!("/p/{}", n + 1), "request {i}");
        assert_eq!(&request.body[..], expected[n], "request {i}");
    }
    // Request trailers are dropped, as nginx drops them: they never reach
    // the backend, as trailers or as anything else.
    assert!(seen
        .requests
        .iter()
        .all(|(_, r)| r.trailers.is_empty() && r.headers.iter().all(|(name, _)| name != "x-t")));
}

/// Answers `/chunked` with a chunked body, anything else with a length,
/// adding its own `Date` and `Connection` headers.
async fn chunking_backend() -> ScriptedBackend {
    ScriptedBackend::start(|stream: TcpStream| async move {
        let mut conn = Conn::new(stream);
        while let Ok(request) = conn.read_message(false).await {
            let response: &[u8] = if request.target() == "/chunked" {
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\n\r\nok"
            };
            if conn.stream.write_all(response).await.is_err() {
                return;
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http10_client_gets_what_http10_can_read() {
    let backend = chunking_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &route(backend.addr));

    // HTTP/1.0 without keep-alive: answered, told close, and closed.
    let mut conn = Conn::connect(proxy.addr).await;
    conn.stream
        .write_all(b"GET /plain HTTP/1.0\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    let response = conn.read_message(false).await.unwrap();
    assert_eq!(response.body, b"ok");
    assert_eq!(response.header("connection"), Some("close"));
    assert!(conn.closes().await);

    // HTTP/1.0 that asks for keep-alive keeps its connection.
    let mut conn = Conn::connect(proxy.addr).await;
    for _ in 0..2 {
        conn.stream
            .write_all(b"GET /plain HTTP/1.0\r\nHost: app.test\r\nConnection: keep-alive\r\n\r\n")
            .await
            .unwrap();
        let response = conn.read_message(false).await.unwrap();
        assert_eq!(response.body, b"ok");
        assert_eq!(response.header("connection"), Some("keep-alive"));
        // Ours, not the backend's: one Date, one Connection.
        assert_eq!(response.header_count("date"), 1);
        assert_eq!(response.header_count("connection"), 1);
        assert_ne!(
            response.header("date"),
            Some("Thu, 01 Jan 1970 00:00:00 GMT")
        );
    }

    // A chunked answer reaches HTTP/1.0 as its plain bytes, ended by the
    // close: HTTP/1.0 has no chunked coding.
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET /chunked HTTP/1.0\r\nHost: app.test\r\nConnection: keep-alive\r\n\r\n")
        .await
        .unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut all),
    )
    .await
    .expect("the proxy closes after a body that ends with the connection")
    .unwrap();
    let text = String::from_utf8(all).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(!lower.contains("transfer-encoding"), "{head}");
    assert!(!lower.contains("content-length"), "{head}");
    assert!(lower.contains("connection: close"), "{head}");
    assert_eq!(body, "hello world");

    // HTTP/1.1 gets the chunked body as chunked, and keeps its connection.
    let mut conn = Conn::connect(proxy.addr).await;
    for _ in 0..2 {
        conn.stream
            .write_all(b"GET /chunked HTTP/1.1\r\nHost: app.test\r\n\r\n")
            .await
            .unwrap();
        let response = conn.read_message(false).await.unwrap();
        assert_eq!(response.body, b"hello world");
        assert_eq!(response.header("transfer-encoding"), Some("chunked"));
    }
}

/// Answers `Expect: 100-continue` with a 100 (even when the body came
/// with the head), then reads the body and echoes it.
async fn continuing_backend() -> ScriptedBackend {
    ScriptedBackend::start(|mut stream: TcpStream| async move {
        let mut buf = Vec::new();
        loop {
            let mut chunk = [0u8; 4096];
            let Ok(n) = stream.read(&mut chunk).await else {
                return;
            };
            if n == 0 {
                return;
            }
            buf.extend_from_slice(&chunk[..n]);
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.trim().parse().unwrap());
            if head.contains("expect: 100-continue") {
                let _ = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
            }
            while buf.len() < end + 4 + length {
                let Ok(n) = stream.read(&mut chunk).await else {
                    return;
                };
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf[end + 4..end + 4 + length].to_vec();
            buf.drain(..end + 4 + length);
            let mut response =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
            response.extend_from_slice(&body);
            if stream.write_all(&response).await.is_err() {
                return;
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_continue_passes_and_the_connection_carries_on() {
    let backend = continuing_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &route(backend.addr));

    let mut conn = Conn::connect(proxy.addr).await;
    for round in 0..3 {
        conn.stream
            .write_all(
                b"PUT /upload HTTP/1.1\r\nHost: app.test\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
            )
            .await
            .unwrap();
        let interim = conn.read_message(false).await.unwrap();
        assert_eq!(interim.status(), 100, "round {round}");
        conn.stream.write_all(b"hello").await.unwrap();
        let response = conn.read_message(false).await.unwrap();
        assert_eq!(response.status(), 200, "round {round}");
        assert_eq!(response.body, b"hello", "round {round}");
        assert_eq!(response.header("connection"), Some("keep-alive"));
    }
}

/// `CONNECT` asks for a tunnel, which a reverse proxy does not open: 405,
/// the connection closed, and the backend sees nothing. An HTTP/1.0 client
/// is not sent the backend's `100 Continue` (it would take it for the
/// answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_is_refused_and_http10_gets_no_interim_answer() {
    let (backend, seen) = recording_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &route(backend.addr));
    let mut conn = Conn::connect(proxy.addr).await;
    conn.stream
        .write_all(
            b"CONNECT app.test:443 HTTP/1.1\r\nHost: app.test:443\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        )
        .await
        .unwrap();
    let response = conn.read_message(false).await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.header("connection"), Some("close"));
    assert!(conn.closes().await);
    assert!(seen.lock().unwrap().requests.is_empty());
    drop(backend);

    let backend = continuing_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &route(backend.addr));
    let mut conn = Conn::connect(proxy.addr).await;
    conn.stream
        .write_all(b"PUT /upload HTTP/1.0\r\nHost: app.test\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello")
        .await
        .unwrap();
    let response = conn.read_message(false).await.unwrap();
    assert_eq!(
        response.status(),
        200,
        "the first thing it reads is the answer"
    );
    assert_eq!(response.body, b"hello");
}

/// A body of known length that the backend sends in pieces, waiting
/// between them: each piece reaches the client before the next is sent
/// (the backend waits for the client to have it), as nginx passes them on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_of_known_length_reaches_the_client_piece_by_piece() {
    let (client_has_it, got) = std::sync::mpsc::channel::<()>();
    let got = std::sync::Arc::new(std::sync::Mutex::new(got));
    let backend = ScriptedBackend::start(move |stream: TcpStream| {
        let got = got.clone();
        async move {
            let mut conn = Conn::new(stream);
            if conn.read_message(false).await.is_err() {
                return;
            }
            let pieces: [&[u8]; 3] = [b"first ", b"second ", b"third"];
            let head = "HTTP/1.1 200 OK\r\nContent-Length: 18\r\n\r\n";
            if conn.stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            for piece in pieces {
                if conn.stream.write_all(piece).await.is_err() {
                    return;
                }
                let got = got.clone();
                let seen = tokio::task::spawn_blocking(move || {
                    got.lock()
                        .unwrap()
                        .recv_timeout(std::time::Duration::from_secs(10))
                })
                .await
                .unwrap();
                if seen.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &route(backend.addr));
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET /slowly HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    let mut received = Vec::new();
    for expected in ["first ", "first second ", "first second third"] {
        let wanted_body = expected.as_bytes();
        let arrived = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            loop {
                let body_at = received
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .map(|p| p + 4);
                if body_at.is_some_and(|at| {
                    received[at..].ends_with(wanted_body)
                        && received.len() - at == wanted_body.len()
                }) {
                    return;
                }
                let mut buf = [0u8; 1024];
                let n = stream.read(&mut buf).await.unwrap();
                assert!(
                    n > 0,
                    "closed early: {}",
                    String::from_utf8_lossy(&received)
                );
                received.extend_from_slice(&buf[..n]);
            }
        })
        .await;
        assert!(
            arrived.is_ok(),
            "{expected:?} did not reach the client while the backend waited: got {:?}",
            String::from_utf8_lossy(&received)
        );
        client_has_it.send(()).unwrap();
    }
}
