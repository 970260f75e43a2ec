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

/// The demo's ports and its dashboard token.
pub struct DemoSetup {
    pub port: u16,
    pub admin_port: u16,
    pub token: String,
}

/// A fresh dashboard token: 16 random bytes in hex.
pub fn new_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes the demo's config file into `dir`.
pub fn write_config(
    dir: &Path,
    setup: &DemoSetup,
    blue: SocketAddr,
    green: SocketAddr,
) -> std::io::Result<PathBuf> {
    let path = dir.join("switchyard.toml");
    let DemoSetup {
        port,
        admin_port,
        token,
    } = setup;
    let text = format!(
        r#"# switchyard demo config — edit me: changes apply as soon as you save.
[server]
listen = ["127.0.0.1:{port}"]
admin_socket = "admin.sock"
state_dir = "state"
drain_timeout = "5s"
admin_http = "127.0.0.1:{admin_port}"       # the dashboard
admin_http_token = "{token}"   # what the dashboard asks before it acts

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
pub fn instructions(
    url: &str,
    dashboard: Option<SocketAddr>,
    token: &str,
    config: &Path,
    socket: &Path,
) -> String {
    let dashboard = dashboard.map_or(String::new(), |addr| {
        format!(
            "\nThe dashboard: http://{addr}/  (to act from it, unlock with the token {token})\n"
        )
    });
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
         Or edit {config} (active = \"green\") and save: it applies 250 ms later.\n\
         {dashboard}",
        socket = socket.display(),
        config = config.display(),
    )
}
