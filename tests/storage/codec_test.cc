#include "storage/codec.h"

#include <gtest/gtest.h>

#include <string>

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

}  // namespace
}  // namespace wharf::storage
