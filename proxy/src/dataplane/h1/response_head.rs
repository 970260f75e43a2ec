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

/// Where a field's name and value lie in the head's bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    name: (u32, u32),
    value: (u32, u32),
}

impl Field {
    /// A field whose name and value are these ranges of the head (a head
    /// is far below 4 GiB: `head.rs` bounds it).
    pub(crate) fn new(name: (usize, usize), value: (usize, usize)) -> Field {
        Field {
            name: span(name),
            value: span(value),
        }
    }
}

fn span((at, len): (usize, usize)) -> (u32, u32) {
    (at as u32, len as u32)
}

/// A response head, its fields as they go to the client.
#[derive(Debug)]
pub(crate) struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    bytes: Bytes,
    reason: Option<(u32, u32)>,
    fields: Vec<Field>,
    /// It has a Transfer-Encoding.
    pub transfer_encoding: bool,
    /// Its last transfer coding is chunked.
    pub chunked: bool,
    /// Its length, when it gave one (and no transfer coding).
    pub content_length: Option<u64>,
}

/// What the head says about its body, beside its fields.
pub(crate) struct BodyFacts {
    pub transfer_encoding: bool,
    pub chunked: bool,
    pub content_length: Option<u64>,
}

impl ResponseHead {
    /// A head whose `reason` and `fields` are ranges of `bytes`.
    pub(crate) fn new(
        (status, version): (StatusCode, Version),
        bytes: Bytes,
        reason: Option<(usize, usize)>,
        fields: Vec<Field>,
        body: BodyFacts,
    ) -> ResponseHead {
        ResponseHead {
            status,
            version,
            bytes,
            reason: reason.map(span),
            fields,
            transfer_encoding: body.transfer_encoding,
            chunked: body.chunked,
            content_length: body.content_length,
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
            let value = self.slice(field.value);
            if value.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0)) {
                each(
                    self.slice(field.name),
                    self.one_line(field.value).as_bytes(),
                );
            } else {
                each(self.slice(field.name), value);
            }
        }
    }

    /// The value at `span` as a header value, obs-folds made spaces.
    fn one_line(&self, (at, len): (u32, u32)) -> HeaderValue {
        header_value_from_raw(self.bytes.slice(at as usize..(at + len) as usize))
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
            header.append_header(name, self.one_line(field.value))?;
        }
        Ok(Box::new(header))
    }
}
