//! systemd socket activation: listening sockets handed in by the service
//! manager (`LISTEN_FDS`, `LISTEN_PID`). systemd keeps the socket open
//! across a restart, so connections that arrive while one switchyard
//! drains and the next starts wait in its queue instead of being refused:
//! `systemctl restart` under load drops nothing
//! (`examples/systemd/switchyard.socket`).

use std::net::{SocketAddr, TcpListener};
use std::os::fd::FromRawFd;

/// The TCP listening sockets handed in, if any. Call once, before other
/// threads start: it clears `LISTEN_FDS`/`LISTEN_PID` so children do not
/// inherit them.
pub fn inherited_listeners() -> Vec<TcpListener> {
    let fds = match sd_notify::listen_fds() {
        Ok(fds) => fds,
        Err(e) => {
            tracing::warn!("ignoring the sockets systemd handed in: {e}");
            return Vec::new();
        }
    };
    let mut listeners = Vec::new();
    for fd in fds {
        // SAFETY: systemd hands these descriptors to this process alone
        // (LISTEN_PID is ours), and nothing else in it owns them.
        let listener = unsafe { TcpListener::from_raw_fd(fd) };
        match listener.local_addr() {
            Ok(addr) => {
                if let Err(e) = listener.set_nonblocking(true) {
                    tracing::warn!(fd, "ignoring inherited socket {addr}: {e}");
                    continue;
                }
                tracing::info!(fd, "using the listening socket {addr} handed in by systemd");
                listeners.push(listener);
            }
            Err(e) => tracing::warn!(
                fd,
                "ignoring an inherited descriptor that is not a TCP socket: {e}"
            ),
        }
    }
    listeners
}

/// The inherited socket for the configured `addr`: the one bound to it,
/// or for a port-0 address the first on the same IP.
pub fn take(inherited: &mut Vec<TcpListener>, addr: SocketAddr) -> Option<TcpListener> {
    let position = inherited.iter().position(|listener| {
        listener
            .local_addr()
            .is_ok_and(|bound| bound == addr || (addr.port() == 0 && bound.ip() == addr.ip()))
    })?;
    Some(inherited.remove(position))
}
