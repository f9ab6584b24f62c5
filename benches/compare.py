#!/usr/bin/env python3
"""Side-by-side comparison of greeter-server with two peers, in one run.

Builds greeter-server, greeter-load and the two benchmark peers
(examples/threaded.rs, rung 1 of the ladder: one thread per connection with
std::net; benches/peers/tokio.rs: tokio current_thread with one task per
connection), then drives each server with the same greeter-load workloads on
loopback and prints one table, with ratios against greeter. All traffic goes
to 127.0.0.1 only; every run is bounded by --duration. Every server gets the
same listen backlog (BACKLOG) and raises its own descriptor limit;
greeter-server runs at --log-level warn, and the peers log nothing per
connection.

Measured per server:
  - exchanges/s at 1, 100, 1,000 and 10,000 connections (closed loop);
  - server CPU per exchange, user and system apart, from /proc/PID/stat over
    the measured window (independent of the load generator's speed; 9 s at
    1,000 connections, since /proc counts 10 ms ticks), and the load
    generator's own CPU per exchange beside it;
  - p99 latency at a fixed open-loop rate (coordinated omission corrected);
  - dialogues/s in churn;
  - server memory per idle connection: RSS growth while 10,000 are held,
    divided by the connections the server actually held (its sockets);
  - greeter alone: 19,000 held connections and the probe's p99 meanwhile;
  - syscalls per exchange at 1,000 busy connections (strace -c -f; an
    exchange is one reply write, so the count needs no clock alignment);
  - user-space instructions per exchange (valgrind --tool=callgrind, the
    difference between a long and a short fixed workload, so start-up and
    shutdown cancel out).

greeter runs twice: with one reactor ("greeter") and with two ("greeter-2r",
--reactors 2, one per core of the machine this was written on); for the
latter, how evenly the kernel spread connections over the two reactors is
measured too (each reactor logs how many it served when it stops).

Usage: python3 benches/compare.py [--quick] [--json FILE] [--svg FILE]
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, "target", "release")
LOAD = os.path.join(RELEASE, "greeter-load")
TICKS = os.sysconf("SC_CLK_TCK")

# Every server listens with the same accept queue (the kernel caps it at
# net.core.somaxconn): std's and mio's own listeners use 128, greeter-server's
# default differs, and the queue decides who loses clients in a connect burst.
# The threaded peer takes no flags: its BACKLOG in examples/threaded.rs is
# this same 1024.
BACKLOG = 1024

# Log levels: greeter-server at warn, so it writes nothing per connection (at
# its default, info, it logs two lines per connection); the peers never log
# per connection.
SERVERS = {
    "greeter": [os.path.join(RELEASE, "greeter-server"), "--log-level", "warn"],
    "greeter-2r": [os.path.join(RELEASE, "greeter-server"), "--log-level", "warn", "--reactors", "2", "--reuse-port"],
    "tokio": [os.path.join(RELEASE, "examples", "peer-tokio")],
    "threaded": [os.path.join(RELEASE, "examples", "threaded")],
}


def listen_args(name, addr):
    """How server `name` is told its address and backlog."""
    if name == "threaded":
        return [addr]
    return ["--listen", addr, "--backlog", str(BACKLOG)]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, deadline=10.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.recv(64)
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"no server listening on port {port}")


class Server:
    """One server process on a fresh loopback port."""

    def __init__(self, name, wrapper=(), extra=()):
        self.name = name
        self.port = free_port()
        command = (list(wrapper) + SERVERS[name]
                   + listen_args(name, f"127.0.0.1:{self.port}") + list(extra))
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(self.port, deadline=60.0 if wrapper else 10.0)

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def cpu(self):
        """(user, system) CPU seconds used so far."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) / TICKS, int(fields[12]) / TICKS

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def sockets(self):
        """Distinct sockets the process holds. Not its descriptors: the
        same socket may be open under more than one descriptor."""
        held = set()
        fds = f"/proc/{self.proc.pid}/fd"
        for fd in os.listdir(fds):
            try:
                target = os.readlink(os.path.join(fds, fd))
            except OSError:
                continue  # closed while we looked
            if target.startswith("socket:"):
                held.add(target)
        return len(held)

    def stop(self, sig=signal.SIGKILL):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def load(mode, addr, *flags):
    """Runs greeter-load in the background; returns the process."""
    command = [LOAD, mode, "--addr", addr, "--quiet", "--json", *map(str, flags)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


ERRORS = []


def report(proc, what):
    """The JSON report of a finished greeter-load run; failures are noted."""
    out, err = proc.communicate(timeout=600)
    try:
        result = json.loads(out)
    except json.JSONDecodeError:
        raise RuntimeError(f"greeter-load printed no report: {err.strip()}")
    failures = {kind: n for kind, n in result["errors"].items() if n}
    if failures:
        ERRORS.append(f"{what}: {failures}")
        print(f"    note: load errors in {what}: {failures}", file=sys.stderr)
    return result


def sleep_until(deadline):
    time.sleep(max(deadline - time.monotonic(), 0))


def throughput(name, connections, warmup, duration):
    server = Server(name)
    try:
        started = time.monotonic()
        proc = load("pingpong", server.addr, "-c", connections, "--warmup", warmup,
                    "--duration", duration, "--timeout", 10)
        # Sample the server's CPU at the window's start and end, timed from
        # the load's start: after the window come the goodbyes and closes of
        # every connection, which are not exchanges.
        sleep_until(started + warmup)
        before = server.cpu()
        sleep_until(started + warmup + duration)
        after = server.cpu()
        result = report(proc, f"{name} pingpong -c {connections}")
    finally:
        server.stop()
    exchanges = max(result["completed"], 1)
    return {
        "per_second": result["per_second"],
        "user_us": (after[0] - before[0]) * 1e6 / exchanges,
        "sys_us": (after[1] - before[1]) * 1e6 / exchanges,
        "load_us": result["cpu"]["us_per_unit"],
        "p99_us": result["latency_us"]["p99"],
    }


def one_run(name, mode, *flags):
    """The report of one greeter-load run against a fresh server."""
    server = Server(name)
    try:
        return report(load(mode, server.addr, *flags), f"{name} {mode} {' '.join(map(str, flags))}")
    finally:
        server.stop()


def fixed_rate(name, rate, connections, warmup, duration):
    return one_run(name, "pingpong", "-c", connections, "--rate", rate, "--warmup", warmup,
                   "--duration", duration)["latency_us"]


def churn(name, connections, warmup, duration):
    return one_run(name, "churn", "-c", connections, "--warmup", warmup,
                   "--duration", duration)["per_second"]


def idle_memory(name, connections, warmup, duration):
    server = Server(name)
    try:
        before, sockets_before = server.rss_kib(), server.sockets()
        proc = load("hold", server.addr, "-c", connections, "--warmup", warmup,
                    "--duration", duration, "--probe-rate", 100,
                    "--source-addrs", "127.0.0.2,127.0.0.3,127.0.0.4")
        time.sleep(warmup + duration / 2)
        during, sockets_during = server.rss_kib(), server.sockets()
        result = report(proc, f"{name} hold -c {connections}")
    finally:
        server.stop()
    # Divide by the connections the server really held at that moment (its
    # sockets), not by the number asked for: a server that dropped some would
    # otherwise look cheaper.
    held = max(sockets_during - sockets_before, 1)
    return {
        "connections_held": held,
        "bytes_per_connection": (during - before) * 1024 / held,
        "held_checked": result["held_checked"],
        "probe_p99_us": result["latency_us"]["p99"],
    }


def reactor_spread(reactors, connections, duration):
    """Connections each reactor served in a churn run (from their stop lines)."""
    port = free_port()
    # The log goes to a file, not a pipe read only at the end: a full pipe
    # would make the server drop log lines (by design), the stop lines too.
    with tempfile.TemporaryFile(mode="w+") as log:
        proc = subprocess.Popen(
            [os.path.join(RELEASE, "greeter-server"), "--log-level", "info", "--reactors",
             str(reactors), "--reuse-port", "--listen", f"127.0.0.1:{port}", "--backlog", str(BACKLOG)],
            stdout=subprocess.DEVNULL, stderr=log)
        try:
            wait_listening(port)
            report(load("churn", f"127.0.0.1:{port}", "-c", connections, "--duration", duration),
                   f"greeter --reactors {reactors} churn")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        log.seek(0)
        served = [int(line.rsplit("connections served: ", 1)[1].rstrip(")\n"))
                  for line in log if "connections served: " in line]
    return {"connections": connections, "served": served,
            "min_over_max": min(served) / max(max(served), 1) if served else 0.0}


def syscalls(name, connections, warmup, duration):
    if not shutil.which("strace"):
        return None
    server = Server(name)
    out = tempfile.NamedTemporaryFile(suffix=".strace", delete=False).name
    try:
        proc = load("pingpong", server.addr, "-c", connections, "--warmup", warmup,
                    "--duration", duration, "--timeout", 30)
        time.sleep(warmup)
        tracer = subprocess.Popen(["strace", "-c", "-f", "-o", out, "-p", str(server.proc.pid)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(duration * 0.6)
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=60)
        report(proc, f"{name} under strace")
    finally:
        server.stop()
    counts = {}
    with open(out) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
                calls = int(parts[3])
                counts[parts[-1]] = counts.get(parts[-1], 0) + calls
    os.unlink(out)
    replies = sum(counts.get(call, 0) for call in ("write", "sendto", "writev", "sendmsg"))
    total = sum(counts.values())
    return {"per_exchange": total / max(replies, 1), "calls": counts}


def instructions(name, short, long):
    """User-space instructions per exchange under callgrind."""
    if not shutil.which("valgrind"):
        return None
    totals = []
    connections = 10
    for count in (short, long):
        out = tempfile.NamedTemporaryFile(suffix=".callgrind", delete=False).name
        # greeter exits cleanly on SIGTERM, and the threaded peer dies of it
        # (callgrind still writes its totals then); the tokio peer exits by
        # itself once the load's connections (and the port probe's) have ended.
        extra = ["--exit-after", str(connections + 1)] if name == "tokio" else []
        server = Server(name, extra=extra,
                        wrapper=["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"])
        try:
            report(load("pingpong", server.addr, "-c", connections, "--count", count,
                        "--duration", 120, "--timeout", 30), f"{name} under callgrind")
        finally:
            server.stop(signal.SIGTERM)
        total = 0
        with open(out) as f:
            for line in f:
                if line.startswith("summary:") or line.startswith("totals:"):
                    total = int(line.split()[1])
        os.unlink(out)
        if not total:
            print(f"    note: no callgrind totals for {name}", file=sys.stderr)
            return None
        totals.append(total)
    return (totals[1] - totals[0]) / (long - short)


def ratio(value, reference):
    if value is None or reference in (None, 0):
        return "-"
    return f"{value / reference:.2f}x"


def fmt(value, digits=1):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def svg_plot(curves, path, title):
    """Latency by percentile ("nines" on the x axis, log latency on y)."""
    import math
    width, height, left, bottom, top, right = 720, 420, 70, 50, 30, 150
    pts = {n: [(p, v) for p, v in d if p < 100] for n, d in curves.items()}
    xs = lambda p: math.log10(1 / (1 - p / 100))
    max_x = max(xs(p) for d in pts.values() for p, _ in d) or 1
    values = [v for d in pts.values() for _, v in d if v > 0]
    lo, hi = math.log10(max(min(values), 1)), math.log10(max(values) * 1.2)
    hi = max(hi, lo + 1)
    X = lambda p: left + xs(p) / max_x * (width - left - right)
    Y = lambda v: height - bottom - (math.log10(max(v, 1)) - lo) / (hi - lo) * (height - top - bottom)
    colours = {"greeter": "#d62728", "greeter-2r": "#ff7f0e", "tokio": "#1f77b4", "threaded": "#2ca02c"}
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/>']
    for label, p in (("0%", 0), ("90%", 90), ("99%", 99), ("99.9%", 99.9), ("99.99%", 99.99), ("99.999%", 99.999)):
        if xs(p) <= max_x:
            out.append(f'<line x1="{X(p):.1f}" y1="{top}" x2="{X(p):.1f}" y2="{height-bottom}" stroke="#ddd"/>'
                       f'<text x="{X(p):.1f}" y="{height-bottom+16}" text-anchor="middle">{label}</text>')
    decade = math.floor(lo)
    while decade <= hi:
        v = 10 ** decade
        if lo <= decade <= hi:
            label = f"{v/1000:g} ms" if v >= 1000 else f"{v:g} µs"
            out.append(f'<line x1="{left}" y1="{Y(v):.1f}" x2="{width-right}" y2="{Y(v):.1f}" stroke="#ddd"/>'
                       f'<text x="{left-6}" y="{Y(v)+4:.1f}" text-anchor="end">{label}</text>')
        decade += 1
    for i, (name, d) in enumerate(pts.items()):
        colour = colours.get(name, "black")
        path_d = " ".join(f"{'M' if j == 0 else 'L'}{X(p):.1f},{Y(v):.1f}" for j, (p, v) in enumerate(d))
        out.append(f'<path d="{path_d}" fill="none" stroke="{colour}" stroke-width="2"/>')
        out.append(f'<text x="{width-right+10}" y="{top+20+18*i}" fill="{colour}">{name}</text>')
    out.append(f'<text x="{(width-right+left)/2}" y="{height-10}" text-anchor="middle">percentile</text>')
    out.append(f'<text x="{left}" y="{top-10}">{title}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs, for a smoke test")
    parser.add_argument("--json", help="write all results to this file")
    parser.add_argument("--svg", help="write the latency plot to this file")
    parser.add_argument("--rate", type=int, default=20000, help="open-loop rate for the p99 row")
    parser.add_argument("--servers", default="greeter,greeter-2r,tokio,threaded")
    args = parser.parse_args()
    warmup, duration = (0.5, 1.0) if args.quick else (1.0, 3.0)
    names = args.servers.split(",")

    subprocess.run(["cargo", "build", "--release", "--quiet", "--bins", "--examples"], cwd=ROOT, check=True)
    somaxconn = int(open("/proc/sys/net/core/somaxconn").read())
    print(f"every server listens with backlog {BACKLOG} (net.core.somaxconn {somaxconn}: "
          f"effective {min(BACKLOG, somaxconn)})", file=sys.stderr)
    results = {"machine": {"cores": os.cpu_count(), "kernel": os.uname().release,
                           "somaxconn": somaxconn},
               "backlog": BACKLOG, "servers": {}}
    for name in names:
        print(f"== {name}", file=sys.stderr)
        r = results["servers"][name] = {}
        r["throughput"] = {}
        for c in (1, 100, 1000, 10000):
            print(f"   pingpong -c {c}", file=sys.stderr)
            # The CPU rows come from the 1,000-connection run: a longer window
            # there, because /proc counts CPU time in 10 ms ticks.
            r["throughput"][c] = throughput(name, c, warmup if c < 10000 else warmup + 1.5,
                                            duration * 3 if c == 1000 else duration)
        print(f"   pingpong --rate {args.rate}", file=sys.stderr)
        r["fixed_rate"] = fixed_rate(name, args.rate, 100, warmup, duration + 2)
        print("   churn", file=sys.stderr)
        r["churn"] = churn(name, 50, warmup, duration)
        print("   hold 10000", file=sys.stderr)
        r["idle"] = idle_memory(name, 10000, warmup + 1.5, duration)
        print("   strace", file=sys.stderr)
        r["syscalls"] = syscalls(name, 1000, warmup, duration)
        print("   callgrind", file=sys.stderr)
        r["instructions"] = instructions(name, 2000, 12000 if args.quick else 22000)

    if "greeter-2r" in names:
        print("== greeter-2r: how connections spread over the reactors", file=sys.stderr)
        results["reactor_spread"] = reactor_spread(2, 200, duration)
    if "greeter" in names:
        print("== greeter: hold 19000 (the descriptor limit's worth)", file=sys.stderr)
        results["greeter_19000"] = idle_memory("greeter", 19000, warmup + 2.5, duration + 2)

    rows = []
    def row(label, get, digits=1):
        values = [get(results["servers"][n]) for n in names]
        base = values[0]
        rows.append([label] + [fmt(v, digits) for v in values] +
                    [ratio(base, v) for v in values[1:]])
    for c in (1, 100, 1000, 10000):
        row(f"exchanges/s, {c} conns", lambda r, c=c: r["throughput"][c]["per_second"], 0)
    row("server user µs/exchange @1000", lambda r: r["throughput"][1000]["user_us"], 2)
    row("server sys µs/exchange @1000", lambda r: r["throughput"][1000]["sys_us"], 2)
    row("server total µs/exchange @1000",
        lambda r: r["throughput"][1000]["user_us"] + r["throughput"][1000]["sys_us"], 2)
    row("load gen CPU µs/exchange @1000", lambda r: r["throughput"][1000]["load_us"], 2)
    row(f"p99 µs at {args.rate}/s", lambda r: r["fixed_rate"]["p99"], 0)
    row("churn dialogues/s", lambda r: r["churn"], 0)
    row("RSS bytes per idle conn @10k", lambda r: r["idle"]["bytes_per_connection"], 0)
    row("syscalls/exchange @1000",
        lambda r: r["syscalls"]["per_exchange"] if r["syscalls"] else None, 2)
    row("user instructions/exchange", lambda r: r["instructions"], 0)

    header = ["metric"] + names + [f"{names[0]}/{n}" for n in names[1:]]
    widths = [max(len(str(x[i])) for x in rows + [header]) for i in range(len(header))]
    line = lambda cells: "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    print(line(header))
    print(line(["-" * w for w in widths]))
    for r in rows:
        print(line(r))
    if "reactor_spread" in results:
        spread = results["reactor_spread"]
        print(f"\ngreeter-server --reactors {len(spread['served'])}, churn over {spread['connections']} "
              f"connections: served per reactor {spread['served']} "
              f"(the least-loaded has {spread['min_over_max']:.0%} of the busiest's share)")
    if "greeter_19000" in results:
        held = results["greeter_19000"]
        print(f"\ngreeter-server holding 19,000 connections: {held['held_checked']} answered the final "
              f"check; probe p99 {held['probe_p99_us']} µs; RSS {held['bytes_per_connection']:.0f} "
              "bytes per connection")
    results["table"] = [header] + rows
    results["load_errors"] = ERRORS
    if ERRORS:
        print("\nload errors (counted, not hidden):")
        for note in ERRORS:
            print(f"  {note}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    if args.svg:
        svg_plot({n: results["servers"][n]["fixed_rate"]["distribution"] for n in names}, args.svg,
                 f"latency at {args.rate:,} exchanges/s over 100 connections, from intended send time")


if __name__ == "__main__":
    main()
