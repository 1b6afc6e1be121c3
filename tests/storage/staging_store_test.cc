#include "storage/staging_store.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <future>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/time_util.h"
#include "prometheus/registry.h"
#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "storage/codec.h"
#include "storage/keys.h"
#include "storage/rocksdb_options.h"

namespace wharf::storage {
namespace {

using google::protobuf::util::TimeUtil;
using wharf::v1::ProduceRequest;
using wharf::v1::QuarantineEntry;
using wharf::v1::Record;
using wharf::v1::RecordAck;
using wharf::v1::StoredBatch;

constexpr std::chrono::seconds kWait(10);
constexpr uint64_t kNoLimit = std::numeric_limits<uint64_t>::max();

// Append helpers -------------------------------------------------------------------------------

// Calls Append; the future is fulfilled by the callback. A second call of the callback would
// throw std::future_error on the writer thread and abort the test binary.
std::future<AppendResult> AppendAsync(StagingStore* store, ProduceRequest request) {
  auto promise = std::make_shared<std::promise<AppendResult>>();
  std::future<AppendResult> future = promise->get_future();
  store->Append(std::move(request),
                [promise](AppendResult result) { promise->set_value(std::move(result)); });
  return future;
}

// Waits (bounded) for an Append's result; fails the test on timeout.
AppendResult Await(std::future<AppendResult> future) {
  if (future.wait_for(kWait) != std::future_status::ready) {
    ADD_FAILURE() << "Append callback not called within " << kWait.count() << " s";
    AppendResult timed_out;
    timed_out.status = absl::DeadlineExceededError("append callback not called");
    return timed_out;
  }
  return future.get();
}

AppendResult AppendAndWait(StagingStore* store, ProduceRequest request) {
  return Await(AppendAsync(store, std::move(request)));
}

Record MakeRecord(std::string key, std::string payload) {
  Record r;
  r.set_key(std::move(key));
  r.set_payload(std::move(payload));
  return r;
}

std::vector<Record> Keyless(int n, const std::string& tag = "r") {
  std::vector<Record> records;
  for (int i = 0; i < n; ++i)
    records.push_back(MakeRecord("", absl::StrCat("{\"", tag, "\":", i, "}")));
  return records;
}

ProduceRequest MakeRequest(const std::string& dataset, const std::vector<Record>& records,
                           const std::string& producer = "", uint64_t first_sequence = 0) {
  ProduceRequest req;
  req.set_dataset(dataset);
  req.set_producer_id(producer);
  req.set_first_sequence(first_sequence);
  for (const auto& r : records) *req.add_records() = r;
  return req;
}

std::vector<std::pair<uint32_t, uint64_t>> AckPairs(const std::vector<RecordAck>& acks) {
  std::vector<std::pair<uint32_t, uint64_t>> out;
  for (const auto& a : acks) out.emplace_back(a.partition(), a.offset());
  return out;
}

// Checks acks against the documented assignment: keyed records by PartitionForKey, keyless ones
// of the request all in one partition, consecutive offsets per partition in request order.
// `next` holds the expected next offset per partition and is advanced.
void ExpectAssignment(const std::vector<Record>& records, const AppendResult& result,
                      uint32_t partitions, std::map<uint32_t, uint64_t>* next) {
  ASSERT_TRUE(result.status.ok()) << result.status;
  ASSERT_EQ(result.acks.size(), records.size());
  std::optional<uint32_t> keyless_partition;
  for (size_t i = 0; i < records.size(); ++i) {
    const RecordAck& ack = result.acks[i];
    ASSERT_LT(ack.partition(), partitions);
    if (records[i].key().empty()) {
      if (!keyless_partition) keyless_partition = ack.partition();
      EXPECT_EQ(ack.partition(), *keyless_partition) << "keyless record " << i;
    } else {
      EXPECT_EQ(ack.partition(), PartitionForKey(records[i].key(), partitions)) << "record " << i;
    }
    EXPECT_EQ(ack.offset(), (*next)[ack.partition()]++) << "record " << i;
  }
}

// Test data builders ---------------------------------------------------------------------------

StoredBatch MakeBatch(const std::string& dataset, uint32_t partition, uint64_t first, uint64_t last,
                      const std::set<uint64_t>& quarantined = {}) {
  StoredBatch batch;
  auto* m = batch.mutable_manifest();
  m->set_batch_id(absl::StrCat(dataset, ".p", partition, ".", first, "-", last));
  m->set_dataset(dataset);
  m->set_partition(partition);
  m->set_first_offset(first);
  m->set_last_offset(last);
  uint64_t bytes = 0;
  for (uint64_t o = first; o <= last; ++o) {
    if (quarantined.count(o) != 0) continue;
    auto* r = batch.add_records();
    r->set_offset(o);
    r->set_payload(absl::StrCat("{\"n\":", o, "}"));
    bytes += r->payload().size();
  }
  m->set_record_count(batch.records_size());
  m->set_quarantined_count(quarantined.size());
  m->set_bytes(bytes);
  *m->mutable_create_time() = TimeUtil::GetCurrentTime();
  return batch;
}

QuarantineEntry MakeQuarantine(const std::string& dataset, uint32_t partition, uint64_t offset) {
  QuarantineEntry q;
  q.set_dataset(dataset);
  q.set_partition(partition);
  q.set_offset(offset);
  q.set_reason(wharf::v1::PARSE_ERROR);
  q.set_message(absl::StrCat("bad json at ", offset));
  q.set_attempts(1);
  return q;
}

std::map<std::string, std::string> Headers(const Record& r) {
  return std::map<std::string, std::string>(r.headers().begin(), r.headers().end());
}

int64_t Micros(const google::protobuf::Timestamp& ts) {
  return TimeUtil::TimestampToMicroseconds(ts);
}

int64_t Nanos(const google::protobuf::Timestamp& ts) {
  return TimeUtil::TimestampToNanoseconds(ts);
}

int64_t NowNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Fixture --------------------------------------------------------------------------------------

class StagingStoreTest : public ::testing::Test {
 protected:
  struct ListenerCall {
    std::string dataset;
    uint32_t partition;
    uint64_t next_offset;
    bool operator<(const ListenerCall& o) const {
      return std::tie(dataset, partition, next_offset) <
             std::tie(o.dataset, o.partition, o.next_offset);
    }
    bool operator==(const ListenerCall& o) const {
      return std::tie(dataset, partition, next_offset) ==
             std::tie(o.dataset, o.partition, o.next_offset);
    }
  };

  void SetUp() override {
    std::string tmpl = "/tmp/wharf-storage-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr) << std::strerror(errno);
    dir_ = tmpl;
    options_.path = dir_ + "/store";
    options_.min_free_bytes = 0;  // independent of the test machine's free space
    options_.block_cache_bytes = 4 << 20;
    options_.write_buffer_bytes = 4 << 20;
    options_.datasets = {DatasetOptions{"events", 4, 0}, DatasetOptions{"one", 1, 0}};
  }

  void TearDown() override {
    ReleaseWriter();
    store_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  // Opens the store with options_, installs the recording listener and starts it.
  void Open() {
    auto store = StagingStore::Open(options_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    store_->SetAppendListener(
        [this](const std::string& dataset, uint32_t partition, uint64_t next_offset) {
          OnDurable(dataset, partition, next_offset);
        });
    ASSERT_TRUE(store_->Start().ok());
  }

  // Destroys the store (its destructor is the only shutdown) and opens it again.
  void Reopen() {
    store_.reset();
    Open();
  }

  // Commits `count` consecutive batches of 10 offsets each (0-9, 10-19, ...) to one partition;
  // returns the stored size of each.
  std::vector<uint64_t> CommitTenOffsetBatches(const std::string& dataset, uint32_t partition,
                                               int count) {
    std::vector<uint64_t> sizes;
    for (uint64_t first = 0; first < 10u * count; first += 10) {
      BatchCommit commit;
      commit.dataset = dataset;
      commit.partition = partition;
      commit.batch = MakeBatch(dataset, partition, first, first + 9);
      commit.next_offset = first + 10;
      sizes.push_back(EncodeChecked(*commit.batch).size());
      EXPECT_TRUE(store_->CommitBatch(commit).ok());
    }
    return sizes;
  }

  AppendResult Append(const std::string& dataset, const std::vector<Record>& records,
                      const std::string& producer = "", uint64_t first_sequence = 0) {
    return AppendAndWait(store_.get(), MakeRequest(dataset, records, producer, first_sequence));
  }

  std::vector<RawRecord> ReadAll(const std::string& dataset, uint32_t partition) {
    std::vector<RawRecord> out;
    absl::Status st = store_->ReadRaw(dataset, partition, 0, kNoLimit, 1 << 30, kNoLimit, &out);
    EXPECT_TRUE(st.ok()) << st;
    return out;
  }

  std::vector<uint64_t> Offsets(const std::vector<RawRecord>& records) {
    std::vector<uint64_t> out;
    for (const auto& r : records) out.push_back(r.offset);
    return out;
  }

  uint64_t RecordsAppended(const std::string& dataset) {
    uint64_t n = 0;
    for (const auto& ds : store_->datasets()) {
      if (ds.name != dataset) continue;
      for (uint32_t p = 0; p < ds.partitions; ++p) {
        n += store_->GetPartitionCounters(dataset, p).ingest.records_appended();
      }
    }
    return n;
  }

  std::string CountersSnapshot(const std::string& dataset, uint32_t partitions) {
    std::string out;
    for (uint32_t p = 0; p < partitions; ++p) {
      const PartitionCounters c = store_->GetPartitionCounters(dataset, p);
      absl::StrAppend(&out, p, ":", c.ingest.ShortDebugString(), "|",
                      c.validation.ShortDebugString(), "|", c.retention.ShortDebugString(), "\n");
    }
    return out;
  }

  // Listener and writer gate ---------------------------------------------------------------------

  void OnDurable(const std::string& dataset, uint32_t partition, uint64_t next_offset) {
    std::unique_lock<std::mutex> lock(listener_mu_);
    calls_.push_back(ListenerCall{dataset, partition, next_offset});
    if (hold_next_) {
      hold_next_ = false;
      held_ = true;
      listener_cv_.notify_all();
      listener_cv_.wait(lock, [this] { return !held_; });
    }
  }

  // The next durable group blocks the writer thread in the listener until ReleaseWriter():
  // everything appended meanwhile is queued and written as one group afterwards.
  void HoldWriterOnNextGroup() {
    std::lock_guard<std::mutex> lock(listener_mu_);
    hold_next_ = true;
  }

  bool WaitWriterHeld() {
    std::unique_lock<std::mutex> lock(listener_mu_);
    return listener_cv_.wait_for(lock, kWait, [this] { return held_; });
  }

  void ReleaseWriter() {
    std::lock_guard<std::mutex> lock(listener_mu_);
    hold_next_ = false;
    held_ = false;
    listener_cv_.notify_all();
  }

  std::vector<ListenerCall> ListenerCalls() {
    std::lock_guard<std::mutex> lock(listener_mu_);
    return calls_;
  }

  std::string dir_;
  StoreOptions options_;
  std::unique_ptr<StagingStore> store_;

  std::mutex listener_mu_;
  std::condition_variable listener_cv_;
  std::vector<ListenerCall> calls_;
  bool hold_next_ = false;
  bool held_ = false;
};

// Partitioning ---------------------------------------------------------------------------------

TEST(PartitionForKeyTest, IsFnv1a64OfTheKeyModuloPartitions) {
  // Published FNV-1a 64 vectors: "a" -> 0xaf63dc4c8601ec8c, "foobar" -> 0x85944171f73967e8.
  for (uint32_t n : {1u, 2u, 3u, 4u, 7u, 16u, 1000003u, 4294967295u}) {
    EXPECT_EQ(PartitionForKey("a", n), static_cast<uint32_t>(0xaf63dc4c8601ec8cull % n)) << n;
    EXPECT_EQ(PartitionForKey("foobar", n), static_cast<uint32_t>(0x85944171f73967e8ull % n)) << n;
  }
}

TEST(PartitionForKeyTest, PinnedValues) {
  // Part of the on-disk contract: these must never change.
  EXPECT_EQ(PartitionForKey("user-1", 4), 0u);
  EXPECT_EQ(PartitionForKey("user-2", 4), 1u);
  EXPECT_EQ(PartitionForKey("user-1", 16), 4u);
  EXPECT_EQ(PartitionForKey("user-2", 16), 13u);
  EXPECT_EQ(PartitionForKey("order-42", 4), 0u);
  EXPECT_EQ(PartitionForKey("order-42", 1000003), 924811u);
  EXPECT_EQ(PartitionForKey(std::string("\0\xFF", 2), 1000003), 576042u);
  EXPECT_EQ(PartitionForKey("a", 4294967295u), 895863001u);
  EXPECT_EQ(PartitionForKey("anything", 1), 0u);
}

TEST(PartitionForKeyTest, SpreadsKeysOverAllPartitions) {
  std::map<uint32_t, int> counts;
  for (int i = 0; i < 1000; ++i) ++counts[PartitionForKey(absl::StrCat("key-", i), 8)];
  ASSERT_EQ(counts.size(), 8u);
  for (const auto& [p, n] : counts) EXPECT_GT(n, 60) << "partition " << p;
}

// Append and read ------------------------------------------------------------------------------

TEST_F(StagingStoreTest, AppendAssignsConsecutiveOffsetsPerPartitionInRequestOrder) {
  ASSERT_NO_FATAL_FAILURE(Open());
  std::map<uint32_t, uint64_t> next;
  std::map<std::pair<uint32_t, uint64_t>, std::string> payload_at;
  for (int round = 0; round < 3; ++round) {
    std::vector<Record> records;
    for (int i = 0; i < 20; ++i) {
      records.push_back(MakeRecord(absl::StrCat("key-", i % 7), absl::StrCat("p", round, "-", i)));
    }
    AppendResult r = Append("events", records);
    ASSERT_NO_FATAL_FAILURE(ExpectAssignment(records, r, 4, &next));
    EXPECT_FALSE(r.duplicate);
    for (size_t i = 0; i < records.size(); ++i) {
      payload_at[{r.acks[i].partition(), r.acks[i].offset()}] = records[i].payload();
    }
  }
  EXPECT_GE(next.size(), 2u) << "keys should use several partitions";
  for (uint32_t p = 0; p < 4; ++p) {
    const std::vector<RawRecord> raw = ReadAll("events", p);
    ASSERT_EQ(raw.size(), next[p]);
    for (size_t i = 0; i < raw.size(); ++i) {
      EXPECT_EQ(raw[i].offset, i);
      EXPECT_EQ(raw[i].record.record().payload(), (payload_at[{p, i}]));
      EXPECT_EQ(PartitionForKey(raw[i].record.record().key(), 4), p);
    }
    const PartitionCounters c = store_->GetPartitionCounters("events", p);
    EXPECT_EQ(c.ingest.next_offset(), next[p]);
    EXPECT_EQ(c.ingest.records_appended(), next[p]);
  }
}

// The ack latency stages (docs/ARCHITECTURE.md, "Ack latency"): every request's queue wait and
// every group commit's build, RocksDB write (wait, WAL + fsync, memtable) and answer are
// observed. Two requests queued while the writer is held in the first group's answer wait at
// least the hold.
TEST_F(StagingStoreTest, GroupCommitStagesAreMeasured) {
  prometheus::Registry registry;
  // The store's metrics live in `registry`: the store goes before it, also on an early return.
  struct StoreResetter {
    std::unique_ptr<StagingStore>& store;
    ~StoreResetter() { store.reset(); }
  } resetter{store_};
  options_.metrics_registry = &registry;
  ASSERT_NO_FATAL_FAILURE(Open());
  HoldWriterOnNextGroup();
  auto first = AppendAsync(store_.get(), MakeRequest("events", Keyless(5, "a")));
  ASSERT_TRUE(WaitWriterHeld());
  auto second = AppendAsync(store_.get(), MakeRequest("events", Keyless(5, "b")));
  auto third = AppendAsync(store_.get(), MakeRequest("events", Keyless(5, "c")));
  constexpr double kHoldSeconds = 0.05;
  std::this_thread::sleep_for(std::chrono::duration<double>(kHoldSeconds));
  ReleaseWriter();
  for (auto* f : {&first, &second, &third}) ASSERT_TRUE(Await(std::move(*f)).status.ok());

  std::map<std::string, prometheus::ClientMetric> metrics;
  // The writer observes a group's answer time after the last callback returned, so the futures
  // can be ready a moment before the second group's observation lands.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  do {
    metrics.clear();
    for (const prometheus::MetricFamily& family : registry.Collect()) {
      if (!family.metric.empty()) metrics[family.name] = family.metric[0];
    }
    if (metrics["wharf_store_group_commit_answer_seconds"].histogram.sample_count >= 2) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  } while (std::chrono::steady_clock::now() < deadline);
  auto histogram = [&](const std::string& name) {
    EXPECT_EQ(metrics.count(name), 1u) << name << " is not registered";
    return metrics[name].histogram;
  };
  EXPECT_EQ(metrics["wharf_store_group_commits_total"].counter.value, 2);
  const auto queue = histogram("wharf_store_queue_wait_seconds");
  EXPECT_EQ(queue.sample_count, 3u);
  EXPECT_GE(queue.sample_sum, 2 * kHoldSeconds) << "the queued requests waited for the hold";
  for (const char* name :
       {"wharf_store_group_commit_build_seconds", "wharf_store_group_commit_wait_seconds",
        "wharf_store_group_commit_wal_seconds", "wharf_store_group_commit_memtable_seconds",
        "wharf_store_group_commit_answer_seconds", "wharf_store_group_commit_seconds"}) {
    EXPECT_EQ(histogram(name).sample_count, 2u) << name;
  }
  const auto wal = histogram("wharf_store_group_commit_wal_seconds");
  const auto write = histogram("wharf_store_group_commit_seconds");
  EXPECT_GT(wal.sample_sum, 0) << "RocksDB's perf context measured no WAL write";
  EXPECT_GT(histogram("wharf_store_group_commit_memtable_seconds").sample_sum, 0);
  EXPECT_LE(wal.sample_sum, write.sample_sum) << "a part of the write exceeds the whole";
  EXPECT_GE(histogram("wharf_store_group_commit_answer_seconds").sample_sum, kHoldSeconds)
      << "the first group's answer included the hold in the listener";
}

TEST_F(StagingStoreTest, SameKeyAlwaysLandsInTheSamePartitionInOrder) {
  ASSERT_NO_FATAL_FAILURE(Open());
  for (uint64_t i = 0; i < 5; ++i) {
    AppendResult r = Append("events", {MakeRecord("user-2", absl::StrCat("v", i)),
                                       MakeRecord("user-1", absl::StrCat("w", i))});
    ASSERT_TRUE(r.status.ok()) << r.status;
    EXPECT_EQ(r.acks[0].partition(), 1u);  // pinned: PartitionForKey("user-2", 4)
    EXPECT_EQ(r.acks[0].offset(), i);
    EXPECT_EQ(r.acks[1].partition(), 0u);  // pinned: PartitionForKey("user-1", 4)
    EXPECT_EQ(r.acks[1].offset(), i);
  }
  const std::vector<RawRecord> raw = ReadAll("events", 1);
  ASSERT_EQ(raw.size(), 5u);
  for (size_t i = 0; i < raw.size(); ++i) {
    EXPECT_EQ(raw[i].record.record().payload(), absl::StrCat("v", i));
  }
}

TEST_F(StagingStoreTest, KeylessRecordsOfOneRequestShareAPartitionAndRequestsRotate) {
  ASSERT_NO_FATAL_FAILURE(Open());
  std::map<uint32_t, uint64_t> next;
  std::vector<uint32_t> partitions;
  for (int i = 0; i < 8; ++i) {
    const std::vector<Record> records = Keyless(3, absl::StrCat("req", i));
    AppendResult r = Append("events", records);
    ASSERT_NO_FATAL_FAILURE(ExpectAssignment(records, r, 4, &next));
    partitions.push_back(r.acks[0].partition());
  }
  EXPECT_EQ(std::set<uint32_t>(partitions.begin(), partitions.begin() + 4).size(), 4u)
      << "four successive requests should use all four partitions";
  for (size_t i = 1; i < partitions.size(); ++i) EXPECT_NE(partitions[i], partitions[i - 1]);
  for (size_t i = 4; i < partitions.size(); ++i) EXPECT_EQ(partitions[i], partitions[i - 4]);
  for (uint32_t p = 0; p < 4; ++p) EXPECT_EQ(next[p], 6u);

  // Mixed request: keyed records follow their key, keyless ones stay together.
  const std::vector<Record> mixed = {MakeRecord("", "k0"), MakeRecord("user-1", "u1"),
                                     MakeRecord("", "k1"), MakeRecord("user-2", "u2"),
                                     MakeRecord("", "k2")};
  AppendResult r = Append("events", mixed);
  ASSERT_NO_FATAL_FAILURE(ExpectAssignment(mixed, r, 4, &next));
}

TEST_F(StagingStoreTest, ReadRawReturnsTheRecordByteIdenticalWithWhatWharfAdded) {
  ASSERT_NO_FATAL_FAILURE(Open());
  Record first = MakeRecord(std::string("k\0ey\xFF", 5), std::string("\x00\x01\xFF{\"a\":1}", 10));
  first.mutable_event_time()->set_seconds(1700000000);
  first.mutable_event_time()->set_nanos(123456789);
  (*first.mutable_headers())["source"] = "pos-terminal";
  (*first.mutable_headers())["binary"] = std::string("\x00\x01", 2);
  (*first.mutable_headers())[""] = "empty name";
  Record second = MakeRecord(first.key(), std::string(100000, 'z'));  // same key, large payload

  const int64_t before = NowNanos();
  AppendResult r = Append("events", {first, second}, "producer-7", 0);
  const int64_t after = NowNanos();
  ASSERT_TRUE(r.status.ok()) << r.status;
  const uint32_t p = PartitionForKey(first.key(), 4);

  const std::vector<RawRecord> raw = ReadAll("events", p);
  ASSERT_EQ(raw.size(), 2u);
  const Record* expected[] = {&first, &second};
  for (size_t i = 0; i < 2; ++i) {
    const wharf::v1::StoredRecord& s = raw[i].record;
    EXPECT_EQ(raw[i].offset, i);
    EXPECT_EQ(s.record().key(), expected[i]->key());
    EXPECT_EQ(s.record().payload(), expected[i]->payload());
    EXPECT_EQ(s.record().has_event_time(), expected[i]->has_event_time());
    EXPECT_EQ(s.record().event_time().seconds(), expected[i]->event_time().seconds());
    EXPECT_EQ(s.record().event_time().nanos(), expected[i]->event_time().nanos());
    EXPECT_EQ(Headers(s.record()), Headers(*expected[i]));
    EXPECT_EQ(s.producer_id(), "producer-7");
    EXPECT_EQ(s.sequence(), i);
    ASSERT_TRUE(s.has_ingest_time());
    // Full precision: the ingest time lies between the calls (not truncated to a second).
    EXPECT_GE(Nanos(s.ingest_time()), before);
    EXPECT_LE(Nanos(s.ingest_time()), after);
    EXPECT_EQ(raw[i].stored_bytes, EncodeChecked(s).size());
  }
  const PartitionCounters c = store_->GetPartitionCounters("events", p);
  EXPECT_EQ(c.ingest.bytes_appended(), raw[0].stored_bytes + raw[1].stored_bytes);
  EXPECT_EQ(Micros(c.ingest.last_ingest_time()), Micros(raw[0].record.ingest_time()));
  EXPECT_EQ(store_->StagedBytes("events"), c.ingest.bytes_appended());
}

// The memtable budget (capped at half the block cache) makes RocksDB flush long before one
// column family's memtable is full, and nothing is lost by those early flushes: 3 MB of records
// stay below the 4 MiB memtable of the raw column family, so only the budget (1 MiB here) can
// produce table files, and every record reads back identical after a reopen.
TEST_F(StagingStoreTest, MemtableBudgetFlushesEarlyAndKeepsEveryRecord) {
  options_.block_cache_bytes = 2 << 20;
  options_.memtable_budget_bytes = 64 << 20;  // capped to block_cache_bytes / 2 = 1 MiB
  options_.write_buffer_bytes = 4 << 20;
  ASSERT_NO_FATAL_FAILURE(Open());
  std::vector<std::string> payloads;
  for (int request = 0; request < 30; ++request) {
    std::vector<Record> records;
    for (int i = 0; i < 100; ++i) {
      std::string payload = absl::StrCat("{\"n\":", payloads.size(), ",\"pad\":\"");
      payload.append(1000, static_cast<char>('a' + payloads.size() % 26));
      payload += "\"}";
      payloads.push_back(payload);
      records.push_back(MakeRecord("", payload));
    }
    ASSERT_TRUE(Append("one", records).status.ok());
  }
  auto table_files = [this] {
    int n = 0;
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(options_.path, ec)) {
      if (entry.path().extension() == ".sst") ++n;
    }
    return n;
  };
  // Flushes run in the background: wait for the first table file (at most 10 s).
  for (int i = 0; i < 200 && table_files() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_GT(table_files(), 0) << "no flush although 3 MB exceed the 1 MiB memtable budget";

  ASSERT_NO_FATAL_FAILURE(Reopen());
  const std::vector<RawRecord> raw = ReadAll("one", 0);
  ASSERT_EQ(raw.size(), payloads.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    EXPECT_EQ(raw[i].offset, i);
    EXPECT_EQ(raw[i].record.record().payload(), payloads[i]) << "offset " << i;
  }
}

TEST_F(StagingStoreTest, ReadRawRespectsRangeRecordAndByteLimits) {
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_TRUE(Append("one", Keyless(10)).status.ok());
  const std::vector<RawRecord> all = ReadAll("one", 0);
  ASSERT_EQ(all.size(), 10u);
  std::vector<RawRecord> out;

  ASSERT_TRUE(store_->ReadRaw("one", 0, 3, 7, 100, kNoLimit, &out).ok());
  EXPECT_EQ(Offsets(out), (std::vector<uint64_t>{3, 4, 5, 6}));
  ASSERT_TRUE(store_->ReadRaw("one", 0, 2, kNoLimit, 3, kNoLimit, &out).ok());
  EXPECT_EQ(Offsets(out), (std::vector<uint64_t>{2, 3, 4}));
  ASSERT_TRUE(store_->ReadRaw("one", 0, 8, 100, 100, kNoLimit, &out).ok());
  EXPECT_EQ(Offsets(out), (std::vector<uint64_t>{8, 9}));

  const uint64_t three = all[0].stored_bytes + all[1].stored_bytes + all[2].stored_bytes;
  ASSERT_TRUE(store_->ReadRaw("one", 0, 0, kNoLimit, 100, three, &out).ok());
  EXPECT_EQ(Offsets(out), (std::vector<uint64_t>{0, 1, 2}));
  ASSERT_TRUE(store_->ReadRaw("one", 0, 0, kNoLimit, 100, three - 1, &out).ok());
  EXPECT_EQ(Offsets(out), (std::vector<uint64_t>{0, 1}));
  // At least one record even when it exceeds max_bytes.
  ASSERT_TRUE(store_->ReadRaw("one", 0, 5, kNoLimit, 100, 1, &out).ok());
  EXPECT_EQ(Offsets(out), (std::vector<uint64_t>{5}));
  ASSERT_TRUE(store_->ReadRaw("one", 0, 5, kNoLimit, 100, 0, &out).ok());
  EXPECT_EQ(Offsets(out), (std::vector<uint64_t>{5}));

  // Empty ranges; the output is replaced, not appended to.
  out = all;
  ASSERT_TRUE(store_->ReadRaw("one", 0, 4, 4, 100, kNoLimit, &out).ok());
  EXPECT_TRUE(out.empty());
  out = all;
  ASSERT_TRUE(store_->ReadRaw("one", 0, 7, 3, 100, kNoLimit, &out).ok());
  EXPECT_TRUE(out.empty());
  ASSERT_TRUE(store_->ReadRaw("one", 0, 10, kNoLimit, 100, kNoLimit, &out).ok());
  EXPECT_TRUE(out.empty());
  ASSERT_TRUE(store_->ReadRaw("one", 0, 0, kNoLimit, 0, kNoLimit, &out).ok());
  EXPECT_TRUE(out.empty());
}

TEST_F(StagingStoreTest, DatasetsWithPrefixRelatedNamesAreIsolated) {
  options_.datasets = {DatasetOptions{"a", 1, 0}, DatasetOptions{"a.b", 1, 0},
                       DatasetOptions{"ab", 1, 0}};
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_TRUE(Append("a", Keyless(2, "a")).status.ok());
  ASSERT_TRUE(Append("a.b", Keyless(3, "a.b")).status.ok());
  ASSERT_TRUE(Append("ab", Keyless(4, "ab")).status.ok());
  EXPECT_EQ(ReadAll("a", 0).size(), 2u);
  EXPECT_EQ(ReadAll("a.b", 0).size(), 3u);
  EXPECT_EQ(ReadAll("ab", 0).size(), 4u);
  for (const auto& r : ReadAll("a", 0)) {
    EXPECT_EQ(r.record.record().payload().substr(0, 4), "{\"a\"");
  }
  EXPECT_TRUE(store_->HasDataset("a.b"));
  EXPECT_FALSE(store_->HasDataset("a.c"));
  ASSERT_EQ(store_->datasets().size(), 3u);
  EXPECT_EQ(store_->datasets()[1].name, "a.b");
}

// Recovery -------------------------------------------------------------------------------------

class StagingStoreDurabilityTest : public StagingStoreTest,
                                   public ::testing::WithParamInterface<Durability> {
 protected:
  void SetUp() override {
    StagingStoreTest::SetUp();
    options_.durability = GetParam();
  }
};

INSTANTIATE_TEST_SUITE_P(Durability, StagingStoreDurabilityTest,
                         ::testing::Values(Durability::kSync, Durability::kAsync),
                         [](const ::testing::TestParamInfo<Durability>& info) {
                           return info.param == Durability::kSync ? "Sync" : "Async";
                         });

TEST_P(StagingStoreDurabilityTest, RecordsOffsetsAndCountersSurviveReopen) {
  ASSERT_NO_FATAL_FAILURE(Open());
  std::map<uint32_t, uint64_t> next;
  for (int i = 0; i < 4; ++i) {
    std::vector<Record> records = Keyless(3, absl::StrCat("k", i));
    records.push_back(MakeRecord(absl::StrCat("key-", i), "keyed"));
    AppendResult r = Append("events", records, "prod", 4 * i);
    ASSERT_NO_FATAL_FAILURE(ExpectAssignment(records, r, 4, &next));
  }
  ASSERT_TRUE(Append("one", Keyless(5)).status.ok());

  std::map<uint32_t, std::vector<std::string>> before;
  for (uint32_t p = 0; p < 4; ++p) {
    for (const auto& r : ReadAll("events", p)) {
      before[p].push_back(absl::StrCat(r.offset, "=", r.record.ShortDebugString()));
    }
  }
  const std::string counters = CountersSnapshot("events", 4) + CountersSnapshot("one", 1);
  const uint64_t staged = store_->StagedBytes("events");
  ASSERT_GT(staged, 0u);

  ASSERT_NO_FATAL_FAILURE(Reopen());

  for (uint32_t p = 0; p < 4; ++p) {
    std::vector<std::string> after;
    for (const auto& r : ReadAll("events", p)) {
      after.push_back(absl::StrCat(r.offset, "=", r.record.ShortDebugString()));
    }
    EXPECT_EQ(after, before[p]) << "partition " << p;
    EXPECT_EQ(store_->GetPartitionCounters("events", p).ingest.next_offset(), next[p]);
  }
  EXPECT_EQ(CountersSnapshot("events", 4) + CountersSnapshot("one", 1), counters);
  EXPECT_EQ(store_->StagedBytes("events"), staged);

  // New appends continue at the next offsets, and the producer continues its sequence.
  for (int i = 0; i < 4; ++i) {
    const std::vector<Record> records = Keyless(2, absl::StrCat("again", i));
    AppendResult r = Append("events", records, "prod", 16 + 2 * i);
    ASSERT_NO_FATAL_FAILURE(ExpectAssignment(records, r, 4, &next));
  }
  AppendResult r = Append("one", Keyless(1));
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.acks[0].offset(), 5u);
}

TEST_P(StagingStoreDurabilityTest, ProducerRetriesAreDeduplicatedAcrossReopen) {
  ASSERT_NO_FATAL_FAILURE(Open());
  const std::vector<Record> first = {MakeRecord("user-1", "a"), MakeRecord("", "b"),
                                     MakeRecord("user-2", "c")};
  AppendResult r0 = Append("events", first, "p1", 0);
  ASSERT_TRUE(r0.status.ok()) << r0.status;
  EXPECT_FALSE(r0.duplicate);
  const std::string counters = CountersSnapshot("events", 4);
  const uint64_t staged = store_->StagedBytes("events");

  AppendResult dup = Append("events", first, "p1", 0);
  ASSERT_TRUE(dup.status.ok()) << dup.status;
  EXPECT_TRUE(dup.duplicate);
  EXPECT_EQ(AckPairs(dup.acks), AckPairs(r0.acks));
  EXPECT_EQ(CountersSnapshot("events", 4), counters);
  EXPECT_EQ(store_->StagedBytes("events"), staged);
  EXPECT_EQ(RecordsAppended("events"), 3u);

  AppendResult r3 = Append("events", Keyless(2), "p1", 3);
  ASSERT_TRUE(r3.status.ok()) << r3.status;
  EXPECT_FALSE(r3.duplicate);

  ASSERT_NO_FATAL_FAILURE(Reopen());
  for (int i = 0; i < 2; ++i) {
    dup = Append("events", first, "p1", 0);
    ASSERT_TRUE(dup.status.ok()) << dup.status;
    EXPECT_TRUE(dup.duplicate);
    EXPECT_EQ(AckPairs(dup.acks), AckPairs(r0.acks));
    dup = Append("events", Keyless(2), "p1", 3);
    ASSERT_TRUE(dup.status.ok()) << dup.status;
    EXPECT_TRUE(dup.duplicate);
    EXPECT_EQ(AckPairs(dup.acks), AckPairs(r3.acks));
  }
  EXPECT_EQ(RecordsAppended("events"), 5u);

  // Same sequence, different record count: refused, nothing stored.
  AppendResult mismatch = Append("events", Keyless(2), "p1", 0);
  EXPECT_EQ(mismatch.status.code(), absl::StatusCode::kFailedPrecondition) << mismatch.status;
  EXPECT_TRUE(mismatch.acks.empty());
  // A gap: refused with the expected sequence.
  AppendResult gap = Append("events", Keyless(1), "p1", 9);
  EXPECT_EQ(gap.status.code(), absl::StatusCode::kFailedPrecondition) << gap.status;
  EXPECT_NE(gap.status.message().find("expected 5"), std::string::npos) << gap.status;
  EXPECT_EQ(RecordsAppended("events"), 5u);

  // The expected sequence is accepted; other producers and datasets have their own windows.
  AppendResult next = Append("events", Keyless(1), "p1", 5);
  ASSERT_TRUE(next.status.ok()) << next.status;
  EXPECT_FALSE(next.duplicate);
  AppendResult other = Append("events", first, "p2", 0);
  ASSERT_TRUE(other.status.ok()) << other.status;
  EXPECT_FALSE(other.duplicate);
  AppendResult other_dataset = Append("one", first, "p1", 0);
  ASSERT_TRUE(other_dataset.status.ok()) << other_dataset.status;
  EXPECT_FALSE(other_dataset.duplicate);
  EXPECT_EQ(RecordsAppended("events"), 9u);
  EXPECT_EQ(RecordsAppended("one"), 3u);
}

TEST_F(StagingStoreTest, ForwarderRetryCutDifferentlyIsADuplicateOfTheStoredRecords) {
  ASSERT_NO_FATAL_FAILURE(Open());
  auto forward = [&](uint64_t first, int n) {
    wharf::v1::ProduceRequest req;
    req.set_dataset("one");
    req.set_producer_id("fwd");
    req.set_first_sequence(first);
    req.set_allow_sequence_gap(true);
    for (int i = 0; i < n; ++i)
      req.add_records()->set_payload(absl::StrCat("{\"s\":", first + i, "}"));
    return AppendAndWait(store_.get(), std::move(req));
  };
  AppendResult a = forward(10, 5);  // sequences 10..14
  ASSERT_TRUE(a.status.ok()) << a.status;
  AppendResult b = forward(20, 3);  // a gap (allowed), sequences 20..22
  ASSERT_TRUE(b.status.ok()) << b.status;
  // A retry of 12..14 (part of the first request) is a duplicate with the original offsets.
  AppendResult part = forward(12, 3);
  ASSERT_TRUE(part.status.ok()) << part.status;
  EXPECT_TRUE(part.duplicate);
  ASSERT_EQ(part.acks.size(), 3u);
  EXPECT_EQ(part.acks[0].offset(), a.acks[2].offset());
  EXPECT_EQ(part.acks[2].offset(), a.acks[4].offset());
  // A retry that spans sequences never stored (15..19 fell in the gap) is refused.
  AppendResult spanning = forward(13, 8);
  EXPECT_EQ(spanning.status.code(), absl::StatusCode::kFailedPrecondition) << spanning.status;
  EXPECT_EQ(RecordsAppended("one"), 8u);
  // Without allow_sequence_gap a plain producer keeps the strict rule.
  wharf::v1::ProduceRequest strict;
  strict.set_dataset("one");
  strict.set_producer_id("fwd");
  strict.set_first_sequence(12);
  for (int i = 0; i < 3; ++i) strict.add_records()->set_payload("{}");
  EXPECT_EQ(AppendAndWait(store_.get(), std::move(strict)).status.code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(RecordsAppended("one"), 8u);
}

TEST_F(StagingStoreTest, RetryOlderThanTheProducerWindowIsRefused) {
  options_.producer_window = 2;
  ASSERT_NO_FATAL_FAILURE(Open());
  std::vector<AppendResult> results;
  for (uint64_t seq = 0; seq < 4; ++seq) {
    results.push_back(Append("one", Keyless(1), "p", seq));
    ASSERT_TRUE(results.back().status.ok()) << results.back().status;
  }
  for (int round = 0; round < 2; ++round) {
    for (uint64_t seq : {0, 1}) {
      AppendResult old = Append("one", Keyless(1), "p", seq);
      EXPECT_EQ(old.status.code(), absl::StatusCode::kFailedPrecondition) << old.status;
      EXPECT_NE(old.status.message().find("window"), std::string::npos) << old.status;
    }
    for (uint64_t seq : {2, 3}) {
      AppendResult dup = Append("one", Keyless(1), "p", seq);
      ASSERT_TRUE(dup.status.ok()) << dup.status;
      EXPECT_TRUE(dup.duplicate);
      EXPECT_EQ(AckPairs(dup.acks), AckPairs(results[seq].acks));
    }
    EXPECT_EQ(RecordsAppended("one"), 4u);
    if (round == 0) {
      ASSERT_NO_FATAL_FAILURE(Reopen());
    }
  }
}

TEST_F(StagingStoreTest, RequestsOfOneProducerInOneGroupAreAppliedInOrder) {
  ASSERT_NO_FATAL_FAILURE(Open());
  HoldWriterOnNextGroup();
  auto blocker = AppendAsync(store_.get(), MakeRequest("one", Keyless(1)));
  ASSERT_TRUE(WaitWriterHeld());
  // All of these are queued while the writer is busy: they form the next group.
  auto a = AppendAsync(store_.get(), MakeRequest("one", Keyless(2), "p", 0));
  auto b = AppendAsync(store_.get(), MakeRequest("one", Keyless(3), "p", 2));
  auto dup_a = AppendAsync(store_.get(), MakeRequest("one", Keyless(2), "p", 0));
  auto gap = AppendAsync(store_.get(), MakeRequest("one", Keyless(1), "p", 9));
  auto bad_count = AppendAsync(store_.get(), MakeRequest("one", Keyless(5), "p", 2));
  auto c = AppendAsync(store_.get(), MakeRequest("one", Keyless(1), "p", 5));
  auto dup_b = AppendAsync(store_.get(), MakeRequest("one", Keyless(3), "p", 2));
  ReleaseWriter();

  AppendResult rb0 = Await(std::move(blocker));
  AppendResult ra = Await(std::move(a));
  AppendResult rb = Await(std::move(b));
  AppendResult rdup_a = Await(std::move(dup_a));
  AppendResult rgap = Await(std::move(gap));
  AppendResult rbad = Await(std::move(bad_count));
  AppendResult rc = Await(std::move(c));
  AppendResult rdup_b = Await(std::move(dup_b));

  ASSERT_TRUE(rb0.status.ok()) << rb0.status;
  ASSERT_TRUE(ra.status.ok()) << ra.status;
  ASSERT_TRUE(rb.status.ok()) << rb.status;
  ASSERT_TRUE(rc.status.ok()) << rc.status;
  using Acks = std::vector<std::pair<uint32_t, uint64_t>>;
  EXPECT_EQ(AckPairs(rb0.acks), (Acks{{0, 0}}));
  EXPECT_EQ(AckPairs(ra.acks), (Acks{{0, 1}, {0, 2}}));
  EXPECT_EQ(AckPairs(rb.acks), (Acks{{0, 3}, {0, 4}, {0, 5}}));
  EXPECT_EQ(AckPairs(rc.acks), (Acks{{0, 6}}));
  EXPECT_FALSE(ra.duplicate);
  EXPECT_FALSE(rb.duplicate);
  ASSERT_TRUE(rdup_a.status.ok()) << rdup_a.status;
  EXPECT_TRUE(rdup_a.duplicate);
  EXPECT_EQ(AckPairs(rdup_a.acks), AckPairs(ra.acks));
  ASSERT_TRUE(rdup_b.status.ok()) << rdup_b.status;
  EXPECT_TRUE(rdup_b.duplicate);
  EXPECT_EQ(AckPairs(rdup_b.acks), AckPairs(rb.acks));
  EXPECT_EQ(rgap.status.code(), absl::StatusCode::kFailedPrecondition) << rgap.status;
  EXPECT_NE(rgap.status.message().find("expected 5"), std::string::npos) << rgap.status;
  EXPECT_EQ(rbad.status.code(), absl::StatusCode::kFailedPrecondition) << rbad.status;

  // Two durable groups: the blocker's, then everything else at once.
  const std::vector<ListenerCall> calls = ListenerCalls();
  EXPECT_EQ(calls, (std::vector<ListenerCall>{{"one", 0, 1}, {"one", 0, 7}}));
  EXPECT_EQ(ReadAll("one", 0).size(), 7u);
  const std::vector<RawRecord> raw = ReadAll("one", 0);
  for (size_t i = 1; i < raw.size(); ++i) {
    EXPECT_EQ(raw[i].record.producer_id(), "p");
    EXPECT_EQ(raw[i].record.sequence(), i - 1);
  }
}

TEST_F(StagingStoreTest, ProducerWindowsSurviveCacheEvictionWithinAGroup) {
  // The writer caches producer windows and drops the cache when it grows too large. Dropping it
  // in the middle of a group must not lose the updates of earlier requests of that group.
  options_.durability = Durability::kAsync;
  ASSERT_NO_FATAL_FAILURE(Open());
  AppendResult first = Append("one", Keyless(1), "victim", 0);
  ASSERT_TRUE(first.status.ok()) << first.status;

  HoldWriterOnNextGroup();
  auto blocker = AppendAsync(store_.get(), MakeRequest("one", Keyless(1)));
  ASSERT_TRUE(WaitWriterHeld());
  auto second = AppendAsync(store_.get(), MakeRequest("one", Keyless(1, "second"), "victim", 1));
  // More new producers in the same group than the writer caches.
  constexpr int kProducers = 100001;
  struct Tally {
    std::atomic<int> answered{0};
    std::atomic<int> failed{0};
  };
  auto tally = std::make_shared<Tally>();  // outlives the test body if it fails early
  const ProduceRequest tiny = MakeRequest("one", {});
  for (int i = 0; i < kProducers; ++i) {
    ProduceRequest req = tiny;
    req.set_producer_id(absl::StrCat("bulk-", i));
    store_->Append(std::move(req), [tally](AppendResult r) {
      if (!r.status.ok()) tally->failed.fetch_add(1);
      tally->answered.fetch_add(1);
    });
  }
  // The victim retries its request (as after a lost ack) in the same group.
  auto retry = AppendAsync(store_.get(), MakeRequest("one", Keyless(1, "second"), "victim", 1));
  ReleaseWriter();

  ASSERT_TRUE(Await(std::move(blocker)).status.ok());
  AppendResult r1 = Await(std::move(second));
  AppendResult r2 = Await(std::move(retry));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (tally->answered.load() < kProducers && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(tally->answered.load(), kProducers);
  EXPECT_EQ(tally->failed.load(), 0);
  ASSERT_TRUE(r1.status.ok()) << r1.status;
  EXPECT_FALSE(r1.duplicate);
  ASSERT_TRUE(r2.status.ok()) << r2.status;
  EXPECT_TRUE(r2.duplicate) << "the retry was stored a second time";
  EXPECT_EQ(AckPairs(r2.acks), AckPairs(r1.acks));

  // The victim's window is intact in the store: a later retry is a duplicate, the next
  // sequence is accepted.
  AppendResult r3 = Append("one", Keyless(1, "second"), "victim", 1);
  ASSERT_TRUE(r3.status.ok()) << r3.status;
  EXPECT_TRUE(r3.duplicate);
  AppendResult r4 = Append("one", Keyless(1, "third"), "victim", 2);
  EXPECT_TRUE(r4.status.ok()) << r4.status;
  // first, blocker, second, third: the bulk requests carry no records (cheaper to write).
  EXPECT_EQ(RecordsAppended("one"), 4u);
}

// Refusals -------------------------------------------------------------------------------------

TEST_F(StagingStoreTest, UnknownDatasetIsNotFound) {
  ASSERT_NO_FATAL_FAILURE(Open());
  for (const std::string producer : {"", "p"}) {
    AppendResult r = Append("nope", Keyless(1), producer, 0);
    EXPECT_EQ(r.status.code(), absl::StatusCode::kNotFound) << r.status;
    EXPECT_NE(r.status.message().find("nope"), std::string::npos) << r.status;
    EXPECT_TRUE(r.acks.empty());
  }
  EXPECT_FALSE(store_->HasDataset("nope"));
  // The producer's sequence was not consumed anywhere.
  EXPECT_TRUE(Append("one", Keyless(1), "p", 0).status.ok());
  EXPECT_EQ(ListenerCalls().size(), 1u);
}

TEST_F(StagingStoreTest, QuotaRefusesAppendsUntilRetentionFreesSpace) {
  options_.datasets = {DatasetOptions{"q", 1, 2000}};
  options_.retry_after = std::chrono::milliseconds(250);
  ASSERT_NO_FATAL_FAILURE(Open());
  const std::vector<Record> record = {MakeRecord("", std::string(100, 'x'))};
  uint64_t accepted = 0;
  AppendResult refused;
  for (int i = 0; i < 100; ++i) {
    AppendResult r = Append("q", record);
    if (!r.status.ok()) {
      refused = r;
      break;
    }
    ASSERT_EQ(r.acks[0].offset(), accepted);
    ++accepted;
  }
  ASSERT_GT(accepted, 5u);
  ASSERT_LT(accepted, 100u);
  EXPECT_EQ(refused.status.code(), absl::StatusCode::kResourceExhausted) << refused.status;
  EXPECT_NE(refused.status.message().find("quota"), std::string::npos) << refused.status;
  EXPECT_EQ(refused.retry_after, std::chrono::milliseconds(250));
  EXPECT_TRUE(refused.acks.empty());
  const uint64_t staged = store_->StagedBytes("q");
  EXPECT_LE(staged, 2000u);
  EXPECT_GT(staged + 100, 2000u);

  // Still refused; nothing stored by refused appends.
  const std::string counters = CountersSnapshot("q", 1);
  AppendResult again = Append("q", record, "prod", 0);
  EXPECT_EQ(again.status.code(), absl::StatusCode::kResourceExhausted) << again.status;
  EXPECT_GT(again.retry_after.count(), 0);
  EXPECT_EQ(CountersSnapshot("q", 1), counters);
  EXPECT_EQ(ReadAll("q", 0).size(), accepted);
  EXPECT_EQ(store_->StagedBytes("q"), staged);

  // Retention frees the space.
  auto deleted = store_->DeleteRawBelow(
      "q", 0, accepted, std::chrono::system_clock::now() + std::chrono::hours(1), 1000);
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  EXPECT_EQ(*deleted, accepted);
  EXPECT_EQ(store_->StagedBytes("q"), 0u);
  AppendResult ok = Append("q", record, "prod", 0);
  ASSERT_TRUE(ok.status.ok()) << ok.status;
  EXPECT_EQ(ok.acks[0].offset(), accepted);

  // Committed batches count against the quota too, until deleted.
  BatchCommit commit;
  commit.dataset = "q";
  commit.partition = 0;
  commit.batch = MakeBatch("q", 0, 0, accepted);
  commit.batch->mutable_records(0)->set_payload(std::string(2500, 'b'));
  commit.next_offset = accepted + 1;
  ASSERT_TRUE(store_->CommitBatch(commit).ok());
  EXPECT_GT(store_->StagedBytes("q"), 2000u);
  AppendResult full = Append("q", record);
  EXPECT_EQ(full.status.code(), absl::StatusCode::kResourceExhausted) << full.status;
  auto batches_deleted = store_->DeleteBatchesBelow("q", 0, accepted + 1);
  ASSERT_TRUE(batches_deleted.ok()) << batches_deleted.status();
  EXPECT_EQ(*batches_deleted, 1u);
  EXPECT_LT(store_->StagedBytes("q"), 2000u);
  AppendResult after = Append("q", record);
  ASSERT_TRUE(after.status.ok()) << after.status;
  EXPECT_EQ(after.acks[0].offset(), accepted + 1);
}

TEST_F(StagingStoreTest, DiskWatermarkRefusesAppends) {
  ASSERT_NO_FATAL_FAILURE(Open());
  EXPECT_GT(store_->DiskFreeBytes(), 0u);
  EXPECT_EQ(store_->NotAcceptingReason(), "");
  ASSERT_TRUE(Append("one", Keyless(1)).status.ok());
  EXPECT_EQ(store_->NotAcceptingReason(), "");
  store_.reset();

  options_.min_free_bytes = kNoLimit;
  options_.retry_after = std::chrono::milliseconds(1500);
  ASSERT_NO_FATAL_FAILURE(Open());
  const std::string counters = CountersSnapshot("one", 1);
  AppendResult r = Append("one", Keyless(1), "p", 0);
  EXPECT_EQ(r.status.code(), absl::StatusCode::kResourceExhausted) << r.status;
  EXPECT_EQ(r.retry_after, std::chrono::milliseconds(1500));
  EXPECT_TRUE(r.acks.empty());
  EXPECT_NE(store_->NotAcceptingReason(), "");
  EXPECT_NE(store_->NotAcceptingReason().find("watermark"), std::string::npos)
      << store_->NotAcceptingReason();
  EXPECT_EQ(CountersSnapshot("one", 1), counters);
  EXPECT_EQ(ReadAll("one", 0).size(), 1u);
}

// Opening --------------------------------------------------------------------------------------

TEST_F(StagingStoreTest, ChangingThePartitionCountIsRefused) {
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_TRUE(Append("events", Keyless(3)).status.ok());
  store_.reset();

  options_.datasets = {DatasetOptions{"events", 8, 0}};
  auto changed = StagingStore::Open(options_);
  ASSERT_FALSE(changed.ok());
  EXPECT_EQ(changed.status().code(), absl::StatusCode::kFailedPrecondition) << changed.status();
  EXPECT_NE(changed.status().message().find("created with 4 partitions"), std::string::npos)
      << changed.status();
  EXPECT_NE(changed.status().message().find("says 8"), std::string::npos) << changed.status();

  // The original count still opens with the data intact; a new dataset can be added.
  options_.datasets = {DatasetOptions{"events", 4, 0}, DatasetOptions{"more", 2, 0}};
  ASSERT_NO_FATAL_FAILURE(Open());
  EXPECT_EQ(RecordsAppended("events"), 3u);
  EXPECT_TRUE(Append("more", Keyless(1)).status.ok());
}

TEST_F(StagingStoreTest, InvalidOptionsAreRefused) {
  const std::vector<std::string> bad_names = {
      "", "-x", ".x", "a/b", "a b", "caf\xC3\xA9", std::string(65, 'n')};
  for (const std::string& name : bad_names) {
    options_.datasets = {DatasetOptions{name, 1, 0}};
    auto store = StagingStore::Open(options_);
    ASSERT_FALSE(store.ok()) << name;
    EXPECT_EQ(store.status().code(), absl::StatusCode::kInvalidArgument) << store.status();
  }
  options_.datasets = {DatasetOptions{"zero", 0, 0}};
  EXPECT_EQ(StagingStore::Open(options_).status().code(), absl::StatusCode::kInvalidArgument);
  options_.datasets = {DatasetOptions{"twice", 2, 0}, DatasetOptions{"twice", 2, 0}};
  EXPECT_EQ(StagingStore::Open(options_).status().code(), absl::StatusCode::kInvalidArgument);
  StoreOptions no_path = options_;
  no_path.path.clear();
  no_path.datasets.clear();
  EXPECT_EQ(StagingStore::Open(no_path).status().code(), absl::StatusCode::kInvalidArgument);

  // None of the refused datasets was registered: they open with any partition count later.
  options_.datasets = {DatasetOptions{"zero", 3, 0}, DatasetOptions{"twice", 5, 0}};
  ASSERT_NO_FATAL_FAILURE(Open());
}

// Pipeline side --------------------------------------------------------------------------------

TEST_F(StagingStoreTest, CommitBatchStoresBatchQuarantineAndCursorTogether) {
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_TRUE(Append("one", Keyless(12)).status.ok());
  const uint64_t raw_bytes = store_->GetPartitionCounters("one", 0).ingest.bytes_appended();

  BatchCommit commit;
  commit.dataset = "one";
  commit.partition = 0;
  commit.batch = MakeBatch("one", 0, 0, 9, {3, 7});
  commit.quarantine = {MakeQuarantine("one", 0, 3), MakeQuarantine("one", 0, 7)};
  commit.next_offset = 10;
  ASSERT_TRUE(store_->CommitBatch(commit).ok());
  const uint64_t batch_bytes = EncodeChecked(*commit.batch).size();

  std::vector<StoredBatch> batches;
  ASSERT_TRUE(store_->ReadBatches("one", 0, 0, 10, &batches).ok());
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_EQ(batches[0].SerializeAsString(), commit.batch->SerializeAsString());
  std::vector<QuarantineEntry> entries;
  std::string next_key = "stale";
  ASSERT_TRUE(store_->ListQuarantine("one", "", 100, &entries, &next_key).ok());
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].SerializeAsString(), commit.quarantine[0].SerializeAsString());
  EXPECT_EQ(entries[1].SerializeAsString(), commit.quarantine[1].SerializeAsString());
  EXPECT_EQ(next_key, "");

  wharf::v1::ValidationCheckpoint v = store_->GetPartitionCounters("one", 0).validation;
  EXPECT_EQ(v.next_offset(), 10u);
  EXPECT_EQ(v.batches_committed(), 1u);
  EXPECT_EQ(v.records_committed(), 8u);
  EXPECT_EQ(v.records_quarantined(), 2u);
  EXPECT_EQ(v.batch_bytes_committed(), batch_bytes);
  EXPECT_EQ(store_->StagedBytes("one"), raw_bytes + batch_bytes);

  // A step where every record goes to quarantine commits no batch.
  BatchCommit all_bad;
  all_bad.dataset = "one";
  all_bad.partition = 0;
  all_bad.quarantine = {MakeQuarantine("one", 0, 10), MakeQuarantine("one", 0, 11)};
  all_bad.next_offset = 12;
  ASSERT_TRUE(store_->CommitBatch(all_bad).ok());
  v = store_->GetPartitionCounters("one", 0).validation;
  EXPECT_EQ(v.next_offset(), 12u);
  EXPECT_EQ(v.batches_committed(), 1u);
  EXPECT_EQ(v.records_quarantined(), 4u);
  ASSERT_TRUE(store_->ReadBatches("one", 0, 1, 10, &batches).ok());
  EXPECT_TRUE(batches.empty());

  const std::string counters = CountersSnapshot("one", 1);
  ASSERT_NO_FATAL_FAILURE(Reopen());
  EXPECT_EQ(CountersSnapshot("one", 1), counters);
  ASSERT_TRUE(store_->ReadBatches("one", 0, 0, 10, &batches).ok());
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_EQ(batches[0].manifest().batch_id(), "one.p0.0-9");
  ASSERT_TRUE(store_->ListQuarantine("one", "", 100, &entries, &next_key).ok());
  EXPECT_EQ(entries.size(), 4u);
}

TEST_F(StagingStoreTest, CommitBatchRefusesACursorMovingBackAndStoresNothing) {
  ASSERT_NO_FATAL_FAILURE(Open());
  BatchCommit commit;
  commit.dataset = "events";
  commit.partition = 2;
  commit.batch = MakeBatch("events", 2, 0, 4);
  commit.next_offset = 5;
  ASSERT_TRUE(store_->CommitBatch(commit).ok());
  const std::string counters = CountersSnapshot("events", 4);

  BatchCommit back;
  back.dataset = "events";
  back.partition = 2;
  back.batch = MakeBatch("events", 2, 20, 22);
  back.quarantine = {MakeQuarantine("events", 2, 23)};
  back.next_offset = 3;
  absl::Status st = store_->CommitBatch(back);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_NE(st.message().find("from 5 to 3"), std::string::npos) << st;
  EXPECT_EQ(CountersSnapshot("events", 4), counters);
  std::vector<StoredBatch> batches;
  ASSERT_TRUE(store_->ReadBatches("events", 2, 0, 10, &batches).ok());
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_EQ(batches[0].manifest().first_offset(), 0u);
  std::vector<QuarantineEntry> entries;
  std::string next_key;
  ASSERT_TRUE(store_->ListQuarantine("events", "", 100, &entries, &next_key).ok());
  EXPECT_TRUE(entries.empty());

  // Batches of other partitions are not visible here, and unknown partitions are refused.
  BatchCommit other = commit;
  other.partition = 3;
  other.batch = MakeBatch("events", 3, 0, 1);
  other.next_offset = 2;
  ASSERT_TRUE(store_->CommitBatch(other).ok());
  ASSERT_TRUE(store_->ReadBatches("events", 2, 0, 10, &batches).ok());
  EXPECT_EQ(batches.size(), 1u);
  other.partition = 4;
  EXPECT_EQ(store_->CommitBatch(other).code(), absl::StatusCode::kNotFound);
  other.dataset = "nope";
  other.partition = 0;
  EXPECT_EQ(store_->CommitBatch(other).code(), absl::StatusCode::kNotFound);
}

TEST_F(StagingStoreTest, ReadBatchesStartsAtFromAndHonoursTheLimit) {
  ASSERT_NO_FATAL_FAILURE(Open());
  CommitTenOffsetBatches("one", 0, 5);
  ASSERT_FALSE(HasFailure());
  std::vector<StoredBatch> batches;
  ASSERT_TRUE(store_->ReadBatches("one", 0, 15, 2, &batches).ok());
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_EQ(batches[0].manifest().first_offset(), 20u);
  EXPECT_EQ(batches[1].manifest().first_offset(), 30u);
  ASSERT_TRUE(store_->ReadBatches("one", 0, 0, 100, &batches).ok());
  EXPECT_EQ(batches.size(), 5u);
  ASSERT_TRUE(store_->ReadBatches("one", 0, 41, 100, &batches).ok());
  EXPECT_TRUE(batches.empty());
}

TEST_F(StagingStoreTest, ListQuarantinePagesInPartitionOffsetOrder) {
  options_.datasets = {DatasetOptions{"a", 4, 0}, DatasetOptions{"a.b", 1, 0},
                       DatasetOptions{"ab", 1, 0}};
  ASSERT_NO_FATAL_FAILURE(Open());
  auto quarantine = [&](const std::string& ds, uint32_t p, std::vector<uint64_t> offsets) {
    BatchCommit commit;
    commit.dataset = ds;
    commit.partition = p;
    for (uint64_t o : offsets) commit.quarantine.push_back(MakeQuarantine(ds, p, o));
    commit.next_offset = offsets.back() + 1;
    ASSERT_TRUE(store_->CommitBatch(commit).ok());
  };
  // Committed out of order on purpose.
  ASSERT_NO_FATAL_FAILURE(quarantine("a", 3, {7}));
  ASSERT_NO_FATAL_FAILURE(quarantine("a", 1, {255, 256, 65536}));
  ASSERT_NO_FATAL_FAILURE(quarantine("a", 0, {0, 5}));
  ASSERT_NO_FATAL_FAILURE(quarantine("a.b", 0, {1}));
  ASSERT_NO_FATAL_FAILURE(quarantine("ab", 0, {2}));

  using Entries = std::vector<std::pair<uint32_t, uint64_t>>;
  auto pairs = [](const std::vector<QuarantineEntry>& entries) {
    Entries out;
    for (const auto& e : entries) out.emplace_back(e.partition(), e.offset());
    return out;
  };
  const Entries all = {{0, 0}, {0, 5}, {1, 255}, {1, 256}, {1, 65536}, {3, 7}};

  std::vector<QuarantineEntry> page;
  std::string token;
  ASSERT_TRUE(store_->ListQuarantine("a", "", 100, &page, &token).ok());
  EXPECT_EQ(pairs(page), all);
  EXPECT_EQ(token, "");
  ASSERT_TRUE(store_->ListQuarantine("a", "", 6, &page, &token).ok());
  EXPECT_EQ(pairs(page), all);
  EXPECT_EQ(token, "") << "no further page when the last entry fits exactly";

  // Paging by 2 visits everything once, with "partition/offset" tokens.
  Entries seen;
  std::vector<std::string> tokens;
  std::string after;
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(store_->ListQuarantine("a", after, 2, &page, &token).ok());
    EXPECT_LE(page.size(), 2u);
    const Entries got = pairs(page);
    seen.insert(seen.end(), got.begin(), got.end());
    if (token.empty()) break;
    tokens.push_back(token);
    after = token;
  }
  EXPECT_EQ(seen, all);
  EXPECT_EQ(tokens, (std::vector<std::string>{"0/5", "1/256"}));
  ASSERT_TRUE(store_->ListQuarantine("a", "", 5, &page, &token).ok());
  EXPECT_EQ(token, "1/65536");

  // Tokens are positions: any position continues right after it.
  ASSERT_TRUE(store_->ListQuarantine("a", "1/255", 100, &page, &token).ok());
  EXPECT_EQ(pairs(page), (Entries{{1, 256}, {1, 65536}, {3, 7}}));
  ASSERT_TRUE(store_->ListQuarantine("a", "2/0", 100, &page, &token).ok());
  EXPECT_EQ(pairs(page), (Entries{{3, 7}}));
  ASSERT_TRUE(store_->ListQuarantine("a", "3/7", 100, &page, &token).ok());
  EXPECT_TRUE(page.empty());
  EXPECT_EQ(token, "");
  ASSERT_TRUE(store_->ListQuarantine("a", "4294967295/0", 100, &page, &token).ok());
  EXPECT_TRUE(page.empty());

  // Prefix-related datasets are separate.
  ASSERT_TRUE(store_->ListQuarantine("a.b", "", 100, &page, &token).ok());
  EXPECT_EQ(pairs(page), (Entries{{0, 1}}));
  ASSERT_TRUE(store_->ListQuarantine("ab", "", 100, &page, &token).ok());
  EXPECT_EQ(pairs(page), (Entries{{0, 2}}));
  ASSERT_TRUE(store_->ListQuarantine("nope", "", 100, &page, &token).ok());
  EXPECT_TRUE(page.empty());

  for (const std::string bad : {"x", "1", "1/", "/1", "1/2/", "x/1", "1/x", "-1/2", "1/-2",
                                "4294967296/0", "0/18446744073709551616"}) {
    absl::Status st = store_->ListQuarantine("a", bad, 100, &page, &token);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << "token \"" << bad << "\": " << st;
  }
}

TEST_F(StagingStoreTest, DeliveryCursorRoundTripsAndSurvivesReopen) {
  ASSERT_NO_FATAL_FAILURE(Open());
  auto missing = store_->GetDeliveryCursor("events", "s3", 1);
  ASSERT_TRUE(missing.ok()) << missing.status();
  EXPECT_EQ(missing->next_offset(), 0u);
  EXPECT_EQ(missing->batches_delivered(), 0u);

  wharf::v1::DeliveryCheckpoint cursor;
  cursor.set_next_offset(120);
  cursor.set_batches_delivered(3);
  cursor.set_records_delivered(117);
  ASSERT_TRUE(store_->SetDeliveryCursor("events", "s3", 1, cursor).ok());
  wharf::v1::DeliveryCheckpoint other;
  other.set_next_offset(7);
  ASSERT_TRUE(store_->SetDeliveryCursor("events", "s3b", 1, other).ok());
  ASSERT_TRUE(store_->SetDeliveryCursor("events", "s3", 2, other).ok());

  auto got = store_->GetDeliveryCursor("events", "s3", 1);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->SerializeAsString(), cursor.SerializeAsString());

  ASSERT_NO_FATAL_FAILURE(Reopen());
  got = store_->GetDeliveryCursor("events", "s3", 1);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->SerializeAsString(), cursor.SerializeAsString());
  EXPECT_EQ(store_->GetDeliveryCursor("events", "s3b", 1)->next_offset(), 7u);
  EXPECT_EQ(store_->GetDeliveryCursor("events", "s3", 2)->next_offset(), 7u);
  EXPECT_EQ(store_->GetDeliveryCursor("events", "s3", 3)->next_offset(), 0u);
  EXPECT_EQ(store_->GetDeliveryCursor("one", "s3", 1)->next_offset(), 0u);

  cursor.set_next_offset(130);
  ASSERT_TRUE(store_->SetDeliveryCursor("events", "s3", 1, cursor).ok());
  EXPECT_EQ(store_->GetDeliveryCursor("events", "s3", 1)->next_offset(), 130u);
}

TEST_F(StagingStoreTest, DeleteBatchesBelowDeletesOnlyBatchesEndingBelowTheOffset) {
  ASSERT_NO_FATAL_FAILURE(Open());
  const std::vector<uint64_t> sizes = CommitTenOffsetBatches("events", 1, 3);
  ASSERT_FALSE(HasFailure());
  const uint64_t staged = store_->StagedBytes("events");
  EXPECT_EQ(staged, sizes[0] + sizes[1] + sizes[2]);

  auto first_batch = [&]() -> uint64_t {
    std::vector<StoredBatch> batches;
    EXPECT_TRUE(store_->ReadBatches("events", 1, 0, 100, &batches).ok());
    return batches.empty() ? kNoLimit : batches[0].manifest().first_offset();
  };

  auto n = store_->DeleteBatchesBelow("events", 1, 9);  // batch 0-9 ends at 9: kept
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 0u);
  EXPECT_EQ(first_batch(), 0u);
  n = store_->DeleteBatchesBelow("events", 1, 15);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 1u);
  EXPECT_EQ(first_batch(), 10u);
  wharf::v1::RetentionCheckpoint r = store_->GetPartitionCounters("events", 1).retention;
  EXPECT_EQ(r.batches_deleted_below(), 10u);
  EXPECT_EQ(r.batch_bytes_deleted(), sizes[0]);
  EXPECT_EQ(store_->StagedBytes("events"), sizes[1] + sizes[2]);

  n = store_->DeleteBatchesBelow("events", 1, 10);  // nothing new below
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0u);
  n = store_->DeleteBatchesBelow("events", 1, 20);  // 10-19 ends below 20
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 1u);
  EXPECT_EQ(first_batch(), 20u);

  ASSERT_NO_FATAL_FAILURE(Reopen());
  r = store_->GetPartitionCounters("events", 1).retention;
  EXPECT_EQ(r.batches_deleted_below(), 20u);
  EXPECT_EQ(r.batch_bytes_deleted(), sizes[0] + sizes[1]);
  n = store_->DeleteBatchesBelow("events", 1, 1000);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 1u);
  EXPECT_EQ(first_batch(), kNoLimit);
  EXPECT_EQ(store_->StagedBytes("events"), 0u);
  EXPECT_EQ(store_->DeleteBatchesBelow("events", 9, 10).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(StagingStoreTest, DeleteRawBelowStopsAtTheCutoffAndTheLimit) {
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_TRUE(Append("one", Keyless(5, "old")).status.ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  const auto cutoff = std::chrono::system_clock::now();
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_TRUE(Append("one", Keyless(5, "new")).status.ok());
  const std::vector<RawRecord> all = ReadAll("one", 0);
  ASSERT_EQ(all.size(), 10u);
  const uint64_t appended = store_->GetPartitionCounters("one", 0).ingest.bytes_appended();

  auto n = store_->DeleteRawBelow("one", 0, 8, cutoff, 100);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 5u) << "deletion stops at the first record ingested after the cutoff";
  uint64_t deleted_bytes = 0;
  for (int i = 0; i < 5; ++i) deleted_bytes += all[i].stored_bytes;
  wharf::v1::RetentionCheckpoint r = store_->GetPartitionCounters("one", 0).retention;
  EXPECT_EQ(r.raw_deleted_below(), 5u);
  EXPECT_EQ(r.raw_bytes_deleted(), deleted_bytes);
  EXPECT_EQ(store_->StagedBytes("one"), appended - deleted_bytes);
  EXPECT_EQ(Offsets(ReadAll("one", 0)), (std::vector<uint64_t>{5, 6, 7, 8, 9}));
  std::vector<RawRecord> out;
  ASSERT_TRUE(store_->ReadRaw("one", 0, 0, 7, 100, kNoLimit, &out).ok());
  EXPECT_EQ(Offsets(out), (std::vector<uint64_t>{5, 6}));

  const auto later = std::chrono::system_clock::now() + std::chrono::hours(1);
  n = store_->DeleteRawBelow("one", 0, 3, later, 100);  // already below
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0u);
  n = store_->DeleteRawBelow("one", 0, 9, later, 2);  // limited to two records
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 2u);
  EXPECT_EQ(store_->GetPartitionCounters("one", 0).retention.raw_deleted_below(), 7u);
  EXPECT_EQ(Offsets(ReadAll("one", 0)), (std::vector<uint64_t>{7, 8, 9}));

  ASSERT_NO_FATAL_FAILURE(Reopen());
  EXPECT_EQ(store_->GetPartitionCounters("one", 0).retention.raw_deleted_below(), 7u);
  EXPECT_EQ(Offsets(ReadAll("one", 0)), (std::vector<uint64_t>{7, 8, 9}));
  n = store_->DeleteRawBelow("one", 0, 9, later, 100);  // the bound is exclusive
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 2u);
  EXPECT_EQ(Offsets(ReadAll("one", 0)), (std::vector<uint64_t>{9}));
  // Offsets are never reused after deletion.
  AppendResult a = Append("one", Keyless(1));
  ASSERT_TRUE(a.status.ok());
  EXPECT_EQ(a.acks[0].offset(), 10u);
  EXPECT_EQ(store_->DeleteRawBelow("one", 1, 9, later, 100).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->DeleteRawBelow("nope", 0, 9, later, 100).status().code(),
            absl::StatusCode::kNotFound);
}

// time_point::max() means no time bound (the pipeline's retention): everything below the offset
// goes, still limited per call, with the bytes counted, without reading the records.
TEST_F(StagingStoreTest, DeleteRawBelowWithoutTimeBoundDeletesUpToTheOffsetAndLimit) {
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_TRUE(Append("one", Keyless(6, "x")).status.ok());
  const std::vector<RawRecord> all = ReadAll("one", 0);
  ASSERT_EQ(all.size(), 6u);
  const auto no_bound = std::chrono::system_clock::time_point::max();
  auto n = store_->DeleteRawBelow("one", 0, 5, no_bound, 3);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 3u);
  n = store_->DeleteRawBelow("one", 0, 5, no_bound, 100);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 2u);
  uint64_t deleted_bytes = 0;
  for (int i = 0; i < 5; ++i) deleted_bytes += all[i].stored_bytes;
  const wharf::v1::RetentionCheckpoint r = store_->GetPartitionCounters("one", 0).retention;
  EXPECT_EQ(r.raw_deleted_below(), 5u);
  EXPECT_EQ(r.raw_bytes_deleted(), deleted_bytes);
  EXPECT_EQ(Offsets(ReadAll("one", 0)), (std::vector<uint64_t>{5}));
}

// Corruption -----------------------------------------------------------------------------------

TEST_F(StagingStoreTest, CorruptedRawValueIsDataLoss) {
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_TRUE(Append("one", Keyless(5)).status.ok());
  store_.reset();

  {
    // Damage one stored value behind the store's back, keeping its key.
    std::vector<std::string> names;
    rocksdb::Status s =
        rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), options_.path, &names);
    ASSERT_TRUE(s.ok()) << s.ToString();
    std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
    size_t raw_cf = names.size();
    for (size_t i = 0; i < names.size(); ++i) {
      cfs.emplace_back(names[i], rocksdb::ColumnFamilyOptions());
      if (names[i] == RawColumnFamilyName("one", 0)) raw_cf = i;
    }
    ASSERT_LT(raw_cf, names.size()) << "no raw column family for one/0";
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* raw_db = nullptr;
    s = rocksdb::DB::Open(rocksdb::DBOptions(), options_.path, cfs, &handles, &raw_db);
    ASSERT_TRUE(s.ok()) << s.ToString();
    std::unique_ptr<rocksdb::DB> db(raw_db);
    const std::string key = OffsetKey("one", 0, 2);
    std::string value;
    s = db->Get(rocksdb::ReadOptions(), handles[raw_cf], key, &value);
    ASSERT_TRUE(s.ok()) << s.ToString();
    value[value.size() / 2] = static_cast<char>(value[value.size() / 2] ^ 0x10);
    s = db->Put(rocksdb::WriteOptions(), handles[raw_cf], key, value);
    ASSERT_TRUE(s.ok()) << s.ToString();
    for (auto* h : handles) db->DestroyColumnFamilyHandle(h);
    ASSERT_TRUE(db->Close().ok());
  }

  ASSERT_NO_FATAL_FAILURE(Open());
  std::vector<RawRecord> out;
  absl::Status st = store_->ReadRaw("one", 0, 0, kNoLimit, 100, kNoLimit, &out);
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
  EXPECT_NE(st.message().find("raw record one/0/2"), std::string::npos) << st;
  // The intact records around it are still readable.
  ASSERT_TRUE(store_->ReadRaw("one", 0, 0, 2, 100, kNoLimit, &out).ok());
  EXPECT_EQ(Offsets(out), (std::vector<uint64_t>{0, 1}));
  ASSERT_TRUE(store_->ReadRaw("one", 0, 3, kNoLimit, 100, kNoLimit, &out).ok());
  EXPECT_EQ(Offsets(out), (std::vector<uint64_t>{3, 4}));
  // Retention does not silently delete past it either.
  auto n = store_->DeleteRawBelow("one", 0, 5,
                                  std::chrono::system_clock::now() + std::chrono::hours(1), 100);
  EXPECT_EQ(n.status().code(), absl::StatusCode::kDataLoss) << n.status();
}

// Lifecycle ------------------------------------------------------------------------------------

TEST_F(StagingStoreTest, AppendsBeforeStartAndAfterStopAreUnavailable) {
  auto opened = StagingStore::Open(options_);
  ASSERT_TRUE(opened.ok()) << opened.status();
  store_ = std::move(*opened);
  AppendResult early = AppendAndWait(store_.get(), MakeRequest("one", Keyless(1)));
  EXPECT_EQ(early.status.code(), absl::StatusCode::kUnavailable) << early.status;
  ASSERT_TRUE(store_->Start().ok());
  EXPECT_EQ(store_->Start().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(Append("one", Keyless(1)).status.ok());
  EXPECT_EQ(store_->NotAcceptingReason(), "");

  store_->Stop();
  AppendResult late = Append("one", Keyless(1));
  EXPECT_EQ(late.status.code(), absl::StatusCode::kUnavailable) << late.status;
  EXPECT_TRUE(late.acks.empty());
  store_->Stop();  // idempotent
  EXPECT_NE(store_->NotAcceptingReason(), "") << "a stopped store does not accept appends";
  EXPECT_EQ(store_->Start().code(), absl::StatusCode::kFailedPrecondition);
  // Reads still work.
  EXPECT_EQ(ReadAll("one", 0).size(), 1u);
  EXPECT_EQ(RecordsAppended("one"), 1u);
}

TEST_F(StagingStoreTest, StopAnswersEveryAppendExactlyOnceUnderLoad) {
  ASSERT_NO_FATAL_FAILURE(Open());
  struct Slot {
    std::atomic<int> calls{0};
    absl::Status status;
    std::vector<RecordAck> acks;
  };
  constexpr int kThreads = 4;
  constexpr size_t kMaxBeforeStop = 2000;
  constexpr int kAfterStop = 10;
  std::vector<std::vector<std::unique_ptr<Slot>>> slots(kThreads);
  std::atomic<bool> stop_returned{false};
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const std::string producer = absl::StrCat("producer-", t);
      auto& mine = slots[t];
      int after_stop = 0;
      bool counted = false;
      while (after_stop < kAfterStop) {
        if (stop_returned.load()) {
          ++after_stop;
        } else if (mine.size() >= kMaxBeforeStop) {
          std::this_thread::yield();
          continue;
        }
        mine.push_back(std::make_unique<Slot>());
        Slot* slot = mine.back().get();
        store_->Append(
            MakeRequest("events", {MakeRecord(producer, "x")}, producer, mine.size() - 1),
            [slot](AppendResult r) {
              slot->status = r.status;
              slot->acks = r.acks;
              slot->calls.fetch_add(1);
            });
        if (!counted && mine.size() >= 50) {
          counted = true;
          ready.fetch_add(1);
        }
      }
    });
  }
  const auto deadline = std::chrono::steady_clock::now() + kWait;
  while (ready.load() < kThreads && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();
  }
  store_->Stop();
  stop_returned.store(true);
  for (auto& th : threads) th.join();

  uint64_t ok = 0, refused = 0;
  for (int t = 0; t < kThreads; ++t) {
    bool refusing = false;
    std::optional<uint64_t> last_offset;
    for (size_t i = 0; i < slots[t].size(); ++i) {
      const Slot& s = *slots[t][i];
      ASSERT_EQ(s.calls.load(), 1) << "thread " << t << " request " << i;
      if (s.status.ok()) {
        EXPECT_FALSE(refusing) << "accepted after a refusal: thread " << t << " request " << i;
        ASSERT_EQ(s.acks.size(), 1u);
        if (last_offset) {
          EXPECT_GT(s.acks[0].offset(), *last_offset);
        }
        last_offset = s.acks[0].offset();
        ++ok;
      } else {
        EXPECT_EQ(s.status.code(), absl::StatusCode::kUnavailable) << s.status;
        refusing = true;
        ++refused;
      }
    }
    for (size_t i = slots[t].size() - kAfterStop; i < slots[t].size(); ++i) {
      EXPECT_EQ(slots[t][i]->status.code(), absl::StatusCode::kUnavailable);
    }
  }
  EXPECT_GE(ok, static_cast<uint64_t>(kThreads));
  EXPECT_GE(refused, static_cast<uint64_t>(kThreads * kAfterStop));
  EXPECT_EQ(RecordsAppended("events"), ok);
  uint64_t read = 0;
  for (uint32_t p = 0; p < 4; ++p) read += ReadAll("events", p).size();
  EXPECT_EQ(read, ok);
}

TEST_F(StagingStoreTest, ListenerIsCalledPerPartitionAfterEachDurableGroup) {
  ASSERT_NO_FATAL_FAILURE(Open());
  // "user-1" -> partition 0, "user-2" -> partition 1 (pinned above).
  ASSERT_TRUE(Append("events", {MakeRecord("user-1", "a"), MakeRecord("user-2", "b"),
                                MakeRecord("user-1", "c")})
                  .status.ok());
  std::vector<ListenerCall> calls = ListenerCalls();
  std::sort(calls.begin(), calls.end());
  EXPECT_EQ(calls, (std::vector<ListenerCall>{{"events", 0, 2}, {"events", 1, 1}}));

  ASSERT_TRUE(Append("events", {MakeRecord("user-2", "d")}, "p", 0).status.ok());
  ASSERT_TRUE(Append("one", Keyless(3)).status.ok());
  // Refused and duplicate requests store nothing: no call.
  EXPECT_FALSE(Append("nope", Keyless(1)).status.ok());
  EXPECT_TRUE(Append("events", {MakeRecord("user-2", "d")}, "p", 0).duplicate);
  calls = ListenerCalls();
  ASSERT_EQ(calls.size(), 4u);
  EXPECT_EQ(calls[2], (ListenerCall{"events", 1, 2}));
  EXPECT_EQ(calls[3], (ListenerCall{"one", 0, 3}));
}

TEST_F(StagingStoreTest, FlushAndSizeReporting) {
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_TRUE(Append("one", {MakeRecord("", std::string(50000, 'f'))}).status.ok());
  ASSERT_TRUE(store_->Flush().ok());
  EXPECT_GT(store_->StoreSizeBytes(), 0u);
  ASSERT_NO_FATAL_FAILURE(Reopen());
  EXPECT_EQ(ReadAll("one", 0).size(), 1u);
}

}  // namespace
}  // namespace wharf::storage
