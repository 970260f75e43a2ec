//! Keeping the served certificates current without a restart: the files of
//! `[tls] certificates` are watched (their directories, as for the config
//! file, so renames and symlink swaps by certbot or Kubernetes are seen),
//! and a config reload that edits the list is followed. Each change loads
//! every pair again; only a store that loaded whole replaces the served one.
//! A bad file is logged, counted and shown in `status`, and the previous
//! certificates go on serving. Open connections keep the certificate they
//! were handshaken with; new handshakes get the new one.
//!
//! With `[tls.acme]`, the certificates it stored for its hosts
//! (`acme::files`) are served after the configured ones, which win a name
//! both hold; the ACME manager asks for a reload when it stores one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use switchyard_conf::watch::ConfigWatcher;
use switchyard_conf::{CertificateConfig, TlsConfig};
use switchyard_control::history::now_rfc3339;
use switchyard_control::protocol::TlsStatus;
use switchyard_control::ControllerHandle;
use tokio::sync::Notify;

use super::{CertError, CertStore, SniResolver};

/// How long the files must be quiet before a reload: a renewal writes the
/// certificate and then the key, and loading between the two would only
/// log a mismatch.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// `switchyard_certificate_reloads_total{result=ok|error}`.
const RELOADS: &str = "switchyard_certificate_reloads_total";

/// Loads the certificates for the start: an error stops the start, since
/// there is no earlier certificate to fall back on. With `[tls.acme]` and
/// nothing configured nor stored yet there is nothing to load: handshakes
/// fail until the first certificate is issued.
pub fn load_at_start(tls: &TlsConfig, state_dir: &Path) -> Result<Arc<SniResolver>, CertError> {
    let list = served(tls, state_dir);
    if list.is_empty() && tls.acme.is_some() {
        return Ok(Arc::new(SniResolver::empty()));
    }
    Ok(Arc::new(SniResolver::new(CertStore::load(&list)?)))
}

/// The pairs to serve: the configured ones, then those `[tls.acme]` has
/// stored for its hosts.
pub fn served(tls: &TlsConfig, state_dir: &Path) -> Vec<CertificateConfig> {
    let mut list = tls.certificates.clone();
    if let Some(acme) = &tls.acme {
        list.extend(crate::acme::files::existing(state_dir, &acme.hosts));
    }
    list
}

/// Reloads into `resolver` whenever a certificate or key file changes, a
/// config reload edits `[tls]`, or `requested` is notified (the ACME
/// manager stored a certificate); runs until the Controller stops.
pub async fn keep_current(
    resolver: Arc<SniResolver>,
    controller: ControllerHandle,
    state_dir: PathBuf,
    requested: Arc<Notify>,
) {
    let mut config = controller.tls_config();
    let changed_on_disk = Arc::new(Notify::new());
    report(&controller, &resolver, None).await;
    let mut reload_now = false;
    loop {
        let certificates = match config.borrow_and_update().as_ref() {
            Some(tls) => served(tls, &state_dir),
            None => return,
        };
        let notify = changed_on_disk.clone();
        let watched = (!certificates.is_empty()).then(|| {
            ConfigWatcher::start_many(&paths(&certificates), DEBOUNCE, move || notify.notify_one())
        });
        let _watcher = match watched {
            Some(Ok(watcher)) => Some(watcher),
            Some(Err(e)) => {
                tracing::error!(
                    "cannot watch the certificate files ({e}); edits are picked up only by a config reload"
                );
                None
            }
            None => None,
        };
        // A list edited by a config reload is loaded at once; the one of
        // the start was loaded by `load_at_start`.
        if reload_now {
            reload(&resolver, &certificates, &controller).await;
        }
        reload_now = true;
        loop {
            tokio::select! {
                _ = changed_on_disk.notified() => reload(&resolver, &certificates, &controller).await,
                // The list itself changed (a new ACME pair): build it again.
                _ = requested.notified() => break,
                edited = config.changed() => {
                    if edited.is_err() {
                        return;
                    }
                    break;
                }
            }
        }
    }
}

/// Every file to watch: each certificate and each key.
fn paths(certificates: &[CertificateConfig]) -> Vec<PathBuf> {
    certificates
        .iter()
        .flat_map(|c| [c.cert.clone(), c.key.clone()])
        .collect()
}

/// Loads every pair; serves the result only when all of them loaded.
async fn reload(
    resolver: &SniResolver,
    certificates: &[CertificateConfig],
    controller: &ControllerHandle,
) {
    if certificates.is_empty() {
        return; // `[tls.acme]` before its first certificate.
    }
    match CertStore::load(certificates) {
        Ok(store) => {
            resolver.replace(store);
            metrics::counter!(RELOADS, "result" => "ok").increment(1);
            tracing::info!(
                certificates = certificates.len(),
                "certificates reloaded; new handshakes get them"
            );
            report(controller, resolver, None).await;
        }
        Err(e) => {
            metrics::counter!(RELOADS, "result" => "error").increment(1);
            tracing::error!("certificate reload rejected, still serving the previous ones: {e}");
            report(controller, resolver, Some(e.to_string())).await;
        }
    }
}

/// What `status` shows under `tls`.
async fn report(controller: &ControllerHandle, resolver: &SniResolver, error: Option<String>) {
    let status = TlsStatus::new(resolver.summary(), now_rfc3339(), error);
    controller.tls_loaded(status).await;
}
