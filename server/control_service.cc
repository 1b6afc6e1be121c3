#include "server/control_service.h"

#include "absl/strings/str_cat.h"
#include "server/status.h"

namespace wharf::server {

ControlService::ControlService(storage::StagingStore* store, pipeline::Pipeline* pipeline,
                               ServerMetrics* metrics,
                               std::chrono::system_clock::time_point start_time,
                               storage::Durability durability)
    : store_(store),
      pipeline_(pipeline),
      metrics_(metrics),
      start_time_(start_time),
      durability_(durability) {}

grpc::ServerUnaryReactor* ControlService::GetStatus(grpc::CallbackServerContext* context,
                                                    const wharf::v1::GetStatusRequest* request,
                                                    wharf::v1::GetStatusResponse* response) {
  auto* reactor = context->DefaultReactor();
  std::vector<std::string> only(request->datasets().begin(), request->datasets().end());
  for (const auto& name : only) {
    if (!store_->HasDataset(name)) {
      reactor->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND,
                                   absl::StrCat("unknown dataset \"", name, "\"")));
      return reactor;
    }
  }
  *response = BuildStatus(*store_, *pipeline_, *metrics_, only, start_time_, durability_);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* ControlService::ListQuarantine(
    grpc::CallbackServerContext* context, const wharf::v1::ListQuarantineRequest* request,
    wharf::v1::ListQuarantineResponse* response) {
  auto* reactor = context->DefaultReactor();
  if (request->dataset().empty()) {
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "dataset is required"));
    return reactor;
  }
  if (!store_->HasDataset(request->dataset())) {
    reactor->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND,
                                 absl::StrCat("unknown dataset \"", request->dataset(), "\"")));
    return reactor;
  }
  if (request->limit() > 1000) {
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                 absl::StrCat("limit ", request->limit(), " is above 1000")));
    return reactor;
  }
  const size_t limit = request->limit() == 0 ? 100 : request->limit();
  std::vector<wharf::v1::QuarantineEntry> entries;
  std::string next;
  absl::Status st =
      store_->ListQuarantine(request->dataset(), request->page_token(), limit, &entries, &next);
  if (!st.ok()) {
    reactor->Finish(
        grpc::Status(static_cast<grpc::StatusCode>(st.code()), std::string(st.message())));
    return reactor;
  }
  for (auto& e : entries) *response->add_entries() = std::move(e);
  response->set_next_page_token(next);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace wharf::server
