//! DNS lookups of backend names, with hickory's stub resolver: it reports
//! each answer's TTL (getaddrinfo does not), reads `/etc/hosts` first and
//! `/etc/resolv.conf` (or the `[server] resolvers` given), and asks for
//! A and AAAA records both, so every address of a name is a backend.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfigGroup, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::TokioResolver;

use super::{Answer, NameKey};

/// The longest one lookup of one name takes before it counts as failed.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Looks names up, with the system's DNS servers or the given ones.
pub struct Lookup {
    resolver: TokioResolver,
    /// What it was built with, to know when a reload changes it.
    pub servers: Vec<SocketAddr>,
}

impl Lookup {
    /// `servers` empty: `/etc/resolv.conf`'s, else only these.
    pub fn new(servers: &[SocketAddr]) -> Result<Lookup, String> {
        let (config, mut options) = if servers.is_empty() {
            hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| format!("cannot read the system's DNS settings: {e}"))?
        } else {
            let mut group = NameServerConfigGroup::new();
            for server in servers {
                group.merge(NameServerConfigGroup::from_ips_clear(
                    &[server.ip()],
                    server.port(),
                    true,
                ));
            }
            (
                ResolverConfig::from_parts(None, Vec::new(), group),
                ResolverOpts::default(),
            )
        };
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        options.use_hosts_file = ResolveHosts::Always;
        options.timeout = Duration::from_secs(2);
        options.attempts = 2;
        // Each refresh must ask, not read back what the last one got.
        options.cache_size = 0;
        let resolver =
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
                .with_options(options)
                .build();
        Ok(Lookup {
            resolver,
            servers: servers.to_vec(),
        })
    }

    /// One lookup of `host`, bounded by [`LOOKUP_TIMEOUT`].
    pub async fn resolve(&self, host: &str) -> Result<Answer, String> {
        // A trailing dot: the name is absolute, not searched in the
        // resolv.conf domains (compose service names have no dots and would
        // otherwise be tried with each search domain first).
        let fqdn = format!("{host}.");
        let asked = tokio::time::timeout(LOOKUP_TIMEOUT, self.resolver.lookup_ip(fqdn.as_str()));
        match asked.await {
            Err(_) => Err(format!("no answer within {LOOKUP_TIMEOUT:?}")),
            Ok(Err(e)) if e.is_nx_domain() => {
                Err("the DNS server knows no such name (NXDOMAIN)".to_string())
            }
            Ok(Err(e)) if e.is_no_records_found() => {
                Err("the name has no address (no A or AAAA record)".to_string())
            }
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(found)) => Ok(Answer {
                ips: found.iter().collect(),
                ttl: found
                    .valid_until()
                    .saturating_duration_since(Instant::now()),
            }),
        }
    }

    /// Each of `keys` looked up at once, answers in the same order.
    pub async fn resolve_all(&self, keys: &[NameKey]) -> Vec<Result<Answer, String>> {
        // Together: one slow name does not add its time to the others'.
        futures_util::future::join_all(keys.iter().map(|(host, _)| self.resolve(host))).await
    }
}
