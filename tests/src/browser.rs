//! A real browser for the tests: headless Chromium driven over the Chrome
//! DevTools Protocol (a WebSocket on loopback), with just the calls the
//! dashboard's test needs: open a page, evaluate a script, wait for a
//! condition, size the window, take a screenshot.
//!
//! Chromium is told to resolve every name but loopback to nothing and to
//! make no background connections, so a test never leaves the machine.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Where the browser is: `SWITCHYARD_CHROMIUM`, else the first of these on
/// `PATH`.
const CANDIDATES: &[&str] = &["chromium", "chromium-browser", "google-chrome"];
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Browser {
    child: Child,
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// The page's session, once [`Browser::open`] made one.
    session: Option<String>,
    _profile: tempfile::TempDir,
}

/// The browser's executable. Panics, saying how to install one, when none
/// is found: `make test` installs Debian's `chromium`.
pub fn executable() -> PathBuf {
    if let Some(path) = std::env::var_os("SWITCHYARD_CHROMIUM") {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in CANDIDATES {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "no Chromium found (looked for {CANDIDATES:?} on PATH; SWITCHYARD_CHROMIUM names another): \
         `make test` installs it (scripts/ensure-build-deps.sh), or `sudo apt-get install chromium`"
    );
}

impl Browser {
    /// Starts headless Chromium with a fresh profile and connects to it.
    pub async fn launch() -> Browser {
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut child = Command::new(executable())
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-default-apps",
                "--disable-features=Translate,MediaRouter,OptimizationHints",
                "--metrics-recording-only",
                "--mute-audio",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1, EXCLUDE [::1]",
                "--window-size=1200,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", executable().display()));
        let stderr = child.stderr.take().expect("piped stderr");
        let url = tokio::time::timeout(CALL_TIMEOUT, devtools_url(stderr))
            .await
            .expect("Chromium said where DevTools listens within 30 s")
            .expect("Chromium said where DevTools listens");
        let (socket, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("a DevTools connection");
        Browser {
            child,
            socket,
            next_id: 0,
            session: None,
            _profile: profile,
        }
    }

    /// Sends one DevTools command (to the page once one is open, when
    /// `to_page`) and returns its result; panics on an error.
    async fn call(&mut self, method: &str, params: Value, to_page: bool) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if to_page {
            let session = self.session.clone().expect("a page is open");
            message["sessionId"] = Value::String(session);
        }
        self.socket
            .send(Message::text(message.to_string()))
            .await
            .expect("DevTools takes a command");
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let next = tokio::time::timeout(left, self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method} within 30 s"));
            let Some(Ok(Message::Text(text))) = next else {
                match next {
                    Some(Ok(_)) => continue,
                    other => panic!("DevTools connection ended during {method}: {other:?}"),
                }
            };
            let answer: Value = serde_json::from_str(&text).expect("DevTools speaks JSON");
            if answer["id"] != json!(id) {
                continue; // an event
            }
            if let Some(error) = answer.get("error") {
                panic!("{method} failed: {error}");
            }
            return answer["result"].clone();
        }
    }

    /// Opens `url` in a new tab and waits for it to load.
    pub async fn open(&mut self, url: &str) {
        let target = self
            .call(
                "Target.createTarget",
                json!({ "url": "about:blank" }),
                false,
            )
            .await;
        let attached = self
            .call(
                "Target.attachToTarget",
                json!({ "targetId": target["targetId"], "flatten": true }),
                false,
            )
            .await;
        self.session = Some(
            attached["sessionId"]
                .as_str()
                .expect("a session id")
                .to_string(),
        );
        self.call("Page.enable", json!({}), true).await;
        self.call("Runtime.enable", json!({}), true).await;
        self.call("Page.navigate", json!({ "url": url }), true)
            .await;
        // The new document, not about:blank's, complete.
        let loaded = format!(
            "location.href === {} && document.readyState === 'complete'",
            json!(url)
        );
        self.wait_for(&loaded, CALL_TIMEOUT).await;
    }

    /// Evaluates `expression` in the page (promises awaited) and returns
    /// its value; panics on an exception.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
                true,
            )
            .await;
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("{expression} threw: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Evaluates `expression` until it is truthy, and returns that value;
    /// panics with the last value after `within`.
    pub async fn wait_for(&mut self, expression: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let value = self.eval(expression).await;
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return value;
            }
            if Instant::now() >= deadline {
                panic!("`{expression}` was still {value} after {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The viewport: CSS pixels wide and high, as a phone (`mobile`) or not.
    pub async fn viewport(&mut self, width: u32, height: u32, mobile: bool) {
        let params = json!({
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile
        });
        self.call("Emulation.setDeviceMetricsOverride", params, true)
            .await;
    }

    /// Saves a PNG of the whole page (not only the viewport) to `path`.
    pub async fn screenshot(&mut self, path: &Path) {
        use base64::Engine;
        let shot = self
            .call(
                "Page.captureScreenshot",
                json!({ "format": "png", "captureBeyondViewport": true }),
                true,
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("image data"))
            .expect("base64 image data");
        std::fs::write(path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Reads Chromium's stderr until it prints `DevTools listening on ws://…`.
/// The rest of its stderr is drained in the background so it never blocks.
async fn devtools_url(stderr: tokio::process::ChildStderr) -> Option<String> {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(url) = line.strip_prefix("DevTools listening on ") {
            let url = url.trim().to_string();
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Some(url);
        }
    }
    None
}
