#!/usr/bin/env bash
# A/B comparison of durable ingest on a shared machine: for each given binary set, in turn and
# repeated, the storage ceiling (scenario 1, 4 threads), durable ingest (scenario 2: 4 producers x
# 1,000 records/request, durability sync, destination paused) and ack latency at 50% of that
# run's ingest rate (scenario 5, destination delivering), each shortened. The ratio
# ingest/ceiling is computed within one round, so slow drifts of the machine's load cancel out
# as far as possible; alternating the variants spreads the load's swings over all of them.
#
#   bench/ab_ingest.sh [-r ROUNDS] [-s SECONDS] LABEL=DIR [LABEL=DIR ...]
#
# DIR holds wharfd and wharf-storage-ceiling of one variant (each variant's ceiling program,
# since it shares the variant's RocksDB options); wharf-bench and wharfctl come from
# WHARF_BUILD_DIR (default build-release). Extra environment for a variant's wharfd and ceiling
# program: LABEL_ENV, e.g. `jemalloc_ENV="LD_PRELOAD=..."`. Prints one line per variant and round:
#   AB label=L round=R ceiling=C ingest=I ratio=I/C ack_p50_ms ack_p99_ms group_ms group_records
#      lat_rate lat_ack_p50_ms lat_ack_p99_ms lat_handoff_p99_ms
# and the medians per variant at the end. Servers are started on free loopback ports with
# temporary data directories under /tmp and stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/wharfd_config.sh
ROUNDS=3
SECS=10
while getopts "r:s:" opt; do
  case $opt in
    r) ROUNDS=$OPTARG ;;
    s) SECS=$OPTARG ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
(( $# > 0 )) || { echo "usage: $0 [-r ROUNDS] [-s SECONDS] LABEL=DIR ..." >&2; exit 2; }
BUILD=${WHARF_BUILD_DIR:-build-release}
BENCH="$BUILD/bench/wharf-bench"
WHARFCTL="$BUILD/client/wharfctl"

PIDS=()
DIRS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid" 2>/dev/null || true; fi
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "${DIRS[@]}"
}
trap cleanup EXIT

free_port() {
  while :; do
    local p=$((20000 + RANDOM % 30000))
    if ! (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then echo $p; return; fi
  done
}
field() { tr ' ' '\n' <<< "$1" | awk -F= -v k="$2" '$1 == k {print $2}'; }

# start_wharfd BIN DIR ENV -> sets PID PORT MPORT
start_wharfd() {
  local bin=$1 dir=$2 env=$3 _
  PORT=$(free_port); MPORT=$(free_port)
  mkdir -p "$dir/out"
  write_config "$dir/wharf.yaml" "$PORT" "$MPORT" "$dir/data" sync "$dir/out"
  env $env "$bin" --config "$dir/wharf.yaml" > "$dir/wharfd.log" 2>&1 &
  PID=$!
  PIDS+=("$PID")
  for _ in $(seq 1 150); do
    if ! kill -0 "$PID" 2>/dev/null; then cat "$dir/wharfd.log" >&2; return 1; fi
    if (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}
stop_wharfd() { kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }
metric() {
  curl -s --max-time 5 "http://127.0.0.1:$MPORT/metrics" | awk -v m="$1" '$1 == m {print $2}'
}

RESULTS=$(mktemp /tmp/wharf-ab-XXXXXX)
DIRS+=("$RESULTS")
for round in $(seq 1 "$ROUNDS"); do
  for spec in "$@"; do
    label=${spec%%=*}; bin=${spec#*=}
    envvar="${label}_ENV"; env=${!envvar:-}
    dir=$(mktemp -d /tmp/wharf-ab-XXXXXX); DIRS+=("$dir")
    line=$(env $env "$bin/wharf-storage-ceiling" --dir "$dir/db" --threads 4 --seconds "$SECS" \
      --batch-size 1000 --record-size 200 | tail -1)
    ceiling=$(field "$line" records_per_s)
    rm -rf "$dir/db"
    start_wharfd "$bin/wharfd" "$dir" "$env"
    "$WHARFCTL" --server "127.0.0.1:$PORT" destination pause bench files > /dev/null
    line=$("$BENCH" --server "127.0.0.1:$PORT" --dataset bench --producers 4 --batch-size 1000 \
      --record-size 200 --duration "$SECS" | tail -1)
    ingest=$(field "$line" records_per_s)
    gsum=$(metric wharf_store_group_commit_seconds_sum)
    gcount=$(metric wharf_store_group_commit_seconds_count)
    rsum=$(metric wharf_store_group_commit_requests_sum)
    stop_wharfd
    rm -rf "$dir/data" "$dir/out"
    rate=$(awk -v m="$ingest" 'BEGIN { printf "%.0f", m / 2 }')
    start_wharfd "$bin/wharfd" "$dir" "$env"
    lat=$("$BENCH" --server "127.0.0.1:$PORT" --dataset bench --producers 4 --batch-size 1000 \
      --record-size 200 --duration "$SECS" --rate "$rate" --handoff-dir "$dir/out" | tail -1)
    stop_wharfd
    rm -rf "$dir"
    out=$(awk -v l="$label" -v r="$round" -v c="$ceiling" -v i="$ingest" \
      -v a50="$(field "$line" ack_p50_ms)" -v a99="$(field "$line" ack_p99_ms)" \
      -v gs="$gsum" -v gc="$gcount" -v rs="$rsum" -v lr="$(field "$lat" records_per_s)" \
      -v l50="$(field "$lat" ack_p50_ms)" -v l99="$(field "$lat" ack_p99_ms)" \
      -v h99="$(field "$lat" handoff_p99_ms)" 'BEGIN {
        printf "AB label=%s round=%s ceiling=%.0f ingest=%.0f ratio=%.3f ack_p50_ms=%s ack_p99_ms=%s",
          l, r, c, i, i / c, a50, a99
        printf " group_ms=%.1f group_records=%.0f lat_rate=%.0f lat_ack_p50_ms=%s lat_ack_p99_ms=%s",
          (gc > 0) ? 1000 * gs / gc : 0, (gc > 0) ? rs / gc : 0, lr, l50, l99
        printf " lat_handoff_p99_ms=%s load=%s\n", h99, "'"$(cut -d' ' -f1 /proc/loadavg)"'"
      }')
    echo "$out"
    echo "$out" >> "$RESULTS"
  done
done
echo "=== medians over $ROUNDS rounds"
for spec in "$@"; do
  label=${spec%%=*}
  printf "MEDIAN label=%s" "$label"
  for k in ceiling ingest ratio ack_p99_ms group_ms group_records lat_ack_p50_ms lat_ack_p99_ms \
    lat_handoff_p99_ms; do
    v=$(grep "label=$label " "$RESULTS" | tr ' ' '\n' | awk -F= -v k="$k" '$1 == k {print $2}' \
      | sort -g | awk '{v[NR] = $1} END {if (NR) print v[int((NR + 1) / 2)]}')
    printf " %s=%s" "$k" "$v"
  done
  echo
done
