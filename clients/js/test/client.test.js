// The client against real hub processes: events, snapshot, token refresh, a hub restart and a
// drain in the middle of a stream.

import assert from "node:assert/strict";
import { test } from "node:test";
import { StreamhubClient, connect } from "../index.js";
import { Hub, Redis, freePort, gpuEvents, recordGpu, sleep, until } from "../support/hub.js";

const fast = { initialBackoffMs: 100, maxBackoffMs: 400 };

test("events arrive as callbacks and through the async iterator, with a snapshot first", async () => {
  const hub = await Hub.start();
  try {
    await hub.publish([
      { event_type: "GPU_UPDATE", event_id: "old-1", cluster_id: "c1", payload: { util: 1 } },
      { event_type: "GPU_UPDATE", event_id: "old-2", cluster_id: "c1", payload: { util: 2 } },
    ]);
    const client = connect(hub.url, fast);
    const seen = [];
    client.on("event", (e) => seen.push(e));
    const snapshotDone = new Promise((r) => client.on("snapshot", r));
    client.subscribe({ event_types: ["GPU_UPDATE"], cluster_filter: ["c1"], snapshot: true });
    assert.equal((await snapshotDone).events, 1);
    await hub.publish(gpuEvents("live-", 0, 3));
    const iter = client.events();
    const got = [];
    for await (const e of iter) {
      got.push(e.event_id);
      if (got.length === 4) break;
    }
    assert.deepEqual(got, ["old-2", "live-0", "live-1", "live-2"]);
    assert.equal(seen[0].snapshot, true, "the snapshot's event is marked");
    assert.equal(client.lastEventId, "live-2", "a snapshot is state, not a place to resume from");
    client.close();
  } finally {
    await hub.stop();
  }
});

test("a fresh token is fetched on connect and again when the hub says AUTH_EXPIRED", async () => {
  const hub = await Hub.start(
    "  auth:\n    enabled: true\n    reauth_grace_seconds: 5\n    static_tokens:\n" +
      '      - {token: "t1", subject: "a", roles: [viewer], expires_in_seconds: 1.5}\n' +
      '      - {token: "t2", subject: "a", roles: [viewer]}\n' +
      '      - {token: "pub", subject: "publisher", roles: [internal]}\n',
  );
  try {
    const handed = [];
    const client = new StreamhubClient(hub.url, {
      ...fast,
      getToken: async () => {
        handed.push(handed.length === 0 ? "t1" : "t2");
        return handed.at(-1);
      },
    });
    const errors = [];
    client.on("error", (e) => errors.push(e.code));
    const closes = [];
    client.on("close", (c) => closes.push(c));
    const ready = new Promise((r) => client.on("ready", r));
    client.connect();
    const info = await ready;
    assert.match(info.clientId, /^[0-9a-f-]{36}$/);
    client.subscribe({ event_types: ["GPU_UPDATE"] });
    await until(() => handed.length === 2, 6000, "a second token after AUTH_EXPIRED");
    assert.deepEqual(handed, ["t1", "t2"]);
    assert.ok(errors.includes("AUTH_EXPIRED"), `${errors}`);
    // Still connected and served on the same connection, past the grace.
    await sleep(600);
    const got = client.events();
    assert.equal(await hub.publish(gpuEvents("x", 0, 1), "pub"), 202);
    assert.equal((await got.next()).value.event_id, "x0");
    assert.deepEqual(closes, [], "never disconnected");
    client.close();
  } finally {
    await hub.stop();
  }
});

test("a client started before its hub keeps trying and connects once the hub is up", async () => {
  const port = await freePort();
  const client = connect(`ws://127.0.0.1:${port}/ws`, fast);
  let hub;
  try {
    const readies = [];
    client.on("ready", (r) => readies.push(r));
    const closes = [];
    client.on("close", (c) => closes.push(c));
    // Several refused attempts first.
    await until(() => closes.length >= 2, 5000, "refused attempts reported as closes");
    hub = await Hub.start("", port);
    await until(() => readies.length === 1, 5000, "a connection once the hub is up");
  } finally {
    client.close();
    await hub?.stop();
  }
});

test("a hub restart: the client reconnects by itself and says when it could not resume", async () => {
  let hub = await Hub.start();
  const port = hub.port;
  const client = connect(hub.url, fast);
  try {
    const ids = [];
    client.on("event", (e) => ids.push(e.event_id));
    const resets = [];
    client.on("reset", (m) => resets.push(m));
    const readies = [];
    client.on("ready", (r) => readies.push(r));
    client.subscribe({ event_types: ["GPU_UPDATE"] });
    await until(() => readies.length === 1, 5000, "first connection");
    await sleep(100);
    await hub.publish(gpuEvents("a", 0, 5));
    await until(() => ids.length === 5, 5000, "first events");
    // Killed outright: its in-memory history is gone with it.
    await hub.stop("SIGKILL");
    hub = await Hub.start("", port);
    await until(() => readies.length === 2, 10000, "reconnect");
    await until(() => resets.length === 1, 5000, "reset");
    assert.equal(resets[0].recovered, false);
    await hub.publish(gpuEvents("b", 0, 3));
    await until(() => ids.length === 8, 5000, "events after the restart");
    assert.deepEqual(ids.slice(5), ["b0", "b1", "b2"]);
  } finally {
    client.close();
    await hub.stop();
  }
});

test("a drain in the middle of a stream: the client moves to another instance with no gap", async () => {
  const redis = await Redis.start();
  const yaml = (id) => `  redis_url: "${redis.url}"\n  scaling:\n    instance_id: ${id}\n  shutdown:\n    reconnect_after_ms: 200\n`;
  const a = await Hub.start(yaml("a"));
  const b = await Hub.start(yaml("b"));
  await a.waitReady();
  await b.waitReady();
  const client = connect([a.url, b.url], fast);
  try {
    const { events, readies, replays } = await recordGpu(client);
    // A stream of 600 events through b while a drains (SIGTERM: goodbye with reconnect advice).
    let published = 0;
    const stream = (async () => {
      for (let i = 0; i < 30; i++) {
        assert.equal(await b.publish(gpuEvents("s", i * 20, i * 20 + 20)), 202);
        published += 20;
        await sleep(20);
      }
    })();
    await until(() => events.length >= 100, 5000, "the stream to start");
    await a.stop("SIGTERM");
    await stream;
    await until(() => events.length >= published, 10000, `all ${published} events (have ${events.length})`);
    assert.deepEqual(readies, [a.url, b.url]);
    assert.equal(replays.length, 1);
    assert.equal(replays[0].recovered, true);
    const want = gpuEvents("s", 0, 600).map((e) => e.event_id);
    assert.deepEqual(events.map((e) => e.event_id), want, "every event once, in order, across the move");
  } finally {
    client.close();
    await a.stop();
    await b.stop();
    redis.stop();
  }
});
