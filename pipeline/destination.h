#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "wharf/v1/record.pb.h"

namespace wharf::pipeline {

// Where committed batches go. One instance per (dataset, destination) of the config.
//
// Contract:
//  - Deliver() must be idempotent by batch id: the pipeline advances its delivery cursor only
//    after Deliver() returned OK, so after a crash in between the same batch is delivered again,
//    and an exactly-once destination must then not hold its records twice.
//  - Batches of one partition are delivered in offset order, one at a time.
//  - Deliver() may block (bounded by the destination's own timeouts); it runs on the
//    destination's own delivery thread, never on an ingest or validation thread.
//  - A returned error is retried with backoff; nothing is dropped. UNAVAILABLE,
//    DEADLINE_EXCEEDED and RESOURCE_EXHAUSTED mean "try again"; other codes are also retried
//    today (content rejection handling comes with the destinations issue).
//
// Thread safety: Deliver() may be called concurrently for batches of different partitions.
class Destination {
 public:
  virtual ~Destination() = default;

  // Short type name for status and metrics ("file", "postgres", ...).
  virtual std::string_view type() const = 0;

  virtual absl::Status Deliver(const wharf::v1::StoredBatch& batch) = 0;
};

}  // namespace wharf::pipeline
