//! Client connections, accepted by us on every data-plane thread.
//!
//! pingora's listening service spawns one task per connection whose future
//! holds its TLS handshake's state for the connection's whole life (8.8 KiB,
//! measured with massif), and gives each connection L4 read and write
//! buffers for its whole life too. Here each worker thread accepts on its
//! own copy of each listening socket; a connection's task holds the
//! connection ([`ClientConn`], which buffers writes only while a response is
//! being written) and [`Front`]'s boxed future. A TLS handshake (pingora's
//! rustls acceptor, over the same `ClientConn`) runs in a future of its own
//! that is freed when it is done.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use pingora::apps::ServerApp;
use pingora::listeners::tls::Acceptor;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{GetSocketDigest, SocketDigest, Stream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::client_conn::ClientConn;
use super::{proxy_protocol, Front};

/// A listening socket and, for an HTTPS one, its TLS acceptor.
pub struct Listener {
    pub socket: std::net::TcpListener,
    pub tls: Option<Arc<Acceptor>>,
    /// Its connections begin with a PROXY protocol header.
    pub proxy_protocol: bool,
}

/// Starts an accept loop for each listener on each of the data plane's
/// threads; they end when `shutdown` turns true.
pub fn spawn_accept_loops(
    dataplane: &pingora_runtime::Runtime,
    listeners: Vec<Listener>,
    front: Arc<Front>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    let threads: Vec<tokio::runtime::Handle> = match dataplane {
        pingora_runtime::Runtime::NoSteal(runtime) => (0..runtime.threads())
            .map(|i| runtime.get_runtime_at(i).clone())
            .collect(),
        _ => vec![dataplane.get_handle().clone()],
    };
    let mut loops = Vec::new();
    for thread in &threads {
        loops.push(thread.spawn(return_freed_memory(front.clone(), shutdown.clone())));
    }
    for listener in &listeners {
        for thread in &threads {
            // Each thread waits on its own descriptor of the same socket:
            // the kernel hands each connection to one of them.
            let copy = listener.socket.try_clone()?;
            let kind = Kind {
                tls: listener.tls.clone(),
                proxy_protocol: listener.proxy_protocol,
            };
            loops.push(thread.spawn(accept_loop(copy, kind, front.clone(), shutdown.clone())));
        }
    }
    Ok(loops)
}

/// What a listener's connections begin with besides HTTP.
#[derive(Clone)]
struct Kind {
    tls: Option<Arc<Acceptor>>,
    proxy_protocol: bool,
}

async fn accept_loop(
    listener: std::net::TcpListener,
    kind: Kind,
    front: Arc<Front>,
    mut shutdown: watch::Receiver<bool>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!("cannot accept on a listening socket: {e}");
            return;
        }
    };
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
                continue;
            }
        };
        match accepted {
            Ok((tcp, peer)) => {
                tokio::spawn(serve_connection(
                    front.clone(),
                    kind.clone(),
                    tcp,
                    peer,
                    shutdown.clone(),
                ));
            }
            Err(e) => {
                // Out of file descriptors, most likely: the connections
                // already open go on; accepting resumes shortly.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(ACCEPT_RETRY).await;
            }
        }
    }
}

/// mimalloc keeps the pages a thread freed for that thread's next
/// allocations: a worker that goes quiet after a burst of connections would
/// keep their memory (5,000 connections once left 494 MB behind). Once a
/// second each worker looks at the open connections, and when they have
/// dropped by [`COLLECT_AFTER_DROP`] since their high-water mark it has
/// mimalloc return what its heap no longer uses. Under steady load the
/// count does not drop that far, so this costs nothing there.
async fn return_freed_memory(front: Arc<Front>, mut shutdown: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(COLLECT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut high_water = 0;
    loop {
        tokio::select! {
            _ = every.tick() => {
                let open = front.open_connections();
                if should_collect(open, &mut high_water) {
                    // SAFETY: mi_collect only trims this thread's mimalloc
                    // heap (and does nothing when mimalloc is not the
                    // allocator in use).
                    unsafe { libmimalloc_sys::mi_collect(true) };
                }
            }
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
            }
        }
    }
}

/// How often each data-plane thread looks at the open connections.
const COLLECT_EVERY: Duration = Duration::from_secs(1);

/// Connections that must have closed since the high-water mark before
/// freed memory is handed back: about 1 MiB of connection state.
const COLLECT_AFTER_DROP: usize = 256;

/// Whether `open` connections, against the high-water mark since the last
/// collection, call for one; moves the mark.
fn should_collect(open: usize, high_water: &mut usize) -> bool {
    if open + COLLECT_AFTER_DROP <= *high_water {
        *high_water = open;
        return true;
    }
    *high_water = (*high_water).max(open);
    false
}

/// After a failed accept (EMFILE, ENFILE), the pause before the next.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// Serves one connection: what pingora's service does with an accepted
/// stream.
async fn serve_connection(
    front: Arc<Front>,
    kind: Kind,
    mut tcp: tokio::net::TcpStream,
    mut peer: SocketAddr,
    shutdown: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    if kind.proxy_protocol {
        // The header comes first, before TLS; its client is the
        // connection's peer from here on.
        let header = tokio::time::timeout(front.header_timeout(), proxy_protocol::read(&mut tcp));
        let refused = match header.await {
            Ok(Ok(Some(client))) => {
                peer = client;
                None
            }
            Ok(Ok(None)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("no PROXY protocol header within header_timeout".to_string()),
        };
        if let Some(why) = refused {
            metrics::counter!(crate::logging::PROXY_HEADER_FAILURES).increment(1);
            tracing::debug!(%peer, "connection refused: {why}");
            return;
        }
    }
    let tls = kind.tls;
    if tls.is_some() {
        // A ClientHello costs a key exchange and a signature; a request on
        // a connection already open costs little and is what a client is
        // waiting on. Once the hello is here, requests that woke with it
        // go first (a yielded task runs after the next look at the
        // sockets).
        if tcp.readable().await.is_err() {
            return;
        }
        tokio::task::yield_now().await;
    }
    // L4 buffers off (`From<TcpStream>`): `ClientConn` gathers writes, and
    // reads go into the HTTP layer's own buffers.
    let mut l4 = L4Stream::from(tcp);
    let digest = SocketDigest::from_raw_fd(l4.as_raw_fd());
    let _ = digest.peer_addr.set(Some(peer.into()));
    l4.set_socket_digest(digest);
    let conn = ClientConn::new(l4);
    let stream: Stream = match tls {
        None => Box::new(conn),
        Some(acceptor) => {
            // Boxed, so the handshake's state is freed once it is done
            // instead of sizing this task for the connection's life.
            let handshake = Box::pin(acceptor.tls_handshake(conn));
            match tokio::time::timeout(front.header_timeout(), handshake).await {
                Ok(Ok(tls)) => Box::new(tls),
                Ok(Err(e)) => {
                    metrics::counter!(crate::logging::HANDSHAKE_FAILURES).increment(1);
                    tracing::debug!(%peer, "TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    metrics::counter!(crate::logging::HANDSHAKE_FAILURES).increment(1);
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            }
        }
    };
    let mut next = front.process_new(stream, &shutdown).await;
    while let Some(stream) = next {
        next = front.process_new(stream, &shutdown).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_collected_once_after_a_large_drop_and_never_under_steady_load() {
        let mut mark = 0;
        // Steady load, and growth: nothing.
        for open in [32, 30, 33, 31, 500, 3000, 2900] {
            assert!(!should_collect(open, &mut mark), "{open}");
        }
        assert_eq!(mark, 3000);
        // The burst leaves: one collection, then the mark follows.
        assert!(should_collect(10, &mut mark));
        assert!(!should_collect(8, &mut mark));
        assert!(!should_collect(12, &mut mark));
        // A smaller burst under the threshold: none.
        assert!(!should_collect(200, &mut mark));
        assert!(!should_collect(5, &mut mark));
    }
}
