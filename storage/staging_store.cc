#include "storage/staging_store.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>

#include "absl/base/thread_annotations.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/util/time_util.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "rocksdb/db.h"
#include "rocksdb/env.h"
#include "rocksdb/file_system.h"
#include "rocksdb/filter_policy.h"
#include "rocksdb/listener.h"
#include "rocksdb/options.h"
#include "rocksdb/perf_context.h"
#include "rocksdb/perf_level.h"
#include "rocksdb/slice_transform.h"
#include "rocksdb/table.h"
#include "rocksdb/utilities/options_util.h"
#include "rocksdb/write_batch.h"
#include "rocksdb/write_buffer_manager.h"
#include "spdlog/spdlog.h"
#include "storage/codec.h"
#include "storage/corruption_logger.h"
#include "storage/crc32c.h"
#include "storage/flushed_sequence.h"
#include "storage/keys.h"
#include "storage/rocksdb_options.h"

// _GLIBCXX_TSAN: defined in the TSan build (CMakeLists.txt, WHARF_SANITIZE=thread).
#ifdef _GLIBCXX_TSAN
// ThreadSanitizer's runtime interface (libtsan), used around DB::Write in WriteDb().
extern "C" void __tsan_ignore_thread_begin();
extern "C" void __tsan_ignore_thread_end();
#endif

namespace wharf::storage {
namespace {

using Clock = std::chrono::system_clock;
using google::protobuf::util::TimeUtil;

// Cached producer windows beyond this count are dropped (they are reloaded from the store on
// the next request of that producer): bounds memory with many producers.
constexpr size_t kMaxCachedProducers = 100000;

// The current time at full precision. TimeUtil::GetCurrentTime() of protobuf 3.21 truncates to
// whole seconds, which made ingest times up to 1 s early (retention then deleted records
// ingested after its cutoff).
google::protobuf::Timestamp NowTimestamp() {
  return TimeUtil::NanosecondsToTimestamp(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
          .count());
}

absl::Status FromRocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return absl::OkStatus();
  std::string msg = absl::StrCat(std::string(what), ": ", s.ToString());
  if (s.IsCorruption()) return absl::DataLossError(msg);
  if (s.IsNotFound()) return absl::NotFoundError(msg);
  if (s.IsNoSpace()) return absl::ResourceExhaustedError(msg);
  if (s.IsIOError()) return absl::UnavailableError(msg);
  if (s.IsInvalidArgument()) return absl::InvalidArgumentError(msg);
  return absl::InternalError(msg);
}

// fsync of a directory: makes the entries created in it durable.
absl::Status SyncDirectory(const std::filesystem::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot open directory ", dir.string(), ": ", std::strerror(errno)));
  }
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot fsync directory ", dir.string(), ": ", std::strerror(err)));
  }
  return absl::OkStatus();
}

// Wire-format tags (field number << 3 | wire type) of the StoredRecord fields an append writes
// (proto/wharf/v1/record.proto): record = 1 and ingest_time = 4 are length-delimited (2),
// producer_id = 2 a string (2), sequence = 3 a varint (0).
constexpr uint8_t kRecordTag = (1 << 3) | 2;
constexpr uint8_t kProducerIdTag = (2 << 3) | 2;
constexpr uint8_t kSequenceTag = (3 << 3) | 0;
constexpr uint8_t kIngestTimeTag = (4 << 3) | 2;

// Protobuf base-128 varint.
void AppendVarint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

uint64_t RecordBytes(const wharf::v1::Record& r) {
  uint64_t n = r.payload().size() + r.key().size();
  for (const auto& [k, v] : r.headers()) n += k.size() + v.size();
  return n;
}

// Metrics of the store. Thread safety: prometheus-cpp metrics are thread-safe.
struct StoreMetrics {
  explicit StoreMetrics(prometheus::Registry* registry) {
    if (registry == nullptr) return;
    group_commits = &prometheus::BuildCounter()
                         .Name("wharf_store_group_commits_total")
                         .Help("Group commits written to the staging store")
                         .Register(*registry)
                         .Add({});
    write_errors = &prometheus::BuildCounter()
                        .Name("wharf_store_write_errors_total")
                        .Help("Failed writes to the staging store")
                        .Register(*registry)
                        .Add({});
    group_requests = &prometheus::BuildHistogram()
                          .Name("wharf_store_group_commit_requests")
                          .Help("Produce requests merged into one group commit")
                          .Register(*registry)
                          .Add({}, prometheus::Histogram::BucketBoundaries{1, 2, 4, 8, 16, 32, 64,
                                                                           128, 256, 512, 1024});
    write_seconds = &prometheus::BuildHistogram()
                         .Name("wharf_store_group_commit_seconds")
                         .Help("Time to write (and fsync, in sync mode) one group commit")
                         .Register(*registry)
                         .Add({}, prometheus::Histogram::BucketBoundaries{
                                      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                      0.05, 0.1, 0.25, 0.5, 1});
    // The ack latency of a produce request, split by stage (docs/ARCHITECTURE.md, "Ack
    // latency"): queue wait, then the group commit's build, its wait in RocksDB's write queue,
    // its WAL write + fsync and its memtable insert, then the answers.
    const prometheus::Histogram::BucketBoundaries stage_buckets{
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1};
    queue_seconds = &prometheus::BuildHistogram()
                         .Name("wharf_store_queue_wait_seconds")
                         .Help("Time a produce request waited for its group commit to start")
                         .Register(*registry)
                         .Add({}, stage_buckets);
    build_seconds = &prometheus::BuildHistogram()
                         .Name("wharf_store_group_commit_build_seconds")
                         .Help("Time to check and encode one group commit's write batch")
                         .Register(*registry)
                         .Add({}, stage_buckets);
    write_wait_seconds =
        &prometheus::BuildHistogram()
             .Name("wharf_store_group_commit_wait_seconds")
             .Help(
                 "Time a group commit waited in RocksDB's write queue (behind other writes) "
                 "and in write stalls, included in wharf_store_group_commit_seconds")
             .Register(*registry)
             .Add({}, stage_buckets);
    wal_seconds = &prometheus::BuildHistogram()
                       .Name("wharf_store_group_commit_wal_seconds")
                       .Help(
                           "Time to write (and fsync, in sync mode) a group commit's WAL "
                           "record, included in wharf_store_group_commit_seconds")
                       .Register(*registry)
                       .Add({}, stage_buckets);
    memtable_seconds = &prometheus::BuildHistogram()
                            .Name("wharf_store_group_commit_memtable_seconds")
                            .Help(
                                "Time to insert a group commit into the memtables, included "
                                "in wharf_store_group_commit_seconds")
                            .Register(*registry)
                            .Add({}, stage_buckets);
    answer_seconds = &prometheus::BuildHistogram()
                          .Name("wharf_store_group_commit_answer_seconds")
                          .Help(
                              "Time from a group commit's completion to its last request "
                              "answered (listeners and callbacks)")
                          .Register(*registry)
                          .Add({}, stage_buckets);
    pending_bytes = &prometheus::BuildGauge()
                         .Name("wharf_store_pending_bytes")
                         .Help("Bytes of produce requests waiting for the group-commit writer")
                         .Register(*registry)
                         .Add({});
  }
  prometheus::Counter* group_commits = nullptr;
  prometheus::Counter* write_errors = nullptr;
  prometheus::Histogram* group_requests = nullptr;
  prometheus::Histogram* write_seconds = nullptr;
  prometheus::Gauge* pending_bytes = nullptr;
  prometheus::Histogram* queue_seconds = nullptr;
  prometheus::Histogram* build_seconds = nullptr;
  prometheus::Histogram* write_wait_seconds = nullptr;
  prometheus::Histogram* wal_seconds = nullptr;
  prometheus::Histogram* memtable_seconds = nullptr;
  prometheus::Histogram* answer_seconds = nullptr;
};

// One raw record of a group commit, waiting to be put into the write batch: its encoded fields
// (in the EncodedAppend's buffer), their CRC32C and the offset assigned.
struct RawPut {
  const char* body = nullptr;
  size_t size = 0;
  uint32_t crc = 0;
  uint64_t offset = 0;
};

struct PendingAppend {
  EncodedAppend append;
  AppendCallback done;
  uint64_t bytes = 0;
  // When Enqueue() queued it (wharf_store_queue_wait_seconds).
  std::chrono::steady_clock::time_point enqueued;
  // Set for a quarantine replay instead of a producer's request: the tokens to replay.
  std::optional<std::vector<std::string>> replay;
};

struct DatasetState {
  DatasetOptions options;
  std::vector<PartitionCounters> partitions;  // guarded by StagingStoreImpl::counters_mu_
  uint64_t round_robin = 0;                   // writer thread only
  uint64_t quarantine_entries = 0;            // guarded by StagingStoreImpl::counters_mu_
  uint64_t quarantine_bytes = 0;              // guarded by StagingStoreImpl::counters_mu_
  // The column families of each partition's raw records and batches (rocksdb_options.h), indexed
  // by partition. Set at Open, immutable after.
  std::vector<rocksdb::ColumnFamilyHandle*> raw_cfs;
  std::vector<rocksdb::ColumnFamilyHandle*> batches_cfs;
};

// Free disk space an open needs beyond the WAL files it replays: the new MANIFEST and OPTIONS
// files (the OPTIONS file holds every column family's options, about 2.5 KiB each) and the LOG.
constexpr uint64_t kOpenHeadroomBytes = 4ull << 20;

// Bytes of one write batch of the legacy-layout migration: bounded so that copying a large
// store never holds it in memory at once.
constexpr size_t kMigrationBatchBytes = 4 << 20;

// Control-plane values live in the meta column family under this prefix, apart from the
// dataset registrations ("dataset/...").
const std::string kMetaPrefix = "ctl/";
std::string MetaKey(std::string_view key) { return absl::StrCat(kMetaPrefix, std::string(key)); }

// Quarantine key: the record's offset key, plus the destination for records a destination
// refused (several destinations may refuse the same record).
std::string QuarantineKey(std::string_view dataset, uint32_t partition, uint64_t offset,
                          std::string_view destination) {
  std::string key = OffsetKey(dataset, partition, offset);
  key.append(destination);
  return key;
}

// Parses "partition/offset[/destination]".
absl::Status ParseQuarantineToken(std::string_view token, uint32_t* partition, uint64_t* offset,
                                  std::string* destination) {
  std::vector<std::string> parts = absl::StrSplit(std::string(token), absl::MaxSplits('/', 2));
  if (parts.size() < 2 || !absl::SimpleAtoi(parts[0], partition) ||
      !absl::SimpleAtoi(parts[1], offset) || (parts.size() == 3 && parts[2].empty())) {
    return absl::InvalidArgumentError(
        absl::StrCat("malformed quarantine token \"", std::string(token),
                     "\" (expected partition/offset or partition/offset/destination)"));
  }
  destination->clear();
  if (parts.size() == 3) *destination = parts[2];
  return absl::OkStatus();
}

std::string QuarantineToken(const wharf::v1::QuarantineEntry& e) {
  if (e.reason() == wharf::v1::DESTINATION_REJECTED && !e.destination().empty()) {
    return absl::StrCat(e.partition(), "/", e.offset(), "/", e.destination());
  }
  return absl::StrCat(e.partition(), "/", e.offset());
}

class StagingStoreImpl;

// Forwards RocksDB background errors (a failed flush, compaction or WAL sync) to the store.
// Thread safety: called by RocksDB from its threads.
class BackgroundErrorListener final : public rocksdb::EventListener {
 public:
  explicit BackgroundErrorListener(StagingStoreImpl* store) : store_(store) {}
  const char* Name() const override { return "WharfBackgroundErrorListener"; }
  void OnBackgroundError(rocksdb::BackgroundErrorReason reason, rocksdb::Status* error) override;

 private:
  StagingStoreImpl* const store_;
};

class StagingStoreImpl final : public StagingStore {
 public:
  explicit StagingStoreImpl(StoreOptions options)
      : options_(std::move(options)), metrics_(options_.metrics_registry) {}

  ~StagingStoreImpl() override {
    Stop();
    for (auto* h : handles_) {
      if (h != nullptr) db_->DestroyColumnFamilyHandle(h);
    }
    handles_.clear();
    if (db_ != nullptr) {
      // Close() flushes nothing by itself; the WAL holds everything written.
      db_->Close().PermitUncheckedError();
      delete db_;
    }
  }

  absl::Status OpenDb() {
    // The options (durability-relevant WAL recovery mode and paranoid checks included) live in
    // rocksdb_options.cc, shared with the storage ceiling benchmark.
    StagingRocksDbConfig config = StagingRocksDbOptions(options_);
    rocksdb::DBOptions& db_options = config.db;
    if (options_.file_system != nullptr) {
      // A test file system (power loss / I/O error simulation); it must outlive the DB, which
      // the destructor closes before env_ goes.
      env_ = rocksdb::NewCompositeEnv(options_.file_system);
      db_options.env = env_.get();
    }
    // A RocksDB background error (failed flush or compaction, failed WAL sync) puts the DB in
    // read-only mode; the store records it and refuses writes until it is reopened.
    db_options.listeners.push_back(std::make_shared<BackgroundErrorListener>(this));
    // RocksDB's own LOG file, behind a logger that notes the files named by corruption reports:
    // a damaged WAL record fails the open with a Status that does not name the file.
    std::shared_ptr<rocksdb::Logger> file_logger;
    if (!rocksdb::CreateLoggerFromOptions(options_.path, db_options, &file_logger).ok()) {
      file_logger.reset();  // no LOG file: RocksDB's messages are dropped, nothing else changes
    }
    auto corruption_logger = std::make_shared<CorruptionNotingLogger>(file_logger);
    db_options.info_log = corruption_logger;
    // Guard against a MANIFEST that RocksDB reads short without an error (see
    // flushed_sequence.h). CURRENT is read before the open, which writes a new MANIFEST.
    const std::string manifest = CurrentManifestName(options_.path);
    absl::StatusOr<uint64_t> flushed = ReadFlushedSequence(options_.path);
    if (!flushed.ok()) return flushed.status();
    db_options.listeners.push_back(
        std::make_shared<FlushedSequenceRecorder>(options_.path, *flushed));
    partition_cf_options_ = config.partition_cf;
    // An open writes: the WAL's content into level-0 files (one per column family holding
    // unflushed data), a new MANIFEST, WAL and OPTIONS file. On a disk without room for that,
    // Debian's RocksDB (built with assertions) may abort on an ENOSPC path instead of failing the
    // open (seen when reopening on a completely full disk): refuse cleanly first. Nothing is
    // written, so the store is unchanged and opens once space is freed.
    if (std::filesystem::exists(options_.path + "/CURRENT")) {
      uint64_t wal_bytes = 0;
      std::error_code ec;
      for (const auto& entry : std::filesystem::directory_iterator(options_.path, ec)) {
        if (entry.path().extension() == ".log") wal_bytes += entry.file_size(ec);
      }
      const uint64_t needed = wal_bytes + kOpenHeadroomBytes;
      if (const uint64_t free_bytes = DiskFreeBytes(); free_bytes < needed) {
        return absl::UnavailableError(
            absl::StrCat("not enough free disk space to open the staging store ", options_.path,
                         ": ", free_bytes, " bytes free, recovery needs about ", needed, " (",
                         wal_bytes, " bytes of WAL to replay); free some space and start again"));
      }
    }
    // Every column family the store holds is opened (RocksDB refuses an open that leaves one
    // out): the fixed ones, the per-partition ones of every dataset ever stored (configured or
    // not: nothing is dropped silently) and the legacy "raw"/"batches" ones, migrated later by
    // MigrateLegacyLayout(). A store without CURRENT is new.
    std::vector<std::string> existing;
    rocksdb::Status s = rocksdb::DB::ListColumnFamilies(db_options, options_.path, &existing);
    if (!s.ok() && db_options.env->FileExists(options_.path + "/CURRENT").IsNotFound()) {
      existing.clear();
      s = rocksdb::Status::OK();
    }
    // The column-family guard (flushed_sequence.h): every column family listed when it was
    // created must still be in the MANIFEST, else the MANIFEST was read short.
    if (s.ok()) {
      absl::StatusOr<std::vector<std::string>> listed = ReadColumnFamilyList(options_.path);
      if (!listed.ok()) return listed.status();
      // What the file holds: RecordColumnFamilies() rewrites it only when the set changes.
      recorded_cfs_ = *listed;
      std::sort(recorded_cfs_.begin(), recorded_cfs_.end());
      std::vector<std::string> lost;
      for (const std::string& name : *listed) {
        if (std::find(existing.begin(), existing.end(), name) == existing.end()) {
          lost.push_back(name);
        }
      }
      if (!lost.empty()) {
        return absl::DataLossError(absl::StrCat(
            "opening staging store ", options_.path, ": column families ",
            absl::StrJoin(lost, ", "), " are listed in ", kColumnFamiliesFile,
            " but missing from the MANIFEST: the MANIFEST lost track of column families; "
            "damaged file: ",
            options_.path, "/", manifest));
      }
    }
    std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
    if (s.ok()) {
      cfs = StagingColumnFamilyDescriptors(config, existing);
      std::vector<rocksdb::ColumnFamilyHandle*> handles;
      s = rocksdb::DB::Open(db_options, options_.path, cfs, &handles, &db_);
      if (s.ok()) handles_ = handles;
    }
    if (!s.ok()) {
      db_ = nullptr;
      const std::string what = absl::StrCat("opening staging store ", options_.path);
      if (s.IsCorruption()) {
        return absl::DataLossError(
            DescribeCorruption(what, s, DamagedFilesFor(s, *corruption_logger, options_.path)));
      }
      return FromRocks(s, what);
    }
    for (size_t i = 0; i < handles_.size(); ++i) cf_by_name_[cfs[i].name] = handles_[i];
    if (const uint64_t recovered = db_->GetLatestSequenceNumber(); recovered < *flushed) {
      return absl::DataLossError(absl::StrCat(
          "opening staging store ", options_.path, ": it recovered to sequence ", recovered,
          " but data up to sequence ", *flushed, " had been flushed to SST files (",
          kFlushedSequenceFile,
          "): the MANIFEST lost track of SST files; damaged file: ", options_.path, "/", manifest));
    }
    if (absl::Status st = RecordColumnFamilies(); !st.ok()) return st;
    quarantine_ = handles_[kQuarantineColumnFamily];
    checkpoints_ = handles_[kCheckpointsColumnFamily];
    producers_ = handles_[kProducersColumnFamily];
    meta_ = handles_[kMetaColumnFamily];
    return absl::OkStatus();
  }

  // Creates the per-partition column families in `names` that the store does not hold yet.
  // Durability: RocksDB records a new column family in the MANIFEST and syncs it before
  // returning, so no write into it (logged in the WAL under its id) can outlive its creation
  // across kill -9 or power loss.
  absl::Status CreatePartitionColumnFamilies(const std::vector<std::string>& names) {
    std::vector<std::string> missing;
    for (const std::string& n : names) {
      if (cf_by_name_.count(n) == 0) missing.push_back(n);
    }
    if (missing.empty()) return absl::OkStatus();
    std::vector<rocksdb::ColumnFamilyHandle*> created;
    rocksdb::Status s = db_->CreateColumnFamilies(partition_cf_options_, missing, &created);
    // On failure RocksDB returns the handles it did create: keep them so that they are released.
    for (size_t i = 0; i < created.size(); ++i) {
      handles_.push_back(created[i]);
      cf_by_name_[created[i]->GetName()] = created[i];
    }
    if (!s.ok()) return FromRocks(s, "creating per-partition column families");
    // Listed before anything is written into them (the MANIFEST records are synced by now).
    return RecordColumnFamilies();
  }

  // Writes the column-family guard (flushed_sequence.h) with every column family open now,
  // `except` one about to be dropped. Durability: called only after RocksDB synced the MANIFEST
  // records creating them, and before a drop, so the list never names a column family that a
  // healthy MANIFEST does not hold.
  absl::Status RecordColumnFamilies(std::string_view except = {}) {
    std::vector<std::string> names;
    for (const auto& [name, handle] : cf_by_name_) {
      if (name != except) names.push_back(name);
    }
    std::sort(names.begin(), names.end());
    if (names == recorded_cfs_) return absl::OkStatus();
    if (absl::Status st = WriteColumnFamilyList(options_.path, names); !st.ok()) return st;
    recorded_cfs_ = std::move(names);
    return absl::OkStatus();
  }

  // Moves the content of the legacy "raw" and "batches" column families (one column family for
  // every partition, the layout before per-partition column families) into the per-partition
  // ones, then drops them. Runs in Open, before the writer starts or anyone reads.
  //
  // Crash safety: entries are copied unchanged (same key, same value) with Puts in bounded write
  // batches, each synced, and the legacy column family is dropped (a synced MANIFEST record)
  // only after the last copy is durable. A crash at any point leaves the legacy column family
  // whole; the next open simply copies again, and re-putting an identical entry is idempotent.
  // Nothing else writes to the per-partition column families before the migration has ended.
  absl::Status MigrateLegacyLayout() {
    for (const char* legacy : {kLegacyRawColumnFamily, kLegacyBatchesColumnFamily}) {
      auto found = cf_by_name_.find(legacy);
      if (found == cf_by_name_.end()) continue;
      rocksdb::ColumnFamilyHandle* from = found->second;
      const bool raw = std::string_view(legacy) == kLegacyRawColumnFamily;
      uint64_t copied = 0;
      {
        rocksdb::ReadOptions ro;
        ro.verify_checksums = true;
        ro.fill_cache = false;
        std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, from));
        rocksdb::WriteBatch wb;
        rocksdb::WriteOptions wo;
        wo.sync = true;
        const std::string what = absl::StrCat("migrating column family \"", legacy, "\"");
        for (it->SeekToFirst(); it->Valid(); it->Next()) {
          const std::string_view key(it->key().data(), it->key().size());
          auto k = DecodeOffsetKey(key);
          if (!k || !ValidateName("dataset", k->dataset).ok()) {
            return absl::DataLossError(absl::StrCat(
                what, " of staging store ", options_.path, ": malformed key \"",
                absl::CHexEscape(std::string(key)), "\"; the column family was left as it was"));
          }
          const std::string name = raw ? RawColumnFamilyName(k->dataset, k->partition)
                                       : BatchesColumnFamilyName(k->dataset, k->partition);
          if (absl::Status st = CreatePartitionColumnFamilies({name}); !st.ok()) return st;
          wb.Put(cf_by_name_[name], it->key(), it->value());
          ++copied;
          if (wb.GetDataSize() >= kMigrationBatchBytes) {
            if (absl::Status st = WriteDb(wo, &wb, what); !st.ok()) return st;
            wb.Clear();
          }
        }
        if (absl::Status st = FromRocks(it->status(), what); !st.ok()) return st;
        if (wb.Count() > 0) {
          if (absl::Status st = WriteDb(wo, &wb, what); !st.ok()) return st;
        }
      }
      if (absl::Status st = RecordColumnFamilies(legacy); !st.ok()) return st;
      if (absl::Status st =
              FromRocks(db_->DropColumnFamily(from), "dropping a migrated column family");
          !st.ok()) {
        return st;
      }
      handles_.erase(std::find(handles_.begin(), handles_.end(), from));
      cf_by_name_.erase(found);
      db_->DestroyColumnFamilyHandle(from).PermitUncheckedError();
      spdlog::info(
          "staging store {}: moved {} entries of column family \"{}\" into per-partition "
          "column families",
          options_.path, copied, legacy);
    }
    return absl::OkStatus();
  }

  absl::Status LoadDatasets() {
    rocksdb::WriteBatch wb;
    for (const auto& ds : options_.datasets) {
      if (absl::Status st = ValidateName("dataset", ds.name); !st.ok()) return st;
      if (ds.partitions == 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("dataset ", ds.name, ": partitions must be at least 1"));
      }
      if (datasets_.count(ds.name) != 0) {
        return absl::InvalidArgumentError(absl::StrCat("dataset ", ds.name, " declared twice"));
      }
      std::string value;
      rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), meta_, DatasetMetaKey(ds.name), &value);
      if (s.ok()) {
        wharf::v1::DatasetMeta meta;
        if (!meta.ParseFromString(value)) {
          return absl::DataLossError(
              absl::StrCat("dataset ", ds.name, ": metadata does not parse"));
        }
        if (meta.partitions() != ds.partitions) {
          return absl::FailedPreconditionError(absl::StrCat(
              "dataset ", ds.name, " was created with ", meta.partitions(),
              " partitions; the config says ", ds.partitions,
              ". Changing the partition count of a dataset with stored data is not supported"));
        }
      } else if (s.IsNotFound()) {
        wharf::v1::DatasetMeta meta;
        meta.set_name(ds.name);
        meta.set_partitions(ds.partitions);
        *meta.mutable_create_time() = NowTimestamp();
        wb.Put(meta_, DatasetMetaKey(ds.name), meta.SerializeAsString());
      } else {
        return FromRocks(s, "reading dataset metadata");
      }
      auto state = std::make_unique<DatasetState>();
      state->options = ds;
      state->partitions.resize(ds.partitions);
      for (uint32_t p = 0; p < ds.partitions; ++p) {
        PartitionCounters& c = state->partitions[p];
        if (absl::Status st = GetProto(checkpoints_, IngestStateKey(ds.name, p), &c.ingest);
            !st.ok()) {
          return st;
        }
        if (absl::Status st = GetProto(checkpoints_, ValidationKey(ds.name, p), &c.validation);
            !st.ok()) {
          return st;
        }
        if (absl::Status st = GetProto(checkpoints_, RetentionKey(ds.name, p), &c.retention);
            !st.ok()) {
          return st;
        }
      }
      // Quarantine size, for its quota and metrics: one scan at open (quarantine is small next
      // to the landing zone; only values' sizes are read).
      {
        std::string qprefix(ds.name);
        qprefix.push_back('\0');
        std::string qend(ds.name);
        qend.push_back('\1');
        rocksdb::Slice qupper(qend);
        rocksdb::ReadOptions ro;
        ro.iterate_upper_bound = &qupper;
        std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, quarantine_));
        for (it->Seek(qprefix); it->Valid(); it->Next()) {
          ++state->quarantine_entries;
          state->quarantine_bytes += it->value().size();
        }
        if (absl::Status st = FromRocks(it->status(), "reading quarantine"); !st.ok()) return st;
      }
      dataset_list_.push_back(ds);
      datasets_.emplace(ds.name, std::move(state));
    }
    // Every configured partition gets its raw and batches column families (created only after
    // every dataset passed the checks above, so a refused config creates nothing).
    std::vector<std::string> names;
    for (const auto& ds : options_.datasets) {
      for (uint32_t p = 0; p < ds.partitions; ++p) {
        names.push_back(RawColumnFamilyName(ds.name, p));
        names.push_back(BatchesColumnFamilyName(ds.name, p));
      }
    }
    if (absl::Status st = CreatePartitionColumnFamilies(names); !st.ok()) return st;
    for (auto& [name, state] : datasets_) {
      for (uint32_t p = 0; p < state->options.partitions; ++p) {
        state->raw_cfs.push_back(cf_by_name_.at(RawColumnFamilyName(name, p)));
        state->batches_cfs.push_back(cf_by_name_.at(BatchesColumnFamilyName(name, p)));
      }
    }
    if (wb.Count() > 0) {
      rocksdb::WriteOptions wo;
      // Durability: dataset registrations are synced so the partition count is fixed before any
      // record of the dataset can be acknowledged.
      wo.sync = true;
      if (absl::Status st = FromRocks(db_->Write(wo, &wb), "registering datasets"); !st.ok()) {
        return st;
      }
    }
    return absl::OkStatus();
  }

  absl::Status Start() override {
    std::lock_guard<std::mutex> lock(queue_mu_);
    if (writer_.joinable() || stopping_) {
      return absl::FailedPreconditionError("staging store already started or stopped");
    }
    writer_ = std::thread([this] {
      pthread_setname_np(pthread_self(), "wharf-writer");  // for top -H, perf, gdb
      WriterLoop();
    });
    return absl::OkStatus();
  }

  void Stop() override {
    {
      std::lock_guard<std::mutex> lock(queue_mu_);
      stopping_ = true;
    }
    queue_cv_.notify_all();
    if (writer_.joinable()) writer_.join();
    // A queue left by a store that was never started: answer, never drop a callback.
    std::deque<PendingAppend> left;
    {
      std::lock_guard<std::mutex> lock(queue_mu_);
      left.swap(queue_);
      pending_bytes_ = 0;
    }
    for (auto& p : left) {
      AppendResult r;
      r.status = absl::UnavailableError("wharfd is shutting down; nothing was stored");
      p.done(std::move(r));
    }
  }

  void SetAppendListener(AppendListener listener) override { listener_ = std::move(listener); }

  void AppendEncoded(EncodedAppend append, AppendCallback done) override {
    PendingAppend pending;
    pending.bytes = append.bytes;
    pending.append = std::move(append);
    pending.done = std::move(done);
    Enqueue(std::move(pending));
  }

  void Enqueue(PendingAppend pending) {
    const uint64_t bytes = pending.bytes;
    AppendResult refused;
    {
      std::lock_guard<std::mutex> lock(queue_mu_);
      if (stopping_) {
        refused.status = absl::UnavailableError("wharfd is shutting down; nothing was stored");
      } else if (!writer_.joinable()) {
        refused.status = absl::UnavailableError("staging store not started");
      } else if (pending_bytes_ > 0 && pending_bytes_ + bytes > options_.max_pending_bytes) {
        // Memory bound: the writer is behind by more than max_pending_bytes.
        refused.status = absl::ResourceExhaustedError(
            absl::StrCat("ingest queue full (", pending_bytes_, " bytes waiting for the disk)"));
        refused.retry_after = std::chrono::milliseconds(100);
      } else {
        pending_bytes_ += bytes;
        pending.enqueued = std::chrono::steady_clock::now();
        queue_.push_back(std::move(pending));
        if (metrics_.pending_bytes)
          metrics_.pending_bytes->Set(static_cast<double>(pending_bytes_));
        queue_cv_.notify_one();
        return;
      }
    }
    pending.done(std::move(refused));
  }

  absl::Status ReadRaw(std::string_view dataset, uint32_t partition, uint64_t from, uint64_t to,
                       size_t max_records, uint64_t max_bytes,
                       std::vector<RawRecord>* out) override {
    out->clear();
    if (from >= to) return absl::OkStatus();
    rocksdb::ColumnFamilyHandle* cf = PartitionCf(dataset, partition, /*raw=*/true);
    if (cf == nullptr) return absl::OkStatus();  // an unknown partition holds nothing
    const std::string start = OffsetKey(dataset, partition, from);
    const std::string end = OffsetKey(dataset, partition, to);
    rocksdb::Slice upper(end);
    rocksdb::ReadOptions ro;
    ro.iterate_upper_bound = &upper;
    ro.verify_checksums = true;
    // Raw records are read once, in order (by validation; retention and replay read a few), so
    // their data blocks are not kept in the block cache: filling it with them only evicted the
    // index blocks and the batches delivery reads back, and when validation catches up on a
    // backlog the churn of blocks through the cache held tens of MiB of freed memory in the
    // allocator (docs/BENCHMARKS.md, "Memtable budget, SCHED_BATCH and raw reads past the cache").
    // A step that resumes inside a block reads that block again from the OS page cache.
    ro.fill_cache = false;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, cf));
    // At most one record per offset: no regrowth (moving every record read so far) on the way.
    // Capped: callers may pass open ranges and limits (UINT64_MAX, SIZE_MAX); past the cap the
    // vector grows as usual.
    constexpr uint64_t kMaxReserve = 16384;
    out->reserve(static_cast<size_t>(std::min<uint64_t>({max_records, to - from, kMaxReserve})));
    uint64_t bytes = 0;
    for (it->Seek(start); it->Valid() && out->size() < max_records; it->Next()) {
      auto key = DecodeOffsetKey(std::string_view(it->key().data(), it->key().size()));
      if (!key) return absl::DataLossError("malformed raw record key");
      const std::string_view value(it->value().data(), it->value().size());
      if (!out->empty() && bytes + value.size() > max_bytes) break;
      RawRecord rec;
      rec.offset = key->offset;
      rec.stored_bytes = value.size();
      // The value's name is only formatted when it is bad (it cost an allocation per record).
      if (absl::Status st = DecodeChecked(value, &rec.record,
                                          [&] {
                                            return absl::StrCat("raw record ", std::string(dataset),
                                                                "/", partition, "/", key->offset);
                                          });
          !st.ok()) {
        return st;
      }
      bytes += value.size();
      out->push_back(std::move(rec));
    }
    return FromRocks(it->status(), "reading raw records");
  }

  absl::Status CommitBatch(const BatchCommit& commit) override {
    DatasetState* ds = FindDataset(commit.dataset);
    if (ds == nullptr || commit.partition >= ds->options.partitions) {
      return absl::NotFoundError(
          absl::StrCat("unknown partition ", commit.dataset, "/", commit.partition));
    }
    wharf::v1::ValidationCheckpoint cp;
    {
      std::lock_guard<std::mutex> lock(counters_mu_);
      cp = ds->partitions[commit.partition].validation;
    }
    if (commit.next_offset < cp.next_offset()) {
      return absl::FailedPreconditionError(
          absl::StrCat("validation cursor of ", commit.dataset, "/", commit.partition,
                       " would move back from ", cp.next_offset(), " to ", commit.next_offset));
    }
    rocksdb::WriteBatch wb;
    std::string value;
    if (!commit.batch.has_value() && !commit.more_batches.empty()) {
      return absl::InvalidArgumentError("more_batches without batch");
    }
    auto add_batch = [&](const wharf::v1::StoredBatch& batch) {
      const auto& m = batch.manifest();
      EncodeCheckedTo(batch, &value);
      wb.Put(ds->batches_cfs[commit.partition],
             OffsetKey(commit.dataset, commit.partition, m.first_offset()), value);
      cp.set_batches_committed(cp.batches_committed() + 1);
      cp.set_records_committed(cp.records_committed() + m.record_count());
      cp.set_batch_bytes_committed(cp.batch_bytes_committed() + value.size());
    };
    if (commit.batch.has_value()) add_batch(*commit.batch);
    for (const auto& batch : commit.more_batches) add_batch(batch);
    uint64_t quarantine_bytes = 0;
    for (const auto& q : commit.quarantine) {
      EncodeCheckedTo(q, &value);
      quarantine_bytes += value.size();
      wb.Put(quarantine_, OffsetKey(commit.dataset, commit.partition, q.offset()), value);
    }
    cp.set_records_quarantined(cp.records_quarantined() + commit.quarantine.size());
    cp.set_next_offset(commit.next_offset);
    cp.set_raw_bytes_validated(cp.raw_bytes_validated() + commit.raw_bytes);
    wb.Put(checkpoints_, ValidationKey(commit.dataset, commit.partition), cp.SerializeAsString());
    rocksdb::WriteOptions wo;
    // Durability: the batch, its quarantine entries and the cursor advance are one atomic write,
    // so a crash leaves all or none. It is NOT synced: after kill -9 the write is in the WAL
    // (page cache) and replayed. A power loss may drop it, and with it only later writes (the WAL
    // is recovered as a prefix; a flush syncs the closed WALs first, so no column family holds a
    // part of a lost write). Losing it is harmless as long as none of its batches was delivered:
    // the raw records it covers were synced at ack, so the step is simply redone (possibly with
    // other boundaries, which nobody has seen). The delivery side guarantees that: it calls
    // SyncPipelineWrites() after reading batches and before delivering them, so a batch a
    // destination has seen is durable and can never be re-cut under another id. Not syncing
    // here saves the fsync per step and the step's wait as a synced write leader in RocksDB's
    // write queue; one sync per delivery round covers many steps (usually the ingest group
    // commits have synced the WAL past the commit already).
    wo.sync = false;
    // The batches become visible to readers (the delivery worker) as soon as RocksDB publishes
    // the write, which is before WriteDb returns and before unsynced_commit_seq_ below says how
    // far a sync must reach to cover them. commits_in_flight_ tells SyncPipelineWrites about
    // that window: while it is non-zero, a sync must cover everything published (see there).
    // Incremented before the write, decremented only after unsynced_commit_seq_ is updated.
    commits_in_flight_.fetch_add(1);
    const absl::Status write_status = WriteDb(wo, &wb, "committing batch");
    if (write_status.ok()) {
      // Every write up to here is in the WAL (handed to the OS): remember how far a sync must
      // reach to cover this commit. Sequence numbers only grow, so a plain max suffices.
      RaiseTo(unsynced_commit_seq_, db_->GetLatestSequenceNumber());
    }
    commits_in_flight_.fetch_sub(1);
    if (!write_status.ok()) return write_status;
    std::lock_guard<std::mutex> lock(counters_mu_);
    ds->partitions[commit.partition].validation = cp;
    ds->quarantine_entries += commit.quarantine.size();
    ds->quarantine_bytes += quarantine_bytes;
    return absl::OkStatus();
  }

  absl::Status SyncPipelineWrites() override {
    // What must be covered: every commit whose batches the caller may have read. A commit that
    // has returned has raised unsynced_commit_seq_ already. One still inside CommitBatch may be
    // published (its batches readable) without having raised it yet: while any commit is in
    // flight, cover everything published so far instead. Order matters: commits_in_flight_ is
    // read first. If it reads 0, every commit the caller could have seen has finished, and its
    // decrement (after its unsynced_commit_seq_ update) is visible, so the load below sees that
    // update (sequentially consistent atomics). If it reads non-zero, the latest sequence number
    // read after it is at least that of every batch the caller has read.
    const bool commit_in_flight = commits_in_flight_.load() != 0;
    uint64_t target = unsynced_commit_seq_.load();
    if (commit_in_flight) target = std::max(target, db_->GetLatestSequenceNumber());
    if (target <= synced_commit_seq_.load()) return absl::OkStatus();
    // One sync at a time: a caller that waited here usually finds its commits covered by the
    // sync it waited for (no second fsync).
    std::lock_guard<std::mutex> lock(sync_mu_);
    if (target <= synced_commit_seq_.load()) return absl::OkStatus();
    // Every write published up to `covered` is in a WAL file already (writes reach the WAL, and
    // the OS, before they become visible; the WAL is never flushed manually). A synced write
    // fsyncs every WAL file up to the current one, so after it every commit up to `covered`
    // survives power loss. An empty synced write rather than DB::SyncWAL(): the write path
    // handles I/O errors like every other write (latched by WriteDb, wharfd restarts), whereas
    // SyncWAL() on a WAL writer that has seen an error trips an assertion in Debian's RocksDB
    // (built with assertions on) and would abort wharfd. Batches with a count of 0 add no
    // sequence number and change nothing.
    const uint64_t covered = db_->GetLatestSequenceNumber();
    rocksdb::WriteBatch empty;
    rocksdb::WriteOptions wo;
    wo.sync = true;
    if (absl::Status st = WriteDb(wo, &empty, "syncing pipeline writes"); !st.ok()) return st;
    AdvanceSyncedCommitSeq(covered);
    return absl::OkStatus();
  }

  // Records that every write published up to sequence `covered` is fsynced. Called after a
  // successful synced write that started after `covered` was read: RocksDB syncs every WAL file
  // up to the current one for a synced write, so everything published before it is durable
  // (see SyncPipelineWrites).
  void AdvanceSyncedCommitSeq(uint64_t covered) { RaiseTo(synced_commit_seq_, covered); }

  // Raises `mark` to `seq` unless it is already higher. Sequence numbers only grow, so a plain
  // max suffices when several threads raise the same mark.
  static void RaiseTo(std::atomic<uint64_t>& mark, uint64_t seq) {
    uint64_t prev = mark.load();
    while (prev < seq && !mark.compare_exchange_weak(prev, seq)) {
    }
  }

  absl::Status ReadBatches(std::string_view dataset, uint32_t partition, uint64_t from,
                           size_t max_batches, std::vector<wharf::v1::StoredBatch>* out) override {
    out->clear();
    rocksdb::ColumnFamilyHandle* cf = PartitionCf(dataset, partition, /*raw=*/false);
    if (cf == nullptr) return absl::OkStatus();  // an unknown partition holds nothing
    const std::string start = OffsetKey(dataset, partition, from);
    const std::string end = PartitionPrefix(dataset, partition + 1);
    rocksdb::Slice upper(end);
    rocksdb::ReadOptions ro;
    ro.iterate_upper_bound = &upper;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, cf));
    for (it->Seek(start); it->Valid() && out->size() < max_batches; it->Next()) {
      auto key = DecodeOffsetKey(std::string_view(it->key().data(), it->key().size()));
      if (!key || key->partition != partition) break;
      // Decoded in place at the end of `out` (no moving of a thousand records afterwards).
      wharf::v1::StoredBatch& batch = out->emplace_back();
      if (absl::Status st =
              DecodeChecked(std::string_view(it->value().data(), it->value().size()), &batch,
                            [&] {
                              return absl::StrCat("batch ", std::string(dataset), "/", partition,
                                                  "/", key->offset);
                            });
          !st.ok()) {
        out->pop_back();
        return st;
      }
    }
    return FromRocks(it->status(), "reading batches");
  }

  absl::StatusOr<wharf::v1::DeliveryCheckpoint> GetDeliveryCursor(std::string_view dataset,
                                                                  std::string_view destination,
                                                                  uint32_t partition) override {
    wharf::v1::DeliveryCheckpoint cp;
    if (absl::Status st = GetProto(checkpoints_, DeliveryKey(dataset, destination, partition), &cp);
        !st.ok()) {
      return st;
    }
    return cp;
  }

  absl::Status SetDeliveryCursor(std::string_view dataset, std::string_view destination,
                                 uint32_t partition,
                                 const wharf::v1::DeliveryCheckpoint& cursor) override {
    rocksdb::WriteOptions wo;
    // Durability: not synced on purpose. Destinations are idempotent by batch id, so losing
    // this advance in a power loss only makes the batch be delivered again, harmlessly. WAL
    // order still guarantees the cursor never survives without the batches it covers.
    wo.sync = false;
    rocksdb::WriteBatch wb;
    wb.Put(checkpoints_, DeliveryKey(dataset, destination, partition), cursor.SerializeAsString());
    return WriteDb(wo, &wb, "writing delivery cursor");
  }

  absl::StatusOr<uint64_t> DeleteRawBelow(std::string_view dataset, uint32_t partition,
                                          uint64_t offset, Clock::time_point cutoff,
                                          size_t max_records) override {
    const int64_t cutoff_us =
        std::chrono::duration_cast<std::chrono::microseconds>(cutoff.time_since_epoch()).count();
    return DeleteBelow(
        dataset, partition, offset, /*raw=*/true, max_records,
        [&](uint64_t key_offset, std::string_view value) -> absl::StatusOr<uint64_t> {
          // No time bound: nothing to look at in the record (decoding every deleted record cost
          // about 5% of wharfd's CPU end to end; its checksum does not matter for a delete).
          if (cutoff == Clock::time_point::max()) return key_offset + 1;
          wharf::v1::StoredRecord rec;
          if (absl::Status st = DecodeChecked(value, &rec,
                                              [&] {
                                                return absl::StrCat("raw record ",
                                                                    std::string(dataset), "/",
                                                                    partition, "/", key_offset);
                                              });
              !st.ok()) {
            return st;
          }
          if (TimeUtil::TimestampToMicroseconds(rec.ingest_time()) >= cutoff_us) return 0;
          return key_offset + 1;
        });
  }

  absl::StatusOr<uint64_t> DeleteBatchesBelow(std::string_view dataset, uint32_t partition,
                                              uint64_t offset) override {
    return DeleteBelow(
        dataset, partition, offset, /*raw=*/false, SIZE_MAX,
        [&](uint64_t key_offset, std::string_view value) -> absl::StatusOr<uint64_t> {
          // Only the manifest is decoded (checksum still verified): decoding the records too,
          // only to drop them, cost as much as reading the batch for delivery.
          wharf::v1::BatchManifest manifest;
          if (absl::Status st =
                  DecodeCheckedField(value, wharf::v1::StoredBatch::kManifestFieldNumber, &manifest,
                                     [&] {
                                       return absl::StrCat("batch ", std::string(dataset), "/",
                                                           partition, "/", key_offset);
                                     });
              !st.ok()) {
            return st;
          }
          // Only batches that end below `offset` are fully delivered.
          if (manifest.last_offset() >= offset) return 0;
          return manifest.last_offset() + 1;
        });
  }

  absl::Status ListQuarantine(std::string_view dataset, std::string_view after_key, size_t limit,
                              std::vector<wharf::v1::QuarantineEntry>* out,
                              std::string* next_key) override {
    out->clear();
    next_key->clear();
    if (limit == 0) return absl::InvalidArgumentError("quarantine listing limit must be positive");
    std::string prefix(dataset);
    prefix.push_back('\0');
    std::string end(dataset);
    end.push_back('\1');
    std::string start = prefix;
    std::string after;
    if (!after_key.empty()) {
      uint32_t partition = 0;
      uint64_t offset = 0;
      std::string destination;
      if (!ParseQuarantineToken(after_key, &partition, &offset, &destination).ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("malformed page token \"", std::string(after_key), "\""));
      }
      after = QuarantineKey(dataset, partition, offset, destination);
      start = after;
    }
    rocksdb::Slice upper(end);
    rocksdb::ReadOptions ro;
    ro.iterate_upper_bound = &upper;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, quarantine_));
    for (it->Seek(start); it->Valid(); it->Next()) {
      if (!after.empty() && it->key() == rocksdb::Slice(after)) continue;
      if (out->size() == limit) {
        *next_key = QuarantineToken(out->back());
        break;
      }
      wharf::v1::QuarantineEntry entry;
      if (absl::Status st = DecodeChecked(std::string_view(it->value().data(), it->value().size()),
                                          &entry, "quarantine entry");
          !st.ok()) {
        return st;
      }
      out->push_back(std::move(entry));
    }
    return FromRocks(it->status(), "reading quarantine");
  }

  absl::StatusOr<wharf::v1::QuarantineEntry> GetQuarantine(std::string_view dataset,
                                                           std::string_view token) override {
    uint32_t partition = 0;
    uint64_t offset = 0;
    std::string destination;
    if (absl::Status st = ParseQuarantineToken(token, &partition, &offset, &destination);
        !st.ok()) {
      return st;
    }
    std::string value;
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), quarantine_,
                                 QuarantineKey(dataset, partition, offset, destination), &value);
    if (s.IsNotFound()) {
      return absl::NotFoundError(absl::StrCat("no quarantine entry ", std::string(token),
                                              " in dataset \"", std::string(dataset), "\""));
    }
    if (!s.ok()) return FromRocks(s, "reading quarantine entry");
    wharf::v1::QuarantineEntry entry;
    if (absl::Status st = DecodeChecked(value, &entry, "quarantine entry"); !st.ok()) return st;
    return entry;
  }

  absl::Status QuarantineRejected(std::string_view dataset, std::string_view destination,
                                  uint32_t partition,
                                  const std::vector<wharf::v1::QuarantineEntry>& entries,
                                  const wharf::v1::DeliveryCheckpoint& cursor) override {
    DatasetState* ds = FindDataset(dataset);
    if (ds == nullptr || partition >= ds->options.partitions) {
      return absl::NotFoundError(
          absl::StrCat("unknown partition ", std::string(dataset), "/", partition));
    }
    rocksdb::WriteBatch wb;
    std::string value;
    // Size of the value each key holds after this write (the last one wins if an offset is
    // listed twice).
    std::map<std::string, uint64_t> written;
    for (const auto& q : entries) {
      const std::string key = QuarantineKey(dataset, partition, q.offset(), destination);
      EncodeCheckedTo(q, &value);
      wb.Put(quarantine_, key, value);
      written[key] = value.size();
    }
    // An entry written again (a retry after a write that failed late) replaces the old value:
    // count it once, with the size of the new value.
    uint64_t added = 0, bytes_in = 0, bytes_out = 0;
    for (const auto& [key, size] : written) {
      bytes_in += size;
      std::string existing;
      if (db_->Get(rocksdb::ReadOptions(), quarantine_, key, &existing).ok()) {
        bytes_out += existing.size();
      } else {
        ++added;
      }
    }
    wb.Put(checkpoints_, DeliveryKey(dataset, destination, partition), cursor.SerializeAsString());
    rocksdb::WriteOptions wo;
    // Durability: synced, and one write with the cursor: a refused record must never be skipped
    // by the cursor without being in quarantine (that would lose it), and after a crash before
    // this write the batch is simply delivered (and refused) again.
    wo.sync = true;
    if (absl::Status st = WriteDb(wo, &wb, "quarantining refused records"); !st.ok()) {
      return st;
    }
    std::lock_guard<std::mutex> lock(counters_mu_);
    ds->quarantine_entries += added;
    ds->quarantine_bytes += bytes_in;
    ds->quarantine_bytes -= std::min(ds->quarantine_bytes, bytes_out);
    return absl::OkStatus();
  }

  absl::StatusOr<uint64_t> DiscardQuarantine(std::string_view dataset,
                                             const std::vector<std::string>& tokens) override {
    DatasetState* ds = FindDataset(dataset);
    if (ds == nullptr) {
      return absl::NotFoundError(absl::StrCat("unknown dataset \"", std::string(dataset), "\""));
    }
    rocksdb::WriteBatch wb;
    uint64_t found = 0, bytes = 0;
    std::set<std::string> keys;  // a token listed twice is still one entry
    for (const std::string& token : tokens) {
      uint32_t partition = 0;
      uint64_t offset = 0;
      std::string destination;
      if (absl::Status st = ParseQuarantineToken(token, &partition, &offset, &destination);
          !st.ok()) {
        return st;
      }
      const std::string key = QuarantineKey(dataset, partition, offset, destination);
      if (!keys.insert(key).second) continue;
      std::string value;
      if (db_->Get(rocksdb::ReadOptions(), quarantine_, key, &value).ok()) {
        ++found;
        bytes += value.size();
        wb.Delete(quarantine_, key);
      }
    }
    if (found == 0) return 0;
    rocksdb::WriteOptions wo;
    // Durability: synced so a discard the operator was told about stays done.
    wo.sync = true;
    if (absl::Status st = WriteDb(wo, &wb, "discarding quarantine entries"); !st.ok()) {
      return st;
    }
    std::lock_guard<std::mutex> lock(counters_mu_);
    ds->quarantine_entries -= std::min(ds->quarantine_entries, found);
    ds->quarantine_bytes -= std::min(ds->quarantine_bytes, bytes);
    return found;
  }

  void ReplayQuarantine(std::string dataset, std::vector<std::string> tokens,
                        std::function<void(absl::StatusOr<uint64_t>)> done) override {
    PendingAppend pending;
    pending.append.dataset = std::move(dataset);
    pending.replay = std::move(tokens);
    pending.done = [done = std::move(done)](AppendResult r) {
      if (!r.status.ok()) {
        done(r.status);
      } else {
        done(static_cast<uint64_t>(r.acks.size()));
      }
    };
    Enqueue(std::move(pending));
  }

  absl::StatusOr<uint64_t> ExpireQuarantine(std::string_view dataset, Clock::time_point cutoff,
                                            size_t max_entries) override {
    DatasetState* ds = FindDataset(dataset);
    if (ds == nullptr) {
      return absl::NotFoundError(absl::StrCat("unknown dataset \"", std::string(dataset), "\""));
    }
    const int64_t cutoff_us =
        std::chrono::duration_cast<std::chrono::microseconds>(cutoff.time_since_epoch()).count();
    std::string prefix(dataset);
    prefix.push_back('\0');
    std::string end(dataset);
    end.push_back('\1');
    rocksdb::Slice upper(end);
    rocksdb::ReadOptions ro;
    ro.iterate_upper_bound = &upper;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, quarantine_));
    rocksdb::WriteBatch wb;
    uint64_t n = 0, bytes = 0;
    for (it->Seek(prefix); it->Valid() && n < max_entries; it->Next()) {
      wharf::v1::QuarantineEntry entry;
      if (absl::Status st = DecodeChecked(std::string_view(it->value().data(), it->value().size()),
                                          &entry, "quarantine entry");
          !st.ok()) {
        return st;
      }
      if (TimeUtil::TimestampToMicroseconds(entry.quarantine_time()) >= cutoff_us) continue;
      wb.Delete(quarantine_, it->key());
      ++n;
      bytes += it->value().size();
    }
    if (absl::Status st = FromRocks(it->status(), "reading quarantine"); !st.ok()) return st;
    if (n == 0) return 0;
    rocksdb::WriteOptions wo;
    // Durability: not synced: an expiry lost in a crash is simply done again.
    if (absl::Status st = WriteDb(wo, &wb, "expiring quarantine"); !st.ok()) {
      return st;
    }
    std::lock_guard<std::mutex> lock(counters_mu_);
    ds->quarantine_entries -= std::min(ds->quarantine_entries, n);
    ds->quarantine_bytes -= std::min(ds->quarantine_bytes, bytes);
    return n;
  }

  uint64_t QuarantineBytes(std::string_view dataset) const override {
    DatasetState* ds = FindDataset(dataset);
    if (ds == nullptr) return 0;
    std::lock_guard<std::mutex> lock(counters_mu_);
    return ds->quarantine_bytes;
  }

  uint64_t QuarantineEntries(std::string_view dataset) const override {
    DatasetState* ds = FindDataset(dataset);
    if (ds == nullptr) return 0;
    std::lock_guard<std::mutex> lock(counters_mu_);
    return ds->quarantine_entries;
  }

  absl::Status PutMeta(std::string_view key, std::string_view value) override {
    rocksdb::WriteOptions wo;
    // Durability: synced; control-plane changes are rare and must survive once confirmed.
    wo.sync = true;
    rocksdb::WriteBatch wb;
    wb.Put(meta_, MetaKey(key), rocksdb::Slice(value.data(), value.size()));
    return WriteDb(wo, &wb, "writing metadata");
  }

  absl::Status DeleteMeta(std::string_view key) override {
    rocksdb::WriteOptions wo;
    wo.sync = true;  // Durability: as PutMeta.
    rocksdb::WriteBatch wb;
    wb.Delete(meta_, MetaKey(key));
    return WriteDb(wo, &wb, "deleting metadata");
  }

  absl::StatusOr<std::optional<std::string>> GetMeta(std::string_view key) override {
    std::string value;
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), meta_, MetaKey(key), &value);
    if (s.IsNotFound()) return std::optional<std::string>();
    if (!s.ok()) return FromRocks(s, "reading metadata");
    return std::optional<std::string>(std::move(value));
  }

  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ListMeta(
      std::string_view prefix) override {
    std::vector<std::pair<std::string, std::string>> out;
    const std::string start = MetaKey(prefix);
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), meta_));
    for (it->Seek(start); it->Valid() && it->key().starts_with(start); it->Next()) {
      out.emplace_back(it->key().ToString().substr(kMetaPrefix.size()), it->value().ToString());
    }
    if (absl::Status st = FromRocks(it->status(), "listing metadata"); !st.ok()) return st;
    return out;
  }

  const std::vector<DatasetOptions>& datasets() const override { return dataset_list_; }

  bool HasDataset(std::string_view dataset) const override {
    return datasets_.find(std::string(dataset)) != datasets_.end();
  }

  PartitionCounters GetPartitionCounters(std::string_view dataset,
                                         uint32_t partition) const override {
    auto it = datasets_.find(std::string(dataset));
    if (it == datasets_.end() || partition >= it->second->options.partitions) return {};
    std::lock_guard<std::mutex> lock(counters_mu_);
    return it->second->partitions[partition];
  }

  uint64_t StagedBytes(std::string_view dataset) const override {
    auto it = datasets_.find(std::string(dataset));
    if (it == datasets_.end()) return 0;
    std::lock_guard<std::mutex> lock(counters_mu_);
    return StagedBytesLocked(*it->second);
  }

  uint64_t StoreSizeBytes() const override {
    uint64_t total = 0;
    for (auto* h : handles_) {
      uint64_t v = 0;
      if (db_->GetIntProperty(h, rocksdb::DB::Properties::kTotalSstFilesSize, &v)) total += v;
      if (db_->GetIntProperty(h, rocksdb::DB::Properties::kCurSizeAllMemTables, &v)) total += v;
    }
    return total;
  }

  uint64_t DiskFreeBytes() const override {
    struct statvfs st;
    if (statvfs(options_.path.c_str(), &st) != 0) return 0;
    return static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
  }

  std::string NotAcceptingReason() const override {
    {
      std::lock_guard<std::mutex> lock(counters_mu_);
      if (!not_accepting_.empty()) return not_accepting_;
    }
    // Appends are refused with UNAVAILABLE from the moment Stop() begins.
    std::lock_guard<std::mutex> lock(queue_mu_);
    if (stopping_) return "staging store is stopped (wharfd is shutting down)";
    return std::string();
  }

  absl::Status WriteFailure() const override {
    std::lock_guard<std::mutex> lock(counters_mu_);
    return failure_;
  }

  // Marks the store failed (first failure wins). Called from any thread, including RocksDB's
  // background threads with the DB mutex held: must not call into the DB.
  void RecordFailure(const absl::Status& status) {
    {
      std::lock_guard<std::mutex> lock(counters_mu_);
      if (!failure_.ok()) return;
      failure_ = status;
      not_accepting_ = absl::StrCat("staging store write failed (restart wharfd): ",
                                    std::string(status.message()));
    }
    if (metrics_.write_errors) metrics_.write_errors->Increment();
    spdlog::critical("staging store write failed, refusing every write until restart: {}",
                     status.ToString());
  }

  absl::Status Flush() override {
    rocksdb::FlushOptions fo;
    fo.wait = true;
    return FromRocks(db_->Flush(fo, handles_), "flushing memtables");
  }

 private:
  // Retention of one partition's raw records (raw) or batches (!raw): scans from the
  // partition's retention mark towards `offset`; for each entry `next_below` returns the offset
  // below which everything may go once this entry is deleted, or 0 to stop before it. Deletes
  // the scanned range and updates the RetentionCheckpoint in one write. Returns the count.
  absl::StatusOr<uint64_t> DeleteBelow(
      std::string_view dataset, uint32_t partition, uint64_t offset, bool raw, size_t max_entries,
      const std::function<absl::StatusOr<uint64_t>(uint64_t key_offset, std::string_view value)>&
          next_below) {
    DatasetState* ds = FindDataset(dataset);
    if (ds == nullptr || partition >= ds->options.partitions) {
      return absl::NotFoundError(
          absl::StrCat("unknown partition ", std::string(dataset), "/", partition));
    }
    wharf::v1::RetentionCheckpoint cp;
    {
      std::lock_guard<std::mutex> lock(counters_mu_);
      cp = ds->partitions[partition].retention;
    }
    const uint64_t mark = raw ? cp.raw_deleted_below() : cp.batches_deleted_below();
    if (offset <= mark) return 0;
    rocksdb::ColumnFamilyHandle* cf = raw ? ds->raw_cfs[partition] : ds->batches_cfs[partition];
    const std::string start = OffsetKey(dataset, partition, mark);
    const std::string end = OffsetKey(dataset, partition, offset);
    rocksdb::Slice upper(end);
    rocksdb::ReadOptions ro;
    ro.iterate_upper_bound = &upper;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, cf));
    uint64_t deleted = 0, bytes = 0, below = mark;
    for (it->Seek(start); it->Valid() && deleted < max_entries; it->Next()) {
      auto key = DecodeOffsetKey(std::string_view(it->key().data(), it->key().size()));
      if (!key) return absl::DataLossError("malformed key in retention scan");
      absl::StatusOr<uint64_t> next =
          next_below(key->offset, std::string_view(it->value().data(), it->value().size()));
      if (!next.ok()) return next.status();
      if (*next == 0) break;
      ++deleted;
      bytes += it->value().size();
      below = *next;
    }
    if (absl::Status st = FromRocks(it->status(), "scanning for retention"); !st.ok()) return st;
    if (deleted == 0) return 0;
    if (raw) {
      cp.set_raw_deleted_below(below);
      cp.set_raw_bytes_deleted(cp.raw_bytes_deleted() + bytes);
    } else {
      cp.set_batches_deleted_below(below);
      cp.set_batch_bytes_deleted(cp.batch_bytes_deleted() + bytes);
    }
    rocksdb::WriteBatch wb;
    wb.DeleteRange(cf, start, OffsetKey(dataset, partition, below));
    wb.Put(checkpoints_, RetentionKey(dataset, partition), cp.SerializeAsString());
    // Durability: not synced. Only data already delivered everywhere (and, for raw records,
    // past retention) is deleted; losing the delete in a power loss just repeats it.
    if (absl::Status st = WriteDb(rocksdb::WriteOptions(), &wb, "retention delete"); !st.ok()) {
      return st;
    }
    std::lock_guard<std::mutex> lock(counters_mu_);
    ds->partitions[partition].retention = cp;
    return deleted;
  }

  // Every write after Open() goes through here. Refuses once the store has failed, and records
  // a failure: after a failed write (typically a failed fsync) RocksDB refuses further writes
  // anyway, and what the failed write left on disk is unknown until the WAL is replayed.
  absl::Status WriteDb(const rocksdb::WriteOptions& wo, rocksdb::WriteBatch* wb,
                       std::string_view what) {
    {
      std::lock_guard<std::mutex> lock(counters_mu_);
      if (!failure_.ok()) {
        return absl::UnavailableError(
            absl::StrCat(std::string(what),
                         ": the staging store failed earlier and refuses writes until "
                         "wharfd restarts: ",
                         std::string(failure_.message())));
      }
    }
#ifdef _GLIBCXX_TSAN
    // TSan build only (docs/reliability/sanitizers.md): concurrent DB::Write calls form a
    // RocksDB write group whose leader copies the followers' batches on its own thread, handed
    // over through RocksDB's (uninstrumented) atomics. No RocksDB frame shows in such a report
    // (TSan only records instrumented frames), so no module suppression can name it; this
    // thread's memory accesses inside DB::Write are not checked instead. Locks are still seen.
    __tsan_ignore_thread_begin();
#endif
    absl::Status st = FromRocks(db_->Write(wo, wb), what);
#ifdef _GLIBCXX_TSAN
    __tsan_ignore_thread_end();
#endif
    if (!st.ok()) RecordFailure(st);
    return st;
  }

  DatasetState* FindDataset(std::string_view name) const {
    auto it = datasets_.find(std::string(name));
    return it == datasets_.end() ? nullptr : it->second.get();
  }

  // The raw (or batches) column family of a configured partition; null when unknown.
  rocksdb::ColumnFamilyHandle* PartitionCf(std::string_view dataset, uint32_t partition,
                                           bool raw) const {
    const DatasetState* ds = FindDataset(dataset);
    if (ds == nullptr || partition >= ds->options.partitions) return nullptr;
    return raw ? ds->raw_cfs[partition] : ds->batches_cfs[partition];
  }

  uint64_t StagedBytesLocked(const DatasetState& ds) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(counters_mu_) {
    uint64_t total = 0;
    for (const auto& c : ds.partitions) {
      const uint64_t in = c.ingest.bytes_appended() + c.validation.batch_bytes_committed();
      const uint64_t out = c.retention.raw_bytes_deleted() + c.retention.batch_bytes_deleted();
      total += in > out ? in - out : 0;
    }
    return total;
  }

  template <typename M>
  absl::Status GetProto(rocksdb::ColumnFamilyHandle* cf, const std::string& key, M* out) {
    std::string value;
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), cf, key, &value);
    if (s.IsNotFound()) {
      out->Clear();
      return absl::OkStatus();
    }
    if (!s.ok()) return FromRocks(s, "reading checkpoint");
    if (!out->ParseFromString(value)) return absl::DataLossError("checkpoint does not parse");
    return absl::OkStatus();
  }

  // The group-commit writer ---------------------------------------------------------------------

  void WriterLoop() {
    // RocksDB's per-thread timers of this thread's writes, for the stage histograms of the
    // group commit (WriteGroup): a few clock reads per write, on this thread only.
    if (metrics_.write_wait_seconds) {
      rocksdb::SetPerfLevel(rocksdb::PerfLevel::kEnableTimeExceptForMutex);
    }
    std::vector<PendingAppend> group;
    while (true) {
      {
        std::unique_lock<std::mutex> lock(queue_mu_);
        queue_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) break;  // stopping and drained
        uint64_t bytes = 0;
        // Everything queued while the previous group was being written goes into this one:
        // that is what amortises one fsync over all concurrent producers.
        while (!queue_.empty() &&
               (group.empty() || bytes + queue_.front().bytes <= options_.max_group_bytes)) {
          bytes += queue_.front().bytes;
          group.push_back(std::move(queue_.front()));
          queue_.pop_front();
        }
        pending_bytes_ -= bytes;
        if (metrics_.pending_bytes)
          metrics_.pending_bytes->Set(static_cast<double>(pending_bytes_));
      }
      WriteGroup(group);
      group.clear();
    }
  }

  // Loads (or creates) the window of a producer into the cache. Writer thread only. The cache
  // is never dropped here: it holds the updated windows of the group being built until they
  // are written (see WriteGroup).
  absl::StatusOr<wharf::v1::ProducerWindow*> ProducerWindowFor(const std::string& key) {
    auto it = producer_cache_.find(key);
    if (it != producer_cache_.end()) return &it->second;
    wharf::v1::ProducerWindow w;
    if (absl::Status st = GetProto(producers_, key, &w); !st.ok()) return st;
    return &producer_cache_.emplace(key, std::move(w)).first->second;
  }

  // True when every sequence in [first, first + count) was stored by a request still in the
  // producer's window; fills `acks` with their original offsets.
  static bool CoveredByWindow(const wharf::v1::ProducerWindow& window, uint64_t first, int count,
                              std::vector<wharf::v1::RecordAck>* acks) {
    if (count <= 0) return false;
    std::vector<wharf::v1::RecordAck> out(count);
    std::vector<bool> seen(count, false);
    int covered = 0;
    const uint64_t end = first + static_cast<uint64_t>(count);
    for (const auto& r : window.recent()) {
      const uint64_t r_first = r.first_sequence();
      const uint64_t r_end = r_first + r.record_count();
      if (r_end <= first || r_first >= end) continue;
      const std::vector<wharf::v1::RecordAck> r_acks = AcksFrom(r);
      for (uint64_t seq = std::max(first, r_first); seq < std::min(end, r_end); ++seq) {
        const size_t i = seq - first;
        if (!seen[i] && seq - r_first < r_acks.size()) {
          seen[i] = true;
          out[i] = r_acks[seq - r_first];
          ++covered;
        }
      }
    }
    if (covered != count) return false;
    *acks = std::move(out);
    return true;
  }

  static std::vector<wharf::v1::RecordAck> AcksFrom(const wharf::v1::ProducerRequestAck& r) {
    if (r.partitions_size() == 0 && r.partitions_used_size() == 1) {
      // Every record in one partition, at consecutive offsets (the compact form).
      std::vector<wharf::v1::RecordAck> acks(r.record_count());
      for (uint32_t i = 0; i < r.record_count(); ++i) {
        acks[i].set_partition(r.partitions_used(0));
        acks[i].set_offset(r.first_offsets(0) + i);
      }
      return acks;
    }
    std::vector<wharf::v1::RecordAck> acks(r.partitions_size());
    std::map<uint32_t, uint64_t> next;
    for (int i = 0; i < r.partitions_used_size(); ++i)
      next[r.partitions_used(i)] = r.first_offsets(i);
    for (int i = 0; i < r.partitions_size(); ++i) {
      acks[i].set_partition(r.partitions(i));
      acks[i].set_offset(next[r.partitions(i)]++);
    }
    return acks;
  }

  // Adds a replay to the group's write batch: each listed quarantine entry that still exists
  // (and was not replayed earlier in this group) is deleted and its original record appended to
  // its partition. All or nothing: every token is parsed and every entry read before anything
  // is added, so a malformed token or a read error refuses the whole replay and the caller's
  // error answer is true (nothing of it is written). Writer thread only.
  absl::Status ReplayInto(
      DatasetState* ds, const std::vector<std::string>& tokens,
      const google::protobuf::Timestamp& now_ts, rocksdb::WriteBatch* wb,
      std::map<std::pair<DatasetState*, uint32_t>, wharf::v1::PartitionIngestState>* touched,
      std::set<std::string>* replayed_keys, std::pair<uint64_t, uint64_t>* removed,
      std::vector<wharf::v1::RecordAck>* acks) {
    struct Found {
      uint32_t partition = 0;
      uint64_t offset = 0;
      std::string key;
      uint64_t stored_bytes = 0;
      wharf::v1::QuarantineEntry entry;
    };
    std::vector<Found> found;
    std::set<std::string> keys;  // a token listed twice replays once
    for (const std::string& token : tokens) {
      Found f;
      std::string destination;
      if (absl::Status st = ParseQuarantineToken(token, &f.partition, &f.offset, &destination);
          !st.ok()) {
        return st;
      }
      if (f.partition >= ds->options.partitions) continue;
      f.key = QuarantineKey(ds->options.name, f.partition, f.offset, destination);
      if (replayed_keys->count(f.key) != 0 || !keys.insert(f.key).second) continue;
      found.push_back(std::move(f));
    }
    std::vector<Found> existing_entries;
    for (Found& f : found) {
      std::string existing;
      rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), quarantine_, f.key, &existing);
      if (s.IsNotFound()) continue;  // replayed or discarded before: nothing to do
      if (!s.ok()) return FromRocks(s, "reading quarantine entry");
      if (absl::Status st = DecodeChecked(existing, &f.entry, "quarantine entry"); !st.ok()) {
        return st;
      }
      f.stored_bytes = existing.size();
      existing_entries.push_back(std::move(f));
    }

    std::string value;
    for (const Found& f : existing_entries) {
      const wharf::v1::QuarantineEntry& entry = f.entry;
      wharf::v1::StoredRecord stored = entry.original();
      stored.set_replayed(true);
      stored.set_replay_partition(f.partition);
      stored.set_replay_offset(f.offset);
      stored.set_attempts(std::max<uint32_t>(1, entry.attempts()));
      *stored.mutable_first_error_time() =
          entry.has_first_error_time() ? entry.first_error_time() : entry.quarantine_time();
      *stored.mutable_ingest_time() = now_ts;
      auto tkey = std::make_pair(ds, f.partition);
      auto t = touched->find(tkey);
      if (t == touched->end()) {
        std::lock_guard<std::mutex> lock(counters_mu_);
        t = touched->emplace(tkey, ds->partitions[f.partition].ingest).first;
      }
      wharf::v1::PartitionIngestState& st = t->second;
      const uint64_t new_offset = st.next_offset();
      st.set_next_offset(new_offset + 1);
      EncodeCheckedTo(stored, &value);
      wb->Put(ds->raw_cfs[f.partition], OffsetKey(ds->options.name, f.partition, new_offset),
              value);
      st.set_records_appended(st.records_appended() + 1);
      st.set_bytes_appended(st.bytes_appended() + value.size());
      *st.mutable_last_ingest_time() = now_ts;
      wb->Delete(quarantine_, f.key);
      replayed_keys->insert(f.key);
      ++removed->first;
      removed->second += f.stored_bytes;
      wharf::v1::RecordAck ack;
      ack.set_partition(f.partition);
      ack.set_offset(new_offset);
      acks->push_back(ack);
    }
    return absl::OkStatus();
  }

  void WriteGroup(std::vector<PendingAppend>& group) {
    // Bound the producer cache between groups only: every cached window then matches the store
    // and is reloaded on demand. Dropping it within a group would lose the window updates of the
    // group's earlier requests (a retry would then be stored twice).
    if (producer_cache_.size() >= kMaxCachedProducers) producer_cache_.clear();
    const auto build_start = std::chrono::steady_clock::now();
    if (metrics_.queue_seconds) {
      for (const PendingAppend& p : group) {
        metrics_.queue_seconds->Observe(
            std::chrono::duration<double>(build_start - p.enqueued).count());
      }
    }
    const google::protobuf::Timestamp now_ts = NowTimestamp();
    std::vector<AppendResult> results(group.size());

    // Snapshots for rollback if the write fails: the in-memory state must match the store.
    std::map<std::pair<DatasetState*, uint32_t>, wharf::v1::PartitionIngestState> touched;
    std::map<std::string, std::optional<wharf::v1::ProducerWindow>> producers_before;
    std::map<DatasetState*, uint64_t> group_bytes;
    // Replays: quarantine keys deleted by this group, and (entries, bytes) removed per dataset.
    std::set<std::string> replayed_keys;
    std::map<DatasetState*, std::pair<uint64_t, uint64_t>> quarantine_removed;

    std::string disk_reason;
    const uint64_t free_bytes = DiskFreeBytes();
    if (free_bytes < options_.min_free_bytes) {
      disk_reason = absl::StrCat("free disk space ", free_bytes, " bytes is below the watermark ",
                                 options_.min_free_bytes, " bytes");
    }
    absl::Status failed_earlier;
    {
      std::lock_guard<std::mutex> lock(counters_mu_);
      failed_earlier = failure_;
      if (failure_.ok()) not_accepting_ = disk_reason;
    }

    // The ingest time, StoredRecord field 4, as it ends every stored value of this group: the
    // record's encoded fields 1 to 3 (EncodeAppend), then these bytes, is the StoredRecord's
    // serialization (fields in number order, as SerializeToString writes them).
    std::string ingest_time_field;
    ingest_time_field.push_back(static_cast<char>(kIngestTimeTag));
    AppendVarint(&ingest_time_field, now_ts.ByteSizeLong());
    now_ts.AppendToString(&ingest_time_field);
    const rocksdb::Slice ingest_time_slice(ingest_time_field);
    // Reserve the write batch at once (values, keys and per-entry framing) instead of letting it
    // grow by copying through the doublings up to several MiB.
    size_t batch_reserve = 0;
    for (const PendingAppend& p : group) {
      batch_reserve +=
          p.append.encoded.size() +
          p.append.records.size() * (ingest_time_field.size() + 4 + p.append.dataset.size() + 32);
    }
    rocksdb::WriteBatch wb(batch_reserve);
    // The raw records accepted so far, per (dataset, partition), in offset order; written into
    // the batch after the loop. They point into the group's EncodedAppends.
    std::map<std::pair<DatasetState*, uint32_t>, std::vector<RawPut>> runs;

    for (size_t i = 0; i < group.size(); ++i) {
      const EncodedAppend& req = group[i].append;
      const int record_count = static_cast<int>(req.records.size());
      AppendResult& res = results[i];
      if (!failed_earlier.ok()) {
        res.status = absl::UnavailableError(
            absl::StrCat("staging store write failed earlier, refusing writes until wharfd "
                         "restarts; nothing was stored: ",
                         failed_earlier.message()));
        continue;
      }
      if (group[i].replay.has_value()) {
        DatasetState* rds = FindDataset(req.dataset);
        if (rds == nullptr) {
          res.status = absl::NotFoundError(absl::StrCat("unknown dataset \"", req.dataset, "\""));
          continue;
        }
        res.status = ReplayInto(rds, *group[i].replay, now_ts, &wb, &touched, &replayed_keys,
                                &quarantine_removed[rds], &res.acks);
        continue;
      }
      DatasetState* ds = FindDataset(req.dataset);
      if (ds == nullptr) {
        res.status = absl::NotFoundError(absl::StrCat("unknown dataset \"", req.dataset, "\""));
        continue;
      }
      if (!disk_reason.empty()) {
        res.status = absl::ResourceExhaustedError(disk_reason + "; nothing was stored");
        res.retry_after = options_.retry_after;
        continue;
      }
      wharf::v1::ProducerWindow* window = nullptr;
      std::string producer_key;
      if (!req.producer_id.empty()) {
        producer_key = ProducerKey(req.dataset, req.producer_id);
        auto w = ProducerWindowFor(producer_key);
        if (!w.ok()) {
          res.status = w.status();
          continue;
        }
        window = *w;
        const uint64_t expected = window->next_sequence();
        const uint64_t first = req.first_sequence;
        if (first < expected) {
          const wharf::v1::ProducerRequestAck* found = nullptr;
          for (const auto& r : window->recent()) {
            if (r.first_sequence() == first) found = &r;
          }
          if (found != nullptr && found->record_count() == static_cast<uint32_t>(record_count)) {
            res.acks = AcksFrom(*found);
            res.duplicate = true;
          } else if (req.allow_sequence_gap &&
                     CoveredByWindow(*window, first, record_count, &res.acks)) {
            // Forwarders only (their sequences are source offsets): a retry cut differently,
            // e.g. a batch re-split after a restart. Every sequence of it was stored by requests
            // still in the window, so it is a duplicate, answered with the original offsets of
            // exactly these records. Plain producers keep the strict rule (same first sequence
            // and count), which catches client bugs.
            res.duplicate = true;
          } else if (found != nullptr) {
            res.status = absl::FailedPreconditionError(
                absl::StrCat("sequence ", first, " was stored with ", found->record_count(),
                             " records, this request has ", record_count, "; nothing was stored"));
          } else {
            res.status = absl::FailedPreconditionError(absl::StrCat(
                "sequence ", first, " is older than the deduplication window of producer \"",
                req.producer_id, "\" (next expected sequence ", expected, "); nothing was stored"));
          }
          continue;
        }
        if (first > expected && !req.allow_sequence_gap) {
          res.status = absl::FailedPreconditionError(
              absl::StrCat("out of order sequence: expected ", expected, ", got ", first,
                           "; nothing was stored"));
          continue;
        }
      }
      if (ds->options.quota_bytes > 0) {
        uint64_t staged;
        {
          std::lock_guard<std::mutex> lock(counters_mu_);
          staged = StagedBytesLocked(*ds);
        }
        if (staged + group_bytes[ds] + group[i].bytes > ds->options.quota_bytes) {
          res.status = absl::ResourceExhaustedError(
              absl::StrCat("dataset \"", ds->options.name, "\" is at its staging quota (", staged,
                           " of ", ds->options.quota_bytes, " bytes); nothing was stored"));
          res.retry_after = options_.retry_after;
          continue;
        }
      }

      // Accepted: assign partitions and offsets. Keyless records of one request stay together
      // in one partition (chosen round-robin per request): larger contiguous batches downstream.
      const uint32_t nparts = ds->options.partitions;
      const uint32_t keyless_partition = static_cast<uint32_t>(ds->round_robin++ % nparts);
      wharf::v1::ProducerRequestAck ack_record;
      ack_record.set_first_sequence(req.first_sequence);
      ack_record.set_record_count(record_count);
      ack_record.mutable_partitions()->Reserve(record_count);
      std::map<uint32_t, uint64_t> first_offsets;
      res.acks.resize(record_count);
      uint64_t stored_bytes = 0;
      // The partition of the previous record, its ingest state and its run of puts (std::map
      // nodes are stable): consecutive records often share a partition (always, when keyless).
      uint32_t last_p = UINT32_MAX;
      wharf::v1::PartitionIngestState* st = nullptr;
      std::vector<RawPut>* run = nullptr;
      size_t start = 0;
      for (int r = 0; r < record_count; ++r) {
        const EncodedAppend::Record& rec = req.records[r];
        const uint32_t p =
            rec.keyed ? static_cast<uint32_t>(rec.key_hash % nparts) : keyless_partition;
        if (p != last_p) {
          auto tkey = std::make_pair(ds, p);
          auto t = touched.find(tkey);
          if (t == touched.end()) {
            std::lock_guard<std::mutex> lock(counters_mu_);
            t = touched.emplace(tkey, ds->partitions[p].ingest).first;
          }
          st = &t->second;
          *st->mutable_last_ingest_time() = now_ts;
          first_offsets.try_emplace(p, st->next_offset());
          run = &runs[tkey];
          last_p = p;
        }
        const uint64_t offset = st->next_offset();
        st->set_next_offset(offset + 1);
        run->push_back(RawPut{req.encoded.data() + start, rec.end - start, rec.crc, offset});
        const uint64_t value_size = 4 + (rec.end - start) + ingest_time_slice.size();
        start = rec.end;
        st->set_records_appended(st->records_appended() + 1);
        st->set_bytes_appended(st->bytes_appended() + value_size);
        stored_bytes += value_size;
        ack_record.add_partitions(p);
        res.acks[r].set_partition(p);
        res.acks[r].set_offset(offset);
      }
      group_bytes[ds] += stored_bytes;
      if (window != nullptr) {
        if (producers_before.count(producer_key) == 0) producers_before[producer_key] = *window;
        for (const auto& [p, o] : first_offsets) {
          ack_record.add_partitions_used(p);
          ack_record.add_first_offsets(o);
        }
        // All records in one partition (always so for keyless requests): the per-record list
        // says nothing more. The window is rewritten at every group commit of this producer;
        // with the list, each remembered request of 1,000 records cost ~1 KB, ~64 KB per
        // producer per group (docs/BENCHMARKS.md, "Ack latency breakdown").
        if (ack_record.partitions_used_size() == 1) ack_record.clear_partitions();
        window->set_next_sequence(req.first_sequence + static_cast<uint64_t>(record_count));
        *window->add_recent() = std::move(ack_record);
        while (window->recent_size() > static_cast<int>(options_.producer_window)) {
          window->mutable_recent()->DeleteSubrange(0, 1);
        }
        *window->mutable_last_seen() = now_ts;
      }
    }
    // The records, partition by partition in offset order (the order within one atomic write
    // batch does not matter to readers or recovery). RocksDB's memtable inserts each key next to
    // the previous one when keys arrive in order; in request order, keyed records alternate
    // between partitions and every insert searched the skip list from the top (about 40% of
    // wharfd's instructions at full ingest; docs/BENCHMARKS.md, "Ingest writer path").
    for (const auto& [run_key, puts] : runs) {
      rocksdb::ColumnFamilyHandle* const raw_cf = run_key.first->raw_cfs[run_key.second];
      std::string key = PartitionPrefix(run_key.first->options.name, run_key.second);
      key.resize(key.size() + 8);
      char crc_bytes[4];
      for (const RawPut& put : puts) {
        // Key: the partition prefix, then the offset (OffsetKey's layout, built in place).
        for (int b = 0; b < 8; ++b) {
          key[key.size() - 1 - b] = static_cast<char>((put.offset >> (8 * b)) & 0xFF);
        }
        // Value: <crc32c, big-endian> <fields 1-3, encoded by EncodeAppend> <ingest time>, the
        // layout of EncodeCheckedTo(StoredRecord); the checksum extends the record's over the
        // ingest time bytes.
        const uint32_t crc =
            Crc32c(std::string_view(ingest_time_field.data(), ingest_time_field.size()), put.crc);
        crc_bytes[0] = static_cast<char>(crc >> 24);
        crc_bytes[1] = static_cast<char>(crc >> 16);
        crc_bytes[2] = static_cast<char>(crc >> 8);
        crc_bytes[3] = static_cast<char>(crc);
        const rocksdb::Slice value_parts[3] = {
            rocksdb::Slice(crc_bytes, 4), rocksdb::Slice(put.body, put.size), ingest_time_slice};
        const rocksdb::Slice key_slice(key);
        wb.Put(raw_cf, rocksdb::SliceParts(&key_slice, 1), rocksdb::SliceParts(value_parts, 3));
      }
    }
    for (const auto& [key, unused] : producers_before) {
      wb.Put(producers_, key, producer_cache_[key].SerializeAsString());
    }
    for (const auto& [key, st] : touched) {
      wb.Put(checkpoints_, IngestStateKey(key.first->options.name, key.second),
             st.SerializeAsString());
    }

    absl::Status write_status;
    if (wb.Count() > 0) {
      rocksdb::WriteOptions wo;
      // Durability: this is the ack point. Records, each producer's window and each partition's
      // next offset are one atomic write batch. In sync mode the WAL is fsynced before any
      // request of the group is answered, so an acknowledged record survives kill -9 and power
      // loss; in async mode it survives kill -9 (the WAL write is in the page cache). A crash
      // before the write completes loses only unacknowledged requests, which the producer
      // retries with the same sequence numbers.
      // A quarantine replay is an operator's change and synced in either mode (as discards
      // are): once it is answered, the entries must not come back after a power loss.
      wo.sync = options_.durability == Durability::kSync || !replayed_keys.empty();
      const auto t0 = std::chrono::steady_clock::now();
      if (metrics_.build_seconds) {
        metrics_.build_seconds->Observe(std::chrono::duration<double>(t0 - build_start).count());
      }
      // Batch commits published before this synced write are fsynced by it (RocksDB syncs the
      // WAL up to its end): credited to SyncPipelineWrites(), whose delivery rounds then usually
      // find their commits durable already and need no synced write of their own. Each such
      // write would take a turn in RocksDB's single write queue, and an ingest group arriving
      // meanwhile would wait for its fsync before starting its own.
      const uint64_t covered = wo.sync ? db_->GetLatestSequenceNumber() : 0;
      rocksdb::get_perf_context()->Reset();
      write_status = WriteDb(wo, &wb, "writing group commit");
      if (wo.sync && write_status.ok()) AdvanceSyncedCommitSeq(covered);
      const double secs =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (metrics_.write_seconds) metrics_.write_seconds->Observe(secs);
      if (metrics_.write_wait_seconds) {
        const rocksdb::PerfContext& perf = *rocksdb::get_perf_context();
        metrics_.write_wait_seconds->Observe(
            static_cast<double>(perf.write_thread_wait_nanos + perf.write_delay_time +
                                perf.write_scheduling_flushes_compactions_time) *
            1e-9);
        metrics_.wal_seconds->Observe(static_cast<double>(perf.write_wal_time) * 1e-9);
        metrics_.memtable_seconds->Observe(static_cast<double>(perf.write_memtable_time) * 1e-9);
      }
      if (metrics_.group_commits) metrics_.group_commits->Increment();
      if (metrics_.group_requests)
        metrics_.group_requests->Observe(static_cast<double>(group.size()));
    }
    if (!write_status.ok()) {
      // WriteDb recorded the failure (the store now refuses writes). Roll back the in-memory
      // state; the store holds none of this group (or, if the failure was in the fsync, maybe
      // all of it: it is in the WAL and comes back when the store is reopened, with the
      // producers' windows, so their retries are answered as duplicates with the same offsets).
      // Nobody is acknowledged: an ack must follow a durable write.
      for (auto& [key, before] : producers_before) {
        if (before) producer_cache_[key] = *before;
      }
      for (size_t i = 0; i < group.size(); ++i) {
        if (results[i].status.ok()) {
          results[i].status = absl::UnavailableError(
              absl::StrCat("staging store write failed; the request was not acknowledged: ",
                           write_status.message()));
          results[i].acks.clear();
          results[i].duplicate = false;
        }
      }
    } else {
      std::lock_guard<std::mutex> lock(counters_mu_);
      for (const auto& [key, st] : touched) key.first->partitions[key.second].ingest = st;
      for (const auto& [qds, removed] : quarantine_removed) {
        qds->quarantine_entries -= std::min(qds->quarantine_entries, removed.first);
        qds->quarantine_bytes -= std::min(qds->quarantine_bytes, removed.second);
      }
    }
    const auto answer_start = std::chrono::steady_clock::now();
    if (write_status.ok() && listener_) {
      for (const auto& [key, st] : touched)
        listener_(key.first->options.name, key.second, st.next_offset());
    }
    for (size_t i = 0; i < group.size(); ++i) group[i].done(std::move(results[i]));
    if (metrics_.answer_seconds) {
      metrics_.answer_seconds->Observe(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - answer_start).count());
    }
  }

  const StoreOptions options_;
  StoreMetrics metrics_;
  rocksdb::DB* db_ = nullptr;
  // Every open column family (fixed, per-partition, unknown ones kept open), by name too. Set in
  // Open, immutable after.
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  std::map<std::string, rocksdb::ColumnFamilyHandle*> cf_by_name_;
  // What WHARF-COLUMN-FAMILIES holds (sorted): read at open, then as last written. Open only.
  std::vector<std::string> recorded_cfs_;
  rocksdb::ColumnFamilyOptions partition_cf_options_;
  rocksdb::ColumnFamilyHandle* quarantine_ = nullptr;
  rocksdb::ColumnFamilyHandle* checkpoints_ = nullptr;
  rocksdb::ColumnFamilyHandle* producers_ = nullptr;
  rocksdb::ColumnFamilyHandle* meta_ = nullptr;

  // Immutable after Open().
  std::unordered_map<std::string, std::unique_ptr<DatasetState>> datasets_;
  std::vector<DatasetOptions> dataset_list_;
  AppendListener listener_;

  mutable std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::deque<PendingAppend> queue_;  // guarded by queue_mu_
  uint64_t pending_bytes_ = 0;       // guarded by queue_mu_
  bool stopping_ = false;            // guarded by queue_mu_
  std::thread writer_;

  // Writer thread only.
  std::unordered_map<std::string, wharf::v1::ProducerWindow> producer_cache_;

  // Counters of every partition (inside DatasetState) and the acceptance state.
  mutable std::mutex counters_mu_;
  std::string not_accepting_ ABSL_GUARDED_BY(counters_mu_);
  // The first write failure (see WriteFailure()); OK while healthy.
  absl::Status failure_ ABSL_GUARDED_BY(counters_mu_);

  std::unique_ptr<rocksdb::Env> env_;  // set when options_.file_system is

  // Pipeline commits not yet known to be synced (CommitBatch / SyncPipelineWrites): the
  // highest sequence number after an unsynced commit, and the highest one a WAL sync covered.
  std::atomic<uint64_t> unsynced_commit_seq_{0};
  std::atomic<uint64_t> synced_commit_seq_{0};
  // CommitBatch calls between their write and their unsynced_commit_seq_ update (see there).
  std::atomic<uint32_t> commits_in_flight_{0};
  std::mutex sync_mu_;  // serialises SyncPipelineWrites' fsyncs
};

void BackgroundErrorListener::OnBackgroundError(rocksdb::BackgroundErrorReason reason,
                                                rocksdb::Status* error) {
  if (error == nullptr || error->ok()) return;
  store_->RecordFailure(FromRocks(
      *error, absl::StrCat("RocksDB background error (reason ", static_cast<int>(reason), ")")));
}

}  // namespace

uint64_t KeyHash(std::string_view key) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : key) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

uint32_t PartitionForKey(std::string_view key, uint32_t partitions) {
  return static_cast<uint32_t>(KeyHash(key) % partitions);
}

EncodedAppend EncodeAppend(const wharf::v1::ProduceRequest& request) {
  EncodedAppend out;
  out.dataset = request.dataset();
  out.producer_id = request.producer_id();
  out.first_sequence = request.first_sequence();
  out.allow_sequence_gap = request.allow_sequence_gap();
  out.records.resize(static_cast<size_t>(request.records_size()));
  // Per record: the record's size plus at most 3 tags, 3 varints and the producer id.
  out.encoded.reserve(request.ByteSizeLong() +
                      out.records.size() * (out.producer_id.size() + 3 + 3 * 10));
  for (int r = 0; r < request.records_size(); ++r) {
    const wharf::v1::Record& record = request.records(r);
    EncodedAppend::Record& rec = out.records[static_cast<size_t>(r)];
    out.bytes += RecordBytes(record);
    rec.keyed = !record.key().empty();
    if (rec.keyed) rec.key_hash = KeyHash(record.key());
    const size_t start = out.encoded.size();
    // Fields in number order with proto3's defaults left out, exactly as SerializeToString
    // writes a StoredRecord whose record, producer_id and sequence are set (record is a message
    // field: present even when empty).
    out.encoded.push_back(static_cast<char>(kRecordTag));
    const size_t record_size = record.ByteSizeLong();
    AppendVarint(&out.encoded, record_size);
    const size_t at = out.encoded.size();
    out.encoded.resize(at + record_size);
    record.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(out.encoded.data() + at));
    if (!out.producer_id.empty()) {
      out.encoded.push_back(static_cast<char>(kProducerIdTag));
      AppendVarint(&out.encoded, out.producer_id.size());
      out.encoded.append(out.producer_id);
    }
    const uint64_t sequence = out.first_sequence + static_cast<uint64_t>(r);
    if (sequence != 0) {
      out.encoded.push_back(static_cast<char>(kSequenceTag));
      AppendVarint(&out.encoded, sequence);
    }
    rec.end = out.encoded.size();
    rec.crc = Crc32c(std::string_view(out.encoded.data() + start, rec.end - start));
  }
  return out;
}

absl::StatusOr<std::unique_ptr<StagingStore>> StagingStore::Open(StoreOptions options) {
  if (options.path.empty()) return absl::InvalidArgumentError("store path is empty");
  std::error_code ec;
  // Durability: RocksDB fsyncs the store directory after creating files in it, but not the
  // parent that holds the directory's own entry. A directory created here is made durable in
  // its parent before anything is written into it, otherwise a power loss soon after the first
  // start could lose the whole store, acknowledged records included.
  std::vector<std::filesystem::path> created;
  for (std::filesystem::path p = std::filesystem::path(options.path).lexically_normal();
       !p.empty() && !std::filesystem::exists(p, ec); p = p.parent_path()) {
    created.push_back(p);
    if (p == p.parent_path()) break;
  }
  std::filesystem::create_directories(options.path, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot create data directory ", options.path, ": ", ec.message()));
  }
  for (const auto& dir : created) {
    if (absl::Status st = SyncDirectory(dir.has_parent_path() ? dir.parent_path() : ".");
        !st.ok()) {
      return st;
    }
  }
  auto store = std::make_unique<StagingStoreImpl>(std::move(options));
  if (absl::Status st = store->OpenDb(); !st.ok()) return st;
  if (absl::Status st = store->LoadDatasets(); !st.ok()) return st;
  if (absl::Status st = store->MigrateLegacyLayout(); !st.ok()) return st;
  return std::unique_ptr<StagingStore>(std::move(store));
}

}  // namespace wharf::storage
