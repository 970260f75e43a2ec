//! `switchyard demo` as a newcomer runs it: it serves, the printed commands
//! work, and Ctrl-C stops everything with exit 0.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use switchyard_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_serves_switches_and_stops_on_ctrl_c() {
    // Port 0: never collide with a demo someone is running on 8080.
    let mut child = Command::new(switchyard_bin())
        .args(["demo", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut url = None;
    let mut socket = None;
    let mut dashboard = None;
    while url.is_none() || socket.is_none() || dashboard.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the demo prints its instructions");
        if let Some(rest) = line.split("running on http://").nth(1) {
            url = rest.split_whitespace().next().map(str::to_owned);
        }
        if let Some(path) = line.trim().strip_prefix("export SWITCHYARD_SOCKET=") {
            socket = Some(path.to_string());
        }
        if let Some(rest) = line.strip_prefix("The dashboard: http://") {
            dashboard = rest.split('/').next().map(str::to_owned);
        }
    }
    let addr = url.unwrap().parse().unwrap();
    let socket = socket.unwrap();

    // The dashboard is on, on loopback, with actions behind a token.
    let dashboard: std::net::SocketAddr = dashboard.unwrap().parse().unwrap();
    assert!(dashboard.ip().is_loopback());
    let mut admin = Client::new(dashboard);
    let page = admin.get("localhost", "/").await.unwrap();
    assert!(
        page.body.contains("<title>switchyard</title>"),
        "{}",
        page.body
    );
    let session = admin.get("localhost", "/api/session").await.unwrap();
    assert!(
        session.body.contains("\"actions\":true"),
        "{}",
        session.body
    );

    let mut client = Client::new(addr);
    let first = client.get("localhost", "/").await.unwrap();
    assert!(first.body.starts_with("hello from blue"), "{}", first.body);

    let switched = Command::new(switchyard_bin())
        .args(["switch", "demo", "green"])
        .env("SWITCHYARD_SOCKET", &socket)
        .output()
        .unwrap();
    assert!(
        switched.status.success(),
        "{}",
        String::from_utf8_lossy(&switched.stderr)
    );
    let after = client.get("localhost", "/").await.unwrap();
    assert!(after.body.starts_with("hello from green"), "{}", after.body);

    // SAFETY: kill only signals our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let mut status = None;
    wait_until(Duration::from_secs(20), "the demo to exit", || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    assert!(status.unwrap().success());
    assert!(
        !std::path::Path::new(&socket).exists(),
        "the demo cleans up after itself"
    );
}
