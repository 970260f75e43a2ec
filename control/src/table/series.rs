//! The Prometheus series one slot feeds from the request path:
//! `switchyard_requests_total{route,slot,code}`,
//! `switchyard_request_duration_seconds{route,slot}` and
//! `switchyard_upstream_failures_total{route,slot,kind}`.
//!
//! They go through the `metrics` facade to whatever recorder the binary
//! installed (metrics-exporter-prometheus; none in unit tests, where every
//! handle is a no-op). Each handle is registered the first time it is
//! needed and kept: after that a count is one atomic add and a duration
//! one lock-free push, with no label lookup per request.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{Counter, Histogram};

pub const REQUESTS: &str = "switchyard_requests_total";
pub const REQUEST_DURATION: &str = "switchyard_request_duration_seconds";
pub const UPSTREAM_FAILURES: &str = "switchyard_upstream_failures_total";

/// Status codes with a counter of their own; anything else (a backend may
/// send 999) is counted under `code="other"`.
const FIRST_CODE: u16 = 100;
const LAST_CODE: u16 = 599;

/// Why a request's upstream exchange failed, as the `kind` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The TCP connect was refused or failed.
    Connect,
    /// The connect or the wait for the answer ran out of time.
    Timeout,
    /// The backend closed the connection before answering.
    Dropped,
    /// Anything else: an invalid response header, a broken response.
    Protocol,
}

impl FailureKind {
    const ALL: [FailureKind; 4] = [
        FailureKind::Connect,
        FailureKind::Timeout,
        FailureKind::Dropped,
        FailureKind::Protocol,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Connect => "connect",
            FailureKind::Timeout => "timeout",
            FailureKind::Dropped => "dropped",
            FailureKind::Protocol => "protocol",
        }
    }
}

/// One slot's exported series.
#[derive(Debug)]
pub struct SlotSeries {
    route: Arc<str>,
    slot: Arc<str>,
    /// By status code, from `FIRST_CODE`; the last entry is "other".
    by_code: Box<[OnceLock<Counter>]>,
    duration: OnceLock<Histogram>,
    failures: [OnceLock<Counter>; FailureKind::ALL.len()],
}

impl SlotSeries {
    pub fn new(route: &str, slot: &str) -> SlotSeries {
        SlotSeries {
            route: route.into(),
            slot: slot.into(),
            by_code: (FIRST_CODE..=LAST_CODE + 1)
                .map(|_| OnceLock::new())
                .collect(),
            duration: OnceLock::new(),
            failures: Default::default(),
        }
    }

    /// One answered request: its status and the time to its response header.
    pub fn answered(&self, status: u16, latency: Duration) {
        let index = if (FIRST_CODE..=LAST_CODE).contains(&status) {
            usize::from(status - FIRST_CODE)
        } else {
            self.by_code.len() - 1
        };
        self.by_code[index]
            .get_or_init(|| {
                let code = if (FIRST_CODE..=LAST_CODE).contains(&status) {
                    status.to_string()
                } else {
                    "other".to_string()
                };
                metrics::counter!(REQUESTS, "route" => self.route.to_string(), "slot" => self.slot.to_string(), "code" => code)
            })
            .increment(1);
        self.duration
            .get_or_init(|| {
                metrics::histogram!(REQUEST_DURATION, "route" => self.route.to_string(), "slot" => self.slot.to_string())
            })
            .record(latency.as_secs_f64());
    }

    pub fn upstream_failed(&self, kind: FailureKind) {
        let index = FailureKind::ALL
            .iter()
            .position(|k| *k == kind)
            .unwrap_or_default();
        self.failures[index]
            .get_or_init(|| {
                metrics::counter!(UPSTREAM_FAILURES, "route" => self.route.to_string(), "slot" => self.slot.to_string(), "kind" => kind.as_str())
            })
            .increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics::{Key, KeyName, Metadata, Recorder, SharedString, Unit};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;

    /// Records what was registered and counted, by rendered key.
    #[derive(Default)]
    struct Seen {
        registered: Mutex<Vec<String>>,
        counted: Arc<AtomicU64>,
    }

    struct Count(Arc<AtomicU64>);
    impl metrics::CounterFn for Count {
        fn increment(&self, n: u64) {
            self.0.fetch_add(n, Ordering::Relaxed);
        }
        fn absolute(&self, _: u64) {}
    }

    fn render(key: &Key) -> String {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        format!("{}{{{}}}", key.name(), labels.join(","))
    }

    impl Recorder for Seen {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            self.registered.lock().unwrap().push(render(key));
            Counter::from_arc(Arc::new(Count(self.counted.clone())))
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> metrics::Gauge {
            metrics::Gauge::noop()
        }
        fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
            self.registered.lock().unwrap().push(render(key));
            Histogram::noop()
        }
    }

    #[test]
    fn each_series_is_registered_once_with_its_labels() {
        let seen = Seen::default();
        metrics::with_local_recorder(&seen, || {
            let series = SlotSeries::new("app", "green");
            for _ in 0..3 {
                series.answered(200, Duration::from_millis(2));
            }
            series.answered(503, Duration::from_millis(2));
            series.answered(999, Duration::from_millis(2));
            series.upstream_failed(FailureKind::Connect);
            series.upstream_failed(FailureKind::Connect);
        });
        let registered = seen.registered.lock().unwrap().clone();
        assert_eq!(
            registered,
            [
                "switchyard_requests_total{route=app,slot=green,code=200}",
                "switchyard_request_duration_seconds{route=app,slot=green}",
                "switchyard_requests_total{route=app,slot=green,code=503}",
                "switchyard_requests_total{route=app,slot=green,code=other}",
                "switchyard_upstream_failures_total{route=app,slot=green,kind=connect}",
            ]
        );
        // Five answers and two failures, all counted.
        assert_eq!(seen.counted.load(Ordering::Relaxed), 7);
    }
}
