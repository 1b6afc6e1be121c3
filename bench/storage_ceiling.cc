// wharf-storage-ceiling: how fast RocksDB alone stores the benchmark records with wharfd's
// options (storage::StagingRocksDbOptions, the function StagingStore::Open uses), in synced
// write batches of --batch-size records from --threads threads (one per producer). This is the
// reference for durable ingest: wharfd cannot store faster than the store underneath it.
//
//   wharf-storage-ceiling --dir DIR [--threads 4] [--seconds 10] [--batch-size 1000]
//                         [--record-size 200] [--durability sync|async]
//
// The values are exactly what wharfd stores per record (a StoredRecord with producer id,
// sequence and ingest time, CRC32C-framed by storage::EncodeCheckedTo) under the raw offset
// keys, one partition per thread, each into its partition's own raw column family
// ("raw/bench/<partition>", with storage::StagingRocksDbConfig::partition_cf) as wharfd lays them
// out. They are encoded before the clock starts, so
// only RocksDB is timed: no gRPC, no group-commit queue, no checkpoints. Output: a report and a
// line "RESULT key=value ...". DIR must not hold a store yet; it is left behind (the caller
// removes it).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "bench/record_generator.h"
#include "google/protobuf/util/time_util.h"
#include "rocksdb/db.h"
#include "rocksdb/write_batch.h"
#include "storage/codec.h"
#include "storage/keys.h"
#include "storage/rocksdb_options.h"
#include "wharf/v1/staging.pb.h"

namespace wharf::bench {
namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  std::string dir;
  int threads = 4;
  double seconds = 10;
  size_t batch_size = 1000;
  size_t record_size = 200;
  std::string durability = "sync";
};

// What one writer thread measured. Written by that thread only, read after join().
struct ThreadResult {
  uint64_t records = 0;
  uint64_t payload_bytes = 0;
  uint64_t stored_bytes = 0;
  std::vector<int64_t> write_us;  // latency of each db->Write
  std::string error;
};

// Distinct encoded values, cycled through under new keys: enough of them that the values are not
// all identical (compression sees realistic data), few enough to build quickly.
constexpr size_t kValuesPerThread = 8192;

void Writer(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* raw, int index, const Options& options,
            const Clock::time_point* deadline, std::atomic<int>* ready, std::atomic<bool>* go,
            ThreadResult* result) {
  RecordGenerator generator(index, options.record_size);
  const std::string producer_id = "ceiling-" + std::to_string(index);
  const int64_t now_us = std::chrono::duration_cast<std::chrono::microseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  std::vector<std::string> values(kValuesPerThread);
  std::vector<uint64_t> payload_sizes(kValuesPerThread);
  for (size_t i = 0; i < kValuesPerThread; ++i) {
    wharf::v1::StoredRecord stored;
    *stored.mutable_record() = generator.Next(i, now_us);
    payload_sizes[i] = stored.record().payload().size();
    stored.set_producer_id(producer_id);
    stored.set_sequence(i);
    *stored.mutable_ingest_time() =
        google::protobuf::util::TimeUtil::MicrosecondsToTimestamp(now_us);
    storage::EncodeCheckedTo(stored, &values[i]);
  }
  rocksdb::WriteOptions write_options;
  // The measured property: a synced write is on disk when Write() returns, as wharfd's group
  // commit in durability sync.
  write_options.sync = options.durability == "sync";
  const uint32_t partition = static_cast<uint32_t>(index);
  uint64_t offset = 0;
  ready->fetch_add(1);
  // `deadline` is written by the main thread before it sets `go` (release/acquire).
  while (!go->load(std::memory_order_acquire)) std::this_thread::yield();
  while (Clock::now() < *deadline) {
    rocksdb::WriteBatch batch;
    uint64_t payload = 0;
    uint64_t stored = 0;
    for (size_t i = 0; i < options.batch_size; ++i, ++offset) {
      const size_t v = offset % kValuesPerThread;
      batch.Put(raw, storage::OffsetKey("bench", partition, offset), values[v]);
      payload += payload_sizes[v];
      stored += values[v].size();
    }
    const Clock::time_point t0 = Clock::now();
    rocksdb::Status status = db->Write(write_options, &batch);
    result->write_us.push_back(
        std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count());
    if (!status.ok()) {
      result->error = status.ToString();
      return;
    }
    result->records += options.batch_size;
    result->payload_bytes += payload;
    result->stored_bytes += stored;
  }
}

double QuantileMs(const std::vector<int64_t>& sorted, double q) {
  if (sorted.empty()) return 0;
  size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(sorted.size())));
  rank = std::clamp<size_t>(rank, 1, sorted.size());
  return static_cast<double>(sorted[rank - 1]) / 1000.0;
}

int Main(int argc, char** argv) {
  CLI::App app{"wharf-storage-ceiling: RocksDB alone with wharfd's options"};
  Options options;
  app.add_option("--dir", options.dir, "directory for the RocksDB store (must not hold one)")
      ->required();
  app.add_option("--threads", options.threads, "writer threads (one partition each)")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  app.add_option("--seconds", options.seconds, "seconds to write for")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--batch-size", options.batch_size, "records per synced write batch")
      ->check(CLI::Range(size_t{1}, size_t{1000000}))
      ->capture_default_str();
  app.add_option("--record-size", options.record_size, "approximate bytes per JSON record")
      ->check(CLI::Range(size_t{1}, size_t{1} << 20))
      ->capture_default_str();
  app.add_option("--durability", options.durability, "sync (fsync per write) or async")
      ->check(CLI::IsMember({"sync", "async"}))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  storage::StagingRocksDbConfig config = storage::StagingRocksDbOptions(storage::StoreOptions{});
  config.db.error_if_exists = true;  // a leftover store would not be a like-for-like run
  // wharfd's layout: the fixed column families, then one raw column family per partition.
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors = config.column_families;
  const size_t first_raw = descriptors.size();
  for (int i = 0; i < options.threads; ++i) {
    descriptors.emplace_back(storage::RawColumnFamilyName("bench", static_cast<uint32_t>(i)),
                             config.partition_cf);
  }
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw_db = nullptr;
  rocksdb::Status status =
      rocksdb::DB::Open(config.db, options.dir, descriptors, &handles, &raw_db);
  if (!status.ok()) {
    std::fprintf(stderr, "wharf-storage-ceiling: opening %s: %s\n", options.dir.c_str(),
                 status.ToString().c_str());
    return 2;
  }
  std::unique_ptr<rocksdb::DB> db(raw_db);

  std::vector<ThreadResult> results(options.threads);
  std::vector<std::thread> threads;
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  Clock::time_point deadline;
  for (int i = 0; i < options.threads; ++i) {
    threads.emplace_back(Writer, db.get(), handles[first_raw + static_cast<size_t>(i)], i,
                         std::cref(options), &deadline, &ready, &go, &results[i]);
  }
  // The clock starts once every thread has encoded its values, so that only RocksDB is timed.
  while (ready.load() < options.threads) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const Clock::time_point start = Clock::now();
  deadline = start + std::chrono::duration_cast<Clock::duration>(
                         std::chrono::duration<double>(options.seconds));
  go.store(true, std::memory_order_release);
  for (std::thread& thread : threads) thread.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();

  uint64_t records = 0, payload = 0, stored = 0;
  std::vector<int64_t> writes;
  std::string error;
  for (const ThreadResult& r : results) {
    records += r.records;
    payload += r.payload_bytes;
    stored += r.stored_bytes;
    writes.insert(writes.end(), r.write_us.begin(), r.write_us.end());
    if (error.empty()) error = r.error;
  }
  std::sort(writes.begin(), writes.end());
  for (rocksdb::ColumnFamilyHandle* handle : handles) {
    db->DestroyColumnFamilyHandle(handle).PermitUncheckedError();
  }
  status = db->Close();
  if (error.empty() && !status.ok()) error = status.ToString();
  if (!error.empty()) {
    std::fprintf(stderr, "wharf-storage-ceiling: write failed: %s\n", error.c_str());
    return 1;
  }
  const double records_per_s = records / seconds;
  std::printf("threads %d, batches of %zu records, durability %s\n", options.threads,
              options.batch_size, options.durability.c_str());
  std::printf("%" PRIu64
              " records in %.3f s: %.0f records/s, %.2f MB/s payload, %.2f MB/s stored\n",
              records, seconds, records_per_s, payload / seconds / 1e6, stored / seconds / 1e6);
  std::printf("write latency p50 %.2f ms, p99 %.2f ms (%zu writes)\n", QuantileMs(writes, 0.5),
              QuantileMs(writes, 0.99), writes.size());
  std::printf(
      "RESULT threads=%d batch_size=%zu durability=%s records=%" PRIu64
      " seconds=%.3f records_per_s=%.2f mb_per_s=%.2f stored_mb_per_s=%.2f write_p50_ms=%.2f "
      "write_p99_ms=%.2f writes=%zu\n",
      options.threads, options.batch_size, options.durability.c_str(), records, seconds,
      records_per_s, payload / seconds / 1e6, stored / seconds / 1e6, QuantileMs(writes, 0.5),
      QuantileMs(writes, 0.99), writes.size());
  return 0;
}

}  // namespace
}  // namespace wharf::bench

int main(int argc, char** argv) { return wharf::bench::Main(argc, argv); }
