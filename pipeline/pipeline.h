#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "pipeline/destination.h"
#include "pipeline/record_processor.h"
#include "storage/staging_store.h"
#include "wharf/v1/control.pb.h"

namespace prometheus {
class Registry;
}

namespace wharf::pipeline {

struct BatchingOptions {
  // A batch is cut when it holds this many records... Default 1000.
  uint32_t max_records = 1000;
  // ...or this many stored bytes... Default 4 MiB.
  uint64_t max_bytes = 4ull << 20;
  // ...or when its oldest record has waited this long. Default 200 ms: bounds handoff latency
  // at low rates while letting high rates fill batches.
  std::chrono::milliseconds linger{200};
};

struct RetentionOptions {
  // Raw records are kept this long after they were delivered to every destination. Default 24h.
  std::chrono::milliseconds raw{std::chrono::hours(24)};
  // How often retention runs. Default 10 s.
  std::chrono::milliseconds interval{10000};
  // Raw records deleted per partition per pass, to bound the time of one pass. Default 200000.
  uint32_t max_raw_deletes_per_pass = 200000;
};

struct RetryOptions {
  std::chrono::milliseconds initial_backoff{100};  // first delay after a failure. Default 100ms.
  std::chrono::milliseconds max_backoff{30000};    // cap of the delay. Default 30 s.
  double multiplier = 2.0;                         // growth per failure. Default 2.
  double jitter = 0.2;  // the delay is randomised by +/- this fraction. Default 0.2.
  // Consecutive failures that open the circuit (state OPEN): attempts are then only made as
  // periodic probes, every `probe_interval`; a successful probe closes it. Default 5.
  uint32_t down_after = 5;
  // Time between probes while the circuit is open. Default 30 s.
  std::chrono::milliseconds probe_interval{30000};
};

struct DestinationSpec {
  std::string name;
  std::unique_ptr<Destination> destination;
  // This destination's retry policy; unset: PipelineOptions::retry. There is deliberately no
  // retry limit: a destination that keeps failing holds its backlog, it never drops it.
  std::optional<RetryOptions> retry;
};

struct DatasetPipelineOptions {
  std::string name;
  std::shared_ptr<const RecordProcessor> processor;  // required; replaceable via SetProcessor()
  std::vector<DestinationSpec> destinations;         // at least one
  // Quarantine of the dataset: while it holds more than quota_bytes (0: no limit), validation
  // of the dataset waits (records stay in the landing zone, ingest continues until the staging
  // quota); entries older than `retention` (0: forever) are deleted.
  uint64_t quarantine_quota_bytes = 0;
  std::chrono::milliseconds quarantine_retention{0};
};

struct PipelineOptions {
  // Threads validating and cutting batches (each destination also gets a thread of its own).
  // Default 2.
  uint32_t threads = 2;
  BatchingOptions batching;
  RetentionOptions retention;
  RetryOptions retry;
  std::vector<DatasetPipelineOptions> datasets;
  prometheus::Registry* metrics_registry = nullptr;  // may be null
};

// The processing half of wharfd: picks up raw records past each partition's validation cursor,
// runs them through the dataset's RecordProcessor, commits batches (with quarantine entries and
// the cursor advance in one atomic write), delivers committed batches to every destination in
// per-partition offset order, and runs retention.
//
// Threads: a Boost.Asio thread pool of `threads` for validation and retention (one strand per
// partition, so a partition is processed by one thread at a time, in order); one thread per
// (dataset, destination) for delivery, so a slow or failing destination never holds up another
// destination, validation or ingest, with a pool of min(partitions, 4) threads on which it
// delivers partitions side by side (each partition in offset order, one batch at a time). The
// threads are named wharf-validate, wharf-deliver and wharf-deliver-p (as `top -H` shows them).
//
// Thread safety: OnAppend() and the status methods may be called from any thread. Start() and
// Stop() from one controlling thread.
class Pipeline {
 public:
  static absl::StatusOr<std::unique_ptr<Pipeline>> Create(storage::StagingStore* store,
                                                          PipelineOptions options);
  virtual ~Pipeline() = default;

  // Starts the threads and schedules every partition once (to pick up what a previous run left).
  virtual absl::Status Start() = 0;
  // Stops scheduling work, lets running steps and deliveries finish, joins all threads.
  // Idempotent.
  virtual void Stop() = 0;

  // Tells the pipeline that a partition's raw records now end at next_offset. Never blocks:
  // called on the store's writer thread.
  virtual void OnAppend(const std::string& dataset, uint32_t partition, uint64_t next_offset) = 0;

  // Delivery status of a dataset's destinations (name, type, state, counters, backlog, age of
  // the oldest undelivered record, last error, next attempt).
  virtual std::vector<wharf::v1::DestinationStatus> DestinationStatuses(
      const std::string& dataset) const = 0;

  // Runs one retention pass now (tests; the pipeline also runs it every interval).
  virtual void RunRetentionNow() = 0;

  // Replaces the dataset's record processor (a new contract version). Records processed after
  // the call use it; a step already running finishes with the old one. Order and exactly-once
  // are unaffected: the cursor, not the processor, decides what is processed.
  virtual absl::Status SetProcessor(const std::string& dataset,
                                    std::shared_ptr<const RecordProcessor> processor) = 0;
  virtual std::shared_ptr<const RecordProcessor> GetProcessor(const std::string& dataset) const = 0;

  // Pauses or resumes delivery to one destination. Persisted in the store: a paused destination
  // stays paused across restarts. NOT_FOUND for an unknown dataset or destination.
  virtual absl::Status SetPaused(const std::string& dataset, const std::string& destination,
                                 bool paused) = 0;
};

}  // namespace wharf::pipeline
