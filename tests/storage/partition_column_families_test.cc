// The staging store's per-partition column families (storage/rocksdb_options.h): every partition
// gets its own raw and batches column family, column families of datasets no longer configured
// stay, and a store written with the legacy layout (one "raw" and one "batches" column family
// for every partition) is migrated at open, also after a migration interrupted by a crash.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "storage/codec.h"
#include "storage/flushed_sequence.h"
#include "storage/keys.h"
#include "storage/rocksdb_options.h"
#include "storage/staging_store.h"
#include "storage/store_verifier.h"

namespace wharf::storage {
namespace {

constexpr uint64_t kNoLimit = std::numeric_limits<uint64_t>::max();

// The store's directory opened with plain RocksDB, every column family included. Closed on
// destruction. Thread safety: none (one test thread).
class RawStore {
 public:
  explicit RawStore(const std::string& path) {
    rocksdb::DBOptions db_options;
    rocksdb::Status s = rocksdb::DB::ListColumnFamilies(db_options, path, &names_);
    EXPECT_TRUE(s.ok()) << s.ToString();
    std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
    for (const std::string& n : names_) cfs.emplace_back(n, rocksdb::ColumnFamilyOptions());
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    s = rocksdb::DB::Open(db_options, path, cfs, &handles, &db_);
    EXPECT_TRUE(s.ok()) << s.ToString();
    for (size_t i = 0; i < handles.size(); ++i) cfs_[names_[i]] = handles[i];
  }
  ~RawStore() {
    if (db_ == nullptr) return;
    for (auto& [name, h] : cfs_) db_->DestroyColumnFamilyHandle(h).PermitUncheckedError();
    EXPECT_TRUE(db_->Close().ok());
    delete db_;
  }
  rocksdb::DB* db() { return db_; }
  bool Has(const std::string& name) const { return cfs_.count(name) != 0; }
  rocksdb::ColumnFamilyHandle* Cf(const std::string& name) {
    auto it = cfs_.find(name);
    EXPECT_NE(it, cfs_.end()) << name;
    return it == cfs_.end() ? nullptr : it->second;
  }
  rocksdb::ColumnFamilyHandle* Create(const std::string& name) {
    rocksdb::ColumnFamilyHandle* h = nullptr;
    rocksdb::Status s = db_->CreateColumnFamily(rocksdb::ColumnFamilyOptions(), name, &h);
    EXPECT_TRUE(s.ok()) << s.ToString();
    cfs_[name] = h;
    return h;
  }
  void Drop(const std::string& name) {
    rocksdb::ColumnFamilyHandle* h = Cf(name);
    ASSERT_TRUE(db_->DropColumnFamily(h).ok());
    ASSERT_TRUE(db_->DestroyColumnFamilyHandle(h).ok());
    cfs_.erase(name);
  }
  // Every (key, value) of a column family, in key order.
  std::vector<std::pair<std::string, std::string>> Entries(const std::string& name) {
    std::vector<std::pair<std::string, std::string>> out;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), Cf(name)));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      out.emplace_back(it->key().ToString(), it->value().ToString());
    }
    EXPECT_TRUE(it->status().ok()) << it->status().ToString();
    return out;
  }
  std::vector<std::string> Names() const {
    std::vector<std::string> out;
    for (const auto& [name, h] : cfs_) out.push_back(name);
    return out;
  }

 private:
  rocksdb::DB* db_ = nullptr;
  std::vector<std::string> names_;
  std::map<std::string, rocksdb::ColumnFamilyHandle*> cfs_;
};

class PartitionColumnFamiliesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = "/tmp/wharf-partition-cf-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr) << std::strerror(errno);
    dir_ = tmpl;
    options_.path = dir_ + "/store";
    options_.min_free_bytes = 0;
    options_.block_cache_bytes = 8 << 20;
    options_.write_buffer_bytes = 4 << 20;
    options_.datasets = {DatasetOptions{"events", 3, 0}, DatasetOptions{"one", 1, 0}};
  }
  void TearDown() override {
    store_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  void Open() {
    auto store = StagingStore::Open(options_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    ASSERT_TRUE(store_->Start().ok());
  }

  // Appends `n` records with distinct keys (spread over the partitions), `payload_bytes` each.
  void AppendKeyed(const std::string& dataset, int n, size_t payload_bytes) {
    wharf::v1::ProduceRequest request;
    request.set_dataset(dataset);
    for (int i = 0; i < n; ++i) {
      wharf::v1::Record* r = request.add_records();
      r->set_key(absl::StrCat("key-", i));
      r->set_payload(std::string(payload_bytes, static_cast<char>('a' + i % 26)));
    }
    auto promise = std::make_shared<std::promise<AppendResult>>();
    std::future<AppendResult> future = promise->get_future();
    store_->Append(request, [promise](AppendResult r) { promise->set_value(std::move(r)); });
    ASSERT_EQ(future.wait_for(std::chrono::seconds(20)), std::future_status::ready);
    AppendResult result = future.get();
    ASSERT_TRUE(result.status.ok()) << result.status;
  }

  // Commits one batch covering the first `count` raw records of the partition.
  void CommitFirst(const std::string& dataset, uint32_t partition, uint64_t count) {
    wharf::v1::StoredBatch batch;
    auto* m = batch.mutable_manifest();
    m->set_dataset(dataset);
    m->set_partition(partition);
    m->set_first_offset(0);
    m->set_last_offset(count - 1);
    m->set_record_count(count);
    for (uint64_t o = 0; o < count; ++o) batch.add_records()->set_offset(o);
    BatchCommit commit;
    commit.dataset = dataset;
    commit.partition = partition;
    commit.batch = batch;
    commit.next_offset = count;
    ASSERT_TRUE(store_->CommitBatch(commit).ok());
  }

  // What the store holds, read through its API: partition -> (raw records, batches) serialized.
  std::map<std::string, std::pair<std::string, std::string>> Snapshot() {
    std::map<std::string, std::pair<std::string, std::string>> out;
    for (const auto& ds : store_->datasets()) {
      for (uint32_t p = 0; p < ds.partitions; ++p) {
        std::vector<RawRecord> raw;
        EXPECT_TRUE(store_->ReadRaw(ds.name, p, 0, kNoLimit, 1 << 30, kNoLimit, &raw).ok());
        std::vector<wharf::v1::StoredBatch> batches;
        EXPECT_TRUE(store_->ReadBatches(ds.name, p, 0, 1 << 30, &batches).ok());
        std::string r, b;
        for (const auto& rec : raw) absl::StrAppend(&r, rec.offset, ":", EncodeChecked(rec.record));
        for (const auto& batch : batches) absl::StrAppend(&b, EncodeChecked(batch));
        out[absl::StrCat(ds.name, "/", p)] = {r, b};
      }
    }
    return out;
  }

  // Rewrites the (closed) store into the legacy layout the code before per-partition column
  // families wrote: every raw record in "raw", every batch in "batches". With
  // `interrupted_migration`, the per-partition column families keep the first half of their
  // entries, the state a crash in the middle of a migration leaves (the legacy column families
  // still whole).
  void ToLegacyLayout(bool interrupted_migration) {
    // Stores of that layout predate the column-family guard file too.
    std::filesystem::remove(options_.path + "/" + kColumnFamiliesFile);
    RawStore raw(options_.path);
    rocksdb::ColumnFamilyHandle* legacy_raw = raw.Create(kLegacyRawColumnFamily);
    rocksdb::ColumnFamilyHandle* legacy_batches = raw.Create(kLegacyBatchesColumnFamily);
    for (const std::string& name : raw.Names()) {
      const auto pcf = ParsePartitionColumnFamily(name);
      if (!pcf) continue;
      const auto entries = raw.Entries(name);
      rocksdb::WriteBatch wb;
      for (const auto& [k, v] : entries) {
        ASSERT_TRUE(wb.Put(pcf->raw ? legacy_raw : legacy_batches, k, v).ok());
      }
      ASSERT_TRUE(raw.db()->Write(rocksdb::WriteOptions(), &wb).ok());
      if (!interrupted_migration) {
        raw.Drop(name);
      } else if (!entries.empty()) {
        const std::string& from = entries[entries.size() / 2].first;
        ASSERT_TRUE(
            raw.db()
                ->DeleteRange(rocksdb::WriteOptions(), raw.Cf(name), from, OffsetKey("zzz", 0, 0))
                .ok());
      }
    }
  }

  std::string dir_;
  StoreOptions options_;
  std::unique_ptr<StagingStore> store_;
};

TEST_F(PartitionColumnFamiliesTest, EachPartitionHasItsOwnRawAndBatchesColumnFamily) {
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_NO_FATAL_FAILURE(AppendKeyed("events", 60, 10));
  ASSERT_NO_FATAL_FAILURE(CommitFirst("events", 1, 2));
  store_.reset();

  RawStore raw(options_.path);
  EXPECT_FALSE(raw.Has(kLegacyRawColumnFamily));
  EXPECT_FALSE(raw.Has(kLegacyBatchesColumnFamily));
  size_t records = 0;
  for (const auto& [dataset, partitions] :
       std::vector<std::pair<std::string, uint32_t>>{{"events", 3}, {"one", 1}}) {
    for (uint32_t p = 0; p < partitions; ++p) {
      ASSERT_TRUE(raw.Has(RawColumnFamilyName(dataset, p))) << dataset << "/" << p;
      ASSERT_TRUE(raw.Has(BatchesColumnFamilyName(dataset, p))) << dataset << "/" << p;
      // Keys are unchanged (OffsetKey) and each lives in its own partition's column family.
      for (const auto& [k, v] : raw.Entries(RawColumnFamilyName(dataset, p))) {
        const auto key = DecodeOffsetKey(k);
        ASSERT_TRUE(key.has_value());
        EXPECT_EQ(key->dataset, dataset);
        EXPECT_EQ(key->partition, p);
        ++records;
      }
      const auto batches = raw.Entries(BatchesColumnFamilyName(dataset, p));
      EXPECT_EQ(batches.size(), dataset == "events" && p == 1 ? 1u : 0u);
      for (const auto& [k, v] : batches) EXPECT_EQ(k, OffsetKey(dataset, p, 0));
    }
  }
  EXPECT_EQ(records, 60u);
}

TEST_F(PartitionColumnFamiliesTest, ColumnFamiliesOfUnconfiguredDatasetsAreKept) {
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_NO_FATAL_FAILURE(AppendKeyed("events", 30, 10));
  const auto before = Snapshot();
  store_.reset();

  // Without "events" in the config the store opens, keeping its column families and data.
  options_.datasets = {DatasetOptions{"one", 1, 0}};
  ASSERT_NO_FATAL_FAILURE(Open());
  EXPECT_FALSE(store_->HasDataset("events"));
  std::vector<RawRecord> none;
  EXPECT_TRUE(store_->ReadRaw("events", 0, 0, kNoLimit, 100, kNoLimit, &none).ok());
  EXPECT_TRUE(none.empty());
  store_.reset();
  {
    RawStore raw(options_.path);
    EXPECT_TRUE(raw.Has(RawColumnFamilyName("events", 2)));
  }

  options_.datasets = {DatasetOptions{"events", 3, 0}, DatasetOptions{"one", 1, 0}};
  ASSERT_NO_FATAL_FAILURE(Open());
  EXPECT_EQ(Snapshot(), before);
}

// A MANIFEST read short forgets the column families created after the damage, and RocksDB
// would replay their WAL records into nothing; the guard file refuses that open.
TEST_F(PartitionColumnFamiliesTest, ColumnFamilyMissingFromTheManifestRefusesTheOpen) {
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_NO_FATAL_FAILURE(AppendKeyed("events", 30, 10));
  store_.reset();
  {
    RawStore raw(options_.path);
    raw.Drop(RawColumnFamilyName("events", 1));  // what a short MANIFEST read looks like
  }
  auto refused = StagingStore::Open(options_);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kDataLoss) << refused.status();
  EXPECT_NE(refused.status().message().find("lost track of column families"), std::string::npos)
      << refused.status();
  EXPECT_NE(refused.status().message().find(RawColumnFamilyName("events", 1)), std::string::npos)
      << refused.status();
  // It stays refused: the failed open recreated nothing.
  refused = StagingStore::Open(options_);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kDataLoss) << refused.status();
}

TEST_F(PartitionColumnFamiliesTest, ColumnFamilyListIsRewrittenOnlyWhenTheSetChanges) {
  const std::string list = options_.path + "/" + kColumnFamiliesFile;
  auto inode = [&] {
    struct stat st {};
    EXPECT_EQ(::stat(list.c_str(), &st), 0) << list;
    return st.st_ino;
  };
  ASSERT_NO_FATAL_FAILURE(Open());
  store_.reset();
  const auto first = inode();
  ASSERT_NO_FATAL_FAILURE(Open());  // same datasets: the file is left as it is
  store_.reset();
  EXPECT_EQ(inode(), first);
  options_.datasets.push_back(DatasetOptions{"more", 2, 0});
  ASSERT_NO_FATAL_FAILURE(Open());  // new column families: replaced (rename)
  store_.reset();
  EXPECT_NE(inode(), first);
  std::ifstream in(list);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find(RawColumnFamilyName("more", 1) + "\n"), std::string::npos) << text;
}

TEST_F(PartitionColumnFamiliesTest, DamagedColumnFamilyListRefusesTheOpen) {
  ASSERT_NO_FATAL_FAILURE(Open());
  store_.reset();
  for (const std::string& text : {std::string("raw/events/0\nmeta"),  // torn: no final newline
                                  std::string("raw/events/0\n\x01\x02\n"), std::string()}) {
    {
      std::ofstream out(options_.path + "/" + kColumnFamiliesFile, std::ios::trunc);
      out << text;
    }
    auto refused = StagingStore::Open(options_);
    ASSERT_FALSE(refused.ok()) << absl::CHexEscape(text);
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kDataLoss) << refused.status();
    EXPECT_NE(refused.status().message().find(kColumnFamiliesFile), std::string::npos)
        << refused.status();
  }
}

TEST_F(PartitionColumnFamiliesTest, PartitionCountMismatchCreatesNoColumnFamily) {
  ASSERT_NO_FATAL_FAILURE(Open());
  store_.reset();
  options_.datasets = {DatasetOptions{"events", 5, 0}, DatasetOptions{"one", 1, 0}};
  auto refused = StagingStore::Open(options_);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  RawStore raw(options_.path);
  EXPECT_TRUE(raw.Has(RawColumnFamilyName("events", 2)));
  EXPECT_FALSE(raw.Has(RawColumnFamilyName("events", 3)));
  EXPECT_FALSE(raw.Has(BatchesColumnFamilyName("events", 4)));
}

// A store written by the previous layout opens with every record and batch where it was, and
// the legacy column families are gone. About 6 MiB of records: more than one migration batch.
TEST_F(PartitionColumnFamiliesTest, LegacyLayoutIsMigratedAtOpen) {
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_NO_FATAL_FAILURE(AppendKeyed("events", 6000, 1000));
  ASSERT_NO_FATAL_FAILURE(AppendKeyed("one", 20, 10));
  ASSERT_NO_FATAL_FAILURE(CommitFirst("events", 0, 5));
  ASSERT_NO_FATAL_FAILURE(CommitFirst("one", 0, 20));
  const auto before = Snapshot();
  store_.reset();
  ASSERT_NO_FATAL_FAILURE(ToLegacyLayout(/*interrupted_migration=*/false));
  {
    RawStore raw(options_.path);
    ASSERT_EQ(raw.Entries(kLegacyRawColumnFamily).size(), 6020u);
    ASSERT_FALSE(raw.Has(RawColumnFamilyName("events", 0)));
  }
  // The verifier reads a store that has not been migrated yet.
  auto report = VerifyStore(options_.path);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_TRUE(report->healthy()) << report->problems.front();

  ASSERT_NO_FATAL_FAILURE(Open());
  EXPECT_EQ(Snapshot(), before);
  // Appends continue at the right offsets in the migrated partitions.
  ASSERT_NO_FATAL_FAILURE(AppendKeyed("one", 1, 10));
  std::vector<RawRecord> one;
  ASSERT_TRUE(store_->ReadRaw("one", 0, 0, kNoLimit, 1 << 30, kNoLimit, &one).ok());
  ASSERT_EQ(one.size(), 21u);
  EXPECT_EQ(one.back().offset, 20u);
  store_.reset();

  {
    RawStore raw(options_.path);
    EXPECT_FALSE(raw.Has(kLegacyRawColumnFamily));
    EXPECT_FALSE(raw.Has(kLegacyBatchesColumnFamily));
    EXPECT_EQ(raw.Entries(BatchesColumnFamilyName("events", 0)).size(), 1u);
  }
  report = VerifyStore(options_.path);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_TRUE(report->healthy()) << report->problems.front();
  // And it stays as it is on the next open.
  ASSERT_NO_FATAL_FAILURE(Open());
  EXPECT_EQ(Snapshot().at("events/0"), before.at("events/0"));
}

// A crash in the middle of a migration leaves the legacy column families whole and part of
// their entries copied already; the next open copies again (idempotent) and finishes. Entries
// of a dataset no longer configured are migrated too, into column families of their own.
TEST_F(PartitionColumnFamiliesTest, InterruptedMigrationIsRepeated) {
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_NO_FATAL_FAILURE(AppendKeyed("events", 300, 50));
  ASSERT_NO_FATAL_FAILURE(CommitFirst("events", 2, 3));
  const auto before = Snapshot();
  store_.reset();
  ASSERT_NO_FATAL_FAILURE(ToLegacyLayout(/*interrupted_migration=*/true));
  const std::string gone_key = OffsetKey("gone", 7, 42);
  {
    RawStore raw(options_.path);
    ASSERT_TRUE(raw.db()
                    ->Put(rocksdb::WriteOptions(), raw.Cf(kLegacyRawColumnFamily), gone_key,
                          "kept as it is")
                    .ok());
    ASSERT_FALSE(raw.Entries(RawColumnFamilyName("events", 0)).empty());
  }

  ASSERT_NO_FATAL_FAILURE(Open());
  EXPECT_EQ(Snapshot(), before);
  store_.reset();
  RawStore raw(options_.path);
  EXPECT_FALSE(raw.Has(kLegacyRawColumnFamily));
  EXPECT_FALSE(raw.Has(kLegacyBatchesColumnFamily));
  ASSERT_TRUE(raw.Has(RawColumnFamilyName("gone", 7)));
  const auto gone = raw.Entries(RawColumnFamilyName("gone", 7));
  ASSERT_EQ(gone.size(), 1u);
  EXPECT_EQ(gone[0], std::make_pair(gone_key, std::string("kept as it is")));
}

// A legacy entry whose key names no partition cannot be migrated: the open fails with
// DATA_LOSS naming the key, and the legacy column family is left as it was (so is "batches",
// migrated after "raw").
TEST_F(PartitionColumnFamiliesTest, MalformedLegacyKeyRefusesTheOpen) {
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_NO_FATAL_FAILURE(AppendKeyed("events", 10, 10));
  store_.reset();
  ASSERT_NO_FATAL_FAILURE(ToLegacyLayout(/*interrupted_migration=*/false));
  for (const std::string& bad :
       {std::string("no-separator"), std::string("ev\0\0\0", 5), std::string("\0abc", 4)}) {
    {
      RawStore raw(options_.path);
      ASSERT_TRUE(
          raw.db()->Put(rocksdb::WriteOptions(), raw.Cf(kLegacyRawColumnFamily), bad, "x").ok());
    }
    auto refused = StagingStore::Open(options_);
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kDataLoss) << refused.status();
    EXPECT_NE(refused.status().message().find("malformed key"), std::string::npos)
        << refused.status();
    RawStore raw(options_.path);
    EXPECT_TRUE(raw.Has(kLegacyRawColumnFamily));
    EXPECT_EQ(raw.Entries(kLegacyRawColumnFamily).size(), 11u);
    EXPECT_TRUE(raw.Has(kLegacyBatchesColumnFamily));
    ASSERT_TRUE(
        raw.db()->Delete(rocksdb::WriteOptions(), raw.Cf(kLegacyRawColumnFamily), bad).ok());
  }
  // Once the bad entry is gone, the migration goes through.
  ASSERT_NO_FATAL_FAILURE(Open());
  uint64_t n = 0;
  for (uint32_t p = 0; p < 3; ++p) {
    std::vector<RawRecord> raw;
    ASSERT_TRUE(store_->ReadRaw("events", p, 0, kNoLimit, 1 << 30, kNoLimit, &raw).ok());
    n += raw.size();
  }
  EXPECT_EQ(n, 10u);
}

}  // namespace
}  // namespace wharf::storage
