// Test fixtures: real streamhub processes (STREAMHUB_BIN) and a real redis-server, on loopback.

import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

const BIN = process.env.STREAMHUB_BIN ?? new URL("../../../target/debug/streamhub", import.meta.url).pathname;

/** A free TCP port on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** A streamhub process on `port` with `extra` YAML lines (two-space indented). */
export class Hub {
  constructor(port, extra = "") {
    this.port = port;
    this.dir = mkdtempSync(join(tmpdir(), "streamhub-js-"));
    this.config = join(this.dir, "hub.yaml");
    writeFileSync(this.config, `realtime_streaming:\n  host: "127.0.0.1"\n  port: ${port}\n${extra}`);
    this.child = null;
  }

  static async start(extra = "", port) {
    const hub = new Hub(port ?? (await freePort()), extra);
    await hub.spawn();
    return hub;
  }

  get url() {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  /** Starts the process and waits for its "listening" line. */
  spawn() {
    return new Promise((resolve, reject) => {
      const child = spawn(BIN, ["--config", this.config], { stdio: ["ignore", "pipe", "pipe"] });
      this.child = child;
      let out = "";
      const timer = setTimeout(() => reject(new Error(`hub did not start: ${out}`)), 15000);
      child.stdout.on("data", (d) => {
        out += d;
        if (out.includes("streamhub listening on")) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.stderr.on("data", () => {});
      child.once("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`hub exited (${code}): ${out}`));
      });
    });
  }

  /** Stops the process with `signal` and waits for it to exit. */
  stop(signal = "SIGKILL") {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
    return new Promise((resolve) => {
      child.once("exit", resolve);
      child.kill(signal);
    });
  }

  /** Publishes events (an array) through POST /broadcast, with a bearer token if given;
   * resolves to the HTTP status. */
  async publish(events, token) {
    const headers = { "content-type": "application/json" };
    if (token) headers.authorization = `Bearer ${token}`;
    const r = await fetch(`http://127.0.0.1:${this.port}/api/v1/streaming/broadcast`, {
      method: "POST",
      headers,
      body: JSON.stringify(events),
    });
    await r.arrayBuffer();
    return r.status;
  }

  /** Waits until /readyz answers `code`. */
  async waitReady(code = 200, ms = 15000) {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      try {
        const r = await fetch(`http://127.0.0.1:${this.port}/readyz`);
        await r.arrayBuffer();
        if (r.status === code) return;
      } catch {
        // not up yet
      }
      await sleep(50);
    }
    throw new Error(`hub on ${this.port} never answered ${code}`);
  }
}

/** A redis-server of its own, keeping nothing on disk. */
export class Redis {
  static async start() {
    const r = new Redis();
    r.port = await freePort();
    r.child = spawn("redis-server", ["--port", String(r.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
      stdio: "ignore",
    });
    await sleep(300);
    return r;
  }

  get url() {
    return `redis://127.0.0.1:${this.port}/`;
  }

  stop() {
    this.child.kill("SIGKILL");
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** GPU_UPDATE events with ids `${prefix}${from}` .. `${prefix}${to - 1}`. */
export function gpuEvents(prefix, from, to, cluster = "c1") {
  const out = [];
  for (let i = from; i < to; i++) {
    out.push({ event_type: "GPU_UPDATE", event_id: `${prefix}${i}`, cluster_id: cluster, payload: { i } });
  }
  return out;
}

/** Resolves when `pred()` holds, checking every 20 ms, or rejects after `ms`. */
export async function until(pred, ms = 10000, what = "condition") {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** One nats-server with JetStream per region (a JetStream domain named like it), the others
 * joined to the first by leafnodes; each keeps its store in its own directory. */
export class NatsRegions {
  static async start(names) {
    const r = new NatsRegions();
    r.dir = mkdtempSync(join(tmpdir(), "streamhub-nats-"));
    r.leafPort = await freePort();
    r.ports = [];
    r.children = [];
    for (const [i, name] of names.entries()) {
      const port = await freePort();
      const leaf = i === 0
        ? `leafnodes { listen: "127.0.0.1:${r.leafPort}" }`
        : `leafnodes { remotes: [ { url: "nats-leaf://127.0.0.1:${r.leafPort}" } ] }`;
      const conf = join(r.dir, `${name}.conf`);
      writeFileSync(conf, `server_name: ${name}\nlisten: "127.0.0.1:${port}"\n` +
        `jetstream { store_dir: "${join(r.dir, name)}", domain: ${name} }\n${leaf}\n`);
      r.ports.push(port);
      r.children.push(spawn("nats-server", ["-c", conf], { stdio: "ignore" }));
    }
    await sleep(500);
    return r;
  }

  url(i) {
    return `nats://127.0.0.1:${this.ports[i]}`;
  }

  stop() {
    for (const c of this.children) c.kill("SIGKILL");
  }
}

/** Subscribes `client` to GPU updates and records what it sees: `events`, the URL of each
 * `ready`, each `replay`; resolves once it is first connected. */
export async function recordGpu(client) {
  const seen = { events: [], readies: [], replays: [] };
  client.on("event", (e) => seen.events.push(e));
  client.on("ready", (r) => seen.readies.push(r.url));
  client.on("replay", (m) => seen.replays.push(m));
  client.subscribe({ event_types: ["GPU_UPDATE"] });
  await until(() => seen.readies.length === 1, 5000, "first connection");
  await sleep(100);
  return seen;
}
