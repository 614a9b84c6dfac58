//! The streamhub load-test harness.
//!
//! # Layout
//!
//! - [`scenario`]: scenario files (who connects, what they subscribe to, how events are published).
//! - [`workload`]: subscriptions, events, and which clients each event must reach.
//! - [`client`]: one WebSocket client: connect, subscribe, read, record latency.
//! - [`tls`]: the certificate and client settings of a run over TLS.
//! - [`pusher`]: the Pusher protocol's signed HTTP events API, for peers that speak it.
//! - [`tokens`]: the clients' tokens, and the hub's JWT key when a scenario turns auth on.
//! - [`stats`]: HdrHistogram merging, percentiles, `.hgrm`, loss and duplicate accounting.
//! - [`hub`]: the server under test: start or attach, /proc sampling, metrics, flamegraphs.
//! - [`runner`]: one run, from connecting to settling.
//! - [`report`], [`chart`]: the JSON, Markdown, `.hgrm` and SVG files of a run.

pub mod chart;
pub mod client;
pub mod fixtures;
pub mod heap;
pub mod hub;
pub mod pusher;
pub mod report;
pub mod runner;
pub mod scenario;
pub(crate) mod sse_client;
pub mod stats;
pub mod tls;
pub mod tokens;
pub mod workload;
