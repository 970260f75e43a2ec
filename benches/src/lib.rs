//! switchyard's benchmarks. `benches/request_path.rs` measures the request
//! path's decision (route match, slot pick, backend pick) with criterion;
//! the load benchmark against nginx and HAProxy comes with the performance
//! work.

use std::net::SocketAddr;

use switchyard_conf::HostPattern;
use switchyard_control::table::{RouteSpec, RoutingTable};

/// A table of `n` routes, each on its own host with two path prefixes'
/// worth of competition, like a VPS hosting many small apps.
pub fn table_with_routes(n: usize) -> RoutingTable {
    let specs = (0..n)
        .map(|i| RouteSpec {
            name: format!("app{i}"),
            hosts: vec![HostPattern::Exact(format!("app{i}.example.com"))],
            path_prefix: if i % 2 == 0 {
                "/".into()
            } else {
                "/api".into()
            },
            slots: vec![
                ("blue".into(), vec![backend(i, 0), backend(i, 1)]),
                ("green".into(), vec![backend(i, 2)]),
            ],
            active: "blue".into(),
            previous: None,
            canary: Some(("green".into(), 10)),
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

fn backend(route: usize, n: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 10_000 + (route * 3 + n) as u16 % 50_000))
}
