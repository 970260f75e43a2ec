//! Noticing config edits: the file's *directory* is watched, because
//! editors save by writing a new file and renaming it over the old one, and
//! deploy tools swap symlinks (Kubernetes' `..data`); a watch on the file
//! itself would stay on the replaced inode and see nothing more.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::RecommendedWatcher;
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};

/// Calls back after edits of one config file settle. Dropping it stops the
/// watch.
pub struct ConfigWatcher {
    _debouncer: Debouncer<RecommendedWatcher, RecommendedCache>,
}

impl ConfigWatcher {
    /// Watches `path`'s directory and calls `on_change` once events touching
    /// the file have been quiet for `debounce`. A symlinked file calls back
    /// on any event in the directory, since its target may be swapped under
    /// another name.
    pub fn start(
        path: &Path,
        debounce: Duration,
        on_change: impl Fn() + Send + 'static,
    ) -> Result<ConfigWatcher, notify::Error> {
        Self::start_many(
            std::slice::from_ref(&path.to_path_buf()),
            debounce,
            on_change,
        )
    }

    /// As [`ConfigWatcher::start`], for several files (the certificates and
    /// keys of `[tls]`): one callback for any of them. An event matches by
    /// file name in any watched directory; a stray match only costs a
    /// reload that finds nothing changed.
    pub fn start_many(
        paths: &[PathBuf],
        debounce: Duration,
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
        let mut debouncer =
            new_debouncer(
                debounce,
                None,
                move |result: DebounceEventResult| match result {
                    Ok(events) => {
                        // Reading a file is an event too (inotify's
                        // IN_CLOSE_NOWRITE): a reload that reads the files
                        // must not set off the next one.
                        let mut changes = events
                            .iter()
                            .filter(|e| !matches!(e.kind, notify::EventKind::Access(_)));
                        let touches_file = if follow_any {
                            changes.next().is_some()
                        } else {
                            changes
                                .flat_map(|e| e.paths.iter())
                                .any(|p| p.file_name().is_some_and(|n| names.contains(n)))
                        };
                        if touches_file {
                            on_change();
                        }
                    }
                    Err(errors) => {
                        for e in errors {
                            tracing::warn!("file watch: {e}");
                        }
                    }
                },
            )?;
        for dir in &dirs {
            debouncer.watch(dir, notify::RecursiveMode::NonRecursive)?;
        }
        Ok(ConfigWatcher {
            _debouncer: debouncer,
        })
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
