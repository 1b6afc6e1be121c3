#include "storage/rocksdb_options.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "rocksdb/db.h"
#include "rocksdb/table.h"
#include "storage/codec.h"
#include "storage/keys.h"
#include "storage/staging_store.h"

namespace wharf::storage {
namespace {

TEST(StagingRocksDbOptionsTest, ColumnFamiliesAreInTheOrderOfTheEnum) {
  const StagingRocksDbConfig config = StagingRocksDbOptions(StoreOptions{});
  ASSERT_EQ(config.column_families.size(), static_cast<size_t>(kStagingColumnFamilies));
  EXPECT_EQ(config.column_families[kDefaultColumnFamily].name, rocksdb::kDefaultColumnFamilyName);
  EXPECT_EQ(config.column_families[kQuarantineColumnFamily].name, "quarantine");
  EXPECT_EQ(config.column_families[kCheckpointsColumnFamily].name, "checkpoints");
  EXPECT_EQ(config.column_families[kProducersColumnFamily].name, "producers");
  EXPECT_EQ(config.column_families[kMetaColumnFamily].name, "meta");
  // Raw records and batches have no fixed column family: one per partition each.
  for (const auto& d : config.column_families) {
    EXPECT_NE(d.name, kLegacyRawColumnFamily);
    EXPECT_NE(d.name, kLegacyBatchesColumnFamily);
  }
}

TEST(StagingRocksDbOptionsTest, PartitionColumnFamilyNamesRoundTrip) {
  EXPECT_EQ(RawColumnFamilyName("events", 3), "raw/events/3");
  EXPECT_EQ(BatchesColumnFamilyName("a.b-c_1", 4294967295u), "batches/a.b-c_1/4294967295");
  for (const std::string& name :
       {RawColumnFamilyName("events", 3), BatchesColumnFamilyName("a.b-c_1", 4294967295u)}) {
    const auto parsed = ParsePartitionColumnFamily(name);
    ASSERT_TRUE(parsed.has_value()) << name;
    EXPECT_EQ(parsed->raw, name[0] == 'r');
    EXPECT_EQ(name[0] == 'r' ? RawColumnFamilyName(parsed->dataset, parsed->partition)
                             : BatchesColumnFamilyName(parsed->dataset, parsed->partition),
              name);
  }
}

TEST(StagingRocksDbOptionsTest, MalformedPartitionColumnFamilyNamesAreNotParsed) {
  for (const char* name :
       {"raw", "batches", "quarantine", "default", "raw/", "raw/events", "raw/events/", "raw//1",
        "raw/events/x", "raw/events/-1", "raw/events/01", "raw/events/1 ", "raw/events/4294967296",
        "raw/ev/ents/1", "raw/_events/1", "Raw/events/1", "batches/events", "batchesevents/1",
        "raw/events/99999999999999999999"}) {
    EXPECT_FALSE(ParsePartitionColumnFamily(name).has_value()) << name;
  }
}

TEST(StagingRocksDbOptionsTest, DescriptorsKeepEveryExistingColumnFamily) {
  const StagingRocksDbConfig config = StagingRocksDbOptions(StoreOptions{});
  const std::vector<std::string> existing = {"default", "meta",    "raw/gone/0",   "batches/gone/0",
                                             "raw",     "batches", "someone-elses"};
  const auto descriptors = StagingColumnFamilyDescriptors(config, existing);
  ASSERT_EQ(descriptors.size(), config.column_families.size() + 5);
  for (size_t i = 0; i < config.column_families.size(); ++i) {
    EXPECT_EQ(descriptors[i].name, config.column_families[i].name);
  }
  const size_t n = config.column_families.size();
  EXPECT_EQ(descriptors[n].name, "raw/gone/0");
  EXPECT_EQ(descriptors[n + 1].name, "batches/gone/0");
  EXPECT_EQ(descriptors[n + 2].name, "raw");
  EXPECT_EQ(descriptors[n + 3].name, "batches");
  EXPECT_EQ(descriptors[n + 4].name, "someone-elses");
  // Per-partition and legacy column families get the per-partition options, others the small
  // column families' ones.
  for (size_t i = n; i < n + 4; ++i) {
    EXPECT_EQ(descriptors[i].options.write_buffer_size, config.partition_cf.write_buffer_size);
  }
  EXPECT_EQ(descriptors[n + 4].options.write_buffer_size, 4u << 20);
}

TEST(StagingRocksDbOptionsTest, KeepsTheDurabilitySettings) {
  const StagingRocksDbConfig config = StagingRocksDbOptions(StoreOptions{});
  // Mid-log corruption must fail the open; only a torn tail may be dropped.
  EXPECT_EQ(config.db.wal_recovery_mode, rocksdb::WALRecoveryMode::kTolerateCorruptedTailRecords);
  EXPECT_TRUE(config.db.paranoid_checks);
  EXPECT_TRUE(config.db.create_if_missing);
  EXPECT_TRUE(config.db.create_missing_column_families);
  EXPECT_FALSE(config.db.error_if_exists);
}

TEST(StagingRocksDbOptionsTest, SizesComeFromTheStoreOptions) {
  StoreOptions options;
  options.write_buffer_bytes = 8 << 20;
  options.block_cache_bytes = 16 << 20;
  const StagingRocksDbConfig config = StagingRocksDbOptions(options);
  EXPECT_EQ(config.partition_cf.write_buffer_size, 8u << 20);
  // The small column families keep their own, smaller memtables.
  EXPECT_EQ(config.column_families[kMetaColumnFamily].options.write_buffer_size, 4u << 20);
  const auto* table =
      config.partition_cf.table_factory->GetOptions<rocksdb::BlockBasedTableOptions>();
  ASSERT_NE(table, nullptr);
  ASSERT_NE(table->block_cache, nullptr);
  EXPECT_EQ(table->block_cache->GetCapacity(), 16u << 20);
  // Debian's RocksDB computes CRC32C in software; XXH3 is far cheaper per block.
  EXPECT_EQ(table->checksum, rocksdb::kXXH3);
  // Open table files are bounded (their readers would grow with the store).
  EXPECT_EQ(config.db.max_open_files, 256);
  options.max_open_files = 64;
  EXPECT_EQ(StagingRocksDbOptions(options).db.max_open_files, 64);
}

TEST(StagingRocksDbOptionsTest, CompressionIsTheSameAtEveryLevel) {
  // A per-level compression would stop RocksDB from moving files down without rewriting them.
  const StagingRocksDbConfig config = StagingRocksDbOptions(StoreOptions{});
  EXPECT_TRUE(config.partition_cf.compression_per_level.empty());
  for (const auto& cf : config.column_families) {
    EXPECT_TRUE(cf.options.compression_per_level.empty()) << cf.name;
  }
}

class StagingRocksDbOptionsStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = "/tmp/wharf-rocksdb-options-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr) << std::strerror(errno);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::string dir_;
};

// What the storage ceiling benchmark relies on: a database opened with these options is the
// store's own layout (column families, keys, value framing), so writing records there is what
// wharfd does.
TEST_F(StagingRocksDbOptionsStoreTest, OpensAStoreWrittenByStagingStore) {
  StoreOptions options;
  options.path = dir_ + "/store";
  options.min_free_bytes = 0;
  options.block_cache_bytes = 4 << 20;
  options.write_buffer_bytes = 4 << 20;
  options.datasets = {DatasetOptions{"events", 1, 0}};
  {
    auto store = StagingStore::Open(options);
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->Start().ok());
    wharf::v1::ProduceRequest request;
    request.set_dataset("events");
    request.add_records()->set_payload(R"({"id":1})");
    auto promise = std::make_shared<std::promise<AppendResult>>();
    std::future<AppendResult> future = promise->get_future();
    (*store)->Append(std::move(request),
                     [promise](AppendResult result) { promise->set_value(std::move(result)); });
    ASSERT_EQ(future.wait_for(std::chrono::seconds(10)), std::future_status::ready);
    ASSERT_TRUE(future.get().status.ok());
    (*store)->Stop();
  }

  StagingRocksDbConfig config = StagingRocksDbOptions(options);
  // The fixed column families, then the partition's raw one (as the benchmark opens them).
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors = config.column_families;
  descriptors.emplace_back(RawColumnFamilyName("events", 0), config.partition_cf);
  descriptors.emplace_back(BatchesColumnFamilyName("events", 0), config.partition_cf);
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw_db = nullptr;
  ASSERT_TRUE(rocksdb::DB::Open(config.db, options.path, descriptors, &handles, &raw_db).ok());
  std::unique_ptr<rocksdb::DB> db(raw_db);
  std::string value;
  ASSERT_TRUE(db->Get(rocksdb::ReadOptions(), handles[config.column_families.size()],
                      OffsetKey("events", 0, 0), &value)
                  .ok());
  wharf::v1::StoredRecord stored;
  ASSERT_TRUE(DecodeChecked(value, &stored, "raw record").ok());
  EXPECT_EQ(stored.record().payload(), R"({"id":1})");
  for (rocksdb::ColumnFamilyHandle* handle : handles) {
    ASSERT_TRUE(db->DestroyColumnFamilyHandle(handle).ok());
  }
  ASSERT_TRUE(db->Close().ok());

  // The benchmark sets error_if_exists so that a leftover store never counts as a fresh run.
  config = StagingRocksDbOptions(options);
  config.db.error_if_exists = true;
  handles.clear();
  raw_db = nullptr;
  rocksdb::Status refused =
      rocksdb::DB::Open(config.db, options.path, descriptors, &handles, &raw_db);
  EXPECT_TRUE(refused.IsInvalidArgument()) << refused.ToString();
  if (raw_db != nullptr) {  // only when the open wrongly succeeded
    for (rocksdb::ColumnFamilyHandle* handle : handles) {
      raw_db->DestroyColumnFamilyHandle(handle).PermitUncheckedError();
    }
    delete raw_db;
  }
}

// Stores written before the switch to XXH3 hold table files with CRC32C block checksums: each
// file records its checksum type, so they are still read (and verified) with today's options.
TEST_F(StagingRocksDbOptionsStoreTest, ReadsTableFilesWrittenWithCrc32c) {
  StoreOptions options;
  options.path = dir_ + "/store";
  options.block_cache_bytes = 4 << 20;
  options.write_buffer_bytes = 4 << 20;
  const std::string key = OffsetKey("events", 0, 7);
  // The per-partition column family comes after the fixed ones.
  constexpr size_t kRaw = kStagingColumnFamilies;
  {
    const StagingRocksDbConfig config = StagingRocksDbOptions(options);
    std::vector<rocksdb::ColumnFamilyDescriptor> cfs =
        StagingColumnFamilyDescriptors(config, {RawColumnFamilyName("events", 0)});
    rocksdb::BlockBasedTableOptions crc;
    crc.checksum = rocksdb::kCRC32c;
    cfs[kRaw].options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(crc));
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* raw_db = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(config.db, options.path, cfs, &handles, &raw_db).ok());
    std::unique_ptr<rocksdb::DB> db(raw_db);
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), handles[kRaw], key, "old").ok());
    ASSERT_TRUE(db->Flush(rocksdb::FlushOptions(), handles[kRaw]).ok());
    for (rocksdb::ColumnFamilyHandle* handle : handles) {
      ASSERT_TRUE(db->DestroyColumnFamilyHandle(handle).ok());
    }
    ASSERT_TRUE(db->Close().ok());
  }
  const StagingRocksDbConfig config = StagingRocksDbOptions(options);
  const std::vector<rocksdb::ColumnFamilyDescriptor> cfs =
      StagingColumnFamilyDescriptors(config, {RawColumnFamilyName("events", 0)});
  ASSERT_EQ(cfs[kRaw].name, RawColumnFamilyName("events", 0));
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw_db = nullptr;
  ASSERT_TRUE(rocksdb::DB::Open(config.db, options.path, cfs, &handles, &raw_db).ok());
  std::unique_ptr<rocksdb::DB> db(raw_db);
  rocksdb::ReadOptions read;
  read.verify_checksums = true;
  std::string value;
  ASSERT_TRUE(db->Get(read, handles[kRaw], key, &value).ok());
  EXPECT_EQ(value, "old");
  // A new file written next to it uses XXH3; both are read back.
  ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), handles[kRaw], key + "x", "new").ok());
  ASSERT_TRUE(db->Flush(rocksdb::FlushOptions(), handles[kRaw]).ok());
  ASSERT_TRUE(
      db->CompactRange(rocksdb::CompactRangeOptions(), handles[kRaw], nullptr, nullptr).ok());
  ASSERT_TRUE(db->Get(read, handles[kRaw], key, &value).ok());
  EXPECT_EQ(value, "old");
  ASSERT_TRUE(db->Get(read, handles[kRaw], key + "x", &value).ok());
  EXPECT_EQ(value, "new");
  for (rocksdb::ColumnFamilyHandle* handle : handles) {
    ASSERT_TRUE(db->DestroyColumnFamilyHandle(handle).ok());
  }
  ASSERT_TRUE(db->Close().ok());
}

}  // namespace
}  // namespace wharf::storage
