//! The state file: `state_dir/state.json`, the runtime decisions (a switch, a
//! canary set over the socket, a rollback, a fail-back) that must survive a
//! restart.
//!
//! Writes are atomic (temp file, fsync, rename, fsync of the directory), so
//! a crash leaves either the old file or the new one. Reads never fail: a
//! damaged file must not keep the proxy from starting, so what cannot be used
//! is set aside and reported, and every route that can be restored is.
//! Temporary files a crash left behind mid-write are removed at start.

use std::collections::BTreeMap;
use std::fs::{self, DirBuilder, File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The schema version this build reads and writes.
pub const STATE_FILE_VERSION: u32 = 1;

const FILE_NAME: &str = "state.json";

/// A save writes `.state.json.XXXXXX.tmp` (random letters and digits) and
/// renames it over the file; a crash before the rename leaves it behind.
/// [`StateFile::load`] removes exactly such names, nothing else.
const TEMP_PREFIX: &str = ".state.json.";
const TEMP_SUFFIX: &str = ".tmp";
const TEMP_RAND_CHARS: usize = 6;

/// Makes the temporary files `save` writes.
fn temp_file_builder() -> tempfile::Builder<'static, 'static> {
    let mut builder = tempfile::Builder::new();
    builder
        .prefix(TEMP_PREFIX)
        .suffix(TEMP_SUFFIX)
        .rand_bytes(TEMP_RAND_CHARS);
    builder
}

/// Whether `name` is one of our temporary files (see [`TEMP_PREFIX`]).
fn is_our_temporary(name: &str) -> bool {
    name.strip_prefix(TEMP_PREFIX)
        .and_then(|rest| rest.strip_suffix(TEMP_SUFFIX))
        .is_some_and(|random| {
            random.len() == TEMP_RAND_CHARS && random.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

/// The runtime state of one route.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RouteState {
    /// The slot currently active.
    pub active: String,
    /// The fail-back target.
    pub previous: Option<String>,
    /// `None`: no canary.
    pub canary: Option<CanaryState>,
    /// Who decided `active` and `canary`.
    pub source: DecisionSource,
    /// The config file's `active` when this was decided, to detect that the
    /// file changed since.
    pub file_active: String,
    /// The config file's `[route.canary]` slot and weight when this was decided.
    pub file_canary: Option<CanaryState>,
    /// RFC 3339 UTC, e.g. `2026-11-22T11:30:00Z`.
    pub changed_at: String,
    /// The slot traffic failed back *from*: not a fail-back target again
    /// until an explicit command (switch, rollback, a config edit) clears it,
    /// so a recovering slot cannot pull traffic back and forth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
    /// A config edit of `active` to a slot that was not healthy yet: held
    /// here and applied when the slot turns healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<String>,
    /// Names the current canary's set of clients: new whenever a canary
    /// starts or moves to another slot, so sticky cookies from an earlier
    /// canary are reassigned instead of trusted. 0 before the first canary.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cohort: u64,
    /// The route's rollout, in progress or the last one that ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::rollout::Rollout>,
    /// In maintenance, and why: the route answers 503 with a page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<String>,
    /// The config file's `maintenance` when this was decided.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub file_maintenance: bool,
    /// The guard window watching `active` since a switch: kept so that a
    /// restart goes on watching for the rest of it instead of letting the
    /// release off unwatched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<GuardState>,
    /// The slots that were active before `active`, the most recent first:
    /// where a dead active slot with no previous slot fails over to. Kept
    /// here rather than read back from the history, which is rotated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent: Vec<String>,
}

/// A running guard window, as the state file keeps it. The counters are
/// not kept: after a restart the guard judges the requests from then on.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct GuardState {
    /// The slot switched to (the route's `active`).
    pub slot: String,
    /// Where a breach rolls back to.
    pub previous: Option<String>,
    /// RFC 3339 UTC: the switch.
    pub started_at: String,
    /// RFC 3339 UTC: the window ends, as passed.
    pub ends_at: String,
    /// The previous slot's p95 before the switch, in milliseconds.
    pub baseline_p95_ms: Option<f64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A canary: `weight` percent of the route's traffic goes to `slot`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CanaryState {
    pub slot: String,
    pub weight: u8,
}

/// Who made a route's current decision; `status` shows it.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DecisionSource {
    Config,
    Admin,
    Failback,
    Rollout,
    /// The guard rolled a switch back.
    Guard,
}

impl DecisionSource {
    /// As on the wire: `config`, `admin`, `failback`, `rollout`.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionSource::Config => "config",
            DecisionSource::Admin => "admin",
            DecisionSource::Failback => "failback",
            DecisionSource::Rollout => "rollout",
            DecisionSource::Guard => "guard",
        }
    }
}

/// `state_dir/state.json`.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
    dir: PathBuf,
}

/// What [`StateFile::load`] could restore, and what it could not.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadedState {
    pub routes: BTreeMap<String, RouteState>,
    /// One sentence per problem, for the log and `switchyard status`.
    pub warnings: Vec<String>,
}

/// Why a whole state file cannot be used.
#[derive(Debug, thiserror::Error)]
enum Unusable {
    #[error("cannot be read: {0}")]
    Unreadable(#[source] io::Error),
    #[error("is not valid JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("is not a JSON object")]
    NotAnObject,
    #[error("has no numeric \"version\" field")]
    NoVersion,
    #[error(
        "has version {found}, but this build of switchyard reads version {STATE_FILE_VERSION}"
    )]
    WrongVersion { found: u64 },
    #[error("has no \"routes\" object")]
    NoRoutes,
}

/// The file as written: `{"version":1,"routes":{...}}`.
#[derive(Serialize)]
struct OnDisk<'a> {
    version: u32,
    routes: &'a BTreeMap<String, RouteState>,
}

impl StateFile {
    /// The state file of `state_dir`. Touches nothing on disk.
    pub fn new(state_dir: &Path) -> StateFile {
        StateFile {
            path: state_dir.join(FILE_NAME),
            dir: state_dir.to_path_buf(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Restores what can be restored, route by route. Never fails: a missing
    /// file is a first start; a file that cannot be used at all is renamed to
    /// `state.json.corrupt-<unix-seconds>` (kept for a person to look at,
    /// and out of the way of the next save) and the routes start from the
    /// config. Every problem is a warning, also logged. Called once, at
    /// start: it also removes the temporary files of saves a crash
    /// interrupted.
    pub fn load(&self) -> LoadedState {
        self.remove_temporaries();
        let mut loaded = LoadedState::default();
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return loaded,
            Err(e) => {
                loaded
                    .warnings
                    .push(self.set_aside(&Unusable::Unreadable(e)));
                return log(loaded);
            }
        };
        let entries = match routes_object(&bytes) {
            Ok(entries) => entries,
            Err(unusable) => {
                loaded.warnings.push(self.set_aside(&unusable));
                return log(loaded);
            }
        };
        for (name, entry) in entries {
            match serde_json::from_value::<RouteState>(entry) {
                Ok(mut state) => {
                    if let Some(problem) = state.rollout.as_ref().and_then(|r| r.problem()) {
                        loaded.warnings.push(format!(
                            "state file {}: the saved rollout of route {name:?} {problem}; it is dropped",
                            self.path.display()
                        ));
                        state.rollout = None;
                    }
                    loaded.routes.insert(name, state);
                }
                Err(e) => loaded.warnings.push(format!(
                    "state file {}: the saved state of route {name:?} is unusable ({e}); \
                     route {name:?} starts from the config file",
                    self.path.display()
                )),
            }
        }
        log(loaded)
    }

    /// Replaces the file with `routes`, atomically: a crash at any point
    /// leaves either the old file or the new one, never a mix. Creates
    /// `state_dir` (mode 0700) if missing; the file is mode 0600.
    pub fn save(&self, routes: &BTreeMap<String, RouteState>) -> io::Result<()> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        let mut json = serde_json::to_vec_pretty(&OnDisk {
            version: STATE_FILE_VERSION,
            routes,
        })
        .map_err(io::Error::other)?;
        json.push(b'\n');

        // In the same directory so the rename cannot cross filesystems; if
        // anything below fails, dropping `tmp` removes it.
        let mut tmp = temp_file_builder().tempfile_in(&self.dir)?;
        tmp.as_file()
            .set_permissions(Permissions::from_mode(0o600))?;
        tmp.write_all(&json)?;
        // Data on disk before the rename makes it visible, or a crash could
        // leave an empty state.json in place of the old one.
        tmp.as_file().sync_all()?;
        tmp.persist(&self.path).map_err(|e| e.error)?;
        // The rename itself lives in the directory; without this a crash
        // could bring back the old file.
        File::open(&self.dir)?.sync_all()
    }

    /// Removes the regular files in the state dir (not below it) named like
    /// a save's temporary file: left by a crash between their creation and
    /// the rename, they are never read and would pile up. Only this process
    /// saves to its state dir, and it has not saved yet. Failures are
    /// logged; they do not stop a start.
    fn remove_temporaries(&self) {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::warn!(
                    "cannot list the state dir {} to remove leftover temporary files: {e}",
                    self.dir.display()
                );
                return;
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !name.to_str().is_some_and(is_our_temporary) {
                continue;
            }
            // The entry's own type: a symlink or a directory is not ours.
            if !entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let path = entry.path();
            match fs::remove_file(&path) {
                Ok(()) => tracing::info!(
                    "removed {}, a temporary file an interrupted save left behind",
                    path.display()
                ),
                Err(e) => tracing::warn!(
                    "cannot remove {}, a temporary file an interrupted save left behind: {e}",
                    path.display()
                ),
            }
        }
    }

    /// Renames the unusable file aside and says so.
    fn set_aside(&self, unusable: &Unusable) -> String {
        let what = format!("state file {} {unusable}", self.path.display());
        let aside = self.corrupt_path();
        match fs::rename(&self.path, &aside) {
            Ok(()) => format!(
                "{what}; moved it to {} and started every route from the config file",
                aside.display()
            ),
            Err(e) => format!(
                "{what}; could not move it aside to {} ({e}); started every route from the \
                 config file, and the next change will overwrite it",
                aside.display()
            ),
        }
    }

    /// `state.json.corrupt-<unix-seconds>`, with a counter if that name is
    /// taken (two bad starts in one second must not lose the first file).
    fn corrupt_path(&self) -> PathBuf {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let base = format!("{FILE_NAME}.corrupt-{secs}");
        let mut candidate = self.dir.join(&base);
        let mut n = 1u32;
        while candidate.symlink_metadata().is_ok() && n < 1000 {
            candidate = self.dir.join(format!("{base}-{n}"));
            n += 1;
        }
        candidate
    }
}

/// The `routes` entries of a state file, if the file as a whole is usable.
fn routes_object(bytes: &[u8]) -> Result<serde_json::Map<String, Value>, Unusable> {
    let value: Value = serde_json::from_slice(bytes).map_err(Unusable::NotJson)?;
    let Value::Object(mut top) = value else {
        return Err(Unusable::NotAnObject);
    };
    let version = top
        .get("version")
        .and_then(Value::as_u64)
        .ok_or(Unusable::NoVersion)?;
    if version != u64::from(STATE_FILE_VERSION) {
        return Err(Unusable::WrongVersion { found: version });
    }
    match top.remove("routes") {
        Some(Value::Object(routes)) => Ok(routes),
        _ => Err(Unusable::NoRoutes),
    }
}

fn log(loaded: LoadedState) -> LoadedState {
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    loaded
}

#[cfg(test)]
mod tests;
