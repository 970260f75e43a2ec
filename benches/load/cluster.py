"""A switch's reach across a cluster, measured against the real binary:
three switchyard nodes share their decisions through a real 3-member etcd
(Debian's etcd-server, 3.4) on loopback, in front of one nginx serving
both slots (`X-Slot`). `switch` is run on node 1 and each node is polled
(one keep-alive HTTP/1.1 connection each, in turn, no pause) until it
answers from the new slot: the time from just before the CLI starts to
that first answer, per node, over 20 switches (green and blue in turn) a
round. Meanwhile a light load (a child process, one keep-alive connection
per node, 100 requests/s to each) counts failed requests. The nodes
(`threads = 1`) and nginx run on core 0, etcd on core 1; the polling is
this process, not pinned. Used by bench.py (`--only-cluster`).

Run alone: python3 cluster.py --load PORT[,PORT...] is that load (it stops
when its stdin closes, or after --seconds, and prints its counts as JSON).
"""

import argparse
import http.client
import json
import math
import os
import select
import shutil
import socket
import statistics
import subprocess
import sys
import time

import failback

NODES = 3
SWITCHES = 20
# The light load: one request to every node each LOAD_INTERVAL seconds.
LOAD_INTERVAL = 0.01
# Past this, a node that has not answered from the new slot fails the run.
DEADLINE = 10


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path, lines=5):
    try:
        return " | ".join(open(path).read().strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start_etcd(procs, work):
    """NODES members, as tests/src/etcd.rs starts them (heartbeat 100 ms,
    election 1 s, no fsync), on core 1; returns their client URLs once
    every member says it is healthy (it has a raft leader)."""
    ports = [(free_port(), free_port()) for _ in range(NODES)]
    initial = ",".join(f"m{i}=http://127.0.0.1:{peer}" for i, (_, peer) in enumerate(ports))
    urls = []
    for i, (client, peer) in enumerate(ports):
        client_url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        log = open(f"{work}/etcd-m{i}.log", "w")
        procs.start(["etcd", "--name", f"m{i}", f"--data-dir={work}/etcd/m{i}",
                     "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
                     "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
                     "--initial-cluster", initial, "--initial-cluster-state", "new",
                     "--initial-cluster-token", f"switchyard-bench-{os.getpid()}",
                     "--heartbeat-interval", "100", "--election-timeout", "1000",
                     "--unsafe-no-fsync", "--snapshot-count", "10000",
                     "--logger", "zap", "--log-outputs", "stderr", "--log-level", "error"], 1, stderr=log)
        urls.append(client_url)
    deadline = time.monotonic() + 30
    for i, (client, _) in enumerate(ports):
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", client, timeout=2)
                c.request("GET", "/health")
                if '"health":"true"' in c.getresponse().read().decode():
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: etcd m{i} has no leader within 30 s: {tail(f'{work}/etcd-m{i}.log')}")
            time.sleep(0.05)
    return urls


def node_config(node_dir, port, etcd, backends, i):
    endpoints = ", ".join(f'"{u}"' for u in etcd)
    return (f'[server]\nlisten = ["127.0.0.1:{port}"]\nthreads = 1\n'
            f'admin_socket = "{node_dir}/admin.sock"\nstate_dir = "{node_dir}/state"\n\n'
            f'[cluster]\netcd = [{endpoints}]\nprefix = "/switchyard/bench"\nnode = "node{i}"\n\n'
            f'[[route]]\nname = "app"\nactive = "blue"\n[route.slots]\n'
            f'blue = ["127.0.0.1:{backends["blue"]}"]\ngreen = ["127.0.0.1:{backends["green"]}"]\n'
            f'[route.health]\npath = "/health"\ninterval = "100ms"\ntimeout = "100ms"\nrise = 1\nfall = 2\n')


def status(node_dir):
    return failback.ask(node_dir, {"cmd": "status"}, sock="admin.sock")["result"]


def wait_ready(node_dirs, procs_by_node):
    """Every node connected to etcd, a leader known, every slot healthy,
    and blue active: what a switch is measured from."""
    deadline = time.monotonic() + 30
    for i, node_dir in enumerate(node_dirs):
        while True:
            if procs_by_node[i].poll() is not None:
                raise SystemExit(f"bench: cluster node{i + 1} exited: {tail(f'{node_dir}/node.log')}")
            try:
                s = status(node_dir)
                cluster, route = s.get("cluster") or {}, s["routes"][0]
                if (cluster.get("connected") and cluster.get("leader") and route["active"] == "blue"
                        and all(slot["health"] == "healthy" for slot in route["slots"])):
                    break
            except (OSError, ValueError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: cluster node{i + 1} not connected with a leader and healthy slots "
                                 f"within 30 s: {tail(f'{node_dir}/node.log')}")
            time.sleep(0.05)


class Poller:
    """One keep-alive HTTP/1.1 connection to a node; `slot()` is the
    `X-Slot` of a GET / ("" for none), or None for a failed request (an
    error answer, or none: then it reconnects); `last` says how the last
    one failed."""

    def __init__(self, port):
        self.port, self.conn, self.failed, self.last = port, None, 0, ""

    def slot(self):
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            self.conn.request("GET", "/")
            response = self.conn.getresponse()
            response.read()
            if response.status == 200:
                return response.getheader("X-Slot", "")
            self.last = f"status {response.status}"
        except (OSError, http.client.HTTPException) as e:
            self.last = f"{type(e).__name__}: {e}"
            self.conn.close()
            self.conn = None
        self.failed += 1
        return None


def one_switch(switchyard, node_dirs, pollers, target):
    """Runs `switch` on node 1 and polls every node in turn until each
    answers from `target`; returns ms to each node's first such answer
    and to the CLI's exit."""
    started = time.monotonic()
    cli = subprocess.Popen([switchyard, "switch", "app", target, "--no-guard",
                            "--socket", f"{node_dirs[0]}/admin.sock"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    reached, cli_ms = [None] * len(pollers), None
    try:
        while None in reached or cli_ms is None:
            now = time.monotonic()
            if now - started > DEADLINE:
                late = [f"node{i + 1}" for i, at in enumerate(reached) if at is None]
                raise SystemExit(f"bench: {', '.join(late) or 'the switch CLI'} not done within {DEADLINE} s "
                                 f"of `switch app {target}`")
            if cli_ms is None and cli.poll() is not None:
                cli_ms = (time.monotonic() - started) * 1000
                if cli.returncode != 0:
                    raise SystemExit(f"bench: switch app {target} on node1 failed: {cli.stderr.read().strip()}")
            for i, poller in enumerate(pollers):
                if reached[i] is None and poller.slot() == target:
                    reached[i] = (time.monotonic() - started) * 1000
            if None not in reached:
                time.sleep(0.001)  # only the CLI's exit is awaited
    finally:
        if cli.poll() is None:
            cli.kill()
        cli.wait()
        cli.stderr.close()
    return reached, cli_ms


def p90(values):
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[math.ceil(0.9 * len(ordered)) - 1]


def summary(values):
    return (f"median {statistics.median(values):.1f} ms, p90 {p90(values):.1f} ms, "
            f"max {max(values):.1f} ms")


def cluster_checks(bench, switchyard, work, rounds, switches=SWITCHES):
    """`bench` is the bench module (nginx and process helpers). Returns
    the report's lines; a machine without etcd or a build without
    `[cluster]` gets one line saying why it was left out. Everything it
    starts is stopped before it returns, whatever happens: the nodes'
    probes and etcd would otherwise weigh on the rows measured after."""
    if shutil.which("etcd") is None:
        return ["- cluster: left out, no etcd on PATH (sudo apt-get install etcd-server)"]
    procs = bench.Processes()
    try:
        return measure(bench, switchyard, f"{work}/cluster", procs, rounds, switches)
    finally:
        procs.stop_all()


def measure(bench, switchyard, work, procs, rounds, switches):
    os.makedirs(work, exist_ok=True)
    backends = {"blue": free_port(), "green": free_port()}
    servers = "".join(f'server {{ listen 127.0.0.1:{port} backlog=8192; add_header X-Slot {slot}; '
                      f'location / {{ return 200 "{slot}"; }} }} ' for slot, port in backends.items())
    procs.start(["nginx", "-c", bench.nginx_conf(work, "cluster-backend", servers)], 0)
    bench.nginx_worker(work, "cluster-backend")
    etcd = start_etcd(procs, work)

    ports, node_dirs, nodes = [], [], []
    for i in range(1, NODES + 1):
        node_dir = f"{work}/node{i}"
        os.makedirs(node_dir)
        port = free_port()
        with open(f"{node_dir}/switchyard.toml", "w") as f:
            f.write(node_config(node_dir, port, etcd, backends, i))
        if i == 1:
            check = subprocess.run([switchyard, "check", "-c", f"{node_dir}/switchyard.toml"],
                                   capture_output=True, text=True)
            if check.returncode != 0:
                why = (check.stderr or check.stdout).strip().splitlines()
                return [f"- cluster: left out, this build does not take the config: {why[0] if why else '?'}"]
        log = open(f"{node_dir}/node.log", "w")
        nodes.append(procs.start([switchyard, "run", "-c", f"{node_dir}/switchyard.toml"], 0, stderr=log,
                                 env={**os.environ, "SWITCHYARD_LOG": "warn"}))
        ports.append(port)
        node_dirs.append(node_dir)
    wait_ready(node_dirs, nodes)

    load = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--load", ",".join(map(str, ports)),
                             "--seconds", str(rounds * switches * DEADLINE + 60)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    procs.procs.append(load)
    pollers = [Poller(port) for port in ports]
    others, local, cli, round_medians = [], [], [], []
    slot = "blue"
    for _ in range(rounds):
        this_round = []
        for _ in range(switches):
            slot = "green" if slot == "blue" else "blue"
            reached, cli_ms = one_switch(switchyard, node_dirs, pollers, slot)
            local.append(reached[0])
            this_round += reached[1:]
            cli.append(cli_ms)
        others += this_round
        round_medians.append(statistics.median(this_round))
    # Every node's report of the revision it applied comes after it
    # serves it: how long until status says they all agree.
    served = time.monotonic()
    while not all(s["cluster"]["agree"] and s["routes"][0]["active"] == slot for s in map(status, node_dirs)):
        if time.monotonic() - served > DEADLINE:
            agree = f"not within {DEADLINE} s"
            break
        time.sleep(0.01)
    else:
        agree = f"{(time.monotonic() - served) * 1000:.0f} ms after the last switch reached every node"
    counts = json.loads(load.communicate(timeout=10)[0])

    n = rounds * switches
    lines = [f"- cluster of {NODES} nodes on a {NODES}-member etcd (3.4, loopback, heartbeat 100 ms, no fsync), "
             f"`switch --no-guard` on node1, {n} switches ({rounds} round{'s' if rounds != 1 else ''} of "
             f"{switches}, green and blue in turn): "
             f"from the CLI's start to the first response from the new slot on each other node "
             f"({n * (NODES - 1)} measures): {summary(others)}; per-round medians "
             f"{', '.join(f'{m:.1f}' for m in round_medians)} ms",
             f"  - node1 itself (the CLI's node): {summary(local)}; the CLI's exit: {summary(cli)}",
             f"  - failed requests: {counts['failed']} of {counts['ok'] + counts['failed']:,} under a light "
             f"load (one keep-alive connection per node, a request every {LOAD_INTERVAL * 1000:.0f} ms); "
             f"{sum(p.failed for p in pollers)} among the polls; every node's status `agree` (all nodes "
             f"report the same revision): {agree}"]
    if counts["errors"]:
        lines.append(f"  - first failures: {'; '.join(counts['errors'])}")
    return lines


def run_load(ports, seconds):
    """The light load: a request to every port each LOAD_INTERVAL, until
    stdin closes or `seconds` pass; prints {"ok", "failed", "errors"}."""
    pollers = [Poller(port) for port in ports]
    ok, errors = 0, []
    started = time.monotonic()
    tick = 0
    while time.monotonic() - started < seconds:
        for poller in pollers:
            before = poller.failed
            if poller.slot() is not None:
                ok += 1
            elif len(errors) < 5 and poller.failed > before:
                errors.append(f"port {poller.port} at {time.monotonic() - started:.1f} s: {poller.last}")
        tick += 1
        wait = started + tick * LOAD_INTERVAL - time.monotonic()
        if select.select([sys.stdin], [], [], max(wait, 0))[0] and not sys.stdin.read(1):
            break
    print(json.dumps({"ok": ok, "failed": sum(p.failed for p in pollers), "errors": errors}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="the light load of cluster.py")
    parser.add_argument("--load", required=True, help="comma-separated ports on 127.0.0.1")
    parser.add_argument("--seconds", type=float, default=300)
    args = parser.parse_args()
    run_load([int(p) for p in args.load.split(",")], args.seconds)
