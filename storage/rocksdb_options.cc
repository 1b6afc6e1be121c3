#include "storage/rocksdb_options.h"

#include <algorithm>

#include "rocksdb/cache.h"
#include "rocksdb/convenience.h"
#include "rocksdb/filter_policy.h"
#include "rocksdb/table.h"
#include "rocksdb/write_buffer_manager.h"

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
  // Bounds what a restart after kill -9 replays (WAL replay is most of that restart's time):
  // past 32 MiB of log, RocksDB flushes the column families that keep the oldest log file
  // alive (typically the small ones, whose memtables fill slowly). Safe: a flush writes the
  // data to a table file before the log file is dropped.
  db_options.max_total_wal_size = 32ull << 20;
  db_options.keep_log_file_num = 4;
  db_options.info_log_level = rocksdb::InfoLogLevel::WARN_LEVEL;

  // One cache for blocks, index and filter blocks and (as reservations) the memtables: the
  // store's memory is bounded by block_cache_bytes whatever the amount of data staged.
  std::shared_ptr<rocksdb::Cache> cache = rocksdb::NewLRUCache(options.block_cache_bytes);
  const uint64_t memtable_budget =
      std::min(options.memtable_budget_bytes, options.block_cache_bytes / 2);
  if (memtable_budget > 0) {
    db_options.write_buffer_manager =
        std::make_shared<rocksdb::WriteBufferManager>(memtable_budget, cache);
  }

  rocksdb::BlockBasedTableOptions table;
  table.block_cache = cache;
  table.block_size = 32 << 10;
  // XXH3 rather than CRC32C for table blocks: Debian's RocksDB is built portable, so its CRC32C
  // is the table-driven software one: 10% of wharfd's CPU end to end, for WAL records and table
  // blocks together (every flush, compaction and read checksums each block). XXH3 detects the same
  // corruption (RocksDB verifies it on every read, and `wharfd --verify` reads every block). Each
  // table file records its own checksum type, so files written before this change are still
  // verified with CRC32C. The WAL keeps CRC32C (not configurable).
  table.checksum = rocksdb::kXXH3;
  // Index and filter blocks live in the cache (bounded) rather than beside it (growing with
  // the number of table files); those of level 0, read by every lookup, stay pinned there.
  table.cache_index_and_filter_blocks = true;
  table.pin_l0_filter_and_index_blocks_in_cache = true;
  // The raw and batches column families are only read with iterators (Seek to an offset), which
  // a whole-key Bloom filter cannot serve: no filter there. The small column families are read
  // with point lookups (producer windows, checkpoints, metadata, quarantine entries).
  rocksdb::BlockBasedTableOptions small_table = table;
  small_table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));

  const auto supported = rocksdb::GetSupportedCompressions();
  const bool lz4 =
      std::find(supported.begin(), supported.end(), rocksdb::kLZ4Compression) != supported.end();

  rocksdb::ColumnFamilyOptions cf;
  cf.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  cf.write_buffer_size = options.write_buffer_bytes;
  cf.compression = lz4 ? rocksdb::kLZ4Compression : rocksdb::kNoCompression;
  // Levels 0 and 1 uncompressed: records normally live there only until they are delivered
  // (seconds), and LZ4 on every flush and L0->L1 compaction was 14% of wharfd's CPU end to end,
  // with its decompression another 4% (perf, docs/BENCHMARKS.md "Allocator, compression and
  // checksums"). A backlog that outgrows level 1 (256 MiB by default) is compressed once, on its
  // way to level 2, so a long outage still costs LZ4-compressed disk space.
  cf.compression_per_level.assign(cf.num_levels, cf.compression);
  cf.compression_per_level[0] = rocksdb::kNoCompression;
  cf.compression_per_level[1] = rocksdb::kNoCompression;
  rocksdb::ColumnFamilyOptions small_cf = cf;
  small_cf.table_factory.reset(rocksdb::NewBlockBasedTableFactory(small_table));
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
