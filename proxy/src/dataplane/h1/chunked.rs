//! Decoding a chunked body (RFC 9112 §7.1) from whatever pieces the
//! network delivers it in: a state machine fed byte slices, which keeps
//! its place between them, so a read may end anywhere — inside a size
//! line, an extension, a chunk's CRLF, the last chunk or a trailer.
//!
//! It is strict where a lenient reading would let two parties disagree on
//! where the body ends: lines end in CRLF, a size is hex digits only (below
//! 2^60, leading zeros allowed), an extension starts with `;` (after
//! optional whitespace) and holds no control byte, and the size line and
//! the trailer section are bounded.
//! Trailers are read and dropped.

/// The longest chunk extension accepted, per chunk.
const MAX_EXTENSION: usize = 4 * 1024;
/// The longest trailer section accepted.
const MAX_TRAILERS: usize = 16 * 1024;
/// The largest chunk size accepted, so that the size never overflows.
const MAX_SIZE: u64 = 1 << 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the size's hex digits.
    Size,
    /// Whitespace after the size, before `;` or the CR.
    SizeWs,
    /// Past the size, before the CR that ends its line.
    Extension,
    /// The size line's CR was read; its LF comes next.
    SizeLf,
    /// Inside a chunk's data.
    Data,
    /// A chunk's data ended; its CR comes next.
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the empty line that ends the
    /// body).
    TrailerStart,
    TrailerLine,
    /// A trailer line's CR was read; `empty` when the line was empty.
    TrailerLf {
        empty: bool,
    },
    Done,
}

/// What one call to [`ChunkedDecoder::decode`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// After `skip` framing bytes, `len` bytes of data.
    Data { skip: usize, len: usize },
    /// All `consumed` bytes were framing; more input is needed.
    NeedMore { consumed: usize },
    /// The body ended after `consumed` bytes; anything after them is not
    /// part of it.
    Done { consumed: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ChunkError {
    #[error("invalid byte {0:#04x} in chunked framing")]
    InvalidByte(u8),
    #[error("chunk size over 2^60")]
    SizeTooLong,
    #[error("chunk extension over {MAX_EXTENSION} bytes")]
    ExtensionTooLong,
    #[error("trailer section over {MAX_TRAILERS} bytes")]
    TrailersTooLong,
}

/// Where a chunked body stands between the pieces it arrives in.
#[derive(Debug, Clone)]
pub(crate) struct ChunkedDecoder {
    state: State,
    /// The size being read, then the data left in the current chunk.
    size: u64,
    /// A digit of the size was read.
    digits: bool,
    /// Bytes of the current extension, or of the trailer section.
    counted: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: State::Size,
            size: 0,
            digits: false,
            counted: 0,
        }
    }
}

impl ChunkedDecoder {
    /// Reads framing from the start of `input` up to the next data, the end
    /// of the body or the end of `input`.
    pub(crate) fn decode(&mut self, input: &[u8]) -> Result<Step, ChunkError> {
        let mut at = 0;
        while at < input.len() {
            if self.state == State::Data {
                let len = (input.len() - at).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                self.size -= len as u64;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                return Ok(Step::Data { skip: at, len });
            }
            if self.state == State::Done {
                return Ok(Step::Done { consumed: at });
            }
            self.framing_byte(input[at])?;
            at += 1;
        }
        if self.state == State::Done {
            return Ok(Step::Done { consumed: at });
        }
        Ok(Step::NeedMore { consumed: at })
    }

    fn framing_byte(&mut self, byte: u8) -> Result<(), ChunkError> {
        let invalid = Err(ChunkError::InvalidByte(byte));
        self.state = match (self.state, byte) {
            (State::Size, _) if byte.is_ascii_hexdigit() => {
                // Checked before the shift, so it cannot overflow.
                if self.size > MAX_SIZE >> 4 {
                    return Err(ChunkError::SizeTooLong);
                }
                self.digits = true;
                self.size = self.size * 16 + u64::from(hex_value(byte));
                if self.size > MAX_SIZE {
                    return Err(ChunkError::SizeTooLong);
                }
                State::Size
            }
            (State::Size, _) if !self.digits => return invalid,
            (State::Size | State::SizeWs, b'\r') => State::SizeLf,
            (State::Size | State::SizeWs, b' ' | b'\t') => State::SizeWs,
            (State::Size | State::SizeWs, b';') => {
                self.counted = 1;
                State::Extension
            }
            (State::Size | State::SizeWs, _) => return invalid,
            (State::Extension, b'\r') => State::SizeLf,
            (State::Extension, _) if is_text(byte) => {
                self.counted += 1;
                if self.counted > MAX_EXTENSION {
                    return Err(ChunkError::ExtensionTooLong);
                }
                State::Extension
            }
            (State::Extension, _) => return invalid,
            (State::SizeLf, b'\n') => {
                self.digits = false;
                self.counted = 0;
                if self.size == 0 {
                    State::TrailerStart
                } else {
                    State::Data
                }
            }
            (State::DataCr, b'\r') => State::DataLf,
            (State::DataLf, b'\n') => State::Size,
            (State::TrailerStart, b'\r') => State::TrailerLf { empty: true },
            (State::TrailerLine, b'\r') => State::TrailerLf { empty: false },
            (State::TrailerStart | State::TrailerLine, _) if is_text(byte) => {
                self.counted += 1;
                if self.counted > MAX_TRAILERS {
                    return Err(ChunkError::TrailersTooLong);
                }
                State::TrailerLine
            }
            (State::TrailerLf { empty: true }, b'\n') => State::Done,
            (State::TrailerLf { empty: false }, b'\n') => State::TrailerStart,
            _ => return invalid,
        };
        Ok(())
    }
}

/// A byte that may appear inside an extension or a trailer line: visible
/// ASCII, space, tab and obs-text; no other control byte.
fn is_text(byte: u8) -> bool {
    byte == b'\t' || byte == b' ' || byte.is_ascii_graphic() || byte >= 0x80
}

fn hex_value(byte: u8) -> u8 {
    match byte {
        b'0'..=b'9' => byte - b'0',
        b'a'..=b'f' => byte - b'a' + 10,
        _ => byte - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces cut at `cuts`, the way a caller holding a
    /// buffer does (unconsumed bytes carried to the next call), and returns
    /// the data and the bytes left after the end.
    fn decode_in_pieces(input: &[u8], cuts: &[usize]) -> Result<(Vec<u8>, Vec<u8>), ChunkError> {
        let mut decoder = ChunkedDecoder::default();
        let mut data = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut bounds: Vec<usize> = cuts.to_vec();
        bounds.push(input.len());
        let mut from = 0;
        for &to in &bounds {
            pending.extend_from_slice(&input[from..to]);
            from = to;
            loop {
                match decoder.decode(&pending)? {
                    Step::Data { skip, len } => {
                        data.extend_from_slice(&pending[skip..skip + len]);
                        pending.drain(..skip + len);
                    }
                    Step::NeedMore { consumed } => {
                        pending.drain(..consumed);
                        break;
                    }
                    Step::Done { consumed } => {
                        pending.drain(..consumed);
                        let mut rest = pending.clone();
                        rest.extend_from_slice(&input[from..]);
                        return Ok((data, rest));
                    }
                }
            }
        }
        panic!("the body never ended");
    }

    const BODY: &[u8] =
        b"5;name=\"v\"\r\nhello\r\nA\r\n0123456789\r\n1 \t; x\r\n!\r\n0\r\nX-T: 1\r\nY: 2\r\n\r\nNEXT";

    #[test]
    fn every_split_position_gives_the_same_data_and_end() {
        for cut in 0..=BODY.len() {
            let (data, rest) = decode_in_pieces(BODY, &[cut]).unwrap();
            assert_eq!(data, b"hello0123456789!", "cut at {cut}");
            assert_eq!(rest, b"NEXT", "cut at {cut}");
        }
        for a in 0..=BODY.len() {
            for b in a..=BODY.len() {
                let (data, rest) = decode_in_pieces(BODY, &[a, b]).unwrap();
                assert_eq!(
                    (data.as_slice(), rest.as_slice()),
                    (&b"hello0123456789!"[..], &b"NEXT"[..]),
                    "cuts at {a}, {b}"
                );
            }
        }
    }

    #[test]
    fn byte_at_a_time_is_the_same() {
        let cuts: Vec<usize> = (1..BODY.len()).collect();
        let (data, rest) = decode_in_pieces(BODY, &cuts).unwrap();
        assert_eq!(data, b"hello0123456789!");
        assert_eq!(rest, b"NEXT");
    }

    #[test]
    fn leading_zeros_and_whitespace_before_an_extension_are_fine() {
        let body = b"0000000000000000000005 \t;x=1\r\nhello\r\n0 \r\n\r\n";
        assert_eq!(decode_in_pieces(body, &[]).unwrap().0, b"hello");
    }

    #[test]
    fn an_empty_body_and_upper_case_sizes() {
        assert_eq!(
            decode_in_pieces(b"0\r\n\r\n", &[]).unwrap(),
            (vec![], vec![])
        );
        assert_eq!(
            decode_in_pieces(b"1F\r\n0123456789abcdef0123456789abcde\r\n0\r\n\r\n", &[])
                .unwrap()
                .0
                .len(),
            31
        );
    }

    #[test]
    fn framing_that_two_readers_could_read_differently_is_refused() {
        for bad in [
            &b"\r\n"[..],                      // no size
            b"x\r\n",                          // not hex
            b"5\nhello\r\n0\r\n\r\n",          // bare LF after the size
            b"5\r\nhello\n0\r\n\r\n",          // bare LF after the data
            b"5\r\nhelloXY0\r\n\r\n",          // data longer than its size
            b"5x\r\nhello\r\n0\r\n\r\n",       // junk after the size
            b"+5\r\nhello\r\n0\r\n\r\n",       // a sign
            b"0x5\r\nhello\r\n0\r\n\r\n",      // a prefix
            b"5;a\x01b\r\nhello\r\n0\r\n\r\n", // a control byte in an extension
            b"0\r\nX: a\x00\r\n\r\n",          // a control byte in a trailer
            b"0\r\n\n",                        // bare LF ending the trailers
            b"1000000000000001\r\n",           // over 2^60
            b"ffffffffffffffffffff\r\n",       // would overflow
            b"5 junk\r\nhello\r\n0\r\n\r\n",   // not an extension
        ] {
            assert!(
                decode_in_pieces(bad, &[]).is_err(),
                "{:?} was accepted",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn extensions_and_trailers_are_bounded() {
        let mut long_extension = b"1;".to_vec();
        long_extension.extend(std::iter::repeat_n(b'a', MAX_EXTENSION));
        long_extension.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
        assert_eq!(
            decode_in_pieces(&long_extension, &[]),
            Err(ChunkError::ExtensionTooLong)
        );
        let mut long_trailers = b"0\r\n".to_vec();
        // Seven bytes of each line count (its CRLF does not).
        for _ in 0..MAX_TRAILERS / 7 + 1 {
            long_trailers.extend_from_slice(b"X: 1234\r\n");
        }
        long_trailers.extend_from_slice(b"\r\n");
        assert_eq!(
            decode_in_pieces(&long_trailers, &[]),
            Err(ChunkError::TrailersTooLong)
        );
    }
}
