//! Plain-TCP client connections, accepted by us on every data-plane thread.
//!
//! pingora's listening service spawns one task per connection whose future
//! holds its TLS handshake's state, TLS or not (8.8 KiB per connection,
//! measured with massif), and gives each connection an L4 write buffer for
//! its whole life. For plain TCP neither is needed: here each worker thread
//! accepts on its own copy of each listening socket, and a connection's
//! task holds the connection ([`ClientConn`], which buffers writes only
//! while a response is being written) and [`Front`]'s boxed future. TLS
//! listeners stay on pingora's service, which does their handshakes.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use pingora::apps::ServerApp;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{GetSocketDigest, SocketDigest, Stream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::client_conn::ClientConn;
use super::Front;

/// Starts an accept loop for each listener on each of the data plane's
/// threads; they end when `shutdown` turns true.
pub fn spawn_accept_loops(
    dataplane: &pingora_runtime::Runtime,
    listeners: Vec<std::net::TcpListener>,
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
    for listener in &listeners {
        for thread in &threads {
            // Each thread waits on its own descriptor of the same socket:
            // the kernel hands each connection to one of them.
            let copy = listener.try_clone()?;
            loops.push(thread.spawn(accept_loop(copy, front.clone(), shutdown.clone())));
        }
    }
    Ok(loops)
}

async fn accept_loop(
    listener: std::net::TcpListener,
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
                tokio::spawn(serve_connection(front.clone(), tcp, peer, shutdown.clone()));
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

/// After a failed accept (EMFILE, ENFILE), the pause before the next.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// Serves one connection: what pingora's service does with an accepted
/// stream, without the TLS handshake.
async fn serve_connection(
    front: Arc<Front>,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    shutdown: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    // L4 buffers off (`From<TcpStream>`): `ClientConn` gathers writes, and
    // reads go into the HTTP layer's own buffers.
    let mut l4 = L4Stream::from(tcp);
    let digest = SocketDigest::from_raw_fd(l4.as_raw_fd());
    let _ = digest.peer_addr.set(Some(peer.into()));
    l4.set_socket_digest(digest);
    let stream: Stream = Box::new(ClientConn::new(l4));
    let mut next = front.process_new(stream, &shutdown).await;
    while let Some(stream) = next {
        next = front.process_new(stream, &shutdown).await;
    }
}
