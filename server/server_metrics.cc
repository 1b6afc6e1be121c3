#include "server/server_metrics.h"

namespace wharf::server {
namespace {
constexpr const char* kUnknownDataset = "_unknown";

const prometheus::Histogram::BucketBoundaries& AckBuckets() {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};
  return kBuckets;
}
}  // namespace

ServerMetrics::ServerMetrics(prometheus::Registry* registry,
                             const std::vector<std::string>& datasets) {
  auto& records = prometheus::BuildCounter()
                      .Name("wharf_ingest_records_total")
                      .Help(
                          "Records acknowledged as durable (retries answered from the "
                          "deduplication window not counted)")
                      .Register(*registry);
  auto& bytes = prometheus::BuildCounter()
                    .Name("wharf_ingest_bytes_total")
                    .Help("Payload, key and header bytes of acknowledged records")
                    .Register(*registry);
  auto& duplicates = prometheus::BuildCounter()
                         .Name("wharf_ingest_duplicate_requests_total")
                         .Help("Retried requests answered with their original acks")
                         .Register(*registry);
  auto& ack = prometheus::BuildHistogram()
                  .Name("wharf_ack_latency_seconds")
                  .Help("Time from receiving a produce request to answering it")
                  .Register(*registry);
  auto& staged = prometheus::BuildGauge()
                     .Name("wharf_staged_bytes")
                     .Help("Logical bytes held in the staging store (raw + batches)")
                     .Register(*registry);
  requests_ = &prometheus::BuildCounter()
                   .Name("wharf_ingest_requests_total")
                   .Help("Answered produce requests by gRPC status code")
                   .Register(*registry);
  backlog_ = &prometheus::BuildGauge()
                  .Name("wharf_destination_backlog_records")
                  .Help("Offsets not yet delivered to the destination")
                  .Register(*registry);
  oldest_age_ = &prometheus::BuildGauge()
                     .Name("wharf_destination_oldest_undelivered_seconds")
                     .Help("Age of the oldest acknowledged record not yet delivered (freshness)")
                     .Register(*registry);
  store_size_ = &prometheus::BuildGauge()
                     .Name("wharf_store_size_bytes")
                     .Help("Size of the staging store's files and memtables")
                     .Register(*registry)
                     .Add({});
  disk_free_ = &prometheus::BuildGauge()
                    .Name("wharf_disk_free_bytes")
                    .Help("Free bytes on the staging store's file system")
                    .Register(*registry)
                    .Add({});
  accepting_ = &prometheus::BuildGauge()
                    .Name("wharf_accepting")
                    .Help("1 while ingest is accepted, 0 while refused for the whole node")
                    .Register(*registry)
                    .Add({});
  auto make = [&](const std::string& name) {
    auto d = std::make_unique<PerDataset>();
    d->records = &records.Add({{"dataset", name}});
    d->bytes = &bytes.Add({{"dataset", name}});
    d->duplicates = &duplicates.Add({{"dataset", name}});
    d->ack_latency = &ack.Add({{"dataset", name}}, AckBuckets());
    d->staged_bytes = &staged.Add({{"dataset", name}});
    return d;
  };
  for (const auto& name : datasets) datasets_[name] = make(name);
  unknown_ = make(kUnknownDataset);
}

const ServerMetrics::PerDataset* ServerMetrics::Find(const std::string& dataset) const {
  auto it = datasets_.find(dataset);
  return it == datasets_.end() ? unknown_.get() : it->second.get();
}

void ServerMetrics::OnRequest(const std::string& dataset, const absl::Status& status,
                              bool duplicate, uint64_t records, uint64_t bytes,
                              double ack_seconds) {
  auto* d = const_cast<PerDataset*>(Find(dataset));
  const std::string label = datasets_.count(dataset) ? dataset : kUnknownDataset;
  prometheus::Counter* counter;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto key = std::make_pair(label, static_cast<int>(status.code()));
    auto it = request_counters_.find(key);
    if (it == request_counters_.end()) {
      it = request_counters_
               .emplace(key, &requests_->Add({{"dataset", label},
                                              {"code", absl::StatusCodeToString(status.code())}}))
               .first;
    }
    counter = it->second;
  }
  counter->Increment();
  d->ack_latency->Observe(ack_seconds);
  if (!status.ok()) {
    d->rejected_count.fetch_add(1);
    return;
  }
  if (duplicate) {
    d->duplicates->Increment();
    d->duplicate_count.fetch_add(1);
    return;
  }
  d->records->Increment(static_cast<double>(records));
  d->bytes->Increment(static_cast<double>(bytes));
}

uint64_t ServerMetrics::DuplicateRequests(const std::string& dataset) const {
  return Find(dataset)->duplicate_count.load();
}

uint64_t ServerMetrics::RejectedRequests(const std::string& dataset) const {
  return Find(dataset)->rejected_count.load();
}

void ServerMetrics::UpdateGauges(const wharf::v1::GetStatusResponse& status) {
  store_size_->Set(static_cast<double>(status.store_size_bytes()));
  disk_free_->Set(static_cast<double>(status.disk_free_bytes()));
  accepting_->Set(status.accepting() ? 1 : 0);
  for (const auto& ds : status.datasets()) {
    if (const auto* d = Find(ds.name()); d != unknown_.get()) {
      d->staged_bytes->Set(static_cast<double>(ds.staged_bytes()));
    }
    for (const auto& dest : ds.destinations()) {
      const prometheus::Labels labels = {{"dataset", ds.name()}, {"destination", dest.name()}};
      backlog_->Add(labels).Set(static_cast<double>(dest.backlog_records()));
      oldest_age_->Add(labels).Set(static_cast<double>(dest.oldest_undelivered_age_ms()) / 1000.0);
      // wharf_destination_state is kept by the pipeline itself, at every state change.
    }
  }
}

}  // namespace wharf::server
