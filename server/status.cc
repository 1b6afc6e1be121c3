#include "server/status.h"

#include <algorithm>

#include "google/protobuf/util/time_util.h"

namespace wharf::server {

wharf::v1::GetStatusResponse BuildStatus(storage::StagingStore& store,
                                         const pipeline::Pipeline& pipeline,
                                         const ServerMetrics& metrics,
                                         const std::vector<std::string>& only_datasets,
                                         std::chrono::system_clock::time_point start_time,
                                         storage::Durability durability) {
  using google::protobuf::util::TimeUtil;
  wharf::v1::GetStatusResponse out;
  out.set_version(WHARF_VERSION);
  *out.mutable_start_time() = TimeUtil::MicrosecondsToTimestamp(
      std::chrono::duration_cast<std::chrono::microseconds>(start_time.time_since_epoch()).count());
  out.set_durability(durability == storage::Durability::kSync ? "sync" : "async");
  out.set_store_size_bytes(store.StoreSizeBytes());
  out.set_disk_free_bytes(store.DiskFreeBytes());
  const std::string reason = store.NotAcceptingReason();
  out.set_accepting(reason.empty());
  out.set_not_accepting_reason(reason);
  for (const auto& opts : store.datasets()) {
    if (!only_datasets.empty() &&
        std::find(only_datasets.begin(), only_datasets.end(), opts.name) == only_datasets.end()) {
      continue;
    }
    auto* ds = out.add_datasets();
    ds->set_name(opts.name);
    ds->set_partitions(opts.partitions);
    ds->set_quota_bytes(opts.quota_bytes);
    ds->set_staged_bytes(store.StagedBytes(opts.name));
    for (uint32_t p = 0; p < opts.partitions; ++p) {
      const storage::PartitionCounters c = store.GetPartitionCounters(opts.name, p);
      ds->set_records_ingested(ds->records_ingested() + c.ingest.records_appended());
      ds->set_bytes_ingested(ds->bytes_ingested() + c.ingest.bytes_appended());
      ds->set_records_quarantined(ds->records_quarantined() + c.validation.records_quarantined());
      ds->set_batches_committed(ds->batches_committed() + c.validation.batches_committed());
      ds->set_records_committed(ds->records_committed() + c.validation.records_committed());
      auto* ps = ds->add_partition_status();
      ps->set_partition(p);
      ps->set_next_offset(c.ingest.next_offset());
      ps->set_validated_offset(c.validation.next_offset());
    }
    for (auto& d : pipeline.DestinationStatuses(opts.name)) *ds->add_destinations() = std::move(d);
    ds->set_duplicate_requests(metrics.DuplicateRequests(opts.name));
    ds->set_rejected_requests(metrics.RejectedRequests(opts.name));
  }
  return out;
}

}  // namespace wharf::server
