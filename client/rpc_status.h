#pragma once

// Conversions between the error models of the Wharf API (google.rpc.Status inside responses,
// grpc::Status with grpc-status-details-bin for unary calls) and absl::Status.

#include <grpcpp/support/status.h>

#include <chrono>
#include <optional>

#include "absl/status/status.h"
#include "google/rpc/status.pb.h"

namespace wharf::client {

// The absl::Status carrying the code and message of `status` (OK when code is 0). Codes outside
// the google.rpc range become UNKNOWN. Details are not carried over; use RetryDelay() for them.
absl::Status FromRpcStatus(const google::rpc::Status& status);

// The same for a gRPC call status.
absl::Status FromGrpcStatus(const grpc::Status& status);

// The retry_delay of the first google.rpc.RetryInfo in the details of `status`, if any.
std::optional<std::chrono::milliseconds> RetryDelay(const google::rpc::Status& status);

// The same for a gRPC call status, whose error_details() holds a serialized google.rpc.Status.
std::optional<std::chrono::milliseconds> RetryDelay(const grpc::Status& status);

// True for the codes a producer retries unchanged: UNAVAILABLE, RESOURCE_EXHAUSTED,
// DEADLINE_EXCEEDED and ABORTED.
bool IsRetryableCode(absl::StatusCode code);

// True when `status` is the FAILED_PRECONDITION the server returns for a request whose
// first_sequence is not the one it expects ("out of order sequence: expected N, got M").
bool IsOutOfOrderSequence(const google::rpc::Status& status);

}  // namespace wharf::client
