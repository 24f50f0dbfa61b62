#!/usr/bin/env python3
"""roomcast on one worker and on two, and against an earlier build on one:
echo and broadcast throughput, the server's CPU time per message or delivery,
and how evenly a connect storm lands on the workers in each accept mode.

    python3 benches/workers.py [--baseline PATH_TO_OLDER_ROOMCAST] [--quick]

On one worker the server is pinned to core 1 and the load to core 0; on two
workers the server may use both cores and the load shares core 0 with it, so
throughput there is bounded by the machine, and the figure to compare is the
server's CPU time per unit (docs/benchmarks.md, "Workers"). Prints Markdown
tables and writes the raw results to target/bench-workers/results.json.
"""

import argparse
import json
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # noqa: E402  (the comparison's helpers: pinning, waiting, parsing)

ROOT = compare.ROOT
ROOMCAST = compare.ROOMCAST
NO_LIMITS = compare.NO_LIMITS
ROOM_FLAGS = ["--rate", "1e9", "--burst", "1e9"]

SCENARIOS = [
    # name, server command, path, bench arguments, unit
    ("echo 100 x 32 B, 16 in flight", "echo", "/", ["echo", "-c", "100", "-s", "32", "-d", "16"], "msg"),
    ("echo 100 x 1 KiB, 16 in flight", "echo", "/", ["echo", "-c", "100", "-s", "1024", "-d", "16"], "msg"),
    ("raw pub/sub, 1000 members", "serve", "/pubsub/bench",
     ["broadcast", "--mode", "raw", "-n", "1000", "-p", "4", "-w", "8", "-s", "64"], "delivery"),
    ("room broadcast, 1000 members", "serve", "/ws",
     ["broadcast", "--mode", "rooms", "-n", "1000", "-p", "4", "-w", "8", "-s", "64"], "delivery"),
]


def server_argv(binary, command, port, workers, extra=()):
    argv = [str(binary), command, "--listen", f"127.0.0.1:{port}", *NO_LIMITS]
    if command == "serve":
        argv += ROOM_FLAGS
        # History in memory (a baseline built before --store had nothing else).
        if workers is not None:
            argv += ["--store", "memory"]
    if workers is not None:
        argv += ["--workers", str(workers)]
    return argv + list(extra)


def start(argv, cores, log):
    port = int(argv[argv.index("--listen") + 1].rsplit(":", 1)[1])
    proc = subprocess.Popen(["taskset", "-c", cores, *argv], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    if not compare.wait_listening(port, proc):
        compare.stop(proc)
        raise RuntimeError("server did not start: " + " ".join(argv))
    time.sleep(0.3)
    return proc


def rate_of(result):
    return result.get("msgs_per_sec") or result.get("deliveries_per_sec") or 0.0


def measure(layout, scenario, timing, log):
    name, command, path, args, unit = scenario
    binary, workers, cores = layout["binary"], layout["workers"], layout["cores"]
    port = compare.free_port()
    proc = start(server_argv(binary, command, port, workers), cores, log)
    try:
        warmup, duration = timing
        argv = ["taskset", "-c", "0", str(ROOMCAST), "bench", *args,
                "--url", f"ws://127.0.0.1:{port}{path}",
                "--warmup", str(warmup), "--duration", str(duration), "--server-pid", str(proc.pid)]
        result = compare.run_bench(argv, log, timeout=120)
    finally:
        compare.stop(proc)
    rate = rate_of(result)
    cpu = result.get("server_cpu_percent") or 0.0
    return {
        "layout": layout["name"], "scenario": name, "unit": unit, "rate": rate,
        "server_cpu_percent": cpu, "bench_cpu_percent": result.get("bench_cpu_percent"),
        "server_ns_per_unit": (cpu / 100.0) * 1e9 / rate if rate else None,
        "lost": result.get("lost"), "p99_us": (result.get("latency_us") or {}).get("p99"),
    }


def stats(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as r:
        return json.loads(r.read())


def storm(mode, connections, log):
    """A connect storm against two workers: how the connections split."""
    port = compare.free_port()
    argv = server_argv(ROOMCAST, "echo", port, 2, ["--accept-mode", mode])
    proc = start(argv, "0,1", log)
    try:
        bench = subprocess.Popen(
            ["taskset", "-c", "0", str(ROOMCAST), "bench", "connect", "-n", str(connections), "--hold", "3",
             "--url", f"ws://127.0.0.1:{port}/", "--server-pid", str(proc.pid)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT, text=True)
        split, seen = None, threading.Event()

        def reader():
            for line in bench.stdout:
                log.write(line.encode())
                if line.startswith("connect: holding"):
                    seen.set()
                if line.strip().startswith("{"):
                    reader.result = json.loads(line)
        reader.result = None
        t = threading.Thread(target=reader)
        t.start()
        seen.wait(timeout=120)
        split = [w["connections_active"] for w in stats(port)["workers"]]
        t.join(timeout=120)
        bench.wait(timeout=30)
        result = reader.result or {}
    finally:
        compare.stop(proc)
    total = sum(split)
    return {"mode": mode, "split": split, "imbalance": max(split) / (total / len(split)) if total else None,
            "handshakes_per_sec": result.get("handshakes_per_sec"),
            "handshake_p99_us": (result.get("handshake_latency_us") or {}).get("p99")}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", help="an earlier roomcast binary to compare --workers 1 with")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    timing = (1, 3) if args.quick else (2, 8)
    layouts = []
    if args.baseline:
        layouts.append({"name": "baseline, 1 loop", "binary": Path(args.baseline), "workers": None, "cores": "1"})
    layouts += [
        {"name": "--workers 1", "binary": ROOMCAST, "workers": 1, "cores": "1"},
        # Two workers sharing the one core the single loop had: what
        # splitting the work costs, without the generator in the way.
        {"name": "--workers 2, one core", "binary": ROOMCAST, "workers": 2, "cores": "1"},
        {"name": "--workers 2", "binary": ROOMCAST, "workers": 2, "cores": "0,1"},
    ]
    out_dir = ROOT / "target" / "bench-workers"
    out_dir.mkdir(parents=True, exist_ok=True)
    results, storms = [], []
    with open(out_dir / "log.txt", "wb") as log:
        for round_ in range(args.rounds):
            for scenario in SCENARIOS:
                for layout in layouts:
                    compare.wait_quiet(60)
                    r = measure(layout, scenario, timing, log)
                    r["round"] = round_
                    results.append(r)
                    print(f"# {r['scenario']} | {r['layout']}: {r['rate']:,.0f}/s, "
                          f"{r['server_ns_per_unit'] or 0:,.0f} ns/{r['unit']}, server {r['server_cpu_percent']:.0f}%",
                          flush=True)
        for mode in ["reuseport", "handoff"]:
            for _ in range(args.rounds):
                compare.wait_quiet(60)
                s = storm(mode, 2000 if args.quick else 10000, log)
                storms.append(s)
                print(f"# storm {mode}: split {s['split']}, {s['handshakes_per_sec'] or 0:,.0f} handshakes/s", flush=True)
    (out_dir / "results.json").write_text(json.dumps({"runs": results, "storms": storms}, indent=1))
    print("\n| scenario | layout | throughput | server CPU | server time per unit |")
    print("|---|---|---:|---:|---:|")
    for r in results:
        print(f"| {r['scenario']} (round {r['round'] + 1}) | {r['layout']} | {r['rate']:,.0f}/s | "
              f"{r['server_cpu_percent']:.0f}% | {r['server_ns_per_unit'] or 0:,.0f} ns/{r['unit']} |")
    print("\n| accept mode | connections per worker | max / mean | handshakes/s | handshake p99 |")
    print("|---|---|---:|---:|---:|")
    for s in storms:
        print(f"| {s['mode']} | {' / '.join(map(str, s['split']))} | {s['imbalance'] or 0:.3f} | "
              f"{s['handshakes_per_sec'] or 0:,.0f} | {s['handshake_p99_us'] or 0:,.0f} µs |")


if __name__ == "__main__":
    main()
