#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "server/config.h"
#include "server/server_metrics.h"
#include "storage/staging_store.h"
#include "wharf/v1/ingest.grpc.pb.h"

namespace wharf::server {

// The Ingest gRPC service (callback API): one reactor per Produce stream, never blocking inside
// a reaction. Requests are validated on the reactor, then handed to the store's group commit;
// the answer is written when the store calls back (after the records are durable).
//
// Limits: at most `max_inflight_per_stream` requests of a stream are unanswered at once, counting
// those waiting for the store and those whose answer is not yet written to the client (the
// reactor stops reading until one is answered and written: gRPC flow control pushes back on the
// producer, also on one that does not read its acks), and at most `max_inflight_bytes` across all
// streams (beyond that, RESOURCE_EXHAUSTED with a retry delay).
//
// Thread safety: gRPC calls the reactors from its threads, the store from its writer thread;
// each reactor guards its state with its own mutex. The service object is thread-safe.
class IngestService final : public wharf::v1::Ingest::CallbackService {
 public:
  IngestService(storage::StagingStore* store, const LimitsConfig& limits, ServerMetrics* metrics);

  grpc::ServerBidiReactor<wharf::v1::ProduceRequest, wharf::v1::ProduceResponse>* Produce(
      grpc::CallbackServerContext* context) override;

  grpc::ServerUnaryReactor* ProduceOne(grpc::CallbackServerContext* context,
                                       const wharf::v1::ProduceRequest* request,
                                       wharf::v1::ProduceResponse* response) override;

  // Checks a request against the limits and the dataset list. OK, INVALID_ARGUMENT or
  // NOT_FOUND, with a message naming the field, the record index and the limit.
  absl::Status Validate(const wharf::v1::ProduceRequest& request) const;

  // In-flight accounting across all streams (bytes of requests waiting for the store).
  bool TryReserve(uint64_t bytes);
  void Release(uint64_t bytes);

  storage::StagingStore* store() const { return store_; }
  const LimitsConfig& limits() const { return limits_; }
  ServerMetrics* metrics() const { return metrics_; }

 private:
  storage::StagingStore* const store_;
  const LimitsConfig limits_;
  ServerMetrics* const metrics_;
  std::atomic<uint64_t> inflight_bytes_{0};
};

// The checks of IngestService::Validate, with the dataset list as a predicate: a pure function
// (no store, no gRPC), so that tests and the request fuzzer (tests/fuzz) can run it on any input.
// OK, INVALID_ARGUMENT or NOT_FOUND, with a message naming the field, the record index and the
// limit.
absl::Status ValidateProduceRequest(const wharf::v1::ProduceRequest& request,
                                    const LimitsConfig& limits,
                                    const std::function<bool(std::string_view)>& has_dataset);

// Fills `status` (a google.rpc.Status) from an absl status, adding a google.rpc.RetryInfo detail
// when retry_after is positive.
void ToRpcStatus(const absl::Status& st, std::chrono::milliseconds retry_after,
                 google::rpc::Status* status);

}  // namespace wharf::server
