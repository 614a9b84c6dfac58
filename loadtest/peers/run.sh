#!/usr/bin/env bash
# Measures streamhub and its peers side by side, in one sitting, with the same harness and the
# same scenarios: for each server, start it alone, run its `fanout` and `idle` scenarios with its
# process id (CPU and RSS from /proc), stop it. Then write loadtest/reports/peers/README.md (the
# table) and fanout_latency.svg. Not part of the test suite; see loadtest/peers/README.md.
#
#   loadtest/peers/run.sh                 # every server
#   PEERS="streamhub ws" loadtest/peers/run.sh
#   SOCKUDO=/path/to/sockudo PEERS="streamhub sockudo" loadtest/peers/run.sh
#
# sockudo is run from $SOCKUDO (default: `sockudo` on the PATH), built with
# `cargo install sockudo --version 5.2.0 --locked --no-default-features --features local`; when
# it is missing and PEERS is not set, it is left out with a note.
set -euo pipefail
cd "$(dirname "$0")/../.."
. loadtest/peers/wait_port.sh
SOCKUDO=${SOCKUDO:-sockudo}
if [ -z "${PEERS:-}" ]; then
  PEERS="streamhub streamhub_throughput ws socketio sockudo"
  command -v "$SOCKUDO" >/dev/null || {
    echo "no sockudo at '$SOCKUDO': left out (see loadtest/peers/README.md)" >&2
    PEERS="streamhub streamhub_throughput ws socketio"
  }
fi
SCENARIOS=${SCENARIOS:-"fanout idle"}
OUT=loadtest/reports/peers
mkdir -p "$OUT"
[ -d loadtest/peers/node_modules ] || (cd loadtest/peers && npm ci --no-audit --no-fund)
cargo build --release --workspace

start() {
  case $1 in
    streamhub) ./target/release/streamhub >"$OUT/$1.log" 2>&1 & PORT=8080 ;;
    streamhub_throughput)
      ./target/release/streamhub --config loadtest/peers/streamhub-throughput.yaml \
        >"$OUT/$1.log" 2>&1 & PORT=8080 ;;
    ws) node loadtest/peers/ws-server.js >"$OUT/$1.log" 2>&1 & PORT=9001 ;;
    socketio) node loadtest/peers/sio-server.js >"$OUT/$1.log" 2>&1 & PORT=9002 ;;
    sockudo)
      (set -a; . loadtest/peers/sockudo.env; exec "$SOCKUDO") >"$OUT/$1.log" 2>&1 & PORT=6001 ;;
  esac
  PID=$!
  wait_port "$PORT" && return 0
  echo "$1 did not start; see $OUT/$1.log" >&2
  return 1
}

for peer in $PEERS; do
  for scenario in $SCENARIOS; do
    start "$peer"
    ./target/release/loadtest run "loadtest/peers/scenarios/${scenario}_$peer.yaml" \
      --pid "$PID" --out "$OUT" --quiet >/dev/null
    kill "$PID"; wait "$PID" 2>/dev/null || true
    sleep 2
  done
done
python3 loadtest/peers/table.py "$OUT" > "$OUT/README.md"
runs=()
for peer in $PEERS; do runs+=("$OUT/peers_fanout_$peer"); done
[ ${#runs[@]} -ge 2 ] && ./target/release/loadtest report "${runs[@]}" --out "$OUT/fanout_latency.svg"
cat "$OUT/README.md"
