//! The admin protocol: JSON lines over a Unix socket, one request object per
//! line and one response per line. These types are shared by the server
//! (`admin_server`) and the `switchyard` CLI.
//!
//! This file has the requests and the envelope ([`Response`]); the typed
//! `result` of each command is in [`replies`] and [`status`].

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub mod replies;
#[cfg(test)]
mod reply_tests;
pub mod status;
#[cfg(test)]
mod tests;

pub use replies::{
    ChangeReply, ConfirmReply, DrainReply, HistoryReply, ReloadReply, Reply, RolloutReply,
};
pub use status::{
    AcmeHostStatus, BackendStatus, BackendTracking, CertificateStatus, CheckDetail, ClusterStatus,
    ConfigStatus, GuardStatus, LastCheck, NodeView, NotifyTargetStatus, PendingEditStatus,
    RolloutStatus, RouteStatus, SlotStatus, StatusReply, TlsLoad, TlsLoadResult, TlsStatus,
};

/// Lines longer than this are refused; a request is a few hundred bytes.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// One admin command. `{"cmd":"switch","route":"app","slot":"green"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The whole state, or one route's.
    Status {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        route: Option<String>,
    },
    /// Make `slot` the route's active slot; the old one becomes previous.
    Switch {
        route: String,
        slot: String,
        /// How long to wait for the slot to turn healthy, e.g. "30s".
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout: Option<String>,
        /// Switch even to a slot that is not healthy.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        force: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// Start no guard window after this switch.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        no_guard: bool,
        /// `[cluster]`: apply on this node alone while etcd is
        /// unreachable (an emergency; recorded, and offered to etcd when
        /// it returns).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        local: bool,
    },
    /// Swap the active and previous slots.
    Rollback {
        route: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// Roll back even to a previous slot known unhealthy.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        force: bool,
        /// `[cluster]`: apply on this node alone while etcd is
        /// unreachable (an emergency; recorded, and offered to etcd when
        /// it returns).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        local: bool,
    },
    /// Send `weight` % of new traffic to `slot`; 0 ends the canary.
    Canary {
        route: String,
        slot: String,
        weight: u8,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// `[cluster]`: apply on this node alone while etcd is
        /// unreachable (an emergency; recorded, and offered to etcd when
        /// it returns).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        local: bool,
    },
    /// Start, pause, resume, promote or abort a route's rollout.
    /// `{"cmd":"rollout","action":"start","route":"app","slot":"green"}`.
    Rollout {
        action: RolloutAction,
        route: String,
        /// The slot to roll out; `start` needs it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        slot: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// The newest history entries, oldest first.
    History {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        route: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    /// Re-read the config file now. (A struct variant, so that unknown
    /// fields are refused like everywhere else.)
    Reload {},
    /// Requests and upgraded connections still in flight on `slot`; with
    /// `wait`, answered once there are none (or refused at `timeout`).
    Drain {
        route: String,
        slot: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        wait: bool,
        /// How long to wait, e.g. "60s"; default 60 s.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout: Option<String>,
    },
    /// End the route's guard window now, as passed.
    Confirm {
        route: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Put the route in maintenance (`on`: 503 with a page) or take it out.
    Maintenance {
        route: String,
        on: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// `[cluster]`: apply on this node alone while etcd is
        /// unreachable (an emergency; recorded, and offered to etcd when
        /// it returns).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        local: bool,
    },
}

/// Every `cmd` the server accepts: the one list the "unknown command" error
/// shows. Its tests check it against serde's own list of [`Request`]'s
/// variants and against [`Request::name`], so a new command cannot be left
/// out.
pub const COMMANDS: &[&str] = &[
    "status",
    "switch",
    "rollback",
    "canary",
    "rollout",
    "history",
    "reload",
    "drain",
    "confirm",
    "maintenance",
];

impl Request {
    /// The request's `cmd`, as on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Status { .. } => "status",
            Request::Switch { .. } => "switch",
            Request::Rollback { .. } => "rollback",
            Request::Canary { .. } => "canary",
            Request::Rollout { .. } => "rollout",
            Request::History { .. } => "history",
            Request::Reload {} => "reload",
            Request::Confirm { .. } => "confirm",
            Request::Maintenance { .. } => "maintenance",
            Request::Drain { .. } => "drain",
        }
    }

    /// The route a command may change, for those that change one.
    pub fn changes_route(&self) -> Option<&str> {
        match self {
            Request::Switch { route, .. }
            | Request::Rollback { route, .. }
            | Request::Canary { route, .. }
            | Request::Rollout { route, .. }
            | Request::Maintenance { route, .. }
            | Request::Confirm { route, .. } => Some(route),
            _ => None,
        }
    }

    /// Whether the command asks to be applied on this node alone
    /// (`--local`).
    pub fn local(&self) -> bool {
        match self {
            Request::Switch { local, .. }
            | Request::Rollback { local, .. }
            | Request::Canary { local, .. }
            | Request::Maintenance { local, .. } => *local,
            _ => false,
        }
    }
}

/// What `rollout` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutAction {
    Start,
    Pause,
    Resume,
    Promote,
    Abort,
}

impl RolloutAction {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutAction::Start => "start",
            RolloutAction::Pause => "pause",
            RolloutAction::Resume => "resume",
            RolloutAction::Promote => "promote",
            RolloutAction::Abort => "abort",
        }
    }
}

/// Why a command was not done; `kind` is stable for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Not JSON, or not a known command with the right fields.
    BadRequest,
    /// The line exceeded [`MAX_LINE_BYTES`].
    TooLarge,
    /// The peer's uid may not use the socket.
    Forbidden,
    /// No such route or slot.
    NotFound,
    /// The command is valid but the state forbids it (no previous slot,
    /// canary equal to active, ...).
    Refused,
    /// The target slot is not healthy.
    Unhealthy,
    /// The config file does not validate; the running config stays.
    InvalidConfig,
    /// Something on the server side failed (state file not writable, ...).
    Internal,
    /// `[cluster]`: etcd cannot be reached, so the change was not made on
    /// any node (`--local` makes it on this node alone).
    ClusterUnavailable,
    /// `[cluster]`: another node changed the route first; this node now
    /// has that decision. Look at `status` and ask again.
    Conflict,
}

impl ErrorKind {
    /// The kind as on the wire: `not_found`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Refused => "refused",
            ErrorKind::Unhealthy => "unhealthy",
            ErrorKind::InvalidConfig => "invalid_config",
            ErrorKind::Internal => "internal",
            ErrorKind::ClusterUnavailable => "cluster_unavailable",
            ErrorKind::Conflict => "conflict",
        }
    }
}

/// The `error` of a refused command: `{"kind":"not_found","message":"..."}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub kind: ErrorKind,
    pub message: String,
}

/// `{"ok":true,"result":{...}}` or `{"ok":false,"error":{"kind":..,"message":..}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl Response {
    pub fn ok(result: serde_json::Value) -> Response {
        Response {
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    /// `{"ok":true,"result":<reply>}`, `reply` being one of the typed
    /// replies ([`StatusReply`], [`ChangeReply`], ...). The result goes
    /// through a [`serde_json::Value`], as replies built with `json!`
    /// always have: its keys come out in the same (sorted) order.
    pub fn ok_with<T: Serialize>(reply: &T) -> Response {
        match serde_json::to_value(reply) {
            Ok(result) => Response::ok(result),
            Err(e) => Response::error(ErrorKind::Internal, format!("cannot encode reply: {e}")),
        }
    }

    /// The `result` of a successful response read as `T`. A refusal, a
    /// missing result or one of another shape is a [`ReplyError`].
    pub fn reply<T: DeserializeOwned>(&self) -> Result<T, ReplyError> {
        if let Some(error) = &self.error {
            return Err(ReplyError::Refused(error.clone()));
        }
        let result = self.result.clone().ok_or(ReplyError::NoResult)?;
        serde_json::from_value(result).map_err(ReplyError::Shape)
    }

    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Response {
        Response {
            ok: false,
            result: None,
            error: Some(ErrorBody {
                kind,
                message: message.into(),
            }),
        }
    }

    /// The response as one line, newline included.
    pub fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self).unwrap_or_else(|e| {
            format!(r#"{{"ok":false,"error":{{"kind":"internal","message":"cannot encode response: {e}"}}}}"#)
        });
        line.push('\n');
        line
    }
}

/// Why [`Response::reply`] has no typed reply to give.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    #[error("refused ({}): {}", .0.kind.as_str(), .0.message)]
    Refused(ErrorBody),
    #[error("the response has neither a result nor an error")]
    NoResult,
    #[error("the result does not have the expected shape: {0}")]
    Shape(#[source] serde_json::Error),
}

/// Parses one request line into a request, or the error response to send.
pub fn parse_request(line: &[u8]) -> Result<Request, Response> {
    let text = std::str::from_utf8(line)
        .map_err(|_| Response::error(ErrorKind::BadRequest, "request is not UTF-8"))?;
    let value: serde_json::Value = serde_json::from_str(text.trim()).map_err(|e| {
        Response::error(
            ErrorKind::BadRequest,
            format!("request is not valid JSON: {e}"),
        )
    })?;
    let cmd = value.get("cmd").and_then(|c| c.as_str()).map(str::to_owned);
    serde_json::from_value(value).map_err(|e| {
        let message = match cmd {
            None => r#"request needs a "cmd" field, e.g. {"cmd":"status"}"#.to_string(),
            Some(cmd) if !COMMANDS.contains(&cmd.as_str()) => {
                format!("unknown command {cmd:?}; known: {}", COMMANDS.join(", "))
            }
            Some(cmd) => format!("bad {cmd:?} request: {e}"),
        };
        Response::error(ErrorKind::BadRequest, message)
    })
}
