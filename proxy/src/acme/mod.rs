//! `[tls.acme]`: switchyard orders and renews its own certificates.
//!
//! One task (`run`) holds every host's state. A host whose stored
//! certificate is missing, unreadable or past two thirds of its lifetime
//! is ordered (`order.rs`, HTTP-01 answered by the plain listeners through
//! [`Challenges`]); the chain and key go to `<state_dir>/acme/certs/`
//! (`files.rs`) and the TLS store is reloaded, so new handshakes get it. A
//! failed order keeps whatever certificate serves, is retried after 1 min,
//! doubling to 6 h with ±20 % jitter (`schedule.rs`), shows in `status`
//! (`acme`), counts in `switchyard_acme_orders_total{result}` and notifies
//! `certificate_order_failed`. A restart serves the stored certificates and
//! orders nothing until they are due.

pub mod challenges;
mod client;
pub mod files;
mod order;
mod schedule;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use switchyard_conf::{AcmeChallenge, AcmeConfig, CertificateConfig};
use switchyard_control::protocol::AcmeHostStatus;
use switchyard_control::ControllerHandle;
use tokio::sync::Notify;

pub use challenges::Challenges;

/// `switchyard_acme_orders_total{result=ok|error}`.
const ORDERS: &str = "switchyard_acme_orders_total";

/// One host's state between orders.
#[derive(Debug, Default, Clone)]
struct Host {
    /// The stored certificate's validity, Unix seconds.
    validity: Option<(i64, i64)>,
    failures: u32,
    last_error: Option<String>,
    retry_at: Option<i64>,
    issued: u64,
}

impl Host {
    /// When this host next needs an order, Unix seconds.
    fn due_at(&self) -> i64 {
        let renew = self
            .validity
            .map_or(i64::MIN, |(from, to)| schedule::renew_at(from, to));
        renew.max(self.retry_at.unwrap_or(i64::MIN))
    }

    fn status(&self, host: &str) -> AcmeHostStatus {
        AcmeHostStatus {
            host: host.to_string(),
            not_after_unix: self.validity.map(|(_, to)| to),
            renew_at_unix: self.validity.map(|(from, to)| schedule::renew_at(from, to)),
            last_error: self.last_error.clone(),
            failures: self.failures,
            retry_at_unix: self.retry_at,
            issued: self.issued,
        }
    }
}

/// What the manager works with.
pub struct Manager {
    pub controller: ControllerHandle,
    pub state_dir: PathBuf,
    pub challenges: Challenges,
    /// Notified when a new certificate is stored: the TLS store reloads.
    pub reload: Arc<Notify>,
}

impl Manager {
    /// Runs until the Controller stops; follows `[tls.acme]` edits.
    pub async fn run(self) {
        let mut config = self.controller.tls_config();
        let mut hosts: BTreeMap<String, Host> = BTreeMap::new();
        loop {
            let acme = config
                .borrow_and_update()
                .as_ref()
                .and_then(|tls| tls.acme.clone());
            if let Some(acme) = &acme {
                self.sync_hosts(&mut hosts, acme);
                self.report(&hosts, None).await;
            }
            tokio::select! {
                _ = self.work(acme.as_ref(), &mut hosts) => {}
                changed = config.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// Keeps exactly the hosts of `acme`, each with what its stored
    /// certificate says.
    fn sync_hosts(&self, hosts: &mut BTreeMap<String, Host>, acme: &AcmeConfig) {
        hosts.retain(|host, _| acme.hosts.contains(host));
        for host in &acme.hosts {
            let state = hosts.entry(host.clone()).or_default();
            state.validity = stored_validity(&files::pair(&self.state_dir, host));
        }
    }

    /// Orders what is due, then sleeps until the next host is; never
    /// returns while `acme` is set.
    async fn work(&self, acme: Option<&AcmeConfig>, hosts: &mut BTreeMap<String, Host>) {
        let Some(acme) = acme else {
            return std::future::pending().await;
        };
        let mut account = None;
        loop {
            let now = unix_now();
            let due: Vec<String> = hosts
                .iter()
                .filter(|(_, h)| h.due_at() <= now)
                .map(|(name, _)| name.clone())
                .collect();
            for host in due {
                let failures = hosts[&host].failures;
                let result = self.order_one(acme, &host, failures, &mut account).await;
                let state = hosts.get_mut(&host).expect("a due host is tracked");
                let failed = match result {
                    Ok(validity) => {
                        metrics::counter!(ORDERS, "result" => "ok").increment(1);
                        tracing::info!(host, "certificate issued and served");
                        state.validity = Some(validity);
                        state.failures = 0;
                        state.last_error = None;
                        state.retry_at = None;
                        state.issued += 1;
                        None
                    }
                    Err(error) => {
                        metrics::counter!(ORDERS, "result" => "error").increment(1);
                        state.failures += 1;
                        let wait = schedule::retry_after(state.failures, schedule::draw());
                        state.retry_at = Some(unix_now() + wait.as_secs() as i64);
                        state.last_error = Some(error.clone());
                        tracing::error!(
                            host,
                            "certificate order failed, retrying in {}s: {error}",
                            wait.as_secs()
                        );
                        Some((host.clone(), error))
                    }
                };
                self.report(hosts, failed).await;
            }
            let next = hosts.values().map(Host::due_at).min().unwrap_or(i64::MAX);
            let wait = (next - unix_now()).clamp(1, 24 * 3600) as u64;
            tokio::time::sleep(Duration::from_secs(wait)).await;
        }
    }

    /// One order for `host`: the account first (made once), then the
    /// certificate, stored and served. The new certificate's validity.
    /// `failures` so far choose the challenge type: each attempt takes the
    /// next of `acme.challenges`.
    async fn order_one(
        &self,
        acme: &AcmeConfig,
        host: &str,
        failures: u32,
        account: &mut Option<instant_acme::Account>,
    ) -> Result<(i64, i64), String> {
        if account.is_none() {
            *account = Some(order::account(acme, &self.state_dir).await?);
        }
        let account = account.as_ref().expect("just set");
        let kind = acme.challenges[failures as usize % acme.challenges.len()];
        let issued = order::order(account, host, kind, &self.challenges)
            .await
            .map_err(|e| format!("{}: {e}", challenge_name(kind)))?;
        let pair = files::pair(&self.state_dir, host);
        // Checked as the TLS store will load it: a chain it would refuse is
        // a failed order, not a broken reload.
        let loaded = crate::tls::check_pair(&pair, issued.chain.as_bytes(), issued.key.as_bytes())
            .map_err(|e| format!("the CA's certificate cannot be served: {e}"))?;
        files::store_pair(&self.state_dir, host, &issued.chain, &issued.key).map_err(|e| {
            format!(
                "cannot store the certificate in {}: {e}",
                pair.cert.display()
            )
        })?;
        self.reload.notify_one();
        Ok(loaded)
    }

    async fn report(&self, hosts: &BTreeMap<String, Host>, failed: Option<(String, String)>) {
        let statuses = hosts.iter().map(|(name, h)| h.status(name)).collect();
        self.controller.acme_report(statuses, failed).await;
    }
}

/// The stored pair's validity, if it is there and loads.
fn stored_validity(pair: &CertificateConfig) -> Option<(i64, i64)> {
    let cert = std::fs::read(&pair.cert).ok()?;
    let key = std::fs::read(&pair.key).ok()?;
    crate::tls::check_pair(pair, &cert, &key).ok()
}

fn challenge_name(kind: AcmeChallenge) -> &'static str {
    match kind {
        AcmeChallenge::Http01 => "http-01",
        AcmeChallenge::TlsAlpn01 => "tls-alpn-01",
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
