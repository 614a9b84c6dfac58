//! The server under test: start a streamhub binary (or attach to a running server), sample its
//! memory and CPU from /proc, and read its metrics, client list and flamegraph over HTTP.

use crate::fixtures::{
    metric_sum, proc_sample, NatsCluster, ProcSample, RedisCluster, RedisServer,
};
use crate::scenario::{Backend, Target};
use crate::tokens::Minter;
use anyhow::Context;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A hub the harness started or attached to.
pub struct Hub {
    /// The process, when the harness started it (killed on drop).
    child: Option<Child>,
    /// The PID to sample, if known.
    pub pid: Option<u32>,
    /// Where its port is.
    pub addr: SocketAddr,
    /// `http://addr`.
    pub http: String,
    /// Holds the generated configuration file.
    _dir: Option<tempfile::TempDir>,
    /// The `redis-server` the harness started for the hub, if any.
    redis: Option<RedisServer>,
    /// The Redis Cluster the harness started for the hub, if any.
    cluster: Option<RedisCluster>,
    /// The `nats-server` the harness started for the hub, if any (kept for the hub's life).
    _nats: Option<NatsCluster>,
    /// Signs the clients' tokens.
    pub minter: Minter,
    /// With TLS: the client settings that trust the hub's certificate.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// With auth on: the harness's own bearer token (roles `internal` and `admin`).
    pub operator: Option<String>,
}

/// The hub's settings under `realtime_streaming`: loopback on a free port, the scenario's own
/// settings, then `extra` (empty mappings are left out).
fn hub_config(target: &Target, extra: Vec<(&str, serde_norway::Value)>) -> serde_norway::Mapping {
    let mut root = yaml_map([("host", "127.0.0.1".into()), ("port", 0.into())]);
    if let Some(serde_norway::Value::Mapping(m)) = &target.hub_config {
        root.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    for (k, v) in extra {
        if !matches!(&v, serde_norway::Value::Null) {
            root.insert(k.into(), v);
        }
    }
    root
}

/// A YAML mapping of string keys.
fn yaml_map<const N: usize>(entries: [(&str, serde_norway::Value); N]) -> serde_norway::Mapping {
    entries.into_iter().map(|(k, v)| (k.into(), v)).collect()
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Hub {
    /// Starts `bin` on a free loopback port as `target` asks: its extra settings under
    /// `realtime_streaming`, the Redis its backend needs, and a JWT key when auth is on.
    pub fn start(bin: &Path, target: &Target, profiling: bool) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let redis = match target.backend {
            Backend::Redis => Some(RedisServer::start()?),
            _ => None,
        };
        let cluster = match target.backend {
            Backend::RedisCluster => Some(RedisCluster::start()?),
            _ => None,
        };
        let nats = match target.backend {
            Backend::Nats => Some(NatsCluster::single()?),
            _ => None,
        };
        let (minter, auth) = Minter::new(target.auth, dir.path())?;
        let tls = match target.tls {
            true => Some(crate::tls::make(dir.path())?),
            false => None,
        };
        let mut extra: Vec<(&str, serde_norway::Value)> = vec![("auth", auth.unwrap_or_default())];
        if let Some(r) = &redis {
            extra.push(("redis_url", r.url().into()));
        }
        if let Some(c) = &cluster {
            let nodes: Vec<serde_norway::Value> = c.urls().into_iter().map(Into::into).collect();
            extra.push(("redis_cluster_nodes", nodes.into()));
        }
        if let Some(n) = &nats {
            let servers: Vec<serde_norway::Value> = n.urls().into_iter().map(Into::into).collect();
            extra.push(("nats", yaml_map([("servers", servers.into())]).into()));
        }
        if let Some(t) = &tls {
            extra.push(("tls", t.hub_config.clone()));
        }
        if profiling {
            extra.push(("profiling", yaml_map([("enabled", true.into())]).into()));
        }
        let root = hub_config(target, extra);
        let path = dir.path().join("hub.yaml");
        let doc = yaml_map([("realtime_streaming", root.into())]);
        std::fs::write(&path, serde_norway::to_string(&doc)?)?;
        let Spawned { child, addr, .. } = spawn_hub(bin, &path)?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        Ok(Self {
            pid: Some(child.id()),
            child: Some(child),
            addr,
            http: format!("{scheme}://{addr}"),
            _dir: Some(dir),
            redis,
            cluster,
            _nats: nats,
            operator: minter.operator()?,
            minter,
            tls: tls.map(|t| t.client),
        })
    }

    /// Attaches to a running server.
    pub fn attach(addr: SocketAddr, http: String, pid: Option<u32>) -> Self {
        Self {
            child: None,
            pid,
            addr,
            http,
            _dir: None,
            redis: None,
            cluster: None,
            _nats: None,
            minter: Minter::Off,
            tls: None,
            operator: None,
        }
    }

    /// The seed nodes of the Redis Cluster the harness started, if any.
    pub fn redis_cluster_urls(&self) -> Option<Vec<String>> {
        self.cluster.as_ref().map(RedisCluster::urls)
    }

    /// The URL of the `redis-server` the harness started, if any.
    pub fn redis_url(&self) -> Option<String> {
        self.redis.as_ref().map(RedisServer::url)
    }

    /// `request` with the harness's bearer token, when auth is on.
    pub fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.operator {
            Some(t) => request.bearer_auth(t),
            None => request,
        }
    }

    /// Samples the process from /proc.
    pub fn sample(&self) -> Option<ProcSample> {
        proc_sample(self.pid?)
    }

    /// One metric's value (summed over label sets) from `/metrics`.
    pub async fn metric(&self, http: &reqwest::Client, name: &str) -> Option<f64> {
        let text = self
            .authorized(http.get(format!("{}/metrics", self.http)))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        metric_sum(&text, name)
    }

    /// A snapshot of the hub's allocator (`/debug/heap`), when it has one.
    pub async fn heap(&self, http: &reqwest::Client) -> Option<crate::heap::HeapSnapshot> {
        let url = format!("{}/debug/heap", self.http);
        let r = self.authorized(http.get(url)).send().await.ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.json().await.ok()
    }

    /// Events dropped per client id, from `/api/v1/streaming/clients`.
    pub async fn drops_by_client(&self, http: &reqwest::Client) -> HashMap<String, u64> {
        let url = format!("{}/api/v1/streaming/clients?limit=10000000", self.http);
        let Ok(r) = self.authorized(http.get(url)).send().await else {
            return HashMap::new();
        };
        let Ok(v) = r.json::<serde_json::Value>().await else {
            return HashMap::new();
        };
        v["clients"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|c| {
                        Some((
                            c["client_id"].as_str()?.to_string(),
                            c["events_dropped"].as_u64()?,
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A flamegraph of `seconds` from the opt-in profiling endpoint of the hub at `base`.
pub async fn fetch_flamegraph(
    http: reqwest::Client,
    base: String,
    seconds: f64,
    token: Option<String>,
) -> anyhow::Result<Vec<u8>> {
    let mut get = http.get(format!("{base}/debug/pprof/flamegraph?seconds={seconds}"));
    if let Some(t) = token {
        get = get.bearer_auth(t); // the profiler needs the admin role while auth is on
    }
    let r = get.send().await?;
    anyhow::ensure!(
        r.status().is_success(),
        "profiling endpoint answered {}",
        r.status()
    );
    Ok(r.bytes().await?.to_vec())
}

/// A hub process just started, with what its start-up line said.
pub struct Spawned {
    /// The process.
    pub child: Child,
    /// The address its start-up line names.
    pub addr: SocketAddr,
    /// The start-up line itself (`streamhub listening on http://ADDR ..., mode MODE`).
    pub banner: String,
}

/// Starts `bin serve --config config` with warnings-only logs and returns the process and its
/// start-up line (the first line on stdout), once it names the address.
pub fn spawn_hub(bin: &Path, config: &Path) -> anyhow::Result<Spawned> {
    let mut child = Command::new(bin)
        .arg("serve")
        .arg("--config")
        .arg(config)
        .env("STREAMHUB_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| {
            format!(
                "cannot start {} (build it with `cargo build --release`)",
                bin.display()
            )
        })?;
    let stdout = child.stdout.take().context("hub stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    match banner_addr(&line) {
        Some(addr) => Ok(Spawned {
            child,
            addr,
            banner: line.trim_end().to_string(),
        }),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("hub did not print its address: {line:?}")
        }
    }
}

/// The address in the hub's start-up line (`streamhub listening on http://ADDR ...`, or
/// `https://ADDR` with TLS).
pub fn banner_addr(line: &str) -> Option<SocketAddr> {
    line.split("listening on ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.split_once("://"))
        .and_then(|(_, addr)| addr.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banner() {
        let l = "streamhub listening on http://127.0.0.1:4321 (ws://127.0.0.1:4321/ws), 2 shard(s)";
        assert_eq!(banner_addr(l), Some("127.0.0.1:4321".parse().unwrap()));
        assert_eq!(banner_addr("nothing"), None);
        let tls = "streamhub listening on https://127.0.0.1:9 (wss://127.0.0.1:9/ws), mode redis";
        assert_eq!(banner_addr(tls), Some("127.0.0.1:9".parse().unwrap()));
    }
}
