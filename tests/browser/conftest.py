"""Fixtures for the browser tests: the real roomcast binary on free loopback
ports, and Debian's Chromium driven by Playwright (run.sh sets it all up)."""

import os
import queue
import signal
import shutil
import socket
import tempfile
import subprocess
import threading
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

BINARY = os.environ.get("ROOMCAST_BIN", "target/release/roomcast")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(os.environ.get("SCREENSHOT_DIR", Path(__file__).parent / "screenshots"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Every wait is an expectation with this timeout, never a sleep.
expect.set_options(timeout=15_000)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`roomcast ARGS --listen 127.0.0.1:PORT`, killed at the end; `restart()` keeps the port."""

    def __init__(self, command, *args, port=None):
        self.command = command
        self.args = list(args)
        self.port = port or free_port()
        self.log = []
        self.proc = None
        # Its own working directory, kept across restarts: `serve` keeps its
        # history in ./roomcast.db there, never in the repository.
        self.dir = tempfile.mkdtemp(prefix="roomcast-browser-")
        self.start()

    @property
    def tls(self):
        return "--tls-cert" in self.args

    @property
    def url(self):
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self):
        argv = [BINARY, self.command, "--listen", f"127.0.0.1:{self.port}", *self.args]
        env = {**os.environ, "RUST_LOG": "info"}
        self.proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env, cwd=self.dir)
        lines = queue.Queue()

        def pump(stream):
            for line in stream:
                self.log.append(line)
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, args=(self.proc.stderr,), daemon=True).start()
        # Ready when it says so: the log line comes after the socket is bound.
        while True:
            try:
                line = lines.get(timeout=15)
            except queue.Empty:
                raise AssertionError(f"roomcast did not start: {''.join(self.log)}") from None
            if line is None:
                raise AssertionError(f"roomcast exited: {''.join(self.log)}")
            if "listening on" in line:
                return

    def kill(self):
        """An abrupt end (SIGKILL): no close frames, the kernel closes the sockets."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def remove(self):
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def restart(self):
        self.kill()
        self.start()


@pytest.fixture
def server():
    started = []

    def make(*args, command="serve", port=None):
        s = Server(command, *args, port=port)
        started.append(s)
        return s

    yield make
    for s in started:
        s.remove()


@pytest.fixture(scope="session")
def playwright():
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright):
    b = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield b
    b.close()


@pytest.fixture
def new_page(browser):
    """Pages in contexts of their own (separate storage, separately offline); any
    uncaught script error on one fails the test."""
    contexts, errors = [], []

    def make(**context_options):
        ctx = browser.new_context(**context_options)
        contexts.append(ctx)
        page = ctx.new_page()
        page.on("pageerror", lambda e: errors.append(f"{page.url}: {e}"))
        return page

    yield make
    for ctx in contexts:
        ctx.close()
    assert errors == [], errors
