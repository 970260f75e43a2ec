//! `[[notify]]`: when switchyard fails back by itself, a webhook on
//! loopback is told, signed with its secret, and `status` counts it.

use std::convert::Infallible;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use switchyard_tests::{Backend, Proxy};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// A webhook receiver on loopback: each POST's event header, signature
/// header and body go to the channel.
async fn receiver() -> (
    String,
    mpsc::UnboundedReceiver<(String, String, serde_json::Value)>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/switchyard", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
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
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, rx)
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
