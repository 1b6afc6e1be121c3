#include "client/control_client.h"

#include <grpcpp/client_context.h>

#include <algorithm>
#include <utility>

#include "client/rpc_status.h"

namespace wharf::client {
namespace {

constexpr uint32_t kMaxPageSize = 1000;

void SetDeadline(grpc::ClientContext& context, std::chrono::milliseconds timeout) {
  context.set_deadline(std::chrono::system_clock::now() + timeout);
}

}  // namespace

ControlClient::ControlClient(std::shared_ptr<grpc::Channel> channel)
    : stub_(wharf::v1::Control::NewStub(std::move(channel))) {}

ControlClient::ControlClient(std::unique_ptr<wharf::v1::Control::StubInterface> stub)
    : stub_(std::move(stub)) {}

absl::StatusOr<wharf::v1::GetStatusResponse> ControlClient::GetStatus(
    const wharf::v1::GetStatusRequest& request, std::chrono::milliseconds timeout) const {
  grpc::ClientContext context;
  SetDeadline(context, timeout);
  wharf::v1::GetStatusResponse response;
  grpc::Status status = stub_->GetStatus(&context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::StatusOr<wharf::v1::ListQuarantineResponse> ControlClient::ListQuarantine(
    const wharf::v1::ListQuarantineRequest& request, std::chrono::milliseconds timeout) const {
  grpc::ClientContext context;
  SetDeadline(context, timeout);
  wharf::v1::ListQuarantineResponse response;
  grpc::Status status = stub_->ListQuarantine(&context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::StatusOr<wharf::v1::ListQuarantineResponse> ControlClient::ListAllQuarantine(
    const std::string& dataset, uint32_t limit, std::chrono::milliseconds timeout) const {
  wharf::v1::ListQuarantineRequest request;
  request.set_dataset(dataset);
  return ListAllQuarantine(request, limit, timeout);
}

absl::StatusOr<wharf::v1::ListQuarantineResponse> ControlClient::ListAllQuarantine(
    const wharf::v1::ListQuarantineRequest& first, uint32_t limit,
    std::chrono::milliseconds timeout) const {
  wharf::v1::ListQuarantineResponse all;
  wharf::v1::ListQuarantineRequest request = first;
  all.set_next_page_token(request.page_token());
  while (static_cast<uint32_t>(all.entries_size()) < limit) {
    request.set_limit(std::min(limit - static_cast<uint32_t>(all.entries_size()), kMaxPageSize));
    absl::StatusOr<wharf::v1::ListQuarantineResponse> page = ListQuarantine(request, timeout);
    if (!page.ok()) return page.status();
    for (wharf::v1::QuarantineEntry& entry : *page->mutable_entries()) {
      if (static_cast<uint32_t>(all.entries_size()) >= limit) break;
      *all.add_entries() = std::move(entry);
    }
    all.set_next_page_token(page->next_page_token());
    // A server whose token does not move would otherwise make this loop forever.
    if (page->next_page_token().empty() || page->next_page_token() == request.page_token()) break;
    request.set_page_token(page->next_page_token());
  }
  return all;
}

absl::StatusOr<wharf::v1::QuarantineEntry> ControlClient::GetQuarantineEntry(
    const wharf::v1::GetQuarantineEntryRequest& request, std::chrono::milliseconds timeout) const {
  grpc::ClientContext context;
  SetDeadline(context, timeout);
  wharf::v1::QuarantineEntry response;
  grpc::Status status = stub_->GetQuarantineEntry(&context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::StatusOr<wharf::v1::ReplayQuarantineResponse> ControlClient::ReplayQuarantine(
    const wharf::v1::ReplayQuarantineRequest& request, std::chrono::milliseconds timeout) const {
  grpc::ClientContext context;
  SetDeadline(context, timeout);
  wharf::v1::ReplayQuarantineResponse response;
  grpc::Status status = stub_->ReplayQuarantine(&context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::StatusOr<wharf::v1::DiscardQuarantineResponse> ControlClient::DiscardQuarantine(
    const wharf::v1::DiscardQuarantineRequest& request, std::chrono::milliseconds timeout) const {
  grpc::ClientContext context;
  SetDeadline(context, timeout);
  wharf::v1::DiscardQuarantineResponse response;
  grpc::Status status = stub_->DiscardQuarantine(&context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::Status ControlClient::PauseDestination(const std::string& dataset,
                                             const std::string& destination,
                                             std::chrono::milliseconds timeout) const {
  grpc::ClientContext context;
  SetDeadline(context, timeout);
  wharf::v1::PauseDestinationRequest request;
  request.set_dataset(dataset);
  request.set_destination(destination);
  wharf::v1::PauseDestinationResponse response;
  grpc::Status status = stub_->PauseDestination(&context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return absl::OkStatus();
}

absl::Status ControlClient::ResumeDestination(const std::string& dataset,
                                              const std::string& destination,
                                              std::chrono::milliseconds timeout) const {
  grpc::ClientContext context;
  SetDeadline(context, timeout);
  wharf::v1::ResumeDestinationRequest request;
  request.set_dataset(dataset);
  request.set_destination(destination);
  wharf::v1::ResumeDestinationResponse response;
  grpc::Status status = stub_->ResumeDestination(&context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return absl::OkStatus();
}

absl::StatusOr<wharf::v1::ApplyContractResponse> ControlClient::ApplyContract(
    const std::string& spec_yaml, bool dry_run, std::chrono::milliseconds timeout) const {
  grpc::ClientContext context;
  SetDeadline(context, timeout);
  wharf::v1::ApplyContractRequest request;
  request.set_spec_yaml(spec_yaml);
  request.set_dry_run(dry_run);
  wharf::v1::ApplyContractResponse response;
  grpc::Status status = stub_->ApplyContract(&context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::StatusOr<wharf::v1::GetContractResponse> ControlClient::GetContract(
    const wharf::v1::GetContractRequest& request, std::chrono::milliseconds timeout) const {
  grpc::ClientContext context;
  SetDeadline(context, timeout);
  wharf::v1::GetContractResponse response;
  grpc::Status status = stub_->GetContract(&context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

}  // namespace wharf::client
