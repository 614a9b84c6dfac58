// The live console's script (served as /console.js: the page allows no inline script).
import { StreamhubClient } from "/client.js";

const TYPES = ["CLUSTER_STATUS_CHANGED", "CLUSTER_REGISTERED", "CLUSTER_DELETED", "METRIC_UPDATE",
  "ALERT_FIRED", "ALERT_RESOLVED", "GPU_UPDATE", "TRACE_RECEIVED", "ANOMALY_DETECTED",
  "CHAT_MESSAGE", "RCA_COMPLETE"];
const KEEP = 200;
const $ = (id) => document.getElementById(id);
const events = [];
const severities = new Map();
const gpus = new Map();
let token = sessionStorage.getItem("streamhub-token");

for (const t of TYPES) $("f-type").append(new Option(t, t));

// Event data never becomes markup: every element is built here and every text from an event is
// set as a text node (the page's Content-Security-Policy also refuses any inline script).
function el(tag, { className = "", text } = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = String(text);
  return node;
}

// A severity as a class name: letters, digits, dashes and underscores only.
const cssName = (s) => String(s).replace(/[^A-Za-z0-9_-]/g, "_");

function matches(e) {
  const t = $("f-type").value, c = $("f-cluster").value.trim(), x = $("f-text").value.trim();
  return (!t || e.event_type === t) && (!c || e.cluster_id === c) &&
    (!x || JSON.stringify(e).toLowerCase().includes(x.toLowerCase()));
}

function render() {
  const body = $("tail");
  body.textContent = "";
  const shown = events.filter(matches);
  for (const e of shown.slice(-KEEP).reverse()) {
    const tr = document.createElement("tr");
    tr.dataset.eventId = e.event_id ?? "";
    const sev = e.payload?.severity ?? "";
    for (const [text, cls] of [[String(e.timestamp ?? "").slice(11, 23), ""], [e.event_type, ""],
      [e.cluster_id ?? "", ""], [sev, sev ? `sev sev-${cssName(sev)}` : ""], [JSON.stringify(e.payload ?? {}), "payload"]]) {
      const td = document.createElement("td");
      const span = document.createElement("span");
      span.textContent = text;
      if (cls) (cls === "payload" ? td : span).className = cls;
      td.append(span);
      tr.append(td);
    }
    body.append(tr);
  }
  $("shown").textContent = `${shown.length} of ${events.length} shown`;
}

function renderSeverities() {
  const box = $("severities");
  box.textContent = "";
  for (const [sev, n] of [...severities].sort()) {
    const card = document.createElement("div");
    card.className = "card";
    card.dataset.severity = sev;
    card.append(el("span", { className: `sev sev-${cssName(sev)}`, text: sev }), el("b", { text: n }));
    box.append(card);
  }
}

function sparkline(canvas, points) {
  // One reading draws as a flat line, not as nothing.
  const values = points.length === 1 ? [points[0], points[0]] : points;
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, canvas.width, canvas.height);
  g.strokeStyle = "#3a7";
  g.beginPath();
  values.forEach((v, i) => {
    const x = (i / Math.max(1, values.length - 1)) * (canvas.width - 2) + 1;
    const y = canvas.height - 1 - (Math.min(100, Math.max(0, v)) / 100) * (canvas.height - 2);
    i ? g.lineTo(x, y) : g.moveTo(x, y);
  });
  g.stroke();
}

function onGpu(e) {
  const node = e.payload?.node_name ?? "node";
  for (const gpu of e.payload?.gpus ?? []) {
    const key = `${e.cluster_id ?? ""}/${node}/${gpu.index ?? 0}`;
    let entry = gpus.get(key);
    if (!entry) {
      if (gpus.size === 0) $("gpus").textContent = "";
      const div = document.createElement("div");
      div.className = "gpu";
      div.dataset.gpu = key;
      const canvas = el("canvas");
      canvas.width = 120;
      canvas.height = 32;
      div.append(el("span", { className: "muted", text: `${node} #${gpu.index ?? 0}` }), " ",
        el("b"), canvas);
      $("gpus").append(div);
      entry = { div, values: [] };
      gpus.set(key, entry);
    }
    const v = Number(gpu.utilization_gpu_percent ?? 0);
    entry.values.push(v);
    if (entry.values.length > 60) entry.values.shift();
    entry.div.querySelector("b").textContent = `${v}%`;
    sparkline(entry.div.querySelector("canvas"), entry.values);
  }
}

function onEvent(e) {
  events.push(e);
  if (events.length > 5 * KEEP) events.splice(0, events.length - 5 * KEEP);
  if (e.event_type === "ALERT_FIRED" && !e.snapshot) {
    const sev = e.payload?.severity ?? "UNKNOWN";
    severities.set(sev, (severities.get(sev) ?? 0) + 1);
    renderSeverities();
  }
  if (e.event_type === "GPU_UPDATE") onGpu(e);
  render();
}

let last = null;
async function poll() {
  try {
    const r = await fetch("/api/v1/streaming/status", { headers: token ? { authorization: `Bearer ${token}` } : {} });
    if (r.status === 401 || r.status === 403) return askForToken(r.status === 401 ? "the status needs a token" : "the status needs the admin role");
    const s = await r.json();
    $("mode").textContent = `${s.mode} · up ${Math.round(s.uptime_seconds)} s`;
    $("clients").textContent = s.connections.active;
    $("dropped").textContent = s.events.dropped;
    $("shed").textContent = s.events.shed;
    const now = performance.now();
    if (last) {
      const dt = (now - last.at) / 1000;
      $("rate").textContent = ((s.events.routed - last.routed) / dt).toFixed(1);
      $("drate").textContent = ((s.events.deliveries - last.deliveries) / dt).toFixed(1);
    }
    last = { at: now, routed: s.events.routed, deliveries: s.events.deliveries };
  } catch {
    $("mode").textContent = "(status unavailable)";
  }
}

function askForToken(why) {
  $("login").style.display = "block";
  $("login-why").textContent = why;
}

$("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  token = $("token").value.trim();
  sessionStorage.setItem("streamhub-token", token);
  location.reload();
});
for (const id of ["f-type", "f-cluster", "f-text"]) $(id).addEventListener("input", render);

const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
const client = new StreamhubClient(url, { getToken: () => token });
// Live once the hub accepted the subscription (with authentication on, only after a token).
client.on("subscribed", () => { $("conn").textContent = "live"; document.body.dataset.live = "1"; });
client.on("close", () => { $("conn").textContent = "reconnecting"; delete document.body.dataset.live; });
client.on("error", (e) => {
  if (e?.code === "AUTH_FAILED") askForToken(e.message ?? "authentication failed");
});
client.on("event", onEvent);
client.subscribe({ event_types: TYPES, snapshot: true });
client.connect();
poll();
setInterval(poll, 2000);
