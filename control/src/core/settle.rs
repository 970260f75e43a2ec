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

use std::time::{Duration, Instant, SystemTime};

use switchyard_conf::shrink::{self, Removal};
use switchyard_conf::Config;

use super::{rfc3339, Core, Effect, Level, Now};
use crate::history::{HistoryEntry, Outcome};
use crate::protocol::{PendingEditStatus, ReloadReply, Response};

use super::ReloadTrigger;

/// How long an edit that removes something must stay unchanged in the file
/// before it applies. A writer that truncates and then stalls (an editor
/// saving over a slow or network disk, `cat > file`, a copy interrupted for
/// a moment) is usually done within a second; 3 s covers that with room,
/// and is still short enough that a person who deleted a route sees it go
/// while still looking. `switchyard reload` applies at once.
pub(super) const SHRINK_SETTLE: Duration = Duration::from_secs(3);

/// A valid file edit that removes something, not applied yet.
#[derive(Debug)]
pub(super) struct PendingEdit {
    /// The config the file parsed to; applied only if it still does.
    config: Config,
    removals: Vec<Removal>,
    /// When it was first read.
    since: SystemTime,
    /// When to read the file again and apply it.
    pub(super) deadline: Instant,
    /// The file is being read again: the core waits for that, not for
    /// the clock.
    pub(super) reading: bool,
}

impl PendingEdit {
    /// When the file must be read again; `None` while it is.
    pub(super) fn wakeup(&self) -> Option<Instant> {
        (!self.reading).then_some(self.deadline)
    }
}

/// What the held edit removes and when it applies, as of `now`.
fn edit_status(pending: &PendingEdit, now: Now) -> PendingEditStatus {
    let left = pending.deadline.saturating_duration_since(now.at);
    PendingEditStatus {
        removes: pending.removals.iter().map(Removal::to_string).collect(),
        since: rfc3339(pending.since),
        applies_at: rfc3339(now.wall + left),
        applies_in_ms: left.as_millis() as u64,
        settle: settle_text(),
    }
}

fn settle_text() -> String {
    humantime::format_duration(SHRINK_SETTLE).to_string()
}

impl Core {
    /// Holds a valid edit that removes something, unless the same one is
    /// already held (a `touch`, the same content saved again: its time
    /// keeps running).
    pub(super) fn hold_edit(
        &mut self,
        config: Config,
        removals: Vec<Removal>,
        now: Now,
    ) -> Response {
        self.effects.push(Effect::CountReload("held"));
        if let Some(same) = self.pending_edit.as_ref().filter(|p| p.config == config) {
            return self.held_response(same, now);
        }
        let described = shrink::describe(&removals);
        let settle = settle_text();
        self.log(
            Level::Warn,
            None,
            format!("config edit removes {described}; applying it if the file stays this way for {settle}"),
        );
        if let Some(earlier) = self.pending_edit.take() {
            self.record_pending(
                &earlier,
                Outcome::Withdrawn("a later edit replaced it".into()),
                now,
            );
        }
        let pending = PendingEdit {
            config,
            removals,
            since: now.wall,
            deadline: now.at + SHRINK_SETTLE,
            reading: false,
        };
        let held = format!("applied if the file stays this way for {settle}");
        self.record_pending(&pending, Outcome::Held(held), now);
        // The file parses again: an earlier error no longer describes it.
        self.config_error = None;
        let response = self.held_response(&pending, now);
        self.pending_edit = Some(pending);
        response
    }

    /// The held edit's time is up and the file was read again (`config`,
    /// `None` if it no longer parses): applied if it still is the same
    /// config. Otherwise the file changed meanwhile, and the watcher
    /// reports it once it settles.
    pub(super) fn settle_pending_edit(&mut self, config: Option<Config>, now: Now) {
        let Some(pending) = self.pending_edit.take() else {
            return;
        };
        let described = shrink::describe(&pending.removals);
        match config {
            Some(config) if config == pending.config => {
                let settle = settle_text();
                self.log(
                    Level::Warn,
                    None,
                    format!("applying the config edit that removes {described}: the file stayed this way for {settle}"),
                );
                let entry = HistoryEntry {
                    reason: Some(format!(
                        "removes {described}; the file stayed this way for {settle}"
                    )),
                    ..self.reload_entry(ReloadTrigger::Settled, now)
                };
                self.apply_config(config, entry, now);
            }
            _ => {
                self.log(
                    Level::Info,
                    None,
                    format!(
                        "config edit that removes {described} withdrawn: the file changed again"
                    ),
                );
                let why = Outcome::Withdrawn("the file changed again".into());
                self.record_pending(&pending, why, now);
            }
        }
    }

    /// Drops the held edit, if any, saying why.
    pub(super) fn withdraw_pending_edit(&mut self, why: &str, now: Now) {
        let Some(pending) = self.pending_edit.take() else {
            return;
        };
        self.log(
            Level::Info,
            None,
            format!(
                "config edit that removes {} withdrawn: {why}",
                shrink::describe(&pending.removals)
            ),
        );
        self.record_pending(&pending, Outcome::Withdrawn(why.to_string()), now);
    }

    /// The held edit as `status` shows it; `None` when none is held.
    pub(super) fn pending_edit_status(&self, now: Now) -> Option<PendingEditStatus> {
        self.pending_edit.as_ref().map(|p| edit_status(p, now))
    }

    fn held_response(&self, pending: &PendingEdit, now: Now) -> Response {
        let needs_restart = self.needs_restart.clone();
        let status = edit_status(pending, now);
        let held = ReloadReply::held(self.generation, self.route_count(), needs_restart, status);
        Response::ok_with(&held)
    }

    /// A history entry for the held edit: held, or withdrawn.
    fn record_pending(&mut self, pending: &PendingEdit, result: Outcome, now: Now) {
        let entry = HistoryEntry {
            reason: Some(format!("removes {}", shrink::describe(&pending.removals))),
            result,
            ..self.reload_entry(ReloadTrigger::File, now)
        };
        self.record(entry);
    }
}
