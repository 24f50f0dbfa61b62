"""roomcast.js on its own, imported from the server into Chromium: token auth against
the real binary, and its rejoin logic (since, epoch, recovery) against a scripted socket,
since no server sends an epoch yet."""

import base64
import hashlib
import hmac
import json
import time

SECRET = b"browser-tests-secret-of-at-least-32-bytes"


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(claims):
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(SECRET, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


TOKEN_SCRIPT = """async (token) => {
  const { RoomcastClient } = await import("/roomcast.js");
  const rc = new RoomcastClient({ token, backoffBase: 50, backoffMax: 100 });
  const welcome = new Promise((ok) => rc.on("welcome", ok));
  rc.connect();
  const { user } = await welcome;
  const joined = await rc.join("team:a");
  const message = new Promise((ok) => rc.on("message", ok));
  await rc.publish("team:a", { text: "with a token" });
  const got = await message;
  const refused = await rc.join("elsewhere").then(() => "joined", (e) => e.code);
  rc.close();
  return { user, users: joined.users, got, refused, state: rc.state, url: rc.url };
}"""


def test_token_auth_from_the_browser(server, new_page, tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    srv = server("--jwt-secret-file", str(secret))
    page = new_page()
    page.goto(srv.url + "/")
    token = hs256({"sub": "tokenuser", "exp": int(time.time()) + 600, "rooms": ["team:*"]})
    result = page.evaluate(TOKEN_SCRIPT, token)
    assert result["user"] == "tokenuser"
    assert result["users"] == ["tokenuser"]
    assert result["got"]["content"] == {"text": "with a token"} and result["got"]["user"] == "tokenuser"
    assert result["refused"] == "not_authorized"
    assert result["state"] == "closed"
    assert "token=" in result["url"] and "username=" not in result["url"]


# A WebSocket stand-in that plays a server: `script[n]` answers the n-th connection's join.
REJOIN_SCRIPT = """async () => {
  const { RoomcastClient } = await import("/roomcast.js");
  const sockets = [];
  // Event-driven waits: every change re-checks the waiters; each has a deadline.
  const waiters = new Set();
  const changed = () => waiters.forEach((w) => w.pred() && (waiters.delete(w), clearTimeout(w.timer), w.ok()));
  const until = (pred, what) => new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`timed out waiting for ${what}`)), 10000);
    waiters.add({ pred, ok, timer });
    changed();
  });
  const answers = [
    // 1st connection: a server with epochs. 2nd: same epoch, 2 missed messages
    // (and a replay of one already seen). 3rd: a new epoch, numbers restarted.
    // 4th: a server without epochs (as today), after a restart.
    (j) => [{ type: "joined", id: j.id, room: j.room, users: ["alice"], seq: 5, epoch: "e1" },
            { type: "message", room: "lobby", user: "bob", content: "six", seq: 6, ts: 1 }],
    (j) => [{ type: "joined", id: j.id, room: j.room, users: ["alice"], seq: 8, epoch: "e1", recovered: true },
            { type: "message", room: "lobby", user: "bob", content: "six again", seq: 6, ts: 1 },
            { type: "message", room: "lobby", user: "bob", content: "seven", seq: 7, ts: 1 },
            { type: "message", room: "lobby", user: "bob", content: "eight", seq: 8, ts: 1 }],
    (j) => [{ type: "joined", id: j.id, room: j.room, users: ["alice"], seq: 3, epoch: "e2", recovered: true },
            { type: "message", room: "lobby", user: "bob", content: "new four", seq: 4, ts: 1 }],
    (j) => [{ type: "joined", id: j.id, room: j.room, users: ["alice"], seq: 0, recovered: true },
            { type: "message", room: "lobby", user: "bob", content: "one", seq: 1, ts: 1 }],
    () => [],
  ];
  class FakeSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.extensions = "";
      this.joins = [];
      this.answer = answers[sockets.length];
      sockets.push(this);
      setTimeout(() => {
        this.readyState = 1;
        this.push({ type: "welcome", conn: sockets.length, user: "alice" });
      });
    }
    push(ev) { this.onmessage?.({ data: JSON.stringify(ev) }); }
    send(text) {
      const cmd = JSON.parse(text);
      if (cmd.type !== "join") return;
      this.joins.push(cmd);
      changed();
      setTimeout(() => this.answer(cmd).forEach((ev) => this.push(ev)));
    }
    close() { this.readyState = 3; }
    drop() { this.readyState = 3; this.onclose?.({ code: 1006, reason: "", wasClean: false }); }
  }
  const rc = new RoomcastClient({ username: "alice", WebSocket: FakeSocket, backoffBase: 10, backoffMax: 20,
                                  heartbeatInterval: 0 });
  const seen = [], recoveries = [];
  rc.on("message", (m) => { seen.push(m.content); changed(); });
  rc.on("recovery", (r) => { recoveries.push(r); changed(); });
  rc.connect();
  await rc.join("lobby");
  await until(() => seen.length === 1, "the first message");
  const positions = [rc.position("lobby")];
  for (let n = 1; n < 4; n++) {
    sockets[n - 1].drop();
    const last = ["eight", "new four", "one"][n - 1];
    await until(() => recoveries.length === n && seen.includes(last), `reconnect ${n}`);
    positions.push(rc.position("lobby"));
  }
  sockets[3].drop();
  await until(() => sockets.length === 5 && sockets[4].joins.length === 1, "the fifth join");
  rc.close();
  return { joins: sockets.map((s) => s.joins.map(({ id, ...j }) => j)), seen, recoveries, positions };
}"""


def test_rejoin_sends_since_and_epoch_and_judges_the_reply(server, new_page):
    srv = server()
    page = new_page()
    page.goto(srv.url + "/")
    r = page.evaluate(REJOIN_SCRIPT)
    assert r["joins"] == [
        [{"type": "join", "room": "lobby"}],
        [{"type": "join", "room": "lobby", "since": 6, "epoch": "e1"}],
        [{"type": "join", "room": "lobby", "since": 8, "epoch": "e1"}],
        [{"type": "join", "room": "lobby", "since": 4, "epoch": "e2"}],
        # The server stopped sending an epoch: none is sent back.
        [{"type": "join", "room": "lobby", "since": 1}],
    ]
    # The replay of 6 is not shown twice; after an epoch change, new numbers are new messages.
    assert r["seen"] == ["six", "seven", "eight", "new four", "one"]
    assert [(x["recovered"], x.get("missed"), x["reason"]) for x in r["recoveries"]] == [
        (True, 2, None),
        (False, None, "epoch changed"),
        (False, None, "server history reset"),
    ]
    assert r["positions"] == [
        {"seq": 6, "epoch": "e1"},
        {"seq": 8, "epoch": "e1"},
        {"seq": 4, "epoch": "e2"},
        {"seq": 1, "epoch": None},
    ]


BACKOFF_SCRIPT = """async () => {
  const { backoffDelay, recoveryFailure } = await import("/roomcast.js");
  const at = (random) => [0, 1, 2, 3, 10, 100].map((n) => backoffDelay(n, 500, 30000, () => random));
  return {
    low: at(0),
    high: at(0.999999),
    gap: recoveryFailure(3, null, { seq: 9, recovered: false }),
    fine: recoveryFailure(3, "e", { seq: 9, epoch: "e", recovered: true }),
  };
}"""


def test_backoff_grows_to_its_cap_with_equal_jitter(server, new_page):
    srv = server()
    page = new_page()
    page.goto(srv.url + "/")
    r = page.evaluate(BACKOFF_SCRIPT)
    # Ceilings 500, 1000, 2000, 4000, then the 30 s cap; the lower half is fixed.
    assert r["low"] == [250, 500, 1000, 2000, 15000, 15000]
    assert [round(x) for x in r["high"]] == [500, 1000, 2000, 4000, 30000, 30000]
    assert r["gap"] == "history gap"
    assert r["fine"] is None
