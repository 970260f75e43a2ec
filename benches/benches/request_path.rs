//! The request path's decision: which route, which slot, which backend.
//! Target (issue "Performance"): under 100 ns at 100 routes. Each route has
//! a 10 % canary, so the slot pick reads the sticky cookie and hashes the
//! client's address; `counters` adds what the request path counts per slot
//! for rollout analysis.

use std::hint::black_box;
use std::net::IpAddr;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use switchyard_benches::table_with_routes;

fn decide(c: &mut Criterion) {
    let mut group = c.benchmark_group("route+slot+backend");
    // A browser's cookies, none of them ours yet, from one client address.
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "cookie",
        "theme=dark; session=0123456789abcdef".parse().unwrap(),
    );
    let client = Some(IpAddr::from([203, 0, 113, 9]));
    for routes in [1usize, 100, 1000] {
        let table = table_with_routes(routes);
        let host = format!("APP{}.example.com:443", routes / 2);
        group.bench_with_input(BenchmarkId::from_parameter(routes), &host, |b, host| {
            b.iter(|| {
                let found = table
                    .route_ref_for(Some(black_box(host)), black_box("/api/users"))
                    .unwrap();
                let route = &table.routes[found.index];
                let choice = route.choose(black_box(&headers), black_box(client), found.preview);
                let slot = route.slot(choice.slot);
                black_box(slot.backend(slot.next_start(), 0))
            })
        });
    }
    group.finish();
}

/// What every answered request adds: the analysis counters (a request
/// count, an error check, a latency bucket) and the exported series (a
/// per-code counter and a duration sample) on its slot, with the
/// Prometheus recorder the binary installs.
fn counters(c: &mut Criterion) {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("the only recorder in this process");
    // As in the binary: buffered duration samples are folded into their
    // buckets every few seconds.
    let upkeep = recorder.clone();
    std::thread::spawn(move || loop {
        std::thread::sleep(std::time::Duration::from_secs(5));
        upkeep.run_upkeep();
    });
    let table = table_with_routes(1);
    let load = &table.routes[0].slot(0).load;
    let started = Instant::now();
    c.bench_function("count one answered request", |b| {
        b.iter(|| {
            let guard = load.request();
            guard.answered(black_box(200), started.elapsed());
        })
    });
}

criterion_group!(benches, decide, counters);
criterion_main!(benches);
