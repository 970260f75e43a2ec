//! `[cluster]`: the runtime decisions shared with other nodes through etcd.
//! This module is the etcd side alone: where things live (`keys`), every
//! decision read, written by compare-and-swap and watched (`store`), and
//! the leader key under a lease (`leader`). The Controller drives them
//! (`controller/cluster.rs`); `docs/cluster.md` tells the operator's view.

mod keys;
pub mod leader;
pub mod store;

pub use keys::Keys;
