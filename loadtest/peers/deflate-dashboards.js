// permessage-deflate on a dashboards-like load: the same hub, the same clients and events,
// clients offering compression or not; prints deliveries, bytes received per delivery and the
// hub's CPU per delivery (from /proc). Node `ws` clients (they speak permessage-deflate).
//
//   node deflate-dashboards.js PORT HUB_PID on|off [clients=1000] [rate=400] [seconds=10]
//
// Events: a dashboards mix over 10 clusters (GPU updates of 8 GPUs, alerts, metric updates);
// each client subscribes to all three types for two clusters.

const WebSocket = require("ws");
const fs = require("fs");

const [port, pid, mode, clients = 1000, rate = 400, seconds = 10] = process.argv.slice(2);
const deflate = mode === "on";
const url = `ws://127.0.0.1:${port}/ws`;
const CLUSTERS = Array.from({ length: 10 }, (_, i) => `cluster-${i}`);

function cpuTicks() {
  const f = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return Number(f[11]) + Number(f[12]); // utime + stime, in clock ticks (100/s)
}

function event(i) {
  const cluster_id = CLUSTERS[i % CLUSTERS.length];
  switch (i % 3) {
    case 0:
      return { event_type: "GPU_UPDATE", cluster_id, payload: { node_name: `worker-gpu-${i % 40}`,
        gpus: Array.from({ length: 8 }, (_, g) => ({ index: g, utilization_gpu_percent: (i + g) % 100,
          utilization_memory_percent: 55, temperature_celsius: 62, power_draw_watts: 285.5 })) } };
    case 1:
      return { event_type: "ALERT_FIRED", cluster_id, payload: { fingerprint: `fp${i}`,
        alertname: "HighCPUUsage", severity: ["CRITICAL", "WARNING", "INFO"][i % 3], namespace: "production" } };
    default:
      return { event_type: "METRIC_UPDATE", cluster_id, payload: { metric_name: "container_cpu_usage_seconds_total",
        namespace: "production", labels: { pod: `api-${i % 50}`, container: "api" }, value: 0.85, threshold: 0.8 } };
  }
}

async function main() {
  const sockets = [];
  let delivered = 0;
  for (let c = 0; c < Number(clients); c++) {
    const ws = new WebSocket(url, { perMessageDeflate: deflate });
    await new Promise((ok, fail) => { ws.once("open", ok); ws.once("error", fail); });
    ws.send(JSON.stringify({ type: "subscribe", subscription: {
      event_types: ["GPU_UPDATE", "ALERT_FIRED", "METRIC_UPDATE"],
      cluster_filter: [CLUSTERS[c % 10], CLUSTERS[(c + 3) % 10]] } }));
    ws.on("message", (m) => { if (m[0] === 0x7b && m.includes('"type":"event"')) delivered++; });
    sockets.push(ws);
  }
  await new Promise((r) => setTimeout(r, 1000));
  const negotiated = sockets.filter((s) => s.extensions.includes("permessage-deflate")).length;
  const bytes0 = sockets.reduce((a, s) => a + s._socket.bytesRead, 0);
  const delivered0 = delivered;
  const cpu0 = cpuTicks();
  const perTick = Number(rate) / 10;
  let i = 0;
  const end = Date.now() + Number(seconds) * 1000;
  while (Date.now() < end) {
    const started = Date.now();
    const batch = Array.from({ length: perTick }, () => event(i++));
    const r = await fetch(`http://127.0.0.1:${port}/api/v1/streaming/broadcast`, {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(batch) });
    await r.arrayBuffer();
    await new Promise((ok) => setTimeout(ok, Math.max(0, 100 - (Date.now() - started))));
  }
  await new Promise((r) => setTimeout(r, 1000));
  const cpu = (cpuTicks() - cpu0) * 10000; // µs
  const n = delivered - delivered0;
  const bytes = sockets.reduce((a, s) => a + s._socket.bytesRead, 0) - bytes0;
  console.log(JSON.stringify({ deflate, negotiated, events: i, deliveries: n,
    bytes_per_delivery: +(bytes / n).toFixed(1), hub_cpu_us_per_delivery: +(cpu / n).toFixed(3) }));
  for (const s of sockets) s.terminate();
}

main().catch((e) => { console.error(e); process.exit(1); });
