//! Delivery against a local receiver and a local command.

use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::*;
use crate::notify::webhook::signature;
use crate::notify::NoticeKind;

fn notice() -> Notice {
    Notice {
        event: NoticeKind::Failback,
        route: Some("app".into()),
        from: Some("green".into()),
        to: Some("blue".into()),
        evidence: "slot green unhealthy: 127.0.0.1:3002 status 500".into(),
        time: "2026-12-01T12:00:00Z".into(),
    }
}

/// A receiver on loopback answering `status`; what it got goes to the
/// returned channel as (event header, signature header, body).
async fn receiver(status: u16) -> (String, mpsc::UnboundedReceiver<(String, String, Vec<u8>)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
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
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_string()
                        };
                        let (event, signed) = (
                            header("x-switchyard-event"),
                            header("x-switchyard-signature"),
                        );
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let _ = tx.send((event, signed, body.to_vec()));
                        let answer = hyper::Response::builder()
                            .status(status)
                            .body(Full::new(Bytes::new()))
                            .unwrap();
                        Ok::<_, std::convert::Infallible>(answer)
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

fn collecting() -> (
    Arc<Mutex<Vec<Delivered>>>,
    impl Fn(Delivered) + Send + Sync + 'static,
) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let into = seen.clone();
    (seen, move |d| into.lock().unwrap().push(d))
}

async fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..2_000 {
        if let Some(found) = f() {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn a_webhook_gets_the_notice_as_signed_json() {
    let (url, mut got) = receiver(204).await;
    let (seen, report) = collecting();
    let target = NotifyConfig {
        url: Some(url.clone()),
        secret: Some("s3cret".into()),
        ca: None,
        exec: None,
        events: vec![],
    };
    let notifier = Notifier::start(vec![target], report);
    notifier.send(notice());
    let (event, signed, body) = got.recv().await.unwrap();
    assert_eq!(event, "failback");
    assert_eq!(signed, signature("s3cret", &body));
    let sent: Notice = serde_json::from_slice(&body).unwrap();
    assert_eq!(sent, notice());
    let delivered = until("the report", || seen.lock().unwrap().first().cloned()).await;
    assert_eq!(
        delivered,
        Delivered {
            target: url,
            result: Ok(()),
            attempts: 1
        }
    );
}

#[tokio::test]
async fn a_failing_webhook_is_retried_then_reported_and_other_events_are_filtered() {
    let (url, mut got) = receiver(500).await;
    let (seen, report) = collecting();
    let target = NotifyConfig {
        url: Some(url.clone()),
        secret: None,
        ca: None,
        exec: None,
        events: vec!["failback".into()],
    };
    let notifier = Notifier::start(vec![target], report);
    let mut other = notice();
    other.event = NoticeKind::GuardPassed;
    notifier.send(other);
    notifier.send(notice());
    let delivered = until("the report", || seen.lock().unwrap().first().cloned()).await;
    assert_eq!(delivered.attempts, DELIVERY_ATTEMPTS);
    assert_eq!(delivered.result, Err("status 500".into()));
    let mut events = Vec::new();
    while let Ok((event, signed, _)) = got.try_recv() {
        assert_eq!(signed, "", "no secret, no signature");
        events.push(event);
    }
    assert_eq!(
        events,
        vec!["failback"; DELIVERY_ATTEMPTS as usize],
        "guard_passed was not wanted"
    );
}

#[tokio::test]
async fn a_command_gets_the_notice_on_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("notice.json");
    let (seen, report) = collecting();
    let target = NotifyConfig {
        url: None,
        secret: None,
        ca: None,
        exec: Some(vec![
            "sh".into(),
            "-c".into(),
            format!("cat > {}", out.display()),
        ]),
        events: vec![],
    };
    let notifier = Notifier::start(vec![target], report);
    notifier.send(notice());
    let delivered = until("the report", || seen.lock().unwrap().first().cloned()).await;
    assert_eq!(delivered.result, Ok(()));
    let written: Notice = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(written, notice());

    let failing = NotifyConfig {
        exec: Some(vec!["sh".into(), "-c".into(), "exit 3".into()]),
        ..NotifyConfig::default()
    };
    notifier.set_targets(&[failing]);
    notifier.send(notice());
    let failed = until("the second report", || seen.lock().unwrap().get(1).cloned()).await;
    assert!(failed.result.unwrap_err().contains("exit status: 3"));
}
