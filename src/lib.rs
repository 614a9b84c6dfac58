//! streamhub: a real-time WebSocket event fan-out hub.
//!
//! # Layout
//!
//! One event's path, top to bottom:
//!
//! - [`rest`]: the REST API, one route table; its `broadcast` is where an event (or a batch of
//!   them) enters.
//! - [`event`]: validates an event (reading its routing and entity fields in one pass) and
//!   serializes its `event` message once.
//! - [`broker`]: carries events to every instance: in process (embedded), through Redis Pub/Sub,
//!   through a Redis Cluster's sharded Pub/Sub, or through NATS JetStream streams (one per
//!   region, mirrored into the others; each event then carries its origin and `origin_seq`). A two-sided seam: a [`broker::Broker`]
//!   publishes and hands what arrives to a [`broker::BrokerHandler`] (the [`hub`]); no broker
//!   knows the hub, and what the router must know of an arrival is the seam's own
//!   [`broker::Scope`]. Channel names and publishing live in the `streamhub-wire` crate
//!   (`wire/`), shared with the CLI and the load-test harness.
//! - [`router`]: writes the frame header once and hands one shared frame to each shard, whose
//!   fan-out pushes it into each matching client's ring.
//! - [`frame`]: server frames encoded once (and their MessagePack and compressed twins, each
//!   built once), shared by every client.
//! - [`history`]: numbers each event and keeps the recent ones (for `resume_from`) and the
//!   [`state`] (the latest event of each entity, by the rules of [`entity`], for `snapshot` and
//!   `GET /state`), sharing the router's frames.
//! - [`index`]: the copy-on-write inverted index of subscriptions the router reads lock-free.
//! - [`backpressure`]: each client's bounded ring and its drop policy.
//! - [`ws`]: the WebSocket layer; its writer drains a client's ring onto the socket with
//!   vectored writes and keeps the heartbeat; `load`: how busy each shard is, and the
//!   write-coalescing window that follows from it.
//!
//! Around it:
//!
//! - [`server`]: start-up, the acceptor, the per-core shard runtimes, graceful shutdown;
//!   `settings`: the configuration turned once into each room's settings.
//! - [`hub`]: where the parts are wired together; the client registry; the broker handler.
//! - [`http`]: the service port: `/ws` upgrades (origin, capacity), event streams (`sse`:
//!   Server-Sent Events, the same clients written as `text/event-stream`) or REST; `preauth`: the
//!   budget of connections that have not authenticated yet; `console`: the live console.
//! - `session`: what a client's requests mean: authentication and its watchdog, subscribe
//!   (with its catch-up), unsubscribe, ping; `seam`: what a catch-up sent ahead of the live
//!   events, which the writer skips.
//! - `subscriptions`: who subscribes to what (each client's list, the tally, keys per subject,
//!   the index change); [`subscription`]: what one subscription is and the matching rule.
//! - [`client`]: the per-client record shared by router, reader, writer and REST.
//! - [`protocol`]: client requests and server replies, error codes; [`codec`]: the wire format
//!   a connection chose.
//! - [`auth`]: the authenticator seam and its implementations.
//! - [`metrics`]: every metric family and the Prometheus text; [`heartbeat`]: when to ping;
//!   `backoff`: jittered backoff and reconnect advice; `log_limit`: throttled log lines;
//!   [`config`]: the YAML configuration; [`control`]: control messages; `heap`: allocator
//!   statistics; `process`: the process's own figures; [`profiling`]: the opt-in flamegraph;
//!   [`cli`]: `streamhub publish`, `streamhub tail` and `streamhub health`.
//!
//! Each module's first lines say what it owns and who may change it.

pub mod auth;
pub(crate) mod backoff;
pub mod backpressure;
pub mod broker;
pub mod cli;
pub mod client;
pub mod codec;
pub mod config;
pub(crate) mod console;
pub mod control;
pub mod entity;
pub mod event;
pub mod frame;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod heap;
pub mod heartbeat;
pub mod history;
pub mod http;
pub mod hub;
pub mod index;
pub(crate) mod load;
pub(crate) mod log_limit;
pub mod metrics;
pub(crate) mod preauth;
pub(crate) mod process;
pub mod profiling;
pub mod protocol;
pub mod rest;
pub mod router;
pub(crate) mod seam;
pub mod server;
pub(crate) mod session;
pub(crate) mod settings;
pub(crate) mod sse;
pub mod state;
pub mod subscription;
pub(crate) mod subscriptions;
pub(crate) mod tls;
pub mod ws;
