//! Closing a WebSocket: the close codes the hub uses, by name (fastwebsockets' [`CloseCode`]),
//! and the hub's side of the closing handshake of RFC 6455 section 7.
//!
//! Whoever closes first queues a close frame through the writer (the only code that writes to the
//! socket); the writer stops after sending it and shuts the socket's write side. The other
//! side's close frame is then awaited for at most [`CLOSE_GRACE`], and the close lingers
//! ([`linger`]): whatever the peer still sends is read and dropped until it closes its side or
//! the grace ends. Closing a socket with unread bytes would make the kernel answer with a reset,
//! and a reset makes the peer's kernel discard what it had not read yet: the error and the close
//! frame that explained the close. A close frame from the client is answered with its own code when that
//! code may be sent on the wire, else with 1002 (or 1007 for a reason that is not UTF-8).
//!
//! Owns nothing: the close codes by name and the lingering close.

pub(crate) use fastwebsockets::CloseCode;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// How long to wait for the peer's side of a closing handshake.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Reads and drops what the peer still sends until it closes its side, fails, or `grace` ends.
pub(crate) async fn linger<R: AsyncRead + Unpin>(read: &mut R, grace: Duration) {
    let mut sink = vec![0u8; 4096];
    let drain = async { while matches!(read.read(&mut sink).await, Ok(n) if n > 0) {} };
    let _ = tokio::time::timeout(grace, drain).await;
}

/// The code and reason to answer a client's close frame (its payload) with.
pub(crate) fn answer_to(payload: &[u8]) -> (CloseCode, &'static str) {
    match payload {
        [] => (CloseCode::Normal, ""),
        [_] => (CloseCode::Protocol, "close frame with a one-byte body"),
        [hi, lo, reason @ ..] => {
            let code = CloseCode::from(u16::from_be_bytes([*hi, *lo]));
            if !code.is_allowed() {
                (CloseCode::Protocol, "invalid close code")
            } else if std::str::from_utf8(reason).is_err() {
                (CloseCode::Invalid, "invalid UTF-8 in close reason")
            } else {
                (code, "")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_a_close_frame() {
        assert_eq!(answer_to(b""), (CloseCode::Normal, ""));
        assert_eq!(answer_to(b"\x03").0, CloseCode::Protocol);
        assert_eq!(answer_to(b"\x03\xE8bye"), (CloseCode::Normal, ""));
        assert_eq!(answer_to(b"\x0F\xA0"), (CloseCode::Library(4000), ""));
        for invalid in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            let p = invalid.to_be_bytes();
            assert_eq!(answer_to(&p).0, CloseCode::Protocol, "{invalid}");
        }
        assert_eq!(answer_to(b"\x03\xE8\xFF").0, CloseCode::Invalid);
    }
}
