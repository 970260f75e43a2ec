//! Byte-level HTTP/1.1 for tests that need what hyper will not write or
//! hides: hop-by-hop headers, hand-made chunked bodies, upgrades. Every read
//! has a deadline so a broken proxy fails the test instead of hanging it.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const READ_LIMIT: Duration = Duration::from_secs(5);

/// A parsed response or request head: the first line and the headers with
/// lower-cased names, in order.
#[derive(Debug)]
pub struct Head {
    pub first_line: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn status(&self) -> u16 {
        self.first_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
}

/// Reads one head (up to the blank line) and returns it with any bytes read
/// past it.
pub async fn read_head(stream: &mut TcpStream) -> std::io::Result<(Head, Vec<u8>)> {
    let mut buf = Vec::new();
    let end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(READ_LIMIT, stream.read(&mut chunk))
            .await
            .map_err(|_| std::io::Error::other("timed out reading a head"))??;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "closed after {} bytes of head: {:?}",
                    buf.len(),
                    String::from_utf8_lossy(&buf)
                ),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let text = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let first_line = lines.next().unwrap_or_default().to_string();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok((
        Head {
            first_line,
            headers,
        },
        buf[end + 4..].to_vec(),
    ))
}

/// Reads exactly `len` bytes, starting with `already` (bytes read past a head).
pub async fn read_exact_after(
    stream: &mut TcpStream,
    mut already: Vec<u8>,
    len: usize,
) -> std::io::Result<Vec<u8>> {
    while already.len() < len {
        let mut chunk = vec![0u8; len - already.len()];
        let n = tokio::time::timeout(READ_LIMIT, stream.read(&mut chunk))
            .await
            .map_err(|_| std::io::Error::other("timed out reading a body"))??;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        already.extend_from_slice(&chunk[..n]);
    }
    Ok(already)
}

/// Reads a chunked body to its last chunk and returns the decoded bytes.
pub async fn read_chunked(stream: &mut TcpStream, mut buf: Vec<u8>) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = buf.windows(2).position(|w| w == b"\r\n") else {
            buf = read_more(stream, buf).await?;
            continue;
        };
        let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| std::io::Error::other(format!("bad chunk size {size_text:?}")))?;
        let needed = line_end + 2 + size + 2;
        while buf.len() < needed {
            buf = read_more(stream, buf).await?;
        }
        body.extend_from_slice(&buf[line_end + 2..line_end + 2 + size]);
        buf.drain(..needed);
        if size == 0 {
            return Ok(body);
        }
    }
}

async fn read_more(stream: &mut TcpStream, mut buf: Vec<u8>) -> std::io::Result<Vec<u8>> {
    let mut chunk = [0u8; 4096];
    let n = tokio::time::timeout(READ_LIMIT, stream.read(&mut chunk))
        .await
        .map_err(|_| std::io::Error::other("timed out reading"))??;
    if n == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(buf)
}

/// A backend that hands each accepted connection to `serve`; it stops when
/// dropped.
pub struct ScriptedBackend {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl ScriptedBackend {
    pub async fn start<F, Fut>(serve: F) -> ScriptedBackend
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream));
            }
        });
        ScriptedBackend { addr, task }
    }
}

impl Drop for ScriptedBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Writes `bytes` to the proxy on a new connection and returns the stream.
pub async fn send_raw(proxy: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}
