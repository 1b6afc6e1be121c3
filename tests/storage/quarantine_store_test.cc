// Quarantine operations and control-plane values of the staging store: GetQuarantine,
// QuarantineRejected, DiscardQuarantine, ReplayQuarantine, ExpireQuarantine, the quarantine
// counters (also across a reopen) and PutMeta/GetMeta/DeleteMeta/ListMeta.
#include <gtest/gtest.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <future>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/time_util.h"
#include "storage/codec.h"
#include "storage/staging_store.h"

namespace wharf::storage {
namespace {

using google::protobuf::util::TimeUtil;
using wharf::v1::QuarantineEntry;
using Clock = std::chrono::system_clock;

constexpr std::chrono::seconds kWait(10);
constexpr uint64_t kNoLimit = std::numeric_limits<uint64_t>::max();

google::protobuf::Timestamp Ts(Clock::time_point t) {
  return TimeUtil::MicrosecondsToTimestamp(
      std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count());
}

int64_t Micros(const google::protobuf::Timestamp& ts) {
  return TimeUtil::TimestampToMicroseconds(ts);
}

// Tokens of the entries as ListQuarantine orders them.
std::vector<std::string> Tokens(const std::vector<QuarantineEntry>& entries) {
  std::vector<std::string> out;
  for (const auto& e : entries) {
    out.push_back(e.destination().empty()
                      ? absl::StrCat(e.partition(), "/", e.offset())
                      : absl::StrCat(e.partition(), "/", e.offset(), "/", e.destination()));
  }
  return out;
}

class QuarantineStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = "/tmp/wharf-quarantine-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr) << std::strerror(errno);
    dir_ = tmpl;
    options_.path = dir_ + "/store";
    options_.min_free_bytes = 0;
    options_.block_cache_bytes = 4 << 20;
    options_.write_buffer_bytes = 4 << 20;
    // "orders.eu" shares a prefix with "orders": their quarantines must not mix.
    options_.datasets = {DatasetOptions{"orders", 2, 0}, DatasetOptions{"orders.eu", 1, 0}};
    ASSERT_NO_FATAL_FAILURE(Open());
  }

  void TearDown() override {
    store_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  void Open() {
    auto store = StagingStore::Open(options_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    store_->SetAppendListener([this](const std::string& dataset, uint32_t partition, uint64_t) {
      std::lock_guard<std::mutex> lock(mu_);
      appended_.emplace_back(dataset, partition);
    });
    ASSERT_TRUE(store_->Start().ok());
  }

  void Reopen() {
    store_.reset();
    ASSERT_NO_FATAL_FAILURE(Open());
  }

  // Appends keyless records (one request: one partition) and returns their (partition, offset).
  std::vector<std::pair<uint32_t, uint64_t>> Append(const std::string& dataset,
                                                    const std::vector<std::string>& payloads) {
    wharf::v1::ProduceRequest req;
    req.set_dataset(dataset);
    for (const auto& p : payloads) req.add_records()->set_payload(p);
    auto promise = std::make_shared<std::promise<AppendResult>>();
    auto future = promise->get_future();
    store_->Append(std::move(req), [promise](AppendResult r) { promise->set_value(std::move(r)); });
    std::vector<std::pair<uint32_t, uint64_t>> out;
    if (future.wait_for(kWait) != std::future_status::ready) {
      ADD_FAILURE() << "append not answered";
      return out;
    }
    const AppendResult r = future.get();
    EXPECT_TRUE(r.status.ok()) << r.status;
    for (const auto& a : r.acks) out.emplace_back(a.partition(), a.offset());
    return out;
  }

  absl::StatusOr<uint64_t> Replay(const std::string& dataset, std::vector<std::string> tokens) {
    auto promise = std::make_shared<std::promise<absl::StatusOr<uint64_t>>>();
    auto future = promise->get_future();
    store_->ReplayQuarantine(dataset, std::move(tokens),
                             [promise](absl::StatusOr<uint64_t> r) { promise->set_value(r); });
    if (future.wait_for(kWait) != std::future_status::ready) {
      return absl::DeadlineExceededError("replay not answered");
    }
    return future.get();
  }

  RawRecord ReadOne(const std::string& dataset, uint32_t partition, uint64_t offset) {
    std::vector<RawRecord> raw;
    EXPECT_TRUE(store_->ReadRaw(dataset, partition, offset, offset + 1, 1, kNoLimit, &raw).ok());
    if (raw.size() != 1) {
      ADD_FAILURE() << "no raw record " << dataset << "/" << partition << "/" << offset;
      return {};
    }
    return raw[0];
  }

  // A validation failure of the raw record at (partition, offset), as the pipeline writes it.
  QuarantineEntry ValidationEntry(const std::string& dataset, uint32_t partition, uint64_t offset,
                                  Clock::time_point when = Clock::now()) {
    QuarantineEntry q;
    q.set_dataset(dataset);
    q.set_partition(partition);
    q.set_offset(offset);
    q.set_reason(wharf::v1::SCHEMA_VIOLATION);
    q.set_message(absl::StrCat("bad record at ", offset));
    q.set_attempts(1);
    *q.mutable_quarantine_time() = Ts(when);
    *q.mutable_first_error_time() = Ts(when);
    *q.mutable_original() = ReadOne(dataset, partition, offset).record;
    return q;
  }

  QuarantineEntry RejectedEntry(const std::string& dataset, uint32_t partition, uint64_t offset,
                                const std::string& destination,
                                Clock::time_point when = Clock::now()) {
    QuarantineEntry q = ValidationEntry(dataset, partition, offset, when);
    q.set_reason(wharf::v1::DESTINATION_REJECTED);
    q.set_destination(destination);
    q.set_batch_id(absl::StrCat(dataset, ".p", partition, ".0-9"));
    return q;
  }

  // Commits the validation of [from, to) of a partition with `entries` as its quarantine.
  void CommitQuarantine(const std::string& dataset, uint32_t partition, uint64_t to,
                        std::vector<QuarantineEntry> entries) {
    BatchCommit commit;
    commit.dataset = dataset;
    commit.partition = partition;
    commit.next_offset = to;
    commit.quarantine = std::move(entries);
    ASSERT_TRUE(store_->CommitBatch(commit).ok());
  }

  std::vector<QuarantineEntry> List(const std::string& dataset) {
    std::vector<QuarantineEntry> out;
    std::string next;
    EXPECT_TRUE(store_->ListQuarantine(dataset, "", 1000, &out, &next).ok());
    EXPECT_TRUE(next.empty());
    return out;
  }

  // Checks the store's quarantine counters against what ListQuarantine holds.
  ::testing::AssertionResult CountersMatch(const std::string& dataset) {
    const auto entries = List(dataset);
    uint64_t bytes = 0;
    for (const auto& e : entries) bytes += EncodeChecked(e).size();
    if (store_->QuarantineEntries(dataset) != entries.size() ||
        store_->QuarantineBytes(dataset) != bytes) {
      return ::testing::AssertionFailure()
             << dataset << ": counters say " << store_->QuarantineEntries(dataset) << " entries / "
             << store_->QuarantineBytes(dataset) << " bytes, the store holds " << entries.size()
             << " / " << bytes;
    }
    return ::testing::AssertionSuccess();
  }

  std::string dir_;
  StoreOptions options_;
  std::unique_ptr<StagingStore> store_;
  std::mutex mu_;
  std::vector<std::pair<std::string, uint32_t>> appended_;
};

const std::vector<std::string> kMalformedTokens = {
    "",     "1",     "/",    "a/1",  "1/b",          "1/2/",
    "/1",   "1//pg", "-1/2", "1/x3", "4294967296/0", "0/18446744073709551616",
    "0.5/1"};

// GetQuarantine -----------------------------------------------------------------------------------

TEST_F(QuarantineStoreTest, GetQuarantineFindsEntriesByTokenOnly) {
  const auto acks = Append("orders", {"a", "b", "c", "d"});
  ASSERT_EQ(acks.size(), 4u);
  const uint32_t part = acks[0].first;
  const QuarantineEntry v = ValidationEntry("orders", part, 1);
  ASSERT_NO_FATAL_FAILURE(CommitQuarantine("orders", part, 2, {v}));
  const QuarantineEntry r = RejectedEntry("orders", part, 3, "pg");
  wharf::v1::DeliveryCheckpoint cursor;
  cursor.set_next_offset(4);
  ASSERT_TRUE(store_->QuarantineRejected("orders", "pg", part, {r}, cursor).ok());

  const std::string pre = absl::StrCat(part, "/");
  auto got = store_->GetQuarantine("orders", pre + "1");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->SerializeAsString(), v.SerializeAsString());
  got = store_->GetQuarantine("orders", pre + "3/pg");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->SerializeAsString(), r.SerializeAsString());

  for (const std::string& token : {pre + "3", pre + "1/pg", pre + "3/pg2", pre + "3/p", pre + "2",
                                   pre + "99", absl::StrCat(1 - part, "/1"), std::string("7/1")}) {
    EXPECT_EQ(store_->GetQuarantine("orders", token).status().code(), absl::StatusCode::kNotFound)
        << token;
  }
  EXPECT_EQ(store_->GetQuarantine("orders.eu", pre + "1").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->GetQuarantine("order", pre + "1").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->GetQuarantine("nope", pre + "1").status().code(), absl::StatusCode::kNotFound);
  for (const std::string& token : kMalformedTokens) {
    EXPECT_EQ(store_->GetQuarantine("orders", token).status().code(),
              absl::StatusCode::kInvalidArgument)
        << "token \"" << token << "\"";
  }
}

// QuarantineRejected ------------------------------------------------------------------------------

TEST_F(QuarantineStoreTest, QuarantineRejectedStoresEntriesWithTheCursorAndOneEntryPerDestination) {
  const auto acks = Append("orders", {"r0", "r1", "r2", "r3", "r4", "r5"});
  ASSERT_EQ(acks.size(), 6u);
  const uint32_t p = acks[0].first;
  // A validation failure at offset 2, and destinations refusing offsets 2 and 4.
  ASSERT_NO_FATAL_FAILURE(CommitQuarantine("orders", p, 3, {ValidationEntry("orders", p, 2)}));
  wharf::v1::DeliveryCheckpoint a_cursor;
  a_cursor.set_next_offset(6);
  a_cursor.set_batches_delivered(1);
  a_cursor.set_records_delivered(3);
  a_cursor.set_records_rejected(2);
  ASSERT_TRUE(store_
                  ->QuarantineRejected("orders", "wh-a", p,
                                       {RejectedEntry("orders", p, 1, "wh-a"),
                                        RejectedEntry("orders", p, 4, "wh-a")},
                                       a_cursor)
                  .ok());
  wharf::v1::DeliveryCheckpoint b_cursor;
  b_cursor.set_next_offset(6);
  b_cursor.set_records_rejected(1);
  ASSERT_TRUE(store_
                  ->QuarantineRejected("orders", "wh-b", p, {RejectedEntry("orders", p, 4, "wh-b")},
                                       b_cursor)
                  .ok());
  // The cursor was written with the entries.
  auto c = store_->GetDeliveryCursor("orders", "wh-a", p);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->SerializeAsString(), a_cursor.SerializeAsString());
  c = store_->GetDeliveryCursor("orders", "wh-b", p);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->SerializeAsString(), b_cursor.SerializeAsString());

  const std::string pre = absl::StrCat(p, "/");
  const std::vector<std::string> all = {pre + "1/wh-a", pre + "2", pre + "4/wh-a", pre + "4/wh-b"};
  EXPECT_EQ(Tokens(List("orders")), all);
  EXPECT_TRUE(CountersMatch("orders"));
  EXPECT_EQ(store_->QuarantineEntries("orders"), 4u);
  EXPECT_EQ(store_->QuarantineEntries("orders.eu"), 0u);

  // Paging visits every entry once, also between the destinations of one offset.
  for (size_t limit : {1u, 2u, 3u}) {
    std::vector<std::string> seen;
    std::string token;
    for (int page = 0; page < 10; ++page) {
      std::vector<QuarantineEntry> out;
      std::string next;
      ASSERT_TRUE(store_->ListQuarantine("orders", token, limit, &out, &next).ok());
      for (const auto& t : Tokens(out)) seen.push_back(t);
      if (next.empty()) break;
      EXPECT_EQ(out.size(), limit);
      EXPECT_EQ(next, Tokens(out).back());
      token = next;
    }
    EXPECT_EQ(seen, all) << "limit " << limit;
  }
  std::vector<QuarantineEntry> out;
  std::string next;
  ASSERT_TRUE(store_->ListQuarantine("orders", pre + "4/wh-a", 10, &out, &next).ok());
  EXPECT_EQ(Tokens(out), (std::vector<std::string>{pre + "4/wh-b"}));
  ASSERT_TRUE(store_->ListQuarantine("orders", pre + "2", 10, &out, &next).ok());
  EXPECT_EQ(Tokens(out), (std::vector<std::string>{pre + "4/wh-a", pre + "4/wh-b"}));

  // Writing an entry again (a retry after a failed write) does not count it twice, and the
  // bytes follow the new value.
  QuarantineEntry again = RejectedEntry("orders", p, 4, "wh-b");
  again.set_message(std::string(500, 'm'));
  ASSERT_TRUE(store_->QuarantineRejected("orders", "wh-b", p, {again}, b_cursor).ok());
  EXPECT_EQ(store_->QuarantineEntries("orders"), 4u);
  EXPECT_TRUE(CountersMatch("orders"));

  // No entries: only the cursor (the split marker) is written, and it survives a reopen.
  wharf::v1::DeliveryCheckpoint splitting = b_cursor;
  splitting.set_splitting_batch_id("orders.p0.6-9");
  ASSERT_TRUE(store_->QuarantineRejected("orders", "wh-b", p, {}, splitting).ok());
  ASSERT_NO_FATAL_FAILURE(Reopen());
  c = store_->GetDeliveryCursor("orders", "wh-b", p);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->splitting_batch_id(), "orders.p0.6-9");
  EXPECT_EQ(Tokens(List("orders")), all);
  EXPECT_TRUE(CountersMatch("orders"));

  // Unknown dataset or partition: refused, nothing written.
  EXPECT_EQ(store_->QuarantineRejected("nope", "wh-a", 0, {}, a_cursor).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_
                ->QuarantineRejected("orders", "wh-a", 2, {RejectedEntry("orders", p, 5, "wh-a")},
                                     a_cursor)
                .code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(Tokens(List("orders")), all);
}

// DiscardQuarantine -------------------------------------------------------------------------------

TEST_F(QuarantineStoreTest, DiscardQuarantineDeletesWhatExistsAndCountsIt) {
  const auto acks = Append("orders", {"a", "b", "c", "d"});
  const uint32_t p = acks[0].first;
  ASSERT_NO_FATAL_FAILURE(CommitQuarantine(
      "orders", p, 4, {ValidationEntry("orders", p, 0), ValidationEntry("orders", p, 1)}));
  wharf::v1::DeliveryCheckpoint cursor;
  cursor.set_next_offset(4);
  ASSERT_TRUE(store_
                  ->QuarantineRejected(
                      "orders", "pg", p,
                      {RejectedEntry("orders", p, 2, "pg"), RejectedEntry("orders", p, 3, "pg")},
                      cursor)
                  .ok());
  const auto eu = Append("orders.eu", {"z"});
  ASSERT_NO_FATAL_FAILURE(
      CommitQuarantine("orders.eu", 0, 1, {ValidationEntry("orders.eu", 0, 0)}));
  const std::string pre = absl::StrCat(p, "/");

  // Unknown tokens, a validation token for a destination entry and vice versa count nothing.
  auto n = store_->DiscardQuarantine("orders", {pre + "0", pre + "2/pg", pre + "9", pre + "1/pg",
                                                pre + "3", absl::StrCat(1 - p, "/0")});
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 2u);
  EXPECT_EQ(Tokens(List("orders")), (std::vector<std::string>{pre + "1", pre + "3/pg"}));
  EXPECT_TRUE(CountersMatch("orders"));
  EXPECT_EQ(store_->QuarantineEntries("orders.eu"), 1u);

  // Again: nothing left to discard.
  n = store_->DiscardQuarantine("orders", {pre + "0", pre + "2/pg"});
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0u);

  // A token listed twice is one entry.
  n = store_->DiscardQuarantine("orders", {pre + "3/pg", pre + "3/pg"});
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 1u);
  EXPECT_EQ(store_->QuarantineEntries("orders"), 1u);
  EXPECT_TRUE(CountersMatch("orders"));

  // A malformed token refuses the whole call: nothing is discarded.
  for (const std::string& bad : kMalformedTokens) {
    n = store_->DiscardQuarantine("orders", {pre + "1", bad});
    EXPECT_EQ(n.status().code(), absl::StatusCode::kInvalidArgument) << "token \"" << bad << "\"";
  }
  EXPECT_EQ(Tokens(List("orders")), (std::vector<std::string>{pre + "1"}));
  EXPECT_EQ(store_->DiscardQuarantine("nope", {"0/0"}).status().code(),
            absl::StatusCode::kNotFound);
  n = store_->DiscardQuarantine("orders", {});
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0u);

  ASSERT_NO_FATAL_FAILURE(Reopen());
  EXPECT_EQ(Tokens(List("orders")), (std::vector<std::string>{pre + "1"}));
  EXPECT_TRUE(CountersMatch("orders"));
  EXPECT_TRUE(CountersMatch("orders.eu"));
  (void)eu;
}

// ReplayQuarantine --------------------------------------------------------------------------------

TEST_F(QuarantineStoreTest, ReplayMovesTheRecordBackToItsPartitionWithItsHistory) {
  const auto acks = Append("orders", {"p0", "p1", "p2"});
  const uint32_t p = acks[0].first;
  const auto first_error = Clock::now() - std::chrono::hours(3);
  QuarantineEntry v = ValidationEntry("orders", p, 1, Clock::now() - std::chrono::minutes(5));
  v.set_attempts(3);
  *v.mutable_first_error_time() = Ts(first_error);
  v.mutable_original()->mutable_record()->set_key("k1");
  (*v.mutable_original()->mutable_record()->mutable_headers())["h"] = "v";
  ASSERT_NO_FATAL_FAILURE(CommitQuarantine("orders", p, 3, {v}));
  QuarantineEntry r = RejectedEntry("orders", p, 2, "pg");
  r.set_attempts(0);           // an entry of an older version without attempts...
  r.clear_first_error_time();  // ...or first error time
  wharf::v1::DeliveryCheckpoint cursor;
  cursor.set_next_offset(3);
  ASSERT_TRUE(store_->QuarantineRejected("orders", "pg", p, {r}, cursor).ok());
  const uint64_t next = store_->GetPartitionCounters("orders", p).ingest.next_offset();
  ASSERT_EQ(next, 3u);
  const std::string pre = absl::StrCat(p, "/");
  {
    std::lock_guard<std::mutex> lock(mu_);
    appended_.clear();
  }

  const auto t0 = Clock::now();
  auto n = Replay("orders", {pre + "1", pre + "2/pg"});
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 2u);
  EXPECT_TRUE(List("orders").empty());
  EXPECT_TRUE(CountersMatch("orders"));
  const auto counters = store_->GetPartitionCounters("orders", p);
  EXPECT_EQ(counters.ingest.next_offset(), next + 2);
  EXPECT_EQ(counters.ingest.records_appended(), 5u);
  {
    std::lock_guard<std::mutex> lock(mu_);
    EXPECT_EQ(appended_, (std::vector<std::pair<std::string, uint32_t>>{{"orders", p}}));
  }

  const RawRecord a = ReadOne("orders", p, next);
  EXPECT_TRUE(a.record.replayed());
  EXPECT_EQ(a.record.replay_partition(), p);
  EXPECT_EQ(a.record.replay_offset(), 1u);
  EXPECT_EQ(a.record.attempts(), 3u);
  EXPECT_EQ(Micros(a.record.first_error_time()), Micros(Ts(first_error)));
  EXPECT_EQ(a.record.record().SerializeAsString(), v.original().record().SerializeAsString());
  EXPECT_GE(Micros(a.record.ingest_time()), Micros(Ts(t0)) - 1000000);
  EXPECT_GT(Micros(a.record.ingest_time()), Micros(v.original().ingest_time()));
  const RawRecord b = ReadOne("orders", p, next + 1);
  EXPECT_TRUE(b.record.replayed());
  EXPECT_EQ(b.record.replay_offset(), 2u);
  EXPECT_EQ(b.record.attempts(), 1u);
  EXPECT_EQ(Micros(b.record.first_error_time()), Micros(r.quarantine_time()));
  EXPECT_EQ(b.record.record().payload(), "p2");
  // The original raw records are untouched.
  EXPECT_EQ(ReadOne("orders", p, 1).record.record().payload(), "p1");
  EXPECT_FALSE(ReadOne("orders", p, 1).record.replayed());

  // Replaying again replays nothing; unknown tokens are skipped, also out-of-range partitions.
  n = Replay("orders", {pre + "1", pre + "2/pg", pre + "2", pre + "7", "9/1", "4294967295/0"});
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 0u);
  EXPECT_EQ(store_->GetPartitionCounters("orders", p).ingest.next_offset(), next + 2);

  EXPECT_EQ(Replay("nope", {"0/0"}).status().code(), absl::StatusCode::kNotFound);
  ASSERT_NO_FATAL_FAILURE(Reopen());
  EXPECT_EQ(store_->GetPartitionCounters("orders", p).ingest.next_offset(), next + 2);
  EXPECT_TRUE(ReadOne("orders", p, next + 1).record.replayed());
  EXPECT_TRUE(CountersMatch("orders"));
}

TEST_F(QuarantineStoreTest, ReplayOfTheSameEntryTwiceInOneCallOrOneGroupReplaysItOnce) {
  const auto acks = Append("orders.eu", {"a", "b"});
  ASSERT_NO_FATAL_FAILURE(CommitQuarantine(
      "orders.eu", 0, 2, {ValidationEntry("orders.eu", 0, 0), ValidationEntry("orders.eu", 0, 1)}));
  auto n = Replay("orders.eu", {"0/0", "0/0"});
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 1u);
  EXPECT_EQ(store_->GetPartitionCounters("orders.eu", 0).ingest.next_offset(), 3u);

  // Two concurrent replays of one entry: exactly one of them replays it.
  std::vector<std::future<absl::StatusOr<uint64_t>>> replays;
  for (int i = 0; i < 4; ++i) {
    replays.push_back(std::async(std::launch::async, [&] { return Replay("orders.eu", {"0/1"}); }));
  }
  uint64_t total = 0;
  for (auto& f : replays) {
    auto r = f.get();
    ASSERT_TRUE(r.ok()) << r.status();
    total += *r;
  }
  EXPECT_EQ(total, 1u);
  EXPECT_EQ(store_->GetPartitionCounters("orders.eu", 0).ingest.next_offset(), 4u);
  EXPECT_TRUE(CountersMatch("orders.eu"));
  EXPECT_EQ(store_->QuarantineEntries("orders.eu"), 0u);
  (void)acks;
}

TEST_F(QuarantineStoreTest, ReplayWithAMalformedTokenIsRefusedAndReplaysNothing) {
  const auto acks = Append("orders.eu", {"a", "b"});
  ASSERT_NO_FATAL_FAILURE(CommitQuarantine(
      "orders.eu", 0, 2, {ValidationEntry("orders.eu", 0, 0), ValidationEntry("orders.eu", 0, 1)}));
  for (const std::string& bad : kMalformedTokens) {
    auto n = Replay("orders.eu", {"0/0", bad, "0/1"});
    EXPECT_EQ(n.status().code(), absl::StatusCode::kInvalidArgument) << "token \"" << bad << "\"";
  }
  // Neither the valid tokens before the malformed one nor those after it were replayed.
  EXPECT_EQ(Tokens(List("orders.eu")), (std::vector<std::string>{"0/0", "0/1"}));
  EXPECT_EQ(store_->GetPartitionCounters("orders.eu", 0).ingest.next_offset(), 2u);
  EXPECT_TRUE(CountersMatch("orders.eu"));
  // The store still works.
  auto n = Replay("orders.eu", {"0/1"});
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 1u);
  (void)acks;
}

// Counters, expiry --------------------------------------------------------------------------------

TEST_F(QuarantineStoreTest, CountersAreRightAfterEveryOperationAndAfterAReopen) {
  EXPECT_EQ(store_->QuarantineEntries("orders"), 0u);
  EXPECT_EQ(store_->QuarantineBytes("orders"), 0u);
  EXPECT_EQ(store_->QuarantineEntries("nope"), 0u);
  const auto acks = Append("orders", {"a", "b", "c", "d", "e", "f"});
  const uint32_t p = acks[0].first;
  const std::string pre = absl::StrCat(p, "/");
  ASSERT_NO_FATAL_FAILURE(CommitQuarantine(
      "orders", p, 3, {ValidationEntry("orders", p, 0), ValidationEntry("orders", p, 2)}));
  EXPECT_TRUE(CountersMatch("orders"));
  EXPECT_GT(store_->QuarantineBytes("orders"), 0u);
  wharf::v1::DeliveryCheckpoint cursor;
  cursor.set_next_offset(6);
  ASSERT_TRUE(store_
                  ->QuarantineRejected(
                      "orders", "a", p,
                      {RejectedEntry("orders", p, 3, "a"), RejectedEntry("orders", p, 5, "a")},
                      cursor)
                  .ok());
  ASSERT_TRUE(
      store_->QuarantineRejected("orders", "b", p, {RejectedEntry("orders", p, 5, "b")}, cursor)
          .ok());
  EXPECT_TRUE(CountersMatch("orders"));
  EXPECT_EQ(store_->QuarantineEntries("orders"), 5u);
  ASSERT_NO_FATAL_FAILURE(Reopen());
  EXPECT_TRUE(CountersMatch("orders"));
  EXPECT_EQ(store_->QuarantineEntries("orders"), 5u);

  ASSERT_TRUE(store_->DiscardQuarantine("orders", {pre + "5/a"}).ok());
  EXPECT_TRUE(CountersMatch("orders"));
  auto n = Replay("orders", {pre + "0", pre + "5/b"});
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 2u);
  EXPECT_TRUE(CountersMatch("orders"));
  EXPECT_EQ(store_->QuarantineEntries("orders"), 2u);
  ASSERT_NO_FATAL_FAILURE(Reopen());
  EXPECT_TRUE(CountersMatch("orders"));
  EXPECT_EQ(store_->QuarantineEntries("orders"), 2u);
  EXPECT_TRUE(CountersMatch("orders.eu"));

  auto expired = store_->ExpireQuarantine("orders", Clock::now() + std::chrono::hours(1), 100);
  ASSERT_TRUE(expired.ok());
  EXPECT_EQ(*expired, 2u);
  EXPECT_EQ(store_->QuarantineEntries("orders"), 0u);
  EXPECT_EQ(store_->QuarantineBytes("orders"), 0u);
  ASSERT_NO_FATAL_FAILURE(Reopen());
  EXPECT_EQ(store_->QuarantineEntries("orders"), 0u);
  EXPECT_EQ(store_->QuarantineBytes("orders"), 0u);
}

TEST_F(QuarantineStoreTest, ExpireQuarantineDeletesEntriesOlderThanTheCutoffInBoundedSteps) {
  const auto acks = Append("orders", {"0", "1", "2", "3", "4", "5", "6", "7"});
  const uint32_t p = acks[0].first;
  const auto now = Clock::now();
  std::vector<QuarantineEntry> entries;
  // Offsets 0-4: an hour old; 5: exactly at the cutoff used below; 6: fresh.
  for (uint64_t o = 0; o < 5; ++o) {
    entries.push_back(ValidationEntry("orders", p, o, now - std::chrono::hours(1)));
  }
  const auto cutoff = now - std::chrono::minutes(10);
  entries.push_back(ValidationEntry("orders", p, 5, cutoff));
  entries.push_back(ValidationEntry("orders", p, 6, now));
  // The latest failure counts, not the first one.
  entries.back().set_attempts(4);
  *entries.back().mutable_first_error_time() = Ts(now - std::chrono::hours(48));
  ASSERT_NO_FATAL_FAILURE(CommitQuarantine("orders", p, 7, entries));
  wharf::v1::DeliveryCheckpoint cursor;
  cursor.set_next_offset(8);
  ASSERT_TRUE(store_
                  ->QuarantineRejected(
                      "orders", "pg", p,
                      {RejectedEntry("orders", p, 7, "pg", now - std::chrono::hours(2))}, cursor)
                  .ok());
  const auto eu = Append("orders.eu", {"x"});
  ASSERT_NO_FATAL_FAILURE(CommitQuarantine(
      "orders.eu", 0, 1, {ValidationEntry("orders.eu", 0, 0, now - std::chrono::hours(5))}));

  auto n = store_->ExpireQuarantine("orders", cutoff, 4);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 4u);
  EXPECT_TRUE(CountersMatch("orders"));
  n = store_->ExpireQuarantine("orders", cutoff, 4);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 2u);  // offset 4 and the destination entry at 7
  n = store_->ExpireQuarantine("orders", cutoff, 4);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0u);
  const std::string pre = absl::StrCat(p, "/");
  EXPECT_EQ(Tokens(List("orders")), (std::vector<std::string>{pre + "5", pre + "6"}));
  EXPECT_TRUE(CountersMatch("orders"));
  // Other datasets, even with a prefix-related name, keep theirs.
  EXPECT_EQ(store_->QuarantineEntries("orders.eu"), 1u);
  EXPECT_EQ(store_->ExpireQuarantine("nope", cutoff, 4).status().code(),
            absl::StatusCode::kNotFound);
  n = store_->ExpireQuarantine("orders", cutoff + std::chrono::microseconds(1), 100);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 1u);
  EXPECT_EQ(Tokens(List("orders")), (std::vector<std::string>{pre + "6"}));
  (void)eu;
}

// Control-plane values ----------------------------------------------------------------------------

TEST_F(QuarantineStoreTest, MetaValuesRoundTripListByPrefixAndSurviveReopen) {
  auto got = store_->GetMeta("paused/orders/pg");
  ASSERT_TRUE(got.ok());
  EXPECT_FALSE(got->has_value());
  ASSERT_TRUE(store_->PutMeta("paused/orders/pg", "1").ok());
  ASSERT_TRUE(store_->PutMeta("paused/orders/s3", "").ok());
  ASSERT_TRUE(store_->PutMeta("paused/orders.eu/pg", std::string("a\0b", 3)).ok());
  ASSERT_TRUE(store_->PutMeta("contract/orders", "v1").ok());
  ASSERT_TRUE(store_->PutMeta("contract/orders", "v2").ok());  // overwrite
  got = store_->GetMeta("paused/orders/s3");
  ASSERT_TRUE(got.ok());
  ASSERT_TRUE(got->has_value());  // empty is not absent
  EXPECT_EQ(**got, "");
  got = store_->GetMeta("paused/orders.eu/pg");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ(**got, std::string("a\0b", 3));
  got = store_->GetMeta("contract/orders");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ(**got, "v2");

  using Pairs = std::vector<std::pair<std::string, std::string>>;
  auto listed = store_->ListMeta("paused/orders/");
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(*listed, (Pairs{{"paused/orders/pg", "1"}, {"paused/orders/s3", ""}}));
  listed = store_->ListMeta("paused/");
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(listed->size(), 3u);
  EXPECT_EQ((*listed)[0].first, "paused/orders.eu/pg");  // key order
  // Control-plane values are apart from the dataset registrations in the same column family.
  listed = store_->ListMeta("");
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(listed->size(), 4u);
  for (const auto& [key, value] : *listed) EXPECT_NE(key.rfind("dataset/", 0), 0u) << key;
  listed = store_->ListMeta("dataset/");
  ASSERT_TRUE(listed.ok());
  EXPECT_TRUE(listed->empty());
  got = store_->GetMeta("dataset/orders");
  ASSERT_TRUE(got.ok());
  EXPECT_FALSE(got->has_value());
  // A control value named like a registration does not touch the registration.
  ASSERT_TRUE(store_->PutMeta("dataset/orders", "not a DatasetMeta").ok());
  listed = store_->ListMeta("nothing-here/");
  ASSERT_TRUE(listed.ok());
  EXPECT_TRUE(listed->empty());

  ASSERT_TRUE(store_->DeleteMeta("paused/orders/pg").ok());
  ASSERT_TRUE(store_->DeleteMeta("paused/orders/never-set").ok());
  ASSERT_NO_FATAL_FAILURE(Reopen());  // opening checks the stored registrations
  EXPECT_EQ(store_->datasets().size(), 2u);
  got = store_->GetMeta("paused/orders/pg");
  ASSERT_TRUE(got.ok());
  EXPECT_FALSE(got->has_value());
  listed = store_->ListMeta("paused/orders/");
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(*listed, (Pairs{{"paused/orders/s3", ""}}));
  got = store_->GetMeta("dataset/orders");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ(**got, "not a DatasetMeta");
  got = store_->GetMeta("contract/orders");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ(**got, "v2");

  // The registration is intact: a different partition count is still refused.
  store_.reset();
  options_.datasets[0].partitions = 3;
  auto refused = StagingStore::Open(options_);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace wharf::storage
