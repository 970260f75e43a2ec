//! A slot with `protocol = "h2c"`: its backend speaks only HTTP/2 (prior
//! knowledge). HTTP/1.1 and HTTP/2 clients reach it through the proxy,
//! requests share its connections, and its health probes speak HTTP/2 too.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use switchyard_tests::{config_text, Backend, Client, Proxy};
use tokio::net::TcpListener;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// An HTTP/2-only backend. `/health` answers 200; `/echo-body` returns the
/// request body; `/stream` answers without a length; anything else
/// `h2 <path> <authority>`. Counts the connections that carried a request
/// other than a health probe.
async fn h2_backend() -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicU64::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                let first_request = Arc::new(std::sync::atomic::AtomicBool::new(true));
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let path = req.uri().path().to_string();
                    if path != "/health" && first_request.swap(false, Ordering::Relaxed) {
                        counted.fetch_add(1, Ordering::Relaxed);
                    }
                    async move { Ok::<_, Infallible>(answer(req, &path).await) }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, connections)
}

async fn answer(req: Request<hyper::body::Incoming>, path: &str) -> Response<Body> {
    assert_eq!(req.version(), hyper::Version::HTTP_2);
    let authority = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_default();
    match path {
        "/echo-body" => {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            Response::new(Full::new(body).boxed())
        }
        "/stream" => {
            let frames = futures_util::stream::iter(vec![
                Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"no "))),
                Ok(Frame::data(Bytes::from_static(b"length"))),
            ]);
            Response::new(BodyExt::boxed(StreamBody::new(frames)))
        }
        _ => Response::new(Full::new(Bytes::from(format!("h2 {path} {authority}"))).boxed()),
    }
}

fn route(blue: &Backend, green: SocketAddr) -> String {
    format!(
        "[[route]]\nname = \"app\"\nhosts = [\"a.test\"]\nactive = \"green\"\n\n\
         [route.slots]\nblue = [\"{}\"]\ngreen = {{ backends = [\"{green}\"], protocol = \"h2c\" }}\n\n\
         [route.health]\npath = \"/health\"\ninterval = \"100ms\"\ntimeout = \"1s\"\nrise = 1\nfall = 3\n",
        blue.addr
    )
}

#[tokio::test]
async fn an_h2c_slot_is_reached_by_http1_and_http2_clients_on_shared_connections() {
    let dir = tempfile::tempdir().unwrap();
    let blue = Backend::start("blue").await;
    let (green, connections) = h2_backend().await;
    let config = dir.path().join("switchyard.toml");
    std::fs::write(
        &config,
        config_text(&route(&blue, green)).replace("threads = 2\n", "threads = 2\nh2c = true\n"),
    )
    .unwrap();
    let proxy = Proxy::start_with_file(dir.path(), &config);

    // Its HTTP/2 health probe passes.
    let mut healthy = false;
    for _ in 0..200 {
        let status = proxy.status();
        if status["routes"][0]["slots"][1]["health"] == "healthy" {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(healthy, "{:#}", proxy.status());

    // HTTP/1.1 clients, kept alive.
    let mut client = Client::new(proxy.addr);
    for i in 0..10 {
        let reply = client.get("a.test", &format!("/n/{i}")).await.unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, format!("h2 /n/{i} a.test"));
        assert!(reply.headers.contains_key("x-request-id"));
    }
    assert_eq!(
        connections.load(Ordering::Relaxed),
        1,
        "ten requests one after another share one HTTP/2 connection"
    );
    let reply = client.get("a.test", "/stream").await.unwrap();
    assert_eq!(reply.body, "no length");
    assert_eq!(
        reply.headers.get("transfer-encoding").unwrap(),
        "chunked",
        "a response without a length stays reusable for an HTTP/1.1 client"
    );
    let reply = client
        .send(
            "POST",
            "a.test",
            "/echo-body",
            &[],
            Bytes::from_static(b"uploaded"),
        )
        .await
        .unwrap();
    assert_eq!(reply.body, "uploaded");
    // A chunked HTTP/1.1 upload is reframed for HTTP/2.
    let mut raw = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let answer = raw_exchange(
        &mut raw,
        b"POST /echo-body HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await;
    assert!(answer.ends_with("hello world"), "{answer}");

    // HTTP/2 clients (h2c) on the same backend connections.
    let plain = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (h2, connection) = h2::client::handshake(plain).await.unwrap();
    tokio::spawn(connection);
    let mut pending = Vec::new();
    for i in 0..10 {
        let mut h2 = h2.clone().ready().await.unwrap();
        let request = http::Request::get(format!("http://a.test/h2/{i}"))
            .body(())
            .unwrap();
        pending.push(h2.send_request(request, true).unwrap().0);
    }
    for (i, response) in pending.into_iter().enumerate() {
        let response = response.await.unwrap();
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let mut text = Vec::new();
        while let Some(chunk) = body.data().await {
            text.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(
            String::from_utf8(text).unwrap(),
            format!("h2 /h2/{i} a.test")
        );
    }

    // The ten streams arrive together: while one takes the pooled
    // connection, pingora's v2 connector lets the others open their own
    // (seen: up to 7 here). The sequential requests above shared one.
    let used = connections.load(Ordering::Relaxed);
    assert!(
        used <= 11,
        "24 requests used {used} backend connections: at most one for the sequential ones and one per concurrent stream"
    );
    assert_eq!(blue.requests.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_config_slot_with_an_unknown_protocol_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchyard.toml");
    std::fs::write(
        &config,
        config_text(
            "[[route]]\nname = \"app\"\nactive = \"blue\"\n[route.slots]\nblue = { backends = [\"127.0.0.1:1\"], protocol = \"h3\" }\n",
        ),
    )
    .unwrap();
    let output = std::process::Command::new(switchyard_tests::switchyard_bin())
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("`protocol` of slot \"blue\"") && stderr.contains("\"h3\""),
        "{stderr}"
    );
}

/// Writes `request` and reads until the server closes.
async fn raw_exchange(stream: &mut tokio::net::TcpStream, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// A failed connect to an HTTP/1.1 slot falls back to the previous slot in
/// that slot's own protocol: h2c here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_from_an_http1_slot_to_an_h2c_previous_slot_speaks_h2c() {
    let (green, _) = h2_backend().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[[route]]\nname = \"app\"\nhosts = [\"a.test\"]\nactive = \"green\"\n\n\
         [route.slots]\nblue = [\"{dead}\"]\ngreen = {{ backends = [\"{green}\"], protocol = \"h2c\" }}\n"
    );
    let proxy = Proxy::start(dir.path(), &config);
    tokio::task::block_in_place(|| proxy.cli_ok(&["switch", "app", "blue", "--force"]));
    let reply = Client::new(proxy.addr).get("a.test", "/x").await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body, "h2 /x a.test");
}
