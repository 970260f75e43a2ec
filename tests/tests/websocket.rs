//! WebSockets through the proxy: an open one stays on its slot across a
//! switch until `drain_timeout`, a new one goes to the new slot, and an
//! upgraded connection has its own idle timeout instead of the read
//! timeout.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use switchyard_tests::raw::ScriptedBackend;
use switchyard_tests::{config_text, Client, Proxy};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A WebSocket echo server that answers `SLOT:text`.
async fn echo_backend(slot: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                // Health probes connect and leave: not a WebSocket.
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    if let Message::Text(text) = message {
                        if ws
                            .send(Message::text(format!("{slot}:{text}")))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

async fn open(proxy: SocketAddr) -> WebSocketStream<TcpStream> {
    let stream = TcpStream::connect(proxy).await.unwrap();
    let (ws, response) = tokio_tungstenite::client_async("ws://app.test/ws", stream)
        .await
        .expect("the WebSocket handshake through the proxy");
    assert_eq!(response.status(), 101);
    ws
}

/// Sends `text` and returns the answer; `None` if the connection is gone.
async fn echo(ws: &mut WebSocketStream<TcpStream>, text: &str) -> Option<String> {
    ws.send(Message::text(text)).await.ok()?;
    match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        Ok(Some(Ok(Message::Text(answer)))) => Some(answer.to_string()),
        _ => None,
    }
}

/// Waits until the proxy closes `ws`; how long that took.
async fn closed_within(ws: &mut WebSocketStream<TcpStream>, limit: Duration) -> Duration {
    let started = Instant::now();
    let ended = tokio::time::timeout(limit, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => panic!("unexpected message {t}"),
                Some(Ok(_)) => continue,
                _ => return,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "still open after {limit:?}");
    started.elapsed()
}

fn route(blue: SocketAddr, green: SocketAddr) -> String {
    format!(
        "[[route]]\nname = \"app\"\nactive = \"blue\"\n[route.slots]\nblue = [\"{blue}\"]\ngreen = [\"{green}\"]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_open_websocket_stays_on_its_slot_across_a_switch_until_drain_timeout() {
    let blue = echo_backend("blue").await;
    let green = echo_backend("green").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchyard.toml");
    std::fs::write(
        &config,
        config_text(&route(blue, green))
            .replace("drain_timeout = \"5s\"", "drain_timeout = \"2s\""),
    )
    .unwrap();
    let proxy = Proxy::start_with_file(dir.path(), &config);

    let mut old = open(proxy.addr).await;
    assert_eq!(echo(&mut old, "1").await.as_deref(), Some("blue:1"));
    tokio::task::block_in_place(|| proxy.cli_ok(&["switch", "app", "green", "--force"]));
    let switched = Instant::now();

    // The open one is not cut; a new one goes to green.
    assert_eq!(echo(&mut old, "2").await.as_deref(), Some("blue:2"));
    let mut new = open(proxy.addr).await;
    assert_eq!(echo(&mut new, "3").await.as_deref(), Some("green:3"));

    // drain_timeout after the switch, the old one is closed; the new one
    // is untouched.
    closed_within(&mut old, Duration::from_secs(6)).await;
    let after = switched.elapsed();
    assert!(
        after >= Duration::from_millis(1900),
        "closed after {after:?}, before drain_timeout"
    );
    assert_eq!(echo(&mut new, "4").await.as_deref(), Some("green:4"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upgraded_connection_has_its_own_idle_timeout_not_the_read_timeout() {
    let blue = echo_backend("blue").await;
    let green = echo_backend("green").await;
    // Takes a request and never answers: read_timeout runs out on it.
    let silent = ScriptedBackend::start(|mut stream: TcpStream| async move {
        let mut buf = [0u8; 4096];
        while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchyard.toml");
    let routes = format!(
        "{}[[route]]\nname = \"silent\"\nhosts = [\"silent.test\"]\nactive = \"only\"\n[route.slots]\nonly = [\"{}\"]\n",
        route(blue, green),
        silent.addr
    );
    std::fs::write(
        &config,
        config_text(&routes).replace(
            "threads = 2",
            "threads = 2\nread_timeout = \"1s\"\nupgrade_idle_timeout = \"3s\"",
        ),
    )
    .unwrap();
    let proxy = Proxy::start_with_file(dir.path(), &config);

    let mut ws = open(proxy.addr).await;
    // Quiet past the read timeout: until a request sent after the
    // WebSocket opened got its 504 for a backend that sent nothing within
    // read_timeout. Had the upgraded connection been under read_timeout,
    // it would have run out by then too. Still open.
    let timed_out = Client::new(proxy.addr).get("silent.test", "/").await;
    assert_eq!(timed_out.map(|r| r.status), Ok(504), "the read timeout");
    assert_eq!(echo(&mut ws, "a").await.as_deref(), Some("blue:a"));
    // Quiet past upgrade_idle_timeout: closed.
    let waited = closed_within(&mut ws, Duration::from_secs(6)).await;
    assert!(
        waited >= Duration::from_millis(2900),
        "closed after {waited:?}"
    );
}
