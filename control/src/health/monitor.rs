//! Schedules the probes: one task per backend (route, slot, address), each
//! probing at its route's interval and reporting every check. A reload
//! restarts only the tasks whose backend or probe settings changed.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;

use switchyard_conf::Config;
use tokio::task::JoinHandle;

use super::probe::{probe, ProbeSpec};
use super::Check;

/// One backend of one slot of one route.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendKey {
    pub route: Arc<str>,
    pub slot: Arc<str>,
    pub addr: SocketAddr,
}

impl std::fmt::Display for BackendKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.route, self.slot, self.addr)
    }
}

/// Where checks go (the Controller's mailbox). Must not block.
pub type Report = Arc<dyn Fn(BackendKey, Check) + Send + Sync>;

/// The running probe tasks.
pub struct Monitor {
    tasks: HashMap<BackendKey, (ProbeSpec, JoinHandle<()>)>,
    report: Report,
}

impl Monitor {
    pub fn new(report: Report) -> Monitor {
        Monitor {
            tasks: HashMap::new(),
            report,
        }
    }

    /// Makes the running probes match `config`: new backends get a task,
    /// removed ones lose theirs, changed probe settings restart it.
    pub fn sync(&mut self, config: &Config) {
        let mut wanted: HashMap<BackendKey, ProbeSpec> = HashMap::new();
        for route in &config.routes {
            let route_name: Arc<str> = Arc::from(route.name.as_str());
            for (slot, backends) in &route.slots {
                let spec = ProbeSpec::for_slot(route, slot);
                let slot_name: Arc<str> = Arc::from(slot.as_str());
                for addr in backends {
                    let key = BackendKey {
                        route: route_name.clone(),
                        slot: slot_name.clone(),
                        addr: *addr,
                    };
                    wanted.insert(key, spec.clone());
                }
            }
        }
        self.tasks.retain(|key, (spec, task)| {
            let keep = wanted.get(key) == Some(spec);
            if !keep {
                task.abort();
            }
            keep
        });
        for (key, spec) in wanted {
            if self.tasks.contains_key(&key) {
                continue;
            }
            let task = tokio::spawn(probe_loop(key.clone(), spec.clone(), self.report.clone()));
            self.tasks.insert(key, (spec, task));
        }
    }

    /// The probe settings of a backend being probed.
    pub fn spec(&self, key: &BackendKey) -> Option<&ProbeSpec> {
        self.tasks.get(key).map(|(spec, _)| spec)
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        for (_, task) in self.tasks.values() {
            task.abort();
        }
    }
}

/// Probes at once (a new backend's state should not wait an interval),
/// then every interval ± jitter.
async fn probe_loop(key: BackendKey, spec: ProbeSpec, report: Report) {
    let seed = RandomState::new();
    let mut round: u64 = 0;
    loop {
        let check = probe(&spec, key.addr).await;
        report(key.clone(), check);
        let mut hasher = seed.build_hasher();
        hasher.write_u64(round);
        round += 1;
        tokio::time::sleep(spec.next_wait(hasher.finish())).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    fn config(text: &str) -> Config {
        switchyard_conf::parse("test.toml", text, std::path::Path::new("/tmp")).unwrap()
    }

    fn text(backends: &str, health: &str) -> String {
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n\n[[route]]\nname = \"app\"\nactive = \"blue\"\n[route.slots]\nblue = [{backends}]\n{health}"
        )
    }

    #[tokio::test]
    async fn every_backend_is_probed_at_once_and_a_reload_restarts_only_what_changed() {
        let up = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up_addr = up.local_addr().unwrap();
        let down_addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let seen: Arc<Mutex<Vec<(BackendKey, bool)>>> = Arc::default();
        let sink = seen.clone();
        let mut monitor = Monitor::new(Arc::new(move |key, check: Check| {
            sink.lock().unwrap().push((key, check.passed()));
        }));

        monitor.sync(&config(&text(
            &format!("\"{up_addr}\", \"{down_addr}\""),
            "",
        )));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while seen.lock().unwrap().len() < 2 {
            assert!(tokio::time::Instant::now() < deadline, "no checks reported");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let checks = seen.lock().unwrap().clone();
        assert!(
            checks.iter().any(|(k, ok)| k.addr == up_addr && *ok),
            "{checks:?}"
        );
        assert!(
            checks.iter().any(|(k, ok)| k.addr == down_addr && !*ok),
            "{checks:?}"
        );

        let up_key = BackendKey {
            route: "app".into(),
            slot: "blue".into(),
            addr: up_addr,
        };
        let before = monitor.tasks[&up_key].1.id();
        // Dropping a backend stops its task; the other keeps running as is.
        monitor.sync(&config(&text(&format!("\"{up_addr}\""), "")));
        assert_eq!(monitor.tasks.len(), 1);
        assert_eq!(monitor.tasks[&up_key].1.id(), before);
        // Changing the probe settings restarts it.
        monitor.sync(&config(&text(
            &format!("\"{up_addr}\""),
            "[route.health]\npath = \"/ready\"\n",
        )));
        assert_ne!(monitor.tasks[&up_key].1.id(), before);
        assert!(monitor.spec(&up_key).is_some());
    }
}
