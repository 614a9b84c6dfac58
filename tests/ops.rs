//! What an operator sees: the log's formats, a broker that cannot be reached named loudly (and
//! without its password), the process metrics, the health command, and the API's contract
//! details (400 on a bad query parameter, `Allow` on 405).

mod common;

use common::*;
use std::time::Duration;

/// A config file with `extra` under `realtime_streaming`.
fn config(extra: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hub.yaml");
    std::fs::write(
        &path,
        format!("realtime_streaming:\n  host: \"127.0.0.1\"\n  port: 0\n{extra}"),
    )
    .unwrap();
    (dir, path)
}

#[test]
fn an_unreachable_redis_is_named_at_once_in_json_without_its_password() {
    // Nothing listens on port 1: every attempt fails.
    let (_dir, path) = config("  redis_url: \"redis://ops:s3cret-pw@127.0.0.1:1/0\"\n");
    let (child, banner) = spawn_captured(&path, &[("STREAMHUB_LOG_FORMAT", "json")]);
    assert!(banner.contains("mode redis"), "{banner}");
    std::thread::sleep(Duration::from_secs(4));
    let logs = kill_and_read_logs(child);
    assert!(!logs.contains("s3cret-pw"), "the password leaked: {logs}");
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for l in &lines {
        for key in ["timestamp", "level", "target", "message"] {
            assert!(l.get(key).is_some(), "{key} missing in {l}");
        }
    }
    let named: Vec<_> = lines
        .iter()
        .filter(|l| l["level"] == "WARN" && l["target_addr"] == "127.0.0.1:1")
        .collect();
    assert!(!named.is_empty(), "no WARN naming 127.0.0.1:1 in {logs}");
    assert_eq!(
        named[0]["failed_attempts"], 1,
        "the first failure is logged: {logs}"
    );
}

#[test]
fn text_logs_to_a_pipe_carry_no_colour_codes() {
    let (_dir, path) = config("");
    let (child, _) = spawn_captured(&path, &[("STREAMHUB_LOG", "debug")]);
    std::thread::sleep(Duration::from_millis(500));
    let logs = kill_and_read_logs(child);
    assert!(logs.contains("listening"), "{logs}");
    assert!(
        !logs.contains('\u{1b}'),
        "ANSI escapes in a piped log: {logs:?}"
    );
}

#[tokio::test]
async fn process_metrics_build_info_and_limits_are_exposed() {
    let hub = HubProcess::start("  websocket:\n    max_connections: 123\n");
    let text = hub.metrics_text().await;
    for name in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "ws_heartbeat_timeouts_total",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{name} "))),
            "{name} in {text}"
        );
    }
    assert!(text.contains(&format!(
        "streamhub_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    )));
    assert_eq!(metric(&text, "streamhub_connections_max"), 123.0);
    assert_eq!(metric(&text, "streamhub_broker_healthy"), 1.0);
}

#[test]
fn the_health_command_follows_the_hub() {
    let hub = HubProcess::start("");
    let health = |url: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_streamhub"))
            .args(["health", "--url", url, "--timeout", "2"])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(health(&hub.url("/healthz")));
    assert!(!health(&hub.url("/nothing-here")), "a 404 is not healthy");
    drop(hub);
    assert!(!health("http://127.0.0.1:1/healthz"), "nothing listening");
}

#[tokio::test]
async fn bad_query_parameters_get_400_and_wrong_methods_name_the_allowed_ones() {
    let hub = HubProcess::start("");
    let http = reqwest::Client::new();
    let r = http
        .get(hub.url("/api/v1/streaming/clients?limit=abc"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("limit"), "{body}");
    let ok = http
        .get(hub.url("/api/v1/streaming/clients?limit=5"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let r = http
        .delete(hub.url("/api/v1/streaming/broadcast"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    let r = http.post(hub.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET");
}

#[tokio::test]
async fn an_admin_disconnects_one_client_then_drains_the_instance() {
    let hub = HubProcess::start(
        "  auth:\n    enabled: true\n    static_tokens:\n      - token: \"ops-admin\"\n        subject: \"ops\"\n        roles: [\"admin\"]\n      - token: \"viewer\"\n        subject: \"v\"\n",
    );
    let http = reqwest::Client::new();
    let post = |path: &str, token: &str, body: &'static str| {
        http.post(hub.url(path))
            .bearer_auth(token)
            .body(body)
            .send()
    };
    let mut first = authed(&hub, "viewer").await;
    let mut second = authed(&hub, "viewer").await;
    let listed = hub
        .get_json_as("/api/v1/streaming/clients", "ops-admin")
        .await;
    let ids: Vec<String> = listed["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["client_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2, "{listed}");
    // Admin only.
    let path = format!("/api/v1/streaming/clients/{}/disconnect", ids[0]);
    assert_eq!(post(&path, "viewer", "").await.unwrap().status(), 403);
    let r = post(&path, "ops-admin", "").await.unwrap();
    assert_eq!(r.status(), 202);
    let missing = "/api/v1/streaming/clients/00000000-0000-0000-0000-000000000000/disconnect";
    assert_eq!(post(missing, "ops-admin", "").await.unwrap().status(), 404);
    // Whichever connection had that id is told why and closed with 1000; the other stays.
    let (gone, kept) = match next_seen(&mut first, Duration::from_secs(2)).await {
        Seen::Json(v) => (v, &mut second),
        _ => (recv(&mut second).await, &mut first),
    };
    assert_eq!(gone["type"], "disconnect", "{gone}");
    assert_eq!(gone["reason"], "disconnected_by_operator");
    // A bad body is refused; a good one drains: the rest go with server_drain, readyz says 503.
    let bad = post("/api/v1/streaming/drain", "ops-admin", "{\"later\":1}");
    assert_eq!(bad.await.unwrap().status(), 400);
    let r = post(
        "/api/v1/streaming/drain",
        "ops-admin",
        "{\"reconnect_after_ms\":100}",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 202);
    let body: serde_json::Value = r.json().await.unwrap();
    // The disconnected one may still be finishing its close.
    assert!(body["clients"].as_u64().is_some_and(|n| n >= 1), "{body}");
    let bye = recv(kept).await;
    assert_eq!(bye["reason"], "server_drain", "{bye}");
    assert!(bye["reconnect_after_ms"].as_u64().unwrap() <= 150, "{bye}");
    assert_eq!(hub.readyz().await, 503);
}
