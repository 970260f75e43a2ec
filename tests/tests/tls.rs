//! HTTPS through the real binary: certificates chosen by SNI, TLS 1.2 and
//! 1.3, ALPN, HTTP/2 (and h2c), certificates rotated on disk under load,
//! bad certificate files at start and on reload, `redirect_https` and HSTS.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rustls::ClientConfig;
use switchyard_tests::tls::{connect, Issued, ShownCert, TestCa};
use switchyard_tests::{switchyard_bin, Backend, Client, Proxy};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const BOTH_VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// One test's directory, CA and backend: certificates are issued into
/// the directory and the config is written there.
struct Site {
    dir: tempfile::TempDir,
    ca: TestCa,
    blue: Backend,
    path: PathBuf,
}

impl Site {
    async fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("switchyard.toml");
        Site {
            dir,
            ca: TestCa::new(),
            blue: Backend::start("blue").await,
            path,
        }
    }

    /// A certificate for `names`, written as `<stem>.pem` and `<stem>.key`.
    fn issue(&self, stem: &str, names: &[&str]) -> Issued {
        let issued = self.ca.issue(names);
        issued.write(self.dir.path(), stem);
        issued
    }

    /// Writes `[server]` (with `server` lines) and `[tls]` (one listener on
    /// port 0, the `(cert, key)` files) and a route for a.test, x.b.test and
    /// other.test on `blue` (with `route` lines).
    fn configure(&self, pairs: &[(&str, &str)], server: &str, route: &str) {
        let dir = self.dir.path();
        let certificates: Vec<String> = pairs
            .iter()
            .map(|(cert, key)| {
                format!(
                    "{{ cert = \"{}\", key = \"{}\" }}",
                    dir.join(cert).display(),
                    dir.join(key).display()
                )
            })
            .collect();
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin_socket = \"admin.sock\"\nstate_dir = \"state\"\ndrain_timeout = \"5s\"\nthreads = 2\n{server}\n\
             [tls]\nlisten = [\"127.0.0.1:0\"]\ncertificates = [{}]\n\n\
             [[route]]\nname = \"app\"\nhosts = [\"a.test\", \"x.b.test\", \"other.test\"]\nactive = \"blue\"\n{route}\n\
             [route.slots]\nblue = [\"{}\"]\n",
            certificates.join(", "),
            self.blue.addr
        );
        std::fs::write(&self.path, text).unwrap();
    }

    fn start(&self) -> Proxy {
        Proxy::start_with_file(self.dir.path(), &self.path)
    }
}

/// Sends one HTTP/1.1 request on `stream` and reads the whole answer.
async fn http1_get<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    host: &str,
    path: &str,
) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    // A TLS peer may close without close_notify after `Connection: close`.
    let _ = stream.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// Makes HTTPS requests to a.test until the handshake shows `der` (up to
/// 5 s); every request must succeed meanwhile.
async fn served_soon(
    client: &Arc<ClientConfig>,
    seen: &ShownCert,
    tls: SocketAddr,
    der: &[u8],
    what: &str,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        https_get(client.clone(), tls, "a.test", "/").await.unwrap();
        if seen.lock().unwrap().as_deref() == Some(der) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} not served within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `status` once it shows a failed certificate load (up to 5 s).
async fn tls_load_failed(proxy: &Proxy) -> serde_json::Value {
    let mut status = proxy.status();
    for _ in 0..250 {
        if status["tls"]["last_load"]["result"] == "error" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        status = proxy.status();
    }
    status
}

/// One HTTPS request on a new connection: the answer, or why it failed.
async fn https_get(
    config: Arc<ClientConfig>,
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> Result<String, String> {
    let mut stream = connect(config, addr, host)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let answer = http1_get(&mut stream, host, path).await;
    if answer.starts_with("HTTP/1.1 200") {
        Ok(answer)
    } else {
        Err(format!("answer: {answer:?}"))
    }
}

#[tokio::test]
async fn sni_chooses_the_certificate_by_name_with_the_first_as_default() {
    let site = Site::new().await;
    let a = site.issue("a", &["a.test"]);
    let b = site.issue("b", &["*.b.test"]);
    site.configure(&[("a.pem", "a.key"), ("b.pem", "b.key")], "", "");
    let proxy = site.start();
    let ca = &site.ca;
    let tls = proxy.tls_addr();

    for versions in [
        &[&rustls::version::TLS13][..],
        &[&rustls::version::TLS12][..],
    ] {
        let (client, seen) = ca.client(&[b"http/1.1"], versions);
        // Each name gets its own certificate, verified against the CA.
        let answer = https_get(client.clone(), tls, "a.test", "/echo-headers")
            .await
            .unwrap();
        assert_eq!(seen.lock().unwrap().as_deref(), Some(a.der()));
        assert!(
            answer.contains("x-forwarded-proto: https"),
            "the backend is told the client used HTTPS: {answer}"
        );
        https_get(client.clone(), tls, "x.b.test", "/")
            .await
            .unwrap();
        assert_eq!(seen.lock().unwrap().as_deref(), Some(b.der()));
        // A name without a certificate gets the default (the first): the
        // client sees a.test's certificate and refuses it for this name.
        let refused = https_get(client.clone(), tls, "other.test", "/").await;
        assert!(refused.is_err(), "{refused:?}");
        assert_eq!(seen.lock().unwrap().as_deref(), Some(a.der()));
    }

    // ALPN: h2 first when the client offers it, else http/1.1.
    let (client, _) = ca.client(&[b"h2", b"http/1.1"], BOTH_VERSIONS);
    let stream = connect(client, tls, "a.test").await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (client, _) = ca.client(&[b"http/1.1"], BOTH_VERSIONS);
    let stream = connect(client, tls, "a.test").await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));

    // `status` lists what is served.
    let status = proxy.status();
    let served = status["tls"]["certificates"].as_array().unwrap();
    assert_eq!(served.len(), 2, "{status:#}");
    assert_eq!(served[1]["names"][0], "*.b.test");
    assert_eq!(served[0]["default"], true);
    assert_eq!(status["tls"]["last_load"]["result"], "ok");
}

/// Sends `count` HTTP/2 requests concurrently on one connection.
async fn h2_requests<S>(io: S, authority: &str, count: usize) -> Vec<(u16, String)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (client, connection) = h2::client::handshake(io).await.unwrap();
    tokio::spawn(connection);
    let mut streams = Vec::new();
    for i in 0..count {
        let mut client = client.clone().ready().await.unwrap();
        let request = http::Request::get(format!("https://{authority}/stream/{i}"))
            .body(())
            .unwrap();
        let (response, _) = client.send_request(request, true).unwrap();
        streams.push(response);
    }
    let mut answers = Vec::new();
    for response in streams {
        let response = response.await.unwrap();
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut text = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            text.extend_from_slice(&chunk);
        }
        answers.push((status, String::from_utf8(text).unwrap()));
    }
    answers
}

#[tokio::test]
async fn http2_over_tls_and_h2c_reach_http1_backends() {
    let site = Site::new().await;
    site.issue("a", &["a.test"]);
    site.configure(
        &[("a.pem", "a.key")],
        "h2c = true\nread_timeout = \"3s\"\n",
        "",
    );
    let proxy = site.start();
    let ca = &site.ca;

    let (client, _) = ca.client(&[b"h2"], BOTH_VERSIONS);
    let stream = connect(client.clone(), proxy.tls_addr(), "a.test")
        .await
        .unwrap();
    let answers = h2_requests(stream, "a.test", 20).await;
    for (i, (status, body)) in answers.iter().enumerate() {
        assert_eq!(*status, 200);
        assert_eq!(body, &format!("blue /stream/{i}"));
    }

    // A request body without a length goes upstream chunked and arrives whole.
    let stream = connect(client, proxy.tls_addr(), "a.test").await.unwrap();
    let (h2, connection) = h2::client::handshake(stream).await.unwrap();
    tokio::spawn(connection);
    let mut h2 = h2.ready().await.unwrap();
    let request = http::Request::post("https://a.test/echo-body")
        .body(())
        .unwrap();
    let (response, mut body) = h2.send_request(request, false).unwrap();
    body.send_data(Bytes::from_static(b"hello "), false)
        .unwrap();
    body.send_data(Bytes::from_static(b"over h2"), true)
        .unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    let mut received = Vec::new();
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        received.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(received, b"hello over h2");

    // h2c on the plain listener, and HTTP/1.1 still works there.
    let plain = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let answers = h2_requests(plain, "a.test", 3).await;
    assert!(
        answers.iter().all(|(status, _)| *status == 200),
        "{answers:?}"
    );
    let reply = Client::new(proxy.addr).get("a.test", "/x").await.unwrap();
    assert_eq!(reply.body, "blue /x");
}

#[tokio::test]
async fn a_certificate_rotated_on_disk_under_load_fails_no_handshake() {
    let site = Site::new().await;
    let first = site.issue("a", &["a.test"]);
    site.configure(&[("a.pem", "a.key")], "", "");
    let proxy = site.start();
    let (ca, dir) = (&site.ca, &site.dir);
    let tls = proxy.tls_addr();

    // Two clients each making a new TLS connection per request.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..2 {
        let (client, _) = ca.client(&[b"http/1.1"], BOTH_VERSIONS);
        let (stop, ok) = (stop.clone(), ok.clone());
        clients.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            for _ in 0..5_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match https_get(client.clone(), tls, "a.test", "/").await {
                    Ok(_) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failures.push(e),
                }
            }
            failures
        }));
    }

    let (probe, seen) = ca.client(&[b"http/1.1"], BOTH_VERSIONS);
    let mut last = first;
    for round in 0..3 {
        let next = ca.issue(&["a.test"]);
        // As a renewal writes them: the certificate, then (a moment later)
        // its key. In between the pair does not match, and must not be served.
        std::fs::write(dir.path().join("a.pem"), next.fullchain_pem()).unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        std::fs::write(dir.path().join("a.key"), &next.key_pem).unwrap();
        served_soon(&probe, &seen, tls, next.der(), &format!("rotation {round}")).await;
        assert_ne!(next.der(), last.der());
        last = next;
    }

    // A bad key is rejected: the last good pair goes on serving.
    std::fs::write(dir.path().join("a.key"), "not a key\n").unwrap();
    let status = tls_load_failed(&proxy).await;
    assert_eq!(status["tls"]["last_load"]["result"], "error", "{status:#}");
    let error = status["tls"]["last_load"]["error"].as_str().unwrap();
    assert!(error.contains("a.key"), "{error}");
    https_get(probe.clone(), tls, "a.test", "/").await.unwrap();
    assert_eq!(seen.lock().unwrap().as_deref(), Some(last.der()));

    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for client in clients {
        failures.extend(client.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        failures.len() as u64 + ok.load(Ordering::Relaxed),
        &failures[..failures.len().min(5)]
    );
    assert!(ok.load(Ordering::Relaxed) > 20, "the load ran");
    eprintln!(
        "{} HTTPS requests, each on a new full handshake, across 3 rotations and a rejected key: 0 failed",
        ok.load(Ordering::Relaxed)
    );
    assert!(proxy.log_text().contains("certificate reload rejected"));
}

#[tokio::test]
async fn a_bad_certificate_at_start_is_a_clear_error_and_exit_code() {
    let site = Site::new().await;
    site.issue("a", &["a.test"]);
    let other = site.ca.issue(&["a.test"]);
    let (dir, path) = (&site.dir, &site.path);
    // The key of another certificate.
    std::fs::write(dir.path().join("a.key"), &other.key_pem).unwrap();
    site.configure(&[("a.pem", "a.key")], "", "");

    for args in [&["check", "-c"][..], &["run", "-c"][..]] {
        let output = std::process::Command::new(switchyard_bin())
            .args(args)
            .arg(path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("does not belong to the certificate") && stderr.contains("a.key"),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }

    // A missing file is named too.
    std::fs::remove_file(dir.path().join("a.pem")).unwrap();
    let output = std::process::Command::new(switchyard_bin())
        .args(["run", "-c"])
        .arg(path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot read") && stderr.contains("a.pem"),
        "{stderr}"
    );
}

#[tokio::test]
async fn redirect_https_sends_plain_requests_to_the_tls_port_and_https_gets_hsts() {
    let site = Site::new().await;
    site.issue("a", &["a.test"]);
    site.configure(
        &[("a.pem", "a.key")],
        "",
        "redirect_https = true\nhsts_max_age = \"365d\"\n",
    );
    let proxy = site.start();
    let (ca, blue) = (&site.ca, &site.blue);
    let tls = proxy.tls_addr();

    let mut plain = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let answer = http1_get(&mut plain, "a.test:8080", "/shop?item=1").await;
    assert!(answer.starts_with("HTTP/1.1 301"), "{answer}");
    let location = format!("location: https://a.test:{}/shop?item=1\r\n", tls.port());
    assert!(
        answer.to_ascii_lowercase().contains(&location),
        "{answer} lacks {location}"
    );
    assert_eq!(blue.requests.load(Ordering::Relaxed), 0);

    let (client, _) = ca.client(&[b"http/1.1"], BOTH_VERSIONS);
    let answer = https_get(client, tls, "a.test", "/shop").await.unwrap();
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("strict-transport-security: max-age=31536000"),
        "{answer}"
    );
    assert!(answer.ends_with("blue /shop"), "{answer}");
}

#[tokio::test]
async fn a_config_edit_of_the_certificate_list_applies_and_a_listen_edit_needs_a_restart() {
    let site = Site::new().await;
    let a = site.issue("a", &["a.test"]);
    let renewed = site.issue("renewed", &["a.test"]);
    site.configure(&[("a.pem", "a.key")], "", "");
    let proxy = site.start();
    let (ca, blue) = (&site.ca, &site.blue);
    let tls = proxy.tls_addr();
    let (client, seen) = ca.client(&[b"http/1.1"], BOTH_VERSIONS);

    // A list naming a file that is not there: the reload is refused for
    // TLS and the running pair goes on.
    site.configure(&[("missing.pem", "a.key")], "", "");
    proxy.cli_ok(&["reload"]);
    let status = tls_load_failed(&proxy).await;
    let error = status["tls"]["last_load"]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(error.contains("missing.pem"), "{status:#}");
    let human = proxy.cli_ok(&["status"]);
    assert!(
        human.contains("CERTIFICATE RELOAD REJECTED") && human.contains("missing.pem"),
        "{human}"
    );
    assert!(
        human.contains(&format!("    {}", blue.addr)) && !human.contains("\"address\""),
        "one line per backend, not JSON: {human}"
    );
    https_get(client.clone(), tls, "a.test", "/").await.unwrap();
    assert_eq!(seen.lock().unwrap().as_deref(), Some(a.der()));

    // Another pair in the list: served without a restart.
    site.configure(&[("renewed.pem", "renewed.key")], "", "");
    proxy.cli_ok(&["reload"]);
    served_soon(&client, &seen, tls, renewed.der(), "the renewed pair").await;

    // `[tls] listen` cannot move while running: said, not half-applied.
    let moved = std::fs::read_to_string(&site.path).unwrap().replace(
        "[tls]\nlisten = [\"127.0.0.1:0\"]",
        "[tls]\nlisten = [\"127.0.0.2:0\"]",
    );
    std::fs::write(&site.path, moved).unwrap();
    proxy.cli_ok(&["reload"]);
    let status = proxy.status();
    assert_eq!(
        status["config"]["needs_restart"],
        serde_json::json!(["tls.listen"]),
        "{status:#}"
    );
    https_get(client, tls, "a.test", "/").await.unwrap();
}

#[tokio::test]
async fn failed_handshakes_are_counted_not_logged_as_errors() {
    let site = Site::new().await;
    site.issue("a", &["a.test"]);
    site.configure(&[("a.pem", "a.key")], "admin_http = \"127.0.0.1:0\"\n", "");
    let proxy = site.start();
    let ca = &site.ca;
    let tls = proxy.tls_addr();

    // A client that trusts another CA, and plain HTTP on the TLS port: what
    // a public port 443 sees all day.
    let (stranger, _) = TestCa::new().client(&[b"http/1.1"], BOTH_VERSIONS);
    assert!(connect(stranger, tls, "a.test").await.is_err());
    let mut plain = tokio::net::TcpStream::connect(tls).await.unwrap();
    let _ = http1_get(&mut plain, "a.test", "/").await;
    // The proxy serves on.
    let (client, _) = ca.client(&[b"http/1.1"], BOTH_VERSIONS);
    https_get(client, tls, "a.test", "/").await.unwrap();

    let admin = proxy.admin_http_addr();
    let mut failures = 0.0;
    for _ in 0..250 {
        let scrape = Client::new(admin)
            .get("admin", "/metrics")
            .await
            .unwrap()
            .body;
        failures = scrape
            .lines()
            .find_map(|l| l.strip_prefix("switchyard_tls_handshake_failures_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if failures >= 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(failures, 2.0, "both failed handshakes counted");
    let log = proxy.log_text();
    assert!(!log.contains("Downstream handshake"), "{log}");
}

/// rustls warns about some clients' quirks once per handshake (an IP
/// address sent as SNI, as wrk and some health checkers send it): on a
/// public port that would let any client write a log line per connection.
/// Those warnings are not logged; the handshake goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_quirk_in_the_handshake_writes_no_log_line() {
    let site = Site::new().await;
    site.issue("a", &["a.test"]);
    site.configure(&[("a.pem", "a.key")], "", "");
    let proxy = site.start();
    let mut tcp = tokio::net::TcpStream::connect(proxy.tls_addr())
        .await
        .unwrap();
    tcp.write_all(&client_hello_with_sni(b"127.0.0.1"))
        .await
        .unwrap();
    // The server answers with a handshake record: the hello was taken.
    let mut record = [0u8; 5];
    tcp.read_exact(&mut record).await.unwrap();
    assert_eq!(record[0], 0x16, "a handshake record, not an alert");
    drop(tcp);
    // The drain's line comes after anything the handshake logged.
    // SAFETY: kill only sends a signal to our own child.
    unsafe { libc::kill(proxy.pid(), libc::SIGTERM) };
    switchyard_tests::eventually(Duration::from_secs(10), "the drain's log line", || {
        proxy.log_text().contains("SIGTERM")
    })
    .await;
    let log = proxy.log_text();
    assert!(!log.contains("Illegal SNI"), "{log}");
}

/// A TLS 1.3 ClientHello (x25519, AES-128-GCM) naming `sni` as its server
/// name, written out byte by byte as a client that puts an IP address there
/// sends it.
fn client_hello_with_sni(sni: &[u8]) -> Vec<u8> {
    fn with_len16(body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }
    fn extension(kind: u16, body: &[u8]) -> Vec<u8> {
        let mut out = kind.to_be_bytes().to_vec();
        out.extend(with_len16(body));
        out
    }
    let mut name = vec![0u8]; // host_name
    name.extend(with_len16(sni));
    let mut key_share = 0x001du16.to_be_bytes().to_vec(); // x25519
    key_share.extend(with_len16(&[9u8; 32]));
    let extensions = [
        extension(0x0000, &with_len16(&name)),
        extension(0x002b, &[2, 0x03, 0x04]), // supported_versions: TLS 1.3
        extension(0x000a, &with_len16(&[0x00, 0x1d])), // supported_groups: x25519
        extension(0x000d, &with_len16(&[0x04, 0x03, 0x08, 0x04, 0x08, 0x07])), // signature_algorithms
        extension(0x0033, &with_len16(&key_share)),
    ]
    .concat();
    let mut hello = vec![0x03, 0x03]; // legacy_version
    hello.extend_from_slice(&[7u8; 32]); // random
    hello.push(32); // legacy_session_id
    hello.extend_from_slice(&[5u8; 32]);
    hello.extend(with_len16(&[0x13, 0x01])); // TLS_AES_128_GCM_SHA256
    hello.extend_from_slice(&[1, 0]); // no compression
    hello.extend(with_len16(&extensions));
    let mut handshake = vec![1u8]; // client_hello
    handshake.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
    handshake.extend(hello);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend(with_len16(&handshake));
    record
}
