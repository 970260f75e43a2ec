//! The dashboard on `admin_http`: a real headless Chromium loads the page
//! from the real binary, sees a `switch` made on the socket without a
//! reload, unlocks the actions with the token and rolls back from the page
//! (recorded in history as the dashboard's); the page uses nothing but its
//! own origin and fits a phone's width. Over plain HTTP: who may act, and
//! what is refused.
//!
//! `SWITCHYARD_UPDATE_SCREENSHOTS=1` also writes the screenshots to
//! `docs/dashboard.png` and `docs/dashboard-phone.png`, which the README shows.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use switchyard_tests::browser::Browser;
use switchyard_tests::{config_text, Backend, Client, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "dashboard-test-token-0123456789";
const WAIT: Duration = Duration::from_secs(20);
/// Whether route app's action buttons are hidden (no token yet).
const ACTIONS_HIDDEN: &str = "document.querySelector('[data-route=\"app\"] .actions').hidden";

fn routes(blue: &Backend, green: &Backend) -> String {
    format!(
        "[[route]]\nname = \"app\"\nhosts = [\"app.test\"]\nactive = \"blue\"\n\
         [route.slots]\nblue = [\"{}\"]\ngreen = [\"{}\"]\n\
         [route.health]\npath = \"/health\"\ninterval = \"200ms\"\nrise = 1\nfall = 2\n",
        blue.addr, green.addr
    )
}

fn start(dir: &Path, routes: &str, token: Option<&str>) -> Proxy {
    let mut admin = "threads = 2\nadmin_http = \"127.0.0.1:0\"".to_string();
    if let Some(token) = token {
        admin.push_str(&format!("\nadmin_http_token = \"{token}\""));
    }
    let config = dir.join("switchyard.toml");
    std::fs::write(&config, config_text(routes).replace("threads = 2", &admin)).unwrap();
    Proxy::start_with_file(dir, &config)
}

/// Where a screenshot goes: the test's own directory, and `docs/` too when
/// asked to update the README's images.
fn screenshot_paths(name: &str) -> Vec<PathBuf> {
    let mut paths = vec![PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name)];
    if std::env::var_os("SWITCHYARD_UPDATE_SCREENSHOTS").is_some() {
        paths.push(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../docs")
                .join(name),
        );
    }
    paths
}

fn route_field(selector: &str) -> String {
    format!("document.querySelector('[data-route=\"app\"] {selector}')?.textContent")
}

/// Route `app` (blue active, green ready), both slots healthy, behind a
/// proxy with `admin_http` (and `token`, if any). Keep it whole while the
/// test runs: its backends and directory go with it.
struct Rig {
    proxy: Proxy,
    admin: SocketAddr,
    _backends: (Backend, Backend),
    _dir: tempfile::TempDir,
}

async fn healthy_app(token: Option<&str>) -> Rig {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = start(dir.path(), &routes(&blue, &green), token);
    let admin = proxy.admin_http_addr();
    proxy
        .wait_for_status("both slots healthy", |s| {
            s["routes"][0]["slots"]
                .as_array()
                .is_some_and(|slots| slots.iter().all(|slot| slot["health"] == "healthy"))
        })
        .await;
    Rig {
        proxy,
        admin,
        _backends: (blue, green),
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_real_browser_sees_a_switch_live_and_rolls_back_with_the_token() {
    let rig = healthy_app(Some(TOKEN)).await;
    let (proxy, admin) = (&rig.proxy, rig.admin);

    let mut browser = Browser::launch().await;
    browser.open(&format!("http://{admin}/")).await;
    browser
        .wait_for(&format!("{} === 'blue'", route_field(".active")), WAIT)
        .await;
    browser
        .wait_for(
            "document.querySelector('[data-route=\"app\"] [data-slot=\"green\"] [data-health]')?.textContent === 'healthy'",
            WAIT,
        )
        .await;
    // Read-only until the token is given: no action buttons.
    browser
        .wait_for("document.getElementById('unlock').hidden === false", WAIT)
        .await;
    assert_eq!(browser.eval(ACTIONS_HIDDEN).await, Value::Bool(true));

    // A switch on the socket shows up without reloading the page: a value
    // set on the page's window survives.
    browser.eval("window.notReloaded = true").await;
    // The reason is hostile markup: it must show as text and run nothing.
    let hostile = "v2 <img src=x onerror=\"window.pwned=1\">";
    proxy.cli_ok(&["switch", "app", "green", "--reason", hostile]);
    browser
        .wait_for(&format!("{} === 'green'", route_field(".active")), WAIT)
        .await;
    browser
        .wait_for(&format!("{} === 'blue'", route_field(".previous")), WAIT)
        .await;
    assert_eq!(browser.eval("window.notReloaded").await, Value::Bool(true));
    browser
        .wait_for(
            "[...document.querySelectorAll('#history tbody tr')].some(r => r.textContent.includes('v2 <img src=x'))",
            WAIT,
        )
        .await;
    assert_eq!(
        browser
            .eval("[typeof window.pwned, document.querySelectorAll('#history img').length]")
            .await,
        serde_json::json!(["undefined", 0])
    );

    // Traffic shows in green's chart once the counters were sampled twice:
    // requests keep coming until it does, so no sample can be missed.
    let traffic = tokio::spawn({
        let addr = proxy.addr;
        async move {
            let mut client = Client::new(addr);
            loop {
                assert_eq!(client.get("app.test", "/").await.unwrap().status, 200);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    browser
        .wait_for(
            "parseFloat(document.querySelector('[data-route=\"app\"] [data-slot=\"green\"] .charts .value')?.textContent) > 0",
            WAIT,
        )
        .await;
    traffic.abort();

    // A wrong token is refused and unlocks nothing.
    let submit = |token: &str| {
        format!(
            "document.getElementById('token').value = '{token}'; \
             document.getElementById('unlock').requestSubmit(); true"
        )
    };
    browser.eval(&submit("not-the-token-at-all")).await;
    browser
        .wait_for(
            "document.getElementById('action-result').textContent.includes('refused')",
            WAIT,
        )
        .await;
    assert_eq!(browser.eval(ACTIONS_HIDDEN).await, Value::Bool(true));

    // The right one unlocks the actions; roll back from the page.
    browser.eval(&submit(TOKEN)).await;
    browser
        .wait_for(
            "document.querySelector('[data-route=\"app\"] [data-action=\"roll back to blue\"]') !== null",
            WAIT,
        )
        .await;
    // The page asks before a switch; the operator says yes.
    browser.eval("window.confirm = () => true").await;
    browser
        .eval("document.querySelector('[data-route=\"app\"] [data-action=\"roll back to blue\"]').click(); true")
        .await;
    browser
        .wait_for(&format!("{} === 'blue'", route_field(".active")), WAIT)
        .await;
    assert_eq!(proxy.status()["routes"][0]["active"], "blue");
    let history = proxy.cli_ok(&["history", "--json"]);
    let history: Value = serde_json::from_str(&history).unwrap();
    let last = history["result"]["entries"]
        .as_array()
        .and_then(|entries| entries.last())
        .cloned()
        .unwrap();
    assert_eq!(last["action"], "rollback", "{last}");
    assert_eq!(last["trigger"], "dashboard", "{last}");
    assert_eq!(last["result"], "ok", "{last}");

    // A canary weight being typed survives the page's redraws, and is what
    // "set" sends.
    let typing = "(() => { const input = document.querySelector('[data-route=\"app\"] .actions input'); \
                  input.focus(); input.value = '25'; window.drawn = page.renders; return true; })()";
    browser
        .wait_for(
            "document.querySelector('[data-route=\"app\"] .actions input') !== null && !document.querySelector('[data-route=\"app\"] .actions input').disabled",
            WAIT,
        )
        .await;
    browser.eval(typing).await;
    browser
        .wait_for("page.renders >= window.drawn + 2", WAIT)
        .await;
    assert_eq!(
        browser
            .eval("[document.activeElement === document.querySelector('[data-route=\"app\"] .actions input'), document.activeElement.value]")
            .await,
        serde_json::json!([true, "25"])
    );
    browser
        .eval("document.querySelector('[data-route=\"app\"] .actions form').requestSubmit(); true")
        .await;
    browser
        .wait_for(
            &format!("{} === 'green at 25 %'", route_field(".canary")),
            WAIT,
        )
        .await;
    assert_eq!(proxy.status()["routes"][0]["canary"]["weight"], 25);

    // Everything the page loaded came from its own origin.
    let foreign = browser
        .eval(&format!(
            "performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith('http://{admin}/'))"
        ))
        .await;
    assert_eq!(foreign, Value::Array(vec![]), "resources from elsewhere");

    for path in screenshot_paths("dashboard.png") {
        browser.screenshot(&path).await;
    }

    // A phone's width: nothing wider than the screen.
    browser.viewport(390, 844, true).await;
    let overflow = browser
        .wait_for(
            "document.documentElement.scrollWidth <= 390 ? 'fits' : String(document.documentElement.scrollWidth)",
            WAIT,
        )
        .await;
    assert_eq!(overflow, "fits");
    for path in screenshot_paths("dashboard-phone.png") {
        browser.screenshot(&path).await;
    }
}

/// One HTTP/1.1 request, written as `request` is, on a fresh connection:
/// the status, the head (lowercased) and the body.
async fn exchange(addr: SocketAddr, request: &str) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("an answer")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer[9..12].parse().unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// `head` (request line and headers) with this address as Host, and
/// `body`: the status and the body.
async fn send(addr: SocketAddr, head: &str, body: &str) -> (u16, String) {
    let request = format!(
        "{head}Host: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, _, body) = exchange(addr, &request).await;
    (status, body)
}

fn post(token: Option<&str>, extra: &str) -> String {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    format!("POST /api/command HTTP/1.1\r\n{auth}{extra}")
}

const JSON: &str = "Content-Type: application/json\r\n";
const SWITCH: &str = r#"{"cmd":"switch","route":"app","slot":"green"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn actions_need_the_token_a_json_body_and_this_site() {
    let rig = healthy_app(Some(TOKEN)).await;
    let (proxy, admin) = (&rig.proxy, rig.admin);

    let refused = [
        (post(None, JSON), SWITCH, 401),
        (post(Some("wrong-token-wrong-token"), JSON), SWITCH, 401),
        (post(Some(TOKEN), ""), SWITCH, 415),
        (
            post(
                Some(TOKEN),
                "Content-Type: application/x-www-form-urlencoded\r\n",
            ),
            SWITCH,
            415,
        ),
        (
            post(
                Some(TOKEN),
                &format!("{JSON}Origin: http://evil.example\r\n"),
            ),
            SWITCH,
            403,
        ),
        (
            post(
                Some(TOKEN),
                &format!("{JSON}Sec-Fetch-Site: cross-site\r\n"),
            ),
            SWITCH,
            403,
        ),
        (post(Some(TOKEN), JSON), r#"{"cmd":"reload"}"#, 403),
        (
            post(Some(TOKEN), JSON),
            r#"{"cmd":"rollout","action":"start","route":"app","slot":"green"}"#,
            403,
        ),
        (post(Some(TOKEN), JSON), "{not json", 400),
    ];
    for (head, body, expected) in &refused {
        let (status, answer) = send(admin, head, body).await;
        assert_eq!(status, *expected, "{head}{body}: {answer}");
    }
    assert_eq!(
        proxy.status()["routes"][0]["active"],
        "blue",
        "nothing changed"
    );
    let (status, _) = send(admin, "PUT /status HTTP/1.1\r\n", "").await;
    assert_eq!(status, 405);

    // The page's own request: same origin, JSON, the token.
    let origin = format!("{JSON}Origin: http://{admin}\r\nSec-Fetch-Site: same-origin\r\n");
    let (status, answer) = send(admin, &post(Some(TOKEN), &origin), SWITCH).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(proxy.status()["routes"][0]["active"], "green");
    // A refusal by the Controller is the admin protocol's, with 422.
    let unknown = r#"{"cmd":"switch","route":"nope","slot":"green"}"#;
    let (status, answer) = send(admin, &post(Some(TOKEN), &origin), unknown).await;
    assert_eq!(status, 422, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["ok"], false);

    let (status, session) = send(
        admin,
        &format!("GET /api/session HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n"),
        "",
    )
    .await;
    assert_eq!(status, 200);
    let session: Value = serde_json::from_str(&session).unwrap();
    assert_eq!(
        session,
        serde_json::json!({ "actions": true, "authorized": true })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_token_the_endpoint_stays_read_only_and_serves_the_page() {
    let rig = healthy_app(None).await;
    let (proxy, admin) = (&rig.proxy, rig.admin);

    let (status, answer) = send(admin, &post(Some(TOKEN), JSON), SWITCH).await;
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("read-only"), "{answer}");
    assert_eq!(proxy.status()["routes"][0]["active"], "blue");

    let (status, page) = send(admin, "GET / HTTP/1.1\r\n", "").await;
    assert_eq!(status, 200);
    assert!(page.contains("<script src=\"/dashboard.js\""), "{page}");
    for path in [
        "/dashboard.js",
        "/dashboard.css",
        "/api/series",
        "/api/history?limit=5",
        "/api/session",
    ] {
        let (status, body) = send(admin, &format!("GET {path} HTTP/1.1\r\n"), "").await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    // Points after a time still to come: none, but every slot is named.
    let (status, later) = send(
        admin,
        "GET /api/series?since=99999999999999 HTTP/1.1\r\n",
        "",
    )
    .await;
    assert_eq!(status, 200);
    let later: Value = serde_json::from_str(&later).unwrap();
    let slots = later["routes"][0]["slots"].as_array().unwrap();
    assert_eq!(slots.len(), 2, "{later}");
    assert!(
        slots.iter().all(|s| s["points"] == serde_json::json!([])),
        "{later}"
    );
    let (_, session) = send(admin, "GET /api/session HTTP/1.1\r\n", "").await;
    let session: Value = serde_json::from_str(&session).unwrap();
    assert_eq!(
        session,
        serde_json::json!({ "actions": false, "authorized": false })
    );
}

#[test]
fn check_refuses_a_short_token() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchyard.toml");
    let text = config_text(
        "[[route]]\nname = \"app\"\nactive = \"blue\"\n[route.slots]\nblue = [\"127.0.0.1:9\"]\n",
    )
    .replace(
        "threads = 2",
        "threads = 2\nadmin_http = \"127.0.0.1:0\"\nadmin_http_token = \"short\"",
    );
    std::fs::write(&config, text).unwrap();
    let out = std::process::Command::new(switchyard_tests::switchyard_bin())
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("switchyard.toml:8:20:")
            && stderr.contains("`admin_http_token` in [server] must be at least 16 characters"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_page_keeps_to_its_own_site_and_answers_only_local_names() {
    let rig = healthy_app(Some(TOKEN)).await;
    let admin = rig.admin;
    let get = |path: &str, host: &str, extra: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n")
    };
    let local = admin.to_string();

    // Only its own files, and never in a frame.
    for path in ["/", "/dashboard.js", "/dashboard.css"] {
        let (status, head, _) = exchange(admin, &get(path, &local, "")).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            head.contains("content-security-policy: default-src 'none'; script-src 'self'"),
            "{path}: {head}"
        );
        assert!(head.contains("frame-ancestors 'none'"), "{path}: {head}");
        assert!(head.contains("x-frame-options: deny"), "{path}: {head}");
        assert!(
            head.contains("x-content-type-options: nosniff"),
            "{path}: {head}"
        );
    }
    let (status, _, _) =
        exchange(admin, &get("/", &format!("localhost:{}", admin.port()), "")).await;
    assert_eq!(status, 200, "localhost is local");

    // A rebound name gets nothing from the page or its JSON.
    let rebound = format!("evil.example:{}", admin.port());
    for path in ["/", "/api/session", "/api/series", "/api/history"] {
        let (status, _, body) = exchange(admin, &get(path, &rebound, "")).await;
        assert_eq!(status, 421, "{path}: {body}");
    }
    let post = format!(
        "POST /api/command HTTP/1.1\r\nHost: {rebound}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{SWITCH}",
        SWITCH.len()
    );
    assert_eq!(exchange(admin, &post).await.0, 421);
    assert_eq!(rig.proxy.status()["routes"][0]["active"], "blue");
    // Scrapers and balancers may use any name.
    assert_eq!(exchange(admin, &get("/metrics", &rebound, "")).await.0, 200);

    // Another site's page may not read the JSON either.
    let (status, _, _) = exchange(
        admin,
        &get("/api/history", &local, "Sec-Fetch-Site: cross-site\r\n"),
    )
    .await;
    assert_eq!(status, 403);

    // No CORS preflight succeeds.
    let preflight = format!(
        "OPTIONS /api/command HTTP/1.1\r\nHost: {local}\r\nOrigin: http://evil.example\r\n\
         Access-Control-Request-Method: POST\r\nConnection: close\r\n\r\n"
    );
    let (status, head, _) = exchange(admin, &preflight).await;
    assert_eq!(status, 405);
    assert!(!head.contains("access-control-allow"), "{head}");
}
