#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "wharf/v1/record.pb.h"

namespace wharf::pipeline {

// What a destination tells the pipeline about one delivery attempt, besides its status.
struct DeliveryReport {
  // Destination-side reference of the delivered batch (file name, transaction id, ...), for
  // lineage. Empty when the destination has none.
  std::string commit_id;
  // On a retryable error: the delay the destination asked for (HTTP Retry-After). Zero: use the
  // pipeline's own backoff.
  std::chrono::milliseconds retry_after{0};
  // True when the batch had been delivered before (found in the destination's ledger).
  bool already_delivered = false;
};

// Where committed batches go. One instance per (dataset, destination) of the config.
//
// Contract:
//  - Deliver() must be idempotent by batch id: the pipeline advances its delivery cursor only
//    after Deliver() returned OK, so after a crash in between the same batch is delivered again,
//    and an exactly-once destination must then not hold its records twice.
//  - The pipeline may deliver a sub-batch: a StoredBatch whose records are a subset of a
//    committed batch, with its own batch_id ("<batch id>/<first offset>-<last offset>") and
//    first/last offsets. Sub-batch ids are derived only from the committed batch and the offsets,
//    so a retried split produces the same ids.
//  - Batches of one partition are delivered in offset order, one at a time.
//  - Deliver() may block (bounded by the destination's own timeouts); it runs on a delivery
//    thread, never on an ingest or validation thread.
//  - Status codes:
//      OK                  delivered (or found delivered before).
//      INVALID_ARGUMENT    the destination refused the batch because of its content (constraint
//                          or type error, HTTP 400/422). The pipeline splits the batch until the
//                          refused records are isolated and quarantines them as
//                          DESTINATION_REJECTED with this status's message. Never use it for
//                          transient or configuration errors: it moves records out of the flow.
//      anything else       retried with backoff (honouring report->retry_after); nothing is
//                          dropped, there is no retry limit.
//
// Thread safety: Deliver() may be called concurrently for batches of different partitions.
class Destination {
 public:
  virtual ~Destination() = default;

  // Short type name for status and metrics ("file", "postgres", ...).
  virtual std::string_view type() const = 0;

  // `report` is never null; it is default-initialised by the caller.
  virtual absl::Status Deliver(const wharf::v1::StoredBatch& batch, DeliveryReport* report) = 0;

  // Called about once a second from the destination's delivery thread, also while idle, for
  // time-based work (rolling files by age). Errors are logged and retried at the next tick.
  virtual absl::Status Tick() { return absl::OkStatus(); }
};

}  // namespace wharf::pipeline
