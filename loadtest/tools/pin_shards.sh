#!/usr/bin/env bash
# Thread pinning, side by side (issue 10): runs `broadcast` at one rate, alternating a hub left to
# the scheduler with one whose shard threads are pinned one per core (`taskset` on each
# `streamhub-shard` thread, two seconds after the start, before any client connects), and
# prints each run's step row. Reports go to /tmp/pin_shards/.
#
#   loadtest/tools/pin_shards.sh <events/s> [pairs] [step seconds]
#
# Run from the repository root after `cargo build --release --workspace`.
set -euo pipefail
rate=${1:?events/s}
pairs=${2:-2}
step=${3:-12}
out=/tmp/pin_shards
mkdir -p "$out"
for r in $(seq 1 "$pairs"); do
  for mode in free pinned; do
    label="${mode}_${rate}_r${r}"
    target/release/loadtest run loadtest/scenarios/broadcast.yaml --rate "$rate" \
      --step-seconds "$step" --label "$label" --out "$out" --quiet >"$out/$label.log" 2>&1 &
    run=$!
    sleep 2
    if [ "$mode" = pinned ]; then
      hub=$(pgrep -n -x streamhub)
      cpu=0
      for task in /proc/"$hub"/task/*; do
        if [ "$(cat "$task/comm")" = streamhub-shard ]; then
          taskset -p -c "$cpu" "$(basename "$task")" >/dev/null
          cpu=$(((cpu + 1) % $(nproc)))
        fi
      done
    fi
    wait "$run"
    row=$(grep -A2 '| target ev/s' "$out/$label/report.md" | tail -1)
    echo "$mode r$r: $row"
  done
done
echo "columns: target ev/s | achieved | events | deliveries/s | p50 | p99 | p99.9 | max | hub drops | hub CPU per delivery"
