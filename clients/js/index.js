// streamhub client: a small, dependency-free ES module for browsers and Node (>= 20.10 with
// --experimental-websocket, or any WebSocket constructor passed in).
//
// - connect, then `auth` with a token or a function that fetches a fresh one (called again on
//   AUTH_EXPIRED and before every reconnect);
// - subscribe / unsubscribe with filters and `snapshot`;
// - events as callbacks (`on("event", fn)`) or an async iterator (`client.events()`);
// - reconnect with exponential backoff and full jitter (1 s, 2 s, 4 s ... 30 s), or after the
//   server's `reconnect_after_ms` when it says goodbye;
// - on every reconnect, each subscription resumes from the last event id seen; when the hub
//   cannot recover (`replay_complete` with `recovered: false`) the client emits `reset`, so the
//   application reloads its state.

const DEFAULTS = {
  initialBackoffMs: 1000,
  maxBackoffMs: 30000,
  // Event ids remembered to drop the copy of an event that two resumed subscriptions replay.
  seenIds: 1024,
};

/** A streamhub connection that stays connected until `close()`. */
export class StreamhubClient {
  /**
   * @param {string | string[]} url one hub URL (ws:// or wss://, path /ws), or several to rotate
   *   through on reconnect
   * @param {object} [options] see index.d.ts
   */
  constructor(url, options = {}) {
    this.urls = Array.isArray(url) ? url.slice() : [url];
    this.options = { ...DEFAULTS, ...options };
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.WebSocket !== "function") {
      throw new Error("no WebSocket: pass options.WebSocket (Node 20: run with --experimental-websocket)");
    }
    this.listeners = new Map();
    this.subscriptions = [];
    this.lastEventId = options.resumeFrom ?? null;
    this.seen = new Set();
    this.seenOrder = [];
    this.attempt = 0;
    this.urlIndex = 0;
    this.closed = false;
    this.ws = null;
    this.ready = false;
    this.clientId = null;
    this.timer = null;
    this.waiters = [];
    this.queue = [];
  }

  /** Registers `fn` for `type`: event, open, ready, close, error, reset, replay, snapshot,
   * subscribed, status. Returns a function that removes it. */
  on(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(fn);
    return () => this.listeners.get(type)?.delete(fn);
  }

  emit(type, value) {
    for (const fn of this.listeners.get(type) ?? []) {
      try {
        fn(value);
      } catch (e) {
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }

  /** Opens the connection (and keeps reopening it until `close()`). */
  connect() {
    this.closed = false;
    this.open();
    return this;
  }

  /** Adds a subscription: `{event_types, cluster_filter?, namespace_filter?, snapshot?}`.
   * Sent now if connected, and again (resuming) after every reconnect. */
  subscribe(subscription) {
    const { snapshot = false, ...filters } = subscription;
    const entry = { filters, snapshot };
    this.subscriptions.push(entry);
    if (this.ready) this.sendSubscribe(entry, null);
    return this;
  }

  /** Removes the given event types from every subscription (all when omitted). */
  unsubscribe(eventTypes) {
    if (eventTypes === undefined) {
      this.subscriptions = [];
    } else {
      for (const s of this.subscriptions) {
        s.filters.event_types = (s.filters.event_types ?? []).filter((t) => !eventTypes.includes(t));
      }
      this.subscriptions = this.subscriptions.filter((s) => s.filters.event_types.length > 0);
    }
    if (this.ready) {
      this.send(eventTypes === undefined ? { type: "unsubscribe" } : { type: "unsubscribe", event_types: eventTypes });
    }
    return this;
  }

  /** Events as an async iterator (ends when the client is closed). */
  events() {
    const client = this;
    return {
      [Symbol.asyncIterator]() {
        return this;
      },
      next() {
        if (client.queue.length > 0) return Promise.resolve({ value: client.queue.shift(), done: false });
        if (client.closed) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => client.waiters.push(resolve));
      },
      return() {
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }

  /** Closes for good. */
  close() {
    this.closed = true;
    clearTimeout(this.timer);
    this.ws?.close(1000, "client closed");
    for (const w of this.waiters.splice(0)) w({ value: undefined, done: true });
  }

  // --- internals ---

  open() {
    const url = this.urls[this.urlIndex % this.urls.length];
    this.ready = false;
    let ws;
    try {
      ws = new this.WebSocket(url);
    } catch (e) {
      this.emit("error", e);
      this.scheduleReconnect(null);
      return;
    }
    this.ws = ws;
    let advice = null;
    ws.onopen = () => {
      this.emit("open", { url });
      this.authenticate().catch((e) => this.emit("error", e));
    };
    ws.onmessage = (m) => {
      let msg;
      try {
        msg = JSON.parse(typeof m.data === "string" ? m.data : new TextDecoder().decode(m.data));
      } catch (e) {
        this.emit("error", e);
        return;
      }
      if (msg.type === "disconnect" && Number.isFinite(msg.reconnect_after_ms)) advice = msg.reconnect_after_ms;
      this.handle(msg);
    };
    // The connection is over: once per socket, whichever event says so first.
    let ended = false;
    const lost = (code, reason) => {
      if (ended || this.ws !== ws) return;
      ended = true;
      this.ready = false;
      this.emit("close", { code, reason });
      if (!this.closed) this.scheduleReconnect(advice);
    };
    ws.onerror = (e) => {
      this.emit("error", e);
      // Node's WebSocket (undici) reports a refused connection with "error" alone, never
      // "close": without this the client would wait for ever.
      if (ws.readyState === 0) lost(1006, "connection failed");
    };
    ws.onclose = (e) => lost(e.code, e.reason);
  }

  async authenticate() {
    const token = await this.token();
    if (token == null) return this.onReady(null);
    this.send({ type: "auth", token });
  }

  async token() {
    const { getToken, token } = this.options;
    if (typeof getToken === "function") return await getToken();
    return token ?? null;
  }

  onReady(clientId) {
    this.clientId = clientId;
    this.ready = true;
    this.attempt = 0;
    this.emit("ready", { clientId, url: this.urls[this.urlIndex % this.urls.length] });
    for (const s of this.subscriptions) this.sendSubscribe(s, this.lastEventId);
  }

  sendSubscribe(entry, resumeFrom) {
    const msg = { type: "subscribe", subscription: entry.filters };
    if (resumeFrom) msg.resume_from = resumeFrom;
    if (entry.snapshot) msg.snapshot = true;
    this.send(msg);
  }

  handle(msg) {
    switch (msg.type) {
      case "auth_response":
        if (!this.ready) this.onReady(msg.client_id);
        break;
      case "event":
        this.deliver(msg);
        break;
      case "replay_complete":
        this.emit("replay", msg);
        if (!msg.recovered) this.emit("reset", msg);
        break;
      case "snapshot_complete":
        this.emit("snapshot", msg);
        break;
      case "subscribed":
        this.emit("subscribed", msg);
        break;
      case "error":
        if (msg.code === "AUTH_EXPIRED") {
          this.token()
            .then((t) => t != null && this.send({ type: "auth", token: t }))
            .catch((e) => this.emit("error", e));
        }
        this.emit("error", msg);
        break;
      default:
        this.emit("status", msg);
    }
  }

  deliver(event) {
    const id = event.event_id;
    if (id != null) {
      if (this.seen.has(id)) return;
      this.seen.add(id);
      this.seenOrder.push(id);
      if (this.seenOrder.length > this.options.seenIds) this.seen.delete(this.seenOrder.shift());
      // A snapshot is state, not a place in the stream: resuming goes on from live events.
      if (!event.snapshot) this.lastEventId = id;
    }
    this.emit("event", event);
    const waiter = this.waiters.shift();
    if (waiter) waiter({ value: event, done: false });
    else this.queue.push(event);
  }

  send(msg) {
    if (this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify(msg));
  }

  /** The next delay: the server's advice if it gave one, else exponential backoff with full
   * jitter (a random wait up to 1 s, 2 s, 4 s ... capped at maxBackoffMs). */
  nextDelay(advice) {
    if (advice != null) return advice;
    const cap = Math.min(this.options.maxBackoffMs, this.options.initialBackoffMs * 2 ** this.attempt);
    this.attempt += 1;
    return Math.random() * cap;
  }

  scheduleReconnect(advice) {
    const delay = this.nextDelay(advice);
    this.urlIndex += 1;
    this.emit("status", { type: "reconnecting", in_ms: Math.round(delay) });
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      if (!this.closed) this.open();
    }, delay);
  }
}

/** Connects a new client: `connect(url, options)`. */
export function connect(url, options) {
  return new StreamhubClient(url, options).connect();
}
