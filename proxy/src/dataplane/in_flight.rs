//! Requests being served, counted for a graceful stop.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Requests being served right now, for a graceful stop.
#[derive(Debug, Default)]
pub struct InFlight(AtomicUsize);

impl InFlight {
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// Counts one request while it lives; dropped with the request's context,
/// whichever way the request ends.
pub struct InFlightGuard(Arc<InFlight>);

impl InFlightGuard {
    pub fn new(counter: &Arc<InFlight>) -> InFlightGuard {
        counter.0.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(counter.clone())
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::AcqRel);
    }
}
