#include "pipeline/destinations/wharf_forward_destination.h"

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/support/wharfd_process.h"
#include "wharf/v1/record.pb.h"

namespace wharf::pipeline {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using wharf::testing::ReadDestination;
using wharf::testing::TempDir;
using wharf::testing::WaitFor;
using wharf::testing::WharfdConfig;
using wharf::testing::WharfdProcess;

constexpr char kSource[] = "edge";
constexpr char kCentral[] = "central";

// pipeline_test links GoogleTest without gMock, hence no HasSubstr.
::testing::AssertionResult MessageContains(const absl::Status& status, const std::string& part) {
  const std::string message(status.message());
  if (message.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "status " << status << " does not mention \"" << part << "\"";
}

std::string PayloadFor(uint32_t partition, uint64_t offset, size_t pad = 0) {
  return absl::StrCat("{\"p\":", partition, ",\"o\":", offset, ",\"pad\":\"", std::string(pad, 'x'),
                      "\"}");
}

// A batch of the source dataset with a record at each of `offsets` (increasing), covering
// [first, last] (default: the first and last of `offsets`). `pad` makes payloads larger.
wharf::v1::StoredBatch MakeBatch(uint32_t partition, const std::vector<uint64_t>& offsets,
                                 size_t pad = 0, std::optional<uint64_t> first = std::nullopt,
                                 std::optional<uint64_t> last = std::nullopt) {
  wharf::v1::StoredBatch batch;
  wharf::v1::BatchManifest* m = batch.mutable_manifest();
  const uint64_t f = first.value_or(offsets.empty() ? 0 : offsets.front());
  const uint64_t l = last.value_or(offsets.empty() ? 0 : offsets.back());
  m->set_batch_id(absl::StrCat(kSource, ".p", partition, ".", f, "-", l));
  m->set_dataset(kSource);
  m->set_partition(partition);
  m->set_first_offset(f);
  m->set_last_offset(l);
  m->set_record_count(offsets.size());
  for (uint64_t o : offsets) {
    wharf::v1::BatchRecord* r = batch.add_records();
    r->set_offset(o);
    r->set_key(absl::StrCat("k", o % 7));
    r->set_payload(PayloadFor(partition, o, pad));
    r->mutable_event_time()->set_seconds(1700000000 + static_cast<int64_t>(o));
    (*r->mutable_headers())["h"] = "v";
  }
  return batch;
}

std::vector<uint64_t> Range(uint64_t first, uint64_t last) {
  std::vector<uint64_t> v;
  for (uint64_t o = first; o <= last; ++o) v.push_back(o);
  return v;
}

// The sub-batch of `batch` holding the records with offsets in [first, last], with the id the
// pipeline gives sub-batches.
wharf::v1::StoredBatch SubBatch(const wharf::v1::StoredBatch& batch, uint64_t first,
                                uint64_t last) {
  wharf::v1::StoredBatch sub;
  *sub.mutable_manifest() = batch.manifest();
  sub.mutable_manifest()->set_batch_id(
      absl::StrCat(batch.manifest().batch_id(), "/", first, "-", last));
  sub.mutable_manifest()->set_first_offset(first);
  sub.mutable_manifest()->set_last_offset(last);
  for (const auto& r : batch.records()) {
    if (r.offset() >= first && r.offset() <= last) *sub.add_records() = r;
  }
  sub.mutable_manifest()->set_record_count(sub.records_size());
  return sub;
}

class WharfForwardDestinationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_.data_dir = tmp_.path() + "/central";
    config_.out_dir = tmp_.path() + "/out";
    config_.partitions = 2;
    config_.datasets = {kCentral};
  }

  void StartCentral(const std::function<void(WharfdConfig&)>& tweak = nullptr) {
    if (tweak) tweak(config_);
    central_ = std::make_unique<WharfdProcess>(config_);
    absl::Status st = central_->Start();
    ASSERT_TRUE(st.ok()) << st;
  }

  WharfForwardOptions Options() const {
    WharfForwardOptions o;
    o.name = "to-central";
    o.node_id = "edge-1";
    o.target = central_ ? central_->target() : absl::StrCat("127.0.0.1:", config_.port);
    o.target_dataset = kCentral;
    o.rpc_timeout = seconds(10);
    return o;
  }

  std::unique_ptr<WharfForwardDestination> MakeDestination(
      const std::function<void(WharfForwardOptions&)>& tweak = nullptr) const {
    WharfForwardOptions o = Options();
    if (tweak) tweak(o);
    auto d = WharfForwardDestination::Create(o);
    EXPECT_TRUE(d.ok()) << d.status();
    return d.ok() ? std::move(*d) : nullptr;
  }

  wharf::v1::DatasetStatus CentralStatus() {
    wharf::v1::GetStatusRequest req;
    req.add_datasets(kCentral);
    auto st = central_->control().GetStatus(req, seconds(5));
    EXPECT_TRUE(st.ok()) << st.status();
    if (!st.ok() || st->datasets_size() != 1) return {};
    return st->datasets(0);
  }

  // How many times each payload is in the central's file destination.
  std::map<std::string, int> CentralFiles() const {
    std::map<std::string, int> counts;
    for (const auto& f : ReadDestination(config_.out_dir, kCentral)) {
      for (const auto& line : f.lines) ++counts[line];
    }
    return counts;
  }

  // Waits until the central's file destination holds `expected` records (its delivery counters
  // restart with the process, the files do not), then returns CentralFiles().
  std::map<std::string, int> CentralPayloads(uint64_t expected) {
    auto lines = [&] {
      uint64_t n = 0;
      for (const auto& [payload, count] : CentralFiles()) n += count;
      return n;
    };
    EXPECT_TRUE(WaitFor([&] { return lines() >= expected; }, seconds(30)))
        << "the central's files hold " << lines() << " of " << expected << " records";
    return CentralFiles();
  }

  // Every record of `batches` is at the central exactly once, and nothing else is.
  void ExpectExactlyOnce(const std::vector<wharf::v1::StoredBatch>& batches) {
    std::map<std::string, int> want;
    for (const auto& b : batches) {
      for (const auto& r : b.records()) want[r.payload()] = 1;
    }
    EXPECT_EQ(CentralStatus().records_ingested(), want.size());
    EXPECT_EQ(CentralPayloads(want.size()), want);
  }

  TempDir tmp_;
  WharfdConfig config_;
  std::unique_ptr<WharfdProcess> central_;
};

TEST_F(WharfForwardDestinationTest, DeliversABatch) {
  StartCentral();
  auto dest = MakeDestination();
  ASSERT_NE(dest, nullptr);
  EXPECT_EQ(dest->type(), "wharf");
  const auto batch = MakeBatch(0, Range(0, 9));
  DeliveryReport report;
  absl::Status st = dest->Deliver(batch, &report);
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_FALSE(report.already_delivered);
  EXPECT_EQ(report.retry_after, milliseconds(0));
  // "<central partition>/<offset>" of the first record.
  unsigned partition = 99;
  unsigned long long offset = 99;
  char rest = 0;
  EXPECT_EQ(std::sscanf(report.commit_id.c_str(), "%u/%llu%c", &partition, &offset, &rest), 2)
      << report.commit_id;
  EXPECT_LT(partition, config_.partitions);
  ExpectExactlyOnce({batch});
  EXPECT_EQ(CentralStatus().duplicate_requests(), 0u);
}

TEST_F(WharfForwardDestinationTest, SourceDatasetIsTheDefaultTarget) {
  config_.datasets = {kSource};
  StartCentral();
  auto dest = MakeDestination([](WharfForwardOptions& o) { o.target_dataset.clear(); });
  ASSERT_NE(dest, nullptr);
  DeliveryReport report;
  ASSERT_TRUE(dest->Deliver(MakeBatch(1, Range(3, 5)), &report).ok());
  wharf::v1::GetStatusRequest req;
  req.add_datasets(kSource);
  auto status = central_->control().GetStatus(req, seconds(5));
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_EQ(status->datasets(0).records_ingested(), 3u);
}

TEST_F(WharfForwardDestinationTest, RedeliveryIsADuplicateAndStoresNothing) {
  StartCentral();
  auto dest = MakeDestination();
  ASSERT_NE(dest, nullptr);
  const auto batch = MakeBatch(0, Range(100, 119));
  DeliveryReport first;
  ASSERT_TRUE(dest->Deliver(batch, &first).ok());
  DeliveryReport again;
  ASSERT_TRUE(dest->Deliver(batch, &again).ok());
  EXPECT_TRUE(again.already_delivered);
  EXPECT_EQ(again.commit_id, first.commit_id);  // the original acks
  // A new instance (the edge restarted) finds it at the central too.
  auto restarted = MakeDestination();
  DeliveryReport third;
  ASSERT_TRUE(restarted->Deliver(batch, &third).ok());
  EXPECT_TRUE(third.already_delivered);
  EXPECT_EQ(third.commit_id, first.commit_id);
  EXPECT_EQ(CentralStatus().duplicate_requests(), 2u);
  ExpectExactlyOnce({batch});
}

TEST_F(WharfForwardDestinationTest, BatchWithOffsetHoles) {
  StartCentral();
  auto dest = MakeDestination();
  ASSERT_NE(dest, nullptr);
  // Offsets 3, 4, 7, 8 and 12 went to quarantine at the edge.
  const auto batch = MakeBatch(0, {0, 1, 2, 5, 6, 9, 10, 11, 13}, 0, 0, 14);
  DeliveryReport report;
  absl::Status st = dest->Deliver(batch, &report);
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_FALSE(report.already_delivered);
  // The next batch starts after a hole too.
  const auto next = MakeBatch(0, {16, 17}, 0, 15, 17);
  ASSERT_TRUE(dest->Deliver(next, &report).ok());
  // Four runs and one: all found as duplicates on redelivery, also by a new instance.
  auto restarted = MakeDestination();
  DeliveryReport again;
  ASSERT_TRUE(restarted->Deliver(batch, &again).ok());
  EXPECT_TRUE(again.already_delivered);
  EXPECT_EQ(CentralStatus().duplicate_requests(), 4u);
  ExpectExactlyOnce({batch, next});
}

TEST_F(WharfForwardDestinationTest, SplitsBatchesByMaxRequestBytes) {
  StartCentral();
  // ~250-byte records, at most ~1000 bytes per request: several requests per batch.
  auto dest = MakeDestination([](WharfForwardOptions& o) { o.max_request_bytes = 1000; });
  ASSERT_NE(dest, nullptr);
  const auto batch = MakeBatch(1, Range(0, 29), 200);
  DeliveryReport report;
  ASSERT_TRUE(dest->Deliver(batch, &report).ok());
  auto restarted = MakeDestination([](WharfForwardOptions& o) { o.max_request_bytes = 1000; });
  DeliveryReport again;
  ASSERT_TRUE(restarted->Deliver(batch, &again).ok());
  EXPECT_TRUE(again.already_delivered);
  // Every request of the redelivery was a duplicate: more than one, so the batch was split.
  const uint64_t duplicates = CentralStatus().duplicate_requests();
  EXPECT_GE(duplicates, 5u);
  EXPECT_LE(duplicates, 30u);
  // A single record above the limit still goes (alone).
  auto tiny = MakeDestination([](WharfForwardOptions& o) { o.max_request_bytes = 10; });
  const auto big = MakeBatch(1, Range(30, 32), 100);
  ASSERT_TRUE(tiny->Deliver(big, &report).ok());
  EXPECT_EQ(CentralStatus().duplicate_requests(), duplicates);
  ExpectExactlyOnce({batch, big});
}

TEST_F(WharfForwardDestinationTest, SubBatchThenTheRest) {
  StartCentral();
  auto dest = MakeDestination();
  ASSERT_NE(dest, nullptr);
  const auto batch = MakeBatch(0, Range(0, 9));
  DeliveryReport report;
  ASSERT_TRUE(dest->Deliver(SubBatch(batch, 0, 4), &report).ok());
  ASSERT_TRUE(dest->Deliver(SubBatch(batch, 5, 9), &report).ok());
  EXPECT_FALSE(report.already_delivered);
  // The whole batch again (the pipeline retried it): the central stored it as two requests,
  // this instance remembers them.
  DeliveryReport again;
  absl::Status st = dest->Deliver(batch, &again);
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_TRUE(again.already_delivered);
  // A sub-batch starting inside a stored request.
  ASSERT_TRUE(dest->Deliver(SubBatch(batch, 3, 6), &again).ok());
  EXPECT_TRUE(again.already_delivered);
  // A new instance (an edge restart) does not know how the central split them; the central
  // recognises any re-cut whose sequences its producer window holds as a duplicate.
  auto restarted = MakeDestination();
  DeliveryReport after_restart;
  st = restarted->Deliver(batch, &after_restart);
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_TRUE(after_restart.already_delivered);
  after_restart = DeliveryReport();
  st = restarted->Deliver(SubBatch(batch, 3, 6), &after_restart);
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_TRUE(after_restart.already_delivered);
  // The exact sub-batches are still recognised.
  ASSERT_TRUE(restarted->Deliver(SubBatch(batch, 5, 9), &again).ok());
  EXPECT_TRUE(again.already_delivered);
  ExpectExactlyOnce({batch});
}

TEST_F(WharfForwardDestinationTest, CentralDownThenUp) {
  config_.port = wharf::testing::FreePort();
  auto dest = MakeDestination();  // Create() does not need the central
  ASSERT_NE(dest, nullptr);
  const auto batch = MakeBatch(0, Range(0, 4));
  DeliveryReport report;
  absl::Status st = dest->Deliver(batch, &report);
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable) << st;
  StartCentral();
  ASSERT_TRUE(WaitFor(
      [&] {
        DeliveryReport r;
        st = dest->Deliver(batch, &r);
        return st.ok();
      },
      seconds(30)))
      << st;
  ExpectExactlyOnce({batch});
}

TEST_F(WharfForwardDestinationTest, CentralKilledAndRestartedDeduplicates) {
  StartCentral();
  auto dest = MakeDestination([](WharfForwardOptions& o) { o.max_request_bytes = 2000; });
  ASSERT_NE(dest, nullptr);
  const auto batch = MakeBatch(1, {0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12}, 300, 0, 12);
  DeliveryReport first;
  ASSERT_TRUE(dest->Deliver(batch, &first).ok());
  central_->Kill9();
  DeliveryReport report;
  absl::Status st = dest->Deliver(batch, &report);
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable) << st;
  // The same data directory: its producer windows survived the kill.
  ASSERT_TRUE(central_->Start().ok());
  DeliveryReport again;
  ASSERT_TRUE(WaitFor([&] { return dest->Deliver(batch, &again).ok(); }, seconds(30)));
  EXPECT_TRUE(again.already_delivered);
  EXPECT_EQ(again.commit_id, first.commit_id);
  // Delivery continues with the next batch.
  const auto next = MakeBatch(1, Range(13, 15));
  ASSERT_TRUE(dest->Deliver(next, &report).ok());
  EXPECT_FALSE(report.already_delivered);
  ExpectExactlyOnce({batch, next});
}

TEST_F(WharfForwardDestinationTest, UnknownTargetDatasetNeedsAnOperator) {
  StartCentral();
  auto dest = MakeDestination([](WharfForwardOptions& o) { o.target_dataset = "nope"; });
  ASSERT_NE(dest, nullptr);
  DeliveryReport report;
  absl::Status st = dest->Deliver(MakeBatch(0, Range(0, 2)), &report);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_TRUE(MessageContains(st, "nope"));
  EXPECT_EQ(CentralStatus().records_ingested(), 0u);
}

TEST_F(WharfForwardDestinationTest, RecordTooLargeForTheCentralIsRejectedContent) {
  StartCentral([](WharfdConfig& c) {
    c.extra_top = "limits:\n  max_message_bytes: 64KiB\n  max_record_bytes: 4KiB\n";
  });
  auto dest = MakeDestination();
  ASSERT_NE(dest, nullptr);
  auto batch = MakeBatch(0, Range(0, 4));
  batch.mutable_records(2)->set_payload(PayloadFor(0, 2, 8000));
  DeliveryReport report;
  absl::Status st = dest->Deliver(batch, &report);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_TRUE(MessageContains(st, "source offset 2"));
  EXPECT_TRUE(MessageContains(st, "max_record_bytes"));
  // What the pipeline's bisection does next: the halves, then the record alone (quarantined).
  ASSERT_TRUE(dest->Deliver(SubBatch(batch, 0, 1), &report).ok());
  st = dest->Deliver(SubBatch(batch, 2, 2), &report);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  ASSERT_TRUE(dest->Deliver(SubBatch(batch, 3, 4), &report).ok());
  ExpectExactlyOnce({SubBatch(batch, 0, 1), SubBatch(batch, 3, 4)});
}

TEST_F(WharfForwardDestinationTest, BisectionAfterAPartlyStoredBatch) {
  StartCentral([](WharfdConfig& c) {
    c.extra_top = "limits:\n  max_message_bytes: 64KiB\n  max_record_bytes: 4KiB\n";
  });
  // Four records per request: [0-3] is stored, then [4-7] is refused for record 6.
  auto dest = MakeDestination([](WharfForwardOptions& o) { o.max_request_records = 4; });
  ASSERT_NE(dest, nullptr);
  auto batch = MakeBatch(0, Range(0, 11));
  batch.mutable_records(6)->set_payload(PayloadFor(0, 6, 8000));
  DeliveryReport report;
  absl::Status st = dest->Deliver(batch, &report);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_TRUE(MessageContains(st, "source offset 6"));
  // Bisection: [0-5] (starts with the stored request, ends inside the refused one) ...
  st = dest->Deliver(SubBatch(batch, 0, 5), &report);
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_FALSE(report.already_delivered);
  // ... [6-11] refused, [6-8] refused, [6] refused (quarantined), [7-8] and [9-11] stored.
  EXPECT_EQ(dest->Deliver(SubBatch(batch, 6, 11), &report).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(dest->Deliver(SubBatch(batch, 6, 8), &report).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(dest->Deliver(SubBatch(batch, 6, 6), &report).code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(dest->Deliver(SubBatch(batch, 7, 8), &report).ok());
  ASSERT_TRUE(dest->Deliver(SubBatch(batch, 9, 11), &report).ok());
  // A retry of a half that was delivered: found, nothing stored twice.
  ASSERT_TRUE(dest->Deliver(SubBatch(batch, 2, 5), &report).ok());
  EXPECT_TRUE(report.already_delivered);
  auto delivered = batch;
  delivered.mutable_records()->DeleteSubrange(6, 1);
  ExpectExactlyOnce({delivered});
}

TEST_F(WharfForwardDestinationTest, CentralLimitsBelowTheRequestSizeAreSplitAutomatically) {
  StartCentral([](WharfdConfig& c) {
    c.extra_top =
        "limits:\n  max_message_bytes: 8KiB\n  max_record_bytes: 4KiB\n"
        "  max_records_per_request: 5\n";
  });
  auto dest = MakeDestination();  // 4 MiB / 10000 records per request
  ASSERT_NE(dest, nullptr);
  const auto batch = MakeBatch(0, Range(0, 22), 1000);  // ~23 KiB
  DeliveryReport report;
  absl::Status st = dest->Deliver(batch, &report);
  ASSERT_TRUE(st.ok()) << st;
  // The split is a function of the batch and the limits: a retry finds every request.
  auto restarted = MakeDestination();
  DeliveryReport again;
  st = restarted->Deliver(batch, &again);
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_TRUE(again.already_delivered);
  ExpectExactlyOnce({batch});
}

TEST_F(WharfForwardDestinationTest, QuotaAtTheCentralIsRetriedWithItsDelay) {
  StartCentral([](WharfdConfig& c) { c.quota = "1KiB"; });
  auto dest = MakeDestination();
  ASSERT_NE(dest, nullptr);
  DeliveryReport report;
  absl::Status st = dest->Deliver(MakeBatch(0, Range(0, 9), 200), &report);
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable) << st;
  EXPECT_GT(report.retry_after, milliseconds(0));
  EXPECT_EQ(CentralStatus().records_ingested(), 0u);
}

TEST_F(WharfForwardDestinationTest, ConcurrentPartitions) {
  config_.partitions = 4;
  StartCentral();
  auto dest = MakeDestination([](WharfForwardOptions& o) { o.max_request_bytes = 4000; });
  ASSERT_NE(dest, nullptr);
  std::vector<wharf::v1::StoredBatch> batches;
  for (uint32_t p = 0; p < 4; ++p) {
    for (uint64_t b = 0; b < 3; ++b)
      batches.push_back(MakeBatch(p, Range(b * 40, b * 40 + 39), 50));
  }
  std::vector<absl::Status> results(4);
  std::vector<std::thread> threads;
  for (uint32_t p = 0; p < 4; ++p) {
    threads.emplace_back([&, p] {
      for (uint64_t b = 0; b < 3; ++b) {
        const auto& batch = batches[p * 3 + b];
        for (int attempt = 0; attempt < 2; ++attempt) {  // each batch twice, as after a crash
          DeliveryReport report;
          absl::Status st = dest->Deliver(batch, &report);
          if (!st.ok()) {
            results[p] = st;
            return;
          }
          if (attempt == 1 && !report.already_delivered) {
            results[p] = absl::InternalError("redelivery not reported as already delivered");
            return;
          }
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& st : results) EXPECT_TRUE(st.ok()) << st;
  ExpectExactlyOnce(batches);
}

TEST_F(WharfForwardDestinationTest, RejectsBadOptions) {
  WharfForwardOptions o;
  o.name = "n";
  o.node_id = "node";
  o.target = "127.0.0.1:1";
  EXPECT_TRUE(WharfForwardDestination::Create(o).ok());
  auto bad = [&](const std::function<void(WharfForwardOptions&)>& f) {
    WharfForwardOptions c = o;
    f(c);
    return WharfForwardDestination::Create(c).status().code();
  };
  EXPECT_EQ(bad([](auto& c) { c.name.clear(); }), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad([](auto& c) { c.node_id.clear(); }), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad([](auto& c) { c.target.clear(); }), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad([](auto& c) { c.max_request_bytes = 0; }), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad([](auto& c) { c.max_request_records = 0; }), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad([](auto& c) { c.rpc_timeout = milliseconds(0); }),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad([](auto& c) { c.node_id = std::string(300, 'n'); }),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(WharfForwardDestinationTest, MalformedBatchesAreNotContentErrors) {
  StartCentral();
  auto dest = MakeDestination();
  ASSERT_NE(dest, nullptr);
  DeliveryReport report;
  // Offsets not increasing.
  auto batch = MakeBatch(0, {0, 2, 1}, 0, 0, 2);
  EXPECT_EQ(dest->Deliver(batch, &report).code(), absl::StatusCode::kFailedPrecondition);
  batch = MakeBatch(0, {0, 1, 1}, 0, 0, 1);
  EXPECT_EQ(dest->Deliver(batch, &report).code(), absl::StatusCode::kFailedPrecondition);
  // A record outside the manifest's range.
  batch = MakeBatch(0, {5, 6, 9}, 0, 5, 8);
  EXPECT_EQ(dest->Deliver(batch, &report).code(), absl::StatusCode::kFailedPrecondition);
  // No dataset.
  batch = MakeBatch(0, {0});
  batch.mutable_manifest()->clear_dataset();
  EXPECT_EQ(dest->Deliver(batch, &report).code(), absl::StatusCode::kFailedPrecondition);
  // A producer id too long for the central (long source dataset name).
  batch = MakeBatch(0, {0});
  batch.mutable_manifest()->set_dataset(std::string(250, 'd'));
  EXPECT_EQ(dest->Deliver(batch, &report).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(CentralStatus().records_ingested(), 0u);
  // Every record of the range went to quarantine: nothing to send.
  batch = MakeBatch(0, {}, 0, 0, 9);
  DeliveryReport empty;
  EXPECT_TRUE(dest->Deliver(batch, &empty).ok());
  EXPECT_TRUE(empty.commit_id.empty());
  // An empty payload is content the central refuses.
  batch = MakeBatch(0, Range(0, 2));
  batch.mutable_records(1)->clear_payload();
  absl::Status st = dest->Deliver(batch, &report);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_TRUE(MessageContains(st, "source offset 1"));
  EXPECT_EQ(CentralStatus().records_ingested(), 0u);
}

}  // namespace
}  // namespace wharf::pipeline
