#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "pipeline/contract/contract_registry.h"
#include "pipeline/pipeline.h"
#include "server/config.h"
#include "server/server_metrics.h"
#include "storage/staging_store.h"
#include "wharf/v1/control.grpc.pb.h"

namespace wharf::server {

// The Control gRPC service: status, quarantine inspection and repair, pausing destinations,
// applying and reading data contracts.
//
// Work per call is bounded and done inline in the reaction: status reads in-memory counters;
// quarantine listing scans at most kMaxListScan entries; bulk replay / discard / dry runs look
// at most kMaxBulkScan entries and select at most kMaxBulkEntries. The one call that waits for
// something else, a (non-dry) replay, hands its tokens to the store's writer thread and finishes
// the reactor from the store's callback, never blocking a gRPC thread.
//
// Thread safety: thread-safe.
class ControlService final : public wharf::v1::Control::CallbackService {
 public:
  // Entries a ListQuarantine call scans at most (matching or not) before it returns a token to
  // continue with.
  static constexpr size_t kMaxListScan = 10000;
  // Entries one replay / discard / dry run selects at most, and scans at most.
  static constexpr size_t kMaxBulkEntries = 100000;
  static constexpr size_t kMaxBulkScan = 1000000;
  // Tokens one request may name.
  static constexpr size_t kMaxTokens = 100000;

  // `contracts` must outlive the service. `datasets` and `delivery` are the running
  // configuration's: ApplyContract checks a spec document against them.
  ControlService(storage::StagingStore* store, pipeline::Pipeline* pipeline, ServerMetrics* metrics,
                 std::chrono::system_clock::time_point start_time, storage::Durability durability,
                 pipeline::contract::ContractRegistry* contracts,
                 std::vector<DatasetConfig> datasets, DeliveryConfig delivery);

  grpc::ServerUnaryReactor* GetStatus(grpc::CallbackServerContext* context,
                                      const wharf::v1::GetStatusRequest* request,
                                      wharf::v1::GetStatusResponse* response) override;

  grpc::ServerUnaryReactor* ListQuarantine(grpc::CallbackServerContext* context,
                                           const wharf::v1::ListQuarantineRequest* request,
                                           wharf::v1::ListQuarantineResponse* response) override;

  grpc::ServerUnaryReactor* GetQuarantineEntry(grpc::CallbackServerContext* context,
                                               const wharf::v1::GetQuarantineEntryRequest* request,
                                               wharf::v1::QuarantineEntry* response) override;

  grpc::ServerUnaryReactor* ReplayQuarantine(
      grpc::CallbackServerContext* context, const wharf::v1::ReplayQuarantineRequest* request,
      wharf::v1::ReplayQuarantineResponse* response) override;

  grpc::ServerUnaryReactor* DiscardQuarantine(
      grpc::CallbackServerContext* context, const wharf::v1::DiscardQuarantineRequest* request,
      wharf::v1::DiscardQuarantineResponse* response) override;

  grpc::ServerUnaryReactor* PauseDestination(
      grpc::CallbackServerContext* context, const wharf::v1::PauseDestinationRequest* request,
      wharf::v1::PauseDestinationResponse* response) override;

  grpc::ServerUnaryReactor* ResumeDestination(
      grpc::CallbackServerContext* context, const wharf::v1::ResumeDestinationRequest* request,
      wharf::v1::ResumeDestinationResponse* response) override;

  grpc::ServerUnaryReactor* ApplyContract(grpc::CallbackServerContext* context,
                                          const wharf::v1::ApplyContractRequest* request,
                                          wharf::v1::ApplyContractResponse* response) override;

  grpc::ServerUnaryReactor* GetContract(grpc::CallbackServerContext* context,
                                        const wharf::v1::GetContractRequest* request,
                                        wharf::v1::GetContractResponse* response) override;

 private:
  // The body of ApplyContract; errors as documented in control.proto.
  absl::Status DoApplyContract(const wharf::v1::ApplyContractRequest& request,
                               wharf::v1::ApplyContractResponse* response);

  // INVALID_ARGUMENT for an empty name, NOT_FOUND for an unknown dataset.
  absl::Status CheckDataset(const std::string& dataset) const;
  grpc::ServerUnaryReactor* SetPaused(grpc::CallbackServerContext* context,
                                      const std::string& dataset, const std::string& destination,
                                      bool paused);

  storage::StagingStore* const store_;
  pipeline::Pipeline* const pipeline_;
  ServerMetrics* const metrics_;
  const std::chrono::system_clock::time_point start_time_;
  const storage::Durability durability_;
  pipeline::contract::ContractRegistry* const contracts_;
  const std::vector<DatasetConfig> datasets_;
  const DeliveryConfig delivery_;
  // Held across registry Apply + pipeline SetProcessor: without it, of two concurrent applies
  // the one that stored the older version could install its processor last.
  std::mutex apply_mu_;
};

}  // namespace wharf::server
