//! Why the server ends a connection, and what it tells the client (`disconnect`, then a close
//! frame). A value: whoever ends a connection builds one and hands it to
//! `ClientHandle::request_goodbye`; the client's writer says it.

use fastwebsockets::CloseCode;

/// Why the server ends a connection, and what it tells the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Goodbye {
    /// `reason` of the `disconnect` message.
    pub(crate) reason: &'static str,
    /// `reconnect_after_ms` of the `disconnect` message.
    pub(crate) reconnect_after_ms: u64,
    /// The close code that follows.
    pub(crate) close_code: CloseCode,
    /// Whether the connection then waits for the peer's side of the closing handshake (not
    /// for an unauthenticated connection evicted to make room: its slot is wanted now).
    pub(crate) lingers: bool,
}

impl Goodbye {
    /// The server is shutting down (close 1012, service restart).
    pub(crate) fn shutdown(reconnect_after_ms: u64) -> Self {
        Self {
            reason: "server_shutdown",
            reconnect_after_ms,
            close_code: CloseCode::Restart,
            lingers: true,
        }
    }

    /// The instance is being drained for a rolling restart (close 1012).
    pub(crate) fn drain(reconnect_after_ms: u64) -> Self {
        Self {
            reason: "server_drain",
            reconnect_after_ms,
            close_code: CloseCode::Restart,
            lingers: true,
        }
    }

    /// The client did not authenticate and its place was needed (close 1008).
    pub(crate) fn unauthenticated() -> Self {
        Self {
            reason: "authentication_timeout",
            reconnect_after_ms: 1000,
            close_code: CloseCode::Policy,
            lingers: false,
        }
    }

    /// An operator disconnected this client (close 1000).
    pub(crate) fn operator(reconnect_after_ms: u64) -> Self {
        Self {
            reason: "disconnected_by_operator",
            reconnect_after_ms,
            close_code: CloseCode::Normal,
            lingers: true,
        }
    }
}
