//! One certificate order (RFC 8555) for one host, answered with HTTP-01:
//! the account (created once, then read back from `account.json`), the
//! order, its challenge served by the plain listeners, the CSR and the
//! chain.

use std::path::Path;
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use switchyard_conf::{AcmeChallenge, AcmeConfig};

use super::challenges::Challenges;
use super::client::AcmeHttp;
use super::files;

/// How often and how long the order's state is polled: the CA validates
/// within seconds, and a minute without a verdict is a failure.
fn polling() -> RetryPolicy {
    RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .backoff(2.0)
        .timeout(Duration::from_secs(60))
}

/// A new certificate: its PEM chain (leaf first) and PEM key.
pub struct Issued {
    pub chain: String,
    pub key: String,
}

/// The account at `acme.directory`: read back from `state_dir`, else made
/// and stored there (0600) — one per CA directory, so a changed directory
/// makes a new one.
pub async fn account(acme: &AcmeConfig, state_dir: &Path) -> Result<Account, String> {
    let http = || -> Result<Box<AcmeHttp>, String> {
        Ok(Box::new(AcmeHttp::new(acme.ca_roots.as_deref())?))
    };
    let path = files::account_path(state_dir);
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Ok(stored) = serde_json::from_str::<StoredAccount>(&text) {
            if stored.directory == acme.directory {
                return Account::builder_with_http(http()?)
                    .from_credentials(stored.credentials)
                    .await
                    .map_err(|e| format!("the stored ACME account {}: {e}", path.display()));
            }
        }
    }
    let contact: Vec<String> = acme.email.iter().map(|e| format!("mailto:{e}")).collect();
    let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, credentials) = Account::builder_with_http(http()?)
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            acme.directory.clone(),
            None,
        )
        .await
        .map_err(|e| format!("cannot create an account at {}: {e}", acme.directory))?;
    let stored = StoredAccount {
        directory: acme.directory.clone(),
        credentials,
    };
    let json = serde_json::to_vec_pretty(&stored).map_err(|e| e.to_string())?;
    files::write_private(&path, &json)
        .map_err(|e| format!("cannot store the ACME account in {}: {e}", path.display()))?;
    Ok(account)
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// Orders a certificate for `host`, answering its `kind` challenge
/// through `challenges`. The answers are withdrawn whatever happens —
/// also when the order is dropped half-way (a `[tls.acme]` edit stops it).
pub async fn order(
    account: &Account,
    host: &str,
    kind: AcmeChallenge,
    challenges: &Challenges,
) -> Result<Issued, String> {
    let identifiers = [Identifier::Dns(host.to_string())];
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(|e| format!("new order: {e}"))?;
    let mut answers = Withdrawn {
        challenges,
        host,
        tokens: Vec::new(),
    };
    answer_and_finish(&mut order, host, kind, challenges, &mut answers.tokens).await
}

/// Takes an order's answers back out of `challenges` when dropped.
struct Withdrawn<'a> {
    challenges: &'a Challenges,
    host: &'a str,
    tokens: Vec<String>,
}

impl Drop for Withdrawn<'_> {
    fn drop(&mut self) {
        for token in &self.tokens {
            self.challenges.remove(token);
        }
        self.challenges.remove_tls_alpn(self.host);
    }
}

async fn answer_and_finish(
    order: &mut instant_acme::Order,
    host: &str,
    kind: AcmeChallenge,
    challenges: &Challenges,
    tokens: &mut Vec<String>,
) -> Result<Issued, String> {
    let challenge_type = match kind {
        AcmeChallenge::Http01 => ChallengeType::Http01,
        AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
    };
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization.map_err(|e| format!("authorization: {e}"))?;
        match authorization.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => return Err(format!("the authorization is {other:?}")),
        }
        let mut challenge = authorization
            .challenge(challenge_type.clone())
            .ok_or(format!("the CA offers no {challenge_type:?} challenge"))?;
        let key_authorization = challenge.key_authorization();
        match kind {
            AcmeChallenge::Http01 => {
                challenges.add(&challenge.token, key_authorization.as_str());
                tokens.push(challenge.token.clone());
            }
            AcmeChallenge::TlsAlpn01 => {
                let certificate = tls_alpn_certificate(host, key_authorization.digest().as_ref())?;
                challenges.add_tls_alpn(host, certificate);
            }
        }
        challenge
            .set_ready()
            .await
            .map_err(|e| format!("challenge: {e}"))?;
    }
    match order.poll_ready(&polling()).await {
        Ok(OrderStatus::Ready) => {}
        Ok(status) => return Err(format!("the order is {status:?}, not ready")),
        Err(e) => return Err(format!("validation failed: {e}")),
    }
    let key = order
        .finalize()
        .await
        .map_err(|e| format!("finalize: {e}"))?;
    let chain = order
        .poll_certificate(&polling())
        .await
        .map_err(|e| format!("certificate: {e}"))?;
    Ok(Issued { chain, key })
}

/// The self-signed certificate a TLS-ALPN-01 validation must be shown
/// (RFC 8737): `host` as its only name, and the critical acmeIdentifier
/// extension holding the SHA-256 of the key authorization.
fn tls_alpn_certificate(
    host: &str,
    digest: &[u8],
) -> Result<std::sync::Arc<rustls::sign::CertifiedKey>, String> {
    let mut params = rcgen::CertificateParams::new(vec![host.to_string()])
        .map_err(|e| format!("challenge certificate: {e}"))?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().map_err(|e| format!("challenge key: {e}"))?;
    let certificate = params
        .self_signed(&key)
        .map_err(|e| format!("challenge certificate: {e}"))?;
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let signing = rustls::crypto::ring::sign::any_supported_type(&key_der)
        .map_err(|e| format!("challenge key: {e}"))?;
    Ok(std::sync::Arc::new(rustls::sign::CertifiedKey::new(
        vec![certificate.der().clone()],
        signing,
    )))
}
