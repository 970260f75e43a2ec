#!/usr/bin/env python3
"""Small helpers for benches/load/run.sh (python3 stdlib only).

run.sh does the orchestration (processes, pinning, the order of runs); this
file does what is awkward in bash: finding free ports, checking that a proxy
really serves the expected bodies, parsing wrk's output, the medians table,
and the switch and reload probes that need a keep-alive HTTP client.

    helpers.py free-ports N
    helpers.py check PORT SLOT [TIMEOUT_S]
    helpers.py wrk-line WRK_OUTPUT                  # one progress line
    helpers.py wrk-summary WRK_OUTPUT               # "requests non2xx socket_errors"
    helpers.py table RUNS_TSV CLK_TCK
    helpers.py switch-timing PORT SWITCHYARD SOCKET COUNT
    helpers.py reloads CONFIG SWITCHYARD SOCKET COUNT TEMPLATE
"""

import http.client
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time

SCENARIOS = ["16b-ka", "16k-ka", "16b-close", "16k-close"]
SCENARIO_LABELS = {
    "16b-ka": "16 B, keep-alive",
    "16k-ka": "16 KiB, keep-alive",
    "16b-close": "16 B, new connection",
    "16k-close": "16 KiB, new connection",
}
PROXIES = ["nginx", "haproxy", "switchyard"]
BODY_LENGTHS = {"/16b": 16, "/16k": 16384}


def die(message):
    print(f"helpers: {message}", file=sys.stderr)
    sys.exit(1)


# --------------------------------------------------------------- ports


def free_ports(n):
    """N distinct free TCP ports on 127.0.0.1, chosen by the kernel.

    All sockets are held open until every port is picked, so the N ports are
    distinct; there is a small window before the servers bind them, which is
    acceptable on a machine where nothing else is grabbing ports."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        print(" ".join(str(s.getsockname()[1]) for s in socks))
    finally:
        for s in socks:
            s.close()


# --------------------------------------------------------------- checks


def get(conn, path):
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    return response.status, response.getheader("X-Slot"), body


def check(port, slot, timeout_s=10.0):
    """Waits until 127.0.0.1:PORT answers, then checks that both paths give
    200, the exact body length and the expected X-Slot. A proxy that answers
    with error pages would otherwise look fast."""
    deadline = time.monotonic() + float(timeout_s)
    last_error = None
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=2)
            for path, length in BODY_LENGTHS.items():
                status, got_slot, body = get(conn, path)
                if status != 200 or len(body) != length or got_slot != slot:
                    die(f"127.0.0.1:{port}{path}: status {status}, {len(body)} bytes, "
                        f"X-Slot {got_slot!r}; expected 200, {length} bytes, X-Slot {slot!r}")
            conn.close()
            return
        except OSError as e:
            last_error = e
            time.sleep(0.05)
    die(f"nothing answers on 127.0.0.1:{port} after {timeout_s} s ({last_error})")


# --------------------------------------------------------------- wrk output


def parse_duration_us(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise ValueError(f"unknown wrk duration {text!r}")
    scale = {"us": 1, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}[m.group(2)]
    return float(m.group(1)) * scale


def parse_wrk(path):
    out = open(path).read()
    requests = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    if not requests:
        die(f"{path}: not wrk output:\n{out}")
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "requests": int(requests.group(1)),
        "rps": float(rps.group(1)) if rps else 0.0,
        # Latency percentiles only exist with --latency.
        "p50_us": parse_duration_us(p50.group(1)) if p50 else float("nan"),
        "p99_us": parse_duration_us(p99.group(1)) if p99 else float("nan"),
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "sock_errors": sum(map(int, sock.groups())) if sock else 0,
        "sock_detail": ", ".join(f"{k} {v}" for k, v in zip(("connect", "read", "write", "timeout"), sock.groups()))
        if sock else "",
    }


def wrk_line(path):
    r = parse_wrk(path)
    detail = f" ({r['sock_detail']})" if r["sock_errors"] else ""
    print(f"{r['rps']:>9,.0f} req/s  p50 {r['p50_us'] / 1000:6.2f} ms  p99 {r['p99_us'] / 1000:6.2f} ms  "
          f"non-2xx {r['non2xx']}  socket errors {r['sock_errors']}{detail}")


def wrk_summary(path):
    r = parse_wrk(path)
    print(f"{r['requests']} {r['non2xx']} {r['sock_errors']}")


# --------------------------------------------------------------- table


def fmt_ratio(value, base):
    if base == 0 or base != base or value != value:  # zero or NaN
        return "–"
    return f"{value / base:.2f}"


def table(runs_tsv, clk_tck):
    """Reads run.sh's runs.tsv (scenario proxy round wrk_file cpu_ticks rss_kib)
    and prints one markdown table of medians over rounds, each figure with its
    ratio to nginx's median in the same scenario of the same invocation."""
    clk_tck = int(clk_tck)
    runs = {}
    for line in open(runs_tsv):
        scenario, proxy, _round, wrk_file, ticks, rss_kib = line.rstrip("\n").split("\t")
        r = parse_wrk(wrk_file)
        r["cpu_us"] = int(ticks) * 1e6 / clk_tck / max(r["requests"], 1)
        r["rss_mib"] = int(rss_kib) / 1024
        runs.setdefault((scenario, proxy), []).append(r)

    def med(scenario, proxy, key):
        return statistics.median(r[key] for r in runs[(scenario, proxy)])

    print("| scenario | proxy | req/s | ÷ nginx | p50 ms | ÷ nginx | p99 ms | ÷ nginx "
          "| CPU µs/req | ÷ nginx | RSS MiB | ÷ nginx | non-2xx | socket errors |")
    print("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for scenario in SCENARIOS:
        if (scenario, "nginx") not in runs:
            continue
        for proxy in PROXIES:
            if (scenario, proxy) not in runs:
                continue
            cells = [SCENARIO_LABELS[scenario], proxy]
            for key, fmt, scale in (("rps", "{:,.0f}", 1), ("p50_us", "{:.2f}", 1e-3), ("p99_us", "{:.2f}", 1e-3),
                                    ("cpu_us", "{:.1f}", 1), ("rss_mib", "{:.1f}", 1)):
                value = med(scenario, proxy, key)
                cells.append(fmt.format(value * scale))
                cells.append(fmt_ratio(value, med(scenario, "nginx", key)))
            # Errors are summed over the rounds, not medians: any error matters.
            cells.append(str(sum(r["non2xx"] for r in runs[(scenario, proxy)])))
            cells.append(str(sum(r["sock_errors"] for r in runs[(scenario, proxy)])))
            print("| " + " | ".join(cells) + " |")


# --------------------------------------------------------------- switching


def switch_timing(port, switchyard, admin_socket, count):
    """Times `switchyard switch` and the first response from the new slot.

    One keep-alive connection (like a browser's) sends requests; for each of
    COUNT alternating switches it records: how long the CLI took, whether the
    very first request after the command returned already went to the new
    slot, and the time from the command's return to the first response whose
    X-Slot names the new slot. Runs under wrk load started by run.sh."""
    conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=5)
    _, active, _ = get(conn, "/16b")
    # What one request costs under this load without a switch: the floor of
    # the figure measured below.
    plain_ms = []
    for _ in range(int(count)):
        started = time.monotonic()
        get(conn, "/16b")
        plain_ms.append((time.monotonic() - started) * 1000)
    cli_ms, after_return_ms, first_is_new, stale_responses = [], [], 0, 0
    for _ in range(int(count)):
        target = "green" if active == "blue" else "blue"
        started = time.monotonic()
        result = subprocess.run([switchyard, "switch", "bench", target, "--socket", admin_socket],
                                capture_output=True, text=True)
        returned = time.monotonic()
        if result.returncode != 0:
            die(f"switch to {target} failed ({result.returncode}): {result.stderr.strip()}")
        polls = 0
        while True:
            status, got, _ = get(conn, "/16b")
            polls += 1
            if status == 200 and got == target:
                break
            if status != 200:
                die(f"status {status} while waiting for {target}")
            if time.monotonic() - returned > 5:
                die(f"no response from {target} within 5 s of the switch returning")
        after_return_ms.append((time.monotonic() - returned) * 1000)
        cli_ms.append((returned - started) * 1000)
        first_is_new += polls == 1
        stale_responses += polls - 1
        active = target
        time.sleep(0.05)  # let wrk's traffic run on the new slot between switches
    print(json.dumps({
        "count": int(count),
        "first_request_on_new_slot": first_is_new,
        "stale_responses": stale_responses,
        "after_return_median_ms": statistics.median(after_return_ms),
        "after_return_max_ms": max(after_return_ms),
        "plain_request_median_ms": statistics.median(plain_ms),
        "cli_median_ms": statistics.median(cli_ms),
        "cli_max_ms": max(cli_ms),
    }))


def canary_weight(switchyard, admin_socket):
    out = subprocess.run([switchyard, "status", "--json", "--socket", admin_socket],
                         capture_output=True, text=True)
    if out.returncode != 0:
        return None, None
    result = json.loads(out.stdout)["result"]
    route = next(r for r in result["routes"] if r["name"] == "bench")
    canary = route.get("canary") or {}
    return canary.get("weight"), (result.get("config") or {}).get("error")


def reloads(config, switchyard, admin_socket, count, template):
    """Rewrites CONFIG COUNT times (write to a temp file, then rename, as an
    editor or CI would), each time with another canary weight, and waits
    until `switchyard status` shows the new weight: a coalesced or rejected
    reload would otherwise go unnoticed. TEMPLATE is the config text with
    {weight} where the weight goes."""
    text = open(template).read()
    applied_ms, not_applied = [], 0
    for i in range(int(count)):
        weight = 5 + (i * 37) % 90  # a different weight every time, 5..94
        with open(config + ".tmp", "w") as f:
            f.write(text.replace("{weight}", str(weight)))
        os.replace(config + ".tmp", config)  # rename(2): the watcher never sees half a file
        written = time.monotonic()
        while True:
            got, error = canary_weight(switchyard, admin_socket)
            if got == weight:
                applied_ms.append((time.monotonic() - written) * 1000)
                break
            if error:
                die(f"config rejected on reload {i + 1}: {error}")
            if time.monotonic() - written > 5:
                not_applied += 1
                break
            time.sleep(0.01)
        time.sleep(0.1)
    print(json.dumps({
        "count": int(count),
        "not_applied_within_5s": not_applied,
        "applied_median_ms": statistics.median(applied_ms) if applied_ms else None,
        "applied_max_ms": max(applied_ms) if applied_ms else None,
    }))


def main():
    if len(sys.argv) < 2:
        die(__doc__)
    command, args = sys.argv[1], sys.argv[2:]
    commands = {
        "free-ports": lambda: free_ports(int(args[0])),
        "check": lambda: check(*args),
        "wrk-line": lambda: wrk_line(*args),
        "wrk-summary": lambda: wrk_summary(*args),
        "table": lambda: table(*args),
        "switch-timing": lambda: switch_timing(*args),
        "reloads": lambda: reloads(*args),
    }
    if command not in commands:
        die(f"unknown command {command}\n{__doc__}")
    commands[command]()


if __name__ == "__main__":
    main()
