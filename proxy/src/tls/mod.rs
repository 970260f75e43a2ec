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
//! - [`tls_settings`] hands pingora only that resolver. pingora's own
//!   `TlsSettings::build` panics on an unreadable certificate file, so the
//!   files never reach it.

mod certs;
mod reload;
mod resolver;
mod store;

use std::sync::Arc;

use pingora::listeners::tls::TlsSettings;

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

/// pingora listener settings that take every certificate from `resolver`,
/// offer TLS 1.2 and 1.3 (pingora's choice in `build`) and ALPN `h2` then
/// `http/1.1`.
pub fn tls_settings(resolver: Arc<SniResolver>) -> TlsSettings {
    // The rustls `intermediate` only stores the two paths; with a resolver set,
    // `build` neither reads them nor asserts on them (pingora-core 0.9.1).
    let mut settings = TlsSettings::intermediate("", "")
        .expect("pingora's rustls TlsSettings::intermediate does not fail");
    settings.set_cert_resolver(resolver);
    settings.enable_h2();
    settings
}
