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
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use inotify::{EventMask, Inotify, WatchMask};

/// What a directory watch asks the kernel for: names created, removed,
/// renamed, written or changed in their metadata. Not opens, reads or
/// closes after reading: every process reading a file beside the config
/// (a web server serving from that directory, a reload reading the
/// certificates) would wake the watcher, for nothing.
const CHANGES: WatchMask = WatchMask::CREATE
    .union(WatchMask::DELETE)
    .union(WatchMask::MODIFY)
    .union(WatchMask::CLOSE_WRITE)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::ATTRIB);

/// Calls back after edits of one config file settle. Dropping it stops the
/// watch.
pub struct ConfigWatcher {
    /// The write end of a pipe the watcher thread also waits on: dropping
    /// it wakes the thread, which then ends.
    _stop: OwnedFd,
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
    ) -> io::Result<ConfigWatcher> {
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
    ) -> io::Result<ConfigWatcher> {
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
        let inotify = Inotify::init()?;
        for dir in &dirs {
            inotify
                .watches()
                .add(dir, CHANGES)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
        }
        let (stop_read, stop_write) = pipe()?;
        let touches = Touches { names, follow_any };
        std::thread::Builder::new()
            .name("config-watch".into())
            .spawn(move || watch(inotify, stop_read, &touches, settle, on_change))?;
        Ok(ConfigWatcher { _stop: stop_write })
    }
}

/// Which events are about the watched files.
struct Touches {
    names: BTreeSet<OsString>,
    follow_any: bool,
}

impl Touches {
    fn event(&self, mask: EventMask, name: Option<&std::ffi::OsStr>) -> bool {
        // The kernel's queue overflowed: anything may have changed.
        mask.contains(EventMask::Q_OVERFLOW)
            || self.follow_any
            || name.is_some_and(|n| self.names.contains(n))
    }
}

/// The watcher thread: waits for events, and calls back once they have
/// stopped for `settle`; ends when the [`ConfigWatcher`] is dropped.
fn watch(
    mut inotify: Inotify,
    stop: OwnedFd,
    touches: &Touches,
    settle: Duration,
    on_change: impl Fn(),
) {
    let mut buffer = [0u8; 4096];
    let mut due: Option<Instant> = None;
    loop {
        let wait = due.map(|at| at.saturating_duration_since(Instant::now()));
        match wait_readable(inotify.as_fd().as_raw_fd(), stop.as_raw_fd(), wait) {
            Ready::Stopped => return,
            Ready::TimedOut => {
                due = None;
                on_change();
            }
            Ready::Events => match inotify.read_events(&mut buffer) {
                Ok(events) => {
                    for event in events {
                        if touches.event(event.mask, event.name) {
                            due = Some(Instant::now() + settle);
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    tracing::warn!("file watch: {e}; edits are no longer noticed");
                    return;
                }
            },
        }
    }
}

enum Ready {
    Events,
    TimedOut,
    Stopped,
}

/// Waits until the inotify descriptor has events, `wait` passes (`None`:
/// no limit), or the stop pipe's write end is closed.
fn wait_readable(events: i32, stop: i32, wait: Option<Duration>) -> Ready {
    let timeout = wait.map_or(-1, |w| {
        // Rounded up, so the call does not come back just before `due`.
        i32::try_from(w.as_nanos().div_ceil(1_000_000)).unwrap_or(i32::MAX)
    });
    let mut fds = [
        libc::pollfd {
            fd: events,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: stop,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: `fds` is a valid array of two pollfd for the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        if n < 0 || fds[1].revents != 0 {
            return Ready::Stopped;
        }
        if n == 0 {
            return Ready::TimedOut;
        }
        return Ready::Events;
    }
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both are open descriptors we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
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

    /// Threads of this process named `config-watch`.
    fn watcher_threads() -> usize {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .filter(|comm| comm.trim() == "config-watch")
            .count()
    }

    #[test]
    fn reads_of_the_file_call_nothing_and_dropping_the_watcher_ends_its_thread() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("switchyard.toml");
        std::fs::write(&file, "a").unwrap();
        let changes = Arc::new(AtomicUsize::new(0));
        let seen = changes.clone();
        let before = watcher_threads();
        let watcher = ConfigWatcher::start(&file, Duration::from_millis(20), move || {
            seen.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        // The thread names itself once it runs.
        let deadline = Instant::now() + Duration::from_secs(5);
        while watcher_threads() == before {
            assert!(Instant::now() < deadline, "no watcher thread");
            std::thread::sleep(Duration::from_millis(5));
        }
        for _ in 0..50 {
            assert_eq!(std::fs::read_to_string(&file).unwrap(), "a");
        }
        // A change after the reads is the first thing called back.
        std::fs::write(&file, "b").unwrap();
        wait_for(&changes, 1);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            changes.load(Ordering::SeqCst),
            1,
            "the reads were not changes"
        );

        drop(watcher);
        let deadline = Instant::now() + Duration::from_secs(5);
        while watcher_threads() > before {
            assert!(
                Instant::now() < deadline,
                "the watcher thread outlived its watcher"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
