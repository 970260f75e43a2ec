//! The admin socket's bounds, on a real Unix socket with short limits:
//! idle connections are closed, and connections beyond the cap are refused
//! with an answer instead of hanging.

use std::path::Path;
use std::time::{Duration, Instant};

use switchyard_control::admin_server::{self, AdminAccess, AdminLimits};
use switchyard_control::Controller;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

async fn start(dir: &Path, limits: AdminLimits) -> std::path::PathBuf {
    let config_path = dir.join("switchyard.toml");
    let text = "[server]\nstate_dir = \"state\"\n[[route]]\nname = \"app\"\nactive = \"blue\"\n[route.slots]\nblue = [\"127.0.0.1:9\"]\n";
    std::fs::write(&config_path, text).unwrap();
    let config = switchyard_conf::load(&config_path).unwrap();
    let (controller, _task) = Controller::start(config, config_path);
    let socket = dir.join("admin.sock");
    let listener = admin_server::bind(&socket).await.unwrap();
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _keep_open = _stop;
        admin_server::serve(listener, controller, AdminAccess::new(&[]), limits, stopped).await
    });
    socket
}

async fn ask(stream: &mut UnixStream, line: &str) -> String {
    stream.write_all(line.as_bytes()).await.unwrap();
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).await.unwrap();
    answer
}

#[tokio::test]
async fn an_idle_connection_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let limits = AdminLimits {
        max_connections: 4,
        idle_timeout: Duration::from_millis(150),
    };
    let socket = start(dir.path(), limits).await;
    let mut stream = UnixStream::connect(&socket).await.unwrap();
    assert!(ask(&mut stream, "{\"cmd\":\"status\"}\n")
        .await
        .contains("\"ok\":true"));
    let started = Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the server closes an idle connection");
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "not before the idle timeout"
    );
}

#[tokio::test]
async fn connections_beyond_the_cap_are_refused_with_an_answer() {
    let dir = tempfile::tempdir().unwrap();
    let limits = AdminLimits {
        max_connections: 2,
        idle_timeout: Duration::from_secs(30),
    };
    let socket = start(dir.path(), limits).await;
    let mut first = UnixStream::connect(&socket).await.unwrap();
    let mut second = UnixStream::connect(&socket).await.unwrap();
    // Both are being served once they have answered.
    assert!(ask(&mut first, "{\"cmd\":\"status\"}\n")
        .await
        .contains("\"ok\":true"));
    assert!(ask(&mut second, "{\"cmd\":\"status\"}\n")
        .await
        .contains("\"ok\":true"));
    let mut third = UnixStream::connect(&socket).await.unwrap();
    let mut answer = String::new();
    BufReader::new(&mut third)
        .read_line(&mut answer)
        .await
        .unwrap();
    assert!(answer.contains("too many admin connections"), "{answer}");
    drop(first);
    // A freed place is served again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut fourth = UnixStream::connect(&socket).await.unwrap();
        let answer = ask(&mut fourth, "{\"cmd\":\"status\"}\n").await;
        if answer.contains("\"ok\":true") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the freed place was never served: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_file_that_is_not_a_socket_is_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let precious = dir.path().join("precious.txt");
    std::fs::write(&precious, "keep me").unwrap();
    let error = admin_server::bind(&precious).await.unwrap_err();
    assert!(error.to_string().contains("is not a socket"), "{error}");
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me");
}

#[tokio::test]
async fn a_stale_socket_is_replaced_and_a_live_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("admin.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let live = admin_server::bind(&socket)
        .await
        .expect("a stale socket file is replaced");
    let error = admin_server::bind(&socket).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("another switchyard already answers"),
        "{error}"
    );
    drop(live);
}
