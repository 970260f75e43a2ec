#!/usr/bin/env python3
"""Health probing at scale, against the real binary.

One route with N backends (default 10,000) probed every second. Every
backend address is in 127.0.0.0/8 — loopback only — and, by default,
nothing listens on it, so every probe fails fast with "connection refused"
(a realistic fleet of stopped instances, and the cheapest probe there is:
what is measured is switchyard's own overhead). `--healthy K` makes the
first K backends real listeners answering `HTTP/1.1 200`, served by a
child process of this script.

Measured:

- **startup**: the first `--startup` seconds (default 10) after the proxy
  answers on its admin socket, while every backend gets its first verdict;
  `switchyard status` is timed once a second throughout;
- **steady**: the proxy process's CPU (utime+stime from /proc/PID/stat)
  over the next `--duration` seconds (default 10), with nothing else
  asking it anything, and how many routing tables it published meanwhile;
- **status**: `switchyard status` (human output) and `status --json`, timed
  `--samples` times (default 5) while the probes go on.

    cargo build -p switchyard
    python3 benches/load/probes.py                       # target/debug/switchyard
    python3 benches/load/probes.py --bin target/release/switchyard --backends 20000

Prints a Markdown summary; `--json` prints the raw figures instead.
"""

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TICKS = os.sysconf("SC_CLK_TCK")


def backend_address(i):
    """The `i`th refused backend: 127.42.x.y:9 (and up), never 127.0.0.1,
    whose ports other processes use. Nothing listens on them."""
    return f"127.{42 + i // 64_000}.{(i % 64_000) // 250}.{i % 250 + 1}:9"


def healthy_address(i):
    """The `i`th healthy backend: its own listener on 127.142.x.y:18080."""
    return f"127.{142 + i // 64_000}.{(i % 64_000) // 250}.{i % 250 + 1}:18080"


def config(work, backends, interval, tcp):
    lines = [
        "[server]",
        'listen = ["127.0.0.1:0"]',
        f'admin_socket = "{work}/admin.sock"',
        f'state_dir = "{work}/state"',
        "threads = 2",
        "",
        "[[route]]",
        'name = "big"',
        'active = "blue"',
        "[route.slots]",
        "blue = [" + ", ".join(f'"{b}"' for b in backends) + "]",
    ]
    if not tcp:
        lines += [
            "[route.health]",
            'path = "/health"',
            f'interval = "{interval}"',
            f'timeout = "{interval}"',
        ]
    return "\n".join(lines) + "\n"


def cpu_seconds(pid):
    """utime + stime of `pid`, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime is field 14, stime field 15.
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def timed_status(binary, work, json_output):
    """(seconds the CLI took, parsed status or None, error or None). The
    CLI gives up when the proxy leaves it waiting 10 s mid-answer."""
    args = [binary, "status", "--socket", f"{work}/admin.sock"]
    if json_output:
        args.append("--json")
    started = time.monotonic()
    out = subprocess.run(args, capture_output=True, timeout=300)
    took = time.monotonic() - started
    if out.returncode != 0:
        return took, None, out.stderr.decode().strip()[:200]
    status = json.loads(out.stdout)["result"] if json_output else None
    return took, status, None


def verdicts(status):
    if status is None:
        return None
    counts = {}
    for slot in status["routes"][0]["slots"]:
        for backend in slot["backends"]:
            counts[backend["state"]] = counts.get(backend["state"], 0) + 1
    return counts


def generation(status):
    return None if status is None else status["generation"]


def status_until_ok(binary, work):
    """`status --json` until it answers (the CLI may give up under load)."""
    for _ in range(10):
        _, status, _ = timed_status(binary, work, True)
        if status is not None:
            return status
    raise RuntimeError("status never answered")


def serve_healthy(addresses):
    """Child process: answers every connection on every address with 200."""
    import asyncio

    async def answer(reader, writer):
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            await writer.drain()
        except Exception:
            pass
        writer.close()

    async def main():
        for address in addresses:
            host, port = address.rsplit(":", 1)
            await asyncio.start_server(answer, host, int(port), backlog=64)
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def raise_fd_limit(wanted):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, wanted)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def run(args):
    binary = os.path.abspath(args.bin)
    work = tempfile.mkdtemp(prefix="switchyard-probes-")
    healthy = [healthy_address(i) for i in range(args.healthy)]
    refused = [backend_address(i) for i in range(args.backends - args.healthy)]
    children = []
    try:
        if healthy:
            raise_fd_limit(args.healthy + 256)
            server = subprocess.Popen([sys.executable, __file__, "--serve", *healthy],
                                      stdout=subprocess.PIPE)
            children.append(server)
            if server.stdout.readline().strip() != b"ready":
                raise RuntimeError("the healthy backends did not start")
        with open(f"{work}/switchyard.toml", "w") as f:
            f.write(config(work, healthy + refused, args.interval, args.tcp))
        log = open(f"{work}/switchyard.log", "w")
        proxy = subprocess.Popen([binary, "run", "-c", f"{work}/switchyard.toml"],
                                 stdout=log, stderr=log,
                                 env={**os.environ, "SWITCHYARD_LOG": "warn"})
        children.append(proxy)
        deadline = time.monotonic() + 60
        while True:
            if proxy.poll() is not None:
                raise RuntimeError(f"switchyard exited; see {work}/switchyard.log")
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(f"{work}/admin.sock")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("switchyard did not open its admin socket")
                time.sleep(0.05)
        result = {"binary": binary, "backends": args.backends, "healthy": args.healthy,
                  "interval": args.interval, "probe": "tcp" if args.tcp else "http"}

        # Startup: first verdicts for everyone; status timed once a second.
        started = time.monotonic()
        cpu0 = cpu_seconds(proxy.pid)
        startup = []
        while time.monotonic() - started < args.startup:
            took, status, error = timed_status(binary, work, True)
            startup.append({"at": round(time.monotonic() - started, 2), "took": round(took, 3),
                            "generation": generation(status), "verdicts": verdicts(status),
                            "error": error})
            time.sleep(max(0.0, 1.0 - took))
        result["startup"] = {"cpu_seconds": round(cpu_seconds(proxy.pid) - cpu0, 2),
                             "seconds": round(time.monotonic() - started, 2),
                             "status": startup}

        # Steady: CPU with nobody asking anything.
        before = status_until_ok(binary, work)
        cpu0, t0 = cpu_seconds(proxy.pid), time.monotonic()
        time.sleep(args.duration)
        cpu1, t1 = cpu_seconds(proxy.pid), time.monotonic()
        after = status_until_ok(binary, work)
        result["steady"] = {"cpu_percent": round(100 * (cpu1 - cpu0) / (t1 - t0), 1),
                            "seconds": round(t1 - t0, 2),
                            "publishes": after["generation"] - before["generation"],
                            "verdicts": verdicts(after),
                            "rss_mib": round(rss_mib(proxy.pid), 1)}

        # Status while the probes go on.
        human = [timed_status(binary, work, False) for _ in range(args.samples)]
        as_json = [timed_status(binary, work, True) for _ in range(args.samples)]
        result["status"] = {"human_seconds": [round(t[0], 3) for t in human],
                            "json_seconds": [round(t[0], 3) for t in as_json],
                            "failed": sum(1 for t in human + as_json if t[2] is not None),
                            "errors": sorted({t[2] for t in human + as_json if t[2]})}
        return result
    finally:
        for child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
                try:
                    child.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
        shutil.rmtree(work, ignore_errors=True)


def report(r):
    status_all = r["status"]["human_seconds"] + r["status"]["json_seconds"]
    startup_took = [s["took"] for s in r["startup"]["status"]]
    startup_failed = sum(1 for s in r["startup"]["status"] if s["error"])
    lines = [
        f"`{r['binary']}`: one route, {r['backends']} backends ({r['healthy']} healthy, "
        f"the rest refused), {r['probe']} probes every {r['interval']}",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| steady CPU (utime+stime over {r['steady']['seconds']} s) | {r['steady']['cpu_percent']} % of a core |",
        f"| routing tables published in that window | {r['steady']['publishes']} |",
        f"| startup CPU (first {r['startup']['seconds']} s) | {r['startup']['cpu_seconds']} s |",
        f"| `status` during startup, median / max | {statistics.median(startup_took):.3f} s / {max(startup_took):.3f} s |",
        f"| `status` calls that failed during startup | {startup_failed} of {len(startup_took)} |",
        f"| `status` (human) median / max | {statistics.median(r['status']['human_seconds']):.3f} s / {max(r['status']['human_seconds']):.3f} s |",
        f"| `status --json` median / max | {statistics.median(r['status']['json_seconds']):.3f} s / {max(r['status']['json_seconds']):.3f} s |",
        f"| slowest `status` after startup | {max(status_all):.3f} s |",
        f"| `status` calls that failed after startup | {r['status']['failed']} of {len(status_all)} |",
        f"| verdicts after the steady window | {r['steady']['verdicts']} |",
        f"| RSS | {r['steady']['rss_mib']} MiB |",
        "",
        "Startup, one `status --json` a second (time it took, generation, verdicts):",
        "",
    ]
    for s in r["startup"]["status"]:
        outcome = f"FAILED: {s['error']}" if s["error"] else f"generation {s['generation']}, {s['verdicts']}"
        lines.append(f"- {s['at']:>6} s: {s['took']:.3f} s, {outcome}")
    return "\n".join(lines)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve_healthy(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bin", default=os.path.join(ROOT, "target/debug/switchyard"))
    parser.add_argument("--backends", type=int, default=10_000)
    parser.add_argument("--healthy", type=int, default=0,
                        help="how many of the backends really listen (HTTP 200)")
    parser.add_argument("--interval", default="1s")
    parser.add_argument("--tcp", action="store_true",
                        help="no [route.health]: TCP connect probes (every second)")
    parser.add_argument("--startup", type=float, default=10.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not 0 <= args.healthy <= args.backends:
        parser.error("--healthy must be between 0 and --backends")
    result = run(args)
    print(json.dumps(result, indent=2) if args.json else report(result))


if __name__ == "__main__":
    main()
