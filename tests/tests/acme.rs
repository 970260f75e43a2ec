//! `[tls.acme]` against pebble, a real RFC 8555 CA, on loopback: the first
//! certificate is ordered and served (HTTP-01 answered by the plain
//! listener), stored 0600 under the state directory, reused by a restart
//! without a new order, renewed at two thirds of its lifetime, and a failed
//! order keeps the current certificate serving and shows in `status`.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use switchyard_tests::pebble::{free_port, Pebble};
use switchyard_tests::{Backend, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config(dir: &Path, pebble: &Pebble, http_port: u16, backend: &Backend) -> std::path::PathBuf {
    std::fs::write(dir.join("pebble-ca.pem"), &pebble.https_ca_pem).unwrap();
    // Every notice's JSON is appended to notices.jsonl.
    let notices = dir.join("notices.jsonl");
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:{http_port}\"]\nadmin_socket = \"admin.sock\"\nadmin_http = \"127.0.0.1:0\"\nstate_dir = \"state\"\ndrain_timeout = \"5s\"\nthreads = 2\n\n\
         [tls]\nlisten = [\"127.0.0.1:0\"]\n\n\
         [tls.acme]\nemail = \"ops@example.com\"\ndirectory = \"{}\"\nca_roots = \"pebble-ca.pem\"\n\n\
         [[notify]]\nexec = [\"sh\", \"-c\", \"cat >> {}; echo >> {}\"]\n\n\
         [[route]]\nname = \"app\"\nhosts = [\"app.test\"]\nactive = \"blue\"\n[route.slots]\nblue = [\"{}\"]\n",
        pebble.directory,
        notices.display(),
        notices.display(),
        backend.addr
    );
    let path = dir.join("switchyard.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// One test's world: a backend, pebble issuing certificates valid for
/// `validity` (its default when `None`), `app.test` resolvable for it when
/// `resolvable`, and the proxy ordering from it.
struct World {
    dir: tempfile::TempDir,
    _backend: Backend,
    pebble: Pebble,
    config: std::path::PathBuf,
    proxy: Proxy,
}

async fn world(validity: Option<Duration>, resolvable: bool) -> World {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::start("blue").await;
    let http_port = free_port();
    let pebble = Pebble::start(dir.path(), http_port, validity);
    if resolvable {
        pebble.add_host("app.test").await;
    }
    let config = config(dir.path(), &pebble, http_port, &backend);
    let proxy = Proxy::start_with_file(dir.path(), &config);
    World {
        dir,
        _backend: backend,
        pebble,
        config,
        proxy,
    }
}

/// `status.acme[0]` once `condition` holds for it.
async fn acme_status(
    proxy: &Proxy,
    what: &str,
    limit: Duration,
    condition: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let status = proxy
        .wait_for_status_within(limit, what, |s| condition(&s["acme"][0]))
        .await;
    status["acme"][0].clone()
}

/// What `/metrics` says.
async fn metrics(proxy: &Proxy) -> String {
    switchyard_tests::Client::new(proxy.admin_http_addr())
        .get("admin", "/metrics")
        .await
        .unwrap()
        .body
}

/// A GET over HTTPS to `proxy` naming `app.test`, trusting only `roots`:
/// the response and the certificate shown.
async fn https_get(proxy: &Proxy, roots: rustls::RootCertStore) -> (String, Vec<u8>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(proxy.tls_addr())
        .await
        .unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("app.test").unwrap(), tcp)
        .await
        .expect("a handshake checked against pebble's root, for app.test");
    let shown = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    tls.write_all(b"GET /hello HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    (String::from_utf8_lossy(&response).into_owned(), shown)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_is_ordered_served_stored_and_reused_after_a_restart() {
    let World {
        dir,
        _backend,
        pebble,
        config,
        proxy,
    } = world(None, true).await;

    let host = acme_status(
        &proxy,
        "the first certificate",
        Duration::from_secs(30),
        |h| h["issued"] == 1,
    )
    .await;
    assert_eq!(host["host"], "app.test");
    assert_eq!(host["failures"], 0);
    assert!(host.get("last_error").is_none(), "{host}");
    let not_after = host["not_after_unix"].as_i64().unwrap();
    let renew_at = host["renew_at_unix"].as_i64().unwrap();
    assert!(renew_at < not_after);

    let roots = pebble.root().await;
    let (response, first) = https_get(&proxy, roots.clone()).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("blue /hello"), "{response}");

    let stored = dir.path().join("state/acme");
    for file in ["account.json", "certs/app.test.crt", "certs/app.test.key"] {
        let mode = std::fs::metadata(stored.join(file)).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600, "{file}");
    }

    // A restart serves what is stored and orders nothing.
    drop(proxy);
    let proxy = Proxy::start_with_file(dir.path(), &config);
    let host = acme_status(
        &proxy,
        "the stored certificate",
        Duration::from_secs(10),
        |h| h["not_after_unix"].as_i64() == Some(not_after),
    )
    .await;
    assert_eq!(host["issued"], 0, "no new order: {host}");
    let (response, again) = https_get(&proxy, roots).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(again, first, "the same certificate");
    assert!(!proxy.log_text().contains("certificate issued"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_is_renewed_at_two_thirds_of_its_lifetime() {
    // 9 s certificates: renewed 6 s after they start.
    let world = world(Some(Duration::from_secs(9)), true).await;
    let (dir, pebble, proxy) = (&world.dir, &world.pebble, &world.proxy);
    let first = acme_status(
        proxy,
        "the first certificate",
        Duration::from_secs(30),
        |h| h["issued"] == 1,
    )
    .await;
    let first_leaf = stored_leaf(dir.path());
    let renewed = acme_status(proxy, "the renewal", Duration::from_secs(30), |h| {
        h["issued"] == 2
    })
    .await;
    assert!(renewed["not_after_unix"].as_i64() > first["not_after_unix"].as_i64());
    let renewed_leaf = stored_leaf(dir.path());
    assert_ne!(renewed_leaf, first_leaf, "a new certificate is stored");
    // It serves new handshakes (the TLS store reloads as it is stored; a
    // third one may already have replaced it under a slow machine, which
    // the status then counts).
    let roots = pebble.root().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (response, shown) = https_get(proxy, roots.clone()).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        if shown == stored_leaf(dir.path()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the stored certificate is not the one served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The leaf certificate (DER) stored for app.test.
fn stored_leaf(dir: &Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(dir.join("state/acme/certs/app.test.crt")).unwrap();
    rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
        .next()
        .expect("a leaf")
        .unwrap()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_renewal_keeps_the_current_certificate_and_says_why() {
    // 24 s certificates, renewed 16 s in.
    let world = world(Some(Duration::from_secs(24)), true).await;
    let (dir, pebble, proxy) = (&world.dir, &world.pebble, &world.proxy);
    acme_status(
        proxy,
        "the first certificate",
        Duration::from_secs(30),
        |h| h["issued"] == 1,
    )
    .await;
    // At once, well before the renewal: the CA can no longer reach us.
    pebble.remove_host("app.test").await;
    let roots = pebble.root().await;
    let (_, shown_first) = https_get(proxy, roots.clone()).await;

    let failed = acme_status(proxy, "the failed renewal", Duration::from_secs(30), |h| {
        h["failures"] == 1
    })
    .await;
    let error = failed["last_error"].as_str().unwrap();
    assert!(error.contains("validation failed"), "{error}");
    assert!(failed["retry_at_unix"].as_i64().is_some(), "{failed}");
    assert_eq!(failed["issued"], 1);
    let (response, shown) = https_get(proxy, roots).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(shown, shown_first, "the current certificate still serves");
    assert!(proxy.log_text().contains("certificate order failed"));
    let notices = dir.path().join("notices.jsonl");
    switchyard_tests::wait_until(Duration::from_secs(5), "the notice", || {
        std::fs::read_to_string(&notices).is_ok_and(|n| n.contains("certificate_order_failed"))
    });
    let notice = std::fs::read_to_string(&notices).unwrap();
    assert!(notice.contains("app.test"), "{notice}");
    let metrics = metrics(proxy).await;
    assert!(
        metrics.contains("switchyard_acme_orders_total{result=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchyard_acme_orders_total{result=\"error\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_challenge_that_fails_leaves_no_certificate_and_plain_http_serving() {
    // app.test is never added: pebble cannot resolve it to validate.
    let world = world(None, false).await;
    let (dir, proxy) = (&world.dir, &world.proxy);
    let host = acme_status(proxy, "the failed order", Duration::from_secs(30), |h| {
        h["failures"] == 1
    })
    .await;
    assert_eq!(host["issued"], 0);
    assert!(host.get("not_after_unix").is_none(), "{host}");
    assert!(
        host["last_error"]
            .as_str()
            .unwrap()
            .contains("validation failed"),
        "{host}"
    );
    assert!(!dir.path().join("state/acme/certs/app.test.crt").exists());
    let reply = switchyard_tests::Client::new(proxy.addr)
        .get("app.test", "/plain")
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "plain HTTP goes on: {reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn_01_is_answered_by_the_tls_listener() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::start("blue").await;
    let (http_port, tls_port) = (free_port(), free_port());
    // pebble validates on the TLS port only; nothing answers its HTTP port.
    let pebble = Pebble::start_with_tls_port(dir.path(), free_port(), tls_port, None);
    pebble.add_host("app.test").await;
    let path = config(dir.path(), &pebble, http_port, &backend);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(
            "[tls]\nlisten = [\"127.0.0.1:0\"]",
            &format!("[tls]\nlisten = [\"127.0.0.1:{tls_port}\"]"),
        )
        .replace(
            "ca_roots = \"pebble-ca.pem\"\n",
            "ca_roots = \"pebble-ca.pem\"\nchallenges = [\"tls-alpn-01\"]\n",
        );
    std::fs::write(&path, text).unwrap();
    let proxy = Proxy::start_with_file(dir.path(), &path);
    let host = acme_status(
        &proxy,
        "a certificate by tls-alpn-01",
        Duration::from_secs(30),
        |h| h["issued"] == 1 || h["failures"] == 1,
    )
    .await;
    assert_eq!(host["issued"], 1, "{host}");
    let (response, _) = https_get(&proxy, pebble.root().await).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}
