//! The CLI's side of the admin socket: send one request line, read one
//! response line.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use switchyard_control::protocol::{Request, Response};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to the admin socket {path}: {source} (is switchyard running? pass --socket or set SWITCHYARD_SOCKET)")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("admin socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("admin socket {path} closed the connection without an answer")]
    NoAnswer { path: PathBuf },
    #[error("admin socket {path} answered something that is not a response: {message}")]
    BadAnswer { path: PathBuf, message: String },
}

/// Sends `request` and waits up to `wait` for the answer.
pub fn send(socket: &Path, request: &Request, wait: Duration) -> Result<Response, ClientError> {
    let io_error = |source| ClientError::Io {
        path: socket.to_path_buf(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        path: socket.to_path_buf(),
        source,
    })?;
    stream.set_read_timeout(Some(wait)).map_err(io_error)?;
    let mut line = serde_json::to_string(request).expect("requests always encode");
    line.push('\n');
    // A server that refuses us may answer and close before reading our
    // request: read its answer even when our write failed.
    let written = stream.write_all(line.as_bytes());

    let mut answer = String::new();
    let read = BufReader::new(stream).read_line(&mut answer);
    if answer.is_empty() {
        written.map_err(io_error)?;
        read.map_err(io_error)?;
        return Err(ClientError::NoAnswer {
            path: socket.to_path_buf(),
        });
    }
    serde_json::from_str(&answer).map_err(|e| ClientError::BadAnswer {
        path: socket.to_path_buf(),
        message: e.to_string(),
    })
}
