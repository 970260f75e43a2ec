//! Deciding where a request goes allocates nothing: route match, slot pick
//! and backend pick run under a counting global allocator that must stay at
//! zero. (Its own test binary, so the allocator sees only this.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;

use switchyard_conf::HostPattern;
use switchyard_control::table::{RouteSpec, RoutingTable};

struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only counts on the side.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

fn table() -> RoutingTable {
    let backend = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let specs = (0..100)
        .map(|i| RouteSpec {
            name: format!("app{i}"),
            hosts: vec![
                HostPattern::Exact(format!("app{i}.example.com")),
                HostPattern::Suffix(format!(".app{i}.example.com")),
            ],
            path_prefix: if i % 2 == 0 {
                "/".into()
            } else {
                "/api".into()
            },
            slots: vec![
                ("blue".into(), vec![backend(1), backend(2)]),
                ("green".into(), vec![backend(3)]),
            ],
            active: "blue".into(),
            previous: Some("green".into()),
            canary: Some(("green".into(), 30)),
            retries: 2,
            loads: Default::default(),
            unhealthy: Vec::new(),
            h2c: Vec::new(),
            tls: Default::default(),
            backend_hosts: Default::default(),
            assignment: Default::default(),
            https: Default::default(),
            upgrades: vec!["websocket".into()],
            pool_epoch: 0,
            maintenance: false,
            error_pages: Default::default(),
            max_body_size: None,
            rate_limit: None,
            access: None,
        })
        .collect();
    RoutingTable::build(1, specs)
}

#[test]
fn choosing_route_slot_and_backend_allocates_nothing() {
    let table = table();
    let requests = [
        (Some("APP7.example.com:8443"), "/api/users?id=1"),
        (Some("x.app42.example.com"), "/"),
        (Some("unknown.example.org"), "/"),
        (None, "/"),
        (Some("[::1]:80"), "/health"),
    ];
    // A sticky cookie to look for, and a client address to hash when it
    // does not name the current canary.
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "cookie",
        "theme=dark; switchyard-slot=green.0".parse().unwrap(),
    );
    let client = Some(std::net::IpAddr::from([203, 0, 113, 9]));
    let before = allocations();
    let mut found = 0;
    for _ in 0..1000 {
        for (host, path) in requests {
            if let Some(found_route) = table.route_ref_for(host, path) {
                let route = &table.routes[found_route.index];
                let choice = route.choose(&headers, client, found_route.preview);
                std::hint::black_box(route.set_cookie(choice.slot));
                let slot = route.slot(choice.slot);
                std::hint::black_box(slot.backend(slot.next_start(), 1));
                found += 1;
            }
        }
    }
    let after = allocations();
    assert_eq!(found, 2000, "two of the five requests match a route");
    assert_eq!(after - before, 0, "the request-path decision allocated");
}
