// The live console in a real headless Chromium: the page loads from the hub, goes live, shows an
// alert published through the broadcast endpoint (in the tail and by severity) and a GPU's
// utilization; with authentication on it asks for a token first. Screenshots are kept in
// SCREENSHOT_DIR (default: target/console) as the test's artifacts.

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
  payload: { alertname: `HighCPUUsage-${id}`, severity, namespace: "production" },
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
      const gpu = page.locator("#gpus [data-gpu='prod-east-1/worker-gpu-01/0'] b");
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
