//! `[route.health] expect_body`: a backend that answers its health check
//! 200 with the wrong body is not healthy.

use switchyard_tests::{Backend, Proxy};

fn route(blue: &Backend, green: &Backend, expect_body: &str) -> String {
    format!(
        "[[route]]\nname = \"app\"\nactive = \"blue\"\n[route.slots]\nblue = [\"{}\"]\ngreen = [\"{}\"]\n\
         [route.health]\npath = \"/health\"\ninterval = \"100ms\"\nrise = 1\nfall = 1\nexpect_body = {expect_body}\n",
        blue.addr, green.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_health_answer_is_judged_by_its_body_when_asked() {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    // The test backend's /health answers 200 with the body "health".
    let proxy = Proxy::start(dir.path(), &route(&blue, &green, "\"health\""));
    proxy
        .wait_for_status("blue healthy by its body", |s| {
            s["routes"][0]["slots"][0]["health"] == "healthy"
        })
        .await;

    proxy.edit_config(&route(&blue, &green, "{ status = \"healthy\" }"));
    let status = proxy
        .wait_for_status("blue unhealthy: its body is not JSON", |s| {
            s["routes"][0]["slots"][0]["health"] == "unhealthy"
        })
        .await;
    let last = &status["routes"][0]["slots"][0]["backends"][0]["last_check"];
    assert_eq!(last["ok"], false, "{last:#}");
    assert!(
        last["error"].as_str().unwrap().contains("not JSON"),
        "{last:#}"
    );
}
