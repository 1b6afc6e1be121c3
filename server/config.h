#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "storage/staging_store.h"

namespace wharf::server {

// The whole of wharfd's configuration, as read from one YAML file. Every field documents its
// YAML key and default. Sizes accept integers (bytes) or strings with a unit ("64MiB", "1GB",
// "512KiB", "10B"); durations accept strings with a unit ("250ms", "5s", "10m", "24h", "7d").
//
// Thread safety: a plain value; read-only after LoadConfig.

// `datasets[].destinations[]`
struct DestinationConfig {
  std::string name;  // `name`, required, [A-Za-z0-9_.-]{1,64}, unique within the dataset
  std::string type;  // `type`, required; "file" today
  // type: file
  std::string file_directory;  // `directory`, required for file; created if missing
  // Anything else is type-specific and goes into later issues' fields.
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

// `delivery`
struct DeliveryConfig {
  std::chrono::milliseconds initial_backoff{100};  // `initial_backoff`, 1ms..1h
  std::chrono::milliseconds max_backoff{30000};    // `max_backoff`, >= initial_backoff, <= 24h
  double multiplier = 2.0;                         // `multiplier`, 1.0..10.0
  double jitter = 0.2;                             // `jitter`, 0.0..1.0 (fraction of the delay)
  // `down_after`: consecutive failures after which the destination is reported DOWN. Default 5.
  uint32_t down_after = 5;
};

// `limits`
struct LimitsConfig {
  uint64_t max_message_bytes = 16ull << 20;    // `max_message_bytes`, size, 1KiB..256MiB
  uint32_t max_records_per_request = 10000;    // `max_records_per_request`, 1..1000000
  uint64_t max_record_bytes = 1ull << 20;      // `max_record_bytes`, size, 1B..max_message_bytes
  uint32_t max_inflight_per_stream = 64;       // `max_inflight_per_stream`, 1..10000
  uint64_t max_inflight_bytes = 256ull << 20;  // `max_inflight_bytes`, size (all streams)
};

// `log`
struct LogConfig {
  std::string level = "info";   // `level`: trace, debug, info, warn, error, critical, off
  std::string format = "text";  // `format`: text or json
};

struct Config {
  std::string path;  // the file it was read from (not a YAML key)

  std::string listen = "127.0.0.1:7400";          // `listen`: ingest and control gRPC
  std::string metrics_listen = "127.0.0.1:9464";  // `metrics_listen`: Prometheus /metrics
  std::string data_dir = "/var/lib/wharf";        // `data_dir`
  // `durability`: "sync" (default) or "async".
  storage::Durability durability = storage::Durability::kSync;
  uint64_t min_free_bytes = 512ull << 20;  // `min_free_disk`, size
  // `shutdown_timeout`: bound on a graceful stop. Default 30s, 1s..10m.
  std::chrono::milliseconds shutdown_timeout{30000};
  uint32_t pipeline_threads = 2;  // `pipeline_threads`, 1..64

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
absl::StatusOr<Config> ParseConfig(const std::string& yaml_text, const std::string& name);

}  // namespace wharf::server
