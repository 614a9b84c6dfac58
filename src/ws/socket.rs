//! The socket under one WebSocket: plain TCP, or TLS (rustls) over TCP. Split into a read half
//! for the reader and a write half for the writer. On plain TCP the writer sends a batch of
//! frames with non-blocking `writev` calls straight on the socket; through TLS it writes the
//! batch into the TLS session (which encrypts it into records) and flushes once per batch.
//!
//! Owns one connection's socket halves; the reader reads one, the writer alone writes the other.

use crate::client::ClientHandle;
use crate::frame::OutFrame;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// Most buffers passed to one vectored write.
const MAX_IOV: usize = 64;

/// An upgraded connection's socket.
pub(crate) enum Socket {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

/// The reading half.
pub(crate) enum ReadHalf {
    /// Plain TCP.
    Plain(OwnedReadHalf),
    /// TLS.
    Tls(tokio::io::ReadHalf<TlsStream<TcpStream>>),
}

/// The writing half.
pub(crate) enum WriteHalf {
    /// Plain TCP.
    Plain(OwnedWriteHalf),
    /// TLS.
    Tls(tokio::io::WriteHalf<TlsStream<TcpStream>>),
}

impl Socket {
    /// Splits the socket for the reader and the writer.
    pub(crate) fn split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Socket::Plain(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Plain(r), WriteHalf::Plain(w))
            }
            Socket::Tls(s) => {
                let (r, w) = tokio::io::split(*s);
                (ReadHalf::Tls(r), WriteHalf::Tls(w))
            }
        }
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Plain(r) => Pin::new(r).poll_read(cx, buf),
            ReadHalf::Tls(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

impl WriteHalf {
    /// Writes every frame of `batch`, many per system call. Fails with `TimedOut` when the socket
    /// accepts nothing for `stall_limit`. On plain TCP the first `writev` is tried at once and
    /// usually takes everything; only a full socket, or TLS, goes on to the slow path, whose
    /// state is boxed so that every connection's writer task does not carry it.
    pub(crate) async fn write_batch(
        &mut self,
        batch: &[Arc<OutFrame>],
        client: &ClientHandle,
        stall_limit: Duration,
    ) -> io::Result<()> {
        // (frame index, offset in that frame) of the first unwritten byte.
        let mut pos = (0usize, 0usize);
        if let WriteHalf::Plain(half) = self {
            match try_write(half, batch, &mut pos) {
                Ok(true) => return Ok(()),
                Ok(false) => client.mark_progress(Instant::now()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Box::pin(self.write_rest(batch, pos, client, stall_limit)).await
    }

    /// The rest of a batch from `pos`: waits for a full socket to take more, or writes through
    /// the TLS session and flushes once.
    async fn write_rest(
        &mut self,
        batch: &[Arc<OutFrame>],
        mut pos: (usize, usize),
        client: &ClientHandle,
        stall_limit: Duration,
    ) -> io::Result<()> {
        match self {
            WriteHalf::Plain(half) => loop {
                match try_write(half, batch, &mut pos) {
                    Ok(true) => return Ok(()),
                    // Partial progress on a full socket: the client is reading, if slowly.
                    Ok(false) => client.mark_progress(Instant::now()),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        bounded(stall_limit, half.writable()).await?;
                    }
                    Err(e) => return Err(e),
                }
            },
            WriteHalf::Tls(half) => {
                // Frame by frame into the TLS session (it copies them into records), one flush
                // per batch.
                for f in batch {
                    bounded(stall_limit, half.write_all(f.bytes())).await?;
                    client.mark_progress(Instant::now());
                }
                bounded(stall_limit, half.flush()).await
            }
        }
    }

    /// Ends the writing side after the close frame (a TLS close_notify first, under TLS).
    pub(crate) async fn shutdown(&mut self) {
        let _ = match self {
            WriteHalf::Plain(h) => h.shutdown().await,
            WriteHalf::Tls(h) => h.shutdown().await,
        };
    }
}

/// Waits for `io` at most `limit`; past it, `TimedOut`.
async fn bounded<T>(
    limit: Duration,
    io: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    match tokio::time::timeout(limit, io).await {
        Ok(r) => r,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// Fills `iov` with the unwritten bytes of `batch` from `pos`; returns how many it filled.
fn iovecs<'a>(batch: &'a [Arc<OutFrame>], pos: (usize, usize), iov: &mut [IoSlice<'a>]) -> usize {
    let mut n = 0;
    for (i, f) in batch[pos.0..].iter().take(iov.len()).enumerate() {
        let b = f.bytes();
        iov[i] = IoSlice::new(if i == 0 { &b[pos.1..] } else { b });
        n = i + 1;
    }
    n
}

/// Moves `pos` past `written` bytes.
fn advance(batch: &[Arc<OutFrame>], pos: &mut (usize, usize), mut written: usize) {
    while written > 0 && pos.0 < batch.len() {
        let left = batch[pos.0].bytes().len() - pos.1;
        if written >= left {
            written -= left;
            *pos = (pos.0 + 1, 0);
        } else {
            pos.1 += written;
            written = 0;
        }
    }
}

/// One non-blocking `writev` from `pos`; true when all is written, false on partial progress.
fn try_write(
    half: &OwnedWriteHalf,
    batch: &[Arc<OutFrame>],
    pos: &mut (usize, usize),
) -> io::Result<bool> {
    let mut iov = [IoSlice::new(&[]); MAX_IOV];
    let n = iovecs(batch, *pos, &mut iov);
    if n == 0 {
        return Ok(true);
    }
    let written = half.try_write_vectored(&iov[..n])?;
    if written == 0 {
        return Err(io::ErrorKind::WriteZero.into());
    }
    advance(batch, pos, written);
    Ok(pos.0 >= batch.len())
}
