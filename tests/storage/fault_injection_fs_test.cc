#include "storage/fault_injection_fs.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>

#include "rocksdb/file_system.h"

namespace wharf::storage {
namespace {

using rocksdb::IOOptions;

class FaultInjectionFsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/wharf_fault_fs_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr) << std::strerror(errno);
    dir_ = tmpl;
    fs_ = std::make_shared<FaultInjectionFs>();
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  std::unique_ptr<rocksdb::FSWritableFile> Create(const std::string& name) {
    std::unique_ptr<rocksdb::FSWritableFile> f;
    EXPECT_TRUE(fs_->NewWritableFile(dir_ + "/" + name, rocksdb::FileOptions(), &f, nullptr).ok());
    return f;
  }
  void SyncDir() {
    std::unique_ptr<rocksdb::FSDirectory> d;
    ASSERT_TRUE(fs_->NewDirectory(dir_, IOOptions(), &d, nullptr).ok());
    ASSERT_TRUE(d->Fsync(IOOptions(), nullptr).ok());
  }
  std::string Contents(const std::string& name) {
    std::string s;
    if (!rocksdb::ReadFileToString(rocksdb::FileSystem::Default().get(), dir_ + "/" + name, &s)
             .ok()) {
      return "<missing>";
    }
    return s;
  }
  bool Exists(const std::string& name) { return std::filesystem::exists(dir_ + "/" + name); }

  std::string dir_;
  std::shared_ptr<FaultInjectionFs> fs_;
};

TEST_F(FaultInjectionFsTest, KeepsSyncedBytesDropsTheRest) {
  auto f = Create("a.log");
  ASSERT_TRUE(f->Append("synced", IOOptions(), nullptr).ok());
  ASSERT_TRUE(f->Sync(IOOptions(), nullptr).ok());
  ASSERT_TRUE(f->Append("-lost", IOOptions(), nullptr).ok());
  ASSERT_TRUE(f->RangeSync(0, 0, IOOptions(), nullptr).ok());  // not a durability point
  SyncDir();
  fs_->SimulatePowerLoss();
  EXPECT_TRUE(fs_->power_lost());
  EXPECT_TRUE(f->Append("x", IOOptions(), nullptr).IsIOError());
  EXPECT_TRUE(f->Sync(IOOptions(), nullptr).IsIOError());
  ASSERT_TRUE(f->Close(IOOptions(), nullptr).ok());
  EXPECT_EQ(Contents("a.log"), "synced-lost");  // still in the "page cache"
  ASSERT_TRUE(fs_->DropUnsyncedData().ok());
  EXPECT_EQ(Contents("a.log"), "synced");
  EXPECT_FALSE(fs_->power_lost());
}

TEST_F(FaultInjectionFsTest, FileWithoutDirectoryFsyncVanishes) {
  auto kept = Create("kept");
  ASSERT_TRUE(kept->Append("k", IOOptions(), nullptr).ok());
  ASSERT_TRUE(kept->Fsync(IOOptions(), nullptr).ok());
  SyncDir();
  auto gone = Create("gone");
  ASSERT_TRUE(gone->Append("g", IOOptions(), nullptr).ok());
  ASSERT_TRUE(gone->Fsync(IOOptions(), nullptr).ok());  // data synced, entry never
  fs_->SimulatePowerLoss();
  EXPECT_TRUE(
      fs_->NewWritableFile(dir_ + "/new", rocksdb::FileOptions(), &kept, nullptr).IsIOError());
  ASSERT_TRUE(fs_->DropUnsyncedData().ok());
  EXPECT_EQ(Contents("kept"), "k");
  EXPECT_FALSE(Exists("gone"));
}

TEST_F(FaultInjectionFsTest, UnsyncedRenameIsUndone) {
  {
    auto cur = Create("CURRENT");
    ASSERT_TRUE(cur->Append("old", IOOptions(), nullptr).ok());
    ASSERT_TRUE(cur->Sync(IOOptions(), nullptr).ok());
    SyncDir();
  }
  auto tmp = Create("tmp");
  ASSERT_TRUE(tmp->Append("new", IOOptions(), nullptr).ok());
  ASSERT_TRUE(tmp->Sync(IOOptions(), nullptr).ok());
  ASSERT_TRUE(fs_->RenameFile(dir_ + "/tmp", dir_ + "/CURRENT", IOOptions(), nullptr).ok());
  EXPECT_EQ(Contents("CURRENT"), "new");
  ASSERT_TRUE(fs_->DropUnsyncedData().ok());  // no directory fsync after the rename
  EXPECT_EQ(Contents("CURRENT"), "old");

  // Renamed and then fsynced: stays.
  auto tmp2 = Create("tmp2");
  ASSERT_TRUE(tmp2->Append("newer", IOOptions(), nullptr).ok());
  ASSERT_TRUE(tmp2->Sync(IOOptions(), nullptr).ok());
  ASSERT_TRUE(fs_->RenameFile(dir_ + "/tmp2", dir_ + "/CURRENT", IOOptions(), nullptr).ok());
  SyncDir();
  ASSERT_TRUE(fs_->DropUnsyncedData().ok());
  EXPECT_EQ(Contents("CURRENT"), "newer");
  EXPECT_FALSE(Exists("tmp2"));
}

TEST_F(FaultInjectionFsTest, RandomTailKeepsAPrefixOfTheUnsyncedBytes) {
  auto f = Create("w.log");
  ASSERT_TRUE(f->Append("0123", IOOptions(), nullptr).ok());
  ASSERT_TRUE(f->Sync(IOOptions(), nullptr).ok());
  ASSERT_TRUE(f->Append("456789", IOOptions(), nullptr).ok());
  SyncDir();
  ASSERT_TRUE(fs_->DropUnsyncedData(/*keep_random_unsynced_seed=*/42).ok());
  const std::string left = Contents("w.log");
  EXPECT_GE(left.size(), 4u);
  EXPECT_EQ(left, std::string("0123456789").substr(0, left.size()));
}

TEST_F(FaultInjectionFsTest, InjectedSyncErrorIsStickyAndScoped) {
  auto wal = Create("000001.log");
  auto table = Create("000002.sst");
  fs_->InjectSyncError(1, FaultInjectionFs::Scope::kWalFiles);
  EXPECT_TRUE(wal->Sync(IOOptions(), nullptr).ok());
  EXPECT_TRUE(table->Sync(IOOptions(), nullptr).ok());  // out of scope, not counted
  EXPECT_TRUE(wal->Sync(IOOptions(), nullptr).IsIOError());
  EXPECT_TRUE(wal->Fsync(IOOptions(), nullptr).IsIOError());
  EXPECT_TRUE(wal->RangeSync(0, 0, IOOptions(), nullptr).IsIOError());
  EXPECT_TRUE(table->Sync(IOOptions(), nullptr).ok());
  EXPECT_EQ(fs_->injected_errors(), 3u);
  fs_->ClearErrors();
  EXPECT_TRUE(wal->Sync(IOOptions(), nullptr).ok());
}

TEST_F(FaultInjectionFsTest, InjectedWriteErrorIsNoSpaceAndWritesNothing) {
  auto f = Create("x.log");
  fs_->InjectWriteError(1);
  EXPECT_TRUE(f->Append("a", IOOptions(), nullptr).ok());
  rocksdb::IOStatus s = f->Append("b", IOOptions(), nullptr);
  EXPECT_TRUE(s.IsNoSpace()) << s.ToString();
  EXPECT_EQ(Contents("x.log"), "a");
  EXPECT_EQ(fs_->injected_errors(), 1u);
}

TEST(FaultInjectionFsSpecTest, ParsesValidSpecs) {
  EXPECT_TRUE(FaultInjectionFsFromSpec("sync_error_after=3").ok());
  EXPECT_TRUE(FaultInjectionFsFromSpec("write_error_after=0,wal_only").ok());
  EXPECT_TRUE(FaultInjectionFsFromSpec(" sync_error_after=10 , write_error_after=2 ").ok());
  auto fs = FaultInjectionFsFromSpec("sync_error_after=0");
  ASSERT_TRUE(fs.ok());
  EXPECT_EQ((*fs)->BeforeSync("/x/000001.log", false).code(), rocksdb::Status::kIOError);
}

TEST(FaultInjectionFsSpecTest, RefusesMalformedSpecs) {
  for (const char* bad :
       {"", ",", "wal_only", "sync_error_after", "sync_error_after=", "sync_error_after=-1",
        "sync_error_after=x", "sync_error_after=1x", "write_error_after=99999999999999999999999",
        "fsync_error_after=1", "wal_only=1,sync_error_after=1", "sync_error_after=1;wal_only",
        "sync_error_after = 1"}) {
    auto fs = FaultInjectionFsFromSpec(bad);
    EXPECT_FALSE(fs.ok()) << bad;
    if (!fs.ok()) {
      EXPECT_EQ(fs.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    }
  }
}

}  // namespace
}  // namespace wharf::storage
