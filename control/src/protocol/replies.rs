//! The `result` of each successful command, typed. The server builds them
//! and sends them with [`Response::ok_with`](super::Response::ok_with); the
//! CLI reads them back with [`Reply::parse`].
//!
//! Optional fields follow the wire as it has always been: `Option` without
//! `skip_serializing_if` is a key that is present with `null`; with it, a
//! key that is left out (`warning`, for instance, appears only when the
//! state file could not be written).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::status::{GuardStatus, PendingEditStatus, RolloutStatus, StatusReply};
use super::Request;
use crate::history::HistoryEntry;
use crate::state_file::CanaryState;

/// The reply to `switch`, `rollback` and `canary`: the route as the
/// command left it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeReply {
    pub route: String,
    /// False when the route already was that way (`ok: no change`).
    pub changed: bool,
    /// The routing table generation in force after the command.
    pub generation: u64,
    pub active: String,
    pub previous: Option<String>,
    pub canary: Option<CanaryState>,
    /// Applied, but the state file could not be written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// The reply to `reload`, in three shapes: applied
/// (`{generation, routes, needs_restart}` and maybe `warning`), unchanged
/// (`changed: false`) and held (`changed: false` and `pending_edit`; only
/// an edit seen by the file watcher is held, so no client receives it
/// today). See the constructors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadReply {
    pub generation: u64,
    /// How many routes the config in force has.
    pub routes: usize,
    pub needs_restart: Vec<String>,
    /// Absent when the file was applied; `false` when nothing changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed: Option<bool>,
    /// The held edit, in the held shape only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_edit: Option<PendingEditStatus>,
    /// Applied, but the state file could not be written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

impl ReloadReply {
    /// The file was applied as generation `generation`.
    pub fn applied(
        generation: u64,
        routes: usize,
        needs_restart: Vec<String>,
        warning: Option<String>,
    ) -> ReloadReply {
        ReloadReply {
            generation,
            routes,
            needs_restart,
            changed: None,
            pending_edit: None,
            warning,
        }
    }

    /// The file is the running config: nothing was published.
    pub fn unchanged(generation: u64, routes: usize, needs_restart: Vec<String>) -> ReloadReply {
        ReloadReply {
            changed: Some(false),
            ..ReloadReply::applied(generation, routes, needs_restart, None)
        }
    }

    /// The edit removes something and is held: `pending_edit` says until when.
    pub fn held(
        generation: u64,
        routes: usize,
        needs_restart: Vec<String>,
        pending_edit: PendingEditStatus,
    ) -> ReloadReply {
        ReloadReply {
            pending_edit: Some(pending_edit),
            ..ReloadReply::unchanged(generation, routes, needs_restart)
        }
    }
}

/// The reply to `drain`: what is still in flight on the slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainReply {
    pub route: String,
    pub slot: String,
    pub in_flight: usize,
    pub upgraded: usize,
    /// The slot still gets new traffic (active, or a canary above 0).
    pub serving: bool,
}

impl DrainReply {
    /// Nothing in flight: no request and no upgraded connection.
    pub fn is_empty(&self) -> bool {
        self.in_flight == 0 && self.upgraded == 0
    }
}

/// The reply to `history`: the newest entries, oldest first, as
/// `history.jsonl` has them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryReply {
    pub entries: Vec<HistoryEntry>,
}

/// The reply to `rollout`: the route's routing and its rollout after the
/// command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutReply {
    pub route: String,
    pub active: String,
    pub canary: Option<CanaryState>,
    /// `null` only if the route has no rollout (not after a command that
    /// succeeded).
    pub rollout: Option<RolloutStatus>,
    /// Applied, but the state file could not be written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// The reply to `confirm`: the guard that was ended as passed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfirmReply {
    pub route: String,
    pub guard: GuardStatus,
}

/// Any successful reply, by the command it answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Status(StatusReply),
    /// `switch`, `rollback` or `canary`.
    Change(ChangeReply),
    Rollout(RolloutReply),
    History(HistoryReply),
    Reload(ReloadReply),
    Drain(DrainReply),
    Confirm(ConfirmReply),
}

impl Reply {
    /// Reads the `result` of a successful response to `request` as the
    /// type that command answers with.
    pub fn parse(request: &Request, result: Value) -> Result<Reply, serde_json::Error> {
        use serde_json::from_value;
        Ok(match request {
            Request::Status { .. } => Reply::Status(from_value(result)?),
            Request::Switch { .. }
            | Request::Rollback { .. }
            | Request::Canary { .. }
            | Request::Maintenance { .. } => Reply::Change(from_value(result)?),
            Request::Rollout { .. } => Reply::Rollout(from_value(result)?),
            Request::History { .. } => Reply::History(from_value(result)?),
            Request::Reload {} => Reply::Reload(from_value(result)?),
            Request::Drain { .. } => Reply::Drain(from_value(result)?),
            Request::Confirm { .. } => Reply::Confirm(from_value(result)?),
        })
    }

    /// The warning of a command that was applied but not saved.
    pub fn warning(&self) -> Option<&str> {
        match self {
            Reply::Change(r) => r.warning.as_deref(),
            Reply::Rollout(r) => r.warning.as_deref(),
            Reply::Reload(r) => r.warning.as_deref(),
            Reply::Status(_) | Reply::History(_) | Reply::Drain(_) | Reply::Confirm(_) => None,
        }
    }
}

impl Serialize for Reply {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Reply::Status(r) => r.serialize(serializer),
            Reply::Change(r) => r.serialize(serializer),
            Reply::Rollout(r) => r.serialize(serializer),
            Reply::History(r) => r.serialize(serializer),
            Reply::Reload(r) => r.serialize(serializer),
            Reply::Drain(r) => r.serialize(serializer),
            Reply::Confirm(r) => r.serialize(serializer),
        }
    }
}
