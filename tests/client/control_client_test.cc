#include "client/control_client.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "client/channel.h"

namespace wharf::client {
namespace {

// A Control service with canned answers: 25 quarantine entries served in pages of at most 10.
//
// Thread safety: thread-safe (immutable after construction).
class FakeControl final : public wharf::v1::Control::Service {
 public:
  grpc::Status GetStatus(grpc::ServerContext* /*context*/,
                         const wharf::v1::GetStatusRequest* request,
                         wharf::v1::GetStatusResponse* response) override {
    response->set_version("test");
    response->set_accepting(true);
    for (const std::string& name : request->datasets()) {
      if (name == "missing") return grpc::Status(grpc::StatusCode::NOT_FOUND, "no such dataset");
      response->add_datasets()->set_name(name);
    }
    return grpc::Status::OK;
  }

  grpc::Status ListQuarantine(grpc::ServerContext* /*context*/,
                              const wharf::v1::ListQuarantineRequest* request,
                              wharf::v1::ListQuarantineResponse* response) override {
    const uint32_t start = request->page_token().empty()
                               ? 0
                               : static_cast<uint32_t>(std::stoul(request->page_token()));
    if (request->reason() == wharf::v1::PARSE_ERROR) {
      // A filtered listing as wharfd serves it: at most 4 entries scanned per call, only offsets
      // divisible by 10 match, so some pages are empty but carry a token.
      uint32_t i = start;
      for (; i < kEntries && i < start + 4; ++i) {
        if (i % 10 == 0) response->add_entries()->set_offset(i);
      }
      if (i < kEntries) response->set_next_page_token(std::to_string(i));
      return grpc::Status::OK;
    }
    const uint32_t limit = std::min<uint32_t>(request->limit() == 0 ? 100 : request->limit(), 10);
    uint32_t i = start;
    for (; i < kEntries && i < start + limit; ++i) {
      wharf::v1::QuarantineEntry* entry = response->add_entries();
      entry->set_dataset(request->dataset());
      entry->set_offset(i);
    }
    if (i < kEntries) response->set_next_page_token(std::to_string(i));
    return grpc::Status::OK;
  }

 private:
  static constexpr uint32_t kEntries = 25;
};

class ControlClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    client_ = std::make_unique<ControlClient>(CreateChannel("127.0.0.1:" + std::to_string(port)));
  }
  void TearDown() override { server_->Shutdown(); }

  FakeControl service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<ControlClient> client_;
};

TEST_F(ControlClientTest, GetStatus) {
  wharf::v1::GetStatusRequest request;
  request.add_datasets("events");
  absl::StatusOr<wharf::v1::GetStatusResponse> response = client_->GetStatus(request);
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->version(), "test");
  ASSERT_EQ(response->datasets_size(), 1);
  EXPECT_EQ(response->datasets(0).name(), "events");
}

TEST_F(ControlClientTest, GetStatusError) {
  wharf::v1::GetStatusRequest request;
  request.add_datasets("missing");
  absl::StatusOr<wharf::v1::GetStatusResponse> response = client_->GetStatus(request);
  EXPECT_EQ(response.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(response.status().message(), "no such dataset");
}

TEST_F(ControlClientTest, ListAllQuarantineFollowsPages) {
  absl::StatusOr<wharf::v1::ListQuarantineResponse> all = client_->ListAllQuarantine("events", 22);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->entries_size(), 22);
  for (int i = 0; i < 22; ++i) EXPECT_EQ(all->entries(i).offset(), static_cast<uint64_t>(i));
  EXPECT_EQ(all->next_page_token(), "22");
  all = client_->ListAllQuarantine("events", 100);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->entries_size(), 25);
  EXPECT_TRUE(all->next_page_token().empty());
}

TEST_F(ControlClientTest, ListAllQuarantineFollowsEmptyPagesWithATokenAndKeepsFilters) {
  wharf::v1::ListQuarantineRequest request;
  request.set_dataset("events");
  request.set_reason(wharf::v1::PARSE_ERROR);
  absl::StatusOr<wharf::v1::ListQuarantineResponse> all = client_->ListAllQuarantine(request, 100);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->entries_size(), 3);
  EXPECT_EQ(all->entries(0).offset(), 0u);
  EXPECT_EQ(all->entries(1).offset(), 10u);
  EXPECT_EQ(all->entries(2).offset(), 20u);
  EXPECT_TRUE(all->next_page_token().empty());
  // Starting from a page token.
  request.set_page_token("12");
  all = client_->ListAllQuarantine(request, 100);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->entries_size(), 1);
  EXPECT_EQ(all->entries(0).offset(), 20u);
}

TEST(ControlClientUnreachableTest, ReportsUnavailable) {
  // Nothing listens on port 1.
  ControlClient client(CreateChannel("127.0.0.1:1"));
  absl::StatusOr<wharf::v1::GetStatusResponse> response =
      client.GetStatus({}, std::chrono::milliseconds(2000));
  EXPECT_EQ(response.status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace wharf::client
