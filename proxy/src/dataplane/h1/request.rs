//! A client's request head, parsed from the bytes `head.rs` read, into the
//! `RequestHeader` the rest of the data plane routes by. It keeps what
//! pingora's server session did, so nothing a client could send is read
//! differently than before:
//!
//! - a request line httparse refuses for a space or a `<`, `>`, `"` or
//!   control byte in its target gets those bytes percent-encoded and is
//!   parsed again (browsers and scripts send such targets);
//! - the authority is checked by pingora's own `validate_request_authority`;
//! - Transfer-Encoding wins over Content-Length, which is dropped, and the
//!   connection then closes after the answer (RFC 9112 §6.1);
//!   Transfer-Encoding on HTTP/1.0, or with a final coding other than
//!   chunked, is refused; Content-Length must be one number (identical
//!   duplicates are one);
//! - keep-alive: `Connection: keep-alive` wins, then `close`, then the
//!   version's default (HTTP/1.1 on, HTTP/1.0 off).

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::Version;
use pingora::http::{header_value_from_raw, RequestHeader};
use pingora::protocols::http::authority::validate_request_authority;

use super::wire::{agreed_length, tokens};

/// Headers a request head may have (pingora's limit too).
const MAX_HEADERS: usize = 256;

/// How the request's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestBody {
    /// No body (no length, or a length of 0): a request never runs until
    /// the connection closes (RFC 9112 §6.3).
    None,
    Length(u64),
    Chunked,
}

/// A parsed request head and what it means for the connection.
pub(crate) struct ParsedRequest {
    pub header: Box<RequestHeader>,
    pub body: RequestBody,
    /// The client lets the connection carry another request.
    pub keep_alive: bool,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestError {
    #[error("bad request head: {0}")]
    Syntax(#[from] httparse::Error),
    #[error("bad request head: {0}")]
    Invalid(String),
}

/// Parses the request head at the start of `buf` and takes it off (the
/// body, or pipelined requests, stay): `Ok(None)` when it is not whole.
pub(crate) fn parse(buf: &mut BytesMut) -> Result<Option<ParsedRequest>, RequestError> {
    match parse_as_is(buf) {
        Err(e @ RequestError::Syntax(httparse::Error::Token | httparse::Error::Version)) => {
            let (Some(mut escaped), Some(end)) = (escape_target(buf), head_len(buf)) else {
                return Err(e);
            };
            let parsed = parse_as_is(&mut escaped)?;
            if parsed.is_some() {
                // The escaped head stands for the original, which comes
                // off; what followed it (body, pipelined bytes) stays.
                buf.advance(end);
            }
            Ok(parsed)
        }
        other => other,
    }
}

fn parse_as_is(buf: &mut BytesMut) -> Result<Option<ParsedRequest>, RequestError> {
    // Left uninitialised: filling 256 empty headers (8 KiB) per request
    // cost more than parsing a small head.
    let mut headers = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let head_len = match request.parse_with_uninit_headers(buf, &mut headers)? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return Ok(None),
    };
    let version = match request.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut header = Box::new(
        RequestHeader::build(
            request.method.unwrap_or_default(),
            request.path.unwrap_or_default().as_bytes(),
            Some(request.headers.len()),
        )
        .map_err(|e| RequestError::Invalid(e.to_string()))?,
    );
    header.set_version(version);
    // Offsets of each name and value, so that they can be slices of the
    // frozen head once httparse's borrow of `buf` ends.
    let base = buf.as_ptr() as usize;
    let offset = |s: &[u8]| s.as_ptr() as usize - base;
    let spans: Vec<FieldSpan> = request
        .headers
        .iter()
        .map(|h| FieldSpan {
            name: offset(h.name.as_bytes()),
            name_len: h.name.len(),
            value: offset(h.value),
            value_len: h.value.len(),
        })
        .collect();
    let head: Bytes = buf.split_to(head_len).freeze();
    for span in &spans {
        header
            .append_header(
                head.slice(span.name..span.name + span.name_len),
                header_value_from_raw(head.slice(span.value..span.value + span.value_len)),
            )
            .map_err(|e| RequestError::Invalid(e.to_string()))?;
    }
    finish(header).map(Some)
}

/// Where one field's name and value lie in the head.
struct FieldSpan {
    name: usize,
    name_len: usize,
    value: usize,
    value_len: usize,
}

/// Framing, keep-alive and validation of a built header.
fn finish(mut header: Box<RequestHeader>) -> Result<ParsedRequest, RequestError> {
    let invalid = |why: &str| RequestError::Invalid(why.to_string());
    let headers = &header.headers;
    let transfer_encoding = headers.contains_key(http::header::TRANSFER_ENCODING);
    let both = transfer_encoding && headers.contains_key(http::header::CONTENT_LENGTH);
    let mut keep_alive = match connection_keep_alive(headers) {
        Some(keep) => keep,
        None => header.version == Version::HTTP_11,
    };
    if both {
        header.remove_header(&http::header::CONTENT_LENGTH);
        keep_alive = false;
    }
    validate_request_authority(&header).map_err(|e| RequestError::Invalid(e.to_string()))?;
    let headers = &header.headers;
    let body = if transfer_encoding {
        if header.version == Version::HTTP_10 {
            return Err(invalid("Transfer-Encoding on an HTTP/1.0 request"));
        }
        // Chunked once, and last (RFC 9112 §6.1, §6.3): the body is
        // chunked up to the backend once, whatever else was claimed.
        let chunked = |c: &[u8]| c.eq_ignore_ascii_case(b"chunked");
        let codings = || tokens(headers, http::header::TRANSFER_ENCODING);
        if !codings().last().is_some_and(chunked) {
            return Err(invalid("a final Transfer-Encoding other than chunked"));
        }
        if codings().filter(|c| chunked(c)).count() > 1 {
            return Err(invalid("Transfer-Encoding applies chunked more than once"));
        }
        RequestBody::Chunked
    } else {
        match agreed_length(headers) {
            Ok(Some(0) | None) => RequestBody::None,
            Ok(Some(n)) => RequestBody::Length(n),
            Err(()) => return Err(invalid("Content-Length values that are not one number")),
        }
    };
    Ok(ParsedRequest {
        header,
        body,
        keep_alive,
    })
}

/// What the `Connection` headers say: `close` in any of them wins (RFC
/// 9112 §9.3; pingora's session read only the first and let `keep-alive`
/// win), then `keep-alive`; `None` when they say neither.
fn connection_keep_alive(headers: &pingora::http::HMap) -> Option<bool> {
    let mut keep_alive = None;
    for token in tokens(headers, http::header::CONNECTION) {
        if token.eq_ignore_ascii_case(b"close") {
            return Some(false);
        }
        if token.eq_ignore_ascii_case(b"keep-alive") {
            keep_alive = Some(true);
        }
    }
    keep_alive
}

/// Where the head ends, if it does (CRLF CRLF, or bare LFs).
fn head_len(buf: &[u8]) -> Option<usize> {
    crate::dataplane::head::head_end(buf, 0)
}

/// The head with the bytes of its target that httparse refuses (space,
/// `<`, `>`, `"`, controls) percent-encoded; `None` when it is not a
/// request line of the form `METHOD TARGET HTTP/x[.y]`, or nothing changes.
fn escape_target(buf: &[u8]) -> Option<BytesMut> {
    let end = head_len(buf)?;
    let line_end = buf[..end].iter().position(|&b| b == b'\n')?;
    let line = &buf[..line_end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let method_end = line.iter().position(|&b| b == b' ')?;
    if method_end == 0
        || !line[..method_end]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
    {
        return None;
    }
    // The version is the last " HTTP/d[.d]" on the line; the target is
    // everything between.
    let version_at = line.windows(6).rposition(|w| w == b" HTTP/")?;
    if version_at <= method_end + 1 {
        return None;
    }
    let version = &line[version_at + 6..];
    let version_ok = matches!(version, [d] if d.is_ascii_digit())
        || matches!(version, [d, b'.', e] if d.is_ascii_digit() && e.is_ascii_digit());
    if !version_ok {
        return None;
    }
    let target = &line[method_end + 1..version_at];
    let mut escaped = BytesMut::with_capacity(buf.len() + 32);
    escaped.extend_from_slice(&buf[..method_end + 1]);
    let mut changed = false;
    for &b in target {
        if b <= 0x20 || b >= 0x7f || matches!(b, b'<' | b'>' | b'"') {
            escaped.extend_from_slice(format!("%{b:02X}").as_bytes());
            changed = true;
        } else {
            escaped.extend_from_slice(&[b]);
        }
    }
    if !changed {
        return None;
    }
    escaped.extend_from_slice(&buf[version_at..end]);
    Some(escaped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(head: &str) -> Result<Option<ParsedRequest>, RequestError> {
        parse(&mut BytesMut::from(head.as_bytes()))
    }

    #[test]
    fn framing_and_keep_alive_follow_rfc_9112() {
        let p = parsed(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(p.body, RequestBody::Length(5));
        assert!(p.keep_alive);
        let p = parsed(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(p.body, RequestBody::Chunked);
        assert!(!p.keep_alive, "TE with CL closes after the answer");
        assert!(p.header.headers.get("content-length").is_none());
        let p = parsed("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert_eq!(p.body, RequestBody::None);
        assert!(!p.keep_alive);
        let p = parsed("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(p.keep_alive);
        let p = parsed("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!p.keep_alive);
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        for bad in [
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        ] {
            assert!(parsed(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn an_unescaped_target_is_escaped_and_what_follows_stays() {
        let mut buf = BytesMut::from(&b"GET /a b\"c HTTP/1.1\r\nHost: a\r\n\r\nNEXT"[..]);
        let p = parse(&mut buf).unwrap().unwrap();
        assert_eq!(p.header.raw_path(), b"/a%20b%22c");
        assert_eq!(&buf[..], b"NEXT");
    }

    #[test]
    fn parity_details_with_pingoras_server_session() {
        // close wins over keep-alive, in any Connection header (RFC 9112
        // §9.3; pingora's session let keep-alive win).
        for head in [
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: close, keep-alive\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: foo\r\nConnection: close\r\n\r\n",
            "GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
        ] {
            assert!(!parsed(head).unwrap().unwrap().keep_alive, "{head:?}");
        }
        // An absolute-form target must agree with Host.
        assert!(parsed("GET http://a.test/ HTTP/1.1\r\nHost: b.test\r\n\r\n").is_err());
        let p = parsed("GET http://a.test/x HTTP/1.1\r\nHost: a.test\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(p.header.uri.path(), "/x");
        // A control byte in the target is escaped too; one elsewhere is not
        // forgiven.
        let p = parsed("GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(p.header.raw_path(), b"/a%01b");
        assert!(parsed("GET / HTTP/1.1\r\nHost: a\x01\r\n\r\n").is_err());
        assert!(parsed("GET / HTTP/2.0\r\nHost: a\r\n\r\n").is_err());
    }

    #[test]
    fn a_partial_head_waits_and_leaves_the_buffer() {
        let head = "GET /x HTTP/1.1\r\nHost: a\r\n\r\n";
        for cut in 0..head.len() {
            let mut buf = BytesMut::from(&head.as_bytes()[..cut]);
            assert!(parse(&mut buf).unwrap().is_none(), "cut at {cut}");
            assert_eq!(buf.len(), cut);
        }
    }
}
