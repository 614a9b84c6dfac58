//! Reading client frames without holding a buffer while the connection is idle.
//!
//! Client-to-server traffic is small and rare (auth, subscribe, pings), while an idle connection
//! lives for hours; a general WebSocket reader keeps an 8 KiB read buffer per connection for its
//! whole life, which alone is more than the hub's whole per-connection memory budget. This reader
//! reads each frame's header and exact payload straight from the socket into a buffer of the
//! frame's size, refuses an oversize frame before reading its payload, and unmasks with
//! `fastwebsockets::unmask`. Fragment reassembly is [`super::message`]'s; what to answer is
//! [`super::reader`]'s.
//!
//! Owns nothing between frames: one frame's header and payload while it is read.

use fastwebsockets::OpCode;
use tokio::io::{AsyncRead, AsyncReadExt};

/// One frame from the client, unmasked.
#[derive(Debug)]
pub(crate) struct ClientFrame {
    /// Last frame of its message.
    pub(crate) fin: bool,
    /// The opcode.
    pub(crate) opcode: OpCode,
    /// The payload.
    pub(crate) payload: Vec<u8>,
    /// RSV1: the message this frame starts is compressed (permessage-deflate).
    pub(crate) compressed: bool,
}

/// Why no frame was read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// The socket ended or failed.
    Gone,
    /// The frame is larger than allowed (close 1009).
    TooBig,
    /// The frame breaks the protocol (close 1002).
    Protocol(&'static str),
}

impl From<std::io::Error> for FrameError {
    fn from(_: std::io::Error) -> Self {
        FrameError::Gone
    }
}

/// Reads one frame of at most `max` payload bytes. With `deflate` (negotiated), RSV1 may mark
/// the first frame of a data message as compressed; any other reserved bit is an error.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
    deflate: bool,
) -> Result<ClientFrame, FrameError> {
    let mut head = [0u8; 2];
    r.read_exact(&mut head).await?;
    let fin = head[0] & 0x80 != 0;
    let op =
        OpCode::try_from(head[0] & 0x0F).map_err(|_| FrameError::Protocol("unknown opcode"))?;
    let compressed = head[0] & 0x40 != 0;
    let starts_message = matches!(op, OpCode::Text | OpCode::Binary);
    if head[0] & 0x30 != 0 || (compressed && !(deflate && starts_message)) {
        return Err(FrameError::Protocol("reserved bits set"));
    }
    let control = matches!(op, OpCode::Close | OpCode::Ping | OpCode::Pong);
    if head[1] & 0x80 == 0 {
        return Err(FrameError::Protocol("client frames must be masked"));
    }
    let len = match head[1] & 0x7F {
        126 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b).await?;
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            r.read_exact(&mut b).await?;
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    if control && !fin {
        return Err(FrameError::Protocol("fragmented control frame"));
    }
    if control && len > 125 {
        return Err(FrameError::Protocol("control frame longer than 125 bytes"));
    }
    if len > max as u64 {
        return Err(FrameError::TooBig);
    }
    let mut mask = [0u8; 4];
    r.read_exact(&mut mask).await?;
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload).await?;
    fastwebsockets::unmask(&mut payload, mask);
    Ok(ClientFrame {
        fin,
        opcode: op,
        payload,
        compressed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut f = vec![first];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n < 65536 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    async fn read(bytes: Vec<u8>, max: usize) -> Result<ClientFrame, FrameError> {
        read_frame(&mut std::io::Cursor::new(bytes), max, false).await
    }

    #[tokio::test]
    async fn reads_and_unmasks_every_length_form() {
        for n in [0usize, 5, 125, 126, 300, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
            let f = read(masked(0x81, &payload, [1, 2, 3, 4]), 1 << 20)
                .await
                .unwrap();
            assert!(f.fin);
            assert_eq!(f.opcode, OpCode::Text);
            assert_eq!(f.payload, payload, "length {n}");
        }
    }

    #[tokio::test]
    async fn refuses_bad_frames() {
        assert_eq!(
            read(masked(0x81, b"abc", [0; 4]), 2).await.unwrap_err(),
            FrameError::TooBig
        );
        assert!(matches!(
            read(masked(0xC1, b"x", [0; 4]), 9).await,
            Err(FrameError::Protocol(_))
        ));
        assert!(matches!(
            read(masked(0x83, b"x", [0; 4]), 9).await,
            Err(FrameError::Protocol(_))
        ));
        assert!(matches!(
            read(masked(0x09, b"x", [0; 4]), 9).await,
            Err(FrameError::Protocol(_))
        ));
        assert!(matches!(
            read(masked(0x89, &[0; 126], [0; 4]), 999).await,
            Err(FrameError::Protocol(_))
        ));
        assert!(matches!(
            read(vec![0x81, 0x01, b'x'], 9).await,
            Err(FrameError::Protocol(_))
        ));
        assert_eq!(read(vec![0x81], 9).await.unwrap_err(), FrameError::Gone);
        let partial = masked(0x81, b"hello", [9; 4]);
        assert_eq!(
            read(partial[..6].to_vec(), 9).await.unwrap_err(),
            FrameError::Gone
        );
    }
}
