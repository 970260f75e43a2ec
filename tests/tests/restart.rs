//! A restart under load drops no request: with systemd socket activation
//! the listening socket outlives the process, so `systemctl restart` —
//! stop with drain, then start — leaves connections waiting in its queue,
//! never refused. The test plays systemd: it holds the socket and hands it
//! to each switchyard as fd 3.

use std::time::Duration;

use switchyard_tests::{config_text, eventually, two_slot_route, Backend, Load, Proxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_socket_activated_restart_under_load_drops_no_request() {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchyard.toml");
    std::fs::write(
        &config,
        config_text(&two_slot_route("app", "blue", &blue, &green)),
    )
    .unwrap();
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();

    let first = Proxy::start_activated(dir.path(), &config, &socket);
    assert_eq!(first.addr, addr, "the handed-in socket is served");
    tokio::task::block_in_place(|| first.cli_ok(&["switch", "app", "green"]));

    let load = Load::start(addr, "x", 4, 1_000_000);
    eventually(Duration::from_secs(10), "load through the first", || {
        load.ok() >= 300
    })
    .await;

    // `systemctl restart`: SIGTERM and wait for the exit, then start again
    // on the same socket.
    let stopped = tokio::task::block_in_place(|| first.terminate());
    assert!(stopped.success(), "{stopped:?}");
    let at_restart = load.ok();
    let second = Proxy::start_activated(dir.path(), &config, &socket);
    assert_eq!(second.addr, addr);
    eventually(Duration::from_secs(10), "load through the second", || {
        load.ok() >= at_restart + 300
    })
    .await;

    let (ok, failed, failures) = load.finish().await;
    assert_eq!(failed, 0, "{ok} ok, {failed} failed: {failures:#?}");
    // The runtime decision survived the restart too.
    let status = tokio::task::block_in_place(|| second.status());
    assert_eq!(status["routes"][0]["active"], "green", "{status}");
    assert_eq!(blue.requests.load(std::sync::atomic::Ordering::Relaxed), 0);
}

/// A panic in the control plane is not silent: the proxy logs it, drains
/// and exits with status 70 (so systemd's `Restart=on-failure` restarts it),
/// and the next start restores every decision from the state file. The
/// panic is injected by a debug-build-only fault switch.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_control_plane_panic_exits_non_zero_and_the_restart_restores_the_decisions() {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchyard.toml");
    let routes = two_slot_route("app", "blue", &blue, &green);
    std::fs::write(&config, config_text(&routes)).unwrap();
    let fault = [("SWITCHYARD_FAULT", "control-panic")];
    let mut proxy = Proxy::start_with_env(dir.path(), &config, &fault);
    tokio::task::block_in_place(|| proxy.cli_ok(&["switch", "app", "green"]));

    let answer = tokio::task::block_in_place(|| proxy.cli(&["status", "panic"]));
    assert!(
        !answer.status.success(),
        "the command that panicked gets no answer"
    );
    let exit = tokio::task::block_in_place(|| proxy.wait_for_exit(Duration::from_secs(20)));
    assert_eq!(exit.code(), Some(70), "{exit:?}\n{}", proxy.log_text());
    eventually(Duration::from_secs(5), "the panic in the log", || {
        proxy.log_text().contains("the control plane panicked")
    })
    .await;
    drop(proxy);

    let restarted = Proxy::start(dir.path(), &routes);
    let status = restarted.status();
    assert_eq!(status["routes"][0]["active"], "green", "{status:#}");
}
