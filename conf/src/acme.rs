//! `[tls.acme]`: switchyard orders its own certificates.
//!
//! ```toml
//! [tls.acme]
//! email = "ops@example.com"
//! # directory = "https://acme-v02.api.letsencrypt.org/directory"   (the default)
//! # ca_roots = "private-ca.pem"      the CA's own HTTPS is checked against these
//! # hosts = ["app.example.com"]      default: every route's exact hosts
//! # challenges = ["http-01", "tls-alpn-01"]   tried in turn, one per attempt (the default)
//! ```

use std::path::Path;

use toml_edit::TableLike;

use crate::model::{AcmeChallenge, AcmeConfig, HostPattern, LETS_ENCRYPT};
use crate::reader::{Reader, Span};
use crate::schema::{resolve, ReadRoute};

const ACME_KEYS: &[&str] = &["email", "directory", "ca_roots", "hosts", "challenges"];
const CX: &str = "[tls.acme]";

pub(crate) fn read_acme(
    reader: &mut Reader,
    t: &dyn TableLike,
    _span: &Span,
    base_dir: &Path,
) -> AcmeConfig {
    reader.check_keys(t, ACME_KEYS, CX);
    let email = reader.string(t, "email", CX).and_then(|email| {
        let parts = email.value.split_once('@');
        let usable = parts.is_some_and(|(user, domain)| {
            !user.is_empty() && domain.contains('.') && !email.value.contains([' ', ',', '<', '>'])
        });
        if usable {
            Some(email.value)
        } else {
            reader.error(
                &email.span,
                format!(
                    "`email` of {CX} must be an address like \"ops@example.com\", not {:?}",
                    email.value
                ),
            );
            None
        }
    });
    let directory = match reader.string(t, "directory", CX) {
        None => LETS_ENCRYPT.to_string(),
        Some(url) => {
            let https = url
                .value
                .parse::<http::Uri>()
                .is_ok_and(|uri| uri.scheme_str() == Some("https") && uri.host().is_some());
            if !https {
                reader.error(
                    &url.span,
                    format!("`directory` of {CX} must be the CA's https:// directory URL, like \"{LETS_ENCRYPT}\", not {:?}", url.value),
                );
            }
            url.value
        }
    };
    let ca_roots = reader.string(t, "ca_roots", CX).and_then(|path| {
        match crate::pem::read_certificates(&resolve(base_dir, &path.value)) {
            Ok(pem) => Some(pem),
            Err(problem) => {
                reader.error(&path.span, format!("`ca_roots` of {CX}: {problem}"));
                None
            }
        }
    });
    let hosts = reader
        .string_list(t, "hosts", CX)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|host| {
            let name = host.value.trim_end_matches('.').to_ascii_lowercase();
            if is_dns_name(&name) {
                Some(name)
            } else {
                reader.error(
                    &host.span,
                    format!("`hosts` of {CX} lists {:?}; each must be a DNS name like \"app.example.com\" (wildcards need DNS-01, which switchyard does not do)", host.value),
                );
                None
            }
        })
        .collect();
    let challenges = match reader.string_list(t, "challenges", CX) {
        None => vec![AcmeChallenge::Http01, AcmeChallenge::TlsAlpn01],
        Some(list) => {
            let mut challenges = Vec::new();
            for entry in &list {
                match entry.value.as_str() {
                    "http-01" => challenges.push(AcmeChallenge::Http01),
                    "tls-alpn-01" => challenges.push(AcmeChallenge::TlsAlpn01),
                    other => reader.error(
                        &entry.span,
                        format!("`challenges` of {CX} lists {other:?}; switchyard answers \"http-01\" (port 80) and \"tls-alpn-01\" (port 443)"),
                    ),
                }
            }
            if list.is_empty() {
                reader.error(
                    &Reader::span_of(t, "challenges", &(0..0)),
                    format!(
                        "`challenges` of {CX} needs at least one of \"http-01\", \"tls-alpn-01\""
                    ),
                );
            }
            challenges
        }
    };
    AcmeConfig {
        email,
        directory,
        ca_roots,
        hosts,
        challenges,
    }
}

/// Without `hosts`: every exact host of every route, once, in file order.
/// With neither, there is nothing to order: an error.
pub(crate) fn default_hosts(
    reader: &mut Reader,
    acme: &mut AcmeConfig,
    root: &dyn TableLike,
    routes: &[ReadRoute],
) {
    if !acme.hosts.is_empty() {
        return;
    }
    for route in routes {
        for host in &route.config.hosts {
            if let HostPattern::Exact(name) = host {
                if !acme.hosts.contains(name) {
                    acme.hosts.push(name.clone());
                }
            }
        }
    }
    if acme.hosts.is_empty() {
        let span = root
            .get("tls")
            .and_then(|tls| tls.as_table_like())
            .map(|tls| Reader::span_of(tls, "acme", &(0..0)))
            .unwrap_or(0..0);
        reader.error(
            &span,
            format!("{CX} has no host to order a certificate for: no route names an exact host; list them in `hosts`"),
        );
    }
}

fn is_dns_name(name: &str) -> bool {
    crate::slots::parse_name(&format!("{name}:1")).is_some_and(|(host, _)| host.contains('.'))
}
