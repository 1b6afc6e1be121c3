#include "storage/keys.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace wharf::storage {
namespace {

constexpr uint64_t kMax64 = std::numeric_limits<uint64_t>::max();
constexpr uint32_t kMax32 = std::numeric_limits<uint32_t>::max();

// Keys are compared as RocksDB's default comparator does: unsigned bytewise.
bool BytewiseLess(const std::string& a, const std::string& b) {
  return std::lexicographical_compare(a.begin(), a.end(), b.begin(), b.end(), [](char x, char y) {
    return static_cast<unsigned char>(x) < static_cast<unsigned char>(y);
  });
}

bool StartsWith(const std::string& s, const std::string& prefix) {
  return s.size() >= prefix.size() && s.compare(0, prefix.size(), prefix) == 0;
}

TEST(BigEndianTest, Writes32BitValuesMostSignificantByteFirst) {
  std::string out;
  AppendBigEndian32(&out, 0x01020304u);
  EXPECT_EQ(out, std::string("\x01\x02\x03\x04", 4));
  AppendBigEndian32(&out, 0xFFFFFFFEu);
  EXPECT_EQ(out, std::string("\x01\x02\x03\x04\xFF\xFF\xFF\xFE", 8));
}

TEST(BigEndianTest, Writes64BitValuesMostSignificantByteFirst) {
  std::string out;
  AppendBigEndian64(&out, 0x0102030405060708ull);
  EXPECT_EQ(out, std::string("\x01\x02\x03\x04\x05\x06\x07\x08", 8));
}

TEST(BigEndianTest, RoundTrips32BitEdgeAndRandomValues) {
  std::vector<uint32_t> values = {0, 1, 0x7F, 0x80, 0xFF, 0x100, 0x7FFFFFFF, 0x80000000, kMax32};
  std::mt19937 rng(42);
  for (int i = 0; i < 1000; ++i) values.push_back(static_cast<uint32_t>(rng()));
  for (uint32_t v : values) {
    std::string out;
    AppendBigEndian32(&out, v);
    ASSERT_EQ(out.size(), 4u);
    EXPECT_EQ(ReadBigEndian32(out.data()), v);
  }
}

TEST(BigEndianTest, RoundTrips64BitEdgeAndRandomValues) {
  std::vector<uint64_t> values = {0,
                                  1,
                                  0xFF,
                                  0x100,
                                  0xFFFFFFFFull,
                                  0x100000000ull,
                                  0x7FFFFFFFFFFFFFFFull,
                                  0x8000000000000000ull,
                                  kMax64};
  std::mt19937_64 rng(7);
  for (int i = 0; i < 1000; ++i) values.push_back(rng());
  for (uint64_t v : values) {
    std::string out;
    AppendBigEndian64(&out, v);
    ASSERT_EQ(out.size(), 8u);
    EXPECT_EQ(ReadBigEndian64(out.data()), v);
  }
}

TEST(BigEndianTest, ReadsFromUnalignedPositions) {
  std::string buf = "x";
  AppendBigEndian64(&buf, 0x1122334455667788ull);
  AppendBigEndian32(&buf, 0xA1B2C3D4u);
  EXPECT_EQ(ReadBigEndian64(buf.data() + 1), 0x1122334455667788ull);
  EXPECT_EQ(ReadBigEndian32(buf.data() + 9), 0xA1B2C3D4u);
}

TEST(BigEndianTest, ByteOrderMatchesNumericOrder) {
  std::mt19937_64 rng(3);
  for (int i = 0; i < 2000; ++i) {
    const uint64_t a = rng() >> (rng() % 64);
    const uint64_t b = rng() >> (rng() % 64);
    std::string ka, kb;
    AppendBigEndian64(&ka, a);
    AppendBigEndian64(&kb, b);
    EXPECT_EQ(BytewiseLess(ka, kb), a < b) << a << " vs " << b;
  }
}

TEST(KeysTest, PartitionPrefixLayout) {
  EXPECT_EQ(PartitionPrefix("orders", 3), std::string("orders\0\0\0\0\x03", 11));
  EXPECT_EQ(PartitionPrefix("a", 0x01020304u), std::string("a\0\x01\x02\x03\x04", 6));
}

TEST(KeysTest, OffsetKeyLayout) {
  EXPECT_EQ(OffsetKey("ds", 1, 0x0102030405060708ull),
            std::string("ds\0\0\0\0\x01\x01\x02\x03\x04\x05\x06\x07\x08", 15));
  const std::string key = OffsetKey("orders", 7, 1042);
  EXPECT_TRUE(StartsWith(key, PartitionPrefix("orders", 7)));
  EXPECT_EQ(key.size(), PartitionPrefix("orders", 7).size() + 8);
}

TEST(KeysTest, OffsetsSortNumerically) {
  const std::vector<uint64_t> offsets = {0,     1,          255,        256,        257,   65535,
                                         65536, 1ull << 32, 1ull << 40, kMax64 - 1, kMax64};
  for (size_t i = 0; i + 1 < offsets.size(); ++i) {
    EXPECT_TRUE(BytewiseLess(OffsetKey("d", 0, offsets[i]), OffsetKey("d", 0, offsets[i + 1])))
        << offsets[i] << " should sort before " << offsets[i + 1];
  }
}

TEST(KeysTest, PartitionsSortNumericallyAndBeforeLaterPartitionsOffsets) {
  const std::vector<uint32_t> partitions = {0, 1, 2, 255, 256, 65536, kMax32};
  for (size_t i = 0; i + 1 < partitions.size(); ++i) {
    // The largest offset of a partition still sorts before the smallest of the next one.
    EXPECT_TRUE(
        BytewiseLess(OffsetKey("d", partitions[i], kMax64), OffsetKey("d", partitions[i + 1], 0)))
        << partitions[i] << " vs " << partitions[i + 1];
    EXPECT_TRUE(
        BytewiseLess(PartitionPrefix("d", partitions[i]), PartitionPrefix("d", partitions[i + 1])));
  }
}

TEST(KeysTest, DatasetsSortFirstAndAreTotallyOrderedByName) {
  // Every key of dataset "a" sorts before every key of "a.b", "a0" and "ab".
  const std::string last_of_a = OffsetKey("a", kMax32, kMax64);
  for (const std::string other : {"a.b", "a-b", "a0", "ab", "b"}) {
    EXPECT_TRUE(BytewiseLess(last_of_a, OffsetKey(other, 0, 0))) << other;
    EXPECT_TRUE(BytewiseLess(last_of_a, PartitionPrefix(other, 0))) << other;
  }
}

TEST(KeysTest, DatasetPrefixesAreDisjoint) {
  // A partition of "a" is a contiguous range that contains no key of "a.b" or "ab" and vice versa.
  for (uint32_t p : {0u, 1u, 0x2Eu, 0x62u, kMax32}) {
    const std::string a = PartitionPrefix("a", p);
    for (const std::string other : {"a.b", "ab", "a0", "a-"}) {
      for (uint32_t q : {0u, 1u, 0x2Eu, 0x62u, kMax32}) {
        for (uint64_t o : {uint64_t{0}, uint64_t{0x2E}, kMax64}) {
          EXPECT_FALSE(StartsWith(OffsetKey(other, q, o), a)) << other << " " << q << " " << o;
          EXPECT_FALSE(StartsWith(OffsetKey("a", p, o), PartitionPrefix(other, q)));
        }
      }
    }
  }
  // Dataset "a"'s prefix (name + separator) is not a prefix of producer keys of "ab" either.
  EXPECT_FALSE(StartsWith(ProducerKey("ab", "p"), std::string("a\0", 2)));
  EXPECT_TRUE(StartsWith(ProducerKey("a", "p"), std::string("a\0", 2)));
}

TEST(KeysTest, DecodeOffsetKeyRoundTrips) {
  struct Case {
    std::string dataset;
    uint32_t partition;
    uint64_t offset;
  };
  const std::vector<Case> cases = {
      {"a", 0, 0},
      {"orders", 3, 1042},
      {"x.y-z_1", kMax32, kMax64},
      {std::string(64, 'q'), 0x00010000u, 0x0000000100000000ull},  // zero bytes inside numbers
  };
  for (const Case& c : cases) {
    const std::string key = OffsetKey(c.dataset, c.partition, c.offset);
    auto d = DecodeOffsetKey(key);
    ASSERT_TRUE(d.has_value()) << c.dataset;
    EXPECT_EQ(d->dataset, c.dataset);
    EXPECT_EQ(d->partition, c.partition);
    EXPECT_EQ(d->offset, c.offset);
  }
}

TEST(KeysTest, DecodeOffsetKeyRefusesMalformedKeys) {
  const std::string good = OffsetKey("orders", 2, 99);
  ASSERT_TRUE(DecodeOffsetKey(good).has_value());

  EXPECT_FALSE(DecodeOffsetKey("").has_value());
  EXPECT_FALSE(DecodeOffsetKey("orders").has_value()) << "no separator";
  EXPECT_FALSE(DecodeOffsetKey("ordersXXXXXXXXXXXXXXXXXXXX").has_value()) << "no separator";
  EXPECT_FALSE(DecodeOffsetKey(good.substr(0, good.size() - 1)).has_value()) << "too short";
  EXPECT_FALSE(DecodeOffsetKey(PartitionPrefix("orders", 2)).has_value()) << "prefix only";
  EXPECT_FALSE(DecodeOffsetKey(good + "x").has_value()) << "extra bytes";
  EXPECT_FALSE(DecodeOffsetKey(good + std::string(1, '\0')).has_value()) << "extra zero byte";
  // Empty dataset: the key starts with the separator.
  EXPECT_FALSE(DecodeOffsetKey(OffsetKey("", 2, 99)).has_value());
  // A producer key is not an offset key.
  EXPECT_FALSE(DecodeOffsetKey(ProducerKey("orders", "p1")).has_value());
}

TEST(KeysTest, ProducerKeyLayout) {
  EXPECT_EQ(ProducerKey("ds", "prod"), std::string("ds\0prod", 7));
  // Producer ids are arbitrary bytes.
  EXPECT_EQ(ProducerKey("ds", std::string("\0\xFF", 2)), std::string("ds\0\0\xFF", 5));
  EXPECT_NE(ProducerKey("ds", "a"), ProducerKey("ds", "b"));
  EXPECT_NE(ProducerKey("ds", "a"), ProducerKey("ds2", "a"));
}

TEST(KeysTest, CheckpointKeysAreDistinctPerKindDatasetAndPartition) {
  std::vector<std::string> keys;
  for (const std::string ds : {"a", "a.b", "ab"}) {
    for (uint32_t p : {0u, 1u, 256u}) {
      keys.push_back(IngestStateKey(ds, p));
      keys.push_back(ValidationKey(ds, p));
      keys.push_back(RetentionKey(ds, p));
      keys.push_back(DeliveryKey(ds, "s3", p));
      keys.push_back(DeliveryKey(ds, "s3b", p));
    }
  }
  std::vector<std::string> sorted = keys;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(std::unique(sorted.begin(), sorted.end()), sorted.end()) << "duplicate key";

  EXPECT_EQ(IngestStateKey("ds", 1), "i" + PartitionPrefix("ds", 1));
  EXPECT_EQ(ValidationKey("ds", 1), "v" + PartitionPrefix("ds", 1));
  EXPECT_EQ(RetentionKey("ds", 1), "r" + PartitionPrefix("ds", 1));
  EXPECT_EQ(DeliveryKey("ds", "dst", 1), std::string("dds\0dst\0\0\0\0\x01", 12));
}

TEST(KeysTest, DatasetMetaKey) { EXPECT_EQ(DatasetMetaKey("orders"), "dataset/orders"); }

TEST(ValidateNameTest, AcceptsWellFormedNames) {
  const std::vector<std::string> good = {"a",
                                         "Z",
                                         "0",
                                         "orders",
                                         "Orders_2024",
                                         "a.b",
                                         "a-b",
                                         "a_b",
                                         "9lives",
                                         "x.y-z_W.9",
                                         "a.",
                                         "0_",
                                         std::string(64, 'n'),
                                         "a" + std::string(63, '-')};
  for (const std::string& name : good) {
    EXPECT_TRUE(ValidateName("dataset", name).ok()) << name;
  }
}

TEST(ValidateNameTest, RefusesMalformedNames) {
  const std::vector<std::string> bad = {
      "",
      std::string(65, 'n'),
      std::string(1000, 'n'),
      "-leading",
      "_leading",
      ".leading",
      "a/b",
      "/",
      "a b",
      " a",
      "a ",
      std::string("a\0b", 3),
      std::string("\0", 1),
      "caf\xC3\xA9",  // UTF-8 "café"
      "\xC3\xA9t\xC3\xA9",
      "a\tb",
      "a\nb",
      "a:b",
      "a\\b",
      "a*",
      "a+b",
      "a@b",
      "a\x01",
      "a\x7F",
  };
  for (const std::string& name : bad) {
    absl::Status st = ValidateName("dataset", name);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << "\"" << name << "\"";
  }
}

TEST(ValidateNameTest, MessageNamesTheKind) {
  absl::Status st = ValidateName("destination", "");
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("destination"), std::string::npos) << st;
  st = ValidateName("destination", "-x");
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("destination"), std::string::npos) << st;
}

}  // namespace
}  // namespace wharf::storage
