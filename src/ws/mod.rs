//! The WebSocket layer: everything between an upgraded TCP stream and the session's requests.
//!
//! - [`connection`]: one connection's life: reader, writer and watchdog side by side, the close
//!   handshake finished, the client unregistered.
//! - [`reader`]: frames in, messages out to the [`crate::session::Session`]; pings answered,
//!   close frames echoed.
//! - [`frame_reader`]: one client frame at a time, read straight from the socket, no buffer held
//!   while idle; [`message`]: fragments reassembled under the message size cap.
//! - [`close`]: the close codes by name and the hub's side of the closing handshake.
//! - [`socket`]: plain TCP or TLS under the connection, split for the reader and the writer.
//! - [`writer`]: the only code that writes to a client's socket (batches, `writev`, heartbeat
//!   pings, goodbye). The frames it writes are encoded once, below this layer, in
//!   [`crate::frame`].
//!
//! Owns nothing of its own; each file below owns one connection's part.

pub(crate) mod close;
pub(crate) mod connection;
pub(crate) mod frame_reader;
pub(crate) mod message;
pub(crate) mod reader;
pub(crate) mod socket;
pub(crate) mod writer;
