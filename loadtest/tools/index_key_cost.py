#!/usr/bin/env python3
"""Heap bytes per subscription-index key, from the hub's own jemalloc gauges.

Usage (needs `pip install websockets` and a release hub listening on PORT with
`websocket.max_index_keys` raised above CLIENTS x 4,096):

    target/release/streamhub --config hub.yaml &     # port: 18444, max_index_keys: 10000000
    python3 loadtest/tools/index_key_cost.py 18444 64

Each of CLIENTS clients subscribes to 4 types x 32 clusters (its own) x 32 namespaces = 4,096
keys no other client shares; the script prints the keys held and the growth of
streamhub_heap_allocated_bytes / streamhub_heap_resident_bytes per key.
"""
import asyncio
import json
import sys
import urllib.request

import websockets

PORT = int(sys.argv[1])
CLIENTS = int(sys.argv[2])


def gauges():
    text = urllib.request.urlopen(f"http://127.0.0.1:{PORT}/metrics").read().decode()
    return {l.split()[0]: float(l.split()[1]) for l in text.splitlines() if l.startswith("streamhub_")}


async def main():
    before = gauges()
    held = []
    for c in range(CLIENTS):
        ws = await websockets.connect(f"ws://127.0.0.1:{PORT}/ws")
        await ws.send(json.dumps({"type": "subscribe", "subscription": {
            "event_types": ["ALERT_FIRED", "ALERT_RESOLVED", "GPU_UPDATE", "METRIC_UPDATE"],
            "cluster_filter": [f"k{c}c{i}" for i in range(32)],
            "namespace_filter": [f"n{i}" for i in range(32)]}}))
        reply = json.loads(await ws.recv())
        assert reply["type"] == "subscribed", reply
        held.append(ws)
    await asyncio.sleep(1)
    after = gauges()
    keys = after["streamhub_index_keys"]
    grow = lambda g: (after[g] - before[g]) / keys
    print(f"keys {keys:.0f}  heap/key {grow('streamhub_heap_allocated_bytes'):.0f} B  "
          f"resident/key {grow('streamhub_heap_resident_bytes'):.0f} B")


asyncio.run(main())
