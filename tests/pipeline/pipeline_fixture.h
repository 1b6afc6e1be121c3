// Shared fixtures of the pipeline tests: a scriptable fake destination (FakeSink behind
// FakeDestination) and PipelineTest, which wires a staging store and a Pipeline like wharfd does.
#pragma once

#include <stdlib.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
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
#include "google/protobuf/util/time_util.h"
#include "gtest/gtest.h"
#include "pipeline/destination.h"
#include "pipeline/pipeline.h"
#include "pipeline/record_processor.h"
#include "prometheus/client_metric.h"
#include "prometheus/metric_family.h"
#include "prometheus/registry.h"
#include "storage/staging_store.h"
#include "wharf/v1/control.pb.h"
#include "wharf/v1/ingest.pb.h"
#include "wharf/v1/record.pb.h"

namespace wharf::pipeline::pipeline_testing {

using namespace std::chrono_literals;
using google::protobuf::util::TimeUtil;
using SteadyClock = std::chrono::steady_clock;
using SystemClock = std::chrono::system_clock;

inline constexpr char kDataset[] = "orders";

inline int64_t ToMicros(SystemClock::time_point t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

inline int64_t ToMicros(const google::protobuf::Timestamp& t) {
  return TimeUtil::TimestampToMicroseconds(t);
}

// Polls `pred` until it holds or `timeout` passes; returns its last value.
template <typename Pred>
bool WaitUntil(Pred pred, std::chrono::milliseconds timeout = 10s) {
  const auto deadline = SteadyClock::now() + timeout;
  while (!pred()) {
    if (SteadyClock::now() >= deadline) return pred();
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

// One successful delivery as the fake destination saw it.
struct Delivery {
  wharf::v1::StoredBatch batch;
  SteadyClock::time_point steady_time;
  SystemClock::time_point system_time;
};

// The state behind a fake destination, shared by the test and the Destination the pipeline owns.
// Records delivered batches, counts calls and attempts per batch id, and can fail the next N
// deliveries (optionally asking for a retry delay), refuse every (sub-)batch holding given
// offsets with INVALID_ARGUMENT, block every delivery (or the first one matching a predicate)
// until released, or slow each one down. Like an exactly-once destination it keeps a ledger of
// accepted batch ids: a batch id accepted before is reported as already delivered, and a record
// accepted under two different batch ids is counted as a duplicate.
// Thread safety: every method may be called from any thread.
class FakeSink {
 public:
  absl::Status Deliver(const wharf::v1::StoredBatch& batch, DeliveryReport* report = nullptr) {
    std::unique_lock<std::mutex> lock(mu_);
    ++calls_;
    const std::string& id = batch.manifest().batch_id();
    ++attempts_[id];
    offered_.push_back(id);
    call_times_.push_back(SteadyClock::now());
    if (block_when_ && block_when_(batch)) {
      block_when_ = nullptr;
      blocked_ = true;
    }
    if (blocked_) {
      ++waiting_;
      cv_.notify_all();
      cv_.wait(lock, [&] { return !blocked_; });
      --waiting_;
    }
    if (delay_ > 0ms) {
      // Concurrency seen while the delivery is "in progress": across partitions and within one.
      const uint32_t partition = batch.manifest().partition();
      max_in_flight_ = std::max(max_in_flight_, ++in_flight_);
      max_in_flight_same_partition_ =
          std::max(max_in_flight_same_partition_, ++in_flight_by_partition_[partition]);
      const auto delay = delay_;
      lock.unlock();
      std::this_thread::sleep_for(delay);
      lock.lock();
      --in_flight_;
      --in_flight_by_partition_[partition];
    }
    if (fail_next_ > 0) {
      --fail_next_;
      ++failures_;
      if (report != nullptr) report->retry_after = retry_after_;
      return fail_status_;
    }
    for (const auto& r : batch.records()) {
      if (poison_.count({batch.manifest().partition(), r.offset()}) != 0 ||
          (!poison_payload_.empty() && r.payload().find(poison_payload_) != std::string::npos)) {
        ++rejections_;
        return absl::InvalidArgumentError(
            absl::StrCat(reject_message_, " (offset ", r.offset(), ")"));
      }
    }
    if (!accepted_ids_.insert(id).second) {
      ++redeliveries_;
      if (report != nullptr) report->already_delivered = true;
    } else {
      for (const auto& r : batch.records()) {
        auto [it, added] =
            accepted_by_.emplace(std::make_pair(batch.manifest().partition(), r.offset()), id);
        if (!added && it->second != id) ++duplicate_records_;
      }
    }
    delivered_.push_back({batch, SteadyClock::now(), SystemClock::now()});
    return absl::OkStatus();
  }

  absl::Status Tick() {
    std::lock_guard<std::mutex> lock(mu_);
    tick_times_.push_back(SteadyClock::now());
    return absl::OkStatus();
  }

  void FailNext(uint32_t n, absl::Status status,
                std::chrono::milliseconds retry_after = std::chrono::milliseconds(0)) {
    std::lock_guard<std::mutex> lock(mu_);
    fail_next_ = n;
    fail_status_ = std::move(status);
    retry_after_ = retry_after;
  }
  // Refuses (INVALID_ARGUMENT, with `message`) every batch holding one of these offsets of
  // `partition`.
  void Reject(uint32_t partition, const std::set<uint64_t>& offsets,
              std::string message = "value violates a constraint") {
    std::lock_guard<std::mutex> lock(mu_);
    for (uint64_t o : offsets) poison_.insert({partition, o});
    reject_message_ = std::move(message);
  }
  // Refuses every batch holding a record whose payload contains `needle` (wherever a replay
  // puts it).
  void RejectPayloads(std::string needle, std::string message = "value violates a constraint") {
    std::lock_guard<std::mutex> lock(mu_);
    poison_payload_ = std::move(needle);
    reject_message_ = std::move(message);
  }
  void Block() {
    std::lock_guard<std::mutex> lock(mu_);
    blocked_ = true;
  }
  // Blocks (until Release()) the first delivery for which `pred` holds.
  void BlockWhen(std::function<bool(const wharf::v1::StoredBatch&)> pred) {
    std::lock_guard<std::mutex> lock(mu_);
    block_when_ = std::move(pred);
  }
  void Release() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      blocked_ = false;
    }
    cv_.notify_all();
  }
  void SetDelay(std::chrono::milliseconds delay) {
    std::lock_guard<std::mutex> lock(mu_);
    delay_ = delay;
  }

  int calls() const {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }
  // Most Deliver() calls in their delay at once, overall and for one partition (SetDelay only).
  int max_in_flight() const {
    std::lock_guard<std::mutex> lock(mu_);
    return max_in_flight_;
  }
  int max_in_flight_same_partition() const {
    std::lock_guard<std::mutex> lock(mu_);
    return max_in_flight_same_partition_;
  }
  int failures() const {
    std::lock_guard<std::mutex> lock(mu_);
    return failures_;
  }
  int rejections() const {
    std::lock_guard<std::mutex> lock(mu_);
    return rejections_;
  }
  int waiting() const {
    std::lock_guard<std::mutex> lock(mu_);
    return waiting_;
  }
  int redeliveries() const {
    std::lock_guard<std::mutex> lock(mu_);
    return redeliveries_;
  }
  int duplicate_records() const {
    std::lock_guard<std::mutex> lock(mu_);
    return duplicate_records_;
  }
  int attempts(const std::string& batch_id) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = attempts_.find(batch_id);
    return it == attempts_.end() ? 0 : it->second;
  }
  // Batch ids of every call, in call order.
  std::vector<std::string> offered() const {
    std::lock_guard<std::mutex> lock(mu_);
    return offered_;
  }
  std::vector<SteadyClock::time_point> call_times() const {
    std::lock_guard<std::mutex> lock(mu_);
    return call_times_;
  }
  std::vector<SteadyClock::time_point> tick_times() const {
    std::lock_guard<std::mutex> lock(mu_);
    return tick_times_;
  }
  std::vector<Delivery> delivered() const {
    std::lock_guard<std::mutex> lock(mu_);
    return delivered_;
  }
  size_t batch_count() const {
    std::lock_guard<std::mutex> lock(mu_);
    return delivered_.size();
  }
  uint64_t record_count() const {
    std::lock_guard<std::mutex> lock(mu_);
    uint64_t n = 0;
    for (const auto& d : delivered_) n += d.batch.records_size();
    return n;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Delivery> delivered_;
  std::map<std::string, int> attempts_;
  std::vector<std::string> offered_;
  std::vector<SteadyClock::time_point> call_times_;
  std::vector<SteadyClock::time_point> tick_times_;
  std::set<std::string> accepted_ids_;
  std::map<std::pair<uint32_t, uint64_t>, std::string> accepted_by_;
  std::set<std::pair<uint32_t, uint64_t>> poison_;
  std::string poison_payload_;
  std::string reject_message_;
  int calls_ = 0;
  int in_flight_ = 0;
  int max_in_flight_ = 0;
  std::map<uint32_t, int> in_flight_by_partition_;
  int max_in_flight_same_partition_ = 0;
  int failures_ = 0;
  int rejections_ = 0;
  int waiting_ = 0;
  int redeliveries_ = 0;
  int duplicate_records_ = 0;
  uint32_t fail_next_ = 0;
  absl::Status fail_status_;
  std::chrono::milliseconds retry_after_{0};
  bool blocked_ = false;
  std::function<bool(const wharf::v1::StoredBatch&)> block_when_;
  std::chrono::milliseconds delay_{0};
};

class FakeDestination final : public Destination {
 public:
  explicit FakeDestination(std::shared_ptr<FakeSink> sink) : sink_(std::move(sink)) {}
  std::string_view type() const override { return "fake"; }
  absl::Status Deliver(const wharf::v1::StoredBatch& batch, DeliveryReport* report) override {
    return sink_->Deliver(batch, report);
  }
  absl::Status Tick() override { return sink_->Tick(); }

 private:
  std::shared_ptr<FakeSink> sink_;
};

// Offsets of the records of a batch.
inline std::vector<uint64_t> RecordOffsets(const wharf::v1::StoredBatch& batch) {
  std::vector<uint64_t> out;
  for (const auto& r : batch.records()) out.push_back(r.offset());
  return out;
}

// Batches of one partition, in delivery order.
inline std::vector<wharf::v1::StoredBatch> BatchesOf(const std::vector<Delivery>& deliveries,
                                                     uint32_t partition) {
  std::vector<wharf::v1::StoredBatch> out;
  for (const auto& d : deliveries) {
    if (d.batch.manifest().partition() == partition) out.push_back(d.batch);
  }
  return out;
}

// Checks that `batches` (one partition, delivery order) cover [from, to) exactly: each starts
// where the previous ended, no gaps, no overlaps, and (no quarantine) every offset is a record.
inline ::testing::AssertionResult CoverContiguously(
    const std::vector<wharf::v1::StoredBatch>& batches, uint64_t from, uint64_t to) {
  uint64_t next = from;
  for (const auto& b : batches) {
    const auto& m = b.manifest();
    if (m.first_offset() != next) {
      return ::testing::AssertionFailure() << "batch " << m.batch_id() << " starts at "
                                           << m.first_offset() << ", expected " << next;
    }
    if (m.last_offset() < m.first_offset()) {
      return ::testing::AssertionFailure() << "batch " << m.batch_id() << " ends before it starts";
    }
    std::vector<uint64_t> expected;
    for (uint64_t o = m.first_offset(); o <= m.last_offset(); ++o) expected.push_back(o);
    if (RecordOffsets(b) != expected) {
      return ::testing::AssertionFailure()
             << "batch " << m.batch_id() << " does not hold every offset of its range";
    }
    next = m.last_offset() + 1;
  }
  if (next != to) {
    return ::testing::AssertionFailure() << "batches end at " << next << ", expected " << to;
  }
  return ::testing::AssertionSuccess();
}

class PipelineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/wharf_pipeline_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr) << std::strerror(errno);
    dir_ = tmpl;
  }

  void TearDown() override {
    Shutdown();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  // Opens the store: dataset "orders" with partitions_ partitions and "events" with one.
  void OpenStore() {
    storage::StoreOptions so;
    so.path = dir_ + "/store";
    so.durability = storage::Durability::kAsync;  // batch commits are synced regardless
    so.min_free_bytes = 0;
    so.datasets = {{kDataset, partitions_, 0}, {"events", 1, 0}};
    auto store = storage::StagingStore::Open(std::move(so));
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
  }

  std::shared_ptr<FakeSink> NewSink() {
    auto sink = std::make_shared<FakeSink>();
    sinks_.push_back(sink);
    return sink;
  }

  // Pipeline options for "orders" (JSON) delivering to `sinks` by name. Short backoff, no jitter,
  // retention only when the test runs it.
  PipelineOptions Options(
      const std::vector<std::pair<std::string, std::shared_ptr<FakeSink>>>& sinks,
      BatchingOptions batching) {
    PipelineOptions po;
    po.threads = 2;
    po.batching = batching;
    po.retry.initial_backoff = 10ms;
    po.retry.max_backoff = 100ms;
    po.retry.probe_interval = 100ms;
    po.retry.jitter = 0;
    po.retention.interval = std::chrono::hours(1);
    DatasetPipelineOptions d;
    d.name = kDataset;
    d.processor = NewJsonParseProcessor();
    for (const auto& [name, sink] : sinks) {
      d.destinations.push_back({name, std::make_unique<FakeDestination>(sink), std::nullopt});
    }
    po.datasets.push_back(std::move(d));
    return po;
  }

  static BatchingOptions Batching(uint32_t max_records, std::chrono::milliseconds linger,
                                  uint64_t max_bytes = 4ull << 20) {
    BatchingOptions b;
    b.max_records = max_records;
    b.max_bytes = max_bytes;
    b.linger = linger;
    return b;
  }

  // Creates the pipeline over the store and starts both, wired like wharfd does it.
  void Start(PipelineOptions options) {
    if (store_ == nullptr) {
      ASSERT_NO_FATAL_FAILURE(OpenStore());
    }
    auto pipeline = Pipeline::Create(store_.get(), std::move(options));
    ASSERT_TRUE(pipeline.ok()) << pipeline.status();
    pipeline_ = std::move(*pipeline);
    Pipeline* p = pipeline_.get();
    store_->SetAppendListener([p](const std::string& ds, uint32_t partition, uint64_t next) {
      p->OnAppend(ds, partition, next);
    });
    ASSERT_TRUE(store_->Start().ok());
    ASSERT_TRUE(pipeline_->Start().ok());
  }

  // Stops like wharfd: the store first (no more appends), then the pipeline; then closes both.
  void Shutdown() {
    for (auto& sink : sinks_) sink->Release();
    if (store_ != nullptr) store_->Stop();
    if (pipeline_ != nullptr) pipeline_->Stop();
    pipeline_.reset();
    store_.reset();
  }

  // A key whose records land in `partition` of "orders".
  std::string KeyFor(uint32_t partition) const {
    for (int i = 0;; ++i) {
      std::string key = absl::StrCat("key-", i);
      if (storage::PartitionForKey(key, partitions_) == partition) return key;
    }
  }

  static wharf::v1::Record MakeRecord(const std::string& key, const std::string& payload) {
    wharf::v1::Record r;
    r.set_key(key);
    r.set_payload(payload);
    return r;
  }

  // Appends through the store and waits for the durable answer.
  storage::AppendResult AppendRecords(const std::vector<wharf::v1::Record>& records,
                                      const std::string& dataset = kDataset) {
    wharf::v1::ProduceRequest req;
    req.set_dataset(dataset);
    for (const auto& r : records) *req.add_records() = r;
    auto done = std::make_shared<std::promise<storage::AppendResult>>();
    auto result = done->get_future();
    store_->Append(std::move(req),
                   [done](storage::AppendResult r) { done->set_value(std::move(r)); });
    if (result.wait_for(10s) != std::future_status::ready) {
      storage::AppendResult timeout;
      timeout.status = absl::DeadlineExceededError("append not answered within 10 s");
      return timeout;
    }
    return result.get();
  }

  // Appends `n` JSON records with `key`, numbered from `first_seq`; returns their offsets.
  std::vector<uint64_t> AppendJson(const std::string& key, int n, int first_seq = 0,
                                   size_t pad = 0) {
    std::vector<wharf::v1::Record> records;
    for (int i = 0; i < n; ++i) {
      records.push_back(
          MakeRecord(key, absl::StrCat("{\"key\":\"", key, "\",\"seq\":", first_seq + i,
                                       ",\"pad\":\"", std::string(pad, 'x'), "\"}")));
    }
    storage::AppendResult r = AppendRecords(records);
    EXPECT_TRUE(r.status.ok()) << r.status;
    std::vector<uint64_t> offsets;
    for (const auto& ack : r.acks) offsets.push_back(ack.offset());
    return offsets;
  }

  uint64_t ValidatedOffset(uint32_t partition) const {
    return store_->GetPartitionCounters(kDataset, partition).validation.next_offset();
  }
  uint64_t IngestedOffset(uint32_t partition) const {
    return store_->GetPartitionCounters(kDataset, partition).ingest.next_offset();
  }

  // Status of the destination called `name` of "orders".
  wharf::v1::DestinationStatus StatusOf(const std::string& name) const {
    for (auto& s : pipeline_->DestinationStatuses(kDataset)) {
      if (s.name() == name) return s;
    }
    ADD_FAILURE() << "no status for destination " << name;
    return {};
  }

  std::vector<storage::RawRecord> ReadAllRaw(uint32_t partition) const {
    std::vector<storage::RawRecord> raw;
    EXPECT_TRUE(
        store_->ReadRaw(kDataset, partition, 0, UINT64_MAX, 1 << 20, UINT64_MAX, &raw).ok());
    return raw;
  }
  std::vector<wharf::v1::StoredBatch> ReadAllBatches(uint32_t partition) const {
    std::vector<wharf::v1::StoredBatch> batches;
    EXPECT_TRUE(store_->ReadBatches(kDataset, partition, 0, 1 << 20, &batches).ok());
    return batches;
  }

  // Sum of the counters (gauge values, histogram sample counts) named `name` whose labels include
  // `labels`.
  double MetricValue(const std::string& name,
                     const std::map<std::string, std::string>& labels) const {
    double total = 0;
    for (const prometheus::MetricFamily& family : registry_.Collect()) {
      if (family.name != name) continue;
      for (const prometheus::ClientMetric& metric : family.metric) {
        size_t matched = 0;
        for (const auto& label : metric.label) {
          auto it = labels.find(label.name);
          if (it != labels.end() && it->second == label.value) ++matched;
        }
        if (matched != labels.size()) continue;
        if (family.type == prometheus::MetricType::Histogram) {
          total += static_cast<double>(metric.histogram.sample_count);
        } else if (family.type == prometheus::MetricType::Gauge) {
          total += metric.gauge.value;
        } else {
          total += metric.counter.value;
        }
      }
    }
    return total;
  }

  std::string dir_;
  uint32_t partitions_ = 4;
  prometheus::Registry registry_;  // outlives the pipeline
  std::unique_ptr<storage::StagingStore> store_;
  std::unique_ptr<Pipeline> pipeline_;
  std::vector<std::shared_ptr<FakeSink>> sinks_;
};

}  // namespace wharf::pipeline::pipeline_testing
