//! Runs the probes: one task per backend (route, slot, address), each
//! probing on its own phase of its route's interval (`schedule.rs`) and
//! reporting every check, with at most [`MAX_PROBES_IN_FLIGHT`] probes in
//! flight in the whole process (a backend waits its turn, first come first
//! served). A reload restarts only the tasks whose backend or probe
//! settings changed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use switchyard_conf::Config;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::probe::{probe, ProbeSpec};
use super::schedule::{first_due, next_due, phase_offset, MAX_PROBES_IN_FLIGHT};
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
    tasks: HashMap<BackendKey, (Arc<ProbeSpec>, JoinHandle<()>)>,
    report: Report,
    /// One permit per probe in flight.
    in_flight: Arc<Semaphore>,
    /// Phases are offsets from this instant, shared by every backend.
    epoch: Instant,
}

impl Monitor {
    pub fn new(report: Report) -> Monitor {
        Monitor::with_limit(report, MAX_PROBES_IN_FLIGHT)
    }

    /// A monitor running at most `max_in_flight` probes at once.
    pub fn with_limit(report: Report, max_in_flight: usize) -> Monitor {
        Monitor {
            tasks: HashMap::new(),
            report,
            in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
            epoch: Instant::now(),
        }
    }

    /// Makes the running probes match `config`: new backends get a task,
    /// removed ones lose theirs, changed probe settings restart it.
    pub fn sync(&mut self, config: &Config) {
        let mut wanted: HashMap<BackendKey, Arc<ProbeSpec>> = HashMap::new();
        for route in &config.routes {
            let route_name: Arc<str> = Arc::from(route.name.as_str());
            for (slot, backends) in &route.slots {
                let spec = Arc::new(ProbeSpec::for_slot(route, slot));
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
            let task = tokio::spawn(probe_loop(
                key.clone(),
                spec.clone(),
                self.report.clone(),
                self.in_flight.clone(),
                self.epoch,
            ));
            self.tasks.insert(key, (spec, task));
        }
    }

    /// The probe settings of a backend being probed.
    pub fn spec(&self, key: &BackendKey) -> Option<&ProbeSpec> {
        self.tasks.get(key).map(|(spec, _)| &**spec)
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        for (_, task) in self.tasks.values() {
            task.abort();
        }
    }
}

/// Probes within the first-round spread (a new backend's state should not
/// wait an interval), then on the backend's phase of every interval; each
/// probe waits for a place among those in flight.
async fn probe_loop(
    key: BackendKey,
    spec: Arc<ProbeSpec>,
    report: Report,
    in_flight: Arc<Semaphore>,
    epoch: Instant,
) {
    let phase = phase_offset(&key, spec.interval);
    let mut due = epoch + first_due(&key, spec.interval, epoch.elapsed());
    loop {
        tokio::time::sleep_until(due).await;
        let Ok(permit) = in_flight.acquire().await else {
            return; // never closed; nothing to probe with if it were
        };
        let started = Instant::now();
        let check = probe(&spec, key.addr).await;
        let finished = Instant::now();
        drop(permit);
        report(key.clone(), check);
        due = epoch + next_due(phase, spec.interval, started - epoch, finished - epoch);
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

    /// Listeners that accept and never answer, counting the connections
    /// open at once across all of them.
    async fn silent_backends(n: usize) -> (Vec<SocketAddr>, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::AsyncReadExt;
        let open = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut addrs = Vec::new();
        for _ in 0..n {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.push(listener.local_addr().unwrap());
            let (open, most) = (open.clone(), most.clone());
            tokio::spawn(async move {
                while let Ok((mut stream, _)) = listener.accept().await {
                    let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    let open = open.clone();
                    tokio::spawn(async move {
                        let mut buf = [0u8; 1024];
                        while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
                        open.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            });
        }
        (addrs, most)
    }

    #[tokio::test]
    async fn probes_in_flight_never_exceed_the_limit_and_every_backend_gets_its_turn() {
        use std::sync::atomic::Ordering;
        const LIMIT: usize = 4;
        let (addrs, most_open) = silent_backends(24).await;
        let seen: Arc<Mutex<Vec<BackendKey>>> = Arc::default();
        let sink = seen.clone();
        let mut monitor = Monitor::with_limit(
            Arc::new(move |key, check: Check| {
                assert!(!check.passed(), "nobody answers: {check:?}");
                sink.lock().unwrap().push(key);
            }),
            LIMIT,
        );
        let list: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
        // Every probe times out after 100 ms; all 24 are due within 100 ms.
        monitor.sync(&config(&text(
            &list.join(", "),
            "[route.health]\ninterval = \"100ms\"\ntimeout = \"100ms\"\n",
        )));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let probed: std::collections::HashSet<SocketAddr> =
                seen.lock().unwrap().iter().map(|k| k.addr).collect();
            if probed.len() == addrs.len() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {} backends probed",
                probed.len(),
                addrs.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let most = most_open.load(Ordering::SeqCst);
        assert!(
            most <= LIMIT,
            "{most} probes in flight at once, limit {LIMIT}"
        );
        assert!(most >= 2, "probes do run side by side ({most})");
    }

    #[tokio::test]
    async fn a_backend_is_probed_once_per_interval_never_twice_in_half_of_one() {
        let down_addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let at: Arc<Mutex<Vec<tokio::time::Instant>>> = Arc::default();
        let sink = at.clone();
        let mut monitor = Monitor::new(Arc::new(move |_, _| {
            sink.lock().unwrap().push(tokio::time::Instant::now());
        }));
        let synced = tokio::time::Instant::now();
        monitor.sync(&config(&text(
            &format!("\"{down_addr}\""),
            "[route.health]\ninterval = \"200ms\"\n",
        )));
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        let at = at.lock().unwrap().clone();
        assert!((4..=6).contains(&at.len()), "{} probes in 1.1 s", at.len());
        assert!(
            at[0] - synced < Duration::from_millis(200),
            "the first within the spread"
        );
        for pair in at.windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_millis(100), "{at:?}");
        }
    }
}
