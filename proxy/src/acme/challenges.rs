//! Challenge answers of orders in progress: for HTTP-01, the key
//! authorization of each token, which the plain listeners serve at
//! `/.well-known/acme-challenge/<token>` before any routing; for
//! TLS-ALPN-01, a certificate per host that the TLS listeners show to a
//! handshake asking for `acme-tls/1` alone.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rustls::sign::CertifiedKey;

/// The path prefix the CA asks under.
pub const PREFIX: &str = "/.well-known/acme-challenge/";

/// Tokens of orders in progress. Few and short-lived: a lock taken only by
/// requests under [`PREFIX`] costs nothing elsewhere.
#[derive(Debug, Default, Clone)]
pub struct Challenges {
    tokens: Arc<RwLock<HashMap<String, String>>>,
    /// Host → its TLS-ALPN-01 certificate.
    tls_alpn: Arc<RwLock<HashMap<String, Arc<CertifiedKey>>>>,
}

impl Challenges {
    pub fn add_tls_alpn(&self, host: &str, certificate: Arc<CertifiedKey>) {
        self.tls_alpn
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(host.to_string(), certificate);
    }

    pub fn remove_tls_alpn(&self, host: &str) {
        self.tls_alpn
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(host);
    }

    /// The certificate a TLS-ALPN-01 validation of `host` is shown.
    pub fn tls_alpn_certificate(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        self.tls_alpn
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&host.to_ascii_lowercase())
            .cloned()
    }

    pub fn add(&self, token: &str, key_authorization: &str) {
        self.tokens
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.to_string(), key_authorization.to_string());
    }

    pub fn remove(&self, token: &str) {
        self.tokens
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(token);
    }

    /// The body for a request to `path`, when it asks for a token of an
    /// order in progress. Any other path under the prefix is left to the
    /// routes (a backend may answer its own challenges).
    pub fn answer(&self, path: &str) -> Option<String> {
        let token = path.strip_prefix(PREFIX)?;
        self.tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_tokens_under_the_prefix_are_answered() {
        let challenges = Challenges::default();
        challenges.add("abc", "abc.thumb");
        assert_eq!(
            challenges
                .answer("/.well-known/acme-challenge/abc")
                .as_deref(),
            Some("abc.thumb")
        );
        assert_eq!(challenges.answer("/.well-known/acme-challenge/abd"), None);
        assert_eq!(challenges.answer("/abc"), None);
        assert_eq!(challenges.answer("/.well-known/acme-challenge/abc/x"), None);
        challenges.remove("abc");
        assert_eq!(challenges.answer("/.well-known/acme-challenge/abc"), None);
    }
}
