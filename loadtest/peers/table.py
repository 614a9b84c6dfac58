"""Writes the side-by-side table of loadtest/reports/peers/ from the runs' summary.json files."""
import json
import pathlib
import sys

out = pathlib.Path(sys.argv[1])
NAMES = {
    "streamhub": "streamhub (default)",
    "streamhub_throughput": "streamhub (20 ms coalescing)",
    "ws": "Node ws 8.23",
    "socketio": "socket.io 4.8",
    "sockudo": "sockudo 5.2",
}


def load(kind, peer):
    p = out / f"peers_{kind}_{peer}" / "summary.json"
    return json.loads(p.read_text()) if p.exists() else None


def fmt(v, unit="", digits=2):
    return "n/a" if v is None else f"{v:,.{digits}f}{unit}"


rows, steps, cpu_steps, date = [], {}, {}, None
for peer, name in NAMES.items():
    f, i = load("fanout", peer), load("idle", peer)
    if not f and not i:
        continue
    date = date or (f or i)["date"]
    hub = (f or {}).get("hub") or {}
    ihub = (i or {}).get("hub") or {}
    acc = (f or {}).get("accounting") or {}
    rows.append((name, hub.get("cpu_us_per_delivery"), (f or {}).get("peak_deliveries_per_second"),
                 ihub.get("rss_per_connection_kib"), acc.get("lost"), acc.get("duplicates")))
    for s in (f or {}).get("steps", []):
        steps.setdefault(s["target_events_per_second"], {})[name] = s["latency"]["p99_ms"]
        cpu_steps.setdefault(s["target_events_per_second"], {})[name] = s.get("cpu_us_per_delivery")

print("# streamhub and its peers, side by side\n")
print(f"One sitting ({date}), this 2-core machine, the harness beside the server, the `generic`")
print("protocol for every server (`loadtest/peers/run.sh`; scenarios in `loadtest/peers/scenarios/`).")
print("CPU and memory are the server process's own, from `/proc`.\n")
print("| server | CPU per delivery | highest step (deliveries/s) | RSS per idle connection | lost / duplicates |")
print("| --- | --- | --- | --- | --- |")
for name, cpu, peak, rss, lost, dup in rows:
    print(f"| {name} | {fmt(cpu, ' µs')} | {fmt(peak, '', 0)} | {fmt(rss, ' KiB')} | {lost} / {dup} |")
names = [r[0] for r in rows]
print("\np99 (ms) by step (events/s published; each reaches 1,000 clients):\n")
print("| events/s | " + " | ".join(names) + " |")
print("| --- |" + " --- |" * len(names))
for rate in sorted(steps):
    print(f"| {rate:g} | " + " | ".join(fmt(steps[rate].get(n)) for n in names) + " |")
if any(v for row in cpu_steps.values() for v in row.values()):
    print("\nServer CPU per delivery (µs) by step, the like-for-like figure (the overall one averages")
    print("each server's own steps):\n")
    print("| events/s | " + " | ".join(names) + " |")
    print("| --- |" + " --- |" * len(names))
    for rate in sorted(cpu_steps):
        print(f"| {rate:g} | " + " | ".join(fmt(cpu_steps[rate].get(n)) for n in names) + " |")

ours = [r for r in rows if r[0].startswith("streamhub")]
peers = [r for r in rows if not r[0].startswith("streamhub")]
if ours and peers:
    print("\nstreamhub's lead (the peer's CPU per delivery over streamhub's; streamhub's highest step")
    print("over the peer's; the peer's RSS per idle connection over streamhub's):\n")
    print("| | " + " | ".join(f"vs {p[0]}" for p in peers) + " |")
    print("| --- |" + " --- |" * len(peers))
    for o in ours:
        cells = []
        for p in peers:
            cpu = p[1] / o[1] if p[1] and o[1] else None
            peak = o[2] / p[2] if p[2] and o[2] else None
            mem = p[3] / o[3] if p[3] and o[3] else None
            cells.append(f"CPU {fmt(cpu, 'x', 1)}, step {fmt(peak, 'x', 1)}, memory {fmt(mem, 'x', 2)}")
        print(f"| {o[0]} | " + " | ".join(cells) + " |")
