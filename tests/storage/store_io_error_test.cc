// fsync and write errors under a running staging store: the request in flight is not
// acknowledged, the store reports itself failed and refuses every write, and after a reopen the
// producer's retry of the failed request is stored exactly once (answered as a duplicate when
// the failed write reached the disk anyway).

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "storage/fault_injection_fs.h"
#include "storage/staging_store.h"

namespace wharf::storage {
namespace {

using wharf::v1::ProduceRequest;

constexpr char kDataset[] = "orders";
constexpr uint32_t kPartitions = 2;

ProduceRequest Request(const std::string& producer, uint64_t first_sequence, int n,
                       const std::string& tag) {
  ProduceRequest req;
  req.set_dataset(kDataset);
  req.set_producer_id(producer);
  req.set_first_sequence(first_sequence);
  for (int i = 0; i < n; ++i) {
    auto* r = req.add_records();
    r->set_key(absl::StrCat("k", i));
    r->set_payload(absl::StrCat(tag, "-", first_sequence + i));
  }
  return req;
}

AppendResult Append(StagingStore& store, ProduceRequest req) {
  auto promise = std::make_shared<std::promise<AppendResult>>();
  auto future = promise->get_future();
  store.Append(std::move(req), [promise](AppendResult r) { promise->set_value(std::move(r)); });
  if (future.wait_for(std::chrono::seconds(20)) != std::future_status::ready) {
    AppendResult timeout;
    timeout.status = absl::DeadlineExceededError("append not answered within 20 s");
    return timeout;
  }
  return future.get();
}

class StoreIoErrorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/wharf_io_error_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr) << std::strerror(errno);
    dir_ = tmpl;
  }
  void TearDown() override {
    store_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  void Open(std::shared_ptr<FaultInjectionFs> fs) {
    StoreOptions so;
    so.path = dir_ + "/store";
    so.min_free_bytes = 0;
    so.datasets = {{kDataset, kPartitions, 0}};
    so.file_system = std::move(fs);
    auto store = StagingStore::Open(std::move(so));
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    ASSERT_TRUE(store_->Start().ok());
  }

  // Every stored record of the dataset as "producer/sequence/payload@partition:offset".
  std::vector<std::string> Stored() {
    std::vector<std::string> out;
    for (uint32_t p = 0; p < kPartitions; ++p) {
      std::vector<RawRecord> raw;
      EXPECT_TRUE(store_->ReadRaw(kDataset, p, 0, UINT64_MAX, SIZE_MAX, UINT64_MAX, &raw).ok());
      for (const auto& r : raw) {
        out.push_back(absl::StrCat(r.record.producer_id(), "/", r.record.sequence(), "/",
                                   r.record.record().payload(), "@", p, ":", r.offset));
      }
    }
    return out;
  }

  // The store after the failure: refuses appends and pipeline writes, reports why.
  void ExpectFailed() {
    EXPECT_FALSE(store_->WriteFailure().ok());
    EXPECT_NE(store_->NotAcceptingReason(), "");
    AppendResult again = Append(*store_, Request("other", 0, 1, "refused"));
    EXPECT_EQ(again.status.code(), absl::StatusCode::kUnavailable) << again.status;
    EXPECT_TRUE(again.acks.empty());
    EXPECT_FALSE(store_->PutMeta("k", "v").ok());
    wharf::v1::DeliveryCheckpoint cp;
    EXPECT_FALSE(store_->SetDeliveryCursor(kDataset, "d", 0, cp).ok());
  }

  // Acked request, then a request failing under the injected fault; reopen (optionally
  // dropping what was never synced) and retry. The retry is stored exactly once, with the
  // offsets it would have had.
  void FailThenRetry(const std::function<void(FaultInjectionFs&)>& inject, bool drop_unsynced,
                     bool expect_duplicate) {
    auto fs = std::make_shared<FaultInjectionFs>();
    ASSERT_NO_FATAL_FAILURE(Open(fs));
    AppendResult first = Append(*store_, Request("p", 0, 3, "first"));
    ASSERT_TRUE(first.status.ok()) << first.status;
    EXPECT_TRUE(store_->WriteFailure().ok());

    inject(*fs);
    AppendResult failed = Append(*store_, Request("p", 3, 4, "second"));
    EXPECT_FALSE(failed.status.ok()) << "an append whose write failed was acknowledged";
    EXPECT_TRUE(failed.acks.empty());
    EXPECT_GT(fs->injected_errors(), 0u);
    ExpectFailed();

    store_->Stop();
    store_.reset();  // must not hang or abort
    if (drop_unsynced) {
      {
        absl::Status dropped = fs->DropUnsyncedData();
        ASSERT_TRUE(dropped.ok()) << dropped;
      }
    }
    ASSERT_NO_FATAL_FAILURE(Open(nullptr));
    EXPECT_TRUE(store_->WriteFailure().ok());
    EXPECT_EQ(store_->NotAcceptingReason(), "");

    // The acknowledged request is there and still deduplicated.
    AppendResult dup_first = Append(*store_, Request("p", 0, 3, "first"));
    ASSERT_TRUE(dup_first.status.ok()) << dup_first.status;
    EXPECT_TRUE(dup_first.duplicate);
    ASSERT_EQ(dup_first.acks.size(), first.acks.size());
    for (size_t i = 0; i < first.acks.size(); ++i) {
      EXPECT_EQ(dup_first.acks[i].offset(), first.acks[i].offset());
      EXPECT_EQ(dup_first.acks[i].partition(), first.acks[i].partition());
    }

    const size_t before_retry = Stored().size();
    AppendResult retry = Append(*store_, Request("p", 3, 4, "second"));
    ASSERT_TRUE(retry.status.ok()) << retry.status;
    EXPECT_EQ(retry.duplicate, expect_duplicate);
    ASSERT_EQ(retry.acks.size(), 4u);
    const std::vector<std::string> stored = Stored();
    EXPECT_EQ(stored.size(), 7u) << ::testing::PrintToString(stored);
    EXPECT_EQ(before_retry, expect_duplicate ? 7u : 3u);
    for (int i = 0; i < 4; ++i) {
      const std::string want = absl::StrCat("p/", 3 + i, "/second-", 3 + i, "@",
                                            retry.acks[i].partition(), ":", retry.acks[i].offset());
      EXPECT_EQ(std::count(stored.begin(), stored.end(), want), 1) << want;
    }
    // And the next request continues the sequence normally.
    AppendResult next = Append(*store_, Request("p", 7, 1, "third"));
    ASSERT_TRUE(next.status.ok()) << next.status;
    EXPECT_FALSE(next.duplicate);
  }

  void ExpectFlushFailure(bool sync_error, bool write_error);

  std::string dir_;
  std::unique_ptr<StagingStore> store_;
};

// The WAL append reaches the file (the page cache), its fsync fails: the request is not acked,
// the data may be on disk after all. Reopened without losing it, the retry is a duplicate with
// the same offsets.
TEST_F(StoreIoErrorTest, SyncErrorDataPersistsRetryIsDuplicate) {
  FailThenRetry([](FaultInjectionFs& fs) { fs.InjectSyncError(0); }, /*drop_unsynced=*/false,
                /*expect_duplicate=*/true);
}

// Same failure, but the unsynced bytes are lost (a power loss after the failed fsync): the
// retry is stored once, fresh, at the offsets the failed attempt had.
TEST_F(StoreIoErrorTest, SyncErrorDataLostRetryIsStoredOnce) {
  FailThenRetry([](FaultInjectionFs& fs) { fs.InjectSyncError(0); }, /*drop_unsynced=*/true,
                /*expect_duplicate=*/false);
}

// ENOSPC on the WAL append: nothing is written, nothing acked, the retry is stored once.
TEST_F(StoreIoErrorTest, WriteErrorRetryIsStoredOnce) {
  FailThenRetry(
      [](FaultInjectionFs& fs) { fs.InjectWriteError(0, FaultInjectionFs::Scope::kWalFiles); },
      /*drop_unsynced=*/false, /*expect_duplicate=*/false);
}

// A failed fsync of pipeline writes (the WAL sync that makes batch commits durable before
// delivery) fails the store the same way.
TEST_F(StoreIoErrorTest, SyncErrorInPipelineSyncFailsTheStore) {
  auto fs = std::make_shared<FaultInjectionFs>();
  ASSERT_NO_FATAL_FAILURE(Open(fs));
  ASSERT_TRUE(Append(*store_, Request("p", 0, 2, "a")).status.ok());
  BatchCommit commit;
  commit.dataset = kDataset;
  commit.partition = 0;
  commit.next_offset = 0;
  ASSERT_TRUE(store_->CommitBatch(commit).ok());  // not synced: no fsync to fail yet
  EXPECT_TRUE(store_->WriteFailure().ok());
  fs->InjectSyncError(0);
  EXPECT_FALSE(store_->SyncPipelineWrites().ok());
  ExpectFailed();
  EXPECT_FALSE(store_->CommitBatch(commit).ok());
  EXPECT_FALSE(store_->SyncPipelineWrites().ok());
}

// A write error (ENOSPC) on the WAL append of a batch commit fails the store too.
TEST_F(StoreIoErrorTest, WriteErrorInBatchCommitFailsTheStore) {
  auto fs = std::make_shared<FaultInjectionFs>();
  ASSERT_NO_FATAL_FAILURE(Open(fs));
  ASSERT_TRUE(Append(*store_, Request("p", 0, 2, "a")).status.ok());
  fs->InjectWriteError(0, FaultInjectionFs::Scope::kWalFiles);
  BatchCommit commit;
  commit.dataset = kDataset;
  commit.partition = 0;
  commit.next_offset = 0;
  EXPECT_FALSE(store_->CommitBatch(commit).ok());
  ExpectFailed();
}

// A background error (a memtable flush that cannot write or sync its files) fails the store
// too, through RocksDB's OnBackgroundError. Nothing but the flush writes meanwhile (table file,
// MANIFEST, new WAL): the failure comes from it. Debian's RocksDB has assertions on; none of
// these paths may abort.
TEST_F(StoreIoErrorTest, BackgroundFlushSyncErrorFailsTheStore) {
  ExpectFlushFailure(/*sync_error=*/true, /*write_error=*/false);
}

TEST_F(StoreIoErrorTest, BackgroundFlushWriteErrorFailsTheStore) {
  ExpectFlushFailure(/*sync_error=*/false, /*write_error=*/true);
}

TEST_F(StoreIoErrorTest, BackgroundFlushSyncAndWriteErrorFailsTheStore) {
  ExpectFlushFailure(/*sync_error=*/true, /*write_error=*/true);
}

void StoreIoErrorTest::ExpectFlushFailure(bool sync_error, bool write_error) {
  auto fs = std::make_shared<FaultInjectionFs>();
  ASSERT_NO_FATAL_FAILURE(Open(fs));
  ASSERT_TRUE(Append(*store_, Request("p", 0, 5, "a")).status.ok());
  if (sync_error) fs->InjectSyncError(0);
  if (write_error) fs->InjectWriteError(0);
  EXPECT_FALSE(store_->Flush().ok());
  EXPECT_FALSE(store_->WriteFailure().ok());
  ExpectFailed();
  store_->Stop();
  store_.reset();
  ASSERT_NO_FATAL_FAILURE(Open(nullptr));
  EXPECT_EQ(Stored().size(), 5u);
}

}  // namespace
}  // namespace wharf::storage
