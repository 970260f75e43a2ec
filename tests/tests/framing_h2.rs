//! The framing checks of `framing.rs` with HTTP/2 on one side: HTTP/1.1
//! chunked bodies cut at every position reach an h2c backend exactly and
//! its DATA frames come back exactly, and an HTTP/2 client's DATA frames
//! of random sizes, sent with random pauses, reach an HTTP/1.1 backend
//! exactly, both ways.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use switchyard_tests::raw::ScriptedBackend;
use switchyard_tests::wire::{
    digest, encode_chunked, recording_backend, tricky_chunked_bodies, Conn, Rng, SPLIT_PAUSE,
};
use switchyard_tests::{config_text, Proxy};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// An HTTP/2-only backend (prior knowledge) that answers each request with
/// its body's length and digest as headers and the body itself, sent back
/// in DATA frames of random sizes (seeded by `x-seed`) with random pauses.
async fn h2c_echo_backend() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut connection) = h2::server::handshake(stream).await else {
                    return;
                };
                while let Some(Ok((request, respond))) = connection.accept().await {
                    tokio::spawn(echo_stream(request, respond));
                }
            });
        }
    });
    (addr, task)
}

async fn echo_stream(
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
) {
    let seed: u64 = request
        .headers()
        .get("x-seed")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut body = request.into_body();
    let mut got = Vec::new();
    while let Some(chunk) = body.data().await {
        let Ok(chunk) = chunk else { return };
        let _ = body.flow_control().release_capacity(chunk.len());
        got.extend_from_slice(&chunk);
    }
    let response = http::Response::builder()
        .status(200)
        .header("x-echo-len", got.len())
        .header("x-echo-sum", digest(&got))
        .body(())
        .unwrap();
    let Ok(mut send) = respond.send_response(response, false) else {
        return;
    };
    let mut rng = Rng::new(seed);
    let max_frame = 1 + rng.below(16 * 1024);
    let mut at = 0;
    for size in rng.sizes(got.len(), max_frame) {
        if rng.below(4) == 0 {
            tokio::time::sleep(Duration::from_micros(rng.below(2000) as u64)).await;
        }
        if send
            .send_data(Bytes::copy_from_slice(&got[at..at + size]), false)
            .is_err()
        {
            return;
        }
        at += size;
    }
    let _ = send.send_data(Bytes::new(), true);
}

fn h2c_route(backend: SocketAddr) -> String {
    format!(
        "[[route]]\nname = \"app\"\nactive = \"only\"\n[route.slots]\nonly = {{ backends = [\"{backend}\"], protocol = \"h2c\" }}\n"
    )
}

fn http1_route(backend: SocketAddr) -> String {
    format!("[[route]]\nname = \"app\"\nactive = \"only\"\n[route.slots]\nonly = [\"{backend}\"]\n")
}

/// A proxy whose plain listener also takes HTTP/2 with prior knowledge.
fn start_h2c_listener(dir: &std::path::Path, routes: &str) -> Proxy {
    let config = dir.join("switchyard.toml");
    std::fs::write(
        &config,
        config_text(routes).replace("threads = 2\n", "threads = 2\nh2c = true\n"),
    )
    .unwrap();
    Proxy::start_with_file(dir, &config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_uploads_reach_an_h2c_backend_exactly_at_every_split_position() {
    let (backend, _task) = h2c_echo_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &h2c_route(backend));

    for (case, (body, encoded)) in tricky_chunked_bodies().into_iter().enumerate() {
        let mut request = format!(
            "POST /case/{case} HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .into_bytes();
        let head_len = request.len();
        request.extend_from_slice(&encoded);
        for split in head_len - 2..request.len() {
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
                response.header("x-echo-len"),
                Some(body.len().to_string().as_str()),
                "case {case}, split at {split}: the backend got another length"
            );
            assert_eq!(
                response.body, body,
                "case {case}, split at {split}: the backend's DATA frames came back otherwise"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bodies_cross_an_h2c_backend_whole_both_ways() {
    let (backend, _task) = h2c_echo_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &h2c_route(backend));

    let mut conn = Conn::connect(proxy.addr).await;
    for seed in 1..=30u64 {
        let mut rng = Rng::new(seed * 104_729);
        let len = rng.below(200 * 1024);
        let body = rng.bytes(len);
        let max_chunk = 1 + rng.below(20 * 1024);
        let sizes = rng.sizes(len, max_chunk);
        let encoded = encode_chunked(&body, &sizes, ";e=1", "");
        let mut request = format!(
            "POST /seed HTTP/1.1\r\nHost: app.test\r\nX-Seed: {seed}\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .into_bytes();
        request.extend_from_slice(&encoded);
        let max_piece = 1 + rng.below(8 * 1024);
        let pieces = rng.sizes(request.len(), max_piece);
        let mut at = 0;
        for piece in pieces {
            if rng.below(4) == 0 {
                tokio::time::sleep(Duration::from_micros(rng.below(2000) as u64)).await;
            }
            conn.stream
                .write_all(&request[at..at + piece])
                .await
                .unwrap();
            at += piece;
        }
        let response = conn
            .read_message(false)
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(response.status(), 200, "seed {seed}");
        assert_eq!(
            response.header("x-echo-sum"),
            Some(digest(&body).to_string().as_str()),
            "seed {seed}: the backend got other bytes"
        );
        assert!(response.body == body, "seed {seed}: the response differs");
    }
}

/// An HTTP/2 client over the plain listener (prior knowledge).
async fn h2_client(proxy: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let stream = TcpStream::connect(proxy).await.unwrap();
    let (client, connection) = h2::client::handshake(stream).await.unwrap();
    tokio::spawn(connection);
    client
}

async fn read_h2_body(response: http::Response<h2::RecvStream>) -> Vec<u8> {
    let mut body = response.into_body();
    let mut got = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        got.extend_from_slice(&chunk);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_clients_data_frames_reach_an_http1_backend_exactly() {
    let (backend, seen) = recording_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_h2c_listener(dir.path(), &http1_route(backend.addr));

    let client = h2_client(proxy.addr).await;
    let sent = 30u64;
    for seed in 1..=sent {
        let mut rng = Rng::new(seed * 7_919);
        let len = match rng.below(3) {
            0 => rng.below(64),
            _ => rng.below(200 * 1024),
        };
        let body = rng.bytes(len);
        // Half declare their length, half leave it to the frames (the
        // backend then gets a chunked body).
        let mut request = http::Request::post(format!("http://app.test/h2/{seed}"));
        if seed % 2 == 0 {
            request = request.header("content-length", len);
        }
        let mut client = client.clone().ready().await.unwrap();
        let (response, mut send) = client
            .send_request(request.body(()).unwrap(), false)
            .unwrap();
        let max_frame = 1 + rng.below(16 * 1024);
        let mut at = 0;
        for size in rng.sizes(len, max_frame) {
            if rng.below(4) == 0 {
                tokio::time::sleep(Duration::from_micros(rng.below(2000) as u64)).await;
            }
            send.send_data(Bytes::copy_from_slice(&body[at..at + size]), false)
                .unwrap();
            at += size;
        }
        send.send_data(Bytes::new(), true).unwrap();
        let response = response.await.unwrap();
        assert_eq!(response.status(), 200, "seed {seed}");
        let echoed = read_h2_body(response).await;
        assert_eq!(
            echoed.len(),
            body.len(),
            "seed {seed}: length at the backend"
        );
        assert!(echoed == body, "seed {seed}: bytes at the backend");
    }
    let seen = seen.lock().unwrap();
    assert!(seen.bad_framing.is_empty(), "{:?}", seen.bad_framing);
    assert_eq!(seen.requests.len() as u64, sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_responses_cut_at_every_position_reach_an_h2_client_exactly() {
    let cases = std::sync::Arc::new(tricky_chunked_bodies());
    let served = cases.clone();
    let backend = ScriptedBackend::start(move |stream: TcpStream| {
        let cases = served.clone();
        async move {
            let mut conn = Conn::new(stream);
            while let Ok(request) = conn.read_message(false).await {
                let parts = request.target_numbers();
                let [case, split] = parts[..] else { return };
                let mut response =
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
                response.extend_from_slice(&cases[case].1);
                let split = split.min(response.len());
                if conn
                    .write_parts(&[&response[..split], &response[split..]], SPLIT_PAUSE)
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_h2c_listener(dir.path(), &http1_route(backend.addr));

    let client = h2_client(proxy.addr).await;
    let head_len = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".len();
    for (case, (body, encoded)) in cases.iter().enumerate() {
        for split in head_len..head_len + encoded.len() {
            let mut client = client.clone().ready().await.unwrap();
            let request = http::Request::get(format!("http://app.test/r/{case}/{split}"))
                .body(())
                .unwrap();
            let (response, _) = client.send_request(request, true).unwrap();
            let response = response.await.unwrap();
            assert_eq!(response.status(), 200, "case {case}, split at {split}");
            let got = read_h2_body(response).await;
            assert_eq!(&got, body, "case {case}, split at {split}");
        }
    }
}
