//! Operator tools: `streamhub publish` sends one event (to Redis or to a hub's broadcast
//! endpoint); `streamhub tail` connects as a client, subscribes, and prints what arrives;
//! `streamhub health` asks a hub's `/healthz` (the container image's health check, which so
//! needs no curl).
//!
//! Owns nothing of the hub: it talks to a running hub (or Redis) like any client.

use crate::event::{parse_event, ParsedEvent};
use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use std::time::Duration;
use streamhub_wire::Channels;

/// Where `publish` sends the event.
pub enum Target {
    /// `PUBLISH {prefix}:all` on this Redis.
    Redis {
        /// Redis URL.
        url: String,
        /// Channel prefix.
        prefix: String,
    },
    /// `SPUBLISH {prefix}:all` (and `{prefix}:cluster:{id}` when the event has a cluster) on
    /// this Redis Cluster: what a hub in Redis Cluster mode listens to.
    RedisCluster {
        /// Seed nodes.
        nodes: Vec<String>,
        /// Channel prefix.
        prefix: String,
    },
    /// `POST {base}/api/v1/streaming/broadcast`.
    Http {
        /// `http://host:port`, or `https://host:port` for a hub with TLS.
        base: String,
        /// Bearer token, if auth is on.
        token: Option<String>,
        /// PEM certificates to trust for `https://`.
        ca_file: Option<String>,
    },
}

/// Validates `body` (one event, or a JSON array of events, all valid) and publishes it;
/// returns the event ids in order.
pub async fn publish(body: &[u8], target: Target) -> anyhow::Result<Vec<String>> {
    let raws: Vec<&[u8]> = if body.trim_ascii_start().starts_with(b"[") {
        let list: Vec<&serde_json::value::RawValue> = serde_json::from_slice(body)
            .map_err(|e| anyhow::anyhow!("not a JSON array of events: {e}"))?;
        list.into_iter().map(|r| r.get().as_bytes()).collect()
    } else {
        vec![body]
    };
    let mut events = Vec::with_capacity(raws.len());
    for (i, raw) in raws.iter().enumerate() {
        let keys = crate::entity::EntityKeys::default();
        let e =
            parse_event(raw, &keys).map_err(|e| anyhow::anyhow!("event {i} is not valid: {e}"))?;
        events.push(e);
    }
    anyhow::ensure!(!events.is_empty(), "no event to publish");
    match target {
        Target::Redis { url, prefix } => publish_redis(&events, &url, &prefix).await,
        Target::RedisCluster { nodes, prefix } => publish_cluster(&events, nodes, &prefix).await,
        Target::Http {
            base,
            token,
            ca_file,
        } => post(body, &base, token, ca_file).await,
    }
}

/// `PUBLISH`es each event to `{prefix}:all` of one Redis.
async fn publish_redis(
    events: &[ParsedEvent],
    url: &str,
    prefix: &str,
) -> anyhow::Result<Vec<String>> {
    let channels = Channels::new(prefix);
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut ids = Vec::new();
    for e in events {
        let n = streamhub_wire::publish(&mut conn, &channels, &e.to_published()).await?;
        eprintln!(
            "published {} to {} ({n} subscriber(s))",
            e.event_id,
            channels.all()
        );
        ids.push(e.event_id.clone());
    }
    Ok(ids)
}

/// `SPUBLISH`es each event to `{prefix}:all` and its cluster's channel of a Redis Cluster.
async fn publish_cluster(
    events: &[ParsedEvent],
    nodes: Vec<String>,
    prefix: &str,
) -> anyhow::Result<Vec<String>> {
    let channels = Channels::new(prefix);
    let client = redis::cluster::ClusterClient::new(nodes)?;
    let conn = client.get_async_connection().await?;
    let mut ids = Vec::new();
    for e in events {
        let cluster = e.cluster_id.as_deref();
        let message = e.to_published();
        let r = streamhub_wire::spublish(&conn, &channels, Some(&e.event_id), cluster, &message)
            .await?;
        eprintln!(
            "published {} to {} ({} subscriber(s))",
            e.event_id,
            channels.all(),
            r.all
        );
        if let (Some(c), Some(n)) = (cluster, r.cluster) {
            eprintln!(
                "published {} to {} ({n} subscriber(s))",
                e.event_id,
                channels.cluster(c)
            );
        }
        ids.push(e.event_id.clone());
    }
    Ok(ids)
}

/// `GET url` within `timeout`: `Ok` when the hub answers 2xx (a health check).
pub async fn health(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let ask = async {
        let (host, path, stream) = dial(url, None).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let req = hyper::Request::get(path)
            .header(hyper::header::HOST, host)
            .body(Empty::<Bytes>::new())?;
        let status = sender.send_request(req).await?.status();
        anyhow::ensure!(status.is_success(), "{url} answered {status}");
        Ok(())
    };
    tokio::time::timeout(timeout, ask)
        .await
        .map_err(|_| anyhow::anyhow!("{url}: no answer within {timeout:?}"))?
}

/// Posts `body` (one event or a batch) to a hub's broadcast endpoint; returns the ids it gave.
async fn post(
    body: &[u8],
    base: &str,
    token: Option<String>,
    ca_file: Option<String>,
) -> anyhow::Result<Vec<String>> {
    let (host, _, stream) = dial(base, ca_file.as_deref()).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = hyper::Request::post("/api/v1/streaming/broadcast")
        .header(hyper::header::HOST, host)
        .header(hyper::header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let resp = sender
        .send_request(req.body(Full::new(Bytes::copy_from_slice(body)))?)
        .await?;
    let status = resp.status();
    let answer = resp.into_body().collect().await?.to_bytes();
    anyhow::ensure!(
        status.is_success(),
        "hub answered {status}: {}",
        String::from_utf8_lossy(&answer)
    );
    let v: serde_json::Value = serde_json::from_slice(&answer)?;
    let ids = match v["results"].as_array() {
        Some(results) => results
            .iter()
            .map(|r| r["event_id"].as_str().unwrap_or("-").to_string())
            .collect(),
        None => vec![v["event_id"].as_str().unwrap_or("-").to_string()],
    };
    Ok(ids)
}

/// What `tail` subscribes to (the flags of `streamhub tail`).
#[derive(clap::Args, Debug)]
pub struct TailOptions {
    /// The hub's WebSocket URL.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// Event types, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    pub types: Vec<String>,
    /// Clusters, comma-separated (default: any).
    #[arg(long = "cluster", value_delimiter = ',')]
    pub clusters: Vec<String>,
    /// Namespaces, comma-separated (default: any).
    #[arg(long = "namespace", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// Token for the `auth` message.
    #[arg(long, default_value = "tail")]
    pub token: String,
    /// Exit after this many events.
    #[arg(long)]
    pub count: Option<u64>,
    /// PEM certificates to trust for a `wss://` URL.
    #[arg(long)]
    pub ca_file: Option<String>,
    /// Follow the stream over Server-Sent Events (`GET /api/v1/streaming/events` on the URL's
    /// host) instead of a WebSocket.
    #[arg(long)]
    pub sse: bool,
}

/// The event types `o` asks for (all when none).
fn tail_types(o: &TailOptions) -> Vec<String> {
    if o.types.is_empty() {
        return crate::event::EventType::ALL
            .iter()
            .map(|t| t.as_str().to_string())
            .collect();
    }
    o.types.clone()
}

/// Connects, subscribes, and prints each message as one JSON line on stdout.
pub async fn tail(o: TailOptions) -> anyhow::Result<()> {
    if o.sse {
        return tail_sse(o).await;
    }
    let (host, path, stream) = dial(&o.url, o.ca_file.as_deref()).await?;
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::UPGRADE, "websocket")
        .header(hyper::header::CONNECTION, "upgrade")
        .header(
            "Sec-WebSocket-Key",
            fastwebsockets::handshake::generate_key(),
        )
        .header("Sec-WebSocket-Version", "13")
        .body(Empty::<Bytes>::new())?;
    let (mut ws, _) =
        fastwebsockets::handshake::client(&hyper_util::rt::TokioExecutor::new(), req, stream)
            .await?;
    let types = tail_types(&o);
    let opening = [
        serde_json::json!({"type": "auth", "token": o.token}),
        serde_json::json!({"type": "subscribe", "subscription": {
            "event_types": types, "cluster_filter": o.clusters, "namespace_filter": o.namespaces}}),
    ];
    for m in opening {
        let text = m.to_string();
        ws.write_frame(Frame::text(Payload::Borrowed(text.as_bytes())))
            .await?;
    }
    let mut events = 0u64;
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(3600), ws.read_frame()).await??;
        match frame.opcode {
            OpCode::Text => {
                let text = String::from_utf8_lossy(&frame.payload);
                println!("{text}");
                if text.contains(r#""type":"event""#) {
                    events += 1;
                    if o.count.is_some_and(|n| events >= n) {
                        return Ok(());
                    }
                }
                if text.contains(r#""type":"error""#) && text.contains("INVALID_SUBSCRIPTION") {
                    anyhow::bail!("subscription refused: {text}");
                }
            }
            OpCode::Close => return Ok(()),
            _ => {}
        }
    }
}

/// `tail --sse`: the event stream of the URL's host, each message's `data` printed as one JSON
/// line (what the WebSocket `tail` prints), the token as a bearer header.
async fn tail_sse(o: TailOptions) -> anyhow::Result<()> {
    let (host, _, stream) = dial(&o.url, o.ca_file.as_deref()).await?;
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("event_types", &tail_types(&o).join(","));
    for (name, list) in [
        ("cluster_filter", &o.clusters),
        ("namespace_filter", &o.namespaces),
    ] {
        if !list.is_empty() {
            query.append_pair(name, &list.join(","));
        }
    }
    let req = hyper::Request::get(format!("/api/v1/streaming/events?{}", query.finish()))
        .header(hyper::header::HOST, host)
        .header(hyper::header::ACCEPT, "text/event-stream")
        .header(hyper::header::AUTHORIZATION, format!("Bearer {}", o.token))
        .body(Empty::<Bytes>::new())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let response = sender.send_request(req).await?;
    let status = response.status();
    let mut body = response.into_body();
    if !status.is_success() {
        let text = body.collect().await?.to_bytes();
        anyhow::bail!(
            "stream refused ({status}): {}",
            String::from_utf8_lossy(&text)
        );
    }
    let (mut pending, mut events) = (String::new(), 0u64);
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(3600), body.frame()).await? {
        let Ok(chunk) = frame?.into_data() else {
            continue;
        };
        pending.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(at) = pending.find("\n\n") {
            let block: String = pending.drain(..at + 2).collect();
            let data: Vec<&str> = block
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .collect();
            if data.is_empty() {
                continue;
            }
            println!("{}", data.join("\n"));
            if block.lines().any(|l| l == "event: event") {
                events += 1;
                if o.count.is_some_and(|n| events >= n) {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

/// A connection to a hub: TCP, or TLS over TCP.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// Connects to the host of `url` (`http`, `ws`, or with TLS `https`, `wss`, trusting the
/// certificates of `ca_file`); returns the host, the path (default `/ws`) and the stream.
async fn dial(url: &str, ca_file: Option<&str>) -> anyhow::Result<(String, String, Box<dyn Io>)> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| anyhow::anyhow!("{url}: expected scheme://host:port"))?;
    let (host, path) = match rest.split_once('/') {
        Some((h, p)) => (h.to_string(), format!("/{p}")),
        None => (rest.to_string(), "/ws".to_string()),
    };
    let tcp = tokio::net::TcpStream::connect(&host).await?;
    let stream: Box<dyn Io> = match scheme {
        "http" | "ws" => Box::new(tcp),
        "https" | "wss" => {
            let ca = ca_file.ok_or_else(|| anyhow::anyhow!("{url}: give --ca-file to trust"))?;
            Box::new(tls_connect(tcp, &host, ca).await?)
        }
        other => anyhow::bail!("{url}: unknown scheme {other}"),
    };
    Ok((host, path, stream))
}

/// A TLS client session over `tcp` to `host` (its name or address), trusting `ca_file`.
async fn tls_connect(
    tcp: tokio::net::TcpStream,
    host: &str,
    ca_file: &str,
) -> anyhow::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file)? {
        roots.add(cert?)?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let name = ServerName::try_from(name.trim_matches(['[', ']']).to_string())?;
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    Ok(connector.connect(name, tcp).await?)
}
