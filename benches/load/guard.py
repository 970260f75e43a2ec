"""The guard after a switch, measured against the real binary: under wrk
load, the route is switched to a slot whose nginx answers every request
500 but its health path (`/16k`, which the good backend serves too): a
release that fails users while its health endpoint passes. Reported:
the time from the switch (the first bad answer follows within a request's
time) until switchyard's status shows the previous slot active again, and
how many requests reached the bad slot (wrk's non-2xx answers). Used by
bench.py."""

import os
import re
import statistics
import subprocess
import time

import failback

PORT = 18192
BAD_PORT = 18193
MIN_REQUESTS = 100


def config(work, good_port):
    return (f'[server]\nlisten = ["127.0.0.1:{PORT}"]\nthreads = 1\n'
            f'admin_socket = "{work}/guard.sock"\nstate_dir = "{work}/guard-state"\n\n'
            f'[[route]]\nname = "gd"\nactive = "blue"\n[route.slots]\n'
            f'blue = ["127.0.0.1:{good_port}"]\ngreen = ["127.0.0.1:{BAD_PORT}"]\n'
            f'[route.health]\npath = "/16k"\ninterval = "200ms"\nrise = 1\nfall = 3\n'
            f'[route.guard]\nwindow = "1m"\nmin_requests = {MIN_REQUESTS}\n')


def ask(work, request):
    return failback.ask(work, request, sock="guard.sock")


def route(work):
    return ask(work, {"cmd": "status", "route": "gd"})["result"]["routes"][0]


def guard_checks(bench, switchyard, work, procs, runs=5):
    """`bench` is the bench module (nginx and process helpers)."""
    with open(f"{work}/guard.toml", "w") as f:
        f.write(config(work, bench.BACKEND_PORTS["blue"]))
    procs.start([switchyard, "run", "-c", f"{work}/guard.toml"], 0,
                env={**os.environ, "SWITCHYARD_LOG": "warn"})
    bench.wait_port(PORT)
    server = (f'server {{ listen 127.0.0.1:{BAD_PORT} backlog=8192; '
              f'location /16k {{ return 200 "ok"; }} location / {{ return 500 "broken"; }} }}')
    procs.start(["nginx", "-c", bench.nginx_conf(work, "guard-bad", server)], 0)
    bench.nginx_worker(work, "guard-bad")
    windows, reached, totals = [], [], []
    for _ in range(runs):
        deadline = time.monotonic() + 10
        while route(work)["slots"][1]["health"] != "healthy":
            if time.monotonic() > deadline:
                raise SystemExit("bench: the bad slot never passed its health check")
            time.sleep(0.01)
        load = subprocess.Popen(["taskset", "-c", "1", "wrk", "-t1", "-c8", "-d2s",
                                 f"http://127.0.0.1:{PORT}/16b"], stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        ask(work, {"cmd": "switch", "route": "gd", "slot": "green"})
        switched = time.monotonic()
        while route(work)["active"] != "blue":
            if time.monotonic() - switched > 10:
                raise SystemExit("bench: no guard rollback within 10 s")
            time.sleep(0.002)
        windows.append((time.monotonic() - switched) * 1000)
        out = load.communicate()[0]
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        reached.append(int(non2xx.group(1)) if non2xx else 0)
        totals.append(int(re.search(r"(\d+) requests in", out).group(1)))
        # The next run switches again: the failed mark is cleared by it.
    return [f"- guard rollback, a release answering every request 500 switched to under load "
            f"({runs} runs, wrk -c8, min_requests {MIN_REQUESTS}): from the switch to the previous "
            f"slot active again, median {statistics.median(windows):.0f} ms, max {max(windows):.0f} ms "
            f"(all: {', '.join(f'{w:.0f}' for w in windows)}); requests that reached the bad slot "
            f"median {statistics.median(reached):.0f} (all: {', '.join(map(str, reached))}) "
            f"of {sum(totals):,} in the runs"]
