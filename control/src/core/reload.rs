//! A config file that was read: rejected (the last good config keeps
//! running), unchanged, held (see `settle.rs`), or applied with the merge
//! rules of `crate::decisions::after_config_load`.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use switchyard_conf::{Config, ServerConfig, TlsConfig};

use super::{describe, ConfigRejected, Core, Effect, Level, Now, ReplyTo};
use crate::decisions;
use crate::health::SlotHealth;
use crate::history::{Action, HistoryEntry, Outcome, Trigger, ALL_ROUTES};
use crate::notify::NoticeKind;
use crate::protocol::{ErrorKind, ReloadReply, Response};
use crate::state_file::RouteState;

/// Why the config file was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadTrigger {
    /// The watcher saw it change (and settle).
    File,
    /// `switchyard reload`: applied as it is, at once.
    Admin { reply: ReplyTo, uid: Option<u32> },
    /// A held edit's settle time is up: applied only if the file still
    /// parses to the same config.
    Settled,
}

impl Core {
    pub(super) fn config_read(
        &mut self,
        trigger: ReloadTrigger,
        result: Result<Box<Config>, ConfigRejected>,
        now: Now,
    ) {
        if trigger == ReloadTrigger::Settled {
            return self.settle_pending_edit(result.ok().map(|c| *c), now);
        }
        let reply = match trigger {
            ReloadTrigger::Admin { reply, .. } => Some(reply),
            _ => None,
        };
        let response = match result {
            Err(rejected) => self.reject_config(trigger, rejected, now),
            Ok(config) => self.reload(trigger, *config, now),
        };
        if let (Some(reply), Some(response)) = (reply, response) {
            self.reply(reply, response);
        }
    }

    fn reject_config(
        &mut self,
        trigger: ReloadTrigger,
        rejected: ConfigRejected,
        now: Now,
    ) -> Option<Response> {
        self.withdraw_pending_edit("the file no longer parses", now);
        let message = format!(
            "config rejected, still running the last good config:\n{}",
            rejected.message
        );
        self.log(
            Level::Error,
            None,
            format!("{}: {message}", self.config_path.display()),
        );
        self.record(HistoryEntry {
            from: Some(format!("generation {}", self.generation)),
            result: Outcome::Failed(format!("{} error(s)", rejected.errors)),
            ..self.reload_entry(trigger, now)
        });
        self.effects.push(Effect::CountReload("error"));
        self.notify(
            NoticeKind::ConfigRejected,
            None,
            (None, None),
            &message,
            now,
        );
        self.config_error = Some(rejected.message);
        Some(Response::error(ErrorKind::InvalidConfig, message))
    }

    /// A valid file: nothing to do when it is the running config; held when
    /// the watcher reported an edit that removes something; else applied.
    fn reload(&mut self, trigger: ReloadTrigger, config: Config, now: Now) -> Option<Response> {
        if config == self.config && self.config_error.is_none() {
            // Editors and `touch` fire events without changing anything:
            // publishing anyway would only churn. An editor that truncated
            // the file and wrote it again lands here too, after its
            // truncated state was held.
            self.withdraw_pending_edit("the file is back to the running config", now);
            self.effects.push(Effect::CountReload("unchanged"));
            let unchanged = ReloadReply::unchanged(
                self.generation,
                self.route_count(),
                self.needs_restart.clone(),
            );
            return Some(Response::ok_with(&unchanged));
        }
        if trigger == ReloadTrigger::File {
            let removals = switchyard_conf::shrink::removals(&self.config, &config);
            if !removals.is_empty() {
                return Some(self.hold_edit(config, removals, now));
            }
            self.withdraw_pending_edit("a later edit replaced it", now);
        } else {
            self.withdraw_pending_edit("`switchyard reload` applied the file", now);
        }
        let entry = self.reload_entry(trigger, now);
        Some(self.apply_config(config, entry, now))
    }

    /// The history entry of a reload, before its outcome is known.
    pub(super) fn reload_entry(&self, trigger: ReloadTrigger, now: Now) -> HistoryEntry {
        let (trigger, uid) = match trigger {
            ReloadTrigger::Admin { uid, .. } => (Trigger::Admin, uid),
            ReloadTrigger::File | ReloadTrigger::Settled => (Trigger::Config, None),
        };
        HistoryEntry {
            uid,
            from: Some(format!("generation {}", self.generation)),
            ..HistoryEntry::new(&now.rfc3339(), trigger, ALL_ROUTES, Action::Reload)
        }
    }

    pub(super) fn route_count(&self) -> usize {
        self.config.routes.len()
    }

    /// Applies a valid config: every route's decision (runtime decisions
    /// kept unless the file changed that value), health tracking, one
    /// publish, the state file and `entry` in the history.
    pub(super) fn apply_config(
        &mut self,
        config: Config,
        mut entry: HistoryEntry,
        now: Now,
    ) -> Response {
        self.needs_restart = needs_restart(&self.running_server, &config.server);
        if self.running_cluster != config.cluster {
            self.needs_restart.push("cluster".to_string());
        }
        if listen_of(self.tls.as_ref()) != listen_of(config.tls.as_ref()) {
            self.needs_restart.push("tls.listen".to_string());
        }
        let tls_proxy_protocol = |tls: Option<&TlsConfig>| tls.is_some_and(|t| t.proxy_protocol);
        if tls_proxy_protocol(self.tls.as_ref()) != tls_proxy_protocol(config.tls.as_ref()) {
            self.needs_restart.push("tls.proxy_protocol".to_string());
        }
        for setting in self.needs_restart.clone() {
            self.log(
                Level::Warn,
                None,
                format!("config edit of {setting} needs a restart to take effect"),
            );
        }
        self.routes = self.merge_routes(&config, entry.uid, now);
        self.follow_certificates(config.tls.as_ref());
        self.config = config;
        self.config_error = None;
        self.reloads += 1;
        self.effects.push(Effect::CountReload("ok"));
        self.track_backends(now);
        self.publish(now);
        self.save();
        entry.to = Some(format!("generation {}", self.generation));
        entry.generation = Some(self.generation);
        entry.result = Outcome::Ok;
        self.record(entry);
        self.log(
            Level::Info,
            None,
            format!(
                "config reloaded: generation {}, {} routes",
                self.generation,
                self.config.routes.len()
            ),
        );
        let needs_restart = self.needs_restart.clone();
        let applied =
            ReloadReply::applied(self.generation, self.route_count(), needs_restart, None);
        Response::ok_with(&applied)
    }

    /// Each route's state under the new config. An edit of `active` to a
    /// slot that is not healthy is held until it is.
    fn merge_routes(
        &mut self,
        config: &Config,
        uid: Option<u32>,
        now: Now,
    ) -> BTreeMap<String, RouteState> {
        let time = now.rfc3339();
        let mut routes = BTreeMap::new();
        for route in &config.routes {
            let prior = self.routes.get(&route.name).cloned();
            let mut next = decisions::after_config_load(route, prior.as_ref(), &time);
            let config_switch = |result, to, generation| HistoryEntry {
                uid,
                from: prior.as_ref().map(describe),
                to: Some(to),
                reason: Some("active edited in the config file".into()),
                result,
                generation,
                ..HistoryEntry::new(&time, Trigger::Config, &route.name, Action::Switch)
            };
            let Some(prior) = prior.as_ref().filter(|p| p.active != next.active) else {
                routes.insert(route.name.clone(), next);
                continue;
            };
            let health = self.health.slot_health(&route.name, &next.active);
            if health != SlotHealth::Healthy {
                next = decisions::hold_switch(prior, next);
                let held = next.pending.clone().unwrap_or_default();
                self.log(
                    Level::Warn,
                    Some(&route.name),
                    format!("config switch to slot {held} held until it is healthy"),
                );
                let why = format!(
                    "slot {held} is {}; applied when it turns healthy",
                    health.as_str()
                );
                self.record(config_switch(
                    Outcome::Held(why),
                    format!("active={held}"),
                    None,
                ));
            }
            if prior.active != next.active {
                let entry = config_switch(Outcome::Ok, describe(&next), Some(self.generation + 1));
                self.record(entry);
            }
            routes.insert(route.name.clone(), next);
        }
        routes
    }

    /// Serves the certificates the file names now, and orders what
    /// `[tls.acme]` says now. `listen` stays what is bound; a `[tls]` added
    /// or removed waits for a restart (`needs_restart` says so).
    fn follow_certificates(&mut self, edited: Option<&TlsConfig>) {
        let (Some(running), Some(edited)) = (self.tls.as_mut(), edited) else {
            return;
        };
        if running.certificates != edited.certificates || running.acme != edited.acme {
            running.certificates = edited.certificates.clone();
            running.acme = edited.acme.clone();
            self.effects
                .push(Effect::ServeCertificates(running.clone()));
        }
    }
}

/// The `[server]` settings that differ and cannot change while running.
fn needs_restart(running: &ServerConfig, edited: &ServerConfig) -> Vec<String> {
    let differs = [
        ("server.listen", running.listen != edited.listen),
        ("server.threads", running.threads != edited.threads),
        (
            "server.admin_socket",
            running.admin_socket != edited.admin_socket,
        ),
        ("server.admin_uids", running.admin_uids != edited.admin_uids),
        ("server.state_dir", running.state_dir != edited.state_dir),
        (
            "server.max_connections",
            running.max_connections != edited.max_connections,
        ),
        ("server.admin_http", running.admin_http != edited.admin_http),
        (
            "server.admin_http_token",
            running.admin_http_token != edited.admin_http_token,
        ),
        ("server.log_format", running.log_format != edited.log_format),
        ("server.access_log", running.access_log != edited.access_log),
        ("server.h2c", running.h2c != edited.h2c),
        (
            "server.proxy_protocol",
            running.proxy_protocol != edited.proxy_protocol,
        ),
    ];
    differs
        .into_iter()
        .filter(|(_, differ)| *differ)
        .map(|(name, _)| name.to_string())
        .collect()
}

/// The TLS listen addresses of a `[tls]`, none without one.
fn listen_of(tls: Option<&TlsConfig>) -> &[SocketAddr] {
    tls.map_or(&[], |tls| tls.listen.as_slice())
}
