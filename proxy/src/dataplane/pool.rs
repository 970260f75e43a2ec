//! Idle HTTP/1.1 connections to backends, kept for the next request: one
//! pool per worker thread, so taking and giving back take no lock, spawn
//! no task and make no syscall in the common case.
//!
//! pingora's pool, which this replaces, spawned a watcher task per release
//! and asked the kernel for the socket's peer (`getpeername`) on every
//! reuse. Here a connection the backend closed while idle is noticed from
//! the readiness the worker's reactor already recorded for it: taking a
//! connection tries a read that cannot wait, which finds the end of stream
//! (or data the backend should not have sent) and drops it, and otherwise
//! returns at once without touching the socket. A sweep every few seconds
//! closes connections that idled too long or were closed by their backend,
//! so a key nobody asks for any more (a slot switched away from) does not
//! hold sockets.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use pingora::protocols::Stream;
use tokio::io::AsyncReadExt;

use super::UPSTREAM_IDLE_TIMEOUT;

/// Idle connections kept per slot pool and backend on one worker thread;
/// past it the oldest is closed. A cap below the requests in flight at a
/// peak makes every request after the peak open a connection (at 800 in
/// flight, a cap of 64 or pingora's 128 opened one for nearly every
/// request); an idle connection costs a socket and a few hundred bytes, and
/// the sweep closes it after a minute unused.
const MAX_IDLE_PER_BACKEND: usize = 1024;
/// How often a worker closes what idled past its time or was closed.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Which connections may serve a request: those of the same slot pool (a
/// route's slot in one pool epoch) to the same backend address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct PoolKey {
    pub slot_pool: u64,
    pub backend: SocketAddr,
}

struct Idle {
    stream: Stream,
    since: Instant,
}

/// One worker thread's idle connections, newest last.
#[derive(Default)]
struct Pool {
    idle: HashMap<PoolKey, VecDeque<Idle>, ahash::RandomState>,
    sweeper_started: bool,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

/// The most recently released connection of `key` that is still open and
/// has idled less than [`UPSTREAM_IDLE_TIMEOUT`].
pub(super) fn take(key: PoolKey) -> Option<Stream> {
    let now = Instant::now();
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let queue = pool.idle.get_mut(&key)?;
        while let Some(mut idle) = queue.pop_back() {
            if now.duration_since(idle.since) < UPSTREAM_IDLE_TIMEOUT
                && still_open(&mut idle.stream)
            {
                return Some(idle.stream);
            }
        }
        None
    })
}

/// Keeps `stream` for the next request of `key`, if it is still open.
pub(super) fn put(key: PoolKey, mut stream: Stream) {
    if !still_open(&mut stream) {
        return;
    }
    let start_sweeper = POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let queue = pool.idle.entry(key).or_default();
        if queue.len() >= MAX_IDLE_PER_BACKEND {
            queue.pop_front();
        }
        queue.push_back(Idle {
            stream,
            since: Instant::now(),
        });
        !std::mem::replace(&mut pool.sweeper_started, true)
    });
    if start_sweeper {
        tokio::spawn(sweep_forever());
    }
}

/// The worker's sweeper, started with its first idle connection; it ends
/// with the worker's runtime.
async fn sweep_forever() {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let now = Instant::now();
        POOL.with(|pool| {
            pool.borrow_mut().idle.retain(|_, queue| {
                queue.retain_mut(|idle| {
                    now.duration_since(idle.since) < UPSTREAM_IDLE_TIMEOUT
                        && still_open(&mut idle.stream)
                });
                !queue.is_empty()
            });
        });
    }
}

/// An idle connection is open while a read finds nothing: the end of the
/// stream means the backend closed it, and bytes it sent unasked mean it
/// cannot be trusted with a request. The read does not wait; when the
/// reactor has seen nothing on the socket it does not reach the kernel.
fn still_open(stream: &mut Stream) -> bool {
    let mut byte = [0u8; 1];
    // `unconstrained`: with the task's budget spent, the read would say
    // "not yet" without looking.
    let mut read = std::pin::pin!(tokio::task::unconstrained(stream.read(&mut byte)));
    read.as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
        .is_pending()
}
