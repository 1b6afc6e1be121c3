#include "client/rpc_status.h"

#include <gtest/gtest.h>

#include "google/rpc/error_details.pb.h"

namespace wharf::client {
namespace {

google::rpc::Status MakeStatus(int code, const std::string& message) {
  google::rpc::Status status;
  status.set_code(code);
  status.set_message(message);
  return status;
}

TEST(RpcStatusTest, FromRpcStatusMapsCodeAndMessage) {
  EXPECT_TRUE(FromRpcStatus(MakeStatus(0, "ignored")).ok());
  const absl::Status status = FromRpcStatus(MakeStatus(3, "bad record"));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "bad record");
  EXPECT_EQ(FromRpcStatus(MakeStatus(99, "odd")).code(), absl::StatusCode::kUnknown);
  EXPECT_EQ(FromRpcStatus(MakeStatus(-1, "odd")).code(), absl::StatusCode::kUnknown);
}

TEST(RpcStatusTest, FromGrpcStatus) {
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok());
  const absl::Status status =
      FromGrpcStatus(grpc::Status(grpc::StatusCode::UNAVAILABLE, "connection refused"));
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(status.message(), "connection refused");
}

TEST(RpcStatusTest, RetryDelayReadsRetryInfo) {
  google::rpc::Status status = MakeStatus(8, "quota");
  EXPECT_FALSE(RetryDelay(status).has_value());
  google::rpc::Status unrelated = MakeStatus(1, "unrelated");
  status.add_details()->PackFrom(unrelated);
  EXPECT_FALSE(RetryDelay(status).has_value());
  google::rpc::RetryInfo info;
  info.mutable_retry_delay()->set_seconds(2);
  info.mutable_retry_delay()->set_nanos(250'000'000);
  status.add_details()->PackFrom(info);
  ASSERT_TRUE(RetryDelay(status).has_value());
  EXPECT_EQ(RetryDelay(status)->count(), 2250);
}

TEST(RpcStatusTest, RetryDelayRoundsUpSubMillisecond) {
  google::rpc::Status status = MakeStatus(8, "quota");
  google::rpc::RetryInfo info;
  info.mutable_retry_delay()->set_nanos(1000);
  status.add_details()->PackFrom(info);
  EXPECT_EQ(RetryDelay(status)->count(), 1);
}

TEST(RpcStatusTest, RetryDelayFromGrpcErrorDetails) {
  google::rpc::Status rpc_status = MakeStatus(8, "quota");
  google::rpc::RetryInfo info;
  info.mutable_retry_delay()->set_seconds(1);
  rpc_status.add_details()->PackFrom(info);
  const grpc::Status status(grpc::StatusCode::RESOURCE_EXHAUSTED, "quota",
                            rpc_status.SerializeAsString());
  ASSERT_TRUE(RetryDelay(status).has_value());
  EXPECT_EQ(RetryDelay(status)->count(), 1000);
  EXPECT_FALSE(RetryDelay(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "q")).has_value());
  EXPECT_FALSE(RetryDelay(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "q", "\xff garbage"))
                   .has_value());
}

TEST(RpcStatusTest, Classification) {
  EXPECT_TRUE(IsRetryableCode(absl::StatusCode::kUnavailable));
  EXPECT_TRUE(IsRetryableCode(absl::StatusCode::kResourceExhausted));
  EXPECT_TRUE(IsRetryableCode(absl::StatusCode::kDeadlineExceeded));
  EXPECT_TRUE(IsRetryableCode(absl::StatusCode::kAborted));
  EXPECT_FALSE(IsRetryableCode(absl::StatusCode::kInvalidArgument));
  EXPECT_FALSE(IsRetryableCode(absl::StatusCode::kFailedPrecondition));
  EXPECT_FALSE(IsRetryableCode(absl::StatusCode::kNotFound));
  EXPECT_TRUE(IsOutOfOrderSequence(MakeStatus(9, "out of order sequence: expected 5, got 7")));
  EXPECT_TRUE(IsOutOfOrderSequence(MakeStatus(9, "Out Of Order sequence")));
  EXPECT_FALSE(IsOutOfOrderSequence(MakeStatus(9, "dataset is paused")));
  EXPECT_FALSE(IsOutOfOrderSequence(MakeStatus(3, "out of order")));
}

}  // namespace
}  // namespace wharf::client
