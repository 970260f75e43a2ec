//! The certificates of `[tls]`, loaded, and the choice of one for a handshake's
//! SNI name.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use switchyard_conf::CertificateConfig;

use super::certs::{self, CertError, LoadedCert};

/// Every certificate of the config, checked, with indexes by name.
///
/// A value: a reload builds a new store and swaps it in whole
/// (see [`super::SniResolver::replace`]).
pub struct CertStore {
    /// Config order, never empty: [`CertStore::load`] refuses an empty list.
    certs: Vec<LoadedCert>,
    /// The first certificate of the config.
    default: Arc<CertifiedKey>,
    /// Lower-case DNS name → the first certificate (in config order) with it.
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `example.com` for a `*.example.com` SAN → the first certificate with it.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

/// One certificate as `switchyard status` shows it: the admin protocol's
/// type, so the CLI reads exactly what is written here.
pub use switchyard_control::protocol::CertificateStatus as CertSummary;

impl CertStore {
    /// Reads and checks every pair, in config order.
    ///
    /// Returns the first error: each names its file, and a reload that fails
    /// keeps the running store, so the operator fixes and reloads again.
    pub fn load(configs: &[CertificateConfig]) -> Result<Self, CertError> {
        let certs = configs
            .iter()
            .map(certs::load_pair)
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_loaded(certs)
    }

    pub(crate) fn from_loaded(certs: Vec<LoadedCert>) -> Result<Self, CertError> {
        let default = certs.first().ok_or(CertError::NoCertificates)?.key.clone();
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for cert in &certs {
            for name in &cert.names {
                let (index, key) = match name.strip_prefix("*.") {
                    Some(parent) => (&mut wildcard, parent),
                    None => (&mut exact, name.as_str()),
                };
                // Never overwritten: the first certificate in config order wins a tie.
                index
                    .entry(key.to_owned())
                    .or_insert_with(|| cert.key.clone());
            }
        }
        Ok(Self {
            certs,
            default,
            exact,
            wildcard,
        })
    }

    /// The certificate for a handshake whose ClientHello named `server_name`
    /// (SNI), compared case-insensitively, a trailing dot ignored:
    ///
    /// 1. a certificate with that exact DNS name;
    /// 2. else one with a wildcard covering it: `*.example.com` covers
    ///    `a.example.com`, not `example.com` nor `a.b.example.com`;
    /// 3. else (no match, or no SNI at all) the default, the first certificate
    ///    of the config.
    ///
    /// When two certificates hold the same name, the first in the config wins.
    pub fn choose(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        server_name
            .and_then(|name| self.matching(&certs::normalize_name(name)))
            .unwrap_or(&self.default)
            .clone()
    }

    fn matching(&self, name: &str) -> Option<&Arc<CertifiedKey>> {
        self.exact.get(name).or_else(|| {
            let (label, parent) = name.split_once('.')?;
            if label.is_empty() {
                return None;
            }
            self.wildcard.get(parent)
        })
    }

    /// Per certificate, in config order.
    pub fn summary(&self) -> Vec<CertSummary> {
        self.certs
            .iter()
            .enumerate()
            .map(|(i, cert)| CertSummary {
                cert: cert.cert_path.display().to_string(),
                key: cert.key_path.display().to_string(),
                names: cert.names.clone(),
                default: i == 0,
                not_before: certs::rfc3339(cert.not_before),
                not_after: certs::rfc3339(cert.not_after),
                not_after_unix: cert.not_after,
            })
            .collect()
    }
}

/// Paths and names only: the key material stays out of logs.
impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.certs.iter().map(|c| (c.cert_path.display(), &c.names)))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_tests::tls::TestCa;

    /// Which of `issued` certificates `choose` returned, by leaf DER.
    fn chosen(store: &CertStore, name: Option<&str>, issued: &[(&str, &[u8])]) -> String {
        let key = store.choose(name);
        let leaf = key.cert.first().expect("a chain has a leaf").as_ref();
        issued
            .iter()
            .find(|(_, der)| *der == leaf)
            .map(|(label, _)| label.to_string())
            .unwrap_or_else(|| "none".into())
    }

    #[test]
    fn exact_then_wildcard_then_default() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new();
        let first = ca.issue(&["first.test"]);
        let wild = ca.issue(&["*.wild.test"]);
        let exact = ca.issue(&["x.wild.test", "Mixed.Case.Test"]);
        let store = CertStore::load(&[
            first.write(dir.path(), "first"),
            wild.write(dir.path(), "wild"),
            exact.write(dir.path(), "exact"),
        ])
        .unwrap();
        let all: [(&str, &[u8]); 3] = [
            ("first", first.der()),
            ("wild", wild.der()),
            ("exact", exact.der()),
        ];
        let pick = |name| chosen(&store, name, &all);

        assert_eq!(pick(Some("x.wild.test")), "exact", "exact beats wildcard");
        assert_eq!(pick(Some("y.wild.test")), "wild");
        assert_eq!(pick(Some("Y.WILD.test.")), "wild", "case and trailing dot");
        assert_eq!(pick(Some("mixed.case.test")), "exact");
        assert_eq!(pick(Some("wild.test")), "first", "a wildcard needs a label");
        assert_eq!(pick(Some("a.b.wild.test")), "first", "only one label");
        assert_eq!(pick(Some(".wild.test")), "first", "an empty label");
        assert_eq!(pick(Some("unknown.test")), "first");
        assert_eq!(pick(Some("")), "first");
        assert_eq!(pick(None), "first", "no SNI");
    }

    #[test]
    fn the_first_certificate_in_config_wins_a_tie() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new();
        let default = ca.issue(&["default.test"]);
        let one = ca.issue(&["same.test", "*.same.test"]);
        let two = ca.issue(&["same.test", "*.same.test"]);
        let store = CertStore::load(&[
            default.write(dir.path(), "default"),
            one.write(dir.path(), "one"),
            two.write(dir.path(), "two"),
        ])
        .unwrap();
        let all: [(&str, &[u8]); 2] = [("one", one.der()), ("two", two.der())];
        assert_eq!(chosen(&store, Some("same.test"), &all), "one");
        assert_eq!(chosen(&store, Some("a.same.test"), &all), "one");
    }

    #[test]
    fn a_certificate_without_dns_names_serves_as_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new();
        let nameless = ca.issue(&[]);
        let named = ca.issue(&["named.test"]);
        let store = CertStore::load(&[
            nameless.write(dir.path(), "nameless"),
            named.write(dir.path(), "named"),
        ])
        .unwrap();
        let all: [(&str, &[u8]); 2] = [("nameless", nameless.der()), ("named", named.der())];
        assert_eq!(chosen(&store, Some("other.test"), &all), "nameless");
        assert_eq!(chosen(&store, Some("named.test"), &all), "named");
        assert!(store.summary()[0].names.is_empty());
    }

    #[test]
    fn an_expired_certificate_is_accepted_and_its_dates_shown() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new();
        let old = ca.issue_valid(
            &["old.test", "*.old.test"],
            rcgen::date_time_ymd(2000, 1, 1),
            rcgen::date_time_ymd(2001, 2, 3),
        );
        let config = old.write(dir.path(), "old");
        let store = CertStore::load(std::slice::from_ref(&config)).unwrap();
        assert_eq!(
            store.summary(),
            vec![CertSummary {
                cert: config.cert.display().to_string(),
                key: config.key.display().to_string(),
                names: vec!["old.test".into(), "*.old.test".into()],
                default: true,
                not_before: "2000-01-01T00:00:00Z".into(),
                not_after: "2001-02-03T00:00:00Z".into(),
                not_after_unix: 981_158_400,
            }]
        );
        let json = serde_json::to_value(store.summary()).unwrap();
        assert_eq!(json[0]["not_after"], "2001-02-03T00:00:00Z");
    }

    #[test]
    fn an_empty_list_is_an_error() {
        let err = CertStore::load(&[]).unwrap_err();
        assert!(matches!(err, CertError::NoCertificates), "{err}");
    }
}
