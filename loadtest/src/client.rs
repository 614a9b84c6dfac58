//! One load-test client: connect from a chosen source address, send its opening messages, wait for
//! the answers, then read events and record publish-to-receipt latency.
//!
//! Latencies go to the collector in batches (one channel send per batch, never a lock per
//! message). Duplicates are found per publisher with a window of recent sequence numbers
//! ([`SeenWindow`]): an event that arrives after a later one of the same publisher (sharded
//! Pub/Sub feeds a client from two channels) is counted as reordered, not as a duplicate.

use crate::stats::{Arrival, Sample, SeenWindow, Tally};
use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, WebSocket};
use http_body_util::Empty;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::Semaphore;

/// Samples per batch sent to the collector.
const BATCH: usize = 256;
/// Longest a partial batch waits before it is sent.
const BATCH_AGE: Duration = Duration::from_millis(200);

/// What a client needs to run.
#[derive(Clone)]
pub struct ClientSpec {
    /// Server address.
    pub server: SocketAddr,
    /// Host header / path of the WebSocket URL.
    pub host: String,
    /// Path of the WebSocket URL.
    pub path: String,
    /// What to send and wait for after connecting, in order.
    pub opening: Vec<Step>,
    /// Key of the send time in received messages.
    pub time_key: Key,
    /// Key of the sequence number.
    pub seq_key: Key,
    /// Key of the publisher id (absent = publisher 0).
    pub publisher_key: Key,
    /// Number of publishers.
    pub publishers: usize,
    /// With TLS: connects through this (the hub's certificate trusted).
    pub tls: Option<tokio_rustls::TlsConnector>,
    /// Server-Sent Events instead of a WebSocket: `path` is the stream's path and query, the
    /// opening is empty, and the stream's `subscribed` says the client is ready.
    pub sse: bool,
}

/// One step of a client's opening.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this text.
    Send(String),
    /// Wait for a message: any one (`None`, streamhub's one reply per request), or the first
    /// whose text starts with this (socket.io's `0{...}` open packet, say); others are skipped.
    Expect(Option<String>),
}

/// Longest a client waits for one expected opening message.
const EXPECT_TIMEOUT: Duration = Duration::from_secs(30);

/// When a client became ready, and what it saw.
#[derive(Debug, Default, Clone)]
pub struct ClientOutcome {
    /// Time from the run's start to the TCP+WebSocket connection.
    pub connected_after: Option<Duration>,
    /// Time from the run's start to the last opening reply (subscribed).
    pub ready_after: Option<Duration>,
    /// The server-assigned client id, if the reply to `auth` named one.
    pub client_id: Option<String>,
    /// Events received and duplicates.
    pub tally: Tally,
    /// Why it ended early, if it did.
    pub error: Option<String>,
}

/// Source address number `i` of `n`: 127.0.0.1, 127.0.0.2, ...
pub fn source_ip(i: usize, n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % n as usize) as u8))
}

/// Nanoseconds since the Unix epoch.
pub fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// A key to look for in received messages (quotes included), its searcher built once: building
/// one per message was a tenth of the harness's own CPU.
#[derive(Clone, Debug)]
pub struct Key(memchr::memmem::Finder<'static>);

impl Key {
    /// Searches for exactly these bytes.
    pub fn new(key: &[u8]) -> Self {
        Self(memchr::memmem::Finder::new(key).into_owned())
    }
}

/// The unsigned number after `"key":` in `text`.
pub fn number_after(text: &[u8], key: &Key) -> Option<u64> {
    let mut i = key.0.find(text)? + key.0.needle().len();
    while i < text.len() && (text[i] == b'"' || text[i] == b':' || text[i] == b' ') {
        i += 1;
    }
    let start = i;
    let mut v: u64 = 0;
    while i < text.len() && text[i].is_ascii_digit() {
        v = v.checked_mul(10)?.checked_add(u64::from(text[i] - b'0'))?;
        i += 1;
    }
    (i > start).then_some(v)
}

/// Receive buffer of a client that will stop reading: small, so that backpressure reaches the
/// server within a run instead of being absorbed by megabytes of kernel buffers.
const STALLED_RCVBUF: u32 = 4096;

/// A connection to the server: TCP, or TLS over TCP.
pub(crate) trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// A connection from `source` to the server (TLS when the spec says so).
pub(crate) async fn dial(
    spec: &ClientSpec,
    source: IpAddr,
    stalled: bool,
) -> anyhow::Result<Box<dyn Io>> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    if stalled {
        socket.set_recv_buffer_size(STALLED_RCVBUF)?;
    }
    let stream = socket.connect(spec.server).await?;
    stream.set_nodelay(true)?;
    Ok(match &spec.tls {
        None => Box::new(stream),
        Some(tls) => {
            let name = rustls::pki_types::ServerName::IpAddress(spec.server.ip().into());
            Box::new(tls.connect(name, stream).await?)
        }
    })
}

/// Opens a WebSocket from `source`.
pub async fn connect(
    spec: &ClientSpec,
    source: IpAddr,
    stalled: bool,
) -> anyhow::Result<WebSocket<TokioIo<Upgraded>>> {
    let stream = dial(spec, source, stalled).await?;
    let req = hyper::Request::builder()
        .method("GET")
        .uri(&spec.path)
        .header("Host", &spec.host)
        .header(hyper::header::UPGRADE, "websocket")
        .header(hyper::header::CONNECTION, "upgrade")
        .header(
            "Sec-WebSocket-Key",
            fastwebsockets::handshake::generate_key(),
        )
        .header("Sec-WebSocket-Version", "13")
        .body(Empty::<Bytes>::new())?;
    let (ws, _) =
        fastwebsockets::handshake::client(&hyper_util::rt::TokioExecutor::new(), req, stream)
            .await?;
    Ok(ws)
}

/// What connects a client to the rest of the run.
pub struct Wiring {
    /// When the run started (samples are filed by second since then).
    pub started: Instant,
    /// Where latency samples go, in batches.
    pub samples: UnboundedSender<Vec<Sample>>,
    /// Told once the client is ready (or failed to become so).
    pub ready: UnboundedSender<()>,
    /// Turns true when the run stops.
    pub stop: tokio::sync::watch::Receiver<bool>,
    /// Limits how many clients connect at once; held until the opening is answered.
    pub gate: Option<Arc<Semaphore>>,
}

/// A client connected and subscribed.
type Ws = WebSocket<TokioIo<Upgraded>>;

/// Runs one client until the connection ends or the run stops: connect and open (holding a
/// connect slot), then read events, or, when `stalled`, hold the connection without reading.
pub async fn run(
    spec: Arc<ClientSpec>,
    source: IpAddr,
    stalled: bool,
    mut w: Wiring,
) -> ClientOutcome {
    let permit = match &w.gate {
        Some(g) => g.clone().acquire_owned().await.ok(),
        None => None,
    };
    if spec.sse {
        return crate::sse_client::run(spec, source, w, permit).await;
    }
    let mut out = ClientOutcome::default();
    let opened = open(&spec, source, stalled, w.started, &mut out).await;
    drop(permit);
    let _ = w.ready.send(());
    let ws = match opened {
        Ok(ws) => ws,
        Err(e) => {
            out.error = Some(e);
            return out;
        }
    };
    if stalled {
        // Hold the connection without ever reading again.
        let _ = w.stop.wait_for(|s| *s).await;
        return out;
    }
    read_events(ws, &spec, &mut w, &mut out).await;
    out
}

/// Connects and sends the opening, waiting for each reply when the protocol has them; records
/// when the client connected and became ready, and its id.
async fn open(
    spec: &ClientSpec,
    source: IpAddr,
    stalled: bool,
    started: Instant,
    out: &mut ClientOutcome,
) -> Result<Ws, String> {
    let mut ws = connect(spec, source, stalled)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    out.connected_after = Some(started.elapsed());
    for step in &spec.opening {
        match step {
            Step::Send(text) => ws
                .write_frame(Frame::text(Payload::Borrowed(text.as_bytes())))
                .await
                .map_err(|e| format!("send: {e}"))?,
            Step::Expect(prefix) => {
                tokio::time::timeout(EXPECT_TIMEOUT, expect(&mut ws, prefix.as_deref(), out))
                    .await
                    .map_err(|_| format!("no reply within {EXPECT_TIMEOUT:?}"))??
            }
        }
    }
    out.ready_after = Some(started.elapsed());
    Ok(ws)
}

/// Reads until a data message arrives that starts with `prefix` (any, when `None`); takes the
/// client id from it if it names one.
async fn expect(ws: &mut Ws, prefix: Option<&str>, out: &mut ClientOutcome) -> Result<(), String> {
    loop {
        let reply = ws
            .read_frame()
            .await
            .map_err(|e| format!("opening reply: {e}"))?;
        match reply.opcode {
            OpCode::Text | OpCode::Binary => {}
            OpCode::Close => return Err("closed during the opening".into()),
            _ => continue,
        }
        if prefix.is_some_and(|p| !reply.payload.starts_with(p.as_bytes())) {
            continue;
        }
        if out.client_id.is_none() {
            out.client_id = serde_json::from_slice::<serde_json::Value>(&reply.payload)
                .ok()
                .and_then(|v| v["client_id"].as_str().map(str::to_string));
        }
        return Ok(());
    }
}

/// Reads events until the connection ends or the run stops, tallying each and sending latency
/// samples in batches.
async fn read_events(mut ws: Ws, spec: &ClientSpec, w: &mut Wiring, out: &mut ClientOutcome) {
    let mut seen = vec![SeenWindow::default(); spec.publishers.max(1)];
    let mut batch: Vec<Sample> = Vec::with_capacity(BATCH);
    let mut batch_started = Instant::now();
    // One stop future for the whole loop: a new one per message would join and leave the
    // watch channel's waiter list, shared by every client, once per delivery.
    let stop = w.stop.wait_for(|s| *s);
    tokio::pin!(stop);
    loop {
        let frame = tokio::select! {
            biased;
            _ = &mut stop => break,
            f = ws.read_frame() => f,
        };
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                out.error = Some(format!("read: {e}"));
                break;
            }
        };
        match frame.opcode {
            OpCode::Text | OpCode::Binary => {}
            OpCode::Close => break,
            _ => continue,
        }
        let Some(latency_us) = tally(&frame.payload, spec, &mut seen, out) else {
            continue;
        };
        let second = w.started.elapsed().as_secs() as u32;
        batch.push(Sample { second, latency_us });
        if batch.len() >= BATCH || batch_started.elapsed() >= BATCH_AGE {
            let _ = w
                .samples
                .send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)));
            batch_started = Instant::now();
        }
    }
    if !batch.is_empty() {
        let _ = w.samples.send(batch);
    }
}

/// Counts one received message; returns its latency in microseconds when it is a new load-test
/// event (not a duplicate, not some other message such as a `QUEUE_FULL` notice).
pub(crate) fn tally(
    text: &[u8],
    spec: &ClientSpec,
    seen: &mut [SeenWindow],
    out: &mut ClientOutcome,
) -> Option<u32> {
    let seq = number_after(text, &spec.seq_key)?;
    let sent = number_after(text, &spec.time_key)?;
    let p = number_after(text, &spec.publisher_key).unwrap_or(0) as usize % seen.len();
    match seen[p].record(seq) {
        Arrival::Duplicate => {
            out.tally.duplicates += 1;
            return None;
        }
        Arrival::Late => out.tally.reordered += 1,
        Arrival::New => {}
    }
    out.tally.received += 1;
    let latency_us = now_ns().saturating_sub(u128::from(sent)) / 1000;
    Some(latency_us.min(u128::from(u32::MAX)) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_found_after_keys() {
        let t = br#"{"type":"event","payload":{"seq":42,"sent_ns":1700000000123456789,"pad":"x"}}"#;
        assert_eq!(number_after(t, &Key::new(b"\"seq\"")), Some(42));
        assert_eq!(
            number_after(t, &Key::new(b"\"sent_ns\"")),
            Some(1_700_000_000_123_456_789)
        );
        assert_eq!(number_after(t, &Key::new(b"\"missing\"")), None);
        assert_eq!(number_after(br#"{"seq":"x"}"#, &Key::new(b"\"seq\"")), None);
        assert_eq!(
            number_after(br#"{"seq":99999999999999999999999}"#, &Key::new(b"\"seq\"")),
            None
        );
    }

    #[test]
    fn numbers_are_found_inside_an_escaped_string() {
        // A Pusher server delivers the body as the escaped `data` string.
        let t = br#"{"event":"GPU_UPDATE","channel":"gpu","data":"{\"seq\":7,\"sent_ns\":99}"}"#;
        assert_eq!(number_after(t, &Key::new(br#"\"seq\""#)), Some(7));
        assert_eq!(number_after(t, &Key::new(br#"\"sent_ns\""#)), Some(99));
        assert_eq!(
            number_after(t, &Key::new(b"\"seq\"")),
            None,
            "the plain key is not there"
        );
    }

    #[test]
    fn source_addresses_cycle() {
        assert_eq!(source_ip(0, 3).to_string(), "127.0.0.1");
        assert_eq!(source_ip(4, 3).to_string(), "127.0.0.2");
    }
}
