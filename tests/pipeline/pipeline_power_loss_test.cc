// Power loss with the pipeline running: records are appended (sync durability) while batches
// are committed and delivered, the power is cut at a random moment (FaultInjectionFs) and the
// unsynced bytes dropped. After every restart the checkpoints never point past the data: the
// validation cursor is within the ingested range, the batches cover it contiguously with the
// records the landing zone holds, every batch a destination received before the power loss is
// still committed identically (so it is never re-cut under another id), and delivery cursors are
// within the batches. Finally everything is delivered, no record under two batch ids.

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "storage/fault_injection_fs.h"
#include "tests/pipeline/pipeline_fixture.h"

namespace wharf::pipeline::pipeline_testing {
namespace {

bool Extended() {
  const char* e = std::getenv("WHARF_EXTENDED");
  return e != nullptr && std::string(e) == "1";
}

class PipelinePowerLossTest : public PipelineTest {
 protected:
  void OpenWith(std::shared_ptr<storage::FaultInjectionFs> fs) {
    storage::StoreOptions so;
    so.path = dir_ + "/store";
    so.durability = storage::Durability::kSync;
    so.min_free_bytes = 0;
    so.write_buffer_bytes = 256 << 10;  // flushes happen too
    so.datasets = {{kDataset, partitions_, 0}};
    so.file_system = std::move(fs);
    auto store = storage::StagingStore::Open(std::move(so));
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
  }

  // The invariants between data and checkpoints, and the batches delivered so far.
  void VerifyCheckpoints(const std::vector<Delivery>& delivered) {
    std::map<std::string, wharf::v1::StoredBatch> committed;
    for (uint32_t p = 0; p < partitions_; ++p) {
      SCOPED_TRACE(absl::StrCat("partition ", p));
      const storage::PartitionCounters c = store_->GetPartitionCounters(kDataset, p);
      const std::vector<storage::RawRecord> raw = ReadAllRaw(p);
      ASSERT_EQ(raw.size(), c.ingest.next_offset()) << "ingest checkpoint vs landing zone";
      for (size_t i = 0; i < raw.size(); ++i) ASSERT_EQ(raw[i].offset, i) << "gap";
      const uint64_t validated = c.validation.next_offset();
      EXPECT_LE(validated, c.ingest.next_offset()) << "validation cursor past the data";
      const std::vector<wharf::v1::StoredBatch> batches = ReadAllBatches(p);
      EXPECT_TRUE(CoverContiguously(batches, 0, validated));
      for (const auto& b : batches) {
        for (const auto& r : b.records()) {
          ASSERT_LT(r.offset(), raw.size()) << "batch " << b.manifest().batch_id();
          EXPECT_EQ(r.payload(), raw[r.offset()].record.record().payload());
        }
        committed[b.manifest().batch_id()] = b;
      }
      auto cursor = store_->GetDeliveryCursor(kDataset, "sink", p);
      ASSERT_TRUE(cursor.ok()) << cursor.status();
      EXPECT_LE(cursor->next_offset(), validated) << "delivery cursor past the batches";
    }
    for (const auto& d : delivered) {
      auto it = committed.find(d.batch.manifest().batch_id());
      ASSERT_NE(it, committed.end())
          << "batch " << d.batch.manifest().batch_id()
          << " was delivered before the power loss and is no longer committed";
      EXPECT_EQ(RecordOffsets(it->second), RecordOffsets(d.batch));
    }
  }
};

TEST_F(PipelinePowerLossTest, CheckpointsNeverPointPastTheData) {
  const int cycles = Extended() ? 40 : 5;
  // The seed decides when each power loss comes and what survives of the unsynced data; it is
  // printed so that a failure can be retried with the same choices (WHARF_TEST_SEED=<seed>; the
  // thread timing still varies, so a race may need several attempts).
  uint32_t seed = std::random_device{}();
  if (const char* env = std::getenv("WHARF_TEST_SEED"); env != nullptr) {
    seed = static_cast<uint32_t>(std::strtoul(env, nullptr, 10));
  }
  std::printf("pipeline power loss: seed %u\n", seed);
  SCOPED_TRACE(absl::StrCat("seed ", seed));
  std::mt19937 rng(seed);
  auto sink = NewSink();
  uint64_t acked = 0;
  int seq = 0;
  for (int cycle = 0; cycle <= cycles; ++cycle) {
    SCOPED_TRACE(absl::StrCat("cycle ", cycle));
    auto fs = std::make_shared<storage::FaultInjectionFs>();
    ASSERT_NO_FATAL_FAILURE(OpenWith(fs));
    ASSERT_NO_FATAL_FAILURE(VerifyCheckpoints(sink->delivered()));
    ASSERT_NO_FATAL_FAILURE(Start(Options({{"sink", sink}}, Batching(40, 5ms))));
    if (cycle == cycles) break;

    std::atomic<bool> stop{false}, power_lost{false};
    std::thread producer([&] {
      while (!stop.load()) {
        std::vector<wharf::v1::Record> records;
        for (int i = 0; i < 8; ++i, ++seq) {
          records.push_back(MakeRecord(KeyFor(seq % partitions_),
                                       absl::StrCat("{\"seq\":", seq, ",\"cycle\":", cycle, "}")));
        }
        storage::AppendResult r = AppendRecords(records);
        if (r.status.ok()) {
          acked += records.size();
        } else if (!power_lost.load()) {
          ADD_FAILURE() << r.status;
          return;
        }
      }
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(20 + rng() % 300));
    power_lost = true;
    fs->SimulatePowerLoss();
    stop = true;
    producer.join();
    Shutdown();  // store and pipeline stop; their writes fail; must not hang
    ASSERT_TRUE(fs->DropUnsyncedData(cycle % 2 == 1 ? rng() | 1 : 0).ok());
  }
  // Last cycle, no power loss: everything is delivered exactly once.
  uint64_t total = 0;
  for (uint32_t p = 0; p < partitions_; ++p) total += IngestedOffset(p);
  EXPECT_GE(total, acked);
  ASSERT_TRUE(WaitUntil(
      [&] {
        for (uint32_t p = 0; p < partitions_; ++p) {
          auto cursor = store_->GetDeliveryCursor(kDataset, "sink", p);
          if (!cursor.ok() || cursor->next_offset() < IngestedOffset(p)) return false;
        }
        return true;
      },
      60s))
      << "not everything was delivered";
  EXPECT_EQ(sink->duplicate_records(), 0) << "records delivered under two batch ids";
  std::printf(
      "pipeline power loss: %d cycles, %lu records acknowledged, %lu stored, %zu batches "
      "delivered, %d redeliveries of the same batch id (harmless), 0 under two ids\n",
      cycles, static_cast<unsigned long>(acked), static_cast<unsigned long>(total),
      sink->batch_count(), sink->redeliveries());
}

}  // namespace
}  // namespace wharf::pipeline::pipeline_testing
