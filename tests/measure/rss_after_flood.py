#!/usr/bin/env python3
"""How much resident memory greeter-server keeps after a flood of clients
that send names and never read, once they have all gone: run by hand, not
by `cargo test` (it measures, it asserts nothing).

Usage: tests/measure/rss_after_flood.py SERVER_BINARY [--reactors N]
           [--connections C] [--rounds R]

Starts the server on a free loopback port with --reactors N, reads its
VmRSS idle, connects C clients that each write names without reading
until their socket takes no more (the server's output limit and the
kernel's buffers full), reads the peak, closes every client, waits until
the server holds as many descriptors as before, and reads VmRSS again
once it has stopped changing; several rounds show whether what stays
grows. Prints one line of figures in KiB. Set
MALLOC_ARENA_MAX in the environment to see what glibc's per-thread
arenas cost (it is passed on to the server).
"""

import argparse
import os
import resource
import socket
import subprocess
import sys
import threading
import time


PASSES = 4
PAUSE_BETWEEN_PASSES = 0.25


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise SystemExit(f"no {field} in /proc/{pid}/status")


def descriptors(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_for(condition, what, limit=30.0):
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what} after {limit} s")
        time.sleep(0.05)


def settled_rss(pid, quiet=1.0, limit=30.0):
    """VmRSS once it has not changed for `quiet` seconds."""
    deadline = time.monotonic() + limit
    last, since = status_kib(pid, "VmRSS"), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = status_kib(pid, "VmRSS")
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
    return last


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("server")
    parser.add_argument("--reactors", type=int, default=1)
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--trim", action="store_true",
        help="at the end, have gdb call malloc_trim(0) in the server and read VmRSS again: "
        "what that gives back was freed memory glibc kept, not a leak")
    args = parser.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = args.connections + 100
    if hard < wanted:
        raise SystemExit(f"the hard descriptor limit {hard} is below {wanted}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    server = subprocess.Popen(
        [args.server, "--listen", "127.0.0.1:0", "--reactors", str(args.reactors)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    address = []
    found = threading.Event()

    def drain():
        for line in server.stderr:
            text = line.decode(errors="replace")
            if not address and "listening on " in text:
                address.append(text.split("listening on ")[1].split()[0])
                found.set()

    threading.Thread(target=drain, daemon=True).start()
    try:
        if not found.wait(10):
            raise SystemExit("the server never said where it listens")
        host, port = address[0].rsplit(":", 1)
        pid = server.pid
        idle = settled_rss(pid)
        fds_idle = descriptors(pid)
        settled = []
        peak = 0
        for _ in range(args.rounds):
            clients = []
            for _ in range(args.connections):
                client = socket.create_connection((host, int(port)))
                client.setblocking(False)
                clients.append(client)
            names = b"Michael\n" * 8192
            # Write to each until its socket takes no more, a few times over
            # (the server reads more as it answers): each ends throttled by
            # the server's output limit and then by the kernel's buffers.
            for _ in range(PASSES):
                for client in clients:
                    try:
                        while client.send(names) > 0:
                            pass
                    except OSError:
                        pass
                time.sleep(PAUSE_BETWEEN_PASSES)
            peak = max(peak, status_kib(pid, "VmHWM"))
            for client in clients:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                client.close()
            wait_for(lambda: descriptors(pid) <= fds_idle, "the server's descriptors to come back")
            settled.append(settled_rss(pid))
        trimmed = ""
        if args.trim:
            subprocess.run(
                ["gdb", "-p", str(pid), "-batch", "-ex", "call (int) malloc_trim(0)"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                check=True,
            )
            trimmed = f" after_malloc_trim={settled_rss(pid)}"
        arena = os.environ.get("MALLOC_ARENA_MAX", "unset")
        print(
            f"reactors={args.reactors} connections={args.connections} MALLOC_ARENA_MAX={arena} "
            f"idle={idle} peak={peak} settled={','.join(map(str, settled))} "
            f"above_idle={settled[-1] - idle}{trimmed} KiB"
        )
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    sys.exit(main())
