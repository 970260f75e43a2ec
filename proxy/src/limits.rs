//! The process's open-file limit, and the client-connection cap sized to it.

/// Files the process keeps for itself besides client connections and
/// their upstream connections: listeners, the admin socket, the state and
/// log files, health probes in flight, certificate reloads.
const RESERVED_FILES: u64 = 256;

/// `[server] max_connections` when the config leaves it out: half of the
/// open files left after the reserve, since each client connection may
/// hold an upstream connection too. At least 16.
pub fn default_max_connections(open_file_limit: u64) -> usize {
    let per_connection = 2;
    let usable = open_file_limit.saturating_sub(RESERVED_FILES) / per_connection;
    usize::try_from(usable).unwrap_or(usize::MAX).max(16)
}

/// Raises the soft open-file limit to the hard one (as Go's runtime and
/// most servers do: the soft default of 1,024 is a leftover of `select`)
/// and returns the limit in force.
pub fn raise_open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write `limit`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
    }
    limit.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_leaves_room_for_upstream_connections_and_the_reserve() {
        assert_eq!(default_max_connections(1024), 384);
        assert_eq!(default_max_connections(65_536), 32_640);
        assert_eq!(default_max_connections(100), 16);
        assert_eq!(
            default_max_connections(u64::MAX),
            usize::try_from((u64::MAX - 256) / 2).unwrap_or(usize::MAX)
        );
    }
}
