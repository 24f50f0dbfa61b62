#!/usr/bin/env python3
"""The history store's cost: room broadcast with `--store sqlite` against
`--store memory` in the same run (server pinned to core 1, load on core 0),
and messages persisted per second at the writer's limit.

    python3 benches/store.py [--quick] [--rounds N]

Prints Markdown tables; docs/benchmarks.md ("History store") has the
figures. Every sqlite run gets a fresh database in a scratch directory.
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # noqa: E402

ROOT, ROOMCAST, NO_LIMITS = compare.ROOT, compare.ROOMCAST, compare.NO_LIMITS


def serve(store, port, log, extra=()):
    argv = ["taskset", "-c", "1", str(ROOMCAST), "serve", "--listen", f"127.0.0.1:{port}", "--workers", "1",
            "--rate", "1e9", "--burst", "1e9", "--store", store, *NO_LIMITS, *extra]
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    if not compare.wait_listening(port, proc):
        compare.stop(proc)
        raise RuntimeError("server did not start: " + " ".join(argv))
    time.sleep(0.3)
    return proc


def stats(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as r:
        return json.loads(r.read())


def bench(port, pid, args, timing, log):
    warmup, duration = timing
    argv = ["taskset", "-c", "0", str(ROOMCAST), "bench", "broadcast", "--mode", "rooms", *args,
            "--url", f"ws://127.0.0.1:{port}/ws", "--warmup", str(warmup), "--duration", str(duration),
            "--server-pid", str(pid)]
    return compare.run_bench(argv, log, timeout=180)


def with_store(kind, run):
    scratch = tempfile.mkdtemp(prefix="roomcast-bench-store-")
    store = "memory" if kind == "memory" else f"sqlite:{scratch}/history.db"
    try:
        return run(store)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def broadcast(kind, timing, log):
    def run(store):
        port = compare.free_port()
        proc = serve(store, port, log)
        try:
            r = bench(port, proc.pid, ["-n", "1000", "-p", "4", "-w", "8", "-s", "64"], timing, log)
        finally:
            compare.stop(proc)
        lat = r.get("latency_us") or {}
        return {"store": kind, "deliveries_per_sec": r["deliveries_per_sec"], "publish_per_sec": r["publish_per_sec"],
                "p50_us": lat.get("p50"), "p99_us": lat.get("p99"), "lost": r.get("lost"),
                "server_cpu_percent": r.get("server_cpu_percent")}
    return with_store(kind, run)


def writer_limit(timing, log):
    """Many publishers, few members: publishes/s and what the writer commits."""
    def run(store):
        port = compare.free_port()
        proc = serve(store, port, log, ["--history-size", "1000000"])
        try:
            before = stats(port)["store"]["persisted"]
            t0 = time.time()
            r = bench(port, proc.pid, ["-n", "2", "-p", "32", "-w", "32", "-s", "64"], timing, log)
            # Everything published has reached the writer by the end of the drain.
            time.sleep(0.5)
            s = stats(port)
            elapsed = time.time() - t0
        finally:
            compare.stop(proc)
        persisted = s["store"]["persisted"] - before
        return {"publish_per_sec": r["publish_per_sec"], "persisted": persisted,
                "persisted_per_sec": persisted / elapsed, "store_errors": s["store"]["errors"],
                "server_cpu_percent": r.get("server_cpu_percent")}
    return with_store("sqlite", run)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    timing = (1, 3) if args.quick else (2, 8)
    out = ROOT / "target" / "bench-store"
    out.mkdir(parents=True, exist_ok=True)
    runs, limits = [], []
    with open(out / "log.txt", "wb") as log:
        for _ in range(args.rounds):
            for kind in ["memory", "sqlite"]:
                compare.wait_quiet(60)
                r = broadcast(kind, timing, log)
                runs.append(r)
                print(f"# broadcast, {kind}: {r['deliveries_per_sec']:,.0f} deliveries/s, p99 {r['p99_us']} µs", flush=True)
            compare.wait_quiet(60)
            w = writer_limit(timing, log)
            limits.append(w)
            print(f"# writer: {w['persisted_per_sec']:,.0f} persisted/s for {w['publish_per_sec']:,.0f} published/s", flush=True)
    (out / "results.json").write_text(json.dumps({"broadcast": runs, "writer": limits}, indent=1))
    print("\n| store | deliveries/s | publishes/s | publish→delivery p50 / p99 | lost | server CPU |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in runs:
        print(f"| {r['store']} | {r['deliveries_per_sec']:,.0f} | {r['publish_per_sec']:,.0f} | "
              f"{r['p50_us']:,.0f} / {r['p99_us']:,.0f} µs | {r['lost']} | {r['server_cpu_percent']:.0f}% |")
    print("\n| published/s | persisted/s | store errors | server CPU |")
    print("|---:|---:|---:|---:|")
    for w in limits:
        print(f"| {w['publish_per_sec']:,.0f} | {w['persisted_per_sec']:,.0f} | {w['store_errors']} | "
              f"{w['server_cpu_percent']:.0f}% |")


if __name__ == "__main__":
    main()
