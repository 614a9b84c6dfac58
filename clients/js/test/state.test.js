// loadState against a real hub: the state over HTTP, then live events from its position, kept by
// the hub's own rules, ends equal to what the hub holds, with events published all along; and a
// position the hub no longer holds falls back to the snapshot.

import assert from "node:assert/strict";
import { test } from "node:test";
import { StreamhubClient } from "../index.js";
import { Hub, until } from "../support/hub.js";

const fast = { initialBackoffMs: 100, maxBackoffMs: 400 };
const TYPES = ["ALERT_FIRED", "GPU_UPDATE"];

/** Round `i` of a dashboard's traffic: one GPU node's update, one alert fired, an older resolved. */
function round(prefix, i) {
  const out = [
    { event_type: "GPU_UPDATE", event_id: `${prefix}g${i}`, cluster_id: "c1",
      payload: { node_name: `n${i % 7}`, gpus: [{ index: 0, utilization_gpu_percent: i % 100 }] } },
    { event_type: "ALERT_FIRED", event_id: `${prefix}a${i}`, cluster_id: "c1",
      payload: { fingerprint: `fp${i}`, severity: i % 2 ? "CRITICAL" : "WARNING" } },
  ];
  if (i >= 3) {
    out.push({ event_type: "ALERT_RESOLVED", event_id: `${prefix}r${i}`, cluster_id: "c1",
      payload: { fingerprint: `fp${i - 3}` } });
  }
  return out;
}

/** The ids of the hub's own state for TYPES. */
async function hubState(hub) {
  const r = await fetch(`http://127.0.0.1:${hub.port}/api/v1/streaming/state?event_types=${TYPES.join(",")}`);
  return (await r.json()).events.map((e) => e.event_id);
}

test("loadState, then live from its position, keeps the hub's state while events flow", async () => {
  const hub = await Hub.start();
  try {
    for (let i = 0; i < 10; i++) assert.equal(await hub.publish(round("p", i)), 202);
    const publishing = (async () => {
      for (let i = 10; i < 60; i++) assert.equal(await hub.publish(round("p", i)), 202);
    })();
    const client = new StreamhubClient(hub.url, fast).connect();
    const state = await client.loadState({ event_types: TYPES });
    assert.ok(state.position, "a position to resume from");
    let changes = 0;
    state.onChange(() => changes++);
    await publishing;
    await until(() => client.lastEventId === "pr59", 10000, "the last event");
    assert.deepEqual(state.events().map((e) => e.event_id), await hubState(hub));
    assert.equal(state.events("ALERT_FIRED").length, 3, "three alerts fired and not yet resolved");
    assert.equal(state.events("GPU_UPDATE").length, 7, "one per node");
    assert.ok(changes > 0, "live events changed it");
    client.close();
  } finally {
    await hub.stop();
  }
});

test("loadState from a position the hub no longer holds falls back to the snapshot", async () => {
  const hub = await Hub.start("  history:\n    max_events: 5\n");
  try {
    for (let i = 0; i < 4; i++) assert.equal(await hub.publish(round("q", i)), 202);
    // The state is read, then more is published than the recent history holds before the
    // subscription goes out: its position is gone.
    const fetchThenPublish = async (url, init) => {
      const r = await fetch(url, init);
      for (let i = 4; i < 12; i++) assert.equal(await hub.publish(round("q", i)), 202);
      return r;
    };
    const client = new StreamhubClient(hub.url, fast).connect();
    const reset = new Promise((r) => client.on("reset", r));
    const snapshot = new Promise((r) => client.on("snapshot", r));
    const state = await client.loadState({ event_types: TYPES }, { fetch: fetchThenPublish });
    assert.equal((await reset).recovered, false);
    await snapshot;
    assert.deepEqual(state.events().map((e) => e.event_id), await hubState(hub));
    assert.deepEqual(state.events("ALERT_FIRED").map((e) => e.payload.fingerprint), ["fp9", "fp10", "fp11"]);
    client.close();
  } finally {
    await hub.stop();
  }
});
