//! The connect phase: every client connects (at most `connect_concurrency` at once), sends its
//! opening and waits for the replies, then reads events until the run stops.

use super::{parse_ws_url, Run};
use crate::client::{self, ClientOutcome, ClientSpec, Key, Step, Wiring};
use crate::fixtures::ProcSample;
use crate::hub::Hub;
use crate::scenario::Scenario;
use crate::stats::Sample;
use crate::workload::Sub;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

/// The clients, once connected.
pub(super) struct Connected {
    /// Each client's task, in client order; each ends with its outcome once the run stops.
    pub(super) tasks: Vec<JoinHandle<ClientOutcome>>,
    /// What the connect phase measured.
    pub(super) figures: ConnectFigures,
}

/// What the connect phase measured.
pub(super) struct ConnectFigures {
    /// From the start until every client was ready (or the connect deadline passed).
    pub(super) all_ready_at: Duration,
    /// The hub right after.
    pub(super) after_connect: Option<ProcSample>,
}

/// Starts every client and waits until all are ready, failed, or the connect deadline passed.
pub(super) async fn connect(
    run: &Run,
    subs: &[Sub],
    samples: mpsc::UnboundedSender<Vec<Sample>>,
) -> Connected {
    run.progress.set_message("connecting");
    let s = &run.s;
    let spec = match client_spec(s, &run.hub) {
        Ok(spec) => Arc::new(spec),
        Err(e) => {
            eprintln!("cannot build the clients: {e}");
            return Connected {
                tasks: Vec::new(),
                figures: ConnectFigures {
                    all_ready_at: run.started.elapsed(),
                    after_connect: run.hub.sample(),
                },
            };
        }
    };
    let (ready_tx, ready_rx) = mpsc::unbounded_channel::<()>();
    let gate = (s.connect_concurrency > 0).then(|| Arc::new(Semaphore::new(s.connect_concurrency)));
    let tasks = subs
        .iter()
        .enumerate()
        .map(|(i, sub)| {
            let (opening, path) = match (&s.generic, spec.sse) {
                (Some(_), _) => (spec.opening.clone(), spec.path.clone()),
                (None, false) => (streamhub_opening(sub, &run.tokens[i]), spec.path.clone()),
                (None, true) => (Vec::new(), sse_path(sub, &run.tokens[i])),
            };
            let spec = Arc::new(ClientSpec {
                opening,
                path,
                ..(*spec).clone()
            });
            let source = client::source_ip(i, s.source_addresses);
            let wiring = Wiring {
                started: run.started,
                samples: samples.clone(),
                ready: ready_tx.clone(),
                stop: run.stop.subscribe(),
                gate: gate.clone(),
            };
            tokio::spawn(client::run(spec, source, run.is_stalled(i), wiring))
        })
        .collect();
    drop(ready_tx);
    let all_ready_at = wait_ready(run, ready_rx).await;
    Connected {
        tasks,
        figures: ConnectFigures {
            all_ready_at,
            after_connect: run.hub.sample(),
        },
    }
}

/// Counts clients as they become ready (or fail), until all have or the deadline passes;
/// returns when that was.
async fn wait_ready(run: &Run, mut ready_rx: mpsc::UnboundedReceiver<()>) -> Duration {
    let n = run.s.clients;
    let deadline = Instant::now() + Duration::from_secs(60) + Duration::from_millis(n as u64 * 2);
    let mut ready = 0;
    while ready < n && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(200), ready_rx.recv()).await {
            Ok(Some(())) => {
                ready += 1;
                run.progress.set_position(ready as u64);
            }
            Ok(None) => break,
            Err(_) => {}
        }
    }
    run.started.elapsed()
}

/// The client settings shared by every client.
fn client_spec(s: &Scenario, hub: &Hub) -> anyhow::Result<ClientSpec> {
    let quoted = |k: &str| Key::new(format!("\"{k}\"").as_bytes());
    Ok(match &s.generic {
        Some(g) => {
            let (server, host, path) = parse_ws_url(&g.url)?;
            // Pusher delivers the body as an escaped string: `\"sent_ns\":123`.
            let quoted = |k: &str| match g.pusher {
                Some(_) => Key::new(format!("\\\"{k}\\\"").as_bytes()),
                None => quoted(k),
            };
            ClientSpec {
                server,
                host,
                path,
                opening: g.on_connect.iter().map(|s| s.to_step()).collect(),
                time_key: quoted(&g.time_key),
                seq_key: quoted(&g.seq_key),
                publisher_key: quoted("publisher"),
                publishers: s.publish.publishers,
                tls: None,
                sse: false,
            }
        }
        None => ClientSpec {
            server: hub.addr,
            host: hub.addr.to_string(),
            path: "/ws".into(),
            opening: Vec::new(),
            time_key: quoted("sent_ns"),
            seq_key: quoted("seq"),
            publisher_key: quoted("publisher"),
            publishers: s.publish.publishers,
            tls: hub.tls.clone().map(tokio_rustls::TlsConnector::from),
            sse: s.transport == crate::scenario::Transport::Sse,
        },
    })
}

/// A streamhub SSE client's stream: its subscription and token in the query.
fn sse_path(sub: &Sub, token: &str) -> String {
    let mut q = sub.query();
    q.push_str("&access_token=");
    q.extend(form_urlencoded::byte_serialize(token.as_bytes()));
    format!("/api/v1/streaming/events?{q}")
}

/// A streamhub client's opening: authenticate, then subscribe, each answered by one reply.
fn streamhub_opening(sub: &Sub, token: &str) -> Vec<Step> {
    vec![
        Step::Send(serde_json::json!({"type": "auth", "token": token}).to_string()),
        Step::Expect(None),
        Step::Send(sub.message().to_string()),
        Step::Expect(None),
    ]
}
