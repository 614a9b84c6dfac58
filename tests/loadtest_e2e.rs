//! A small end-to-end run of the load-test harness against the real hub: a few hundred clients
//! for a few seconds. Checks that the report files exist and that their figures add up.

use loadtest::report;
use loadtest::runner::{self, RunOptions};
use loadtest::scenario::Scenario;

const SCENARIO: &str = "
name: e2e
clients: 300
source_addresses: 3
subscriptions: {kind: dashboards, clusters: 5, namespaces: 3}
stalled_fraction: 0.1
publish:
  rates: [150, 300]
  step_seconds: 2
  publishers: 2
  payload_bytes: 64
  max_batch: 50
goals:
  zero_loss: true
target:
  hub_config:
    backpressure: {max_queue_size: 8}
";

/// Runs the hub binary this test suite built, without flamegraph or progress bar.
fn options() -> RunOptions {
    RunOptions {
        hub_bin: env!("CARGO_BIN_EXE_streamhub").into(),
        flamegraph: None,
        progress: false,
        clients: None,
        step_seconds: None,
        rate: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_run_writes_reports_that_add_up() {
    let scenario = Scenario::parse(SCENARIO).unwrap();
    let opts = options();
    let summary = runner::run(&scenario, &opts).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    report::write_all(&summary, dir.path()).unwrap();
    for f in [
        "summary.json",
        "report.md",
        "latency.hgrm",
        "latency_percentiles.svg",
        "timeline.svg",
    ] {
        let meta = std::fs::metadata(dir.path().join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(meta.len() > 100, "{f} is empty");
    }

    // Every client connected and subscribed; 30 of them stalled.
    assert_eq!(summary.connect.ready, 300);
    assert_eq!(summary.connect.stalled, 30);
    // Both steps ran and published what they were asked (2 s at 150/s, then at 300/s).
    assert_eq!(summary.steps.len(), 2);
    let published: u64 = summary.steps.iter().map(|s| s.events).sum();
    assert_eq!(published, 300 + 600);
    // Reading clients got exactly what the schedule says, once.
    let a = summary.accounting;
    assert!(a.expected > 0);
    assert_eq!((a.lost, a.duplicates, a.unexpected), (0, 0, 0), "{a:?}");
    assert_eq!(a.received, a.expected);
    // The histogram holds one sample per received event, and so do the timeline and .hgrm.
    assert_eq!(summary.latency.count, a.received);
    let per_second: u64 = summary.timeline.iter().map(|t| t.deliveries).sum();
    assert_eq!(per_second, a.received);
    let hgrm = std::fs::read_to_string(dir.path().join("latency.hgrm")).unwrap();
    let counted: u64 = hgrm
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty() && !l.contains("Value"))
        .map(|l| l.split_whitespace().nth(2).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(counted, a.received);
    // Clients that kept reading lost nothing to backpressure.
    assert_eq!(summary.hub.drops_on_reading_clients, 0);
    assert!(summary.goals.iter().all(|g| g.met), "{:?}", summary.goals);
    // The JSON summary reads back.
    let back: report::Summary =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(back.accounting, summary.accounting);
    // The comparison chart draws two runs.
    let cmp = dir.path().join("compare.svg");
    loadtest::chart::percentiles(
        &cmp,
        &[
            ("a", &summary.percentile_curve),
            ("b", &back.percentile_curve),
        ],
    )
    .unwrap();
    assert!(std::fs::read_to_string(cmp).unwrap().contains("<svg"));
}

/// The harness over TLS against a hub that checks ES256 JWTs: every client authenticates with
/// its own signed token over `wss://`, events are published over `https://` with the harness's
/// operator token, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_run_over_tls_with_jwt_auth() {
    let scenario = hundred_clients("name: e2e_tls_jwt", "  tls: true\n  auth: es256");
    let summary = runner::run(&scenario, &options()).await.unwrap();
    assert_every_client_got_everything(&summary, 100);
    assert_eq!(summary.steps[0].events, 200);
    assert!(summary.hub.cpu_us_per_connection.is_some());
}

/// 100 dashboards for 2 s at 100 events/s, with `top` lines first and `target` under `target:`.
fn hundred_clients(top: &str, target: &str) -> Scenario {
    Scenario::parse(&format!(
        "{top}\nclients: 100\nsource_addresses: 2\n\
         subscriptions: {{kind: dashboards, clusters: 5, namespaces: 3}}\n\
         publish: {{rates: [100], step_seconds: 2}}\ngoals: {{zero_loss: true}}\n\
         target:\n{target}\n"
    ))
    .expect("a valid scenario")
}

/// Every one of `clients` was ready, and every event its subscription matched arrived once.
fn assert_every_client_got_everything(summary: &report::Summary, clients: usize) {
    assert_eq!(summary.connect.ready, clients, "{:?}", summary.connect);
    let a = summary.accounting;
    assert!(a.expected > 0);
    assert_eq!(
        (a.lost, a.duplicates, a.received),
        (0, 0, a.expected),
        "{a:?}"
    );
}

/// The harness's clients on Server-Sent Events (`transport: sse`) against a hub that checks
/// HS256 JWTs (each stream's token in its query): every client's stream opens, and every event
/// its subscription matches arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_run_over_sse() {
    let scenario = hundred_clients("name: e2e_sse\ntransport: sse", "  auth: hs256");
    let summary = runner::run(&scenario, &options()).await.unwrap();
    assert_every_client_got_everything(&summary, 100);
}
