//! The admin socket: a Unix socket speaking the JSON-lines protocol of
//! [`crate::protocol`], for the `switchyard` CLI and deploy scripts.
//!
//! The socket is created mode 0600 and every peer's uid is read with
//! SO_PEERCRED: root, the server's own uid and `server.admin_uids` may use
//! it. Lines, connections and idle time are bounded so a stuck or hostile
//! client cannot pin the server.
//!
//! Idle connections never lock the CLI out. When every place is taken, a
//! new connection takes the place of the connection that has been idle
//! longest (waiting for its next request line, or for its first: one that
//! never sent anything is idle since it was accepted), which is closed.
//! Only when every connection is busy with a command (a `switch` waiting
//! for health, a `drain --wait`) is a new one refused, with an answer.
//! Evicting rather than shortening the idle timeout: a burst of silent
//! connections would still fill every place until even a short timeout
//! ran out, while eviction serves the CLI at once and keeps interactive
//! sessions (`socat`) usable for the whole idle timeout when the socket is
//! not crowded.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{watch, Notify};

use crate::controller::ControllerHandle;
use crate::protocol::{parse_request, ErrorKind, Response, MAX_LINE_BYTES};

/// Limits of the admin socket.
#[derive(Debug, Clone)]
pub struct AdminLimits {
    /// Connections served at once. A new connection beyond this takes the
    /// place of the longest idle one; only when all are busy with a command
    /// is it answered with an error and closed.
    pub max_connections: usize,
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for AdminLimits {
    fn default() -> Self {
        AdminLimits {
            max_connections: 64,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Who may use the socket.
#[derive(Debug, Clone)]
pub struct AdminAccess {
    server_uid: u32,
    extra_uids: Vec<u32>,
}

impl AdminAccess {
    /// Root, the server's own effective uid, and `admin_uids`.
    pub fn new(admin_uids: &[u32]) -> AdminAccess {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let server_uid = unsafe { libc::geteuid() };
        AdminAccess {
            server_uid,
            extra_uids: admin_uids.to_vec(),
        }
    }

    pub fn allows(&self, uid: u32) -> bool {
        uid == 0 || uid == self.server_uid || self.extra_uids.contains(&uid)
    }

    fn describe(&self) -> String {
        let mut allowed = vec!["root".to_string(), format!("uid {}", self.server_uid)];
        allowed.extend(self.extra_uids.iter().map(|u| format!("uid {u}")));
        allowed.join(", ")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdminSocketError {
    #[error("cannot create the admin socket's directory {dir}: {source}")]
    CreateDir { dir: PathBuf, source: io::Error },
    #[error("another switchyard already answers on the admin socket {path}; stop it or set server.admin_socket to another path")]
    InUse { path: PathBuf },
    #[error("{path} exists and is not a socket; refusing to replace it (set server.admin_socket to another path)")]
    NotASocket { path: PathBuf },
    #[error("cannot bind the admin socket {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
}

/// Binds the socket at `path` with mode 0600, replacing a stale socket file
/// left by a process that died, but never one a live server answers on.
pub async fn bind(path: &Path) -> Result<UnixListener, AdminSocketError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| AdminSocketError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })?;
    }
    if let Ok(existing) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !existing.file_type().is_socket() {
            return Err(AdminSocketError::NotASocket {
                path: path.to_path_buf(),
            });
        }
        if UnixStream::connect(path).await.is_ok() {
            return Err(AdminSocketError::InUse {
                path: path.to_path_buf(),
            });
        }
        let _ = std::fs::remove_file(path);
    }
    let bind_error = |source| AdminSocketError::Bind {
        path: path.to_path_buf(),
        source,
    };
    // Bind under a umask that leaves no window in which the socket is
    // reachable by others before the chmod below.
    // SAFETY: umask only swaps the process's file mode mask.
    let old_mask = unsafe { libc::umask(0o177) };
    let listener = UnixListener::bind(path);
    unsafe { libc::umask(old_mask) };
    let listener = listener.map_err(bind_error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_error)?;
    Ok(listener)
}

/// Serves admin connections until `shutdown` turns true.
pub async fn serve(
    listener: UnixListener,
    controller: ControllerHandle,
    access: AdminAccess,
    limits: AdminLimits,
    shutdown: watch::Receiver<bool>,
) {
    let stopped = until_true(shutdown);
    tokio::pin!(stopped);
    let connections = Arc::new(Mutex::new(Connections::new(limits.max_connections)));
    let access = Arc::new(access);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("admin socket accept failed: {e}");
                    // Out of fds and the like: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stopped => return,
        };
        let Some(place) = Place::take(&connections) else {
            tokio::spawn(refuse(
                stream,
                Response::error(
                    ErrorKind::Refused,
                    "too many admin connections, all busy with commands; try again",
                ),
            ));
            continue;
        };
        let controller = controller.clone();
        let access = access.clone();
        let idle = limits.idle_timeout;
        tokio::spawn(async move {
            serve_connection(stream, &controller, &access, idle, &place).await;
        });
    }
}

/// The connections being served: at most `max`, each idle (since when) or
/// busy with a command.
struct Connections {
    max: usize,
    next_id: u64,
    live: HashMap<u64, Connection>,
}

struct Connection {
    /// `None` while a command runs.
    idle_since: Option<Instant>,
    /// Told when the connection is evicted.
    close: Arc<Notify>,
}

impl Connections {
    fn new(max: usize) -> Connections {
        Connections {
            max,
            next_id: 0,
            live: HashMap::new(),
        }
    }

    /// A place for a new connection, idle from now: a free one, else the
    /// one of the connection idle longest, which is told to close. `None`
    /// when every connection is busy.
    fn admit(&mut self, now: Instant) -> Option<(u64, Arc<Notify>)> {
        if self.live.len() >= self.max {
            let oldest = self
                .live
                .iter()
                .filter_map(|(id, c)| c.idle_since.map(|since| (since, *id)))
                .min()
                .map(|(_, id)| id)?;
            if let Some(evicted) = self.live.remove(&oldest) {
                // Stored if the connection is not waiting right now: it
                // closes at its next wait.
                evicted.close.notify_one();
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        let close = Arc::new(Notify::new());
        self.live.insert(
            id,
            Connection {
                idle_since: Some(now),
                close: close.clone(),
            },
        );
        Some((id, close))
    }

    /// Busy, or idle since now unless it already was idle.
    fn set_idle(&mut self, id: u64, idle: bool, now: Instant) {
        if let Some(connection) = self.live.get_mut(&id) {
            if !idle {
                connection.idle_since = None;
            } else if connection.idle_since.is_none() {
                connection.idle_since = Some(now);
            }
        }
    }
}

/// A connection's place among [`Connections`], given back on drop.
struct Place {
    connections: Arc<Mutex<Connections>>,
    id: u64,
    close: Arc<Notify>,
}

impl Place {
    fn take(connections: &Arc<Mutex<Connections>>) -> Option<Place> {
        let (id, close) = lock(connections).admit(Instant::now())?;
        Some(Place {
            connections: connections.clone(),
            id,
            close,
        })
    }

    /// Idle (evictable) while waiting for a request, busy while serving one.
    fn set_idle(&self, idle: bool) {
        lock(&self.connections).set_idle(self.id, idle, Instant::now());
    }

    /// Resolves once this connection has been evicted.
    async fn evicted(&self) {
        self.close.notified().await;
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        lock(&self.connections).live.remove(&self.id);
    }
}

fn lock(connections: &Mutex<Connections>) -> std::sync::MutexGuard<'_, Connections> {
    // The critical sections cannot panic half-way; a poisoned lock still
    // holds consistent data.
    connections.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Resolves once `flag` is true (or its sender is gone).
async fn until_true(mut flag: watch::Receiver<bool>) {
    let _ = flag.wait_for(|set| *set).await.map(|_| ());
}

/// Answers a connection that will not be served. The peer's first line is
/// read (briefly, boundedly) before answering, so a client that writes its
/// request and then reads gets the answer rather than a broken pipe.
async fn refuse(stream: UnixStream, response: Response) {
    let (read_half, mut write_half) = stream.into_split();
    let mut first_line = Vec::new();
    let limited = BufReader::new(read_half).take(MAX_LINE_BYTES as u64);
    let _ = tokio::time::timeout(Duration::from_secs(1), read_line(limited, &mut first_line)).await;
    let _ = write_half.write_all(response.to_line().as_bytes()).await;
}

async fn serve_connection(
    stream: UnixStream,
    controller: &ControllerHandle,
    access: &AdminAccess,
    idle_timeout: Duration,
    place: &Place,
) {
    let uid = match stream.peer_cred() {
        Ok(cred) => cred.uid(),
        Err(e) => {
            tracing::warn!("admin connection without peer credentials refused: {e}");
            return;
        }
    };
    if !access.allows(uid) {
        tracing::warn!(uid, "admin connection refused: uid not allowed");
        let message = format!(
            "uid {uid} may not use the admin socket; allowed: {} (add it to server.admin_uids)",
            access.describe()
        );
        refuse(stream, Response::error(ErrorKind::Forbidden, message)).await;
        return;
    }

    let (read_half, mut write_half) = stream.into_split();
    let mut reader = BufReader::new(read_half);
    let mut line = Vec::with_capacity(512);
    loop {
        line.clear();
        let limited = (&mut reader).take(MAX_LINE_BYTES as u64 + 1);
        place.set_idle(true);
        let read = tokio::select! {
            biased;
            _ = place.evicted() => {
                tracing::debug!("idle admin connection closed to make room for a new one");
                return;
            }
            read = tokio::time::timeout(idle_timeout, read_line(limited, &mut line)) => read,
        };
        // Not evicted while the request is served. (Evicted in the instant
        // between the read and this, the request is still answered; the
        // connection closes at its next wait.)
        place.set_idle(false);
        let response = match read {
            Err(_elapsed) => return,
            Ok(Err(_)) | Ok(Ok(0)) => return,
            Ok(Ok(_)) if line.len() > MAX_LINE_BYTES => {
                // The rest of the line is still unread: we cannot find where
                // the next request starts, so answer and close.
                let response = Response::error(
                    ErrorKind::TooLarge,
                    format!("request line exceeds {MAX_LINE_BYTES} bytes"),
                );
                let _ = write_half.write_all(response.to_line().as_bytes()).await;
                return;
            }
            Ok(Ok(_)) => {
                let request_bytes = line.trim_ascii();
                if request_bytes.is_empty() {
                    continue;
                }
                match parse_request(request_bytes) {
                    Ok(request) => controller.command(request, Some(uid)).await,
                    Err(response) => response,
                }
            }
        };
        if write_half
            .write_all(response.to_line().as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
}

async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    mut reader: R,
    line: &mut Vec<u8>,
) -> io::Result<usize> {
    reader.read_until(b'\n', line).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_house_evicts_the_longest_idle_connection_and_never_a_busy_one() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut connections = Connections::new(3);
        let (a, a_close) = connections.admit(at(0)).unwrap();
        let (b, b_close) = connections.admit(at(1)).unwrap();
        let (c, _) = connections.admit(at(2)).unwrap();
        // a runs a command; b answered one at 5 ms; c never spoke.
        connections.set_idle(a, false, at(3));
        connections.set_idle(b, false, at(4));
        connections.set_idle(b, true, at(5));
        connections.set_idle(c, true, at(6));

        let (d, _) = connections.admit(at(7)).unwrap();
        assert!(
            !connections.live.contains_key(&c),
            "c, idle since 2 ms, goes"
        );
        assert_eq!(connections.live.len(), 3);
        let (_, _) = connections.admit(at(8)).unwrap();
        assert!(
            !connections.live.contains_key(&b),
            "then b, idle since 5 ms"
        );
        assert!(connections.live.contains_key(&a) && connections.live.contains_key(&d));

        // Evicted connections are told, the others not.
        let told = |close: Arc<Notify>| async move {
            tokio::time::timeout(Duration::ZERO, close.notified())
                .await
                .is_ok()
        };
        assert!(told(b_close).await);
        assert!(!told(a_close).await);

        // All busy: no place.
        for id in connections.live.keys().copied().collect::<Vec<_>>() {
            connections.set_idle(id, false, at(9));
        }
        assert!(connections.admit(at(10)).is_none());
        assert_eq!(connections.live.len(), 3);
    }

    #[test]
    fn root_own_uid_and_listed_uids_are_allowed() {
        let access = AdminAccess {
            server_uid: 1000,
            extra_uids: vec![1001],
        };
        assert!(access.allows(0));
        assert!(access.allows(1000));
        assert!(access.allows(1001));
        assert!(!access.allows(1002));
        assert!(!access.allows(65534));
    }
}
