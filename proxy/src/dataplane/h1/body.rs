//! A message body as its head frames it, taken off the front of the bytes
//! read so far — the same for a request body (`downstream.rs`) and a
//! response body (`upstream.rs`).

use bytes::{Buf, Bytes, BytesMut};

use super::chunked::{ChunkError, ChunkedDecoder, Step};

/// Where a body stands.
#[derive(Debug)]
pub(crate) enum Body {
    /// This many bytes are left (never 0: that is `Done`).
    Length(u64),
    Chunked(ChunkedDecoder),
    /// Until the peer closes (also an upgraded connection's bytes).
    UntilClose,
    Done,
}

/// What [`Body::take`] found.
#[derive(Debug)]
pub(crate) enum Piece {
    Data(Bytes),
    /// The body ended; what is left in the buffer is not part of it.
    End,
    /// Everything in the buffer was used (or it was empty): read more.
    NeedMore,
}

impl Body {
    /// A body of `length` bytes.
    pub(crate) fn of_length(length: u64) -> Body {
        if length == 0 {
            Body::Done
        } else {
            Body::Length(length)
        }
    }

    pub(crate) fn chunked() -> Body {
        Body::Chunked(ChunkedDecoder::default())
    }

    /// Takes the body's next piece off the front of `buf`.
    pub(crate) fn take(&mut self, buf: &mut BytesMut) -> Result<Piece, ChunkError> {
        match self {
            Body::Done => Ok(Piece::End),
            _ if buf.is_empty() => Ok(Piece::NeedMore),
            Body::Length(left) => {
                let take = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= take as u64;
                if *left == 0 {
                    *self = Body::Done;
                }
                Ok(Piece::Data(buf.split_to(take).freeze()))
            }
            Body::Chunked(decoder) => match decoder.decode(buf)? {
                Step::Data { skip, len } => {
                    buf.advance(skip);
                    Ok(Piece::Data(buf.split_to(len).freeze()))
                }
                Step::NeedMore { consumed } => {
                    buf.advance(consumed);
                    Ok(Piece::NeedMore)
                }
                Step::Done { consumed } => {
                    buf.advance(consumed);
                    *self = Body::Done;
                    Ok(Piece::End)
                }
            },
            Body::UntilClose => Ok(Piece::Data(buf.split().freeze())),
        }
    }

    /// The peer closed: the end of a body that runs until then, else
    /// `false` (the body was cut short).
    pub(crate) fn closed(&mut self) -> bool {
        if matches!(self, Body::UntilClose | Body::Done) {
            *self = Body::Done;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in two reads cut at `cut`: the data, whether the
    /// body ended, and what was left after its end.
    fn all(body: &mut Body, input: &[u8], cut: usize) -> (Vec<u8>, bool, Vec<u8>) {
        let mut data = Vec::new();
        let mut buf = BytesMut::new();
        let mut ended = false;
        for part in [&input[..cut], &input[cut..]] {
            buf.extend_from_slice(part);
            while !ended {
                match body.take(&mut buf).unwrap() {
                    Piece::Data(bytes) => data.extend_from_slice(&bytes),
                    Piece::End => ended = true,
                    Piece::NeedMore => break,
                }
            }
        }
        (data, ended, buf.to_vec())
    }

    #[test]
    fn every_framing_ends_exactly_and_leaves_what_follows() {
        let input = b"5\r\nhello\r\n0\r\n\r\nNEXT";
        for cut in 0..=input.len() {
            let (data, ended, rest) = all(&mut Body::chunked(), input, cut);
            assert_eq!(
                (&data[..], ended, &rest[..]),
                (&b"hello"[..], true, &b"NEXT"[..])
            );
            let (data, ended, rest) = all(&mut Body::of_length(5), b"helloNEXT", cut.min(9));
            assert_eq!(
                (&data[..], ended, &rest[..]),
                (&b"hello"[..], true, &b"NEXT"[..])
            );
        }
        let (data, ended, _) = all(&mut Body::UntilClose, b"all of it", 3);
        assert_eq!((&data[..], ended), (&b"all of it"[..], false));
        assert!(Body::UntilClose.closed());
        assert!(!Body::of_length(3).closed());
        assert!(matches!(Body::of_length(0), Body::Done));
    }
}
