//! HTTP/1.1 details a proxy must get right, checked byte by byte: hop-by-hop
//! headers stay on their hop, chunked bodies stream both ways, upgraded
//! connections carry bytes both ways, and bad bytes from either side get a
//! clear status without taking the proxy down.

use std::time::Duration;

use switchyard_tests::raw::{self, ScriptedBackend};
use switchyard_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn one_slot_route(host: &str, backend: std::net::SocketAddr) -> String {
    format!(
        "[[route]]\nname = \"{}\"\nhosts = [\"{host}\"]\nactive = \"only\"\n[route.slots]\nonly = [\"{backend}\"]\n",
        host.replace('.', "-")
    )
}

/// Answers every request on a connection with the request head it received
/// as the body, plus hop-by-hop headers of its own that must not reach the
/// client.
async fn echo_head_with_hop_headers(mut stream: TcpStream) {
    while let Ok((head, _)) = raw::read_head(&mut stream).await {
        let mut body = head.first_line.clone();
        for (name, value) in &head.headers {
            body.push_str(&format!("\n{name}: {value}"));
        }
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: keep-alive, X-Backend-Hop\r\nX-Backend-Hop: secret\r\nKeep-Alive: timeout=9\r\nX-Backend-End: kept\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_stay_on_their_hop() {
    let backend = ScriptedBackend::start(echo_head_with_hop_headers).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &one_slot_route("hop.test", backend.addr));

    let mut stream = raw::send_raw(
        proxy.addr,
        b"GET /h HTTP/1.1\r\nHost: hop.test\r\nConnection: keep-alive, X-Client-Hop\r\nX-Client-Hop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nX-End-To-End: kept\r\n\r\n",
    )
    .await;
    let (head, rest) = raw::read_head(&mut stream).await.unwrap();
    assert_eq!(head.status(), 200, "{head:?}");
    let len: usize = head.get("content-length").unwrap().parse().unwrap();
    let seen =
        String::from_utf8(raw::read_exact_after(&mut stream, rest, len).await.unwrap()).unwrap();

    assert!(
        seen.contains("x-end-to-end: kept"),
        "end-to-end headers pass: {seen}"
    );
    for hop in ["x-client-hop", "keep-alive:", "proxy-connection"] {
        assert!(
            !seen.contains(hop),
            "{hop} must not reach the backend: {seen}"
        );
    }
    assert_eq!(head.get("x-backend-end"), Some("kept"), "{head:?}");
    assert_eq!(
        head.get("x-backend-hop"),
        None,
        "the backend's hop-by-hop header leaked: {head:?}"
    );
    assert_ne!(head.get("keep-alive"), Some("timeout=9"), "{head:?}");

    // The client connection stays usable after all that.
    stream
        .write_all(b"GET /again HTTP/1.1\r\nHost: hop.test\r\n\r\n")
        .await
        .unwrap();
    let (again, _) = raw::read_head(&mut stream).await.unwrap();
    assert_eq!(again.status(), 200, "{again:?}");
}

/// Answers with a chunked body sent in three pieces, a pause between them.
async fn chunked_in_pieces(mut stream: TcpStream) {
    if raw::read_head(&mut stream).await.is_err() {
        return;
    }
    let _ = stream
        .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        .await;
    for piece in ["6\r\nsecond\r\n", "5\r\nthird\r\n0\r\n\r\n"] {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let _ = stream.write_all(piece.as_bytes()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_bodies_stream_both_ways() {
    let echo = Backend::start("echo").await;
    let pieces = ScriptedBackend::start(chunked_in_pieces).await;
    let dir = tempfile::tempdir().unwrap();
    let routes = format!(
        "{}{}",
        one_slot_route("echo.test", echo.addr),
        one_slot_route("pieces.test", pieces.addr)
    );
    let proxy = Proxy::start(dir.path(), &routes);

    let mut stream = raw::send_raw(
        proxy.addr,
        b"POST /echo-body HTTP/1.1\r\nHost: echo.test\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n",
    )
    .await;
    let (head, rest) = raw::read_head(&mut stream).await.unwrap();
    assert_eq!(head.status(), 200, "{head:?}");
    let body = match head.get("content-length") {
        Some(len) => raw::read_exact_after(&mut stream, rest, len.parse().unwrap()).await,
        None => raw::read_chunked(&mut stream, rest).await,
    }
    .unwrap();
    assert_eq!(body, b"abcdefg", "a chunked request body arrives whole");

    let mut stream =
        raw::send_raw(proxy.addr, b"GET / HTTP/1.1\r\nHost: pieces.test\r\n\r\n").await;
    let (head, rest) = raw::read_head(&mut stream).await.unwrap();
    assert_eq!(head.status(), 200, "{head:?}");
    assert_eq!(head.get("transfer-encoding"), Some("chunked"), "{head:?}");
    let body = raw::read_chunked(&mut stream, rest).await.unwrap();
    assert_eq!(
        body, b"firstsecondthird",
        "a chunked response arrives whole"
    );
}

/// Accepts an upgrade, then echoes every read back with an `echo:` prefix.
async fn upgrade_then_echo(mut stream: TcpStream) {
    let Ok((head, _)) = raw::read_head(&mut stream).await else {
        return;
    };
    let upgrade = head.get("upgrade").unwrap_or_default().to_string();
    let connection = head
        .get("connection")
        .unwrap_or_default()
        .to_ascii_lowercase();
    if upgrade != "websocket" || !connection.contains("upgrade") {
        let _ = stream
            .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 10\r\n\r\nno upgrade")
            .await;
        return;
    }
    let _ = stream
        .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        .await;
    let mut buf = [0u8; 1024];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            return;
        }
        let mut reply = b"echo:".to_vec();
        reply.extend_from_slice(&buf[..n]);
        if stream.write_all(&reply).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_connection_carries_bytes_both_ways() {
    let backend = ScriptedBackend::start(upgrade_then_echo).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &one_slot_route("ws.test", backend.addr));

    let mut stream = raw::send_raw(
        proxy.addr,
        b"GET /socket HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await;
    let (head, rest) = raw::read_head(&mut stream).await.unwrap();
    assert_eq!(head.status(), 101, "{head:?}");
    assert!(rest.is_empty(), "nothing follows the 101 before we speak");
    for message in ["hello", "again"] {
        stream.write_all(message.as_bytes()).await.unwrap();
        let expected = format!("echo:{message}");
        let got = raw::read_exact_after(&mut stream, Vec::new(), expected.len())
            .await
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&got), expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_either_side_gets_a_clear_status_and_the_proxy_keeps_serving() {
    let liar = ScriptedBackend::start(|mut stream: TcpStream| async move {
        if raw::read_head(&mut stream).await.is_ok() {
            let _ = stream.write_all(b"THIS IS NOT HTTP\r\n\r\n").await;
        }
    })
    .await;
    let good = Backend::start("good").await;
    let dir = tempfile::tempdir().unwrap();
    let routes = format!(
        "{}{}",
        one_slot_route("liar.test", liar.addr),
        one_slot_route("good.test", good.addr)
    );
    let proxy = Proxy::start(dir.path(), &routes);

    let mut stream = raw::send_raw(proxy.addr, b"GET / HTTP/1.1\r\nHost: liar.test\r\n\r\n").await;
    let (head, _) = raw::read_head(&mut stream).await.unwrap();
    assert_eq!(
        head.status(),
        502,
        "a broken backend response is a 502: {head:?}"
    );

    let mut stream = raw::send_raw(proxy.addr, b"NONSENSE\r\n\r\n").await;
    match raw::read_head(&mut stream).await {
        Ok((head, _)) => assert_eq!(head.status(), 400, "{head:?}"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}"),
    }

    let mut client = Client::new(proxy.addr);
    let reply = client.get("good.test", "/still-here").await.unwrap();
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "good /still-here")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_answer_has_no_body_and_the_connection_carries_on() {
    let echo = Backend::start("echo").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &one_slot_route("echo.test", echo.addr));

    let mut stream = raw::send_raw(
        proxy.addr,
        b"HEAD /first HTTP/1.1\r\nHost: echo.test\r\n\r\n",
    )
    .await;
    let (head, rest) = raw::read_head(&mut stream).await.unwrap();
    assert_eq!(head.status(), 200, "{head:?}");
    assert_eq!(
        head.get("content-length"),
        Some("11"),
        "HEAD keeps the length: {head:?}"
    );
    assert!(rest.is_empty(), "no body follows a HEAD answer: {rest:?}");

    stream
        .write_all(b"GET /second HTTP/1.1\r\nHost: echo.test\r\n\r\n")
        .await
        .unwrap();
    let (second, rest) = raw::read_head(&mut stream).await.unwrap();
    assert_eq!(
        second.first_line, "HTTP/1.1 200 OK",
        "the next bytes are the next answer"
    );
    let body = raw::read_exact_after(&mut stream, rest, 12).await.unwrap();
    assert_eq!(body, b"echo /second");
}
