#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "storage/staging_store.h"
#include "wharf/v1/contract.pb.h"

namespace wharf::server {

// The whole of wharfd's configuration, as read from one YAML file. Every field documents its
// YAML key and default. Sizes accept integers (bytes) or strings with a unit ("64MiB", "1GB",
// "512KiB", "10B"); durations accept strings with a unit ("250ms", "5s", "10m", "24h", "7d").
//
// Thread safety: a plain value; read-only after LoadConfig.

// `delivery`, and `retry` of a destination
struct DeliveryConfig {
  std::chrono::milliseconds initial_backoff{100};  // `initial_backoff`, 1ms..1h
  std::chrono::milliseconds max_backoff{30000};    // `max_backoff`, >= initial_backoff, <= 24h
  double multiplier = 2.0;                         // `multiplier`, 1.0..10.0
  double jitter = 0.2;                             // `jitter`, 0.0..1.0 (fraction of the delay)
  // `down_after`: consecutive failures after which the destination's circuit opens (state
  // OPEN): attempts are then only made as probes. Default 5, 1..1000000.
  uint32_t down_after = 5;
  // `probe_interval`: time between probes while the circuit is open. Default 30s, 100ms..24h.
  std::chrono::milliseconds probe_interval{30000};

  bool operator==(const DeliveryConfig&) const = default;
};

// `roll` of a file destination: present = rolling mode (files appended to until they roll).
struct RollConfig {
  uint64_t max_bytes = 64ull << 20;  // `max_bytes`, size; 0: no size limit. Default 64MiB.
  // `max_age`, a duration in whole seconds; 0: no age limit. Default 5m. Not both 0.
  std::chrono::seconds max_age{300};

  bool operator==(const RollConfig&) const = default;
};

// `columns[]` of a postgres destination.
struct PostgresColumnConfig {
  std::string name;           // `name`, required: the target column, exactly as written
  std::string source;         // `source`: JSON pointer, "" (whole record) or $metadata. Default ""
  std::string type = "text";  // `type`: text, smallint, integer, bigint, numeric, boolean,
                              // timestamptz, jsonb or double. Default text.

  bool operator==(const PostgresColumnConfig&) const = default;
};

// `datasets[].destinations[]`. Keys of another type than `type` are refused.
struct DestinationConfig {
  std::string name;  // `name`, required, [A-Za-z0-9_.-]{1,64}, unique within the dataset
  std::string type;  // `type`, required: "file", "postgres", "http" or "wharf"
  // type: file
  std::string file_directory;  // `directory`, required for file; created if missing
  // `retry` (every type): this destination's retry policy. Absent: nullopt, the `delivery`
  // section applies. Present: the `delivery` section with the keys given here replacing its.
  std::optional<DeliveryConfig> retry;

  // type: file, rolling mode (RollingFileDestination) when `roll` is present.
  std::optional<RollConfig> roll;  // `roll`
  std::string path_template;       // `path_template`, only with roll; "": the default template
  bool file_gzip = false;          // `gzip`, only with roll. Default false.

  // type: postgres. Secrets are not held here: only where to read them from at start.
  std::string pg_conninfo;       // `conninfo`, required; must not contain a password
  std::string pg_password_file;  // `password_file`; "" none. At most one of file and env.
  std::string pg_password_env;   // `password_env`: environment variable name; "" none
  std::string pg_table;          // `table`, required
  bool pg_create_table = false;  // `create_table`. Default false.
  std::string pg_ledger_table = "wharf_batches";          // `ledger_table`. Default wharf_batches.
  std::vector<PostgresColumnConfig> pg_columns;           // `columns`; empty: one jsonb "record"
  std::chrono::milliseconds pg_connect_timeout{5000};     // `connect_timeout`, 1s..10m
  std::chrono::milliseconds pg_statement_timeout{30000};  // `statement_timeout`, 1ms..24h
  uint32_t pg_max_connections = 4;                        // `max_connections`, 1..1024

  // type: http
  std::string http_url;                // `url`, required: http:// or https://
  std::string http_format = "ndjson";  // `format`: ndjson or json_array. Default ndjson.
  bool http_gzip = false;              // `gzip`. Default false.
  // `headers`: map of extra request header fields, in file order. Default none.
  std::vector<std::pair<std::string, std::string>> http_headers;
  std::string http_bearer_token_file;                     // `bearer_token_file`; "" none
  std::chrono::milliseconds http_connect_timeout{5000};   // `connect_timeout`, 1ms..10m
  std::chrono::milliseconds http_request_timeout{30000};  // `request_timeout`, 1ms..1h
  // `tls`: {ca_file, insecure_skip_verify, client_cert_file, client_key_file}. Default: system
  // trust store, verification on, no client certificate.
  std::string http_ca_file;
  bool http_insecure_skip_verify = false;
  std::string http_client_cert_file;
  std::string http_client_key_file;

  // type: wharf (forward to a central wharfd)
  std::string forward_target;                            // `target`, required: host:port
  std::string forward_dataset;                           // `dataset`; "": the source dataset's name
  std::chrono::milliseconds forward_rpc_timeout{30000};  // `rpc_timeout`, 100ms..1h
  uint64_t forward_max_request_bytes = 4ull << 20;       // `max_request_bytes`, 1KiB..256MiB

  // Field by field (ApplyContract compares a spec document's destinations with the running
  // ones).
  bool operator==(const DestinationConfig&) const = default;
};

// `datasets[]`
struct DatasetConfig {
  std::string name;         // `name`, required, [A-Za-z0-9_.-]{1,64}, unique
  uint32_t partitions = 4;  // `partitions`, 1..1024
  // `format`: "json" (default: payloads must be JSON objects; others go to quarantine as
  // PARSE_ERROR) or "raw" (payload bytes are passed through unparsed).
  std::string format = "json";
  uint64_t quota_bytes = 0;                     // `quota`, size; 0 or absent: no quota
  std::vector<DestinationConfig> destinations;  // `destinations`, at least one
  // `quarantine.quota`, size: while the quarantine holds more, validation of the dataset waits.
  // 0 or absent: no limit.
  uint64_t quarantine_quota_bytes = 0;
  // `quarantine.retention`, duration: entries older are deleted. 0 or absent: kept forever.
  std::chrono::milliseconds quarantine_retention{0};
  // `contract`: the dataset's data contract (JSON Schema, rules, PII detectors, transforms; the
  // format is in docs/CONTRACTS.md). nullopt when absent: records are only checked to be JSON
  // objects (format json) or passed through (format raw; a contract needs format json).
  std::optional<wharf::v1::ContractSpec> contract = std::nullopt;
  // The YAML text this dataset was read from: the whole spec file for a `spec_file` entry, the
  // `datasets[]` entry's lines for an inline one. Stored with each contract version so that
  // `wharfctl get contract` shows what was applied. Not a YAML key.
  std::string source_yaml = "";
  // `spec_file`: a `datasets[]` entry may consist of this key alone, naming a dataset spec file
  // (one YAML document with the keys of a `datasets[]` entry, see ParseDatasetSpec) that is read
  // in its place. A relative path is relative to the config file's directory. Here: the path it
  // was read from, "" for an inline entry.
  std::string spec_file = "";
};

// `batching`
struct BatchingConfig {
  uint32_t max_records = 1000;            // `max_records`, 1..1000000
  uint64_t max_bytes = 4ull << 20;        // `max_bytes`, size, 1KiB..256MiB
  std::chrono::milliseconds linger{200};  // `linger`, duration, 0..1h
};

// `retention`
struct RetentionConfig {
  // `raw`: how long raw records are kept after delivery. Default 24h. 0 deletes right after
  // delivery.
  std::chrono::milliseconds raw{std::chrono::hours(24)};
  // `interval`: how often retention runs. Default 10s, 100ms..1h.
  std::chrono::milliseconds interval{10000};
};

// `limits`
struct LimitsConfig {
  uint64_t max_message_bytes = 16ull << 20;  // `max_message_bytes`, size, 1KiB..256MiB
  uint32_t max_records_per_request = 10000;  // `max_records_per_request`, 1..1000000
  uint64_t max_record_bytes = 1ull << 20;    // `max_record_bytes`, size, 1B..max_message_bytes
  uint32_t max_inflight_per_stream = 64;     // `max_inflight_per_stream`, 1..10000
  // `max_inflight_bytes`, size: request bytes held across all streams until their records are
  // durable. Default 64MiB: far above what keeps the group commit busy (4 producers with 8
  // requests of 1,000 records in flight hold 6.4 MB), and, at about 1.6 times that in decoded
  // requests, small enough that wharfd stays under 256 MiB of RSS with RocksDB's 96 MiB
  // (docs/BENCHMARKS.md, "Memory"). Beyond it: RESOURCE_EXHAUSTED with a retry delay.
  uint64_t max_inflight_bytes = 64ull << 20;
  // `keepalive_time`, duration 1s..24h: wharfd pings a connection that was quiet this long, and
  // `keepalive_timeout`, duration 1s..10m: closes it when the ping is not answered within that
  // time, ending its streams. Why: a producer whose host died or whose network was cut sends
  // neither data nor FIN; without pings its streams (and their unwritten acks) would stay open
  // until TCP gives up, hours later. Defaults 60s and 20s: a dead peer is noticed within about
  // 80 s, at the cost of one ping per idle connection per minute.
  // `max_grpc_memory`, size, 8MiB..: the memory gRPC may use for its transport buffers (a
  // grpc::ResourceQuota); beyond it, gRPC shrinks flow-control windows, so that streams whose
  // requests are not being read (a client that reads no acks) cannot park data in wharfd without
  // bound. Default 128MiB: what gRPC used for 1,000 concurrent streams plus headroom
  // (docs/reliability/network_and_abuse.md).
  uint64_t max_grpc_memory = 128ull << 20;
  // `stream_window`, size, 64KiB..16MiB: the HTTP/2 receive window wharfd grants each stream,
  // fixed (gRPC's BDP probing, which grows windows with the measured bandwidth, is off). Why: a
  // paused stream (its client reads no acks) holds up to its window in gRPC's buffers, so with
  // BDP probing each such stream parked several MiB and memory grew with the number of
  // misbehaving clients (466 MiB with 50; docs/reliability/network_and_abuse.md). Fixed, memory
  // per paused stream is bounded by max_inflight_per_stream requests plus this window. Default
  // 256KiB: on loopback and LAN producers keep their throughput; one stream across a link of
  // round-trip time R sends at most stream_window / R (256KiB / 50 ms = 5 MiB/s), so raise it
  // for producers far away. Safe: flow control only delays what a client sends.
  uint64_t stream_window = 256ull << 10;
  std::chrono::milliseconds keepalive_time{60000};
  std::chrono::milliseconds keepalive_timeout{20000};
};

// `log`
struct LogConfig {
  std::string level = "info";   // `level`: trace, debug, info, warn, error, critical, off
  std::string format = "text";  // `format`: text or json
};

struct Config {
  std::string path;  // the file it was read from (not a YAML key)

  // `node_id`: this node's stable id, [A-Za-z0-9_.-]{1,64} (names the producers a wharf
  // destination forwards as). Default: the host name.
  std::string node_id;

  std::string listen = "127.0.0.1:7400";          // `listen`: ingest and control gRPC
  std::string metrics_listen = "127.0.0.1:9464";  // `metrics_listen`: Prometheus /metrics
  std::string data_dir = "/var/lib/wharf";        // `data_dir`
  // `durability`: "sync" (default) or "async".
  storage::Durability durability = storage::Durability::kSync;
  uint64_t min_free_bytes = 512ull << 20;  // `min_free_disk`, size
  // `shutdown_timeout`: bound on a graceful stop. Default 30s, 1s..10m.
  std::chrono::milliseconds shutdown_timeout{30000};
  uint32_t pipeline_threads = 2;  // `pipeline_threads`, 1..64
  // `hash_key_file`: a file holding the HMAC-SHA256 key of PII "hash" actions and hash
  // transforms (trailing whitespace trimmed; at least 16 bytes). Read at start; never logged.
  // "" (default): no key, and a contract that hashes is refused.
  std::string hash_key_file;

  BatchingConfig batching;              // `batching`
  RetentionConfig retention;            // `retention`
  DeliveryConfig delivery;              // `delivery`
  LimitsConfig limits;                  // `limits`
  LogConfig log;                        // `log`
  std::vector<DatasetConfig> datasets;  // `datasets`, at least one
};

// Reads and validates the file. Every error names the file, the line and the key:
//   "wharf.yaml:12: datasets[0].partitions: expected an integer from 1 to 1024, got \"x\""
// Unknown keys, wrong types, impossible values, duplicate names and missing required fields are
// errors (INVALID_ARGUMENT); an unreadable file is NOT_FOUND / PERMISSION_DENIED per errno.
absl::StatusOr<Config> LoadConfig(const std::string& path);

// Same, from text (`name` stands for the file name in messages). For tests and --check-config.
// `spec_file` entries are read relative to the directory of `name`.
absl::StatusOr<Config> ParseConfig(const std::string& yaml_text, const std::string& name);

// Parses one dataset spec: a single YAML document with the keys of a `datasets[]` entry (name,
// partitions, format, quota, destinations, quarantine, contract), checked as strictly and with
// errors in the same form as LoadConfig's ("orders.yaml:7: contract.rules[1].expr: ..."), except
// that `spec_file` is not allowed inside it. `name` stands for the file name in messages.
// Delivery defaults for destinations' `retry` are `delivery` (the config's `delivery` section).
// This checks the structure only: whether the contract's schema, rules and transforms compile is
// decided by pipeline::contract::Contract::Compile (ContractRegistry::Apply), which lists every
// error at once. Sets source_yaml to `yaml_text`.
absl::StatusOr<DatasetConfig> ParseDatasetSpec(const std::string& yaml_text,
                                               const std::string& name,
                                               const DeliveryConfig& delivery = DeliveryConfig());

}  // namespace wharf::server
