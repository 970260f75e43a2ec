//! The certificates of the `[tls]` listener: reading and checking the PEM
//! files, choosing one per handshake by SNI, and swapping them on reload.
//!
//! - [`CertStore::load`] reads every `{ cert, key }` pair of the config and
//!   checks it; a bad file is a [`CertError`] naming it, never a panic.
//! - [`CertStore::choose`] picks a certificate for an SNI name: exact name,
//!   then wildcard, then the first certificate of the config.
//! - [`SniResolver`] is the rustls resolver holding the current store;
//!   [`SniResolver::replace`] swaps in a reloaded one for new handshakes.
//! - [`keep_current`] reloads the store when a file or the config changes.
//! - [`acceptor`] hands pingora a rustls config built here around that
//!   resolver. pingora's own `TlsSettings::build` panics on an unreadable
//!   certificate file (so the files never reach it) and cannot offer the
//!   ALPN protocol TLS-ALPN-01 needs.

mod certs;
mod reload;
mod resolver;
mod store;

use std::sync::Arc;

use pingora::listeners::tls::Acceptor;

pub use certs::CertError;
pub use reload::{keep_current, load_at_start, served};

/// Checks a certificate chain and key as the TLS store loads them; their
/// validity (Unix seconds, from and to) when they would serve.
pub fn check_pair(
    pair: &switchyard_conf::CertificateConfig,
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<(i64, i64), CertError> {
    let loaded = certs::from_pem(&pair.cert, cert_pem, &pair.key, key_pem)?;
    Ok((loaded.not_before, loaded.not_after))
}
pub use resolver::SniResolver;
pub use store::{CertStore, CertSummary};

/// The ALPN protocol of a TLS-ALPN-01 validation (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The rustls config of the `[tls]` listeners: every certificate from
/// `resolver`, TLS 1.2 and 1.3, ALPN `h2` then `http/1.1` — and
/// `acme-tls/1`, which only an ACME CA validating a TLS-ALPN-01 challenge
/// asks for alone (the resolver then shows that challenge's certificate).
/// pingora's `TlsSettings::build` makes the same config but cannot add
/// that protocol.
pub fn server_config(resolver: Arc<SniResolver>) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
    Arc::new(config)
}

/// The listeners' acceptor, on [`server_config`].
pub fn acceptor(resolver: Arc<SniResolver>) -> Acceptor {
    Acceptor::from_server_config(server_config(resolver))
}
