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
    child: Option<Child>,
}

pub struct EtcdCluster {
    pub members: Vec<Member>,
    _dir: tempfile::TempDir,
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
    /// Starts `n` members and returns once every one answers its health
    /// endpoint... (here: once its client port accepts).
    pub fn start(n: usize) -> EtcdCluster {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect();
        let token = format!("switchyard-test-{}", std::process::id());
        let members = ports
            .iter()
            .enumerate()
            .map(|(i, (client, peer))| {
                let name = format!("m{i}");
                let client_url = format!("http://127.0.0.1:{client}");
                let peer_url = format!("http://127.0.0.1:{peer}");
                let child = Command::new(executable())
                    .args(["--name", &name])
                    .arg(format!("--data-dir={}", dir.path().join(&name).display()))
                    .args([
                        "--listen-client-urls",
                        &client_url,
                        "--advertise-client-urls",
                        &client_url,
                    ])
                    .args([
                        "--listen-peer-urls",
                        &peer_url,
                        "--initial-advertise-peer-urls",
                        &peer_url,
                    ])
                    .args(["--initial-cluster", &initial.join(",")])
                    .args([
                        "--initial-cluster-state",
                        "new",
                        "--initial-cluster-token",
                        &token,
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
                Member {
                    name,
                    client_url,
                    child: Some(child),
                }
            })
            .collect();
        let cluster = EtcdCluster { members, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        for member in &cluster.members {
            let addr = member.client_url.trim_start_matches("http://").to_string();
            while std::net::TcpStream::connect(&addr).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "etcd {} did not listen",
                    member.name
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        cluster
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// Kills member `i` (SIGKILL), as a crash would.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
