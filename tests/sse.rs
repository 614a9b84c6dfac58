//! Server-Sent Events (`GET /api/v1/streaming/events`) against the real hub with a plain HTTP
//! client reading the stream as it comes: events filtered like `/ws`, each with its id; a
//! dropped stream resumed with `Last-Event-ID` with no gap and no duplicate; the token in a
//! header or in the query, narrowed to its grant; heartbeat comments; a drain ends the stream
//! with `disconnect` and `retry:`; `/clients` lists the stream with its transport. And a real
//! browser's `EventSource` (headless Chromium, `clients/console-test/sse.test.mjs`) following the
//! stream and resuming by itself after a disconnect.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

/// One event of an SSE stream: its fields (`id`, `event`, `data` joined), or a comment.
#[derive(Debug, Clone, Default, PartialEq)]
struct Sse {
    id: Option<String>,
    event: Option<String>,
    data: Option<String>,
    retry: Option<u64>,
    comment: bool,
}

impl Sse {
    /// The data as JSON.
    fn json(&self) -> Value {
        serde_json::from_str(self.data.as_deref().unwrap_or("null")).expect("data is JSON")
    }
}

/// A stream being read: the response and the text not yet parsed into events.
struct Stream {
    response: reqwest::Response,
    text: String,
}

impl Stream {
    /// Opens `path` (with its query) on `hub`, with these extra headers; panics unless 200.
    async fn open(hub: &HubProcess, path_and_query: &str, headers: &[(&str, &str)]) -> Stream {
        let (status, response) = request(hub, path_and_query, headers).await;
        assert_eq!(status, 200, "stream refused");
        let kind = response.headers()["content-type"]
            .to_str()
            .unwrap_or_default();
        assert_eq!(kind, "text/event-stream");
        assert_eq!(response.headers()["x-accel-buffering"], "no");
        assert_eq!(response.headers()["cache-control"], "no-cache");
        Stream {
            response,
            text: String::new(),
        }
    }

    /// The next event (or comment) within `limit`; `None` when nothing came or the stream ended.
    async fn next(&mut self, limit: Duration) -> Option<Sse> {
        let end = tokio::time::Instant::now() + limit;
        loop {
            if let Some(at) = self.text.find("\n\n") {
                let block: String = self.text.drain(..at + 2).collect();
                return Some(parse(&block));
            }
            match tokio::time::timeout_at(end, self.response.chunk()).await {
                Ok(Ok(Some(chunk))) => self.text.push_str(&String::from_utf8_lossy(&chunk)),
                _ => return None,
            }
        }
    }

    /// Events (not comments) until `quiet` passes with nothing new.
    async fn until_quiet(&mut self, quiet: Duration) -> Vec<Sse> {
        let mut got = Vec::new();
        while let Some(e) = self.next(quiet).await {
            if !e.comment {
                got.push(e);
            }
        }
        got
    }
}

/// GETs `path_and_query` with `headers`: the status and the response (not read yet).
async fn request(
    hub: &HubProcess,
    path_and_query: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::Response) {
    let mut req = reqwest::Client::new()
        .get(hub.url(path_and_query))
        .header("accept", "text/event-stream");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = req.send().await.expect("GET the stream");
    (response.status().as_u16(), response)
}

/// One block of SSE text as an event.
fn parse(block: &str) -> Sse {
    let mut e = Sse::default();
    for line in block.lines().filter(|l| !l.is_empty()) {
        if line.starts_with(':') {
            e.comment = true;
            continue;
        }
        let (field, value) = line.split_once(": ").unwrap_or((line, ""));
        match field {
            "id" => e.id = Some(value.into()),
            "event" => e.event = Some(value.into()),
            "retry" => e.retry = value.parse().ok(),
            "data" => {
                let data = e.data.get_or_insert_with(String::new);
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(value);
            }
            other => panic!("unknown field {other:?} in {block:?}"),
        }
    }
    e
}

/// A GPU update with id `id` on `cluster`.
fn gpu(id: &str, cluster: &str) -> Value {
    json!({"event_type": "GPU_UPDATE", "event_id": id, "cluster_id": cluster,
           "payload": {"node_name": id}})
}

/// The ids of the `event` events.
fn ids(events: &[Sse]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.event.as_deref() == Some("event"))
        .map(|e| e.id.clone().unwrap_or_default())
        .collect()
}

/// Opens a stream and reads its `retry:` and `subscribed`.
async fn subscribed(hub: &HubProcess, query: &str, headers: &[(&str, &str)]) -> Stream {
    let mut s = Stream::open(hub, &format!("/api/v1/streaming/events?{query}"), headers).await;
    let first = s.next(Duration::from_secs(5)).await.expect("retry");
    assert!(first.retry.is_some_and(|ms| ms > 0), "{first:?}");
    let sub = s.next(Duration::from_secs(5)).await.expect("subscribed");
    assert_eq!(sub.event.as_deref(), Some("subscribed"), "{sub:?}");
    s
}

#[tokio::test]
async fn events_are_filtered_like_ws_and_a_dropped_stream_resumes_with_no_gap() {
    let hub = HubProcess::start("");
    let mut stream = subscribed(&hub, "event_types=GPU_UPDATE&cluster_filter=c1", &[]).await;
    let clients = hub.get_json("/api/v1/streaming/clients").await;
    assert_eq!(clients["clients"][0]["transport"], "sse", "{clients}");
    let batch: Vec<Value> = (0..6)
        .map(|i| gpu(&format!("e{i}"), ["c1", "c2"][i % 2]))
        .chain([json!({"event_type": "ALERT_FIRED", "cluster_id": "c1"})])
        .collect();
    let (code, body) = hub.broadcast(&Value::Array(batch).to_string()).await;
    assert_eq!(code, 202, "{body}");
    let got = stream.until_quiet(Duration::from_millis(500)).await;
    assert_eq!(ids(&got), ["e0", "e2", "e4"], "only GPU updates of c1");
    assert_eq!(got[0].json()["type"], "event");
    assert_eq!(got[0].json()["event_id"], "e0");

    // The stream drops; events go on; a new stream with Last-Event-ID gets the ones after it,
    // then live ones, each once.
    drop(stream);
    // The hub notices the stream is gone and lets the client go.
    let end = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let clients = hub.get_json("/api/v1/streaming/clients").await;
        if clients["clients"].as_array().is_some_and(|c| c.is_empty()) {
            break;
        }
        assert!(std::time::Instant::now() < end, "still listed: {clients}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let batch: Vec<Value> = (6..12)
        .map(|i| gpu(&format!("e{i}"), ["c1", "c2"][i % 2]))
        .collect();
    let (code, _) = hub.broadcast(&Value::Array(batch).to_string()).await;
    assert_eq!(code, 202);
    let mut again = subscribed(
        &hub,
        "event_types=GPU_UPDATE&cluster_filter=c1",
        &[("last-event-id", "e4")],
    )
    .await;
    let (code, _) = hub.broadcast(&gpu("e12", "c1").to_string()).await;
    assert_eq!(code, 202);
    let got = again.until_quiet(Duration::from_millis(500)).await;
    let complete = got
        .iter()
        .find(|e| e.event.as_deref() == Some("replay_complete"))
        .expect("replay_complete");
    assert_eq!(complete.json()["recovered"], true);
    assert_eq!(ids(&got), ["e6", "e8", "e10", "e12"]);

    // An id the hub does not know: recovered false, said so.
    let mut lost = subscribed(&hub, "event_types=GPU_UPDATE&last_event_id=nope", &[]).await;
    let got = lost.until_quiet(Duration::from_millis(300)).await;
    assert_eq!(got[0].event.as_deref(), Some("replay_complete"));
    assert_eq!(got[0].json()["recovered"], false);
}

#[tokio::test]
async fn the_token_comes_in_a_header_or_the_query_and_its_grant_narrows_the_stream() {
    let hub = HubProcess::start(SCOPED_AUTH);
    let path = "/api/v1/streaming/events?event_types=GPU_UPDATE";
    assert_eq!(request(&hub, path, &[]).await.0, 401, "no token");
    let bad = [("authorization", "Bearer nope")];
    assert_eq!(request(&hub, path, &bad).await.0, 401, "a bad token");
    let outside =
        "/api/v1/streaming/events?event_types=GPU_UPDATE&cluster_filter=c2&access_token=c1-prod";
    assert_eq!(
        request(&hub, outside, &[]).await.0,
        403,
        "outside the grant"
    );
    let mut in_header = subscribed(
        &hub,
        "event_types=GPU_UPDATE",
        &[("authorization", "Bearer all")],
    )
    .await;
    let mut in_query = subscribed(&hub, "event_types=GPU_UPDATE&access_token=c1-prod", &[]).await;
    let batch = json!([
        {"event_type": "GPU_UPDATE", "event_id": "p1", "cluster_id": "c1", "payload": {"namespace": "prod"}},
        {"event_type": "GPU_UPDATE", "event_id": "d1", "cluster_id": "c1", "payload": {"namespace": "dev"}},
        {"event_type": "GPU_UPDATE", "event_id": "p2", "cluster_id": "c2", "payload": {"namespace": "prod"}},
    ]);
    broadcast_as(&hub, "ops", batch.to_string()).await;
    let all = in_header.until_quiet(Duration::from_millis(500)).await;
    assert_eq!(ids(&all), ["p1", "d1", "p2"]);
    let narrowed = in_query.until_quiet(Duration::from_millis(500)).await;
    assert_eq!(ids(&narrowed), ["p1"], "c1 and prod only");
    let clients = hub.get_json_as("/api/v1/streaming/clients", "ops").await;
    let subjects: Vec<&Value> = clients["clients"]
        .as_array()
        .expect("clients")
        .iter()
        .map(|c| &c["subject"])
        .collect();
    assert!(subjects.contains(&&json!("team")), "{clients}");
}

#[tokio::test]
async fn a_quiet_stream_gets_heartbeats_and_a_drain_ends_it_with_retry() {
    let hub = HubProcess::start("  websocket:\n    heartbeat_interval_seconds: 0.3\n");
    let mut stream = subscribed(&hub, "event_types=ALERT_FIRED", &[]).await;
    let beat = stream
        .next(Duration::from_secs(2))
        .await
        .expect("a heartbeat");
    assert!(beat.comment, "{beat:?}");
    let r = reqwest::Client::new()
        .post(hub.url("/api/v1/streaming/drain"))
        .body(r#"{"reconnect_after_ms": 700}"#)
        .send()
        .await
        .expect("drain");
    assert_eq!(r.status(), 202);
    let got = stream.until_quiet(Duration::from_secs(2)).await;
    let bye = got
        .iter()
        .find(|e| e.event.as_deref() == Some("disconnect"))
        .expect("disconnect");
    assert_eq!(bye.json()["reason"], "server_drain", "{bye:?}");
    let advice = bye.json()["reconnect_after_ms"].as_u64().expect("advice");
    assert_eq!(got.last().and_then(|e| e.retry), Some(advice), "{got:?}");
    assert!(
        stream.next(Duration::from_millis(300)).await.is_none(),
        "ended"
    );
    // Draining: a new stream is refused.
    let (code, _) = request(&hub, "/api/v1/streaming/events", &[]).await;
    assert_eq!(code, 503);
}

#[test]
fn a_browser_s_event_source_resumes_by_itself_and_the_js_client_falls_back_to_sse() {
    common::node_tests("clients/console-test", "sse.test.mjs", &[], 2);
}

#[tokio::test]
async fn only_get_opens_a_stream() {
    let hub = HubProcess::start("");
    let r = reqwest::Client::new()
        .post(hub.url("/api/v1/streaming/events"))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET");
}

#[tokio::test]
async fn streamhub_tail_follows_a_stream_over_sse() {
    let hub = HubProcess::start("");
    let tail = std::process::Command::new(env!("CARGO_BIN_EXE_streamhub"))
        .args(["tail", "--sse", "--url", &format!("http://{}", hub.addr)])
        .args(["--types", "GPU_UPDATE", "--cluster", "c1", "--count", "2"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("streamhub tail");
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while hub.get_json("/api/v1/streaming/subscriptions").await["total_subscriptions"] != 1 {
        assert!(std::time::Instant::now() < end, "tail never subscribed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let batch = json!([gpu("t1", "c2"), gpu("t2", "c1"), gpu("t3", "c1")]);
    let (code, _) = hub.broadcast(&batch.to_string()).await;
    assert_eq!(code, 202);
    let out = tail.wait_with_output().expect("tail ends after two events");
    assert!(out.status.success());
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines[0]["type"], "subscribed");
    let ids: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l["event_id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(ids, ["t2", "t3"]);
}

#[tokio::test]
async fn a_stream_ends_with_auth_expired_when_its_token_does() {
    let hub = HubProcess::start(
        "  auth:\n    enabled: true\n    static_tokens:\n      - {token: short, subject: carol, expires_in_seconds: 1}\n",
    );
    let mut stream = subscribed(&hub, "event_types=GPU_UPDATE&access_token=short", &[]).await;
    let got = stream.until_quiet(Duration::from_secs(3)).await;
    let last = got.last().expect("an error");
    assert_eq!(last.event.as_deref(), Some("error"), "{got:?}");
    assert_eq!(last.json()["code"], "AUTH_EXPIRED");
    assert!(
        stream.next(Duration::from_millis(300)).await.is_none(),
        "ended"
    );
}
