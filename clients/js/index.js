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
//   application reloads its state;
// - `loadState`: a dashboard's state (the latest event of each entity) over HTTP, then a
//   subscription from the position it was read at, kept up to date by the hub's own rules;
// - where a WebSocket cannot be opened (a proxy that breaks upgrades), Server-Sent Events
//   instead (`transport: "auto"`, the default; or `"sse"` to use them from the start), with the
//   same API: one `EventSource` per subscription, resumed with the last event id.

const DEFAULTS = {
  initialBackoffMs: 1000,
  maxBackoffMs: 30000,
  // Event ids remembered to drop the copy of an event that two resumed subscriptions replay.
  seenIds: 1024,
  // "auto": WebSocket, then Server-Sent Events if a WebSocket cannot be opened; "websocket";
  // "sse".
  transport: "auto",
};

/** Message types an SSE stream carries as named events. */
const SSE_TYPES = ["event", "subscribed", "replay_complete", "snapshot_complete", "error", "notice", "disconnect"];

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
    this.EventSource = options.EventSource ?? globalThis.EventSource;
    // What the client uses now: "websocket", or "sse" once told to or once a WebSocket failed.
    this.transport = this.options.transport === "sse" ? "sse" : "websocket";
    if (this.transport === "websocket" && typeof this.WebSocket !== "function") {
      throw new Error("no WebSocket: pass options.WebSocket (Node 20: run with --experimental-websocket)");
    }
    this.streams = [];
    this.listeners = new Map();
    this.subscriptions = [];
    this.lastEventId = options.resumeFrom ?? null;
    // NATS mode: the last origin_seq seen of each origin region, so a resume works in any region.
    this.positions = options.positions ? { ...options.positions } : null;
    this.startPositions = null;
    this.seen = new Set();
    this.seenOrder = [];
    this.attempt = 0;
    this.urlIndex = 0;
    this.closed = false;
    this.ws = null;
    this.ready = false;
    this.clientId = null;
    this.roles = null;
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
   * Sent now if connected, and again (resuming) after every reconnect; `options.resumeFrom`:
   * the event id its first subscribe resumes from. */
  subscribe(subscription, options = {}) {
    const { snapshot = false, ...filters } = subscription;
    const entry = { filters, snapshot, resumeFrom: options.resumeFrom ?? null, positions: options.positions ?? null };
    this.subscriptions.push(entry);
    if (this.ready && this.transport === "sse") this.openStream(entry, null);
    else if (this.ready) this.sendSubscribe(entry, null, null);
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
    if (this.ready && this.transport === "sse") {
      // A stream carries one subscription as its URL says: the streams start over.
      for (const es of this.streams.splice(0)) es.close();
      for (const s of this.subscriptions) this.openStream(s, this.lastEventId);
    } else if (this.ready) {
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
    for (const es of this.streams.splice(0)) es.close();
    for (const w of this.waiters.splice(0)) w({ value: undefined, done: true });
  }

  // --- internals ---

  open() {
    if (this.transport === "sse") return this.openSse();
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
    let opened = false;
    ws.addEventListener("open", () => (opened = true));
    // Never opened (refused, or a proxy that breaks upgrades): Server-Sent Events next, if
    // allowed and available.
    const failed = () => {
      if (!opened && this.options.transport === "auto" && typeof this.EventSource === "function") {
        this.transport = "sse";
        this.emit("status", { type: "fallback", transport: "sse" });
      }
    };
    ws.onerror = (e) => {
      this.emit("error", e);
      // Node's WebSocket (undici) reports a refused connection with "error" alone, never
      // "close": without this the client would wait for ever.
      if (ws.readyState === 0) {
        failed();
        lost(1006, "connection failed");
      }
    };
    ws.onclose = (e) => {
      failed();
      lost(e.code, e.reason);
    };
  }

  /** Server-Sent Events: one stream per subscription, each resumed from the last event id
   * (the browser's own reconnects send it as Last-Event-ID). Ready once every stream is open. */
  async openSse() {
    this.ready = false;
    for (const es of this.streams.splice(0)) es.close();
    let token;
    try {
      token = await this.token();
    } catch (e) {
      this.emit("error", e);
      return this.scheduleReconnect(null);
    }
    if (this.closed) return;
    this.sseToken = token;
    this.emit("open", { url: this.sseBase(), transport: "sse" });
    this.clientId = null;
    this.ready = true;
    this.attempt = 0;
    this.emit("ready", { clientId: null, roles: null, url: this.urls[this.urlIndex % this.urls.length], transport: "sse" });
    for (const s of this.subscriptions) this.openStream(s, this.lastEventId);
  }

  /** The hub's HTTP base for the current URL. */
  sseBase() {
    return httpBase(this.urls[this.urlIndex % this.urls.length]);
  }

  /** Opens the stream of one subscription, resuming from `resumeFrom` (or its own first one). */
  openStream(entry, resumeFrom) {
    const query = new URLSearchParams();
    for (const k of ["event_types", "cluster_filter", "namespace_filter"]) {
      if (entry.filters[k]?.length) query.set(k, entry.filters[k].join(","));
    }
    const from = entry.resumeFrom ?? resumeFrom;
    entry.resumeFrom = null;
    if (from) query.set("last_event_id", from);
    if (entry.snapshot) query.set("snapshot", "true");
    if (this.sseToken) query.set("access_token", this.sseToken);
    const es = new this.EventSource(`${this.sseBase()}/api/v1/streaming/events?${query}`);
    this.streams.push(es);
    for (const type of SSE_TYPES) {
      es.addEventListener(type, (m) => {
        let msg;
        try {
          msg = JSON.parse(m.data);
        } catch (e) {
          return this.emit("error", e);
        }
        this.handle(msg);
      });
    }
    // The browser reconnects by itself after an ended stream; a refused one (401, 503) is
    // closed for good, and the client starts over with its own backoff.
    es.onerror = () => {
      if (es.readyState !== 2 || this.closed || !this.streams.includes(es)) return;
      this.ready = false;
      for (const other of this.streams.splice(0)) other.close();
      this.emit("close", { code: 1006, reason: "event stream failed" });
      this.scheduleReconnect(null);
    };
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
    this.emit("ready", { clientId, roles: this.roles, url: this.urls[this.urlIndex % this.urls.length] });
    for (const s of this.subscriptions) this.sendSubscribe(s, this.lastEventId, this.positions);
  }

  sendSubscribe(entry, resumeFrom, positions) {
    const msg = { type: "subscribe", subscription: entry.filters };
    // Its own first position once, then the client's.
    const from = entry.resumeFrom ?? resumeFrom;
    const at = entry.positions ?? positions;
    entry.resumeFrom = null;
    entry.positions = null;
    if (from) msg.resume_from = from;
    if (at) msg.positions = at;
    if (entry.snapshot) msg.snapshot = true;
    this.send(msg);
  }

  handle(msg) {
    switch (msg.type) {
      case "auth_response":
        this.roles = msg.roles ?? null;
        if (!this.ready) this.onReady(msg.client_id);
        break;
      case "event":
        this.deliver(msg);
        break;
      case "replay_complete":
        // Not recovered: the client reloads; it stands where the live events began.
        if (!msg.recovered && this.startPositions) this.positions = { ...this.startPositions };
        this.emit("replay", msg);
        if (!msg.recovered) this.emit("reset", msg);
        break;
      case "snapshot_complete":
        this.emit("snapshot", msg);
        break;
      case "subscribed":
        if (msg.positions) {
          // Where the live events begin; a region the client has seen nothing of starts there
          // (a resume's replay is still on its way: the others keep the client's own).
          this.startPositions = msg.positions;
          this.positions ??= {};
          for (const [region, seq] of Object.entries(msg.positions)) this.positions[region] ??= seq;
        }
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
    // A snapshot's events are state, sent again whenever asked: never dropped as repeats.
    if (id != null && !event.snapshot) {
      if (this.seen.has(id)) return;
      this.seen.add(id);
      this.seenOrder.push(id);
      if (this.seenOrder.length > this.options.seenIds) this.seen.delete(this.seenOrder.shift());
      this.lastEventId = id;
      if (event.origin != null) {
        this.positions ??= {};
        this.positions[event.origin] = Math.max(this.positions[event.origin] ?? 0, event.origin_seq);
      }
    }
    this.emit("event", event);
    const waiter = this.waiters.shift();
    if (waiter) waiter({ value: event, done: false });
    else this.queue.push(event);
  }

  /** A dashboard's state: `GET /api/v1/streaming/state` for `subscription` (its filters), then a
   * subscription resuming from the position the state was read at (nothing missed in between),
   * with `snapshot` so a resume the hub cannot serve is followed by the state again. Live events
   * keep the returned {@link DashboardState} up to date by the rules the hub answered with.
   * One per client: a snapshot arriving replaces the state. `options.httpUrl`: the hub's HTTP
   * base (default: from the WebSocket URL); `options.fetch`: a fetch function. */
  async loadState(subscription, options = {}) {
    const { snapshot: _ignored, ...filters } = subscription;
    if (!filters.event_types?.length) throw new Error("loadState needs event_types");
    const fetchFn = options.fetch ?? globalThis.fetch;
    const base = options.httpUrl ?? httpBase(this.urls[this.urlIndex % this.urls.length]);
    const query = new URLSearchParams();
    for (const k of ["event_types", "cluster_filter", "namespace_filter"]) {
      if (filters[k]?.length) query.set(k, filters[k].join(","));
    }
    const token = await this.token();
    const r = await fetchFn(`${base}/api/v1/streaming/state?${query}`, {
      headers: token ? { authorization: `Bearer ${token}` } : {},
    });
    if (!r.ok) throw new Error(`GET /api/v1/streaming/state answered ${r.status}: ${await r.text()}`);
    const answer = await r.json();
    const state = new DashboardState(answer.rules);
    for (const e of answer.events) state.apply(e);
    // What removes state must arrive too: resolutions of the types asked for, cluster deletions.
    const types = new Set(filters.event_types ?? []);
    for (const [type, removes] of Object.entries(answer.rules.removes ?? {})) {
      if (removes === "cluster" || types.has(removes)) types.add(type);
    }
    const live = { ...filters, event_types: [...types] };
    let rebuilt = null;
    this.on("event", (e) => {
      if (!matches(live, e)) return;
      if (e.snapshot) (rebuilt ??= new DashboardState(answer.rules)).apply(e);
      else state.apply(e) && state.changed();
    });
    this.on("snapshot", () => {
      state.replace(rebuilt ?? new DashboardState(answer.rules));
      rebuilt = null;
    });
    if (this.lastEventId == null && answer.position) this.lastEventId = answer.position;
    if (this.positions == null && answer.positions) this.positions = { ...answer.positions };
    this.subscribe({ ...live, snapshot: true }, { resumeFrom: answer.position ?? null, positions: answer.positions ?? null });
    state.position = answer.position;
    return state;
  }

  send(msg) {
    if (this.transport === "sse") return;
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

/** The HTTP base of a hub's WebSocket URL: ws://host:port/ws → http://host:port. */
function httpBase(wsUrl) {
  const u = new URL(wsUrl);
  const scheme = u.protocol === "wss:" ? "https:" : "http:";
  return `${scheme}//${u.host}${u.pathname.replace(/\/ws\/?$/, "")}`;
}

/** An event's namespace as the hub reads it: payload.namespace, else payload.labels.namespace. */
function namespaceOf(e) {
  const p = e.payload;
  if (p === null || typeof p !== "object") return null;
  if (typeof p.namespace === "string") return p.namespace;
  const ns = p.labels?.namespace;
  return typeof ns === "string" ? ns : null;
}

/** Whether a subscription's filters match an event (the hub's rule). */
export function matches(sub, e) {
  const ns = namespaceOf(e);
  return (sub.event_types ?? []).includes(e.event_type) &&
    (!sub.cluster_filter?.length || sub.cluster_filter.includes(e.cluster_id)) &&
    (!sub.namespace_filter?.length || ns === null || sub.namespace_filter.includes(ns));
}

/** The value at `path` (`cluster_id`, or `payload.` and field names) of an event. */
function valueAt(e, path) {
  if (path === "cluster_id") return e.cluster_id;
  if (!path.startsWith("payload.")) return undefined;
  let v = e.payload;
  for (const field of path.slice("payload.".length).split(".")) {
    if (v === null || typeof v !== "object" || Array.isArray(v)) return undefined;
    v = v[field];
  }
  return v;
}

/** JSON with object keys sorted: the same labels in any order name one series. */
function canonical(v) {
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  if (v !== null && typeof v === "object") {
    return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`).join(",")}}`;
  }
  return JSON.stringify(v);
}

/** The latest event of each entity, by the rules `GET /state` answers with (`rules.entity_keys`:
 * per type, the fields naming its entity; `rules.removes`: what a type removes). In the order
 * entities last changed, oldest first. */
export class DashboardState {
  constructor(rules) {
    this.rules = rules;
    this.entries = new Map();
    this.listeners = new Set();
    this.position = null;
  }

  /** What an event is about, or null (its type has no key, or a field is missing). */
  entityOf(e) {
    const paths = this.rules.entity_keys?.[e.event_type] ?? [];
    if (paths.length === 0) return null;
    const parts = [];
    for (const path of paths) {
      const v = valueAt(e, path);
      if (v === undefined || v === null) return null;
      parts.push(typeof v === "string" ? v : canonical(v));
    }
    return parts.join("\u001f");
  }

  /** Applies one event: kept as its entity's latest, or removing what its rule says. True if
   * the state changed. */
  apply(e) {
    const removes = this.rules.removes?.[e.event_type];
    const entity = this.entityOf(e);
    if (removes === "cluster") {
      let gone = false;
      for (const [k, held] of this.entries) {
        if (e.cluster_id != null && held.cluster_id === e.cluster_id) gone = this.entries.delete(k) || gone;
      }
      return gone;
    }
    if (removes) return entity !== null && this.entries.delete(key(removes, e.cluster_id, entity, null));
    const k = key(e.event_type, e.cluster_id, entity, namespaceOf(e));
    this.entries.delete(k);
    this.entries.set(k, e);
    return true;
  }

  /** The events held (of `type`, if given), oldest change first. */
  events(type) {
    const all = [...this.entries.values()];
    return type ? all.filter((e) => e.event_type === type) : all;
  }

  get size() {
    return this.entries.size;
  }

  /** Calls `fn(state)` after every change; returns a function that stops it. */
  onChange(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  changed() {
    for (const fn of this.listeners) fn(this);
  }

  /** Takes another state's entries (a snapshot that replaced this one). */
  replace(other) {
    this.entries = other.entries;
    this.changed();
  }
}

/** An entry's key: type, cluster, and the entity (or, without one, the namespace). */
function key(type, cluster, entity, namespace) {
  return JSON.stringify([type, cluster ?? null, entity !== null, entity ?? namespace]);
}

/** Connects a new client: `connect(url, options)`. */
export function connect(url, options) {
  return new StreamhubClient(url, options).connect();
}
