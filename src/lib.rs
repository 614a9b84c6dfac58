//! streamhub: a real-time WebSocket event fan-out hub.
//!
//! # Layout
//!
//! One event's path, top to bottom:
//!
//! - [`rest`]: the REST API; `POST /api/v1/streaming/broadcast` is where an event enters.
//! - [`event`]: validates an event and serializes its `event` message once.
//! - [`broker`]: carries events to routers: in process (embedded), through Redis Pub/Sub, or
//!   through a Redis Cluster's sharded Pub/Sub (per-cluster channels held on demand);
//!   [`control`]: the control messages of the Redis control channel (drain, disconnect a client).
//! - [`router`]: writes the frame header once and pushes one shared frame to each matching ring.
//! - [`index`]: the copy-on-write inverted index of subscriptions the router reads lock-free.
//! - [`backpressure`]: each client's bounded ring and its drop policy.
//! - [`writer`]: drains a client's ring onto its socket with vectored writes; keeps the heartbeat.
//!
//! Around it:
//!
//! - [`server`]: start-up, the acceptor, the per-core shard runtimes, graceful shutdown.
//! - [`http`]: the service port: `/ws` upgrades (origin, capacity) or REST.
//! - [`connection`]: one WebSocket's reader, session and authentication state;
//!   [`frame_reader`]: client frames read with no buffer held while idle.
//! - [`protocol`]: client requests and server replies, error codes.
//! - [`subscription`]: what a subscription is and the matching rule.
//! - [`client`]: the per-client state shared by router, reader, writer and REST.
//! - [`heartbeat`]: when to ping and when a client is dead.
//! - [`auth`]: the authenticator seam and its implementations.
//! - [`hub`]: the state all shards share; [`metrics`]: per-shard counters, Prometheus text;
//!   [`frame`]: frames encoded once; [`config`]: the YAML configuration;
//!   [`profiling`]: the opt-in flamegraph endpoint; [`cli`]: `streamhub publish` and
//!   `streamhub tail`.

pub mod auth;
pub mod backpressure;
pub mod broker;
pub mod cli;
pub mod client;
pub mod config;
pub mod connection;
pub mod control;
pub mod event;
pub mod frame;
pub mod frame_reader;
pub mod heartbeat;
pub mod http;
pub mod hub;
pub mod index;
pub mod metrics;
pub mod profiling;
pub mod protocol;
pub mod rest;
pub mod router;
pub mod server;
pub mod subscription;
pub mod writer;
