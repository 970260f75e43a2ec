//! The history: `state_dir/history.jsonl`, an append-only log of every
//! change to routing (who, when, what, why, and whether it was done), one
//! JSON object per line, for `switchyard history` and for people reading
//! the file after an incident.
//!
//! The log is bounded: past `max_bytes` the file is renamed to
//! `history.jsonl.1` (replacing the older one) and a new file started, so at
//! most about twice `max_bytes` is on disk. Reading skips any line that does
//! not parse, so a crash mid-write or a hand edit never hides the rest.

use std::collections::VecDeque;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

mod entry;

pub use entry::{Action, Caller, HistoryEntry, Outcome, Trigger, ALL_ROUTES};

/// Size at which `history.jsonl` is rotated, unless told otherwise.
pub const DEFAULT_HISTORY_MAX_BYTES: u64 = 4 * 1024 * 1024;

const FILE_NAME: &str = "history.jsonl";
const ROTATED_FILE_NAME: &str = "history.jsonl.1";

/// The history of one state directory.
#[derive(Debug, Clone)]
pub struct History {
    dir: PathBuf,
    path: PathBuf,
    rotated: PathBuf,
    max_bytes: u64,
}

/// The current time as RFC 3339 UTC to the second, e.g.
/// `2026-11-22T11:30:00Z`: the timestamp of history entries and of the state
/// file's decisions.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

impl History {
    /// The history of `state_dir`, rotated past `max_bytes`. Touches nothing
    /// on disk: the directory is created by the first [`append`](Self::append).
    pub fn open(state_dir: &Path, max_bytes: u64) -> History {
        History {
            dir: state_dir.to_path_buf(),
            path: state_dir.join(FILE_NAME),
            rotated: state_dir.join(ROTATED_FILE_NAME),
            max_bytes,
        }
    }

    /// Appends `entry` as one line, rotating first if the line would take
    /// the file past `max_bytes` (a single line longer than that is still
    /// written, alone in a new file, rather than lost).
    ///
    /// The line is flushed but not fsynced: the history is a record, not
    /// what routing is restored from (that is the state file, which is
    /// fsynced), so a power cut may lose its last lines but must not cost a
    /// disk flush on every change; and [`recent`](Self::recent) skips a line
    /// torn by a crash.
    pub fn append(&mut self, entry: &HistoryEntry) -> io::Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(io::Error::other)?;
        line.push(b'\n');

        // Opened per entry, not kept open: changes are rare, and this way a
        // file deleted or moved by hand is simply started again instead of
        // written to where nobody looks.
        let (mut file, mut size) = self.open_file()?;
        if size > 0 && size.saturating_add(line.len() as u64) > self.max_bytes {
            drop(file);
            match fs::rename(&self.path, &self.rotated) {
                Ok(()) => {}
                // Gone since we opened it: nothing to rotate.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            (file, size) = self.open_file()?;
        }

        // A crash mid-write can leave a last line without its newline; ours
        // would be glued to it and lost too. Finish that line first.
        let mut buf = Vec::with_capacity(line.len() + 1);
        if size > 0 && !ends_with_newline(&file, size)? {
            buf.push(b'\n');
        }
        buf.extend_from_slice(&line);
        // One write of the whole line under O_APPEND: it lands at the end of
        // the file in one piece, even if the file was appended to meanwhile.
        file.write_all(&buf)?;
        file.flush()
    }

    /// The newest `limit` entries, oldest first, of `route` and the
    /// server-wide ones (or of every route). Lines that do not parse are skipped.
    pub fn recent(&self, route: Option<&str>, limit: usize) -> Vec<HistoryEntry> {
        if limit == 0 {
            return Vec::new();
        }
        // `limit` comes from the admin socket: never size an allocation by it.
        let mut newest = VecDeque::new();
        for path in [&self.rotated, &self.path] {
            let file = match File::open(path) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    tracing::warn!("cannot read the history {}: {e}", path.display());
                    continue;
                }
            };
            let mut skipped = 0usize;
            for line in BufReader::new(file).split(b'\n') {
                let line = match line {
                    Ok(line) => line,
                    Err(e) => {
                        tracing::warn!("cannot read the history {}: {e}", path.display());
                        break;
                    }
                };
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let Ok(entry) = serde_json::from_slice::<HistoryEntry>(&line) else {
                    skipped += 1;
                    continue;
                };
                // Server-wide entries (route "*", e.g. reloads) concern every route.
                if route.is_some_and(|r| entry.route != r && entry.route != ALL_ROUTES) {
                    continue;
                }
                if newest.len() == limit {
                    newest.pop_front();
                }
                newest.push_back(entry);
            }
            if skipped > 0 {
                // Debug, not warn: a torn line stays in the file and would
                // otherwise be reported on every `switchyard history`.
                tracing::debug!(
                    "skipped {skipped} unreadable line(s) in the history {}",
                    path.display()
                );
            }
        }
        newest.into()
    }

    /// `history.jsonl` for appending (created, with its directory, if
    /// missing), and its size.
    fn open_file(&self) -> io::Result<(File, u64)> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)?;
        let size = file.metadata()?.len();
        Ok((file, size))
    }
}

fn ends_with_newline(file: &File, size: u64) -> io::Result<bool> {
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, size - 1)?;
    Ok(last[0] == b'\n')
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn entry(route: &str, n: u64) -> HistoryEntry {
        HistoryEntry {
            time: now_rfc3339(),
            trigger: Trigger::Admin,
            uid: Some(1001),
            route: route.into(),
            action: Action::Switch,
            from: Some("active=blue".into()),
            to: Some("active=green".into()),
            reason: Some(format!("deploy #{n}")),
            result: Outcome::Ok,
            generation: Some(n),
            node: None,
        }
    }

    fn generations(entries: &[HistoryEntry]) -> Vec<u64> {
        entries.iter().filter_map(|e| e.generation).collect()
    }

    fn size(path: &Path) -> u64 {
        fs::metadata(path).map_or(0, |m| m.len())
    }

    #[test]
    fn recent_filters_by_route_and_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let mut history = History::open(dir.path(), DEFAULT_HISTORY_MAX_BYTES);
        for n in 0..10 {
            let route = if n % 2 == 0 { "app" } else { "api" };
            history.append(&entry(route, n)).unwrap();
        }
        assert_eq!(
            generations(&history.recent(None, 100)),
            (0..10).collect::<Vec<_>>()
        );
        assert_eq!(generations(&history.recent(None, 3)), [7, 8, 9]);
        assert_eq!(generations(&history.recent(Some("app"), 2)), [6, 8]);
        assert_eq!(
            generations(&history.recent(Some("api"), 100)),
            [1, 3, 5, 7, 9]
        );
        assert!(history.recent(Some("nope"), 10).is_empty());
        assert!(history.recent(None, 0).is_empty());
        assert_eq!(history.recent(None, usize::MAX).len(), 10);
        let last = &history.recent(None, 1)[0];
        let expected = HistoryEntry {
            time: last.time.clone(),
            ..entry("api", 9)
        };
        assert_eq!(*last, expected);
    }

    #[test]
    fn each_entry_is_one_json_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut history = History::open(dir.path(), DEFAULT_HISTORY_MAX_BYTES);
        let mut multiline = entry("app", 1);
        multiline.reason = Some("line one\nline two".into());
        history.append(&multiline).unwrap();
        history.append(&entry("app", 2)).unwrap();
        let text = fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(text.ends_with('\n'));
        assert_eq!(history.recent(None, 1)[0].generation, Some(2));
        assert_eq!(history.recent(None, 2)[0].reason, multiline.reason);
    }

    #[test]
    fn open_touches_nothing_and_append_creates_the_dir_private() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("var/lib/switchyard");
        let mut history = History::open(&state_dir, DEFAULT_HISTORY_MAX_BYTES);
        assert!(!state_dir.exists());
        assert!(history.recent(None, 10).is_empty());

        history.append(&entry("app", 1)).unwrap();
        let dir_mode = fs::metadata(&state_dir).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let file_mode = fs::metadata(state_dir.join(FILE_NAME))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(file_mode & 0o777, 0o600);
    }

    #[test]
    fn rotation_bounds_the_size_and_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let max_bytes = 2_000;
        let mut history = History::open(dir.path(), max_bytes);
        let current = dir.path().join(FILE_NAME);
        let rotated = dir.path().join(ROTATED_FILE_NAME);
        let total = 300;
        for n in 0..total {
            history.append(&entry("app", n)).unwrap();
            assert!(size(&current) <= max_bytes, "after entry {n}");
            assert!(size(&rotated) <= max_bytes, "after entry {n}");
        }
        assert!(rotated.exists());

        let kept = generations(&history.recent(None, usize::MAX));
        let in_current = fs::read_to_string(&current).unwrap().lines().count();
        // Both files are read, and what is kept is the newest, contiguous, in order.
        assert!(kept.len() > in_current, "{} <= {in_current}", kept.len());
        let first = total - kept.len() as u64;
        assert!(first > 0, "old entries were dropped");
        assert_eq!(kept, (first..total).collect::<Vec<_>>());
        // A limit that spans the two files still comes out oldest first.
        let spanning = in_current + 2;
        assert_eq!(
            generations(&history.recent(None, spanning)),
            (total - spanning as u64..total).collect::<Vec<_>>()
        );
    }

    #[test]
    fn an_entry_larger_than_max_bytes_is_still_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut history = History::open(dir.path(), 100);
        history.append(&entry("app", 1)).unwrap();
        let mut big = entry("app", 2);
        big.reason = Some("x".repeat(500));
        history.append(&big).unwrap();
        history.append(&entry("app", 3)).unwrap();
        assert_eq!(generations(&history.recent(None, 10)), [2, 3]);
    }

    #[test]
    fn unreadable_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut history = History::open(dir.path(), DEFAULT_HISTORY_MAX_BYTES);
        history.append(&entry("app", 1)).unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"garbage \xff\xfe not json\n{\"time\":1}\n\n")
            .unwrap();
        drop(file);
        history.append(&entry("app", 2)).unwrap();
        // A crash mid-write: the last line has no end.
        let torn = serde_json::to_string(&entry("app", 3)).unwrap();
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&torn.as_bytes()[..torn.len() / 2]).unwrap();
        drop(file);

        assert_eq!(generations(&history.recent(None, 10)), [1, 2]);
        // The next entry is not glued to the torn line.
        history.append(&entry("app", 4)).unwrap();
        assert_eq!(generations(&history.recent(None, 10)), [1, 2, 4]);
    }

    #[test]
    fn a_history_file_removed_by_hand_is_started_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut history = History::open(dir.path(), DEFAULT_HISTORY_MAX_BYTES);
        history.append(&entry("app", 1)).unwrap();
        fs::remove_file(dir.path().join(FILE_NAME)).unwrap();
        history.append(&entry("app", 2)).unwrap();
        assert_eq!(generations(&history.recent(None, 10)), [2]);
    }

    #[test]
    fn now_is_rfc3339_utc_to_the_second() {
        let now = now_rfc3339();
        assert_eq!(now.len(), "2026-11-22T11:30:00Z".len(), "{now}");
        assert!(now.ends_with('Z'), "{now}");
        assert!(humantime::parse_rfc3339(&now).is_ok(), "{now}");
    }
}
