"""The chat page at `/` and roomcast.js in real Chromium against the real binary."""

import json
import re
import shutil
import subprocess
import urllib.request

from conftest import SCREENSHOTS, free_port
from playwright.sync_api import expect

# Short client timings so that a dead socket is noticed in about a second.
FAST = "?heartbeat=500&heartbeatTimeout=1000&backoff=100&backoffMax=500"


def state(page):
    return page.get_by_test_id("conn-state")


def messages(page, conv="room:lobby"):
    return page.locator(f'[data-testid=messages][data-conv="{conv}"] [data-testid=message]')


def message(page, text, conv="room:lobby"):
    return messages(page, conv).filter(has_text=text)


def user(page, name):
    return page.locator(f"[data-testid=users] [data-user={name}]")


def enter(page, server, name, query=FAST):
    """Opens the page from the server's own origin and enters the chat as `name`."""
    page.goto(server.url + "/" + query)
    page.get_by_test_id("name-input").fill(name)
    page.get_by_test_id("connect-button").click()
    expect(state(page)).to_have_attribute("data-state", "live")
    expect(user(page, name)).to_be_visible()


def say(page, text):
    page.get_by_test_id("message-input").fill(text)
    page.get_by_test_id("message-input").press("Enter")


HISTORY_SCRIPT = """async (room) => {
  const { RoomcastClient } = await import("/roomcast.js");
  const rc = new RoomcastClient({ username: "probe" });
  rc.connect();
  await rc.join(room);
  const messages = await rc.history(room);
  rc.close();
  return messages;
}"""


def stored_messages(page, server, room):
    """What the server has in `room`'s history, asked by roomcast.js in another page."""
    page.goto(server.url + "/")
    return page.evaluate(HISTORY_SCRIPT, room)


def stats(server):
    with urllib.request.urlopen(server.url + "/stats") as r:
        return json.load(r)


def test_two_people_chat_with_presence_typing_history_and_direct(server, new_page):
    srv = server()
    alice, bob = new_page(), new_page()
    enter(alice, srv, "alice")
    say(alice, "before bob came")
    expect(message(alice, "before bob came")).to_have_count(1)

    enter(bob, srv, "bob")
    # History on join, and presence both ways.
    expect(message(bob, "before bob came")).to_have_count(1)
    expect(user(alice, "bob")).to_be_visible()
    expect(user(bob, "alice")).to_be_visible()
    expect(alice.get_by_test_id("user-count")).to_have_text("(2)")

    # Typing shows while alice types and goes when she sends.
    alice.get_by_test_id("message-input").press_sequentially("hello b")
    expect(bob.get_by_test_id("typing")).to_have_text("alice is typing…")
    alice.get_by_test_id("message-input").press_sequentially("ob")
    alice.get_by_test_id("message-input").press("Enter")
    expect(message(bob, "hello bob")).to_have_count(1)
    expect(message(alice, "hello bob")).to_have_count(1)
    expect(bob.get_by_test_id("typing")).to_have_text("")

    # A direct message: bob picks alice in the list of who is online.
    user(bob, "alice").get_by_role("button").click()
    expect(bob.get_by_test_id("conv-title")).to_have_text("@alice")
    say(bob, "psst, alice")
    expect(message(bob, "psst, alice", "dm:alice")).to_have_count(1)
    dm = alice.get_by_test_id("conv-dm-bob")
    expect(dm.get_by_test_id("unread")).to_have_text("1")
    dm.get_by_role("button").click()
    expect(message(alice, "psst, alice", "dm:bob")).to_have_count(1)
    expect(dm.get_by_test_id("unread")).to_have_text("")

    # Presence is per room.
    bob.get_by_test_id("room-input").fill("side")
    bob.get_by_test_id("join-button").click()
    expect(bob.get_by_test_id("conv-title")).to_have_text("#side")
    expect(user(bob, "bob")).to_be_visible()
    expect(user(bob, "alice")).to_have_count(0)

    # Screenshots of a chat in progress, desktop and phone width.
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    alice.get_by_test_id("conv-room-lobby").get_by_role("button").click()
    bob.get_by_test_id("conv-room-lobby").get_by_role("button").click()
    say(bob, "the page reconnects by itself if the network drops")
    say(alice, "and recovers what it missed")
    expect(message(bob, "and recovers what it missed")).to_have_count(1)
    phone = new_page(viewport={"width": 390, "height": 780}, device_scale_factor=2, is_mobile=True, has_touch=True)
    enter(phone, srv, "carol")
    expect(message(phone, "hello bob")).to_have_count(1)
    phone.get_by_test_id("message-input").press_sequentially("hi all")
    expect(alice.get_by_test_id("typing")).to_have_text("carol is typing…")
    alice.set_viewport_size({"width": 1200, "height": 720})
    alice.screenshot(path=SCREENSHOTS / "desktop.png")
    bob.get_by_test_id("message-input").press_sequentially("typing")
    expect(phone.get_by_test_id("typing")).to_have_text("bob is typing…")
    # Nothing sticks out sideways at phone width.
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    phone.screenshot(path=SCREENSHOTS / "phone.png")

    # Chromium compresses what it sends (permessage-deflate as it negotiates it):
    # a 27,000-character repetitive message costs the server far fewer bytes.
    assert "permessage-deflate" in bob.evaluate("window.roomcast.extensions")
    before = stats(srv)["bytes_in"]
    say(bob, "roomcast " * 3000 + "end")
    expect(message(alice, "roomcast roomcast")).to_have_count(1)
    received = stats(srv)["bytes_in"] - before
    assert received < 3000, f"{received} bytes on the wire for a 27 KB message"

    # Leaving: the others see it.
    bob.close()
    expect(user(alice, "bob")).to_have_count(0)
    expect(alice.get_by_test_id("user-count")).to_have_text("(2)")


def test_offline_period_recovers_missed_messages(server, new_page):
    srv = server()
    alice, bob = new_page(), new_page()
    enter(alice, srv, "alice")
    enter(bob, srv, "bob")
    say(alice, "while both online")
    expect(message(bob, "while both online")).to_have_count(1)

    bob.context.set_offline(True)
    expect(state(bob)).to_have_attribute("data-state", "offline")
    # The socket stays half-open in Chromium; only the client's heartbeat can tell.
    expect(bob.get_by_test_id("conn-detail")).to_contain_text("heartbeat timeout")
    say(alice, "missed one")
    say(alice, "missed two")
    expect(message(alice, "missed two")).to_have_count(1)
    expect(messages(bob)).to_have_count(1)

    bob.context.set_offline(False)
    expect(state(bob)).to_have_attribute("data-state", "live")
    expect(message(bob, "missed one")).to_have_count(1)
    expect(message(bob, "missed two")).to_have_count(1)
    recovery = bob.get_by_test_id("recovery")
    expect(recovery).to_have_text("Reconnect: #lobby: recovered 2 missed messages")
    expect(recovery).to_have_attribute("data-recovered", "true")
    assert bob.evaluate("window.roomcast.stats.heartbeatTimeouts") >= 1
    # Nothing twice, and the order is the room's.
    expect(messages(bob)).to_contain_text(["while both online", "missed one", "missed two"])
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    bob.screenshot(path=SCREENSHOTS / "recovered.png")

    say(bob, "back again")
    expect(message(alice, "back again")).to_have_count(1)


def test_server_restart_under_a_connected_page(server, new_page):
    srv = server()
    alice, bob = new_page(), new_page()
    enter(alice, srv, "alice")
    enter(bob, srv, "bob")
    say(alice, "before the restart")
    expect(message(bob, "before the restart")).to_have_count(1)

    srv.kill()
    expect(state(alice)).to_have_attribute("data-state", "reconnecting")
    expect(state(bob)).to_have_attribute("data-state", "reconnecting")
    srv.start()
    expect(state(alice)).to_have_attribute("data-state", "live")
    expect(state(bob)).to_have_attribute("data-state", "live")

    # Each page reports what the reconnect recovered, and every answer must be honest.
    # In-memory history is gone: the new epoch (or, without epochs, seq back at 0) says
    # so. The default SQLite store commits in batches, so SIGKILL may cut the batch not
    # yet committed (at most --store-flush-ms of it): the room's seq reservation is then
    # ahead of its last stored message and the server says recovered: false (a history
    # gap). Either way the page reloads the room; when the kill came after the commit,
    # nothing was missed.
    outcome = re.compile(
        r"^Reconnect: #lobby: (recovered 0 missed messages"
        r"|not recovered \((epoch changed|server history reset|history gap)\), history reloaded)$"
    )
    stored = stored_messages(new_page(), srv, "lobby")
    for page in (alice, bob):
        recovery = page.get_by_test_id("recovery")
        expect(recovery).to_have_text(outcome)
        if recovery.get_attribute("data-recovered") == "false":
            expect(messages(page)).to_have_count(len(stored))
        else:
            expect(message(page, "before the restart")).to_have_count(1)
    expect(user(alice, "bob")).to_be_visible()
    expect(user(bob, "alice")).to_be_visible()
    # Whatever the room's numbers are now, new messages must not be taken for old ones.
    say(alice, "after the restart")
    expect(message(bob, "after the restart")).to_have_count(1)
    expect(message(alice, "after the restart")).to_have_count(1)


def test_chat_over_wss_with_a_self_signed_certificate(server, new_page, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    openssl = shutil.which("openssl") or "/usr/bin/openssl"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    srv = server("--tls-cert", str(cert), "--tls-key", str(key))
    alice, bob = new_page(ignore_https_errors=True), new_page(ignore_https_errors=True)
    enter(alice, srv, "alice")
    enter(bob, srv, "bob")
    assert alice.evaluate("window.roomcast.url").startswith(f"wss://127.0.0.1:{srv.port}/ws?")
    say(bob, "over TLS")
    expect(message(alice, "over TLS")).to_have_count(1)
    expect(user(alice, "bob")).to_be_visible()


ECHO_SCRIPT = """async () => {
  const ws = new WebSocket(`ws://${location.host}/`);
  ws.binaryType = "arraybuffer";
  await new Promise((ok, fail) => { ws.onopen = ok; ws.onerror = () => fail(new Error("no connection")); });
  const replies = [];
  ws.onmessage = (e) => replies.shift()(e.data);
  const echo = (data) => new Promise((ok) => { replies.push(ok); ws.send(data); });
  const MiB = 1 << 20;
  // Incompressible text: random printable ASCII.
  const random = new Uint8Array(MiB);
  for (let i = 0; i < MiB; i += 65536) crypto.getRandomValues(random.subarray(i, i + 65536));
  const noise = Array.from(random, (b) => String.fromCharCode(33 + (b % 94))).join("");
  const repetitive = "roomcast compresses this. ".repeat(MiB / 26 + 1).slice(0, MiB);
  const binary = random.buffer.slice(0);
  const same = (a, b) => a.byteLength === b.byteLength && new Uint8Array(a).every((x, i) => x === new Uint8Array(b)[i]);
  const result = {
    extensions: ws.extensions,
    noise: (await echo(noise)) === noise,
    repetitive: (await echo(repetitive)) === repetitive,
    binary: same(await echo(binary), binary),
    sizes: [noise.length, repetitive.length, binary.byteLength],
  };
  ws.close(1000);
  return result;
}"""


def test_large_and_compressible_messages_through_chromium_against_echo(server, new_page):
    srv = server("--max-message-size", str(2 << 20), command="echo")
    page = new_page()
    # The page's origin is the echo server's own (it answers a plain GET with its counters).
    page.goto(srv.url + "/")
    result = page.evaluate(ECHO_SCRIPT)
    assert result["extensions"].startswith("permessage-deflate"), result
    assert result["sizes"] == [1 << 20] * 3
    assert result["noise"] and result["repetitive"] and result["binary"], result


def test_no_demo_turns_the_page_off(server, new_page):
    srv = server("--no-demo")
    page = new_page()
    assert page.goto(srv.url + "/").status == 404
    assert page.goto(srv.url + "/roomcast.js").status == 404
    assert page.goto(srv.url + "/health").status == 200


def test_allow_origin_must_list_the_pages_own_origin(server, new_page):
    port = free_port()
    srv = server("--allow-origin", f"http://127.0.0.1:{port}", port=port)
    enter(new_page(), srv, "alice")
    # The same page from another origin gets 403 at the upgrade.
    other = server("--allow-origin", "https://chat.example.com")
    page = new_page()
    page.goto(other.url + "/" + FAST)
    page.get_by_test_id("name-input").fill("bob")
    page.get_by_test_id("connect-button").click()
    page.wait_for_function("() => window.roomcast.stats.disconnects >= 2")
    expect(state(page)).to_have_attribute("data-state", "connecting")
    assert page.evaluate("window.roomcast.stats.connects") == 0
    assert stats(other)["handshake_failures"].get("origin not allowed", 0) >= 2
