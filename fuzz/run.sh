#!/usr/bin/env bash
# Fuzzes each target for a bounded time (default 60 s each) with cargo-fuzz on the nightly
# toolchain, growing the committed corpora in fuzz/corpus/. A crash stops the script and leaves
# its input in fuzz/artifacts/<target>/: fix it, then copy the input into fuzz/corpus/<target>/
# so that tests/fuzz_corpus.rs replays it from then on.
#
#   fuzz/run.sh                  # every target, 60 s each
#   SECONDS_EACH=300 fuzz/run.sh event frames
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(client_message event frames config)
for t in "${targets[@]}"; do
  echo "== $t"
  mkdir -p fuzz/target
  log="fuzz/target/$t.log"
  if ! cargo +nightly fuzz run "$t" "fuzz/corpus/$t" -- \
    -max_total_time="${SECONDS_EACH:-60}" -max_len=4096 -print_final_stats=1 >"$log" 2>&1; then
    grep -m1 -A4 "panicked" "$log" || tail -20 "$log"
    echo "$t found a crash: see $log and fuzz/artifacts/$t/"
    exit 1
  fi
  grep -E "^stat::(number_of_executed_units|new_units_added)" "$log"
  # Keep the corpus small: only inputs that add coverage.
  cargo +nightly fuzz cmin "$t" "fuzz/corpus/$t" >/dev/null 2>&1 || true
done
