# Sourced by bench/run.sh, bench/profile_ingest.sh and bench/ab_ingest.sh (from the repository
# root): the wharfd config the benchmarks run with, in one place.

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
