//! Pick: the slot a request goes to (`Route::choose`: preview host,
//! override, sticky cookie, canary bucket) and, attempt by attempt, the
//! backend in it ([`Target`]), moved on by [`advance`] after a failure.

use std::net::SocketAddr;

use pingora::upstreams::peer::HttpPeer;
use switchyard_control::table::{LoadGuard, Reason};
use switchyard_control::{Route, RoutingTable};

use super::downstream::Downstream;
use super::exchange::Reply;
use super::forward::Incoming;
use super::UPSTREAM_IDLE_TIMEOUT;

/// A request's pick: its route, where its next attempt goes, the slot it
/// is counted on, and what its response gets from us.
pub(super) struct Pick<'t> {
    pub route: &'t Route,
    pub target: Target,
    /// Counted on its slot from the moment it is chosen (so `drain` never
    /// sees an idle slot with a request about to connect to it) until the
    /// exchange ends.
    pub counted: Counted,
    pub reply: Reply<'t>,
    /// Why this slot: a preview host or an override passes a route's
    /// maintenance.
    pub reason: Reason,
}

/// Where the request goes, advanced by each failed attempt.
pub(super) struct Target {
    pub slot: usize,
    backend_start: usize,
    /// Connect attempts so far, the first included.
    attempts: u32,
    attempts_on_slot: usize,
}

/// Picks the request's slot. Its latency ([`Reply::started`]) counts from
/// when its head had been read ([`Incoming::started`]).
pub(super) fn pick<'t>(
    session: &Downstream,
    route: &'t Route,
    preview: bool,
    incoming: Incoming<'t>,
) -> Pick<'t> {
    let client_ip = incoming.client.ip;
    let choice = route.choose(&session.req_header().headers, client_ip, preview);
    // A client placed by its bucket gets the cookie that keeps it there.
    let reply = Reply {
        started: incoming.started,
        set_cookie: (choice.reason == Reason::Bucket).then(|| route.set_cookie(choice.slot)),
        request_id: incoming.id,
        hsts: if incoming.tls {
            route.hsts.as_ref()
        } else {
            None
        },
    };
    let target = Target {
        slot: choice.slot,
        backend_start: route.slot(choice.slot).next_start(),
        attempts: 0,
        attempts_on_slot: 0,
    };
    let counted = Counted::on(route, target.slot);
    Pick {
        route,
        target,
        counted,
        reply,
        reason: choice.reason,
    }
}

impl Pick<'_> {
    /// Moves the request's count to the slot its target is on now.
    pub(super) fn follow(&mut self) {
        self.counted.follow(self.route, self.target.slot);
    }
}

impl Target {
    /// The next backend to try, counting the attempt.
    pub(super) fn next_backend(&mut self, route: &Route) -> SocketAddr {
        let backend = route
            .slot(self.slot)
            .backend(self.backend_start, self.attempts_on_slot);
        self.attempts += 1;
        self.attempts_on_slot += 1;
        backend
    }
}

/// pingora's description of `backend` on a slot whose pool key is
/// `pool_key`, for opening a connection (or an h2c stream) to it. Built only
/// then: it is 672 bytes, and a request served from the pool never needs
/// one.
pub(super) fn peer_for(backend: SocketAddr, pool_key: u64, table: &RoutingTable) -> HttpPeer {
    let mut peer = HttpPeer::new(backend, false, String::new());
    peer.group_key = pool_key;
    peer.options.connection_timeout = Some(table.timeouts.upstream_connect);
    peer.options.idle_timeout = Some(UPSTREAM_IDLE_TIMEOUT);
    peer
}

/// Moves `target` on after a failed attempt: the slot's next backend, then
/// the previous slot if it may work ([`to_previous`]), while the route's
/// `retries` last. `false` when none are left.
pub(super) fn advance(route: &Route, target: &mut Target) -> bool {
    if target.attempts > route.retries {
        return false;
    }
    let slot = route.slot(target.slot);
    if target.attempts_on_slot >= slot.backends.len()
        && !to_previous(route, target)
        && slot.backends.len() == 1
    {
        return false;
    }
    true
}

/// Moves `target` to the route's previous slot if that is a fallback that
/// may work: not the slot it is on, not known unhealthy, and with a backend
/// address (a slot whose names never resolved has none). `false` when it
/// is not, and `target` stays.
pub(super) fn to_previous(route: &Route, target: &mut Target) -> bool {
    let previous = route.previous.filter(|&p| {
        p != target.slot && !route.slot(p).unhealthy && !route.slot(p).backends.is_empty()
    });
    match previous {
        Some(previous) => {
            target.slot = previous;
            target.backend_start = route.slot(previous).next_start();
            target.attempts_on_slot = 0;
            true
        }
        None => false,
    }
}

/// A request's in-flight count, kept on the slot its target is on.
pub(super) struct Counted {
    slot: usize,
    pub load: LoadGuard,
}

impl Counted {
    fn on(route: &Route, slot: usize) -> Counted {
        Counted {
            slot,
            load: route.slot(slot).load.request(),
        }
    }

    /// Moves the count when a retry moved the target to another slot.
    fn follow(&mut self, route: &Route, slot: usize) {
        if slot != self.slot {
            *self = Counted::on(route, slot);
        }
    }
}
