#include "pipeline/pipeline.h"

#include <sched.h>
#include <stdlib.h>
#include <sys/types.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/util/message_differencer.h"
#include "google/protobuf/util/time_util.h"
#include "gtest/gtest.h"
#include "pipeline/destination.h"
#include "pipeline/record_processor.h"
#include "prometheus/client_metric.h"
#include "prometheus/metric_family.h"
#include "prometheus/registry.h"
#include "storage/crc32c.h"
#include "storage/staging_store.h"
#include "tests/pipeline/pipeline_fixture.h"
#include "wharf/v1/control.pb.h"
#include "wharf/v1/ingest.pb.h"
#include "wharf/v1/record.pb.h"

namespace wharf::pipeline {
namespace {

using namespace pipeline_testing;  // NOLINT(build/namespaces): the shared test fixtures
using google::protobuf::util::MessageDifferencer;

// Batch cutting -----------------------------------------------------------------------------------

TEST_F(PipelineTest, CutsFullBatchesByCountAtOnceAndTheRestAfterLinger) {
  constexpr auto kLinger = 1000ms;
  auto sink = NewSink();
  ASSERT_NO_FATAL_FAILURE(Start(Options({{"out", sink}}, Batching(10, kLinger))));
  const std::string key = KeyFor(2);
  const auto t0 = SteadyClock::now();
  ASSERT_EQ(AppendJson(key, 35).size(), 35u);

  ASSERT_TRUE(WaitUntil([&] { return sink->batch_count() >= 3; }, 5s));
  {
    const auto d = sink->delivered();
    ASSERT_EQ(d.size(), 3u) << "the partial batch came before its linger";
    for (size_t i = 0; i < 3; ++i) {
      const auto& m = d[i].batch.manifest();
      EXPECT_EQ(m.partition(), 2u);
      EXPECT_EQ(m.first_offset(), 10 * i);
      EXPECT_EQ(m.last_offset(), 10 * i + 9);
      EXPECT_EQ(m.record_count(), 10u);
      // Full batches do not wait for the linger.
      EXPECT_LT(d[i].steady_time - t0, kLinger) << m.batch_id();
    }
  }
  ASSERT_TRUE(WaitUntil([&] { return sink->batch_count() >= 4; }, kLinger + 5s));
  const auto d = sink->delivered();
  ASSERT_EQ(d.size(), 4u);
  const auto& last = d[3].batch.manifest();
  EXPECT_EQ(last.first_offset(), 30u);
  EXPECT_EQ(last.last_offset(), 34u);
  EXPECT_EQ(last.record_count(), 5u);
  // The partial batch waited for the linger, counted from its oldest record's ingest time.
  EXPECT_GE(ToMicros(d[3].system_time) - ToMicros(last.min_ingest_time()),
            std::chrono::microseconds(kLinger).count());
  EXPECT_GE(ToMicros(last.create_time()) - ToMicros(last.min_ingest_time()),
            std::chrono::microseconds(kLinger).count());
  EXPECT_GE(d[3].steady_time - t0, kLinger - 5ms);
  EXPECT_EQ(ValidatedOffset(2), 35u);
}

// The pipeline's threads run under SCHED_BATCH (same CPU share, no wakeup preemption of the
// ingest path): every thread named wharf-validate, wharf-deliver or wharf-deliver-p, once each has
// done work. Thread ids from /proc/self/task; sched_getscheduler takes a thread id on Linux.
TEST_F(PipelineTest, PipelineThreadsRunUnderSchedBatch) {
  auto sink = NewSink();
  ASSERT_NO_FATAL_FAILURE(Start(Options({{"out", sink}}, Batching(10, 10ms))));
  for (uint32_t p = 0; p < 4; ++p) ASSERT_EQ(AppendJson(KeyFor(p), 20).size(), 20u);
  ASSERT_TRUE(WaitUntil([&] { return sink->record_count() >= 80; }, 10s));

  std::map<std::string, int> seen;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm_file(entry.path() / "comm");
    std::string comm;
    std::getline(comm_file, comm);
    if (comm != "wharf-validate" && comm != "wharf-deliver" && comm != "wharf-deliver-p") continue;
    const pid_t tid = static_cast<pid_t>(std::stol(entry.path().filename().string()));
    const int policy = sched_getscheduler(tid);
    if (policy == -1 && errno == ESRCH) continue;  // the thread ended meanwhile
    EXPECT_EQ(policy, SCHED_BATCH) << comm << " (thread " << tid << ")";
    ++seen[comm];
  }
  EXPECT_GE(seen["wharf-validate"], 1);
  EXPECT_GE(seen["wharf-deliver"], 1);
  EXPECT_GE(seen["wharf-deliver-p"], 1);
}

TEST_F(PipelineTest, CutsBatchesByStoredBytes) {
  constexpr uint64_t kMaxBytes = 1000;
  auto sink = NewSink();
  ASSERT_NO_FATAL_FAILURE(Start(Options({{"out", sink}}, Batching(1000, 100ms, kMaxBytes))));
  const std::string key = KeyFor(0);
  // Records of roughly 150 stored bytes: a few per batch, far below max_records.
  ASSERT_EQ(AppendJson(key, 50, 0, 100).size(), 50u);
  ASSERT_TRUE(WaitUntil([&] { return sink->record_count() >= 50; }, 5s));

  std::map<uint64_t, uint64_t> stored;  // offset -> stored bytes, as the cut rule counts them
  for (const auto& r : ReadAllRaw(0)) stored[r.offset] = r.stored_bytes;
  ASSERT_EQ(stored.size(), 50u);
  const auto batches = BatchesOf(sink->delivered(), 0);
  ASSERT_GT(batches.size(), 4u);
  EXPECT_TRUE(CoverContiguously(batches, 0, 50));
  for (size_t i = 0; i < batches.size(); ++i) {
    const auto& m = batches[i].manifest();
    SCOPED_TRACE(m.batch_id());
    EXPECT_LT(m.record_count(), 1000u);
    uint64_t bytes = 0, payload_bytes = 0;
    for (const auto& r : batches[i].records()) {
      bytes += stored[r.offset()];
      payload_bytes += r.payload().size();
    }
    EXPECT_EQ(m.bytes(), payload_bytes);
    // At most max_bytes (a single larger record would still make a batch)...
    if (m.record_count() > 1) {
      EXPECT_LE(bytes, kMaxBytes);
    }
    // ...and cut as late as the limit allows: the next record would not have fitted.
    if (i + 1 < batches.size()) {
      EXPECT_GT(bytes + stored[m.last_offset() + 1], kMaxBytes);
    }
  }
}

TEST_F(PipelineTest, RecordLargerThanMaxBytesMakesABatchOfItsOwn) {
  auto sink = NewSink();
  ASSERT_NO_FATAL_FAILURE(Start(Options({{"out", sink}}, Batching(1000, 100ms, 200))));
  const std::string key = KeyFor(1);
  ASSERT_EQ(AppendJson(key, 3, 0, 500).size(), 3u);
  ASSERT_TRUE(WaitUntil([&] { return sink->record_count() >= 3; }, 5s));
  const auto batches = BatchesOf(sink->delivered(), 1);
  ASSERT_EQ(batches.size(), 3u);
  EXPECT_TRUE(CoverContiguously(batches, 0, 3));
}

TEST_F(PipelineTest, ByteLimitCutsWhileALingerTimerIsPending) {
  // A batch is due as soon as it holds max_bytes, even when an earlier, smaller backlog armed the
  // linger timer.
  constexpr auto kLinger = 5s;
  auto sink = NewSink();
  ASSERT_NO_FATAL_FAILURE(Start(Options({{"out", sink}}, Batching(1000, kLinger, 1000))));
  const std::string key = KeyFor(3);
  ASSERT_EQ(AppendJson(key, 1, 0, 100).size(), 1u);
  // Let the validation step see the lone record and arm its linger timer.
  ASSERT_TRUE(WaitUntil([&] { return IngestedOffset(3) == 1; }));
  std::this_thread::sleep_for(100ms);
  const auto t0 = SteadyClock::now();
  ASSERT_EQ(AppendJson(key, 20, 1, 100).size(), 20u);
  ASSERT_TRUE(WaitUntil([&] { return sink->batch_count() >= 1; }, 3s))
      << "a batch over max_bytes waited for the linger";
  EXPECT_LT(SteadyClock::now() - t0, kLinger);
  EXPECT_EQ(sink->delivered()[0].batch.manifest().first_offset(), 0u);
}

TEST_F(PipelineTest, RecordCountCutsWhileALingerTimerIsPending) {
  constexpr auto kLinger = 5s;
  auto sink = NewSink();
  ASSERT_NO_FATAL_FAILURE(Start(Options({{"out", sink}}, Batching(10, kLinger))));
  const std::string key = KeyFor(3);
  ASSERT_EQ(AppendJson(key, 1).size(), 1u);
  std::this_thread::sleep_for(100ms);
  for (int i = 1; i < 10; ++i) ASSERT_EQ(AppendJson(key, 1, i).size(), 1u);
  ASSERT_TRUE(WaitUntil([&] { return sink->batch_count() >= 1; }, 3s));
  const wharf::v1::BatchManifest m = sink->delivered()[0].batch.manifest();
  EXPECT_EQ(m.first_offset(), 0u);
  EXPECT_EQ(m.last_offset(), 9u);
}

TEST_F(PipelineTest, SingleRecordIsDeliveredAfterTheLinger) {
  constexpr auto kLinger = 300ms;
  auto sink = NewSink();
  ASSERT_NO_FATAL_FAILURE(Start(Options({{"out", sink}}, Batching(1000, kLinger))));
  const auto t0 = SteadyClock::now();
  ASSERT_EQ(AppendJson(KeyFor(0), 1).size(), 1u);
  ASSERT_TRUE(WaitUntil([&] { return sink->batch_count() >= 1; }, kLinger + 5s))
      << "a lone record was never delivered";
  const auto d = sink->delivered();
  ASSERT_EQ(d.size(), 1u);
  const auto& m = d[0].batch.manifest();
  EXPECT_EQ(m.record_count(), 1u);
  EXPECT_GE(ToMicros(d[0].system_time) - ToMicros(m.min_ingest_time()),
            std::chrono::microseconds(kLinger).count());
  EXPECT_GE(d[0].steady_time - t0, kLinger - 5ms);
  EXPECT_LT(d[0].steady_time - t0, kLinger + 3s);
}

TEST_F(PipelineTest, LingerCountsFromTheOldestRecord) {
  constexpr auto kLinger = 1000ms;
  auto sink = NewSink();
  ASSERT_NO_FATAL_FAILURE(Start(Options({{"out", sink}}, Batching(1000, kLinger))));
  const std::string key = KeyFor(1);
  const auto t0 = SteadyClock::now();
  ASSERT_EQ(AppendJson(key, 1).size(), 1u);
  std::this_thread::sleep_for(500ms);
  ASSERT_EQ(AppendJson(key, 1, 1).size(), 1u);
  ASSERT_TRUE(WaitUntil([&] { return sink->record_count() >= 2; }, kLinger + 5s));
  const auto d = sink->delivered();
  ASSERT_EQ(d.size(), 1u) << "both records belong in one batch";
  EXPECT_EQ(d[0].batch.records_size(), 2);
  // Not re-armed by the second record: due at the first record's linger (generous upper bound
  // for slow machines, still below first + second record's linger).
  EXPECT_GE(d[0].steady_time - t0, kLinger - 5ms);
  EXPECT_LT(d[0].steady_time - t0, kLinger + 450ms);
}

// Manifests and quarantine ------------------------------------------------------------------------

TEST_F(PipelineTest, ManifestDescribesTheBatch) {
  partitions_ = 2;
  auto sink = NewSink();
  ASSERT_NO_FATAL_FAILURE(Start(Options({{"out", sink}}, Batching(100, 500ms))));
  const std::string key = KeyFor(1);
  wharf::v1::Record a = MakeRecord(key, R"({"name":"a","n":1})");
  *a.mutable_event_time() = TimeUtil::MillisecondsToTimestamp(1700000000123);
  (*a.mutable_headers())["source"] = "test";
  (*a.mutable_headers())["trace"] = "abc";
  const wharf::v1::Record b = MakeRecord(key, " {\"name\" : \"b\"}\n");
  const wharf::v1::Record c = MakeRecord(key, R"({"name":"\u00e9"})");
  // The range starts and ends with quarantined records: they still belong to the batch's range.
  ASSERT_TRUE(AppendRecords({MakeRecord(key, "{oops"), a, b}).status.ok());
  std::this_thread::sleep_for(20ms);
  ASSERT_TRUE(AppendRecords({c, MakeRecord(key, "[1]")}).status.ok());

  ASSERT_TRUE(WaitUntil([&] { return sink->batch_count() >= 1; }, 5s));
  const auto raw = ReadAllRaw(1);
  ASSERT_EQ(raw.size(), 5u);
  const auto d = sink->delivered();
  ASSERT_EQ(d.size(), 1u);
  const wharf::v1::StoredBatch& batch = d[0].batch;
  const auto& m = batch.manifest();
  EXPECT_EQ(m.batch_id(), "orders.p1.0-4");
  EXPECT_EQ(m.dataset(), kDataset);
  EXPECT_EQ(m.partition(), 1u);
  EXPECT_EQ(m.first_offset(), 0u);
  EXPECT_EQ(m.last_offset(), 4u);
  EXPECT_EQ(m.record_count(), 3u);
  EXPECT_EQ(m.quarantined_count(), 2u);
  EXPECT_EQ(m.bytes(), a.payload().size() + b.payload().size() + c.payload().size());
  uint32_t crc = storage::Crc32c(a.payload());
  crc = storage::Crc32c(b.payload(), crc);
  crc = storage::Crc32c(c.payload(), crc);
  EXPECT_EQ(m.checksum(), crc);
  EXPECT_EQ(m.checksum(), storage::Crc32c(a.payload() + b.payload() + c.payload()));
  // The oldest ingest time is the first request's, earlier than the second's.
  EXPECT_EQ(ToMicros(m.min_ingest_time()), ToMicros(raw[0].record.ingest_time()));
  EXPECT_LT(ToMicros(m.min_ingest_time()), ToMicros(raw[3].record.ingest_time()));
  EXPECT_GE(ToMicros(m.create_time()), ToMicros(m.min_ingest_time()));
  EXPECT_EQ(m.schema_version(), 0u);
  EXPECT_EQ(m.transform_version(), 0u);

  ASSERT_EQ(batch.records_size(), 3);
  EXPECT_EQ(RecordOffsets(batch), (std::vector<uint64_t>{1, 2, 3}));
  const wharf::v1::Record* originals[] = {&a, &b, &c};
  for (int i = 0; i < 3; ++i) {
    const auto& r = batch.records(i);
    EXPECT_EQ(r.key(), key);
    EXPECT_EQ(r.payload(), originals[i]->payload());  // byte-identical
    EXPECT_EQ(ToMicros(r.ingest_time()), ToMicros(raw[r.offset()].record.ingest_time()));
  }
  EXPECT_EQ(ToMicros(batch.records(0).event_time()), 1700000000123000);
  EXPECT_FALSE(batch.records(1).has_event_time());
  EXPECT_EQ(batch.records(0).headers().size(), 2u);
  EXPECT_EQ(batch.records(0).headers().at("source"), "test");
  EXPECT_EQ(batch.records(0).headers().at("trace"), "abc");

  // The delivered batch is the committed one.
  const auto stored = ReadAllBatches(1);
  ASSERT_EQ(stored.size(), 1u);
  EXPECT_TRUE(MessageDifferencer::Equals(stored[0], batch));
  const auto counters = store_->GetPartitionCounters(kDataset, 1);
  EXPECT_EQ(counters.validation.next_offset(), 5u);
  EXPECT_EQ(counters.validation.batches_committed(), 1u);
  EXPECT_EQ(counters.validation.records_committed(), 3u);
  EXPECT_EQ(counters.validation.records_quarantined(), 2u);
}

TEST_F(PipelineTest, MalformedRecordsAreQuarantinedAndNotDelivered) {
  auto sink = NewSink();
  ASSERT_NO_FATAL_FAILURE(Start(Options({{"out", sink}}, Batching(4, 50ms))));
  const std::string key = KeyFor(0);
  const std::vector<std::string> payloads = {
      R"({"ok":1})",        R"({"broken":)", R"([1,2])", R"({"ok":2})", "\xff\xfe",
      R"({"a":1} {"b":2})", R"({"ok":3})",   "",         R"({"ok":4})", "null"};
  const std::set<uint64_t> bad = {1, 2, 4, 5, 7, 9};
  std::vector<wharf::v1::Record> records;
  for (const auto& p : payloads) records.push_back(MakeRecord(key, p));
  const storage::AppendResult appended = AppendRecords(records);
  ASSERT_TRUE(appended.status.ok()) << appended.status;
  ASSERT_TRUE(WaitUntil([&] { return ValidatedOffset(0) == payloads.size(); }, 5s));
  ASSERT_TRUE(WaitUntil([&] { return sink->record_count() >= 4; }, 5s));

  std::vector<std::string> delivered;
  for (const auto& d : sink->delivered()) {
    for (const auto& r : d.batch.records()) {
      EXPECT_EQ(bad.count(r.offset()), 0u) << "quarantined offset " << r.offset() << " delivered";
      delivered.push_back(r.payload());
    }
  }
  EXPECT_EQ(delivered,
            (std::vector<std::string>{R"({"ok":1})", R"({"ok":2})", R"({"ok":3})", R"({"ok":4})"}));

  std::vector<wharf::v1::QuarantineEntry> entries;
  std::string next;
  ASSERT_TRUE(store_->ListQuarantine(kDataset, "", 100, &entries, &next).ok());
  EXPECT_TRUE(next.empty());
  ASSERT_EQ(entries.size(), bad.size());
  auto expected_offset = bad.begin();
  for (const auto& e : entries) {
    SCOPED_TRACE(e.message());
    EXPECT_EQ(e.offset(), *expected_offset++);
    EXPECT_EQ(e.dataset(), kDataset);
    EXPECT_EQ(e.partition(), 0u);
    EXPECT_EQ(e.reason(), wharf::v1::PARSE_ERROR);
    EXPECT_NE(e.message().find(absl::StrCat("at byte ", e.error_position())), std::string::npos);
    EXPECT_EQ(e.original().record().payload(), payloads[e.offset()]);
    EXPECT_EQ(e.original().record().key(), key);
    EXPECT_TRUE(e.original().has_ingest_time());
    EXPECT_EQ(e.attempts(), 1u);
    EXPECT_TRUE(e.has_quarantine_time());
    EXPECT_EQ(e.schema_version(), 0u);
  }
  EXPECT_EQ(entries[0].error_position(), 10u);  // {"broken": ends at byte 10
  const auto counters = store_->GetPartitionCounters(kDataset, 0);
  EXPECT_EQ(counters.validation.records_quarantined(), bad.size());
  EXPECT_EQ(counters.validation.records_committed(), 4u);
  // Every committed batch reports its quarantined records.
  uint64_t quarantined_in_manifests = 0;
  for (const auto& d : sink->delivered())
    quarantined_in_manifests += d.batch.manifest().quarantined_count();
  // One request, so the ranges are 0-3, 4-7 and 8-9, each with a good record.
  EXPECT_EQ(quarantined_in_manifests, bad.size());
}

TEST_F(PipelineTest, RangeOfOnlyBadRecordsAdvancesTheCursorWithoutABatch) {
  auto sink = NewSink();
  ASSERT_NO_FATAL_FAILURE(Start(Options({{"out", sink}}, Batching(10, 50ms))));
  const std::string key = KeyFor(2);
  std::vector<wharf::v1::Record> bad;
  for (int i = 0; i < 5; ++i) bad.push_back(MakeRecord(key, absl::StrCat("not json ", i)));
  ASSERT_TRUE(AppendRecords(bad).status.ok());
  ASSERT_TRUE(WaitUntil([&] { return ValidatedOffset(2) == 5; }, 5s));
  const auto counters = store_->GetPartitionCounters(kDataset, 2);
  EXPECT_EQ(counters.validation.batches_committed(), 0u);
  EXPECT_EQ(counters.validation.records_quarantined(), 5u);
  EXPECT_TRUE(ReadAllBatches(2).empty());
  // Nothing to deliver, yet the delivery cursor moves past the range (the backlog drains).
  ASSERT_TRUE(WaitUntil([&] { return StatusOf("out").backlog_records() == 0; }, 5s));
  EXPECT_EQ(sink->calls(), 0);

  // The next good records start a batch right after the quarantined range.
  ASSERT_EQ(AppendJson(key, 3).size(), 3u);
  ASSERT_TRUE(WaitUntil([&] { return sink->batch_count() >= 1; }, 5s));
  const auto d = sink->delivered();
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].batch.manifest().batch_id(), "orders.p2.5-7");
  EXPECT_EQ(d[0].batch.manifest().quarantined_count(), 0u);
  EXPECT_EQ(sink->calls(), 1);
  EXPECT_EQ(ValidatedOffset(2), 8u);
  ASSERT_TRUE(WaitUntil([&] { return StatusOf("out").records_delivered() == 3; }));
  const auto status = StatusOf("out");
  EXPECT_EQ(status.batches_delivered(), 1u);
  EXPECT_EQ(status.backlog_batches(), 0u);
  EXPECT_EQ(status.backlog_records(), 0u);
}

// Order -------------------------------------------------------------------------------------------

TEST_F(PipelineTest, BatchesArriveInOffsetOrderWithoutGapsOrOverlaps) {
  auto sink = NewSink();
  ASSERT_NO_FATAL_FAILURE(Start(Options({{"out", sink}}, Batching(7, 20ms))));
  // Four producers, each with keys of its own spread over all partitions, appending requests
  // of varying size concurrently.
  constexpr int kProducers = 4;
  constexpr int kRequests = 40;
  std::atomic<uint64_t> appended{0};
  std::vector<std::thread> producers;
  for (int t = 0; t < kProducers; ++t) {
    producers.emplace_back([&, t] {
      std::map<std::string, int> seq;
      for (int i = 0; i < kRequests; ++i) {
        std::vector<wharf::v1::Record> records;
        const int n = 1 + (i * 7 + t * 3) % 13;
        for (int j = 0; j < n; ++j) {
          const std::string key = absl::StrCat("producer", t, "-key", (i + j) % 5);
          records.push_back(
              MakeRecord(key, absl::StrCat("{\"key\":\"", key, "\",\"seq\":", seq[key]++, "}")));
        }
        const storage::AppendResult r = AppendRecords(records);
        EXPECT_TRUE(r.status.ok()) << r.status;
        appended += r.acks.size();
        if (i % 10 == 0) std::this_thread::sleep_for(5ms);
      }
    });
  }
  for (auto& p : producers) p.join();
  const uint64_t total = appended.load();
  ASSERT_TRUE(WaitUntil([&] { return sink->record_count() >= total; }, 15s))
      << sink->record_count() << " of " << total << " delivered";
  std::this_thread::sleep_for(100ms);  // nothing more may come
  const auto deliveries = sink->delivered();
  uint64_t covered = 0;
  for (uint32_t p = 0; p < partitions_; ++p) {
    SCOPED_TRACE(absl::StrCat("partition ", p));
    const auto batches = BatchesOf(deliveries, p);
    const uint64_t end = IngestedOffset(p);
    EXPECT_GT(end, 0u);
    EXPECT_TRUE(CoverContiguously(batches, 0, end));
    covered += end;
    for (const auto& b : batches) {
      EXPECT_LE(b.manifest().record_count(), 7u);
      EXPECT_EQ(b.manifest().batch_id(),
                absl::StrCat("orders.p", p, ".", b.manifest().first_offset(), "-",
                             b.manifest().last_offset()));
      EXPECT_EQ(sink->attempts(b.manifest().batch_id()), 1);
    }
  }
  EXPECT_EQ(covered, total);
  EXPECT_EQ(sink->record_count(), total);
  // Per key, records arrive in the order they were produced.
  std::map<std::string, int> last_seq;
  for (const auto& d : deliveries) {
    for (const auto& r : d.batch.records()) {
      const std::string& payload = r.payload();
      const size_t at = payload.find("\"seq\":");
      ASSERT_NE(at, std::string::npos);
      const int seq = std::stoi(payload.substr(at + 6));
      auto [it, inserted] = last_seq.emplace(r.key(), seq);
      if (!inserted) {
        EXPECT_EQ(seq, it->second + 1) << "key " << r.key();
        it->second = seq;
      } else {
        EXPECT_EQ(seq, 0) << "key " << r.key();
      }
    }
  }
  ASSERT_TRUE(WaitUntil([&] { return StatusOf("out").records_delivered() == total; }));
  const auto status = StatusOf("out");
  EXPECT_EQ(status.batches_delivered(), deliveries.size());
  EXPECT_EQ(status.backlog_records(), 0u);
  EXPECT_EQ(status.backlog_batches(), 0u);
  EXPECT_EQ(status.oldest_undelivered_age_ms(), 0);
  EXPECT_EQ(status.state(), wharf::v1::HEALTHY);
  EXPECT_EQ(status.type(), "fake");
}

// Retries -----------------------------------------------------------------------------------------

TEST_F(PipelineTest, FailedDeliveryIsRetriedWithBackoffUntilItSucceeds) {
  auto sink = NewSink();
  PipelineOptions options = Options({{"out", sink}}, Batching(5, 50ms));
  options.retry.initial_backoff = 200ms;
  options.retry.multiplier = 1.0;
  options.retry.down_after = 3;
  options.retry.probe_interval = 200ms;
  ASSERT_NO_FATAL_FAILURE(Start(std::move(options)));
  sink->FailNext(3, absl::UnavailableError("warehouse is napping"));
  ASSERT_EQ(AppendJson(KeyFor(1), 5).size(), 5u);
  const std::string batch_id = "orders.p1.0-4";

  // Watch the status while the destination fails.
  bool saw_retrying = false, saw_down = false, saw_next_attempt = false;
  std::string error_seen;
  uint32_t max_failures = 0;
  ASSERT_TRUE(WaitUntil(
      [&] {
        const auto s = StatusOf("out");
        if (s.consecutive_failures() > 0) {
          if (s.state() == wharf::v1::RETRYING && s.consecutive_failures() < 3) saw_retrying = true;
          if (s.state() == wharf::v1::OPEN) {
            EXPECT_GE(s.consecutive_failures(), 3u);
            saw_down = true;
          }
          if (s.has_next_attempt_time()) saw_next_attempt = true;
          error_seen = s.last_error();
          max_failures = std::max(max_failures, s.consecutive_failures());
        }
        return sink->batch_count() >= 1;
      },
      10s));
  EXPECT_TRUE(saw_retrying);
  EXPECT_TRUE(saw_down);
  EXPECT_TRUE(saw_next_attempt);
  EXPECT_EQ(max_failures, 3u);
  EXPECT_NE(error_seen.find("warehouse is napping"), std::string::npos) << error_seen;
  EXPECT_NE(error_seen.find(batch_id), std::string::npos) << error_seen;

  // Delivered once, after exactly three failed attempts.
  const auto d = sink->delivered();
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].batch.manifest().batch_id(), batch_id);
  EXPECT_EQ(sink->attempts(batch_id), 4);
  EXPECT_EQ(sink->failures(), 3);
  ASSERT_TRUE(WaitUntil([&] { return StatusOf("out").records_delivered() == 5; }));
  const auto s = StatusOf("out");
  EXPECT_EQ(s.state(), wharf::v1::HEALTHY);
  EXPECT_EQ(s.consecutive_failures(), 0u);
  EXPECT_EQ(s.delivery_failures(), 3u);
  EXPECT_FALSE(s.has_next_attempt_time());
  EXPECT_EQ(s.batches_delivered(), 1u);
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(sink->calls(), 4);
  EXPECT_EQ(sink->batch_count(), 1u);
}

TEST_F(PipelineTest, FailingPartitionDoesNotReorderOrSkipLaterBatches) {
  auto sink = NewSink();
  ASSERT_NO_FATAL_FAILURE(Start(Options({{"out", sink}}, Batching(3, 20ms))));
  sink->FailNext(5, absl::DeadlineExceededError("slow"));
  const std::string key = KeyFor(0);
  ASSERT_EQ(AppendJson(key, 12).size(), 12u);
  ASSERT_TRUE(WaitUntil([&] { return sink->record_count() >= 12; }, 10s));
  const auto batches = BatchesOf(sink->delivered(), 0);
  EXPECT_TRUE(CoverContiguously(batches, 0, 12));
  EXPECT_EQ(sink->attempts("orders.p0.0-2"), 6);
  for (const auto& b : batches) {
    if (b.manifest().first_offset() > 0) {
      EXPECT_EQ(sink->attempts(b.manifest().batch_id()), 1);
    }
  }
}

// Partitions of one destination are delivered side by side (each still in order, one batch at a
// time): with a slow destination, one batch per partition takes about one delivery's time, not
// four; the cursor of each partition is saved once its round ends.
TEST_F(PipelineTest, PartitionsAreDeliveredSideBySideEachInOrder) {
  constexpr auto kDelay = 500ms;
  auto sink = NewSink();
  sink->SetDelay(kDelay);
  ASSERT_NO_FATAL_FAILURE(Start(Options({{"out", sink}}, Batching(2, 10ms))));
  ASSERT_EQ(partitions_, 4u);
  for (uint32_t p = 0; p < partitions_; ++p) ASSERT_EQ(AppendJson(KeyFor(p), 4).size(), 4u);
  ASSERT_TRUE(WaitUntil([&] { return sink->record_count() >= 16; }, 20s));
  // Side by side: while one partition's delivery is in its 500 ms, others start theirs. Each
  // partition's own batches never overlap (the Destination contract).
  EXPECT_GE(sink->max_in_flight(), 2) << "partitions were delivered one after another";
  EXPECT_EQ(sink->max_in_flight_same_partition(), 1);
  for (uint32_t p = 0; p < partitions_; ++p) {
    SCOPED_TRACE(absl::StrCat("partition ", p));
    EXPECT_TRUE(CoverContiguously(BatchesOf(sink->delivered(), p), 0, 4));
    ASSERT_TRUE(WaitUntil([&] {
      auto c = store_->GetDeliveryCursor(kDataset, "out", p);
      return c.ok() && c->next_offset() == 4 && c->batches_delivered() == 2;
    }));
  }
  EXPECT_EQ(sink->duplicate_records(), 0);
}

// Isolation ---------------------------------------------------------------------------------------

TEST_F(PipelineTest, BlockedDestinationHoldsUpNeitherOtherDestinationsNorIngest) {
  auto blocked = NewSink();
  auto healthy = NewSink();
  blocked->Block();
  ASSERT_NO_FATAL_FAILURE(
      Start(Options({{"stuck", blocked}, {"fine", healthy}}, Batching(10, 20ms))));
  constexpr int kRequests = 20;
  SteadyClock::duration slowest{0};
  uint64_t total = 0;
  for (int i = 0; i < kRequests; ++i) {
    const auto t0 = SteadyClock::now();
    total += AppendJson(KeyFor(i % partitions_), 10, i * 10).size();
    slowest = std::max(slowest, SteadyClock::now() - t0);
  }
  EXPECT_LT(slowest, 1s) << "an append waited for the blocked destination";
  ASSERT_TRUE(WaitUntil([&] { return healthy->record_count() >= total; }, 5s))
      << healthy->record_count() << " of " << total;
  // One blocked call per partition the first round found a batch for (partitions are delivered
  // side by side, up to four at once; how many had a batch depends on timing), and no other
  // call: a round waits for all its partitions, so nothing is retried or re-offered meanwhile.
  EXPECT_GE(blocked->waiting(), 1);
  EXPECT_LE(blocked->waiting(), static_cast<int>(std::min<uint32_t>(partitions_, 4)));
  EXPECT_EQ(blocked->calls(), blocked->waiting());
  EXPECT_EQ(blocked->batch_count(), 0u);
  for (uint32_t p = 0; p < partitions_; ++p) {
    EXPECT_TRUE(CoverContiguously(BatchesOf(healthy->delivered(), p), 0, IngestedOffset(p)));
  }
  const auto stuck = StatusOf("stuck");
  EXPECT_EQ(stuck.records_delivered(), 0u);
  EXPECT_EQ(stuck.backlog_records(), total);
  EXPECT_GT(stuck.backlog_batches(), 0u);
  EXPECT_GT(stuck.oldest_undelivered_age_ms(), 0);
  const auto fine = StatusOf("fine");
  EXPECT_EQ(fine.backlog_records(), 0u);

  // Released, the stuck destination catches up, in order.
  blocked->Release();
  ASSERT_TRUE(WaitUntil([&] { return blocked->record_count() >= total; }, 5s));
  for (uint32_t p = 0; p < partitions_; ++p) {
    EXPECT_TRUE(CoverContiguously(BatchesOf(blocked->delivered(), p), 0, IngestedOffset(p)));
  }
}

// Restart -----------------------------------------------------------------------------------------

TEST_F(PipelineTest, RestartResumesFromTheSavedCursorWithoutSkipping) {
  auto first = NewSink();
  first->SetDelay(10ms);  // slow enough that the stop lands mid-stream
  ASSERT_NO_FATAL_FAILURE(Start(Options({{"out", first}}, Batching(5, 20ms))));

  // A producer appends until the store refuses (stopped under it).
  std::atomic<bool> producing{true};
  std::atomic<uint64_t> acked{0};
  std::thread producer([&] {
    for (int i = 0; producing.load(); ++i) {
      std::vector<wharf::v1::Record> records;
      for (int j = 0; j < 3; ++j) {
        const std::string key = absl::StrCat("k", (i + j) % 6);
        records.push_back(MakeRecord(key, absl::StrCat("{\"i\":", i, ",\"j\":", j, "}")));
      }
      const storage::AppendResult r = AppendRecords(records);
      if (!r.status.ok()) {
        EXPECT_EQ(r.status.code(), absl::StatusCode::kUnavailable) << r.status;
        return;
      }
      acked += r.acks.size();
      std::this_thread::sleep_for(1ms);
    }
  });
  ASSERT_TRUE(WaitUntil([&] { return first->batch_count() >= 10; }, 10s));
  store_->Stop();
  producing = false;
  producer.join();
  pipeline_->Stop();
  const auto run1 = first->delivered();
  ASSERT_GT(acked.load(), 0u);

  std::vector<wharf::v1::DeliveryCheckpoint> saved(partitions_);
  std::vector<uint64_t> ends(partitions_);
  bool anything_left = false;
  for (uint32_t p = 0; p < partitions_; ++p) {
    auto c = store_->GetDeliveryCursor(kDataset, "out", p);
    ASSERT_TRUE(c.ok()) << c.status();
    saved[p] = *c;
    ends[p] = IngestedOffset(p);
    const auto batches = BatchesOf(run1, p);
    // The saved cursor is right after the last batch delivered in the first run.
    EXPECT_EQ(c->next_offset(), batches.empty() ? 0 : batches.back().manifest().last_offset() + 1);
    EXPECT_EQ(c->batches_delivered(), batches.size());
    EXPECT_TRUE(CoverContiguously(batches, 0, c->next_offset()));
    anything_left = anything_left || c->next_offset() < ends[p];
  }
  EXPECT_TRUE(anything_left) << "the first run delivered everything; not a mid-stream stop";

  // Reopen both; a new destination object under the same name picks up the rest.
  pipeline_.reset();
  store_.reset();
  auto second = NewSink();
  ASSERT_NO_FATAL_FAILURE(Start(Options({{"out", second}}, Batching(5, 20ms))));
  // Ingest continues where it stopped.
  for (uint32_t p = 0; p < partitions_; ++p) {
    const auto offsets = AppendJson(KeyFor(p), 2);
    ASSERT_EQ(offsets.size(), 2u);
    EXPECT_EQ(offsets[0], ends[p]);
    ends[p] += 2;
  }
  uint64_t expected = 0;
  for (uint32_t p = 0; p < partitions_; ++p) expected += ends[p] - saved[p].next_offset();
  ASSERT_TRUE(WaitUntil([&] { return second->record_count() >= expected; }, 10s))
      << second->record_count() << " of " << expected;
  std::this_thread::sleep_for(100ms);
  const auto run2 = second->delivered();
  uint64_t total = 0;
  for (uint32_t p = 0; p < partitions_; ++p) {
    SCOPED_TRACE(absl::StrCat("partition ", p));
    // Nothing delivered twice, nothing skipped: the second run starts at the saved cursor.
    EXPECT_TRUE(CoverContiguously(BatchesOf(run2, p), saved[p].next_offset(), ends[p]));
    auto all = BatchesOf(run1, p);
    for (const auto& b : BatchesOf(run2, p)) all.push_back(b);
    EXPECT_TRUE(CoverContiguously(all, 0, ends[p]));
    total += ends[p];
  }
  EXPECT_EQ(total, acked.load() + 2 * partitions_);
  ASSERT_TRUE(WaitUntil([&] { return StatusOf("out").records_delivered() == total; }));
}

TEST_F(PipelineTest, BatchWhoseCursorAdvanceWasLostIsRedeliveredUnderTheSameId) {
  auto first = NewSink();
  ASSERT_NO_FATAL_FAILURE(Start(Options({{"out", first}}, Batching(10, 20ms))));
  const std::string key = KeyFor(3);
  ASSERT_EQ(AppendJson(key, 25).size(), 25u);
  ASSERT_TRUE(WaitUntil([&] { return StatusOf("out").records_delivered() == 25; }, 5s));
  Shutdown();
  const auto run1 = first->delivered();
  ASSERT_EQ(run1.size(), 3u);
  const wharf::v1::StoredBatch& lost = run1[2].batch;
  EXPECT_EQ(lost.manifest().batch_id(), "orders.p3.20-24");

  // Simulate a crash between Deliver() returning and the cursor write reaching the disk.
  ASSERT_NO_FATAL_FAILURE(OpenStore());
  auto cursor = store_->GetDeliveryCursor(kDataset, "out", 3);
  ASSERT_TRUE(cursor.ok());
  EXPECT_EQ(cursor->next_offset(), 25u);
  EXPECT_EQ(cursor->batches_delivered(), 3u);
  EXPECT_EQ(cursor->records_delivered(), 25u);
  wharf::v1::DeliveryCheckpoint older;
  older.set_next_offset(20);
  older.set_batches_delivered(2);
  older.set_records_delivered(20);
  ASSERT_TRUE(store_->SetDeliveryCursor(kDataset, "out", 3, older).ok());
  store_.reset();

  auto second = NewSink();
  ASSERT_NO_FATAL_FAILURE(Start(Options({{"out", second}}, Batching(10, 20ms))));
  ASSERT_TRUE(WaitUntil([&] { return second->batch_count() >= 1; }, 5s));
  ASSERT_TRUE(WaitUntil([&] { return StatusOf("out").records_delivered() == 25; }, 5s));
  std::this_thread::sleep_for(100ms);
  const auto run2 = second->delivered();
  ASSERT_EQ(run2.size(), 1u) << "only the batch after the restored cursor is redelivered";
  // Same id, same boundaries, same content: the destination can recognise it.
  EXPECT_TRUE(MessageDifferencer::Equals(run2[0].batch, lost));
  const auto restored = store_->GetDeliveryCursor(kDataset, "out", 3);
  ASSERT_TRUE(restored.ok());
  EXPECT_EQ(restored->next_offset(), 25u);
  EXPECT_EQ(restored->batches_delivered(), 3u);
}

TEST_F(PipelineTest, RecordsLeftUnvalidatedByAStopAreBatchedAfterRestart) {
  auto first = NewSink();
  // A linger far beyond the test: the lone records are still raw when the pipeline stops.
  ASSERT_NO_FATAL_FAILURE(Start(Options({{"out", first}}, Batching(10, std::chrono::hours(1)))));
  ASSERT_EQ(AppendJson(KeyFor(0), 3).size(), 3u);
  std::this_thread::sleep_for(50ms);
  Shutdown();
  EXPECT_EQ(first->batch_count(), 0u);

  auto second = NewSink();
  ASSERT_NO_FATAL_FAILURE(Start(Options({{"out", second}}, Batching(10, 50ms))));
  ASSERT_TRUE(WaitUntil([&] { return second->batch_count() >= 1; }, 5s));
  const auto d = second->delivered();
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].batch.manifest().batch_id(), "orders.p0.0-2");
}

// Retention ---------------------------------------------------------------------------------------

TEST_F(PipelineTest, RetentionDeletesWhatEveryDestinationHasAndNothingElse) {
  auto a = NewSink();
  auto b = NewSink();
  PipelineOptions options = Options({{"a", a}, {"b", b}}, Batching(10, 20ms));
  options.retention.raw = 0ms;
  ASSERT_NO_FATAL_FAILURE(Start(std::move(options)));
  const std::string key = KeyFor(1);
  ASSERT_EQ(AppendJson(key, 10).size(), 10u);
  ASSERT_TRUE(WaitUntil([&] {
    return StatusOf("a").records_delivered() == 10 && StatusOf("b").records_delivered() == 10;
  }));

  // From now on "b" fails: "a" gets the next two batches, "b" none.
  b->FailNext(1000000, absl::UnavailableError("b is down"));
  ASSERT_EQ(AppendJson(key, 20, 10).size(), 20u);
  ASSERT_TRUE(WaitUntil([&] { return StatusOf("a").records_delivered() == 30; }));
  ASSERT_TRUE(WaitUntil([&] { return b->failures() >= 2; }));
  pipeline_->RunRetentionNow();

  // Only the first batch and its raw records are gone.
  auto batches = ReadAllBatches(1);
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_EQ(batches[0].manifest().first_offset(), 10u);
  auto raw = ReadAllRaw(1);
  ASSERT_EQ(raw.size(), 20u);
  EXPECT_EQ(raw.front().offset, 10u);
  const auto retention = store_->GetPartitionCounters(kDataset, 1).retention;
  EXPECT_EQ(retention.raw_deleted_below(), 10u);
  EXPECT_EQ(retention.batches_deleted_below(), 10u);

  // Retention does not eat into the failing destination's backlog, however often it runs.
  for (int i = 0; i < 3; ++i) pipeline_->RunRetentionNow();
  EXPECT_EQ(ReadAllBatches(1).size(), 2u);
  EXPECT_EQ(ReadAllRaw(1).size(), 20u);

  // Once "b" catches up, everything delivered goes.
  b->FailNext(0, absl::OkStatus());
  ASSERT_TRUE(WaitUntil([&] { return StatusOf("b").records_delivered() == 30; }, 5s));
  EXPECT_TRUE(CoverContiguously(BatchesOf(b->delivered(), 1), 0, 30));
  pipeline_->RunRetentionNow();
  EXPECT_TRUE(ReadAllBatches(1).empty());
  EXPECT_TRUE(ReadAllRaw(1).empty());
  std::vector<wharf::v1::StoredBatch> from_cursor;
  ASSERT_TRUE(store_->ReadBatches(kDataset, 1, 0, 100, &from_cursor).ok());
  EXPECT_TRUE(from_cursor.empty());
  EXPECT_EQ(store_->GetPartitionCounters(kDataset, 1).retention.raw_deleted_below(), 30u);

  // The pipeline goes on normally after retention.
  ASSERT_EQ(AppendJson(key, 5, 30).size(), 5u);
  ASSERT_TRUE(WaitUntil([&] {
    return StatusOf("a").records_delivered() == 35 && StatusOf("b").records_delivered() == 35;
  }));
  EXPECT_EQ(a->delivered().back().batch.manifest().batch_id(), "orders.p1.30-34");
}

TEST_F(PipelineTest, RetentionKeepsRawRecordsForTheConfiguredTime) {
  auto sink = NewSink();
  PipelineOptions options = Options({{"out", sink}}, Batching(10, 20ms));
  options.retention.raw = std::chrono::hours(1);
  ASSERT_NO_FATAL_FAILURE(Start(std::move(options)));
  ASSERT_EQ(AppendJson(KeyFor(2), 30).size(), 30u);
  ASSERT_TRUE(WaitUntil([&] { return StatusOf("out").records_delivered() == 30; }));
  pipeline_->RunRetentionNow();
  pipeline_->RunRetentionNow();
  // Delivered batches are deleted at once; raw records stay for `raw` after delivery.
  EXPECT_TRUE(ReadAllBatches(2).empty());
  EXPECT_EQ(ReadAllRaw(2).size(), 30u);
  EXPECT_EQ(store_->GetPartitionCounters(kDataset, 2).retention.raw_deleted_below(), 0u);
}

TEST_F(PipelineTest, RetentionRunsOnItsInterval) {
  auto sink = NewSink();
  PipelineOptions options = Options({{"out", sink}}, Batching(10, 20ms));
  options.retention.raw = 0ms;
  options.retention.interval = 50ms;
  ASSERT_NO_FATAL_FAILURE(Start(std::move(options)));
  ASSERT_EQ(AppendJson(KeyFor(0), 20).size(), 20u);
  ASSERT_EQ(AppendJson(KeyFor(1), 7).size(), 7u);
  ASSERT_TRUE(WaitUntil(
      [&] {
        return ReadAllRaw(0).empty() && ReadAllRaw(1).empty() && ReadAllBatches(0).empty() &&
               ReadAllBatches(1).empty();
      },
      10s));
  EXPECT_EQ(sink->record_count(), 27u);
  EXPECT_EQ(store_->GetPartitionCounters(kDataset, 0).retention.raw_deleted_below(), 20u);
  EXPECT_EQ(store_->GetPartitionCounters(kDataset, 1).retention.raw_deleted_below(), 7u);
}

TEST_F(PipelineTest, RetentionNeverDeletesRecordsThatAreNotValidatedYet) {
  auto sink = NewSink();
  PipelineOptions options = Options({{"out", sink}}, Batching(10, std::chrono::hours(1)));
  options.retention.raw = 0ms;
  ASSERT_NO_FATAL_FAILURE(Start(std::move(options)));
  const std::string key = KeyFor(0);
  ASSERT_EQ(AppendJson(key, 10).size(), 10u);  // a full batch, delivered at once
  ASSERT_TRUE(WaitUntil([&] { return StatusOf("out").records_delivered() == 10; }));
  ASSERT_EQ(AppendJson(key, 3, 10).size(), 3u);  // held back by the 1 h linger
  pipeline_->RunRetentionNow();
  EXPECT_EQ(ValidatedOffset(0), 10u);
  const auto raw = ReadAllRaw(0);
  ASSERT_EQ(raw.size(), 3u);
  EXPECT_EQ(raw[0].offset, 10u);
  EXPECT_TRUE(ReadAllBatches(0).empty());
}

TEST_F(PipelineTest, QuarantineOnlyRangeIsSkippedByDeliveryAndKeptInQuarantine) {
  auto sink = NewSink();
  PipelineOptions options = Options({{"out", sink}}, Batching(10, 20ms));
  options.retention.raw = 0ms;
  ASSERT_NO_FATAL_FAILURE(Start(std::move(options)));
  const std::string key = KeyFor(0);
  ASSERT_EQ(AppendJson(key, 10).size(), 10u);
  ASSERT_TRUE(WaitUntil([&] { return StatusOf("out").records_delivered() == 10; }));
  // Two bad records after the delivered batch: no batch, but the delivery cursor moves over
  // them, so the backlog drains to zero.
  ASSERT_TRUE(AppendRecords({MakeRecord(key, "bad"), MakeRecord(key, "{")}).status.ok());
  ASSERT_TRUE(WaitUntil([&] { return ValidatedOffset(0) == 12; }));
  ASSERT_TRUE(WaitUntil(
      [&] {
        auto c = store_->GetDeliveryCursor(kDataset, "out", 0);
        return c.ok() && c->next_offset() == 12;
      },
      5s));
  const auto status = StatusOf("out");
  EXPECT_EQ(status.backlog_records(), 0u);
  EXPECT_EQ(status.records_delivered(), 10u);
  EXPECT_EQ(status.batches_delivered(), 1u);
  EXPECT_EQ(sink->calls(), 1);
  // Retention may then drop their raw copies: the quarantine entries keep the originals.
  pipeline_->RunRetentionNow();
  EXPECT_TRUE(ReadAllRaw(0).empty());
  std::vector<wharf::v1::QuarantineEntry> entries;
  std::string next;
  ASSERT_TRUE(store_->ListQuarantine(kDataset, "", 10, &entries, &next).ok());
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].offset(), 10u);
  EXPECT_EQ(entries[0].original().record().payload(), "bad");
  EXPECT_EQ(entries[1].original().record().payload(), "{");
  // Later records are delivered from there.
  ASSERT_EQ(AppendJson(key, 2, 10).size(), 2u);
  ASSERT_TRUE(WaitUntil([&] { return sink->batch_count() == 2; }));
  EXPECT_EQ(sink->delivered()[1].batch.manifest().batch_id(), "orders.p0.12-13");
}

// Metrics -----------------------------------------------------------------------------------------

TEST_F(PipelineTest, MetricsCountWhatHappenedWhilePartitionsQuarantineConcurrently) {
  auto sink = NewSink();
  sink->FailNext(2, absl::UnavailableError("twice"));
  PipelineOptions options = Options({{"out", sink}}, Batching(4, 5ms));
  options.threads = 4;
  options.retention.raw = 0ms;
  options.metrics_registry = &registry_;
  ASSERT_NO_FATAL_FAILURE(Start(std::move(options)));
  // One producer per partition, each request one good and three bad records: every partition
  // quarantines records at the same time as the others.
  constexpr int kRequests = 40;
  std::vector<std::thread> producers;
  for (uint32_t p = 0; p < partitions_; ++p) {
    producers.emplace_back([&, p] {
      const std::string key = KeyFor(p);
      for (int i = 0; i < kRequests; ++i) {
        const storage::AppendResult r = AppendRecords(
            {MakeRecord(key, "nope"), MakeRecord(key, absl::StrCat("{\"i\":", i, "}")),
             MakeRecord(key, "[]"), MakeRecord(key, "{")});
        EXPECT_TRUE(r.status.ok()) << r.status;
      }
    });
  }
  for (auto& t : producers) t.join();
  const uint64_t good = partitions_ * kRequests;
  const uint64_t bad = 3 * good;
  ASSERT_TRUE(WaitUntil([&] { return StatusOf("out").records_delivered() == good; }, 10s));
  ASSERT_TRUE(WaitUntil([&] { return StatusOf("out").backlog_records() == 0; }, 5s));

  const std::map<std::string, std::string> ds = {{"dataset", kDataset}};
  const std::map<std::string, std::string> dest = {{"dataset", kDataset}, {"destination", "out"}};
  // Metrics are counted just after the commit they describe, so a delivery (or the cursor) can
  // be seen a moment before the last count: wait for them, then compare exactly.
  EXPECT_TRUE(WaitUntil(
      [&] {
        return MetricValue("wharf_records_quarantined_total",
                           {{"dataset", kDataset}, {"reason", "PARSE_ERROR"}}) >=
                   static_cast<double>(bad) &&
               MetricValue("wharf_records_committed_total", ds) >= static_cast<double>(good);
      },
      5s));
  EXPECT_EQ(MetricValue("wharf_records_quarantined_total",
                        {{"dataset", kDataset}, {"reason", "PARSE_ERROR"}}),
            static_cast<double>(bad));
  EXPECT_EQ(MetricValue("wharf_records_committed_total", ds), static_cast<double>(good));
  uint64_t committed_batches = 0;
  for (uint32_t p = 0; p < partitions_; ++p) {
    committed_batches += store_->GetPartitionCounters(kDataset, p).validation.batches_committed();
  }
  EXPECT_EQ(MetricValue("wharf_batches_committed_total", ds),
            static_cast<double>(committed_batches));
  EXPECT_EQ(MetricValue("wharf_records_delivered_total", dest), static_cast<double>(good));
  EXPECT_EQ(MetricValue("wharf_batches_delivered_total", dest),
            static_cast<double>(sink->batch_count()));
  EXPECT_EQ(MetricValue("wharf_delivery_failures_total", dest), 2.0);
  EXPECT_EQ(MetricValue("wharf_handoff_latency_seconds", dest), static_cast<double>(good));
  EXPECT_EQ(MetricValue("wharf_delivery_seconds", dest), static_cast<double>(sink->batch_count()));
  pipeline_->RunRetentionNow();
  EXPECT_EQ(MetricValue("wharf_retention_deleted_records_total", ds),
            static_cast<double>(good + bad));
}

// Lifecycle ---------------------------------------------------------------------------------------

TEST_F(PipelineTest, StopIsPromptWhileADestinationIsInBackoffAndATimerIsArmed) {
  auto sink = NewSink();
  sink->FailNext(1000000, absl::UnavailableError("never"));
  PipelineOptions options = Options({{"out", sink}}, Batching(10, std::chrono::hours(1)));
  options.retry.initial_backoff = 20s;
  options.retry.max_backoff = 60s;
  ASSERT_NO_FATAL_FAILURE(Start(std::move(options)));
  ASSERT_EQ(AppendJson(KeyFor(0), 10).size(), 10u);  // a full batch that cannot be delivered
  ASSERT_EQ(AppendJson(KeyFor(1), 1).size(), 1u);    // a lone record under a 1 h linger
  ASSERT_TRUE(WaitUntil([&] { return StatusOf("out").state() == wharf::v1::RETRYING; }));
  EXPECT_EQ(sink->calls(), 1);
  store_->Stop();
  const auto t0 = SteadyClock::now();
  pipeline_->Stop();
  EXPECT_LT(SteadyClock::now() - t0, 2s);
  pipeline_->Stop();  // idempotent
  // After Stop nothing is scheduled any more.
  pipeline_->OnAppend(kDataset, 0, 100);
  EXPECT_EQ(sink->calls(), 1);
}

TEST_F(PipelineTest, CreateRefusesUnknownDatasetAndMissingProcessor) {
  ASSERT_NO_FATAL_FAILURE(OpenStore());
  {
    PipelineOptions po = Options({{"out", NewSink()}}, Batching(10, 20ms));
    po.datasets[0].name = "no-such-dataset";
    auto p = Pipeline::Create(store_.get(), std::move(po));
    ASSERT_FALSE(p.ok());
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(p.status().message()).find("no-such-dataset"), std::string::npos);
  }
  {
    PipelineOptions po = Options({{"out", NewSink()}}, Batching(10, 20ms));
    po.datasets[0].processor = nullptr;
    auto p = Pipeline::Create(store_.get(), std::move(po));
    ASSERT_FALSE(p.ok());
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(p.status().message()).find("processor"), std::string::npos);
  }
  {
    // The second dataset is the bad one: the whole pipeline is refused.
    PipelineOptions po = Options({{"out", NewSink()}}, Batching(10, 20ms));
    DatasetPipelineOptions d;
    d.name = "events";
    po.datasets.push_back(std::move(d));
    EXPECT_FALSE(Pipeline::Create(store_.get(), std::move(po)).ok());
  }
}

TEST_F(PipelineTest, LifecycleEdges) {
  auto sink = NewSink();
  ASSERT_NO_FATAL_FAILURE(Start(Options({{"out", sink}}, Batching(10, 20ms))));
  EXPECT_EQ(pipeline_->Start().code(), absl::StatusCode::kFailedPrecondition);
  // Unknown datasets and partitions are ignored.
  pipeline_->OnAppend("nope", 0, 1);
  pipeline_->OnAppend(kDataset, partitions_, 1);
  EXPECT_TRUE(pipeline_->DestinationStatuses("nope").empty());
  EXPECT_TRUE(pipeline_->DestinationStatuses("events").empty());  // in the store, not piped
  const auto statuses = pipeline_->DestinationStatuses(kDataset);
  ASSERT_EQ(statuses.size(), 1u);
  EXPECT_EQ(statuses[0].name(), "out");
  EXPECT_EQ(statuses[0].type(), "fake");
  EXPECT_EQ(statuses[0].state(), wharf::v1::HEALTHY);
  // Records of a dataset the pipeline does not run stay raw.
  ASSERT_TRUE(AppendRecords({MakeRecord("", "{}")}, "events").status.ok());
  ASSERT_EQ(AppendJson(KeyFor(0), 1).size(), 1u);
  ASSERT_TRUE(WaitUntil([&] { return sink->batch_count() == 1; }));
  EXPECT_EQ(store_->GetPartitionCounters("events", 0).validation.next_offset(), 0u);

  // A pipeline that was never started stops (and is destroyed) without trouble.
  auto idle = Pipeline::Create(store_.get(), Options({{"out", NewSink()}}, Batching(10, 20ms)));
  ASSERT_TRUE(idle.ok());
  (*idle)->Stop();
}

}  // namespace
}  // namespace wharf::pipeline
