#include "storage/rocksdb_options.h"

#include <algorithm>

#include "rocksdb/cache.h"
#include "rocksdb/convenience.h"
#include "rocksdb/filter_policy.h"
#include "rocksdb/table.h"

namespace wharf::storage {

StagingRocksDbConfig StagingRocksDbOptions(const StoreOptions& options) {
  StagingRocksDbConfig config;
  rocksdb::DBOptions& db_options = config.db;
  db_options.create_if_missing = true;
  db_options.create_missing_column_families = true;
  // Durability: a torn record at the very end of the WAL is a write that was never
  // acknowledged (the ack waits for the write and, in sync mode, its fsync), so dropping it is
  // safe. Corruption anywhere else in the log fails the open instead of silently opening a
  // store that is missing acknowledged records (the default point-in-time mode would).
  db_options.wal_recovery_mode = rocksdb::WALRecoveryMode::kTolerateCorruptedTailRecords;
  // paranoid_checks also makes RocksDB stop all writes after a failed WAL write or sync
  // (the error becomes a background error). That is essential: the failed group may be in
  // the WAL anyway (its append reached the page cache, only the fsync failed), and a later
  // group written after it would reuse its offsets (the store rolls them back); both would
  // be replayed at the next open. Wharf also refuses further writes itself (WriteFailure).
  db_options.paranoid_checks = true;
  db_options.max_background_jobs = 2;
  db_options.bytes_per_sync = 1 << 20;
  db_options.max_total_wal_size = 256ull << 20;
  db_options.keep_log_file_num = 4;
  db_options.info_log_level = rocksdb::InfoLogLevel::WARN_LEVEL;

  rocksdb::BlockBasedTableOptions table;
  table.block_cache = rocksdb::NewLRUCache(options.block_cache_bytes);
  table.block_size = 32 << 10;
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  table.checksum = rocksdb::kCRC32c;

  const auto supported = rocksdb::GetSupportedCompressions();
  const bool lz4 =
      std::find(supported.begin(), supported.end(), rocksdb::kLZ4Compression) != supported.end();

  rocksdb::ColumnFamilyOptions cf;
  cf.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  cf.write_buffer_size = options.write_buffer_bytes;
  cf.compression = lz4 ? rocksdb::kLZ4Compression : rocksdb::kNoCompression;
  rocksdb::ColumnFamilyOptions small_cf = cf;
  small_cf.write_buffer_size = 4 << 20;

  config.column_families = {
      {rocksdb::kDefaultColumnFamilyName, small_cf},
      {"raw", cf},
      {"batches", cf},
      {"quarantine", small_cf},
      {"checkpoints", small_cf},
      {"producers", small_cf},
      {"meta", small_cf},
  };
  return config;
}

}  // namespace wharf::storage
