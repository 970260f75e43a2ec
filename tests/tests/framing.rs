//! Framing through the real binary, the way a slow network and an attacker
//! would send it: every byte of a body arrives exactly once, in order, with
//! the same framing meaning, wherever the TCP reads end — in a chunk-size
//! line, in a chunk's CRLF, in an extension, a trailer or the last chunk.
//! Both directions are checked against `switchyard_tests::wire`, a strict
//! reader written apart from the proxy. A body the proxy cannot frame gets
//! `400` and never reaches a backend as a whole request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use switchyard_tests::raw::ScriptedBackend;
use switchyard_tests::wire::{
    digest, encode_chunked, recording_backend, tricky_chunked_bodies, Conn, Message, Rng,
    SPLIT_PAUSE,
};
use switchyard_tests::Proxy;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn route(backend: SocketAddr) -> String {
    format!("[[route]]\nname = \"app\"\nactive = \"only\"\n[route.slots]\nonly = [\"{backend}\"]\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_arrive_exactly_at_every_split_position() {
    let (backend, seen) = recording_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &route(backend.addr));

    let mut sent = 0;
    for (case, (body, encoded)) in tricky_chunked_bodies().into_iter().enumerate() {
        let mut request = format!(
            "POST /case/{case} HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .into_bytes();
        request.extend_from_slice(&encoded);
        for split in 1..request.len() {
            let mut conn = Conn::connect(proxy.addr).await;
            conn.write_parts(&[&request[..split], &request[split..]], SPLIT_PAUSE)
                .await
                .unwrap();
            let response = conn
                .read_message(false)
                .await
                .unwrap_or_else(|e| panic!("case {case}, split at {split}: {e}"));
            assert_eq!(response.status(), 200, "case {case}, split at {split}");
            assert_eq!(
                response.body,
                body,
                "case {case}, split at {split}: the backend got {:?}",
                String::from_utf8_lossy(&response.body)
            );
            sent += 1;
        }
    }
    // A Content-Length body too, split everywhere.
    let request =
        b"PUT /length HTTP/1.1\r\nHost: app.test\r\nContent-Length: 11\r\n\r\n0\r\n\r\nGET /x"
            .to_vec();
    for split in 1..request.len() {
        let mut conn = Conn::connect(proxy.addr).await;
        conn.write_parts(&[&request[..split], &request[split..]], SPLIT_PAUSE)
            .await
            .unwrap();
        let response = conn.read_message(false).await.unwrap();
        assert_eq!(response.body, b"0\r\n\r\nGET /x", "split at {split}");
        sent += 1;
    }

    let seen = seen.lock().unwrap();
    assert!(seen.bad_framing.is_empty(), "{:?}", seen.bad_framing);
    assert_eq!(
        seen.requests.len(),
        sent,
        "each request reached the backend exactly once, and nothing else did: {:?}",
        seen.requests
            .iter()
            .map(|(_, r)| r.first_line.as_str())
            .filter(|l| l.contains("smuggled") || l.contains("/x "))
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_ends_in_a_chunk_size_line_no_longer_truncates_the_upload() {
    let (backend, seen) = recording_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &route(backend.addr));

    let mut conn = Conn::connect(proxy.addr).await;
    conn.write_parts(
        &[
            b"POST /upload HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nA",
            b"\r\n0123456789\r\n0\r\n\r\n",
        ],
        Duration::from_millis(300),
    )
    .await
    .unwrap();
    let response = conn.read_message(false).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.body, b"hello0123456789");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.requests.len(), 1);
    assert_eq!(seen.requests[0].1.body, b"hello0123456789");
}

/// The tricky bodies again, this time written by the backend as its
/// response and cut at every position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_bodies_arrive_exactly_at_every_split_position() {
    let cases = tricky_chunked_bodies();
    let served = Arc::new(cases.clone());
    let backend = ScriptedBackend::start(move |stream: TcpStream| {
        let cases = served.clone();
        async move {
            let mut conn = Conn::new(stream);
            while let Ok(request) = conn.read_message(false).await {
                // `/r/CASE/SPLIT`, or anything else for a short answer.
                let parts = request.target_numbers();
                let written = match parts[..] {
                    [case, split] => {
                        let mut response =
                            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
                        response.extend_from_slice(&cases[case].1);
                        let split = split.min(response.len());
                        conn.write_parts(&[&response[..split], &response[split..]], SPLIT_PAUSE)
                            .await
                    }
                    _ => {
                        conn.stream
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext")
                            .await
                    }
                };
                if written.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &route(backend.addr));

    for (case, (body, encoded)) in cases.iter().enumerate() {
        let head_len = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".len();
        for split in 1..head_len + encoded.len() {
            let mut conn = Conn::connect(proxy.addr).await;
            let request = format!("GET /r/{case}/{split} HTTP/1.1\r\nHost: app.test\r\n\r\nGET /next HTTP/1.1\r\nHost: app.test\r\n\r\n");
            conn.stream.write_all(request.as_bytes()).await.unwrap();
            let response = conn
                .read_message(false)
                .await
                .unwrap_or_else(|e| panic!("case {case}, split at {split}: {e}"));
            assert_eq!(response.status(), 200);
            assert_eq!(
                &response.body,
                body,
                "case {case}, split at {split}: the client got {:?}",
                String::from_utf8_lossy(&response.body)
            );
            // The response ended exactly where it should: the pipelined
            // request after it is answered whole on the same connection.
            let next = conn
                .read_message(false)
                .await
                .unwrap_or_else(|e| panic!("case {case}, split at {split}, next: {e}"));
            assert_eq!(next.body, b"next", "case {case}, split at {split}");
        }
    }
}

/// Random bodies in random chunkings, written in random pieces with random
/// pauses, both ways; the far end's bytes must be the near end's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bodies_in_random_chunkings_and_pauses_arrive_whole() {
    let backend = ScriptedBackend::start(|stream: TcpStream| async move {
        let mut conn = Conn::new(stream);
        while let Ok(request) = conn.read_message(false).await {
            // The response is generated from the seed in the target, the
            // same way the client generates what it expects.
            let seed: u64 = request.target().trim_start_matches("/seed/").parse().unwrap_or(0);
            let mut rng = Rng::new(seed);
            let (body, encoded, pieces) = random_case(&mut rng);
            let mut response = format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Echo-Len: {}\r\nX-Echo-Sum: {}\r\n\r\n",
                request.body.len(),
                digest(&request.body)
            )
            .into_bytes();
            let head_len = response.len();
            response.extend_from_slice(&encoded);
            drop(body);
            if write_in_pieces(&mut conn, &response, head_len, &pieces, &mut rng)
                .await
                .is_err()
            {
                return;
            }
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &route(backend.addr));

    let mut conn = Conn::connect(proxy.addr).await;
    for seed in 1..=40u64 {
        let mut rng = Rng::new(seed * 7919);
        let (body, encoded, pieces) = random_case(&mut rng);
        let mut request = format!(
            "POST /seed/{seed} HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .into_bytes();
        let head_len = request.len();
        request.extend_from_slice(&encoded);
        write_in_pieces(&mut conn, &request, head_len, &pieces, &mut rng)
            .await
            .unwrap();
        let response = conn
            .read_message(false)
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(response.status(), 200, "seed {seed}");
        assert_eq!(
            response.header("x-echo-len"),
            Some(body.len().to_string().as_str()),
            "seed {seed}: request body length at the backend"
        );
        assert_eq!(
            response.header("x-echo-sum"),
            Some(digest(&body).to_string().as_str()),
            "seed {seed}: request body bytes at the backend"
        );
        let expected = random_case(&mut Rng::new(seed)).0;
        assert_eq!(
            response.body.len(),
            expected.len(),
            "seed {seed}: response length"
        );
        assert!(
            response.body == expected,
            "seed {seed}: response bytes differ"
        );
    }
}

/// A random body (up to 256 KiB), its chunked encoding (chunks up to 20 KiB,
/// some with extensions, sometimes trailers) and the write pieces.
fn random_case(rng: &mut Rng) -> (Vec<u8>, Vec<u8>, Vec<usize>) {
    let len = match rng.below(4) {
        0 => rng.below(16),
        1 => rng.below(4096),
        _ => rng.below(256 * 1024),
    };
    let body = rng.bytes(len);
    let max_chunk = 1 + rng.below(20 * 1024);
    let sizes = rng.sizes(len, max_chunk);
    let extension = if rng.below(3) == 0 { ";ext=\"v\"" } else { "" };
    let trailers = if rng.below(3) == 0 { "X-T: 1\r\n" } else { "" };
    let encoded = encode_chunked(&body, &sizes, extension, trailers);
    let max_piece = 1 + rng.below(8 * 1024);
    let pieces = rng.sizes(encoded.len(), max_piece);
    (body, encoded, pieces)
}

/// Writes the head in one piece, then the body in `pieces`, pausing up to
/// 2 ms between some of them.
async fn write_in_pieces(
    conn: &mut Conn,
    message: &[u8],
    head_len: usize,
    pieces: &[usize],
    rng: &mut Rng,
) -> std::io::Result<()> {
    conn.stream.write_all(&message[..head_len]).await?;
    let mut at = head_len;
    for &piece in pieces {
        if rng.below(4) == 0 {
            tokio::time::sleep(Duration::from_micros(rng.below(2000) as u64)).await;
        }
        conn.stream.write_all(&message[at..at + piece]).await?;
        at += piece;
    }
    assert_eq!(at, message.len());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_cannot_be_framed_gets_400_and_never_reaches_a_backend_whole() {
    let (backend, seen) = recording_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &route(backend.addr));

    let long_extension = format!("5;{}\r\nhello\r\n0\r\n\r\n", "x".repeat(200 * 1024));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("negative size", b"-5\r\nhello\r\n0\r\n\r\n".to_vec()),
        (
            "0x prefix",
            b"0x10\r\n0123456789abcdef\r\n0\r\n\r\n".to_vec(),
        ),
        (
            "hex overflow",
            b"fffffffffffffffffffffff\r\nhello\r\n0\r\n\r\n".to_vec(),
        ),
        (
            "no CRLF after data",
            b"5\r\nhelloXX5\r\nhello\r\n0\r\n\r\n".to_vec(),
        ),
        ("junk size", b"5\r\nhello\r\nzz\r\n0\r\n\r\n".to_vec()),
        ("200 KB extension", long_extension.into_bytes()),
    ];
    for (name, body) in &cases {
        let mut request =
            b"POST /bad HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        request.extend_from_slice(body);
        request.extend_from_slice(b"GET /after HTTP/1.1\r\nHost: app.test\r\n\r\n");
        let mut conn = Conn::connect(proxy.addr).await;
        // The peer may close before reading it all.
        let _ = conn.stream.write_all(&request).await;
        let response = conn
            .read_message(false)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(response.status(), 400, "{name}");
        assert_eq!(response.header("connection"), Some("close"), "{name}");
        assert!(
            conn.closes().await,
            "{name}: the connection closes after the 400"
        );
    }
    let seen = seen.lock().unwrap();
    assert!(
        seen.requests.is_empty(),
        "no unframeable request, and nothing after one, reached the backend whole: {:?}",
        seen.requests
            .iter()
            .map(|(_, r)| (&r.first_line, String::from_utf8_lossy(&r.body)))
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let (backend, seen) = recording_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &route(backend.addr));

    let mut conn = Conn::connect(proxy.addr).await;
    let mut requests = Vec::new();
    requests.extend_from_slice(b"GET /1 HTTP/1.1\r\nHost: app.test\r\n\r\n");
    requests.extend_from_slice(
        b"POST /2 HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n",
    );
    requests
        .extend_from_slice(b"PUT /3 HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n\r\nthree");
    requests.extend_from_slice(b"GET /4 HTTP/1.1\r\nHost: app.test\r\n\r\n");
    conn.stream.write_all(&requests).await.unwrap();
    let mut bodies = Vec::new();
    for i in 1..=4 {
        let response = conn
            .read_message(false)
            .await
            .unwrap_or_else(|e| panic!("response {i}: {e}"));
        assert_eq!(response.status(), 200, "response {i}");
        bodies.push(String::from_utf8(response.body).unwrap());
    }
    assert_eq!(bodies, ["", "two", "three", ""]);
    let seen = seen.lock().unwrap();
    let targets: Vec<&str> = seen.requests.iter().map(|(_, r)| r.target()).collect();
    assert_eq!(targets, ["/1", "/2", "/3", "/4"]);
}

/// A backend that answers every request with the head it received, as
/// `name: value` lines in its body, and with 101 to `/switch`.
async fn head_echo_backend() -> ScriptedBackend {
    ScriptedBackend::start(|stream: TcpStream| async move {
        let mut conn = Conn::new(stream);
        while let Ok(request) = conn.read_message(false).await {
            if request.target() == "/switch" {
                let _ = conn
                    .stream
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: tunnel\r\n\r\nRAW BYTES")
                    .await;
                return;
            }
            let mut body = request.first_line.clone();
            for (name, value) in &request.headers {
                body.push_str(&format!("\n{name}: {value}"));
            }
            body.push_str(&format!("\nbody: {}", String::from_utf8_lossy(&request.body)));
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            if conn.stream.write_all(response.as_bytes()).await.is_err() {
                return;
            }
        }
    })
    .await
}

async fn exchange(proxy: SocketAddr, request: &[u8]) -> Message {
    let mut conn = Conn::connect(proxy).await;
    conn.stream.write_all(request).await.unwrap();
    conn.read_message(false)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(request)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_names_exactly_one_valid_host() {
    let backend = head_echo_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &route(backend.addr));

    for (what, request) in [
        ("no Host on HTTP/1.1", &b"GET / HTTP/1.1\r\n\r\n"[..]),
        ("a list", b"GET / HTTP/1.1\r\nHost: a.test, b.test\r\n\r\n"),
        (
            "two Hosts",
            b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
        ),
        ("an empty Host", b"GET / HTTP/1.1\r\nHost: \r\n\r\n"),
        (
            "a path in Host",
            b"GET / HTTP/1.1\r\nHost: a.test/x\r\n\r\n",
        ),
        ("user info", b"GET / HTTP/1.1\r\nHost: u@a.test\r\n\r\n"),
        ("a bad port", b"GET / HTTP/1.1\r\nHost: a.test:http\r\n\r\n"),
    ] {
        let response = exchange(proxy.addr, request).await;
        assert_eq!(response.status(), 400, "{what}");
    }
    // HTTP/1.0 may leave Host out.
    let response = exchange(proxy.addr, b"GET /old HTTP/1.0\r\n\r\n").await;
    assert_eq!(response.status(), 200);
    // An absolute-form target that disagrees with Host is ambiguous.
    let response = exchange(
        proxy.addr,
        b"GET http://b.test:81/abs HTTP/1.1\r\nHost: a.test\r\n\r\n",
    )
    .await;
    assert_eq!(response.status(), 400);
    // One that agrees goes to the backend in origin form.
    let response = exchange(
        proxy.addr,
        b"GET http://b.test:81/abs?q=1 HTTP/1.1\r\nHost: b.test:81\r\n\r\n",
    )
    .await;
    assert_eq!(response.status(), 200, "{response:?}");
    let seen = String::from_utf8(response.body).unwrap();
    assert!(seen.starts_with("GET /abs?q=1 HTTP/1.1"), "{seen}");
    assert!(seen.contains("\nhost: b.test:81"), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cannot_remove_framing_headers_and_only_websocket_upgrades_pass() {
    let backend = head_echo_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &route(backend.addr));

    let response = exchange(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: host\r\n\r\n",
    )
    .await;
    let seen = String::from_utf8(response.body).unwrap();
    assert!(seen.contains("\nhost: app.test"), "Host stays: {seen}");

    let response = exchange(
        proxy.addr,
        b"POST / HTTP/1.1\r\nHost: app.test\r\nConnection: content-length\r\nContent-Length: 4\r\n\r\ndata",
    )
    .await;
    let seen = String::from_utf8(response.body).unwrap();
    assert!(seen.contains("\nbody: data"), "the body stays: {seen}");

    let response = exchange(
        proxy.addr,
        b"POST / HTTP/1.1\r\nHost: app.test\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n4\r\ndata\r\n0\r\n\r\n",
    )
    .await;
    let seen = String::from_utf8(response.body).unwrap();
    assert!(
        seen.contains("\nbody: data"),
        "the chunked body stays: {seen}"
    );

    let response = exchange(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
    )
    .await;
    assert_eq!(response.status(), 200);
    let seen = String::from_utf8(response.body)
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        !seen.contains("upgrade"),
        "no h2c upgrade reaches the backend: {seen}"
    );
    assert!(!seen.contains("http2-settings"), "{seen}");

    // HTTP/1.0 has no upgrades (RFC 9110 §7.8): a WebSocket one goes on as
    // a plain request, and identical duplicate lengths as one.
    let response = exchange(
        proxy.addr,
        b"POST / HTTP/1.0\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\ndata",
    )
    .await;
    assert_eq!(response.status(), 200);
    let seen = String::from_utf8(response.body)
        .unwrap()
        .to_ascii_lowercase();
    assert!(seen.starts_with("post / http/1.0"), "{seen}");
    assert!(!seen.contains("upgrade"), "{seen}");
    assert_eq!(seen.matches("content-length: 4").count(), 1, "{seen}");
    assert!(seen.contains("\nbody: data"), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsolicited_101_is_a_bad_gateway_not_a_tunnel() {
    let backend = head_echo_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &route(backend.addr));

    let mut conn = Conn::connect(proxy.addr).await;
    conn.stream
        .write_all(b"GET /switch HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    let response = conn.read_message(false).await.unwrap();
    assert_eq!(response.status(), 502);
    assert!(!String::from_utf8_lossy(&response.body).contains("RAW BYTES"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_upgrades_only_to_the_protocols_it_lists() {
    let backend = head_echo_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let routes = format!(
        "{}[[route]]\nname = \"tunnel\"\nhosts = [\"tunnel.test\"]\nupgrades = [\"tunnel\"]\nactive = \"only\"\n[route.slots]\nonly = [\"{}\"]\n\n\
         [[route]]\nname = \"none\"\nhosts = [\"none.test\"]\nupgrades = []\nactive = \"only\"\n[route.slots]\nonly = [\"{}\"]\n",
        route(backend.addr),
        backend.addr,
        backend.addr
    );
    let proxy = Proxy::start(dir.path(), &routes);

    // The route that lists it carries the upgrade both ways.
    let mut conn = Conn::connect(proxy.addr).await;
    conn.stream
        .write_all(b"GET /switch HTTP/1.1\r\nHost: tunnel.test\r\nConnection: upgrade\r\nUpgrade: tunnel\r\n\r\n")
        .await
        .unwrap();
    let response = conn.read_message(false).await.unwrap();
    assert_eq!(response.status(), 101);
    let mut raw = conn.take_buffered();
    while raw.len() < 9 {
        let mut more = [0u8; 64];
        let n = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read(&mut conn.stream, &mut more),
        )
        .await
        .unwrap()
        .unwrap();
        assert!(n > 0, "closed after {raw:?}");
        raw.extend_from_slice(&more[..n]);
    }
    assert_eq!(raw, b"RAW BYTES");

    // The default route (WebSocket only) and one with `upgrades = []`
    // send the same request on as a plain one, so the 101 is unsolicited.
    for host in ["app.test", "none.test"] {
        let request = format!(
            "GET /switch HTTP/1.1\r\nHost: {host}\r\nConnection: upgrade\r\nUpgrade: tunnel\r\n\r\n"
        );
        let response = exchange(proxy.addr, request.as_bytes()).await;
        assert_eq!(response.status(), 502, "{host}");
    }
    // And a WebSocket upgrade on the route without upgrades loses its
    // Upgrade header.
    let response = exchange(
        proxy.addr,
        b"GET /ws HTTP/1.1\r\nHost: none.test\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await;
    let seen = String::from_utf8(response.body).unwrap();
    assert!(!seen.contains("upgrade"), "{seen}");
}

/// One way a backend may frame its answer, and what the client must get.
struct ResponseCase {
    method: &'static str,
    /// What the backend writes, split at every position.
    response: &'static [u8],
    /// The statuses the client gets, informational ones first.
    statuses: &'static [u16],
    body: &'static [u8],
    /// Splits only up to here: bytes a backend sends after its answer can
    /// be told from an answer to the next request only while they come
    /// with the answer's last piece.
    split_before: Option<usize>,
    /// The pipelined request after it is answered (our own 502 closes the
    /// connection instead).
    then_next: bool,
}

const RESPONSE_CASES: &[ResponseCase] = &[
    ResponseCase {
        method: "GET",
        response: b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world",
        statuses: &[200],
        body: b"hello world",
        split_before: None,
        then_next: true,
    },
    // Identical duplicate lengths are one length (RFC 9110 §8.6).
    ResponseCase {
        method: "GET",
        response: b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\nfives",
        statuses: &[200],
        body: b"fives",
        split_before: None,
        then_next: true,
    },
    // Transfer-Encoding wins over Content-Length.
    ResponseCase {
        method: "GET",
        response: b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        statuses: &[200],
        body: b"abc",
        split_before: None,
        then_next: true,
    },
    // Informational answers pass, then the final one.
    ResponseCase {
        method: "GET",
        response: b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        statuses: &[103, 200],
        body: b"ok",
        split_before: None,
        then_next: true,
    },
    // No body, whatever the length says.
    ResponseCase {
        method: "GET",
        response: b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n",
        statuses: &[304],
        body: b"",
        split_before: None,
        then_next: true,
    },
    ResponseCase {
        method: "GET",
        response: b"HTTP/1.1 204 No Content\r\n\r\n",
        statuses: &[204],
        body: b"",
        split_before: None,
        then_next: true,
    },
    ResponseCase {
        method: "HEAD",
        response: b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
        statuses: &[200],
        body: b"",
        split_before: None,
        then_next: true,
    },
    // An HTTP/1.0 backend closes after its answer; the client's connection
    // goes on.
    ResponseCase {
        method: "GET",
        response: b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nold",
        statuses: &[200],
        body: b"old",
        split_before: None,
        then_next: true,
    },
    // Bytes after the answer's end are not passed on, and that connection
    // is not used again.
    ResponseCase {
        method: "GET",
        response: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nextra",
        statuses: &[200],
        body: b"ok",
        split_before: Some(40),
        then_next: true,
    },
    // A body that ends when the backend closes reaches an HTTP/1.1 client
    // framed, on a connection that stays open.
    ResponseCase {
        method: "GET",
        response: b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end",
        statuses: &[200],
        body: b"until the end",
        split_before: None,
        then_next: true,
    },
    // A length that is not one number is a bad gateway.
    ResponseCase {
        method: "GET",
        response: b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nfives",
        statuses: &[502],
        body: b"switchyard: the upstream failed to answer\n",
        split_before: None,
        then_next: false,
    },
];

/// Every response framing a backend may use, split at every position: the
/// client gets each answer exactly, and the pipelined request after it is
/// answered whole on the same connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_framings_arrive_exactly_at_every_split_position() {
    let backend = ScriptedBackend::start(|stream: TcpStream| async move {
        let mut conn = Conn::new(stream);
        while let Ok(request) = conn.read_message(false).await {
            let parts = request.target_numbers();
            let [case, split] = parts[..] else {
                let next = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext";
                if conn.stream.write_all(next).await.is_err() {
                    return;
                }
                continue;
            };
            let response = RESPONSE_CASES[case].response;
            let split = split.min(response.len());
            let _ = conn
                .write_parts(&[&response[..split], &response[split..]], SPLIT_PAUSE)
                .await;
            // Every case but a plain keep-alive one ends the connection
            // here: the proxy must not need it again.
            let keeps = response.starts_with(b"HTTP/1.1") && !response.ends_with(b"extra");
            let framed = keeps && !response.ends_with(b"until the end");
            if !framed {
                return;
            }
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &route(backend.addr));

    for (case, expected) in RESPONSE_CASES.iter().enumerate() {
        let end = expected.split_before.unwrap_or(expected.response.len());
        for split in 1..end {
            let what = format!("case {case}, split at {split}");
            let mut conn = Conn::connect(proxy.addr).await;
            let request = format!(
                "{} /r/{case}/{split} HTTP/1.1\r\nHost: app.test\r\n\r\nGET /next HTTP/1.1\r\nHost: app.test\r\n\r\n",
                expected.method
            );
            conn.stream.write_all(request.as_bytes()).await.unwrap();
            let mut statuses = Vec::new();
            let response = loop {
                let message = conn
                    .read_message(expected.method == "HEAD")
                    .await
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                statuses.push(message.status());
                if message.status() >= 200 {
                    break message;
                }
            };
            assert_eq!(statuses, expected.statuses, "{what}");
            assert_eq!(
                response.body,
                expected.body,
                "{what}: the client got {:?}",
                String::from_utf8_lossy(&response.body)
            );
            if !expected.then_next {
                continue;
            }
            let next = conn
                .read_message(false)
                .await
                .unwrap_or_else(|e| panic!("{what}, next: {e}"));
            assert_eq!(next.body, b"next", "{what}");
        }
    }
}
