#pragma once

#include <chrono>

#include "pipeline/pipeline.h"
#include "server/server_metrics.h"
#include "storage/staging_store.h"
#include "wharf/v1/control.grpc.pb.h"

namespace wharf::server {

// The Control gRPC service. Each call reads in-memory counters and a few store keys: bounded,
// millisecond work done inline in the reaction.
//
// Thread safety: thread-safe.
class ControlService final : public wharf::v1::Control::CallbackService {
 public:
  ControlService(storage::StagingStore* store, pipeline::Pipeline* pipeline, ServerMetrics* metrics,
                 std::chrono::system_clock::time_point start_time, storage::Durability durability);

  grpc::ServerUnaryReactor* GetStatus(grpc::CallbackServerContext* context,
                                      const wharf::v1::GetStatusRequest* request,
                                      wharf::v1::GetStatusResponse* response) override;

  grpc::ServerUnaryReactor* ListQuarantine(grpc::CallbackServerContext* context,
                                           const wharf::v1::ListQuarantineRequest* request,
                                           wharf::v1::ListQuarantineResponse* response) override;

 private:
  storage::StagingStore* const store_;
  pipeline::Pipeline* const pipeline_;
  ServerMetrics* const metrics_;
  const std::chrono::system_clock::time_point start_time_;
  const storage::Durability durability_;
};

}  // namespace wharf::server
