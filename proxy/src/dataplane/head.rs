//! Reading an HTTP/1.x request head off a client connection before pingora
//! parses it, so that the proxy, not pingora's 1 MiB limit, decides what a
//! head may cost:
//!
//! - between requests the connection holds no buffer at all: the wait for
//!   the next request is a read into this thread's scratch buffer
//!   (`h1/read.rs`), and only the bytes that arrived are copied out — the
//!   same one read pingora would have made into a 4 KiB buffer of its own;
//! - from that byte on the whole head must arrive within `header_timeout`
//!   (`408`), and be at most `[server] max_header_size` bytes (`431`;
//!   64 KiB by default);
//! - the buffer grows with what arrives, so a dribbling client holds what
//!   it sent, not a preallocated maximum.
//!
//! The bytes read (the head and whatever came after it) go to pingora's
//! session as its first bytes, the way a pipelined request's do.

use std::time::Duration;

use bytes::BytesMut;
use pingora::protocols::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::h1::read::read_into;
use super::h1::wire::timed;

/// The largest response head taken from a backend: 64 KiB, the default of
/// `[server] max_header_size` for requests. nginx takes up to 32 KiB (4 ×
/// 8 KiB buffers) and HAProxy 16 KiB; pingora alone would take 1 MiB.
pub(crate) const MAX_HEAD: usize = 64 * 1024;

/// A head longer than its first read is read on into a buffer of its own,
/// growing by at least this much, doubling.
const FIRST_READ: usize = 8 * 1024;

/// What reading a head found.
#[derive(Debug)]
pub(crate) enum Head {
    /// A whole head (and maybe more) is in these bytes.
    Read(BytesMut),
    /// The client closed or sent nothing for the whole keep-alive wait;
    /// or it was answered `408`/`431` and must be closed.
    Closed,
}

/// How long and how large a request head may be.
#[derive(Clone, Copy)]
pub(crate) struct HeadLimits {
    /// The wait for its first byte: the keep-alive timeout.
    pub keepalive: Duration,
    /// From its first byte to its end.
    pub header_timeout: Duration,
    /// Its largest size in bytes.
    pub max_size: usize,
}

/// Reads the next request head: waits up to `keepalive` for its first
/// bytes, then up to `header_timeout` from them for its end. `already` holds bytes
/// read past the previous request (a pipelined one), if any.
pub(crate) async fn read_head(
    stream: &mut Stream,
    already: Option<BytesMut>,
    limits: HeadLimits,
) -> Head {
    let HeadLimits {
        keepalive,
        header_timeout,
        max_size,
    } = limits;
    let mut buf = match already {
        Some(bytes) if !bytes.is_empty() => bytes,
        _ => {
            let mut first = BytesMut::new();
            match timed(keepalive, read_into(stream, &mut first)).await {
                Some(Ok(n)) if n > 0 => first,
                _ => return Head::Closed,
            }
        }
    };
    // Read only when the head needs more than its first read: most heads
    // arrive whole, and a clock read per request is worth saving.
    let mut deadline = None;
    let mut scanned = 0;
    loop {
        if let Some(end) = head_end(&buf, scanned) {
            if end > max_size {
                return refuse(stream, TOO_LARGE).await;
            }
            return Head::Read(buf);
        }
        if buf.len() > max_size {
            return refuse(stream, TOO_LARGE).await;
        }
        // The end marker may straddle reads: look again from just before.
        scanned = buf.len().saturating_sub(3);
        if buf.capacity() == buf.len() {
            // Double, up to just past the limit.
            let room = max_size + 1 - buf.len().min(max_size);
            buf.reserve(buf.capacity().max(FIRST_READ).min(room));
        }
        let deadline = *deadline.get_or_insert_with(|| Instant::now() + header_timeout);
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Head::Closed,
            Ok(Ok(_)) => {}
            Err(_) => {
                tracing::debug!("request head not whole within {header_timeout:?}: closing");
                return refuse(stream, TIMED_OUT).await;
            }
        }
    }
}

const TOO_LARGE: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 42\r\nConnection: close\r\n\r\nswitchyard: the request head is too large\n";
const TIMED_OUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// Answers a head that cannot be parsed `400`, and closes: `None`, as
/// the connection's loop then returns.
pub(crate) async fn refuse_bad_request<T>(stream: &mut Stream, why: &str) -> Option<T> {
    tracing::debug!("bad request head: {why}");
    refuse(stream, BAD_REQUEST).await;
    None
}

const BAD_REQUEST: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 42\r\nConnection: close\r\n\r\nswitchyard: the request head is not valid\n";

/// Answers a head we will not read, best effort, and says close.
async fn refuse(stream: &mut Stream, answer: &[u8]) -> Head {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(answer).await?;
        stream.flush().await
    })
    .await;
    Head::Closed
}

/// Where the head in `buf` ends (the index just past its empty line), if it
/// does, looking from `from` (at or before the LF that ends the last
/// header line: three bytes back from the end of an earlier look). A line may end in CRLF or a bare LF, as
/// pingora's parser (httparse) accepts both; leading empty lines before a
/// request line (RFC 9112 §2.2) are skipped.
pub(crate) fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let from = from.max(start);
    let mut at = from;
    while let Some(offset) = buf[at..].iter().position(|&b| b == b'\n') {
        let lf = at + offset;
        // An empty line: LF LF, or LF CR LF.
        match &buf[lf + 1..] {
            [b'\n', ..] => return Some(lf + 2),
            [b'\r', b'\n', ..] => return Some(lf + 3),
            _ => {}
        }
        at = lf + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusals_are_framed_by_their_length() {
        for answer in [TOO_LARGE, TIMED_OUT, BAD_REQUEST] {
            let text = std::str::from_utf8(answer).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(body.len(), length, "{text:?}");
        }
    }

    #[test]
    fn the_head_ends_at_its_empty_line_wherever_the_search_starts() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY";
        let end = head.len() - 4;
        // `from` is at most three bytes back from where the last look
        // ended, so it never passes the LF before the empty line.
        for from in 0..=end - 3 {
            assert_eq!(head_end(head, from), Some(end), "from {from}");
        }
        for cut in 0..end {
            assert_eq!(head_end(&head[..cut], 0), None, "cut at {cut}");
        }
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: a\n\nX", 0), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\n\r\nX", 0), Some(26));
    }

    #[test]
    fn leading_empty_lines_are_not_the_end() {
        assert_eq!(head_end(b"\r\n\r\n", 0), None);
        assert_eq!(head_end(b"\r\nGET / HTTP/1.1\r\n\r\n", 0), Some(20));
    }
}
