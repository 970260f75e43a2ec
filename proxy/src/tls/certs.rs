//! Reading one `{ cert, key }` pair of `[tls] certificates` into a key rustls
//! can serve, with the DNS names and validity dates of its leaf certificate.
//!
//! The files come from outside, so every failure is a [`CertError`] that names
//! the file, says what is wrong and what was expected; no file content makes
//! this panic. PEM is parsed by `rustls-pki-types`, X.509 by `x509-parser`,
//! keys by rustls's ring provider: none of it by hand.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::sign::CertifiedKey;
use rustls::InconsistentKeys;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use switchyard_conf::CertificateConfig;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Why a certificate or key file cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error(
        "[tls] lists no certificates (expected at least one {{ cert = \"...\", key = \"...\" }})"
    )]
    NoCertificates,
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not valid PEM: {reason}", path.display())]
    BadPem { path: PathBuf, reason: String },
    #[error("{} holds no certificate (expected a PEM block 'BEGIN CERTIFICATE')", path.display())]
    NoCertificate { path: PathBuf },
    #[error(
        "{} holds a private key but no certificate (expected a PEM block 'BEGIN CERTIFICATE'; \
         are `cert` and `key` swapped?)",
        path.display()
    )]
    KeyInCertFile { path: PathBuf },
    #[error(
        "{} holds no private key (expected an unencrypted PKCS#8, RSA or EC PEM block: \
         'BEGIN PRIVATE KEY', 'BEGIN RSA PRIVATE KEY' or 'BEGIN EC PRIVATE KEY')",
        path.display()
    )]
    NoPrivateKey { path: PathBuf },
    #[error(
        "{} holds a certificate but no private key (expected a PKCS#8, RSA or EC PEM block; \
         are `cert` and `key` swapped?)",
        path.display()
    )]
    CertInKeyFile { path: PathBuf },
    #[error("{}: the first certificate is not a valid X.509 certificate: {reason}", path.display())]
    BadCertificate { path: PathBuf, reason: String },
    #[error(
        "{} holds a private key that cannot be used: {reason} \
         (expected an RSA, ECDSA P-256/P-384 or Ed25519 key)",
        path.display()
    )]
    UnsupportedKey { path: PathBuf, reason: String },
    #[error(
        "the key {} does not belong to the certificate {} (its public key differs from the \
         certificate's: was the certificate renewed with a new key?)",
        key.display(),
        cert.display()
    )]
    KeyMismatch { cert: PathBuf, key: PathBuf },
}

/// One certificate pair, checked and ready to serve.
#[derive(Clone)]
pub(crate) struct LoadedCert {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// The leaf's DNS subjectAltNames, lower-case, without a trailing dot, in
    /// certificate order. `*.example.com` entries are kept as written.
    pub names: Vec<String>,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    pub key: Arc<CertifiedKey>,
}

/// Reads and checks one pair. An expired or not yet valid certificate is
/// logged and accepted: refusing it would take the whole listener down, while
/// serving it leaves the choice to each client.
pub(crate) fn load_pair(config: &CertificateConfig) -> Result<LoadedCert, CertError> {
    let cert_pem = read(&config.cert)?;
    let key_pem = read(&config.key)?;
    let loaded = from_pem(&config.cert, &cert_pem, &config.key, &key_pem)?;
    warn_if_outside_validity(&loaded, unix_now());
    Ok(loaded)
}

fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|source| CertError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The pure part of [`load_pair`]: the file contents in, a checked pair out.
pub(crate) fn from_pem(
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
) -> Result<LoadedCert, CertError> {
    let chain = parse_chain(cert_path, cert_pem)?;
    let key = parse_key(key_path, key_pem)?;
    let leaf = chain.first().ok_or_else(|| CertError::NoCertificate {
        path: cert_path.to_path_buf(),
    })?;
    let leaf_info = parse_leaf(cert_path, leaf)?;
    let certified = certified_key(cert_path, chain, key_path, key)?;
    Ok(LoadedCert {
        cert_path: cert_path.to_path_buf(),
        key_path: key_path.to_path_buf(),
        names: leaf_info.names,
        not_before: leaf_info.not_before,
        not_after: leaf_info.not_after,
        key: Arc::new(certified),
    })
}

/// Every `CERTIFICATE` block, in file order: the leaf first, then the
/// intermediates, as rustls sends them.
fn parse_chain(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_pem(path, e))?;
    if chain.is_empty() {
        let path = path.to_path_buf();
        return Err(if PrivateKeyDer::from_pem_slice(pem).is_ok() {
            CertError::KeyInCertFile { path }
        } else {
            CertError::NoCertificate { path }
        });
    }
    Ok(chain)
}

/// The first private key block of the file; other blocks are skipped.
fn parse_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, CertError> {
    match PrivateKeyDer::from_pem_slice(pem) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => {
            let path = path.to_path_buf();
            let holds_cert = matches!(CertificateDer::pem_slice_iter(pem).next(), Some(Ok(_)));
            Err(if holds_cert {
                CertError::CertInKeyFile { path }
            } else {
                CertError::NoPrivateKey { path }
            })
        }
        Err(e) => Err(bad_pem(path, e)),
    }
}

/// pki-types prints markers and lines as byte arrays; say it in words.
fn bad_pem(path: &Path, error: pem::Error) -> CertError {
    let reason = match error {
        // `end_marker` holds the block's label, `CERTIFICATE` say.
        pem::Error::MissingSectionEnd { end_marker } => {
            let label = String::from_utf8_lossy(&end_marker);
            let label = label.trim();
            format!("the block 'BEGIN {label}' has no line '-----END {label}-----'")
        }
        pem::Error::IllegalSectionStart { line } => format!(
            "malformed begin line '{}'",
            String::from_utf8_lossy(&line).trim()
        ),
        pem::Error::Base64Decode(e) => format!("a block's base64 content is damaged ({e})"),
        other => other.to_string(),
    };
    CertError::BadPem {
        path: path.to_path_buf(),
        reason,
    }
}

struct LeafInfo {
    names: Vec<String>,
    not_before: i64,
    not_after: i64,
}

fn parse_leaf(path: &Path, leaf: &CertificateDer<'_>) -> Result<LeafInfo, CertError> {
    let bad = |reason: String| CertError::BadCertificate {
        path: path.to_path_buf(),
        reason,
    };
    let (_, cert) = X509Certificate::from_der(leaf.as_ref()).map_err(|e| bad(e.to_string()))?;
    let names = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DNSName(dns) => Some(normalize_name(dns)),
                _ => None,
            })
            .collect(),
        // No SAN at all is fine: such a certificate can still be the default.
        Ok(None) => Vec::new(),
        Err(e) => return Err(bad(format!("its subjectAltName extension: {e}"))),
    };
    let validity = cert.validity();
    Ok(LeafInfo {
        names,
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
    })
}

/// How names are compared everywhere in `tls`: DNS is case-insensitive and a
/// trailing dot names the same host.
pub(crate) fn normalize_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn certified_key(
    cert_path: &Path,
    chain: Vec<CertificateDer<'static>>,
    key_path: &Path,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, CertError> {
    // The provider the listeners' ServerConfig is built with
    // (`tls::server_config`), so the signing key fits it.
    let signing_key = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| CertError::UnsupportedKey {
            path: key_path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // `Unknown`: the key cannot tell its public half; rustls's own
        // `CertifiedKey::from_der` accepts that too (ring's keys always can).
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(CertError::KeyMismatch {
                cert: cert_path.to_path_buf(),
                key: key_path.to_path_buf(),
            })
        }
        Err(e) => Err(CertError::BadCertificate {
            path: cert_path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

fn warn_if_outside_validity(cert: &LoadedCert, now: i64) {
    if now < cert.not_before {
        tracing::warn!(
            cert = %cert.cert_path.display(),
            not_before = %rfc3339(cert.not_before),
            "certificate is not valid yet; serving it anyway",
        );
    } else if now > cert.not_after {
        tracing::warn!(
            cert = %cert.cert_path.display(),
            not_after = %rfc3339(cert.not_after),
            "certificate has expired; serving it anyway",
        );
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `2026-05-01T12:00:00Z`; the bare number for a date RFC 3339 cannot write
/// (X.509 allows none, but the value comes from a file).
pub(crate) fn rfc3339(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_tests::tls::TestCa;

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Self {
            Self {
                dir: tempfile::tempdir().unwrap(),
            }
        }

        fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
            let path = self.dir.path().join(name);
            std::fs::write(&path, contents).unwrap();
            path
        }

        fn missing(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }
    }

    fn load(cert: &Path, key: &Path) -> Result<LoadedCert, CertError> {
        load_pair(&CertificateConfig {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        })
    }

    /// The error, after checking that its message names `path`.
    fn load_err(cert: &Path, key: &Path, path: &Path) -> CertError {
        let err = load(cert, key).err().expect("loading must fail");
        let message = err.to_string();
        assert!(
            message.contains(&path.display().to_string()),
            "{message:?} names {}",
            path.display()
        );
        err
    }

    const GOOD_NAMES: &[&str] = &["good.test", "*.Good.Test"];

    #[test]
    fn a_good_pair_loads_with_its_names_and_chain() {
        let files = Files::new();
        let issued = TestCa::new().issue(GOOD_NAMES);
        let config = issued.write(files.dir.path(), "good");
        let loaded = load_pair(&config).unwrap();
        assert_eq!(loaded.names, ["good.test", "*.good.test"]);
        assert_eq!(loaded.key.cert.len(), 2, "leaf and CA, as in the file");
        assert_eq!(loaded.key.cert[0].as_ref(), issued.der());
        assert!(loaded.not_before < loaded.not_after);
    }

    #[test]
    fn a_missing_file_is_named() {
        let files = Files::new();
        let issued = TestCa::new().issue(GOOD_NAMES);
        let key = files.write("x.key", &issued.key_pem);
        let cert = files.missing("x.pem");
        let err = load_err(&cert, &key, &cert);
        assert!(matches!(err, CertError::Read { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "cannot read {}: No such file or directory (os error 2)",
                cert.display()
            )
        );

        let cert = files.write("y.pem", &issued.cert_pem);
        let key = files.missing("y.key");
        let err = load_err(&cert, &key, &key);
        assert!(matches!(err, CertError::Read { .. }), "{err}");
    }

    #[test]
    fn a_certificate_file_without_a_certificate() {
        let files = Files::new();
        let issued = TestCa::new().issue(GOOD_NAMES);
        let key = files.write("x.key", &issued.key_pem);
        for (name, contents) in [
            ("empty.pem", &b""[..]),
            ("text.pem", b"this is not a certificate\n"),
            ("binary.pem", &[0u8, 0xff, 0x30, 0x82, 0x01, 0x0a, 0x80][..]),
        ] {
            let cert = files.write(name, contents);
            let err = load_err(&cert, &key, &cert);
            assert!(
                matches!(err, CertError::NoCertificate { .. }),
                "{name}: {err}"
            );
            assert!(err.to_string().contains("BEGIN CERTIFICATE"), "{err}");
        }
    }

    #[test]
    fn a_certificate_file_holding_only_a_key() {
        let files = Files::new();
        let issued = TestCa::new().issue(GOOD_NAMES);
        let cert = files.write("swapped.pem", &issued.key_pem);
        let key = files.write("swapped.key", &issued.key_pem);
        let err = load_err(&cert, &key, &cert);
        assert!(matches!(err, CertError::KeyInCertFile { .. }), "{err}");
        assert!(err.to_string().contains("swapped?"), "{err}");
    }

    #[test]
    fn a_key_file_without_a_key() {
        let files = Files::new();
        let issued = TestCa::new().issue(GOOD_NAMES);
        let cert = files.write("x.pem", &issued.cert_pem);
        for (name, contents) in [
            ("empty.key", &b""[..]),
            ("text.key", b"hunter2\n"),
            ("encrypted.key", b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"),
        ] {
            let key = files.write(name, contents);
            let err = load_err(&cert, &key, &key);
            assert!(matches!(err, CertError::NoPrivateKey { .. }), "{name}: {err}");
            assert!(err.to_string().contains("PKCS#8, RSA or EC"), "{err}");
        }
    }

    #[test]
    fn a_key_file_holding_a_certificate() {
        let files = Files::new();
        let issued = TestCa::new().issue(GOOD_NAMES);
        let cert = files.write("x.pem", &issued.cert_pem);
        let key = files.write("x.key", &issued.cert_pem);
        let err = load_err(&cert, &key, &key);
        assert!(matches!(err, CertError::CertInKeyFile { .. }), "{err}");
    }

    #[test]
    fn a_key_of_another_certificate() {
        let files = Files::new();
        let ca = TestCa::new();
        let mine = ca.issue(GOOD_NAMES);
        let other = ca.issue(GOOD_NAMES);
        let cert = files.write("mine.pem", &mine.cert_pem);
        let key = files.write("other.key", &other.key_pem);
        let err = load_err(&cert, &key, &cert);
        assert!(matches!(err, CertError::KeyMismatch { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "the key {} does not belong to the certificate {} (its public key differs from \
                 the certificate's: was the certificate renewed with a new key?)",
                key.display(),
                cert.display()
            )
        );
    }

    #[test]
    fn damaged_pem() {
        let files = Files::new();
        let issued = TestCa::new().issue(GOOD_NAMES);
        let key = files.write("x.key", &issued.key_pem);

        let unterminated = issued.cert_pem.replace("-----END CERTIFICATE-----", "");
        let cert = files.write("unterminated.pem", unterminated);
        let err = load_err(&cert, &key, &cert);
        assert!(matches!(err, CertError::BadPem { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("'BEGIN CERTIFICATE' has no line '-----END CERTIFICATE-----'"),
            "{err}"
        );

        let cert = files.write(
            "base64.pem",
            "-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n",
        );
        let err = load_err(&cert, &key, &cert);
        assert!(matches!(err, CertError::BadPem { .. }), "{err}");
    }

    #[test]
    fn a_pem_block_that_is_no_certificate() {
        let files = Files::new();
        let issued = TestCa::new().issue(GOOD_NAMES);
        let key = files.write("x.key", &issued.key_pem);
        let cert = files.write(
            "junk.pem",
            "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
        );
        let err = load_err(&cert, &key, &cert);
        assert!(matches!(err, CertError::BadCertificate { .. }), "{err}");
    }

    #[test]
    fn a_key_rustls_cannot_use() {
        let files = Files::new();
        let issued = TestCa::new().issue(GOOD_NAMES);
        let cert = files.write("x.pem", &issued.cert_pem);
        let key = files.write(
            "junk.key",
            "-----BEGIN PRIVATE KEY-----\naGVsbG8gd29ybGQ=\n-----END PRIVATE KEY-----\n",
        );
        let err = load_err(&cert, &key, &key);
        assert!(matches!(err, CertError::UnsupportedKey { .. }), "{err}");
        assert!(err.to_string().contains("expected an RSA, ECDSA"), "{err}");
    }

    /// Every cut and many single-byte changes of a good pair: an error or a
    /// pair, never a panic.
    #[test]
    fn no_file_content_panics() {
        let issued = TestCa::new().issue(GOOD_NAMES);
        let cert = format!("{}{}", issued.cert_pem, issued.ca_pem).into_bytes();
        let key = issued.key_pem.into_bytes();
        let (cert_path, key_path) = (Path::new("c.pem"), Path::new("k.key"));
        for len in 0..=cert.len() {
            let _ = from_pem(cert_path, &cert[..len], key_path, &key);
        }
        for len in 0..=key.len() {
            let _ = from_pem(cert_path, &cert, key_path, &key[..len]);
        }
        for (i, replacement) in (0..cert.len()).flat_map(|i| [(i, b'A'), (i, b'/'), (i, b'\n')]) {
            let mut changed = cert.clone();
            changed[i] = replacement;
            let _ = from_pem(cert_path, &changed, key_path, &key);
        }
        for (i, replacement) in (0..key.len()).flat_map(|i| [(i, b'A'), (i, b'-')]) {
            let mut changed = key.clone();
            changed[i] = replacement;
            let _ = from_pem(cert_path, &cert, key_path, &changed);
        }
    }

    #[test]
    fn dates_print_as_rfc3339_or_as_the_number() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(-631_152_000), "1950-01-01T00:00:00Z");
        assert_eq!(rfc3339(i64::MAX), i64::MAX.to_string());
    }
}
