#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "storage/staging_store.h"

namespace wharf::storage {

// The fixed column families of the staging store, in the order of
// StagingRocksDbConfig::column_families (and of the handles RocksDB returns for them).
enum StagingColumnFamily : size_t {
  kDefaultColumnFamily = 0,
  kQuarantineColumnFamily = 1,   // "quarantine"
  kCheckpointsColumnFamily = 2,  // "checkpoints": ingest, validation, retention, delivery
  kProducersColumnFamily = 3,    // "producers": deduplication windows
  kMetaColumnFamily = 4,         // "meta": dataset registrations
  kStagingColumnFamilies = 5,
};

// Raw records and committed batches live in one column family per (dataset, partition) each:
// "raw/<dataset>/<partition>" and "batches/<dataset>/<partition>" (dataset names never contain
// '/', see ValidateName). Keys are unchanged (OffsetKey). Why: producers append to every
// partition at once; with one column family for all partitions, every memtable flush wrote a
// level-0 file spanning the newest offsets of all partitions, which overlapped every older
// level-1 file, and compactions rewrote old data again and again. In a column family of its
// own, a partition's keys only grow: flushed files never overlap older ones, and compactions
// below level 0 are trivial moves.
std::string RawColumnFamilyName(std::string_view dataset, uint32_t partition);
std::string BatchesColumnFamilyName(std::string_view dataset, uint32_t partition);

struct PartitionColumnFamily {
  bool raw = false;  // true: "raw/...", false: "batches/..."
  std::string dataset;
  uint32_t partition = 0;
};
// nullopt when `name` is not a well-formed per-partition column family name.
std::optional<PartitionColumnFamily> ParsePartitionColumnFamily(std::string_view name);

// The column families of the layout before per-partition column families: all raw records in
// "raw", all batches in "batches". StagingStore::Open migrates a store that still has them.
inline constexpr char kLegacyRawColumnFamily[] = "raw";
inline constexpr char kLegacyBatchesColumnFamily[] = "batches";

// wharfd's RocksDB configuration: what StagingStore::Open opens the store with.
struct StagingRocksDbConfig {
  rocksdb::DBOptions db;
  std::vector<rocksdb::ColumnFamilyDescriptor> column_families;  // indexed by StagingColumnFamily
  // Options of every per-partition raw and batches column family (and of the legacy "raw" and
  // "batches" ones while they are migrated). One object for all of them: they share the block
  // cache and the memtable budget (db.write_buffer_manager).
  rocksdb::ColumnFamilyOptions partition_cf;
};

// Descriptors to open a store whose column families are `existing` (from
// rocksdb::DB::ListColumnFamilies; empty for a new store) with: the fixed column families first,
// in enum order (created when missing), then every other existing one - per-partition and legacy
// ones with config.partition_cf, unknown ones with the small column families' options - so that
// no column family is ever left out of an open (RocksDB refuses that) or dropped.
std::vector<rocksdb::ColumnFamilyDescriptor> StagingColumnFamilyDescriptors(
    const StagingRocksDbConfig& config, const std::vector<std::string>& existing);

// The one source of truth for the store's RocksDB options, derived from `options` (block cache,
// write buffer size). Used by StagingStore::Open and by bench/storage_ceiling.cc, which measures
// RocksDB alone with exactly these options. Thread safety: a pure function (each call builds a
// new block cache).
StagingRocksDbConfig StagingRocksDbOptions(const StoreOptions& options);

}  // namespace wharf::storage
