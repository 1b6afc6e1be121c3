// EncodeAppend and the group-commit writer's value layout: a record appended through the encoded
// path must be stored byte for byte as EncodeCheckedTo(StoredRecord) would store it, since the
// pipeline, retention, quarantine and the store verifier all read it as that.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <future>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "rocksdb/db.h"
#include "storage/codec.h"
#include "storage/crc32c.h"
#include "storage/keys.h"
#include "storage/rocksdb_options.h"
#include "storage/staging_store.h"

namespace wharf::storage {
namespace {

using wharf::v1::ProduceRequest;
using wharf::v1::Record;
using wharf::v1::StoredRecord;

constexpr std::chrono::seconds kWait(10);

std::string TempDir(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("wharf-encoded-append-" + name + "-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  return dir.string();
}

// Records of every shape the encoding must handle: keyed and keyless, headers, event time, empty
// key with headers, a payload long enough for a multi-byte length varint.
ProduceRequest MixedRequest(const std::string& producer, uint64_t first_sequence) {
  ProduceRequest request;
  request.set_dataset("ds");
  request.set_producer_id(producer);
  request.set_first_sequence(first_sequence);
  Record* r = request.add_records();
  r->set_payload(R"({"a":1})");
  r = request.add_records();
  r->set_key("customer-17");
  r->set_payload(std::string(300, 'x'));
  r = request.add_records();
  r->set_payload(std::string(70000, 'y'));
  (*r->mutable_headers())["source"] = "test";
  r->mutable_event_time()->set_seconds(1700000000);
  r->mutable_event_time()->set_nanos(123456789);
  r = request.add_records();
  r->set_key(std::string("k\0ey", 4));
  r->set_payload("z");
  return request;
}

TEST(EncodeAppendTest, EachRecordParsesBackAsItsStoredRecordFields) {
  const ProduceRequest request = MixedRequest("producer-a", 41);
  const EncodedAppend encoded = EncodeAppend(request);
  EXPECT_EQ(encoded.dataset, "ds");
  EXPECT_EQ(encoded.producer_id, "producer-a");
  EXPECT_EQ(encoded.first_sequence, 41u);
  EXPECT_FALSE(encoded.allow_sequence_gap);
  ASSERT_EQ(encoded.records.size(), 4u);
  uint64_t bytes = 0;
  size_t start = 0;
  for (int i = 0; i < request.records_size(); ++i) {
    const Record& want = request.records(i);
    const EncodedAppend::Record& rec = encoded.records[static_cast<size_t>(i)];
    bytes += want.payload().size() + want.key().size();
    for (const auto& [k, v] : want.headers()) bytes += k.size() + v.size();
    ASSERT_GT(rec.end, start);
    const std::string_view body(encoded.encoded.data() + start, rec.end - start);
    EXPECT_EQ(rec.crc, Crc32c(body)) << "record " << i;
    EXPECT_EQ(rec.keyed, !want.key().empty()) << "record " << i;
    if (rec.keyed) {
      EXPECT_EQ(rec.key_hash, KeyHash(want.key()));
      for (uint32_t parts : {1u, 4u, 7u}) {
        EXPECT_EQ(rec.key_hash % parts, PartitionForKey(want.key(), parts));
      }
    }
    StoredRecord got;
    ASSERT_TRUE(got.ParseFromArray(body.data(), static_cast<int>(body.size()))) << "record " << i;
    EXPECT_EQ(got.record().SerializeAsString(), want.SerializeAsString()) << "record " << i;
    EXPECT_EQ(got.producer_id(), "producer-a");
    EXPECT_EQ(got.sequence(), 41u + static_cast<uint64_t>(i));
    EXPECT_FALSE(got.has_ingest_time());
    start = rec.end;
  }
  EXPECT_EQ(start, encoded.encoded.size());
  EXPECT_EQ(encoded.bytes, bytes);
}

TEST(EncodeAppendTest, DefaultsAreLeftOutLikeTheProtobufSerializer) {
  // No producer id and sequence 0 for the first record: proto3 writes neither field.
  ProduceRequest request;
  request.set_dataset("ds");
  request.add_records()->set_payload("p");
  request.add_records()->set_payload("q");
  const EncodedAppend encoded = EncodeAppend(request);
  ASSERT_EQ(encoded.records.size(), 2u);
  StoredRecord first;
  *first.mutable_record() = request.records(0);
  EXPECT_EQ(encoded.encoded.substr(0, encoded.records[0].end), first.SerializeAsString());
  StoredRecord second;
  *second.mutable_record() = request.records(1);
  second.set_sequence(1);
  EXPECT_EQ(encoded.encoded.substr(encoded.records[0].end), second.SerializeAsString());
}

TEST(EncodeAppendTest, EmptyRequestAndHugeSequences) {
  ProduceRequest empty;
  empty.set_dataset("ds");
  const EncodedAppend none = EncodeAppend(empty);
  EXPECT_TRUE(none.records.empty());
  EXPECT_TRUE(none.encoded.empty());
  EXPECT_EQ(none.bytes, 0u);

  // Ten-byte varints: the largest sequences a request may carry.
  ProduceRequest big;
  big.set_dataset("ds");
  big.set_producer_id("p");
  big.set_first_sequence(std::numeric_limits<uint64_t>::max() - 2);
  big.add_records()->set_payload("a");
  big.add_records()->set_payload("b");
  const EncodedAppend encoded = EncodeAppend(big);
  ASSERT_EQ(encoded.records.size(), 2u);
  StoredRecord want;
  *want.mutable_record() = big.records(1);
  want.set_producer_id("p");
  want.set_sequence(std::numeric_limits<uint64_t>::max() - 1);
  EXPECT_EQ(encoded.encoded.substr(encoded.records[0].end), want.SerializeAsString());
}

// Appends through the store (both entry points), then reads the raw column family with RocksDB
// directly: every value must equal EncodeCheckedTo of the StoredRecord it decodes to, i.e. the
// writer's <crc><fields 1-3><ingest time> is exactly the canonical checked encoding.
TEST(EncodeAppendTest, StoredValuesAreTheCanonicalCheckedEncoding) {
  const std::string path = TempDir("canonical");
  std::map<std::string, std::string> values;
  {
    StoreOptions options;
    options.path = path;
    options.durability = Durability::kAsync;
    options.datasets = {{"ds", 3, 0}};
    auto store = StagingStore::Open(options);
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->Start().ok());
    std::vector<std::future<AppendResult>> futures;
    for (int i = 0; i < 4; ++i) {
      auto promise = std::make_shared<std::promise<AppendResult>>();
      futures.push_back(promise->get_future());
      auto done = [promise](AppendResult r) { promise->set_value(std::move(r)); };
      // Producer "producer-b" sends sequences 0-3 then 4-7 (contiguous, as the window checks);
      // the requests without a producer id carry sequences too, stored as given.
      ProduceRequest request =
          MixedRequest(i % 2 == 0 ? "" : "producer-b", static_cast<uint64_t>(i / 2) * 4);
      if (i < 2) {
        (*store)->Append(request, done);
      } else {
        (*store)->AppendEncoded(EncodeAppend(request), done);
      }
    }
    uint64_t acked = 0;
    for (auto& f : futures) {
      ASSERT_EQ(f.wait_for(kWait), std::future_status::ready);
      AppendResult r = f.get();
      ASSERT_TRUE(r.status.ok()) << r.status;
      acked += r.acks.size();
    }
    EXPECT_EQ(acked, 16u);
    (*store)->Stop();
  }
  StagingRocksDbConfig config = StagingRocksDbOptions(StoreOptions{});
  std::vector<std::string> names;
  ASSERT_TRUE(rocksdb::DB::ListColumnFamilies(config.db, path, &names).ok());
  const std::vector<rocksdb::ColumnFamilyDescriptor> descriptors =
      StagingColumnFamilyDescriptors(config, names);
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  ASSERT_TRUE(rocksdb::DB::OpenForReadOnly(config.db, path, descriptors, &handles, &db).ok());
  size_t n = 0;
  size_t raw_cfs = 0;
  for (size_t h = 0; h < handles.size(); ++h) {
    const auto pcf = ParsePartitionColumnFamily(descriptors[h].name);
    if (!pcf || !pcf->raw) continue;
    ++raw_cfs;
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions(), handles[h]));
    for (it->SeekToFirst(); it->Valid(); it->Next(), ++n) {
      const std::string value = it->value().ToString();
      StoredRecord stored;
      ASSERT_TRUE(DecodeChecked(value, &stored, "raw record").ok());
      EXPECT_TRUE(stored.has_ingest_time());
      EXPECT_EQ(value, EncodeChecked(stored));
      // DecodeOffsetKey's dataset is a view into its argument: keep the bytes alive.
      const std::string key_bytes = it->key().ToString();
      const auto key = DecodeOffsetKey(key_bytes);
      ASSERT_TRUE(key.has_value());
      EXPECT_EQ(key->dataset, "ds");
      // Each record is in its partition's own raw column family.
      EXPECT_EQ(pcf->dataset, "ds");
      EXPECT_EQ(key->partition, pcf->partition);
      if (!stored.record().key().empty()) {
        EXPECT_EQ(key->partition, PartitionForKey(stored.record().key(), 3));
      }
    }
    EXPECT_TRUE(it->status().ok());
  }
  EXPECT_EQ(raw_cfs, 3u);
  EXPECT_EQ(n, 16u);
  for (auto* h : handles) db->DestroyColumnFamilyHandle(h).PermitUncheckedError();
  delete db;
  std::filesystem::remove_all(path);
}

TEST(EncodeAppendTest, UnknownDatasetIsRefusedAndNothingStored) {
  const std::string path = TempDir("unknown");
  StoreOptions options;
  options.path = path;
  options.datasets = {{"ds", 2, 0}};
  auto store = StagingStore::Open(options);
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_TRUE((*store)->Start().ok());
  ProduceRequest request = MixedRequest("p", 1);
  request.set_dataset("nope");
  auto promise = std::make_shared<std::promise<AppendResult>>();
  auto future = promise->get_future();
  (*store)->AppendEncoded(EncodeAppend(request),
                          [promise](AppendResult r) { promise->set_value(std::move(r)); });
  ASSERT_EQ(future.wait_for(kWait), std::future_status::ready);
  const AppendResult result = future.get();
  EXPECT_EQ(result.status.code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(result.acks.empty());
  for (uint32_t p = 0; p < 2; ++p) {
    EXPECT_EQ((*store)->GetPartitionCounters("ds", p).ingest.next_offset(), 0u);
  }
  (*store)->Stop();
  store->reset();
  std::filesystem::remove_all(path);
}

}  // namespace
}  // namespace wharf::storage
