// roomcast.js: a browser client for roomcast's `/ws` protocol (docs/protocol.md).
// A plain ES module with no dependencies; the guide is docs/client.md.
//
//   import { RoomcastClient } from "/roomcast.js";
//   const rc = new RoomcastClient({ username: "alice" });
//   rc.addEventListener("message", (e) => console.log(e.detail.user, e.detail.content));
//   rc.connect();
//   await rc.join("lobby");
//   await rc.publish("lobby", "hello");

/** Connection states, in the `state` event and `client.state`. */
export const State = Object.freeze({
  /** The first connection is being opened. */
  CONNECTING: "connecting",
  /** Open, and the server has greeted us (`welcome`). */
  LIVE: "live",
  /** The connection was lost; waiting for the next attempt, or making it. */
  RECONNECTING: "reconnecting",
  /** The browser reports no network, or the reconnect attempts ran out. */
  OFFLINE: "offline",
  /** Before `connect()`, and after `close()`. */
  CLOSED: "closed",
});

const DEFAULTS = {
  /** Milliseconds without any message from the server before a heartbeat is sent. */
  heartbeatInterval: 20000,
  /** Milliseconds to wait for the heartbeat's reply (or anything else) before giving the socket up. */
  heartbeatTimeout: 10000,
  /** Milliseconds for the WebSocket handshake before the attempt is given up. */
  connectTimeout: 10000,
  /** First reconnect delay in milliseconds; doubles with each failed attempt. */
  backoffBase: 500,
  /** Longest reconnect delay in milliseconds. */
  backoffMax: 30000,
  /** Failed attempts in a row before the client stops trying (state `offline`). */
  maxAttempts: Infinity,
};

/** Close code the client uses when it gives a socket up itself (heartbeat or connect timeout). */
export const CLOSE_TIMEOUT = 4000;

/** An error reply from the server (`code` as in docs/protocol.md), or a local failure
 * (`not_connected`, `disconnected`, `closed`). */
export class RoomcastError extends Error {
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.name = "RoomcastError";
    this.code = code;
  }
}

/**
 * The delay before reconnect attempt `attempt` (0-based): the ceiling
 * `min(max, base * 2^attempt)`, of which the upper half is random ("equal jitter"),
 * so that clients dropped together do not come back together.
 */
export function backoffDelay(attempt, base, max, random = Math.random) {
  const ceiling = Math.min(max, base * 2 ** Math.min(attempt, 30));
  return ceiling / 2 + (random() * ceiling) / 2;
}

/** `ws://` or `wss://` to `/ws` on the page's own origin. */
export function defaultUrl(location = globalThis.location) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}

/**
 * Why a rejoin did not recover a room, or `null` when it did.
 * `since`/`epoch` are what the join sent, `reply` is the server's `joined`.
 */
export function recoveryFailure(since, epoch, reply) {
  if (epoch != null && reply.epoch != null && reply.epoch !== epoch) return "epoch changed";
  // Without epochs a restarted server starts its counters at 0 again: a
  // `seq` below ours means it lost the history we had seen.
  if (reply.seq < since) return "server history reset";
  if (reply.recovered !== true) return "history gap";
  return null;
}

/** Per-room state: what a rejoin needs (`seq`, `epoch`) and who is there. */
class RoomState {
  constructor() {
    /** The last `seq` seen in this room; `null` before the first `joined`. */
    this.seq = null;
    /** The server's history epoch from the last `joined`, if it sends one. */
    this.epoch = null;
    this.users = new Set();
    this.joined = false;
    /** What the join in flight sent: `{since, epoch}`. */
    this.sent = null;
  }
}

/**
 * A connection to roomcast's `/ws` that survives network trouble: it reconnects with
 * backoff, rejoins its rooms with `since` (and `epoch`), and notices a dead network
 * by its own heartbeat. Events are `CustomEvent`s whose `detail` is the server's
 * event object (docs/client.md lists them); `on(type, fn)` is a shorthand.
 */
export class RoomcastClient extends EventTarget {
  #url;
  #options;
  #ws = null;
  /** Whether the current socket got its `welcome` (commands may be sent). */
  #welcomed = false;
  #state = State.CLOSED;
  #everLive = false;
  #attempt = 0;
  #nextId = 0;
  #pending = new Map();
  #rooms = new Map();
  #timers = { connect: null, reconnect: null, heartbeat: null, deadline: null };
  #lastReceived = 0;
  #user = null;
  #onOnline = () => this.#browserOnline();
  #onOffline = () => this.#browserOffline();

  /**
   * @param {object} options `username` or `token` (sent as `?token=`, for servers with auth
   *   on), `url` (default: `/ws` on the page's origin), and the timings in DEFAULTS.
   */
  constructor(options = {}) {
    super();
    // An option given as `undefined` keeps its default.
    const given = Object.entries(options).filter(([, v]) => v !== undefined);
    this.#options = { ...DEFAULTS, ...Object.fromEntries(given) };
    const url = new URL(options.url ?? defaultUrl(), globalThis.location?.href);
    if (options.token != null) url.searchParams.set("token", options.token);
    else if (options.username != null) url.searchParams.set("username", options.username);
    this.#url = url.toString();
    /** Counters, for a status line and for tests. */
    this.stats = { connects: 0, disconnects: 0, heartbeats: 0, heartbeatTimeouts: 0 };
  }

  /** One of `State`. */
  get state() {
    return this.#state;
  }

  /** The URL connected to (with `?username=` or `?token=`). */
  get url() {
    return this.#url;
  }

  /** The extensions the server accepted on the current socket, e.g. `permessage-deflate; ...`. */
  get extensions() {
    return this.#ws?.extensions ?? "";
  }

  /** The username the server gave this connection (`welcome`), or `null` before. */
  get user() {
    return this.#user;
  }

  /** The rooms this client is in (or will rejoin). */
  get rooms() {
    return [...this.#rooms.keys()];
  }

  /** Who is in `room`, sorted, as far as this client knows. */
  users(room) {
    return [...(this.#rooms.get(room)?.users ?? [])].sort();
  }

  /** `{seq, epoch}` a rejoin of `room` would send. */
  position(room) {
    const r = this.#rooms.get(room);
    return r ? { seq: r.seq, epoch: r.epoch } : null;
  }

  /** Calls `fn(detail)` for every `type` event; returns a function that stops it. */
  on(type, fn) {
    const listener = (e) => fn(e.detail);
    this.addEventListener(type, listener);
    return () => this.removeEventListener(type, listener);
  }

  /** Opens the connection (again, after `close()` or when the attempts ran out). */
  connect() {
    if (this.#ws) return;
    globalThis.addEventListener?.("online", this.#onOnline);
    globalThis.addEventListener?.("offline", this.#onOffline);
    this.#clearTimer("reconnect");
    this.#attempt = 0;
    this.#open();
  }

  /** Closes for good (code 1000); `connect()` starts again. Rooms are kept for it. */
  close() {
    globalThis.removeEventListener?.("online", this.#onOnline);
    globalThis.removeEventListener?.("offline", this.#onOffline);
    this.#clearTimer("reconnect");
    this.#teardown(1000, "client closed");
    this.#setState(State.CLOSED);
  }

  /**
   * Joins `room` (or just records it while disconnected: it is joined on the next
   * connection). Resolves with the `joined` event.
   */
  join(room) {
    let r = this.#rooms.get(room);
    if (!r) {
      r = new RoomState();
      this.#rooms.set(room, r);
    }
    if (!this.#welcomed) {
      return new Promise((resolve, reject) => {
        const done = this.on("joined", (ev) => {
          if (ev.room === room) finish(resolve, ev);
        });
        const failed = this.on("join_failed", (ev) => {
          if (ev.room === room) finish(reject, ev.error);
        });
        const finish = (fn, value) => {
          done();
          failed();
          fn(value);
        };
      });
    }
    return this.#sendJoin(room, r);
  }

  /** Leaves `room`; it is no longer rejoined. Resolves with the `left` event. */
  leave(room) {
    this.#rooms.delete(room);
    if (!this.#welcomed) return Promise.resolve({ type: "left", room });
    return this.#request({ type: "leave", room });
  }

  /** Sends `content` (any JSON value) to everyone in `room`, this client included. Resolves on `ack`. */
  publish(room, content) {
    return this.#request({ type: "broadcast", room, content });
  }

  /** The protocol's name for `publish`. */
  broadcast(room, content) {
    return this.publish(room, content);
  }

  /** Sends `content` to every connection of user `to`. Rejects with `user_offline` if there is none. */
  direct(to, content) {
    return this.#request({ type: "direct", to, content });
  }

  /** Tells the others in `room` whether this user is typing (no reply is asked for). */
  typing(room, typing) {
    return this.#request({ type: "typing", room, typing: !!typing }, false);
  }

  /** Resolves with the users in `room`. */
  async presence(room) {
    const ev = await this.#request({ type: "presence", room });
    return ev.users;
  }

  /** Resolves with stored messages of `room`: `{since, limit}` as in docs/protocol.md. */
  async history(room, { since, limit } = {}) {
    const command = { type: "history", room };
    if (since != null) command.since = since;
    if (limit != null) command.limit = limit;
    const ev = await this.#request(command);
    return ev.messages;
  }

  /** Replaces the connection's token (auth on, JWT sessions); later reconnects use it too. */
  async refresh(token) {
    const url = new URL(this.#url);
    url.searchParams.set("token", token);
    this.#url = url.toString();
    if (!this.#welcomed) return null;
    return this.#request({ type: "refresh", token });
  }

  // ------------------------------------------------------------ internals

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  #setState(state) {
    if (state === this.#state) return;
    const previous = this.#state;
    this.#state = state;
    this.#emit("state", { state, previous });
  }

  /** The state to show while not live. */
  #waitingState() {
    if (globalThis.navigator?.onLine === false) return State.OFFLINE;
    return this.#everLive ? State.RECONNECTING : State.CONNECTING;
  }

  #clearTimer(name) {
    clearTimeout(this.#timers[name]);
    this.#timers[name] = null;
  }

  #open() {
    this.#setState(this.#waitingState());
    const Impl = this.#options.WebSocket ?? globalThis.WebSocket;
    let ws;
    try {
      ws = new Impl(this.#url);
    } catch (err) {
      // A malformed URL will not get better by retrying.
      this.#setState(State.OFFLINE);
      this.#emit("disconnect", { code: 0, reason: String(err), wasClean: false });
      return;
    }
    this.#ws = ws;
    ws.onmessage = (e) => this.#receive(ws, e.data);
    ws.onclose = (e) => {
      if (ws === this.#ws) this.#lost(e.code, e.reason || "connection closed", e.wasClean);
    };
    // `error` is always followed by `close`, which does the work.
    ws.onerror = null;
    this.#timers.connect = setTimeout(() => {
      if (ws === this.#ws && this.#state !== State.LIVE) this.#lost(CLOSE_TIMEOUT, "connect timeout", false);
    }, this.#options.connectTimeout);
  }

  /** Detaches the current socket (its late events are ignored) and closes it. */
  #teardown(code, reason) {
    for (const name of ["connect", "heartbeat", "deadline"]) this.#clearTimer(name);
    const ws = this.#ws;
    this.#ws = null;
    this.#welcomed = false;
    if (ws) {
      ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close(code, reason);
      } catch {
        // Already closing.
      }
    }
    for (const { reject } of this.#pending.values()) reject(new RoomcastError("disconnected", reason));
    this.#pending.clear();
    for (const r of this.#rooms.values()) r.joined = false;
  }

  /** The connection is gone: tell the app and plan the next attempt. */
  #lost(code, reason, wasClean) {
    const wasLive = this.#welcomed;
    this.#teardown(CLOSE_TIMEOUT, reason);
    this.stats.disconnects += 1;
    this.#emit("disconnect", { code, reason, wasClean, wasLive });
    this.#scheduleReconnect();
  }

  #scheduleReconnect() {
    if (this.#attempt >= this.#options.maxAttempts) {
      this.#setState(State.OFFLINE);
      return;
    }
    const { backoffBase, backoffMax } = this.#options;
    const delay = backoffDelay(this.#attempt, backoffBase, backoffMax);
    this.#attempt += 1;
    this.#setState(this.#waitingState());
    this.#emit("reconnecting", { attempt: this.#attempt, delay });
    this.#timers.reconnect = setTimeout(() => {
      this.#timers.reconnect = null;
      this.#open();
    }, delay);
  }

  #browserOnline() {
    if (this.#state === State.CLOSED) return;
    if (this.#ws) {
      // A socket that survived is probed: its heartbeat's reply (or timeout) will tell.
      // One still connecting gets its own connect timeout.
      if (this.#welcomed) this.#probe();
      return;
    }
    // Skip the rest of the backoff: the network is back now.
    this.#clearTimer("reconnect");
    this.#attempt = 0;
    this.#open();
  }

  #browserOffline() {
    if (this.#state === State.CLOSED) return;
    this.#setState(State.OFFLINE);
    // The socket will not report its own death (no FIN gets through): ask now.
    if (this.#ws) this.#probe();
  }

  #receive(ws, data) {
    if (ws !== this.#ws) return;
    this.#lastReceived = Date.now();
    // Whatever the browser says, a message that arrives proves the socket works.
    if (this.#welcomed && this.#state === State.OFFLINE) this.#setState(State.LIVE);
    this.#clearTimer("deadline");
    this.#armHeartbeat();
    let ev;
    try {
      ev = JSON.parse(data);
    } catch {
      return;
    }
    this.#emit("event", ev);
    if (ev.id != null && this.#pending.has(String(ev.id))) {
      const { resolve, reject, heartbeat } = this.#pending.get(String(ev.id));
      this.#pending.delete(String(ev.id));
      if (ev.type === "error") reject(new RoomcastError(ev.code, ev.message));
      else resolve(ev);
      if (heartbeat) {
        if (ev.type === "presence") this.#setUsers(ev.room, ev.users);
        return;
      }
    }
    switch (ev.type) {
      case "welcome":
        return this.#welcome(ev);
      case "joined":
        return this.#joined(ev);
      case "left":
        this.#rooms.delete(ev.room);
        break;
      case "message": {
        const r = this.#rooms.get(ev.room);
        // Left rooms, and replays of what was already seen, are not shown twice.
        if (!r || (r.seq != null && ev.seq <= r.seq)) return;
        r.seq = ev.seq;
        break;
      }
      case "user_joined":
        this.#rooms.get(ev.room)?.users.add(ev.user);
        this.#emitUsers(ev.room);
        break;
      case "user_left":
        this.#rooms.get(ev.room)?.users.delete(ev.user);
        this.#emitUsers(ev.room);
        break;
      case "presence":
        this.#setUsers(ev.room, ev.users);
        break;
    }
    this.#emit(ev.type, ev);
  }

  #welcome(ev) {
    this.#clearTimer("connect");
    this.#user = ev.user;
    this.#welcomed = true;
    this.#attempt = 0;
    this.#everLive = true;
    this.stats.connects += 1;
    this.#setState(State.LIVE);
    this.#emit("welcome", ev);
    for (const [room, r] of this.#rooms) {
      this.#sendJoin(room, r).catch((error) => {
        // A lost connection rejoins on the next one; other refusals are final.
        if (error.code !== "disconnected") this.#emit("join_failed", { room, error });
      });
    }
  }

  #sendJoin(room, r) {
    const command = { type: "join", room };
    if (r.seq != null) command.since = r.seq;
    if (r.seq != null && r.epoch != null) command.epoch = r.epoch;
    r.sent = { since: command.since ?? null, epoch: command.epoch ?? null };
    return this.#request(command);
  }

  #joined(ev) {
    const r = this.#rooms.get(ev.room);
    if (!r) return;
    const { since, epoch } = r.sent ?? { since: null, epoch: null };
    r.sent = null;
    r.joined = true;
    r.epoch = ev.epoch ?? null;
    let recovery = null;
    if (since != null) {
      const failure = recoveryFailure(since, epoch, ev);
      recovery = { room: ev.room, recovered: failure == null, reason: failure, since, seq: ev.seq, epoch: r.epoch };
      // Recovered: the missed messages follow and move `seq` on. Otherwise what was
      // seen no longer lines up with the server's numbers: start from its `seq`.
      if (failure == null) recovery.missed = ev.seq - since;
      else r.seq = ev.seq;
    } else {
      r.seq = ev.seq;
    }
    this.#setUsers(ev.room, ev.users, false);
    this.#emit("joined", { ...ev, recovered: recovery ? recovery.recovered : undefined });
    this.#emitUsers(ev.room);
    if (recovery) this.#emit("recovery", recovery);
  }

  #setUsers(room, users, emit = true) {
    const r = this.#rooms.get(room);
    if (!r) return;
    r.users = new Set(users);
    if (emit) this.#emitUsers(room);
  }

  #emitUsers(room) {
    if (this.#rooms.has(room)) this.#emit("users", { room, users: this.users(room) });
  }

  /** Sends `command` with an id and resolves with the reply (or without one, when `reply` is false). */
  #request(command, reply = true, heartbeat = false) {
    const ws = this.#ws;
    if (!ws || ws.readyState !== 1) {
      return Promise.reject(new RoomcastError("not_connected", "not connected"));
    }
    if (!reply) {
      ws.send(JSON.stringify(command));
      return Promise.resolve(null);
    }
    const id = String(++this.#nextId);
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, heartbeat });
      ws.send(JSON.stringify({ ...command, id }));
    });
  }

  #armHeartbeat() {
    this.#clearTimer("heartbeat");
    const interval = this.#options.heartbeatInterval;
    if (!(interval > 0)) return;
    this.#timers.heartbeat = setTimeout(() => {
      this.#timers.heartbeat = null;
      const quiet = Date.now() - this.#lastReceived;
      if (quiet + 5 < interval) this.#armHeartbeat();
      else this.#probe();
    }, interval);
  }

  /**
   * Asks the server for something and gives the socket up if nothing at all comes
   * back in time. Browsers cannot send WebSocket pings, so the probe is a `presence`
   * of a room we are in (or, in none, of any room: its `not_member` error is as
   * good an answer).
   */
  #probe() {
    if (!this.#ws || this.#ws.readyState !== 1 || this.#timers.deadline) return;
    const room = [...this.#rooms.entries()].find(([, r]) => r.joined)?.[0] ?? "-";
    this.stats.heartbeats += 1;
    this.#request({ type: "presence", room }, true, true).catch(() => {});
    this.#timers.deadline = setTimeout(() => {
      this.#timers.deadline = null;
      this.stats.heartbeatTimeouts += 1;
      this.#emit("heartbeat_timeout", { after: this.#options.heartbeatTimeout });
      this.#lost(CLOSE_TIMEOUT, "heartbeat timeout", false);
    }, this.#options.heartbeatTimeout);
  }
}
