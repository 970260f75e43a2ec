//! Log lines through tracing, on stderr (journald and `docker logs` take
//! them from there), as logfmt or JSON (`[server] log_format`). The level
//! filter comes from `SWITCHYARD_LOG` (tracing's env-filter syntax).

use switchyard_conf::LogFormat;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// pingora's connector logs at ERROR each pooled connection it finds closed
/// and discards: routine when backends close idle connections, and every
/// failure that matters reaches us as an error we log ourselves. Silenced
/// unless `SWITCHYARD_LOG` names that target.
const QUIET_POOL: &str = "pingora_core::connectors=off";

/// Installs the process's log writer. Call once, early.
pub fn init(format: LogFormat) {
    let registry = tracing_subscriber::registry().with(filter());
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

fn filter() -> EnvFilter {
    let from_env = std::env::var("SWITCHYARD_LOG").ok();
    let mut filter = from_env
        .as_deref()
        .and_then(|spec| EnvFilter::try_new(spec).ok())
        .unwrap_or_else(|| EnvFilter::new("info,pingora_core=warn"));
    if !from_env.is_some_and(|spec| spec.contains("pingora_core::connectors")) {
        if let Ok(directive) = QUIET_POOL.parse() {
            filter = filter.add_directive(directive);
        }
    }
    filter
}
