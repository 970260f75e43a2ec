//! Health: each backend's state machine, the slot health derived from it,
//! and what a route does when a slot's health changes. All pure; the
//! probes that feed it and the Controller shell do the I/O; the core (`crate::core`) applies it.
//! `LIFECYCLE.md` beside this file draws the states; `schedule.rs` says
//! when backends are probed and `changes.rs` when the core publishes
//! what their checks changed.

mod backend;
pub mod body;
pub mod book;
pub mod changes;
pub mod monitor;
pub mod probe;
mod route;
pub mod schedule;
mod slot;

pub use backend::{BackendHealth, BackendState, Check, Failure, Thresholds, Transition};
pub use book::{HealthBook, Observed};
pub use changes::HealthChanges;
pub use route::{apply_health, failover_order, Reaction};
pub use slot::{slot_health, SlotHealth, StateCounts};
