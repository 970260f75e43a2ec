//! Noticing config edits: the file's *directory* is watched, because
//! editors save by writing a new file and renaming it over the old one, and
//! deploy tools swap symlinks (Kubernetes' `..data`); a watch on the file
//! itself would stay on the replaced inode and see nothing more.
//!
//! A change is reported once the file has been *quiet* for the settle time,
//! not a fixed time after the first event: a writer that truncates the file
//! and then writes it in pieces is reported after its last write, so the
//! reader sees the file whole unless the writer itself stalled that long
//! (what the Controller's longer wait for edits that remove something is
//! for).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use notify::{RecommendedWatcher, Watcher};

/// Calls back after edits of one config file settle. Dropping it stops the
/// watch.
pub struct ConfigWatcher {
    _watcher: RecommendedWatcher,
}

impl ConfigWatcher {
    /// Watches `path`'s directory and calls `on_change` once events touching
    /// the file have stopped for `settle`: every new event restarts the
    /// wait, so a file written in pieces (truncated, then written a line at
    /// a time) is looked at only when its writer has been quiet that long.
    /// A symlinked file calls back on any event in the directory, since its
    /// target may be swapped under another name.
    pub fn start(
        path: &Path,
        settle: Duration,
        on_change: impl Fn() + Send + 'static,
    ) -> Result<ConfigWatcher, notify::Error> {
        Self::start_many(std::slice::from_ref(&path.to_path_buf()), settle, on_change)
    }

    /// As [`ConfigWatcher::start`], for several files (the certificates and
    /// keys of `[tls]`): one callback for any of them. An event matches by
    /// file name in any watched directory; a stray match only costs a
    /// reload that finds nothing changed.
    pub fn start_many(
        paths: &[PathBuf],
        settle: Duration,
        on_change: impl Fn() + Send + 'static,
    ) -> Result<ConfigWatcher, notify::Error> {
        let mut dirs = BTreeSet::new();
        let mut names = BTreeSet::new();
        let mut follow_any = false;
        for path in paths {
            dirs.insert(match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            });
            names.extend(path.file_name().map(|n| n.to_os_string()));
            follow_any |= path
                .symlink_metadata()
                .map(|m| m.file_type().is_symlink())
                .unwrap_or(false);
        }
        let touches_file = move |event: &notify::Event| {
            // Reading a file is an event too (inotify's IN_CLOSE_NOWRITE,
            // and IN_CLOSE_WRITE follows the writes it closes): a reload
            // that reads the files must not set off the next one.
            if matches!(event.kind, notify::EventKind::Access(_)) {
                return false;
            }
            // The kernel's queue overflowed: anything may have changed.
            if event.need_rescan() || follow_any {
                return true;
            }
            event
                .paths
                .iter()
                .any(|p| p.file_name().is_some_and(|n| names.contains(n)))
        };
        let (events, received) = mpsc::channel();
        let mut watcher = notify::recommended_watcher(events)?;
        for dir in &dirs {
            watcher.watch(dir, notify::RecursiveMode::NonRecursive)?;
        }
        // The watcher's thread sends every raw event; this one waits for
        // them to stop. It ends when the watcher is dropped (the sender
        // with it).
        std::thread::Builder::new()
            .name("config-watch".into())
            .spawn(move || {
                let mut due: Option<Instant> = None;
                loop {
                    let next = match due {
                        None => received.recv().map_err(|_| RecvTimeoutError::Disconnected),
                        Some(at) => {
                            received.recv_timeout(at.saturating_duration_since(Instant::now()))
                        }
                    };
                    match next {
                        Ok(Ok(event)) => {
                            if touches_file(&event) {
                                due = Some(Instant::now() + settle);
                            }
                        }
                        Ok(Err(e)) => tracing::warn!("file watch: {e}"),
                        Err(RecvTimeoutError::Timeout) => {
                            due = None;
                            on_change();
                        }
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            })
            .map_err(notify::Error::io)?;
        Ok(ConfigWatcher { _watcher: watcher })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Instant;

    fn wait_for(counter: &AtomicUsize, at_least: usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while counter.load(Ordering::SeqCst) < at_least {
            assert!(Instant::now() < deadline, "no change noticed within 5 s");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn in_place_writes_and_renames_over_the_file_are_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("switchyard.toml");
        std::fs::write(&file, "a").unwrap();
        let changes = Arc::new(AtomicUsize::new(0));
        let seen = changes.clone();
        let _watcher = ConfigWatcher::start(&file, Duration::from_millis(20), move || {
            seen.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();

        std::fs::write(&file, "b").unwrap();
        wait_for(&changes, 1);
        let before = changes.load(Ordering::SeqCst);
        let tmp = dir.path().join(".switchyard.toml.swp");
        std::fs::write(&tmp, "c").unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        wait_for(&changes, before + 1);
    }

    #[test]
    fn a_file_written_in_pieces_is_reported_once_its_writer_is_quiet() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("switchyard.toml");
        std::fs::write(&file, "a = 1\n").unwrap();
        let settle = Duration::from_millis(250);
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = calls.clone();
        let _watcher = ConfigWatcher::start(&file, settle, move || {
            seen.lock().unwrap().push(Instant::now());
        })
        .unwrap();

        // Truncated, then a line every 100 ms for 800 ms: never quiet for
        // the settle time until the last line.
        let mut writer = std::fs::File::create(&file).unwrap();
        for i in 0..8 {
            std::thread::sleep(Duration::from_millis(100));
            writeln!(writer, "line{i} = {i}").unwrap();
        }
        let last_write = Instant::now();
        drop(writer);
        let deadline = Instant::now() + Duration::from_secs(5);
        while calls.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "no change noticed within 5 s");
            std::thread::sleep(Duration::from_millis(5));
        }
        let first = calls.lock().unwrap()[0];
        assert!(
            first >= last_write + settle - Duration::from_millis(50),
            "called back {:?} before the last write settled",
            (last_write + settle).saturating_duration_since(first)
        );
    }

    #[test]
    fn a_swapped_symlink_directory_is_noticed() {
        // The Kubernetes ConfigMap layout: switchyard.toml -> ..data/switchyard.toml,
        // and an update renames a new ..data symlink over the old one.
        let dir = tempfile::tempdir().unwrap();
        for version in ["v1", "v2"] {
            std::fs::create_dir(dir.path().join(version)).unwrap();
            std::fs::write(dir.path().join(version).join("switchyard.toml"), version).unwrap();
        }
        std::os::unix::fs::symlink("v1", dir.path().join("..data")).unwrap();
        let file = dir.path().join("switchyard.toml");
        std::os::unix::fs::symlink("..data/switchyard.toml", &file).unwrap();
        let changes = Arc::new(AtomicUsize::new(0));
        let seen = changes.clone();
        let _watcher = ConfigWatcher::start(&file, Duration::from_millis(20), move || {
            seen.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();

        std::os::unix::fs::symlink("v2", dir.path().join("..data_tmp")).unwrap();
        std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
        wait_for(&changes, 1);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "v2");
    }

    #[test]
    fn other_files_in_the_directory_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("switchyard.toml");
        std::fs::write(&file, "a").unwrap();
        let changes = Arc::new(AtomicUsize::new(0));
        let seen = changes.clone();
        let _watcher = ConfigWatcher::start(&file, Duration::from_millis(20), move || {
            seen.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        std::fs::write(dir.path().join("unrelated.txt"), "x").unwrap();
        // Nothing to wait on for an event that must not come: give the
        // debouncer ten of its periods.
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(changes.load(Ordering::SeqCst), 0);
        std::fs::write(&file, "b").unwrap();
        wait_for(&changes, 1);
    }
}
