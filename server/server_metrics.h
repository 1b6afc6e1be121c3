#pragma once

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "wharf/v1/control.pb.h"

namespace wharf::server {

// Metrics of the ingest side and the status gauges, all named wharf_* with units. Labels are
// bounded: dataset (from the config; requests for unknown datasets count under "_unknown"),
// destination (from the config), code (gRPC status codes), state (four destination states).
//
// Thread safety: thread-safe (prometheus-cpp metrics are; the lookup maps are filled in the
// constructor and only read afterwards, except the per-code counters, guarded by mu_).
class ServerMetrics {
 public:
  ServerMetrics(prometheus::Registry* registry, const std::vector<std::string>& datasets);

  // One answered produce request.
  void OnRequest(const std::string& dataset, const absl::Status& status, bool duplicate,
                 uint64_t records, uint64_t bytes, double ack_seconds);

  // Per-dataset in-process counters for GetStatus (since start).
  uint64_t DuplicateRequests(const std::string& dataset) const;
  uint64_t RejectedRequests(const std::string& dataset) const;

  // Sets the gauges from a status snapshot (called periodically).
  void UpdateGauges(const wharf::v1::GetStatusResponse& status);

 private:
  struct PerDataset {
    prometheus::Counter* records = nullptr;
    prometheus::Counter* bytes = nullptr;
    prometheus::Counter* duplicates = nullptr;
    prometheus::Histogram* ack_latency = nullptr;
    prometheus::Gauge* staged_bytes = nullptr;
    std::atomic<uint64_t> duplicate_count{0};
    std::atomic<uint64_t> rejected_count{0};
  };
  const PerDataset* Find(const std::string& dataset) const;

  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Family<prometheus::Gauge>* backlog_;
  prometheus::Family<prometheus::Gauge>* oldest_age_;
  prometheus::Gauge* store_size_;
  prometheus::Gauge* disk_free_;
  prometheus::Gauge* accepting_;
  std::map<std::string, std::unique_ptr<PerDataset>> datasets_;
  std::unique_ptr<PerDataset> unknown_;
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, prometheus::Counter*> request_counters_;  // guarded by mu_
};

}  // namespace wharf::server
