//! A panic in the control plane is never silent.
//!
//! The data plane would go on serving the last table, but nothing would
//! answer admin commands, follow health or save decisions any more — a
//! proxy that looks alive and cannot fail back. So the process stops: the
//! server logs why and exits non-zero, and the service manager (systemd's
//! `Restart=on-failure`) starts it again from the saved state file, which
//! holds every decision taken before the panic.

use std::fmt;

use tokio::task::JoinHandle;

/// Why the Controller task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlPlaneStopped {
    /// It panicked, with this message.
    Panicked(String),
    /// It returned: every handle to it was dropped (a shutdown).
    Finished,
    /// The runtime cancelled it (a shutdown).
    Cancelled,
}

impl fmt::Display for ControlPlaneStopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlPlaneStopped::Panicked(message) => {
                write!(f, "the control plane panicked: {message}")
            }
            ControlPlaneStopped::Finished => f.write_str("the control plane stopped"),
            ControlPlaneStopped::Cancelled => f.write_str("the control plane was cancelled"),
        }
    }
}

/// Waits for the Controller task to end and says how it did.
pub async fn supervise(task: JoinHandle<()>) -> ControlPlaneStopped {
    match task.await {
        Ok(()) => ControlPlaneStopped::Finished,
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".into());
            ControlPlaneStopped::Panicked(message)
        }
        Err(_) => ControlPlaneStopped::Cancelled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_is_reported_with_its_message() {
        let task = tokio::spawn(async { panic!("invariant broken: route app") });
        let stopped = supervise(task).await;
        assert_eq!(
            stopped,
            ControlPlaneStopped::Panicked("invariant broken: route app".into())
        );
        assert!(stopped.to_string().contains("panicked"));
        let formatted = tokio::spawn(async { panic!("{} {}", "with", 2) });
        assert_eq!(
            supervise(formatted).await,
            ControlPlaneStopped::Panicked("with 2".into())
        );
    }

    #[tokio::test]
    async fn an_ordinary_end_is_not_a_panic() {
        assert_eq!(
            supervise(tokio::spawn(async {})).await,
            ControlPlaneStopped::Finished
        );
    }
}
