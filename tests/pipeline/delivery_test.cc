// Delivery features of the pipeline: bisection of refused batches into sub-batches and their
// quarantine as DESTINATION_REJECTED, resuming an interrupted split, retry classification, the
// circuit breaker, pause/resume, fan-out isolation, Tick(), processor swaps and filters, and the
// quarantine quota and retention.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <future>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "pipeline/destination.h"
#include "pipeline/pipeline.h"
#include "pipeline/record_processor.h"
#include "storage/crc32c.h"
#include "storage/staging_store.h"
#include "tests/pipeline/pipeline_fixture.h"
#include "wharf/v1/control.pb.h"
#include "wharf/v1/record.pb.h"
#include "wharf/v1/staging.pb.h"

namespace wharf::pipeline {
namespace {

using namespace pipeline_testing;  // NOLINT(build/namespaces): the shared test fixtures

constexpr uint32_t kUnlimited = UINT32_MAX;

class DeliveryTest : public PipelineTest {
 protected:
  std::vector<wharf::v1::QuarantineEntry> AllQuarantine(const std::string& dataset = kDataset) {
    std::vector<wharf::v1::QuarantineEntry> entries;
    std::string next;
    EXPECT_TRUE(store_->ListQuarantine(dataset, "", 1000, &entries, &next).ok());
    EXPECT_TRUE(next.empty());
    return entries;
  }

  wharf::v1::DeliveryCheckpoint Cursor(const std::string& destination, uint32_t partition) {
    auto c = store_->GetDeliveryCursor(kDataset, destination, partition);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *c : wharf::v1::DeliveryCheckpoint();
  }

  // Offsets of every record `sink` accepted for `partition`, in delivery order.
  static std::vector<uint64_t> DeliveredOffsets(const FakeSink& sink, uint32_t partition) {
    std::vector<uint64_t> out;
    for (const auto& b : BatchesOf(sink.delivered(), partition)) {
      for (uint64_t o : RecordOffsets(b)) out.push_back(o);
    }
    return out;
  }

  static std::vector<uint64_t> Range(uint64_t from, uint64_t to,
                                     const std::set<uint64_t>& except = {}) {
    std::vector<uint64_t> out;
    for (uint64_t o = from; o < to; ++o) {
      if (except.count(o) == 0) out.push_back(o);
    }
    return out;
  }

  static int64_t MillisBetween(SteadyClock::time_point a, SteadyClock::time_point b) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(b - a).count();
  }

  // ReplayQuarantine, waiting for its answer.
  absl::StatusOr<uint64_t> Replay(std::vector<std::string> tokens) {
    auto done = std::make_shared<std::promise<absl::StatusOr<uint64_t>>>();
    auto result = done->get_future();
    store_->ReplayQuarantine(kDataset, std::move(tokens),
                             [done](absl::StatusOr<uint64_t> r) { done->set_value(r); });
    if (result.wait_for(10s) != std::future_status::ready) {
      return absl::DeadlineExceededError("replay not answered within 10 s");
    }
    return result.get();
  }
};

// Bisection ---------------------------------------------------------------------------------------

TEST_F(DeliveryTest, RefusedBatchIsBisectedAndOnlyThePoisonRecordsAreQuarantined) {
  auto sink = NewSink();
  sink->Reject(0, {3, 10}, "null value in column \"amount\"");
  PipelineOptions options = Options({{"out", sink}}, Batching(16, 20ms));
  options.metrics_registry = &registry_;
  ASSERT_NO_FATAL_FAILURE(Start(std::move(options)));
  const std::string key = KeyFor(0);
  ASSERT_EQ(AppendJson(key, 16).size(), 16u);
  ASSERT_TRUE(WaitUntil([&] { return Cursor("out", 0).next_offset() == 16; }, 5s));

  // Every other record delivered exactly once, in order; nothing offered twice.
  EXPECT_EQ(DeliveredOffsets(*sink, 0), Range(0, 16, {3, 10}));
  EXPECT_EQ(sink->duplicate_records(), 0);
  EXPECT_EQ(sink->redeliveries(), 0);
  // Halves until the refused records are isolated; ids derived from the batch and the offsets.
  const std::string b = "orders.p0.0-15";
  EXPECT_EQ(sink->offered(),
            (std::vector<std::string>{b, b + "/0-7", b + "/0-3", b + "/0-1", b + "/2-3", b + "/2-2",
                                      b + "/3-3", b + "/4-7", b + "/8-15", b + "/8-11", b + "/8-9",
                                      b + "/10-11", b + "/10-10", b + "/11-11", b + "/12-15"}));
  // A sub-batch is a consistent batch of its own.
  const auto delivered = sink->delivered();
  ASSERT_EQ(delivered.size(), 6u);
  const auto& sub = delivered[2].batch;
  EXPECT_EQ(sub.manifest().batch_id(), b + "/4-7");
  EXPECT_EQ(sub.manifest().first_offset(), 4u);
  EXPECT_EQ(sub.manifest().last_offset(), 7u);
  EXPECT_EQ(sub.manifest().record_count(), 4u);
  EXPECT_EQ(sub.manifest().dataset(), kDataset);
  EXPECT_EQ(sub.manifest().partition(), 0u);
  uint32_t crc = 0;
  uint64_t bytes = 0;
  for (const auto& r : sub.records()) {
    crc = storage::Crc32c(r.payload(), crc);
    bytes += r.payload().size();
  }
  EXPECT_EQ(sub.manifest().checksum(), crc);
  EXPECT_EQ(sub.manifest().bytes(), bytes);

  // The refused records are in quarantine with what an operator needs to act on them.
  const auto raw = ReadAllRaw(0);
  ASSERT_EQ(raw.size(), 16u);
  const auto entries = AllQuarantine();
  ASSERT_EQ(entries.size(), 2u);
  const std::vector<uint64_t> poison = {3, 10};
  for (size_t i = 0; i < entries.size(); ++i) {
    const auto& e = entries[i];
    SCOPED_TRACE(e.ShortDebugString());
    EXPECT_EQ(e.offset(), poison[i]);
    EXPECT_EQ(e.partition(), 0u);
    EXPECT_EQ(e.dataset(), kDataset);
    EXPECT_EQ(e.reason(), wharf::v1::DESTINATION_REJECTED);
    EXPECT_EQ(e.destination(), "out");
    EXPECT_EQ(e.batch_id(), b);
    EXPECT_NE(e.message().find("null value in column \"amount\""), std::string::npos);
    EXPECT_NE(e.message().find("\"out\""), std::string::npos);
    EXPECT_EQ(e.attempts(), 1u);
    EXPECT_TRUE(e.has_quarantine_time());
    EXPECT_TRUE(e.has_first_error_time());
    // The raw record as the producer sent it (with its ingest time), not the delivered form.
    EXPECT_EQ(e.original().SerializeAsString(), raw[poison[i]].record.SerializeAsString());
    auto by_token = store_->GetQuarantine(kDataset, absl::StrCat("0/", poison[i], "/out"));
    ASSERT_TRUE(by_token.ok()) << by_token.status();
    EXPECT_EQ(by_token->SerializeAsString(), e.SerializeAsString());
  }
  // A DESTINATION_REJECTED entry is addressed with its destination only.
  EXPECT_EQ(store_->GetQuarantine(kDataset, "0/3").status().code(), absl::StatusCode::kNotFound);

  // The cursor moved past the batch and counts what happened.
  const auto cursor = Cursor("out", 0);
  EXPECT_EQ(cursor.next_offset(), 16u);
  EXPECT_EQ(cursor.batches_delivered(), 1u);
  EXPECT_EQ(cursor.records_delivered(), 14u);
  EXPECT_EQ(cursor.records_rejected(), 2u);
  EXPECT_TRUE(cursor.splitting_batch_id().empty());
  ASSERT_TRUE(WaitUntil([&] { return StatusOf("out").records_rejected() == 2; }));
  const auto status = StatusOf("out");
  EXPECT_EQ(status.records_delivered(), 14u);
  EXPECT_EQ(status.backlog_records(), 0u);
  EXPECT_EQ(status.state(), wharf::v1::HEALTHY);
  EXPECT_EQ(status.consecutive_failures(), 0u);
  const std::map<std::string, std::string> dest = {{"dataset", kDataset}, {"destination", "out"}};
  EXPECT_EQ(MetricValue("wharf_records_rejected_total", dest), 2.0);
  EXPECT_EQ(MetricValue("wharf_records_delivered_total", dest), 14.0);
  EXPECT_EQ(MetricValue("wharf_quarantine_entries", {{"dataset", kDataset}}), 2.0);
  EXPECT_EQ(store_->QuarantineEntries(kDataset), 2u);

  // Later batches go out whole again.
  ASSERT_EQ(AppendJson(key, 4, 100).size(), 4u);
  ASSERT_TRUE(WaitUntil([&] { return Cursor("out", 0).next_offset() == 20; }, 5s));
  EXPECT_EQ(sink->offered().back(), "orders.p0.16-19");
  EXPECT_EQ(sink->attempts("orders.p0.16-19"), 1);
}

TEST_F(DeliveryTest, RefusedSingleRecordBatchIsQuarantinedWithoutSubBatches) {
  auto sink = NewSink();
  sink->Reject(1, {1}, "duplicate key");
  ASSERT_NO_FATAL_FAILURE(Start(Options({{"out", sink}}, Batching(1, 10ms))));
  const std::string key = KeyFor(1);
  for (int i = 0; i < 3; ++i) ASSERT_EQ(AppendJson(key, 1, i).size(), 1u);
  ASSERT_TRUE(WaitUntil([&] { return Cursor("out", 1).next_offset() == 3; }, 5s));
  EXPECT_EQ(sink->offered(),
            (std::vector<std::string>{"orders.p1.0-0", "orders.p1.1-1", "orders.p1.2-2"}));
  EXPECT_EQ(DeliveredOffsets(*sink, 1), (std::vector<uint64_t>{0, 2}));
  const auto entries = AllQuarantine();
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].offset(), 1u);
  EXPECT_EQ(entries[0].batch_id(), "orders.p1.1-1");
  EXPECT_EQ(entries[0].reason(), wharf::v1::DESTINATION_REJECTED);
  const auto cursor = Cursor("out", 1);
  EXPECT_EQ(cursor.records_rejected(), 1u);
  EXPECT_EQ(cursor.records_delivered(), 2u);
  EXPECT_EQ(cursor.batches_delivered(), 3u);
  EXPECT_TRUE(cursor.splitting_batch_id().empty());
}

TEST_F(DeliveryTest, RecordRefusedEverywhereIsQuarantinedOncePerDestination) {
  auto a = NewSink();
  auto b = NewSink();
  auto c = NewSink();
  a->Reject(2, {1});
  b->Reject(2, {1, 2});
  ASSERT_NO_FATAL_FAILURE(Start(Options({{"a", a}, {"b", b}, {"c", c}}, Batching(4, 20ms))));
  ASSERT_EQ(AppendJson(KeyFor(2), 4).size(), 4u);
  ASSERT_TRUE(WaitUntil(
      [&] {
        return Cursor("a", 2).next_offset() == 4 && Cursor("b", 2).next_offset() == 4 &&
               Cursor("c", 2).next_offset() == 4;
      },
      5s));
  EXPECT_EQ(DeliveredOffsets(*a, 2), (std::vector<uint64_t>{0, 2, 3}));
  EXPECT_EQ(DeliveredOffsets(*b, 2), (std::vector<uint64_t>{0, 3}));
  EXPECT_EQ(DeliveredOffsets(*c, 2), (std::vector<uint64_t>{0, 1, 2, 3}));
  std::vector<std::string> tokens;
  for (const auto& e : AllQuarantine()) {
    tokens.push_back(absl::StrCat(e.partition(), "/", e.offset(), "/", e.destination()));
  }
  EXPECT_EQ(tokens, (std::vector<std::string>{"2/1/a", "2/1/b", "2/2/b"}));
  EXPECT_EQ(store_->QuarantineEntries(kDataset), 3u);
  EXPECT_EQ(Cursor("a", 2).records_rejected(), 1u);
  EXPECT_EQ(Cursor("b", 2).records_rejected(), 2u);
  EXPECT_EQ(Cursor("c", 2).records_rejected(), 0u);
}

// A stop while a sub-batch is in flight: the next run resumes the split (same sub-batch ids)
// instead of offering the whole batch again, so no record reaches the destination twice.
TEST_F(DeliveryTest, SplitInterruptedByAStopResumesWithSubBatchesOnly) {
  auto sink = NewSink();  // one destination across both runs: its ledger persists
  sink->Reject(0, {5});
  const std::string b = "orders.p0.0-15";
  sink->BlockWhen([b](const wharf::v1::StoredBatch& batch) {
    return batch.manifest().batch_id() == b + "/0-3";
  });
  ASSERT_NO_FATAL_FAILURE(Start(Options({{"out", sink}}, Batching(16, 20ms))));
  ASSERT_EQ(AppendJson(KeyFor(0), 16).size(), 16u);
  ASSERT_TRUE(WaitUntil([&] { return sink->waiting() == 1; }, 5s));
  // The split is recorded before any sub-batch goes out.
  EXPECT_EQ(Cursor("out", 0).splitting_batch_id(), b);
  EXPECT_EQ(Cursor("out", 0).next_offset(), 0u);

  // Stop while the sub-batch is in flight, then let it complete: nothing else goes out.
  std::thread stopper([&] {
    store_->Stop();
    pipeline_->Stop();
  });
  std::this_thread::sleep_for(300ms);
  sink->Release();
  stopper.join();
  EXPECT_EQ(sink->offered(), (std::vector<std::string>{b, b + "/0-7", b + "/0-3"}));
  EXPECT_EQ(DeliveredOffsets(*sink, 0), Range(0, 4));
  EXPECT_EQ(Cursor("out", 0).splitting_batch_id(), b);
  EXPECT_EQ(Cursor("out", 0).next_offset(), 0u);
  pipeline_.reset();
  store_.reset();

  ASSERT_NO_FATAL_FAILURE(Start(Options({{"out", sink}}, Batching(16, 20ms))));
  ASSERT_TRUE(WaitUntil([&] { return Cursor("out", 0).next_offset() == 16; }, 5s));
  EXPECT_EQ(sink->attempts(b), 1) << "the whole batch was offered again after the restart";
  EXPECT_EQ(sink->duplicate_records(), 0);
  // "/0-3" was offered again under the same id (the destination recognised it).
  EXPECT_EQ(sink->attempts(b + "/0-3"), 2);
  EXPECT_EQ(sink->redeliveries(), 1);
  std::set<uint64_t> unique;
  for (uint64_t o : DeliveredOffsets(*sink, 0)) unique.insert(o);
  EXPECT_EQ(unique, (std::set<uint64_t>{0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}));
  const auto entries = AllQuarantine();
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].offset(), 5u);
  EXPECT_EQ(entries[0].batch_id(), b);
  const auto cursor = Cursor("out", 0);
  EXPECT_TRUE(cursor.splitting_batch_id().empty());
  EXPECT_EQ(cursor.records_rejected(), 1u);
  EXPECT_EQ(cursor.records_delivered(), 15u);
  EXPECT_EQ(cursor.batches_delivered(), 1u);
}

// Same, from a cursor written by a run that crashed after recording the split.
TEST_F(DeliveryTest, BatchMarkedAsSplittingIsNeverOfferedWhole) {
  auto first = NewSink();
  ASSERT_NO_FATAL_FAILURE(Start(Options({{"out", first}}, Batching(8, 20ms))));
  ASSERT_TRUE(pipeline_->SetPaused(kDataset, "out", true).ok());
  ASSERT_EQ(AppendJson(KeyFor(3), 8).size(), 8u);
  ASSERT_TRUE(WaitUntil([&] { return ValidatedOffset(3) == 8; }, 5s));
  Shutdown();
  EXPECT_EQ(first->calls(), 0);

  ASSERT_NO_FATAL_FAILURE(OpenStore());
  wharf::v1::DeliveryCheckpoint splitting;
  splitting.set_splitting_batch_id("orders.p3.0-7");
  ASSERT_TRUE(store_->SetDeliveryCursor(kDataset, "out", 3, splitting).ok());
  auto second = NewSink();
  ASSERT_NO_FATAL_FAILURE(Start(Options({{"out", second}}, Batching(8, 20ms))));
  EXPECT_EQ(StatusOf("out").state(), wharf::v1::PAUSED);
  ASSERT_TRUE(pipeline_->SetPaused(kDataset, "out", false).ok());
  ASSERT_TRUE(WaitUntil([&] { return Cursor("out", 3).next_offset() == 8; }, 5s));
  EXPECT_EQ(second->offered(),
            (std::vector<std::string>{"orders.p3.0-7/0-3", "orders.p3.0-7/4-7"}));
  EXPECT_EQ(DeliveredOffsets(*second, 3), Range(0, 8));
  const auto cursor = Cursor("out", 3);
  EXPECT_TRUE(cursor.splitting_batch_id().empty());
  EXPECT_EQ(cursor.records_delivered(), 8u);
  EXPECT_EQ(cursor.records_rejected(), 0u);
  EXPECT_EQ(store_->QuarantineEntries(kDataset), 0u);
}

TEST_F(DeliveryTest, TransientErrorDuringASplitRetriesTheSplitNotTheBatch) {
  auto sink = NewSink();
  sink->Reject(0, {2});
  const std::string b = "orders.p0.0-7";
  sink->BlockWhen([b](const wharf::v1::StoredBatch& batch) {
    return batch.manifest().batch_id() == b + "/4-7";
  });
  ASSERT_NO_FATAL_FAILURE(Start(Options({{"out", sink}}, Batching(8, 20ms))));
  ASSERT_EQ(AppendJson(KeyFor(0), 8).size(), 8u);
  ASSERT_TRUE(WaitUntil([&] { return sink->waiting() == 1; }, 5s));
  sink->FailNext(2, absl::UnavailableError("connection reset"));
  sink->Release();
  ASSERT_TRUE(WaitUntil([&] { return Cursor("out", 0).next_offset() == 8; }, 5s));
  EXPECT_EQ(sink->attempts(b), 1);
  EXPECT_EQ(sink->failures(), 2);
  EXPECT_EQ(sink->duplicate_records(), 0);
  std::set<uint64_t> unique;
  for (uint64_t o : DeliveredOffsets(*sink, 0)) unique.insert(o);
  EXPECT_EQ(unique, (std::set<uint64_t>{0, 1, 3, 4, 5, 6, 7}));
  ASSERT_EQ(AllQuarantine().size(), 1u);
  EXPECT_EQ(AllQuarantine()[0].offset(), 2u);
  EXPECT_EQ(Cursor("out", 0).records_rejected(), 1u);
  ASSERT_TRUE(WaitUntil([&] { return StatusOf("out").records_delivered() == 7; }));
  EXPECT_EQ(StatusOf("out").delivery_failures(), 2u);
}

// A record a destination refuses again after a replay keeps its history.
TEST_F(DeliveryTest, RecordRefusedAgainAfterReplayCarriesItsAttemptsAndFirstError) {
  auto sink = NewSink();
  sink->RejectPayloads("\"seq\":0,");
  ASSERT_NO_FATAL_FAILURE(Start(Options({{"out", sink}}, Batching(1, 10ms))));
  ASSERT_EQ(AppendJson(KeyFor(0), 1).size(), 1u);
  ASSERT_TRUE(WaitUntil([&] { return store_->QuarantineEntries(kDataset) == 1; }, 5s));
  auto first = store_->GetQuarantine(kDataset, "0/0/out");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->attempts(), 1u);

  auto replayed = Replay({"0/0/out"});
  ASSERT_TRUE(replayed.ok()) << replayed.status();
  EXPECT_EQ(*replayed, 1u);
  ASSERT_TRUE(WaitUntil([&] { return Cursor("out", 0).next_offset() == 2; }, 5s));
  EXPECT_EQ(store_->GetQuarantine(kDataset, "0/0/out").status().code(),
            absl::StatusCode::kNotFound);
  auto second = store_->GetQuarantine(kDataset, "0/1/out");
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->reason(), wharf::v1::DESTINATION_REJECTED);
  EXPECT_TRUE(second->original().replayed());
  EXPECT_EQ(second->original().replay_offset(), 0u);
  EXPECT_EQ(second->attempts(), 2u);
  EXPECT_EQ(ToMicros(second->first_error_time()), ToMicros(first->first_error_time()));
  EXPECT_GE(ToMicros(second->quarantine_time()), ToMicros(first->quarantine_time()));
  EXPECT_EQ(sink->record_count(), 0u);
}

// Retry classification ----------------------------------------------------------------------------

class TransientErrorTest : public DeliveryTest,
                           public ::testing::WithParamInterface<absl::StatusCode> {};

TEST_P(TransientErrorTest, IsRetriedAndNeverQuarantines) {
  auto sink = NewSink();
  sink->FailNext(3, absl::Status(GetParam(), "not now"));
  ASSERT_NO_FATAL_FAILURE(Start(Options({{"out", sink}}, Batching(4, 20ms))));
  ASSERT_EQ(AppendJson(KeyFor(0), 4).size(), 4u);
  ASSERT_TRUE(WaitUntil([&] { return Cursor("out", 0).next_offset() == 4; }, 5s));
  EXPECT_EQ(sink->offered(), std::vector<std::string>(4, "orders.p0.0-3"));
  EXPECT_EQ(DeliveredOffsets(*sink, 0), Range(0, 4));
  EXPECT_EQ(store_->QuarantineEntries(kDataset), 0u);
  EXPECT_TRUE(AllQuarantine().empty());
  EXPECT_EQ(Cursor("out", 0).records_rejected(), 0u);
  EXPECT_TRUE(Cursor("out", 0).splitting_batch_id().empty());
}

INSTANTIATE_TEST_SUITE_P(Codes, TransientErrorTest,
                         ::testing::Values(absl::StatusCode::kUnavailable,
                                           absl::StatusCode::kFailedPrecondition,
                                           absl::StatusCode::kDeadlineExceeded,
                                           absl::StatusCode::kPermissionDenied,
                                           absl::StatusCode::kInternal),
                         [](const ::testing::TestParamInfo<absl::StatusCode>& info) {
                           return absl::StatusCodeToString(info.param);
                         });

// Circuit breaker ---------------------------------------------------------------------------------

TEST_F(DeliveryTest, CircuitOpensAfterDownAfterFailuresAndThenOnlyProbes) {
  auto sink = NewSink();
  PipelineOptions options = Options({{"out", sink}}, Batching(2, 10ms));
  options.metrics_registry = &registry_;
  options.retry.initial_backoff = 10ms;
  options.retry.multiplier = 1.0;
  options.retry.down_after = 3;
  options.retry.probe_interval = 300ms;
  constexpr int kFailures = 7;
  sink->FailNext(kFailures, absl::UnavailableError("down for maintenance"));
  ASSERT_NO_FATAL_FAILURE(Start(std::move(options)));
  ASSERT_EQ(AppendJson(KeyFor(0), 2).size(), 2u);
  const std::map<std::string, std::string> open = {{"destination", "out"}, {"state", "open"}};
  const std::map<std::string, std::string> healthy = {{"destination", "out"}, {"state", "healthy"}};
  ASSERT_TRUE(WaitUntil([&] { return StatusOf("out").state() == wharf::v1::OPEN; }, 5s));
  EXPECT_GE(StatusOf("out").consecutive_failures(), 3u);
  EXPECT_TRUE(StatusOf("out").has_next_attempt_time());
  EXPECT_EQ(MetricValue("wharf_destination_state", open), 1.0);
  EXPECT_EQ(MetricValue("wharf_destination_state", healthy), 0.0);

  ASSERT_TRUE(WaitUntil([&] { return sink->batch_count() == 1; }, 5s));
  const auto times = sink->call_times();
  ASSERT_EQ(times.size(), static_cast<size_t>(kFailures + 1));
  for (size_t i = 1; i < times.size(); ++i) {
    const int64_t gap = MillisBetween(times[i - 1], times[i]);
    if (i < 3) {
      EXPECT_LT(gap, 250) << "attempt " << i << " waited like a probe before the circuit opened";
    } else {
      EXPECT_GE(gap, 295) << "attempt " << i << " came before the probe interval";
      EXPECT_LT(gap, 1000) << "attempt " << i;
    }
  }
  // At most one attempt per probe interval while open: count them in a window.
  int in_window = 0;
  for (const auto& t : times) {
    if (t >= times[3] && t < times[3] + 900ms) ++in_window;
  }
  EXPECT_LE(in_window, 3);

  ASSERT_TRUE(WaitUntil([&] { return StatusOf("out").state() == wharf::v1::HEALTHY; }));
  const auto s = StatusOf("out");
  EXPECT_EQ(s.consecutive_failures(), 0u);
  EXPECT_EQ(s.delivery_failures(), static_cast<uint64_t>(kFailures));
  EXPECT_FALSE(s.has_next_attempt_time());
  EXPECT_EQ(MetricValue("wharf_destination_state", open), 0.0);
  EXPECT_EQ(MetricValue("wharf_destination_state", healthy), 1.0);
  EXPECT_EQ(MetricValue("wharf_delivery_failures_total", {{"destination", "out"}}),
            static_cast<double>(kFailures));
}

TEST_F(DeliveryTest, RetryAfterOfTheDestinationIsHonoured) {
  auto sink = NewSink();
  PipelineOptions options = Options({{"out", sink}}, Batching(2, 10ms));
  options.retry.initial_backoff = 10ms;
  sink->FailNext(2, absl::ResourceExhaustedError("429 too many requests"), 400ms);
  ASSERT_NO_FATAL_FAILURE(Start(std::move(options)));
  ASSERT_EQ(AppendJson(KeyFor(0), 2).size(), 2u);
  ASSERT_TRUE(WaitUntil([&] { return StatusOf("out").consecutive_failures() == 1; }, 5s));
  const auto s = StatusOf("out");
  EXPECT_EQ(s.state(), wharf::v1::RETRYING);
  ASSERT_TRUE(s.has_next_attempt_time());
  EXPECT_GE(ToMicros(s.next_attempt_time()) - ToMicros(SystemClock::now()), 200000);
  ASSERT_TRUE(WaitUntil([&] { return sink->batch_count() == 1; }, 5s));
  const auto times = sink->call_times();
  ASSERT_EQ(times.size(), 3u);
  EXPECT_GE(MillisBetween(times[0], times[1]), 398);
  EXPECT_GE(MillisBetween(times[1], times[2]), 398);
  EXPECT_LT(MillisBetween(times[0], times[2]), 3000);
}

TEST_F(DeliveryTest, ShorterRetryAfterDoesNotShortenTheBackoff) {
  auto sink = NewSink();
  PipelineOptions options = Options({{"out", sink}}, Batching(2, 10ms));
  options.retry.initial_backoff = 300ms;
  options.retry.max_backoff = 300ms;
  sink->FailNext(1, absl::UnavailableError("busy"), 20ms);
  ASSERT_NO_FATAL_FAILURE(Start(std::move(options)));
  ASSERT_EQ(AppendJson(KeyFor(0), 2).size(), 2u);
  ASSERT_TRUE(WaitUntil([&] { return sink->batch_count() == 1; }, 5s));
  const auto times = sink->call_times();
  ASSERT_EQ(times.size(), 2u);
  EXPECT_GE(MillisBetween(times[0], times[1]), 295);
}

// Pause and resume --------------------------------------------------------------------------------

TEST_F(DeliveryTest, PausedDestinationGetsNothingAndResumeDeliversTheBacklog) {
  auto paused = NewSink();
  auto other = NewSink();
  PipelineOptions options = Options({{"held", paused}, {"other", other}}, Batching(5, 10ms));
  options.metrics_registry = &registry_;
  ASSERT_NO_FATAL_FAILURE(Start(std::move(options)));
  ASSERT_TRUE(pipeline_->SetPaused(kDataset, "held", true).ok());
  EXPECT_EQ(StatusOf("held").state(), wharf::v1::PAUSED);
  EXPECT_EQ(MetricValue("wharf_destination_state", {{"destination", "held"}, {"state", "paused"}}),
            1.0);
  const std::string key = KeyFor(1);
  ASSERT_EQ(AppendJson(key, 10).size(), 10u);
  ASSERT_TRUE(WaitUntil([&] { return other->record_count() == 10; }, 5s));
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(paused->calls(), 0);
  const auto s = StatusOf("held");
  EXPECT_EQ(s.state(), wharf::v1::PAUSED);
  EXPECT_EQ(s.backlog_records(), 10u);
  EXPECT_EQ(s.records_delivered(), 0u);

  // Pausing twice is harmless; resuming delivers the backlog in order.
  ASSERT_TRUE(pipeline_->SetPaused(kDataset, "held", true).ok());
  ASSERT_TRUE(pipeline_->SetPaused(kDataset, "held", false).ok());
  ASSERT_TRUE(WaitUntil([&] { return paused->record_count() == 10; }, 5s));
  EXPECT_TRUE(CoverContiguously(BatchesOf(paused->delivered(), 1), 0, 10));
  ASSERT_TRUE(WaitUntil([&] { return StatusOf("held").records_delivered() == 10; }));
  EXPECT_EQ(StatusOf("held").state(), wharf::v1::HEALTHY);
  EXPECT_EQ(MetricValue("wharf_destination_state", {{"destination", "held"}, {"state", "paused"}}),
            0.0);

  // Unknown names are NOT_FOUND, also a dataset the store has but the pipeline does not run.
  EXPECT_EQ(pipeline_->SetPaused("nope", "held", true).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(pipeline_->SetPaused(kDataset, "nope", true).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(pipeline_->SetPaused("events", "held", true).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(pipeline_->SetPaused("", "", false).code(), absl::StatusCode::kNotFound);
}

TEST_F(DeliveryTest, PauseSurvivesARestartAndEndsABackoffWhenResumed) {
  auto sink = NewSink();
  PipelineOptions options = Options({{"out", sink}}, Batching(5, 10ms));
  ASSERT_NO_FATAL_FAILURE(Start(std::move(options)));
  ASSERT_TRUE(pipeline_->SetPaused(kDataset, "out", true).ok());
  Shutdown();

  auto second = NewSink();
  options = Options({{"out", second}}, Batching(5, 10ms));
  options.retry.initial_backoff = 20s;  // only a resume can end this backoff within the test
  options.retry.max_backoff = 20s;
  ASSERT_NO_FATAL_FAILURE(Start(std::move(options)));
  EXPECT_EQ(StatusOf("out").state(), wharf::v1::PAUSED);
  ASSERT_EQ(AppendJson(KeyFor(2), 5).size(), 5u);
  ASSERT_TRUE(WaitUntil([&] { return ValidatedOffset(2) == 5; }, 5s));
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(second->calls(), 0);

  second->FailNext(1, absl::UnavailableError("still down"));
  ASSERT_TRUE(pipeline_->SetPaused(kDataset, "out", false).ok());
  ASSERT_TRUE(WaitUntil([&] { return second->failures() == 1; }, 5s));
  ASSERT_TRUE(WaitUntil([&] { return StatusOf("out").state() == wharf::v1::RETRYING; }, 5s));
  // Paused during the backoff, the state says so; resumed, it tries at once.
  ASSERT_TRUE(pipeline_->SetPaused(kDataset, "out", true).ok());
  EXPECT_EQ(StatusOf("out").state(), wharf::v1::PAUSED);
  ASSERT_TRUE(pipeline_->SetPaused(kDataset, "out", false).ok());
  ASSERT_TRUE(WaitUntil([&] { return second->record_count() == 5; }, 5s));
  EXPECT_EQ(second->calls(), 2);
  ASSERT_TRUE(WaitUntil([&] { return StatusOf("out").state() == wharf::v1::HEALTHY; }));
}

// Isolation and ticks -----------------------------------------------------------------------------

TEST_F(DeliveryTest, DestinationFailingForeverDoesNotDelayTheOther) {
  auto dead = NewSink();
  auto fine = NewSink();
  dead->FailNext(kUnlimited, absl::UnavailableError("connection refused"));
  ASSERT_NO_FATAL_FAILURE(Start(Options({{"dead", dead}, {"fine", fine}}, Batching(10, 10ms))));
  uint64_t total = 0;
  for (uint32_t p = 0; p < partitions_; ++p) total += AppendJson(KeyFor(p), 25).size();
  const auto t0 = SteadyClock::now();
  ASSERT_TRUE(WaitUntil([&] { return fine->record_count() == total; }, 5s));
  EXPECT_LT(SteadyClock::now() - t0, 2s);
  for (uint32_t p = 0; p < partitions_; ++p) {
    EXPECT_TRUE(CoverContiguously(BatchesOf(fine->delivered(), p), 0, 25));
  }
  EXPECT_GT(dead->failures(), 0);
  EXPECT_EQ(dead->batch_count(), 0u);
  const auto s = StatusOf("dead");
  EXPECT_TRUE(s.state() == wharf::v1::RETRYING || s.state() == wharf::v1::OPEN) << s.state();
  EXPECT_EQ(s.backlog_records(), total);
  EXPECT_EQ(store_->QuarantineEntries(kDataset), 0u);
}

TEST_F(DeliveryTest, TickIsCalledAboutOnceASecondWhileIdleAndWhileTheCircuitIsOpen) {
  auto sink = NewSink();
  PipelineOptions options = Options({{"out", sink}}, Batching(2, 10ms));
  options.retry.down_after = 1;
  options.retry.probe_interval = 20s;  // far longer than the test: ticks must not wait for it
  ASSERT_NO_FATAL_FAILURE(Start(std::move(options)));
  std::this_thread::sleep_for(2300ms);
  auto ticks = sink->tick_times();
  EXPECT_GE(ticks.size(), 2u);
  EXPECT_LE(ticks.size(), 4u);
  for (size_t i = 1; i < ticks.size(); ++i) {
    EXPECT_GE(MillisBetween(ticks[i - 1], ticks[i]), 900);
    EXPECT_LE(MillisBetween(ticks[i - 1], ticks[i]), 1600);
  }

  sink->FailNext(kUnlimited, absl::UnavailableError("gone"));
  ASSERT_EQ(AppendJson(KeyFor(0), 2).size(), 2u);
  ASSERT_TRUE(WaitUntil([&] { return StatusOf("out").state() == wharf::v1::OPEN; }, 5s));
  const size_t before = sink->tick_times().size();
  std::this_thread::sleep_for(2300ms);
  ticks = sink->tick_times();
  EXPECT_GE(ticks.size() - before, 2u) << "no Tick() while waiting for the next probe";
  EXPECT_EQ(sink->calls(), 1);
  for (size_t i = 1; i < ticks.size(); ++i) {
    EXPECT_GE(MillisBetween(ticks[i - 1], ticks[i]), 900);
  }
}

// Processors --------------------------------------------------------------------------------------

// Delivers "v<version>:" + payload, with the version as schema and transform version; records
// whose payload contains "drop" are filtered, those containing "bad" quarantined.
class VersionedProcessor final : public RecordProcessor {
 public:
  explicit VersionedProcessor(uint32_t version) : version_(version) {}
  ProcessResult ProcessRecord(const RecordContext& context, const wharf::v1::StoredRecord& record,
                              std::string* payload_out,
                              wharf::v1::QuarantineEntry* quarantine) const override {
    EXPECT_EQ(context.dataset, kDataset);
    if (record.record().payload().find("drop") != std::string::npos) return ProcessResult::kFilter;
    return Process(record, payload_out, quarantine) ? ProcessResult::kDeliver
                                                    : ProcessResult::kQuarantine;
  }
  bool Process(const wharf::v1::StoredRecord& record, std::string* payload_out,
               wharf::v1::QuarantineEntry* quarantine) const override {
    if (record.record().payload().find("bad") != std::string::npos) {
      quarantine->set_reason(wharf::v1::RULE_VIOLATION);
      quarantine->set_message("bad record");
      return false;
    }
    *payload_out = absl::StrCat("v", version_, ":", record.record().payload());
    return true;
  }
  uint32_t schema_version() const override { return version_; }
  uint32_t transform_version() const override { return version_ * 10; }

 private:
  const uint32_t version_;
};

TEST_F(DeliveryTest, ProcessorSwapMidStreamAppliesToLaterBatchesWithoutLossOrReorder) {
  auto sink = NewSink();
  PipelineOptions options = Options({{"out", sink}}, Batching(5, 5ms));
  options.datasets[0].processor = std::make_shared<VersionedProcessor>(1);
  ASSERT_NO_FATAL_FAILURE(Start(std::move(options)));
  const std::string key = KeyFor(0);
  std::atomic<int> appended{0};
  std::thread producer([&] {
    for (int i = 0; i < 40; ++i) {
      if (AppendJson(key, 3, i * 3).size() != 3u) return;
      appended += 3;
      std::this_thread::sleep_for(5ms);
    }
  });
  ASSERT_TRUE(WaitUntil([&] { return appended.load() >= 60; }, 5s));
  ASSERT_TRUE(pipeline_->SetProcessor(kDataset, std::make_shared<VersionedProcessor>(2)).ok());
  EXPECT_EQ(pipeline_->GetProcessor(kDataset)->schema_version(), 2u);
  producer.join();
  ASSERT_EQ(appended.load(), 120);
  ASSERT_TRUE(WaitUntil([&] { return sink->record_count() == 120; }, 5s));

  const auto batches = BatchesOf(sink->delivered(), 0);
  EXPECT_TRUE(CoverContiguously(batches, 0, 120));
  uint32_t last_version = 0;
  std::set<uint32_t> versions;
  for (const auto& b : batches) {
    const uint32_t v = b.manifest().schema_version();
    versions.insert(v);
    EXPECT_GE(v, last_version) << "batch " << b.manifest().batch_id() << " went back to v" << v;
    last_version = v;
    EXPECT_EQ(b.manifest().transform_version(), v * 10);
    for (const auto& r : b.records()) {
      EXPECT_EQ(r.payload().rfind(absl::StrCat("v", v, ":"), 0), 0u) << r.payload();
    }
  }
  EXPECT_EQ(versions, (std::set<uint32_t>{1, 2}));

  EXPECT_EQ(pipeline_->SetProcessor("nope", std::make_shared<VersionedProcessor>(3)).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(pipeline_->SetProcessor(kDataset, nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pipeline_->GetProcessor(kDataset)->schema_version(), 2u);
  EXPECT_EQ(pipeline_->GetProcessor("nope"), nullptr);
}

TEST_F(DeliveryTest, FilteredRecordsAreNeitherDeliveredNorQuarantinedAndTheCursorMovesPast) {
  auto sink = NewSink();
  PipelineOptions options = Options({{"out", sink}}, Batching(6, 10ms));
  options.metrics_registry = &registry_;
  options.datasets[0].processor = std::make_shared<VersionedProcessor>(1);
  ASSERT_NO_FATAL_FAILURE(Start(std::move(options)));
  const std::string key = KeyFor(3);
  auto records = [&](const std::vector<std::string>& payloads) {
    std::vector<wharf::v1::Record> out;
    for (const auto& p : payloads) out.push_back(MakeRecord(key, p));
    return out;
  };
  // Offsets 0-5: a filtered record in the middle and one at the end, one quarantined.
  ASSERT_TRUE(AppendRecords(records({"a", "b", "drop", "bad", "c", "drop"})).status.ok());
  ASSERT_TRUE(WaitUntil([&] { return Cursor("out", 3).next_offset() == 6; }, 5s));
  // Offsets 6-9: a range of nothing but filtered records.
  ASSERT_TRUE(AppendRecords(records({"drop", "drop", "drop", "drop"})).status.ok());
  ASSERT_TRUE(WaitUntil([&] { return ValidatedOffset(3) == 10; }, 5s));
  ASSERT_TRUE(WaitUntil([&] { return Cursor("out", 3).next_offset() == 10; }, 5s));
  EXPECT_EQ(StatusOf("out").backlog_records(), 0u);
  // Offsets 10-11: delivery goes on right after the filtered range.
  ASSERT_TRUE(AppendRecords(records({"d", "e"})).status.ok());
  ASSERT_TRUE(WaitUntil([&] { return Cursor("out", 3).next_offset() == 12; }, 5s));

  const auto batches = BatchesOf(sink->delivered(), 3);
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_EQ(batches[0].manifest().batch_id(), "orders.p3.0-5");
  EXPECT_EQ(RecordOffsets(batches[0]), (std::vector<uint64_t>{0, 1, 4}));
  EXPECT_EQ(batches[0].manifest().record_count(), 3u);
  EXPECT_EQ(batches[0].manifest().quarantined_count(), 1u);
  EXPECT_EQ(batches[1].manifest().batch_id(), "orders.p3.10-11");
  EXPECT_EQ(RecordOffsets(batches[1]), (std::vector<uint64_t>{10, 11}));
  const auto entries = AllQuarantine();
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].offset(), 3u);
  EXPECT_EQ(entries[0].reason(), wharf::v1::RULE_VIOLATION);
  EXPECT_EQ(entries[0].schema_version(), 1u);
  EXPECT_EQ(MetricValue("wharf_records_filtered_total", {{"dataset", kDataset}}), 6.0);
  const auto counters = store_->GetPartitionCounters(kDataset, 3);
  EXPECT_EQ(counters.validation.records_committed(), 5u);
  EXPECT_EQ(counters.validation.records_quarantined(), 1u);
  EXPECT_EQ(counters.validation.batches_committed(), 2u);
  EXPECT_EQ(Cursor("out", 3).records_delivered(), 5u);
  EXPECT_EQ(Cursor("out", 3).batches_delivered(), 2u);
}

// Quarantine quota and retention ------------------------------------------------------------------

TEST_F(DeliveryTest, ValidationHoldsAtTheQuarantineQuotaAndResumesAfterADiscard) {
  auto sink = NewSink();
  PipelineOptions options = Options({{"out", sink}}, Batching(4, 10ms));
  options.datasets[0].quarantine_quota_bytes = 1;  // one entry fills it
  ASSERT_NO_FATAL_FAILURE(Start(std::move(options)));
  const std::string key = KeyFor(0);
  ASSERT_TRUE(AppendRecords({MakeRecord(key, R"({"a":1})"), MakeRecord(key, "not json"),
                             MakeRecord(key, R"({"a":2})"), MakeRecord(key, R"({"a":3})")})
                  .status.ok());
  ASSERT_TRUE(WaitUntil([&] { return sink->record_count() == 3; }, 5s));
  EXPECT_EQ(store_->QuarantineEntries(kDataset), 1u);
  ASSERT_EQ(AppendJson(key, 8, 10).size(), 8u);
  std::this_thread::sleep_for(1500ms);  // more than the pipeline's re-check interval
  EXPECT_EQ(ValidatedOffset(0), 4u) << "validation went on past the quarantine quota";
  EXPECT_EQ(sink->record_count(), 3u);
  EXPECT_EQ(ReadAllRaw(0).size(), 12u);  // nothing lost meanwhile
  EXPECT_EQ(StatusOf("out").backlog_records(), 8u);

  auto discarded = store_->DiscardQuarantine(kDataset, {"0/1"});
  ASSERT_TRUE(discarded.ok()) << discarded.status();
  EXPECT_EQ(*discarded, 1u);
  ASSERT_TRUE(WaitUntil([&] { return sink->record_count() == 11; }, 5s));
  EXPECT_EQ(ValidatedOffset(0), 12u);
  EXPECT_EQ(DeliveredOffsets(*sink, 0), Range(0, 12, {1}));
}

TEST_F(DeliveryTest, QuarantineRetentionExpiresOnlyOldEntries) {
  auto sink = NewSink();
  PipelineOptions options = Options({{"out", sink}}, Batching(2, 10ms));
  options.metrics_registry = &registry_;
  options.datasets[0].quarantine_retention = 700ms;
  sink->Reject(1, {2});
  ASSERT_NO_FATAL_FAILURE(Start(std::move(options)));
  const std::string key = KeyFor(1);
  ASSERT_TRUE(AppendRecords({MakeRecord(key, "bad one"), MakeRecord(key, "bad two")}).status.ok());
  ASSERT_EQ(AppendJson(key, 2).size(), 2u);  // offset 2 refused by the destination
  ASSERT_TRUE(WaitUntil([&] { return store_->QuarantineEntries(kDataset) == 3; }, 5s));
  pipeline_->RunRetentionNow();
  EXPECT_EQ(store_->QuarantineEntries(kDataset), 3u);
  EXPECT_EQ(MetricValue("wharf_quarantine_expired_total", {{"dataset", kDataset}}), 0.0);

  std::this_thread::sleep_for(800ms);
  ASSERT_TRUE(AppendRecords({MakeRecord(key, "bad three")}).status.ok());
  ASSERT_TRUE(WaitUntil([&] { return store_->QuarantineEntries(kDataset) == 4; }, 5s));
  pipeline_->RunRetentionNow();
  const auto left = AllQuarantine();
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0].offset(), 4u);
  EXPECT_EQ(store_->QuarantineEntries(kDataset), 1u);
  EXPECT_EQ(MetricValue("wharf_quarantine_expired_total", {{"dataset", kDataset}}), 3.0);
  EXPECT_EQ(MetricValue("wharf_quarantine_entries", {{"dataset", kDataset}}), 1.0);
  EXPECT_EQ(MetricValue("wharf_quarantine_bytes", {{"dataset", kDataset}}),
            static_cast<double>(store_->QuarantineBytes(kDataset)));
}

}  // namespace
}  // namespace wharf::pipeline
