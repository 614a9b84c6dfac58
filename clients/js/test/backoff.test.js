// The reconnect schedule: full jitter under a cap that doubles from 1 s to 30 s, the server's
// reconnect_after_ms taking precedence, and a reset once connected.

import assert from "node:assert/strict";
import { test } from "node:test";
import { StreamhubClient } from "../index.js";

class NoSocket {}

test("backoff caps double from 1 s to 30 s with full jitter, and advice wins", () => {
  const client = new StreamhubClient("ws://unused/ws", { WebSocket: NoSocket });
  const random = Math.random;
  try {
    Math.random = () => 1; // the top of each jitter range: the cap itself
    const caps = Array.from({ length: 8 }, () => client.nextDelay(null));
    assert.deepEqual(caps, [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
    Math.random = () => 0.25;
    assert.equal(client.nextDelay(null), 7500, "a quarter of the 30 s cap");
    assert.equal(client.nextDelay(1234), 1234, "the server's reconnect_after_ms");
    client.onReady("id");
    Math.random = () => 1;
    assert.equal(client.nextDelay(null), 1000, "back to 1 s once connected");
  } finally {
    Math.random = random;
  }
});
