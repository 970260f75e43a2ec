//! PEM files the config names (a webhook's or a backend's `ca`, a client
//! certificate and its key): read when the config is loaded and checked
//! there, so a file that cannot be used is a `check` error with its place,
//! not a failure at the first connection.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate file far larger than any chain or CA bundle is a wrong
/// path (a log, a disk image), not something to read into memory.
const MAX_PEM_BYTES: u64 = 4 * 1024 * 1024;

/// The file's bytes, refused past [`MAX_PEM_BYTES`].
fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    let shown = path.display();
    let len = std::fs::metadata(path)
        .map_err(|e| format!("cannot read {shown}: {e}"))?
        .len();
    if len > MAX_PEM_BYTES {
        return Err(format!("{shown} has {len} bytes, more than 4 MiB"));
    }
    std::fs::read(path).map_err(|e| format!("cannot read {shown}: {e}"))
}

/// PEM certificates (a CA bundle or a chain), checked to hold at least one
/// and nothing unreadable.
pub(crate) fn read_certificates(path: &Path) -> Result<Arc<[u8]>, String> {
    let shown = path.display();
    let pem = read_bounded(path)?;
    let mut found = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        cert.map_err(|e| format!("{shown} is not PEM certificates: {e}"))?;
        found += 1;
    }
    if found == 0 {
        return Err(format!(
            "{shown} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        ));
    }
    Ok(Arc::from(pem))
}

/// A PEM private key (PKCS#8, PKCS#1 or SEC1).
pub(crate) fn read_private_key(path: &Path) -> Result<Arc<[u8]>, String> {
    let shown = path.display();
    let pem = read_bounded(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        format!("{shown} holds no usable PEM private key (-----BEGIN PRIVATE KEY-----): {e}")
    })?;
    Ok(Arc::from(pem))
}
