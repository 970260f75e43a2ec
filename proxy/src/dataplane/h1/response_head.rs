//! A backend's response head as it arrived: its bytes, and where each field
//! the client gets lies in them (hop-by-hop ones left out). An HTTP/1
//! client gets those bytes as they are, with ours after them; only an
//! HTTP/2 client's session needs pingora's header, built from them then.
//! Building that header for every response cost two header maps, their
//! case-preserving twins, a box and a name per custom field.

use bytes::Bytes;
use http::header::HeaderValue;
use http::{StatusCode, Version};
use pingora::http::{header_value_from_raw, ResponseHeader};

/// Where a field lies in the head's bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    name: (u32, u32),
    value: Value,
}

#[derive(Debug, Clone, Copy)]
enum Value {
    Raw(u32, u32),
    /// A Content-Length the backend repeated (identically): it goes on as
    /// the one number it is.
    Length(u64),
}

impl Field {
    /// A field whose name and value are these ranges of the head.
    pub(crate) fn raw(name: (usize, usize), value: (usize, usize)) -> Field {
        Field {
            name: (name.0 as u32, name.1 as u32),
            value: Value::Raw(value.0 as u32, value.1 as u32),
        }
    }

    /// A Content-Length of `length` under the name at `name`.
    pub(crate) fn length(name: (usize, usize), length: u64) -> Field {
        Field {
            name: (name.0 as u32, name.1 as u32),
            value: Value::Length(length),
        }
    }
}

/// A response head, its fields as they go to the client.
#[derive(Debug)]
pub(crate) struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    bytes: Bytes,
    reason: Option<(u32, u32)>,
    fields: Vec<Field>,
    /// It has a Transfer-Encoding, and chunked is the last coding.
    pub transfer_encoding: bool,
    pub chunked: bool,
    /// Its length, when it gave one (and no transfer coding).
    pub content_length: Option<u64>,
}

impl ResponseHead {
    /// Ranges are into `bytes` (a head is far below 4 GiB: `head.rs`
    /// bounds it).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        status: StatusCode,
        version: Version,
        bytes: Bytes,
        reason: Option<(usize, usize)>,
        fields: Vec<Field>,
        transfer_encoding: bool,
        chunked: bool,
        content_length: Option<u64>,
    ) -> ResponseHead {
        ResponseHead {
            status,
            version,
            bytes,
            reason: reason.map(|(at, len)| (at as u32, len as u32)),
            fields,
            transfer_encoding,
            chunked,
            content_length,
        }
    }

    fn slice(&self, (at, len): (u32, u32)) -> &[u8] {
        &self.bytes[at as usize..(at + len) as usize]
    }

    /// The reason phrase the backend gave, if any.
    pub(crate) fn reason(&self) -> Option<&[u8]> {
        self.reason.map(|r| self.slice(r))
    }

    /// It has a field of this name (any case).
    pub(crate) fn has(&self, name: &[u8]) -> bool {
        self.fields
            .iter()
            .any(|f| self.slice(f.name).eq_ignore_ascii_case(name))
    }

    /// Each field, in the backend's order and case, its value on one line
    /// (an obs-fold becomes spaces, RFC 9112 §5.2).
    pub(crate) fn for_each_field(&self, mut each: impl FnMut(&[u8], &[u8])) {
        for field in &self.fields {
            let name = self.slice(field.name);
            match field.value {
                Value::Raw(at, len) => {
                    let value = self.slice((at, len));
                    if value.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0)) {
                        let at = at as usize;
                        let one_line =
                            header_value_from_raw(self.bytes.slice(at..at + len as usize));
                        each(name, one_line.as_bytes());
                    } else {
                        each(name, value);
                    }
                }
                Value::Length(length) => {
                    let digits = itoa_buf(length);
                    each(name, digits.as_slice());
                }
            }
        }
    }

    /// pingora's header for the same head: what an HTTP/2 client's session
    /// writes.
    pub(crate) fn to_response_header(&self) -> pingora::Result<Box<ResponseHeader>> {
        let mut header = ResponseHeader::build(self.status, Some(self.fields.len() + 4))?;
        header.set_version(self.version);
        if let Some(reason) = self.reason() {
            header.set_reason_phrase(std::str::from_utf8(reason).ok())?;
        }
        for field in &self.fields {
            let (at, len) = field.name;
            let name = self.bytes.slice(at as usize..(at + len) as usize);
            let value = match field.value {
                Value::Raw(at, len) => {
                    header_value_from_raw(self.bytes.slice(at as usize..(at + len) as usize))
                }
                Value::Length(length) => HeaderValue::from(length),
            };
            header.append_header(name, value)?;
        }
        Ok(Box::new(header))
    }
}

/// `n` in decimal, on the stack.
struct Digits {
    buf: [u8; 20],
    start: usize,
}

impl Digits {
    fn as_slice(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

fn itoa_buf(mut n: u64) -> Digits {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    Digits { buf, start: at }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_in_decimal() {
        for n in [0, 7, 10, 16384, u64::MAX] {
            assert_eq!(itoa_buf(n).as_slice(), n.to_string().as_bytes());
        }
    }
}
