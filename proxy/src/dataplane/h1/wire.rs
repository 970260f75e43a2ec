//! What both sides of the codec share on the wire: I/O within a time
//! limit, its failures as the pingora errors the exchange sorts by, and
//! chunk size lines.

use std::time::Duration;

use pingora::{Error, ErrorType, Result};

/// `io`, within `limit` when there is one; its failures as pingora errors
/// of the two kinds given (timed out, failed), which say whether the
/// request may go again (`exchange::upstream_failed`).
pub(crate) async fn within<T>(
    limit: Option<Duration>,
    io: impl std::future::Future<Output = std::io::Result<T>>,
    (timed_out, failed): (ErrorType, ErrorType),
    what: &str,
) -> Result<T> {
    let done = match limit {
        Some(limit) => match tokio::time::timeout(limit, io).await {
            Ok(done) => done,
            Err(_) => return Err(Error::explain(timed_out, format!("{what} (timeout)"))),
        },
        None => io.await,
    };
    done.map_err(|e| Error::because(failed, what.to_string(), e))
}

/// `{size:x}\r\n` in `buf`.
pub(crate) fn chunk_size_line(size: usize, buf: &mut [u8; 18]) -> &[u8] {
    let digits = (usize::BITS - size.leading_zeros()).div_ceil(4).max(1) as usize;
    for (i, digit) in buf[..digits].iter_mut().enumerate() {
        let nibble = (size >> (4 * (digits - 1 - i))) & 0xf;
        *digit = b"0123456789abcdef"[nibble];
    }
    buf[digits] = b'\r';
    buf[digits + 1] = b'\n';
    &buf[..digits + 2]
}
