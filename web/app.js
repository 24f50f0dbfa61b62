// The chat page at `/`, built on roomcast.js: rooms with history, direct
// messages, who is online, typing, and the connection's state.
//
// Query parameters tune the client (milliseconds), for tests and for trying
// out bad networks: ?heartbeat=&heartbeatTimeout=&backoff=&backoffMax=

import { RoomcastClient, State } from "/roomcast.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const number = (name) => (params.has(name) ? Number(params.get(name)) : undefined);

/** How long a `typing: true` is believed without being repeated. */
const TYPING_SHOWN_MS = 6000;
/** Idle time after which we say we stopped typing. */
const TYPING_IDLE_MS = 3000;
const HISTORY_ON_JOIN = 50;

let client = null;
/** key ("room:NAME" or "dm:USER") → conversation. */
const conversations = new Map();
let active = null;

class Conversation {
  constructor(key) {
    this.key = key;
    [this.kind, this.name] = [key.slice(0, key.indexOf(":")), key.slice(key.indexOf(":") + 1)];
    this.unread = 0;
    /** seq → element, so replays and reloaded history are never shown twice. */
    this.bySeq = new Map();
    /** user → timer of their typing indicator. */
    this.typing = new Map();
    this.list = document.createElement("ol");
    this.list.className = "message-list";
    this.list.dataset.testid = "messages";
    this.list.dataset.conv = key;
    this.list.hidden = true;
    $("messages").append(this.list);
    this.item = document.createElement("li");
    this.item.dataset.conv = key;
    this.item.dataset.testid = `conv-${this.kind}-${this.name}`;
    const open = document.createElement("button");
    open.type = "button";
    open.className = "conv-open";
    open.textContent = this.title();
    this.badge = document.createElement("span");
    this.badge.className = "badge";
    this.badge.dataset.testid = "unread";
    open.append(this.badge);
    open.addEventListener("click", () => select(key));
    this.item.append(open);
    $("conversations").append(this.item);
  }

  title() {
    return this.kind === "room" ? `#${this.name}` : `@${this.name}`;
  }

  remove() {
    this.list.remove();
    this.item.remove();
    for (const t of this.typing.values()) clearTimeout(t);
  }

  /** Appends a chat line; with `seq`, in seq order and at most once. */
  add({ user, content, ts, seq, mine = false }) {
    if (seq != null && this.bySeq.has(seq)) return;
    const li = document.createElement("li");
    li.className = mine ? "msg mine" : "msg";
    li.dataset.testid = "message";
    if (seq != null) li.dataset.seq = seq;
    const who = document.createElement("span");
    who.className = "user";
    who.textContent = user;
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = typeof content === "string" ? content : JSON.stringify(content);
    const time = document.createElement("time");
    const date = new Date(ts ?? Date.now());
    time.dateTime = date.toISOString();
    time.textContent = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    li.append(who, text, time);
    let before = null;
    if (seq != null) {
      this.bySeq.set(seq, li);
      // Usually the last; history loaded late goes above what is there.
      before = [...this.list.children].find((el) => el.dataset.seq != null && Number(el.dataset.seq) > seq) ?? null;
    }
    this.list.insertBefore(li, before);
    this.seen(li);
  }

  /** A line from the page itself (joins, reconnects, errors). */
  notice(text, kind = "info") {
    const li = document.createElement("li");
    li.className = `notice ${kind}`;
    li.dataset.testid = "notice";
    li.textContent = text;
    this.list.append(li);
    this.seen(li);
  }

  clear() {
    this.list.replaceChildren();
    this.bySeq.clear();
  }

  seen(li) {
    if (this === active) li.scrollIntoView({ block: "end" });
    else if (!li.classList.contains("notice")) {
      this.unread += 1;
      this.badge.textContent = String(this.unread);
    }
  }
}

function conversation(key) {
  let c = conversations.get(key);
  if (!c) {
    c = new Conversation(key);
    conversations.set(key, c);
  }
  return c;
}

function select(key) {
  active = conversation(key);
  for (const c of conversations.values()) {
    c.list.hidden = c !== active;
    c.item.classList.toggle("active", c === active);
  }
  active.unread = 0;
  active.badge.textContent = "";
  $("conv-title").textContent = active.title();
  $("leave-button").hidden = active.kind !== "room";
  $("message-input").placeholder = active.kind === "room" ? `Message #${active.name}` : `Direct message to ${active.name}`;
  active.list.lastElementChild?.scrollIntoView({ block: "end" });
  renderUsers();
  renderTyping();
}

function renderUsers() {
  const list = $("users");
  list.replaceChildren();
  const users = active?.kind === "room" ? client.users(active.name) : [];
  $("user-count").textContent = active?.kind === "room" ? `(${users.length})` : "";
  for (const user of users) {
    const li = document.createElement("li");
    li.dataset.user = user;
    li.dataset.testid = "user";
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = user === client.user ? `${user} (you)` : user;
    b.disabled = user === client.user;
    b.title = `Direct message to ${user}`;
    b.addEventListener("click", () => select(`dm:${user}`));
    li.append(b);
    list.append(li);
  }
}

function renderTyping() {
  const who = active?.kind === "room" ? [...active.typing.keys()].sort() : [];
  $("typing").textContent =
    who.length === 0 ? "" : `${who.join(", ")} ${who.length === 1 ? "is" : "are"} typing…`;
}

const STATE_TEXT = {
  [State.CONNECTING]: "connecting…",
  [State.LIVE]: "live",
  [State.RECONNECTING]: "reconnecting…",
  [State.OFFLINE]: "offline",
  [State.CLOSED]: "not connected",
};

function showState(state) {
  const el = $("conn-state");
  el.dataset.state = state;
  el.textContent = STATE_TEXT[state] ?? state;
  document.body.dataset.connection = state;
}

function detail(text) {
  $("conn-detail").textContent = text;
}

/** Recovery results of the latest reconnect, one per room. */
let recoveryLines = new Map();

function showRecovery(r) {
  const room = conversation(`room:${r.room}`);
  let line;
  if (r.recovered) {
    line = `#${r.room}: recovered ${r.missed} missed message${r.missed === 1 ? "" : "s"}`;
    room.notice(`Reconnected: ${r.missed} missed message${r.missed === 1 ? "" : "s"} recovered.`);
  } else {
    line = `#${r.room}: not recovered (${r.reason}), history reloaded`;
    room.clear();
    room.notice(`Reconnected, but messages may be missing (${r.reason}): history reloaded.`, "warn");
    loadHistory(r.room);
  }
  recoveryLines.set(r.room, line);
  const el = $("recovery");
  el.hidden = false;
  el.textContent = `Reconnect: ${[...recoveryLines.values()].join("; ")}`;
  el.dataset.recovered = String([...recoveryLines.values()].every((l) => !l.includes("not recovered")));
}

async function loadHistory(room) {
  try {
    const messages = await client.history(room, { limit: HISTORY_ON_JOIN });
    const c = conversation(`room:${room}`);
    for (const m of messages) c.add({ ...m, mine: m.user === client.user });
  } catch (err) {
    conversation(`room:${room}`).notice(`Could not load history: ${err.message}`, "warn");
  }
}

async function joinRoom(room) {
  const c = conversation(`room:${room}`);
  select(c.key);
  try {
    await client.join(room);
    await loadHistory(room);
  } catch (err) {
    c.notice(`Could not join: ${err.message}`, "warn");
  }
}

let typingRoom = null;
let typingTimer = null;

function stopTyping() {
  clearTimeout(typingTimer);
  if (typingRoom) client.typing(typingRoom, false).catch(() => {});
  typingRoom = null;
}

function onInput() {
  if (active?.kind !== "room" || $("message-input").value === "") return stopTyping();
  if (typingRoom !== active.name) {
    stopTyping();
    typingRoom = active.name;
    client.typing(typingRoom, true).catch(() => {});
  }
  clearTimeout(typingTimer);
  typingTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
}

async function send(event) {
  event.preventDefault();
  const input = $("message-input");
  const text = input.value;
  if (!text.trim() || !active) return;
  stopTyping();
  const target = active;
  try {
    if (target.kind === "room") {
      await client.publish(target.name, text);
    } else {
      await client.direct(target.name, text);
      target.add({ user: client.user, content: text, mine: true });
    }
    if (input.value === text) input.value = "";
  } catch (err) {
    const why = err.code === "user_offline" ? `${target.name} is offline` : err.message;
    target.notice(`Not sent: ${why}`, "warn");
  }
}

function start(name) {
  client = new RoomcastClient({
    username: name,
    heartbeatInterval: number("heartbeat"),
    heartbeatTimeout: number("heartbeatTimeout"),
    backoffBase: number("backoff"),
    backoffMax: number("backoffMax"),
  });
  window.roomcast = client;
  client.on("state", ({ state }) => {
    showState(state);
    if (state === State.LIVE) detail(`connected as ${client.user}`);
  });
  client.on("welcome", ({ user }) => {
    $("me").textContent = user;
    recoveryLines = new Map();
  });
  let lost = "";
  client.on("disconnect", ({ code, reason, wasLive }) => {
    // What ended the live connection stays shown; failed retries only count.
    if (wasLive) lost = `connection lost: ${reason} (${code})`;
    detail(lost);
  });
  client.on("reconnecting", ({ attempt, delay }) =>
    detail(`${lost} · retry ${attempt} in ${(delay / 1000).toFixed(1)} s`),
  );
  client.on("message", (m) => conversation(`room:${m.room}`).add({ ...m, mine: m.user === client.user }));
  client.on("direct", (d) => conversation(`dm:${d.from}`).add({ user: d.from, content: d.content, ts: d.ts }));
  client.on("users", ({ room }) => {
    if (active?.kind === "room" && active.name === room) renderUsers();
  });
  client.on("user_joined", ({ room, user }) => conversation(`room:${room}`).notice(`${user} joined`));
  client.on("user_left", ({ room, user }) => {
    const c = conversation(`room:${room}`);
    c.notice(`${user} left`);
    clearTimeout(c.typing.get(user));
    c.typing.delete(user);
    if (c === active) renderTyping();
  });
  client.on("typing", ({ room, user, typing }) => {
    const c = conversation(`room:${room}`);
    clearTimeout(c.typing.get(user));
    if (typing) {
      c.typing.set(
        user,
        setTimeout(() => {
          c.typing.delete(user);
          if (c === active) renderTyping();
        }, TYPING_SHOWN_MS),
      );
    } else {
      c.typing.delete(user);
    }
    if (c === active) renderTyping();
  });
  client.on("recovery", showRecovery);
  client.on("dropped", ({ count }) => active?.notice(`${count} messages were dropped (slow connection)`, "warn"));
  client.on("error", ({ code, message }) => active?.notice(`Server: ${code}: ${message}`, "warn"));
  client.on("join_failed", ({ room, error }) =>
    conversation(`room:${room}`).notice(`Could not rejoin: ${error.message}`, "warn"),
  );
  $("login").hidden = true;
  $("chat").hidden = false;
  client.connect();
  joinRoom("lobby");
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const name = $("name-input").value.trim();
  localStorage.setItem("roomcast.name", name);
  start(name);
});
$("join-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const room = $("room-input").value.trim();
  $("room-input").value = "";
  joinRoom(room);
});
$("leave-button").addEventListener("click", async () => {
  if (active?.kind !== "room") return;
  const c = active;
  await client.leave(c.name).catch(() => {});
  c.remove();
  conversations.delete(c.key);
  const next = conversations.keys().next();
  if (next.done) active = null;
  else select(next.value);
});
$("composer").addEventListener("submit", send);
$("message-input").addEventListener("input", onInput);
$("name-input").value = params.get("name") ?? localStorage.getItem("roomcast.name") ?? "";
showState(State.CLOSED);
