//! Reading without a buffer of one's own: each read goes into the worker
//! thread's scratch buffer, and only the bytes that arrived are copied out
//! — one allocation of their size, none while a connection waits.

use std::cell::RefCell;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;

use bytes::BytesMut;
use tokio::io::{AsyncRead, ReadBuf};

/// The most one read takes: a 16 KiB response arrives, head and body, in
/// one `recv`.
const SCRATCH: usize = 64 * 1024;

thread_local! {
    /// Borrowed only inside a single poll, so no waiting read holds it.
    static BUFFER: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH].into_boxed_slice());
}

/// Reads what is there (waiting until something is) and appends it to
/// `buf`: the number of bytes, 0 at the end of the stream. Safe to cancel:
/// bytes move into `buf` in the poll that reads them.
pub(crate) async fn read_into<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> std::io::Result<usize> {
    poll_fn(|cx| {
        BUFFER.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let mut read = ReadBuf::new(&mut scratch[..]);
            match Pin::new(&mut *stream).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => {
                    let arrived = read.filled();
                    if buf.is_empty() {
                        *buf = BytesMut::from(arrived);
                    } else {
                        buf.extend_from_slice(arrived);
                    }
                    Poll::Ready(Ok(arrived.len()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
    })
    .await
}
