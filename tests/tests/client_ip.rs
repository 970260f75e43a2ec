//! The real client's address behind a load balancer, through the real
//! binary: from `trusted_proxies` the rightmost untrusted
//! `X-Forwarded-For` hop is the client, from anyone else the peer is and
//! its claim is dropped; a `proxy_protocol` listener takes the client from
//! a PROXY header (v1 or v2, however it is cut up by the network, before
//! TLS too) and refuses a connection without one. The client so found is
//! what `override_cidrs` judges and what the backend is told.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::ServerName;
use switchyard_tests::tls::TestCa;
use switchyard_tests::wire::{recording_backend, Conn, Seen, SPLIT_PAUSE};
use switchyard_tests::Proxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Two slots on recording backends; a request may ask for `green` with
/// `x-switchyard-slot`, which counts only from 203.0.113.0/24.
struct Site {
    dir: tempfile::TempDir,
    blue: (switchyard_tests::raw::ScriptedBackend, Arc<Mutex<Seen>>),
    green: (switchyard_tests::raw::ScriptedBackend, Arc<Mutex<Seen>>),
}

impl Site {
    async fn new() -> Site {
        Site {
            dir: tempfile::tempdir().unwrap(),
            blue: recording_backend().await,
            green: recording_backend().await,
        }
    }

    fn start(&self, server: &str, tls: &str) -> Proxy {
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin_socket = \"admin.sock\"\nstate_dir = \"state\"\nthreads = 2\n{server}\n{tls}\n\
             [[route]]\nname = \"app\"\nactive = \"blue\"\n\
             [route.preview]\noverride_cidrs = [\"203.0.113.0/24\"]\n\
             [route.slots]\nblue = [\"{}\"]\ngreen = [\"{}\"]\n",
            self.blue.0.addr, self.green.0.addr
        );
        let path = self.dir.path().join("switchyard.toml");
        std::fs::write(&path, text).unwrap();
        Proxy::start_with_file(self.dir.path(), &path)
    }

    /// The `X-Forwarded-For` of every request each slot got, in order.
    fn forwarded(&self) -> (Vec<String>, Vec<String>) {
        let of = |seen: &Arc<Mutex<Seen>>| {
            seen.lock()
                .unwrap()
                .requests
                .iter()
                .map(|(_, r)| r.header("x-forwarded-for").unwrap_or("").to_string())
                .collect()
        };
        (of(&self.blue.1), of(&self.green.1))
    }
}

const ASK_GREEN: &str = "x-switchyard-slot: green\r\n";

fn request(extra: &str) -> Vec<u8> {
    format!("GET / HTTP/1.1\r\nHost: app.test\r\n{extra}\r\n").into_bytes()
}

async fn ask(proxy: SocketAddr, extra: &str) {
    let mut conn = Conn::connect(proxy).await;
    conn.stream.write_all(&request(extra)).await.unwrap();
    assert_eq!(conn.read_message(false).await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_rightmost_untrusted_hop_is_the_client() {
    let site = Site::new().await;
    let proxy = site.start("trusted_proxies = [\"127.0.0.0/8\", \"10.0.0.7\"]\n", "");
    // A client's own claim at the left is passed over: 203.0.113.9 is who
    // the (trusted) balancer at 10.0.0.7 saw.
    ask(
        proxy.addr,
        &format!("x-forwarded-for: 198.51.100.1, 203.0.113.9, 10.0.0.7\r\n{ASK_GREEN}"),
    )
    .await;
    // Here the balancer saw 198.51.100.1: not allowed to ask for green.
    ask(
        proxy.addr,
        &format!("x-forwarded-for: 203.0.113.9, 198.51.100.1\r\n{ASK_GREEN}"),
    )
    .await;
    let (blue, green) = site.forwarded();
    assert_eq!(green, ["198.51.100.1, 203.0.113.9, 10.0.0.7, 127.0.0.1"]);
    assert_eq!(blue, ["203.0.113.9, 198.51.100.1, 127.0.0.1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_an_untrusted_peer_the_claim_is_dropped() {
    let site = Site::new().await;
    let proxy = site.start("trusted_proxies = [\"10.0.0.0/8\"]\n", "");
    ask(
        proxy.addr,
        &format!("x-forwarded-for: 203.0.113.9\r\n{ASK_GREEN}"),
    )
    .await;
    let (blue, green) = site.forwarded();
    assert!(green.is_empty(), "a claimed address authorised nothing");
    assert_eq!(blue, ["127.0.0.1"], "and it did not reach the backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_trusted_proxies_the_header_goes_on_as_before() {
    let site = Site::new().await;
    let proxy = site.start("", "");
    ask(
        proxy.addr,
        &format!("x-forwarded-for: 203.0.113.9\r\n{ASK_GREEN}"),
    )
    .await;
    let (blue, green) = site.forwarded();
    assert!(green.is_empty(), "the peer, 127.0.0.1, is the client");
    assert_eq!(blue, ["203.0.113.9, 127.0.0.1"]);
}

fn v2_header(source: [u8; 4], port: u16) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    header.extend_from_slice(&source);
    header.extend_from_slice(&[127, 0, 0, 1]);
    header.extend_from_slice(&port.to_be_bytes());
    header.extend_from_slice(&80u16.to_be_bytes());
    header
}

/// Every split of header and request (the header's last byte arriving
/// with the request's first, or alone), then a second request on the same
/// connection: each reaches green, as 203.0.113.9 asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_protocol_header_names_the_client_however_it_arrives() {
    let site = Site::new().await;
    let proxy = site.start("proxy_protocol = true\n", "");
    let v1 = b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 80\r\n".to_vec();
    let v2 = v2_header([203, 0, 113, 9], 40000);
    let mut sent = 0;
    for header in [&v1, &v2] {
        let mut whole = header.clone();
        whole.extend_from_slice(&request(ASK_GREEN));
        for split in 1..whole.len() {
            let mut conn = Conn::connect(proxy.addr).await;
            conn.write_parts(&[&whole[..split], &whole[split..]], SPLIT_PAUSE)
                .await
                .unwrap();
            assert_eq!(
                conn.read_message(false).await.unwrap().status(),
                200,
                "split {split}"
            );
            conn.stream.write_all(&request(ASK_GREEN)).await.unwrap();
            assert_eq!(conn.read_message(false).await.unwrap().status(), 200);
            sent += 2;
        }
    }
    let (blue, green) = site.forwarded();
    assert!(blue.is_empty(), "{blue:?}");
    assert_eq!(green.len(), sent);
    assert!(green.iter().all(|xff| xff == "203.0.113.9"), "{green:?}");

    // `UNKNOWN` and `LOCAL` (a balancer's health check) leave the peer.
    for header in [
        b"PROXY UNKNOWN\r\n".to_vec(),
        b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00".to_vec(),
    ] {
        let mut conn = Conn::connect(proxy.addr).await;
        conn.stream.write_all(&header).await.unwrap();
        conn.stream.write_all(&request("")).await.unwrap();
        assert_eq!(conn.read_message(false).await.unwrap().status(), 200);
    }
    assert_eq!(site.forwarded().0, ["127.0.0.1", "127.0.0.1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_protocol_listener_refuses_connections_without_a_good_header() {
    let site = Site::new().await;
    let proxy = site.start("proxy_protocol = true\n", "");
    for opening in [
        request(""),
        b"PROXY TCP4 203.0.113.9 127.0.0.1 99999 80\r\nGET / HTTP/1.1\r\n\r\n".to_vec(),
        b"PROXY TCP4 203.0.113.9 127.0.0.1 1 80 and then some more words that run on past the limit of one hundred and seven bytes\r\n".to_vec(),
        b"\r\n\r\n\0\r\nQUIT\n\x31\x11\x00\x0c".to_vec(),
    ] {
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        let _ = stream.write_all(&opening).await;
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "closed without an answer: {:?}",
            String::from_utf8_lossy(&answer)
        );
    }
    let (blue, green) = site.forwarded();
    assert!(blue.is_empty() && green.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_comes_before_the_tls_handshake() {
    let site = Site::new().await;
    let ca = TestCa::new();
    let cert = ca.issue(&["app.test"]).write(site.dir.path(), "app");
    let tls = format!(
        "[tls]\nlisten = [\"127.0.0.1:0\"]\nproxy_protocol = true\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]\n",
        cert.cert.display(),
        cert.key.display()
    );
    let proxy = site.start("", &tls);
    let (client, _) = ca.client(&[b"http/1.1"], rustls::DEFAULT_VERSIONS);
    let mut tcp = TcpStream::connect(proxy.tls_addr()).await.unwrap();
    tcp.write_all(&v2_header([203, 0, 113, 9], 40000))
        .await
        .unwrap();
    let name = ServerName::try_from("app.test".to_string()).unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(client)
        .connect(name, tcp)
        .await
        .unwrap();
    stream.write_all(&request(ASK_GREEN)).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = stream.read(&mut answer).await.unwrap();
    assert!(
        answer[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );
    assert_eq!(site.forwarded().1, ["203.0.113.9"]);
    // The plain listener takes no header: it was not asked to.
    ask(proxy.addr, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxies_apply_on_reload_and_proxy_protocol_waits_for_a_restart() {
    let site = Site::new().await;
    let proxy = site.start("", "");
    let claim = format!("x-forwarded-for: 203.0.113.9\r\n{ASK_GREEN}");
    ask(proxy.addr, &claim).await;
    assert_eq!(site.forwarded().1.len(), 0);

    let text = std::fs::read_to_string(&proxy.config).unwrap();
    let trusted = text.replacen(
        "[server]\n",
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n",
        1,
    );
    std::fs::write(&proxy.config, &trusted).unwrap();
    proxy.cli_ok(&["reload"]);
    ask(proxy.addr, &claim).await;
    assert_eq!(site.forwarded().1, ["203.0.113.9, 127.0.0.1"]);

    let both = trusted.replacen("[server]\n", "[server]\nproxy_protocol = true\n", 1);
    std::fs::write(&proxy.config, both).unwrap();
    proxy.cli_ok(&["reload"]);
    let status = proxy.status();
    assert_eq!(
        status["config"]["needs_restart"],
        serde_json::json!(["server.proxy_protocol"]),
        "{status:#}"
    );
    // Not half-applied: connections without a header are still served.
    ask(proxy.addr, "").await;
}
