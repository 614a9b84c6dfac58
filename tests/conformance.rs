//! Protocol conformance: the Autobahn TestSuite's cases, run by `kosoku` (PyPI; installed by
//! `.ci/run`) against the hub's echo route, which is served by the same frame reader, message
//! assembly and writer as `/ws`. Sections 1–7 (framing, pings, reserved bits, opcodes,
//! fragmentation, UTF-8, closing) and 9 (big and many messages, up to 16 MiB, with the hub's
//! message limit raised to match), 12 and 13 (permessage-deflate: compressed messages of every
//! size, and every combination of offer parameters, with `websocket.compression` on) must end
//! OK, NON-STRICT or INFORMATIONAL. Section 10 has no case here.

mod common;

use common::*;
use std::process::Command;

/// The sections run, as kosoku `-i` patterns.
const SECTIONS: [&str; 10] = [
    "1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "12.*", "13.*",
];

#[tokio::test]
async fn autobahn_cases_pass_through_the_echo_route() {
    let hub = HubProcess::start(
        "  websocket:\n    echo_path: \"/echo\"\n    compression: true\n    max_message_size_bytes: 16777216\n",
    );
    let out = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("kosoku");
    cmd.arg(format!("ws://{}/echo", hub.addr))
        .arg("-o")
        .arg(out.path())
        .args(["-p", "4"]);
    for s in SECTIONS {
        cmd.args(["-i", s]);
    }
    let run = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("kosoku is installed (pip install kosoku; see .ci/run)");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("index.json")).unwrap()).unwrap();
    let cases = index
        .as_object()
        .and_then(|agents| agents.values().next())
        .and_then(|c| c.as_object())
        .expect("one agent's cases");
    let failed: Vec<String> = cases
        .iter()
        .filter(|(_, c)| {
            !matches!(
                c["behavior"].as_str(),
                Some("OK" | "NON-STRICT" | "INFORMATIONAL")
            ) || !matches!(
                c["behaviorClose"].as_str(),
                Some("OK" | "NON-STRICT" | "INFORMATIONAL") | None
            )
        })
        .map(|(k, c)| format!("{k}: {} / {}", c["behavior"], c["behaviorClose"]))
        .collect();
    assert!(failed.is_empty(), "cases not passed: {failed:?}");
    assert!(cases.len() >= 516, "{} cases ran", cases.len());
    let compressed = cases
        .keys()
        .filter(|k| k.starts_with("12.") || k.starts_with("13."));
    assert_eq!(compressed.count(), 216, "every permessage-deflate case ran");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stdout)
    );
    // The hub kept serving its own protocol throughout.
    let mut ws = hub.ws().await;
    send(&mut ws, &serde_json::json!({"type": "ping"})).await;
    assert_eq!(recv(&mut ws).await["type"], "pong");
}

/// The echo route is off unless configured: `/echo` is then an unknown path.
#[tokio::test]
async fn the_echo_route_is_off_by_default() {
    let hub = HubProcess::start("");
    let r = reqwest::get(hub.url("/echo")).await.unwrap();
    assert_eq!(r.status(), 404);
}
