#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "pipeline/pipeline.h"
#include "server/server_metrics.h"
#include "storage/staging_store.h"
#include "wharf/v1/control.pb.h"

namespace wharf::server {

// Assembles the answer of GetStatus from the store's counters, the pipeline's delivery state and
// the ingest metrics. Thread safety: reads only thread-safe sources; callable from any thread.
wharf::v1::GetStatusResponse BuildStatus(storage::StagingStore& store,
                                         const pipeline::Pipeline& pipeline,
                                         const ServerMetrics& metrics,
                                         const std::vector<std::string>& only_datasets,
                                         std::chrono::system_clock::time_point start_time,
                                         storage::Durability durability);

}  // namespace wharf::server
