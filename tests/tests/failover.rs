//! A route whose active slot dies with no previous slot (right after the
//! first start) hands over to another healthy slot instead of sending every
//! request to the dead one; `failover = "none"` keeps it where it is.

use std::sync::atomic::Ordering;

use switchyard_tests::{Backend, Client, Proxy};

fn route(blue: &Backend, green: &Backend, failover: &str) -> String {
    format!(
        "[[route]]\nname = \"app\"\nactive = \"blue\"\n{failover}[route.slots]\nblue = [\"{}\"]\ngreen = [\"{}\"]\n\
         [route.health]\npath = \"/health\"\ninterval = \"100ms\"\nrise = 1\nfall = 2\n",
        blue.addr, green.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_active_slot_with_no_previous_fails_over_to_a_healthy_one() {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &route(&blue, &green, ""));
    proxy
        .wait_for_status("both healthy", |s| {
            let slots = &s["routes"][0]["slots"];
            slots[0]["health"] == "healthy" && slots[1]["health"] == "healthy"
        })
        .await;
    blue.healthy.store(false, Ordering::Relaxed);
    let status = proxy
        .wait_for_status("green active", |s| s["routes"][0]["active"] == "green")
        .await;
    assert_eq!(status["routes"][0]["decided_by"], "failback");
    assert!(status["routes"][0]["critical"].is_null(), "{status:#}");
    let reply = Client::new(proxy.addr).get("x", "/").await.unwrap();
    assert_eq!(reply.slot.as_deref(), Some("green"));
    let history = tokio::task::block_in_place(|| proxy.cli_ok(&["history", "app"]));
    assert!(history.contains("failed over to green"), "{history}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_none_keeps_the_route_on_its_dead_slot_and_critical() {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &route(&blue, &green, "failover = \"none\"\n"));
    proxy
        .wait_for_status("green healthy", |s| {
            s["routes"][0]["slots"][1]["health"] == "healthy"
        })
        .await;
    blue.healthy.store(false, Ordering::Relaxed);
    let status = proxy
        .wait_for_status("the route critical", |s| {
            s["routes"][0]["critical"].is_string()
        })
        .await;
    assert_eq!(status["routes"][0]["active"], "blue");
}
