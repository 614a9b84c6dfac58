//! Test support: start the real `streamhub` binary on a free port and talk to it with real
//! WebSocket and HTTP clients over loopback.
#![allow(dead_code)]

pub mod validator;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::net::SocketAddr;
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A WebSocket client.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a WebSocket client may run over (TCP, or TLS in the TLS tests).
pub trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Stream for T {}

/// A running hub process.
pub struct HubProcess {
    /// The process.
    pub child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its start-up line (`streamhub listening on ... mode MODE`).
    pub banner: String,
    /// Holds the config file.
    _dir: tempfile::TempDir,
}

impl HubProcess {
    /// Starts the hub with `extra` YAML lines (indented two spaces, under `realtime_streaming`).
    pub fn start(extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hub.yaml");
        let yaml = format!("realtime_streaming:\n  host: \"127.0.0.1\"\n  port: 0\n{extra}");
        std::fs::write(&path, yaml).expect("write config");
        let bin = std::path::Path::new(env!("CARGO_BIN_EXE_streamhub"));
        let spawned = loadtest::hub::spawn_hub(bin, &path).expect("start streamhub");
        HubProcess {
            child: spawned.child,
            addr: spawned.addr,
            banner: spawned.banner,
            _dir: dir,
        }
    }

    /// `http://addr{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Opens a WebSocket to `/ws`.
    pub async fn ws(&self) -> Ws {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", self.addr))
            .await
            .expect("ws connect");
        ws
    }

    /// GET a JSON document.
    pub async fn get_json(&self, path: &str) -> Value {
        reqwest::get(self.url(path))
            .await
            .expect("get")
            .json()
            .await
            .expect("json")
    }

    /// GET a JSON document with a bearer token (auth on).
    pub async fn get_json_as(&self, path: &str, token: &str) -> Value {
        reqwest::Client::new()
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json")
    }

    /// POST an event to the broadcast endpoint; returns the status and body.
    pub async fn broadcast(&self, body: &str) -> (u16, Value) {
        let r = reqwest::Client::new()
            .post(self.url("/api/v1/streaming/broadcast"))
            .body(body.to_string())
            .send()
            .await
            .expect("post");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The hub's resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        loadtest::fixtures::proc_sample(self.child.id())
            .expect("the hub's /proc entry")
            .rss_kib
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
    }

    /// Waits for the process to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// Starts the binary on a config file by hand, with `envs`, stdout and stderr captured (for
/// tests that read its logs or set its environment); returns it and its start-up line.
pub fn spawn_captured(config: &std::path::Path, envs: &[(&str, &str)]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_streamhub"))
        .args(["serve", "--config"])
        .arg(config)
        .envs(envs.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start streamhub");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("start-up line");
    (child, line)
}

/// Kills a hub started with [`spawn_captured`] and returns what it logged.
pub fn kill_and_read_logs(mut child: Child) -> String {
    let _ = child.kill();
    let out = child.wait_with_output().expect("hub output");
    String::from_utf8_lossy(&out.stderr).to_string()
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a client saw next.
#[derive(Debug)]
pub enum Seen {
    /// A JSON text message.
    Json(Value),
    /// A close frame with its code.
    Closed(Option<u16>),
    /// The stream ended without a close frame.
    Ended,
    /// Nothing within the wait.
    Nothing,
}

/// The next text message or close, skipping pings and pongs, waiting up to `limit`.
pub async fn next_seen<S: Stream>(ws: &mut WebSocketStream<S>, limit: Duration) -> Seen {
    let end = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(end, ws.next()).await {
            Err(_) => return Seen::Nothing,
            Ok(None) => return Seen::Ended,
            Ok(Some(Err(_))) => return Seen::Ended,
            Ok(Some(Ok(Message::Text(t)))) => {
                return Seen::Json(serde_json::from_str(&t).expect("server sent JSON"))
            }
            Ok(Some(Ok(Message::Close(c)))) => return Seen::Closed(c.map(|c| u16::from(c.code))),
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// The next JSON message, or panic.
pub async fn recv<S: Stream>(ws: &mut WebSocketStream<S>) -> Value {
    match next_seen(ws, Duration::from_secs(5)).await {
        Seen::Json(v) => v,
        other => panic!("expected a message, saw {other:?}"),
    }
}

/// Expects the connection to close with `code`, possibly after some messages; returns those.
pub async fn expect_close<S: Stream>(ws: &mut WebSocketStream<S>, code: u16) -> Vec<Value> {
    let mut before = Vec::new();
    loop {
        match next_seen(ws, Duration::from_secs(5)).await {
            Seen::Json(v) => before.push(v),
            Seen::Closed(c) => {
                assert_eq!(c, Some(code), "close code (after {before:?})");
                return before;
            }
            other => panic!("expected close {code}, saw {other:?} after {before:?}"),
        }
    }
}

/// Sends a JSON value as a text message.
pub async fn send<S: Stream>(ws: &mut WebSocketStream<S>, v: &Value) {
    ws.send(Message::text(v.to_string())).await.expect("send");
}

/// Sends a raw text message.
pub async fn send_text<S: Stream>(ws: &mut WebSocketStream<S>, t: &str) {
    ws.send(Message::text(t.to_string())).await.expect("send");
}

/// Subscribes and waits for `subscribed`.
pub async fn subscribe<S: Stream>(
    ws: &mut WebSocketStream<S>,
    types: &[&str],
    clusters: &[&str],
    namespaces: &[&str],
) -> Value {
    send(
        ws,
        &serde_json::json!({"type": "subscribe", "subscription": {
            "event_types": types, "cluster_filter": clusters, "namespace_filter": namespaces}}),
    )
    .await;
    let r = recv(ws).await;
    assert_eq!(r["type"], "subscribed", "{r}");
    r
}

/// Asserts nothing arrives within `d`.
pub async fn expect_silence<S: Stream>(ws: &mut WebSocketStream<S>, d: Duration) {
    match next_seen(ws, d).await {
        Seen::Nothing => {}
        other => panic!("expected silence, saw {other:?}"),
    }
}

/// The close code constant for comparisons.
pub fn code(c: CloseCode) -> u16 {
    u16::from(c)
}

/// A metric's value in Prometheus text (summed over label sets unless `name` names one).
pub fn metric(text: &str, name: &str) -> f64 {
    loadtest::fixtures::metric_sum(text, name).unwrap_or_else(|| panic!("metric {name} missing"))
}

/// Opens a WebSocket by hand on a raw socket; returns it after the 101 response.
pub async fn raw_ws(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("handshake");
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte, so nothing after the response is consumed here.
    while !got.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).await.expect("read");
        assert!(n > 0, "closed during handshake");
        got.push(byte[0]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    s
}

/// A client-to-server frame with the given first byte (FIN, RSV, opcode), masked with a zero
/// key so the payload reads as is.
pub fn masked_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![first];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// The whole server frames at the start of `buf` (unmasked, as a server sends them): each
/// frame's opcode and payload, and how many bytes they took.
pub fn server_frames(buf: &[u8]) -> (Vec<(u8, &[u8])>, usize) {
    let (mut frames, mut i) = (Vec::new(), 0);
    while i + 2 <= buf.len() {
        let (op, len) = (buf[i] & 0x0F, (buf[i + 1] & 0x7F) as usize);
        let (head, len) = match len {
            126 if i + 4 <= buf.len() => (4, u16::from_be_bytes([buf[i + 2], buf[i + 3]]) as usize),
            126 | 127 => break,
            n => (2, n),
        };
        if i + head + len > buf.len() {
            break;
        }
        frames.push((op, &buf[i + head..i + head + len]));
        i += head + len;
    }
    (frames, i)
}

/// Reads from a raw socket until the server's close frame; returns its code.
pub async fn raw_close_code(s: &mut TcpStream) -> u16 {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let (frames, _) = server_frames(&buf);
        if let Some((_, payload)) = frames.iter().find(|(op, _)| *op == 0x8) {
            assert!(payload.len() >= 2, "close frame without a code");
            return u16::from_be_bytes([payload[0], payload[1]]);
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("close frame in time")
            .expect("read");
        assert!(n > 0, "socket closed without a close frame");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[allow(unused_imports)]
pub use loadtest::fixtures::{NatsCluster, NatsRegions, RedisCluster, RedisServer};

impl HubProcess {
    /// The Prometheus text of `/metrics`.
    pub async fn metrics_text(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    /// `/readyz` status code.
    pub async fn readyz(&self) -> u16 {
        reqwest::get(self.url("/readyz"))
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    /// Waits until `/readyz` answers `code`, up to `limit`; returns whether it did.
    pub async fn wait_ready(&self, code: u16, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if self.readyz().await == code {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

/// `auth` lines for the scoped-token checks: `ops` may broadcast, `all` sees everything,
/// `c1-prod` only cluster c1, namespace prod.
pub const SCOPED_AUTH: &str = "  auth:
    enabled: true
    static_tokens:
      - {token: ops, subject: ops, roles: [internal, admin]}
      - {token: all, subject: all}
      - {token: c1-prod, subject: team, clusters: [c1], namespaces: [prod]}
";

/// What a resuming client receives until 700 ms pass with nothing new: the ids of the events
/// (replayed and live, in order) and the `replay_complete`; anything else than these and
/// `subscribed` fails the test.
pub async fn resumed(ws: &mut Ws) -> (Vec<String>, Option<Value>) {
    let mut got = Vec::new();
    let mut complete = None;
    while let Seen::Json(v) = next_seen(ws, Duration::from_millis(700)).await {
        match v["type"].as_str() {
            Some("event") => got.push(v["event_id"].as_str().unwrap_or_default().to_string()),
            Some("replay_complete") => complete = Some(v),
            Some("subscribed") => {}
            _ => panic!("unexpected {v}"),
        }
    }
    (got, complete)
}

/// A hub of region `region` on `regions` (server `i`), mirroring the other regions' streams.
/// Its clients' rings hold 2,000 events: the tests read in bursts (after a partition heals,
/// while they publish), and check delivery, not backpressure.
pub fn region_hub(regions: &NatsRegions, i: usize, region: &str, others: &[&str]) -> HubProcess {
    let others: Vec<String> = others.iter().map(|o| format!("\"{o}\"")).collect();
    let hub = HubProcess::start(&format!(
        "  nats:\n    servers: [\"{}\"]\n    region: {region}\n    mirror_regions: [{}]\n  backpressure:\n    max_queue_size: 2000\n",
        regions.url(i),
        others.join(", ")
    ));
    assert!(hub.banner.ends_with(", mode nats"), "{}", hub.banner);
    hub
}

/// A hub in Redis mode on `redis`; its start-up line must say so.
pub fn redis_hub(redis: &RedisServer, instance: &str) -> HubProcess {
    let hub = HubProcess::start(&format!(
        "  redis_url: \"{}\"\n  scaling:\n    instance_id: {instance}\n",
        redis.url()
    ));
    assert!(hub.banner.ends_with(", mode redis"), "{}", hub.banner);
    hub
}

/// Two hubs in Redis mode on `redis` (instances `a` and `b`), both ready.
pub async fn redis_pair(redis: &RedisServer) -> (HubProcess, HubProcess) {
    let (a, b) = (redis_hub(redis, "a"), redis_hub(redis, "b"));
    for h in [&a, &b] {
        assert!(h.wait_ready(200, Duration::from_secs(10)).await, "ready");
    }
    (a, b)
}

/// Opens a client and authenticates it with `token`.
pub async fn authed(hub: &HubProcess, token: &str) -> Ws {
    let mut ws = hub.ws().await;
    send(
        &mut ws,
        &serde_json::json!({"type": "auth", "token": token}),
    )
    .await;
    let r = recv(&mut ws).await;
    assert_eq!(r["type"], "auth_response", "{r}");
    ws
}

/// Checks the client of a token granting only cluster c1 and namespace prod (`token`, as in
/// [`SCOPED_AUTH`]): naming another cluster or namespace is `FORBIDDEN` and stores nothing; no
/// filter is narrowed to the grant; of five events (published with `publish`) it receives
/// exactly those of c1 in prod or in no namespace, while an unscoped client gets all five.
/// Returns both clients, still connected and subscribed (scoped, unscoped).
pub async fn scoped_client_sees_only_its_grant<F, Fut>(
    hub: &HubProcess,
    token: &str,
    publish: F,
) -> (Ws, Ws)
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut scoped = authed(hub, token).await;
    for (clusters, namespaces) in [(vec!["c2"], vec![]), (vec!["c1"], vec!["dev"])] {
        send(
            &mut scoped,
            &serde_json::json!({"type": "subscribe", "subscription": {
                "event_types": ["ALERT_FIRED"], "cluster_filter": clusters,
                "namespace_filter": namespaces}}),
        )
        .await;
        let r = recv(&mut scoped).await;
        assert_eq!(r["code"], "FORBIDDEN", "{r}");
    }
    let narrowed = subscribe(&mut scoped, &["ALERT_FIRED"], &[], &[]).await;
    assert_eq!(narrowed["cluster_filter"], serde_json::json!(["c1"]));
    assert_eq!(narrowed["namespace_filter"], serde_json::json!(["prod"]));
    let mut everything = authed(hub, "all").await;
    subscribe(&mut everything, &["ALERT_FIRED"], &[], &[]).await;
    let events = [
        (
            "c1-prod",
            r#""cluster_id":"c1","payload":{"namespace":"prod"}"#,
        ),
        (
            "c1-dev",
            r#""cluster_id":"c1","payload":{"namespace":"dev"}"#,
        ),
        (
            "c2-prod",
            r#""cluster_id":"c2","payload":{"namespace":"prod"}"#,
        ),
        ("c1-none", r#""cluster_id":"c1""#),
        ("none", r#""payload":{"namespace":"prod"}"#),
    ];
    for (id, rest) in events {
        publish(format!(
            r#"{{"event_type":"ALERT_FIRED","event_id":"{id}",{rest}}}"#
        ))
        .await;
    }
    let mut all_ids = Vec::new();
    while all_ids.len() < events.len() {
        let e = recv(&mut everything).await;
        all_ids.push(e["event_id"].as_str().unwrap_or_default().to_string());
    }
    let mut got = Vec::new();
    loop {
        match next_seen(&mut scoped, Duration::from_millis(500)).await {
            Seen::Json(e) => got.push(e["event_id"].as_str().unwrap_or_default().to_string()),
            Seen::Nothing => break,
            other => panic!("scoped client: {other:?}"),
        }
    }
    got.sort();
    assert_eq!(got, ["c1-none", "c1-prod"], "unscoped got {all_ids:?}");
    (scoped, everything)
}

/// POSTs an event to the broadcast endpoint with a bearer token; expects 202.
pub async fn broadcast_as(hub: &HubProcess, token: &str, body: String) {
    let r = reqwest::Client::new()
        .post(hub.url("/api/v1/streaming/broadcast"))
        .bearer_auth(token)
        .body(body)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 202, "broadcast");
}

/// Runs Node's test runner on `target` in `dir` (relative to the repository) against this
/// build's hub (`STREAMHUB_BIN`), with `envs` added; asserts it passed, and that `passed` tests
/// ran (a runner that found none would pass too). Returns its report.
pub fn node_tests(dir: &str, target: &str, envs: &[(&str, &str)], passed: usize) -> String {
    let out = Command::new("node")
        .args(["--experimental-websocket", "--test", target])
        .current_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir))
        .env("STREAMHUB_BIN", env!("CARGO_BIN_EXE_streamhub"))
        .envs(envs.iter().copied())
        .output()
        .expect("node (>= 20.10) is installed (see .ci/run)");
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "node --test {target} in {dir} failed:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains(&format!("# pass {passed}\n")), "{report}");
    report
}
