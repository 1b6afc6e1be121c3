#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "wharf/v1/ingest.pb.h"
#include "wharf/v1/record.pb.h"
#include "wharf/v1/staging.pb.h"

namespace prometheus {
class Registry;
}
namespace rocksdb {
class FileSystem;
}

namespace wharf::storage {

// How an append is made durable before it is acknowledged.
enum class Durability {
  // The group commit's write batch is written to the WAL and fsynced before any request in it is
  // acknowledged. Survives kill -9 and power loss.
  kSync,
  // The write batch is written to the WAL (the OS page cache) without fsync. Survives kill -9 of
  // wharfd, not power loss or a kernel crash.
  kAsync,
};

// A dataset as the store sees it.
struct DatasetOptions {
  std::string name;
  // Number of partitions. Fixed for the life of the dataset: the store refuses to open a dataset
  // with a different count than it was created with, since keys would move partitions.
  uint32_t partitions = 4;
  // Logical bytes (raw records + committed batches) the dataset may hold in the store; appends
  // that would exceed it are refused with RESOURCE_EXHAUSTED. 0: no quota.
  uint64_t quota_bytes = 0;
};

struct StoreOptions {
  // Directory of the RocksDB store; created if missing.
  std::string path;
  // Default kSync: an ack means the record survives power loss.
  Durability durability = Durability::kSync;
  // Appends are refused with RESOURCE_EXHAUSTED while the file system holding `path` has less
  // free space than this. Default 512 MiB: enough headroom for RocksDB to flush and compact
  // (Debian's RocksDB asserts on some ENOSPC paths, so it must never get there).
  uint64_t min_free_bytes = 512ull << 20;
  // Upper bound of one group commit, in payload bytes. Default 16 MiB: large enough to amortise
  // an fsync over thousands of records, small enough to keep ack latency bounded.
  uint64_t max_group_bytes = 16ull << 20;
  // Memory. The defaults below keep wharfd under 256 MiB of RSS at full ingest, with a paused
  // destination's backlog growing on disk and while it drains (docs/BENCHMARKS.md, "Memory"):
  // RocksDB is bounded by block_cache_bytes as a whole (memtables included), ingest by
  // max_pending_bytes here and the server's limits.max_inflight_bytes. Apart from a small
  // handle per table file, nothing in the store grows with the amount of data staged.
  //
  // Bytes of appends waiting for the writer beyond which Append() refuses new requests with
  // RESOURCE_EXHAUSTED (memory bound of the ingest queue). Default 64 MiB: four times a full
  // group commit (max_group_bytes), so the writer always has the next group waiting; more only
  // holds memory while the disk is the bottleneck.
  uint64_t max_pending_bytes = 64ull << 20;
  // Requests remembered per producer for deduplication. A retry older than this is refused with
  // FAILED_PRECONDITION instead of being stored twice. Default 64.
  uint32_t producer_window = 64;
  // Retry delay suggested to producers refused for quota or disk space. Default 1 s.
  std::chrono::milliseconds retry_after{1000};
  // RocksDB block cache, shared by every column family, and RocksDB's whole memory bound: it
  // holds the data blocks delivery reads back (raw records are read once, by validation, past
  // the cache: StagingStore::ReadRaw), the index and filter blocks of every table file (charged
  // here instead of held outside the cache, where they would grow with the store: about 1.2
  // bytes of Bloom filter per record), and reservations for the memtables
  // (memtable_budget_bytes). Default 96 MiB: the 32 MiB memtable budget plus 64 MiB for blocks.
  // 88 MiB kept wharfd's peak RSS further from 256 MiB but made delivery read batches back from
  // table files: handoff p99 of 0.36 to 5.7 s at 190,000 records/s (docs/BENCHMARKS.md,
  // "Memtable budget, SCHED_BATCH and raw reads past the cache").
  uint64_t block_cache_bytes = 96ull << 20;
  // Budget of all memtables together (one rocksdb::WriteBufferManager for every column family,
  // charged to the block cache): when it is reached, RocksDB flushes a memtable early. Without
  // it, each column family may hold max_write_buffer_number (2) full memtables: 2 x 32 MiB for
  // each partition's raw and batches column family (rocksdb_options.h; 512 MiB for a dataset of
  // 4 partitions) plus 2 x 4 MiB for each of five small column families. Capped
  // at half of block_cache_bytes so that blocks keep the other half; 0: no budget (only the
  // per-column-family limits apply). Default 32 MiB: it also bounds what a restart after
  // kill -9 replays from the WAL (replay is most of that restart: first ack after 0.20 s with
  // 11 M records staged, 0.27 s with 48 MiB). 48 MiB (with a 64 MiB max_total_wal_size) gave 8%
  // more durable ingest and 12% more end to end, but wharfd's peak RSS end to end rose by about
  // 5 MiB, to 254 MiB in the worst run: too close to the 256 MiB target (docs/BENCHMARKS.md,
  // "Memtable budget, SCHED_BATCH and raw reads past the cache").
  uint64_t memtable_budget_bytes = 32ull << 20;
  // RocksDB memtable size of each partition's raw and batches column families (the small ones
  // use 4 MiB). Default 32 MiB: larger memtables give fewer, larger level-0 files (less
  // compaction work); memtable_budget_bytes bounds them together (with several partitions
  // written at once, the budget flushes each memtable well before it reaches this size).
  uint64_t write_buffer_bytes = 32ull << 20;
  // Table files RocksDB keeps open (each with its reader: file handle, footer, properties).
  // Default 256. Unbounded (RocksDB's -1), their number and memory grow with the store: with a
  // column family per partition a backlog is many small files that are moved down the levels,
  // not merged (about 700 at 50 M records staged), and at 50 M records wharfd's RSS reached
  // 256 MiB in the growth benchmark against 230 MiB with 256 open files. Files beyond it are
  // reopened when read (a backlog is read once, in order).
  int max_open_files = 256;
  std::vector<DatasetOptions> datasets;
  // Metrics are registered here when set; may be null.
  prometheus::Registry* metrics_registry = nullptr;
  // The file system RocksDB uses (through an Env made by rocksdb::NewCompositeEnv). Default
  // null: the default (POSIX) file system. Tests install a FaultInjectionFs here to simulate
  // power loss and I/O errors; production never sets it.
  std::shared_ptr<rocksdb::FileSystem> file_system;
};

// What Append() answers. `status` follows the codes documented on ProduceResponse.
struct AppendResult {
  absl::Status status;
  std::vector<wharf::v1::RecordAck> acks;    // one per record when status is OK
  bool duplicate = false;                    // a retry answered with the original acks
  std::chrono::milliseconds retry_after{0};  // set with RESOURCE_EXHAUSTED
};

using AppendCallback = std::function<void(AppendResult)>;

// A produce request encoded for the store (EncodeAppend). Each record is already the leading part
// of its stored value: the StoredRecord fields record, producer_id and sequence, serialized (the
// writer adds the ingest time, field 4, and the CRC32C frame of codec.h). Encoding is the
// per-record protobuf work of an append; done on the caller's thread (gRPC's threads, in
// parallel), it leaves the single group-commit writer only offsets, keys and the write itself
// (docs/BENCHMARKS.md, "Ingest writer path"). Holds no protobuf objects, so the writer frees a
// request with a handful of free() calls instead of several per record.
struct EncodedAppend {
  struct Record {
    size_t end = 0;      // end of this record's bytes in `encoded`; it starts at the previous end
    uint32_t crc = 0;    // CRC32C of those bytes (the writer extends it over the ingest time)
    bool keyed = false;  // false: keyless, spread round-robin per request
    uint64_t key_hash = 0;  // KeyHash(key) when keyed: PartitionForKey = key_hash % partitions
  };
  std::string dataset;
  std::string producer_id;
  uint64_t first_sequence = 0;
  bool allow_sequence_gap = false;
  // Payload + key + header bytes of the records: what quotas and the ingest queue bound count.
  uint64_t bytes = 0;
  std::vector<Record> records;
  std::string encoded;
};

// Encodes `request` for StagingStore::AppendEncoded. Stores nothing: the records are written,
// and acknowledged, only by the group commit that takes the result (durability as on Append).
// Thread safety: a pure function.
EncodedAppend EncodeAppend(const wharf::v1::ProduceRequest& request);

// A raw record read back from the landing zone; its checksum has been verified.
struct RawRecord {
  uint64_t offset = 0;
  wharf::v1::StoredRecord record;
  uint64_t stored_bytes = 0;  // size of the stored value
};

// Everything one pipeline step commits for one partition, in one atomic write.
struct BatchCommit {
  std::string dataset;
  uint32_t partition = 0;
  // The committed batch; absent when every record of the range went to quarantine.
  std::optional<wharf::v1::StoredBatch> batch;
  // Further batches of the same step, after `batch` in offset order (only with `batch`): one
  // write for several batches shares the write's wait in RocksDB's write queue.
  std::vector<wharf::v1::StoredBatch> more_batches;
  std::vector<wharf::v1::QuarantineEntry> quarantine;
  // The validation cursor after this step: every offset below it is batched or quarantined.
  uint64_t next_offset = 0;
  // Stored bytes of the raw records this step covers (RawRecord::stored_bytes summed).
  uint64_t raw_bytes = 0;
};

// In-memory view of one partition, for the pipeline and for status.
struct PartitionCounters {
  wharf::v1::PartitionIngestState ingest;
  wharf::v1::ValidationCheckpoint validation;
  wharf::v1::RetentionCheckpoint retention;
};

// Called after each durable group commit, once per partition that received records, on the
// writer thread: must not block.
using AppendListener =
    std::function<void(const std::string& dataset, uint32_t partition, uint64_t next_offset)>;

// The staging store: the landing zone (raw records), committed batches, quarantine, checkpoints,
// producer deduplication state and metadata, in one RocksDB database with a column family each;
// raw records and batches have one column family per (dataset, partition) (rocksdb_options.h).
// A store written with the earlier layout (one "raw" and one "batches" column family) is
// migrated by Open.
//
// Durability: every write that covers data and the checkpoint describing it is one RocksDB write
// batch, so a crash (kill -9, power loss in kSync mode) leaves either both or neither. The WAL is
// always on; recovery refuses mid-log corruption (kTolerateCorruptedTailRecords): only a torn
// tail, which was never acknowledged, may be dropped.
//
// Thread safety: all methods are safe to call from any thread. Appends are serialised through one
// writer thread (group commit); reads and pipeline writes go straight to RocksDB. Per partition,
// the caller guarantees that at most one thread runs CommitBatch / DeleteRawBelow /
// DeleteBatchesBelow at a time, and per (destination, partition) at most one runs
// SetDeliveryCursor.
class StagingStore {
 public:
  // Opens (or creates) the store. Fails with DATA_LOSS when RocksDB finds corruption, with
  // FAILED_PRECONDITION when a dataset's partition count differs from the stored one.
  // Column families of datasets no longer configured stay open and untouched (their data is
  // kept); each configured partition's are created. A store with the legacy "raw"/"batches"
  // column families is migrated first (crash-safe, see MigrateLegacyLayout in the .cc; DATA_LOSS
  // when a legacy key names no partition, leaving that column family as it was).
  static absl::StatusOr<std::unique_ptr<StagingStore>> Open(StoreOptions options);

  virtual ~StagingStore() = default;

  // Starts the group-commit writer thread.
  virtual absl::Status Start() = 0;
  // Refuses new appends (UNAVAILABLE), commits and answers every queued one, then stops the
  // writer. Idempotent.
  virtual void Stop() = 0;

  // Registers a listener for durable appends. Call before Start().
  virtual void SetAppendListener(AppendListener listener) = 0;

  // Queues the request for the next group commit. `done` is called exactly once, on the writer
  // thread (or inline for requests refused before queueing), after the records are durable per
  // the configured Durability, or with an error and nothing stored. `done` must not block.
  //
  // Records are assigned partitions (stable hash of the key; keyless records round-robin) and
  // consecutive offsets per partition in request order. With a producer id, the sequence check
  // and the producer window update are part of the same write batch as the records.
  virtual void AppendEncoded(EncodedAppend append, AppendCallback done) = 0;
  // The same for a request not encoded yet: encodes it on the calling thread.
  void Append(const wharf::v1::ProduceRequest& request, AppendCallback done) {
    AppendEncoded(EncodeAppend(request), std::move(done));
  }

  // Pipeline side -------------------------------------------------------------------------------

  // Reads raw records of one partition with offsets in [from, to), at most max_records and at
  // least one record even if it exceeds max_bytes. DATA_LOSS on a checksum mismatch.
  virtual absl::Status ReadRaw(std::string_view dataset, uint32_t partition, uint64_t from,
                               uint64_t to, size_t max_records, uint64_t max_bytes,
                               std::vector<RawRecord>* out) = 0;

  // Commits a pipeline step atomically: batch, quarantine entries and validation cursor in one
  // write. NOT synced: the commit survives kill -9 (the WAL is in the page cache) but may vanish
  // in a power loss, together with everything written after it. That is safe because a lost
  // commit is recomputed from the raw records (synced at ack) as long as none of its batches
  // reached a destination; callers must therefore call SyncPipelineWrites() after reading a
  // batch and before handing it to a destination (batch boundaries must never change once a
  // batch may have been delivered).
  virtual absl::Status CommitBatch(const BatchCommit& commit) = 0;

  // Makes every CommitBatch() that returned before this call durable (one fsync of the WAL,
  // covering every write before it), unless a previous call already covered them: then it
  // returns at once without I/O. A failed sync fails the store like any failed write.
  virtual absl::Status SyncPipelineWrites() = 0;

  // Reads committed batches of one partition whose first offset is >= from, in offset order.
  virtual absl::Status ReadBatches(std::string_view dataset, uint32_t partition, uint64_t from,
                                   size_t max_batches,
                                   std::vector<wharf::v1::StoredBatch>* out) = 0;

  // Delivery cursor of (dataset, destination, partition). NotFound is never returned: a missing
  // cursor is an empty checkpoint.
  virtual absl::StatusOr<wharf::v1::DeliveryCheckpoint> GetDeliveryCursor(
      std::string_view dataset, std::string_view destination, uint32_t partition) = 0;
  virtual absl::Status SetDeliveryCursor(std::string_view dataset, std::string_view destination,
                                         uint32_t partition,
                                         const wharf::v1::DeliveryCheckpoint& cursor) = 0;

  // Retention: deletes raw records below `offset` whose ingest time is before `cutoff` (stops at
  // the first newer one; time_point::max(): no time bound, the records are not read), or batches
  // starting below `offset`. Each call is one atomic write
  // together with the updated RetentionCheckpoint. Return how many were deleted.
  virtual absl::StatusOr<uint64_t> DeleteRawBelow(std::string_view dataset, uint32_t partition,
                                                  uint64_t offset,
                                                  std::chrono::system_clock::time_point cutoff,
                                                  size_t max_records) = 0;
  virtual absl::StatusOr<uint64_t> DeleteBatchesBelow(std::string_view dataset, uint32_t partition,
                                                      uint64_t offset) = 0;

  // Quarantine entries of a dataset in (partition, offset) order, starting after `after_key`
  // (an opaque token from a previous call; empty: from the start). Sets *next_key to the token
  // to continue with, or empty at the end.
  virtual absl::Status ListQuarantine(std::string_view dataset, std::string_view after_key,
                                      size_t limit, std::vector<wharf::v1::QuarantineEntry>* out,
                                      std::string* next_key) = 0;

  // Quarantine operations -------------------------------------------------------------------------
  //
  // Entries are addressed by a token "partition/offset" (validation failures) or
  // "partition/offset/destination" (records a destination refused: one entry per destination).

  // One entry by token; NOT_FOUND when there is none.
  virtual absl::StatusOr<wharf::v1::QuarantineEntry> GetQuarantine(std::string_view dataset,
                                                                   std::string_view token) = 0;

  // Records a destination refused (DESTINATION_REJECTED entries of one partition) and that
  // destination's cursor advance past the batch, in one synced write: the refused records are
  // in quarantine exactly when the cursor has moved past them.
  virtual absl::Status QuarantineRejected(std::string_view dataset, std::string_view destination,
                                          uint32_t partition,
                                          const std::vector<wharf::v1::QuarantineEntry>& entries,
                                          const wharf::v1::DeliveryCheckpoint& cursor) = 0;

  // Deletes entries (synced). Returns how many existed.
  virtual absl::StatusOr<uint64_t> DiscardQuarantine(std::string_view dataset,
                                                     const std::vector<std::string>& tokens) = 0;

  // Replay: in one synced write on the writer thread, deletes each entry that still exists and
  // appends its original record again to the same partition (new offset; StoredRecord.replayed
  // set, attempts and first error time carried over), so a record is either in quarantine or
  // back in the landing zone, never both and never neither. `done` gets the number replayed
  // (entries already gone are skipped: a repeated replay is harmless). Must not block.
  virtual void ReplayQuarantine(std::string dataset, std::vector<std::string> tokens,
                                std::function<void(absl::StatusOr<uint64_t>)> done) = 0;

  // Quarantine retention: deletes entries whose latest failure is before `cutoff`, at most
  // `max_entries` per call (synced). Returns how many were deleted.
  virtual absl::StatusOr<uint64_t> ExpireQuarantine(std::string_view dataset,
                                                    std::chrono::system_clock::time_point cutoff,
                                                    size_t max_entries) = 0;

  // Entries and bytes held in quarantine for the dataset (kept up to date by every write).
  virtual uint64_t QuarantineBytes(std::string_view dataset) const = 0;
  virtual uint64_t QuarantineEntries(std::string_view dataset) const = 0;

  // Control-plane values ------------------------------------------------------------------------

  // Small values such as destination pause flags and contract versions. Synced: an operator's
  // change survives a crash once the call returns.
  virtual absl::Status PutMeta(std::string_view key, std::string_view value) = 0;
  virtual absl::Status DeleteMeta(std::string_view key) = 0;
  // nullopt when absent.
  virtual absl::StatusOr<std::optional<std::string>> GetMeta(std::string_view key) = 0;
  // Every (key, value) whose key starts with `prefix`, in key order.
  virtual absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ListMeta(
      std::string_view prefix) = 0;

  // Status side ---------------------------------------------------------------------------------

  virtual const std::vector<DatasetOptions>& datasets() const = 0;
  virtual bool HasDataset(std::string_view dataset) const = 0;
  // Counters of one partition as of the last writes (the validation cursor may include a
  // commit not yet synced: see CommitBatch()).
  virtual PartitionCounters GetPartitionCounters(std::string_view dataset,
                                                 uint32_t partition) const = 0;
  // Logical bytes held for the dataset (raw + batches not yet deleted).
  virtual uint64_t StagedBytes(std::string_view dataset) const = 0;
  // Size of the store's files on disk, and free bytes on its file system.
  virtual uint64_t StoreSizeBytes() const = 0;
  virtual uint64_t DiskFreeBytes() const = 0;
  // Empty when appends are accepted; otherwise why not (disk watermark, stopped, write failure).
  virtual std::string NotAcceptingReason() const = 0;
  // OK while the store is healthy. After a failed write to RocksDB (an fsync or write error on
  // any write path, or a RocksDB background error such as a failed flush), the first such
  // error: from then on the store refuses every write (appends answer UNAVAILABLE, pipeline
  // writes fail) until it is reopened, because after a failed fsync nobody knows what reached
  // the disk. wharfd polls this and exits with code 4 so that it is restarted; the reopen
  // replays the WAL and producers' retries are deduplicated.
  virtual absl::Status WriteFailure() const = 0;
  // Flushes memtables (used at shutdown to shorten the next start's WAL replay).
  virtual absl::Status Flush() = 0;
};

// Stable partition of a non-empty key: FNV-1a 64 of the key bytes (KeyHash), modulo the
// partition count. Part of the on-disk contract: changing it would reorder existing keys.
uint32_t PartitionForKey(std::string_view key, uint32_t partitions);
uint64_t KeyHash(std::string_view key);

}  // namespace wharf::storage
