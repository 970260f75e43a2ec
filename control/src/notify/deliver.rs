//! Delivering notices: one task, a bounded queue, every target in turn,
//! each with a few attempts and a growing pause between them.

use std::time::Duration;

use bytes::Bytes;
use switchyard_conf::NotifyConfig;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};

use super::webhook::{self, Post};
use super::Notice;

/// Notices waiting for delivery; past this, new ones are dropped and
/// counted (`switchyard_notify_dropped_total`): a dead webhook must not
/// grow memory without bound.
const QUEUE: usize = 256;
/// Tries per target and notice.
pub const DELIVERY_ATTEMPTS: u32 = 4;
/// The pause after the first failed try; doubled after each.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// How long one try may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

const FAILURES: &str = "switchyard_notify_failures_total";
const DROPPED: &str = "switchyard_notify_dropped_total";

/// How delivering one notice to one target went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The webhook's URL or the command's program.
    pub target: String,
    pub result: Result<(), String>,
    pub attempts: u32,
}

/// Where the core's notices go.
pub struct Notifier {
    queue: mpsc::Sender<Notice>,
    targets: watch::Sender<Vec<NotifyConfig>>,
}

impl Notifier {
    /// Starts delivering to `targets` on the current tokio runtime; every
    /// outcome goes to `report`.
    pub fn start(
        targets: Vec<NotifyConfig>,
        report: impl Fn(Delivered) + Send + Sync + 'static,
    ) -> Notifier {
        let (queue, notices) = mpsc::channel(QUEUE);
        let (targets, current) = watch::channel(targets);
        tokio::spawn(run(notices, current, report));
        Notifier { queue, targets }
    }

    /// Queues `notice`; never waits.
    pub fn send(&self, notice: Notice) {
        if self.targets.borrow().is_empty() {
            return;
        }
        if self.queue.try_send(notice).is_err() {
            ::metrics::counter!(DROPPED).increment(1);
            tracing::warn!("notification queue full ({QUEUE}); a notice was dropped");
        }
    }

    /// The targets of the config in force.
    pub fn set_targets(&self, targets: &[NotifyConfig]) {
        self.targets.send_if_modified(|current| {
            let changed = current.as_slice() != targets;
            if changed {
                *current = targets.to_vec();
            }
            changed
        });
    }
}

async fn run(
    mut notices: mpsc::Receiver<Notice>,
    targets: watch::Receiver<Vec<NotifyConfig>>,
    report: impl Fn(Delivered),
) {
    while let Some(notice) = notices.recv().await {
        let body = Bytes::from(serde_json::to_vec(&notice).unwrap_or_default());
        let event = notice.event.as_str();
        let wanted: Vec<NotifyConfig> = targets
            .borrow()
            .iter()
            .filter(|t| t.events.is_empty() || t.events.iter().any(|e| e == event))
            .cloned()
            .collect();
        for target in wanted {
            if let Some(url) = &target.url {
                let send = || {
                    webhook::post(Post {
                        url,
                        secret: target.secret.as_deref(),
                        ca: target.ca.as_deref(),
                        event,
                        body: body.clone(),
                    })
                };
                report(with_retries(url.clone(), send).await);
            }
            if let Some(exec) = &target.exec {
                let run = || command(exec, body.clone());
                report(with_retries(exec[0].clone(), run).await);
            }
        }
    }
}

/// Tries `attempt` up to [`DELIVERY_ATTEMPTS`] times, pausing longer after
/// each failure; a failure in the end is logged and counted.
async fn with_retries<F, Fut>(target: String, attempt: F) -> Delivered
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut pause = FIRST_BACKOFF;
    let mut last = Err(String::new());
    for attempts in 1..=DELIVERY_ATTEMPTS {
        last = match tokio::time::timeout(ATTEMPT_TIMEOUT, attempt()).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {ATTEMPT_TIMEOUT:?}")),
        };
        if last.is_ok() {
            return Delivered {
                target,
                result: Ok(()),
                attempts,
            };
        }
        if attempts < DELIVERY_ATTEMPTS {
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
    }
    ::metrics::counter!(FAILURES, "target" => target.clone()).increment(1);
    tracing::warn!(
        target,
        "notification not delivered: {}",
        last.as_ref().err().map_or("", |e| e.as_str())
    );
    Delivered {
        target,
        result: last,
        attempts: DELIVERY_ATTEMPTS,
    }
}

/// Runs the command with the notice on stdin; exit 0 is a delivery.
async fn command(exec: &[String], body: Bytes) -> Result<(), String> {
    let mut child = tokio::process::Command::new(&exec[0])
        .args(&exec[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", exec[0]))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its input still counts by its exit.
        let _ = stdin.write_all(&body).await;
    }
    let status = child.wait().await.map_err(|e| e.to_string())?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{} exited with {status}", exec[0]))
    }
}

#[cfg(test)]
mod tests;
