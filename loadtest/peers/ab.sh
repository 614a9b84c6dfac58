#!/usr/bin/env bash
# Two streamhub builds side by side in one sitting, with Node ws as the yardstick: the peers'
# `fanout` and `idle` scenarios for this checkout's release build (new) and another build (old),
# alternating, ROUNDS times, then Node ws once. Prints, per run, the hub's CPU per delivery, the
# highest step and the RSS per idle connection (from /proc). Not part of the test suite; for the
# "within noise" check an issue asks of a change.
#
#   loadtest/peers/ab.sh /path/to/old/streamhub [ROUNDS]
#   (old build: git worktree add /tmp/old REV && CARGO_TARGET_DIR=/tmp/old-target \
#      cargo build --release --bin streamhub --manifest-path /tmp/old/Cargo.toml)
set -euo pipefail
cd "$(dirname "$0")/../.."
. loadtest/peers/wait_port.sh
OLD=${1:?usage: loadtest/peers/ab.sh /path/to/old/streamhub [ROUNDS]}
ROUNDS=${2:-2}
OUT=${OUT:-target/peers-ab}
rm -rf "$OUT"; mkdir -p "$OUT"
[ -d loadtest/peers/node_modules ] || (cd loadtest/peers && npm ci --no-audit --no-fund)
cargo build --release --workspace

start() { # who
  case $1 in
    ws) node loadtest/peers/ws-server.js >"$OUT/$1.log" 2>&1 & PORT=9001 ;;
    new) ./target/release/streamhub >"$OUT/$1.log" 2>&1 & PORT=8080 ;;
    old) "$OLD" >"$OUT/$1.log" 2>&1 & PORT=8080 ;;
  esac
  PID=$!
  wait_port "$PORT" && return 0
  echo "$1 did not start; see $OUT/$1.log" >&2
  return 1
}

runs=()
for round in $(seq "$ROUNDS"); do
  for who in new old; do runs+=("$who$round"); done
done
runs+=(ws1)
for run in "${runs[@]}"; do
  who=${run%[0-9]*}
  peer=streamhub; [ "$who" = ws ] && peer=ws
  for scenario in fanout idle; do
    start "$who"
    ./target/release/loadtest run "loadtest/peers/scenarios/${scenario}_$peer.yaml" \
      --pid "$PID" --out "$OUT/$run" --quiet >/dev/null
    kill "$PID"; wait "$PID" 2>/dev/null || true
    sleep 2
  done
done
for run in "${runs[@]}"; do
  python3 - "$OUT/$run" "$run" <<'PY'
import json, pathlib, sys
d, run = pathlib.Path(sys.argv[1]), sys.argv[2]
f = json.loads(next(d.glob("peers_fanout_*/summary.json")).read_text())
i = json.loads(next(d.glob("peers_idle_*/summary.json")).read_text())
print(f"{run}: CPU per delivery {f['hub']['cpu_us_per_delivery']:.2f} us, highest step "
      f"{f['peak_deliveries_per_second']:,.0f} deliveries/s, lost {f['accounting']['lost']}, "
      f"RSS per idle connection {i['hub']['rss_per_connection_kib']:.2f} KiB")
PY
done
