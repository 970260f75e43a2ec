//! The request path's decision: which route, which slot, which backend.
//! Target (issue "Performance"): under 100 ns at 100 routes.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use switchyard_benches::table_with_routes;

fn decide(c: &mut Criterion) {
    let mut group = c.benchmark_group("route+slot+backend");
    for routes in [1usize, 100, 1000] {
        let table = table_with_routes(routes);
        let host = format!("APP{}.example.com:443", routes / 2);
        group.bench_with_input(BenchmarkId::from_parameter(routes), &host, |b, host| {
            b.iter(|| {
                let index = table
                    .route_index_for(Some(black_box(host)), black_box("/api/users"))
                    .unwrap();
                let route = &table.routes[index];
                let slot = route.slot(route.pick_slot());
                black_box(slot.backend(slot.next_start(), 0))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, decide);
criterion_main!(benches);
