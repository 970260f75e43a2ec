//! `[route.limits]` through the real binary: past its rate and burst a
//! client gets `429` with `Retry-After`, others do not; the key may be a
//! header, or the client address `trusted_proxies` found; a reload or a
//! switch keeps what each client has used, a changed limit starts afresh.

use switchyard_tests::wire::{recording_backend, Conn};
use switchyard_tests::{config_text, Proxy};
use tokio::io::AsyncWriteExt;

fn route(limits: &str, blue: std::net::SocketAddr, green: std::net::SocketAddr) -> String {
    format!(
        "[[route]]\nname = \"app\"\nactive = \"blue\"\n[route.limits]\n{limits}\n[route.slots]\nblue = [\"{blue}\"]\ngreen = [\"{green}\"]\n"
    )
}

/// The status of a GET with these extra header lines, and its
/// `Retry-After`.
async fn get(proxy: std::net::SocketAddr, extra: &str) -> (u16, Option<u64>) {
    let mut conn = Conn::connect(proxy).await;
    let request = format!("GET / HTTP/1.1\r\nHost: app.test\r\n{extra}\r\n");
    conn.stream.write_all(request.as_bytes()).await.unwrap();
    let response = conn.read_message(false).await.unwrap();
    let retry_after = response.header("retry-after").map(|v| v.parse().unwrap());
    (response.status(), retry_after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_burst_a_client_waits_and_others_do_not() {
    let (blue, seen) = recording_backend().await;
    let (green, _) = recording_backend().await;
    let dir = tempfile::tempdir().unwrap();
    // Two a minute, one of them at once beyond the first: nothing refills
    // within the test.
    let limits = "rate = \"2/m\"\nburst = 1\nkey = \"header:x-api-key\"\n";
    let proxy = Proxy::start(dir.path(), &route(limits, blue.addr, green.addr));

    assert_eq!(get(proxy.addr, "x-api-key: a\r\n").await, (200, None));
    assert_eq!(get(proxy.addr, "x-api-key: a\r\n").await, (200, None));
    let (status, retry_after) = get(proxy.addr, "x-api-key: a\r\n").await;
    assert_eq!(status, 429);
    let retry_after = retry_after.expect("429 says when to come back");
    assert!((29..=30).contains(&retry_after), "{retry_after}");
    // Another key has its own allowance; no key means the client address.
    assert_eq!(get(proxy.addr, "x-api-key: b\r\n").await.0, 200);
    assert_eq!(get(proxy.addr, "").await.0, 200);
    assert_eq!(get(proxy.addr, "").await.0, 200);
    assert_eq!(get(proxy.addr, "").await.0, 429);
    assert_eq!(
        seen.lock().unwrap().requests.len(),
        5,
        "a refused request never went up"
    );

    // A switch and a reload with the same limit keep the count ...
    proxy.cli_ok(&["switch", "app", "green", "--force", "--no-guard"]);
    proxy.cli_ok(&["reload"]);
    assert_eq!(get(proxy.addr, "x-api-key: a\r\n").await.0, 429);
    // ... a new limit starts afresh.
    proxy.edit_config(&route(
        "rate = \"3/m\"\nburst = 0\nkey = \"header:x-api-key\"\n",
        blue.addr,
        green.addr,
    ));
    proxy.cli_ok(&["reload"]);
    assert_eq!(get(proxy.addr, "x-api-key: a\r\n").await.0, 200);
    assert_eq!(get(proxy.addr, "x-api-key: a\r\n").await.0, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_allowance() {
    let (blue, _) = recording_backend().await;
    let (green, _) = recording_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(&route("rate = \"1/m\"\nburst = 0\n", blue.addr, green.addr)).replacen(
        "[server]\n",
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n",
        1,
    );
    let path = dir.path().join("switchyard.toml");
    std::fs::write(&path, text).unwrap();
    let proxy = Proxy::start_with_file(dir.path(), &path);

    for client in ["203.0.113.1", "203.0.113.2", "203.0.113.3"] {
        let from = format!("x-forwarded-for: {client}\r\n");
        assert_eq!(get(proxy.addr, &from).await.0, 200, "{client}");
        assert_eq!(get(proxy.addr, &from).await.0, 429, "{client}");
    }
}

/// `[route.access]` through the real binary, judged on the client address
/// `trusted_proxies` found: a staging route closed to all but one network,
/// and an `/admin` area closed on an open route, however its path is
/// spelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_lists_close_a_route_or_its_paths_to_other_clients() {
    let (blue, seen) = recording_backend().await;
    let (green, _) = recording_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let access = "[route.access]\nallow = [\"203.0.113.0/24\"]\ndeny = [\"203.0.113.66\"]\npaths = [\"/admin\"]\n";
    let text = config_text(&format!(
        "[[route]]\nname = \"app\"\nactive = \"blue\"\n{access}[route.slots]\nblue = [\"{}\"]\ngreen = [\"{}\"]\n",
        blue.addr, green.addr
    ))
    .replacen("[server]\n", "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n", 1);
    let path = dir.path().join("switchyard.toml");
    std::fs::write(&path, text).unwrap();
    let proxy = Proxy::start_with_file(dir.path(), &path);

    let get_path = |target: &'static str, client: &'static str| async move {
        let mut conn = Conn::connect(proxy.addr).await;
        let request =
            format!("GET {target} HTTP/1.1\r\nHost: app.test\r\nx-forwarded-for: {client}\r\n\r\n");
        conn.stream.write_all(request.as_bytes()).await.unwrap();
        conn.read_message(false).await.unwrap().status()
    };
    assert_eq!(get_path("/admin/users", "203.0.113.9").await, 200);
    assert_eq!(
        get_path("/admin/users", "203.0.113.66").await,
        403,
        "denied within the allowed"
    );
    for target in [
        "/admin",
        "/admin/users",
        "/%61dmin/users",
        "//admin",
        "/x/../admin",
        "/admin;a=b",
    ] {
        assert_eq!(get_path(target, "198.51.100.1").await, 403, "{target}");
    }
    assert_eq!(
        get_path("/", "198.51.100.1").await,
        200,
        "the rest of the route is open"
    );
    assert_eq!(get_path("/administrator", "198.51.100.1").await, 200);
    let reached: Vec<String> = seen
        .lock()
        .unwrap()
        .requests
        .iter()
        .map(|(_, r)| r.target().to_string())
        .collect();
    assert_eq!(reached, ["/admin/users", "/", "/administrator"]);
}

/// `basic_auth` with a hash `switchyard hash-password` made: the right
/// user and password pass (and keep passing), anything else gets `401`
/// with a Basic challenge, and only where `paths` says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_asks_for_credentials_where_it_applies() {
    use std::io::Write;
    let mut hasher = std::process::Command::new(switchyard_tests::switchyard_bin())
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    hasher
        .stdin
        .take()
        .unwrap()
        .write_all(b"correct horse\n")
        .unwrap();
    let out = hasher.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(hash.starts_with("$argon2id$"), "{hash}");

    let (blue, seen) = recording_backend().await;
    let (green, _) = recording_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let access = format!(
        "[route.access]\npaths = [\"/admin\"]\nbasic_auth = [{{ user = \"ops\", hash = \"{hash}\" }}]\n"
    );
    let proxy = Proxy::start(
        dir.path(),
        &format!(
            "[[route]]\nname = \"app\"\nactive = \"blue\"\n{access}[route.slots]\nblue = [\"{}\"]\ngreen = [\"{}\"]\n",
            blue.addr, green.addr
        ),
    );
    let get_with = |target: &'static str, authorization: Option<&'static str>| async move {
        let mut conn = Conn::connect(proxy.addr).await;
        let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
        let request = format!("GET {target} HTTP/1.1\r\nHost: app.test\r\n{auth}\r\n");
        conn.stream.write_all(request.as_bytes()).await.unwrap();
        conn.read_message(false).await.unwrap()
    };
    // "ops:correct horse", "ops:wrong", "eve:correct horse"
    let right = Some("Basic b3BzOmNvcnJlY3QgaG9yc2U=");
    for _ in 0..3 {
        assert_eq!(get_with("/admin/x", right).await.status(), 200);
    }
    for wrong in [
        None,
        Some("Basic b3BzOndyb25n"),
        Some("Basic ZXZlOmNvcnJlY3QgaG9yc2U="),
        Some("Bearer abc"),
    ] {
        let response = get_with("/admin/x", wrong).await;
        assert_eq!(response.status(), 401, "{wrong:?}");
        assert_eq!(
            response.header("www-authenticate"),
            Some("Basic realm=\"app\", charset=\"UTF-8\"")
        );
    }
    assert_eq!(get_with("/%61dmin/x", None).await.status(), 401);
    assert_eq!(
        get_with("/public", None).await.status(),
        200,
        "outside `paths`"
    );
    assert_eq!(seen.lock().unwrap().requests.len(), 4);
}

#[test]
fn hash_password_refuses_an_empty_password() {
    let out = std::process::Command::new(switchyard_tests::switchyard_bin())
        .arg("hash-password")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("standard input"));
}
