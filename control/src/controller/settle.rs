//! Config edits that remove something wait before they apply.
//!
//! The watcher reports the config file once it has been quiet for a short
//! settle time (`RELOAD_DEBOUNCE` in the proxy, 250 ms), and an edit that
//! parses is normally applied then. But a file caught in the middle of a
//! write — truncated, with the new text not written yet, or cut after some
//! line — can still parse: an empty file is a valid config without routes.
//! Such a prefix only ever *removes* things (routes, slots, sections, a
//! canary's weight; [`switchyard_conf::shrink`]), so an edit that removes
//! something is held here until the file has stayed exactly that way for
//! [`SHRINK_SETTLE`]: then the file is read again and applied only if it
//! still parses to the same config. Any other outcome of a later read — the
//! file back as it was, another edit, an invalid file — withdraws the held
//! edit. Since the routes a held edit removes stay in the running config,
//! their runtime decisions (switches, canaries, rollouts) are untouched when
//! the file comes back within that time.

use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use switchyard_conf::shrink::{self, Removal};
use switchyard_conf::Config;

use super::{count_reload, rfc3339, Controller};
use crate::history::{now_rfc3339, HistoryEntry, ALL_ROUTES};
use crate::protocol::Response;

/// How long an edit that removes something must stay unchanged in the file
/// before it applies. A writer that truncates and then stalls (an editor
/// saving over a slow or network disk, `cat > file`, a copy interrupted for
/// a moment) is usually done within a second; 3 s covers that with room,
/// and is still short enough that a person who deleted a route sees it go
/// while still looking. `switchyard reload` applies at once.
pub(super) const SHRINK_SETTLE: Duration = Duration::from_secs(3);

/// A valid file edit that removes something, not applied yet.
pub(super) struct PendingEdit {
    /// The config the file parsed to; applied only if it still does.
    config: Config,
    removals: Vec<Removal>,
    /// When it was first read.
    since: SystemTime,
    /// When to read the file again and apply it.
    pub(super) deadline: tokio::time::Instant,
}

fn settle_text() -> String {
    humantime::format_duration(SHRINK_SETTLE).to_string()
}

impl Controller {
    /// Holds a valid edit that removes something, unless the same one is
    /// already held (a `touch`, the same content saved again: its time
    /// keeps running).
    pub(super) fn hold_edit(&mut self, config: Config, removals: Vec<Removal>) -> Response {
        if self
            .pending_edit
            .as_ref()
            .is_some_and(|p| p.config == config)
        {
            count_reload("held");
            return self.held_response();
        }
        let described = shrink::describe(&removals);
        let settle = settle_text();
        tracing::warn!(
            file = %self.config_path.display(),
            "config edit removes {described}; applying it if the file stays this way for {settle}"
        );
        if let Some(earlier) = self.pending_edit.take() {
            self.record_pending(&earlier, "withdrawn: a later edit replaced it".into());
        }
        let pending = PendingEdit {
            config,
            removals,
            since: SystemTime::now(),
            deadline: tokio::time::Instant::now() + SHRINK_SETTLE,
        };
        self.record_pending(
            &pending,
            format!("held: applied if the file stays this way for {settle}"),
        );
        count_reload("held");
        // The file parses again: an earlier error no longer describes it.
        self.config_error = None;
        self.pending_edit = Some(pending);
        self.held_response()
    }

    /// The held edit's time is up: applies it if the file still parses to
    /// the same config. Otherwise the file changed meanwhile, and the
    /// watcher reports it once it settles.
    pub(super) fn settle_pending_edit(&mut self) {
        let Some(pending) = self.pending_edit.take() else {
            return;
        };
        let described = shrink::describe(&pending.removals);
        match switchyard_conf::load(&self.config_path) {
            Ok(config) if config == pending.config => {
                tracing::warn!(
                    file = %self.config_path.display(),
                    "applying the config edit that removes {described}: the file stayed this way for {}",
                    settle_text()
                );
                let entry = HistoryEntry {
                    time: now_rfc3339(),
                    trigger: "config".into(),
                    uid: None,
                    route: ALL_ROUTES.into(),
                    action: "reload".into(),
                    from: Some(format!("generation {}", self.generation)),
                    to: None,
                    reason: Some(format!(
                        "removes {described}; the file stayed this way for {}",
                        settle_text()
                    )),
                    result: String::new(),
                    generation: None,
                };
                self.apply_config(config, entry, None);
            }
            _ => {
                tracing::info!(
                    "config edit that removes {described} withdrawn: the file changed again"
                );
                self.record_pending(&pending, "withdrawn: the file changed again".into());
            }
        }
    }

    /// Drops the held edit, if any, saying why.
    pub(super) fn withdraw_pending_edit(&mut self, why: &str) {
        let Some(pending) = self.pending_edit.take() else {
            return;
        };
        tracing::info!(
            "config edit that removes {} withdrawn: {why}",
            shrink::describe(&pending.removals)
        );
        self.record_pending(&pending, format!("withdrawn: {why}"));
    }

    /// `status`'s `config.pending_edit`: what the held edit removes and
    /// when it applies; null when none is held.
    pub(super) fn pending_edit_status(&self) -> Value {
        let Some(pending) = &self.pending_edit else {
            return Value::Null;
        };
        let left = pending
            .deadline
            .saturating_duration_since(tokio::time::Instant::now());
        json!({
            "removes": pending.removals.iter().map(Removal::to_string).collect::<Vec<_>>(),
            "since": rfc3339(pending.since),
            "applies_at": rfc3339(SystemTime::now() + left),
            "applies_in_ms": left.as_millis() as u64,
            "settle": settle_text(),
        })
    }

    fn held_response(&self) -> Response {
        Response::ok(json!({
            "generation": self.generation,
            "routes": self.config.routes.len(),
            "needs_restart": self.needs_restart,
            "changed": false,
            "pending_edit": self.pending_edit_status(),
        }))
    }

    /// A history entry for the held edit: held, or withdrawn.
    fn record_pending(&mut self, pending: &PendingEdit, result: String) {
        let entry = HistoryEntry {
            time: now_rfc3339(),
            trigger: "config".into(),
            uid: None,
            route: ALL_ROUTES.into(),
            action: "reload".into(),
            from: Some(format!("generation {}", self.generation)),
            to: None,
            reason: Some(format!("removes {}", shrink::describe(&pending.removals))),
            result,
            generation: None,
        };
        self.record(&entry);
    }
}
