//! What both sides of the codec share on the wire: I/O within a time
//! limit, its failures as the pingora errors the exchange sorts by, chunk
//! size lines, and how list-valued fields and lengths are read.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use http::header::HeaderName;
use pingora::http::HMap;
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
        Some(limit) => match timed(limit, io).await {
            Some(done) => done,
            None => return Err(Error::explain(timed_out, format!("{what} (timeout)"))),
        },
        None => io.await,
    };
    done.map_err(|e| Error::because(failed, what.to_string(), e))
}

/// `work`'s output, or `None` when it takes longer than `limit`. Work that
/// is done at its first poll — most reads and writes on a healthy
/// connection — never arms a timer: no clock read, no timer-wheel entry.
/// The limit counts from the second poll, a few microseconds late.
pub(crate) async fn timed<F: Future>(limit: Duration, work: F) -> Option<F::Output> {
    let mut work = pin!(work);
    if let Poll::Ready(done) = poll_fn(|cx| Poll::Ready(work.as_mut().poll(cx))).await {
        return Some(done);
    }
    tokio::time::timeout(limit, work).await.ok()
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

/// The comma-separated tokens of every `name` field, in order, trimmed
/// (RFC 9110 §5.6.1: two lines of a list are one list).
pub(crate) fn tokens(headers: &HMap, name: HeaderName) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(name)
        .into_iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
}

/// A Content-Length token: digits only (no sign, no space), at most 19.
pub(crate) fn length_digits(token: &[u8]) -> Option<u64> {
    if token.is_empty() || token.len() > 19 || !token.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(token).ok()?.parse().ok()
}

/// The message's length when every Content-Length value, in every field
/// and list, is the same number (RFC 9110 §8.6); `Ok(None)` without one,
/// `Err` when they are not one number.
pub(crate) fn agreed_length(headers: &HMap) -> std::result::Result<Option<u64>, ()> {
    let mut length = None;
    for token in tokens(headers, http::header::CONTENT_LENGTH) {
        match (length_digits(token), length) {
            (Some(n), Some(seen)) if n != seen => return Err(()),
            (Some(n), _) => length = Some(n),
            (None, _) => return Err(()),
        }
    }
    Ok(length)
}

/// Writes the IP's text form into `buf` without a heap string. IPv4, what
/// nearly every client is, is written digit by digit: `Display` through
/// `fmt` cost more than the rest of the `X-Forwarded-For` line.
pub(crate) fn format_ip(ip: std::net::IpAddr, buf: &mut [u8; 64]) -> &[u8] {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[len] = b'.';
                    len += 1;
                }
                if octet >= 100 {
                    buf[len] = b'0' + octet / 100;
                    len += 1;
                }
                if octet >= 10 {
                    buf[len] = b'0' + octet / 10 % 10;
                    len += 1;
                }
                buf[len] = b'0' + octet % 10;
                len += 1;
            }
            &buf[..len]
        }
        std::net::IpAddr::V6(_) => {
            use std::io::Write;
            let mut cursor = std::io::Cursor::new(&mut buf[..]);
            let _ = write!(cursor, "{ip}");
            let len = cursor.position() as usize;
            &buf[..len]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_text_is_what_display_writes_and_fits_the_stack_buffer() {
        let mut buf = [0u8; 64];
        let v6: std::net::IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
            .parse()
            .unwrap();
        assert_eq!(format_ip(v6, &mut buf), v6.to_string().as_bytes());
        // Every octet value in every position, against std's own text.
        for n in 0..=255u8 {
            for octets in [[n, 0, 0, 0], [0, n, 0, 0], [9, 99, n, 100], [255, 10, 1, n]] {
                let ip = std::net::IpAddr::from(octets);
                assert_eq!(format_ip(ip, &mut buf), ip.to_string().as_bytes());
            }
        }
    }

    #[test]
    fn lengths_agree_across_lines_and_lists_or_are_refused() {
        let of = |values: &[&str]| {
            let mut headers = HMap::new();
            for v in values {
                headers.append(http::header::CONTENT_LENGTH, v.parse().unwrap());
            }
            agreed_length(&headers)
        };
        assert_eq!(of(&[]), Ok(None));
        assert_eq!(of(&["5"]), Ok(Some(5)));
        assert_eq!(of(&["5, 5", "05"]), Ok(Some(5)));
        for bad in [
            &["5, 6"][..],
            &["+5"],
            &["5", "6"],
            &[""],
            &["99999999999999999999"],
        ] {
            assert_eq!(of(bad), Err(()), "{bad:?}");
        }
    }
}
