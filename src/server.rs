//! Start-up and shutdown: builds the hub from a configuration, starts one single-threaded tokio
//! runtime per shard, accepts connections on the control thread and hands each to a shard in
//! turn, and on SIGTERM/SIGINT says goodbye to every client before exiting.
//!
//! One acceptor handing off, rather than one SO_REUSEPORT listener per shard: connections are
//! spread evenly whatever the kernel's hash does with few source addresses (load tests, a load
//! balancer), a port is never silently shared with another process, and stopping the accept
//! loop stops all intake at once. Accepting costs one system call per connection, not per event.
//!
//! Owns the process's runtimes and threads; nothing else changes them.

use crate::auth;
use crate::broker;
use crate::config::Config;
use crate::history::History;
use crate::http;
use crate::hub::{Edges, Hub};
use crate::index::SubscriptionIndex;
use crate::metrics::{set_thread_shard, Metrics};
use crate::router::Router;
use crate::tls;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A connection on its way from the acceptor to a shard.
type Handoff = (std::net::TcpStream, SocketAddr);

/// Connections accepted but not yet taken by one shard, at most. A shard takes each at once
/// (register, spawn), so this fills only when a shard's runtime is wedged; then the others
/// get the connections, and with every shard full the acceptor waits, leaving new
/// connections in the kernel's listen backlog instead of in memory.
const HANDOFF_CAPACITY: usize = 1024;

/// Builds the hub for `config` and starts its broker.
pub fn build_hub(config: Config) -> anyhow::Result<Arc<Hub>> {
    let shards = config.shard_count();
    let metrics = Arc::new(Metrics::new(shards));
    let index = Arc::new(SubscriptionIndex::start(
        shards,
        config.websocket.max_index_keys,
    )?);
    let history = Arc::new(History::new(&config.history));
    let router = Arc::new(Router::new(
        index.clone(),
        metrics.clone(),
        history,
        shards,
        config.backpressure.max_pending_events,
    ));
    warn_if_open(&config);
    let broker = broker::from_config(&config).map_err(|e| anyhow::anyhow!(e))?;
    let edges = Edges {
        broker,
        auth: auth::from_config(&config.auth).map_err(|e| anyhow::anyhow!(e))?,
        tls: tls::acceptor(&config.tls).map_err(|e| anyhow::anyhow!(e))?,
    };
    let hub = Arc::new(Hub::new(config, shards, index, metrics, router, edges));
    hub.broker.start(hub.clone())?;
    Ok(hub)
}

/// Warns loudly when auth is off on an address other machines can reach: anyone there may read
/// every event, list clients and publish.
fn warn_if_open(config: &Config) {
    let loopback = config.host == "localhost"
        || config
            .host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !config.auth.enabled && !loopback {
        tracing::warn!(
            host = %config.host,
            "AUTH IS DISABLED on a non-loopback address: any client may subscribe to every event, \
             and /api/v1/streaming/broadcast, /clients, /status and /subscriptions need no token"
        );
    }
}

/// Runs the service until SIGTERM or SIGINT, then shuts down gracefully.
pub fn run(config: Config) -> anyhow::Result<()> {
    let hub = build_hub(config)?;
    let mut shards = Vec::new();
    for i in 0..hub.shard_count() {
        let (tx, rx) = mpsc::channel::<Handoff>(HANDOFF_CAPACITY);
        let hub = hub.clone();
        std::thread::Builder::new()
            .name(format!("streamhub-shard-{i}"))
            .spawn(move || shard_main(hub, i, rx))?;
        shards.push(tx);
    }
    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    control.block_on(accept_until_signal(hub.clone(), shards))?;
    control.block_on(drain(hub));
    Ok(())
}

/// One shard: a single-threaded runtime serving the connections handed to it.
fn shard_main(hub: Arc<Hub>, i: usize, mut rx: mpsc::Receiver<Handoff>) {
    set_thread_shard(i);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(shard = i, error = %e, "cannot start shard runtime");
            return;
        }
    };
    rt.block_on(async move {
        // Before each fan-out, the shard checks how busy it has been and sets its writers'
        // coalescing window (load.rs).
        let (mut gauge, writers) = (crate::load::Gauge::new(), hub.writers.clone());
        let sample = move || gauge.sample(&writers.windows, i);
        tokio::spawn(hub.router.clone().run_shard(i, sample));
        while let Some((std_stream, remote)) = rx.recv().await {
            match tokio::net::TcpStream::from_std(std_stream) {
                Ok(stream) => {
                    tokio::spawn(http::serve(hub.clone(), i, stream, remote));
                }
                Err(e) => tracing::warn!(error = %e, "cannot register connection"),
            }
        }
        // The acceptor is gone: keep serving open connections until the process exits.
        std::future::pending::<()>().await;
    });
}

/// Binds the listener, prints its address, and accepts until a shutdown signal.
async fn accept_until_signal(
    hub: Arc<Hub>,
    shards: Vec<mpsc::Sender<Handoff>>,
) -> anyhow::Result<()> {
    let cfg = &hub.config;
    let addr: SocketAddr = tokio::net::lookup_host((cfg.host.as_str(), cfg.port))
        .await?
        .next()
        .ok_or_else(|| anyhow::anyhow!("host {} resolves to no address", cfg.host))?;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket
        .bind(&addr.into())
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    socket.listen(4096)?;
    let listener = tokio::net::TcpListener::from_std(socket.into())?;
    let local = listener.local_addr()?;
    let mode = hub.broker.mode();
    let (http, ws) = match hub.tls {
        Some(_) => ("https", "wss"),
        None => ("http", "ws"),
    };
    println!(
        "streamhub listening on {http}://{local} ({ws}://{local}/ws), {} shard(s), mode {mode}",
        shards.len()
    );
    tracing::info!(%local, shards = shards.len(), mode, "listening");

    let mut next = 0usize;
    let signal = shutdown_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    let Ok(std_stream) = stream.into_std() else { continue };
                    next = (next + 1) % shards.len();
                    if let Err(conn) = hand_off(&shards, next, (std_stream, remote)) {
                        tokio::select! {
                            _ = shards[next].send(conn) => {}
                            () = &mut signal => break,
                        }
                    }
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = &mut signal => break,
        }
    }
    tracing::info!("shutdown signal received");
    Ok(())
}

/// Hands a connection to shard `first`, or the next shard with room; gives it back when every
/// shard's hand-off is full.
fn hand_off(
    shards: &[mpsc::Sender<Handoff>],
    first: usize,
    mut conn: Handoff,
) -> Result<(), Handoff> {
    for k in 0..shards.len() {
        match shards[(first + k) % shards.len()].try_send(conn) {
            Ok(()) => return Ok(()),
            // Full, or the shard's thread is gone: try the next one.
            Err(mpsc::error::TrySendError::Full(c) | mpsc::error::TrySendError::Closed(c)) => {
                conn = c
            }
        }
    }
    Err(conn)
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// Tells every client to go and waits, up to the deadline, until all are gone.
async fn drain(hub: Arc<Hub>) {
    hub.begin_shutdown();
    let deadline = Instant::now() + Duration::from_secs_f64(hub.config.shutdown.timeout_seconds);
    while hub.metrics.connections_active.load(Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = hub.metrics.connections_active.load(Relaxed);
    if left > 0 {
        tracing::warn!(left, "shutdown deadline passed with connections still open");
    } else {
        tracing::info!("all clients disconnected");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real accepted connection to hand off.
    fn conn(listener: &std::net::TcpListener) -> Handoff {
        let addr = listener.local_addr().expect("addr");
        let _client = std::net::TcpStream::connect(addr).expect("connect");
        listener.accept().expect("accept")
    }

    #[test]
    fn a_full_shard_passes_connections_on_and_all_full_gives_them_back() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let (a, mut a_rx) = mpsc::channel::<Handoff>(1);
        let (b, mut b_rx) = mpsc::channel::<Handoff>(1);
        let shards = [a, b];
        assert!(hand_off(&shards, 0, conn(&listener)).is_ok());
        // Shard 0 is full: the next goes to shard 1 even though 0 was asked first.
        assert!(hand_off(&shards, 0, conn(&listener)).is_ok());
        assert!(a_rx.try_recv().is_ok() && b_rx.try_recv().is_ok());
        assert!(hand_off(&shards, 1, conn(&listener)).is_ok());
        assert!(hand_off(&shards, 1, conn(&listener)).is_ok());
        // Both full: the acceptor gets it back and waits instead of queueing more.
        assert!(hand_off(&shards, 0, conn(&listener)).is_err());
        drop(b_rx);
        // A shard that is gone is skipped: what was asked of shard 1 goes to shard 0.
        assert!(a_rx.try_recv().is_ok());
        assert!(hand_off(&shards, 1, conn(&listener)).is_ok());
        assert!(a_rx.try_recv().is_ok());
    }
}
