#!/usr/bin/env python3
"""Scale-out on Redis: room broadcast to 1,000 members spread over two nodes
sharing one redis-server, against one node on its own, in the same run;
and Redis commands per publish from `INFO commandstats`.

    python3 benches/redis.py [--quick] [--rounds N] [--rate R]

For each round: the single node (`--store memory`, `--workers 2`) and the
two nodes (`--redis`, `--workers 1` each, so both setups have two event
loops), each with the bench's connections spread over them
(`roomcast bench broadcast --spread-url`): once as fast as the publishers'
windows allow, once paced at --rate messages/s (same load, comparable
latency). Nothing is pinned: on 2 cores, Redis, two nodes and the bench
share them. Prints Markdown tables; docs/benchmarks.md ("Several nodes on
Redis") has the figures. Needs `redis-server` on PATH and a release build
(`ROOMCAST` overrides its path).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # noqa: E402

ROOT, NO_LIMITS = compare.ROOT, compare.NO_LIMITS
ROOMCAST = Path(os.environ.get("ROOMCAST", compare.ROOMCAST))


def command_calls(port):
    calls = {}
    info = subprocess.run(["redis-cli", "-p", str(port), "INFO", "commandstats"], capture_output=True,
                          timeout=10, check=True).stdout.decode()
    for line in info.splitlines():
        if line.startswith("cmdstat_"):
            name, rest = line[len("cmdstat_"):].split(":", 1)
            calls[name] = int(dict(kv.split("=") for kv in rest.split(","))["calls"])
    return calls


def start_redis(log):
    port = compare.free_port()
    scratch = tempfile.mkdtemp(prefix="roomcast-bench-redis-")
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", scratch], stdout=log, stderr=subprocess.STDOUT)
    if not compare.wait_listening(port, proc):
        raise RuntimeError("redis-server did not start")
    return proc, port, scratch


def serve(port, log, extra):
    argv = [str(ROOMCAST), "serve", "--listen", f"127.0.0.1:{port}", "--rate", "1e9", "--burst", "1e9",
            "--no-demo", *NO_LIMITS, *extra]
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    if not compare.wait_listening(port, proc):
        compare.stop(proc)
        raise RuntimeError("server did not start: " + " ".join(argv))
    time.sleep(0.3)
    return proc


def bench(ports, args, timing, log):
    warmup, duration = timing
    urls = [f"ws://127.0.0.1:{p}/ws" for p in ports]
    argv = [str(ROOMCAST), "bench", "broadcast", "--mode", "rooms", *args, "--url", urls[0],
            *[x for u in urls[1:] for x in ("--spread-url", u)],
            "--warmup", str(warmup), "--duration", str(duration)]
    return compare.run_bench(argv, log, timeout=300)


def sample_commands(redis_port, timing, into):
    """Commands during the measurement window (joins are done by then)."""
    warmup, duration = timing
    time.sleep(warmup + 1.5)
    before = command_calls(redis_port)
    time.sleep(max(duration - 1.5, 0.5))
    after = command_calls(redis_port)
    into.update({k: after.get(k, 0) - before.get(k, 0) for k in after})


def run(setup, load, timing, log, rate):
    args = ["-n", "1000", "-p", "2", "-s", "64"]
    args += ["-w", "8"] if load == "max" else ["-w", "64", "-r", str(rate)]
    procs, redis, scratch, calls = [], None, None, {}
    try:
        if setup == "single":
            ports = [compare.free_port()]
            procs.append(serve(ports[0], log, ["--store", "memory", "--workers", "2"]))
            r = bench(ports, args, timing, log)
        else:
            redis, redis_port, scratch = start_redis(log)
            ports = [compare.free_port(), compare.free_port()]
            for p in ports:
                procs.append(serve(p, log, ["--redis", f"redis://127.0.0.1:{redis_port}", "--workers", "1"]))
            sampler = threading.Thread(target=sample_commands, args=(redis_port, timing, calls))
            sampler.start()
            r = bench(ports, args, timing, log)
            sampler.join()
    finally:
        for p in procs:
            compare.stop(p)
        if redis:
            compare.stop(redis)
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    lat = r.get("latency_us") or {}
    out = {"setup": setup, "load": load, "deliveries_per_sec": r["deliveries_per_sec"],
           "publish_per_sec": r["publish_per_sec"], "p50_us": lat.get("p50"), "p99_us": lat.get("p99"),
           "lost": r.get("lost"), "server_errors": r.get("server_errors")}
    if calls:
        publishes = calls.get("publish", 0)
        total = sum(v for k, v in calls.items() if k != "info")
        out["commands_per_publish"] = total / publishes if publishes else None
        out["per_publish"] = {k: round(v / publishes, 2) for k, v in sorted(calls.items())
                              if v and k != "info" and publishes}
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rate", type=float, default=200.0)
    args = parser.parse_args()
    timing = (1, 3) if args.quick else (2, 6)
    out = ROOT / "target" / "bench-redis"
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    with open(out / "log.txt", "wb") as log:
        for _ in range(args.rounds):
            for load in ["max", "paced"]:
                for setup in ["single", "two nodes on Redis"]:
                    compare.wait_quiet(30)
                    r = run(setup, load, timing, log, args.rate)
                    runs.append(r)
                    print(f"# {setup}, {load}: {r['deliveries_per_sec']:,.0f} deliveries/s, "
                          f"p50 {r['p50_us']} µs, p99 {r['p99_us']} µs, lost {r['lost']}"
                          + (f", {r['commands_per_publish']:.2f} Redis commands/publish {r['per_publish']}"
                             if r.get("commands_per_publish") else ""), flush=True)
    (out / "results.json").write_text(json.dumps(runs, indent=1))
    print("\n| setup | load | deliveries/s | publishes/s | publish→delivery p50 / p99 | lost | Redis commands / publish |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in runs:
        cpp = r.get("commands_per_publish")
        print(f"| {r['setup']} | {r['load']} | {r['deliveries_per_sec']:,.0f} | {r['publish_per_sec']:,.0f} | "
              f"{r['p50_us'] / 1000:.1f} / {r['p99_us'] / 1000:.1f} ms | {r['lost']} | "
              f"{f'{cpp:.2f}' if cpp else '-'} |")


if __name__ == "__main__":
    main()
