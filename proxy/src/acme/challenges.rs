//! HTTP-01 answers: the key authorization for each token of an order in
//! progress, which the plain listeners serve at
//! `/.well-known/acme-challenge/<token>` before any routing.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// The path prefix the CA asks under.
pub const PREFIX: &str = "/.well-known/acme-challenge/";

/// Tokens of orders in progress. Few and short-lived: a lock taken only by
/// requests under [`PREFIX`] costs nothing elsewhere.
#[derive(Debug, Default, Clone)]
pub struct Challenges {
    tokens: Arc<RwLock<HashMap<String, String>>>,
}

impl Challenges {
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
