//! Config edits hot-reloaded under load: valid ones apply in one publish,
//! invalid ones change nothing but the reported error.

use std::time::Duration;

use switchyard_tests::*;

fn routes_with_weight(blue: &Backend, green: &Backend, weight: u8, extra_route: bool) -> String {
    let mut text = two_slot_route("app", "blue", blue, green);
    text.push_str(&format!(
        "[route.canary]\nslot = \"green\"\nweight = {weight}\n"
    ));
    if extra_route {
        text.push_str(&format!(
            "\n[[route]]\nname = \"extra\"\nhosts = [\"extra.test\"]\nactive = \"green\"\n[route.slots]\ngreen = [\"{}\"]\n",
            green.addr
        ));
    }
    text
}

async fn wait_for_reload(proxy: &Proxy, above: u64) -> u64 {
    let status = proxy
        .wait_for_status("a reload", |s| {
            s["config"]["reloads"].as_u64() > Some(above)
        })
        .await;
    status["config"]["reloads"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reloads_under_load_lose_no_request() {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &routes_with_weight(&blue, &green, 0, false));
    let load = Load::start(proxy.addr, "app.test", 6, 5_000);
    let mut reloads = tokio::task::block_in_place(|| proxy.reloads());

    for i in 0..20u8 {
        proxy.edit_config(&routes_with_weight(&blue, &green, i * 5, i % 2 == 0));
        reloads = wait_for_reload(&proxy, reloads).await;
        let status = tokio::task::block_in_place(|| proxy.status());
        assert_eq!(status["routes"][0]["canary"]["weight"], i * 5);
        assert_eq!(
            status["routes"].as_array().unwrap().len(),
            if i % 2 == 0 { 2 } else { 1 }
        );
    }
    let (ok, failed, failures) = load.finish().await;
    assert_eq!(failed, 0, "failed requests: {failures:?}");
    assert!(ok > 1_000, "only {ok} requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_invalid_edit_keeps_traffic_on_the_last_good_config_until_fixed() {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    let good = two_slot_route("app", "blue", &blue, &green);
    let proxy = Proxy::start(dir.path(), &good);
    let load = Load::start(proxy.addr, "app.test", 4, 50_000);
    eventually(Duration::from_secs(10), "load to start", || load.ok() > 200).await;

    // A bad slot name in `active` and a bad backend address at once.
    let bad = good
        .replace("active = \"blue\"", "active = \"purple\"")
        .replace(&green.addr.to_string(), "127.0.0.1:99999");
    proxy.edit_config(&bad);
    let status = proxy
        .wait_for_status("the rejected edit in status", |s| {
            s["config"]["error"].is_string()
        })
        .await;
    let error = status["config"]["error"].as_str().unwrap().to_string();
    assert!(error.contains("purple"), "{error}");
    assert!(error.contains("99999"), "{error}");
    assert!(
        error.contains("switchyard.toml:"),
        "errors carry file:line:col: {error}"
    );
    let human = tokio::task::block_in_place(|| proxy.cli_ok(&["status"]));
    assert!(human.contains("CONFIG REJECTED"), "{human}");
    let reload = tokio::task::block_in_place(|| proxy.cli(&["reload"]));
    assert_eq!(
        reload.status.code(),
        Some(1),
        "reload of a bad file is refused"
    );

    let before = load.ok();
    eventually(Duration::from_secs(10), "traffic to keep flowing", || {
        load.ok() > before + 500
    })
    .await;

    proxy.edit_config(&good.replace("active = \"blue\"", "active = \"green\""));
    let status = proxy
        .wait_for_status("the fixed file to apply", |s| {
            s["config"]["error"].is_null() && s["routes"][0]["active"] == "green"
        })
        .await;
    assert_eq!(status["routes"][0]["decided_by"], "config");
    let (_, failed, failures) = load.finish().await;
    assert_eq!(failed, 0, "failed requests: {failures:?}");
    let mut client = Client::new(proxy.addr);
    assert_eq!(
        client.get("x", "/").await.unwrap().slot.as_deref(),
        Some("green")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unchanged_active_in_the_file_keeps_the_runtime_switch() {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    let routes = two_slot_route("app", "blue", &blue, &green);
    let proxy = Proxy::start(dir.path(), &routes);
    tokio::task::block_in_place(|| proxy.cli_ok(&["switch", "app", "green"]));
    let reloads = tokio::task::block_in_place(|| proxy.reloads());
    // An unrelated edit: a new route. `active = "blue"` is unchanged.
    proxy.edit_config(&format!("{routes}\n[[route]]\nname = \"other\"\nhosts = [\"other.test\"]\nactive = \"b\"\n[route.slots]\nb = [\"{}\"]\n", blue.addr));
    wait_for_reload(&proxy, reloads).await;
    let status = tokio::task::block_in_place(|| proxy.status());
    assert_eq!(status["routes"][0]["active"], "green");
    assert_eq!(status["routes"][0]["decided_by"], "admin");
}

#[test]
fn check_reports_every_error_with_its_place_and_exits_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[server]\nlisten = [\"nowhere\"]\n\n[[route]]\nname = \"app\"\nactiv = \"blue\"\n[route.slots]\nblue = []\n",
    )
    .unwrap();
    let out = std::process::Command::new(switchyard_bin())
        .args(["check", "-c"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(
        errors.contains("bad.toml:2:"),
        "listen error at line 2: {errors}"
    );
    assert!(errors.contains("did you mean `active`"), "{errors}");
    assert!(
        errors.contains("bad.toml:8:"),
        "empty slot at line 8: {errors}"
    );

    let good = dir.path().join("good.toml");
    std::fs::write(&good, config_text("[[route]]\nname = \"app\"\nactive = \"blue\"\n[route.slots]\nblue = [\"127.0.0.1:3000\"]\n")).unwrap();
    let out = std::process::Command::new(switchyard_bin())
        .args(["check", "-c"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_edited_upstream_timeout_applies_without_a_restart() {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    let routes = two_slot_route("app", "blue", &blue, &green);
    let proxy = Proxy::start(dir.path(), &routes);
    let mut client = Client::new(proxy.addr);
    assert_eq!(client.get("x", "/slow/400").await.unwrap().status, 200);

    let reloads = tokio::task::block_in_place(|| proxy.reloads());
    proxy.write_config_text(
        &config_text(&routes).replace("threads = 2", "threads = 2\nread_timeout = \"100ms\""),
    );
    wait_for_reload(&proxy, reloads).await;
    let status = tokio::task::block_in_place(|| proxy.status());
    assert_eq!(status["config"]["needs_restart"], serde_json::json!([]));
    let mut client = Client::new(proxy.addr);
    let timed_out = client.get("x", "/slow/400").await.unwrap();
    assert_eq!(timed_out.status, 504, "{}", timed_out.body);
    assert!(timed_out.body.contains("timed out"), "{}", timed_out.body);
}
