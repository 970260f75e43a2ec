//! `[route.slots]`: each slot's backends and the protocol they speak.
//!
//! ```toml
//! [route.slots]
//! blue = ["127.0.0.1:3001"]
//! green = { backends = ["127.0.0.1:3002"], protocol = "h2c" }
//! secure = { backends = ["10.0.0.5:8443"], protocol = "https", tls_server_name = "app.internal", ca = "internal-ca.pem" }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use toml_edit::{Item, TableLike};

use crate::model::{BackendName, BackendSpec, BackendTlsConfig, ClientIdentity};
use crate::reader::{At, Reader, Span};
use crate::schema::{is_slot_name, resolve, sub_table};

const SLOT_KEYS: &[&str] = &[
    "backends",
    "protocol",
    "tls_server_name",
    "ca",
    "client_cert",
    "client_key",
];
/// The keys that only a `protocol = "https"` slot may have.
const TLS_KEYS: &[&str] = &["tls_server_name", "ca", "client_cert", "client_key"];

/// What `[route.slots]` of one route says.
pub(crate) struct Slots {
    /// The valid slots and their backends, each list non-empty.
    pub slots: BTreeMap<String, Vec<SocketAddr>>,
    /// Every slot the file declares, valid or not.
    pub declared: Vec<String>,
    pub h2c_slots: BTreeSet<String>,
    pub https_slots: BTreeMap<String, BackendTlsConfig>,
    /// The valid slots' backends as the file lists them.
    pub backends: BTreeMap<String, Vec<BackendSpec>>,
}

/// The protocol a slot's backends speak.
enum Protocol {
    Http1,
    H2c,
    Https,
}

pub(crate) fn read_slots(
    reader: &mut Reader,
    t: &dyn TableLike,
    span: &Span,
    cx: &str,
    base_dir: &Path,
) -> Slots {
    let mut read = Slots {
        slots: BTreeMap::new(),
        declared: Vec::new(),
        h2c_slots: BTreeSet::new(),
        https_slots: BTreeMap::new(),
        backends: BTreeMap::new(),
    };
    let Some((st, sspan)) = sub_table(reader, t, "slots", cx) else {
        if t.get("slots").is_none() {
            reader.error(
                span,
                format!("{cx} needs [route.slots], e.g. blue = [\"127.0.0.1:3000\"]"),
            );
        }
        return read;
    };
    read.declared = st.iter().map(|(k, _)| k.to_string()).collect();
    if read.declared.is_empty() {
        reader.error(
            &sspan,
            format!(
                "[route.slots] of {cx} has no slots; add one, e.g. blue = [\"127.0.0.1:3000\"]"
            ),
        );
    }
    for name in read.declared.clone() {
        let key_span = st
            .key(&name)
            .and_then(|k| k.span())
            .unwrap_or(sspan.clone());
        if !is_slot_name(&name) {
            reader.error(
                &key_span,
                format!("slot name {name:?} of {cx} may use only letters, digits, '_' and '-'"),
            );
            continue;
        }
        let what = format!("slot {name:?} of {cx}");
        // `blue = ["IP:port", ...]`, or with settings:
        // `green = { backends = [...], protocol = "h2c" }`.
        let (table, key): (&dyn TableLike, &str) = match st.get(&name).and_then(Item::as_table_like)
        {
            Some(settings) => {
                reader.check_keys(settings, SLOT_KEYS, &what);
                match read_protocol(reader, settings, &what) {
                    Protocol::Http1 => refuse_tls_keys(reader, settings, &what),
                    Protocol::H2c => {
                        refuse_tls_keys(reader, settings, &what);
                        read.h2c_slots.insert(name.clone());
                    }
                    Protocol::Https => {
                        let tls = read_backend_tls(reader, settings, &what, base_dir);
                        read.https_slots.insert(name.clone(), tls);
                    }
                }
                if settings.get("backends").is_none() {
                    reader.error(
                        &Reader::span_of(st, &name, &key_span),
                        format!("{what} needs `backends = [\"IP:port\" or \"host:port\", ...]`"),
                    );
                    continue;
                }
                (settings, "backends")
            }
            None => (st, name.as_str()),
        };
        let Some(entries) = reader.string_list(table, key, &what) else {
            continue;
        };
        if entries.is_empty() {
            reader.error(
                &Reader::span_of(table, key, &key_span),
                format!("{what} has no backends; list at least one IP:port or host:port"),
            );
            continue;
        }
        let list_len = table
            .get(key)
            .and_then(Item::as_array)
            .map_or(0, |a| a.len());
        let specs: Vec<BackendSpec> = entries
            .iter()
            .filter_map(|entry| read_backend(reader, entry, &what))
            .collect();
        if specs.len() == list_len {
            let literals = specs
                .iter()
                .filter_map(|spec| match spec {
                    BackendSpec::Address(addr) => Some(*addr),
                    BackendSpec::Name(_) => None,
                })
                .collect();
            read.slots.insert(name.clone(), literals);
            read.backends.insert(name, specs);
        }
    }
    read
}

fn read_protocol(reader: &mut Reader, settings: &dyn TableLike, what: &str) -> Protocol {
    let Some(protocol) = reader.string(settings, "protocol", what) else {
        return Protocol::Http1;
    };
    match protocol.value.as_str() {
        "http1" => Protocol::Http1,
        "h2c" => Protocol::H2c,
        "https" => Protocol::Https,
        other => {
            reader.error(
                &protocol.span,
                format!(
                    "`protocol` of {what} must be \"http1\" (the default), \"h2c\" (HTTP/2 without TLS, with prior knowledge) or \"https\" (TLS; HTTP/2 or HTTP/1.1 by ALPN), not {other:?}"
                ),
            );
            Protocol::Http1
        }
    }
}

/// TLS settings on a slot that does not speak TLS would be silently
/// ignored: refused instead.
fn refuse_tls_keys(reader: &mut Reader, settings: &dyn TableLike, what: &str) {
    for key in TLS_KEYS {
        if settings.get(key).is_some() {
            reader.error(
                &Reader::span_of(settings, key, &(0..0)),
                format!("`{key}` of {what} needs `protocol = \"https\"`: it says how TLS to the backends is checked"),
            );
        }
    }
}

fn read_backend_tls(
    reader: &mut Reader,
    settings: &dyn TableLike,
    what: &str,
    base_dir: &Path,
) -> BackendTlsConfig {
    let server_name = reader
        .string(settings, "tls_server_name", what)
        .and_then(|name| match rustls_pki_types::ServerName::try_from(name.value.as_str()) {
            Ok(_) => Some(name.value),
            Err(_) => {
                reader.error(
                    &name.span,
                    format!(
                        "`tls_server_name` of {what} must be a DNS name or an IP address, like \"app.internal\", not {:?}",
                        name.value
                    ),
                );
                None
            }
        });
    let file = |reader: &mut Reader, key: &str, read: fn(&Path) -> Result<Arc<[u8]>, String>| {
        let path = reader.string(settings, key, what)?;
        match read(&resolve(base_dir, &path.value)) {
            Ok(pem) => Some(At {
                value: pem,
                span: path.span,
            }),
            Err(problem) => {
                reader.error(&path.span, format!("`{key}` of {what}: {problem}"));
                None
            }
        }
    };
    let ca = file(reader, "ca", crate::pem::read_certificates).map(|ca| ca.value);
    let cert = file(reader, "client_cert", crate::pem::read_certificates);
    let key = file(reader, "client_key", crate::pem::read_private_key);
    let client_identity = match (cert, key) {
        (Some(cert), Some(key)) => match identity_problem(&cert.value, &key.value) {
            None => Some(ClientIdentity {
                cert_chain: cert.value,
                key: key.value,
            }),
            Some(problem) => {
                reader.error(&key.span, format!("`client_key` of {what}: {problem}"));
                None
            }
        },
        (Some(cert), None) if settings.get("client_key").is_none() => {
            reader.error(
                &cert.span,
                format!(
                    "`client_cert` of {what} needs `client_key`, the certificate's private key"
                ),
            );
            None
        }
        (None, Some(key)) if settings.get("client_cert").is_none() => {
            reader.error(
                &key.span,
                format!(
                    "`client_key` of {what} needs `client_cert`, the certificate it belongs to"
                ),
            );
            None
        }
        _ => None,
    };
    BackendTlsConfig {
        server_name,
        ca,
        client_identity,
    }
}

/// Why a client certificate and key cannot be used together, if they
/// cannot: rustls checks the key's type and that it matches the
/// certificate.
fn identity_problem(cert_chain: &[u8], key: &[u8]) -> Option<String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_chain)
        .filter_map(Result::ok)
        .collect();
    let key = PrivateKeyDer::from_pem_slice(key).ok()?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(rustls::RootCertStore::empty());
    builder
        .with_client_auth_cert(chain, key)
        .err()
        .map(|e| format!("cannot be used with `client_cert`: {e}"))
}

/// `IP:port`, or `host:port` with a DNS name (letters, digits, `-`, `_`
/// and dots; `_` because container names have them).
fn read_backend(reader: &mut Reader, entry: &At<String>, what: &str) -> Option<BackendSpec> {
    if let Ok(addr) = entry.value.parse::<SocketAddr>() {
        return Some(BackendSpec::Address(addr));
    }
    match parse_name(&entry.value) {
        Some((host, port)) => {
            let (line, column) = reader.line_of(&entry.span);
            Some(BackendSpec::Name(BackendName {
                host,
                port,
                line,
                column,
            }))
        }
        None => {
            reader.error(
                &entry.span,
                format!(
                    "backend {:?} of {what} is neither IP:port (\"127.0.0.1:3000\", \"[::1]:3000\") nor host:port (\"app-green:3000\")",
                    entry.value
                ),
            );
            None
        }
    }
}

/// `host:port` with a usable DNS name and a port from 1 to 65535; the host
/// lower-cased and without a trailing dot.
pub(crate) fn parse_name(text: &str) -> Option<(String, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|&p| p != 0)?;
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let labels_ok = host.split('.').all(label_ok);
    // All digits and dots is a mistyped IPv4 address, not a name.
    let numeric = host.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    (host.len() <= 253 && labels_ok && !numeric).then_some((host, port))
}
