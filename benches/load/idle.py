"""What an idle kept-alive client connection costs each proxy in memory.

For each proxy: N connections (default 3,000) each send one request, read
the whole answer and stay open. The proxy process's RSS is read before they
open and once they all idle; the difference over N is the cost of one idle
connection. Then they close, and RSS is read again once it stops falling
(or after 5 s): memory a proxy keeps after its clients left.

Loopback only, bounded: N connections, one request each.
"""

import resource
import socket
import ssl
import time

REQUEST = b"GET /16b HTTP/1.1\r\nHost: bench.test\r\n\r\n"


def raise_fd_limit(wanted):
    """Lets this process (and the proxies it starts) hold `wanted` sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = max(soft, min(hard, wanted)) if hard != resource.RLIM_INFINITY else max(soft, wanted)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def read_response(sock):
    """Reads one response with a Content-Length body; returns its status."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside the body")
        body += chunk
    return int(head.split(b" ")[1])


def settle_rss(bench, pid, seconds=8.0):
    """RSS once it has not changed for 1.5 s (a proxy may hand memory back
    on a timer), or after `seconds`."""
    end = time.monotonic() + seconds
    last, same_since = bench.rss_kib(pid), time.monotonic()
    while time.monotonic() < end:
        time.sleep(0.25)
        now = bench.rss_kib(pid)
        if now != last:
            last, same_since = now, time.monotonic()
        elif time.monotonic() - same_since >= 1.5:
            return now
    return last


def idle_cost(bench, port, pid, count, tls=False):
    """(KiB per idle connection, RSS before, RSS with them open, RSS after
    they closed, connections that failed)."""
    before = settle_rss(bench, pid)
    socks, failed = [], 0
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(10)
        try:
            sock.connect(("127.0.0.1", port))
            if tls:
                sock = context.wrap_socket(sock, server_hostname="bench.test")
            sock.sendall(REQUEST)
            if read_response(sock) != 200:
                failed += 1
            socks.append(sock)
        except OSError:
            failed += 1
            sock.close()
    opened = settle_rss(bench, pid)
    for sock in socks:
        sock.close()
    after = settle_rss(bench, pid)
    per = (opened - before) / max(1, len(socks))
    return per, before, opened, after, failed


def idle_checks(bench, pids, count=3000):
    """Markdown rows: each proxy's RSS per idle kept-alive connection, over
    plain HTTP and over HTTPS."""
    rows = [
        f"Idle kept-alive client connections ({count}, one 16 B request each, then idle):",
        "",
        "| proxy | protocol | KiB per idle connection | RSS before | RSS with them open | RSS after they closed | failed |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for tls in (False, True):
        for name, pid in pids.items():
            if tls and name in bench.NO_TLS:
                continue
            port = bench.PROXY_PORTS[name] + (bench.TLS_OFFSET if tls else 0)
            per, before, opened, after, failed = idle_cost(bench, port, pid, count, tls)
            rows.append(f"| {name} | {'HTTPS' if tls else 'HTTP'} | {per:.1f} | {before / 1024:.1f} MiB "
                        f"| {opened / 1024:.1f} MiB | {after / 1024:.1f} MiB | {failed} |")
    return rows
