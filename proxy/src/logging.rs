//! Log lines through tracing, on stderr (journald and `docker logs` take
//! them from there), as logfmt or JSON (`[server] log_format`). The level
//! filter comes from `SWITCHYARD_LOG` (tracing's env-filter syntax).

use std::fmt::Debug;

use switchyard_conf::LogFormat;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// pingora's connector logs at ERROR each pooled connection it finds closed
/// and discards: routine when backends close idle connections, and every
/// failure that matters reaches us as an error we log ourselves. Silenced
/// unless `SWITCHYARD_LOG` names that target.
const QUIET_POOL: &str = "pingora_core::connectors=off";

/// rustls warns about a client's quirks once per handshake (an IP address
/// sent as SNI, as wrk and some health checkers do): a line per connection
/// that any client can cause. Its warnings and below are dropped unless
/// `SWITCHYARD_LOG` names `rustls`; a handshake that fails is counted
/// ([`HANDSHAKE_FAILURES`]) either way.
const QUIET_RUSTLS: &str = "rustls=error";

/// Where pingora logs, at ERROR, every TLS handshake a client fails or
/// abandons: a scanner on port 443, a client that does not trust the
/// certificate. On a public port that would bury the errors that matter,
/// so those lines are counted in `switchyard_tls_handshake_failures_total`
/// instead, unless `SWITCHYARD_LOG` names this target. Its other errors
/// (`Accept() failed`, file descriptors running out) are kept.
const LISTENING: &str = "pingora_core::services::listening";

/// `switchyard_tls_handshake_failures_total`.
pub const HANDSHAKE_FAILURES: &str = "switchyard_tls_handshake_failures_total";

/// `switchyard_proxy_protocol_failures_total`: connections to a
/// `proxy_protocol` listener closed for a missing or bad header.
pub const PROXY_HEADER_FAILURES: &str = "switchyard_proxy_protocol_failures_total";

/// Installs the process's log writer. Call once, early.
pub fn init(format: LogFormat) {
    let quiet = !std::env::var("SWITCHYARD_LOG").is_ok_and(|spec| spec.contains(LISTENING));
    let registry = tracing_subscriber::registry()
        .with(filter())
        .with(quiet.then_some(QuietHandshakes));
    match format {
        LogFormat::Logfmt => registry
            .with(
                tracing_logfmt::builder()
                    .with_span_name(false)
                    .with_span_path(false)
                    .layer()
                    .with_writer(std::io::stderr),
            )
            .init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr),
            )
            .init(),
    }
}

/// Drops pingora's per-handshake error lines and counts them; see
/// [`LISTENING`].
struct QuietHandshakes;

impl<S: Subscriber> Layer<S> for QuietHandshakes {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        // Lines from the `log` crate (pingora's) carry their real target
        // in normalised metadata.
        let normalized = event.normalized_metadata();
        let metadata = normalized.as_ref().unwrap_or_else(|| event.metadata());
        if metadata.target() != LISTENING {
            return true;
        }
        let mut handshake = IsHandshakeError(false);
        event.record(&mut handshake);
        if handshake.0 {
            metrics::counter!(HANDSHAKE_FAILURES).increment(1);
        }
        !handshake.0
    }
}

/// Whether an event's message is pingora's "Downstream handshake ...".
struct IsHandshakeError(bool);

impl Visit for IsHandshakeError {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}").starts_with("Downstream handshake");
        }
    }
}

fn filter() -> EnvFilter {
    let from_env = std::env::var("SWITCHYARD_LOG").ok();
    let mut filter = from_env
        .as_deref()
        .and_then(|spec| EnvFilter::try_new(spec).ok())
        .unwrap_or_else(|| EnvFilter::new("info,pingora_core=warn"));
    for (quiet, unless_named) in [
        (QUIET_POOL, "pingora_core::connectors"),
        (QUIET_RUSTLS, "rustls"),
    ] {
        if from_env
            .as_deref()
            .is_some_and(|spec| spec.contains(unless_named))
        {
            continue;
        }
        if let Ok(directive) = quiet.parse() {
            filter = filter.add_directive(directive);
        }
    }
    filter
}
