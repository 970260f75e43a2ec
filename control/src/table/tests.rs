use super::*;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn spec(name: &str, hosts: &[&str], prefix: &str) -> RouteSpec {
    RouteSpec {
        name: name.into(),
        hosts: hosts
            .iter()
            .map(|h| match h.strip_prefix('*') {
                Some(suffix) => HostPattern::Suffix(suffix.into()),
                None => HostPattern::Exact((*h).into()),
            })
            .collect(),
        path_prefix: prefix.into(),
        slots: vec![
            ("blue".into(), vec![addr(1), addr(2)]),
            ("green".into(), vec![addr(3)]),
        ],
        active: "blue".into(),
        previous: None,
        canary: None,
        retries: 2,
        loads: Default::default(),
        unhealthy: Vec::new(),
        h2c: Vec::new(),
        tls: Default::default(),
        backend_hosts: Default::default(),
        assignment: AssignmentSpec::default(),
        https: HttpsSpec::default(),
        upgrades: vec!["websocket".into()],
        pool_epoch: 0,
        maintenance: false,
        error_pages: Default::default(),
        max_body_size: None,
        rate_limit: None,
        access: None,
    }
}

fn matched<'a>(table: &'a RoutingTable, host: Option<&str>, path: &str) -> Option<&'a str> {
    table.route_for(host, path).map(|r| &*r.name)
}

#[test]
fn host_matching_ignores_case_and_port() {
    let table = RoutingTable::build(1, vec![spec("app", &["app.example.com"], "/")]);
    assert_eq!(
        matched(&table, Some("APP.Example.com:8080"), "/"),
        Some("app")
    );
    assert_eq!(matched(&table, Some("app.example.com."), "/x"), Some("app"));
    assert_eq!(matched(&table, Some("other.example.com"), "/"), None);
    assert_eq!(matched(&table, None, "/"), None);
}

#[test]
fn exact_beats_wildcard_beats_any_host() {
    let table = RoutingTable::build(
        1,
        vec![
            spec("any", &[], "/"),
            spec("wild", &["*.example.com"], "/"),
            spec("deep", &["*.api.example.com"], "/"),
            spec("exact", &["www.example.com"], "/"),
        ],
    );
    assert_eq!(matched(&table, Some("www.example.com"), "/"), Some("exact"));
    assert_eq!(matched(&table, Some("shop.example.com"), "/"), Some("wild"));
    assert_eq!(
        matched(&table, Some("v1.api.example.com"), "/"),
        Some("deep")
    );
    assert_eq!(matched(&table, Some("example.com"), "/"), Some("any"));
    assert_eq!(matched(&table, Some("[::1]:80"), "/"), Some("any"));
}

#[test]
fn longest_path_prefix_wins_on_segment_boundaries() {
    let table = RoutingTable::build(
        1,
        vec![
            spec("root", &["a"], "/"),
            spec("api", &["a"], "/api"),
            spec("v2", &["a"], "/api/v2/"),
        ],
    );
    assert_eq!(matched(&table, Some("a"), "/api"), Some("api"));
    assert_eq!(matched(&table, Some("a"), "/api?x=1"), Some("api"));
    assert_eq!(matched(&table, Some("a"), "/api/v1"), Some("api"));
    assert_eq!(matched(&table, Some("a"), "/api/v2/users"), Some("v2"));
    assert_eq!(matched(&table, Some("a"), "/apiary"), Some("root"));
}

#[test]
fn a_host_route_without_matching_prefix_falls_through_to_any_host() {
    let table = RoutingTable::build(1, vec![spec("api", &["a"], "/api"), spec("any", &[], "/")]);
    assert_eq!(matched(&table, Some("a"), "/other"), Some("any"));
}

#[test]
fn backends_are_picked_round_robin_and_retries_move_on() {
    let table = RoutingTable::build(1, vec![spec("app", &[], "/")]);
    let slot = table.routes[0].active_slot();
    let picks: Vec<u16> = (0..4)
        .map(|_| slot.backend(slot.next_start(), 0).port())
        .collect();
    assert_eq!(picks, [1, 2, 1, 2]);
    let start = slot.next_start();
    assert_ne!(slot.backend(start, 1), slot.backend(start, 0));
    assert_eq!(slot.backend(start, 2), slot.backend(start, 0));
}

#[test]
fn canary_weight_splits_clients_by_address_and_keeps_each_one_put() {
    let mut s = spec("app", &[], "/");
    s.canary = Some(("green".into(), 20));
    let table = RoutingTable::build(1, vec![s]);
    let route = &table.routes[0];
    let none = http::HeaderMap::new();
    let ip = |n: u32| Some(std::net::IpAddr::from(std::net::Ipv4Addr::from(n)));
    let canary = (0..10_000u32)
        .filter(|&n| {
            let choice = route.choose(&none, ip(n), false);
            assert_eq!(choice, route.choose(&none, ip(n), false));
            choice.slot == 1
        })
        .count();
    assert!(
        canary.abs_diff(2_000) <= 200,
        "{canary} of 10,000 on a 20 % canary"
    );
}

#[test]
fn preview_hosts_lead_to_their_route_marked_as_preview() {
    let mut s = spec("app", &["app.example.com"], "/");
    s.assignment.preview = Some(switchyard_conf::PreviewConfig {
        override_header: "x-switchyard-slot".into(),
        override_token: None,
        override_cidrs: vec![],
        preview_hosts: vec![HostPattern::Exact("preview.example.com".into())],
    });
    s.assignment.preview_slot = Some("green".into());
    let table = RoutingTable::build(1, vec![s]);
    let user = table.route_ref_for(Some("app.example.com"), "/").unwrap();
    let tester = table
        .route_ref_for(Some("Preview.example.com"), "/")
        .unwrap();
    assert!(!user.preview && tester.preview);
    let none = http::HeaderMap::new();
    assert_eq!(table.routes[0].choose(&none, None, tester.preview).slot, 1);
    assert_eq!(table.routes[0].choose(&none, None, user.preview).slot, 0);
}

#[test]
fn canary_equal_to_active_or_unknown_is_ignored() {
    let mut s = spec("app", &[], "/");
    s.canary = Some(("blue".into(), 50));
    assert_eq!(RoutingTable::build(1, vec![s]).routes[0].canary, None);
    let mut s = spec("app", &[], "/");
    s.canary = Some(("nope".into(), 50));
    assert_eq!(RoutingTable::build(1, vec![s]).routes[0].canary, None);
}

#[test]
fn pool_keys_differ_by_slot_and_epoch_not_by_generation() {
    let one = RoutingTable::build(1, vec![spec("app", &[], "/")]);
    let two = RoutingTable::build(2, vec![spec("app", &[], "/")]);
    let mut switched = spec("app", &[], "/");
    switched.pool_epoch += 1;
    let three = RoutingTable::build(3, vec![switched]);
    let key = |table: &RoutingTable, slot: usize| table.routes[0].slots[slot].pool_key;
    assert_ne!(key(&one, 0), key(&one, 1));
    assert_eq!(key(&one, 0), key(&two, 0));
    assert_ne!(key(&one, 0), key(&three, 0));
}

#[test]
fn a_not_found_page_comes_from_the_most_specific_route_of_the_host_then_the_server() {
    let with_page = |name: &str, hosts: &[&str], prefix: &str| {
        let mut route = spec(name, hosts, prefix);
        route
            .error_pages
            .insert(404, bytes::Bytes::from(format!("{name} 404")));
        route
    };
    let table = RoutingTable::build(
        1,
        vec![
            with_page("exact", &["www.example.com"], "/app"),
            spec("bare", &["bare.example.com"], "/app"),
            with_page("wild", &["*.example.com"], "/shop"),
            with_page("deep", &["*.api.example.com"], "/v1"),
        ],
    )
    .with_not_found_page(Some(bytes::Bytes::from_static(b"server 404")));
    let page = |host: &str| table.not_found_page(Some(host)).map(|p| &p[..]);
    assert_eq!(page("WWW.example.com:8080"), Some(&b"exact 404"[..]));
    assert_eq!(page("x.api.example.com"), Some(&b"deep 404"[..]));
    assert_eq!(page("shop.example.com"), Some(&b"wild 404"[..]));
    // A host whose route has no page of its own falls to the wildcard's.
    assert_eq!(page("bare.example.com"), Some(&b"wild 404"[..]));
    assert_eq!(page("elsewhere.org"), Some(&b"server 404"[..]));
    assert_eq!(
        table.not_found_page(None).map(|p| &p[..]),
        Some(&b"server 404"[..])
    );

    let table = RoutingTable::build(1, vec![spec("bare", &["bare.example.com"], "/app")]);
    assert_eq!(table.not_found_page(Some("bare.example.com")), None);
}
