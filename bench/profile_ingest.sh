#!/usr/bin/env bash
# Profiles wharfd during durable ingest (the targets group's scenario 2: durability sync, the file
# destination paused, wharf-bench with 4 producers x 1,000 records/request at full rate) with
# `perf record` (software cpu-clock sampling: this VM has no hardware counters) and prints where
# wharfd's CPU time goes: per thread, per library and per function (self time), and the inclusive
# time of the main call paths. docs/BENCHMARKS.md "Where the time goes" is read from its output.
#
#   bench/profile_ingest.sh [SECONDS]     default 15 s of samples (after 3 s of warm-up)
#   WHARF_PROFILE_DELIVER=1 bench/profile_ingest.sh   the same with the destination delivering
#                                                     (ingest + pipeline + file destination)
#
# Needs perf (Debian: linux-perf) and a Release build in build-release/ (or WHARF_BUILD_DIR),
# e.g. from bench/run.sh. Starts its own wharfd on free loopback ports with a temporary data
# directory and stops it by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/wharfd_config.sh
SECONDS_TO_SAMPLE=${1:-15}
BUILD=${WHARF_BUILD_DIR:-build-release}
WHARFD="$BUILD/server/wharfd"
BENCH="$BUILD/bench/wharf-bench"
WHARFCTL="$BUILD/client/wharfctl"
for binary in "$WHARFD" "$BENCH" "$WHARFCTL"; do
  [[ -x "$binary" ]] || { echo "profile: $binary missing (build Release first)" >&2; exit 2; }
done
command -v perf > /dev/null || { echo "profile: perf missing (apt-get install linux-perf)" >&2; exit 2; }

DIR=$(mktemp -d /tmp/wharf-profile-XXXXXX)
PID=""
BENCH_PID=""
cleanup() {
  for pid in $BENCH_PID $PID; do
    if kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid" 2>/dev/null || true; fi
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$DIR"
}
trap cleanup EXIT

free_port() {
  while :; do
    local p=$(( 20000 + RANDOM % 30000 ))
    if ! (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then echo $p; return; fi
  done
}
PORT=$(free_port); MPORT=$(free_port)
mkdir -p "$DIR/out"
write_config "$DIR/wharf.yaml" "$PORT" "$MPORT" "$DIR/data" sync "$DIR/out"
"$WHARFD" --config "$DIR/wharf.yaml" > "$DIR/wharfd.log" 2>&1 &
PID=$!
for _ in $(seq 1 150); do
  if (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null; then break; fi
  sleep 0.1
done
if [[ "${WHARF_PROFILE_DELIVER:-0}" != 1 ]]; then
  "$WHARFCTL" --server "127.0.0.1:$PORT" destination pause bench files > /dev/null
fi
"$BENCH" --server "127.0.0.1:$PORT" --dataset bench --producers 4 --batch-size 1000 \
  --record-size 200 --duration $(( SECONDS_TO_SAMPLE + 5 )) > "$DIR/bench.out" &
BENCH_PID=$!
sleep 3
# 499 Hz, DWARF unwinding (the Release build has no frame pointers), wharfd's threads only.
perf record -q -e cpu-clock -F 499 --call-graph dwarf,8192 -p "$PID" -o "$DIR/perf.data" \
  -- sleep "$SECONDS_TO_SAMPLE" 2> "$DIR/perf.err" || { cat "$DIR/perf.err" >&2; exit 1; }
wait "$BENCH_PID"
BENCH_PID=""
echo "=== wharf-bench during the profile"
tail -1 "$DIR/bench.out"
report() { perf report -i "$DIR/perf.data" --stdio --no-header "$@" 2> /dev/null; }
echo "=== wharfd CPU by thread (self time)"
report --no-children --sort comm -g none --percent-limit 1 | grep -v '^$'
echo "=== wharfd CPU by library (self time)"
report --no-children --sort dso -g none --percent-limit 1 | grep -v '^$'
echo "=== wharfd hottest functions (self time)"
report --no-children --sort dso,sym -g none --percent-limit 0.7 | grep -v '^$' | head -60
echo "=== wharfd inclusive time (children), functions above 4%"
report --children --sort sym -g none --percent-limit 4 | grep -v '^$' | head -80
