#pragma once

#include <vector>

#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "storage/staging_store.h"

namespace wharf::storage {

// The column families of the staging store, in the order of
// StagingRocksDbConfig::column_families (and of the handles RocksDB returns for them).
enum StagingColumnFamily : size_t {
  kDefaultColumnFamily = 0,
  kRawColumnFamily = 1,          // "raw": the landing zone, one value per record
  kBatchesColumnFamily = 2,      // "batches": committed batches
  kQuarantineColumnFamily = 3,   // "quarantine"
  kCheckpointsColumnFamily = 4,  // "checkpoints": ingest, validation, retention, delivery
  kProducersColumnFamily = 5,    // "producers": deduplication windows
  kMetaColumnFamily = 6,         // "meta": dataset registrations
  kStagingColumnFamilies = 7,
};

// wharfd's RocksDB configuration: what StagingStore::Open opens the store with.
struct StagingRocksDbConfig {
  rocksdb::DBOptions db;
  std::vector<rocksdb::ColumnFamilyDescriptor> column_families;  // indexed by StagingColumnFamily
};

// The one source of truth for the store's RocksDB options, derived from `options` (block cache,
// write buffer size). Used by StagingStore::Open and by bench/storage_ceiling.cc, which measures
// RocksDB alone with exactly these options. Thread safety: a pure function (each call builds a
// new block cache).
StagingRocksDbConfig StagingRocksDbOptions(const StoreOptions& options);

}  // namespace wharf::storage
