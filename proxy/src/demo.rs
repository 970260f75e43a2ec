//! `switchyard demo`: the proxy in front of two built-in backends, `blue`
//! and `green`, with its config, state and admin socket in a temporary
//! directory, so a newcomer can switch traffic within a minute.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Starts a backend that answers every request with the name of its slot.
pub async fn start_backend(slot: &'static str) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service =
                    service_fn(move |request: Request<hyper::body::Incoming>| async move {
                        let body = format!(
                            "hello from {slot} ({addr}) — you asked for {}\n",
                            request.uri()
                        );
                        Ok::<_, Infallible>(
                            Response::builder()
                                .header("content-type", "text/plain; charset=utf-8")
                                .header("x-demo-slot", slot)
                                .body(Full::new(Bytes::from(body)))
                                .expect("static response parts are valid"),
                        )
                    });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// The first free port from `preferred` on, on 127.0.0.1.
pub fn free_port_from(preferred: u16) -> u16 {
    (preferred..preferred.saturating_add(100))
        .find(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
        .unwrap_or(0)
}

/// Writes the demo's config file into `dir`.
pub fn write_config(
    dir: &Path,
    port: u16,
    blue: SocketAddr,
    green: SocketAddr,
) -> std::io::Result<PathBuf> {
    let path = dir.join("switchyard.toml");
    let text = format!(
        r#"# switchyard demo config — edit me: changes apply as soon as you save.
[server]
listen = ["127.0.0.1:{port}"]
admin_socket = "admin.sock"
state_dir = "state"
drain_timeout = "5s"

[[route]]
name = "demo"
path_prefix = "/"
active = "blue"

[route.slots]
blue = ["{blue}"]
green = ["{green}"]
"#
    );
    std::fs::write(&path, text)?;
    Ok(path)
}

/// What to try, printed once the demo is up.
pub fn instructions(url: &str, config: &Path, socket: &Path) -> String {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "switchyard".to_string());
    format!(
        "\nswitchyard demo is running on {url}  (Ctrl-C stops it)\n\n\
         Try, in another terminal:\n\
         \x20 curl {url}/                       # hello from blue\n\
         \x20 export SWITCHYARD_SOCKET={socket}\n\
         \x20 {exe} status\n\
         \x20 {exe} switch demo green           # curl now says green\n\
         \x20 {exe} canary demo blue 25         # a quarter of clients go to blue, and stay\n\
         \x20 {exe} rollback demo               # back to blue\n\
         \x20 {exe} history\n\
         Or edit {config} (active = \"green\") and save: it applies 250 ms later.\n",
        socket = socket.display(),
        config = config.display(),
    )
}
