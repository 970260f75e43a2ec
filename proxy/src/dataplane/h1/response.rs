//! A backend's response head, parsed once into the [`ResponseHead`] the
//! client gets, with what the proxy must know of it: how its body is
//! framed (RFC 9112 §6.3) and whether the connection may carry another
//! request. Hop-by-hop fields are left out as it is parsed, so nothing is
//! cloned or edited for them afterwards.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::{StatusCode, Version};

use super::response_head::{self, Field, ResponseHead};
use super::wire::length_digits;

use crate::hop_by_hop;

/// Headers a response head may have; more is a bad gateway (pingora's
/// limit too).
const MAX_HEADERS: usize = 256;

/// How the body after a response head ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body: a 1xx, 204 or 304, or the answer to a HEAD.
    Empty,
    Length(u64),
    Chunked,
    /// The body runs until the backend closes: no length given, or a
    /// transfer coding other than chunked last (RFC 9112 §6.3 item 7).
    UntilClose,
}

/// A parsed response head and what it means for the exchange.
pub(crate) struct Parsed {
    pub head: ResponseHead,
    pub framing: Framing,
    /// The backend lets the connection carry another request after this
    /// response.
    pub keep_alive: bool,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum HeadError {
    #[error("bad response head: {0}")]
    Syntax(#[from] httparse::Error),
    #[error("the response's Content-Length is not one number")]
    BadLength,
    #[error("bad response head: {0}")]
    Header(String),
}

/// What the fields say about framing and the connection.
#[derive(Default)]
struct Fields<'h> {
    close: bool,
    keep_alive: bool,
    transfer_encoding: bool,
    chunked_last: bool,
    length: Option<u64>,
    /// Content-Length values seen, counting each in a list.
    length_tokens: usize,
    bad_length: bool,
    /// `Connection` values that name other headers, to be left out.
    connection: Vec<&'h [u8]>,
}

/// Parses the response head at the start of `buf` and takes it off:
/// `Ok(None)` when it is not whole yet (`buf` untouched).
/// `request_was_head`: the request was a HEAD, so the response has no body
/// whatever it says.
pub(crate) fn parse(
    buf: &mut BytesMut,
    request_was_head: bool,
) -> Result<Option<Parsed>, HeadError> {
    // Left uninitialised: filling 256 empty headers (8 KiB) per response
    // cost more than parsing a small head.
    let mut headers = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let mut config = httparse::ParserConfig::default();
    // As pingora's client, which backends were proxied through before:
    // tolerated in responses (never in requests).
    config.allow_spaces_after_header_name_in_responses(true);
    config.allow_obsolete_multiline_headers_in_responses(true);
    let head_len =
        match config.parse_response_with_uninit_headers(&mut response, buf, &mut headers)? {
            httparse::Status::Complete(len) => len,
            httparse::Status::Partial => return Ok(None),
        };
    let status = response.code.unwrap_or_default();
    let version = if response.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let base = buf.as_ptr() as usize;
    let offsets = |s: &[u8]| (s.as_ptr() as usize - base, s.len());

    // Everything is decided while httparse's fields still borrow `buf`;
    // what the client gets is kept as offsets into the head.
    let mut fields = Fields::default();
    for h in response.headers.iter() {
        read_field(&mut fields, h.name.as_bytes(), h.value);
    }
    let framing = framing(status, request_was_head, &fields)?;
    let keep_alive = framing != Framing::UntilClose
        && match version {
            Version::HTTP_10 => fields.keep_alive && !fields.close && !fields.transfer_encoding,
            _ => !fields.close,
        };

    let mut kept = Vec::with_capacity(response.headers.len());
    let mut length_written = false;
    for h in response.headers.iter() {
        let name = h.name.as_bytes();
        // A 101 goes as the backend wrote it: it is the upgrade itself.
        if status != 101 && hop_by_hop::is_hop_by_hop_field(name, &fields.connection, false) {
            continue;
        }
        // Transfer-Encoding wins over Content-Length, which must not reach
        // the client beside it (RFC 9112 §6.3 item 3).
        if name.eq_ignore_ascii_case(b"content-length") {
            if fields.transfer_encoding || length_written {
                continue;
            }
            if fields.length_tokens > 1 {
                // Identical duplicates go on as the one length they are
                // (its first token), so no reader after us has to
                // reconcile them.
                let first = h.value.split(|&b| b == b',').next().unwrap_or_default();
                kept.push(Field::new(offsets(name), offsets(first.trim_ascii())));
                length_written = true;
                continue;
            }
        }
        kept.push(Field::new(offsets(name), offsets(h.value)));
    }
    let reason = response.reason.map(|r| offsets(r.as_bytes()));
    let transfer_encoding = fields.transfer_encoding;
    let chunked = fields.chunked_last;
    let length = fields.length;
    // The head's bytes are frozen and shared by the fields the client
    // gets: no copy per field.
    let head = buf.split_to(head_len).freeze();
    let status = StatusCode::from_u16(status).map_err(|e| HeadError::Header(e.to_string()))?;
    let body = response_head::BodyFacts {
        transfer_encoding,
        chunked,
        content_length: if transfer_encoding { None } else { length },
    };
    let head = ResponseHead::new((status, version), head, reason, kept, body);
    Ok(Some(Parsed {
        head,
        framing,
        keep_alive,
    }))
}

fn read_field<'h>(fields: &mut Fields<'h>, name: &[u8], value: &'h [u8]) {
    if name.eq_ignore_ascii_case(b"connection") {
        for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            fields.close |= token.eq_ignore_ascii_case(b"close");
            fields.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
        }
        if hop_by_hop::connection_names_others(value) {
            fields.connection.push(value);
        }
    } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
        fields.transfer_encoding = true;
        // The last coding of the last header decides (RFC 9112 §6.3).
        let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
        fields.chunked_last = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
    } else if name.eq_ignore_ascii_case(b"content-length") {
        // Identical duplicates, and identical values in a list, are one
        // length (RFC 9110 §8.6); anything else is ambiguous.
        for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            fields.length_tokens += 1;
            match (length_digits(token), fields.length) {
                (Some(n), None) => fields.length = Some(n),
                (Some(n), Some(seen)) if n == seen => {}
                _ => fields.bad_length = true,
            }
        }
    }
}

/// How the body ends (RFC 9112 §6.3).
fn framing(status: u16, request_was_head: bool, fields: &Fields) -> Result<Framing, HeadError> {
    Ok(
        if request_was_head || (100..200).contains(&status) || status == 204 || status == 304 {
            Framing::Empty
        } else if fields.transfer_encoding {
            if fields.chunked_last {
                Framing::Chunked
            } else {
                Framing::UntilClose
            }
        } else if fields.bad_length {
            return Err(HeadError::BadLength);
        } else if let Some(n) = fields.length {
            Framing::Length(n)
        } else {
            Framing::UntilClose
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(head: &str, request_was_head: bool) -> Result<Option<Parsed>, HeadError> {
        parse(&mut BytesMut::from(head.as_bytes()), request_was_head)
    }

    /// The fields as the client gets them.
    fn lines(head: &ResponseHead) -> String {
        let mut out = String::new();
        head.for_each_field(|name, value| {
            out.push_str(&format!(
                "{}: {}\r\n",
                String::from_utf8_lossy(name),
                String::from_utf8_lossy(value)
            ))
        });
        out
    }

    fn framing_of(head: &str) -> Framing {
        parsed(head, false).unwrap().unwrap().framing
    }

    #[test]
    fn the_framing_follows_rfc_9112() {
        assert_eq!(
            framing_of("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
            Framing::Length(5)
        );
        assert_eq!(
            framing_of("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n"),
            Framing::Length(5)
        );
        let repeated = "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n";
        let head = parsed(repeated, false).unwrap().unwrap().head;
        assert_eq!(lines(&head), "Content-Length: 5\r\n", "one length");
        assert_eq!(
            framing_of(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 5\r\n\r\n"
            ),
            Framing::Chunked
        );
        assert_eq!(
            framing_of("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
            Framing::UntilClose
        );
        assert_eq!(framing_of("HTTP/1.1 200 OK\r\n\r\n"), Framing::UntilClose);
        for status in [
            "100 Continue",
            "103 Early Hints",
            "204 No Content",
            "304 Not Modified",
        ] {
            assert_eq!(
                framing_of(&format!("HTTP/1.1 {status}\r\nContent-Length: 5\r\n\r\n")),
                Framing::Empty,
                "{status}"
            );
        }
        let head = parsed("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(head.framing, Framing::Empty);
    }

    #[test]
    fn an_ambiguous_length_is_an_error() {
        for bad in ["5, 6", "+5", " ", "5x", "-1", "99999999999999999999"] {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {bad}\r\n\r\n");
            assert!(
                matches!(parsed(&head, false), Err(HeadError::BadLength)),
                "{bad:?}"
            );
        }
        let twice = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n";
        assert!(matches!(parsed(twice, false), Err(HeadError::BadLength)));
    }

    #[test]
    fn keep_alive_is_what_the_version_and_connection_say() {
        let keep = |head: &str| parsed(head, false).unwrap().unwrap().keep_alive;
        assert!(keep("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(!keep(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!keep("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(keep(
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!keep("HTTP/1.1 200 OK\r\n\r\n"), "a body until close");
    }

    #[test]
    fn hop_by_hop_headers_are_left_out_in_their_case_and_order() {
        let head = "HTTP/1.1 200 Fine\r\nX-First: 1\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\nKeep-Alive: timeout=5\r\nUpgrade: h2c\r\nContent-Length: 0\r\nx-last: 2\r\n\r\nBODY";
        let mut buf = BytesMut::from(head.as_bytes());
        let parsed = parse(&mut buf, false).unwrap().unwrap();
        assert_eq!(&buf[..], b"BODY", "the head is taken off, the body stays");
        assert_eq!(
            lines(&parsed.head),
            "X-First: 1\r\nContent-Length: 0\r\nx-last: 2\r\n"
        );
        assert_eq!(parsed.head.reason(), Some(&b"Fine"[..]));
        let header = parsed.head.to_response_header().unwrap();
        assert_eq!(header.headers.len(), 3);
        assert_eq!(header.get_reason_phrase(), Some("Fine"));
    }

    #[test]
    fn a_folded_header_value_is_one_line() {
        let head = "HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n";
        let parsed = parsed(head, false).unwrap().unwrap();
        let header = parsed.head.to_response_header().unwrap();
        assert_eq!(
            lines(&parsed.head),
            "X-Folded: a b\r\nContent-Length: 0\r\n"
        );
        let value = header.headers["x-folded"].as_bytes();
        assert!(
            !value.contains(&b'\r') && !value.contains(&b'\n'),
            "{value:?}"
        );
        assert!(
            value.starts_with(b"a") && value.ends_with(b"b"),
            "{value:?}"
        );
    }

    #[test]
    fn a_101_is_left_whole_and_a_partial_head_waits() {
        let head =
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
        let parsed_101 = parsed(head, false).unwrap().unwrap();
        assert_eq!(
            lines(&parsed_101.head),
            "Connection: Upgrade\r\nUpgrade: websocket\r\n"
        );
        for cut in 0..head.len() {
            let mut buf = BytesMut::from(&head.as_bytes()[..cut]);
            assert!(parse(&mut buf, false).unwrap().is_none(), "cut at {cut}");
            assert_eq!(buf.len(), cut);
        }
        assert!(parsed("HTTP/1.1 200 OK\r\nBad Header\r\n\r\n", false).is_err());
    }
}
