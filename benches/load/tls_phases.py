"""Where the time of an HTTPS request with a handshake per connection goes,
read off the wire rather than from wrk.

wrk's latency for a new connection starts when it writes the request,
after its side of the TLS handshake, and ends when it has read the answer.
With a handshake per request wrk's one thread is the busiest thing in the
run (client handshakes for 32 connections), so that latency also holds the
time wrk takes to come back to a connection whose answer is already there;
and a proxy that answers handshakes sooner hands wrk more of them at once.
The whole connection, as a user waits for it, is from the client's SYN to
the last byte of the answer.

For each proxy, tcpdump records the loopback traffic of its HTTPS listener
while wrk (-c32, new connection per request) loads it; every connection
wrk opened and the proxy answered and closed is split into: the client's
SYN to its ClientHello, the proxy's turnaround of the ClientHello, wrk's
turnaround of the proxy's handshake flight, the proxy's turnaround of the
request (the backend's included), and the whole. tcpdump comes from
Debian's `tcpdump` package, installed when missing.

A second table loads each proxy the same way but open-loop, at one fixed
rate of new connections that none of the proxies is saturated by
(h2load --h1, one connection per millisecond, one request each): with
nobody's queue in the way, its p99 is the latency a client sees at that
load, not how a closed loop of 32 clients shares out the time of a
saturated proxy.

Loopback only, bounded: one wrk run and one h2load run of a few seconds
per proxy.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

# A TLS 1.3 close_notify alert as it goes on the wire (record header, the
# encrypted alert and its type, the AEAD tag).
CLOSE_NOTIFY_LEN = 24

PHASES = [
    ("syn_hello", "SYN → ClientHello (client)"),
    ("hello_flight", "ClientHello → handshake flight (proxy)"),
    ("flight_request", "flight → Finished + request (client)"),
    ("request_answer", "request → last byte of the answer (proxy, backend included)"),
    ("whole", "SYN → last byte of the answer (whole)"),
]

LINE = re.compile(r"(\d+\.\d+) IP 127\.0\.0\.1\.(\d+) > 127\.0\.0\.1\.(\d+): Flags \[([^\]]*)\].*length (\d+)")


def ensure_tcpdump():
    if shutil.which("tcpdump"):
        return
    if os.geteuid() != 0:
        sys.exit("bench: tcpdump is missing; install it: sudo apt-get install tcpdump")
    print("bench: installing tcpdump", file=sys.stderr)
    subprocess.run(["apt-get", "install", "-y", "-qq", "tcpdump"], check=True,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def phases(capture_text, port, capture_end):
    """Per connection of the proxy at `port`, the seconds of each phase."""
    port = str(port)
    conns = defaultdict(list)
    for line in capture_text.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        ts, src, dst, flags, length = float(m.group(1)), m.group(2), m.group(3), m.group(4), int(m.group(5))
        if src == port:
            conns[dst].append((ts, "proxy", flags, length))
        elif dst == port:
            conns[src].append((ts, "client", flags, length))
    found = []
    for events in conns.values():
        syn = [ts for ts, side, flags, _ in events if side == "client" and flags == "S"]
        data = [(ts, side, length) for ts, side, _, length in events if length > 0]
        proxy_fin = [ts for ts, side, flags, _ in events if side == "proxy" and "F" in flags]
        # A whole exchange: ClientHello, the proxy's flight, Finished with
        # the request, then the answer, and the proxy closing (the request
        # said `Connection: close`), well before the capture ended.
        if not syn or not proxy_fin or len(data) < 4 or syn[0] > capture_end - 0.5:
            continue
        if [d[1] for d in data[:3]] != ["client", "proxy", "client"]:
            continue
        answer = [ts for ts, side, length in data[3:]
                  if side == "proxy" and length != CLOSE_NOTIFY_LEN and ts <= proxy_fin[0]]
        if not answer:
            continue
        found.append({
            "syn_hello": data[0][0] - syn[0],
            "hello_flight": data[1][0] - data[0][0],
            "flight_request": data[2][0] - data[1][0],
            "request_answer": answer[-1] - data[2][0],
            "whole": answer[-1] - syn[0],
        })
    return found


def percentile(values, pct):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * pct / 100))]


def fixed_rate_load(tls_port, rate, seconds, work):
    """h2load over HTTP/1.1 with TLS, opening `rate` connections a second
    (one each 1/rate s, whether or not earlier ones are answered), one
    request with `Connection: close` on each. Its per-request times, in
    µs, and the requests that failed."""
    count = rate * seconds
    log = f"{work}/h2load.log"
    cmd = ["taskset", "-c", "1", "h2load", "--h1", "-c", str(count), "-n", str(count),
           "-r", "1", f"--rate-period={1000 / rate:g}ms", "-H", "Connection: close",
           "--tls13-ciphers=TLS_AES_128_GCM_SHA256", f"--log-file={log}",
           f"https://127.0.0.1:{tls_port}/16b"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    except subprocess.TimeoutExpired:
        return [], count
    if not os.path.exists(log):
        return [], count
    times = [int(cols[2]) for cols in (line.split("\t") for line in open(log))
             if len(cols) >= 3 and cols[1] == "200"]
    return times, count - len(times)


def capture(bench, name, tls_port, duration, rate=None):
    """One run against `tls_port` under tcpdump: wrk's closed loop, or
    with `rate` h2load's open loop. The load's own figures and the
    phases found."""
    with tempfile.TemporaryDirectory(prefix="switchyard-tls-phases-") as work:
        pcap = f"{work}/capture.pcap"
        dump = subprocess.Popen(["tcpdump", "-i", "lo", "-nn", "-tt", "-U", "-w", pcap, f"tcp port {tls_port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            # tcpdump listens once its capture file exists.
            deadline = time.time() + 5
            while not os.path.exists(pcap) and time.time() < deadline:
                time.sleep(0.05)
            started = time.time()
            if rate:
                run = fixed_rate_load(tls_port, rate, duration, work)
            else:
                run = bench.wrk(tls_port - bench.TLS_OFFSET, "/16b", True, duration, tls=True)
            ended = time.time()
            time.sleep(0.5)
        finally:
            dump.send_signal(signal.SIGINT)
            dump.wait(timeout=10)
        text = subprocess.run(["tcpdump", "-nn", "-tt", "-r", pcap], capture_output=True, text=True).stdout
    # The capture's clock is the wall clock: connections wrk opened in the
    # last half second before it stopped may be cut off, and are left out.
    found = phases(text, tls_port, ended)
    return run, found, ended - started


def tls_phase_checks(bench, names, duration=3):
    """The table of phases for each proxy in `names`, nginx first."""
    ensure_tcpdump()
    rows, whole = [], {}
    for name in names:
        if name in bench.NO_TLS:
            continue
        run, found, _ = capture(bench, name, bench.PROXY_PORTS[name] + bench.TLS_OFFSET, duration)
        if not found:
            rows.append(f"| {name} | no whole connection seen | | | | | |")
            continue
        cells = []
        for key, _ in PHASES:
            values = [f[key] * 1000 for f in found]
            cells.append(f"{percentile(values, 50):.2f} / {percentile(values, 99):.2f}")
        whole[name] = (percentile([f["whole"] for f in found], 50), percentile([f["whole"] for f in found], 99))
        wrk_says = f"{run['p50'] / 1000:.2f} / {run['p99'] / 1000:.2f}"
        rows.append(f"| {name} | {len(found)} | " + " | ".join(cells) + f" | {wrk_says} |")
    header = ("| proxy | connections | " + " | ".join(label for _, label in PHASES)
              + " | wrk's latency |")
    lines = [
        f"HTTPS with a handshake per request, read off the wire (tcpdump on lo, wrk -t1 -c32 for {duration} s; "
        "p50 / p99 in ms of every connection wrk opened and the proxy answered and closed):",
        "",
        header,
        "|" + "---|" * (len(PHASES) + 3),
        *rows,
    ]
    if "nginx" in whole:
        base50, base99 = whole["nginx"]
        ratios = [f"{name} {p50 / base50:.2f} / {p99 / base99:.2f}" for name, (p50, p99) in whole.items()]
        lines += ["", f"Whole connection ÷ nginx (p50 / p99): {', '.join(ratios)}"]
    return lines


def tls_rate_checks(bench, names, rate=1000, seconds=3):
    """The phases again, under an open-loop load of `rate` new connections
    a second, for each proxy in `names`, nginx first."""
    ensure_tcpdump()
    rows, whole, client = [], {}, {}
    for name in names:
        if name in bench.NO_TLS:
            continue
        (times, failed), found, _ = capture(bench, name, bench.PROXY_PORTS[name] + bench.TLS_OFFSET,
                                            seconds, rate=rate)
        if not found or not times:
            rows.append(f"| {name} | no whole connection seen ({failed} requests failed) | | | | | | |")
            continue
        cells = []
        for key, _ in PHASES:
            values = [f[key] * 1000 for f in found]
            cells.append(f"{percentile(values, 50):.2f} / {percentile(values, 99):.2f}")
        whole[name] = (percentile([f["whole"] for f in found], 50), percentile([f["whole"] for f in found], 99))
        client[name] = (percentile(times, 50), percentile(times, 99))
        h2load_says = f"{client[name][0] / 1000:.2f} / {client[name][1] / 1000:.2f}"
        rows.append(f"| {name} | {len(found)} | {failed} | " + " | ".join(cells) + f" | {h2load_says} |")
    header = ("| proxy | connections | failed | " + " | ".join(label for _, label in PHASES)
              + " | h2load's request time |")
    lines = [
        f"The same at a fixed rate, open loop: h2load --h1 opening {rate} connections/s (one each "
        f"{1000 / rate:g} ms) for {seconds} s, one request each; p50 / p99 in ms off the wire, and h2load's own "
        "time from writing the request to the end of the answer:",
        "",
        header,
        "|" + "---|" * (len(PHASES) + 4),
        *rows,
    ]
    if "nginx" in whole:
        ratios = [f"{name} {whole[name][0] / whole['nginx'][0]:.2f} / {whole[name][1] / whole['nginx'][1]:.2f}"
                  for name in whole]
        lines += ["", f"Whole connection ÷ nginx at {rate}/s (p50 / p99): {', '.join(ratios)}"]
        ratios = [f"{name} {client[name][0] / client['nginx'][0]:.2f} / {client[name][1] / client['nginx'][1]:.2f}"
                  for name in client]
        lines += [f"h2load's request time ÷ nginx at {rate}/s (p50 / p99): {', '.join(ratios)}"]
    return lines
