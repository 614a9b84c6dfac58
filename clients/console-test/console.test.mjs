// The live console in a real headless Chromium: the page loads from the hub, goes live, shows an
// alert published through the broadcast endpoint (in the tail and by severity) and a GPU's
// utilization; with authentication on it asks for a token first. Its state panels (active alerts
// by severity, GPU tiles per node, the cluster board) follow the hub's state as it changes; an
// admin token disconnects a client and drains the instance, an internal token publishes.
// Screenshots are kept in SCREENSHOT_DIR (default: target/console) as the test's artifacts.

import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { chromium } from "playwright-core";
import { Hub } from "../js/support/hub.js";

const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const SHOTS = process.env.SCREENSHOT_DIR ?? new URL("../../target/console", import.meta.url).pathname;
mkdirSync(SHOTS, { recursive: true });

async function withBrowser(fn) {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  try {
    const page = await browser.newPage({ viewport: { width: 1200, height: 800 } });
    const problems = [];
    page.on("pageerror", (e) => problems.push(String(e)));
    await fn(page);
    assert.deepEqual(problems, [], "no script errors on the page");
  } finally {
    await browser.close();
  }
}

const alert = (id, severity) => ({
  event_type: "ALERT_FIRED",
  event_id: id,
  cluster_id: "prod-east-1",
  payload: { fingerprint: `fp-${id}`, alertname: `HighCPUUsage-${id}`, severity, namespace: "production" },
});

test("the console shows a published alert and a GPU's utilization", async () => {
  const hub = await Hub.start();
  try {
    await withBrowser(async (page) => {
      await page.goto(`http://127.0.0.1:${hub.port}/`);
      await page.waitForSelector("body[data-live='1']", { timeout: 10000 });
      assert.equal(await page.textContent("#conn"), "live");
      await page.waitForFunction(() => document.querySelector("#mode").textContent.includes("embedded"));
      assert.equal(await hub.publish([alert("a1", "CRITICAL"), alert("a2", "WARNING"), alert("a3", "CRITICAL")]), 202);
      assert.equal(
        await hub.publish([
          { event_type: "GPU_UPDATE", event_id: "g1", cluster_id: "prod-east-1",
            payload: { node_name: "worker-gpu-01", gpus: [{ index: 0, utilization_gpu_percent: 78 }] } },
        ]),
        202,
      );
      const row = page.locator("#tail tr[data-event-id='a2']");
      await row.waitFor({ timeout: 5000 });
      assert.match(await row.textContent(), /HighCPUUsage-a2/);
      await page.waitForSelector("#severities [data-severity='CRITICAL']");
      assert.equal(await page.textContent("#severities [data-severity='CRITICAL'] b"), "2");
      assert.equal(await page.textContent("#severities [data-severity='WARNING'] b"), "1");
      const gpu = page.locator("#gpus [data-node='prod-east-1/worker-gpu-01'] [data-gpu='0'] b");
      await gpu.waitFor({ timeout: 5000 });
      assert.equal(await gpu.textContent(), "78%");
      // The filter narrows the tail.
      await page.fill("#f-text", "a3");
      await page.waitForFunction(() => document.querySelectorAll("#tail tr").length === 1);
      await page.fill("#f-text", "");
      await page.screenshot({ path: join(SHOTS, "console.png"), fullPage: true });
    });
  } finally {
    await hub.stop();
  }
});

test("with authentication on, the console asks for a token and then goes live", async () => {
  const hub = await Hub.start(
    "  auth:\n    enabled: true\n    static_tokens:\n" +
      '      - {token: "ops", subject: "ops", roles: [admin]}\n' +
      '      - {token: "pub", subject: "publisher", roles: [internal]}\n',
  );
  try {
    await withBrowser(async (page) => {
      await page.goto(`http://127.0.0.1:${hub.port}/`);
      await page.waitForSelector("#login", { state: "visible", timeout: 10000 });
      await page.fill("#token", "ops");
      await page.click("#login button");
      await page.waitForSelector("body[data-live='1']", { timeout: 10000 });
      assert.equal(await hub.publish([alert("s1", "CRITICAL")], "pub"), 202);
      await page.locator("#tail tr[data-event-id='s1']").waitFor({ timeout: 5000 });
      await page.waitForFunction(() => document.querySelector("#clients").textContent === "1");
      await page.screenshot({ path: join(SHOTS, "console-auth.png"), fullPage: true });
    });
  } finally {
    await hub.stop();
  }
});

test("event data never runs as script, and the console is served with a strict CSP", async () => {
  const hub = await Hub.start();
  try {
    for (const path of ["/", "/console.js", "/console.css", "/client.js"]) {
      const r = await fetch(`http://127.0.0.1:${hub.port}${path}`);
      const csp = r.headers.get("content-security-policy") ?? "";
      assert.match(csp, /script-src 'self';/, path);
      assert.match(csp, /frame-ancestors 'none'/, path);
      assert.doesNotMatch(csp, /unsafe/, path);
      assert.match(csp, new RegExp(`connect-src 'self' ws://127\\.0\\.0\\.1:${hub.port}`), path);
      assert.equal(r.headers.get("x-content-type-options"), "nosniff", path);
      assert.equal(r.headers.get("referrer-policy"), "no-referrer", path);
    }
    const attack = `x"><img src=x onerror="document.title=sessionStorage.getItem('streamhub-token');window.__pwned=1">`;
    await withBrowser(async (page) => {
      await page.goto(`http://127.0.0.1:${hub.port}/`);
      await page.evaluate(() => sessionStorage.setItem("streamhub-token", "secret-admin-token"));
      await page.waitForSelector("body[data-live='1']", { timeout: 10000 });
      const hostile = {
        event_type: "ALERT_FIRED",
        event_id: "x1",
        cluster_id: `c"><script>window.__pwned=2</script>`,
        timestamp: `<img src=x onerror="window.__pwned=3">`,
        payload: { alertname: "<b>bold</b>", severity: attack, namespace: "production" },
      };
      const gpu = {
        event_type: "GPU_UPDATE",
        event_id: "x2",
        cluster_id: "prod-east-1",
        payload: { node_name: `<img src=x onerror="window.__pwned=4">`, gpus: [{ index: `<i>0</i>`, utilization_gpu_percent: 5 }] },
      };
      assert.equal(await hub.publish([hostile, gpu]), 202);
      await page.locator("#tail tr[data-event-id='x1']").waitFor({ timeout: 5000 });
      await page.locator("#tail tr[data-event-id='x2']").waitFor({ timeout: 5000 });
      await page.waitForSelector("#severities .card");
      // Give any injected handler (an image's onerror) time to fire.
      await page.waitForTimeout(500);
      assert.equal(await page.evaluate(() => window.__pwned), undefined, "no injected script ran");
      assert.equal(await page.title(), "streamhub console", "the title was not rewritten");
      assert.equal(await page.locator("img, script:not([src]), i, b:has-text('bold')").count(), 0, "no markup from event data");
      // The markup shows as text, where it was sent.
      assert.equal(await page.textContent("#severities .card span"), attack);
      assert.match(await page.textContent("#tail tr[data-event-id='x1']"), /<b>bold<\/b>/);
      assert.match(await page.textContent("#gpus"), /<img src=x/);
    });
  } finally {
    await hub.stop();
  }
});

const AUTH =
  "  auth:\n    enabled: true\n    static_tokens:\n" +
  '      - {token: "ops", subject: "ops", roles: [admin]}\n' +
  '      - {token: "pub", subject: "publisher", roles: [internal]}\n' +
  '      - {token: "viewer", subject: "viewer"}\n';

/** Opens `page` on the hub's console with `token` in the session, and waits until it is live. */
async function openAs(page, hub, token) {
  await page.goto(`http://127.0.0.1:${hub.port}/`);
  await page.evaluate((t) => sessionStorage.setItem("streamhub-token", t), token);
  await page.reload();
  await page.waitForSelector("body[data-live='1']", { timeout: 10000 });
}

/** A WebSocket client of its own, authenticated as `token`; resolves once authenticated. */
function wsClient(hub, token) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(hub.url);
    const said = [];
    ws.onopen = () => ws.send(JSON.stringify({ type: "auth", token }));
    ws.onerror = reject;
    ws.onmessage = (m) => {
      const msg = JSON.parse(m.data);
      said.push(msg);
      if (msg.type === "auth_response") resolve({ ws, said, id: msg.client_id });
    };
  });
}

const count = (page, selector) => page.locator(selector).count();

test("the state panels follow the hub's state, and an admin disconnects a client and drains", async () => {
  const hub = await Hub.start(AUTH);
  try {
    const gpu = (id, node, util) => ({ event_type: "GPU_UPDATE", event_id: id, cluster_id: "prod-east-1",
      payload: { node_name: node, gpus: [{ index: 0, utilization_gpu_percent: util }, { index: 1, utilization_gpu_percent: util + 1 }] } });
    const cluster = (id, type, c, payload = {}) => ({ event_type: type, event_id: id, cluster_id: c, payload });
    // Before the page loads: what it must render from the state.
    assert.equal(await hub.publish([
      alert("a1", "CRITICAL"), alert("a2", "WARNING"), alert("a3", "CRITICAL"),
      { event_type: "ALERT_RESOLVED", event_id: "r2", cluster_id: "prod-east-1", payload: { fingerprint: "fp-a2" } },
      gpu("g1", "worker-gpu-01", 40), gpu("g2", "worker-gpu-02", 70), gpu("g3", "worker-gpu-01", 45),
      cluster("k1", "CLUSTER_STATUS_CHANGED", "prod-east-1", { old_state: "ONLINE", new_state: "DEGRADED", health_score: 65 }),
      cluster("k2", "CLUSTER_REGISTERED", "prod-west-2"),
      cluster("k3", "CLUSTER_STATUS_CHANGED", "gone-1", { new_state: "ONLINE" }),
      cluster("k4", "CLUSTER_DELETED", "gone-1"),
    ], "pub"), 202);
    await withBrowser(async (page) => {
      await openAs(page, hub, "ops");
      await page.waitForFunction(() => document.querySelectorAll("#alerts tr").length === 2);
      assert.equal(await page.textContent("#severities [data-severity='CRITICAL'] b"), "2");
      assert.equal(await count(page, "#severities [data-severity='WARNING']"), 0, "the resolved alert left");
      assert.equal(await count(page, "#gpus [data-node]"), 2, "one tile per node");
      assert.equal(await page.textContent("#gpus [data-node='prod-east-1/worker-gpu-01'] [data-gpu='0'] b"), "45%");
      assert.equal(await page.textContent("#clusters [data-cluster='prod-east-1'] b"), "DEGRADED");
      assert.equal(await page.textContent("#clusters [data-cluster='prod-west-2'] b"), "REGISTERED");
      assert.equal(await count(page, "#clusters [data-cluster='gone-1']"), 0, "the deleted cluster is gone");
      assert.equal(await page.isHidden("#publish"), true, "no publish form without the internal role");

      // Live changes: one alert resolved, a third node, a cluster recovered.
      assert.equal(await hub.publish([
        { event_type: "ALERT_RESOLVED", event_id: "r1", cluster_id: "prod-east-1", payload: { fingerprint: "fp-a1" } },
        gpu("g4", "worker-gpu-03", 90),
        cluster("k5", "CLUSTER_STATUS_CHANGED", "prod-east-1", { old_state: "DEGRADED", new_state: "ONLINE", health_score: 98 }),
      ], "pub"), 202);
      await page.waitForFunction(() => document.querySelectorAll("#alerts tr").length === 1);
      assert.equal(await page.getAttribute("#alerts tr", "data-fingerprint"), "fp-a3");
      await page.waitForFunction(() => document.querySelectorAll("#gpus [data-node]").length === 3);
      await page.waitForFunction(() => document.querySelector("#clusters [data-cluster='prod-east-1'] b")?.textContent === "ONLINE");

      // The admin panel: another client shows up, and is told to go.
      const other = await wsClient(hub, "viewer");
      await page.waitForSelector(`#client-list tr[data-client='${other.id}']`, { timeout: 5000 });
      await page.screenshot({ path: join(SHOTS, "console-state.png"), fullPage: true });
      const gone = new Promise((r) => other.ws.addEventListener("close", (e) => r(e.code)));
      await page.click(`#client-list button[data-client='${other.id}']`);
      assert.equal(await gone, 1000);
      assert.ok(other.said.some((m) => m.type === "disconnect" && m.reason === "disconnected_by_operator"));
      await page.waitForFunction(() => /told .* to go/.test(document.querySelector("#admin-said").textContent));

      // Drain asks twice, then tells every client to go.
      await page.click("#drain");
      assert.equal(await page.textContent("#drain"), "Confirm drain");
      await page.click("#drain");
      await page.waitForFunction(() => /draining: \d+ clients/.test(document.querySelector("#admin-said").textContent));
      const ready = await fetch(`http://127.0.0.1:${hub.port}/readyz`);
      assert.equal(ready.status, 503, "a drained instance is not ready");
      await page.screenshot({ path: join(SHOTS, "console-drain.png"), fullPage: true });
    });
  } finally {
    await hub.stop();
  }
});

test("an internal token gets the publish form, and what it publishes shows", async () => {
  const hub = await Hub.start(AUTH);
  try {
    await withBrowser(async (page) => {
      await openAs(page, hub, "pub");
      await page.waitForSelector("#publish", { state: "visible", timeout: 5000 });
      assert.equal(await page.isHidden("#admin"), true, "no admin panel without the admin role");
      await page.fill("#publish-body", JSON.stringify(alert("p1", "HIGH")));
      await page.click("#publish-form button");
      await page.waitForFunction(() => document.querySelector("#publish-said").textContent === "published p1");
      await page.locator("#alerts tr[data-fingerprint='fp-p1']").waitFor({ timeout: 5000 });
      await page.fill("#publish-body", "{not json");
      await page.click("#publish-form button");
      await page.waitForFunction(() => document.querySelector("#publish-said").textContent.startsWith("400"));
      await page.screenshot({ path: join(SHOTS, "console-publish.png"), fullPage: true });
    });
  } finally {
    await hub.stop();
  }
});
