//! switchyard's control plane: the immutable [`RoutingTable`] the data plane
//! reads, the one Controller task that changes it, the admin protocol and its
//! Unix socket, the state file and the history.

pub mod admin_server;
pub mod cluster;
pub mod controller;
pub mod core;
pub mod decisions;
pub mod health;
pub mod history;
pub mod metrics;
pub mod names;
pub mod notify;
pub mod percent;
pub mod protocol;
pub mod rollout;
pub mod series;
mod stable_hash;
pub mod state_file;
pub mod table;
pub mod tls_client;

pub use controller::{Controller, ControllerHandle, SharedTable};
pub use table::{Route, RoutingTable, Slot};
