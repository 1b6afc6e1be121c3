#include "client/rpc_status.h"

#include <algorithm>
#include <cctype>
#include <string>
#include <string_view>

#include "google/rpc/error_details.pb.h"

namespace wharf::client {
namespace {

absl::StatusCode ToAbslCode(int code) {
  if (code < 0 || code > static_cast<int>(absl::StatusCode::kUnauthenticated)) {
    return absl::StatusCode::kUnknown;
  }
  return static_cast<absl::StatusCode>(code);
}

bool ContainsIgnoringCase(std::string_view haystack, std::string_view needle) {
  auto it = std::search(haystack.begin(), haystack.end(), needle.begin(), needle.end(),
                        [](char a, char b) {
                          return std::tolower(static_cast<unsigned char>(a)) ==
                                 std::tolower(static_cast<unsigned char>(b));
                        });
  return it != haystack.end();
}

}  // namespace

absl::Status FromRpcStatus(const google::rpc::Status& status) {
  if (status.code() == 0) return absl::OkStatus();
  return absl::Status(ToAbslCode(status.code()), status.message());
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(ToAbslCode(static_cast<int>(status.error_code())), status.error_message());
}

std::optional<std::chrono::milliseconds> RetryDelay(const google::rpc::Status& status) {
  for (const google::protobuf::Any& detail : status.details()) {
    if (!detail.Is<google::rpc::RetryInfo>()) continue;
    google::rpc::RetryInfo info;
    if (!detail.UnpackTo(&info)) continue;
    const int64_t seconds = std::max<int64_t>(info.retry_delay().seconds(), 0);
    const int64_t nanos = std::max<int32_t>(info.retry_delay().nanos(), 0);
    // Round up so that a delay of a few microseconds is still honoured.
    return std::chrono::milliseconds(seconds * 1000 + (nanos + 999'999) / 1'000'000);
  }
  return std::nullopt;
}

std::optional<std::chrono::milliseconds> RetryDelay(const grpc::Status& status) {
  if (status.ok() || status.error_details().empty()) return std::nullopt;
  google::rpc::Status rpc_status;
  if (!rpc_status.ParseFromString(status.error_details())) return std::nullopt;
  return RetryDelay(rpc_status);
}

bool IsRetryableCode(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kAborted:
      return true;
    default:
      return false;
  }
}

bool IsOutOfOrderSequence(const google::rpc::Status& status) {
  return status.code() == static_cast<int>(absl::StatusCode::kFailedPrecondition) &&
         ContainsIgnoringCase(status.message(), "out of order");
}

}  // namespace wharf::client
