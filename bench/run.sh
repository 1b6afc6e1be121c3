#!/usr/bin/env bash
# Benchmarks wharfd with wharf-bench on loopback, in both durability modes.
#
#   bench/run.sh            full run: 20 s per scenario
#   bench/run.sh --smoke    a few seconds per scenario: checks the harness runs (CI)
#
# Builds in Release into build-release/ (or uses WHARF_BUILD_DIR), starts its own wharfd with a
# temporary data directory on free ports, stops it by PID, and prints one RESULT line per
# scenario. See docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=20
if [[ "${1:-}" == "--smoke" ]]; then DURATION=2; fi

BUILD=${WHARF_BUILD_DIR:-build-release}
if [[ -z "${WHARF_BUILD_DIR:-}" ]]; then
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DWHARF_BUILD_TESTS=OFF > /dev/null
  cmake --build "$BUILD" -j"$(nproc)" --target wharfd wharf-bench > /dev/null
fi
WHARFD="$BUILD/server/wharfd"
BENCH="$BUILD/bench/wharf-bench"

free_port() {
  # Asks the kernel for a free ephemeral port by binding port 0 with bash's /dev/tcp fallback:
  # pick a random high port not currently listening.
  while :; do
    local p=$(( 20000 + RANDOM % 30000 ))
    if ! (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then echo $p; return; fi
  done
}

run_scenario() {
  local name=$1 durability=$2
  shift 2
  local dir port mport pid
  dir=$(mktemp -d /tmp/wharf-bench-XXXXXX)
  port=$(free_port); mport=$(free_port)
  cat > "$dir/wharf.yaml" <<YAML
listen: 127.0.0.1:$port
metrics_listen: 127.0.0.1:$mport
data_dir: $dir/data
durability: $durability
min_free_disk: 1GiB
batching:
  max_records: 1000
  linger: 50ms
retention:
  raw: 0s
  interval: 1s
log:
  level: warn
datasets:
  - name: bench
    partitions: 4
    destinations:
      - name: files
        type: file
        directory: $dir/out
YAML
  "$WHARFD" --config "$dir/wharf.yaml" > "$dir/wharfd.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do
    if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then break; fi
    sleep 0.1
  done
  echo "--- $name (durability $durability)"
  local rc=0
  "$BENCH" --server "127.0.0.1:$port" --dataset bench "$@" --duration "$DURATION" \
    --handoff-dir "$dir/out" || rc=$?
  local rss
  rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
  echo "wharfd peak RSS: $(( rss / 1024 )) MiB"
  kill -TERM "$pid"
  wait "$pid" || rc=$?
  rm -rf "$dir"
  return $rc
}

run_scenario "4 producers x 1000 records/request" sync --producers 4 --batch-size 1000 --record-size 200
run_scenario "4 producers x 1000 records/request" async --producers 4 --batch-size 1000 --record-size 200
run_scenario "16 producers x 100 records/request" sync --producers 16 --batch-size 100 --record-size 200
run_scenario "4 producers x 1000 records/request at 50,000 records/s" sync --producers 4 --batch-size 1000 --record-size 200 --rate 50000
