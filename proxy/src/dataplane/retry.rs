//! What may follow an attempt at a backend that failed.
//!
//! One value, [`Retry`], says it, decided where the attempt failed from
//! what the attempt had used up: a connection that may have gone stale in
//! the pool, the request header, body bytes, the client's response. An
//! attempt starts with the most it could allow (see
//! [`Connection::retry`](super::connect::Connection::retry)), the exchange
//! narrows it as the request goes out ([`after_header`]) and drops it once
//! a retry could run the request twice or the client saw the answer begin;
//! a failure then ends the request (`Exchange::Failed`).

use std::net::SocketAddr;

use switchyard_control::table::FailureKind;

use super::downstream::Downstream;
use super::pick::{advance, Pick};
use super::Forwarder;

/// How a request the backend dropped before answering may go again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Retry {
    /// The connection came from the pool and the backend had closed it
    /// while it sat idle: that shows as a failure to send the header or an
    /// empty answer, and says nothing about the backend. Once more, on a
    /// new connection (to the slot's next backend) whatever the route's
    /// `retries` (the attempt still counts towards them); neither counted
    /// as a failure nor reported.
    Fresh,
    /// The backend itself dropped the request: counted, reported to the
    /// health checks, and tried like a failed connect ([`advance`]: the
    /// slot's next backend, then the previous slot) while the route's
    /// `retries` last.
    Elsewhere,
}

/// What a drop allows once the request header went out. The backend may
/// have acted on a request it got whole, so only a request that can safely
/// run twice may go again: an idempotent method without a body (RFC 9110
/// §9.2.2). Before the header went out, any method may (the backend cannot
/// have acted on a request it did not get whole).
pub(super) fn after_header(retry: Retry, session: &mut Downstream) -> Option<Retry> {
    replayable(session).then_some(retry)
}

fn replayable(session: &mut Downstream) -> bool {
    use http::Method;
    let idempotent = matches!(
        session.req_header().method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    );
    idempotent && session.is_body_empty() && !session.is_upgrade_req()
}

impl Forwarder {
    /// A backend dropped a request before answering ([`Retry::Elsewhere`]):
    /// counted, told to the health checks, and `target` moved on. `false`
    /// when no retry is left.
    pub(super) fn dropped(
        &self,
        pick: &mut Pick<'_>,
        backend: SocketAddr,
        e: &pingora::Error,
    ) -> bool {
        let route = pick.route;
        let slot = route.slot(pick.target.slot);
        slot.load.upstream_failed(FailureKind::Dropped);
        tracing::warn!(route = &*route.name, slot = &*slot.name, %backend, "upstream dropped the request: {e}");
        self.controller.connect_failed(
            &route.name,
            &slot.name,
            backend,
            format!("dropped the connection before answering: {e}"),
        );
        if advance(route, &mut pick.target) {
            return true;
        }
        tracing::error!(route = &*route.name, "upstream failed: {e}");
        false
    }
}
