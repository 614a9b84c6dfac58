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
  /** First the latest event of each matching (type, cluster, namespace), marked `snapshot`. */
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
  /** First backoff step, ms (default 1000). */
  initialBackoffMs?: number;
  /** Backoff cap, ms (default 30000). */
  maxBackoffMs?: number;
  /** Event ids remembered to drop duplicates (default 1024). */
  seenIds?: number;
}

export interface Listeners {
  event: (e: StreamEvent) => void;
  open: (info: { url: string }) => void;
  ready: (info: { clientId: string | null; url: string }) => void;
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
  /** The hub's id for this connection, once authenticated. */
  readonly clientId: string | null;
  connect(): this;
  subscribe(subscription: Subscription): this;
  unsubscribe(eventTypes?: EventType[]): this;
  on<K extends keyof Listeners>(type: K, fn: Listeners[K]): () => void;
  events(): AsyncIterableIterator<StreamEvent>;
  close(): void;
}

export function connect(url: string | string[], options?: ClientOptions): StreamhubClient;
