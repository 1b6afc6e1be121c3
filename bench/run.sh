#!/usr/bin/env bash
# Benchmarks on loopback, in two groups:
#   ingest        wharfd with wharf-bench, in both durability modes
#   destinations  wharf-destination-bench: delivery throughput of each destination adapter, and
#                 for PostgreSQL the same records loaded by plain COPY through psql (the ceiling)
#   contract      wharf-contract-bench: the contract step per core (validation alone and the
#                 whole step) and valijson on the same records, as a reference
#   targets       the performance issue's scenarios 1-5 (storage ceiling, durable ingest, end to
#                 end, PostgreSQL staging table, latency at 50% load), CSV + plots + TARGETS table
#                 (see the targets section below)
#
#   bench/run.sh [--smoke] [GROUP...]   default: all groups
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
    ingest|destinations|contract|targets) GROUPS_TO_RUN+=("$arg") ;;
    backlog|growth|restart) GROUPS_TO_RUN+=("$arg") ;;
    *) echo "usage: bench/run.sh [--smoke] [ingest] [destinations] [contract] [targets]" \
         "[backlog] [growth] [restart]" >&2; exit 2 ;;
  esac
done
if (( ${#GROUPS_TO_RUN[@]} == 0 )); then
  GROUPS_TO_RUN=(ingest destinations contract targets backlog growth restart)
fi

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

# write_config FILE PORT METRICS_PORT DATA_DIR DURABILITY OUT_DIR
source bench/wharfd_config.sh

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

# --- targets group (issue "Performance", scenarios 1-5) -----------------------------------------
# Every target is a ratio against a reference measured in the same run on the same records, or an
# absolute latency bound. Scenarios (functions tg_*):
#   1 storage-ceiling   wharf-storage-ceiling: RocksDB alone with wharfd's options, synced write
#                       batches of 1,000 records from 4 threads and from 1 thread
#   2 durable-ingest    wharfd (durability sync, destination paused: ingest alone) with
#                       wharf-bench, 4 producers x 1,000 records/request at full rate
#   3 end-to-end        wharfd with a realistic contract and a file destination, 4 producers at
#                       full rate for 60 s; the rate is counted at the destination
#   4 pg-staging        the same records loaded by COPY into a jsonb staging table of a throwaway
#                       PostgreSQL, then validated and moved by INSERT ... SELECT into a typed table
#   5 latency           wharf-bench --rate at 50% of scenario 2's median rate: ack and handoff
#                       latency percentiles
#   5b latency_e2e      the same at 50% of scenario 3's median delivered rate, with scenario 3's
#                       contract (the other reading of "the maximum sustained rate")
# Each scenario runs WHARF_BENCH_RUNS times (default 3; --smoke: 1) and prints median, min, max.
# Results: one CSV per scenario (scenario,run,metric,value,unit,date) and PNG plots (gnuplot) in
# WHARF_BENCH_OUT (default docs/benchmarks; --smoke: a temporary directory), then a TARGETS table.
TG_RUNS=${WHARF_BENCH_RUNS:-3}
TG_CEILING_SECONDS=10
TG_INGEST_SECONDS=20
TG_E2E_SECONDS=60
TG_E2E_WARMUP=5
TG_PG_RECORDS=${WHARF_PG_RECORDS:-500000}
TG_LATENCY_SECONDS=20
if [[ $SMOKE -eq 1 ]]; then
  TG_RUNS=${WHARF_BENCH_RUNS:-1}
  TG_CEILING_SECONDS=1
  TG_INGEST_SECONDS=3
  TG_E2E_SECONDS=4
  TG_E2E_WARMUP=1
  TG_PG_RECORDS=5000
  TG_LATENCY_SECONDS=3
fi
TG_OUT=""
TG_CSV_DATE=""
TG_TARGETS=""   # file of "name|measured|target|met" lines
TG_CONTRACT="contract"

# Peak resident set size (VmHWM) of process $1 in KiB; 0 when it is gone.
peak_rss_kib() {
  local status
  status=$(cat "/proc/$1/status" 2>/dev/null || true)
  awk '/^VmHWM:/ {print $2; found=1} END {if (!found) print 0}' <<< "$status"
}

# Appends one row to $TG_OUT/<scenario>.csv: tg_csv SCENARIO RUN METRIC VALUE UNIT
tg_csv() {
  local file="$TG_OUT/$1.csv"
  if [[ ! -f "$file" ]]; then echo "scenario,run,metric,value,unit,date" > "$file"; fi
  echo "$1,$2,$3,$4,$5,$TG_CSV_DATE" >> "$file"
}

# "median min max" of metric $2 over the runs of scenario $1 (empty when there is none).
tg_stats() {
  # No CSV (scenario not run): prints nothing, so callers see an empty median and skip it.
  [[ -f "$TG_OUT/$1.csv" ]] || return 0
  awk -F, -v m="$2" 'NR > 1 && $3 == m {print $4}' "$TG_OUT/$1.csv" 2>/dev/null | sort -g \
    | awk '{v[NR] = $1} END {if (NR) printf "%s %s %s\n", v[int((NR + 1) / 2)], v[1], v[NR]}'
}
tg_median() { tg_stats "$1" "$2" | awk '{print $1}'; }

# Prints one SUMMARY line per metric of scenario $1.
tg_summary() {
  local metric unit stats
  while IFS=, read -r metric unit; do
    stats=$(tg_stats "$1" "$metric")
    echo "SUMMARY scenario=$1 metric=$metric median=$(cut -d' ' -f1 <<< "$stats")" \
      "min=$(cut -d' ' -f2 <<< "$stats") max=$(cut -d' ' -f3 <<< "$stats") unit=$unit runs=$TG_RUNS"
  done < <(awk -F, 'NR > 1 && !seen[$3]++ {print $3 "," $5}' "$TG_OUT/$1.csv")
}

# Records every key=value of RESULT line $3 whose key is listed in $4 ("key:unit ...") as metrics
# of scenario $1, run $2.
tg_csv_result() {
  local pair key unit value
  for pair in $4; do
    key=${pair%%:*}; unit=${pair#*:}
    value=$(field "$3" "$key")
    if [[ -n "$value" ]]; then tg_csv "$1" "$2" "$key" "$value" "$unit"; fi
  done
}

# One target: tg_target NAME MEASURED TARGET_TEXT MET(yes|no|info)
tg_target() { echo "$1|$2|$3|$4" >> "$TG_TARGETS"; }

# A wharfd for one scenario. Usage: tg_start_wharfd DIR DURABILITY WITH_CONTRACT(0|1)
# Sets TG_PID, TG_PORT, TG_MPORT; the file destination `files` writes to DIR/out. Returns 1 when
# wharfd does not come up (the log is in DIR/wharfd.log).
TG_PID=""; TG_PORT=""; TG_MPORT=""
tg_start_wharfd() {
  local dir=$1 durability=$2 contract=$3 _
  TG_PORT=$(free_port); TG_MPORT=$(free_port)
  mkdir -p "$dir/out"
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/hash.key"
  chmod 600 "$dir/hash.key"
  write_config "$dir/wharf.yaml" "$TG_PORT" "$TG_MPORT" "$dir/data" "$durability" "$dir/out"
  # The contract belongs to the dataset `bench`, the last item written; the key file is a
  # top-level key, which may follow it.
  if [[ $contract -eq 1 ]]; then
    { tg_contract_yaml; echo "hash_key_file: $dir/hash.key"; } >> "$dir/wharf.yaml"
  fi
  "$WHARFD" --config "$dir/wharf.yaml" > "$dir/wharfd.log" 2>&1 &
  TG_PID=$!
  CLEANUP_PIDS+=("$TG_PID")
  for _ in $(seq 1 150); do
    if ! kill -0 "$TG_PID" 2>/dev/null; then return 1; fi
    if (exec 3<>/dev/tcp/127.0.0.1/$TG_PORT) 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

# Stops the scenario's wharfd by PID; its exit status is not the scenario's.
tg_stop_wharfd() {
  kill -TERM "$TG_PID" 2>/dev/null || true
  wait "$TG_PID" 2>/dev/null || true
}

# The end-to-end contract, for the records of bench/record_generator.h (id, ts, bench_ts_us,
# user, amount, tags, nested {producer, region, score}, filler). 18 fields in the schema (the
# generator's 11 and 7 optional ones it never sends), a nested object, an array, formats
# (date-time, email, uuid, ipv4); two rules; one PII detector (email, hashed, on the user field);
# five transforms (rename, drop, timestamp, lowercase, add_metadata). Indented as a datasets[]
# entry's key.
tg_contract_yaml() {
  cat <<'YAML'
    contract:
      compatibility: BACKWARD
      format_assertions: true
      schema:
        type: object
        required: [id, ts, bench_ts_us, user, amount, tags, nested]
        additionalProperties: false
        properties:
          id: {type: integer, minimum: 0}
          ts: {type: string, format: date-time}
          bench_ts_us: {type: integer, minimum: 0}
          user: {type: string, minLength: 3, maxLength: 32, pattern: "^user_[0-9]{4}$"}
          amount: {type: number, minimum: 0, maximum: 1000000}
          tags:
            type: array
            minItems: 1
            maxItems: 8
            items: {enum: [alpha, beta, gamma, delta, omega, sigma]}
          nested:
            type: object
            required: [producer, region, score]
            additionalProperties: false
            properties:
              producer: {type: integer, minimum: 0}
              region: {type: string, enum: [eu-west-1, us-east-1, ap-south-1]}
              score: {type: integer, minimum: 0, maximum: 99}
          filler: {type: string, maxLength: 65536}
          email: {type: string, format: email}
          currency: {enum: [EUR, USD, GBP, CHF]}
          status: {enum: [new, paid, refund, cancelled]}
          country: {type: string, minLength: 2, maxLength: 2}
          session: {type: string, format: uuid}
          ip: {type: string, format: ipv4}
          coupon: {type: [string, "null"]}
      rules:
        - name: amount_in_range
          expr: 'amount >= 0 && amount < 1000000'
        - name: two_tags_known_region
          expr: 'len(tags) == 2 && nested.region in ["eu-west-1", "us-east-1", "ap-south-1"]'
      pii:
        - detector: email
          fields: ["/user", "/email"]
          action: hash
      transforms:
        - {op: rename, path: /user, to: /user_id}
        - {op: drop, paths: [/filler]}
        - {op: timestamp, path: /ts, output_format: epoch_millis}
        - {op: lowercase, path: /nested/region}
        - {op: add_metadata, fields: {offset: /_wharf/offset, ingest_time: /_wharf/ingested}}
YAML
}

# Sum of wharfd's wharf_records_delivered_total (all destinations) from /metrics.
tg_delivered() {
  curl -s --max-time 5 "http://127.0.0.1:$TG_MPORT/metrics" \
    | awk '/^wharf_records_delivered_total/ {s += $NF} END {printf "%.0f\n", s}'
}

tg_storage_ceiling() {
  local run threads dir line
  echo "=== 1 storage ceiling: RocksDB alone with wharfd's options, synced batches of 1,000" \
    "records, ${TG_CEILING_SECONDS} s per run"
  for run in $(seq 1 "$TG_RUNS"); do
    for threads in 4 1; do
      dir=$(mktemp -d /tmp/wharf-bench-ceiling-XXXXXX)
      CLEANUP_DIRS+=("$dir")
      line=$("$BUILD/bench/wharf-storage-ceiling" --dir "$dir/db" --threads "$threads" \
        --seconds "$TG_CEILING_SECONDS" --batch-size 1000 --record-size 200 | tail -1)
      echo "$line run=$run"
      tg_csv_result "storage_ceiling_${threads}t" "$run" "$line" \
        "records_per_s:records/s mb_per_s:MB/s write_p50_ms:ms write_p99_ms:ms"
      rm -rf "$dir"
    done
  done
  tg_summary storage_ceiling_4t
  tg_summary storage_ceiling_1t
}

tg_durable_ingest() {
  local run dir line rc
  echo "=== 2 durable ingest: 4 producers x 1,000 records/request, durability sync, destination" \
    "paused, ${TG_INGEST_SECONDS} s per run"
  for run in $(seq 1 "$TG_RUNS"); do
    dir=$(mktemp -d /tmp/wharf-bench-durable-XXXXXX)
    CLEANUP_DIRS+=("$dir")
    tg_start_wharfd "$dir" sync 0 || { cat "$dir/wharfd.log" >&2; return 1; }
    # Ingest alone: the destination is paused before the first record (records are still
    # validated and batched by the pipeline, which shares the cores, but nothing is delivered).
    "$BUILD/client/wharfctl" --server "127.0.0.1:$TG_PORT" destination pause bench files > /dev/null
    rc=0
    line=$("$BENCH" --server "127.0.0.1:$TG_PORT" --dataset bench --producers 4 --batch-size 1000 \
      --record-size 200 --duration "$TG_INGEST_SECONDS" | tail -1) || rc=$?
    echo "$line run=$run"
    tg_csv_result durable_ingest "$run" "$line" \
      "records_per_s:records/s mb_per_s:MB/s ack_p50_ms:ms ack_p90_ms:ms ack_p99_ms:ms ack_p999_ms:ms"
    tg_csv durable_ingest "$run" peak_rss_kib "$(peak_rss_kib "$TG_PID")" KiB
    tg_stop_wharfd
    rm -rf "$dir"
    if [[ $rc -ne 0 ]]; then echo "bench: wharf-bench failed (exit $rc)" >&2; return 1; fi
  done
  tg_summary durable_ingest
}

tg_end_to_end() {
  local run dir line rc t0 t1 d0 d1 bench_pid sample first rate quarantined
  echo "=== 3 end to end: ingest + contract + file destination, 4 producers at full rate," \
    "${TG_E2E_SECONDS} s per run; rate counted at the destination after ${TG_E2E_WARMUP} s"
  for run in $(seq 1 "$TG_RUNS"); do
    dir=$(mktemp -d /tmp/wharf-bench-e2e-XXXXXX)
    CLEANUP_DIRS+=("$dir")
    if [[ "$TG_CONTRACT" == "contract" ]] && ! tg_start_wharfd "$dir" sync 1; then
      tg_stop_wharfd
      echo "bench: wharfd does not accept datasets[].contract here; END TO END RUNS WITH NO" \
        "CONTRACT. wharfd said: $(tail -n 3 "$dir/wharfd.log" | cut -c1-300)" >&2
      TG_CONTRACT="no contract"
      rm -rf "$dir"; dir=$(mktemp -d /tmp/wharf-bench-e2e-XXXXXX); CLEANUP_DIRS+=("$dir")
    fi
    if [[ "$TG_CONTRACT" != "contract" ]]; then
      tg_start_wharfd "$dir" sync 0 || { cat "$dir/wharfd.log" >&2; return 1; }
    fi
    rc=0
    "$BENCH" --server "127.0.0.1:$TG_PORT" --dataset bench --producers 4 --batch-size 1000 \
      --record-size 200 --duration "$TG_E2E_SECONDS" > "$dir/bench.out" &
    bench_pid=$!
    CLEANUP_PIDS+=("$bench_pid")
    sleep "$TG_E2E_WARMUP"
    t0=$(date +%s.%N); d0=$(tg_delivered)
    wait "$bench_pid" || rc=$?
    t1=$(date +%s.%N); d1=$(tg_delivered)
    line=$(tail -1 "$dir/bench.out")
    if [[ $rc -ne 0 ]]; then cat "$dir/bench.out" >&2; echo "bench: wharf-bench failed" >&2; return 1; fi
    rate=$(awk -v a="$d0" -v b="$d1" -v s="$t0" -v e="$t1" 'BEGIN { printf "%.2f", (b - a) / (e - s) }')
    quarantined=$(curl -s --max-time 5 "http://127.0.0.1:$TG_MPORT/metrics" \
      | awk '/^wharf_records_quarantined_total/ {s += $NF} END {printf "%.0f\n", s}')
    # Whether the contract really ran: its transforms renamed user and dropped filler.
    first=$(find "$dir/out" -name '*.jsonl' -not -name '.*' -print -quit)
    sample=""
    if [[ -n "$first" ]]; then sample=$(head -c 400 "$first"); fi
    if [[ "$TG_CONTRACT" == "contract" ]] && \
       ! { grep -q '"user_id"' <<< "$sample" && ! grep -q '"filler"' <<< "$sample"; }; then
      echo "bench: wharfd accepted the contract but did not apply it (delivered: ${sample:0:200});" \
        "END TO END RUNS WITH NO CONTRACT" >&2
      TG_CONTRACT="no contract"
    fi
    echo "RESULT scenario=end_to_end run=$run contract=\"$TG_CONTRACT\" delivered_records_per_s=$rate" \
      "ingest_records_per_s=$(field "$line" records_per_s) delivered_in_window=$(( d1 - d0 ))" \
      "window_s=$(awk -v s="$t0" -v e="$t1" 'BEGIN { printf "%.2f", e - s }') quarantined=$quarantined"
    tg_csv end_to_end "$run" delivered_records_per_s "$rate" records/s
    tg_csv end_to_end "$run" ingest_records_per_s "$(field "$line" records_per_s)" records/s
    tg_csv end_to_end "$run" peak_rss_kib "$(peak_rss_kib "$TG_PID")" KiB
    tg_csv end_to_end "$run" contract_applied "$([[ "$TG_CONTRACT" == "contract" ]] && echo 1 || echo 0)" \
      bool
    tg_stop_wharfd
    rm -rf "$dir"
    if [[ "$quarantined" != "0" ]]; then
      echo "bench: $quarantined records were quarantined; the contract does not fit the records" >&2
      return 1
    fi
    if (( d1 - d0 <= 0 )); then echo "bench: nothing was delivered in the window" >&2; return 1; fi
  done
  tg_summary end_to_end
}

tg_pg_staging() {
  local tmp dump run t0 t1 t2 load move clean rejected
  echo "=== 4 PostgreSQL staging-table pattern: $TG_PG_RECORDS records, COPY into jsonb staging," \
    "then validate-and-move INSERT ... SELECT"
  tmp=$(mktemp -d /tmp/wharf-bench-pgstage-XXXXXX)
  CLEANUP_DIRS+=("$tmp")
  if [[ -z "$PG_DATA" ]]; then start_postgres; fi
  # The same generator's records (wharf-destination-bench dumps them as COPY text; the fifth
  # column is the whole record, escaped for COPY).
  "$DEST_BENCH" --records "$TG_PG_RECORDS" --record-size 200 --dump-copy-file "$tmp/copy.txt" \
    > /dev/null
  cut -f5 "$tmp/copy.txt" > "$tmp/docs.txt"
  chmod a+r "$tmp/docs.txt"
  cat > "$tmp/move.sql" <<'SQL'
-- Validation comparable to the end-to-end contract: required fields present, amount >= 0, the
-- user pattern, a known region, the timestamp's shape checked before its cast (PostgreSQL 15
-- has no error-tolerant cast), two tags. Valid rows go to the typed table, the others to
-- rejects with a reason, as Wharf's quarantine.
INSERT INTO clean_events (id, ts, user_id, amount, tags, region, score, producer)
SELECT (doc->>'id')::bigint, (doc->>'ts')::timestamptz, doc->>'user', (doc->>'amount')::numeric,
       ARRAY(SELECT jsonb_array_elements_text(doc->'tags')), lower(doc#>>'{nested,region}'),
       (doc#>>'{nested,score}')::int, (doc#>>'{nested,producer}')::int
FROM staging
WHERE doc->>'id' IS NOT NULL AND doc->>'ts' IS NOT NULL AND doc->>'user' IS NOT NULL
  AND doc->>'amount' IS NOT NULL AND jsonb_typeof(doc->'amount') = 'number'
  AND (doc->>'amount')::numeric >= 0
  AND doc->>'user' ~ '^user_[0-9]{4}$'
  AND doc->>'ts' ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$'
  AND doc#>>'{nested,region}' IN ('eu-west-1', 'us-east-1', 'ap-south-1')
  AND jsonb_array_length(doc->'tags') = 2;
INSERT INTO rejects (doc, reason)
SELECT doc, 'validation' FROM staging
WHERE (doc->>'id' IS NOT NULL AND doc->>'ts' IS NOT NULL AND doc->>'user' IS NOT NULL
  AND doc->>'amount' IS NOT NULL AND jsonb_typeof(doc->'amount') = 'number'
  AND (doc->>'amount')::numeric >= 0
  AND doc->>'user' ~ '^user_[0-9]{4}$'
  AND doc->>'ts' ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$'
  AND doc#>>'{nested,region}' IN ('eu-west-1', 'us-east-1', 'ap-south-1')
  AND jsonb_array_length(doc->'tags') = 2) IS NOT TRUE;
TRUNCATE staging;
SQL
  for run in $(seq 1 "$TG_RUNS"); do
    pg_sql -c 'DROP TABLE IF EXISTS staging, clean_events, rejects' \
      -c 'CREATE TABLE staging (doc jsonb NOT NULL)' \
      -c 'CREATE TABLE clean_events (id bigint PRIMARY KEY, ts timestamptz NOT NULL,
            user_id text NOT NULL, amount numeric NOT NULL CHECK (amount >= 0), tags text[],
            region text, score int, producer int)' \
      -c 'CREATE TABLE rejects (doc jsonb, reason text)' -c 'CHECKPOINT'
    # Each step is its own durable transaction (psql autocommit), as a loader commits the load
    # before it moves.
    t0=$(date +%s.%N)
    pg_sql -c "\\copy staging (doc) FROM '$tmp/docs.txt'"
    t1=$(date +%s.%N)
    pg_sql -1 -f "$tmp/move.sql"
    t2=$(date +%s.%N)
    clean=$(pg_sql -c 'SELECT count(*) FROM clean_events')
    rejected=$(pg_sql -c 'SELECT count(*) FROM rejects')
    if [[ "$clean" != "$TG_PG_RECORDS" || "$rejected" != "0" ]]; then
      echo "bench: the move kept $clean rows and rejected $rejected of $TG_PG_RECORDS" >&2
      return 1
    fi
    load=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    move=$(awk -v a="$t1" -v b="$t2" 'BEGIN { printf "%.3f", b - a }')
    echo "RESULT scenario=pg_staging run=$run records=$TG_PG_RECORDS load_s=$load move_s=$move" \
      "records_per_s=$(awk -v n="$TG_PG_RECORDS" -v a="$t0" -v b="$t2" 'BEGIN { printf "%.2f", n / (b - a) }')"
    tg_csv pg_staging "$run" records_per_s \
      "$(awk -v n="$TG_PG_RECORDS" -v a="$t0" -v b="$t2" 'BEGIN { printf "%.2f", n / (b - a) }')" records/s
    tg_csv pg_staging "$run" load_records_per_s \
      "$(awk -v n="$TG_PG_RECORDS" -v s="$load" 'BEGIN { printf "%.2f", n / s }')" records/s
    tg_csv pg_staging "$run" move_records_per_s \
      "$(awk -v n="$TG_PG_RECORDS" -v s="$move" 'BEGIN { printf "%.2f", n / s }')" records/s
  done
  pg_sql -c 'DROP TABLE IF EXISTS staging, clean_events, rejects'
  rm -rf "$tmp"
  tg_summary pg_staging
}

tg_latency() {
  local max
  if [[ -n "${WHARF_TG_LATENCY_RATE:-}" ]]; then
    max=$(( WHARF_TG_LATENCY_RATE * 2 ))
  else
    max=$(tg_median durable_ingest records_per_s)
  fi
  if [[ -z "${max:-}" ]]; then
    echo "bench: latency needs the durable-ingest scenario first (or WHARF_TG_LATENCY_RATE)" >&2
    return 1
  fi
  tg_latency_runs latency 0 "$max" "5 latency under load" "durable ingest's median" \
    "4 producers x 1,000 records/request, file destination"
}

# Scenario 5 read the other way: "the maximum sustained rate" as the end-to-end rate scenario 3
# sustains (records delivered per second with its contract, ingest at full rate), and the load at
# half of it on scenario 3's configuration. Reported beside scenario 5, not instead of it.
tg_latency_e2e() {
  local max
  max=$(tg_median end_to_end delivered_records_per_s)
  if [[ -z "$max" || "$TG_CONTRACT" != "contract" ]]; then
    echo "bench: latency_e2e needs the end-to-end scenario with its contract first" >&2
    return 1
  fi
  tg_latency_runs latency_e2e 1 "$max" "5b latency at 50% of the end-to-end sustained rate" \
    "end to end's median" "contract and file destination as in 3"
}

# Runs wharf-bench at half of MAX against a fresh wharfd (CONTRACT 1: scenario 3's contract) with
# the file destination delivering, TG_RUNS times; writes SCENARIO.csv. TITLE, MAX_NAME and SETUP
# describe the scenario in its header line.
tg_latency_runs() {
  local scenario=$1 contract=$2 max=$3 title=$4 max_name=$5 setup=$6 rate run dir line rc
  rate=$(awk -v m="$max" 'BEGIN { printf "%.0f", m / 2 }')
  echo "=== $title: $rate records/s (50% of $max_name $max), $setup," \
    "${TG_LATENCY_SECONDS} s per run"
  for run in $(seq 1 "$TG_RUNS"); do
    dir=$(mktemp -d /tmp/wharf-bench-latency-XXXXXX)
    CLEANUP_DIRS+=("$dir")
    tg_start_wharfd "$dir" sync "$contract" || { cat "$dir/wharfd.log" >&2; return 1; }
    rc=0
    line=$("$BENCH" --server "127.0.0.1:$TG_PORT" --dataset bench --producers 4 --batch-size 1000 \
      --record-size 200 --duration "$TG_LATENCY_SECONDS" --rate "$rate" --handoff-dir "$dir/out" \
      | tail -1) || rc=$?
    echo "$line run=$run"
    tg_csv_result "$scenario" "$run" "$line" "records_per_s:records/s ack_p50_ms:ms ack_p90_ms:ms
      ack_p99_ms:ms ack_p999_ms:ms handoff_p50_ms:ms handoff_p90_ms:ms handoff_p99_ms:ms
      handoff_p999_ms:ms"
    tg_csv "$scenario" "$run" peak_rss_kib "$(peak_rss_kib "$TG_PID")" KiB
    tg_stop_wharfd
    rm -rf "$dir"
    if [[ $rc -ne 0 ]]; then echo "bench: wharf-bench failed (exit $rc)" >&2; return 1; fi
  done
  tg_summary "$scenario"
}

# PNG plots of the medians (error bars: min and max over the runs).
tg_plots() {
  if ! command -v gnuplot > /dev/null; then
    echo "bench: gnuplot not installed (deploy/install-deps.sh --bench); no plots" >&2
    return 0
  fi
  local data="$TG_OUT/.throughput.dat" lat="$TG_OUT/.latency.dat" s m label
  : > "$data"
  for s in "storage_ceiling_1t:records_per_s:RocksDB alone, 1 thread" \
           "storage_ceiling_4t:records_per_s:RocksDB alone, 4 threads" \
           "durable_ingest:records_per_s:durable ingest (wharfd)" \
           "end_to_end:delivered_records_per_s:end to end, delivered ($TG_CONTRACT)" \
           "pg_staging:records_per_s:PostgreSQL COPY + move"; do
    IFS=: read -r m label <<< "${s#*:}"
    if [[ -n "$(tg_stats "${s%%:*}" "$m")" ]]; then
      echo "\"$label\" $(tg_stats "${s%%:*}" "$m")" >> "$data"
    fi
  done
  : > "$lat"
  for s in p50 p90 p99 p999; do
    echo "$s $(tg_median latency "ack_${s}_ms") $(tg_median latency "handoff_${s}_ms")" \
      "$(tg_median durable_ingest "ack_${s}_ms")" >> "$lat"
  done
  gnuplot <<GP
set terminal pngcairo size 1000,560 noenhanced
set output "$TG_OUT/throughput.png"
set title "Throughput, median of $TG_RUNS run(s) (bars: min..max), $TG_CSV_DATE"
set ylabel "records/s"
set style data histogram
set style histogram errorbars gap 2 lw 1
set style fill solid 0.6 border -1
set yrange [0:*]
set xtics rotate by -15
set bmargin 6
set grid ytics
plot "$data" using 2:3:4:xtic(1) notitle
GP
  gnuplot <<GP
set terminal pngcairo size 900,520 noenhanced
set output "$TG_OUT/latency.png"
set title "Latency percentiles, median of $TG_RUNS run(s), $TG_CSV_DATE"
set ylabel "ms (log scale)"
set logscale y
set key below
set yrange [0.1:*]
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.6 border -1
set grid ytics
plot "$lat" using 2:xtic(1) title "ack, 50% load", "" using 3 title "handoff, 50% load", \
     "" using 4 title "ack, full rate (durable ingest)", \
     10 with lines dt 2 lc rgb "red" title "ack p99 target (10 ms)", \
     250 with lines dt 2 lc rgb "dark-green" title "handoff p99 target (250 ms)"
GP
  rm -f "$data" "$lat"
  echo "plots: $TG_OUT/throughput.png $TG_OUT/latency.png"
}

# The ack (< 10 ms) and handoff (< 250 ms) p99 rows of latency scenario SCENARIO, at LOAD.
tg_latency_targets() {
  local scenario=$1 load=$2 mark=${3:-} ack handoff
  ack=$(tg_median "$scenario" ack_p99_ms)
  handoff=$(tg_median "$scenario" handoff_p99_ms)
  if [[ -n "$ack" ]]; then
    tg_target "ack p99 at $load (ms)$mark" "$ack" "< 10" \
      "$(awk -v v="$ack" 'BEGIN { print (v < 10) ? "yes" : "no" }')"
  fi
  if [[ -n "$handoff" ]]; then
    tg_target "handoff p99 at $load (ms)$mark" "$handoff" "< 250" \
      "$(awk -v v="$handoff" 'BEGIN { print (v < 250) ? "yes" : "no" }')"
  fi
}

tg_targets_table() {
  local ceiling ingest e2e pg ratio
  ceiling=$(tg_median storage_ceiling_4t records_per_s)
  ingest=$(tg_median durable_ingest records_per_s)
  e2e=$(tg_median end_to_end delivered_records_per_s)
  pg=$(tg_median pg_staging records_per_s)
  if [[ -n "$ceiling" && -n "$ingest" ]]; then
    ratio=$(awk -v a="$ingest" -v b="$ceiling" 'BEGIN { printf "%.2f", a / b }')
    tg_target "durable ingest / storage ceiling (4 threads)" "$ratio" ">= 0.5" \
      "$(awk -v r="$ratio" 'BEGIN { print (r >= 0.5) ? "yes" : "no" }')"
  fi
  ceiling=$(tg_median storage_ceiling_1t records_per_s)
  if [[ -n "$ceiling" && -n "$ingest" ]]; then
    ratio=$(awk -v a="$ingest" -v b="$ceiling" 'BEGIN { printf "%.2f", a / b }')
    tg_target "durable ingest / storage ceiling (1 thread)" "$ratio" ">= 0.5" \
      "$(awk -v r="$ratio" 'BEGIN { print (r >= 0.5) ? "yes" : "no" }')"
  fi
  if [[ -n "$e2e" && -n "$pg" ]]; then
    ratio=$(awk -v a="$e2e" -v b="$pg" 'BEGIN { printf "%.2f", a / b }')
    tg_target "end to end [$TG_CONTRACT] / PostgreSQL load+move" "$ratio" ">= 1.0" \
      "$(awk -v r="$ratio" 'BEGIN { print (r >= 1.0) ? "yes" : "no" }')"
  fi
  tg_latency_targets latency "50% of max rate"
  # Scenario 5 read as 50% of the end-to-end sustained rate (tg_latency_e2e): the same bounds,
  # reported on their own rows, marked as that reading.
  tg_latency_targets latency_e2e "50% of end-to-end sustained rate" " [5b]"
  echo "=== TARGETS (medians of $TG_RUNS run(s); ratios against references measured in this run)"
  awk -F'|' 'BEGIN { printf "%-58s %12s %-26s %s\n", "target", "measured", "target", "met" }
             { printf "%-58s %12s %-26s %s\n", $1, $2, $3, $4 }' "$TG_TARGETS"
}

run_targets() {
  if [[ -z "${WHARF_BUILD_DIR:-}" ]]; then
    cmake --build "$BUILD" -j"$(nproc)" --target wharf-storage-ceiling wharfctl > /dev/null
  fi
  TG_CSV_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  if [[ $SMOKE -eq 1 ]]; then
    # Smoke figures are not results: they go to a temporary directory, removed at exit.
    if [[ -n "${WHARF_BENCH_OUT:-}" ]]; then
      TG_OUT=$WHARF_BENCH_OUT
    else
      TG_OUT=$(mktemp -d /tmp/wharf-bench-out-XXXXXX)
      CLEANUP_DIRS+=("$TG_OUT")
    fi
  else
    TG_OUT=${WHARF_BENCH_OUT:-docs/benchmarks}
  fi
  mkdir -p "$TG_OUT"
  local s
  for s in storage_ceiling_1t storage_ceiling_4t durable_ingest end_to_end pg_staging latency \
      latency_e2e; do
    rm -f "$TG_OUT/$s.csv"
  done
  TG_TARGETS=$(mktemp /tmp/wharf-bench-targets-XXXXXX)
  CLEANUP_DIRS+=("$TG_TARGETS")
  # WHARF_TG_SCENARIOS selects scenarios by function suffix (for example "end_to_end latency");
  # latency at 50% needs durable_ingest's median, or WHARF_TG_LATENCY_RATE; latency_e2e needs
  # end_to_end in the same run.
  local only=${WHARF_TG_SCENARIOS:-storage_ceiling durable_ingest end_to_end pg_staging latency \
    latency_e2e}
  for s in storage_ceiling durable_ingest end_to_end pg_staging latency latency_e2e; do
    if [[ " $only " == *" $s "* ]]; then "tg_$s"; fi
  done
  tg_plots
  echo "CSV: $TG_OUT/{storage_ceiling_1t,storage_ceiling_4t,durable_ingest,end_to_end,pg_staging,latency,latency_e2e}.csv"
  tg_targets_table
}

# --- backlog, growth and restart groups ---------------------------------------------------------
#
#   backlog  the destination paused for WHARF_BACKLOG_SECONDS (60) at full ingest, then resumed:
#            wharfd's RSS and the staged bytes every second while the backlog grows on disk, then
#            the time until the backlog is delivered
#   growth   ingest throughput and wharfd CPU per record in windows of WHARF_GROWTH_WINDOW
#            (1,000,000) records as the store grows to WHARF_GROWTH_RECORDS (50,000,000), the
#            destination paused so that every record stays
#   restart  time from starting wharfd until it serves (GetStatus answers "accepting", and the
#            first append is acknowledged) with WHARF_RESTART_RECORDS (10,000,000) staged and not
#            delivered, after SIGTERM and after kill -9 during full ingest (WAL replay)
#
# Each runs WHARF_BENCH_RUNS times (3; --smoke: 1 with small sizes) and prints RESULT lines, a
# SUMMARY (median, min, max) and TARGET lines, writes docs/benchmarks/<group>.csv (--smoke: a
# temporary directory, or WHARF_CSV_DIR) and, with gnuplot, docs/benchmarks/<group>.png.

STATE_RUNS=${WHARF_BENCH_RUNS:-3}
BACKLOG_SECONDS=${WHARF_BACKLOG_SECONDS:-60}
GROWTH_RECORDS=${WHARF_GROWTH_RECORDS:-50000000}
GROWTH_WINDOW=${WHARF_GROWTH_WINDOW:-1000000}
RESTART_RECORDS=${WHARF_RESTART_RECORDS:-10000000}
STATE_CSV_DIR=${WHARF_CSV_DIR:-docs/benchmarks}
if [[ $SMOKE -eq 1 ]]; then
  STATE_RUNS=${WHARF_BENCH_RUNS:-1}
  BACKLOG_SECONDS=${WHARF_BACKLOG_SECONDS:-4}
  GROWTH_RECORDS=${WHARF_GROWTH_RECORDS:-200000}
  GROWTH_WINDOW=${WHARF_GROWTH_WINDOW:-50000}
  RESTART_RECORDS=${WHARF_RESTART_RECORDS:-100000}
  STATE_CSV_DIR=${WHARF_CSV_DIR:-}
fi
for setting in STATE_RUNS:WHARF_BENCH_RUNS BACKLOG_SECONDS:WHARF_BACKLOG_SECONDS \
    GROWTH_RECORDS:WHARF_GROWTH_RECORDS GROWTH_WINDOW:WHARF_GROWTH_WINDOW \
    RESTART_RECORDS:WHARF_RESTART_RECORDS; do
  setting_var=${setting%%:*}
  if ! [[ ${!setting_var} =~ ^[1-9][0-9]{0,11}$ ]]; then
    echo "bench: ${setting#*:} must be a positive integer, got \"${!setting_var}\"" >&2
    exit 2
  fi
done
RSS_TARGET_MIB=256
WHARFCTL="$BUILD/client/wharfctl"
CLK_TCK=$(getconf CLK_TCK)

# Builds wharfctl (the groups above do not need it) and picks the CSV directory.
state_setup() {
  if [[ -n "${STATE_READY:-}" ]]; then return; fi
  STATE_READY=1
  if [[ -z "${WHARF_BUILD_DIR:-}" ]]; then
    cmake --build "$BUILD" -j"$(nproc)" --target wharfctl > /dev/null
  fi
  if [[ -z "$STATE_CSV_DIR" ]]; then
    STATE_CSV_DIR=$(mktemp -d /tmp/wharf-bench-csv-XXXXXX)
    CLEANUP_DIRS+=("$STATE_CSV_DIR")
  fi
  mkdir -p "$STATE_CSV_DIR"
}

now_s() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
rss_mib() { awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo 0; }
hwm_mib() { awk '/^VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo 0; }
# CPU seconds (user + system) wharfd has used so far.
cpu_s() { awk -v t="$CLK_TCK" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$1/stat"; }

# wharfctl against the wharfd of this group ($S_PORT).
ctl() { "$WHARFCTL" --server "127.0.0.1:$S_PORT" "$@"; }
# `wharfctl -o json status` once; empty when wharfd does not answer.
status_json() { ctl -o json --timeout 5 status 2> /dev/null || true; }
# Sum of the JSON fields named $1 (proto3 JSON writes 64-bit integers as strings) on stdin.
json_sum() {
  { grep -o "\"$1\": \"\\?[0-9]*" || true; } | { grep -o '[0-9]*$' || true; } \
    | awk '{ s += $1 } END { printf "%.0f", s }'
}

# Starts wharfd on a new config in $1 (dataset `bench`, 4 partitions, file destination `files`)
# with durability $2 and raw retention $3; sets S_DIR, S_PORT, S_PID. Waits until it answers.
state_start() {
  S_DIR=$1
  S_PORT=$(free_port)
  local mport
  mport=$(free_port)
  write_config "$S_DIR/wharf.yaml" "$S_PORT" "$mport" "$S_DIR/data" "$2" "$S_DIR/out"
  sed -i "s/^  raw: 0s\$/  raw: $3/" "$S_DIR/wharf.yaml"
  state_launch
  wait_serving 60 > /dev/null
}

# Starts wharfd on the existing config in $S_DIR; sets S_PID.
state_launch() {
  "$WHARFD" --config "$S_DIR/wharf.yaml" >> "$S_DIR/wharfd.log" 2>&1 &
  S_PID=$!
  CLEANUP_PIDS+=("$S_PID")
}

# Waits (at most $1 s) until GetStatus answers with accepting=true; prints the time it did.
wait_serving() {
  local deadline json
  deadline=$(awk -v a="$(now_s)" -v b="$1" 'BEGIN { printf "%.3f", a + b }')
  while :; do
    json=$(status_json)
    if grep -q '"accepting": true' <<< "$json"; then now_s; return 0; fi
    if ! kill -0 "$S_PID" 2>/dev/null; then
      echo "bench: wharfd exited:" >&2; tail -20 "$S_DIR/wharfd.log" >&2; return 1
    fi
    if awk -v a="$(now_s)" -v b="$deadline" 'BEGIN { exit !(a > b) }'; then
      echo "bench: wharfd did not serve within $1 s" >&2; return 1
    fi
    sleep 0.02
  done
}

# SIGTERM (graceful: flushes memtables) or SIGKILL to $S_PID, and waits for it.
state_stop() {
  kill "-$1" "$S_PID" 2>/dev/null || true
  wait "$S_PID" 2>/dev/null || true
}

# Waits (at most $1 s) until validation has caught up with ingest: every appended record is
# batched (the pipeline is at rest, so CPU and disk measured next belong to what comes next).
wait_validated() {
  local json next validated _
  for _ in $(seq 1 $(( $1 * 10 ))); do
    json=$(status_json)
    next=$(json_sum nextOffset <<< "$json")
    validated=$(json_sum validatedOffset <<< "$json")
    if [[ -n "$json" && "$next" == "$validated" ]]; then return 0; fi
    sleep 0.1
  done
  echo "bench: validation did not catch up within $1 s ($validated of $next)" >&2
  return 1
}

# wharf-bench at full rate against $S_PORT (4 producers, 1,000 records of ~200 bytes per request).
load() {
  "$BENCH" --server "127.0.0.1:$S_PORT" --dataset bench --producers 4 --batch-size 1000 \
    --record-size 200 "$@"
}

# Prints "SUMMARY ..." with the median, min and max of field $3 over the RESULT lines of file $1
# that contain $2.
summarize() {
  local values
  values=$({ grep "^RESULT scenario=$2 " "$1" || true; } | tr ' ' '\n' | sed -n "s/^$3=//p")
  if [[ -z "$values" ]]; then return; fi
  echo "SUMMARY scenario=$2 $3 median=$(median <<< "$values")" \
    "min=$(sort -g <<< "$values" | head -1) max=$(sort -g <<< "$values" | tail -1)" \
    "runs=$(wc -l <<< "$values")"
}

# Prints "TARGET ... met|MISSED": every value of field $3 in $1's RESULT lines for $2 compared
# with `$4 $5` (lt or gt).
target() {
  local values verdict=met v
  values=$({ grep "^RESULT scenario=$2 " "$1" || true; } | tr ' ' '\n' | sed -n "s/^$3=//p")
  for v in $values; do
    if ! awk -v v="$v" -v l="$5" -v op="$4" 'BEGIN { exit !(op == "lt" ? v < l : v > l) }'; then
      verdict=MISSED
    fi
  done
  echo "TARGET scenario=$2 $3 $4 $5: $verdict (values: $(echo $values))"
}

plot() {
  if command -v gnuplot > /dev/null && [[ -s "$STATE_CSV_DIR/$1.csv" ]]; then
    gnuplot -e "csv='$STATE_CSV_DIR/$1.csv'; png='$STATE_CSV_DIR/$1.png'" "bench/plot_$1.gp" \
      || echo "bench: gnuplot failed for $1 (figures are in the CSV)" >&2
  fi
}

# Scenario 6. Per second: elapsed, phase (down | drain), RSS, staged bytes, backlog, store size.
run_backlog() {
  state_setup
  local results csv run
  results=$(mktemp /tmp/wharf-bench-results-XXXXXX)
  CLEANUP_DIRS+=("$results")
  csv="$STATE_CSV_DIR/backlog.csv"
  echo "run,seconds,phase,rss_mib,staged_bytes,backlog_records,store_bytes" > "$csv"
  echo "=== backlog: destination paused for $BACKLOG_SECONDS s at full ingest, then resumed;" \
    "$STATE_RUNS run(s)"
  for run in $(seq 1 "$STATE_RUNS"); do
    local dir t0 bench_pid bench_out json now rss backlog staged phase=down rss_max_down=0
    local t_resume t_end peak_backlog=0 peak_staged=0 rss_early=""
    dir=$(mktemp -d /tmp/wharf-bench-backlog-XXXXXX)
    CLEANUP_DIRS+=("$dir")
    state_start "$dir" sync 0s
    ctl destination pause bench files > /dev/null
    bench_out="$dir/bench.out"
    t0=$(now_s)
    load --duration "$BACKLOG_SECONDS" > "$bench_out" 2>&1 &
    bench_pid=$!
    while :; do
      if [[ $phase == down ]] && ! kill -0 "$bench_pid" 2>/dev/null; then
        wait "$bench_pid" || { cat "$bench_out" >&2; return 1; }
        ctl destination resume bench files > /dev/null
        t_resume=$(now_s)
        phase=drain
      fi
      json=$(status_json)
      now=$(elapsed "$t0" "$(now_s)")
      rss=$(rss_mib "$S_PID")
      backlog=$(json_sum backlogRecords <<< "$json")
      staged=$(json_sum stagedBytes <<< "$json")
      if [[ -n "$json" ]]; then
        echo "$run,$now,$phase,$rss,$staged,$backlog,$(json_sum storeSizeBytes <<< "$json")" >> "$csv"
      else
        # GetStatus timed out (a loaded machine): RSS only; gnuplot leaves the gap.
        echo "$run,$now,$phase,$rss,,," >> "$csv"
      fi
      if [[ $phase == down ]]; then
        rss_max_down=$(awk -v a="$rss_max_down" -v b="$rss" 'BEGIN { print (b > a ? b : a) }')
        if [[ -z "$rss_early" ]] && awk -v n="$now" 'BEGIN { exit !(n >= 10) }'; then
          rss_early=$rss
        fi
      fi
      (( backlog > peak_backlog )) && peak_backlog=$backlog
      (( staged > peak_staged )) && peak_staged=$staged
      if [[ $phase == drain && -n "$json" && $backlog -eq 0 ]]; then t_end=$(now_s); break; fi
      if awk -v n="$now" -v d="$BACKLOG_SECONDS" 'BEGIN { exit !(n > d + 3600) }'; then
        echo "bench: the backlog did not drain within an hour" >&2; return 1
      fi
      sleep 1
    done
    local line records drain
    line=$(grep '^RESULT ' "$bench_out")
    records=$(field "$line" records)
    drain=$(elapsed "$t_resume" "$t_end")
    echo "RESULT scenario=backlog run=$run down_seconds=$BACKLOG_SECONDS records=$records" \
      "ingest_records_per_s=$(field "$line" records_per_s) peak_backlog_records=$peak_backlog" \
      "peak_staged_bytes=$peak_staged rss_mib_at_10s=${rss_early:-$rss_max_down}" \
      "rss_mib_max_while_down=$rss_max_down drain_seconds=$drain" \
      "drain_records_per_s=$(awk -v n="$peak_backlog" -v s="$drain" 'BEGIN { printf "%.0f", n / s }')" \
      "peak_rss_mib=$(hwm_mib "$S_PID")" | tee -a "$results"
    state_stop TERM
    rm -rf "$dir"
  done
  local key
  for key in ingest_records_per_s peak_backlog_records drain_seconds drain_records_per_s \
      rss_mib_max_while_down peak_rss_mib; do
    summarize "$results" backlog "$key"
  done
  target "$results" backlog peak_rss_mib lt "$RSS_TARGET_MIB"
  plot backlog
}

# Scenario 7. Per window: records in the store, ingest records/s, wharfd CPU per record (ingest
# plus validation and batching: each window waits for validation to catch up), RSS, store size.
run_growth() {
  state_setup
  local results csv run windows
  results=$(mktemp /tmp/wharf-bench-results-XXXXXX)
  CLEANUP_DIRS+=("$results")
  csv="$STATE_CSV_DIR/growth.csv"
  windows=$(( GROWTH_RECORDS / GROWTH_WINDOW ))
  if (( windows < 2 )); then echo "bench: growth needs at least 2 windows" >&2; return 1; fi
  echo "run,window,records_stored,records_per_s,cpu_us_per_record,rss_mib,store_bytes" > "$csv"
  echo "=== growth: $windows windows of $GROWTH_WINDOW records, destination paused (every record" \
    "stays); $STATE_RUNS run(s)"
  for run in $(seq 1 "$STATE_RUNS"); do
    local dir w line cpu0 cpu1 rate cpu_us first_rate="" first_cpu="" t0 json
    dir=$(mktemp -d /tmp/wharf-bench-growth-XXXXXX)
    CLEANUP_DIRS+=("$dir")
    state_start "$dir" sync 30d
    ctl destination pause bench files > /dev/null
    t0=$(now_s)
    for w in $(seq 1 "$windows"); do
      cpu0=$(cpu_s "$S_PID")
      line=$(load --count "$GROWTH_WINDOW" | grep '^RESULT ')
      wait_validated 600
      cpu1=$(cpu_s "$S_PID")
      rate=$(field "$line" records_per_s)
      cpu_us=$(awk -v a="$cpu0" -v b="$cpu1" -v n="$GROWTH_WINDOW" \
        'BEGIN { printf "%.2f", (b - a) * 1e6 / n }')
      json=$(status_json)
      echo "$run,$w,$(( w * GROWTH_WINDOW )),$rate,$cpu_us,$(rss_mib "$S_PID")," \
        "$(json_sum storeSizeBytes <<< "$json")" | tr -d ' ' >> "$csv"
      if [[ -z "$first_rate" ]]; then first_rate=$rate; first_cpu=$cpu_us; fi
    done
    echo "RESULT scenario=growth run=$run records=$(( windows * GROWTH_WINDOW ))" \
      "window=$GROWTH_WINDOW first_records_per_s=$first_rate last_records_per_s=$rate" \
      "last_vs_first=$(awk -v a="$first_rate" -v b="$rate" 'BEGIN { printf "%.3f", b / a }')" \
      "first_cpu_us_per_record=$first_cpu last_cpu_us_per_record=$cpu_us" \
      "cpu_last_vs_first=$(awk -v a="$first_cpu" -v b="$cpu_us" 'BEGIN { printf "%.3f", b / a }')" \
      "store_bytes=$(json_sum storeSizeBytes <<< "$json") seconds=$(elapsed "$t0" "$(now_s)")" \
      "peak_rss_mib=$(hwm_mib "$S_PID")" | tee -a "$results"
    state_stop TERM
    rm -rf "$dir"
  done
  local key
  for key in first_records_per_s last_records_per_s last_vs_first first_cpu_us_per_record \
      last_cpu_us_per_record cpu_last_vs_first peak_rss_mib; do
    summarize "$results" growth "$key"
  done
  target "$results" growth last_vs_first gt 0.9
  target "$results" growth peak_rss_mib lt "$RSS_TARGET_MIB"
  plot growth
}

# One restart of the wharfd in $S_DIR, timed from its exec: sets R_LISTEN, R_ACK and R_STATUS,
# the seconds until its gRPC port accepts connections (wharfd listens only once the store is open
# and the pipeline started), until a first append of 1,000 records is acknowledged (sent as soon
# as the port accepts: a client started earlier would add its own reconnect backoff), and until
# GetStatus answers accepting=true.
timed_restart() {
  local t0 t_listen t_ack t_status
  t0=$(now_s)
  state_launch
  until (exec 3<>/dev/tcp/127.0.0.1/"$S_PORT") 2>/dev/null; do
    if ! kill -0 "$S_PID" 2>/dev/null; then
      echo "bench: wharfd exited:" >&2; tail -20 "$S_DIR/wharfd.log" >&2; return 1
    fi
    sleep 0.01
  done
  t_listen=$(now_s)
  if ! "$BENCH" --server "127.0.0.1:$S_PORT" --dataset bench --producers 1 --batch-size 1000 \
      --count 1000 > "$S_DIR/ack.out" 2>&1; then
    echo "bench: the first append failed:" >&2
    cat "$S_DIR/ack.out" >&2
    return 1
  fi
  t_ack=$(now_s)
  t_status=$(wait_serving 300)
  R_LISTEN=$(elapsed "$t0" "$t_listen")
  R_ACK=$(elapsed "$t0" "$t_ack")
  R_STATUS=$(elapsed "$t0" "$t_status")
}

# Scenario 8. Staged once (wharfd + wharf-bench, destination paused), then restarted after
# SIGTERM and after kill -9 in the middle of full-rate ingest, WHARF_BENCH_RUNS times each.
run_restart() {
  state_setup
  local results csv dir run mode staged t0
  results=$(mktemp /tmp/wharf-bench-results-XXXXXX)
  CLEANUP_DIRS+=("$results")
  csv="$STATE_CSV_DIR/restart.csv"
  echo "run,mode,records_staged,store_bytes,listen_seconds,ack_seconds,status_seconds,rss_mib" \
    > "$csv"
  dir=$(mktemp -d /tmp/wharf-bench-restart-XXXXXX)
  CLEANUP_DIRS+=("$dir")
  state_start "$dir" sync 30d
  ctl destination pause bench files > /dev/null
  echo "=== restart: staging $RESTART_RECORDS records (destination paused)"
  t0=$(now_s)
  load --count "$RESTART_RECORDS" | grep '^RESULT '
  wait_validated 1800
  echo "staged in $(elapsed "$t0" "$(now_s)") s"
  for run in $(seq 1 "$STATE_RUNS"); do
    for mode in TERM KILL; do
      if [[ $mode == KILL ]]; then
        # Crash during full-rate ingest: the WAL holds whatever the memtables had not flushed.
        load --duration 30 > /dev/null 2>&1 &
        local bench_pid=$!
        sleep 3
        state_stop KILL
        # The load generator would retry into the restarted wharfd: stop it too.
        kill -KILL "$bench_pid" 2>/dev/null || true
        wait "$bench_pid" 2>/dev/null || true
      else
        state_stop TERM
      fi
      timed_restart
      local json
      json=$(status_json)
      staged=$(json_sum recordsIngested <<< "$json")
      echo "$run,$mode,$staged,$(json_sum storeSizeBytes <<< "$json"),$R_LISTEN,$R_ACK,$R_STATUS," \
        "$(rss_mib "$S_PID")" | tr -d ' ' >> "$csv"
      echo "RESULT scenario=restart run=$run signal=$mode records_staged=$staged" \
        "store_bytes=$(json_sum storeSizeBytes <<< "$json") listen_seconds=$R_LISTEN" \
        "ack_seconds=$R_ACK status_seconds=$R_STATUS rss_mib=$(rss_mib "$S_PID")" | tee -a "$results"
    done
  done
  state_stop TERM
  rm -rf "$dir"
  local mode key
  for mode in TERM KILL; do
    for key in listen_seconds ack_seconds status_seconds; do
      summarize <(grep " signal=$mode " "$results") restart "$key" | sed "s/ $key / signal=$mode $key /"
    done
  done
  target "$results" restart ack_seconds lt 3
}

for group in "${GROUPS_TO_RUN[@]}"; do
  case "$group" in
    ingest) run_ingest ;;
    destinations) run_destinations ;;
    contract) run_contract ;;
    targets) run_targets ;;
    backlog) run_backlog ;;
    growth) run_growth ;;
    restart) run_restart ;;
  esac
done
