//! The server under test: start a streamhub binary (or attach to a running server), sample its
//! memory and CPU from /proc, and read its metrics, client list and flamegraph over HTTP.

use anyhow::Context;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Clock ticks per second in /proc/<pid>/stat (USER_HZ, 100 on Linux).
const CLK_TCK: f64 = 100.0;

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
    redis: Option<(Child, String)>,
    /// The Redis Cluster the harness started for the hub, if any.
    cluster: Option<RedisCluster>,
}

/// Which Redis, if any, the harness starts for the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// None: embedded mode.
    Embedded,
    /// One `redis-server`: Redis mode.
    Redis,
    /// A three-master Redis Cluster: Redis Cluster mode.
    RedisCluster,
}

impl Drop for Hub {
    fn drop(&mut self) {
        for c in self
            .child
            .iter_mut()
            .chain(self.redis.iter_mut().map(|(c, _)| c))
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts a `redis-server` on a free loopback port; returns it and its URL once it answers.
fn start_redis() -> anyhow::Result<(Child, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    Ok((start_redis_on(port)?, format!("redis://127.0.0.1:{port}/")))
}

/// Starts a `redis-server` (keeping nothing on disk) on loopback `port`, once it takes connections.
pub fn start_redis_on(port: u16) -> anyhow::Result<Child> {
    start_redis_with(port, &[])
}

/// Starts `redis-server` on `port` with `extra` arguments (for example cluster mode) and waits
/// until it accepts connections.
pub fn start_redis_with(port: u16, extra: &[&str]) -> anyhow::Result<Child> {
    let mut child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start redis-server (is it installed?)")?;
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if std::time::Instant::now() >= end {
            let _ = child.kill();
            anyhow::bail!("redis-server did not start on port {port}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(child)
}

/// A Redis Cluster of three masters on loopback: `redis-server --cluster-enabled yes` ×3, joined
/// with `redis-cli --cluster create`, killed on drop. A node can be killed and started again on
/// its port with its `nodes.conf`, so it rejoins with its slots.
pub struct RedisCluster {
    /// The processes, by node (None while killed).
    children: Vec<Option<Child>>,
    /// The nodes' ports.
    pub ports: Vec<u16>,
    /// Holds each node's `nodes.conf`.
    dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts three masters and waits until every node says the cluster is ok.
    pub fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut ports = Vec::new();
        // Each node needs its port and its cluster bus port (port + 10000) free.
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        while ports.len() < 3 {
            let p = 20000 + fastrand::u16(0..30000);
            if !ports.contains(&p) && free(p) && free(p + 10000) {
                ports.push(p);
            }
        }
        let mut c = RedisCluster {
            children: vec![None, None, None],
            ports,
            dir,
        };
        for i in 0..3 {
            c.restart(i)?;
        }
        let nodes: Vec<String> = c.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .context("cannot run redis-cli (Debian package redis-tools)")?;
        if !out.status.success() {
            anyhow::bail!(
                "redis-cli --cluster create: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        if !c.wait_ok(std::time::Duration::from_secs(20)) {
            anyhow::bail!("the redis cluster did not reach cluster_state:ok");
        }
        Ok(c)
    }

    /// The seed node URLs.
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}/"))
            .collect()
    }

    /// Kills node `i` (as a crash would).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts node `i` (again) on its port with its `nodes.conf`.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill(i);
        let port = self.ports[i];
        let conf = self.dir.path().join(format!("nodes-{port}.conf"));
        let dir = self.dir.path().to_string_lossy().to_string();
        self.children[i] = Some(start_redis_with(
            port,
            &[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &conf.to_string_lossy(),
                "--cluster-node-timeout",
                "2000",
                "--dir",
                &dir,
            ],
        )?);
        Ok(())
    }

    /// One command on node `i` (no redirection).
    pub fn node_cmd(&self, i: usize, cmd: &redis::Cmd) -> redis::RedisResult<redis::Value> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/", self.ports[i]))?;
        let mut conn = client.get_connection_with_timeout(std::time::Duration::from_secs(2))?;
        cmd.query(&mut conn)
    }

    /// Waits until every node reports `cluster_state:ok`, up to `limit`; returns whether it did.
    pub fn wait_ok(&self, limit: std::time::Duration) -> bool {
        let end = std::time::Instant::now() + limit;
        while std::time::Instant::now() < end {
            let ok = (0..self.ports.len()).all(|i| {
                self.node_cmd(i, redis::cmd("CLUSTER").arg("INFO"))
                    .and_then(|v| redis::from_redis_value::<String>(v).map_err(Into::into))
                    .is_ok_and(|info| info.contains("cluster_state:ok"))
            });
            if ok {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        false
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }
}

/// Memory and CPU of a process at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    /// Resident set size, KiB.
    pub rss_kib: u64,
    /// User + system CPU time, seconds.
    pub cpu_seconds: f64,
}

impl Hub {
    /// Starts `bin` on a free loopback port with `extra` settings under `realtime_streaming`.
    pub fn start(
        bin: &Path,
        extra: Option<&serde_norway::Value>,
        profiling: bool,
        backend: Backend,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let redis = match backend {
            Backend::Redis => Some(start_redis()?),
            _ => None,
        };
        let cluster = match backend {
            Backend::RedisCluster => Some(RedisCluster::start()?),
            _ => None,
        };
        let mut root = serde_norway::Mapping::new();
        root.insert("host".into(), "127.0.0.1".into());
        root.insert("port".into(), 0.into());
        if let Some(serde_norway::Value::Mapping(m)) = extra {
            for (k, v) in m {
                root.insert(k.clone(), v.clone());
            }
        }
        if let Some((_, url)) = &redis {
            root.insert("redis_url".into(), url.clone().into());
        }
        if let Some(c) = &cluster {
            let nodes: Vec<serde_norway::Value> = c.urls().into_iter().map(Into::into).collect();
            root.insert("redis_cluster_nodes".into(), nodes.into());
        }
        if profiling {
            let mut p = serde_norway::Mapping::new();
            p.insert("enabled".into(), true.into());
            root.insert("profiling".into(), serde_norway::Value::Mapping(p));
        }
        let mut doc = serde_norway::Mapping::new();
        doc.insert(
            "realtime_streaming".into(),
            serde_norway::Value::Mapping(root),
        );
        let path = dir.path().join("hub.yaml");
        std::fs::write(&path, serde_norway::to_string(&doc)?)?;
        let (child, addr) = spawn_hub(bin, &path)?;
        Ok(Self {
            pid: Some(child.id()),
            child: Some(child),
            addr,
            http: format!("http://{addr}"),
            _dir: Some(dir),
            redis,
            cluster,
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
        }
    }

    /// The seed nodes of the Redis Cluster the harness started, if any.
    pub fn redis_cluster_urls(&self) -> Option<Vec<String>> {
        self.cluster.as_ref().map(RedisCluster::urls)
    }

    /// The URL of the `redis-server` the harness started, if any.
    pub fn redis_url(&self) -> Option<&str> {
        self.redis.as_ref().map(|(_, u)| u.as_str())
    }

    /// Samples the process from /proc.
    pub fn sample(&self) -> Option<ProcSample> {
        proc_sample(self.pid?)
    }

    /// One metric's value (summed over label sets) from `/metrics`.
    pub async fn metric(&self, http: &reqwest::Client, name: &str) -> Option<f64> {
        let text = http
            .get(format!("{}/metrics", self.http))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        metric_sum(&text, name)
    }

    /// Events dropped per client id, from `/api/v1/streaming/clients`.
    pub async fn drops_by_client(&self, http: &reqwest::Client) -> HashMap<String, u64> {
        let url = format!("{}/api/v1/streaming/clients?limit=10000000", self.http);
        let Ok(r) = http.get(url).send().await else {
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
) -> anyhow::Result<Vec<u8>> {
    let r = http
        .get(format!("{base}/debug/pprof/flamegraph?seconds={seconds}"))
        .send()
        .await?;
    anyhow::ensure!(
        r.status().is_success(),
        "profiling endpoint answered {}",
        r.status()
    );
    Ok(r.bytes().await?.to_vec())
}

/// Starts `bin serve --config config` with warnings-only logs and returns the process and the
/// address its banner (first stdout line) names.
pub fn spawn_hub(bin: &Path, config: &Path) -> anyhow::Result<(Child, SocketAddr)> {
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
        Some(addr) => Ok((child, addr)),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("hub did not print its address: {line:?}")
        }
    }
}

/// The address in the hub's start-up line (`streamhub listening on http://ADDR ...`).
pub fn banner_addr(line: &str) -> Option<SocketAddr> {
    line.split("http://")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
}

/// Reads RSS and CPU time of `pid`.
pub fn proc_sample(pid: u32) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after ')'.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ProcSample {
        rss_kib,
        cpu_seconds: ticks / CLK_TCK,
    })
}

/// The sum of a metric's samples (all label sets) in Prometheus text.
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut found = false;
    let mut sum = 0.0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        if let Some(v) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            sum += v;
            found = true;
        }
    }
    found.then_some(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sums_label_sets() {
        let t = "# HELP x\nws_events_routed_total{event_type=\"A\"} 3\nws_events_routed_total{event_type=\"B\"} 4\nws_events_routed_total_other 9\nws_events_dropped_total 2\n";
        assert_eq!(metric_sum(t, "ws_events_routed_total"), Some(7.0));
        assert_eq!(metric_sum(t, "ws_events_dropped_total"), Some(2.0));
        assert_eq!(metric_sum(t, "nope"), None);
    }

    #[test]
    fn banner() {
        let l = "streamhub listening on http://127.0.0.1:4321 (ws://127.0.0.1:4321/ws), 2 shard(s)";
        assert_eq!(banner_addr(l), Some("127.0.0.1:4321".parse().unwrap()));
        assert_eq!(banner_addr("nothing"), None);
    }

    #[test]
    fn samples_this_process() {
        let s = proc_sample(std::process::id()).unwrap();
        assert!(s.rss_kib > 0);
        assert!(s.cpu_seconds >= 0.0);
    }
}
