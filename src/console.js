// The live console's script (served as /console.js: the page allows no inline script).
//
// The panels render the hub's state (active alerts by severity, one tile per GPU node, each
// cluster's status), loaded over HTTP and kept by live events (the client's `loadState`). An
// `admin` token also gets the clients list with a disconnect action and the drain action; an
// `internal` token a publish form. With authentication off, everything is offered.
import { StreamhubClient } from "/client.js";

const TYPES = ["CLUSTER_STATUS_CHANGED", "CLUSTER_REGISTERED", "CLUSTER_DELETED", "METRIC_UPDATE",
  "ALERT_FIRED", "ALERT_RESOLVED", "GPU_UPDATE", "TRACE_RECEIVED", "ANOMALY_DETECTED",
  "CHAT_MESSAGE", "RCA_COMPLETE"];
// Most severe first; any other severity after these, by name.
const SEVERITIES = ["CRITICAL", "HIGH", "WARNING", "MEDIUM", "LOW", "INFO"];
const KEEP = 200;
const $ = (id) => document.getElementById(id);
const events = [];
const gpuHistory = new Map();
let token = sessionStorage.getItem("streamhub-token");
let state = null;
// The token's roles; null: authentication is off (every action is offered).
let roles = null;

for (const t of TYPES) $("f-type").append(new Option(t, t));

// Event data never becomes markup: every element is built here and every text from an event is
// set as a text node (the page's Content-Security-Policy also refuses any inline script).
function el(tag, { className = "", text, data = {} } = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = String(text);
  for (const [k, v] of Object.entries(data)) node.dataset[k] = String(v);
  return node;
}

// A severity or a state as a class name: letters, digits, dashes and underscores only.
const cssName = (s) => String(s).replace(/[^A-Za-z0-9_-]/g, "_");
const authHeaders = () => (token ? { authorization: `Bearer ${token}` } : {});
const allowed = (role) => roles === null || roles.includes(role);
const rank = (sev) => (SEVERITIES.includes(sev) ? SEVERITIES.indexOf(sev) : SEVERITIES.length);

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    const td = document.createElement("td");
    td.append(cell instanceof Node ? cell : el("span", { text: cell }));
    tr.append(td);
  }
  return tr;
}

// --- the live tail ---

function matches(e) {
  const t = $("f-type").value, c = $("f-cluster").value.trim(), x = $("f-text").value.trim();
  return (!t || e.event_type === t) && (!c || e.cluster_id === c) &&
    (!x || JSON.stringify(e).toLowerCase().includes(x.toLowerCase()));
}

function renderTail() {
  const body = $("tail");
  body.textContent = "";
  const shown = events.filter(matches);
  for (const e of shown.slice(-KEEP).reverse()) {
    const sev = e.payload?.severity ?? "";
    const tr = row([String(e.timestamp ?? "").slice(11, 23), e.event_type, e.cluster_id ?? "",
      el("span", { className: sev ? `sev sev-${cssName(sev)}` : "", text: sev }), JSON.stringify(e.payload ?? {})]);
    tr.lastChild.className = "payload";
    tr.dataset.eventId = e.event_id ?? "";
    body.append(tr);
  }
  $("shown").textContent = `${shown.length} of ${events.length} shown`;
}

function addToTail(e) {
  events.push(e);
  if (events.length > 5 * KEEP) events.splice(0, events.length - 5 * KEEP);
}

// --- the state panels ---

function renderAlerts() {
  const active = state.events("ALERT_FIRED").slice()
    .sort((a, b) => rank(a.payload?.severity) - rank(b.payload?.severity) ||
      String(a.payload?.severity ?? "").localeCompare(String(b.payload?.severity ?? "")));
  const counts = new Map();
  const body = $("alerts");
  body.textContent = "";
  for (const e of active) {
    const sev = String(e.payload?.severity ?? "UNKNOWN");
    counts.set(sev, (counts.get(sev) ?? 0) + 1);
    const ns = e.payload?.namespace ?? e.payload?.labels?.namespace ?? "";
    const tr = row([el("span", { className: `sev sev-${cssName(sev)}`, text: sev }),
      e.payload?.alertname ?? e.payload?.fingerprint ?? "", e.cluster_name ?? e.cluster_id ?? "", ns,
      String(e.timestamp ?? "").slice(0, 19)]);
    tr.dataset.fingerprint = e.payload?.fingerprint ?? "";
    tr.dataset.eventId = e.event_id ?? "";
    body.append(tr);
  }
  const box = $("severities");
  box.textContent = "";
  for (const [sev, n] of [...counts].sort(([a], [b]) => rank(a) - rank(b) || a.localeCompare(b))) {
    const card = el("div", { className: "card", data: { severity: sev } });
    card.append(el("span", { className: `sev sev-${cssName(sev)}`, text: sev }), el("b", { text: n }));
    box.append(card);
  }
}

function renderClusters() {
  // The latest status event of each cluster (registered, or its status changed).
  const latest = new Map();
  for (const e of state.events()) {
    if (e.event_type === "CLUSTER_STATUS_CHANGED" || e.event_type === "CLUSTER_REGISTERED") latest.set(e.cluster_id, e);
  }
  const box = $("clusters");
  box.textContent = "";
  if (latest.size === 0) box.append(el("span", { className: "muted", text: "no cluster status yet" }));
  for (const [id, e] of latest) {
    const status = e.payload?.new_state ?? e.payload?.status ?? (e.event_type === "CLUSTER_REGISTERED" ? "REGISTERED" : "?");
    const card = el("div", { className: `card cluster state-${cssName(status)}`, data: { cluster: id ?? "" } });
    card.append(el("span", { className: "muted", text: e.cluster_name ?? id ?? "" }), el("b", { text: status }));
    if (e.payload?.health_score !== undefined) card.append(el("span", { text: `health ${e.payload.health_score}` }));
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

const nodeKey = (e) => `${e.cluster_id ?? ""}/${e.payload?.node_name ?? "node"}`;
const gpusOf = (e) => (Array.isArray(e.payload?.gpus) ? e.payload.gpus : []);

// A node's mean utilization over its GPUs, remembered per node for its sparkline.
function remember(e) {
  const gpus = gpusOf(e);
  if (gpus.length === 0) return;
  const mean = gpus.reduce((s, g) => s + Number(g.utilization_gpu_percent ?? 0), 0) / gpus.length;
  const values = gpuHistory.get(nodeKey(e)) ?? [];
  values.push(mean);
  if (values.length > 60) values.shift();
  gpuHistory.set(nodeKey(e), values);
}

function renderGpus() {
  const box = $("gpus");
  box.textContent = "";
  const nodes = state.events("GPU_UPDATE");
  if (nodes.length === 0) box.append(el("span", { className: "muted", text: "no GPU_UPDATE yet" }));
  for (const e of nodes) {
    const tile = el("div", { className: "gpu", data: { node: nodeKey(e) } });
    tile.append(el("b", { text: e.payload?.node_name ?? "node" }), " ",
      el("span", { className: "muted", text: e.cluster_name ?? e.cluster_id ?? "" }));
    for (const gpu of gpusOf(e)) {
      const line = el("div", { data: { gpu: gpu.index ?? 0 } });
      line.append(el("span", { className: "muted", text: `GPU ${gpu.index ?? 0} ` }),
        el("b", { text: `${Number(gpu.utilization_gpu_percent ?? 0)}%` }));
      tile.append(line);
    }
    const canvas = el("canvas");
    canvas.width = 120;
    canvas.height = 32;
    tile.append(canvas);
    sparkline(canvas, gpuHistory.get(nodeKey(e)) ?? [0]);
    box.append(tile);
  }
}

function renderState() {
  renderAlerts();
  renderClusters();
  renderGpus();
}

// --- admin: the clients, disconnect, drain; internal: publish ---

async function act(path, said, what) {
  const r = await fetch(path, { method: "POST", headers: { ...authHeaders(), "content-type": "application/json" } });
  const body = await r.json().catch(() => ({}));
  $(said).textContent = r.ok ? what(body) : `${r.status}: ${body.error ?? "refused"}`;
  return r.ok;
}

async function pollClients() {
  if (!allowed("admin")) return;
  const r = await fetch("/api/v1/streaming/clients?limit=200", { headers: authHeaders() });
  if (!r.ok) return;
  const list = (await r.json()).clients ?? [];
  $("admin").hidden = false;
  const body = $("client-list");
  body.textContent = "";
  for (const c of list) {
    const subs = (c.subscriptions ?? []).map((s) =>
      `${(s.event_types ?? []).length} types${s.cluster_filter?.length ? ` in ${s.cluster_filter.join(",")}` : ""}`).join("; ");
    const button = el("button", { text: "Disconnect", data: { client: c.client_id } });
    button.type = "button";
    button.addEventListener("click", () =>
      act(`/api/v1/streaming/clients/${encodeURIComponent(c.client_id)}/disconnect`, "admin-said",
        () => `told ${c.client_id} to go`).then(pollClients));
    const tr = row([c.client_id, c.subject ?? "", subs || "none", c.queue_length ?? 0, c.messages_sent ?? 0, button]);
    tr.dataset.client = c.client_id;
    body.append(tr);
  }
}

// Drain asks twice: the first click arms it for five seconds.
let drainArmed = null;
$("drain").addEventListener("click", async () => {
  if (!drainArmed) {
    $("drain").textContent = "Confirm drain";
    drainArmed = setTimeout(() => { drainArmed = null; $("drain").textContent = "Drain this instance"; }, 5000);
    return;
  }
  clearTimeout(drainArmed);
  drainArmed = null;
  $("drain").textContent = "Drain this instance";
  await act("/api/v1/streaming/drain", "admin-said", (b) => `draining: ${b.clients ?? 0} clients told to go`);
});

$("publish-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const r = await fetch("/api/v1/streaming/broadcast", {
    method: "POST",
    headers: { ...authHeaders(), "content-type": "application/json" },
    body: $("publish-body").value,
  });
  const body = await r.json().catch(() => ({}));
  $("publish-said").textContent = r.ok ? `published ${body.event_id ?? ""}` : `${r.status}: ${body.error ?? "refused"}`;
});

// --- status, login, start ---

let last = null;
async function poll() {
  try {
    const r = await fetch("/api/v1/streaming/status", { headers: authHeaders() });
    if (r.status === 401) return askForToken("the status needs a token");
    if (r.status === 403) {
      $("mode").textContent = "(the status needs the admin role)";
      return;
    }
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
  await pollClients().catch(() => {});
}

// Set once the hub asked for a token: no action is offered until one is given.
let needsToken = false;
function askForToken(why) {
  needsToken = true;
  roles = [];
  $("publish").hidden = true;
  $("admin").hidden = true;
  $("login").style.display = "block";
  $("login-why").textContent = why;
}

$("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  token = $("token").value.trim();
  sessionStorage.setItem("streamhub-token", token);
  location.reload();
});
for (const id of ["f-type", "f-cluster", "f-text"]) $(id).addEventListener("input", renderTail);

const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
const client = new StreamhubClient(url, { getToken: () => token });
// Live once the hub accepted the subscription (with authentication on, only after a token).
client.on("subscribed", () => { $("conn").textContent = "live"; document.body.dataset.live = "1"; });
client.on("close", () => { $("conn").textContent = "reconnecting"; delete document.body.dataset.live; });
client.on("ready", (info) => {
  if (needsToken) return;
  // No client id: no token was sent, and the hub took the connection: authentication is off.
  roles = info.clientId === null ? null : info.roles ?? [];
  $("publish").hidden = !allowed("internal");
  pollClients().catch(() => {});
});
client.on("error", (e) => {
  if (e?.code === "AUTH_FAILED") askForToken(e.message ?? "authentication failed");
});
client.on("event", (e) => {
  addToTail(e);
  if (e.event_type === "GPU_UPDATE" && !e.snapshot) remember(e);
  renderTail();
});

async function start() {
  try {
    state = await client.loadState({ event_types: TYPES });
  } catch (e) {
    if (/answered 401/.test(String(e.message))) return askForToken("the state needs a token");
    $("mode").textContent = `(state unavailable: ${e.message})`;
    return;
  }
  for (const e of state.events()) {
    addToTail(e);
    if (e.event_type === "GPU_UPDATE") remember(e);
  }
  state.onChange(renderState);
  renderState();
  renderTail();
}

client.connect();
start();
poll();
setInterval(poll, 2000);
