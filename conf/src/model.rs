//! The validated configuration: plain data, every value parsed and checked.
//!
//! Nothing here can be invalid once `parse`/`load` returned it: addresses are
//! `SocketAddr`s, durations are `Duration`s, weights are 0–100, every slot a
//! route names exists. The control plane builds routing tables from it without
//! re-checking anything.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

/// A whole config file, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it came from, for messages (`"<demo>"` for an embedded one).
    pub source: String,
    pub server: ServerConfig,
    pub tls: Option<TlsConfig>,
    /// In file order. Names are unique.
    pub routes: Vec<RouteConfig>,
    /// `[[notify]]`: who is told of what switchyard does by itself.
    pub notify: Vec<NotifyConfig>,
    /// `[cluster]`: decisions shared with other nodes through etcd;
    /// `None`: this node decides alone (the state file).
    pub cluster: Option<ClusterConfig>,
}

/// `[cluster]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// etcd client URLs, `http://host:port`.
    pub etcd: Vec<String>,
    /// Every key of this cluster is under it; no trailing `/`.
    pub prefix: String,
    /// This node's name among the others; the host name by default.
    pub node: String,
}

/// One `[[notify]]` target: a webhook, a command, or both.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NotifyConfig {
    /// `http://` or `https://host:port/path`: the event is POSTed there as
    /// JSON.
    pub url: Option<String>,
    /// Signs the webhook body: `X-Switchyard-Signature: sha256=<hex HMAC>`.
    pub secret: Option<String>,
    /// PEM certificates an `https://` webhook's server is checked against
    /// instead of the system's roots (a private CA).
    pub ca: Option<std::sync::Arc<[u8]>>,
    /// A program and its arguments, run with the event JSON on stdin.
    pub exec: Option<Vec<String>>,
    /// The events it gets; empty: all of [`NOTIFY_EVENTS`].
    pub events: Vec<String>,
}

/// What switchyard tells `[[notify]]` targets of.
pub const NOTIFY_EVENTS: &[&str] = &[
    "failback",
    "guard_rollback",
    "guard_passed",
    "rollout_aborted",
    "rollout_promoted",
    "route_critical",
    "config_rejected",
    "certificate_reload_failed",
    "certificate_order_failed",
];

/// `[server]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Default `["0.0.0.0:80"]`. Cannot change without a restart.
    pub listen: Vec<SocketAddr>,
    /// Data-plane worker threads; `None`: one per core.
    pub threads: Option<usize>,
    /// Default `/run/switchyard/admin.sock`. Relative paths are resolved
    /// against the config file's directory.
    pub admin_socket: PathBuf,
    /// HTTP admin endpoint (metrics, health, status, the dashboard);
    /// `None`: off.
    pub admin_http: Option<SocketAddr>,
    /// The bearer token the dashboard's actions need; `None`: the endpoint
    /// is read-only. Cannot change without a restart.
    pub admin_http_token: Option<String>,
    /// Besides root and the server's own uid.
    pub admin_uids: Vec<u32>,
    /// Default `/var/lib/switchyard`. Relative paths as for `admin_socket`.
    pub state_dir: PathBuf,
    /// Default 30 s.
    pub drain_timeout: Duration,
    /// Upstream TCP connect timeout. Default 3 s.
    pub connect_timeout: Duration,
    /// Upstream read timeout (time between reads of a response). Default 60 s.
    pub read_timeout: Duration,
    /// How long an idle downstream keep-alive connection is kept. Default 60 s.
    pub keepalive_timeout: Duration,
    /// How long an upgraded connection (a WebSocket) may go without a byte
    /// either way. Default 1 h.
    pub upgrade_idle_timeout: Duration,
    /// The whole request head must arrive within this, from its first
    /// byte. Default 10 s.
    pub header_timeout: Duration,
    /// A client that takes none of its response for this long is closed.
    /// Default 60 s.
    pub send_timeout: Duration,
    /// Client connections served at once; past it new ones are closed at
    /// accept. `None`: sized to the open-file limit at start. Needs a
    /// restart.
    pub max_connections: Option<usize>,
    /// How log lines are written. Default logfmt. Needs a restart.
    pub log_format: LogFormat,
    /// One log line per request. Default off. Needs a restart.
    pub access_log: bool,
    /// Pages for switchyard's own answers when the route has none of its
    /// own, and the 404 page when no route's host matches.
    pub error_pages: BTreeMap<u16, std::sync::Arc<[u8]>>,
    /// Plain-text listeners also take HTTP/2 with prior knowledge (h2c).
    /// Default off. Needs a restart.
    pub h2c: bool,
    /// The largest request body a route takes unless it says otherwise:
    /// `413` past it. `None`: no limit.
    pub max_body_size: Option<u64>,
    /// The largest HTTP/1 request head: `431` past it. 64 KiB by default.
    pub max_header_size: u64,
    /// Peers whose `X-Forwarded-For` is believed: from them, the client is
    /// the rightmost address in it that is not one of these.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The plain listeners take only connections that begin with a PROXY
    /// protocol header (v1 or v2). Needs a restart.
    pub proxy_protocol: bool,
    /// DNS servers that backend names are resolved with; empty: the
    /// system's (`/etc/resolv.conf`, and `/etc/hosts` first either way).
    pub resolvers: Vec<SocketAddr>,
}

/// `[server] log_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `time=… level=info target=… msg="…" key=value`
    #[default]
    Logfmt,
    /// One JSON object per line.
    Json,
}

/// `[tls]`: HTTPS listeners and their certificates, chosen by SNI.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    /// Default `["0.0.0.0:443"]`. Cannot change without a restart.
    pub listen: Vec<SocketAddr>,
    /// Non-empty. Paths only: the files are read where TLS is served, not
    /// here. Relative paths as for `ServerConfig::admin_socket`.
    pub certificates: Vec<CertificateConfig>,
    /// The TLS listeners take only connections that begin with a PROXY
    /// protocol header, before the TLS handshake. Needs a restart.
    pub proxy_protocol: bool,
    /// `[tls.acme]`: certificates ordered from an ACME CA by switchyard
    /// itself. With it, `certificates` may be empty.
    pub acme: Option<AcmeConfig>,
}

/// `[tls.acme]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeConfig {
    /// A contact for the CA (expiry notices, policy changes).
    pub email: Option<String>,
    /// The CA's directory URL (RFC 8555): Let's Encrypt by default.
    pub directory: String,
    /// PEM certificates the CA's own HTTPS is checked against, instead of
    /// the system's roots (a private CA, a test CA).
    pub ca_roots: Option<std::sync::Arc<[u8]>>,
    /// The names to hold certificates for, lower-case; one certificate
    /// each. By default the exact hosts of every route (wildcards cannot be
    /// had with HTTP-01).
    pub hosts: Vec<String>,
    /// The challenge types tried, one per attempt in turn: by default
    /// HTTP-01, then TLS-ALPN-01 after a failure, and so on.
    pub challenges: Vec<AcmeChallenge>,
}

/// How a CA checks that a host is ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeChallenge {
    /// A GET on port 80 (the plain listeners).
    Http01,
    /// A TLS handshake on port 443 asking for `acme-tls/1` (RFC 8737).
    TlsAlpn01,
}

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

#[derive(Debug, Clone, PartialEq)]
pub struct CertificateConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How a route's `hosts` entry matches the request's Host (case-insensitive,
/// port ignored). Stored lower-case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostPattern {
    /// `app.example.com`
    Exact(String),
    /// `*.example.com` matches `a.example.com`, `a.b.example.com`, not
    /// `example.com`. Holds the suffix with its dot: `.example.com`.
    Suffix(String),
}

/// `[[route]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    pub name: String,
    /// Empty: any host.
    pub hosts: Vec<HostPattern>,
    /// Starts with `/`. Default `/`.
    pub path_prefix: String,
    /// Names a key of `slots`.
    pub active: String,
    /// Connect failures retried on another backend / the previous slot. Default 2.
    pub retries: u32,
    /// Plain-HTTP requests get a 301 to the same URL on HTTPS. Needs `[tls]`.
    pub redirect_https: bool,
    /// HTTPS responses carry `Strict-Transport-Security: max-age=N`.
    pub hsts_max_age: Option<Duration>,
    /// Protocols a client may upgrade to through this route, lower-case
    /// (`Upgrade` tokens, a `/version` allowed). Default `["websocket"]`;
    /// never `h2c`.
    pub upgrades: Vec<String>,
    /// Slot name → the addresses its backends are: the `IP:port` literals
    /// and what its names resolved to (see [`RouteConfig::backends`]).
    /// Each list is non-empty once the names are resolved.
    pub slots: BTreeMap<String, Vec<SocketAddr>>,
    /// Slot name → its backends as the file lists them, literals and
    /// `host:port` names, in file order.
    pub backends: BTreeMap<String, Vec<BackendSpec>>,
    /// Slots whose backends are spoken to in HTTP/2 without TLS (h2c, prior
    /// knowledge): `protocol = "h2c"`. The others get HTTP/1.1.
    pub h2c_slots: BTreeSet<String>,
    /// Slots whose backends are spoken to over TLS (`protocol = "https"`,
    /// HTTP/2 or HTTP/1.1 as ALPN settles it), and how.
    pub https_slots: BTreeMap<String, BackendTlsConfig>,
    pub health: Option<HealthConfig>,
    pub canary: Option<CanaryConfig>,
    pub preview: Option<PreviewConfig>,
    pub rollout: Option<RolloutConfig>,
    /// `[route.guard]`: the watch after every switch. On with the defaults
    /// when the section is absent.
    pub guard: GuardConfig,
    /// With no previous slot, an unhealthy active slot hands over to the
    /// healthy other slot active most recently, else the first in config
    /// order (`failover = "healthy"`, the default);
    /// `failover = "none"` keeps traffic where it is.
    pub failover: bool,
    /// `maintenance = true`: the route answers 503 with a maintenance page
    /// (preview hosts and authorised overrides still reach the slots).
    pub maintenance: bool,
    /// Status (502, 503, 504) → the HTML page answered instead of
    /// switchyard's own text, read from `error_pages` when loaded.
    pub error_pages: BTreeMap<u16, std::sync::Arc<[u8]>>,
    /// This route's own `max_body_size`, over `[server]`'s.
    pub max_body_size: Option<u64>,
    /// `[route.limits]`: requests per client over time.
    pub rate_limit: Option<RateLimitConfig>,
    /// `[route.access]`: which clients may reach the route (or some of
    /// its paths).
    pub access: Option<AccessConfig>,
}

/// A slot backend as the file gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendSpec {
    Address(SocketAddr),
    /// Resolved at load and again as its answers' TTL runs out; each
    /// address is a backend of the slot.
    Name(BackendName),
}

/// A backend given as `host:port`.
#[derive(Debug, Clone)]
pub struct BackendName {
    /// A DNS name, lower-case, without a trailing dot.
    pub host: String,
    pub port: u16,
    /// Where the file names it (1-based), for errors about it; not part of
    /// its identity.
    pub line: usize,
    pub column: usize,
}

impl BackendName {
    /// `host:port`.
    pub fn key(&self) -> (String, u16) {
        (self.host.clone(), self.port)
    }
}

impl PartialEq for BackendName {
    fn eq(&self, other: &BackendName) -> bool {
        (&self.host, self.port) == (&other.host, other.port)
    }
}

impl Eq for BackendName {}

impl PartialOrd for BackendName {
    fn partial_cmp(&self, other: &BackendName) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for BackendName {
    fn cmp(&self, other: &BackendName) -> std::cmp::Ordering {
        (&self.host, self.port).cmp(&(&other.host, other.port))
    }
}

impl std::fmt::Display for BackendName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl RouteConfig {
    /// Each slot's addresses from its literals and `resolved`'s answer for
    /// each of its names, in file order without repeats; a name `resolved`
    /// has no answer for adds nothing.
    pub fn backends_with(
        &self,
        resolved: impl Fn(&BackendName) -> Option<Vec<SocketAddr>>,
    ) -> BTreeMap<String, Vec<SocketAddr>> {
        self.backends
            .iter()
            .map(|(slot, specs)| {
                let mut addresses: Vec<SocketAddr> = Vec::new();
                for spec in specs {
                    let found = match spec {
                        BackendSpec::Address(addr) => vec![*addr],
                        BackendSpec::Name(name) => resolved(name).unwrap_or_default(),
                    };
                    for addr in found {
                        if !addresses.contains(&addr) {
                            addresses.push(addr);
                        }
                    }
                }
                (slot.clone(), addresses)
            })
            .collect()
    }

    /// The slot's backends given by name.
    pub fn names(&self) -> impl Iterator<Item = (&str, &BackendName)> {
        self.backends.iter().flat_map(|(slot, specs)| {
            specs.iter().filter_map(move |spec| match spec {
                BackendSpec::Name(name) => Some((slot.as_str(), name)),
                BackendSpec::Address(_) => None,
            })
        })
    }
}

impl Config {
    /// Every backend name of every route, once.
    pub fn backend_names(&self) -> std::collections::BTreeSet<BackendName> {
        self.routes
            .iter()
            .flat_map(|route| route.names().map(|(_, name)| name.clone()))
            .collect()
    }
}

/// How a `protocol = "https"` slot's backends are spoken to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BackendTlsConfig {
    /// `tls_server_name`: sent as SNI and required of the backend's
    /// certificate. `None`: the backend's own host (its IP address, or the
    /// name it was configured by).
    pub server_name: Option<String>,
    /// `ca`: PEM certificates the backends' certificates are checked
    /// against, instead of the system's trusted roots.
    pub ca: Option<std::sync::Arc<[u8]>>,
    /// `client_cert` and `client_key`: offered to backends that ask for a
    /// client certificate (mutual TLS).
    pub client_identity: Option<ClientIdentity>,
}

/// A PEM certificate chain and its private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub cert_chain: std::sync::Arc<[u8]>,
    pub key: std::sync::Arc<[u8]>,
}

/// `[route.access]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessConfig {
    /// Only clients in these may pass (empty: anyone not denied).
    pub allow: Vec<ipnet::IpNet>,
    /// Clients in these are refused, allowed or not.
    pub deny: Vec<ipnet::IpNet>,
    /// The path prefixes it applies to; empty: the whole route.
    pub paths: Vec<String>,
    /// `(user, password hash)`: when set, requests it covers need one of
    /// these users' Basic credentials too.
    pub basic_auth: Vec<(String, String)>,
}

/// `[route.limits]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// `requests` per `per` in the long run …
    pub requests: u32,
    pub per: std::time::Duration,
    /// … and this many more at once.
    pub burst: u32,
    pub key: RateKey,
}

/// Whose allowance a request draws on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateKey {
    ClientIp,
    /// A header's value (lower-case name); without it, the client's address.
    Header(String),
}

/// `[route.guard]`: after every switch, the new active slot is watched for
/// `window`; more than `max_error_rate` 5xx, or a p95 more than
/// `max_latency_increase` above the previous slot's, rolls it back.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardConfig {
    /// Default true.
    pub enabled: bool,
    /// Default [`DEFAULT_GUARD_WINDOW`].
    pub window: Duration,
    /// Default 0.05.
    pub max_error_rate: f64,
    /// Default 0.5 (p95 at most 1.5 × the previous slot's).
    pub max_latency_increase: f64,
    /// Requests the new slot must have served before it is judged. Default 100.
    pub min_requests: u64,
}

/// How long a switch is watched unless `[route.guard] window` says.
pub const DEFAULT_GUARD_WINDOW: Duration = Duration::from_secs(300);

impl Default for GuardConfig {
    fn default() -> GuardConfig {
        GuardConfig {
            enabled: true,
            window: DEFAULT_GUARD_WINDOW,
            max_error_rate: 0.05,
            max_latency_increase: 0.5,
            min_requests: 100,
        }
    }
}

/// `[route.health]`.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    /// Default `/`.
    pub path: String,
    /// Default: the route's first exact host, else none (the backend address).
    pub host: Option<String>,
    /// Default 1 s.
    pub interval: Duration,
    /// Default 1 s.
    pub timeout: Duration,
    /// Default 2.
    pub rise: u32,
    /// Default 3.
    pub fall: u32,
    /// Inclusive range, default 200–399.
    pub expect_status: (u16, u16),
    /// What the answer's body must say as well, if anything.
    pub expect_body: Option<BodyExpectation>,
}

/// `[route.health] expect_body`: `"text"` (the body contains it) or
/// `{ field = "value" }` (the body is a JSON object whose top-level `field`
/// is `value`: a string equal to it, or a number or boolean written so).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyExpectation {
    Contains(String),
    JsonField { field: String, value: String },
}

/// Where a canary assignment is made stable for clients without a cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StickyKey {
    ClientIp,
    /// Lower-case header name.
    Header(String),
}

/// `[route.canary]`.
#[derive(Debug, Clone, PartialEq)]
pub struct CanaryConfig {
    /// Names a key of `slots`, never the active slot.
    pub slot: String,
    /// 0–100.
    pub weight: u8,
    /// Default `switchyard-slot`.
    pub sticky_cookie: String,
    /// Default client IP.
    pub sticky_key: StickyKey,
    /// The cookie's `Max-Age`; default [`DEFAULT_STICKY_MAX_AGE`].
    pub sticky_max_age: Duration,
}

/// How long a browser keeps its canary assignment unless configured.
pub const DEFAULT_STICKY_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// How much traffic one rollout verdict looks at unless configured.
pub const DEFAULT_ROLLOUT_WINDOW: Duration = Duration::from_secs(60);

/// `[route.preview]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PreviewConfig {
    /// Lower-case; default `x-switchyard-slot`.
    pub override_header: String,
    pub override_token: Option<String>,
    pub override_cidrs: Vec<IpNet>,
    pub preview_hosts: Vec<HostPattern>,
}

/// `[route.rollout]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutConfig {
    /// Non-empty; weights 0–100 and not decreasing.
    pub steps: Vec<RolloutStep>,
    /// Default 0.05.
    pub max_error_rate: f64,
    /// Default 0.5.
    pub max_latency_increase: f64,
    /// Default 100.
    pub min_requests: u64,
    /// Each verdict covers one window; default [`DEFAULT_ROLLOUT_WINDOW`].
    pub window: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RolloutStep {
    pub weight: u8,
    /// `None` on the last step: promote when reached.
    pub hold: Option<Duration>,
}

impl Config {
    pub fn route(&self, name: &str) -> Option<&RouteConfig> {
        self.routes.iter().find(|r| r.name == name)
    }
}
