#!/usr/bin/env python3
"""switchyard's load benchmark: switchyard, nginx and HAProxy in one run.

One nginx backend and each proxy run with one worker on core 0; wrk runs on
core 1. Each proxy is driven in interleaved rounds (A B C A B C ...) so that
machine drift hits all of them alike. For every scenario the table gives
requests/s, p50/p99 latency, the proxy's CPU per request (utime+stime of
its process over the run, divided by the requests), its RSS, errors, and
the CPU and p99 ratios to nginx measured in the same run. One more row,
HTTP/2 over TLS, is driven by h2load (8 connections of 100 streams) instead
of wrk; `--only-h2` runs just that row. With a TLS handshake per request,
wrk's latency leaves the handshake out and counts wrk's own delays in
(`tls_phases.py`): the run also reads that row's phases off the wire with
tcpdump, and again under an open-loop load at a fixed rate of new
connections, where p99 is a client's latency rather than a share of a
saturated proxy's queue (`--only-tls-phases` runs just those).

Then, against switchyard only: errors across 100 switches and 20 config
reloads under load, and the time from a `switch` command to the first
response from the new slot.

Loopback only; every run is bounded in time. Usage (see README.md here):
    python3 benches/load/bench.py [--rounds 3] [--duration 5] [--only-h2]
        [--only-tls-phases] [--only-proxy-protocol] [--only-cluster] [--switchyard BINARY]
        [--compare NAME=BINARY[,VAR=VALUE...]]...
"""

import argparse
import datetime
import http.client
import os
import platform
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

import cluster
import failback
import guard
import idle
import proxy_protocol
import tls_phases

BACKEND_PORTS = {"blue": 18180, "green": 18181}
PROXY_PORTS = {"nginx": 18182, "haproxy": 18183, "switchyard": 18184}
# Each proxy's HTTPS listener: its HTTP port + 100.
TLS_OFFSET = 100
# Proxies whose HTTPS listener does not answer (an older switchyard build).
NO_TLS = set()
# Each proxy's HTTP/2-over-TLS listener (ALPN h2): its HTTP port + 200. nginx
# and HAProxy get a listener of their own for it, so the HTTPS rows' listeners
# stay HTTP/1.1-only; switchyard offers h2 on every TLS listener, this is a
# second address of its [tls] section.
H2_OFFSET = 200
# Proxies that do not negotiate h2 by ALPN (an older switchyard build).
NO_H2 = set()
# The h2 row: h2load's connections and concurrent streams on each.
H2_CONNECTIONS = 8
H2_STREAMS = 100
H2_LABEL = f"16 B, HTTP/2 over TLS ({H2_CONNECTIONS} conn × {H2_STREAMS} streams)"
# (label, path, new connection per request, over TLS)
SCENARIOS = [
    ("16 B, keep-alive", "/16b", False, False),
    ("16 KiB, keep-alive", "/16k", False, False),
    ("16 B, new connection", "/16b", True, False),
    ("16 KiB, new connection", "/16k", True, False),
    ("16 B, HTTPS keep-alive", "/16b", False, True),
    ("16 B, HTTPS new connection", "/16b", True, True),
]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def ensure_tools():
    """nginx, HAProxy, wrk and h2load from Debian's packages, installed when missing."""
    missing = [t for t in ("nginx", "haproxy", "wrk", "h2load", "taskset") if shutil.which(t) is None]
    if not missing:
        return
    packages = {"nginx": "nginx-light", "haproxy": "haproxy", "wrk": "wrk", "h2load": "nghttp2-client",
                "taskset": "util-linux"}
    wanted = sorted({packages[t] for t in missing})
    if os.geteuid() != 0:
        sys.exit(f"bench: missing {', '.join(missing)}; install them: sudo apt-get install {' '.join(wanted)}")
    print(f"bench: installing {' '.join(wanted)}", file=sys.stderr)
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", *wanted], check=True,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])
    return 0


class Processes:
    """Everything started here, stopped on exit whatever happens."""

    def __init__(self):
        self.procs = []

    def start(self, cmd, core, **kwargs):
        proc = subprocess.Popen(["taskset", "-c", str(core), *cmd], stdout=subprocess.DEVNULL,
                                stderr=kwargs.pop("stderr", subprocess.DEVNULL), text=True, **kwargs)
        self.procs.append(proc)
        return proc

    def stop_all(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def nginx_conf(work, name, http_block):
    path = f"{work}/{name}.conf"
    with open(path, "w") as f:
        f.write(f"worker_processes 1; daemon off; pid {work}/{name}.pid; error_log {work}/{name}.err warn;\n"
                f"events {{ worker_connections 8192; }}\n"
                f"http {{ access_log off; keepalive_requests 1000000; {http_block} }}\n")
    return path


def nginx_worker(work, name, deadline=10):
    """The pid of nginx's one worker (the master only forwards signals)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            master = int(open(f"{work}/{name}.pid").read())
            children = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
            if children:
                return int(children[0])
        except (FileNotFoundError, ValueError):
            pass
        time.sleep(0.05)
    sys.exit(f"bench: nginx {name} did not start; see {work}/{name}.err")


def wait_port(port, deadline=10):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/16b")
            c.getresponse().read()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"bench: nothing answers on 127.0.0.1:{port}")


# What EDGE=1 turns on in a variant: every edge check a request can meet,
# none of them refusing anything here (wrk sends no X-Forwarded-For, comes
# from 127.0.0.1 and stays far under the rate), so what they cost is all
# that differs.
EDGE_SERVER = 'trusted_proxies = ["127.0.0.1"]\n'
EDGE_ROUTE = ('[route.access]\nallow = ["127.0.0.0/8"]\ndeny = ["10.0.0.0/8"]\n'
              '[route.limits]\nrate = "1000000/s"\n')


def switchyard_conf(work, weight=0, name="switchyard", edge=False):
    canary = f'[route.canary]\nslot = "green"\nweight = {weight}\n' if weight else ""
    canary += EDGE_ROUTE if edge else ""
    suffix = "" if name == "switchyard" else "-" + name.split(":", 1)[1]
    return (f'[server]\nlisten = ["127.0.0.1:{PROXY_PORTS[name]}"]\nthreads = 1\n{EDGE_SERVER if edge else ""}'
            f'admin_socket = "{work}/admin{suffix}.sock"\nstate_dir = "{work}/state{suffix}"\n\n'
            f'[tls]\nlisten = ["127.0.0.1:{PROXY_PORTS[name] + TLS_OFFSET}", '
            f'"127.0.0.1:{PROXY_PORTS[name] + H2_OFFSET}"]\n'
            f'certificates = [{{ cert = "{work}/bench.crt", key = "{work}/bench.key" }}]\n\n'
            f'[[route]]\nname = "bench"\nactive = "blue"\n[route.slots]\n'
            f'blue = ["127.0.0.1:{BACKEND_PORTS["blue"]}"]\ngreen = ["127.0.0.1:{BACKEND_PORTS["green"]}"]\n{canary}')


def make_certificate(work):
    """One ECDSA P-256 certificate for every proxy's HTTPS listener (and the
    same PEM pair in one file for HAProxy)."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", f"{work}/bench.key", "-out", f"{work}/bench.crt", "-days", "2",
                    "-subj", "/CN=bench.test", "-addext", "subjectAltName=DNS:bench.test"],
                   check=True, capture_output=True)
    with open(f"{work}/bench.pem", "w") as f:
        f.write(open(f"{work}/bench.crt").read() + open(f"{work}/bench.key").read())


def start_backend(procs, work):
    """The nginx backend: blue and green, each serving /16b and /16k."""
    # nginx's worker runs as www-data: the body file must be readable by it.
    os.chmod(work, 0o755)
    # Not beside switchyard.toml: switchyard watches that directory, and
    # the backend opening the file for every request would wake it (and
    # take core 0 from every proxy's run).
    body_dir = f"{work}/www"
    os.makedirs(body_dir, mode=0o755, exist_ok=True)
    os.chmod(body_dir, 0o755)
    with open(f"{body_dir}/16k.bin", "wb") as f:
        f.write(b"x" * 16384)
    os.chmod(f"{body_dir}/16k.bin", 0o644)
    servers = "".join(
        f'server {{ listen 127.0.0.1:{port} backlog=8192; add_header X-Slot {slot}; '
        f'location /16b {{ return 200 "0123456789abcdef"; }} location /16k {{ alias {body_dir}/16k.bin; }} }} '
        for slot, port in BACKEND_PORTS.items())
    procs.start(["nginx", "-c", nginx_conf(work, "backend", servers)], 0)
    nginx_worker(work, "backend")


def start_all(procs, work, switchyard, variants):
    start_backend(procs, work)
    make_certificate(work)
    blue = BACKEND_PORTS["blue"]

    # The h2 listener is a server of its own with its own upstream: up to
    # H2_CONNECTIONS × H2_STREAMS requests are in flight there, and with the
    # other rows' `keepalive 32` nginx would close and reopen backend
    # connections past 32, which the other proxies (HAProxy's unbounded
    # idle pool) need not do.
    procs.start(["nginx", "-c", nginx_conf(work, "proxy",
                 f'upstream b {{ server 127.0.0.1:{blue}; keepalive 32; }} '
                 f'server {{ listen 127.0.0.1:{PROXY_PORTS["nginx"]} backlog=8192; '
                 f'listen 127.0.0.1:{PROXY_PORTS["nginx"] + TLS_OFFSET} ssl backlog=8192; '
                 f'ssl_certificate {work}/bench.crt; ssl_certificate_key {work}/bench.key; '
                 # As the other proxies: TLS 1.3 (nginx before 1.23.4 leaves
                 # it out by default, and the HTTPS rows then compared
                 # nginx's TLS 1.2 with the others' 1.3).
                 f'ssl_protocols TLSv1.2 TLSv1.3; '
                 # A session cache, so that wrk resumes its TLS sessions
                 # with nginx as it does with switchyard and HAProxy (whose
                 # caches are on by default): the handshake-per-request row
                 # then compares the same kind of handshake.
                 f'ssl_session_cache shared:SSL:10m; '
                 f'location / {{ proxy_pass http://b; '
                 f'proxy_http_version 1.1; proxy_set_header Connection ""; }} }} '
                 f'upstream b2 {{ server 127.0.0.1:{blue}; keepalive {H2_CONNECTIONS * H2_STREAMS}; }} '
                 f'server {{ {nginx_h2_listen(PROXY_PORTS["nginx"] + H2_OFFSET)} '
                 f'ssl_certificate {work}/bench.crt; ssl_certificate_key {work}/bench.key; '
                 # nginx before 1.23.4 leaves TLS 1.3 out by default.
                 f'ssl_protocols TLSv1.2 TLSv1.3; '
                 f'location / {{ proxy_pass http://b2; '
                 f'proxy_http_version 1.1; proxy_set_header Connection ""; }} }}')], 0)
    pids = {"nginx": nginx_worker(work, "proxy")}

    with open(f"{work}/haproxy.cfg", "w") as f:
        f.write(f"global\n  nbthread 1\n  maxconn 4096\ndefaults\n  mode http\n  timeout connect 5s\n"
                f"  timeout client 30s\n  timeout server 30s\n  http-reuse always\n"
                f"frontend front\n  bind 127.0.0.1:{PROXY_PORTS['haproxy']}\n"
                f"  bind 127.0.0.1:{PROXY_PORTS['haproxy'] + TLS_OFFSET} ssl crt {work}/bench.pem\n"
                f"  bind 127.0.0.1:{PROXY_PORTS['haproxy'] + H2_OFFSET} ssl crt {work}/bench.pem alpn h2,http/1.1\n"
                f"  default_backend back\n"
                f"backend back\n  server blue 127.0.0.1:{blue}\n")
    pids["haproxy"] = procs.start(["haproxy", "-db", "-f", f"{work}/haproxy.cfg"], 0).pid

    with open(f"{work}/switchyard.toml", "w") as f:
        f.write(switchyard_conf(work))
    pids["switchyard"] = procs.start([switchyard, "run", "-c", f"{work}/switchyard.toml"], 0,
                                     env={**os.environ, "SWITCHYARD_LOG": "warn"}).pid
    for name, (binary, env) in variants.items():
        config = f"{work}/{name.replace(':', '-')}.toml"
        # CANARY=N in a variant's spec is not an environment variable: that
        # variant runs with a canary of N % (green, the same nginx as blue).
        weight = int(env.pop("CANARY", 0))
        # EDGE=1: that variant runs with trusted_proxies, an access list and
        # a rate limit that refuses nothing (EDGE_SERVER, EDGE_ROUTE).
        edge = env.pop("EDGE", "0") == "1"
        with open(config, "w") as f:
            f.write(switchyard_conf(work, weight=weight, name=name, edge=edge))
        pids[name] = procs.start([binary, "run", "-c", config], 0,
                                 env={**os.environ, "SWITCHYARD_LOG": "warn", **env}).pid
    for name in PROXY_PORTS:
        wait_port(PROXY_PORTS[name])
    for name in PROXY_PORTS:
        if not serves_tls(PROXY_PORTS[name] + TLS_OFFSET):
            # A build from before `[tls]` was served (a --compare "before").
            print(f"bench: {name} serves no HTTPS; its HTTPS rows are left out", file=sys.stderr)
            NO_TLS.add(name)
        if serves_tls(PROXY_PORTS[name] + H2_OFFSET, alpn="h2") != "h2":
            print(f"bench: {name} does not negotiate h2; its HTTP/2 row is left out", file=sys.stderr)
            NO_H2.add(name)
    return pids


def nginx_h2_listen(port):
    """nginx's HTTP/2-over-TLS listener: `http2 on;` from nginx 1.25.1, the
    `listen` parameter before (Debian 12 has 1.22)."""
    out = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr
    version = tuple(int(x) for x in re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", out).groups())
    if version >= (1, 25, 1):
        return f"listen 127.0.0.1:{port} ssl backlog=8192; http2 on;"
    return f"listen 127.0.0.1:{port} ssl http2 backlog=8192;"


def serves_tls(port, alpn=None):
    """Whether a TLS handshake on `port` completes (the certificate is not
    checked: it is the run's own). With `alpn`, offers that protocol alone
    and returns the one the server chose (None for none), or False."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if alpn:
        context.set_alpn_protocols([alpn])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
            with context.wrap_socket(raw, server_hostname="bench.test") as conn:
                return conn.selected_alpn_protocol() if alpn else True
    except OSError:
        return False


def parse_latency_us(out, pct):
    m = re.search(pct + r"%\s+([\d.]+)(us|ms|s)\b", out)
    return float(m.group(1)) * {"us": 1, "ms": 1000, "s": 1e6}[m.group(2)]


def wrk(port, path, close, duration, tls=False, connections=32):
    cmd = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    if close:
        cmd += ["-H", "Connection: close"]
    url = f"https://127.0.0.1:{port + TLS_OFFSET}{path}" if tls else f"http://127.0.0.1:{port}{path}"
    out = subprocess.run(cmd + [url], capture_output=True, text=True, check=True).stdout
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": parse_latency_us(out, "50"),
        "p99": parse_latency_us(out, "99"),
        "errors": (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0),
    }


def h2load(port, path, duration):
    """One h2load run over HTTP/2 with TLS (ALPN offers h2 alone), with
    H2_CONNECTIONS connections of H2_STREAMS concurrent streams each.

    h2load prints only min/max/mean/sd of its "time for request" (a
    request's start to its stream's close); p50 and p99 of that same time
    come from its per-request log (`--log-file`, on /dev/shm when there).
    `errors` is h2load's "failed" count, which includes its "errored" and
    timed-out requests and responses other than 2xx/3xx; a run h2load could
    not make at all counts one error and says why in `detail`."""
    url = f"https://127.0.0.1:{port + H2_OFFSET}{path}"
    logdir = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.NamedTemporaryFile(prefix="switchyard-h2load-", suffix=".log", dir=logdir) as log:
        cmd = ["taskset", "-c", "1", "h2load", "-c", str(H2_CONNECTIONS), "-m", str(H2_STREAMS),
               # --npn-list is the ALPN list in Debian 12's h2load (1.52);
               # later ones call it --alpn-list and still take this name.
               "-D", str(duration), "--npn-list=h2", f"--log-file={log.name}",
               # One TLS 1.3 cipher offered: each server would pick its own.
               "--tls13-ciphers=TLS_AES_128_GCM_SHA256", url]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
            out, err = done.stdout, done.stderr
        except subprocess.TimeoutExpired as e:
            out, err = e.stdout or "", f"h2load did not finish within {duration + 60} s"
            out = out.decode() if isinstance(out, bytes) else out
        times = sorted(int(cols[2]) for cols in (line.split("\t") for line in open(log.name))
                       if len(cols) >= 3 and cols[1] != "-1")
    counts = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                       r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    rps = re.search(r"finished in [^,]+, ([\d.]+) req/s", out)
    protocol = re.search(r"Application protocol: (\S+)", out)
    tls = [m.group(1).strip() for m in re.finditer(r"(?:TLS Protocol|Cipher|Server Temp Key): (.+)", out)]
    if not (counts and codes and rps) or not times:
        why = err.strip().splitlines()[0] if err.strip() else (out.strip() or "no output").splitlines()[-1]
        return {"requests": 0, "rps": 0.0, "p50": 0.0, "p99": 0.0, "errors": 1,
                "detail": f"h2load: {why}", "tls": ""}
    _, _, _, succeeded, failed, errored, timeout = map(int, counts.groups())
    run = {
        "requests": succeeded,
        "rps": float(rps.group(1)),
        "p50": times[len(times) // 2],
        "p99": times[min(len(times) - 1, int(len(times) * 0.99))],
        "errors": failed,
        "detail": "",
        "tls": " ".join(tls + ([f"ALPN {protocol.group(1)}"] if protocol else [])),
    }
    if failed:
        run["detail"] = (f"failed {failed}: errored {errored}, timeout {timeout}, 4xx {codes.group(3)}, "
                         f"5xx {codes.group(4)}")
    if protocol and protocol.group(1) != "h2":
        run["errors"] += 1
        run["detail"] = f"negotiated {protocol.group(1)}, not h2; " + run["detail"]
    return run


def measure(pids, rounds, duration, scenarios=True, h2=True):
    results = {}
    for label, path, close, tls in SCENARIOS if scenarios else []:
        for _ in range(rounds):
            for name, pid in pids.items():
                if tls and name in NO_TLS:
                    continue
                before = cpu_seconds(pid)
                run = wrk(PROXY_PORTS[name], path, close, duration, tls)
                run["cpu_us"] = (cpu_seconds(pid) - before) * 1e6 / max(run["requests"], 1)
                run["rss"] = rss_kib(pid)
                results.setdefault((label, name), []).append(run)
    for _ in range(rounds if h2 else 0):
        for name, pid in pids.items():
            if name in NO_H2:
                continue
            before = cpu_seconds(pid)
            run = h2load(PROXY_PORTS[name], "/16b", duration)
            run["cpu_us"] = (cpu_seconds(pid) - before) * 1e6 / max(run["requests"], 1)
            run["rss"] = rss_kib(pid)
            results.setdefault((H2_LABEL, name), []).append(run)
    return results


def check_no_errors(results):
    """Error responses are cheaper than real ones: figures with errors would
    flatter whoever failed. Refuse to report them. The h2 row is exempt: it
    shows its errors in place of its figures (see `table`), so that one
    proxy failing HTTP/2 does not cost the rest of the run."""
    failed = [f"{label} via {name}" for (label, name), runs in results.items()
              if label != H2_LABEL and sum(r["errors"] for r in runs)]
    if failed:
        sys.exit("bench: errors during " + ", ".join(failed) + "; figures not reported")


def table(results, names):
    """Medians over the rounds. A row with errors (only the h2 row gets
    here with any) shows the errors and no figures."""
    lines = ["| scenario | proxy | req/s | p50 | p99 | CPU µs/req | RSS MiB | errors | CPU ÷ nginx | p99 ÷ nginx |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for label in [scenario[0] for scenario in SCENARIOS] + [H2_LABEL]:
        base = results.get((label, "nginx"))
        if base and not sum(r["errors"] for r in base):
            base_cpu = statistics.median(r["cpu_us"] for r in base)
            base_p99 = statistics.median(r["p99"] for r in base)
        else:
            base_cpu = base_p99 = None
        for name in names:
            if (label, name) not in results:
                continue
            runs = results[(label, name)]
            errors = sum(r["errors"] for r in runs)
            if errors:
                detail = "; ".join(sorted({r["detail"] for r in runs if r.get("detail")}))
                lines.append(f"| {label} | {name} | — | — | — | — | — | {errors} ({detail}; "
                             f"figures not reported) | — | — |")
                continue

            def med(key):
                return statistics.median(r[key] for r in runs)

            cpu_ratio = f"{med('cpu_us') / base_cpu:.2f}" if base_cpu else "—"
            p99_ratio = f"{med('p99') / base_p99:.2f}" if base_p99 else "—"
            lines.append(f"| {label} | {name} | {med('rps'):,.0f} | {med('p50') / 1000:.2f} ms | "
                         f"{med('p99') / 1000:.2f} ms | {med('cpu_us'):.1f} | {med('rss') / 1024:.1f} | "
                         f"{errors} | {cpu_ratio} | {p99_ratio} |")
    return "\n".join(lines)


def h2_notes(results):
    """How the h2 row was made, and what each proxy negotiated with h2load."""
    negotiated = {name: sorted({r["tls"] for r in runs if r["tls"]})
                  for (label, name), runs in results.items() if label == H2_LABEL}
    lines = [f"- h2 row: h2load -c{H2_CONNECTIONS} -m{H2_STREAMS} (ALPN offers h2 alone) on core 1 against each "
             f"proxy's HTTP/2 TLS listener, backend HTTP/1.1 kept alive; p50/p99 are h2load's \"time for request\" "
             f"(a request's start to its stream's close) from its per-request log; errors are h2load's \"failed\" "
             f"requests (errored, timed out and 4xx/5xx included)"]
    lines += [f"  - {name}: {', '.join(tls) or 'nothing negotiated'}" for name, tls in negotiated.items()]
    left_out = sorted(NO_H2)
    if left_out:
        lines.append(f"  - left out, no h2 by ALPN: {', '.join(left_out)}")
    return lines


def admin(switchyard, work, *args):
    return subprocess.run([switchyard, *args, "--socket", f"{work}/admin.sock"], capture_output=True, text=True)


def under_load(duration, action):
    """Runs `action` while wrk loads switchyard; returns wrk's figures."""
    load = subprocess.Popen(["taskset", "-c", "1", "wrk", "-t1", "-c32", f"-d{duration}s",
                             f"http://127.0.0.1:{PROXY_PORTS['switchyard']}/16b"],
                            stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    action()
    out = load.communicate()[0]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return (int(re.search(r"(\d+) requests in", out).group(1)),
            (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0))


def switching_checks(switchyard, work):
    lines = []
    slots = ["green", "blue"]

    def flips():
        for i in range(100):
            result = admin(switchyard, work, "switch", "bench", slots[i % 2])
            if result.returncode != 0:
                sys.exit(f"bench: switch failed: {result.stderr}")

    requests, errors = under_load(8, flips)
    lines.append(f"- 100 switches under load: {errors} errors in {requests:,} requests")

    def reloads():
        for i in range(20):
            tmp = f"{work}/switchyard.toml.tmp"
            with open(tmp, "w") as f:
                f.write(switchyard_conf(work, weight=(i % 10) * 10 + 5))
            os.rename(tmp, f"{work}/switchyard.toml")
            # Past the watcher's 250 ms settle time, so each edit applies.
            time.sleep(0.4)

    requests, errors = under_load(10, reloads)
    lines.append(f"- 20 config reloads under load: {errors} errors in {requests:,} requests")

    with open(f"{work}/switchyard.toml", "w") as f:
        f.write(switchyard_conf(work))
    # Removing the canary is an edit the watcher holds for 3 s; apply it
    # now so it does not land in the middle of the switch timings.
    admin(switchyard, work, "reload")
    client = http.client.HTTPConnection("127.0.0.1", PROXY_PORTS["switchyard"])

    def slot():
        client.request("GET", "/16b")
        response = client.getresponse()
        response.read()
        return response.getheader("X-Slot")

    from_start, first_is_new = [], 0
    active = slot()
    for _ in range(20):
        target = "green" if active == "blue" else "blue"
        started = time.monotonic()
        admin(switchyard, work, "switch", "bench", target)
        first = slot()
        first_is_new += first == target
        while first != target:
            first = slot()
        from_start.append((time.monotonic() - started) * 1000)
        active = target
    lines.append(f"- `switch` to first response from the new slot: the first request after the command returns "
                 f"went to the new slot {first_is_new}/20 times; from the command's start (CLI process included): "
                 f"median {statistics.median(from_start):.2f} ms, max {max(from_start):.2f} ms")
    return lines


def machine():
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    return f"{os.cpu_count()} cores, {model}, Linux {platform.release()}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    parser.add_argument("--switchyard", default=f"{root}/target/release/switchyard")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--results", default=f"{root}/benches/results")
    parser.add_argument("--only-failback", action="store_true",
                        help="measure only the fail-back window (no proxy comparison)")
    parser.add_argument("--only-guard", action="store_true",
                        help="measure only the guard's rollback of a failing release")
    parser.add_argument("--only-idle", action="store_true",
                        help="measure only the memory of idle kept-alive connections")
    parser.add_argument("--only-h2", action="store_true",
                        help="measure only the HTTP/2-over-TLS row (h2load)")
    parser.add_argument("--only-tls-phases", action="store_true",
                        help="measure only where an HTTPS request with a handshake per connection "
                             "spends its time, off the wire (tcpdump)")
    parser.add_argument("--only-proxy-protocol", action="store_true",
                        help="measure only what a PROXY protocol header costs switchyard per connection "
                             "(HAProxy with send-proxy as the client)")
    parser.add_argument("--only-cluster", action="store_true",
                        help="measure only how long a switch on one node of a 3-node cluster (etcd) takes "
                             "to reach the others (cluster.py)")
    parser.add_argument("--idle-connections", type=int, default=3000,
                        help="idle kept-alive connections per proxy (default 3000)")
    parser.add_argument("--compare", action="append", default=[], metavar="NAME=BINARY[,VAR=VALUE...]",
                        help="also measure another switchyard build (or the same one with environment "
                             "variables set) side by side, as 'switchyard:NAME'; repeatable. "
                             "CANARY=N runs that one with an N %% canary; EDGE=1 with trusted_proxies, "
                             "an access list and a rate limit that refuse nothing")
    args = parser.parse_args()
    variants = {}
    for spec in args.compare:
        name, _, rest = spec.partition("=")
        binary, *env = rest.split(",")
        label = f"switchyard:{name}"
        PROXY_PORTS[label] = 18185 + len(variants)
        assert PROXY_PORTS[label] < PROXY_PORTS["nginx"] + TLS_OFFSET, "too many --compare"
        variants[label] = (binary or args.switchyard, dict(e.split("=", 1) for e in env))
    if not os.path.exists(args.switchyard):
        sys.exit(f"bench: {args.switchyard} is missing; build it: cargo build --release -p switchyard")
    ensure_tools()
    rows = 1 if args.only_h2 else len(SCENARIOS) + 1
    expected = rows * args.rounds * len(PROXY_PORTS) * args.duration + 20
    if args.only_proxy_protocol:
        expected = 2 * args.rounds * args.duration + 10
    if args.only_cluster:
        expected = 4 * args.rounds + 10
    print(f"bench: about {expected // 60} min {expected % 60} s", file=sys.stderr)

    # Room for the idle-connection row: the proxies inherit the limit.
    idle.raise_fd_limit(4 * args.idle_connections + 1024)
    procs = Processes()
    work = tempfile.mkdtemp(prefix="switchyard-bench-")
    try:
        if args.only_proxy_protocol:
            # The backend alone: the module starts its own switchyards and HAProxy.
            start_backend(procs, work)
            print(proxy_protocol.run(procs, work, args.switchyard, args.rounds, args.duration))
            return
        if args.only_cluster:
            # Its own nginx, etcd and nodes: none of the proxies compared.
            print("\n".join(cluster.cluster_checks(sys.modules[__name__], args.switchyard, work, args.rounds)))
            return
        pids = start_all(procs, work, args.switchyard, variants)
        # Each proxy as it starts, before any request (one worker each).
        at_start = [f"{name} {rss_kib(pid) / 1024:.1f} MiB" for name, pid in pids.items()]
        rss_at_start = [f"RSS at start, before any request: {', '.join(at_start)}"]
        if args.only_failback:
            print("\n".join(failback.failback_checks(sys.modules[__name__], args.switchyard, work, procs)))
            return
        if args.only_guard:
            print("\n".join(guard.guard_checks(sys.modules[__name__], args.switchyard, work, procs)))
            return
        if args.only_idle:
            print("\n".join(rss_at_start + [""] + idle.idle_checks(sys.modules[__name__], pids, args.idle_connections)))
            return
        if args.only_tls_phases:
            this = sys.modules[__name__]
            print("\n".join(tls_phases.tls_phase_checks(this, list(PROXY_PORTS)) + [""]
                            + tls_phases.tls_rate_checks(this, list(PROXY_PORTS))))
            return
        if args.only_h2:
            results = measure(pids, args.rounds, args.duration, scenarios=False)
            print("\n".join([table(results, list(PROXY_PORTS)), "", *h2_notes(results)]))
            return
        results = measure(pids, args.rounds, args.duration)
        check_no_errors(results)
        checks = switching_checks(args.switchyard, work)
        checks += failback.failback_checks(sys.modules[__name__], args.switchyard, work, procs)
        checks += guard.guard_checks(sys.modules[__name__], args.switchyard, work, procs)
        cluster_rows = cluster.cluster_checks(sys.modules[__name__], args.switchyard, work, args.rounds)
        idle_rows = idle.idle_checks(sys.modules[__name__], pids, args.idle_connections)
        tls_rows = tls_phases.tls_phase_checks(sys.modules[__name__], list(PROXY_PORTS))
        tls_rows += [""] + tls_phases.tls_rate_checks(sys.modules[__name__], list(PROXY_PORTS))
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)

    commit = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    today = datetime.date.today().isoformat()
    command = f"python3 benches/load/bench.py --rounds {args.rounds} --duration {args.duration}"
    if args.switchyard != f"{root}/target/release/switchyard":
        command += f" --switchyard {args.switchyard}"
    command += "".join(f" --compare {spec}" for spec in args.compare)
    report = "\n".join([
        f"# Load benchmark {today}",
        "",
        f"- commit: {commit}{' (with uncommitted changes)' if dirty else ''}",
        f"- machine: {machine()}",
        f"- command: `{command}`",
        f"- setup: nginx backend and each proxy with one worker on core 0, wrk -t1 -c32 on core 1, "
        f"{args.rounds} interleaved rounds of {args.duration} s, medians; CPU is the proxy process's utime+stime per request",
        *h2_notes(results),
        "",
        table(results, list(PROXY_PORTS)),
        "",
        *tls_rows,
        "",
        *rss_at_start,
        "",
        *idle_rows,
        "",
        "Switching under load (switchyard):",
        "",
        *checks,
        "",
        "Switching across a cluster (switchyard, `cluster.py`):",
        "",
        *cluster_rows,
        "",
    ])
    print(report)
    os.makedirs(args.results, exist_ok=True)
    out = f"{args.results}/{today}-{commit or 'nocommit'}.md"
    with open(out, "w") as f:
        f.write(report)
    print(f"bench: written to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
