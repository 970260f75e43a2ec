//! A strict HTTP/1.1 message reader for tests that compare what one side
//! sent with what the other side got: it decodes `Content-Length` and
//! chunked bodies exactly (extensions, trailers), says `Incomplete` until a
//! message is whole, and refuses anything it cannot frame. It is the
//! reference the proxy's framing is checked against, so it is written
//! separately from the proxy's code and keeps to RFC 9112's grammar.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::raw::ScriptedBackend;

/// One whole message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The request line or status line.
    pub first_line: String,
    /// Names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Trailer fields of a chunked body, names lower-cased.
    pub trailers: Vec<(String, String)>,
}

impl Message {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn header_count(&self, name: &str) -> usize {
        self.headers.iter().filter(|(n, _)| n == name).count()
    }

    pub fn status(&self) -> u16 {
        self.first_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// The request target of a request.
    pub fn target(&self) -> &str {
        self.first_line.split(' ').nth(1).unwrap_or_default()
    }

    /// The numbers among a request target's path segments, in order:
    /// `/r/3/17` gives `[3, 17]` (how scripted backends are told what to
    /// answer).
    pub fn target_numbers(&self) -> Vec<usize> {
        self.target()
            .split('/')
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

/// The result of reading a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parse {
    /// More bytes are needed.
    Incomplete,
    /// A message, and how many bytes of the buffer it took.
    Done(Message, usize),
    /// The bytes cannot be a message.
    Bad(String),
}

/// Reads one message from the front of `buf`. `bodiless` is for responses
/// that have no body whatever their headers say (to HEAD, 1xx, 204, 304).
/// A response without length or chunking is refused: the tests' backends
/// always frame theirs.
pub fn parse(buf: &[u8], bodiless: bool) -> Parse {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Parse::Incomplete;
    };
    let Ok(head) = std::str::from_utf8(&buf[..head_end]) else {
        return Parse::Bad("head is not UTF-8".into());
    };
    let mut lines = head.split("\r\n");
    let first_line = lines.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Parse::Bad(format!("header line without a colon: {line:?}"));
        };
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let mut message = Message {
        first_line,
        headers,
        body: Vec::new(),
        trailers: Vec::new(),
    };
    let body_start = head_end + 4;
    let status_bodiless = message.first_line.starts_with("HTTP/")
        && matches!(message.status(), 100..=199 | 204 | 304);
    if bodiless || status_bodiless {
        return Parse::Done(message, body_start);
    }
    let chunked = message
        .header("transfer-encoding")
        .is_some_and(|te| te.eq_ignore_ascii_case("chunked"));
    if chunked {
        if message.header("content-length").is_some() {
            return Parse::Bad("both Content-Length and chunked".into());
        }
        return match decode_chunked(&buf[body_start..]) {
            Chunked::Incomplete => Parse::Incomplete,
            Chunked::Bad(why) => Parse::Bad(why),
            Chunked::Done {
                body,
                trailers,
                used,
            } => {
                message.body = body;
                message.trailers = trailers;
                Parse::Done(message, body_start + used)
            }
        };
    }
    if message.header("transfer-encoding").is_some() {
        return Parse::Bad("a transfer coding other than chunked".into());
    }
    let length = match message.header_count("content-length") {
        0 if message.first_line.starts_with("HTTP/") => {
            return Parse::Bad("a response without a length".into())
        }
        0 => 0,
        1 => match message.header("content-length").unwrap().parse::<usize>() {
            Ok(n) => n,
            Err(_) => return Parse::Bad("bad Content-Length".into()),
        },
        _ => return Parse::Bad("more than one Content-Length".into()),
    };
    if buf.len() < body_start + length {
        return Parse::Incomplete;
    }
    message.body = buf[body_start..body_start + length].to_vec();
    Parse::Done(message, body_start + length)
}

enum Chunked {
    Incomplete,
    Bad(String),
    Done {
        body: Vec<u8>,
        trailers: Vec<(String, String)>,
        used: usize,
    },
}

fn decode_chunked(buf: &[u8]) -> Chunked {
    let mut at = 0;
    let mut body = Vec::new();
    loop {
        let Some(line_len) = buf[at..].windows(2).position(|w| w == b"\r\n") else {
            return Chunked::Incomplete;
        };
        let line = &buf[at..at + line_len];
        let size_text = line.split(|&b| b == b';').next().unwrap_or_default();
        if size_text.is_empty()
            || size_text.len() > 15
            || !size_text.iter().all(u8::is_ascii_hexdigit)
        {
            return Chunked::Bad(format!(
                "bad chunk size line {:?}",
                line.escape_ascii().to_string()
            ));
        }
        let size = usize::from_str_radix(std::str::from_utf8(size_text).unwrap(), 16).unwrap();
        at += line_len + 2;
        if size == 0 {
            break;
        }
        if buf.len() < at + size + 2 {
            return Chunked::Incomplete;
        }
        body.extend_from_slice(&buf[at..at + size]);
        if &buf[at + size..at + size + 2] != b"\r\n" {
            return Chunked::Bad("chunk data not followed by CRLF".into());
        }
        at += size + 2;
    }
    let mut trailers = Vec::new();
    loop {
        let Some(line_len) = buf[at..].windows(2).position(|w| w == b"\r\n") else {
            return Chunked::Incomplete;
        };
        let line = &buf[at..at + line_len];
        at += line_len + 2;
        if line.is_empty() {
            return Chunked::Done {
                body,
                trailers,
                used: at,
            };
        }
        let text = String::from_utf8_lossy(line);
        let Some((name, value)) = text.split_once(':') else {
            return Chunked::Bad(format!("bad trailer line {text:?}"));
        };
        trailers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
}

/// `body` in chunks of the given sizes (the rest in one chunk), each size
/// line with `extension` after it, then the last chunk and `trailers`.
pub fn encode_chunked(body: &[u8], sizes: &[usize], extension: &str, trailers: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    let mut sizes = sizes.iter().copied();
    while !rest.is_empty() {
        let size = sizes.next().unwrap_or(rest.len()).clamp(1, rest.len());
        out.extend_from_slice(format!("{size:x}{extension}\r\n").as_bytes());
        out.extend_from_slice(&rest[..size]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[size..];
    }
    out.extend_from_slice(format!("0{extension}\r\n{trailers}\r\n").as_bytes());
    out
}

/// How long a test waits for a byte before it calls the proxy stuck.
const READ_LIMIT: Duration = Duration::from_secs(10);

/// A connection that reads whole messages, keeping what it read past one.
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Conn {
        stream.set_nodelay(true).unwrap();
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn connect(addr: std::net::SocketAddr) -> Conn {
        Conn::new(TcpStream::connect(addr).await.unwrap())
    }

    /// Writes `parts` one after another with `pause` between them, so the
    /// peer's reads end where the parts do.
    pub async fn write_parts(&mut self, parts: &[&[u8]], pause: Duration) -> io::Result<()> {
        for (i, part) in parts.iter().enumerate() {
            if i > 0 && !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            self.stream.write_all(part).await?;
        }
        Ok(())
    }

    /// The next whole message; an error when the peer closes first, sends
    /// what cannot be framed, or says nothing for ten seconds.
    pub async fn read_message(&mut self, bodiless: bool) -> io::Result<Message> {
        loop {
            match parse(&self.buf, bodiless) {
                Parse::Done(message, used) => {
                    self.buf.drain(..used);
                    return Ok(message);
                }
                Parse::Bad(why) => return Err(io::Error::new(io::ErrorKind::InvalidData, why)),
                Parse::Incomplete => {}
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = tokio::time::timeout(READ_LIMIT, self.stream.read(&mut chunk))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no byte for 10 s"))??;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("closed with {} bytes of a message read", self.buf.len()),
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Takes the bytes read past the last message (after an upgrade, the
    /// start of the raw stream).
    pub fn take_buffered(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// Whether the peer closes the connection (EOF or reset) within ten
    /// seconds, with no byte before it.
    pub async fn closes(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(READ_LIMIT, self.stream.read(&mut byte)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

/// A small deterministic generator for randomized tests: the same seed
/// gives the same case, so a failure names its seed and can be replayed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }

    /// Cuts `len` into pieces of random sizes up to `max`.
    pub fn sizes(&mut self, len: usize, max: usize) -> Vec<usize> {
        let mut left = len;
        let mut sizes = Vec::new();
        while left > 0 {
            let size = (1 + self.below(max)).min(left);
            sizes.push(size);
            left -= size;
        }
        sizes
    }
}

/// Long enough that the proxy reads the first part before the second
/// arrives, on loopback.
pub const SPLIT_PAUSE: Duration = Duration::from_millis(3);

/// What a recording backend saw: every whole request, in arrival order,
/// with the number of its connection and its place on it.
#[derive(Default)]
pub struct Seen {
    pub requests: Vec<(usize, Message)>,
    pub connections: usize,
    /// Connections whose bytes could not be read as requests.
    pub bad_framing: Vec<String>,
}

/// A backend that reads requests with the strict reader and answers each
/// with its decoded body (and the trailers it got, as a header).
pub async fn recording_backend() -> (ScriptedBackend, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let log = seen.clone();
    let backend = ScriptedBackend::start(move |stream: TcpStream| {
        let log = log.clone();
        async move {
            let connection = {
                let mut seen = log.lock().unwrap();
                seen.connections += 1;
                seen.connections
            };
            let mut conn = Conn::new(stream);
            loop {
                let request = match conn.read_message(false).await {
                    Ok(request) => request,
                    Err(e) => {
                        if e.kind() == std::io::ErrorKind::InvalidData {
                            log.lock().unwrap().bad_framing.push(e.to_string());
                        }
                        return;
                    }
                };
                let trailers: Vec<String> = request
                    .trailers
                    .iter()
                    .map(|(n, v)| format!("{n}={v}"))
                    .collect();
                let mut response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Trailers: {}\r\n\r\n",
                    request.body.len(),
                    trailers.join(",")
                )
                .into_bytes();
                response.extend_from_slice(&request.body);
                log.lock().unwrap().requests.push((connection, request));
                if conn.stream.write_all(&response).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    (backend, seen)
}

/// Chunked bodies with what a reader can trip on: extensions (quoted, with
/// `;` and `=` inside), upper- and lower-case hex, leading zeros, chunks of
/// one byte, a body that looks like a request, trailers.
pub fn tricky_chunked_bodies() -> Vec<(Vec<u8>, Vec<u8>)> {
    let smuggle = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    vec![
        (b"hello0123456789".to_vec(), b"5\r\nhello\r\nA\r\n0123456789\r\n0\r\n\r\n".to_vec()),
        (
            b"hello world!".to_vec(),
            b"5;name=value\r\nhello\r\n1;a=\"q;x=y\"\r\n \r\n006\r\nworld!\r\n0;last=1\r\nX-Check: abc\r\nX-Other: 1\r\n\r\n"
                .to_vec(),
        ),
        (smuggle.clone(), encode_chunked(&smuggle, &[3, 1, 1, 20], "", "")),
        (b"\r\n0\r\n".to_vec(), b"2\r\n\r\n\r\n3\r\n0\r\n\r\n0\r\n\r\n".to_vec()),
        (b"abcdefghijklmnop".to_vec(), b"F\r\nabcdefghijklmno\r\n1\r\np\r\n0\r\nT: v\r\n\r\n".to_vec()),
    ]
}

/// FNV-1a: enough to tell two byte strings apart in a test.
pub fn digest(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_round_trips_with_extensions_and_trailers() {
        let encoded = encode_chunked(b"hello world", &[5, 1], ";x=\"y\"", "T: 1\r\n");
        let mut request = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        request.extend_from_slice(&encoded);
        match parse(&request, false) {
            Parse::Done(m, used) => {
                assert_eq!(m.body, b"hello world");
                assert_eq!(m.trailers, [("t".to_string(), "1".to_string())]);
                assert_eq!(used, request.len());
            }
            other => panic!("{other:?}"),
        }
        for cut in 0..request.len() {
            assert_eq!(
                parse(&request[..cut], false),
                Parse::Incomplete,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn bad_chunk_sizes_are_refused() {
        for body in [
            &b"-5\r\n"[..],
            b"0x10\r\n",
            b"fffffffffffffffffff\r\n",
            b"\r\n",
        ] {
            let mut request = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            request.extend_from_slice(body);
            assert!(matches!(parse(&request, false), Parse::Bad(_)));
        }
    }
}
