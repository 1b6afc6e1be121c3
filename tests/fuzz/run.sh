#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan+UBSan, build-fuzz/) and runs each of them in turn.
#
#   tests/fuzz/run.sh [seconds] [target...]
#   WHARF_FUZZ_PARALLEL=N tests/fuzz/run.sh ...   # N targets at a time (default 1)
#
# seconds: run time per target (default 1800, the reliability target); targets: names from
# tests/fuzz/CMakeLists.txt (default: all). Each target starts from its committed seed corpus
# (tests/fuzz/corpus/<target>, read only) and writes what it discovers to
# build-fuzz/fuzz-work/<target>/corpus; crashes, leaks and timeouts land in
# build-fuzz/fuzz-work/<target>/ as crash-*, leak-*, timeout-*, and the log with the final
# statistics (stat::number_of_executed_units) in build-fuzz/fuzz-work/<target>.log.
# Not part of tests/run.sh: CI replays the corpora instead (ctest -R fuzz_replay_).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)

SECONDS_PER_TARGET=${1:-1800}
shift || true
if [[ $# -gt 0 ]]; then
  TARGETS=("$@")
else
  mapfile -t TARGETS < <(sed -n '/^set(WHARF_FUZZ_TARGETS/,/^)/p' tests/fuzz/CMakeLists.txt |
    grep -E '^\s+[a-z_]+_fuzz\s*$' | tr -d ' ')
fi

deploy/install-deps.sh --fuzz

LAUNCHER=()
if command -v ccache > /dev/null; then
  export CCACHE_BASEDIR=$ROOT
  LAUNCHER=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi
mkdir -p build-fuzz
# CC/CXX only matter on the first configure. -O1 without NDEBUG: fast enough to fuzz, and the
# assertions of RapidJSON and of project code stay on.
CC=clang-14 CXX=clang++-14 cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g" -DWHARF_FUZZ=ON -DWHARF_BUILD_BENCH=OFF \
  "${LAUNCHER[@]}" > build-fuzz/configure.log
cmake --build build-fuzz -j"$(nproc)" --target "${TARGETS[@]}"

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
PARALLEL=${WHARF_FUZZ_PARALLEL:-1}

# Runs one target; leaves <target>.found when it found something (exit status of a background job
# is awkward to collect after `wait -n`).
run_target() {
  local target=$1 work=build-fuzz/fuzz-work/$1
  mkdir -p "$work/corpus"
  rm -f "$work.found"
  echo "=== $target: ${SECONDS_PER_TARGET}s ($(date +%H:%M:%S))"
  # The first directory receives new inputs; the seed corpus is only read.
  (cd "$work" && "$ROOT/build-fuzz/tests/fuzz/$target" -max_total_time="$SECONDS_PER_TARGET" \
    -rss_limit_mb=2048 -timeout=10 -max_len=4096 -print_final_stats=1 \
    corpus "$ROOT/tests/fuzz/corpus/$target") < /dev/null > "$work.log" 2>&1 || touch "$work.found"
}

for target in "${TARGETS[@]}"; do
  while [[ $(jobs -rp | wc -l) -ge $PARALLEL ]]; do wait -n || true; done
  run_target "$target" &
done
wait
failed=()
for target in "${TARGETS[@]}"; do
  if [[ -e build-fuzz/fuzz-work/$target.found ]]; then failed+=("$target"); fi
  echo "--- $target"
  grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb|^#[0-9]+.*DONE' \
    "build-fuzz/fuzz-work/$target.log" || true
done
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "findings in: ${failed[*]} (see build-fuzz/fuzz-work/<target>.log)" >&2
  exit 1
fi
echo "no findings"
