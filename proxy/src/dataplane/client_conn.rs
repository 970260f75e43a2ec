//! A plain-TCP client connection whose write buffer exists only while a
//! response is being written.
//!
//! Gathering a response header and its body into one send saves a syscall
//! per response (two sends per 16 KiB response became one with a 64 KiB
//! buffer, `docs/performance.md`), but pingora's L4 write buffer is
//! allocated with the connection and kept for its whole life: 64 KiB of RSS
//! for every idle kept-alive client. Here writes gather in a buffer that is
//! allocated by the first write after a flush and freed by the flush that
//! sends it, so an idle connection holds none; a large write (a body) is
//! not copied but sent in one `writev` with what is gathered before it.

use std::fmt;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, UniqueID, UniqueIDType,
};
use pingora::protocols::{SocketDigest, TimingDigest};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Writes gather up to this much before a send: a header and a 16 KiB body
/// leave together; a write that would not fit sends what is gathered first.
const GATHER_LIMIT: usize = 64 * 1024;

/// The first allocation of a gathering buffer; it grows to what a response
/// writes before its flush.
const GATHER_START: usize = 4 * 1024;

/// A write at least this large is not copied: it goes out in one vectored
/// send with what is gathered before it (a response header, typically).
const SEND_DIRECT_FROM: usize = 4 * 1024;

pub struct ClientConn {
    inner: L4Stream,
    /// Written, not yet sent; no allocation while nothing is pending.
    pending: Vec<u8>,
    /// How much of `pending` a flush in progress has sent.
    sent: usize,
}

impl ClientConn {
    /// Wraps an accepted connection whose own L4 buffers are off.
    pub fn new(inner: L4Stream) -> ClientConn {
        ClientConn {
            inner,
            pending: Vec::new(),
            sent: 0,
        }
    }

    /// Sends what is pending, then frees the buffer.
    fn poll_send_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.pending.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.pending = Vec::new();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl ClientConn {
    /// Sends what is pending and `buf` together (one `writev`), without
    /// copying `buf`; returns how much of `buf` went out.
    fn poll_send_with_pending(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            if self.sent == self.pending.len() {
                self.pending = Vec::new();
                self.sent = 0;
                return Pin::new(&mut self.inner).poll_write(cx, buf);
            }
            let pending = &self.pending[self.sent..];
            let slices = [IoSlice::new(pending), IoSlice::new(buf)];
            let n = ready!(Pin::new(&mut self.inner).poll_write_vectored(cx, &slices))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            if n <= pending.len() {
                self.sent += n;
                continue;
            }
            let of_buf = n - pending.len();
            self.pending = Vec::new();
            self.sent = 0;
            return Poll::Ready(Ok(of_buf));
        }
    }
}

impl AsyncWrite for ClientConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.len() >= SEND_DIRECT_FROM {
            return this.poll_send_with_pending(cx, buf);
        }
        if this.pending.len() + buf.len() > GATHER_LIMIT {
            ready!(this.poll_send_pending(cx))?;
        }
        if this.pending.capacity() == 0 {
            this.pending.reserve(buf.len().max(GATHER_START));
        }
        this.pending.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_pending(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_pending(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl AsyncRead for ClientConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

#[async_trait]
impl Shutdown for ClientConn {
    async fn shutdown(&mut self) {
        // What is pending goes out first, as a flush would send it.
        let _ = std::future::poll_fn(|cx| self.poll_send_pending(cx)).await;
        Shutdown::shutdown(&mut self.inner).await;
    }
}

impl UniqueID for ClientConn {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for ClientConn {}

impl GetTimingDigest for ClientConn {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for ClientConn {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for ClientConn {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for ClientConn {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

impl fmt::Debug for ClientConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConn")
            .field("inner", &self.inner)
            .field("pending", &self.pending.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Every byte written arrives once and in order, whatever mix of small
    /// (gathered) and large (sent directly) writes, and nothing is held
    /// after a flush.
    #[tokio::test]
    async fn writes_arrive_in_order_and_no_buffer_outlives_a_flush() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut peer = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let mut conn = ClientConn::new(L4Stream::from(accepted));

        let sizes = [10, 200, 5_000, 3, 70_000, 1, 4_096, 4_095, 100_000, 17];
        let mut expected = Vec::new();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            peer.read_to_end(&mut got).await.unwrap();
            got
        });
        for (i, size) in sizes.iter().enumerate() {
            let chunk: Vec<u8> = (0..*size).map(|j| (i * 31 + j) as u8).collect();
            conn.write_all(&chunk).await.unwrap();
            expected.extend_from_slice(&chunk);
            if i % 3 == 2 {
                conn.flush().await.unwrap();
                assert_eq!(conn.pending.capacity(), 0, "a flush frees the buffer");
            }
        }
        conn.flush().await.unwrap();
        assert_eq!(conn.pending.capacity(), 0);
        AsyncWriteExt::shutdown(&mut conn).await.unwrap();
        drop(conn);
        let got = reader.await.unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "bytes arrived out of order or changed");
    }
}
