// Types for @streamhub/client.

export type EventType =
  | "CLUSTER_STATUS_CHANGED"
  | "CLUSTER_REGISTERED"
  | "CLUSTER_DELETED"
  | "METRIC_UPDATE"
  | "ALERT_FIRED"
  | "ALERT_RESOLVED"
  | "GPU_UPDATE"
  | "TRACE_RECEIVED"
  | "ANOMALY_DETECTED"
  | "CHAT_MESSAGE"
  | "RCA_COMPLETE";

/** What a subscription asks for. Empty or absent filters match everything. */
export interface Subscription {
  event_types: EventType[];
  cluster_filter?: string[];
  namespace_filter?: string[];
  /** First the state (the latest event of each matching entity), marked `snapshot`. */
  snapshot?: boolean;
}

/** An event as delivered: the publisher's fields plus `type: "event"`. */
export interface StreamEvent {
  type: "event";
  event_type: EventType;
  event_id: string;
  timestamp?: string;
  cluster_id?: string;
  /** Set on the events a snapshot sends. */
  snapshot?: true;
  /** NATS mode: the region the event was published in, and its sequence in that region's
   * stream (the same in every region). */
  origin?: string;
  origin_seq?: number;
  payload?: unknown;
  [field: string]: unknown;
}

export interface ReplayComplete {
  type: "replay_complete";
  /** False: the hub no longer holds the id resumed from; reload your state. */
  recovered: boolean;
  replayed: number;
}

export interface ServerError {
  type: "error";
  code: string;
  message: string;
  [field: string]: unknown;
}

export interface ClientOptions {
  /** A bearer token sent in `auth`. */
  token?: string;
  /** Fetches a fresh token: called on connect, on every reconnect and on AUTH_EXPIRED. */
  getToken?: () => string | null | Promise<string | null>;
  /** A WebSocket constructor (default: globalThis.WebSocket). */
  WebSocket?: new (url: string) => WebSocket;
  /** Resume from this event id on the first connection too. */
  resumeFrom?: string;
  /** NATS mode: resume from these positions (the last `origin_seq` seen of each origin region)
   * on the first connection too; see {@link StreamhubClient.positions}. */
  positions?: Record<string, number>;
  /** First backoff step, ms (default 1000). */
  initialBackoffMs?: number;
  /** Backoff cap, ms (default 30000). */
  maxBackoffMs?: number;
  /** Event ids remembered to drop duplicates (default 1024). */
  seenIds?: number;
  /** "auto" (default): WebSocket, then Server-Sent Events when a WebSocket cannot be opened;
   * "websocket"; "sse": Server-Sent Events from the start (one stream per subscription). */
  transport?: "auto" | "websocket" | "sse";
  /** An EventSource constructor (default: globalThis.EventSource). */
  EventSource?: new (url: string) => EventSource;
}

export interface Listeners {
  event: (e: StreamEvent) => void;
  open: (info: { url: string }) => void;
  /** `roles`: the token's, from `auth_response`; null without authentication. */
  ready: (info: { clientId: string | null; roles: string[] | null; url: string }) => void;
  close: (info: { code: number; reason: string }) => void;
  error: (e: ServerError | Error | Event) => void;
  /** The hub could not resume: events were missed, reload your state. */
  reset: (m: ReplayComplete) => void;
  replay: (m: ReplayComplete) => void;
  snapshot: (m: { type: "snapshot_complete"; events: number }) => void;
  subscribed: (m: Record<string, unknown>) => void;
  status: (m: Record<string, unknown>) => void;
}

export class StreamhubClient {
  constructor(url: string | string[], options?: ClientOptions);
  /** The id of the last live event received (what a reconnect resumes from). */
  readonly lastEventId: string | null;
  /** NATS mode: the last `origin_seq` seen of each origin region (null elsewhere). A reconnect
   * resumes from them, so it loses and repeats nothing in any region the client fails over to. */
  readonly positions: Record<string, number> | null;
  /** What the client uses now: "websocket", or "sse" (told to, or after a WebSocket failed). */
  readonly transport: "websocket" | "sse";
  /** The hub's id for this connection, once authenticated. */
  readonly clientId: string | null;
  /** The token's roles, once authenticated (null while the hub has authentication off). */
  readonly roles: string[] | null;
  connect(): this;
  subscribe(
    subscription: Subscription,
    options?: { resumeFrom?: string | null; positions?: Record<string, number> | null },
  ): this;
  /** The state over HTTP, then a subscription from the position it was read at; the state
   * follows live events. One per client. */
  loadState(subscription: Subscription, options?: LoadStateOptions): Promise<DashboardState>;
  unsubscribe(eventTypes?: EventType[]): this;
  on<K extends keyof Listeners>(type: K, fn: Listeners[K]): () => void;
  events(): AsyncIterableIterator<StreamEvent>;
  close(): void;
}

/** The rules `GET /api/v1/streaming/state` answers with. */
export interface StateRules {
  /** Per event type, the fields (`cluster_id` or `payload.…`) whose values name its entity. */
  entity_keys: Partial<Record<EventType, string[]>>;
  /** Per removing type: the type whose entry (same cluster and entity) it removes, or `cluster`. */
  removes: Partial<Record<EventType, EventType | "cluster">>;
}

/** The answer of `GET /api/v1/streaming/state`. */
export interface StateAnswer {
  events: StreamEvent[];
  count: number;
  /** Resume from this id to miss nothing after the state; null: nothing to resume from yet. */
  position: string | null;
  rules: StateRules;
}

export interface LoadStateOptions {
  /** The hub's HTTP base (default: the WebSocket URL's, ws → http, without /ws). */
  httpUrl?: string;
  fetch?: typeof fetch;
}

/** The latest event of each entity, oldest change first. */
export class DashboardState {
  constructor(rules: StateRules);
  readonly rules: StateRules;
  /** The position the state was read at over HTTP. */
  position: string | null;
  readonly size: number;
  /** What an event is about, or null (no key for its type, or a field missing). */
  entityOf(e: StreamEvent): string | null;
  /** Keeps or removes by the rules; true if the state changed. */
  apply(e: StreamEvent): boolean;
  events(type?: EventType): StreamEvent[];
  onChange(fn: (state: DashboardState) => void): () => void;
}

/** Whether a subscription's filters match an event (the hub's rule). */
export function matches(sub: Subscription, e: StreamEvent): boolean;

export function connect(url: string | string[], options?: ClientOptions): StreamhubClient;
