#!/usr/bin/env bash
# Runs each cargo-fuzz target in fuzz/ for a bounded time (default 600 s),
# two at a time, starting from the committed corpora in fuzz/corpus/.
# Not part of CI. Needs cargo-fuzz (`cargo install cargo-fuzz`); the stable
# toolchain is told to accept the sanitizer flags with RUSTC_BOOTSTRAP=1.
#
#   scripts/fuzz.sh            # every target, 600 s each
#   scripts/fuzz.sh 60 document http_body
set -euo pipefail
# The fuzz targets need no dashboard: build the server without Node.
export FERRITE_SKIP_WEB=1
cd "$(dirname "$0")/../fuzz"
seconds=${1:-600}
shift || true
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  mapfile -t targets < <(RUSTC_BOOTSTRAP=1 cargo fuzz list)
fi
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O
run() {
  local target=$1
  mkdir -p "corpus/$target" "artifacts/$target"
  # -rss_limit_mb: a target that needs more than this for one input is a finding.
  cargo fuzz run -O "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 \
    -print_final_stats=1 > "artifacts/$target.log" 2>&1
  local status=$?
  echo "$target: exit $status; $(grep -E 'stat::number_of_executed_units|Done [0-9]+ runs' "artifacts/$target.log" | tail -1)"
  return $status
}
failed=0
for ((i = 0; i < ${#targets[@]}; i += 2)); do
  pids=()
  for target in "${targets[@]:i:2}"; do
    run "$target" & pids+=($!)
  done
  for pid in "${pids[@]}"; do
    wait "$pid" || failed=1
  done
done
exit $failed
