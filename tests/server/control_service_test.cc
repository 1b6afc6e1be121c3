// The Control service's quarantine and pause RPCs against a real store and pipeline in this
// process (served over gRPC on 127.0.0.1), with fake destinations: listing with filters and
// paging, fetching one entry, dry-run and real replays, discards, pausing, applying and reading
// contracts, and malformed input for every call.

#include "server/control_service.h"

#include <grpcpp/grpcpp.h>
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/util/time_util.h"
#include "gtest/gtest.h"
#include "pipeline/contract/contract_registry.h"
#include "pipeline/destination.h"
#include "pipeline/pipeline.h"
#include "pipeline/record_processor.h"
#include "prometheus/registry.h"
#include "server/config.h"
#include "server/server_metrics.h"
#include "storage/staging_store.h"
#include "wharf/v1/control.grpc.pb.h"

namespace wharf::server {
namespace {

using namespace std::chrono_literals;
using google::protobuf::util::TimeUtil;
using wharf::v1::QuarantineEntry;

template <typename Pred>
bool WaitUntil(Pred pred, std::chrono::milliseconds timeout = 20s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline) return pred();
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

// What a fake destination saw. Thread safety: every method may be called from any thread.
class Sink {
 public:
  void Add(const wharf::v1::StoredBatch& batch) {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& r : batch.records()) payloads_.push_back(r.payload());
  }
  std::vector<std::string> payloads() const {
    std::lock_guard<std::mutex> lock(mu_);
    return payloads_;
  }
  size_t size() const {
    std::lock_guard<std::mutex> lock(mu_);
    return payloads_.size();
  }

 private:
  mutable std::mutex mu_;
  std::vector<std::string> payloads_;
};

// Accepts every batch, except (when `picky`) batches holding a payload that contains "reject":
// those are refused with INVALID_ARGUMENT, so the pipeline isolates and quarantines them as
// DESTINATION_REJECTED. Thread safety: as Sink.
class FakeDestination final : public pipeline::Destination {
 public:
  FakeDestination(std::shared_ptr<Sink> sink, bool picky) : sink_(std::move(sink)), picky_(picky) {}
  std::string_view type() const override { return "fake"; }
  absl::Status Deliver(const wharf::v1::StoredBatch& batch,
                       pipeline::DeliveryReport* /*report*/) override {
    if (picky_) {
      for (const auto& r : batch.records()) {
        if (absl::StrContains(r.payload(), "reject")) {
          return absl::InvalidArgumentError("refused: contains reject");
        }
      }
    }
    sink_->Add(batch);
    return absl::OkStatus();
  }

 private:
  const std::shared_ptr<Sink> sink_;
  const bool picky_;
};

// Datasets (one partition each, so tokens are "0/<offset>"):
//   orders  JSON processor, destination "files" (accepts everything)
//   multi   destinations "ok" (accepts) and "picky" (rejects "reject" payloads)
//   single  destination "picky" only
// The running configuration the service compares spec documents with: each dataset with one
// partition and file destinations named as the fake ones (their directories are never used).
constexpr char kRunningOrders[] = R"(name: orders
partitions: 1
destinations:
  - name: files
    type: file
    directory: /nonexistent/orders
)";
constexpr char kRunningMulti[] = R"(name: multi
partitions: 1
destinations:
  - name: ok
    type: file
    directory: /nonexistent/ok
  - name: picky
    type: file
    directory: /nonexistent/picky
)";
constexpr char kRunningSingle[] = R"(name: single
partitions: 1
destinations:
  - name: picky
    type: file
    directory: /nonexistent/single
)";

class ControlServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (std::filesystem::temp_directory_path() / "control-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;

    storage::StoreOptions so;
    so.path = dir_ + "/data";
    so.durability = storage::Durability::kAsync;
    so.min_free_bytes = 1 << 20;
    for (const char* name : {"orders", "multi", "single"}) {
      so.datasets.push_back({name, 1, 0});
    }
    auto store = storage::StagingStore::Open(std::move(so));
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);

    pipeline::PipelineOptions po;
    po.batching.linger = 10ms;
    po.retry.initial_backoff = 5ms;
    po.retry.max_backoff = 50ms;
    auto dataset = [&](const char* name) {
      pipeline::DatasetPipelineOptions d;
      d.name = name;
      d.processor = pipeline::NewJsonParseProcessor();
      return d;
    };
    auto destination = [&](const char* name, bool picky) {
      return pipeline::DestinationSpec{name, std::make_unique<FakeDestination>(sinks_[name], picky),
                                       std::nullopt};
    };
    for (const char* name : {"files", "ok", "picky", "single-picky"}) {
      sinks_[name] = std::make_shared<Sink>();
    }
    po.datasets.push_back(dataset("orders"));
    po.datasets.back().destinations.push_back(destination("files", false));
    po.datasets.push_back(dataset("multi"));
    po.datasets.back().destinations.push_back(destination("ok", false));
    po.datasets.back().destinations.push_back(destination("picky", true));
    po.datasets.push_back(dataset("single"));
    po.datasets.back().destinations.push_back(
        {"picky", std::make_unique<FakeDestination>(sinks_["single-picky"], true), std::nullopt});
    auto pipe = pipeline::Pipeline::Create(store_.get(), std::move(po));
    ASSERT_TRUE(pipe.ok()) << pipe.status();
    pipeline_ = std::move(*pipe);
    pipeline::Pipeline* p = pipeline_.get();
    store_->SetAppendListener([p](const std::string& ds, uint32_t partition, uint64_t next) {
      p->OnAppend(ds, partition, next);
    });
    ASSERT_TRUE(store_->Start().ok());
    ASSERT_TRUE(pipeline_->Start().ok());

    metrics_ = std::make_unique<ServerMetrics>(
        &registry_, std::vector<std::string>{"orders", "multi", "single"});
    contracts_ = std::make_unique<pipeline::contract::ContractRegistry>(store_.get(),
                                                                        "0123456789abcdef-key");
    ASSERT_TRUE(contracts_->Load().ok());
    std::vector<DatasetConfig> running;
    for (const char* yaml : {kRunningOrders, kRunningMulti, kRunningSingle}) {
      absl::StatusOr<DatasetConfig> ds = ParseDatasetSpec(yaml, "running.yaml", delivery_);
      ASSERT_TRUE(ds.ok()) << ds.status();
      running.push_back(*std::move(ds));
    }
    service_ = std::make_unique<ControlService>(
        store_.get(), pipeline_.get(), metrics_.get(), std::chrono::system_clock::now(),
        storage::Durability::kAsync, contracts_.get(), std::move(running), delivery_);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    stub_ = wharf::v1::Control::NewStub(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
  }

  void TearDown() override {
    // As wharfd: the store answers queued work first, so no reactor is left unfinished.
    if (store_) store_->Stop();
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + 2s);
    if (pipeline_) pipeline_->Stop();
    server_.reset();
    pipeline_.reset();
    contracts_.reset();
    store_.reset();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  // Appends `payloads` to `dataset` and waits for the acks.
  void Append(const std::string& dataset, const std::vector<std::string>& payloads) {
    wharf::v1::ProduceRequest request;
    request.set_dataset(dataset);
    for (const std::string& p : payloads) request.add_records()->set_payload(p);
    std::promise<absl::Status> done;
    store_->Append(std::move(request),
                   [&done](storage::AppendResult r) { done.set_value(r.status); });
    ASSERT_TRUE(done.get_future().get().ok());
  }

  // Ten records, the odd offsets 1, 3, 5, 7, 9 not JSON: five PARSE_ERROR entries.
  void FillOrders() {
    std::vector<std::string> payloads;
    for (int i = 0; i < 10; ++i) {
      payloads.push_back(i % 2 == 0 ? absl::StrCat("{\"n\":", i, "}") : absl::StrCat("bad", i));
    }
    Append("orders", payloads);
    ASSERT_TRUE(WaitUntil([&] { return store_->QuarantineEntries("orders") == 5; }));
    ASSERT_TRUE(WaitUntil([&] { return sinks_["files"]->size() == 5; }));
  }

  template <typename Request, typename Response, typename Call>
  grpc::Status Rpc(Call call, const Request& request, Response* response) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + 30s);
    return ((*stub_).*call)(&context, request, response);
  }
  grpc::Status List(const wharf::v1::ListQuarantineRequest& r,
                    wharf::v1::ListQuarantineResponse* out) {
    return Rpc(&wharf::v1::Control::Stub::ListQuarantine, r, out);
  }
  grpc::Status Get(const std::string& dataset, const std::string& token, QuarantineEntry* out) {
    wharf::v1::GetQuarantineEntryRequest r;
    r.set_dataset(dataset);
    r.set_token(token);
    return Rpc(&wharf::v1::Control::Stub::GetQuarantineEntry, r, out);
  }
  grpc::Status Replay(const wharf::v1::ReplayQuarantineRequest& r,
                      wharf::v1::ReplayQuarantineResponse* out) {
    return Rpc(&wharf::v1::Control::Stub::ReplayQuarantine, r, out);
  }
  grpc::Status Discard(const wharf::v1::DiscardQuarantineRequest& r,
                       wharf::v1::DiscardQuarantineResponse* out) {
    return Rpc(&wharf::v1::Control::Stub::DiscardQuarantine, r, out);
  }
  grpc::Status Pause(const std::string& dataset, const std::string& destination, bool pause) {
    if (pause) {
      wharf::v1::PauseDestinationRequest r;
      r.set_dataset(dataset);
      r.set_destination(destination);
      wharf::v1::PauseDestinationResponse out;
      return Rpc(&wharf::v1::Control::Stub::PauseDestination, r, &out);
    }
    wharf::v1::ResumeDestinationRequest r;
    r.set_dataset(dataset);
    r.set_destination(destination);
    wharf::v1::ResumeDestinationResponse out;
    return Rpc(&wharf::v1::Control::Stub::ResumeDestination, r, &out);
  }

  grpc::Status Apply(const std::string& yaml, bool dry_run, wharf::v1::ApplyContractResponse* out) {
    wharf::v1::ApplyContractRequest r;
    r.set_spec_yaml(yaml);
    r.set_dry_run(dry_run);
    return Rpc(&wharf::v1::Control::Stub::ApplyContract, r, out);
  }
  grpc::Status GetContract(const wharf::v1::GetContractRequest& r,
                           wharf::v1::GetContractResponse* out) {
    return Rpc(&wharf::v1::Control::Stub::GetContract, r, out);
  }

  static std::vector<std::string> Tokens(const wharf::v1::ListQuarantineResponse& r) {
    std::vector<std::string> tokens;
    for (const auto& e : r.entries()) tokens.push_back(e.token());
    return tokens;
  }

  // Follows pages of `request` (limit as given) to the end; returns the tokens and counts calls.
  std::vector<std::string> ListAll(wharf::v1::ListQuarantineRequest request, int* calls) {
    std::vector<std::string> tokens;
    *calls = 0;
    while (*calls < 100) {
      wharf::v1::ListQuarantineResponse page;
      EXPECT_TRUE(List(request, &page).ok());
      ++*calls;
      for (const auto& t : Tokens(page)) tokens.push_back(t);
      if (page.next_page_token().empty()) break;
      request.set_page_token(page.next_page_token());
    }
    return tokens;
  }

  std::string dir_;
  std::map<std::string, std::shared_ptr<Sink>> sinks_;
  std::unique_ptr<storage::StagingStore> store_;
  std::unique_ptr<pipeline::Pipeline> pipeline_;
  prometheus::Registry registry_;
  std::unique_ptr<ServerMetrics> metrics_;
  DeliveryConfig delivery_;
  std::unique_ptr<pipeline::contract::ContractRegistry> contracts_;
  std::unique_ptr<ControlService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<wharf::v1::Control::Stub> stub_;
};

const std::vector<std::string> kAllBad = {"0/1", "0/3", "0/5", "0/7", "0/9"};

#define EXPECT_CODE(status, code)                                             \
  do {                                                                        \
    const grpc::Status s_ = (status);                                         \
    EXPECT_EQ(s_.error_code(), grpc::StatusCode::code) << s_.error_message(); \
  } while (0)

// ---------------------------------------------------------------------------------------------
// ListQuarantine

TEST_F(ControlServiceTest, ListReturnsTokensAndFilters) {
  FillOrders();
  wharf::v1::ListQuarantineRequest request;
  request.set_dataset("orders");
  wharf::v1::ListQuarantineResponse response;
  ASSERT_TRUE(List(request, &response).ok());
  EXPECT_EQ(Tokens(response), kAllBad);
  EXPECT_TRUE(response.next_page_token().empty());
  EXPECT_EQ(response.entries(0).original().record().payload(), "bad1");

  request.set_reason(wharf::v1::PARSE_ERROR);
  ASSERT_TRUE(List(request, &response).ok());
  EXPECT_EQ(Tokens(response), kAllBad);
  request.set_reason(wharf::v1::SCHEMA_VIOLATION);
  response.Clear();
  ASSERT_TRUE(List(request, &response).ok());
  EXPECT_TRUE(Tokens(response).empty());
  EXPECT_TRUE(response.next_page_token().empty());

  // Time filters on quarantine_time: since is inclusive, until exclusive.
  request.set_reason(wharf::v1::QUARANTINE_REASON_UNSPECIFIED);
  wharf::v1::ListQuarantineResponse all;
  ASSERT_TRUE(List(request, &all).ok());
  const google::protobuf::Timestamp first = all.entries(0).quarantine_time();
  *request.mutable_since() = first;
  response.Clear();
  ASSERT_TRUE(List(request, &response).ok());
  EXPECT_EQ(Tokens(response), kAllBad);
  *request.mutable_until() = first;  // [first, first): nothing
  response.Clear();
  ASSERT_TRUE(List(request, &response).ok());
  EXPECT_TRUE(Tokens(response).empty());
  *request.mutable_until() = TimeUtil::GetCurrentTime() + TimeUtil::SecondsToDuration(60);
  response.Clear();
  ASSERT_TRUE(List(request, &response).ok());
  EXPECT_EQ(Tokens(response), kAllBad);
  *request.mutable_since() = TimeUtil::GetCurrentTime() + TimeUtil::SecondsToDuration(30);
  response.Clear();
  ASSERT_TRUE(List(request, &response).ok());
  EXPECT_TRUE(Tokens(response).empty());
}

TEST_F(ControlServiceTest, ListPagesWithAndWithoutFilters) {
  FillOrders();
  for (bool filtered : {false, true}) {
    SCOPED_TRACE(filtered ? "filtered" : "unfiltered");
    wharf::v1::ListQuarantineRequest request;
    request.set_dataset("orders");
    request.set_limit(2);
    if (filtered) request.set_reason(wharf::v1::PARSE_ERROR);
    wharf::v1::ListQuarantineResponse page;
    ASSERT_TRUE(List(request, &page).ok());
    EXPECT_EQ(Tokens(page), (std::vector<std::string>{"0/1", "0/3"}));
    EXPECT_EQ(page.next_page_token(), "0/3");
    request.set_page_token(page.next_page_token());
    page.Clear();
    ASSERT_TRUE(List(request, &page).ok());
    EXPECT_EQ(Tokens(page), (std::vector<std::string>{"0/5", "0/7"}));
    request.set_page_token(page.next_page_token());
    page.Clear();
    ASSERT_TRUE(List(request, &page).ok());
    EXPECT_EQ(Tokens(page), (std::vector<std::string>{"0/9"}));
    EXPECT_TRUE(page.next_page_token().empty());
    // A page that ends exactly at the last entry has no token either.
    request.set_page_token("0/5");
    page.Clear();
    ASSERT_TRUE(List(request, &page).ok());
    EXPECT_EQ(Tokens(page), (std::vector<std::string>{"0/7", "0/9"}));
    EXPECT_TRUE(page.next_page_token().empty());
  }
}

TEST_F(ControlServiceTest, ListBoundsTheScanOfNonMatchingEntries) {
  // More entries than one call scans; none matches the filter.
  const size_t n = ControlService::kMaxListScan + 50;
  for (size_t done = 0; done < n; done += 5000) {
    std::vector<std::string> payloads;
    for (size_t i = done; i < std::min(n, done + 5000); ++i) payloads.push_back("x");
    Append("orders", payloads);
  }
  ASSERT_TRUE(WaitUntil([&] { return store_->QuarantineEntries("orders") == n; }, 60s));
  wharf::v1::ListQuarantineRequest request;
  request.set_dataset("orders");
  request.set_reason(wharf::v1::DESTINATION_REJECTED);
  wharf::v1::ListQuarantineResponse page;
  ASSERT_TRUE(List(request, &page).ok());
  EXPECT_EQ(page.entries_size(), 0);
  // The last scanned entry: the next call continues after it.
  EXPECT_EQ(page.next_page_token(), absl::StrCat("0/", ControlService::kMaxListScan - 1));
  int calls = 0;
  EXPECT_TRUE(ListAll(request, &calls).empty());
  EXPECT_EQ(calls, 2);
  // With a matching filter, paging returns every entry exactly once.
  request.set_reason(wharf::v1::PARSE_ERROR);
  request.set_limit(1000);
  const std::vector<std::string> tokens = ListAll(request, &calls);
  EXPECT_EQ(tokens.size(), n);
  EXPECT_EQ(std::set<std::string>(tokens.begin(), tokens.end()).size(), n);
  EXPECT_EQ(calls, 11);
}

TEST_F(ControlServiceTest, ListRefusesMalformedRequests) {
  FillOrders();
  wharf::v1::ListQuarantineResponse response;
  wharf::v1::ListQuarantineRequest request;
  EXPECT_CODE(List(request, &response), INVALID_ARGUMENT);  // no dataset
  request.set_dataset("nope");
  EXPECT_CODE(List(request, &response), NOT_FOUND);
  request.set_dataset("orders");
  request.set_limit(1001);
  EXPECT_CODE(List(request, &response), INVALID_ARGUMENT);
  request.set_limit(10);
  for (const char* token :
       {"x", "0", "0/", "/1", "0/1/", "0/-1", "a/b", "0/1/bad name", "99999999999/1"}) {
    SCOPED_TRACE(token);
    request.set_page_token(token);
    EXPECT_CODE(List(request, &response), INVALID_ARGUMENT);
  }
  request.set_page_token("");
  request.set_reason(static_cast<wharf::v1::QuarantineReason>(99));
  EXPECT_CODE(List(request, &response), INVALID_ARGUMENT);
  request.set_reason(wharf::v1::PARSE_ERROR);
  request.mutable_since()->set_seconds(100);
  request.mutable_until()->set_seconds(50);
  EXPECT_CODE(List(request, &response), INVALID_ARGUMENT);  // until before since
  request.clear_until();
  request.mutable_since()->set_nanos(-1);
  EXPECT_CODE(List(request, &response), INVALID_ARGUMENT);
  request.mutable_since()->set_nanos(0);
  request.mutable_since()->set_seconds(int64_t{1} << 60);
  EXPECT_CODE(List(request, &response), INVALID_ARGUMENT);
}

// ---------------------------------------------------------------------------------------------
// GetQuarantineEntry

TEST_F(ControlServiceTest, GetEntryReturnsTheOriginalRecord) {
  FillOrders();
  QuarantineEntry entry;
  ASSERT_TRUE(Get("orders", "0/3", &entry).ok());
  EXPECT_EQ(entry.token(), "0/3");
  EXPECT_EQ(entry.offset(), 3u);
  EXPECT_EQ(entry.reason(), wharf::v1::PARSE_ERROR);
  EXPECT_EQ(entry.original().record().payload(), "bad3");
  EXPECT_EQ(entry.attempts(), 1u);
  EXPECT_FALSE(entry.message().empty());
}

TEST_F(ControlServiceTest, GetEntryRefusesMalformedRequests) {
  FillOrders();
  QuarantineEntry entry;
  EXPECT_CODE(Get("", "0/1", &entry), INVALID_ARGUMENT);
  EXPECT_CODE(Get("nope", "0/1", &entry), NOT_FOUND);
  EXPECT_CODE(Get("orders", "", &entry), INVALID_ARGUMENT);
  EXPECT_CODE(Get("orders", "abc", &entry), INVALID_ARGUMENT);
  EXPECT_CODE(Get("orders", "0/x", &entry), INVALID_ARGUMENT);
  EXPECT_CODE(Get("orders", "0/1/a b", &entry), INVALID_ARGUMENT);
  EXPECT_CODE(Get("orders", "0/2", &entry), NOT_FOUND);  // delivered, not quarantined
  EXPECT_CODE(Get("orders", "7/1", &entry), NOT_FOUND);  // no such partition
  EXPECT_CODE(Get("orders", "0/1/files", &entry), NOT_FOUND);
}

// ---------------------------------------------------------------------------------------------
// ReplayQuarantine

TEST_F(ControlServiceTest, DryRunUsesTheCurrentProcessor) {
  FillOrders();
  wharf::v1::ReplayQuarantineRequest request;
  request.set_dataset("orders");
  request.set_all(true);
  request.set_dry_run(true);
  wharf::v1::ReplayQuarantineResponse response;
  ASSERT_TRUE(Replay(request, &response).ok());
  EXPECT_EQ(response.matched(), 5u);
  EXPECT_EQ(response.would_fail(), 5u);
  EXPECT_EQ(response.would_pass(), 0u);
  EXPECT_EQ(response.replayed(), 0u);
  ASSERT_EQ(response.sample_failures_size(), 5);
  EXPECT_TRUE(absl::StartsWith(response.sample_failures(0), "0/1: PARSE_ERROR: "))
      << response.sample_failures(0);
  EXPECT_EQ(store_->QuarantineEntries("orders"), 5u);  // nothing changed

  // Named tokens: unknown ones are not matched.
  request.set_all(false);
  request.add_tokens("0/1");
  request.add_tokens("0/2");
  request.add_tokens("0/1");  // duplicates count once
  response.Clear();
  ASSERT_TRUE(Replay(request, &response).ok());
  EXPECT_EQ(response.matched(), 1u);
  EXPECT_EQ(response.would_fail(), 1u);

  // A new processor (raw: passes anything) changes the verdict, and a real replay then
  // delivers the records.
  ASSERT_TRUE(pipeline_->SetProcessor("orders", pipeline::NewRawProcessor()).ok());
  request.clear_tokens();
  request.set_all(true);
  response.Clear();
  ASSERT_TRUE(Replay(request, &response).ok());
  EXPECT_EQ(response.would_pass(), 5u);
  EXPECT_EQ(response.would_fail(), 0u);
  EXPECT_EQ(response.sample_failures_size(), 0);

  request.set_dry_run(false);
  response.Clear();
  ASSERT_TRUE(Replay(request, &response).ok());
  EXPECT_EQ(response.matched(), 5u);
  EXPECT_EQ(response.replayed(), 5u);
  EXPECT_FALSE(response.truncated());
  ASSERT_TRUE(WaitUntil([&] { return sinks_["files"]->size() == 10; }));
  EXPECT_EQ(store_->QuarantineEntries("orders"), 0u);
  const std::vector<std::string> payloads = sinks_["files"]->payloads();
  EXPECT_EQ(std::set<std::string>(payloads.begin() + 5, payloads.end()),
            (std::set<std::string>{"bad1", "bad3", "bad5", "bad7", "bad9"}));
}

TEST_F(ControlServiceTest, ReplayOfParseErrorsQuarantinesThemAgain) {
  FillOrders();
  wharf::v1::ReplayQuarantineRequest request;
  request.set_dataset("orders");
  request.add_tokens("0/3");
  wharf::v1::ReplayQuarantineResponse response;
  ASSERT_TRUE(Replay(request, &response).ok());
  EXPECT_EQ(response.matched(), 1u);
  EXPECT_EQ(response.replayed(), 1u);
  // Re-appended at offset 10, processed by the same processor, quarantined again.
  QuarantineEntry entry;
  ASSERT_TRUE(WaitUntil([&] { return Get("orders", "0/10", &entry).ok(); }));
  EXPECT_EQ(entry.attempts(), 2u);
  EXPECT_EQ(entry.original().record().payload(), "bad3");
  EXPECT_TRUE(entry.original().replayed());
  EXPECT_EQ(entry.original().replay_offset(), 3u);
  EXPECT_CODE(Get("orders", "0/3", &entry), NOT_FOUND);
  EXPECT_EQ(store_->QuarantineEntries("orders"), 5u);
  // Replaying a token that is gone replays nothing.
  response.Clear();
  ASSERT_TRUE(Replay(request, &response).ok());
  EXPECT_EQ(response.matched(), 0u);
  EXPECT_EQ(response.replayed(), 0u);
}

TEST_F(ControlServiceTest, ReplayRefusesDestinationRejectedWithSeveralDestinations) {
  Append("multi", {"{\"v\":\"fine\"}", "{\"v\":\"reject\"}"});
  Append("single", {"{\"v\":\"reject\"}"});
  ASSERT_TRUE(WaitUntil([&] { return store_->QuarantineEntries("multi") == 1; }));
  ASSERT_TRUE(WaitUntil([&] { return store_->QuarantineEntries("single") == 1; }));
  QuarantineEntry entry;
  ASSERT_TRUE(Get("multi", "0/1/picky", &entry).ok());
  EXPECT_EQ(entry.reason(), wharf::v1::DESTINATION_REJECTED);
  EXPECT_EQ(entry.token(), "0/1/picky");
  // "ok" has the record; a replay would deliver it there again.
  ASSERT_TRUE(WaitUntil([&] { return sinks_["ok"]->size() == 2; }));

  for (bool dry_run : {false, true}) {
    for (bool all : {false, true}) {
      SCOPED_TRACE(absl::StrCat("dry_run=", dry_run, " all=", all));
      wharf::v1::ReplayQuarantineRequest request;
      request.set_dataset("multi");
      request.set_dry_run(dry_run);
      if (all) {
        request.set_all(true);
      } else {
        request.add_tokens("0/1/picky");
      }
      wharf::v1::ReplayQuarantineResponse response;
      const grpc::Status status = Replay(request, &response);
      EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
      EXPECT_TRUE(absl::StrContains(status.error_message(), "deliver it again"))
          << status.error_message();
    }
  }
  EXPECT_EQ(store_->QuarantineEntries("multi"), 1u);
  EXPECT_EQ(sinks_["ok"]->size(), 2u);
  // Selecting other reasons only is fine.
  wharf::v1::ReplayQuarantineRequest request;
  request.set_dataset("multi");
  request.set_reason(wharf::v1::PARSE_ERROR);
  wharf::v1::ReplayQuarantineResponse response;
  ASSERT_TRUE(Replay(request, &response).ok());
  EXPECT_EQ(response.matched(), 0u);

  // With a single destination, a replay is allowed (and here rejected again).
  request.Clear();
  request.set_dataset("single");
  request.add_tokens("0/0/picky");
  response.Clear();
  ASSERT_TRUE(Replay(request, &response).ok());
  EXPECT_EQ(response.replayed(), 1u);
  ASSERT_TRUE(WaitUntil([&] { return Get("single", "0/1/picky", &entry).ok(); }));
  EXPECT_TRUE(entry.original().replayed());
  EXPECT_EQ(entry.original().replay_offset(), 0u);
  EXPECT_CODE(Get("single", "0/0/picky", &entry), NOT_FOUND);
}

TEST_F(ControlServiceTest, ReplayRefusesMalformedRequests) {
  FillOrders();
  wharf::v1::ReplayQuarantineResponse response;
  wharf::v1::ReplayQuarantineRequest request;
  request.set_all(true);
  EXPECT_CODE(Replay(request, &response), INVALID_ARGUMENT);  // no dataset
  request.set_dataset("nope");
  EXPECT_CODE(Replay(request, &response), NOT_FOUND);
  request.set_dataset("orders");
  request.set_all(false);
  EXPECT_CODE(Replay(request, &response), INVALID_ARGUMENT);  // nothing selected
  request.set_dry_run(true);
  EXPECT_CODE(Replay(request, &response), INVALID_ARGUMENT);
  request.set_all(true);
  request.add_tokens("0/1");
  EXPECT_CODE(Replay(request, &response), INVALID_ARGUMENT);  // all and tokens
  request.set_all(false);
  request.add_tokens("zero/one");
  EXPECT_CODE(Replay(request, &response), INVALID_ARGUMENT);
  request.clear_tokens();
  request.set_reason(static_cast<wharf::v1::QuarantineReason>(-3));
  EXPECT_CODE(Replay(request, &response), INVALID_ARGUMENT);
  request.set_reason(wharf::v1::QUARANTINE_REASON_UNSPECIFIED);
  for (size_t i = 0; i <= ControlService::kMaxTokens; ++i) request.add_tokens("0/1");
  EXPECT_CODE(Replay(request, &response), INVALID_ARGUMENT);  // too many tokens
  EXPECT_EQ(store_->QuarantineEntries("orders"), 5u);
}

// ---------------------------------------------------------------------------------------------
// DiscardQuarantine

TEST_F(ControlServiceTest, DiscardByTokenReasonAndAll) {
  FillOrders();
  wharf::v1::DiscardQuarantineRequest request;
  request.set_dataset("orders");
  request.add_tokens("0/3");
  request.add_tokens("0/2");  // not quarantined: not counted
  wharf::v1::DiscardQuarantineResponse response;
  ASSERT_TRUE(Discard(request, &response).ok());
  EXPECT_EQ(response.discarded(), 1u);
  QuarantineEntry entry;
  EXPECT_CODE(Get("orders", "0/3", &entry), NOT_FOUND);
  response.Clear();
  ASSERT_TRUE(Discard(request, &response).ok());  // again: harmless
  EXPECT_EQ(response.discarded(), 0u);

  // Tokens with a reason filter: only matching entries go.
  request.clear_tokens();
  request.add_tokens("0/5");
  request.set_reason(wharf::v1::SCHEMA_VIOLATION);
  response.Clear();
  ASSERT_TRUE(Discard(request, &response).ok());
  EXPECT_EQ(response.discarded(), 0u);
  request.clear_tokens();
  response.Clear();
  ASSERT_TRUE(Discard(request, &response).ok());  // every SCHEMA_VIOLATION: none
  EXPECT_EQ(response.discarded(), 0u);
  EXPECT_EQ(store_->QuarantineEntries("orders"), 4u);

  request.set_reason(wharf::v1::QUARANTINE_REASON_UNSPECIFIED);
  request.set_all(true);
  response.Clear();
  ASSERT_TRUE(Discard(request, &response).ok());
  EXPECT_EQ(response.discarded(), 4u);
  EXPECT_FALSE(response.truncated());
  EXPECT_EQ(store_->QuarantineEntries("orders"), 0u);
  wharf::v1::ListQuarantineRequest list;
  list.set_dataset("orders");
  wharf::v1::ListQuarantineResponse listed;
  ASSERT_TRUE(List(list, &listed).ok());
  EXPECT_EQ(listed.entries_size(), 0);
}

TEST_F(ControlServiceTest, DiscardRefusesMalformedRequests) {
  FillOrders();
  wharf::v1::DiscardQuarantineResponse response;
  wharf::v1::DiscardQuarantineRequest request;
  request.set_all(true);
  EXPECT_CODE(Discard(request, &response), INVALID_ARGUMENT);  // no dataset
  request.set_dataset("nope");
  EXPECT_CODE(Discard(request, &response), NOT_FOUND);
  request.set_dataset("orders");
  request.set_all(false);
  EXPECT_CODE(Discard(request, &response), INVALID_ARGUMENT);  // empty request
  request.set_all(true);
  request.add_tokens("0/1");
  EXPECT_CODE(Discard(request, &response), INVALID_ARGUMENT);  // all and tokens
  request.set_all(false);
  request.add_tokens("1");
  EXPECT_CODE(Discard(request, &response), INVALID_ARGUMENT);  // malformed token
  request.clear_tokens();
  request.set_reason(static_cast<wharf::v1::QuarantineReason>(42));
  EXPECT_CODE(Discard(request, &response), INVALID_ARGUMENT);
  EXPECT_EQ(store_->QuarantineEntries("orders"), 5u);
}

// ---------------------------------------------------------------------------------------------
// PauseDestination / ResumeDestination

TEST_F(ControlServiceTest, PauseStopsDeliveryAndResumeRestartsIt) {
  ASSERT_TRUE(Pause("orders", "files", true).ok());
  auto state = [&] { return pipeline_->DestinationStatuses("orders").at(0).state(); };
  EXPECT_EQ(state(), wharf::v1::PAUSED);
  Append("orders", {"{\"a\":1}", "{\"a\":2}"});
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(sinks_["files"]->size(), 0u);
  ASSERT_TRUE(Pause("orders", "files", true).ok());  // pausing twice is fine
  ASSERT_TRUE(Pause("orders", "files", false).ok());
  ASSERT_TRUE(WaitUntil([&] { return sinks_["files"]->size() == 2; }));
  EXPECT_NE(state(), wharf::v1::PAUSED);
}

TEST_F(ControlServiceTest, PauseRefusesMalformedRequests) {
  for (bool pause : {true, false}) {
    SCOPED_TRACE(pause ? "pause" : "resume");
    EXPECT_CODE(Pause("", "files", pause), INVALID_ARGUMENT);
    EXPECT_CODE(Pause("nope", "files", pause), NOT_FOUND);
    EXPECT_CODE(Pause("orders", "", pause), INVALID_ARGUMENT);
    EXPECT_CODE(Pause("orders", "nope", pause), NOT_FOUND);
    EXPECT_CODE(Pause("orders", "picky", pause), NOT_FOUND);  // another dataset's
  }
}

// ---------------------------------------------------------------------------------------------
// ApplyContract / GetContract

// The orders spec with `contract` (YAML lines, 2-space indent under `contract:`).
std::string OrdersSpec(const std::string& contract) {
  return absl::StrCat(kRunningOrders, "contract:\n", contract);
}

// n: a non-negative integer below `limit`; renamed to num.
std::string LimitContract(int limit) {
  return absl::StrCat(R"(  schema:
    type: object
    required: [n]
    properties:
      n: {type: integer, minimum: 0}
  rules:
    - name: small
      expr: 'n < )",
                      limit, R"('
  transforms:
    - op: rename
      path: /n
      to: /num
)");
}

std::vector<std::string> Lines(const std::string& text) {
  return absl::StrSplit(text, '\n', absl::SkipEmpty());
}

TEST_F(ControlServiceTest, ApplyInstallsTheContractForLaterRecords) {
  const std::string spec = OrdersSpec(LimitContract(100));
  wharf::v1::ApplyContractResponse response;
  ASSERT_TRUE(Apply(spec, false, &response).ok());
  EXPECT_TRUE(response.changed());
  EXPECT_EQ(response.version().dataset(), "orders");
  EXPECT_EQ(response.version().schema_version(), 1u);
  EXPECT_EQ(response.version().transform_version(), 1u);
  EXPECT_EQ(response.version().source_yaml(), spec);
  EXPECT_FALSE(response.notes().empty());
  ASSERT_NE(pipeline_->GetProcessor("orders"), nullptr);
  EXPECT_EQ(pipeline_->GetProcessor("orders"), contracts_->Current("orders"));
  EXPECT_EQ(pipeline_->GetProcessor("orders")->schema_version(), 1u);

  Append("orders", {R"({"n":5})", R"({"n":500})", R"({"n":-1})", R"({"x":1})", "not json"});
  ASSERT_TRUE(WaitUntil([&] { return store_->QuarantineEntries("orders") == 4; }));
  ASSERT_TRUE(WaitUntil([&] { return sinks_["files"]->size() == 1; }));
  EXPECT_EQ(sinks_["files"]->payloads(), std::vector<std::string>{R"({"num":5})"});
  wharf::v1::ListQuarantineRequest list;
  list.set_dataset("orders");
  wharf::v1::ListQuarantineResponse entries;
  ASSERT_TRUE(List(list, &entries).ok());
  ASSERT_EQ(entries.entries_size(), 4);
  EXPECT_EQ(entries.entries(0).reason(), wharf::v1::RULE_VIOLATION);
  EXPECT_EQ(entries.entries(0).rule(), "small");
  EXPECT_EQ(entries.entries(1).reason(), wharf::v1::SCHEMA_VIOLATION);
  EXPECT_EQ(entries.entries(1).field_path(), "/n");
  EXPECT_EQ(entries.entries(2).reason(), wharf::v1::SCHEMA_VIOLATION);
  EXPECT_EQ(entries.entries(3).reason(), wharf::v1::PARSE_ERROR);
  for (const auto& e : entries.entries()) {
    EXPECT_EQ(e.schema_version(), 1u);
    EXPECT_EQ(e.transform_version(), 1u);
  }

  // A relaxed rule: the dry run of a replay already uses it.
  ASSERT_TRUE(Apply(OrdersSpec(LimitContract(1000)), false, &response).ok());
  EXPECT_EQ(response.version().schema_version(), 2u);
  EXPECT_EQ(response.version().transform_version(), 1u);
  wharf::v1::ReplayQuarantineRequest replay;
  replay.set_dataset("orders");
  replay.set_reason(wharf::v1::RULE_VIOLATION);
  replay.set_dry_run(true);
  wharf::v1::ReplayQuarantineResponse dry;
  ASSERT_TRUE(Replay(replay, &dry).ok());
  EXPECT_EQ(dry.matched(), 1u);
  EXPECT_EQ(dry.would_pass(), 1u);
}

TEST_F(ControlServiceTest, ApplyDryRunStoresAndInstallsNothing) {
  const auto before = pipeline_->GetProcessor("orders");
  wharf::v1::ApplyContractResponse response;
  ASSERT_TRUE(Apply(OrdersSpec(LimitContract(100)), true, &response).ok());
  EXPECT_TRUE(response.changed());
  EXPECT_EQ(response.version().schema_version(), 1u);
  EXPECT_TRUE(std::any_of(response.notes().begin(), response.notes().end(),
                          [](const std::string& n) { return absl::StrContains(n, "dry run"); }));
  EXPECT_EQ(pipeline_->GetProcessor("orders"), before);
  EXPECT_EQ(contracts_->Current("orders"), nullptr);
  auto stored = store_->ListMeta(pipeline::contract::ContractRegistry::kKeyPrefix);
  ASSERT_TRUE(stored.ok());
  EXPECT_TRUE(stored->empty());
}

TEST_F(ControlServiceTest, ApplyingTheSameSpecTwiceChangesNothing) {
  wharf::v1::ApplyContractResponse first, second;
  ASSERT_TRUE(Apply(OrdersSpec(LimitContract(100)), false, &first).ok());
  const auto installed = pipeline_->GetProcessor("orders");
  // Same contract, other YAML text (a comment): still unchanged.
  ASSERT_TRUE(Apply("# again\n" + OrdersSpec(LimitContract(100)), false, &second).ok());
  EXPECT_FALSE(second.changed());
  EXPECT_EQ(second.version().schema_version(), 1u);
  EXPECT_EQ(second.version().transform_version(), 1u);
  EXPECT_EQ(pipeline_->GetProcessor("orders"), installed);
  EXPECT_EQ(contracts_->History("orders").size(), 1u);
}

TEST_F(ControlServiceTest, ApplyListsEveryCompileError) {
  const std::string spec = OrdersSpec(R"(  schema:
    type: object
    properties:
      n: {type: integer, minimum: "zero"}
  rules:
    - name: first
      expr: 'n <'
    - name: second
      expr: '(( n'
)");
  wharf::v1::ApplyContractResponse response;
  const grpc::Status status = Apply(spec, false, &response);
  ASSERT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  const std::vector<std::string> lines = Lines(status.error_message());
  // A header and one line per error.
  ASSERT_GE(lines.size(), 4u) << status.error_message();
  EXPECT_TRUE(absl::StrContains(lines[0], "does not compile")) << status.error_message();
  int schema = 0, first = 0, second = 0;
  for (const std::string& line : lines) {
    schema += absl::StartsWith(line, "schema: ");
    first += absl::StartsWith(line, "rules[0] (first)");
    second += absl::StartsWith(line, "rules[1] (second)");
  }
  EXPECT_EQ(schema, 1) << status.error_message();
  EXPECT_EQ(first, 1) << status.error_message();
  EXPECT_EQ(second, 1) << status.error_message();
  EXPECT_EQ(contracts_->Current("orders"), nullptr);
  // The dry run refuses the same way.
  EXPECT_CODE(Apply(spec, true, &response), INVALID_ARGUMENT);
}

TEST_F(ControlServiceTest, ApplyListsEveryIncompatibility) {
  wharf::v1::ApplyContractResponse response;
  ASSERT_TRUE(Apply(OrdersSpec(LimitContract(100)), false, &response).ok());
  const auto installed = pipeline_->GetProcessor("orders");
  // Records valid before are refused now in two ways: a new required field, n's type changed.
  const std::string spec = OrdersSpec(R"(  schema:
    type: object
    required: [n, m]
    properties:
      n: {type: string}
      m: {type: string}
)");
  for (bool dry_run : {true, false}) {
    const grpc::Status status = Apply(spec, dry_run, &response);
    ASSERT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << status.error_message();
    const std::vector<std::string> lines = Lines(status.error_message());
    EXPECT_GE(lines.size(), 3u) << status.error_message();
    EXPECT_TRUE(absl::StrContains(status.error_message(), "BACKWARD")) << status.error_message();
    EXPECT_TRUE(absl::StrContains(status.error_message(), "/n")) << status.error_message();
    EXPECT_TRUE(absl::StrContains(status.error_message(), "m")) << status.error_message();
  }
  EXPECT_EQ(pipeline_->GetProcessor("orders"), installed);
  EXPECT_EQ(contracts_->History("orders").size(), 1u);
}

TEST_F(ControlServiceTest, ApplyRefusesWhatIsNotAContractChange) {
  wharf::v1::ApplyContractResponse response;
  // Unknown dataset.
  std::string spec = OrdersSpec(LimitContract(100));
  spec.replace(spec.find("name: orders"), 12, "name: nope");
  EXPECT_CODE(Apply(spec, false, &response), NOT_FOUND);

  // Another destination directory, and another partition count.
  spec = OrdersSpec(LimitContract(100));
  spec.replace(spec.find("/nonexistent/orders"), 19, "/elsewhere");
  spec.replace(spec.find("partitions: 1"), 13, "partitions: 2");
  grpc::Status status = Apply(spec, false, &response);
  ASSERT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << status.error_message();
  EXPECT_TRUE(absl::StrContains(status.error_message(), "destination \"files\" differs"))
      << status.error_message();
  EXPECT_TRUE(absl::StrContains(status.error_message(), "partitions (running 1, document 2)"))
      << status.error_message();
  EXPECT_TRUE(absl::StrContains(status.error_message(), "restart")) << status.error_message();

  // A destination more; a quarantine quota.
  spec = absl::StrCat(kRunningOrders,
                      "  - name: extra\n    type: file\n    directory: /nonexistent/x\n"
                      "quarantine:\n  quota: 1MiB\ncontract:\n",
                      LimitContract(100));
  status = Apply(spec, true, &response);
  ASSERT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << status.error_message();
  EXPECT_TRUE(absl::StrContains(status.error_message(),
                                "destination \"extra\" is not in the running configuration"))
      << status.error_message();
  EXPECT_TRUE(absl::StrContains(status.error_message(), "quarantine.quota"))
      << status.error_message();

  // No contract.
  status = Apply(kRunningOrders, false, &response);
  ASSERT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  EXPECT_TRUE(absl::StrContains(status.error_message(), "no contract")) << status.error_message();

  // Malformed documents.
  for (const std::string& bad :
       {std::string(""), std::string("name: [orders"), std::string("- a\n- b\n"),
        std::string("name: orders\n\tpartitions: 1\n"),
        OrdersSpec("  schema: {type: object}\n  bogus: 1\n"), OrdersSpec("  rules: {name: x}\n")}) {
    SCOPED_TRACE(bad);
    EXPECT_CODE(Apply(bad, false, &response), INVALID_ARGUMENT);
  }
  EXPECT_EQ(contracts_->Current("orders"), nullptr);
  EXPECT_TRUE(contracts_->History("nope").empty());
}

TEST_F(ControlServiceTest, GetContractCurrentVersionAndHistory) {
  wharf::v1::ApplyContractResponse applied;
  ASSERT_TRUE(Apply(OrdersSpec(LimitContract(100)), false, &applied).ok());
  ASSERT_TRUE(Apply(OrdersSpec(LimitContract(200)), false, &applied).ok());
  ASSERT_EQ(applied.version().schema_version(), 2u);

  wharf::v1::GetContractRequest request;
  request.set_dataset("orders");
  wharf::v1::GetContractResponse response;
  ASSERT_TRUE(GetContract(request, &response).ok());
  ASSERT_EQ(response.versions_size(), 1);
  EXPECT_EQ(response.versions(0).schema_version(), 2u);
  EXPECT_EQ(response.versions(0).source_yaml(), OrdersSpec(LimitContract(200)));
  EXPECT_TRUE(response.versions(0).has_applied_time());

  request.set_schema_version(1);
  response.Clear();
  ASSERT_TRUE(GetContract(request, &response).ok());
  ASSERT_EQ(response.versions_size(), 1);
  EXPECT_EQ(response.versions(0).schema_version(), 1u);
  EXPECT_EQ(response.versions(0).source_yaml(), OrdersSpec(LimitContract(100)));

  request.set_schema_version(7);
  EXPECT_CODE(GetContract(request, &response), NOT_FOUND);

  request.clear_schema_version();
  request.set_history(true);
  response.Clear();
  ASSERT_TRUE(GetContract(request, &response).ok());
  ASSERT_EQ(response.versions_size(), 2);
  EXPECT_EQ(response.versions(0).schema_version(), 1u);
  EXPECT_EQ(response.versions(1).schema_version(), 2u);

  // No contract, unknown dataset, no dataset.
  for (bool history : {false, true}) {
    request.set_history(history);
    request.set_dataset("multi");
    EXPECT_CODE(GetContract(request, &response), NOT_FOUND);
    request.set_dataset("nope");
    EXPECT_CODE(GetContract(request, &response), NOT_FOUND);
    request.set_dataset("");
    EXPECT_CODE(GetContract(request, &response), INVALID_ARGUMENT);
  }
}

TEST_F(ControlServiceTest, ConcurrentAppliesLeaveTheNewestInstalled) {
  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE(round);
    std::vector<std::thread> threads;
    std::atomic<int> failures{0};
    for (int t = 0; t < 6; ++t) {
      threads.emplace_back([&, t] {
        wharf::v1::ApplyContractResponse response;
        // Distinct limits: every apply is a new schema version.
        if (!Apply(OrdersSpec(LimitContract(1000 + round * 10 + t)), false, &response).ok()) {
          ++failures;
        }
      });
    }
    for (auto& th : threads) th.join();
    EXPECT_EQ(failures.load(), 0);
    const auto history = contracts_->History("orders");
    ASSERT_EQ(history.size(), static_cast<size_t>(6 * (round + 1)));
    ASSERT_NE(pipeline_->GetProcessor("orders"), nullptr);
    EXPECT_EQ(pipeline_->GetProcessor("orders"), contracts_->Current("orders"));
    EXPECT_EQ(pipeline_->GetProcessor("orders")->schema_version(), history.back().schema_version());
  }
}

}  // namespace
}  // namespace wharf::server