//! The JavaScript client (`clients/js`) tested with Node's test runner against real hub
//! processes (this build's binary) and a real `redis-server`: events, snapshot, token refresh,
//! a hub restart and a drain in the middle of a stream, `loadState` (state over HTTP, then live
//! from its position) under concurrent publishing, and a failover between two NATS regions
//! (`nats-server` processes) resumed from the client's positions.

mod common;

#[test]
fn the_js_client_passes_its_tests_against_the_real_hub() {
    common::node_tests("clients/js", "test/", &[], 9);
}
