#!/usr/bin/env bash
# Where a burst's time goes (issue 10, session 7): runs `broadcast` at one rate and, over 8 s of
# its step, prints for every busy thread of the hub and of the harness how long it ran and how
# long it waited runnable for a core (`/proc/<pid>/task/<tid>/schedstat`), the harness's CPU in
# cores (`/proc/<pid>/stat`), and the hub's own routing-to-write latency
# (`ws_message_latency_seconds` buckets, two `/metrics` reads 8 s apart), then the step's row.
#
#   loadtest/tools/burst_threads.sh <events/s> [batch]
#
# `batch` runs the harness as SCHED_BATCH (`chrt -a -b -p 0`) once the hub has started.
# LOADTEST=<binary> measures another build of the harness (default target/release/loadtest).
# Run from the repository root after `cargo build --release --workspace`.
set -euo pipefail
rate=${1:?events/s}
mode=${2:-}
bin=${LOADTEST:-target/release/loadtest}
out=/tmp/burst_threads
mkdir -p "$out"
"$bin" run loadtest/scenarios/broadcast.yaml --rate "$rate" --step-seconds 20 \
  --label "burst_$rate" --out "$out" --quiet >"$out/run.log" 2>&1 &
harness=$!
sleep 2
[ "$mode" = batch ] && chrt -a -b -p 0 "$harness" >/dev/null
sleep 6
hub=$(pgrep -n -x streamhub)
port=$(ss -ltnp | grep "pid=$hub," | grep -o '127.0.0.1:[0-9]*' | head -1)
threads() {
  for p in $hub $harness; do
    for t in /proc/"$p"/task/*; do
      echo "$(basename "$t") $(cat "$t/comm") $(cat "$t/schedstat")"
    done
  done | sort
}
cpu() { awk '{print $14 + $15}' /proc/"$harness"/stat; }
buckets() { curl -s "http://$port/metrics" | grep '^ws_message_latency_seconds_bucket'; }
threads >"$out/t1"; c1=$(cpu); buckets >"$out/m1"
sleep 8
threads >"$out/t2"; c2=$(cpu); buckets >"$out/m2"
join "$out/t1" "$out/t2" | awk '{run = ($7 - $3) / 1e6; wait = ($8 - $4) / 1e6
  if (run > 1) printf "%-18s ran %7.1f ms, waited runnable %7.1f ms\n", $2, run, wait}'
echo "harness: $(echo "($c2 - $c1) / 100 / 8" | bc -l | cut -c1-5) cores"
paste "$out/m1" "$out/m2" | awk '{n = $4 - $2; if ($1 ~ /Inf/) total = n; row[NR] = $1; c[NR] = n}
  END {for (i = 1; i <= NR; i++) printf "%s %d (%.1f%%)\n", row[i], c[i], 100 * c[i] / total}'
wait "$harness"
grep -A2 '| target ev/s' "$out/burst_$rate/report.md" | tail -1
