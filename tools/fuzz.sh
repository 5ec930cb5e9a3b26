#!/usr/bin/env bash
# Runs every cargo-fuzz target (or the ones named) for SECONDS each, one after another.
#
#   tools/fuzz.sh [SECONDS] [TARGET...]        default: 60 s, all targets
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). New inputs found go
# to fuzz/scratch/<target>/ (not committed: the committed corpora under fuzz/corpus/ stay
# small); crashes, hangs and out-of-memory inputs go to fuzz/artifacts/<target>/, and the run
# stops at the first one. Add each as fuzz/corpus/<target>/regress-*, fix it, and
# `cargo test --lib fuzz_targets` replays it from then on. See TESTING.md.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-60}
shift || true
all=(safetensors checkpoint pickle config tokenizer_text tokenizer_files y4m)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all[@]}")

# Debug assertions on (integer overflow is a finding); no sanitizer (the readers are safe Rust;
# libFuzzer still catches panics, timeouts and memory beyond -rss_limit_mb).
flags=(--dev -s none)
for t in "${targets[@]}"; do
  mkdir -p "fuzz/scratch/$t" "fuzz/artifacts/$t"
  log="fuzz/artifacts/$t/last-run.log"
  echo "== $t: ${secs} s (log: $log)"
  set +e
  nice -n 15 cargo +nightly fuzz run "${flags[@]}" "$t" "fuzz/scratch/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
    -artifact_prefix="fuzz/artifacts/$t/" >"$log" 2>&1
  rc=$?
  set -e
  grep -E "^(#[0-9]+[[:space:]]+(INITED|DONE)|stat::number_of_executed_units|stat::peak_rss_mb|SUMMARY|.*panicked at)" "$log" || true
  if [ $rc -ne 0 ]; then
    echo "$t: libFuzzer stopped with status $rc: a finding is in fuzz/artifacts/$t/ (see $log)"
    exit $rc
  fi
done
