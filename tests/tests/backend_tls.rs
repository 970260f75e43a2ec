//! Slots with `protocol = "https"`: switchyard speaks TLS to their
//! backends, checks their certificates (against `ca` and for
//! `tls_server_name`, or the backend's own address), shows a client
//! certificate when configured (mutual TLS), speaks HTTP/2 or HTTP/1.1 as
//! the backend picks by ALPN, and probes them the same way.

use bytes::Bytes;
use switchyard_tests::tls::TestCa;
use switchyard_tests::tls_backend::TlsBackend;
use switchyard_tests::{config_text, Client, Proxy};

const H2_AND_H1: &[&[u8]] = &[b"h2", b"http/1.1"];
const H1_ONLY: &[&[u8]] = &[b"http/1.1"];

/// A route `app` for host `a.test` whose one slot is `backend` over TLS
/// with `settings` (after `protocol = "https"`); probed every 100 ms.
fn route(backend: &TlsBackend, settings: &str) -> String {
    format!(
        "[[route]]\nname = \"app\"\nhosts = [\"a.test\"]\nactive = \"secure\"\n\n\
         [route.slots]\nsecure = {{ backends = [\"{}\"], protocol = \"https\"{settings} }}\n\n\
         [route.health]\npath = \"/health\"\ninterval = \"100ms\"\ntimeout = \"1s\"\nrise = 1\nfall = 2\n",
        backend.addr
    )
}

fn start(dir: &std::path::Path, routes: &str) -> Proxy {
    std::fs::write(dir.join("switchyard.toml"), config_text(routes)).unwrap();
    Proxy::start_with_file(dir, &dir.join("switchyard.toml"))
}

fn write_ca(dir: &std::path::Path, ca: &TestCa) {
    let pem = ca.issue(&["unused.test"]).ca_pem;
    std::fs::write(dir.join("ca.pem"), pem).unwrap();
}

async fn backend_state(proxy: &Proxy, state: &'static str) {
    proxy
        .wait_for_status(&format!("the backend {state}"), |s| {
            s["routes"][0]["slots"][0]["backends"][0]["state"] == state
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_over_tls_with_the_configured_name_and_ca_reuses_connections() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    write_ca(dir.path(), &ca);
    let backend = TlsBackend::start(&ca.issue(&["app.internal"]), H1_ONLY, None).await;
    let proxy = start(
        dir.path(),
        &route(
            &backend,
            ", tls_server_name = \"app.internal\", ca = \"ca.pem\"",
        ),
    );
    backend_state(&proxy, "healthy").await;
    let mut client = Client::new(proxy.addr);
    for n in 0..3 {
        let reply = client.get("a.test", &format!("/page/{n}")).await.unwrap();
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.body, format!("tls HTTP/1.1 /page/{n}"));
    }
    let body = Bytes::from(vec![b'x'; 100_000]);
    let reply = client
        .send("POST", "a.test", "/echo-body", &[], body.clone())
        .await
        .unwrap();
    assert!(reply.body.as_bytes() == body, "the whole body arrives");

    let served = backend.served();
    assert_eq!(served.len(), 4, "{served:?}");
    assert!(
        served
            .iter()
            .all(|r| r.sni.as_deref() == Some("app.internal")),
        "{served:?}"
    );
    assert!(served.iter().all(|r| !r.client_certificate));
    assert!(
        served.iter().all(|r| r.connection == served[0].connection),
        "one pooled TLS connection carries them all: {served:?}"
    );
    let probes = backend.probes();
    assert!(!probes.is_empty(), "probes speak TLS too");
    assert!(probes
        .iter()
        .all(|p| p.sni.as_deref() == Some("app.internal")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_picks_h2_gets_http2_on_shared_connections() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    write_ca(dir.path(), &ca);
    // No tls_server_name: the certificate must name the backend's address.
    let backend = TlsBackend::start(&ca.issue(&["127.0.0.1"]), H2_AND_H1, None).await;
    let proxy = start(dir.path(), &route(&backend, ", ca = \"ca.pem\""));
    backend_state(&proxy, "healthy").await;

    let mut tasks = Vec::new();
    for n in 0..8 {
        let addr = proxy.addr;
        tasks.push(tokio::spawn(async move {
            let mut client = Client::new(addr);
            client.get("a.test", &format!("/n/{n}")).await.unwrap()
        }));
    }
    for (n, task) in tasks.into_iter().enumerate() {
        let reply = task.await.unwrap();
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.body, format!("tls HTTP/2.0 /n/{n}"));
    }
    let mut client = Client::new(proxy.addr);
    let body: String = (0..200_000u32)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let reply = client
        .send(
            "POST",
            "a.test",
            "/echo-body",
            &[],
            Bytes::from(body.clone()),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    assert!(reply.body == body, "the body arrives whole and in order");

    let served = backend.served();
    assert_eq!(served.len(), 9);
    assert!(served.iter().all(|r| r.version == hyper::Version::HTTP_2));
    assert!(
        served.iter().all(|r| r.sni.is_none()),
        "an IP address is sent as no SNI"
    );
    let connections: std::collections::BTreeSet<u64> =
        served.iter().map(|r| r.connection).collect();
    assert!(
        connections.len() < served.len(),
        "streams share connections: {connections:?}"
    );
    assert!(backend
        .probes()
        .iter()
        .all(|p| p.version == hyper::Version::HTTP_2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_the_slot_does_not_trust_fails_probes_and_requests() {
    let dir = tempfile::tempdir().unwrap();
    let trusted = TestCa::new();
    write_ca(dir.path(), &trusted);
    let stranger = TestCa::new();
    let backend = TlsBackend::start(&stranger.issue(&["app.internal"]), H1_ONLY, None).await;
    let proxy = start(
        dir.path(),
        &route(
            &backend,
            ", tls_server_name = \"app.internal\", ca = \"ca.pem\"",
        ),
    );
    backend_state(&proxy, "unhealthy").await;
    let status = proxy.status();
    let check = status["routes"][0]["slots"][0]["backends"][0]["last_check"].to_string();
    assert!(check.contains("TLS"), "the check says why: {check}");
    let reply = Client::new(proxy.addr).get("a.test", "/").await.unwrap();
    assert_eq!(reply.status, 502, "{reply:?}");
    assert!(backend.served().is_empty(), "no request reached it");

    // A name the certificate does not hold fails the same way.
    let named = TlsBackend::start(&trusted.issue(&["other.internal"]), H1_ONLY, None).await;
    let dir2 = tempfile::tempdir().unwrap();
    write_ca(dir2.path(), &trusted);
    let proxy2 = start(
        dir2.path(),
        &route(
            &named,
            ", tls_server_name = \"app.internal\", ca = \"ca.pem\"",
        ),
    );
    backend_state(&proxy2, "unhealthy").await;
    let reply = Client::new(proxy2.addr).get("a.test", "/").await.unwrap();
    assert_eq!(reply.status, 502);
    assert!(named.served().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_requires_a_client_certificate_gets_the_configured_one() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    write_ca(dir.path(), &ca);
    let clients = TestCa::new();
    let identity = clients.issue(&["switchyard.internal"]);
    std::fs::write(dir.path().join("client.pem"), identity.fullchain_pem()).unwrap();
    std::fs::write(dir.path().join("client.key"), &identity.key_pem).unwrap();
    let backend = TlsBackend::start(&ca.issue(&["app.internal"]), H2_AND_H1, Some(&clients)).await;

    // Without a client certificate the backend refuses the handshake.
    let without = start(
        dir.path(),
        &route(
            &backend,
            ", tls_server_name = \"app.internal\", ca = \"ca.pem\"",
        ),
    );
    backend_state(&without, "unhealthy").await;
    let reply = Client::new(without.addr).get("a.test", "/").await.unwrap();
    assert_eq!(reply.status, 502);
    assert!(backend.served().is_empty());
    drop(without);

    let dir2 = tempfile::tempdir().unwrap();
    for file in ["ca.pem", "client.pem", "client.key"] {
        std::fs::copy(dir.path().join(file), dir2.path().join(file)).unwrap();
    }
    let with = start(
        dir2.path(),
        &route(
            &backend,
            ", tls_server_name = \"app.internal\", ca = \"ca.pem\", client_cert = \"client.pem\", client_key = \"client.key\"",
        ),
    );
    backend_state(&with, "healthy").await;
    let reply = Client::new(with.addr).get("a.test", "/mtls").await.unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, "tls HTTP/2.0 /mtls");
    let served = backend.served();
    assert_eq!(served.len(), 1);
    assert!(served[0].client_certificate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_ca_is_picked_up_by_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let old = TestCa::new();
    let new = TestCa::new();
    write_ca(dir.path(), &old);
    let backend = TlsBackend::start(&new.issue(&["app.internal"]), H1_ONLY, None).await;
    let routes = route(
        &backend,
        ", tls_server_name = \"app.internal\", ca = \"ca.pem\"",
    );
    let proxy = start(dir.path(), &routes);
    backend_state(&proxy, "unhealthy").await;

    write_ca(dir.path(), &new);
    proxy.cli_ok(&["reload"]);
    backend_state(&proxy, "healthy").await;
    let reply = Client::new(proxy.addr)
        .get("a.test", "/after")
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, "tls HTTP/1.1 /after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_goes_over_http1_to_a_backend_that_would_pick_h2() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    write_ca(dir.path(), &ca);
    let backend = TlsBackend::start(&ca.issue(&["app.internal"]), H2_AND_H1, None).await;
    let routes = route(
        &backend,
        ", tls_server_name = \"app.internal\", ca = \"ca.pem\"",
    )
    .replace(
        "active = \"secure\"",
        "active = \"secure\"\nupgrades = [\"echo\"]",
    );
    let proxy = start(dir.path(), &routes);
    backend_state(&proxy, "healthy").await;

    let mut conn = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    conn.write_all(
        b"GET /upgrade HTTP/1.1\r\nHost: a.test\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(conn.read(&mut byte).await.unwrap(), 1, "{head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    for message in [&b"ping"[..], b"and a longer second message"] {
        conn.write_all(message).await.unwrap();
        let mut echoed = vec![0u8; message.len()];
        conn.read_exact(&mut echoed).await.unwrap();
        assert_eq!(echoed, message);
    }
    let served = backend.served();
    assert_eq!(served.len(), 1);
    assert_eq!(served[0].version, hyper::Version::HTTP_11);
}
