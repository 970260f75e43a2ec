//! The admin socket's bounds, on a real Unix socket with short limits:
//! idle connections are closed, a new connection beyond the cap takes the
//! place of the longest idle one, and one beyond a cap of busy connections
//! is refused with an answer instead of hanging.

use std::path::Path;
use std::time::{Duration, Instant};

use switchyard_control::admin_server::{self, AdminAccess, AdminLimits};
use switchyard_control::Controller;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

async fn start(dir: &Path, limits: AdminLimits) -> std::path::PathBuf {
    let config_path = dir.join("switchyard.toml");
    // green never turns healthy (nothing listens on the discard port), so a
    // switch to it keeps its connection busy until its timeout.
    let text = "[server]\nstate_dir = \"state\"\n[[route]]\nname = \"app\"\nactive = \"blue\"\n[route.slots]\nblue = [\"127.0.0.1:9\"]\ngreen = [\"127.0.0.1:9\"]\n";
    std::fs::write(&config_path, text).unwrap();
    let config = switchyard_conf::load(&config_path).unwrap();
    let (controller, _task) = Controller::start(config, config_path, Default::default());
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

/// Sends a switch to green, which waits for green to turn healthy (it never
/// does) for `timeout`: the connection is busy until then.
async fn start_busy_switch(stream: &mut UnixStream, timeout: &str) {
    let line = format!(
        "{{\"cmd\":\"switch\",\"route\":\"app\",\"slot\":\"green\",\"timeout\":\"{timeout}\"}}\n"
    );
    stream.write_all(line.as_bytes()).await.unwrap();
}

/// Whether the server closes `stream` within `limit` (read to the end).
async fn closed_within(stream: &mut UnixStream, limit: Duration) -> bool {
    let mut rest = Vec::new();
    tokio::time::timeout(limit, stream.read_to_end(&mut rest))
        .await
        .is_ok()
}

#[tokio::test]
async fn connections_beyond_a_cap_of_busy_ones_are_refused_with_an_answer() {
    let dir = tempfile::tempdir().unwrap();
    let limits = AdminLimits {
        max_connections: 2,
        idle_timeout: Duration::from_secs(30),
    };
    let socket = start(dir.path(), limits).await;
    let mut first = UnixStream::connect(&socket).await.unwrap();
    let mut second = UnixStream::connect(&socket).await.unwrap();
    // Both are served, and busy for a second.
    assert!(ask(&mut first, "{\"cmd\":\"status\"}\n")
        .await
        .contains("\"ok\":true"));
    assert!(ask(&mut second, "{\"cmd\":\"status\"}\n")
        .await
        .contains("\"ok\":true"));
    start_busy_switch(&mut first, "1s").await;
    start_busy_switch(&mut second, "1s").await;
    // Let the server read both requests.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = UnixStream::connect(&socket).await.unwrap();
    let mut answer = String::new();
    BufReader::new(&mut third)
        .read_line(&mut answer)
        .await
        .unwrap();
    assert!(answer.contains("too many admin connections"), "{answer}");
    // Once the switches are answered, their connections are idle and a new
    // connection is served.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut fourth = UnixStream::connect(&socket).await.unwrap();
        let answer = ask(&mut fourth, "{\"cmd\":\"status\"}\n").await;
        if answer.contains("\"ok\":true") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no place was freed once the commands were answered: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_new_connection_beyond_the_cap_takes_the_place_of_the_longest_idle_one() {
    let dir = tempfile::tempdir().unwrap();
    let limits = AdminLimits {
        max_connections: 3,
        idle_timeout: Duration::from_secs(30),
    };
    let socket = start(dir.path(), limits).await;
    let mut busy = UnixStream::connect(&socket).await.unwrap();
    start_busy_switch(&mut busy, "2s").await;
    let mut oldest = UnixStream::connect(&socket).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut newer = UnixStream::connect(&socket).await.unwrap();
    assert!(ask(&mut newer, "{\"cmd\":\"status\"}\n")
        .await
        .contains("\"ok\":true"));
    tokio::time::sleep(Duration::from_millis(50)).await;

    // The cap is reached: the connection idle longest (never sent a thing)
    // is closed for the new one, which is served.
    let mut new = UnixStream::connect(&socket).await.unwrap();
    assert!(ask(&mut new, "{\"cmd\":\"status\"}\n")
        .await
        .contains("\"ok\":true"));
    assert!(
        closed_within(&mut oldest, Duration::from_secs(2)).await,
        "the longest idle connection is closed"
    );
    // The newer idle one goes next; the busy one is never evicted.
    let mut another = UnixStream::connect(&socket).await.unwrap();
    assert!(ask(&mut another, "{\"cmd\":\"status\"}\n")
        .await
        .contains("\"ok\":true"));
    assert!(closed_within(&mut newer, Duration::from_secs(2)).await);
    let mut answer = String::new();
    BufReader::new(&mut busy)
        .read_line(&mut answer)
        .await
        .unwrap();
    assert!(
        answer.contains("did not turn healthy"),
        "the busy connection got its switch answered: {answer}"
    );
}

#[tokio::test]
async fn many_idle_connections_do_not_lock_a_client_out() {
    let dir = tempfile::tempdir().unwrap();
    // The limits the server runs with.
    let socket = start(dir.path(), AdminLimits::default()).await;
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(UnixStream::connect(&socket).await.unwrap());
    }
    let started = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(2), async {
        let mut stream = UnixStream::connect(&socket).await.unwrap();
        ask(&mut stream, "{\"cmd\":\"status\"}\n").await
    })
    .await
    .expect("a command is answered within 2 s of 200 idle connections");
    assert!(
        answer.contains("\"ok\":true"),
        "after {:?}: {answer}",
        started.elapsed()
    );
    drop(idle);
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
