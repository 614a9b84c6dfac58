//! The live console (`GET /`) in a real headless Chromium (Debian's `chromium`, driven by
//! `playwright-core` from `clients/console-test`, installed by `npm ci`): the page loads from
//! this build's hub, goes live, shows an alert published through the broadcast endpoint and a
//! GPU's utilization, and with authentication on asks for a token first; its state panels (active
//! alerts, GPU tiles per node, the cluster board) follow the hub's state; an admin disconnects a
//! client and drains, an internal token publishes; event data carrying
//! markup shows as text and runs no script, under a strict Content-Security-Policy. Screenshots are kept
//! in `target/console/`.

mod common;

#[test]
fn the_console_works_in_a_real_browser() {
    let shots = concat!(env!("CARGO_MANIFEST_DIR"), "/target/console");
    common::node_tests(
        "clients/console-test",
        "console.test.mjs",
        &[("SCREENSHOT_DIR", shots)],
        5,
    );
    let shot = std::path::Path::new(shots).join("console.png");
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 1000),
        "screenshot {shot:?} kept"
    );
}
