#!/usr/bin/env python3
"""Kernel memory per idle greeter connection, measured: what the server's own
RSS figure (docs/performance.md) does not show.

Starts greeter-server on a loopback port, opens N connections that each read
the greeting and then stay idle, and reads the kernel's slab caches
(/proc/slabinfo, root only) and TCP buffer pages (/proc/net/sockstat) before
and after. Both ends of a loopback connection are sockets of this machine, so
the socket caches grow by two objects per connection; the server's share is
half of that, plus the epoll entries only the server has. The caches are
shared with everything else on the machine: run it on a quiet one, and more
than once (--rounds).

    python3 benches/socket_memory.py [--connections 4000] [--rounds 3]

docs/operations.md uses its output for the "a million connections" estimate.
"""

import argparse
import os
import queue
import resource
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GREETING = b"Server: Welcome!\nServer: What's your name?"
# Caches that grow with each connection (both ends), and the ones only the
# server's epoll adds to.
SOCKET_CACHES = ["TCP", "sock_inode_cache", "filp", "dentry"]
EPOLL_CACHES = ["eventpoll_epi", "eventpoll_pwq"]


def slabs():
    """{cache: (active objects, object size)} from /proc/slabinfo."""
    found = {}
    with open("/proc/slabinfo") as info:
        for line in info:
            fields = line.split()
            if fields and fields[0] in SOCKET_CACHES + EPOLL_CACHES:
                found[fields[0]] = (int(fields[1]), int(fields[3]))
    return found


def tcp_buffer_pages():
    with open("/proc/net/sockstat") as stat:
        for line in stat:
            if line.startswith("TCP:"):
                fields = line.split()
                return int(fields[fields.index("mem") + 1])
    return 0


def start_server(binary):
    server = subprocess.Popen(
        [binary, "--listen", "127.0.0.1:0", "--log-level", "info"],
        stderr=subprocess.PIPE,
        text=True,
    )
    # A thread reads the log, so that waiting for a line is bounded (a bare
    # readline would block past the deadline on a silent server) and a full
    # stderr pipe never blocks the server; it drains to the end.
    lines = queue.Queue()
    found = threading.Event()

    def drain():
        for line in server.stderr:
            if not found.is_set():
                lines.put(line)
        lines.put("")

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + 20
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if not line:
            break  # the server exited
        if "listening on " in line:
            found.set()
            host, port = line.split("listening on ")[1].split()[0].rsplit(":", 1)
            return server, (host, int(port))
    server.kill()
    sys.exit("greeter-server did not say where it listens")


def read_greeting(client):
    got = b""
    while len(got) < len(GREETING):
        chunk = client.recv(len(GREETING) - len(got))
        if not chunk:
            sys.exit("the server closed a connection")
        got += chunk
    if got != GREETING:
        sys.exit(f"unexpected greeting {got!r}")


def measure(addr, count):
    before, pages_before = slabs(), tcp_buffer_pages()
    clients = []
    for _ in range(count):
        client = socket.create_connection(addr, timeout=20)
        read_greeting(client)
        clients.append(client)
    time.sleep(0.5)  # let the server finish accepting and settle
    after, pages_after = slabs(), tcp_buffer_pages()
    for client in clients:
        client.close()
    per_connection = {}
    # A kernel may merge a cache into another or not have it at all.
    for cache in [c for c in SOCKET_CACHES + EPOLL_CACHES if c in before]:
        grown = after[cache][0] - before[cache][0]
        share = grown / 2 if cache in SOCKET_CACHES else grown
        per_connection[cache] = (share / count, after[cache][1])
    buffer_bytes = (pages_after - pages_before) * os.sysconf("SC_PAGE_SIZE") / count
    return per_connection, buffer_bytes


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--binary", default=os.path.join(ROOT, "target/release/greeter-server"))
    args = parser.parse_args()
    if not os.access("/proc/slabinfo", os.R_OK):
        sys.exit("/proc/slabinfo is not readable: run as root")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    server, addr = start_server(args.binary)
    try:
        for round in range(1, args.rounds + 1):
            per_connection, buffer_bytes = measure(addr, args.connections)
            total = 0
            parts = []
            for cache, (objects, size) in per_connection.items():
                total += objects * size
                parts.append(f"{cache} {objects:.2f}x{size}")
            print(
                # Object counts times object sizes: slab packing (and caches
                # merged into others, absent from /proc/slabinfo) not included.
                f"round {round}: {total:,.0f} bytes of slab objects per server-side connection "
                f"({', '.join(parts)}); TCP buffers {buffer_bytes:,.0f} bytes"
            )
            time.sleep(1)  # closed connections leave the caches
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
