//! `[cluster]`: the runtime decisions shared with other nodes through etcd.
//! Work in progress on the `cluster-groundwork` branch: the keys and the
//! store (reads, compare-and-swap writes, a watch) exist; the Controller
//! does not use them yet. See `docs/cluster-design.md`.

mod keys;
pub mod leader;
pub mod store;

pub use keys::Keys;
