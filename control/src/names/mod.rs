//! Backends given by name (`"app-green:3000"`): what each name resolved
//! to, when to ask again, and the addresses each slot gets from them.
//! Pure bookkeeping over the instants and answers the caller passes in;
//! the lookups themselves are `lookup.rs`.
//!
//! - Every address of a name is a backend of its slot, with its own
//!   health; an address that stops being listed leaves the routing table
//!   (its open exchanges finish), a new one starts `unknown` and gets
//!   traffic once its probes pass (see `Core::route_spec`).
//! - A name is asked again when its answer's TTL runs out, but not sooner
//!   than [`REFRESH_FLOOR`] nor later than [`REFRESH_CEILING`].
//! - A failed lookup (no answer, an error, no address) keeps the last
//!   addresses and is retried sooner, backing off from [`REFRESH_FLOOR`]
//!   to [`RETRY_CEILING`]; `status` shows the error and since when.
//! - A name that never resolved is a config error (at start, `check` and
//!   reload); one that resolved once never empties its slot.

mod lookup;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use switchyard_conf::{BackendName, Config, ConfigError, ConfigErrors};

pub use lookup::Lookup;

/// The soonest a name is asked again, whatever its TTL (0 included), and
/// the first retry after a failure.
pub const REFRESH_FLOOR: Duration = Duration::from_secs(1);
/// The latest a name is asked again: a container recreated under the same
/// name is found within this, whatever TTL its DNS server gives.
pub const REFRESH_CEILING: Duration = Duration::from_secs(30);
/// The longest wait between tries of a name that keeps failing: a slot's
/// container that was stopped (its name gone from Docker's DNS) is found
/// within this of its new start.
pub const RETRY_CEILING: Duration = Duration::from_secs(10);
/// Addresses kept per name: a DNS answer is not a way to make a slot of
/// thousands of backends.
pub const MAX_ADDRESSES_PER_NAME: usize = 64;

/// `(host, port)`.
pub type NameKey = (String, u16);

/// What one lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub ips: Vec<IpAddr>,
    /// How long the answer may be kept.
    pub ttl: Duration,
}

#[derive(Debug, Clone)]
struct Record {
    /// The last good answer's addresses, sorted; empty until one came.
    addresses: Vec<SocketAddr>,
    resolved_at: Option<SystemTime>,
    /// The last lookup failed, this way, failing since then.
    error: Option<(String, SystemTime)>,
    failures: u32,
    due: Instant,
    /// A lookup is out: not due again until it reports.
    asking: bool,
}

impl Record {
    /// Not resolved yet: due at once.
    fn new(now: Instant) -> Record {
        Record {
            addresses: Vec::new(),
            resolved_at: None,
            error: None,
            failures: 0,
            due: now,
            asking: false,
        }
    }
}

/// What `status` shows of a name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NameStatus {
    /// `host:port` as configured.
    pub name: String,
    /// The addresses its slot has from it.
    pub addresses: Vec<SocketAddr>,
    /// Unix seconds of the last good answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<u64>,
    /// Why the last lookup failed; absent when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Unix seconds of the first failure in a row.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<u64>,
}

/// Every configured name's record.
#[derive(Debug, Default)]
pub struct Names {
    records: BTreeMap<NameKey, Record>,
}

impl Names {
    /// The addresses `name` has, if it ever resolved.
    pub fn addresses(&self, name: &BackendName) -> Option<Vec<SocketAddr>> {
        self.records
            .get(&name.key())
            .map(|r| r.addresses.clone())
            .filter(|a| !a.is_empty())
    }

    /// The names of `config` that have no address yet.
    pub fn unresolved(&self, config: &Config) -> Vec<BackendName> {
        config
            .backend_names()
            .into_iter()
            .filter(|name| self.addresses(name).is_none())
            .collect()
    }

    /// Sets every slot's addresses from its literals and its names'.
    pub fn fill(&self, config: &mut Config) {
        for route in &mut config.routes {
            route.slots = route.backends_with(|name| self.addresses(name));
        }
    }

    /// Keeps exactly the names of `config`: a new one is due at `now`.
    pub fn track(&mut self, config: &Config, now: Instant) {
        let wanted = config.backend_names();
        self.records
            .retain(|key, _| wanted.iter().any(|name| name.key() == *key));
        for name in wanted {
            self.records
                .entry(name.key())
                .or_insert_with(|| Record::new(now));
        }
    }

    /// The names due at `now`, each marked as being asked.
    pub fn take_due(&mut self, now: Instant) -> Vec<NameKey> {
        self.records
            .iter_mut()
            .filter(|(_, r)| !r.asking && r.due <= now)
            .map(|(key, r)| {
                r.asking = true;
                key.clone()
            })
            .collect()
    }

    /// When the next name is due, if one is not being asked.
    pub fn next_due(&self) -> Option<Instant> {
        self.records
            .values()
            .filter(|r| !r.asking)
            .map(|r| r.due)
            .min()
    }

    /// Counts a lookup of `key`. True when the addresses it gives changed.
    pub fn record(
        &mut self,
        key: &NameKey,
        result: Result<Answer, String>,
        now: Instant,
        wall: SystemTime,
    ) -> bool {
        // A name dropped from the config while its lookup was out: the
        // answer no longer matters.
        let Some(record) = self.records.get_mut(key) else {
            return false;
        };
        record.asking = false;
        let result = result.and_then(|answer| {
            if answer.ips.is_empty() {
                Err("the answer has no address".to_string())
            } else {
                Ok(answer)
            }
        });
        match result {
            Ok(answer) => {
                let mut addresses: Vec<SocketAddr> = answer
                    .ips
                    .iter()
                    .map(|ip| SocketAddr::new(*ip, key.1))
                    .collect();
                addresses.sort();
                addresses.dedup();
                addresses.truncate(MAX_ADDRESSES_PER_NAME);
                let changed = addresses != record.addresses;
                record.addresses = addresses;
                record.resolved_at = Some(wall);
                record.error = None;
                record.failures = 0;
                record.due = now + answer.ttl.clamp(REFRESH_FLOOR, REFRESH_CEILING);
                changed
            }
            Err(error) => {
                let since = record.error.as_ref().map_or(wall, |(_, since)| *since);
                record.error = Some((error, since));
                record.failures += 1;
                record.due = now + retry_after(record.failures);
                false
            }
        }
    }

    /// Counts lookups made for a config file being read (whose names the
    /// running config may not have yet: a later [`Names::track`] forgets
    /// them if that config is not applied). Why each failed one failed.
    pub fn record_lookups(
        &mut self,
        results: impl IntoIterator<Item = (NameKey, Result<Answer, String>)>,
        now: Instant,
        wall: SystemTime,
    ) -> BTreeMap<NameKey, String> {
        let mut why = BTreeMap::new();
        for (key, result) in results {
            if let Err(e) = &result {
                why.insert(key.clone(), e.clone());
            }
            self.records
                .entry(key.clone())
                .or_insert_with(|| Record::new(now));
            self.record(&key, result, now, wall);
        }
        why
    }

    /// Every name, for `status`.
    pub fn status(&self) -> BTreeMap<NameKey, NameStatus> {
        self.records
            .iter()
            .map(|((host, port), r)| {
                let status = NameStatus {
                    name: format!("{host}:{port}"),
                    addresses: r.addresses.clone(),
                    resolved_at: r.resolved_at.map(unix_seconds),
                    error: r.error.as_ref().map(|(e, _)| e.clone()),
                    failing_since: r.error.as_ref().map(|(_, since)| unix_seconds(*since)),
                };
                ((host.clone(), *port), status)
            })
            .collect()
    }
}

/// The wait before the next try after `failures` failures in a row:
/// doubling from [`REFRESH_FLOOR`] up to [`RETRY_CEILING`].
fn retry_after(failures: u32) -> Duration {
    let doubled = REFRESH_FLOOR.saturating_mul(1 << failures.saturating_sub(1).min(16));
    doubled.min(RETRY_CEILING)
}

fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The errors for names that never resolved, each at its place in `file`.
pub fn never_resolved(
    file: &str,
    names: &[BackendName],
    why: &BTreeMap<NameKey, String>,
) -> ConfigErrors {
    ConfigErrors(
        names
            .iter()
            .map(|name| ConfigError {
                file: file.to_string(),
                line: name.line,
                column: name.column,
                message: format!(
                    "backend {name} does not resolve: {}",
                    why.get(&name.key()).map_or("no answer yet", String::as_str)
                ),
            })
            .collect(),
    )
}

/// Resolves every name of `config` once and fills its slots with what
/// answered. Also the errors for the names that did not, each at its
/// place: `check` refuses the config for them; a start goes on without
/// them (a slot whose containers are down must not keep the front door
/// shut) and keeps asking. A config without names asks nothing (and needs
/// no DNS settings).
pub async fn resolve_config(config: &mut Config) -> (Names, Option<ConfigErrors>) {
    let mut names = Names::default();
    let now = Instant::now();
    names.track(config, now);
    if config.backend_names().is_empty() {
        return (names, None);
    }
    let keys = names.take_due(now);
    let answers = match Lookup::new(&config.server.resolvers) {
        Ok(lookup) => lookup.resolve_all(&keys).await,
        Err(e) => keys.iter().map(|_| Err(e.clone())).collect(),
    };
    let why = names.record_lookups(
        keys.into_iter().zip(answers),
        Instant::now(),
        SystemTime::now(),
    );
    names.fill(config);
    let unresolved = names.unresolved(config);
    let errors =
        (!unresolved.is_empty()).then(|| never_resolved(&config.source, &unresolved, &why));
    (names, errors)
}

#[cfg(test)]
mod tests;
