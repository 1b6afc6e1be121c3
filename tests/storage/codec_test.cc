#include "storage/codec.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "storage/crc32c.h"
#include "storage/keys.h"
#include "wharf/v1/record.pb.h"

namespace wharf::storage {
namespace {

wharf::v1::StoredRecord SampleRecord() {
  wharf::v1::StoredRecord stored;
  auto* r = stored.mutable_record();
  r->set_key("customer-17");
  r->set_payload(R"({"id": 17, "amount": 12.5, "note": "bin\u0000ary"})");
  r->mutable_event_time()->set_seconds(1700000000);
  r->mutable_event_time()->set_nanos(123456789);
  (*r->mutable_headers())["source"] = "pos";
  // Header values are proto3 strings: any valid UTF-8, including NUL and multi-byte characters.
  (*r->mutable_headers())["trace"] = std::string("\x00\x01 gr\xC3\xBC\xC3\x9F", 9);
  stored.set_producer_id("producer-a");
  stored.set_sequence(41);
  stored.mutable_ingest_time()->set_seconds(1700000001);
  return stored;
}

TEST(CodecTest, RoundTrip) {
  const wharf::v1::StoredRecord in = SampleRecord();
  const std::string value = EncodeChecked(in);
  wharf::v1::StoredRecord out;
  ASSERT_TRUE(DecodeChecked(value, &out, "raw record t/0/0").ok());
  // Text format prints map entries sorted by key; the wire order of map entries is unspecified.
  EXPECT_EQ(out.ShortDebugString(), in.ShortDebugString());
  EXPECT_EQ(out.record().headers().at("trace"), std::string("\x00\x01 gr\xC3\xBC\xC3\x9F", 9));
}

TEST(CodecTest, LayoutIsBigEndianCrcThenMessage) {
  const wharf::v1::StoredRecord in = SampleRecord();
  const std::string value = EncodeChecked(in);
  const std::string body = in.SerializeAsString();
  ASSERT_EQ(value.size(), body.size() + 4);
  EXPECT_EQ(value.substr(4), body);
  EXPECT_EQ(ReadBigEndian32(value.data()), Crc32c(body));
}

TEST(CodecTest, EncodeCheckedToReplacesPreviousContent) {
  std::string value = "previous content that is much longer than the new value will be ......";
  wharf::v1::RecordAck ack;
  ack.set_partition(2);
  ack.set_offset(9);
  EncodeCheckedTo(ack, &value);
  EXPECT_EQ(value, EncodeChecked(ack));
  wharf::v1::RecordAck out;
  ASSERT_TRUE(DecodeChecked(value, &out, "ack").ok());
  EXPECT_EQ(out.partition(), 2u);
  EXPECT_EQ(out.offset(), 9u);
}

TEST(CodecTest, EmptyMessageRoundTrips) {
  const std::string value = EncodeChecked(wharf::v1::StoredRecord());
  EXPECT_EQ(value.size(), 4u);
  wharf::v1::StoredRecord out = SampleRecord();
  ASSERT_TRUE(DecodeChecked(value, &out, "empty").ok());
  EXPECT_EQ(out.ByteSizeLong(), 0u) << "decoding replaces, not merges";
}

TEST(CodecTest, EverySingleBitFlipIsDataLoss) {
  const std::string value = EncodeChecked(SampleRecord());
  for (size_t bit = 0; bit < value.size() * 8; ++bit) {
    std::string damaged = value;
    damaged[bit / 8] = static_cast<char>(damaged[bit / 8] ^ (1 << (bit % 8)));
    wharf::v1::StoredRecord out;
    absl::Status st = DecodeChecked(damaged, &out, "raw record t/1/7");
    ASSERT_EQ(st.code(), absl::StatusCode::kDataLoss) << "bit " << bit << ": " << st;
    EXPECT_NE(st.message().find("raw record t/1/7"), std::string::npos) << st;
  }
}

TEST(CodecTest, TruncatedValuesAreDataLoss) {
  const std::string value = EncodeChecked(SampleRecord());
  for (size_t n = 0; n < value.size(); ++n) {
    wharf::v1::StoredRecord out;
    absl::Status st = DecodeChecked(value.substr(0, n), &out, "batch t/0/5");
    ASSERT_EQ(st.code(), absl::StatusCode::kDataLoss) << "truncated to " << n << ": " << st;
    EXPECT_NE(st.message().find("batch t/0/5"), std::string::npos) << st;
  }
}

TEST(CodecTest, ValueShorterThanChecksumIsDataLoss) {
  for (const std::string value : {"", "\x01", "ab", "abc"}) {
    wharf::v1::StoredRecord out;
    absl::Status st = DecodeChecked(value, &out, "quarantine entry");
    EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
    EXPECT_NE(st.message().find("too short"), std::string::npos) << st;
  }
}

TEST(CodecTest, ExtraTrailingBytesAreDataLoss) {
  const std::string value = EncodeChecked(SampleRecord());
  wharf::v1::StoredRecord out;
  EXPECT_EQ(DecodeChecked(value + "x", &out, "r").code(), absl::StatusCode::kDataLoss);
}

TEST(CodecTest, MatchingChecksumOverUnparsableBodyIsDataLoss) {
  // A body that is not a valid protobuf (truncated length-delimited field), with a correct CRC.
  const std::string body("\x0A\x10\x01", 3);
  std::string value;
  AppendBigEndian32(&value, Crc32c(body));
  value += body;
  wharf::v1::StoredRecord out;
  absl::Status st = DecodeChecked(value, &out, "raw record t/0/1");
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
  EXPECT_NE(st.message().find("does not parse"), std::string::npos) << st;
}

// Lazily named: the name is only built for a bad value, and then appears in the message.
TEST(CodecTest, LazyNameBuiltOnlyOnFailure) {
  const std::string value = EncodeChecked(SampleRecord());
  int built = 0;
  auto name = [&] {
    ++built;
    return std::string("raw record t/0/9");
  };
  wharf::v1::StoredRecord out;
  ASSERT_TRUE(DecodeChecked(value, &out, name).ok());
  EXPECT_EQ(built, 0);
  std::string damaged = value;
  damaged[6] ^= 0x01;
  absl::Status st = DecodeChecked(damaged, &out, name);
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(built, 1);
  EXPECT_NE(st.message().find("raw record t/0/9: checksum mismatch"), std::string::npos) << st;
  EXPECT_EQ(DecodeChecked("ab", &out, name).code(), absl::StatusCode::kDataLoss);
}

wharf::v1::StoredBatch SampleBatch() {
  wharf::v1::StoredBatch batch;
  auto* m = batch.mutable_manifest();
  m->set_batch_id("t.p1.10-12");
  m->set_dataset("t");
  m->set_partition(1);
  m->set_first_offset(10);
  m->set_last_offset(12);
  m->set_record_count(3);
  m->mutable_create_time()->set_seconds(1700000002);
  for (uint64_t o = 10; o <= 12; ++o) {
    auto* r = batch.add_records();
    r->set_offset(o);
    r->set_payload(R"({"a":1})");
    (*r->mutable_headers())["h"] = "v";
  }
  return batch;
}

TEST(CodecTest, DecodeFieldGivesTheFullDecodesManifest) {
  const wharf::v1::StoredBatch batch = SampleBatch();
  const std::string value = EncodeChecked(batch);
  wharf::v1::BatchManifest manifest;
  manifest.set_bytes(99);  // cleared first
  ASSERT_TRUE(
      DecodeCheckedField(value, wharf::v1::StoredBatch::kManifestFieldNumber, &manifest, [] {
        return std::string("b");
      }).ok());
  EXPECT_EQ(manifest.SerializeAsString(), batch.manifest().SerializeAsString());
  // A batch without a manifest decodes to the empty manifest, as a full parse would.
  wharf::v1::StoredBatch no_manifest = batch;
  no_manifest.clear_manifest();
  ASSERT_TRUE(DecodeCheckedField(EncodeChecked(no_manifest),
                                 wharf::v1::StoredBatch::kManifestFieldNumber, &manifest,
                                 [] { return std::string("b"); })
                  .ok());
  EXPECT_EQ(manifest.last_offset(), 0u);
  EXPECT_EQ(manifest.batch_id(), "");
}

TEST(CodecTest, DecodeFieldMergesRepeatedOccurrences) {
  // Two occurrences of the manifest field merge, as protobuf parsing of a singular message does.
  wharf::v1::BatchManifest a;
  a.set_batch_id("x");
  a.set_first_offset(1);
  wharf::v1::BatchManifest b;
  b.set_last_offset(7);
  wharf::v1::StoredBatch one;
  *one.mutable_manifest() = a;
  wharf::v1::StoredBatch two;
  *two.mutable_manifest() = b;
  const std::string body = one.SerializeAsString() + two.SerializeAsString();
  std::string value;
  AppendBigEndian32(&value, Crc32c(body));
  value += body;
  wharf::v1::StoredBatch full;
  ASSERT_TRUE(DecodeChecked(value, &full, "b").ok());
  wharf::v1::BatchManifest manifest;
  ASSERT_TRUE(
      DecodeCheckedField(value, wharf::v1::StoredBatch::kManifestFieldNumber, &manifest, [] {
        return std::string("b");
      }).ok());
  EXPECT_EQ(manifest.SerializeAsString(), full.manifest().SerializeAsString());
  EXPECT_EQ(manifest.batch_id(), "x");
  EXPECT_EQ(manifest.last_offset(), 7u);
}

TEST(CodecTest, DecodeFieldRejectsDamagedAndMalformedValues) {
  const std::string value = EncodeChecked(SampleBatch());
  auto decode = [](const std::string& v) {
    wharf::v1::BatchManifest manifest;
    return DecodeCheckedField(v, wharf::v1::StoredBatch::kManifestFieldNumber, &manifest,
                              [] { return std::string("batch t/1/10"); });
  };
  // Every single bit flip is caught (by the checksum).
  for (size_t i = 0; i < value.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string damaged = value;
      damaged[i] ^= static_cast<char>(1 << bit);
      ASSERT_EQ(decode(damaged).code(), absl::StatusCode::kDataLoss) << i << "/" << bit;
    }
  }
  for (size_t n = 0; n < value.size(); ++n) {
    ASSERT_EQ(decode(value.substr(0, n)).code(), absl::StatusCode::kDataLoss) << n;
  }
  // Malformed bodies with a matching checksum: truncated manifest, truncated skipped field,
  // tag 0, a manifest whose contents do not parse, a bad wire type.
  const std::vector<std::string> bodies = {
      std::string("\x0A\x10\x01", 3), std::string("\x12\x10\x01", 3), std::string("\x00\x01", 2),
      std::string("\x0A\x02\x0A\x05", 4), std::string("\x0F", 1)};
  for (const std::string& body : bodies) {
    std::string bad;
    AppendBigEndian32(&bad, Crc32c(body));
    bad += body;
    absl::Status st = decode(bad);
    EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
    EXPECT_NE(st.message().find("batch t/1/10: checksum matches but the value does not parse"),
              std::string::npos)
        << st;
  }
}

}  // namespace
}  // namespace wharf::storage
