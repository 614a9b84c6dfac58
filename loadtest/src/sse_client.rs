//! One load-test client over Server-Sent Events: connect from its source address, `GET` the
//! hub's event stream with the subscription in the query, wait for `subscribed`, then read events
//! and record publish-to-receipt latency exactly as a WebSocket client does
//! ([`crate::client::tally`]).

use crate::client::{self, ClientOutcome, ClientSpec, Wiring};
use crate::stats::{Sample, SeenWindow};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Samples per batch sent to the collector, and the longest a partial batch waits.
const BATCH: (usize, Duration) = (256, Duration::from_millis(200));

/// An open stream: its body, the connection's sender (kept so the connection stays), and what
/// was read past `subscribed`.
type Open = (
    Incoming,
    hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    Vec<u8>,
);

/// Runs one SSE client until its stream ends or the run stops; `permit` (a connect slot) is
/// held until it is ready.
pub(crate) async fn run<P>(
    spec: Arc<ClientSpec>,
    source: IpAddr,
    mut w: Wiring,
    permit: Option<P>,
) -> ClientOutcome {
    let mut out = ClientOutcome::default();
    let opened = open(&spec, source, w.started, &mut out).await;
    drop(permit);
    let _ = w.ready.send(());
    match opened {
        Ok((body, _sender, rest)) => read_events(body, rest, &spec, &mut w, &mut out).await,
        Err(e) => out.error = Some(e),
    }
    out
}

/// Connects, asks for the stream and reads until `subscribed`.
async fn open(
    spec: &ClientSpec,
    source: IpAddr,
    started: Instant,
    out: &mut ClientOutcome,
) -> Result<Open, String> {
    let stream = client::dial(spec, source, false)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    out.connected_after = Some(started.elapsed());
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    let req = hyper::Request::get(&spec.path)
        .header(hyper::header::HOST, &spec.host)
        .header(hyper::header::ACCEPT, "text/event-stream")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("stream refused: {}", response.status()));
    }
    let mut body = response.into_body();
    let mut buf = Vec::new();
    loop {
        let chunk = match body.frame().await {
            Some(Ok(f)) => f.into_data().unwrap_or_default(),
            _ => return Err("the stream ended during the opening".into()),
        };
        buf.extend_from_slice(&chunk);
        let needle = b"event: subscribed\n";
        if let Some(at) = memchr::memmem::find(&buf, needle) {
            let end = memchr::memmem::find(&buf[at..], b"\n\n").map_or(buf.len(), |e| at + e + 2);
            buf.drain(..end);
            out.ready_after = Some(started.elapsed());
            return Ok((body, sender, buf));
        }
    }
}

/// Reads events until the stream ends or the run stops, tallying each block and sending latency
/// samples in batches.
async fn read_events(
    mut body: Incoming,
    mut buf: Vec<u8>,
    spec: &ClientSpec,
    w: &mut Wiring,
    out: &mut ClientOutcome,
) {
    let mut seen = vec![SeenWindow::default(); spec.publishers.max(1)];
    let mut batch: Vec<Sample> = Vec::with_capacity(BATCH.0);
    let mut batch_started = Instant::now();
    let stop = w.stop.wait_for(|s| *s);
    tokio::pin!(stop);
    loop {
        // Every whole block read so far.
        let mut from = 0;
        while let Some(end) = memchr::memmem::find(&buf[from..], b"\n\n") {
            let block = &buf[from..from + end];
            from += end + 2;
            if let Some(latency_us) = client::tally(block, spec, &mut seen, out) {
                let second = w.started.elapsed().as_secs() as u32;
                batch.push(Sample { second, latency_us });
            }
        }
        buf.drain(..from);
        if batch.len() >= BATCH.0 || batch_started.elapsed() >= BATCH.1 {
            let _ = w
                .samples
                .send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH.0)));
            batch_started = Instant::now();
        }
        let frame = tokio::select! {
            biased;
            _ = &mut stop => break,
            f = body.frame() => f,
        };
        match frame {
            Some(Ok(f)) => buf.extend_from_slice(&f.into_data().unwrap_or_default()),
            Some(Err(e)) => {
                out.error = Some(format!("read: {e}"));
                break;
            }
            None => break,
        }
    }
    if !batch.is_empty() {
        let _ = w.samples.send(batch);
    }
}
