//! The Prometheus recorder behind `/metrics`: the counters and histograms
//! the request path and the Controller feed through the `metrics` facade
//! (requests, durations, upstream failures, config reloads), rendered by
//! metrics-exporter-prometheus.
//!
//! The series that describe the Controller's current state (backend up,
//! active slot, canary weight, in flight, switches) are not kept here:
//! the Controller renders them from its state on each scrape, so a route
//! or slot removed from the config disappears from them at once instead
//! of lingering as a stale gauge.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use switchyard_control::metrics::{CONFIG_RELOADS, REQUESTS, REQUEST_DURATION, UPSTREAM_FAILURES};

/// Request durations, in seconds: from a cache hit on loopback to a slow
/// backend near the default 60 s read timeout.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Histogram samples wait in a lock-free buffer until they are folded into
/// the buckets; this folds them even when nobody scrapes, so the buffer
/// stays small.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The process-wide recorder's handle, installed on first use. Install it
/// before the first request and before the Controller starts: a series
/// registered while no recorder exists stays a no-op for good.
pub fn handle() -> Result<PrometheusHandle, String> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE.get_or_init(install).clone()
}

fn install() -> Result<PrometheusHandle, String> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.into()), DURATION_BUCKETS)
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    describe();
    Ok(handle)
}

/// Folds buffered histogram samples into their buckets, every few seconds,
/// until the runtime ends.
pub async fn upkeep(handle: PrometheusHandle) {
    let mut every = tokio::time::interval(UPKEEP_EVERY);
    loop {
        every.tick().await;
        handle.run_upkeep();
    }
}

fn describe() {
    metrics::describe_counter!(
        REQUESTS,
        "Requests answered, by route, slot and status code (our own 502/504 included)."
    );
    metrics::describe_histogram!(
        REQUEST_DURATION,
        metrics::Unit::Seconds,
        "Time from the request read to the response header, by route and slot."
    );
    metrics::describe_counter!(
        UPSTREAM_FAILURES,
        "Failed upstream exchanges, retried or not, by kind: connect, timeout, dropped (closed before answering), protocol (an invalid or broken answer)."
    );
    metrics::describe_counter!(
        CONFIG_RELOADS,
        "Config file reloads by result: ok (applied), error (rejected; the last good config runs on), unchanged."
    );
}
