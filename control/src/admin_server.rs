//! The admin socket: a Unix socket speaking the JSON-lines protocol of
//! [`crate::protocol`], for the `switchyard` CLI and deploy scripts.
//!
//! The socket is created mode 0600 and every peer's uid is read with
//! SO_PEERCRED: root, the server's own uid and `server.admin_uids` may use
//! it. Lines, connections and idle time are bounded so a stuck or hostile
//! client cannot pin the server.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{watch, Semaphore};

use crate::controller::ControllerHandle;
use crate::protocol::{parse_request, ErrorKind, Response, MAX_LINE_BYTES};

/// Limits of the admin socket.
#[derive(Debug, Clone)]
pub struct AdminLimits {
    /// Connections served at once; more are answered with an error and closed.
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
    let slots = Arc::new(Semaphore::new(limits.max_connections));
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
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tokio::spawn(refuse(
                stream,
                Response::error(ErrorKind::Refused, "too many admin connections; try again"),
            ));
            continue;
        };
        let controller = controller.clone();
        let access = access.clone();
        let idle = limits.idle_timeout;
        tokio::spawn(async move {
            serve_connection(stream, &controller, &access, idle).await;
            drop(permit);
        });
    }
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
        let read = tokio::time::timeout(idle_timeout, read_line(limited, &mut line)).await;
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
