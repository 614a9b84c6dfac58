// Server-Sent Events in a real headless Chromium: a page's own `EventSource` follows the hub's
// event stream (filtered like a WebSocket subscription), and when an operator disconnects it the
// browser reconnects by itself after the hub's `retry:` and resumes with `Last-Event-ID`: the
// events published while it was away arrive once, none twice. And the JS client behind a proxy
// that breaks WebSocket upgrades (as some corporate proxies do) falls back to SSE by itself.

import assert from "node:assert/strict";
import http from "node:http";
import { test } from "node:test";
import { chromium } from "playwright-core";
import { Hub, gpuEvents } from "../js/support/hub.js";

const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";

test("a browser's EventSource follows the stream and resumes by itself after a disconnect", async () => {
  const hub = await Hub.start("  shutdown:\n    reconnect_after_ms: 300\n");
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  try {
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${hub.port}/healthz`);
    await page.evaluate(() => {
      window.got = [];
      window.opens = 0;
      const es = new EventSource("/api/v1/streaming/events?event_types=GPU_UPDATE&cluster_filter=c1");
      es.onopen = () => window.opens++;
      es.addEventListener("event", (e) => window.got.push({ id: e.lastEventId, data: JSON.parse(e.data) }));
      es.addEventListener("disconnect", (e) => (window.bye = JSON.parse(e.data)));
    });
    await page.waitForFunction(() => window.opens === 1);
    const got = () => page.evaluate(() => window.got.map((e) => e.id));
    assert.equal(await hub.publish([...gpuEvents("a", 0, 5), ...gpuEvents("x", 0, 3, "c2")]), 202);
    await page.waitForFunction(() => window.got.length === 5, null, { timeout: 5000 });

    // An operator disconnects the stream; events are published before the browser is back.
    const clients = await (await fetch(`http://127.0.0.1:${hub.port}/api/v1/streaming/clients`)).json();
    const sse = clients.clients.find((c) => c.transport === "sse");
    assert.ok(sse, JSON.stringify(clients));
    const r = await fetch(`http://127.0.0.1:${hub.port}/api/v1/streaming/clients/${sse.client_id}/disconnect`, { method: "POST" });
    assert.equal(r.status, 202);
    assert.equal(await hub.publish(gpuEvents("a", 5, 10)), 202);
    await page.waitForFunction(() => window.opens === 2, null, { timeout: 10000 });
    assert.equal(await hub.publish(gpuEvents("a", 10, 12)), 202);
    await page.waitForFunction(() => window.got.length >= 12, null, { timeout: 5000 });
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(await got(), gpuEvents("a", 0, 12).map((e) => e.event_id), "each once, in order");
    assert.equal(await page.evaluate(() => window.bye.reason), "disconnected_by_operator");
    const first = await page.evaluate(() => window.got[0].data);
    assert.equal(first.type, "event");
    assert.equal(first.cluster_id, "c1");
  } finally {
    await browser.close();
    await hub.stop();
  }
});

/** An HTTP proxy to the hub on `target` that passes plain requests (streams included) and
 * refuses every WebSocket upgrade. */
function upgradeBreakingProxy(target) {
  const server = http.createServer((req, res) => {
    const options = { host: "127.0.0.1", port: target, path: req.url, method: req.method, headers: req.headers };
    const up = http.request(options, (r) => {
      res.writeHead(r.statusCode, r.headers);
      r.pipe(res);
    });
    up.on("error", () => res.destroy());
    req.pipe(up);
  });
  server.on("upgrade", (_req, socket) => socket.end("HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n"));
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

test("the JS client falls back to Server-Sent Events behind a proxy that breaks WebSocket upgrades", async () => {
  const hub = await Hub.start();
  const proxy = await upgradeBreakingProxy(hub.port);
  const port = proxy.address().port;
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  try {
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${port}/healthz`);
    await page.evaluate(async (port) => {
      const { connect } = await import("/client.js");
      window.got = [];
      window.statuses = [];
      const client = connect(`ws://127.0.0.1:${port}/ws`, { initialBackoffMs: 50, maxBackoffMs: 200 });
      client.on("status", (s) => window.statuses.push(s));
      client.on("event", (e) => window.got.push(e.event_id));
      client.subscribe({ event_types: ["GPU_UPDATE"], cluster_filter: ["c1"] });
      window.client = client;
    }, port);
    await page.waitForFunction(() => window.client.transport === "sse" && window.client.ready, null, { timeout: 10000 });
    // The stream is open once the hub lists it.
    for (let i = 0; i < 100; i++) {
      const clients = await (await fetch(`http://127.0.0.1:${hub.port}/api/v1/streaming/clients`)).json();
      if (clients.clients.some((c) => c.transport === "sse")) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(await hub.publish([...gpuEvents("a", 0, 5), ...gpuEvents("x", 0, 3, "c2")]), 202);
    await page.waitForFunction(() => window.got.length === 5, null, { timeout: 5000 });
    assert.deepEqual(await page.evaluate(() => window.got), gpuEvents("a", 0, 5).map((e) => e.event_id));
    const statuses = await page.evaluate(() => window.statuses);
    assert.ok(statuses.some((s) => s.type === "fallback" && s.transport === "sse"), JSON.stringify(statuses));
  } finally {
    await browser.close();
    proxy.closeAllConnections();
    proxy.close();
    await hub.stop();
  }
});
