#pragma once

#include <grpcpp/channel.h>

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "wharf/v1/control.grpc.pb.h"
#include "wharf/v1/control.pb.h"

namespace wharf::client {

// Blocking calls of the Control service (status, quarantine, destination pausing, contracts).
//
// Thread safety: thread-safe; calls may be made concurrently from any number of threads.
class ControlClient {
 public:
  explicit ControlClient(std::shared_ptr<grpc::Channel> channel);
  // For tests: any stub implementation.
  explicit ControlClient(std::unique_ptr<wharf::v1::Control::StubInterface> stub);

  absl::StatusOr<wharf::v1::GetStatusResponse> GetStatus(
      const wharf::v1::GetStatusRequest& request,
      std::chrono::milliseconds timeout = std::chrono::seconds(10)) const;

  // One page of quarantined records.
  absl::StatusOr<wharf::v1::ListQuarantineResponse> ListQuarantine(
      const wharf::v1::ListQuarantineRequest& request,
      std::chrono::milliseconds timeout = std::chrono::seconds(10)) const;

  // Up to `limit` entries of `dataset`, oldest first, following page tokens. The returned
  // response's next_page_token is the token to continue after the last returned entry.
  absl::StatusOr<wharf::v1::ListQuarantineResponse> ListAllQuarantine(
      const std::string& dataset, uint32_t limit,
      std::chrono::milliseconds timeout = std::chrono::seconds(10)) const;
  // Same with the filters (reason, since, until) and starting page token of `request` (its
  // limit is ignored). Pages that hold no entry but a token (the server bounds its scan per
  // call) are followed too.
  absl::StatusOr<wharf::v1::ListQuarantineResponse> ListAllQuarantine(
      const wharf::v1::ListQuarantineRequest& request, uint32_t limit,
      std::chrono::milliseconds timeout = std::chrono::seconds(10)) const;

  absl::StatusOr<wharf::v1::QuarantineEntry> GetQuarantineEntry(
      const wharf::v1::GetQuarantineEntryRequest& request,
      std::chrono::milliseconds timeout = std::chrono::seconds(10)) const;
  absl::StatusOr<wharf::v1::ReplayQuarantineResponse> ReplayQuarantine(
      const wharf::v1::ReplayQuarantineRequest& request,
      std::chrono::milliseconds timeout = std::chrono::seconds(60)) const;
  absl::StatusOr<wharf::v1::DiscardQuarantineResponse> DiscardQuarantine(
      const wharf::v1::DiscardQuarantineRequest& request,
      std::chrono::milliseconds timeout = std::chrono::seconds(60)) const;

  // Pauses / resumes delivery to one destination of a dataset.
  absl::Status PauseDestination(const std::string& dataset, const std::string& destination,
                                std::chrono::milliseconds timeout = std::chrono::seconds(10)) const;
  absl::Status ResumeDestination(
      const std::string& dataset, const std::string& destination,
      std::chrono::milliseconds timeout = std::chrono::seconds(10)) const;

  // Applies (or with dry_run only checks) the contract of a dataset spec document.
  absl::StatusOr<wharf::v1::ApplyContractResponse> ApplyContract(
      const std::string& spec_yaml, bool dry_run,
      std::chrono::milliseconds timeout = std::chrono::seconds(30)) const;
  // One stored contract version, or every version (history).
  absl::StatusOr<wharf::v1::GetContractResponse> GetContract(
      const wharf::v1::GetContractRequest& request,
      std::chrono::milliseconds timeout = std::chrono::seconds(10)) const;

 private:
  std::unique_ptr<wharf::v1::Control::StubInterface> stub_;
};

}  // namespace wharf::client
