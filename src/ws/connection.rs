//! One WebSocket connection after the upgrade: registers its client, runs the reader, the writer
//! and the session's authentication watchdog side by side on the connection's shard, finishes
//! the closing handshake, and unregisters the client.
//!
//! Owns one connection's tasks while it lives; registers and unregisters the client with the hub.

use super::close::CLOSE_GRACE;
use super::reader::{read_loop, ReaderExit};
use super::socket::Socket;
use super::writer::{self, WriterExit};
use crate::backoff::spread;
use crate::client::{ClientHandle, Goodbye};
use crate::codec::Wire;
use crate::hub::{ConnectionSlot, Hub};
use crate::preauth::Ticket;
use crate::session::Session;
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::AsyncReadExt;

/// What a connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// The hub's protocol (`/ws`), in the wire format the upgrade chose.
    Hub(Wire),
    /// Every message back as sent (`websocket.echo_path`, conformance tests).
    Echo(Wire),
}

/// The side of a connection left to finish its part of the closing handshake.
enum Finish {
    /// The writer: it has a close frame queued.
    Writer,
    /// The reader: the peer may still answer our close frame.
    Reader,
    /// Both: a close frame is queued, and the peer may answer it.
    Both,
}

/// Serves one upgraded connection until it ends. `leftover` holds bytes read past the upgrade
/// request (the client's first frames, if it did not wait for the 101).
///
/// Registering the client, splitting the socket and spawning the writer happen here, at once;
/// the returned future holds only what the connection needs while it lives (an async fn would
/// also keep a dead copy of every argument in it: 120 bytes per idle connection).
pub(crate) fn run(
    hub: Arc<Hub>,
    shard: usize,
    remote: SocketAddr,
    socket: Socket,
    leftover: Bytes,
    (slot, unauthenticated): (ConnectionSlot, Option<Ticket>),
    route: Route,
) -> impl std::future::Future<Output = ()> {
    let settings = &hub.settings.connection;
    let (wire, echo) = match route {
        Route::Hub(wire) => (wire, false),
        Route::Echo(wire) => (wire, true),
    };
    let client = new_client(&hub, shard, remote, wire, unauthenticated);
    let session = Session::new(hub.clone(), client.clone(), echo);
    hub.register(client.clone());
    if hub.is_shutting_down() {
        let advice = spread(settings.reconnect_after_ms);
        client.request_goodbye(Goodbye::shutdown(advice));
    }
    // With authentication off the watchdog never fires: it is not built at all, and with it on
    // it lives in a box of its own, so an idle task carries only a pointer for it.
    let guarded = settings.auth && !echo;
    let (read_half, write_half) = socket.split();
    // The writer is a task of its own, so waking it for an event never polls the reader.
    let writer = tokio::spawn(writer::run(write_half, client.clone(), hub.writers.clone()));
    let input = std::io::Cursor::new(leftover).chain(read_half);
    async move {
        let _slot = slot;
        let mut writer = writer;
        let reader = read_loop(&session, input);
        let watched = &session;
        let watchdog = async move {
            if guarded {
                Box::pin(watched.auth_watchdog()).await
            } else {
                std::future::pending().await
            }
        };
        tokio::pin!(reader, watchdog);

        // Which side still has something to finish once the other has ended.
        let finish = tokio::select! {
            r = &mut reader => (r == ReaderExit::CloseQueued).then_some(Finish::Writer),
            w = &mut writer => matches!(w, Ok(WriterExit::Closed)).then_some(Finish::Reader),
            () = &mut watchdog => Some(Finish::Both),
        };
        // The grace timers are boxed: only a closing connection needs one, not every idle task.
        match finish {
            // The writer still has a close frame to send.
            Some(Finish::Writer) => {
                let _ = Box::pin(tokio::time::timeout(CLOSE_GRACE, &mut writer)).await;
            }
            // The close frame is sent: give the peer a moment to answer it (the reader then
            // lingers until the peer closes its side).
            Some(Finish::Reader) if client_lingers(&session.client) => {
                let _ = Box::pin(tokio::time::timeout(CLOSE_GRACE, &mut reader)).await;
            }
            // The watchdog queued a close frame: the writer sends it, then the reader reads
            // the peer's answer and lingers.
            Some(Finish::Both) => {
                let _ = Box::pin(tokio::time::timeout(CLOSE_GRACE, &mut writer)).await;
                let _ = Box::pin(tokio::time::timeout(CLOSE_GRACE, &mut reader)).await;
            }
            Some(Finish::Reader) | None => {}
        }
        writer.abort();
        session.hub.unregister(&session.client);
    }
}

/// The client of a new connection, holding its place among the unauthenticated ones if it has
/// one.
fn new_client(
    hub: &Hub,
    shard: usize,
    remote: SocketAddr,
    wire: Wire,
    unauthenticated: Option<Ticket>,
) -> Arc<ClientHandle> {
    let settings = &hub.settings.connection;
    let client = Arc::new(
        ClientHandle::new(shard, remote, settings.queue_size, settings.drop_oldest).with_wire(wire),
    );
    client.mark_heard(Instant::now());
    if let Some(ticket) = unauthenticated {
        ticket.attach(&client);
        client.hold_unauthenticated(ticket);
    }
    client
}

/// Whether the closing handshake is waited for: not after a goodbye that says otherwise.
fn client_lingers(client: &ClientHandle) -> bool {
    client.goodbye().is_none_or(|g| g.lingers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::writer;

    /// What an idle connection holds in its two tasks, measured, with a ceiling so that growth
    /// is a decision, not an accident (see flamegraphs/README.md, "Where an idle connection's
    /// bytes go").
    #[tokio::test]
    async fn an_idle_connection_stays_small() {
        let hub = crate::server::build_hub(crate::config::Config::default()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _peer = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (stream, remote) = listener.accept().await.unwrap();
        let slot = hub.reserve_connection().unwrap();
        let client = Arc::new(ClientHandle::new(0, remote, 100, true));
        let (_, write_half) =
            Socket::Plain(tokio::net::TcpStream::connect(addr).await.unwrap()).split();
        let writer_task = writer::run(write_half, client.clone(), hub.writers.clone());
        let connection_task = run(
            hub.clone(),
            0,
            remote,
            Socket::Plain(stream),
            Bytes::new(),
            (slot, None),
            Route::Hub(Wire::default()),
        );
        let (conn, writer, handle) = (
            std::mem::size_of_val(&connection_task),
            std::mem::size_of_val(&writer_task),
            std::mem::size_of::<ClientHandle>(),
        );
        eprintln!("connection task {conn} B, writer task {writer} B, client handle {handle} B");
        // A tokio task is its future plus 104 bytes (header, scheduler, id, trailer), rounded up
        // to 128 (the task cell is cache-line aligned on x86_64): 792 keeps the connection's
        // task at 896 bytes and 408 the writer's at 512; 304 keeps `ClientHandle` with its
        // `Arc` counts in jemalloc's 320-byte class.
        assert!(conn <= 792, "the connection task grew to {conn} bytes");
        assert!(writer <= 408, "the writer task grew to {writer} bytes");
        assert!(handle <= 304, "the client handle grew to {handle} bytes");
    }
}
