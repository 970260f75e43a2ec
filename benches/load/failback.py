"""The fail-back window, measured against the real binary: the active
slot's backend (its own nginx) is SIGKILLed under wrk load, and the time
from the kill until switchyard's status shows the previous slot active is
taken from the admin socket; wrk's errors over the run are the client
errors. Used by bench.py."""

import json
import os
import re
import signal
import socket
import statistics
import subprocess
import time

PORT = 18190
GREEN_PORT = 18191
INTERVAL_MS = 200
FALL = 3


def config(work, blue_port):
    return (f'[server]\nlisten = ["127.0.0.1:{PORT}"]\nthreads = 1\n'
            f'admin_socket = "{work}/failback.sock"\nstate_dir = "{work}/failback-state"\n\n'
            f'[[route]]\nname = "fb"\nactive = "blue"\n[route.slots]\n'
            f'blue = ["127.0.0.1:{blue_port}"]\ngreen = ["127.0.0.1:{GREEN_PORT}"]\n'
            f'[route.health]\npath = "/16b"\ninterval = "{INTERVAL_MS}ms"\ntimeout = "{INTERVAL_MS}ms"\n'
            f'rise = 1\nfall = {FALL}\n')


def ask(work, request, sock="failback.sock"):
    """One admin request over the socket `work/sock`, without starting a
    CLI process."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(f"{work}/{sock}")
        s.sendall((json.dumps(request) + "\n").encode())
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)


def active(work):
    return ask(work, {"cmd": "status", "route": "fb"})["result"]["routes"][0]["active"]


def failback_checks(bench, switchyard, work, procs, runs=10):
    """`bench` is the bench module (nginx and process helpers). Measures
    under load (real requests see the dead backend first: passive checks)
    and without (the probes alone must notice)."""
    with open(f"{work}/failback.toml", "w") as f:
        f.write(config(work, bench.BACKEND_PORTS["blue"]))
    procs.start([switchyard, "run", "-c", f"{work}/failback.toml"], 0,
                env={**os.environ, "SWITCHYARD_LOG": "warn"})
    bench.wait_port(PORT)
    return [measure(bench, switchyard, work, procs, runs, loaded=True),
            measure(bench, switchyard, work, procs, runs, loaded=False)]


def measure(bench, switchyard, work, procs, runs, loaded):
    windows, errors, requests = [], 0, 0
    for run in range(runs):
        name = f"green{run}{'l' if loaded else 'q'}"
        server = (f'server {{ listen 127.0.0.1:{GREEN_PORT} backlog=8192; add_header X-Slot green; '
                  f'location /16b {{ return 200 "0123456789abcdef"; }} }}')
        master = procs.start(["nginx", "-c", bench.nginx_conf(work, name, server)], 0)
        worker = bench.nginx_worker(work, name)
        switched = subprocess.run([switchyard, "switch", "fb", "green", "--timeout", "10s",
                                   "--socket", f"{work}/failback.sock"], capture_output=True, text=True)
        if switched.returncode != 0:
            raise SystemExit(f"bench: switch to green failed: {switched.stderr}")
        load = subprocess.Popen(["taskset", "-c", "1", "wrk", "-t1", "-c8", "-d3s",
                                 f"http://127.0.0.1:{PORT}/16b"], stdout=subprocess.PIPE,
                                text=True) if loaded else None
        time.sleep(1.0)
        killed = time.monotonic()
        for pid in (worker, master.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        while active(work) != "blue":
            if time.monotonic() - killed > 10:
                raise SystemExit("bench: no fail-back within 10 s")
            time.sleep(0.002)
        windows.append((time.monotonic() - killed) * 1000)
        master.wait()
        if load is None:
            continue
        out = load.communicate()[0]
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        errors += (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)
        requests += int(re.search(r"(\d+) requests in", out).group(1))
    how = "under load" if loaded else "with no traffic (probes only)"
    line = (f"- fail-back, the active slot's backend SIGKILLed {how} ({runs} runs, probe interval "
            f"{INTERVAL_MS} ms, fall {FALL}): from the kill to the previous slot active, median "
            f"{statistics.median(windows):.0f} ms, max {max(windows):.0f} ms "
            f"(all: {', '.join(f'{w:.0f}' for w in windows)})")
    if loaded:
        line += f"; {errors} client errors in {requests:,} requests"
    return line
