//! The Controller's side of backend names: reading the config file (its
//! names resolved before the core sees it), refreshing names as their
//! answers expire, and handing the core the addresses that changed.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use switchyard_conf::Config;

use super::{Controller, Message};
use crate::core::{ConfigRejected, Event, ReloadTrigger};
use crate::names::{never_resolved, Answer, Lookup, NameKey};
use crate::protocol::{ErrorKind, Response};

impl Controller {
    /// Reads the config file. Its names that have addresses already get
    /// them at once; when some have none yet they are looked up first, and
    /// the read goes on when they answer (`None` now).
    pub(super) fn read_config(&mut self, trigger: ReloadTrigger) -> Option<Event> {
        self.reads += 1;
        let mut config = match switchyard_conf::load(&self.config_path) {
            Ok(config) => config,
            Err(errors) => return Some(rejected(trigger, errors.to_string(), errors.0.len())),
        };
        let unresolved = self.new_unresolved(&config);
        if unresolved.is_empty() {
            self.names.fill(&mut config);
            return Some(Event::ConfigRead {
                trigger,
                result: Ok(Box::new(config)),
            });
        }
        let keys: Vec<NameKey> = unresolved.iter().map(|name| name.key()).collect();
        let lookup = match &self.lookup {
            Ok(lookup) => lookup.clone(),
            Err(e) => {
                let why = keys.iter().map(|k| (k.clone(), e.clone())).collect();
                let errors = never_resolved(&config.source, &unresolved, &why);
                return Some(rejected(trigger, errors.to_string(), errors.0.len()));
            }
        };
        let seq = self.reads;
        let mailbox = self.mailbox.clone();
        tokio::spawn(async move {
            let answers = lookup.resolve_all(&keys).await;
            let results = keys.into_iter().zip(answers).collect();
            if let Some(mailbox) = mailbox.upgrade() {
                let _ = mailbox
                    .send(Message::ConfigNamesResolved {
                        seq,
                        trigger,
                        config: Box::new(config),
                        results,
                    })
                    .await;
            }
        });
        None
    }

    /// The names of `config` that have no address and that the running
    /// config does not have: what a reload must resolve (or be refused
    /// for). A name the running config has keeps going unresolved — its
    /// containers may just be down — and is asked again on its own.
    fn new_unresolved(&self, config: &Config) -> Vec<switchyard_conf::BackendName> {
        let running = self.core.config().backend_names();
        self.names
            .unresolved(config)
            .into_iter()
            .filter(|name| !running.contains(name))
            .collect()
    }

    /// A read's names answered: the read is applied (or rejected for a name
    /// that still has no address), unless a later read superseded it.
    pub(super) fn config_names_resolved(
        &mut self,
        seq: u64,
        trigger: ReloadTrigger,
        mut config: Config,
        results: Vec<(NameKey, Result<Answer, String>)>,
    ) -> Option<Event> {
        // Counted even for a superseded read: they are answers all the same
        // (names the running config does not have are forgotten again by
        // the `track` below unless this read is applied).
        let why = self
            .names
            .record_lookups(results, Instant::now(), SystemTime::now());
        if seq != self.reads {
            self.names.track(self.core.config(), Instant::now());
            if let ReloadTrigger::Admin { reply, .. } = trigger {
                let message = "a later read of the config file replaced this one while its backend names were being looked up";
                self.send(
                    reply,
                    Response::error(ErrorKind::InvalidConfig, message),
                    None,
                );
            }
            return None;
        }
        let unresolved = self.new_unresolved(&config);
        if !unresolved.is_empty() {
            self.names.track(self.core.config(), Instant::now());
            let errors = never_resolved(&config.source, &unresolved, &why);
            return Some(rejected(trigger, errors.to_string(), errors.0.len()));
        }
        self.names.fill(&mut config);
        Some(Event::ConfigRead {
            trigger,
            result: Ok(Box::new(config)),
        })
    }

    /// Looks up every name whose answer has run out, each reporting back
    /// on its own.
    pub(super) fn refresh_names(&mut self) {
        let due = self.names.take_due(Instant::now());
        for key in due {
            let (lookup, mailbox) = (self.lookup.clone(), self.mailbox.clone());
            tokio::spawn(async move {
                let result = match lookup {
                    Ok(lookup) => lookup.resolve(&key.0).await,
                    Err(e) => Err(e),
                };
                if let Some(mailbox) = mailbox.upgrade() {
                    let _ = mailbox.send(Message::Resolved { key, result }).await;
                }
            });
        }
    }

    /// A refresh came back: the core gets the running config with the new
    /// addresses when they changed, and what `status` shows of the names
    /// either way.
    pub(super) fn name_resolved(
        &mut self,
        key: NameKey,
        result: Result<Answer, String>,
    ) -> Option<Event> {
        let outcome = if result.is_ok() { "ok" } else { "error" };
        ::metrics::counter!(crate::metrics::NAME_LOOKUPS, "result" => outcome).increment(1);
        if let Err(e) = &result {
            tracing::warn!(name = %format!("{}:{}", key.0, key.1), "cannot resolve a backend name, keeping its last addresses: {e}");
        }
        let changed = self
            .names
            .record(&key, result, Instant::now(), SystemTime::now());
        let config = changed.then(|| {
            let mut config = self.core.config().clone();
            self.names.fill(&mut config);
            Box::new(config)
        });
        Some(Event::NamesResolved {
            config,
            names: self.names.status(),
        })
    }

    /// A config was applied: its names are the ones refreshed from now on,
    /// with the DNS servers it names.
    pub(super) fn names_config_applied(&mut self) {
        let config = self.core.config();
        let servers = &config.server.resolvers;
        let current = self.lookup.as_ref().ok().map(|l| &l.servers);
        if current != Some(servers) {
            self.lookup = Lookup::new(servers).map(Arc::new);
        }
        self.names.track(config, Instant::now());
    }
}

fn rejected(trigger: ReloadTrigger, message: String, errors: usize) -> Event {
    Event::ConfigRead {
        trigger,
        result: Err(ConfigRejected { message, errors }),
    }
}
