//! One log line per request (`[server] access_log = true`), written off
//! the request path: a worker hands a small record to a bounded queue and
//! moves on; one thread formats and writes the lines through tracing
//! (target `access`, in the configured log format). When the writer falls
//! behind, records are dropped and counted
//! (`switchyard_access_log_dropped_total`) rather than slowing traffic.

use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;

/// Records waiting for the writer; at 30,000 requests a second this is a
/// quarter of a second of slack.
const QUEUE: usize = 8192;

pub const DROPPED: &str = "switchyard_access_log_dropped_total";

/// What one request leaves in the access log.
pub struct Entry {
    pub client: Option<IpAddr>,
    pub method: http::Method,
    pub uri: http::Uri,
    /// `None`: no route matched.
    pub route: Option<Arc<str>>,
    /// The slot and backend of the last attempt; `None` if none connected.
    pub slot: Option<Arc<str>>,
    pub backend: Option<SocketAddr>,
    /// 0 when the client left before any answer.
    pub status: u16,
    /// Response body bytes sent to the client.
    pub bytes: usize,
    pub duration: Duration,
    pub request_id: HeaderValue,
}

pub struct AccessLog {
    queue: SyncSender<Entry>,
    dropped: metrics::Counter,
}

impl AccessLog {
    /// Starts the writer thread. Call after the metrics recorder is
    /// installed, so the drop counter is a real one.
    pub fn start() -> std::io::Result<AccessLog> {
        let (queue, records) = sync_channel(QUEUE);
        metrics::describe_counter!(
            DROPPED,
            "Access log lines dropped because the writer fell behind."
        );
        std::thread::Builder::new()
            .name("switchyard-access-log".into())
            .spawn(move || write_lines(records))?;
        Ok(AccessLog {
            queue,
            dropped: metrics::counter!(DROPPED),
        })
    }

    /// Queues one request's line; never blocks.
    pub fn record(&self, entry: Entry) {
        match self.queue.try_send(entry) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.increment(1)
            }
        }
    }
}

/// Runs until every `AccessLog` is dropped.
fn write_lines(records: Receiver<Entry>) {
    for entry in records {
        let dash = "-";
        let client = entry.client.map(|ip| ip.to_string());
        let backend = entry.backend.map(|b| b.to_string());
        tracing::info!(
            target: "access",
            client = client.as_deref().unwrap_or(dash),
            method = entry.method.as_str(),
            uri = %entry.uri,
            route = entry.route.as_deref().unwrap_or(dash),
            slot = entry.slot.as_deref().unwrap_or(dash),
            backend = backend.as_deref().unwrap_or(dash),
            status = entry.status,
            bytes = entry.bytes,
            duration_ms = entry.duration.as_secs_f64() * 1000.0,
            request_id = entry.request_id.to_str().unwrap_or(dash),
        );
    }
}
