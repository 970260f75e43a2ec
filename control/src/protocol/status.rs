//! The reply to `status`: the whole state, or one route's.
//!
//! Every field is named and typed as the server has always written it; a
//! field that is `null` when unset is an `Option` *without*
//! `skip_serializing_if` (the key stays, with `null`), a field that is
//! left out when unset has `skip_serializing_if`. Scripts (`jq` in
//! `examples/`) and the end-to-end tests read these names.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::health::{BackendState, Check, Failure, SlotHealth};
use crate::rollout::Rollout;
use crate::state_file::{CanaryState, DecisionSource};

/// `{"generation", "config", "state_warnings", "tls", "routes"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReply {
    /// The routing table generation in force.
    pub generation: u64,
    pub config: ConfigStatus,
    /// Problems found restoring the state file at start, one sentence each.
    pub state_warnings: Vec<String>,
    /// The certificates served and their last load; `null` without `[tls]`.
    pub tls: Option<TlsStatus>,
    /// `[tls.acme]`: each host's certificate order state; absent without.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acme: Vec<AcmeHostStatus>,
    /// `[[notify]]` targets that were sent something, and how it went.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<NotifyTargetStatus>,
    /// `[cluster]`: this node, etcd, the leader and every node's view;
    /// absent without `[cluster]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Box<ClusterStatus>>,
    /// Every route, or only the one asked for, in config order.
    pub routes: Vec<RouteStatus>,
}

/// `status.cluster`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// This node's name.
    pub node: String,
    /// The etcd members configured.
    pub etcd: Vec<String>,
    /// The key prefix.
    pub prefix: String,
    /// Whether etcd answers. While it does not, this node serves the last
    /// decisions it knew (fail static) and refuses commands without
    /// `--local`.
    pub connected: bool,
    /// Why etcd is unreachable, while it is; else `null`.
    pub error: Option<String>,
    /// RFC 3339: since when etcd has been unreachable; else `null`.
    pub disconnected_since: Option<String>,
    /// The node that takes the automatic decisions, as last seen; `null`
    /// when none does.
    pub leader: Option<String>,
    /// The etcd revision of the newest decision this node applied.
    pub revision: i64,
    /// Decisions this node serves that etcd has not taken yet: changed
    /// with `--local`, or a route added while etcd was away.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub local_only: Vec<String>,
    /// Routes whose cluster decision this node cannot serve (its config
    /// lacks the slot): it keeps its own for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_applied: Vec<String>,
    /// Report rounds this node completed since it started (one a second
    /// while etcd answers): each gives the leader every node's latest view.
    #[serde(default)]
    pub rounds: u64,
    /// Every node that reported in the last lease, this one included.
    pub nodes: Vec<NodeView>,
    /// Whether every node reports the same decision revision as this one
    /// and every node serves every decision.
    pub agree: bool,
}

/// One node's report, as etcd holds it (under the node's lease).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    pub node: String,
    /// The etcd revision of the newest decision the node applied.
    pub revision: i64,
    /// The node's routing table generation.
    pub generation: u64,
    /// RFC 3339: the node's last report.
    pub last_seen: String,
    /// Whether the node holds the leader key.
    pub leader: bool,
    /// Route → slot → the slot's health as this node's probes see it:
    /// what the leader weighs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub slots: BTreeMap<String, BTreeMap<String, SlotHealth>>,
    /// Routes whose cluster decision the node cannot serve (its config
    /// lacks the slot): it keeps its own for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_applied: Vec<String>,
    /// Route → slot → the node's counters since it started (requests,
    /// errors, latency buckets): what the leader's guard and rollout
    /// analysis sum.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counters: BTreeMap<String, BTreeMap<String, crate::table::StatsSnapshot>>,
}

/// `status.config`: the config file and its reloads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigStatus {
    /// The config file's path.
    pub file: String,
    /// The last reload's errors while the file stays invalid; else `null`.
    pub error: Option<String>,
    /// Settings edited in the file that only a restart applies
    /// (`server.listen`, `tls.listen`, ...).
    pub needs_restart: Vec<String>,
    /// Config reloads applied since start.
    pub reloads: u64,
    /// A valid edit that removes something, held until the file stays that
    /// way; `null` when none is held.
    pub pending_edit: Option<PendingEditStatus>,
}

/// `status.config.pending_edit`, also in the reply of a held reload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingEditStatus {
    /// What the edit removes, one phrase each (`route "old"`, ...).
    pub removes: Vec<String>,
    /// RFC 3339: when the edit was first seen.
    pub since: String,
    /// RFC 3339: when it applies if the file stays this way.
    pub applies_at: String,
    pub applies_in_ms: u64,
    /// The settle time, humantime (`3s`).
    pub settle: String,
}

/// One route of `status.routes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteStatus {
    pub name: String,
    /// `api.example.com`, or `*.example.com` for a suffix; empty: any host.
    pub hosts: Vec<String>,
    pub path_prefix: String,
    pub active: String,
    /// The fail-back target; `null` when none.
    pub previous: Option<String>,
    /// `null` when no canary.
    pub canary: Option<CanaryState>,
    /// A config switch held until its slot is healthy; `null` when none.
    pub pending: Option<String>,
    /// The slot traffic failed back from; `null` when none.
    pub failed: Option<String>,
    /// Why the active slot is unhealthy with nowhere to go; `null` when not.
    pub critical: Option<String>,
    /// Who decided `active` and `canary`.
    pub decided_by: DecisionSource,
    /// RFC 3339.
    pub changed_at: String,
    /// The rollout in progress or the last one that ended; `null` when the
    /// route never had one.
    pub rollout: Option<RolloutStatus>,
    /// The watch after the last switch, while it lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<GuardStatus>,
    /// In maintenance, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<String>,
    /// In config order.
    pub slots: Vec<SlotStatus>,
}

/// One slot of a route: `{"name", "health", "in_flight", "upgraded", "backends"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotStatus {
    pub name: String,
    pub health: SlotHealth,
    /// Requests in flight.
    pub in_flight: usize,
    /// Upgraded (WebSocket) connections open.
    pub upgraded: usize,
    pub backends: Vec<BackendStatus>,
    /// The slot's backends given as `host:port`: what each resolved to,
    /// and the last lookup's error. Absent when it has none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<crate::names::NameStatus>,
}

/// One backend: `{"address", "state"}` while health does not track it yet,
/// else `{"address", "state", "since", "last_check"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendStatus {
    pub address: String,
    pub state: BackendState,
    /// Absent (both keys) for a backend health does not track yet.
    #[serde(flatten)]
    pub tracked: Option<BackendTracking>,
}

/// What health knows of a tracked backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendTracking {
    /// RFC 3339: when it entered `state`.
    pub since: String,
    /// `null` before its first check.
    pub last_check: Option<LastCheck>,
}

/// `{"ok", "latency_ms", "at"}` with `"status"` (an HTTP status, or `null`
/// for a TCP connect probe) or `"error"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastCheck {
    pub ok: bool,
    pub latency_ms: f64,
    /// RFC 3339.
    pub at: String,
    #[serde(flatten)]
    pub detail: CheckDetail,
}

/// The part of a check that depends on how it went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CheckDetail {
    /// A failure without an HTTP status: `{"error": "connect: ..."}`.
    /// (Tried first when reading: `status` may be `null`.)
    Error { error: String },
    /// An answer: its status, or `null` for a TCP connect probe.
    Status { status: Option<u16> },
}

impl BackendStatus {
    /// A backend health does not track (yet): `{"address", "state":"unknown"}`.
    pub fn untracked(address: SocketAddr) -> BackendStatus {
        BackendStatus {
            address: address.to_string(),
            state: BackendState::Unknown,
            tracked: None,
        }
    }

    /// A tracked backend, in `state` since `since`, with its last check.
    pub fn tracked(
        address: SocketAddr,
        state: BackendState,
        since: SystemTime,
        last_check: Option<(&Check, SystemTime)>,
    ) -> BackendStatus {
        BackendStatus {
            address: address.to_string(),
            state,
            tracked: Some(BackendTracking {
                since: rfc3339(since),
                last_check: last_check.map(|(check, at)| LastCheck::new(check, at)),
            }),
        }
    }
}

impl LastCheck {
    /// The check as `status` shows it: a pass or an HTTP status keeps the
    /// status, other failures say what went wrong.
    pub fn new(check: &Check, at: SystemTime) -> LastCheck {
        let (ok, latency, detail) = match check {
            Check::Pass { status, latency } => {
                (true, latency, CheckDetail::Status { status: *status })
            }
            Check::Fail {
                failure: Failure::Status(code),
                latency,
            } => (
                false,
                latency,
                CheckDetail::Status {
                    status: Some(*code),
                },
            ),
            Check::Fail { failure, latency } => (
                false,
                latency,
                CheckDetail::Error {
                    error: failure.to_string(),
                },
            ),
        };
        LastCheck {
            ok,
            latency_ms: latency.as_secs_f64() * 1000.0,
            at: rfc3339(at),
            detail,
        }
    }
}

/// A route's rollout as `status` and `rollout` show it: the persisted
/// [`Rollout`] (its `hold_left_ms` brought up to now) and three figures
/// derived from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutStatus {
    #[serde(flatten)]
    pub rollout: Rollout,
    /// 1-based: `step + 1`.
    pub step_number: usize,
    pub steps_total: usize,
    /// The current step's canary weight.
    pub weight: u8,
}

impl RolloutStatus {
    /// `rollout` with `hold_left` as the time left in its step.
    pub fn new(rollout: &Rollout, hold_left: Duration) -> RolloutStatus {
        RolloutStatus {
            rollout: Rollout {
                hold_left_ms: hold_left.as_millis() as u64,
                ..rollout.clone()
            },
            step_number: rollout.step + 1,
            steps_total: rollout.plan.steps.len(),
            weight: rollout.weight(),
        }
    }
}

/// A guard window: the new active slot's requests since the switch against
/// the thresholds and the previous slot's p95.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardStatus {
    /// The slot under watch (the active one).
    pub slot: String,
    /// Where a breach rolls back to.
    pub previous: Option<String>,
    pub requests: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub p95_ms: Option<f64>,
    /// The previous slot's p95 over its time as active, up to the switch.
    pub baseline_p95_ms: Option<f64>,
    /// Until the window ends (0 once it is over).
    pub left_ms: u64,
    pub window_ms: u64,
    pub max_error_rate: f64,
    pub max_latency_increase: f64,
    pub min_requests: u64,
}

/// How deliveries to one `[[notify]]` target went since start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyTargetStatus {
    /// The webhook's URL or the command's program.
    pub target: String,
    pub delivered: u64,
    /// Notices given up on after every retry.
    pub failed: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
}

/// One `[tls.acme]` host: the certificate it holds and how ordering goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcmeHostStatus {
    pub host: String,
    /// The stored certificate's end, Unix seconds; absent before the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after_unix: Option<i64>,
    /// When it is renewed (two thirds of its lifetime), Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_at_unix: Option<i64>,
    /// Why the last order failed; absent once one succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Failed orders in a row.
    pub failures: u32,
    /// When the next order is tried after a failure, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at_unix: Option<i64>,
    /// Certificates ordered for it since start.
    pub issued: u64,
}

/// `status.tls`: what the certificate loader last reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsStatus {
    /// The certificates served, in config order.
    pub certificates: Vec<CertificateStatus>,
    pub last_load: TlsLoad,
}

/// One certificate as `switchyard status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateStatus {
    pub cert: String,
    pub key: String,
    /// The leaf's DNS subjectAltNames, lower-case; may be empty.
    pub names: Vec<String>,
    /// Served when no name matches (the first certificate of the config).
    pub default: bool,
    /// RFC 3339, UTC.
    pub not_before: String,
    /// RFC 3339, UTC.
    pub not_after: String,
    /// `not_after` in Unix seconds, for scripts that compute days left.
    pub not_after_unix: i64,
}

/// The last (re)load of the certificates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsLoad {
    /// RFC 3339.
    pub at: String,
    pub result: TlsLoadResult,
    /// Why it was rejected; `null` when it loaded.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsLoadResult {
    /// Loaded: the certificates above are the new ones.
    Ok,
    /// Rejected: the certificates above are still the previous ones.
    Error,
}

impl TlsStatus {
    /// The certificates served after a load that ended with `error` (or
    /// loaded, with `None`) at `at`.
    pub fn new(certificates: Vec<CertificateStatus>, at: String, error: Option<String>) -> Self {
        let result = if error.is_some() {
            TlsLoadResult::Error
        } else {
            TlsLoadResult::Ok
        };
        TlsStatus {
            certificates,
            last_load: TlsLoad { at, result, error },
        }
    }
}

/// RFC 3339 UTC to the second, like every time in the protocol.
pub(crate) fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}
