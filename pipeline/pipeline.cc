#include "pipeline/pipeline.h"

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "boost/asio/post.hpp"
#include "boost/asio/steady_timer.hpp"
#include "boost/asio/strand.hpp"
#include "boost/asio/thread_pool.hpp"
#include "google/protobuf/util/time_util.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "spdlog/spdlog.h"
#include "storage/crc32c.h"
#include "storage/failpoint.h"

namespace wharf::pipeline {
namespace {

namespace asio = boost::asio;
using google::protobuf::util::TimeUtil;
using SteadyClock = std::chrono::steady_clock;
using SystemClock = std::chrono::system_clock;

int64_t NowMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             SystemClock::now().time_since_epoch())
      .count();
}

// Names the calling thread (for `top -H`, perf, gdb; at most 15 characters) and sets its
// scheduling policy, once per thread.
void SetUpWorkerThread(const char* name) {
  thread_local bool named = false;
  if (named) return;
  named = true;
  pthread_setname_np(pthread_self(), name);
  // SCHED_BATCH: the same CPU share as a normal thread (validation and delivery keep their
  // throughput when ingest saturates the cores), but a pipeline thread that wakes up does not
  // preempt the thread on the core, often the ingest writer or a gRPC thread answering a
  // producer: it runs at the next scheduling tick instead. Alternated runs gave about 5% more
  // durable ingest; ack latency at 50% load did not move measurably (docs/BENCHMARKS.md,
  // "Memtable budget, SCHED_BATCH and raw reads past the cache"). Any thread may select it (no
  // privilege needed); a failure only leaves the default policy.
  sched_param param{};
  param.sched_priority = 0;
  if (const int err = pthread_setschedparam(pthread_self(), SCHED_BATCH, &param); err != 0) {
    spdlog::debug("pipeline: SCHED_BATCH for {} not set: error {}", name, err);
  }
}

// Metrics of the pipeline; label values are bounded by the config (dataset, destination) and
// the QuarantineReason enum. Thread safety: prometheus-cpp metrics are thread-safe; the struct is
// filled once in Create() and read-only afterwards.
struct PipelineMetrics {
  prometheus::Family<prometheus::Counter>* batches_committed = nullptr;
  prometheus::Family<prometheus::Counter>* records_committed = nullptr;
  prometheus::Family<prometheus::Counter>* records_quarantined = nullptr;
  prometheus::Family<prometheus::Counter>* records_delivered = nullptr;
  prometheus::Family<prometheus::Counter>* batches_delivered = nullptr;
  prometheus::Family<prometheus::Counter>* delivery_failures = nullptr;
  prometheus::Family<prometheus::Counter>* retention_deleted = nullptr;
  prometheus::Family<prometheus::Histogram>* handoff_latency = nullptr;
  prometheus::Family<prometheus::Histogram>* delivery_seconds = nullptr;
  prometheus::Family<prometheus::Counter>* records_rejected = nullptr;
  prometheus::Family<prometheus::Gauge>* destination_state = nullptr;
  prometheus::Family<prometheus::Gauge>* quarantine_bytes = nullptr;
  prometheus::Family<prometheus::Gauge>* quarantine_entries = nullptr;
  prometheus::Family<prometheus::Counter>* quarantine_expired = nullptr;
  prometheus::Family<prometheus::Counter>* records_filtered = nullptr;

  explicit PipelineMetrics(prometheus::Registry* r) {
    if (r == nullptr) return;
    batches_committed = &prometheus::BuildCounter()
                             .Name("wharf_batches_committed_total")
                             .Help("Committed batches")
                             .Register(*r);
    records_committed = &prometheus::BuildCounter()
                             .Name("wharf_records_committed_total")
                             .Help("Records that passed validation into committed batches")
                             .Register(*r);
    records_quarantined = &prometheus::BuildCounter()
                               .Name("wharf_records_quarantined_total")
                               .Help("Records sent to quarantine, by reason")
                               .Register(*r);
    records_delivered = &prometheus::BuildCounter()
                             .Name("wharf_records_delivered_total")
                             .Help("Records delivered to a destination")
                             .Register(*r);
    batches_delivered = &prometheus::BuildCounter()
                             .Name("wharf_batches_delivered_total")
                             .Help("Batches delivered to a destination")
                             .Register(*r);
    delivery_failures = &prometheus::BuildCounter()
                             .Name("wharf_delivery_failures_total")
                             .Help("Failed delivery attempts (each is retried)")
                             .Register(*r);
    retention_deleted = &prometheus::BuildCounter()
                             .Name("wharf_retention_deleted_records_total")
                             .Help("Raw records deleted by retention after delivery")
                             .Register(*r);
    handoff_latency = &prometheus::BuildHistogram()
                           .Name("wharf_handoff_latency_seconds")
                           .Help("Time from ingest (durable ack) to delivery, per record")
                           .Register(*r);
    delivery_seconds = &prometheus::BuildHistogram()
                            .Name("wharf_delivery_seconds")
                            .Help("Time of one successful batch delivery")
                            .Register(*r);
    records_rejected = &prometheus::BuildCounter()
                            .Name("wharf_records_rejected_total")
                            .Help(
                                "Records a destination refused, quarantined as "
                                "DESTINATION_REJECTED")
                            .Register(*r);
    destination_state = &prometheus::BuildGauge()
                             .Name("wharf_destination_state")
                             .Help(
                                 "1 for the destination's current state (healthy, retrying, "
                                 "open, paused), 0 for the others")
                             .Register(*r);
    quarantine_bytes = &prometheus::BuildGauge()
                            .Name("wharf_quarantine_bytes")
                            .Help("Bytes held in quarantine")
                            .Register(*r);
    quarantine_entries = &prometheus::BuildGauge()
                              .Name("wharf_quarantine_entries")
                              .Help("Entries held in quarantine")
                              .Register(*r);
    quarantine_expired = &prometheus::BuildCounter()
                              .Name("wharf_quarantine_expired_total")
                              .Help("Quarantine entries deleted by quarantine retention")
                              .Register(*r);
    records_filtered = &prometheus::BuildCounter()
                            .Name("wharf_records_filtered_total")
                            .Help("Records dropped by a filter transform (not quarantined)")
                            .Register(*r);
  }
};

const prometheus::Histogram::BucketBoundaries& LatencyBuckets() {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300};
  return kBuckets;
}

class PipelineImpl;
struct DatasetRuntime;

// Validation state of one partition. `timer` and `timer_deadline` are touched only on `strand`.
struct PartitionWork {
  PartitionWork(asio::thread_pool& pool, DatasetRuntime* ds, uint32_t partition)
      : ds(ds), partition(partition), strand(asio::make_strand(pool)), timer(strand) {}
  DatasetRuntime* ds;
  uint32_t partition;
  asio::strand<asio::thread_pool::executor_type> strand;
  asio::steady_timer timer;
  bool timer_armed = false;
  SteadyClock::time_point timer_deadline;
  // Quarantine counters by reason, filled lazily. Per partition (only touched on `strand`):
  // the partitions of a dataset run on different pool threads at the same time.
  std::map<int, prometheus::Counter*> m_quarantined;
  std::atomic<bool> scheduled{false};
  std::atomic<bool> again{false};
  bool quarantine_full_logged = false;  // only touched on `strand`
  // Linger of the partial batch starting at `linger_offset`, measured on the steady clock from
  // when a step first saw it (only touched on `strand`). See Step().
  bool linger_known = false;
  uint64_t linger_offset = 0;
  SteadyClock::time_point linger_start;
};

// Partitions of one destination delivered at the same time. Each partition is still delivered
// in offset order, one batch at a time (the Destination contract); different partitions may be
// delivered concurrently (also in the contract). Overlapping them overlaps what one delivery
// waits for (a file destination's two fsyncs, a database commit, a network round trip, the
// cursor write queued behind an ingest group commit in RocksDB's write queue), which bounds a
// single delivery thread to one batch per wait.
constexpr uint32_t kMaxParallelPartitions = 4;

// Batches one validation step may commit together (one RocksDB write): see Step().
constexpr uint32_t kMaxBatchesPerStep = 8;

// Batches held in memory by one destination's delivery round, shared by the partitions it
// delivers side by side: each reads kMaxBatchesInFlight / (partitions at once), at least one, so
// delivering partitions in parallel does not multiply the memory a round holds (a batch can be
// up to max_bytes; with four partitions each reading eight, wharfd went past its 256 MiB budget
// in the end-to-end benchmark).
constexpr uint32_t kMaxBatchesInFlight = 8;

// Delivery of one dataset to one destination, on its own thread (plus, with several partitions,
// a small pool that delivers partitions side by side during a round; the delivery thread waits
// for the round to end, so Tick() never runs concurrently with Deliver()).
struct DestinationWorker {
  std::string name;
  Destination* destination = nullptr;
  DatasetRuntime* ds = nullptr;
  RetryOptions retry;
  std::thread thread;

  std::mutex mu;
  std::condition_variable cv;
  bool wake = false;             // guarded by mu
  bool stopping = false;         // guarded by mu
  bool control_changed = false;  // guarded by mu: pause/resume ends a backoff wait
  // Status, guarded by mu.
  wharf::v1::DestinationState state = wharf::v1::HEALTHY;
  std::string last_error;
  SystemClock::time_point next_attempt{};
  uint32_t consecutive_failures = 0;
  uint64_t delivery_failures = 0;
  bool paused = false;
  std::vector<wharf::v1::DeliveryCheckpoint> cursors;  // per partition
  // Per partition, the next_offset of the cursor last written to the store (cursors[p] may be
  // ahead within a delivery round: the cursor is written once per round, not per batch).
  // Retention deletes batches only below these, so after a crash the stored cursor never points
  // into batches that are gone. Guarded by mu.
  std::vector<uint64_t> saved_next;
  bool cursors_loaded = false;
  // Delivers partitions side by side within a round; null with a single partition.
  std::unique_ptr<asio::thread_pool> partition_pool;

  // Metrics (may be null).
  prometheus::Counter* m_records = nullptr;
  prometheus::Counter* m_batches = nullptr;
  prometheus::Counter* m_failures = nullptr;
  prometheus::Histogram* m_handoff = nullptr;
  prometheus::Histogram* m_seconds = nullptr;
  prometheus::Counter* m_rejected = nullptr;
  std::map<wharf::v1::DestinationState, prometheus::Gauge*> m_state;
};

struct DatasetRuntime {
  std::string name;
  uint32_t partitions = 0;
  mutable std::mutex processor_mu;
  std::shared_ptr<const RecordProcessor> processor;  // guarded by processor_mu
  uint64_t quarantine_quota_bytes = 0;
  std::chrono::milliseconds quarantine_retention{0};
  std::vector<DestinationSpec> specs;
  std::vector<std::unique_ptr<PartitionWork>> work;
  std::vector<std::unique_ptr<DestinationWorker>> workers;
  // Retention: (time, min delivered offset) samples per partition; retention thread only.
  std::vector<std::deque<std::pair<SteadyClock::time_point, uint64_t>>> delivered_samples;

  prometheus::Counter* m_batches = nullptr;
  prometheus::Counter* m_records = nullptr;
  prometheus::Counter* m_retention = nullptr;
  prometheus::Gauge* m_quarantine_bytes = nullptr;
  prometheus::Gauge* m_quarantine_entries = nullptr;
  prometheus::Counter* m_quarantine_expired = nullptr;
  prometheus::Counter* m_filtered = nullptr;

  std::shared_ptr<const RecordProcessor> Processor() const {
    std::lock_guard<std::mutex> lock(processor_mu);
    return processor;
  }
};

std::string PausedKey(const std::string& dataset, const std::string& destination) {
  return absl::StrCat("paused/", dataset, "/", destination);
}

class PipelineImpl final : public Pipeline {
 public:
  PipelineImpl(storage::StagingStore* store, PipelineOptions options)
      : store_(store),
        options_(std::move(options)),
        metrics_(options_.metrics_registry),
        pool_(std::max<uint32_t>(1, options_.threads)),
        retention_strand_(asio::make_strand(pool_)),
        retention_timer_(retention_strand_) {}

  ~PipelineImpl() override { Stop(); }

  absl::Status Init() {
    for (auto& d : options_.datasets) {
      if (!store_->HasDataset(d.name)) {
        return absl::InvalidArgumentError(absl::StrCat("pipeline: unknown dataset ", d.name));
      }
      if (d.processor == nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat("pipeline: dataset ", d.name, " has no record processor"));
      }
      auto rt = std::make_unique<DatasetRuntime>();
      rt->name = d.name;
      for (const auto& o : store_->datasets()) {
        if (o.name == d.name) rt->partitions = o.partitions;
      }
      rt->processor = std::move(d.processor);
      rt->quarantine_quota_bytes = d.quarantine_quota_bytes;
      rt->quarantine_retention = d.quarantine_retention;
      rt->specs = std::move(d.destinations);
      rt->delivered_samples.resize(rt->partitions);
      for (uint32_t p = 0; p < rt->partitions; ++p) {
        rt->work.push_back(std::make_unique<PartitionWork>(pool_, rt.get(), p));
      }
      if (metrics_.batches_committed != nullptr) {
        rt->m_batches = &metrics_.batches_committed->Add({{"dataset", rt->name}});
        rt->m_records = &metrics_.records_committed->Add({{"dataset", rt->name}});
        rt->m_retention = &metrics_.retention_deleted->Add({{"dataset", rt->name}});
        rt->m_quarantine_bytes = &metrics_.quarantine_bytes->Add({{"dataset", rt->name}});
        rt->m_quarantine_entries = &metrics_.quarantine_entries->Add({{"dataset", rt->name}});
        rt->m_quarantine_expired = &metrics_.quarantine_expired->Add({{"dataset", rt->name}});
        rt->m_filtered = &metrics_.records_filtered->Add({{"dataset", rt->name}});
        rt->m_quarantine_bytes->Set(static_cast<double>(store_->QuarantineBytes(rt->name)));
        rt->m_quarantine_entries->Set(static_cast<double>(store_->QuarantineEntries(rt->name)));
      }
      for (auto& spec : rt->specs) {
        auto w = std::make_unique<DestinationWorker>();
        w->name = spec.name;
        w->destination = spec.destination.get();
        w->ds = rt.get();
        w->retry = spec.retry.value_or(options_.retry);
        w->cursors.resize(rt->partitions);
        w->saved_next.resize(rt->partitions, 0);
        const uint32_t parallel = std::min(rt->partitions, kMaxParallelPartitions);
        if (parallel > 1) w->partition_pool = std::make_unique<asio::thread_pool>(parallel);
        auto paused = store_->GetMeta(PausedKey(rt->name, spec.name));
        if (!paused.ok()) return paused.status();
        if (paused->has_value()) {
          w->paused = true;
          w->state = wharf::v1::PAUSED;
        }
        if (metrics_.records_delivered != nullptr) {
          const prometheus::Labels labels = {{"dataset", rt->name}, {"destination", spec.name}};
          w->m_records = &metrics_.records_delivered->Add(labels);
          w->m_batches = &metrics_.batches_delivered->Add(labels);
          w->m_failures = &metrics_.delivery_failures->Add(labels);
          w->m_handoff = &metrics_.handoff_latency->Add(labels, LatencyBuckets());
          w->m_seconds = &metrics_.delivery_seconds->Add(labels, LatencyBuckets());
          w->m_rejected = &metrics_.records_rejected->Add(labels);
          for (auto st :
               {wharf::v1::HEALTHY, wharf::v1::RETRYING, wharf::v1::OPEN, wharf::v1::PAUSED}) {
            prometheus::Labels l = labels;
            std::string state = wharf::v1::DestinationState_Name(st);
            std::transform(state.begin(), state.end(), state.begin(),
                           [](unsigned char c) { return std::tolower(c); });
            l["state"] = state;
            w->m_state[st] = &metrics_.destination_state->Add(l);
          }
          SetStateMetric(w.get(), w->state);
        }
        rt->workers.push_back(std::move(w));
      }
      by_name_[rt->name] = rt.get();
      datasets_.push_back(std::move(rt));
    }
    return absl::OkStatus();
  }

  absl::Status Start() override {
    if (started_) return absl::FailedPreconditionError("pipeline already started");
    started_ = true;
    for (auto& ds : datasets_) {
      for (auto& w : ds->workers) {
        DestinationWorker* worker = w.get();
        worker->thread = std::thread([this, worker] { DeliveryLoop(worker); });
      }
      for (auto& pw : ds->work) Schedule(pw.get());
    }
    // Anchors the retention clock at start: a clock step before the first pass is then seen.
    // Before the retention timer exists, so no pass runs concurrently.
    RetentionWallClock();
    ScheduleRetention();
    return absl::OkStatus();
  }

  void Stop() override {
    if (!started_ || stopped_) return;
    stopped_ = true;
    stopping_.store(true);
    // Timers are cancelled on their strands; running steps finish; nothing new is scheduled.
    for (auto& ds : datasets_) {
      for (auto& pw : ds->work) {
        PartitionWork* p = pw.get();
        asio::post(p->strand, [p] { p->timer.cancel(); });
      }
    }
    asio::post(retention_strand_, [this] { retention_timer_.cancel(); });
    for (auto& ds : datasets_) {
      for (auto& w : ds->workers) {
        {
          std::lock_guard<std::mutex> lock(w->mu);
          w->stopping = true;
        }
        w->cv.notify_all();
      }
    }
    pool_.join();
    for (auto& ds : datasets_) {
      for (auto& w : ds->workers) {
        if (w->thread.joinable()) w->thread.join();
        // Idle by now: the delivery thread waits for every round it started.
        if (w->partition_pool != nullptr) w->partition_pool->join();
      }
    }
  }

  void OnAppend(const std::string& dataset, uint32_t partition, uint64_t) override {
    auto it = by_name_.find(dataset);
    if (it == by_name_.end() || partition >= it->second->partitions) return;
    Schedule(it->second->work[partition].get());
  }

  std::vector<wharf::v1::DestinationStatus> DestinationStatuses(
      const std::string& dataset) const override {
    std::vector<wharf::v1::DestinationStatus> out;
    auto it = by_name_.find(dataset);
    if (it == by_name_.end()) return out;
    DatasetRuntime* ds = it->second;
    const int64_t now_us = NowMicros();
    for (const auto& w : ds->workers) {
      wharf::v1::DestinationStatus s;
      s.set_name(w->name);
      s.set_type(std::string(w->destination->type()));
      std::vector<wharf::v1::DeliveryCheckpoint> cursors;
      bool loaded;
      {
        std::lock_guard<std::mutex> lock(w->mu);
        s.set_state(w->state);
        s.set_last_error(w->last_error);
        if (w->next_attempt != SystemClock::time_point{}) {
          *s.mutable_next_attempt_time() = TimeUtil::MicrosecondsToTimestamp(
              std::chrono::duration_cast<std::chrono::microseconds>(
                  w->next_attempt.time_since_epoch())
                  .count());
        }
        s.set_consecutive_failures(w->consecutive_failures);
        s.set_delivery_failures(w->delivery_failures);
        cursors = w->cursors;
        loaded = w->cursors_loaded;
      }
      if (!loaded) {
        for (uint32_t p = 0; p < ds->partitions; ++p) {
          auto c = store_->GetDeliveryCursor(ds->name, w->name, p);
          if (c.ok()) cursors[p] = *c;
        }
      }
      uint64_t records = 0, batches = 0, backlog_records = 0, backlog_batches = 0, rejected = 0;
      int64_t oldest_us = 0;
      for (uint32_t p = 0; p < ds->partitions; ++p) {
        const auto& c = cursors[p];
        records += c.records_delivered();
        batches += c.batches_delivered();
        rejected += c.records_rejected();
        const storage::PartitionCounters pc = store_->GetPartitionCounters(ds->name, p);
        const uint64_t end = pc.ingest.next_offset();
        if (end > c.next_offset()) {
          backlog_records += end - c.next_offset();
          std::vector<storage::RawRecord> first;
          if (store_->ReadRaw(ds->name, p, c.next_offset(), end, 1, 1, &first).ok() &&
              !first.empty()) {
            const int64_t age =
                now_us - TimeUtil::TimestampToMicroseconds(first[0].record.ingest_time());
            oldest_us = std::max(oldest_us, age);
          }
        }
        if (pc.validation.batches_committed() > c.batches_delivered()) {
          backlog_batches += pc.validation.batches_committed() - c.batches_delivered();
        }
      }
      s.set_records_delivered(records);
      s.set_records_rejected(rejected);
      s.set_batches_delivered(batches);
      s.set_backlog_records(backlog_records);
      s.set_backlog_batches(backlog_batches);
      s.set_oldest_undelivered_age_ms(oldest_us / 1000);
      out.push_back(std::move(s));
    }
    return out;
  }

  absl::Status SetProcessor(const std::string& dataset,
                            std::shared_ptr<const RecordProcessor> processor) override {
    auto it = by_name_.find(dataset);
    if (it == by_name_.end()) {
      return absl::NotFoundError(absl::StrCat("unknown dataset \"", dataset, "\""));
    }
    if (processor == nullptr) return absl::InvalidArgumentError("processor is null");
    {
      std::lock_guard<std::mutex> lock(it->second->processor_mu);
      it->second->processor = std::move(processor);
    }
    // Records waiting because of the old contract (e.g. a quarantine quota) get another look.
    for (auto& pw : it->second->work) Schedule(pw.get());
    return absl::OkStatus();
  }

  std::shared_ptr<const RecordProcessor> GetProcessor(const std::string& dataset) const override {
    auto it = by_name_.find(dataset);
    if (it == by_name_.end()) return nullptr;
    return it->second->Processor();
  }

  absl::Status SetPaused(const std::string& dataset, const std::string& destination,
                         bool paused) override {
    auto it = by_name_.find(dataset);
    if (it == by_name_.end()) {
      return absl::NotFoundError(absl::StrCat("unknown dataset \"", dataset, "\""));
    }
    DestinationWorker* w = nullptr;
    for (auto& worker : it->second->workers) {
      if (worker->name == destination) w = worker.get();
    }
    if (w == nullptr) {
      return absl::NotFoundError(
          absl::StrCat("dataset \"", dataset, "\" has no destination \"", destination, "\""));
    }
    // Durability: the flag is stored (synced) before it takes effect, so a pause survives a
    // restart; it only holds deliveries back, it never touches data.
    absl::Status st = paused ? store_->PutMeta(PausedKey(dataset, destination), "1")
                             : store_->DeleteMeta(PausedKey(dataset, destination));
    if (!st.ok()) return st;
    {
      std::lock_guard<std::mutex> lock(w->mu);
      w->paused = paused;
      if (paused) {
        w->state = wharf::v1::PAUSED;
      } else {
        // Resuming retries at once (an operator resumes after fixing something).
        w->state = w->consecutive_failures > 0 ? wharf::v1::RETRYING : wharf::v1::HEALTHY;
        w->next_attempt = {};
      }
      w->control_changed = true;
      SetStateMetric(w, w->state);
    }
    w->cv.notify_all();
    spdlog::info("delivery {}/{}: {} by operator", dataset, destination,
                 paused ? "paused" : "resumed");
    return absl::OkStatus();
  }

  void RunRetentionNow() override {
    if (!started_ || stopping_.load()) return;  // the pool is gone or going
    std::promise<void> done;
    auto f = done.get_future();
    asio::post(retention_strand_, [&] {
      RetentionPass();
      done.set_value();
    });
    f.wait();
  }

 private:
  // Validation --------------------------------------------------------------------------------

  void Schedule(PartitionWork* pw) {
    if (stopping_.load()) return;
    if (pw->scheduled.exchange(true)) {
      pw->again.store(true);
      return;
    }
    asio::post(pw->strand, [this, pw] {
      SetUpWorkerThread("wharf-validate");
      RunStep(pw);
    });
  }

  enum class StepResult { kIdle, kMore, kWait, kError };

  void RunStep(PartitionWork* pw) {
    pw->again.store(false);
    StepResult r = stopping_.load() ? StepResult::kIdle : Step(pw);
    pw->scheduled.store(false);
    if (stopping_.load()) return;
    if (r == StepResult::kMore || pw->again.exchange(false)) {
      Schedule(pw);
    } else if (r == StepResult::kError) {
      ArmTimer(pw, SteadyClock::now() + std::chrono::seconds(1));
    }
  }

  // Runs on pw->strand.
  void ArmTimer(PartitionWork* pw, SteadyClock::time_point deadline) {
    if (pw->timer_armed && pw->timer_deadline <= deadline) return;
    pw->timer_armed = true;
    pw->timer_deadline = deadline;
    pw->timer.expires_at(deadline);
    pw->timer.async_wait([this, pw](const boost::system::error_code& ec) {
      if (ec == asio::error::operation_aborted) return;  // re-armed or stopping
      pw->timer_armed = false;
      Schedule(pw);
    });
  }

  // One validation step of a partition: cut at most one batch. Runs on pw->strand.
  StepResult Step(PartitionWork* pw) {
    DatasetRuntime* ds = pw->ds;
    const uint32_t p = pw->partition;
    const storage::PartitionCounters counters = store_->GetPartitionCounters(ds->name, p);
    const uint64_t cursor = counters.validation.next_offset();
    const uint64_t end = counters.ingest.next_offset();
    if (cursor >= end) return StepResult::kIdle;
    const auto& b = options_.batching;
    // Quarantine quota: hold validation (records stay raw, nothing is lost) until an operator
    // replays or discards entries, or quarantine retention frees space.
    if (ds->quarantine_quota_bytes > 0 &&
        store_->QuarantineBytes(ds->name) >= ds->quarantine_quota_bytes) {
      if (!pw->quarantine_full_logged) {
        spdlog::warn("pipeline {}/{}: quarantine is at its quota ({} bytes); validation waits",
                     ds->name, p, ds->quarantine_quota_bytes);
        pw->quarantine_full_logged = true;
      }
      ArmTimer(pw, SteadyClock::now() + std::chrono::seconds(1));
      return StepResult::kIdle;
    }
    pw->quarantine_full_logged = false;
    // A linger timer is pending and the backlog cannot fill a batch yet, by count or by bytes:
    // nothing to do until it fires (saves re-reading the same records on every group commit).
    const uint64_t appended = counters.ingest.bytes_appended();
    const uint64_t validated_bytes = counters.validation.raw_bytes_validated();
    const uint64_t backlog_bytes = appended > validated_bytes ? appended - validated_bytes : 0;
    if (pw->timer_armed && end - cursor < b.max_records && backlog_bytes <= b.max_bytes) {
      return StepResult::kIdle;
    }

    // One step reads up to kMaxBatchesPerStep batches' worth of records (but no more bytes than
    // one batch may hold, so a step's memory is what it was with one batch) and commits every
    // full batch among them in ONE write: each write waits in RocksDB's write queue behind the
    // ingest group commit in progress, so with a backlog the wait is shared by several batches.
    // Batch boundaries are those of one batch per step: a batch is cut at max_records records or
    // before max_bytes of stored bytes, a partial batch only after the linger.
    std::vector<storage::RawRecord> raw;
    if (absl::Status st = store_->ReadRaw(ds->name, p, cursor, end,
                                          static_cast<size_t>(b.max_records) * kMaxBatchesPerStep,
                                          b.max_bytes, &raw);
        !st.ok()) {
      spdlog::error("pipeline {}/{}: reading raw records failed: {}", ds->name, p, st.ToString());
      return StepResult::kError;
    }
    if (raw.empty() || raw.front().offset != cursor) {
      spdlog::error("pipeline {}/{}: raw record at offset {} is missing (store inconsistent)",
                    ds->name, p, cursor);
      return StepResult::kError;
    }
    // Cut the records read into batch ranges [begin, end) of raw.
    std::vector<std::pair<size_t, size_t>> ranges;
    {
      size_t begin = 0;
      uint64_t bytes = 0;
      for (size_t i = 0; i < raw.size(); ++i) {
        const bool fits =
            i - begin < b.max_records && (i == begin || bytes + raw[i].stored_bytes <= b.max_bytes);
        if (!fits) {
          ranges.emplace_back(begin, i);
          begin = i;
          bytes = 0;
        }
        bytes += raw[i].stored_bytes;
      }
      ranges.emplace_back(begin, raw.size());
    }
    // The last range may have been cut short by the read's byte budget (shared by all ranges),
    // not by its own: unless it holds max_records it waits for a later step, where it is the
    // first range and gets the whole budget. A lone range follows the rule of one batch per
    // step: full at max_records or when more records follow it (cut by bytes), else it waits
    // for its linger.
    const size_t last_size = ranges.back().second - ranges.back().first;
    if (ranges.size() > 1) {
      if (last_size < b.max_records) ranges.pop_back();
    } else if (last_size < b.max_records && raw.back().offset + 1 >= end) {
      const int64_t linger_us =
          std::chrono::duration_cast<std::chrono::microseconds>(b.linger).count();
      // The linger is timed on the steady clock. The ingest time is wall-clock (stored and
      // shown), and timing the linger with it held a partial batch for as long as the clock had
      // stepped backwards (an hour's step: an hour), and re-arming a timer at "linger from now"
      // would never end either. The wall-clock age counts only once, when a step first sees the
      // batch's first record, clamped to [0, linger]: a record found after a restart that is
      // older than the linger is cut at once, and a record "from the future" waits one linger.
      const auto now = SteadyClock::now();
      if (!pw->linger_known || pw->linger_offset != cursor) {
        const int64_t oldest_us =
            TimeUtil::TimestampToMicroseconds(raw.front().record.ingest_time());
        const int64_t seen_us = std::clamp<int64_t>(NowMicros() - oldest_us, 0, linger_us);
        pw->linger_known = true;
        pw->linger_offset = cursor;
        pw->linger_start = now - std::chrono::microseconds(seen_us);
      }
      const int64_t waited_us =
          std::chrono::duration_cast<std::chrono::microseconds>(now - pw->linger_start).count();
      if (waited_us < linger_us) {
        ArmTimer(pw, now + std::chrono::microseconds(linger_us - waited_us));
        return StepResult::kIdle;
      }
    }

    storage::BatchCommit commit;
    commit.dataset = ds->name;
    commit.partition = p;
    commit.next_offset = raw[ranges.back().second - 1].offset + 1;
    // Not TimeUtil::GetCurrentTime(): protobuf 3.21 truncates it to whole seconds.
    const google::protobuf::Timestamp now_ts = TimeUtil::MicrosecondsToTimestamp(NowMicros());
    std::string payload;
    // One processor for the whole step: a contract change applies from the next step on.
    const std::shared_ptr<const RecordProcessor> processor = ds->Processor();
    uint64_t filtered = 0;
    std::vector<wharf::v1::StoredBatch> batches;
    // One entry for the whole step, cleared per record (building and destroying one per record
    // cost more than clearing it); a quarantined record's entry is moved into the commit.
    wharf::v1::QuarantineEntry q;
    for (const auto& [first, last] : ranges) {
      wharf::v1::StoredBatch batch;
      uint32_t crc = 0;
      uint64_t bytes = 0;
      int64_t min_ingest_us = INT64_MAX;
      const size_t quarantined_before = commit.quarantine.size();
      for (size_t i = first; i < last; ++i) {
        storage::RawRecord& r = raw[i];
        commit.raw_bytes += r.stored_bytes;
        q.Clear();
        payload.clear();
        const ProcessResult result =
            processor->ProcessRecord({ds->name, p, r.offset}, r.record, &payload, &q);
        if (result == ProcessResult::kFilter) {
          ++filtered;
          continue;
        }
        if (result == ProcessResult::kDeliver) {
          auto* br = batch.add_records();
          br->set_offset(r.offset);
          crc = storage::Crc32c(payload, crc);
          bytes += payload.size();
          br->set_payload(std::move(payload));
          payload = std::string();
          auto* rec = r.record.mutable_record();
          br->set_key(std::move(*rec->mutable_key()));
          min_ingest_us =
              std::min(min_ingest_us, TimeUtil::TimestampToMicroseconds(r.record.ingest_time()));
          // The times change owner instead of being copied (no allocation and free per record):
          // nothing reads the raw record after this step has used it.
          if (rec->has_event_time()) br->set_allocated_event_time(rec->release_event_time());
          if (r.record.has_ingest_time()) {
            br->set_allocated_ingest_time(r.record.release_ingest_time());
          } else {
            br->mutable_ingest_time();  // present (empty) in the batch as before, when copied
          }
          br->mutable_headers()->swap(*rec->mutable_headers());
        } else {
          q.set_dataset(ds->name);
          q.set_partition(p);
          q.set_offset(r.offset);
          q.set_schema_version(processor->schema_version());
          q.set_transform_version(processor->transform_version());
          // A replayed record carries its history: attempts add up, the first error stays.
          q.set_attempts(r.record.replayed() ? r.record.attempts() + 1 : 1);
          *q.mutable_quarantine_time() = now_ts;
          *q.mutable_first_error_time() = r.record.replayed() && r.record.has_first_error_time()
                                              ? r.record.first_error_time()
                                              : now_ts;
          *q.mutable_original() = std::move(r.record);
          commit.quarantine.push_back(std::move(q));
        }
      }
      if (batch.records_size() == 0) continue;
      auto* m = batch.mutable_manifest();
      const uint64_t first_offset = raw[first].offset;
      const uint64_t last_offset = raw[last - 1].offset;
      m->set_batch_id(absl::StrCat(ds->name, ".p", p, ".", first_offset, "-", last_offset));
      m->set_dataset(ds->name);
      m->set_partition(p);
      m->set_first_offset(first_offset);
      m->set_last_offset(last_offset);
      m->set_record_count(batch.records_size());
      m->set_quarantined_count(commit.quarantine.size() - quarantined_before);
      m->set_bytes(bytes);
      m->set_checksum(crc);
      *m->mutable_create_time() = now_ts;
      m->set_schema_version(processor->schema_version());
      m->set_transform_version(processor->transform_version());
      *m->mutable_min_ingest_time() = TimeUtil::MicrosecondsToTimestamp(min_ingest_us);
      batches.push_back(std::move(batch));
    }
    if (!batches.empty()) {
      commit.batch = std::move(batches.front());
      for (size_t i = 1; i < batches.size(); ++i) {
        commit.more_batches.push_back(std::move(batches[i]));
      }
    }
    if (absl::Status st = store_->CommitBatch(commit); !st.ok()) {
      spdlog::error("pipeline {}/{}: committing batch at offset {} failed: {}", ds->name, p, cursor,
                    st.ToString());
      return StepResult::kError;
    }
    if (ds->m_batches != nullptr && commit.batch.has_value()) {
      uint64_t records = commit.batch->records_size();
      for (const auto& more : commit.more_batches) records += more.records_size();
      ds->m_batches->Increment(static_cast<double>(1 + commit.more_batches.size()));
      ds->m_records->Increment(static_cast<double>(records));
    }
    if (ds->m_filtered != nullptr && filtered > 0) {
      ds->m_filtered->Increment(static_cast<double>(filtered));
    }
    if (ds->m_quarantine_bytes != nullptr && !commit.quarantine.empty()) {
      ds->m_quarantine_bytes->Set(static_cast<double>(store_->QuarantineBytes(ds->name)));
      ds->m_quarantine_entries->Set(static_cast<double>(store_->QuarantineEntries(ds->name)));
    }
    if (metrics_.records_quarantined != nullptr) {
      for (const auto& q : commit.quarantine) {
        auto& c = pw->m_quarantined[q.reason()];
        if (c == nullptr) {
          c = &metrics_.records_quarantined->Add(
              {{"dataset", ds->name}, {"reason", wharf::v1::QuarantineReason_Name(q.reason())}});
        }
        c->Increment();
      }
    }
    // Wake the deliverers also after a quarantine-only step: their cursors skip such ranges.
    for (auto& w : ds->workers) {
      {
        std::lock_guard<std::mutex> lock(w->mu);
        w->wake = true;
      }
      w->cv.notify_one();
    }
    return commit.next_offset < end ? StepResult::kMore : StepResult::kIdle;
  }

  // Delivery ----------------------------------------------------------------------------------

  static std::chrono::milliseconds Backoff(const RetryOptions& r, uint32_t failures) {
    double delay = static_cast<double>(r.initial_backoff.count());
    for (uint32_t i = 1; i < failures && delay < r.max_backoff.count(); ++i) delay *= r.multiplier;
    delay = std::min(delay, static_cast<double>(r.max_backoff.count()));
    thread_local std::mt19937_64 rng{std::random_device{}()};
    std::uniform_real_distribution<double> jitter(-r.jitter, r.jitter);
    delay *= 1.0 + jitter(rng);
    return std::chrono::milliseconds(std::max<int64_t>(1, static_cast<int64_t>(delay)));
  }

  // Waits until woken (if wake_ends_wait), a control change (pause/resume), stop or the
  // timeout; returns false when stopping.
  bool WaitFor(DestinationWorker* w, std::chrono::milliseconds timeout, bool wake_ends_wait) {
    std::unique_lock<std::mutex> lock(w->mu);
    w->cv.wait_for(lock, timeout, [&] {
      return w->stopping || w->control_changed || (wake_ends_wait && w->wake);
    });
    if (wake_ends_wait) w->wake = false;
    w->control_changed = false;
    return !w->stopping;
  }

  // Calls the destination's Tick() when the last call is a second or more ago. Delivery thread.
  void MaybeTick(DestinationWorker* w, SteadyClock::time_point* last_tick) {
    if (SteadyClock::now() - *last_tick < std::chrono::seconds(1)) return;
    *last_tick = SteadyClock::now();
    if (absl::Status st = w->destination->Tick(); !st.ok()) {
      spdlog::warn("delivery {}/{}: periodic work failed: {}", w->ds->name, w->name, st.ToString());
    }
  }

  // Waits out a retry delay like WaitFor(w, delay, false), but in slices of at most a second
  // with a Tick() in between: a backoff or an open circuit's probe interval can last far
  // longer than a second, and the destination's time-based work (rolling files by age) must
  // keep its cadence while deliveries fail. Returns false when stopping.
  bool WaitTicking(DestinationWorker* w, std::chrono::milliseconds delay,
                   SteadyClock::time_point* last_tick) {
    const auto deadline = SteadyClock::now() + delay;
    while (true) {
      MaybeTick(w, last_tick);
      const auto until = std::min(deadline, *last_tick + std::chrono::seconds(1));
      std::unique_lock<std::mutex> lock(w->mu);
      const bool changed =
          w->cv.wait_until(lock, until, [&] { return w->stopping || w->control_changed; });
      if (w->stopping) return false;
      if (changed || SteadyClock::now() >= deadline) {
        w->control_changed = false;
        return true;
      }
    }
  }

  // Called with w->mu held, right where w->state changes: the gauges then never disagree with
  // the state that DestinationStatuses() reports (they were set after the lock was released, so
  // a reader could see the new state with the old gauges, and a delivery finishing while an
  // operator paused the destination could leave the gauges at healthy).
  void SetStateMetric(DestinationWorker* w, wharf::v1::DestinationState state) {
    for (auto& [st, gauge] : w->m_state) gauge->Set(st == state ? 1 : 0);
  }

  // What one partition's part of a delivery round did.
  struct PartitionRound {
    bool progressed = false;  // at least one batch delivered or a quarantined range skipped
    bool stopped = false;     // the pipeline is stopping
    absl::Status failure;     // the first failure (the partition's round ended there)
    DeliveryReport failure_report;
  };

  // Delivers the committed batches of partition p past its cursor (at most 8 per round), in
  // order, then writes the partition's cursor once. Runs on the delivery thread or, with several
  // partitions, on the worker's partition pool (never two calls for one partition at a time).
  PartitionRound DeliverPartition(DestinationWorker* w, uint32_t p) {
    DatasetRuntime* ds = w->ds;
    PartitionRound round;
    uint64_t from;
    {
      std::lock_guard<std::mutex> lock(w->mu);
      from = w->cursors[p].next_offset();
    }
    // Read the validation cursor before the batches: if no batch starts at `from` although
    // validation has moved past it, every offset in between went to quarantine (or was
    // filtered), and the delivery cursor can skip them (else the backlog would never end).
    const uint64_t validated = store_->GetPartitionCounters(ds->name, p).validation.next_offset();
    std::vector<wharf::v1::StoredBatch> batches;
    const uint32_t parallel =
        std::max<uint32_t>(1, std::min(ds->partitions, kMaxParallelPartitions));
    const size_t per_partition = std::max<uint32_t>(1, kMaxBatchesInFlight / parallel);
    if (absl::Status st = store_->ReadBatches(ds->name, p, from, per_partition, &batches);
        !st.ok()) {
      round.failure = st;
      return round;
    }
    const uint64_t skip_to =
        batches.empty() ? validated : batches.front().manifest().first_offset();
    if (skip_to > from) SkipQuarantined(w, p, skip_to);
    if (batches.empty()) return round;
    // Durability: batch commits are not synced (StagingStore::CommitBatch). Before any of these
    // batches reaches the destination its commit must survive power loss, else a lost commit
    // could be re-cut with other boundaries and its records delivered again under another id.
    // One WAL sync covers every batch read above and those of the other partitions of the
    // round (the store skips it when an earlier sync already covered them).
    if (absl::Status st = store_->SyncPipelineWrites(); !st.ok()) {
      round.failure = st;
      return round;
    }
    bool cursor_dirty = false;
    for (const auto& batch : batches) {
      {
        std::lock_guard<std::mutex> lock(w->mu);
        if (w->stopping) {
          round.stopped = true;
          break;
        }
        if (w->paused) break;
      }
      const auto t0 = SteadyClock::now();
      DeliveryReport report;
      std::vector<wharf::v1::QuarantineEntry> rejected;
      absl::Status st = DeliverBatch(w, batch, &rejected, &report);
      if (!st.ok()) {
        round.failure = absl::Status(
            st.code(), absl::StrCat("batch ", batch.manifest().batch_id(), ": ", st.message()));
        round.failure_report = report;
        break;
      }
      absl::StatusOr<bool> saved = OnDelivered(w, batch, rejected, SteadyClock::now() - t0);
      if (!saved.ok()) {
        round.failure = saved.status();
        break;
      }
      cursor_dirty = !*saved;
      round.progressed = true;
    }
    if (cursor_dirty) SaveCursor(w, p);
    return round;
  }

  // Writes partition p's in-memory cursor to the store. Durability: not synced. The cursor only
  // moves after the destination confirmed the batches it covers; if this write is lost (or a
  // crash comes before it), those batches are delivered again and the destination's idempotence
  // by batch id absorbs it. Written once per round instead of once per batch: each write waits
  // in RocksDB's write queue (behind an ingest group commit in progress), and a lost write
  // repeats at most one round (8 batches) of the partition.
  void SaveCursor(DestinationWorker* w, uint32_t p) {
    wharf::v1::DeliveryCheckpoint cp;
    {
      std::lock_guard<std::mutex> lock(w->mu);
      cp = w->cursors[p];
    }
    if (absl::Status st = store_->SetDeliveryCursor(w->ds->name, w->name, p, cp); !st.ok()) {
      spdlog::error("delivery {}/{}: saving cursor failed (batches will be redelivered): {}",
                    w->ds->name, w->name, st.ToString());
      return;
    }
    std::lock_guard<std::mutex> lock(w->mu);
    w->saved_next[p] = std::max(w->saved_next[p], cp.next_offset());
  }

  void DeliveryLoop(DestinationWorker* w) {
    SetUpWorkerThread("wharf-deliver");
    DatasetRuntime* ds = w->ds;
    // Load the cursors; a store read failure is retried (nothing can be delivered without them).
    while (true) {
      bool ok = true;
      std::vector<wharf::v1::DeliveryCheckpoint> cursors(ds->partitions);
      for (uint32_t p = 0; p < ds->partitions && ok; ++p) {
        auto c = store_->GetDeliveryCursor(ds->name, w->name, p);
        if (!c.ok()) {
          spdlog::error("delivery {}/{}: reading cursor: {}", ds->name, w->name,
                        c.status().ToString());
          ok = false;
        } else {
          cursors[p] = *c;
        }
      }
      if (ok) {
        std::lock_guard<std::mutex> lock(w->mu);
        for (uint32_t p = 0; p < ds->partitions; ++p) w->saved_next[p] = cursors[p].next_offset();
        w->cursors = std::move(cursors);
        w->cursors_loaded = true;
        break;
      }
      if (!WaitFor(w, std::chrono::seconds(1), false)) return;
    }

    SteadyClock::time_point last_tick{};
    std::vector<PartitionRound> rounds(ds->partitions);
    while (true) {
      bool paused;
      {
        std::lock_guard<std::mutex> lock(w->mu);
        if (w->stopping) return;
        w->wake = false;
        paused = w->paused;
      }
      MaybeTick(w, &last_tick);
      if (paused) {
        if (!WaitFor(w, std::chrono::seconds(1), false)) return;
        continue;
      }
      for (auto& r : rounds) r = PartitionRound();
      if (w->partition_pool != nullptr) {
        // Every partition of the round on the pool; this thread waits for all of them, so a
        // round's failures are handled below as in the sequential case.
        std::mutex done_mu;
        std::condition_variable done_cv;
        uint32_t pending = ds->partitions;
        for (uint32_t p = 0; p < ds->partitions; ++p) {
          asio::post(*w->partition_pool, [&, p] {
            SetUpWorkerThread("wharf-deliver-p");
            PartitionRound r = DeliverPartition(w, p);
            std::lock_guard<std::mutex> lock(done_mu);
            rounds[p] = std::move(r);
            if (--pending == 0) done_cv.notify_all();
          });
        }
        std::unique_lock<std::mutex> lock(done_mu);
        done_cv.wait(lock, [&] { return pending == 0; });
      } else {
        for (uint32_t p = 0; p < ds->partitions; ++p) {
          rounds[p] = DeliverPartition(w, p);
          if (!rounds[p].failure.ok() || rounds[p].stopped) break;
        }
      }
      bool progressed = false;
      bool stopped = false;
      absl::Status failure;
      DeliveryReport failure_report;
      uint32_t failed_attempts = 0;  // partitions whose attempt failed in this round
      for (const auto& r : rounds) {
        progressed = progressed || r.progressed;
        stopped = stopped || r.stopped;
        if (!r.failure.ok()) ++failed_attempts;
        if (failure.ok() && !r.failure.ok()) {
          failure = r.failure;
          failure_report = r.failure_report;
        }
      }
      if (stopped) return;
      if (!failure.ok()) {
        uint32_t failures;
        std::chrono::milliseconds delay;
        wharf::v1::DestinationState state;
        {
          std::lock_guard<std::mutex> lock(w->mu);
          // Consecutive failures count rounds (the circuit opens after down_after failed rounds,
          // however many partitions failed in each); delivery_failures counts every failed
          // attempt, as the metric does.
          failures = ++w->consecutive_failures;
          w->delivery_failures += failed_attempts;
          w->last_error = std::string(failure.message());
          // Circuit breaker: past the threshold only periodic probes are attempted, so a dead
          // destination costs one attempt per probe interval, not a retry storm.
          const bool open = failures >= w->retry.down_after;
          delay = open ? w->retry.probe_interval : Backoff(w->retry, failures);
          // A destination's own request (HTTP Retry-After, RetryInfo) wins if it is longer.
          delay = std::max(delay, failure_report.retry_after);
          w->next_attempt = SystemClock::now() + delay;
          if (!w->paused) w->state = open ? wharf::v1::OPEN : wharf::v1::RETRYING;
          state = w->state;
          SetStateMetric(w, state);
        }
        if (w->m_failures != nullptr)
          w->m_failures->Increment(static_cast<double>(failed_attempts));
        spdlog::warn("delivery {}/{}: attempt {} failed, {} in {} ms: {}", ds->name, w->name,
                     failures, state == wharf::v1::OPEN ? "circuit open, next probe" : "retrying",
                     delay.count(), failure.ToString());
        if (!WaitTicking(w, delay, &last_tick)) return;
        continue;
      }
      if (!progressed && !WaitFor(w, std::chrono::seconds(1), true)) return;
    }
  }

  // A sub-batch of records [lo, hi) of a committed batch: same manifest fields, its own id,
  // offsets, counts and checksum. Derived only from the batch, so a retried split produces the
  // same ids (destinations deduplicate by id).
  static wharf::v1::StoredBatch SubBatch(const wharf::v1::StoredBatch& batch, int lo, int hi) {
    wharf::v1::StoredBatch sub;
    *sub.mutable_manifest() = batch.manifest();
    auto* m = sub.mutable_manifest();
    uint32_t crc = 0;
    uint64_t bytes = 0;
    for (int i = lo; i < hi; ++i) {
      *sub.add_records() = batch.records(i);
      crc = storage::Crc32c(batch.records(i).payload(), crc);
      bytes += batch.records(i).payload().size();
    }
    const uint64_t first = batch.records(lo).offset();
    const uint64_t last = batch.records(hi - 1).offset();
    m->set_batch_id(absl::StrCat(batch.manifest().batch_id(), "/", first, "-", last));
    m->set_first_offset(first);
    m->set_last_offset(last);
    m->set_record_count(hi - lo);
    m->set_quarantined_count(0);
    m->set_bytes(bytes);
    m->set_checksum(crc);
    return sub;
  }

  wharf::v1::QuarantineEntry RejectedEntry(DestinationWorker* w,
                                           const wharf::v1::StoredBatch& batch,
                                           const wharf::v1::BatchRecord& record,
                                           const absl::Status& status) {
    const auto& m = batch.manifest();
    wharf::v1::QuarantineEntry q;
    q.set_dataset(m.dataset());
    q.set_partition(m.partition());
    q.set_offset(record.offset());
    q.set_reason(wharf::v1::DESTINATION_REJECTED);
    std::string message(status.message());
    if (message.size() > 2000) message.resize(2000);
    q.set_message(absl::StrCat("destination \"", w->name, "\" refused the record: ", message));
    q.set_destination(w->name);
    q.set_batch_id(m.batch_id());
    q.set_schema_version(m.schema_version());
    q.set_transform_version(m.transform_version());
    q.set_attempts(1);
    const auto now_ts = TimeUtil::MicrosecondsToTimestamp(NowMicros());
    *q.mutable_quarantine_time() = now_ts;
    *q.mutable_first_error_time() = now_ts;
    // Keep the raw record (what the producer sent) when it is still in the landing zone, so a
    // replay re-runs the contract on it; else the delivered form.
    std::vector<storage::RawRecord> raw;
    if (store_
            ->ReadRaw(m.dataset(), m.partition(), record.offset(), record.offset() + 1, 1,
                      UINT64_MAX, &raw)
            .ok() &&
        raw.size() == 1 && raw[0].offset == record.offset()) {
      // A replayed record carries its history, as in validation: attempts add up and the first
      // error stays, so an operator sees how often it failed and since when.
      const wharf::v1::StoredRecord& stored = raw[0].record;
      if (stored.replayed()) {
        q.set_attempts(stored.attempts() + 1);
        if (stored.has_first_error_time()) {
          *q.mutable_first_error_time() = stored.first_error_time();
        }
      }
      *q.mutable_original() = std::move(raw[0].record);
    } else {
      auto* o = q.mutable_original();
      o->mutable_record()->set_key(record.key());
      o->mutable_record()->set_payload(record.payload());
      if (record.has_event_time()) *o->mutable_record()->mutable_event_time() = record.event_time();
      *o->mutable_record()->mutable_headers() = record.headers();
      *o->mutable_ingest_time() = record.ingest_time();
    }
    return q;
  }

  // Delivers a committed batch. A content rejection (INVALID_ARGUMENT) splits the batch in
  // halves until the refused records are isolated; they are returned in `rejected` and the
  // rest is delivered. Returns OK when every record is delivered or in `rejected`.
  absl::Status DeliverBatch(DestinationWorker* w, const wharf::v1::StoredBatch& batch,
                            std::vector<wharf::v1::QuarantineEntry>* rejected,
                            DeliveryReport* report) {
    const auto& m = batch.manifest();
    const uint32_t p = m.partition();
    bool resume_split;
    {
      std::lock_guard<std::mutex> lock(w->mu);
      resume_split = w->cursors[p].splitting_batch_id() == m.batch_id();
    }
    if (!resume_split) {
      absl::Status st = w->destination->Deliver(batch, report);
      if (st.ok() || st.code() != absl::StatusCode::kInvalidArgument) return st;
      if (batch.records_size() <= 1) {
        if (batch.records_size() == 1)
          rejected->push_back(RejectedEntry(w, batch, batch.records(0), st));
        return absl::OkStatus();
      }
      spdlog::warn("delivery {}/{}: batch {} refused for its content, splitting it: {}",
                   w->ds->name, w->name, m.batch_id(), std::string(st.message()));
      // Remember the split (synced) before any sub-batch goes out: after a crash the whole
      // batch must not be offered again, since part of it may be delivered under sub-batch ids.
      wharf::v1::DeliveryCheckpoint cp;
      {
        std::lock_guard<std::mutex> lock(w->mu);
        cp = w->cursors[p];
      }
      cp.set_splitting_batch_id(m.batch_id());
      if (absl::Status ws = store_->QuarantineRejected(w->ds->name, w->name, p, {}, cp); !ws.ok()) {
        return ws;
      }
      std::lock_guard<std::mutex> lock(w->mu);
      w->cursors[p] = cp;
    }
    const int n = batch.records_size();
    const int mid = n / 2;
    if (absl::Status st = Split(w, batch, 0, mid, rejected, report); !st.ok()) return st;
    return Split(w, batch, mid, n, rejected, report);
  }

  absl::Status Split(DestinationWorker* w, const wharf::v1::StoredBatch& batch, int lo, int hi,
                     std::vector<wharf::v1::QuarantineEntry>* rejected, DeliveryReport* report) {
    if (lo >= hi) return absl::OkStatus();
    {
      std::lock_guard<std::mutex> lock(w->mu);
      if (w->stopping) return absl::CancelledError("stopping");
    }
    *report = DeliveryReport();
    absl::Status st = w->destination->Deliver(SubBatch(batch, lo, hi), report);
    if (st.ok() || st.code() != absl::StatusCode::kInvalidArgument) return st;
    if (hi - lo == 1) {
      rejected->push_back(RejectedEntry(w, batch, batch.records(lo), st));
      return absl::OkStatus();
    }
    const int mid = lo + (hi - lo) / 2;
    if (absl::Status s = Split(w, batch, lo, mid, rejected, report); !s.ok()) return s;
    return Split(w, batch, mid, hi, rejected, report);
  }

  // Moves the delivery cursor of partition p over offsets that all went to quarantine.
  void SkipQuarantined(DestinationWorker* w, uint32_t p, uint64_t to) {
    wharf::v1::DeliveryCheckpoint cp;
    {
      std::lock_guard<std::mutex> lock(w->mu);
      w->cursors[p].set_next_offset(to);
      cp = w->cursors[p];
    }
    // Durability: as for delivered batches, losing this write only repeats the skip.
    if (absl::Status st = store_->SetDeliveryCursor(w->ds->name, w->name, p, cp); !st.ok()) {
      spdlog::warn("delivery {}/{}: saving cursor failed: {}", w->ds->name, w->name, st.ToString());
      return;
    }
    std::lock_guard<std::mutex> lock(w->mu);
    w->saved_next[p] = std::max(w->saved_next[p], cp.next_offset());
  }

  // Advances the in-memory cursor past a delivered batch. Returns true when the cursor was also
  // written to the store (refused records: one synced write with the quarantine entries), false
  // when the caller still has to write it (SaveCursor, once per round).
  absl::StatusOr<bool> OnDelivered(DestinationWorker* w, const wharf::v1::StoredBatch& batch,
                                   const std::vector<wharf::v1::QuarantineEntry>& rejected,
                                   SteadyClock::duration took) {
    DatasetRuntime* ds = w->ds;
    const auto& m = batch.manifest();
    const uint64_t delivered =
        m.record_count() - std::min<uint64_t>(m.record_count(), rejected.size());
    wharf::v1::DeliveryCheckpoint cp;
    bool was_splitting;
    {
      std::lock_guard<std::mutex> lock(w->mu);
      cp = w->cursors[m.partition()];
    }
    was_splitting = !cp.splitting_batch_id().empty();
    cp.set_next_offset(m.last_offset() + 1);
    cp.set_batches_delivered(cp.batches_delivered() + 1);
    cp.set_records_delivered(cp.records_delivered() + delivered);
    cp.set_records_rejected(cp.records_rejected() + rejected.size());
    cp.clear_splitting_batch_id();
    // Crash tests: the destination has committed the batch and the cursor has not moved yet, the
    // window in which a kill must lead to an idempotent redelivery, never a duplicate.
    storage::MaybeCrashAt("pipeline.after_deliver_before_cursor");
    const bool saved = !rejected.empty() || was_splitting;
    if (saved) {
      // Durability: the refused records enter quarantine in the same synced write that moves
      // the cursor past them; if it fails, nothing moved and the batch is retried (its
      // delivered sub-batches are found delivered by id).
      if (absl::Status st =
              store_->QuarantineRejected(ds->name, w->name, m.partition(), rejected, cp);
          !st.ok()) {
        return st;
      }
      if (ds->m_quarantine_bytes != nullptr) {
        ds->m_quarantine_bytes->Set(static_cast<double>(store_->QuarantineBytes(ds->name)));
        ds->m_quarantine_entries->Set(static_cast<double>(store_->QuarantineEntries(ds->name)));
      }
      if (w->m_rejected != nullptr) w->m_rejected->Increment(static_cast<double>(rejected.size()));
      if (!rejected.empty()) {
        spdlog::warn(
            "delivery {}/{}: batch {}: {} record(s) refused by the destination went to "
            "quarantine as DESTINATION_REJECTED",
            ds->name, w->name, m.batch_id(), rejected.size());
      }
    }
    // Otherwise the caller writes the cursor after its round (SaveCursor): not synced, and only
    // after the destination confirmed the batch.
    {
      std::lock_guard<std::mutex> lock(w->mu);
      w->cursors[m.partition()] = cp;
      if (saved) {
        w->saved_next[m.partition()] = std::max(w->saved_next[m.partition()], cp.next_offset());
      }
      if (w->consecutive_failures > 0) {
        spdlog::info("delivery {}/{}: recovered after {} failed attempts", ds->name, w->name,
                     w->consecutive_failures);
      }
      w->consecutive_failures = 0;
      if (!w->paused) w->state = wharf::v1::HEALTHY;
      w->next_attempt = {};
      SetStateMetric(w, w->state);
    }
    if (w->m_records != nullptr) {
      w->m_records->Increment(static_cast<double>(delivered));
      w->m_batches->Increment();
      w->m_seconds->Observe(std::chrono::duration<double>(took).count());
      const int64_t now_us = NowMicros();
      // Bucketed here and added in one call: Observe() per record took the histogram's mutex
      // once per record. Buckets as Observe() picks them (the first bound >= the value).
      const prometheus::Histogram::BucketBoundaries& bounds = LatencyBuckets();
      std::vector<double> counts(bounds.size() + 1, 0.0);
      double sum = 0;
      for (const auto& r : batch.records()) {
        // Wall-clock (ingest times are): after the clock stepped back a record looks ingested
        // in the future; a negative latency would lower the histogram's sum, so it counts as 0.
        const double seconds =
            static_cast<double>(
                std::max<int64_t>(0, now_us - TimeUtil::TimestampToMicroseconds(r.ingest_time()))) /
            1e6;
        counts[static_cast<size_t>(std::lower_bound(bounds.begin(), bounds.end(), seconds) -
                                   bounds.begin())] += 1;
        sum += seconds;
      }
      if (batch.records_size() > 0) w->m_handoff->ObserveMultiple(counts, sum);
    }
    return saved;
  }

  // Retention ---------------------------------------------------------------------------------

  void ScheduleRetention() {
    if (stopping_.load()) return;
    retention_timer_.expires_after(options_.retention.interval);
    retention_timer_.async_wait([this](const boost::system::error_code& ec) {
      if (ec == asio::error::operation_aborted || stopping_.load()) return;
      SetUpWorkerThread("wharf-validate");
      RetentionPass();
      ScheduleRetention();
    });
  }

  // The wall clock as quarantine retention reads it (runs on retention_strand_): the system
  // clock, except that it never runs ahead of the steady clock within this process. Quarantine
  // entries carry wall-clock times (they are shown and survive restarts), so a forward step of
  // the system clock (NTP correcting a day, an operator's `date -s`) made every entry look a day
  // older and a retention of hours deleted them at once, although they were minutes old: loss
  // caused by a clock step. A backward step is followed (entries then expire later, never
  // earlier). A forward step is believed only after a restart, so entries may be kept longer
  // than configured, never shorter.
  SystemClock::time_point RetentionWallClock() {
    const auto wall = SystemClock::now();
    const auto steady = SteadyClock::now();
    if (retention_anchored_) {
      const auto bound = retention_wall_anchor_ + std::chrono::duration_cast<SystemClock::duration>(
                                                      steady - retention_steady_anchor_);
      if (wall > bound) return bound;
    }
    retention_anchored_ = true;
    retention_wall_anchor_ = wall;
    retention_steady_anchor_ = steady;
    return wall;
  }

  // Runs on retention_strand_.
  void RetentionPass() {
    const auto now = SteadyClock::now();
    for (auto& ds : datasets_) {
      if (ds->quarantine_retention.count() > 0) {
        // Quarantine retention is an explicit operator policy (config quarantine.retention):
        // entries past it are deleted and counted in wharf_quarantine_expired_total.
        auto expired = store_->ExpireQuarantine(
            ds->name, RetentionWallClock() - ds->quarantine_retention, 100000);
        if (!expired.ok()) {
          spdlog::error("retention {}: expiring quarantine: {}", ds->name,
                        expired.status().ToString());
        } else if (*expired > 0) {
          spdlog::info("retention {}: {} quarantine entries expired", ds->name, *expired);
          if (ds->m_quarantine_expired != nullptr) {
            ds->m_quarantine_expired->Increment(static_cast<double>(*expired));
          }
        }
      }
      if (ds->m_quarantine_bytes != nullptr) {
        ds->m_quarantine_bytes->Set(static_cast<double>(store_->QuarantineBytes(ds->name)));
        ds->m_quarantine_entries->Set(static_cast<double>(store_->QuarantineEntries(ds->name)));
      }
      for (uint32_t p = 0; p < ds->partitions; ++p) {
        if (stopping_.load()) return;
        uint64_t delivered = UINT64_MAX;
        bool loaded = true;
        for (auto& w : ds->workers) {
          std::lock_guard<std::mutex> lock(w->mu);
          loaded = loaded && w->cursors_loaded;
          // The stored cursor, not the in-memory one: batches below a cursor not yet written
          // must stay, since a crash would resume delivery from the stored cursor.
          if (w->cursors_loaded) delivered = std::min(delivered, w->saved_next[p]);
        }
        if (!loaded || delivered == UINT64_MAX || delivered == 0) continue;
        auto deleted_batches = store_->DeleteBatchesBelow(ds->name, p, delivered);
        if (!deleted_batches.ok()) {
          spdlog::error("retention {}/{}: deleting batches: {}", ds->name, p,
                        deleted_batches.status().ToString());
          continue;
        }
        // Crash tests: batches below the delivered offset are gone, raw records not yet.
        if (*deleted_batches > 0) storage::MaybeCrashAt("pipeline.retention_after_delete_batches");
        // Raw records are kept `raw` after delivery: remember when each delivered offset was
        // first seen and delete only below the newest offset seen at least `raw` ago. After a
        // restart the clock starts again: records are kept longer, never shorter.
        auto& samples = ds->delivered_samples[p];
        if (samples.empty() || samples.back().second != delivered)
          samples.emplace_back(now, delivered);
        uint64_t safe = 0;
        while (!samples.empty() && now - samples.front().first >= options_.retention.raw) {
          safe = samples.front().second;
          if (samples.size() == 1) break;
          samples.pop_front();
        }
        if (safe == 0) continue;
        const uint64_t validated =
            store_->GetPartitionCounters(ds->name, p).validation.next_offset();
        safe = std::min(safe, validated);
        // No wall-clock cutoff: `safe` was delivered at least `raw` ago on the steady clock,
        // which is all raw retention promises. A cutoff of "now + 24h" stopped the deletes at
        // the first record ingested before the clock stepped back by more than a day, until the
        // wall clock caught up again (a day of raw records piling up on disk).
        auto deleted = store_->DeleteRawBelow(ds->name, p, safe, SystemClock::time_point::max(),
                                              options_.retention.max_raw_deletes_per_pass);
        if (!deleted.ok()) {
          spdlog::error("retention {}/{}: deleting raw records: {}", ds->name, p,
                        deleted.status().ToString());
          continue;
        }
        // Crash tests: a raw delete committed; the next pass must go on from its checkpoint.
        if (*deleted > 0) storage::MaybeCrashAt("pipeline.retention_after_delete_raw");
        if (*deleted > 0 && ds->m_retention != nullptr) {
          ds->m_retention->Increment(static_cast<double>(*deleted));
        }
      }
    }
  }

  storage::StagingStore* const store_;
  PipelineOptions options_;
  PipelineMetrics metrics_;
  asio::thread_pool pool_;
  asio::strand<asio::thread_pool::executor_type> retention_strand_;
  asio::steady_timer retention_timer_;
  // RetentionWallClock()'s anchor: a (system, steady) pair read together. retention_strand_ only.
  bool retention_anchored_ = false;
  SystemClock::time_point retention_wall_anchor_;
  SteadyClock::time_point retention_steady_anchor_;
  std::vector<std::unique_ptr<DatasetRuntime>> datasets_;  // immutable after Init()
  std::map<std::string, DatasetRuntime*> by_name_;         // immutable after Init()
  std::atomic<bool> stopping_{false};
  bool started_ = false;  // controlling thread only
  bool stopped_ = false;  // controlling thread only
};

}  // namespace

absl::StatusOr<std::unique_ptr<Pipeline>> Pipeline::Create(storage::StagingStore* store,
                                                           PipelineOptions options) {
  auto p = std::make_unique<PipelineImpl>(store, std::move(options));
  if (absl::Status st = p->Init(); !st.ok()) return st;
  return std::unique_ptr<Pipeline>(std::move(p));
}

}  // namespace wharf::pipeline
