//! Telling people: what switchyard did by itself, as a [`Notice`] the core
//! hands out ([`crate::core::Effect::Notify`]) and [`Notifier`] delivers to
//! every `[[notify]]` target — a webhook POST (signed with the target's
//! secret) and/or a command with the notice on stdin — from a bounded
//! queue, with retries, never blocking the Controller.

use serde::{Deserialize, Serialize};

mod deliver;
mod webhook;

pub use deliver::{Delivered, Notifier, DELIVERY_ATTEMPTS};

/// One thing worth telling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    /// One of `switchyard_conf::NOTIFY_EVENTS`.
    pub event: NoticeKind,
    /// The route concerned; none for a config or certificate event.
    pub route: Option<String>,
    /// The slot traffic moved from, or the one concerned.
    pub from: Option<String>,
    /// The slot traffic moved to.
    pub to: Option<String>,
    /// Why, with the figures: the same sentence as the history entry.
    pub evidence: String,
    /// RFC 3339 UTC.
    pub time: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    Failback,
    GuardRollback,
    GuardPassed,
    RolloutAborted,
    RolloutPromoted,
    RouteCritical,
    ConfigRejected,
    CertificateReloadFailed,
    CertificateOrderFailed,
}

impl NoticeKind {
    /// As in the config's `events` and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Failback => "failback",
            NoticeKind::GuardRollback => "guard_rollback",
            NoticeKind::GuardPassed => "guard_passed",
            NoticeKind::RolloutAborted => "rollout_aborted",
            NoticeKind::RolloutPromoted => "rollout_promoted",
            NoticeKind::RouteCritical => "route_critical",
            NoticeKind::ConfigRejected => "config_rejected",
            NoticeKind::CertificateReloadFailed => "certificate_reload_failed",
            NoticeKind::CertificateOrderFailed => "certificate_order_failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use NoticeKind::*;

    #[test]
    fn every_kind_is_a_configurable_event_named_as_on_the_wire() {
        let kinds = [
            Failback,
            GuardRollback,
            GuardPassed,
            RolloutAborted,
            RolloutPromoted,
            RouteCritical,
            ConfigRejected,
            CertificateReloadFailed,
            CertificateOrderFailed,
        ];
        let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
        assert_eq!(names, switchyard_conf::NOTIFY_EVENTS);
        for kind in kinds {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
    }
}
