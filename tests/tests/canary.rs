//! Canary assignment end to end: sticky cookies, the hash of the client's
//! address, the override header and preview hosts, through the real binary.

use switchyard_tests::*;

fn canary_route(blue: &Backend, green: &Backend, extra: &str) -> String {
    format!(
        "{}[route.canary]\nslot = \"green\"\nweight = 0\nsticky_cookie = \"sy\"\nsticky_max_age = \"1h\"\n{extra}",
        two_slot_route("app", "blue", blue, green)
    )
}

/// `sy=green.1a2b` from `sy=green.1a2b; Path=/; ...`.
fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_string()
}

async fn get_with_cookie(client: &mut Client, cookie: &str) -> Reply {
    let headers = [("cookie", cookie)];
    client
        .send("GET", "x", "/", &headers, Default::default())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sticky_clients_never_change_slot_while_the_weight_rises() {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &canary_route(&blue, &green, ""));
    tokio::task::block_in_place(|| proxy.cli_ok(&["canary", "app", "green", "10"]));

    // 200 browsers, each from its own address, keep the cookie they get.
    let mut browsers = Vec::new();
    for n in 0..200u32 {
        let mut client = Client::from_address(proxy.addr, client_address(n));
        let first = client.get("x", "/").await.unwrap();
        let set_cookie = first.set_cookie.expect("a new client gets a cookie");
        assert!(
            set_cookie.ends_with("; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax"),
            "{set_cookie}"
        );
        let slot = first.slot.unwrap();
        assert!(
            set_cookie.starts_with(&format!("sy={slot}.")),
            "{set_cookie}"
        );
        browsers.push((client, cookie_pair(&set_cookie), slot));
    }
    let on_green = browsers.iter().filter(|(_, _, s)| s == "green").count();
    assert!((2..=45).contains(&on_green), "{on_green} of 200 at 10 %");

    for weight in ["30", "60", "100"] {
        tokio::task::block_in_place(|| proxy.cli_ok(&["canary", "app", "green", weight]));
        for (client, cookie, slot) in &mut browsers {
            let reply = get_with_cookie(client, cookie).await;
            assert_eq!(reply.slot.as_deref(), Some(slot.as_str()), "at {weight} %");
            assert_eq!(reply.set_cookie, None, "a placed client keeps its cookie");
        }
    }

    // The canary ends: its cookies name a slot that no longer gets
    // traffic, and those clients are back on the active slot.
    tokio::task::block_in_place(|| proxy.cli_ok(&["canary", "app", "green", "0"]));
    for (client, cookie, _) in &mut browsers {
        let reply = get_with_cookie(client, cookie).await;
        assert_eq!(reply.slot.as_deref(), Some("blue"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cookieless_clients_only_ever_move_to_the_canary_as_the_weight_rises() {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &canary_route(&blue, &green, ""));
    tokio::task::block_in_place(|| proxy.cli_ok(&["canary", "app", "green", "20"]));
    let mut clients: Vec<(Client, bool)> = (0..150u32)
        .map(|n| (Client::from_address(proxy.addr, client_address(n)), false))
        .collect();
    let mut counts = Vec::new();
    for weight in ["20", "50", "80"] {
        tokio::task::block_in_place(|| proxy.cli_ok(&["canary", "app", "green", weight]));
        for (n, (client, was_on_green)) in clients.iter_mut().enumerate() {
            let on_green = client.get("x", "/").await.unwrap().slot.as_deref() == Some("green");
            assert!(
                on_green || !*was_on_green,
                "client {n} moved back at {weight} %"
            );
            *was_on_green = on_green;
        }
        counts.push(clients.iter().filter(|(_, g)| *g).count());
    }
    assert!(
        counts[0] < counts[1] && counts[1] < counts[2],
        "{counts:?} of 150"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_override_header_needs_the_token_and_preview_hosts_see_the_inactive_slot() {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    let preview = "[route.preview]\noverride_token = \"s3cret\"\noverride_cidrs = [\"127.9.0.0/16\"]\npreview_hosts = [\"preview.test\"]\n";
    let routes = format!(
        "[[route]]\nname = \"app\"\nhosts = [\"app.test\"]\nactive = \"blue\"\n[route.slots]\nblue = [\"{}\"]\ngreen = [\"{}\"]\n{preview}",
        blue.addr, green.addr
    );
    let proxy = Proxy::start(dir.path(), &routes);
    let mut client = Client::new(proxy.addr);
    let ask = |headers: &'static [(&'static str, &'static str)]| headers;

    let with_token = client
        .send(
            "GET",
            "app.test",
            "/echo-headers",
            ask(&[
                ("x-switchyard-slot", "green"),
                ("x-switchyard-token", "s3cret"),
            ]),
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(with_token.slot.as_deref(), Some("green"));
    assert!(
        !with_token.body.contains("x-switchyard-token"),
        "the token does not reach the backend: {}",
        with_token.body
    );
    for headers in [
        ask(&[("x-switchyard-slot", "green")]),
        ask(&[
            ("x-switchyard-slot", "green"),
            ("x-switchyard-token", "guess"),
        ]),
    ] {
        let ignored = client
            .send("GET", "app.test", "/", headers, Default::default())
            .await;
        assert_eq!(
            ignored.unwrap().slot.as_deref(),
            Some("blue"),
            "{headers:?}"
        );
    }
    // From an allowed network, the header alone is enough.
    let mut tester = Client::from_address(proxy.addr, "127.9.0.5".parse().unwrap());
    let from_network = tester
        .send(
            "GET",
            "app.test",
            "/",
            ask(&[("x-switchyard-slot", "green")]),
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(from_network.slot.as_deref(), Some("green"));

    // The preview host reaches the slot that is not active, before any user
    // sees it, and follows a switch.
    assert_eq!(
        client
            .get("preview.test", "/")
            .await
            .unwrap()
            .slot
            .as_deref(),
        Some("green")
    );
    assert_eq!(
        client.get("app.test", "/").await.unwrap().slot.as_deref(),
        Some("blue")
    );
    tokio::task::block_in_place(|| proxy.cli_ok(&["switch", "app", "green"]));
    assert_eq!(
        client
            .get("preview.test", "/")
            .await
            .unwrap()
            .slot
            .as_deref(),
        Some("blue")
    );
    assert_eq!(
        client.get("app.test", "/").await.unwrap().slot.as_deref(),
        Some("green")
    );
}
