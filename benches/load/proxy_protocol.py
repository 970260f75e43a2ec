"""What switchyard's PROXY protocol support costs a connection.

With `[server] proxy_protocol = true` a plain listener reads a PROXY header
(v1 or v2) at the start of every connection before the request. wrk cannot
send one, so HAProxy is the client that does:

    wrk (kept alive) -> HAProxy -> switchyard -> nginx backend (blue)

Two switchyards run side by side, one with `proxy_protocol = true` and one
without, each behind an HAProxy frontend of its own; the two differ only in
`send-proxy` (v1) on HAProxy's server line. HAProxy opens a new connection
to switchyard for every request, so every request pays one header, and
both cases pay the same connection setup: the difference in switchyard's
CPU per request (utime+stime over the run ÷ requests) is the header's cost
per connection. HAProxy (2.6) writes the header in a TCP segment of its own
before the request's, so the figure includes switchyard reading a second
segment; a client that sends both at once may cost less. HAProxy runs on
core 1 with wrk, leaving core 0 to switchyard and the backend as in
bench.py. Before measuring: a request through the `send-proxy` frontend
must get a 200, one sent straight to the `proxy_protocol` switchyard
without a header must not, and the connections accepted per request are
counted (the kernel's PassiveOpens).

Loopback only, ports 18400-18403; bounded: the checks, then rounds × 2 wrk
runs of `duration` seconds. Used by bench.py (`--only-proxy-protocol`).
"""

import os
import socket
import statistics

CASES = ("with", "without")
SWITCHYARD_PORTS = {"with": 18400, "without": 18401}
FRONT_PORTS = {"with": 18402, "without": 18403}
LABELS = {"with": "PROXY v1 header (`send-proxy`)", "without": "no header"}
REQUEST = b"GET /16b HTTP/1.1\r\nHost: bench.test\r\n\r\n"


def switchyard_conf(work, case, backends):
    header = "proxy_protocol = true\n" if case == "with" else ""
    return (f'[server]\nlisten = ["127.0.0.1:{SWITCHYARD_PORTS[case]}"]\nthreads = 1\n{header}'
            f'admin_socket = "{work}/pp-{case}.sock"\nstate_dir = "{work}/pp-{case}-state"\n\n'
            f'[[route]]\nname = "bench"\nactive = "blue"\n[route.slots]\n'
            f'blue = ["127.0.0.1:{backends["blue"]}"]\ngreen = ["127.0.0.1:{backends["green"]}"]\n')


def haproxy_conf(work):
    # http-server-close keeps wrk's connection alive but closes the one to
    # switchyard after each response, and http-reuse never keeps HAProxy
    # from handing a request an idle server connection: a new connection
    # to switchyard, so a new PROXY header, per request.
    text = ("global\n  nbthread 1\n  maxconn 4096\ndefaults\n  mode http\n  timeout connect 5s\n"
            "  timeout client 30s\n  timeout server 30s\n  option http-server-close\n  http-reuse never\n")
    for case in CASES:
        send = " send-proxy" if case == "with" else ""
        text += (f"frontend {case}\n  bind 127.0.0.1:{FRONT_PORTS[case]}\n  default_backend {case}\n"
                 f"backend {case}\n  server sy 127.0.0.1:{SWITCHYARD_PORTS[case]}{send}\n")
    path = f"{work}/pp-haproxy.cfg"
    with open(path, "w") as f:
        f.write(text)
    return path


def get(port):
    """One request on a new connection; its status and raw answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=12) as sock:
        sock.sendall(REQUEST)
        answer = b""
        try:
            while b"\r\n\r\n" not in answer:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except (socket.timeout, ConnectionResetError):
            pass
    status = answer.split(b" ", 2)[1] if answer.startswith(b"HTTP/") else b""
    return int(status or 0), answer


def passive_opens():
    """Connections accepted on this host so far (the kernel's Tcp
    PassiveOpens). Not per port: TIME_WAIT sockets per port would be, but
    a few of HAProxy's connections to switchyard end in a reset, which
    leaves none."""
    header, values = [line.split() for line in open("/proc/net/snmp") if line.startswith("Tcp:")]
    return int(values[header.index("PassiveOpens")])


def connections_per_request(case, requests=200):
    """Connections accepted per request over one kept-alive client
    connection to HAProxy: 1 when HAProxy opens one to switchyard for each
    (switchyard keeps its backend connections, and nothing else runs)."""
    before = passive_opens()
    with socket.create_connection(("127.0.0.1", FRONT_PORTS[case]), timeout=5) as sock:
        for _ in range(requests):
            sock.sendall(REQUEST)
            answer = b""
            while not answer.endswith(b"0123456789abcdef"):
                chunk = sock.recv(65536)
                if not chunk:
                    raise SystemExit(f"bench: HAProxy closed the client connection ({case})")
                answer += chunk
    # The client connection to HAProxy is one accept too.
    return (passive_opens() - before - 1) / requests


def checks():
    status, _ = get(FRONT_PORTS["with"])
    if status != 200:
        raise SystemExit(f"bench: through HAProxy with send-proxy: {status or 'no answer'}, not 200")
    status, answer = get(SWITCHYARD_PORTS["with"])
    if status == 200:
        raise SystemExit("bench: the proxy_protocol switchyard answered 200 without a PROXY header")
    direct = (f"answered `{answer.splitlines()[0].decode(errors='replace')}`" if answer
              else "closed without an answer")
    per = {case: connections_per_request(case) for case in CASES}
    if min(per.values()) < 0.95:
        raise SystemExit(f"bench: HAProxy reused connections to switchyard: {per} per request")
    return [f"- checks: through HAProxy with `send-proxy` 200; straight to the `proxy_protocol` switchyard "
            f"without a header: {direct}; connections accepted per request (over 200 kept-alive "
            f"requests to HAProxy, from the kernel's Tcp PassiveOpens): " + ", ".join(f"{LABELS[c]} {per[c]:.2f}" for c in CASES)]


def run(procs, work, switchyard_binary, rounds, duration):
    # bench.py imports this module: imported here so that either loads first.
    import bench
    env = {**os.environ, "SWITCHYARD_LOG": "warn"}
    pids = {}
    for case in CASES:
        config = f"{work}/pp-{case}.toml"
        with open(config, "w") as f:
            f.write(switchyard_conf(work, case, bench.BACKEND_PORTS))
        pids[case] = procs.start([switchyard_binary, "run", "-c", config], 0, env=env).pid
    procs.start(["haproxy", "-db", "-f", haproxy_conf(work)], 1)
    for case in CASES:
        bench.wait_port(FRONT_PORTS[case])
    lines = checks()

    # Interleaved (with, without, with, ...): drift hits both alike.
    runs = {case: [] for case in CASES}
    for _ in range(rounds):
        for case in CASES:
            before = bench.cpu_seconds(pids[case])
            result = bench.wrk(FRONT_PORTS[case], "/16b", False, duration)
            result["cpu_us"] = (bench.cpu_seconds(pids[case]) - before) * 1e6 / max(result["requests"], 1)
            runs[case].append(result)

    def med(case, key):
        return statistics.median(r[key] for r in runs[case])

    lines += ["", f"wrk -t1 -c32 kept alive and HAProxy (`http-server-close`, `http-reuse never`) on core 1, "
              f"switchyard and the backend on core 0; {rounds} interleaved rounds of {duration} s, medians:", "",
              "| switchyard gets | req/s | p50 | p99 | switchyard CPU µs/req | per round | errors |",
              "|---|---:|---:|---:|---:|---|---:|"]
    for case in CASES:
        per_round = ", ".join(f"{r['cpu_us']:.1f}" for r in runs[case])
        lines.append(f"| {LABELS[case]}, a new connection per request | {med(case, 'rps'):,.0f} | "
                     f"{med(case, 'p50') / 1000:.2f} ms | {med(case, 'p99') / 1000:.2f} ms | "
                     f"{med(case, 'cpu_us'):.1f} | {per_round} | {sum(r['errors'] for r in runs[case])} |")
    errors = sum(r["errors"] for case in CASES for r in runs[case])
    cost, base = med("with", "cpu_us") - med("without", "cpu_us"), med("without", "cpu_us")
    lines.append("")
    if errors:
        # Error answers are cheaper than real ones: no difference from them.
        lines.append(f"{errors} errors during the runs: the header's cost is not reported.")
    else:
        lines.append(f"The PROXY v1 header costs switchyard {cost:+.1f} µs of CPU per connection "
                     f"({cost / base * 100:+.1f} % of the {base:.1f} µs a request on a new connection "
                     f"costs without it).")
    return "\n".join(lines)
