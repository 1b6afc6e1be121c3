#include "storage/rocksdb_options.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "rocksdb/cache.h"
#include "rocksdb/convenience.h"
#include "rocksdb/filter_policy.h"
#include "rocksdb/table.h"
#include "rocksdb/write_buffer_manager.h"
#include "storage/keys.h"

namespace wharf::storage {

namespace {
constexpr std::string_view kRawPrefix = "raw/";
constexpr std::string_view kBatchesPrefix = "batches/";
}  // namespace

std::string RawColumnFamilyName(std::string_view dataset, uint32_t partition) {
  return absl::StrCat(std::string(kRawPrefix), std::string(dataset), "/", partition);
}

std::string BatchesColumnFamilyName(std::string_view dataset, uint32_t partition) {
  return absl::StrCat(std::string(kBatchesPrefix), std::string(dataset), "/", partition);
}

std::optional<PartitionColumnFamily> ParsePartitionColumnFamily(std::string_view name) {
  PartitionColumnFamily out;
  if (name.substr(0, kRawPrefix.size()) == kRawPrefix) {
    out.raw = true;
    name.remove_prefix(kRawPrefix.size());
  } else if (name.substr(0, kBatchesPrefix.size()) == kBatchesPrefix) {
    name.remove_prefix(kBatchesPrefix.size());
  } else {
    return std::nullopt;
  }
  const size_t slash = name.rfind('/');
  if (slash == std::string_view::npos) return std::nullopt;
  const std::string_view dataset = name.substr(0, slash);
  const std::string_view partition = name.substr(slash + 1);
  if (!ValidateName("dataset", dataset).ok() || partition.empty() ||
      partition.find_first_not_of("0123456789") != std::string_view::npos ||
      (partition.size() > 1 && partition[0] == '0') ||
      !absl::SimpleAtoi(std::string(partition), &out.partition)) {
    return std::nullopt;
  }
  out.dataset = std::string(dataset);
  return out;
}

std::vector<rocksdb::ColumnFamilyDescriptor> StagingColumnFamilyDescriptors(
    const StagingRocksDbConfig& config, const std::vector<std::string>& existing) {
  std::vector<rocksdb::ColumnFamilyDescriptor> out = config.column_families;
  for (const std::string& name : existing) {
    bool fixed = false;
    for (const auto& d : config.column_families) fixed = fixed || d.name == name;
    if (fixed) continue;
    const bool partition_like = ParsePartitionColumnFamily(name).has_value() ||
                                name == kLegacyRawColumnFamily ||
                                name == kLegacyBatchesColumnFamily;
    out.emplace_back(name, partition_like ? config.partition_cf
                                          : config.column_families[kDefaultColumnFamily].options);
  }
  return out;
}

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
  db_options.max_open_files = options.max_open_files;  // StoreOptions::max_open_files
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
  // The per-partition raw and batches column families are only read with iterators (Seek to an
  // offset), which a whole-key Bloom filter cannot serve: no filter there. The small column
  // families are read with point lookups (producer windows, checkpoints, metadata, quarantine
  // entries).
  rocksdb::BlockBasedTableOptions small_table = table;
  small_table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));

  const auto supported = rocksdb::GetSupportedCompressions();
  const bool lz4 =
      std::find(supported.begin(), supported.end(), rocksdb::kLZ4Compression) != supported.end();

  rocksdb::ColumnFamilyOptions cf;
  cf.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  cf.write_buffer_size = options.write_buffer_bytes;
  cf.compression = lz4 ? rocksdb::kLZ4Compression : rocksdb::kNoCompression;
  // The same compression at every level (no compression_per_level): RocksDB moves a file down a
  // level without rewriting it (a trivial move) only when the compression does not change, and
  // with a partition's keys only growing, those moves are what keeps compaction cost flat as the
  // store grows. Each record is then LZ4-compressed once, at flush. Measured with no compression
  // at levels 0-1 instead: CPU per record rising with the store (x1.39 over 5 M records) and a
  // store 4 times larger (docs/BENCHMARKS.md, "Column families per partition").
  rocksdb::ColumnFamilyOptions small_cf = cf;
  small_cf.table_factory.reset(rocksdb::NewBlockBasedTableFactory(small_table));
  small_cf.write_buffer_size = 4 << 20;

  config.partition_cf = cf;
  config.column_families = {
      {rocksdb::kDefaultColumnFamilyName, small_cf},
      {"quarantine", small_cf},
      {"checkpoints", small_cf},
      {"producers", small_cf},
      {"meta", small_cf},
  };
  return config;
}

}  // namespace wharf::storage
