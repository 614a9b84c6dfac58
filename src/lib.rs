//! streamhub: a real-time WebSocket event fan-out hub.
//!
//! # Layout
//!
//! One event's path, top to bottom:
//!
//! - [`rest`]: the REST API; `broadcast`: `POST /api/v1/streaming/broadcast`, where an event
//!   (or a batch of them) enters.
//! - [`event`]: validates an event and serializes its `event` message once.
//! - [`broker`]: carries events to every instance: in process (embedded), through Redis Pub/Sub,
//!   or through a Redis Cluster's sharded Pub/Sub. A two-sided seam: a [`broker::Broker`]
//!   publishes and hands what arrives to a [`broker::BrokerHandler`] (the [`hub`]); no broker
//!   knows the hub. Channel names and publishing live in the `streamhub-wire` crate (`wire/`),
//!   shared with the CLI and the load-test harness. [`control`]: the control messages of the
//!   Redis control channel (drain, disconnect a client).
//! - [`router`]: writes the frame header once and hands one shared frame to each shard, whose
//!   fan-out pushes it into each matching client's ring.
//! - [`history`]: numbers each event and keeps the recent ones (for `resume_from`) and the
//!   latest of each key (for `snapshot`), sharing the router's frames.
//! - [`index`]: the copy-on-write inverted index of subscriptions the router reads lock-free.
//! - [`backpressure`]: each client's bounded ring and its drop policy.
//! - [`ws`]: the WebSocket layer; its writer drains a client's ring onto the socket with
//!   vectored writes and keeps the heartbeat; `load`: how busy each shard is, and the
//!   write-coalescing window that follows from it.
//!
//! Around it:
//!
//! - [`server`]: start-up, the acceptor, the per-core shard runtimes, graceful shutdown.
//! - [`http`]: the service port: `/ws` upgrades (origin, capacity) or REST; `preauth`: the
//!   budget of connections that have not authenticated yet.
//! - `console`: the live console page at `/` and the JavaScript client it runs on.
//! - [`ws`] also reads: frames with no buffer held while idle, messages reassembled under the
//!   size cap, close codes by name, the close handshake.
//! - `session`: what a client's requests mean: authentication state and its watchdog, then
//!   subscribe, unsubscribe and ping.
//! - [`protocol`]: client requests and server replies, error codes; [`codec`]: the wire format
//!   a connection chose (JSON, or MessagePack, transcoded once per event).
//! - [`subscription`]: what a subscription is and the matching rule; `subscription_tally`: the
//!   counts behind `GET /subscriptions`, kept as subscriptions change.
//! - [`client`]: the per-client state shared by router, reader, writer and REST.
//! - [`heartbeat`]: when to ping and when a client is dead.
//! - [`auth`]: the authenticator seam and its implementations; `subject_keys`: index keys held
//!   per authenticated subject.
//! - [`hub`]: the state all shards share, and the broker handler.
//! - [`metrics`]: per-shard counters, Prometheus text; `backoff`: jittered reconnect backoff
//!   and reconnect advice; `log_limit`: log lines a client can cause, throttled per kind;
//!   [`config`]: the YAML configuration; [`heap`]: the allocator's statistics
//!   (`/metrics`, `/debug/heap`); [`profiling`]: the opt-in
//!   flamegraph endpoint; [`cli`]: `streamhub publish` and `streamhub tail`.

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
pub mod profiling;
pub mod protocol;
pub mod rest;
pub mod router;
pub(crate) mod seam;
pub mod server;
pub(crate) mod session;
pub(crate) mod settings;
pub mod subscription;
pub(crate) mod subscriptions;
pub(crate) mod tls;
pub mod ws;
