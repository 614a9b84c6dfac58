// The client across NATS regions: its hub's region is lost mid-stream, and it carries on in the
// other region, resuming from its positions (the last origin_seq of each origin region).

import assert from "node:assert/strict";
import { test } from "node:test";
import { connect } from "../index.js";
import { Hub, NatsRegions, gpuEvents, recordGpu, sleep, until } from "../support/hub.js";

test("a region's hub lost mid-stream: the client resumes in the other region with no gap and no duplicate", async () => {
  const regions = await NatsRegions.start(["a", "b"]);
  const yaml = (i, region, other) =>
    `  nats:\n    servers: ["${regions.url(i)}"]\n    region: ${region}\n    mirror_regions: [${other}]\n`;
  const a = await Hub.start(yaml(0, "a", "b"));
  const b = await Hub.start(yaml(1, "b", "a"));
  await a.waitReady(200, 20000);
  await b.waitReady(200, 20000);
  // No id filter: a repeat from the hub would show.
  const client = connect([a.url, b.url], { initialBackoffMs: 100, maxBackoffMs: 400, seenIds: 0 });
  try {
    const { events: got, readies, replays } = await recordGpu(client);
    // Both regions publish, 10 events at a time; region a's hub is killed after 12 rounds.
    const published = { a: [], b: [] };
    for (let round = 0; round < 30; round++) {
      for (const [name, hub] of [["a", a], ["b", b]]) {
        if (name === "a" && round >= 12) continue;
        const batch = gpuEvents(name, round * 10, round * 10 + 10);
        assert.equal(await hub.publish(batch), 202);
        published[name].push(...batch.map((e) => e.event_id));
      }
      if (round === 12) await a.stop("SIGKILL");
      await sleep(30);
    }
    const total = published.a.length + published.b.length;
    await until(() => got.length >= total, 15000, `all ${total} events (have ${got.length})`);
    await sleep(300);
    assert.deepEqual(readies, [a.url, b.url]);
    assert.equal(replays.length, 1);
    assert.equal(replays[0].recovered, true);
    for (const region of ["a", "b"]) {
      const mine = got.filter((e) => e.origin === region);
      assert.deepEqual(mine.map((e) => e.event_id), published[region], `region ${region}'s events once, in order`);
      const seqs = mine.map((e) => e.origin_seq);
      assert.deepEqual(seqs, [...seqs].sort((x, y) => x - y));
    }
    assert.equal(got.length, total);
    assert.ok(client.positions.a >= 120 && client.positions.b >= 300, JSON.stringify(client.positions));
  } finally {
    client.close();
    await a.stop();
    await b.stop();
    regions.stop();
  }
});
