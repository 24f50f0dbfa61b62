#!/usr/bin/env python3
"""Side-by-side benchmark of roomcast and peer WebSocket servers.

Run through benches/compare.sh, which builds everything first. For each
server: start it pinned to core 1 (`taskset -c 1`), run the scenario matrix
with `taskset -c 0 roomcast bench ...`, stop it. Prints Markdown tables,
writes the raw results to target/bench-compare/results.json and a bar
chart to docs/benchmarks.svg. Standard library only.

Environment (seconds unless said): BENCH_WARMUP, BENCH_DURATION, BENCH_HOLD,
BENCH_SERVERS / BENCH_SCENARIOS (names to keep, separated by commas, or by
semicolons when a scenario name has a comma), BENCH_MORE=1 (adds issue 17's rows: 32 B and 1 KiB pipelined, 16 KiB four
in flight, 10 connections ping-pong, fan-out at 50 publishes/s),
BENCH_BASELINE (an older roomcast binary to measure alongside, as
"roomcast-baseline"), BENCH_IDLE (idle connections in total, default
19900), BENCH_ROUNDS (default 4, --quick 1: each cell reports its best
round), BENCH_QUIET_WAIT (seconds to
wait before each run for other work to drop under 10% of the machine;
default 30, --quick 10; BENCH_QUIET_BUDGET seconds in all, default 300).
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "target" / "bench-compare"
ROOMCAST = ROOT / "target" / "release" / "roomcast"
PEERS = ROOT / "benches" / "peers"

# Both cores: the server on one, the load generator on the other.
SERVER_CPU = "1"
BENCH_CPU = "0"

# The descriptor limit here is 20,000 per process and cannot be raised. A
# server holding 20,000 connections would need 20,000 sockets plus its
# listener, epoll and stdio, so 20,000 idle connections cannot fit in any
# one server process: 19,900 is the most that fits with room to spare. The
# load is split across two bench processes of 9,950 each.
IDLE_TOTAL = 19_900
IDLE_PROCESSES = 2


class Server:
    """How to start one server: a command per kind of scenario."""

    def __init__(self, name, echo, pubsub=None, pubsub_path="/pubsub/bench", stats=False):
        self.name = name
        self.echo = echo  # port -> argv; serves echo on "/"
        self.pubsub = pubsub or echo  # port -> argv; serves the raw relay
        self.pubsub_path = pubsub_path
        self.stats = stats  # answers GET /stats with heap_bytes


NO_LIMITS = ["--max-connections-per-ip", "0", "--handshake-rate-per-ip", "0"]


def roomcast_server(name, binary):
    rc = str(binary)
    return Server(
        name,
        # Rate and per-address limits are product features, not benchmark
        # subjects: all the load comes from one loopback address, and the
        # peers have no such limits.
        echo=lambda port: [rc, "echo", "--listen", f"127.0.0.1:{port}", *NO_LIMITS],
        pubsub=lambda port: [
            rc, "serve", "--listen", f"127.0.0.1:{port}", "--rate", "1e9", "--burst", "1e9", "--store", "memory",
            *NO_LIMITS,
        ],
        stats=True,
    )


def servers():
    node = shutil.which("node") or "node"
    # BENCH_BASELINE: an older roomcast binary, measured in the same run as
    # "roomcast-baseline" (before/after comparisons on a noisy machine).
    baseline = os.environ.get("BENCH_BASELINE")
    return [roomcast_server("roomcast", ROOMCAST)] + (
        [roomcast_server("roomcast-baseline", baseline)] if baseline else []
    ) + [
        Server(
            "tokio-tungstenite",
            echo=lambda port: [str(PEERS / "tokio-tungstenite/target/release/peer-tokio-tungstenite"), str(port)],
        ),
        Server(
            "fastwebsockets",
            echo=lambda port: [str(PEERS / "fastwebsockets/target/release/peer-fastwebsockets"), str(port)],
        ),
        Server("node-ws", echo=lambda port: [node, str(PEERS / "node-ws/server.js"), str(port)]),
        Server(
            "uWebSockets.js",
            echo=lambda port: [node, str(PEERS / "uwebsockets-js/server.js"), str(port)],
        ),
        # The C++ core uWebSockets.js wraps, without the JavaScript callback.
        Server(
            "uWebSockets",
            echo=lambda port: [str(PEERS / "uwebsockets-native/target/peer-uwebsockets-native"), str(port)],
        ),
    ]


def scenarios():
    """(name, kind, bench arguments). kind picks the server command and path."""
    return [
        ("echo 100 x 20 B", "echo", ["echo", "-c", "100", "-s", "20", "-d", "1"]),
        ("echo 100 x 20 B, 16 in flight", "echo", ["echo", "-c", "100", "-s", "20", "-d", "16"]),
        ("echo 100 x 16 KiB", "echo", ["echo", "-c", "100", "-s", "16384", "-d", "1", "--binary"]),
        ("echo 1000 x 512 B", "echo", ["echo", "-c", "1000", "-s", "512", "-d", "1"]),
        ("pubsub 1000 members", "pubsub", ["broadcast", "-n", "1000", "-p", "4", "-w", "8", "-s", "64"]),
        ("pubsub 10000 members", "pubsub", ["broadcast", "-n", "10000", "-p", "4", "-w", "4", "-s", "64"]),
        ("idle connections", "idle", ["connect"]),
    ] + (MORE_SCENARIOS if os.environ.get("BENCH_MORE") == "1" else [])


# BENCH_MORE=1 adds the rows of issue 17's table that the matrix lacks:
# message sizes and depths where native uWebSockets was measured, and
# fan-out latency at a fixed publish rate (not saturation). They appear in
# the CPU-per-unit table and in one table of their own.
MORE_SCENARIOS = [
    ("echo 100 x 32 B, 16 in flight", "echo", ["echo", "-c", "100", "-s", "32", "-d", "16"]),
    ("echo 100 x 1 KiB, 16 in flight", "echo", ["echo", "-c", "100", "-s", "1024", "-d", "16"]),
    ("echo 100 x 16 KiB, 4 in flight", "echo", ["echo", "-c", "100", "-s", "16384", "-d", "4", "--binary"]),
    ("echo 10 x 32 B", "echo", ["echo", "-c", "10", "-s", "32", "-d", "1"]),
    ("pubsub 1000 members, 50/s", "pubsub", ["broadcast", "-n", "1000", "-p", "1", "-r", "50", "-s", "64"]),
]


def env_float(name, default):
    value = os.environ.get(name)
    return float(value) if value else default


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, proc, timeout=15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def pinned(cpu, argv):
    """`argv` on one core; as root also at nice -10 (servers and bench alike),
    so background jobs at normal or lower priority disturb the runs less."""
    prefix = ["taskset", "-c", cpu] if shutil.which("taskset") else []
    if os.geteuid() == 0:
        prefix = ["nice", "-n", "-10"] + prefix
    return prefix + argv


def start_server(server, kind, log):
    port = free_port()
    argv = (server.pubsub if kind == "pubsub" else server.echo)(port)
    proc = subprocess.Popen(pinned(SERVER_CPU, argv), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    if not wait_listening(port, proc):
        stop(proc)
        raise RuntimeError(f"{server.name} did not start listening ({' '.join(argv)})")
    time.sleep(0.3)
    return proc, port


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def heap_bytes(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=2) as r:
            return json.loads(r.read()).get("heap_bytes")
    except Exception:
        return None


def busy_percent(seconds=0.5):
    """CPU use of everything on the machine, in percent of all cores, over
    `seconds` (run between benchmarks, so it is other people's work)."""
    def sample():
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields), idle
    t0, i0 = sample()
    time.sleep(seconds)
    t1, i1 = sample()
    return 100.0 * (1 - (i1 - i0) / max(1, t1 - t0))


def wait_quiet(limit_s):
    """Waits (at most `limit_s`) until other work uses under QUIET_PERCENT of
    the machine; returns the busy share seen last. A shared machine's
    compiles and fuzzers otherwise land inside a measurement."""
    deadline = time.time() + limit_s
    busy = busy_percent()
    while busy > QUIET_PERCENT and time.time() < deadline:
        time.sleep(1.0)
        busy = busy_percent()
    return round(busy, 1)


QUIET_PERCENT = 10.0
QUIET_BUDGET = 300.0


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def bench_argv(args, port, path, pid, timing, source_block):
    warmup, duration, _hold = timing
    return pinned(BENCH_CPU, [
        str(ROOMCAST), "bench", *args,
        "--url", f"ws://127.0.0.1:{port}{path}",
        "--warmup", str(warmup), "--duration", str(duration),
        "--server-pid", str(pid), "--source-ip", f"127.0.{source_block}.1",
    ])


def last_json(text):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    return None


def run_bench(argv, log, timeout):
    log.write(("$ " + " ".join(argv) + "\n").encode())
    log.flush()
    done = subprocess.run(argv, capture_output=True, timeout=timeout, cwd=ROOT)
    log.write(done.stdout + done.stderr)
    log.flush()
    result = last_json(done.stdout.decode())
    if done.returncode != 0 or result is None:
        raise RuntimeError(done.stderr.decode().strip() or f"bench exited {done.returncode}")
    return result


def run_idle(server, pid, port, timing, log, total, source_block):
    """Several bench processes hold `total` idle connections between them;
    memory is read here, once all of them hold theirs."""
    _warmup, _duration, hold = timing
    per = total // IDLE_PROCESSES
    before_rss, before_heap = rss_kib(pid), heap_bytes(port) if server.stats else None
    # Each process binds its own source address.
    argvs = [pinned(BENCH_CPU, [
        str(ROOMCAST), "bench", "connect", "-n", str(per), "--hold", str(hold + 3),
        "--connect-concurrency", "128", "--source-ip", f"127.0.{source_block}.{i + 1}",
        "--url", f"ws://127.0.0.1:{port}/", "--server-pid", str(pid),
    ]) for i in range(IDLE_PROCESSES)]
    for argv in argvs:
        log.write(("$ " + " ".join(argv) + "\n").encode())
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT) for argv in argvs]
    holding = [threading.Event() for _ in procs]
    outputs = [[] for _ in procs]

    def reader(i):
        for raw in procs[i].stdout:
            line = raw.decode()
            outputs[i].append(line)
            if line.startswith("connect: holding"):
                holding[i].set()
        holding[i].set()

    threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(len(procs))]
    for t in threads:
        t.start()
    for h in holding:
        h.wait(timeout=120)
    time.sleep(1.0)  # let the server settle its last connections
    after_rss, after_heap = rss_kib(pid), heap_bytes(port) if server.stats else None
    for p in procs:
        p.wait(timeout=hold + 180)
    for t in threads:
        t.join(timeout=5)
    results = []
    for i, p in enumerate(procs):
        text = "".join(outputs[i])
        log.write(text.encode() + p.stderr.read())
        r = last_json(text)
        if p.returncode != 0 or r is None:
            raise RuntimeError(f"bench connect process {i} failed")
        results.append(r)
    opened = sum(r["opened"] for r in results)
    secs = max(r["connect_secs"] for r in results) or 1e-9
    out = {
        "connections": total,
        "opened": opened,
        "held": sum(r["held"] for r in results),
        "handshakes_per_sec": round(opened / secs, 1),
        "handshake_p50_us": max(r["handshake_latency_us"]["p50"] for r in results),
        "handshake_p99_us": max(r["handshake_latency_us"]["p99"] for r in results),
        "bench_cpu_percent": [r["bench_cpu_percent"] for r in results],
        "server_cpu_percent": results[0]["server_cpu_percent"],
        "errors": sum(r["errors"] for r in results),
        "rss_bytes_per_conn": None,
        "heap_bytes_per_conn": None,
        "processes": results,
    }
    if before_rss is not None and after_rss is not None and opened:
        out["rss_bytes_per_conn"] = round((after_rss - before_rss) * 1024 / opened, 1)
    if before_heap is not None and after_heap is not None and opened:
        out["heap_bytes_per_conn"] = round((after_heap - before_heap) / opened, 1)
    return out


def primary(kind, r):
    """The number a round is judged by: the best round of each cell is kept."""
    if kind == "echo":
        return r["msgs_per_sec"]
    if kind == "pubsub":
        return r["deliveries_per_sec"]
    return r["handshakes_per_sec"]


def run_all(timing, keep_servers, keep_scenarios, idle_total, rounds, quiet_wait):
    """Scenario-major, servers interleaved, `rounds` times over: noise from
    anything else on the machine spreads over all servers instead of
    landing on one, and the best round of each cell is reported."""
    OUT.mkdir(parents=True, exist_ok=True)
    chosen = [s for s in servers() if not keep_servers or s.name in keep_servers]
    plan = [x for x in scenarios() if not keep_scenarios or x[0] in keep_scenarios]
    all_rounds = {s.name: {n: [] for n, _, _ in plan} for s in chosen}
    logs = {s.name: open(OUT / f"{s.name}.log", "wb") for s in chosen}
    # Every run connects from its own block of source addresses, 127.0.N.x:
    # earlier runs' TIME_WAIT ports never stand in the way.
    source_block = 0
    # Waiting for quiet is bounded per run and in total.
    quiet_budget = env_float("BENCH_QUIET_BUDGET", QUIET_BUDGET)
    for round_no in range(1, rounds + 1):
        for name, kind, args in plan:
            for server in chosen:
                log = logs[server.name]
                print(f"[{time.strftime('%H:%M:%S')}] round {round_no}/{rounds} {name}: {server.name} ...", flush=True)
                source_block = source_block % 250 + 1
                load = loadavg()
                waited = time.time()
                background = wait_quiet(min(quiet_wait, max(0.0, quiet_budget)))
                quiet_budget -= time.time() - waited
                if background > QUIET_PERCENT:
                    print(f"    (the machine is {background:.0f}% busy with other work; measuring anyway)", flush=True)
                try:
                    proc, port = start_server(server, kind, log)
                except Exception as e:
                    all_rounds[server.name][name].append({"error": str(e)})
                    print(f"    FAILED: {e}", flush=True)
                    continue
                try:
                    if kind == "idle":
                        r = run_idle(server, proc.pid, port, timing, log, idle_total, source_block)
                    else:
                        path = server.pubsub_path if kind == "pubsub" else "/"
                        limit = sum(timing) + 180
                        r = run_bench(bench_argv(args, port, path, proc.pid, timing, source_block), log, limit)
                    r["loadavg_before"] = load
                    r["background_busy_percent"] = background
                    r["round"] = round_no
                    all_rounds[server.name][name].append(r)
                    print("    " + summary(kind, r), flush=True)
                except Exception as e:
                    all_rounds[server.name][name].append({"error": str(e)})
                    print(f"    FAILED: {e}", flush=True)
                finally:
                    stop(proc)
                    time.sleep(0.5)
    for log in logs.values():
        log.close()
    kinds = {n: k for n, k, _ in plan}
    # At a fixed publish rate the rate says nothing: the best round is the
    # one with the lowest p99.
    fixed_rate = {n for n, _, args in plan if "-r" in args}
    best = {}
    for server, cells in all_rounds.items():
        best[server] = {}
        for name, runs in cells.items():
            ok = [r for r in runs if "error" not in r]
            if ok:
                if name in fixed_rate:
                    best[server][name] = min(ok, key=lambda r: r["latency_us"]["p99"])
                else:
                    best[server][name] = max(ok, key=lambda r: primary(kinds[name], r))
                best[server][name]["rounds"] = len(runs)
            elif runs:
                best[server][name] = runs[-1]
    return best, all_rounds


# ---------------------------------------------------------------- reporting

def summary(kind, r):
    if kind == "echo":
        lat = r["latency_us"]
        return (f"{r['msgs_per_sec']:.0f} msgs/s, p50 {lat['p50']:.0f} us, p99 {lat['p99']:.0f} us, "
                f"cpu bench {r['bench_cpu_percent']}% server {r['server_cpu_percent']}%")
    if kind == "pubsub":
        lat = r["latency_us"]
        return (f"{r['deliveries_per_sec']:.0f} deliveries/s, lost {r['lost']}, p50 {lat['p50'] / 1000:.1f} ms, "
                f"cpu bench {r['bench_cpu_percent']}% server {r['server_cpu_percent']}%")
    return (f"{r['opened']} open, {r['handshakes_per_sec']:.0f} handshakes/s, "
            f"RSS {fmt_bytes(r['rss_bytes_per_conn'])}/conn, heap {fmt_bytes(r['heap_bytes_per_conn'])}/conn")


def fmt_bytes(v):
    return "n/a" if v is None else f"{v:,.0f} B"


def fmt_rate(v):
    if v is None:
        return "n/a"
    if v >= 1e6:
        return f"{v / 1e6:.2f} M"
    if v >= 1e3:
        return f"{v / 1e3:.1f} k"
    return f"{v:.0f}"


def fmt_us(v):
    if v is None:
        return "n/a"
    return f"{v / 1000:.2f} ms" if v >= 1000 else f"{v:.0f} us"


# (column, scenario, metric getter, higher is better, chart label lines)
METRICS = [
    ("echo 100x20B msgs/s", "echo 100 x 20 B", lambda r: r["msgs_per_sec"], True, ("echo 100 x 20 B", "msgs/s")),
    ("echo 100x20B x16 msgs/s", "echo 100 x 20 B, 16 in flight", lambda r: r["msgs_per_sec"], True,
     ("echo 100 x 20 B", "16 in flight, msgs/s")),
    ("echo 100x16KiB msgs/s", "echo 100 x 16 KiB", lambda r: r["msgs_per_sec"], True,
     ("echo 100 x 16 KiB", "msgs/s")),
    ("echo 1000x512B msgs/s", "echo 1000 x 512 B", lambda r: r["msgs_per_sec"], True,
     ("echo 1000 x 512 B", "msgs/s")),
    ("pubsub 1k deliveries/s", "pubsub 1000 members", lambda r: r["deliveries_per_sec"], True,
     ("pubsub 1,000", "deliveries/s")),
    ("pubsub 10k deliveries/s", "pubsub 10000 members", lambda r: r["deliveries_per_sec"], True,
     ("pubsub 10,000", "deliveries/s")),
    ("handshakes/s", "idle connections", lambda r: r["handshakes_per_sec"], True, ("connect", "handshakes/s")),
    ("RSS bytes/idle conn", "idle connections", lambda r: r["rss_bytes_per_conn"], False,
     ("idle connection", "RSS bytes (fewer is better)")),
]


BUSY = 90.0


def generator_bound(r):
    b = r.get("bench_cpu_percent")
    if isinstance(b, list):
        b = sum(x or 0 for x in b)
    return b is not None and b >= BUSY


def metric(results, server, scenario, get):
    r = results.get(server, {}).get(scenario)
    if not r or "error" in r:
        return None
    try:
        return get(r)
    except (KeyError, TypeError):
        return None


def unit_rate(r):
    """Units per second of a run: messages, deliveries or handshakes."""
    for key in ("msgs_per_sec", "deliveries_per_sec", "handshakes_per_sec"):
        if r.get(key) is not None:
            return r[key]
    return None


def cpu_ns(r):
    """Server CPU per unit in one run, in nanoseconds."""
    if "error" in r or r.get("server_cpu_percent") is None:
        return None
    per_sec = unit_rate(r)
    return r["server_cpu_percent"] / 100 * 1e9 / per_sec if per_sec else None


def tables(results, every_round=None):
    names = list(results)
    lines = []
    # Throughput and memory.
    lines.append("| server | " + " | ".join(m[0] for m in METRICS) + " |")
    lines.append("|---|" + "---:|" * len(METRICS))
    for s in names:
        cells = []
        for col, scen, get, _, _ in METRICS:
            v = metric(results, s, scen, get)
            if col.startswith("RSS"):
                cell = fmt_bytes(v)
                heap = metric(results, s, scen, lambda r: r["heap_bytes_per_conn"])
                if heap is not None:
                    cell += f" (heap {heap:,.0f} B)"
            else:
                cell = fmt_rate(v)
            r = results.get(s, {}).get(scen)
            if r and "error" in r:
                cell = "failed"
            elif r and not col.startswith("RSS") and generator_bound(r):
                cell += " *"
            cells.append(cell)
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"\\* the bench used {BUSY:.0f}% or more of its core in that run: the server may be faster "
                 "than shown (the figure is a lower bound).")
    lines.append("")
    # Latency.
    lat_cols = [
        ("echo 100x20B", "echo 100 x 20 B"),
        ("echo 100x20B x16", "echo 100 x 20 B, 16 in flight"),
        ("echo 100x16KiB", "echo 100 x 16 KiB"),
        ("echo 1000x512B", "echo 1000 x 512 B"),
        ("pubsub 1k", "pubsub 1000 members"),
        ("pubsub 10k", "pubsub 10000 members"),
    ]
    lines.append("Latency p50 / p99 (echo: round trip; pubsub: publish to delivery):")
    lines.append("")
    lines.append("| server | " + " | ".join(c for c, _ in lat_cols) + " |")
    lines.append("|---|" + "---:|" * len(lat_cols))
    for s in names:
        cells = []
        for _, scen in lat_cols:
            p50 = metric(results, s, scen, lambda r: r["latency_us"]["p50"])
            p99 = metric(results, s, scen, lambda r: r["latency_us"]["p99"])
            cells.append(f"{fmt_us(p50)} / {fmt_us(p99)}")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    lines.append("")
    # Ratios.
    if "roomcast" in results:
        lines.append("roomcast relative to each peer (>1: roomcast better, <1: roomcast worse; "
                     "throughput: roomcast / peer, memory: peer / roomcast):")
        lines.append("")
        lines.append("| peer | " + " | ".join(m[0] for m in METRICS) + " |")
        lines.append("|---|" + "---:|" * len(METRICS))
        for s in names:
            if s == "roomcast":
                continue
            cells = []
            for _, scen, get, higher, _ in METRICS:
                rc, peer = metric(results, "roomcast", scen, get), metric(results, s, scen, get)
                if rc is None or peer is None or rc <= 0 or peer <= 0:
                    cells.append("n/a")
                else:
                    cells.append(f"{(rc / peer if higher else peer / rc):.2f}x")
            lines.append(f"| {s} | " + " | ".join(cells) + " |")
        lines.append("")
    # What each unit of work cost the server, from every round: the
    # comparison that holds where the generator, not the server, set the rate.
    if every_round:
        ran = [n for n in (n for n, _, _ in scenarios()) if any(every_round.get(s, {}).get(n) for s in names)]
        lines.append("Server CPU per unit (ns of server CPU time per message, delivery or handshake, from /proc "
                     "over each measured window; lowest-highest over the rounds; lower is better):")
        lines.append("")
        lines.append("| server | " + " | ".join(ran) + " |")
        lines.append("|---|" + "---:|" * len(ran))
        for s in names:
            cells = []
            for scen in ran:
                ns = [v for v in (cpu_ns(r) for r in every_round.get(s, {}).get(scen, [])) if v is not None]
                cells.append("n/a" if not ns else f"{min(ns):,.0f}" + ("" if len(ns) == 1 else f"-{max(ns):,.0f}"))
            lines.append(f"| {s} | " + " | ".join(cells) + " |")
        lines.append("")
        more = [n for n, _, _ in MORE_SCENARIOS if n in ran]
        if more:
            lines.append("The BENCH_MORE scenarios, best round (rate; p50 / p99 latency):")
            lines.append("")
            lines.append("| server | " + " | ".join(more) + " |")
            lines.append("|---|" + "---:|" * len(more))
            for s in names:
                cells = []
                for scen in more:
                    r = results.get(s, {}).get(scen)
                    if not r or "error" in r:
                        cells.append("failed" if r else "")
                        continue
                    lat = r["latency_us"]
                    cells.append(f"{fmt_rate(unit_rate(r))}; {fmt_us(lat['p50'])} / {fmt_us(lat['p99'])}")
                lines.append(f"| {s} | " + " | ".join(cells) + " |")
            lines.append("")
    # The generator's own load, run by run.
    lines.append("CPU use, bench / server (percent of one core; the bench must stay well under 100):")
    lines.append("")
    scen_names = [n for n, _, _ in scenarios()]
    lines.append("| server | " + " | ".join(scen_names) + " |")
    lines.append("|---|" + "---:|" * len(scen_names))
    for s in names:
        cells = []
        for scen in scen_names:
            r = results.get(s, {}).get(scen)
            if not r or "error" in r:
                cells.append("failed" if r else "")
                continue
            b = r.get("bench_cpu_percent")
            b = "+".join(f"{x:.0f}" for x in b) if isinstance(b, list) else ("n/a" if b is None else f"{b:.0f}")
            sv = r.get("server_cpu_percent")
            cells.append(f"{b} / {'n/a' if sv is None else f'{sv:.0f}'}")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    lines.append("")
    failures = [(s, n, r["error"]) for s in names for n, r in results[s].items() if "error" in r]
    lost = [(s, n, r["lost"]) for s in names for n, r in results[s].items() if r.get("lost")]
    for s, n, e in failures:
        lines.append(f"- FAILED {s} / {n}: {e}")
    for s, n, v in lost:
        lines.append(f"- {s} / {n}: {v} deliveries lost")
    return "\n".join(lines)


def svg_chart(results, path):
    """Grouped bars, one group per metric, each bar relative to the best
    server of its group (memory: fewest bytes is best), values written on."""
    names = list(results)
    colors = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    groups = []
    for col, scen, get, higher, label in METRICS:
        vals = [metric(results, s, scen, get) for s in names]
        present = [v for v in vals if v is not None and v > 0]
        if not present:
            continue
        best = max(present) if higher else min(present)
        rel = [None if v is None or v <= 0 else (v / best if higher else best / v) for v in vals]
        groups.append((col, label, vals, rel))
    bar_w, gap, group_gap, height, top, left = 18, 2, 40, 260, 100, 40
    group_w = max(len(names) * (bar_w + gap) + group_gap, 120)
    width = max(left + len(groups) * group_w + 20, 820)
    total_h = top + height + 70 + 18 * len(names)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{total_h}" '
        f'font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{total_h}" fill="white"/>',
        f'<text x="{left}" y="22" font-size="15" font-weight="bold">roomcast vs peers: '
        f'each bar relative to the best server of its group (higher is better)</text>',
        f'<line x1="{left - 5}" y1="{top + height}" x2="{width - 10}" y2="{top + height}" stroke="#333"/>',
    ]
    for g, (col, label, vals, rel) in enumerate(groups):
        x0 = left + g * group_w
        for i, (v, r) in enumerate(zip(vals, rel)):
            x = x0 + i * (bar_w + gap)
            if r is None:
                out.append(f'<text x="{x + 4}" y="{top + height - 4}" fill="#999">-</text>')
                continue
            h = max(1.0, r * height)
            y = top + height - h
            out.append(f'<rect x="{x}" y="{y:.1f}" width="{bar_w}" height="{h:.1f}" '
                       f'fill="{colors[i % len(colors)]}"><title>{names[i]}: {v:,.0f}</title></rect>')
            text = fmt_bytes(v) if col.startswith("RSS") else fmt_rate(v)
            tx, ty = x + bar_w / 2 + 3, y - 3
            out.append(f'<text x="{tx}" y="{ty:.1f}" font-size="9" '
                       f'transform="rotate(-90 {tx} {ty:.1f})">{text}</text>')
        cx = x0 + (len(names) * (bar_w + gap)) / 2
        out.append(f'<text x="{cx}" y="{top + height + 16}" text-anchor="middle">{label[0]}</text>')
        out.append(f'<text x="{cx}" y="{top + height + 30}" text-anchor="middle" fill="#555" font-size="9">'
                   f'{label[1]}</text>')
    for i, s in enumerate(names):
        y = top + height + 60 + 18 * i
        out.append(f'<rect x="{left}" y="{y - 10}" width="12" height="12" fill="{colors[i % len(colors)]}"/>')
        out.append(f'<text x="{left + 18}" y="{y}">{s}</text>')
    out.append("</svg>")
    path.write_text("\n".join(out) + "\n")


def environment():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip() \
        if shutil.which("node") else "absent"
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": os.uname().release,
        "node": node,
        "loadavg": loadavg(),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short runs (warmup 0.5 s, 2 s measured, 2 s hold)")
    ap.add_argument("--no-build", action="store_true", help="(handled by compare.sh)")
    ap.add_argument("--svg", default=str(ROOT / "docs" / "benchmarks.svg"))
    a = ap.parse_args()
    quick = a.quick
    timing = (
        env_float("BENCH_WARMUP", 0.5 if quick else 2.0),
        env_float("BENCH_DURATION", 2.0 if quick else 5.0),
        env_float("BENCH_HOLD", 2.0 if quick else 5.0),
    )
    keep_servers = [s for s in os.environ.get("BENCH_SERVERS", "").split(",") if s]
    # Several scenario names contain a comma: with one of them, separate by ';'.
    chosen = os.environ.get("BENCH_SCENARIOS", "")
    keep_scenarios = [s.strip() for s in chosen.split(";" if ";" in chosen else ",") if s.strip()]
    idle_total = int(env_float("BENCH_IDLE", IDLE_TOTAL))
    # Noise on this shared VM only ever slows a round: the best of four is
    # closer to what each server can do than the best of two (docs/benchmarks.md,
    # "One loop, eighth pass").
    rounds = int(env_float("BENCH_ROUNDS", 1 if quick else 4))
    quiet_wait = env_float("BENCH_QUIET_WAIT", 10.0 if quick else 30.0)
    env = environment()
    print(f"# {env['date']}: {env['cpu']}, {env['cores']} cores, Linux {env['kernel']}, node {env['node']}, "
          f"load average {env['loadavg']}")
    print(f"# warmup {timing[0]} s, measured {timing[1]} s, hold {timing[2]} s, best of {rounds} round(s); "
          f"{'nice -10, ' if os.geteuid() == 0 else ''}servers on core {SERVER_CPU}, "
          f"bench on core {BENCH_CPU}; idle connections: {idle_total} in {IDLE_PROCESSES} bench processes "
          f"(20,000 cannot fit under the 20,000-descriptor limit of the server process)", flush=True)
    started = time.time()
    results, every_round = run_all(timing, keep_servers, keep_scenarios, idle_total, rounds, quiet_wait)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(
        {"environment": env, "timing": timing, "rounds": rounds, "results": results, "every_round": every_round},
        indent=1) + "\n")
    print()
    print(tables(results, every_round))
    print()
    print(f"# took {time.time() - started:.0f} s; load average now {loadavg()}; raw results in "
          f"{OUT / 'results.json'}, logs in {OUT}/")
    svg_chart(results, Path(a.svg))
    print(f"# chart: {a.svg}")


if __name__ == "__main__":
    sys.exit(main())
