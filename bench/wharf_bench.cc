// wharf-bench: a load generator for wharfd.
//
// N producers (each with its own channel, stream and thread) send generated JSON records
// (id, ts, user, amount, two tags, a nested object and a filler padding the record to
// --record-size) for --duration seconds or --count records, optionally paced to --rate
// records/s overall. Every record carries "bench_ts_us", its send time in microseconds since
// the epoch; with --handoff-dir, a watcher reads the *.jsonl files a file destination writes
// there and measures handoff latency (file seen - bench_ts_us).
//
// Output: a human-readable report and a final line "RESULT key=value ...".

#include <rapidjson/document.h>
#include <signal.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench/record_generator.h"
#include "client/channel.h"
#include "client/producer.h"

namespace wharf::bench {
namespace {

using client::Producer;
using client::ProducerOptions;
using client::SendResult;
using Clock = std::chrono::steady_clock;

std::atomic<bool> g_interrupted{false};

void OnSignal(int /*signal*/) { g_interrupted.store(true); }

struct Options {
  std::string server = "127.0.0.1:7400";
  std::string dataset = "bench";
  int producers = 1;
  size_t record_size = 200;
  size_t batch_size = 100;
  double duration_s = 0;
  uint64_t count = 0;
  double rate = 0;
  bool lockstep = false;
  size_t max_inflight = 8;
  std::string handoff_dir;
  double handoff_timeout_s = 30;
};

int64_t NowMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Latency samples in microseconds. Thread safety: thread-safe.
class Samples {
 public:
  void Add(int64_t us) {
    std::lock_guard<std::mutex> lock(mu_);
    values_.push_back(us);
  }
  void AddAll(const std::vector<int64_t>& us) {
    std::lock_guard<std::mutex> lock(mu_);
    values_.insert(values_.end(), us.begin(), us.end());
  }
  size_t size() const {
    std::lock_guard<std::mutex> lock(mu_);
    return values_.size();
  }
  // Sorted copy.
  std::vector<int64_t> Sorted() const {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<int64_t> sorted = values_;
    std::sort(sorted.begin(), sorted.end());
    return sorted;
  }

 private:
  mutable std::mutex mu_;
  std::vector<int64_t> values_;
};

// The q-quantile (0 < q <= 1) of sorted samples, in milliseconds; 0 when empty.
double QuantileMs(const std::vector<int64_t>& sorted, double q) {
  if (sorted.empty()) return 0;
  size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(sorted.size())));
  rank = std::clamp<size_t>(rank, 1, sorted.size());
  return static_cast<double>(sorted[rank - 1]) / 1000.0;
}

std::string Ms(double ms) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%.2f", ms);
  return buffer;
}

struct Totals {
  std::atomic<uint64_t> records_sent{0};
  std::atomic<uint64_t> records_acked{0};
  std::atomic<uint64_t> bytes_acked{0};
  std::atomic<uint64_t> records_failed{0};
  std::atomic<uint64_t> retries{0};
  std::atomic<uint64_t> reconnects{0};
  std::atomic<int> errors_printed{0};
};

void ReportError(Totals& totals, const std::string& message) {
  if (totals.errors_printed.fetch_add(1) < 10) std::cerr << "wharf-bench: " << message << "\n";
}

// Counts `records` records as failed and reports `message`.
void ReportFailure(Totals& totals, uint64_t records, const std::string& message) {
  totals.records_failed += records;
  ReportError(totals, message);
}

// Sends `target` records (0: until `deadline`) from one producer.
void RunProducer(int index, const Options& options, uint64_t target, Clock::time_point start,
                 Clock::time_point deadline, Totals& totals, Samples& ack_latency) {
  client::ChannelOptions channel_options;
  channel_options.dedicated_connection = true;
  ProducerOptions producer_options;
  producer_options.dataset = options.dataset;
  producer_options.max_inflight_requests = options.max_inflight;
  producer_options.retry_timeout = std::chrono::seconds(60);
  auto producer = Producer::Create(client::CreateChannel(options.server, channel_options),
                                   std::move(producer_options));
  if (!producer.ok()) {
    ReportFailure(totals, target, producer.status().ToString());
    return;
  }
  RecordGenerator generator(index, options.record_size);
  const double rate = options.rate / options.producers;  // records/s of this producer
  // Paced producers tick at the same period; without an offset they would all send in the same
  // instant, every period, as no set of independent clients does (their requests then queue
  // behind each other's group commit and their generation competes for the same cores). Each
  // producer's ticks are offset by index/producers of the period (--lockstep: no offset).
  if (rate > 0 && !options.lockstep) {
    start += std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(
        static_cast<double>(options.batch_size) / rate * index / options.producers));
  }
  uint64_t sent = 0;
  while (!g_interrupted.load()) {
    if (target > 0 && sent >= target) break;
    if (target == 0 && Clock::now() >= deadline) break;
    size_t n = options.batch_size;
    if (target > 0) n = static_cast<size_t>(std::min<uint64_t>(n, target - sent));
    if (rate > 0) {
      const auto due = start + std::chrono::duration_cast<Clock::duration>(
                                   std::chrono::duration<double>(sent / rate));
      if (target == 0 && due >= deadline) break;
      std::this_thread::sleep_until(due);
    }
    std::vector<wharf::v1::Record> records;
    records.reserve(n);
    uint64_t bytes = 0;
    const int64_t now_us = NowMicros();
    for (size_t i = 0; i < n; ++i) {
      const uint64_t id = (static_cast<uint64_t>(index) << 40) | (sent + i);
      records.push_back(generator.Next(id, now_us));
      bytes += records.back().payload().size();
    }
    absl::Status status = (*producer)->Send(
        std::move(records), [&totals, &ack_latency, n, bytes](const SendResult& result) {
          if (result.status.ok()) {
            totals.records_acked += n;
            totals.bytes_acked += bytes;
            ack_latency.Add(std::chrono::duration_cast<std::chrono::microseconds>(
                                Clock::now() - result.queued_time)
                                .count());
          } else {
            ReportFailure(totals, n, result.status.ToString());
          }
        });
    sent += n;
    totals.records_sent += n;
    if (!status.ok()) {
      ReportFailure(totals, n, status.ToString());
      break;
    }
  }
  absl::Status flushed = (*producer)->Flush(std::chrono::minutes(10));
  if (!flushed.ok()) ReportError(totals, flushed.ToString());
  (*producer)->Close();
  const client::ProducerStats stats = (*producer)->stats();
  totals.retries += stats.retries;
  totals.reconnects += stats.reconnects;
}

// Polls a directory tree every 5 ms for new *.jsonl files and measures, for every line with a
// "bench_ts_us" of this run, (time the file was first seen) - bench_ts_us. Files are parsed on a
// second thread so that parsing does not delay the discovery of the next files.
// Thread safety: Stop() and the accessors may be called from any thread.
class HandoffWatcher {
 public:
  HandoffWatcher(std::string dir, int64_t run_start_us)
      : dir_(std::move(dir)), run_start_us_(run_start_us) {
    // Files of earlier runs are not ours.
    Scan(/*record=*/false);
    scanner_ = std::thread([this] { ScanLoop(); });
    parser_ = std::thread([this] { ParseLoop(); });
  }
  ~HandoffWatcher() { Stop(); }

  void Stop() {
    if (stop_scanning_.exchange(true)) return;
    scanner_.join();
    Scan(/*record=*/true);  // whatever arrived since the last poll
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_parsing_ = true;
    }
    cv_.notify_all();
    parser_.join();
  }
  uint64_t records() const { return latencies_.size(); }
  uint64_t files() const { return files_.load(); }
  const Samples& latencies() const { return latencies_; }

 private:
  struct Found {
    std::filesystem::path path;
    int64_t seen_us;
  };

  void ScanLoop() {
    while (!stop_scanning_.load()) {
      Scan(/*record=*/true);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

  // Called by one thread at a time (the constructor, the scanner, then Stop()).
  void Scan(bool record) {
    const int64_t now_us = NowMicros();
    std::vector<Found> found;
    std::error_code ec;
    std::filesystem::recursive_directory_iterator it(
        dir_, std::filesystem::directory_options::skip_permission_denied, ec);
    if (ec) return;
    for (; it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
      if (ec) break;
      const std::filesystem::path& path = it->path();
      if (path.extension() != ".jsonl" || path.filename().string().front() == '.') continue;
      if (!it->is_regular_file(ec)) continue;
      if (!seen_.insert(path.string()).second) continue;
      if (record) found.push_back(Found{path, now_us});
    }
    if (found.empty()) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (Found& f : found) queue_.push_back(std::move(f));
    }
    cv_.notify_all();
  }

  void ParseLoop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      cv_.wait(lock, [this] { return stop_parsing_ || !queue_.empty(); });
      if (queue_.empty()) return;
      Found found = std::move(queue_.front());
      queue_.erase(queue_.begin());
      lock.unlock();
      ReadFile(found);
      lock.lock();
    }
  }

  void ReadFile(const Found& found) {
    std::ifstream in(found.path, std::ios::binary);
    std::string line;
    std::vector<int64_t> latencies;
    rapidjson::Document document;
    while (std::getline(in, line)) {
      document.Parse(line.data(), line.size());
      if (document.HasParseError() || !document.IsObject()) continue;
      const auto member = document.FindMember("bench_ts_us");
      if (member == document.MemberEnd() || !member->value.IsInt64()) continue;
      const int64_t ts = member->value.GetInt64();
      if (ts < run_start_us_) continue;
      latencies.push_back(std::max<int64_t>(found.seen_us - ts, 0));
    }
    latencies_.AddAll(latencies);
    ++files_;
  }

  const std::string dir_;
  const int64_t run_start_us_;
  std::unordered_set<std::string> seen_;  // used by one thread at a time, see Scan()
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Found> queue_;   // guarded by mu_
  bool stop_parsing_ = false;  // guarded by mu_
  Samples latencies_;
  std::atomic<uint64_t> files_{0};
  std::atomic<bool> stop_scanning_{false};
  std::thread scanner_;
  std::thread parser_;
};

int Main(int argc, char** argv) {
  CLI::App app{"wharf-bench: load generator for wharfd"};
  Options options;
  app.add_option("--server", options.server, "wharfd address HOST:PORT")->capture_default_str();
  app.add_option("--dataset", options.dataset, "dataset to produce to")->capture_default_str();
  app.add_option("--producers", options.producers, "concurrent producers (one stream each)")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  app.add_option("--record-size", options.record_size, "approximate bytes per JSON record")
      ->check(CLI::Range(size_t{1}, size_t{64} << 20))
      ->capture_default_str();
  app.add_option("--batch-size", options.batch_size, "records per request")
      ->check(CLI::Range(size_t{1}, size_t{100000}))
      ->capture_default_str();
  auto* duration = app.add_option("--duration", options.duration_s,
                                  "seconds to send for (default 10 when --count is absent)")
                       ->check(CLI::PositiveNumber);
  app.add_option("--count", options.count, "total records to send")
      ->check(CLI::PositiveNumber)
      ->excludes(duration);
  app.add_option("--rate", options.rate, "target records/s overall; 0: as fast as possible")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_flag("--lockstep", options.lockstep,
               "with --rate: all producers send at the same instants (default: each producer's "
               "ticks offset by index/producers of the period, like independent clients)");
  app.add_option("--max-inflight", options.max_inflight, "requests in flight per producer")
      ->check(CLI::Range(size_t{1}, size_t{64}))
      ->capture_default_str();
  app.add_option("--handoff-dir", options.handoff_dir,
                 "directory a file destination writes *.jsonl to; measures handoff latency");
  app.add_option("--handoff-timeout", options.handoff_timeout_s,
                 "seconds to wait after the last ack for the records to reach --handoff-dir")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (options.count == 0 && options.duration_s == 0) options.duration_s = 10;

  struct sigaction action = {};
  action.sa_handler = OnSignal;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);

  {
    auto probe = client::CreateChannel(options.server);
    if (!probe->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
      std::cerr << "wharf-bench: cannot reach " << options.server << "\n";
      return 2;
    }
  }

  std::unique_ptr<HandoffWatcher> watcher;
  if (!options.handoff_dir.empty()) {
    std::error_code ec;
    if (!std::filesystem::is_directory(options.handoff_dir, ec)) {
      std::cerr << "wharf-bench: --handoff-dir " << options.handoff_dir << " is not a directory\n";
      return 2;
    }
    watcher = std::make_unique<HandoffWatcher>(options.handoff_dir, NowMicros());
  }

  Totals totals;
  Samples ack_latency;
  const Clock::time_point start = Clock::now();
  const Clock::time_point deadline = start + std::chrono::duration_cast<Clock::duration>(
                                                 std::chrono::duration<double>(options.duration_s));
  std::vector<std::thread> threads;
  for (int i = 0; i < options.producers; ++i) {
    uint64_t target = 0;
    if (options.count > 0) {
      target = options.count / options.producers +
               (static_cast<uint64_t>(i) < options.count % options.producers ? 1 : 0);
      if (target == 0) continue;
    }
    threads.emplace_back(RunProducer, i, std::cref(options), target, start, deadline,
                         std::ref(totals), std::ref(ack_latency));
  }
  for (std::thread& thread : threads) thread.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();

  if (watcher != nullptr) {
    const auto handoff_deadline =
        Clock::now() + std::chrono::duration_cast<Clock::duration>(
                           std::chrono::duration<double>(options.handoff_timeout_s));
    while (watcher->records() < totals.records_acked.load() && Clock::now() < handoff_deadline &&
           !g_interrupted.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    watcher->Stop();
  }

  const uint64_t records = totals.records_acked;
  const uint64_t bytes = totals.bytes_acked;
  const uint64_t failures = totals.records_failed;
  const double records_per_s = seconds > 0 ? records / seconds : 0;
  const double mb_per_s = seconds > 0 ? bytes / seconds / 1e6 : 0;
  const std::vector<int64_t> acks = ack_latency.Sorted();

  std::printf("records     %" PRIu64 " acked, %" PRIu64 " failed (%" PRIu64 " sent)\n", records,
              failures, totals.records_sent.load());
  std::printf("bytes       %" PRIu64 " (%.2f MB)\n", bytes, bytes / 1e6);
  std::printf("seconds     %.3f\n", seconds);
  std::printf("throughput  %.0f records/s, %.2f MB/s\n", records_per_s, mb_per_s);
  std::printf("ack latency p50 %s ms, p90 %s ms, p99 %s ms, max %s ms (%zu requests)\n",
              Ms(QuantileMs(acks, 0.5)).c_str(), Ms(QuantileMs(acks, 0.9)).c_str(),
              Ms(QuantileMs(acks, 0.99)).c_str(), Ms(QuantileMs(acks, 1.0)).c_str(), acks.size());
  std::string result = absl::StrCat(
      "RESULT records=", records, " bytes=", bytes, " seconds=", Ms(seconds),
      " records_per_s=", Ms(records_per_s), " mb_per_s=", Ms(mb_per_s),
      " ack_p50_ms=", Ms(QuantileMs(acks, 0.5)), " ack_p90_ms=", Ms(QuantileMs(acks, 0.9)),
      " ack_p99_ms=", Ms(QuantileMs(acks, 0.99)), " ack_p999_ms=", Ms(QuantileMs(acks, 0.999)),
      " ack_max_ms=", Ms(QuantileMs(acks, 1.0)));
  if (watcher != nullptr) {
    const std::vector<int64_t> handoff = watcher->latencies().Sorted();
    std::printf("handoff     p50 %s ms, p95 %s ms, p99 %s ms (%zu of %" PRIu64
                " records seen in %" PRIu64 " files)\n",
                Ms(QuantileMs(handoff, 0.5)).c_str(), Ms(QuantileMs(handoff, 0.95)).c_str(),
                Ms(QuantileMs(handoff, 0.99)).c_str(), handoff.size(), records, watcher->files());
    absl::StrAppend(&result, " handoff_records=", handoff.size(),
                    " handoff_p50_ms=", Ms(QuantileMs(handoff, 0.5)),
                    " handoff_p90_ms=", Ms(QuantileMs(handoff, 0.9)),
                    " handoff_p95_ms=", Ms(QuantileMs(handoff, 0.95)),
                    " handoff_p99_ms=", Ms(QuantileMs(handoff, 0.99)),
                    " handoff_p999_ms=", Ms(QuantileMs(handoff, 0.999)));
  }
  std::printf("retries     %" PRIu64 " (%" PRIu64 " reconnects)\n", totals.retries.load(),
              totals.reconnects.load());
  absl::StrAppend(&result, " failures=", failures, " retries=", totals.retries.load(),
                  " reconnects=", totals.reconnects.load(), " producers=", options.producers);
  std::printf("%s\n", result.c_str());
  return failures == 0 ? 0 : 1;
}

}  // namespace
}  // namespace wharf::bench

int main(int argc, char** argv) { return wharf::bench::Main(argc, argv); }
