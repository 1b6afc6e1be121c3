#!/usr/bin/env bash
# Benchmarks on loopback, in two groups:
#   ingest        wharfd with wharf-bench, in both durability modes
#   destinations  wharf-destination-bench: delivery throughput of each destination adapter, and
#                 for PostgreSQL the same records loaded by plain COPY through psql (the ceiling)
#   contract      wharf-contract-bench: the contract step per core (validation alone and the
#                 whole step) and valijson on the same records, as a reference
#
#   bench/run.sh [--smoke] [GROUP...]   default: both groups
#   bench/run.sh                        full run: 20 s per ingest scenario; 200,000 records per
#                                       destination run, 3 runs
#   bench/run.sh --smoke                a few seconds per scenario: checks the harness runs (CI)
#
# Builds in Release into build-release/ (or uses WHARF_BUILD_DIR), starts its own servers
# (wharfd, a throwaway PostgreSQL cluster) with temporary data directories on free loopback
# ports, stops them by PID, and prints one RESULT line per scenario (plus SUMMARY lines with the
# medians of the destination runs). See docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."

SMOKE=0
GROUPS_TO_RUN=()
for arg in "$@"; do
  case "$arg" in
    --smoke) SMOKE=1 ;;
    ingest|destinations|contract) GROUPS_TO_RUN+=("$arg") ;;
    *) echo "usage: bench/run.sh [--smoke] [ingest] [destinations] [contract]" >&2; exit 2 ;;
  esac
done
if (( ${#GROUPS_TO_RUN[@]} == 0 )); then GROUPS_TO_RUN=(ingest destinations contract); fi

DURATION=20
DEST_RECORDS=${WHARF_DEST_RECORDS:-200000}
DEST_RUNS=${WHARF_DEST_RUNS:-3}
if [[ $SMOKE -eq 1 ]]; then
  DURATION=2
  DEST_RECORDS=5000
  DEST_RUNS=1
fi
DEST_PARTITIONS=${WHARF_DEST_PARTITIONS:-"1 4"}

BUILD=${WHARF_BUILD_DIR:-build-release}
if [[ -z "${WHARF_BUILD_DIR:-}" ]]; then
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DWHARF_BUILD_TESTS=OFF > /dev/null
  cmake --build "$BUILD" -j"$(nproc)" --target wharfd wharf-bench wharf-destination-bench \
    wharf-contract-bench > /dev/null
fi
WHARFD="$BUILD/server/wharfd"
BENCH="$BUILD/bench/wharf-bench"
DEST_BENCH="$BUILD/bench/wharf-destination-bench"

# Everything started here is stopped (by PID) and removed on exit, also after a failure.
CLEANUP_PIDS=()
CLEANUP_DIRS=()
PG_DATA=""
cleanup() {
  local pid
  for pid in "${CLEANUP_PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid" 2>/dev/null || true; fi
  done
  for pid in "${CLEANUP_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ -n "$PG_DATA" ]]; then stop_postgres; fi
  local dir
  for dir in "${CLEANUP_DIRS[@]}"; do rm -rf "$dir"; done
}
trap cleanup EXIT

free_port() {
  # Asks the kernel for a free ephemeral port by binding port 0 with bash's /dev/tcp fallback:
  # pick a random high port not currently listening.
  while :; do
    local p=$(( 20000 + RANDOM % 30000 ))
    if ! (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then echo $p; return; fi
  done
}

# A wharfd config: one dataset `bench` (4 partitions) with a file destination.
# Usage: write_config FILE PORT METRICS_PORT DATA_DIR DURABILITY OUT_DIR
write_config() {
  cat > "$1" <<YAML
listen: 127.0.0.1:$2
metrics_listen: 127.0.0.1:$3
data_dir: $4
durability: $5
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
        directory: $6
YAML
}

run_scenario() {
  local name=$1 durability=$2
  shift 2
  local dir port mport pid
  dir=$(mktemp -d /tmp/wharf-bench-XXXXXX)
  port=$(free_port); mport=$(free_port)
  write_config "$dir/wharf.yaml" "$port" "$mport" "$dir/data" "$durability" "$dir/out"
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

run_ingest() {
  run_scenario "4 producers x 1000 records/request" sync --producers 4 --batch-size 1000 --record-size 200
  run_scenario "4 producers x 1000 records/request" async --producers 4 --batch-size 1000 --record-size 200
  run_scenario "16 producers x 100 records/request" sync --producers 16 --batch-size 100 --record-size 200
  run_scenario "4 producers x 1000 records/request at 50,000 records/s" sync --producers 4 --batch-size 1000 --record-size 200 --rate 50000
}

# --- destinations group -------------------------------------------------------------------------

PG_BIN=""
PG_PORT=""
PG_LAUNCHER=""
as_postgres() {
  # PostgreSQL refuses to run as root.
  if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}
pg_sql() {
  PGOPTIONS="-c client_min_messages=warning" psql -X -q -At -v ON_ERROR_STOP=1 \
    -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres "$@"
}

# A throwaway cluster: initdb into a temporary directory, one postmaster on 127.0.0.1:<free port>
# with fsync=on (the honest setting, the same for Wharf's COPY and for the psql ceiling).
start_postgres() {
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  if [[ -z "$PG_BIN" || ! -x "$PG_BIN/postgres" ]]; then
    echo "bench: no PostgreSQL server under /usr/lib/postgresql (deploy/install-deps.sh --bench)" >&2
    return 1
  fi
  local dir
  dir=$(mktemp -d /tmp/wharf-bench-pg-XXXXXX)
  CLEANUP_DIRS+=("$dir")
  if [[ $(id -u) -eq 0 ]]; then chown postgres:postgres "$dir"; fi
  PG_DATA="$dir/data"
  as_postgres "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth=trust -E UTF8 --locale=C \
    > "$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; return 1; }
  PG_PORT=$(free_port)
  as_postgres "$PG_BIN/postgres" -D "$PG_DATA" -p "$PG_PORT" -c listen_addresses=127.0.0.1 \
    -c unix_socket_directories="$dir" -c fsync=on -c synchronous_commit=on \
    > "$dir/postgres.log" 2>&1 &
  PG_LAUNCHER=$!
  local _
  for _ in $(seq 1 300); do
    if pg_sql -c 'SELECT 1' > /dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "bench: PostgreSQL did not start:" >&2
  cat "$dir/postgres.log" >&2
  return 1
}

# Fast shutdown of the postmaster by its PID (from postmaster.pid; `runuser` is only its
# launcher), SIGKILL after 30 s.
stop_postgres() {
  local pid="" _
  if [[ -f "$PG_DATA/postmaster.pid" ]]; then pid=$(head -1 "$PG_DATA/postmaster.pid"); fi
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    kill -INT "$pid" 2>/dev/null || true
    for _ in $(seq 1 300); do
      if ! kill -0 "$pid" 2>/dev/null; then break; fi
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  elif [[ -n "$PG_LAUNCHER" ]]; then
    kill -TERM "$PG_LAUNCHER" 2>/dev/null || true
  fi
  if [[ -n "$PG_LAUNCHER" ]]; then wait "$PG_LAUNCHER" 2>/dev/null || true; fi
  PG_DATA=""
}

# The central wharfd that the wharf forward destination delivers to: one dataset `bench` with 4
# partitions and a file destination into $CENTRAL_OUT.
CENTRAL_PORT=""
CENTRAL_OUT=""
start_central() {
  local dir mport pid _
  dir=$(mktemp -d /tmp/wharf-bench-central-XXXXXX)
  CLEANUP_DIRS+=("$dir")
  CENTRAL_PORT=$(free_port); mport=$(free_port)
  CENTRAL_OUT="$dir/out"
  write_config "$dir/wharf.yaml" "$CENTRAL_PORT" "$mport" "$dir/data" sync "$CENTRAL_OUT"
  "$WHARFD" --config "$dir/wharf.yaml" > "$dir/wharfd.log" 2>&1 &
  pid=$!
  CLEANUP_PIDS+=("$pid")
  for _ in $(seq 1 100); do
    if (exec 3<>/dev/tcp/127.0.0.1/$CENTRAL_PORT) 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "bench: central wharfd did not start:" >&2
  cat "$dir/wharfd.log" >&2
  return 1
}

# Lines in the delivered *.jsonl files under $1.
count_lines() {
  find "$1" -name '*.jsonl' -not -name '.*' -print0 2>/dev/null | xargs -0 -r cat | wc -l
}

# Waits (at most 60 s) until the central has delivered $1 records to its files: the forwarded
# records were not only acknowledged but arrived.
wait_central_lines() {
  local want=$1 have=0 _
  for _ in $(seq 1 600); do
    have=$(count_lines "$CENTRAL_OUT")
    if (( have >= want )); then break; fi
    sleep 0.1
  done
  if (( have != want )); then
    echo "bench: the central delivered $have records, expected $want" >&2
    return 1
  fi
}

RESULTS=""
# Runs wharf-destination-bench with the common flags; its RESULT line goes to $RESULTS too.
dest_bench() {
  "$DEST_BENCH" --records "$DEST_RECORDS" --batch-size 1000 --record-size 200 "$@" \
    | tee -a "$RESULTS"
}

# The ceiling: the same records (dumped by wharf-destination-bench) loaded into an equivalent
# table by one plain COPY through psql, timed from psql's start to its exit.
run_psql_copy() {
  local file=$1 bytes=$2 t0 t1 rows seconds
  pg_sql -c 'DROP TABLE IF EXISTS copy_ceiling' \
    -c 'CREATE TABLE copy_ceiling (id bigint, ts timestamptz, "user" text, amount numeric, doc jsonb)' \
    -c 'CHECKPOINT'
  t0=$(date +%s.%N)
  pg_sql -c "\\copy copy_ceiling (id, ts, \"user\", amount, doc) FROM '$file'"
  t1=$(date +%s.%N)
  rows=$(pg_sql -c 'SELECT count(*) FROM copy_ceiling')
  if [[ "$rows" != "$DEST_RECORDS" ]]; then
    echo "bench: psql COPY loaded $rows rows, expected $DEST_RECORDS" >&2
    return 1
  fi
  seconds=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
  awk -v n="$DEST_RECORDS" -v s="$seconds" -v b="$bytes" 'BEGIN {
    printf "RESULT destination=psql_copy records=%d batches=1 partitions=1 seconds=%.3f records_per_s=%.2f mb_per_s=%.2f bytes=%d\n",
      n, s, n / s, b / s / 1e6, b }' | tee -a "$RESULTS"
}

# The value of key $2 in RESULT line $1.
field() { tr ' ' '\n' <<< "$1" | sed -n "s/^$2=//p"; }

# Median of the numbers on stdin (lower median for an even count).
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'; }

# Median records/s of destination $1 with partitions $2 over the runs.
median_of() {
  grep "^RESULT destination=$1 .*partitions=$2 " "$RESULTS" \
    | sed -n "s/.* $3=\([0-9.]*\).*/\1/p" | median
}

run_destinations() {
  local tmp
  tmp=$(mktemp -d /tmp/wharf-bench-dest-XXXXXX)
  CLEANUP_DIRS+=("$tmp")
  RESULTS="$tmp/results"
  : > "$RESULTS"
  start_postgres
  start_central
  local conninfo="host=127.0.0.1 port=$PG_PORT user=postgres dbname=postgres"
  local dump bytes
  dump=$("$DEST_BENCH" --records "$DEST_RECORDS" --record-size 200 --dump-copy-file "$tmp/copy.txt")
  bytes=$(field "$dump" bytes)
  chmod a+r "$tmp/copy.txt"
  echo "--- destinations: $DEST_RECORDS records of ~200 bytes, batches of 1,000, $DEST_RUNS run(s);" \
    "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') with fsync=on"
  local run p dir central_total=0
  for run in $(seq 1 "$DEST_RUNS"); do
    echo "--- run $run"
    for p in $DEST_PARTITIONS; do
      dir=$(mktemp -d "$tmp/out-XXXXXX")
      dest_bench --partitions "$p" --destination file --dir "$dir"
      rm -rf "$dir"
      dir=$(mktemp -d "$tmp/out-XXXXXX")
      dest_bench --partitions "$p" --destination rolling_file --dir "$dir"
      rm -rf "$dir"
      dir=$(mktemp -d "$tmp/out-XXXXXX")
      dest_bench --partitions "$p" --destination rolling_file --gzip --dir "$dir"
      rm -rf "$dir"
      dest_bench --partitions "$p" --destination http
      dest_bench --partitions "$p" --destination wharf --wharf-target "127.0.0.1:$CENTRAL_PORT"
      central_total=$(( central_total + DEST_RECORDS ))
      wait_central_lines "$central_total"
      pg_sql -c 'DROP TABLE IF EXISTS bench_events, wharf_batches' -c 'CHECKPOINT'
      dest_bench --partitions "$p" --destination postgres --pg-conninfo "$conninfo" \
        --pg-table bench_events
    done
    run_psql_copy "$tmp/copy.txt" "$bytes"
    # The ratio within the run: its loads ran minutes apart at most, under similar machine load.
    local copy_rate pg_rate
    copy_rate=$(grep '^RESULT destination=psql_copy ' "$RESULTS" | tail -1 \
      | sed -n 's/.* records_per_s=\([0-9.]*\).*/\1/p')
    for p in $DEST_PARTITIONS; do
      pg_rate=$(grep "^RESULT destination=postgres .*partitions=$p " "$RESULTS" | tail -1 \
        | sed -n 's/.* records_per_s=\([0-9.]*\).*/\1/p')
      echo "RESULT comparison=postgres/psql_copy partitions=$p run=$run" \
        "ratio=$(awk -v a="$pg_rate" -v b="$copy_rate" 'BEGIN { printf "%.2f", a / b }')" \
        | tee -a "$RESULTS"
    done
  done

  echo "--- destinations: medians of $DEST_RUNS run(s)"
  local d r m ceiling
  ceiling=$(median_of psql_copy 1 records_per_s)
  for p in $DEST_PARTITIONS; do
    for d in file rolling_file rolling_file_gzip http wharf postgres; do
      r=$(median_of "$d" "$p" records_per_s)
      m=$(median_of "$d" "$p" mb_per_s)
      echo "SUMMARY destination=$d partitions=$p records_per_s=$r mb_per_s=$m"
    done
  done
  echo "SUMMARY destination=psql_copy partitions=1 records_per_s=$ceiling" \
    "mb_per_s=$(median_of psql_copy 1 mb_per_s)"
  # Two views of the ratio: median records/s divided, and the median of the per-run ratios.
  for p in $DEST_PARTITIONS; do
    r=$(median_of postgres "$p" records_per_s)
    echo "SUMMARY comparison=postgres/psql_copy partitions=$p" \
      "ratio_of_medians=$(awk -v a="$r" -v b="$ceiling" 'BEGIN { printf "%.2f", a / b }')" \
      "median_run_ratio=$(grep "^RESULT comparison=postgres/psql_copy partitions=$p " "$RESULTS" \
        | sed -n 's/.* ratio=\([0-9.]*\).*/\1/p' | median)"
  done
  stop_postgres
}

run_contract() {
  echo "=== contract step per core (wharf-contract-bench)"
  local records=100000 rounds=3
  if [[ $SMOKE -eq 1 ]]; then records=2000; rounds=1; fi
  "$BUILD/bench/wharf-contract-bench" --records "$records" --rounds "$rounds"
}

for group in "${GROUPS_TO_RUN[@]}"; do
  case "$group" in
    ingest) run_ingest ;;
    destinations) run_destinations ;;
    contract) run_contract ;;
  esac
done
