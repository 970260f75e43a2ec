//! switchyard's data plane and binary: pingora proxying with the published
//! routing table, the process lifecycle, the CLI and the demo.

pub mod access_log;
pub mod acme;
pub mod activation;
pub mod admin_client;
pub mod admin_http;
pub mod cli;
pub mod dataplane;
pub mod demo;
pub mod exporter;
pub mod hop_by_hop;
pub mod limits;
pub mod logging;
pub mod server;
pub mod tls;
