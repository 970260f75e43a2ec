//! `[[notify]]`: when switchyard fails back by itself, a webhook on
//! loopback is told, signed with its secret, and `status` counts it.

use std::convert::Infallible;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use switchyard_tests::tls::TestCa;
use switchyard_tests::{Backend, Proxy};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

/// What a receiver got: the event header, the signature header, the body.
type Posted = mpsc::UnboundedReceiver<(String, String, serde_json::Value)>;

/// A webhook receiver on loopback: each POST's event header, signature
/// header and body go to the channel.
async fn receiver() -> (String, Posted) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/switchyard", listener.local_addr().unwrap());
    (url, serve(listener, None))
}

/// [`receiver`] over TLS, with a certificate for `localhost` from `ca`.
async fn tls_receiver(ca: &TestCa) -> (String, Posted) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let issued = ca.issue(&["localhost"]);
    let chain = vec![CertificateDer::from(issued.der().to_vec())];
    let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let url = format!("https://localhost:{port}/hooks/switchyard");
    (url, serve(listener, Some(acceptor)))
}

fn serve(listener: TcpListener, tls: Option<TlsAcceptor>) -> Posted {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (tx, tls) = (tx.clone(), tls.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let header = |name: &str| {
                            req.headers()
                                .get(name)
                                .map(|v| v.to_str().unwrap_or_default().to_string())
                                .unwrap_or_default()
                        };
                        let (event, signature) = (
                            header("x-switchyard-event"),
                            header("x-switchyard-signature"),
                        );
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let json = serde_json::from_slice(&body).unwrap_or_default();
                        let _ = tx.send((event, signature, json));
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::new())))
                    }
                });
                let http = hyper::server::conn::http1::Builder::new();
                match tls {
                    None => {
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                    Some(acceptor) => {
                        // A client that does not trust us ends here.
                        if let Ok(stream) = acceptor.accept(stream).await {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                }
            });
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fail_back_is_posted_to_the_webhook_signed_and_counted_in_status() {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let (url, mut posted) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let routes = format!(
        "[[route]]\nname = \"app\"\nactive = \"blue\"\n[route.slots]\nblue = [\"{}\"]\ngreen = [\"{}\"]\n\
         [route.health]\npath = \"/health\"\ninterval = \"100ms\"\nrise = 1\nfall = 2\n\n\
         [[notify]]\nurl = \"{url}\"\nsecret = \"s3cret\"\n",
        blue.addr, green.addr
    );
    let proxy = Proxy::start(dir.path(), &routes);
    proxy
        .wait_for_status("both healthy", |s| {
            let slots = &s["routes"][0]["slots"];
            slots[0]["health"] == "healthy" && slots[1]["health"] == "healthy"
        })
        .await;
    tokio::task::block_in_place(|| proxy.cli_ok(&["switch", "app", "green", "--no-guard"]));
    green.healthy.store(false, Ordering::Relaxed);

    let (event, signature, notice) =
        tokio::time::timeout(std::time::Duration::from_secs(10), posted.recv())
            .await
            .expect("a notice within 10 s")
            .unwrap();
    assert_eq!(event, "failback");
    assert!(
        signature.starts_with("sha256=") && signature.len() == 71,
        "{signature}"
    );
    assert_eq!(notice["event"], "failback");
    assert_eq!(notice["route"], "app");
    assert_eq!(
        (notice["from"].as_str(), notice["to"].as_str()),
        (Some("green"), Some("blue"))
    );
    assert!(
        notice["evidence"].as_str().unwrap().contains("unhealthy"),
        "{notice}"
    );

    let status = proxy
        .wait_for_status("the delivery counted", |s| s["notify"][0]["delivered"] == 1)
        .await;
    assert_eq!(status["notify"][0]["target"], url.as_str());
}

/// An https webhook is checked against `ca` (a private CA here; the
/// system's roots without it): the one that trusts the receiver's CA is
/// told, one whose `ca` is another CA refuses the receiver and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_https_webhook_is_told_when_its_certificate_checks_out_and_not_otherwise() {
    let ca = TestCa::new();
    let (trusted_url, mut trusted) = tls_receiver(&ca).await;
    let (doubted_url, mut doubted) = tls_receiver(&ca).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.issue(&["x"]).ca_pem).unwrap();
    std::fs::write(
        dir.path().join("other-ca.pem"),
        TestCa::new().issue(&["x"]).ca_pem,
    )
    .unwrap();
    let backend = Backend::start("blue").await;
    let routes = format!(
        "[[route]]\nname = \"app\"\nactive = \"blue\"\n[route.slots]\nblue = [\"{}\"]\n\n\
         [[notify]]\nurl = \"{trusted_url}\"\nca = \"ca.pem\"\nsecret = \"s3cret\"\n\n\
         [[notify]]\nurl = \"{doubted_url}\"\nca = \"other-ca.pem\"\n",
        backend.addr
    );
    let proxy = Proxy::start(dir.path(), &routes);
    let good = std::fs::read_to_string(dir.path().join("switchyard.toml")).unwrap();
    proxy.write_config_text(&good.replace("[[route]]", "[[route]\n"));

    let (event, signature, notice) =
        tokio::time::timeout(std::time::Duration::from_secs(10), trusted.recv())
            .await
            .expect("a notice within 10 s")
            .unwrap();
    assert_eq!(event, "config_rejected");
    assert!(signature.starts_with("sha256="), "{signature}");
    assert_eq!(notice["event"], "config_rejected");

    let status = proxy
        .wait_for_status("both deliveries settled", |s| {
            s["notify"].as_array().is_some_and(|targets| {
                targets.iter().any(|t| t["delivered"] == 1)
                    && targets.iter().any(|t| t["failed"] == 1)
            })
        })
        .await;
    let failed = status["notify"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["failed"] == 1)
        .unwrap();
    assert_eq!(failed["target"], doubted_url.as_str());
    let error = failed["last_error"].as_str().unwrap();
    assert!(
        error.contains("TLS") && error.contains("certificate"),
        "{error}"
    );
    assert!(
        doubted.try_recv().is_err(),
        "the untrusted receiver got nothing"
    );
}
