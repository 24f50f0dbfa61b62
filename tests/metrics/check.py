"""Starts roomcast, drives traffic that touches every histogram and several
disconnect reasons, then parses /metrics with prometheus_client's parser
(which rejects malformed exposition text) and checks what it finds.
Also checks that every metric the Grafana dashboard queries exists."""

import json
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

BIN = os.environ["ROOMCAST_BIN"]
DASHBOARD = os.environ["DASHBOARD"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def frame(opcode, payload):
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode])
    head += bytes([0x80 | n]) if n < 126 else bytes([0xFE]) + struct.pack(">H", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def read_frame(s):
    def exact(n):
        buf = b""
        while len(buf) < n:
            chunk = s.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf
    b0, b1 = exact(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack(">H", exact(2))[0]
    elif n == 127:
        n = struct.unpack(">Q", exact(8))[0]
    return b0 & 0x0F, exact(n)


class Client:
    def __init__(self, port, user):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.s.sendall(
            (f"GET /ws?username={user} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
             "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
             "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += self.s.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def send(self, obj):
        self.s.sendall(frame(1, json.dumps(obj).encode()))

    def until(self, kind, answer_pings=True):
        while True:
            op, payload = read_frame(self.s)
            if op == 9 and answer_pings:
                self.s.sendall(frame(10, payload))
                if kind == "ping":
                    return
            elif op == 1 and json.loads(payload).get("type") == kind:
                return json.loads(payload)


def metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4"), r.headers["Content-Type"]
        return r.read().decode()


def main():
    port = free_port()
    scratch = tempfile.mkdtemp(prefix="roomcast-metrics-")
    server = subprocess.Popen(
        [BIN, "serve", "--listen", f"127.0.0.1:{port}", "--store", "memory", "--workers", "2",
         "--ping-interval", "1", "--pong-timeout", "5"],
        stderr=subprocess.DEVNULL, cwd=scratch)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        a, b, c, d = (Client(port, u) for u in ("ann", "bo", "cy", "di"))
        for cl in (a, b, c):
            cl.until("welcome")
            cl.send({"type": "join", "room": "m"})
            cl.until("joined")
        for i in range(5):
            a.send({"type": "broadcast", "room": "m", "content": i})
        for cl in (a, b, c):
            for _ in range(5):
                cl.until("message")
        # A heartbeat round trip: wait for the server's ping, answer it.
        b.until("ping")
        time.sleep(0.2)
        # Disconnects: a normal close, a lost connection, a protocol error.
        a.s.sendall(frame(8, struct.pack(">H", 1000)))
        c.s.close()
        d.s.sendall(frame(1, b"\xff\xfe"))
        time.sleep(0.5)
        text = metrics(port)
    finally:
        server.terminate()
        server.wait(timeout=15)

    families = {f.name: f for f in text_string_to_metric_families(text)}
    failures = []

    def check(ok, what):
        if not ok:
            failures.append(what)

    for name in ["roomcast_ping_rtt_seconds", "roomcast_publish_enqueue_seconds", "roomcast_fanout_recipients"]:
        f = families.get(name)
        check(f is not None and f.type == "histogram", f"{name} is a histogram")
        if f is None:
            continue
        buckets = [(float(s.labels["le"]), s.value) for s in f.samples if s.name.endswith("_bucket")]
        count = [s.value for s in f.samples if s.name.endswith("_count")]
        check(buckets == sorted(buckets), f"{name}: buckets in order")
        check(all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:])), f"{name}: cumulative")
        check(buckets and buckets[-1][0] == float("inf") and count and buckets[-1][1] == count[0], f"{name}: +Inf = count")
        check(count and count[0] >= 1, f"{name}: observed something ({count})")
    reasons = {s.labels["reason"]: s.value for s in families["roomcast_disconnects"].samples} if "roomcast_disconnects" in families else {}
    for reason in ["client_normal", "connection_lost", "protocol_error"]:
        check(reasons.get(reason, 0) >= 1, f"disconnects{{reason={reason}}} counted ({reasons})")
    for name in ["process_cpu_seconds", "process_resident_memory_bytes", "process_open_fds", "process_max_fds", "process_start_time_seconds"]:
        check(name in families, f"{name} present")
    workers = {s.labels.get("worker") for s in families.get("roomcast_worker_connections_active", type("", (), {"samples": []})).samples}
    check(workers == {"0", "1"}, f"per-worker series for both workers ({workers})")

    # The dashboard queries only what exists.
    exposed = set()
    for f in families.values():
        exposed.add(f.name)
        if f.type == "counter":
            # The parser names counter families without their _total.
            exposed.add(f.name + "_total")
        for s in f.samples:
            exposed.add(s.name)
    dashboard = json.load(open(DASHBOARD))
    queried = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            queried.update(re.findall(r"\b((?:roomcast|process)_[a-z0-9_]+)", target["expr"]))
    check(queried, "the dashboard queries something")
    for name in sorted(queried):
        check(name in exposed, f"dashboard metric {name} is exposed")

    if failures:
        print("metrics check FAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print(f"metrics check passed: {len(families)} families parsed, {len(queried)} dashboard metrics exposed")


if __name__ == "__main__":
    main()
