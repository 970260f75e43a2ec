//! A real etcd cluster for the tests: `n` members of Debian's `etcd`
//! (3.4) on loopback, each with its own client and peer port and data
//! directory, stopped (SIGKILL) on drop. Ports are picked before start
//! because every member must know every peer's URL.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::pebble::free_port;

pub struct Member {
    pub name: String,
    pub client_url: String,
    peer_url: String,
    child: Option<Child>,
}

pub struct EtcdCluster {
    pub members: Vec<Member>,
    initial_cluster: String,
    token: String,
    dir: tempfile::TempDir,
}

/// `etcd` on PATH, or `SWITCHYARD_ETCD`; panics saying how to install it.
pub fn executable() -> PathBuf {
    if let Some(path) = std::env::var_os("SWITCHYARD_ETCD") {
        return PathBuf::from(path);
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        if dir.join("etcd").is_file() {
            return dir.join("etcd");
        }
    }
    panic!("no etcd on PATH: `make test` installs it (Debian's etcd-server), or `sudo apt-get install etcd-server`");
}

impl EtcdCluster {
    /// Starts `n` members and returns once every one answers with a raft
    /// leader. Ports are picked free and then bound by etcd, so another
    /// process can take one in between, and many clusters starting at
    /// once on two cores can be slow to elect: a start that is not ready
    /// in 20 s is thrown away and made again, up to three times.
    pub fn start(n: usize) -> EtcdCluster {
        let mut last = String::new();
        for _ in 0..3 {
            let mut cluster = EtcdCluster::new(n);
            for i in 0..n {
                cluster.spawn(i);
            }
            match cluster.wait_ready(Duration::from_secs(20)) {
                Ok(()) => return cluster,
                Err(why) => last = why,
            }
        }
        panic!("etcd did not start three times: {last}");
    }

    fn new(n: usize) -> EtcdCluster {
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect();
        let members = ports
            .iter()
            .enumerate()
            .map(|(i, (client, peer))| Member {
                name: format!("m{i}"),
                client_url: format!("http://127.0.0.1:{client}"),
                peer_url: format!("http://127.0.0.1:{peer}"),
                child: None,
            })
            .collect();
        EtcdCluster {
            members,
            initial_cluster: initial.join(","),
            token: format!("switchyard-test-{}-{}", std::process::id(), free_port()),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Starts member `i` (again: on its data, which it keeps).
    fn spawn(&mut self, i: usize) {
        let member = &self.members[i];
        let child = Command::new(executable())
            .args(["--name", &member.name])
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join(&member.name).display()
            ))
            .args([
                "--listen-client-urls",
                &member.client_url,
                "--advertise-client-urls",
                &member.client_url,
            ])
            .args([
                "--listen-peer-urls",
                &member.peer_url,
                "--initial-advertise-peer-urls",
                &member.peer_url,
            ])
            .args(["--initial-cluster", &self.initial_cluster])
            .args([
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                &self.token,
            ])
            .args(["--heartbeat-interval", "100", "--election-timeout", "1000"])
            .args(["--unsafe-no-fsync", "--snapshot-count", "10000"])
            .args([
                "--logger",
                "zap",
                "--log-outputs",
                "stderr",
                "--log-level",
                "error",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        self.members[i].child = Some(child);
    }

    /// Waits until every running member answers its `/health` with
    /// `"health":"true"` (it has a raft leader and serves requests); why
    /// not, when a member exited or `limit` passed.
    fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        use std::io::{Read, Write};
        let deadline = Instant::now() + limit;
        for member in self.members.iter_mut() {
            let Some(child) = member.child.as_mut() else {
                continue;
            };
            let addr = member.client_url.trim_start_matches("http://").to_string();
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("etcd {} exited: {status}", member.name));
                }
                let healthy = std::net::TcpStream::connect(&addr).ok().and_then(|mut s| {
                    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
                    s.write_all(b"GET /health HTTP/1.0\r\n\r\n").ok()?;
                    let mut answer = String::new();
                    s.read_to_string(&mut answer).ok()?;
                    Some(answer.contains("\"health\":\"true\""))
                });
                if healthy == Some(true) {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(format!(
                        "etcd {} has no leader after {limit:?}",
                        member.name
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// `etcd = [...]` for a `[cluster]` table.
    pub fn toml_endpoints(&self) -> String {
        let quoted: Vec<String> = self.endpoints().iter().map(|e| format!("{e:?}")).collect();
        format!("[{}]", quoted.join(", "))
    }

    /// The member that leads the raft group now (waits up to 20 s for one).
    pub async fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            for (i, member) in self.members.iter().enumerate() {
                if member.child.is_none() {
                    continue;
                }
                let options = etcd_client::ConnectOptions::new()
                    .with_connect_timeout(Duration::from_secs(1))
                    .with_timeout(Duration::from_secs(2));
                let Ok(mut one) =
                    etcd_client::Client::connect([&member.client_url], Some(options)).await
                else {
                    continue;
                };
                let Ok(status) = one.status().await else {
                    continue;
                };
                if status
                    .header()
                    .is_some_and(|h| h.member_id() == status.leader())
                {
                    return i;
                }
            }
            assert!(Instant::now() < deadline, "no etcd member leads");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills member `i` (SIGKILL), as a crash would.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills every member.
    pub fn kill_all(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }

    /// Starts every member that is not running again, on its data.
    pub fn restart_stopped(&mut self) {
        for i in 0..self.members.len() {
            if self.members[i].child.is_none() {
                self.spawn(i);
            }
        }
        if let Err(why) = self.wait_ready(Duration::from_secs(30)) {
            panic!("{why}");
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}
