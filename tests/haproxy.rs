//! A real HAProxy (with `deploy/haproxy.cfg`) in front of three hub instances on one real
//! `redis-server`: clients spread over instances, stay on theirs, and move when one stops.

mod common;

use common::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// HAProxy running the shipped configuration, re-pointed at the test's ports.
struct Haproxy {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_haproxy(hubs: &[&HubProcess]) -> Haproxy {
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/haproxy.cfg"))
            .unwrap();
    let port = free_port();
    let mut cfg = shipped.replace("bind 127.0.0.1:8000", &format!("bind 127.0.0.1:{port}"));
    for (i, h) in hubs.iter().enumerate() {
        cfg = cfg.replace(&format!("127.0.0.1:808{}", i + 1), &h.addr.to_string());
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("haproxy.cfg");
    std::fs::write(&path, cfg).unwrap();
    let child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("haproxy is installed (see .ci/run)");
    let end = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "haproxy did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Haproxy {
        child,
        port,
        _dir: dir,
    }
}

/// Connects through HAProxy (with a cookie, if given); returns the socket and the instance the
/// hub's sticky cookie names.
async fn connect(port: u16, cookie: Option<&str>) -> (Ws, String) {
    let mut req = format!("ws://127.0.0.1:{port}/ws")
        .into_client_request()
        .unwrap();
    if let Some(c) = cookie {
        req.headers_mut()
            .insert("Cookie", format!("AIOPS_WS_SESSION={c}").parse().unwrap());
    }
    let (ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("connect through haproxy");
    let set = resp.headers()["set-cookie"].to_str().unwrap();
    let instance = set
        .trim_start_matches("AIOPS_WS_SESSION=")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    (ws, instance)
}

#[tokio::test]
async fn clients_spread_stick_and_fail_over() {
    let redis = RedisServer::start().expect("redis-server is installed (see .ci/run)");
    let hubs: Vec<HubProcess> = (1..=3)
        .map(|i| {
            HubProcess::start(&format!(
                "  redis_url: \"{}\"\n  scaling:\n    instance_id: s{i}\n",
                redis.url()
            ))
        })
        .collect();
    for h in &hubs {
        assert!(h.wait_ready(200, Duration::from_secs(10)).await);
    }
    let proxy = start_haproxy(&hubs.iter().collect::<Vec<_>>());
    // Give HAProxy's first health checks a moment.
    tokio::time::sleep(Duration::from_millis(800)).await;

    // Spread: six new clients land on all three instances.
    let mut clients = Vec::new();
    for _ in 0..6 {
        let (mut ws, instance) = connect(proxy.port, None).await;
        subscribe(&mut ws, &["ALERT_FIRED"], &[], &[]).await;
        clients.push((ws, instance));
    }
    let mut seen: Vec<&str> = clients.iter().map(|(_, i)| i.as_str()).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, vec!["s1", "s2", "s3"], "round-robin over the three");

    // Stick: a client coming back with its cookie reaches the same instance, every time.
    for target in ["s1", "s2", "s3", "s2"] {
        let (_, instance) = connect(proxy.port, Some(target)).await;
        assert_eq!(instance, target);
    }

    // One publish reaches every client, whatever instance holds it.
    hubs[0]
        .broadcast(r#"{"event_type":"ALERT_FIRED","event_id":"e1"}"#)
        .await;
    for (ws, _) in clients.iter_mut() {
        assert_eq!(recv(ws).await["event_id"], "e1");
    }

    // Stop s1: its clients' connections end; they come back through HAProxy with their cookie,
    // land on another instance, and receive what is published next.
    let mut hubs = hubs;
    let mut s1 = hubs.remove(0);
    s1.sigterm();
    s1.wait_exit(Duration::from_secs(10));
    let mut moved = Vec::new();
    for (ws, instance) in clients.iter_mut() {
        if instance != "s1" {
            continue;
        }
        loop {
            match next_seen(ws, Duration::from_secs(5)).await {
                Seen::Json(_) => continue,
                Seen::Closed(_) | Seen::Ended => break,
                Seen::Nothing => panic!("connection to the stopped instance did not end"),
            }
        }
        let mut again = None;
        for _ in 0..50 {
            match tokio_tungstenite::connect_async({
                let mut r = format!("ws://127.0.0.1:{}/ws", proxy.port)
                    .into_client_request()
                    .unwrap();
                r.headers_mut()
                    .insert("Cookie", "AIOPS_WS_SESSION=s1".parse().unwrap());
                r
            })
            .await
            {
                Ok((ws, resp)) => {
                    let set = resp.headers()["set-cookie"].to_str().unwrap().to_string();
                    again = Some((ws, set));
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let (mut ws2, set) = again.expect("reconnected through haproxy");
        assert!(
            !set.starts_with("AIOPS_WS_SESSION=s1;"),
            "moved off the stopped instance: {set}"
        );
        subscribe(&mut ws2, &["ALERT_FIRED"], &[], &[]).await;
        moved.push(ws2);
    }
    assert!(!moved.is_empty());
    let (code, _) = hubs[0]
        .broadcast(r#"{"event_type":"ALERT_FIRED","event_id":"e2"}"#)
        .await;
    assert_eq!(code, 202);
    for ws in moved.iter_mut() {
        assert_eq!(recv(ws).await["event_id"], "e2");
    }
    for (ws, instance) in clients.iter_mut().filter(|(_, i)| i != "s1") {
        assert_eq!(recv(ws).await["event_id"], "e2", "client on {instance}");
    }
}
