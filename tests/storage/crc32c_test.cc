#include "storage/crc32c.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace wharf::storage {
namespace {

// Independent bit-at-a-time reference (reflected Castagnoli polynomial), sharing no code with
// the implementation: whichever path Crc32c takes (SSE4.2 or table), it must agree with this.
uint32_t ReferenceCrc32c(std::string_view data, uint32_t crc = 0) {
  uint32_t c = ~crc;
  for (unsigned char byte : data) {
    c ^= byte;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
  }
  return ~c;
}

std::string RandomBytes(std::mt19937* rng, size_t n) {
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>((*rng)() & 0xFF);
  return s;
}

TEST(Crc32cTest, KnownVectors) {
  EXPECT_EQ(Crc32c(""), 0u);
  EXPECT_EQ(Crc32c("a"), 0xC1D04330u);
  EXPECT_EQ(Crc32c("123456789"), 0xE3069283u);
  // RFC 3720 (iSCSI), appendix B.4.
  EXPECT_EQ(Crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(Crc32c(std::string(32, '\xFF')), 0x62A8AB43u);
  std::string ascending, descending;
  for (int i = 0; i < 32; ++i) {
    ascending.push_back(static_cast<char>(i));
    descending.push_back(static_cast<char>(31 - i));
  }
  EXPECT_EQ(Crc32c(ascending), 0x46DD794Eu);
  EXPECT_EQ(Crc32c(descending), 0x113FDB5Cu);
}

TEST(Crc32cTest, ReferenceImplementationMatchesKnownVectors) {
  // Guards the reference used by the randomized tests below.
  EXPECT_EQ(ReferenceCrc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(ReferenceCrc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(ReferenceCrc32c(std::string(32, '\xFF')), 0x62A8AB43u);
}

TEST(Crc32cTest, IncrementalEqualsOneShotAtEverySplit) {
  std::mt19937 rng(1);
  const std::string data = RandomBytes(&rng, 300);
  const uint32_t whole = Crc32c(data);
  const std::string_view view(data);
  for (size_t split = 0; split <= data.size(); ++split) {
    const uint32_t first = Crc32c(view.substr(0, split));
    EXPECT_EQ(Crc32c(view.substr(split), first), whole) << "split at " << split;
  }
}

TEST(Crc32cTest, IncrementalInManySmallPiecesEqualsOneShot) {
  std::mt19937 rng(2);
  for (int round = 0; round < 50; ++round) {
    const std::string data = RandomBytes(&rng, rng() % 5000);
    uint32_t crc = 0;
    size_t pos = 0;
    while (pos < data.size()) {
      const size_t n = std::min<size_t>(rng() % 17, data.size() - pos);
      crc = Crc32c(std::string_view(data).substr(pos, n), crc);
      pos += n;
    }
    EXPECT_EQ(crc, Crc32c(data)) << "size " << data.size();
  }
}

TEST(Crc32cTest, EmptyInputLeavesTheRunningValueUnchanged) {
  EXPECT_EQ(Crc32c("", 0xE3069283u), 0xE3069283u);
  EXPECT_EQ(Crc32c(std::string_view(), 12345u), 12345u);
}

TEST(Crc32cTest, MatchesReferenceForAllLengthsAndAlignments) {
  std::mt19937 rng(3);
  // Lengths around the 8-byte stride of the hardware loop, and alignments 0..15 of the start.
  const std::string buffer = RandomBytes(&rng, 4096 + 16);
  std::vector<size_t> lengths;
  for (size_t n = 0; n <= 70; ++n) lengths.push_back(n);
  for (size_t n : {127, 128, 129, 255, 256, 257, 1000, 1023, 1024, 1025, 4095, 4096}) {
    lengths.push_back(n);
  }
  for (size_t align = 0; align < 16; ++align) {
    for (size_t n : lengths) {
      const std::string_view piece(buffer.data() + align, n);
      ASSERT_EQ(Crc32c(piece), ReferenceCrc32c(piece)) << "align " << align << " length " << n;
      ASSERT_EQ(Crc32c(piece, 0xDEADBEEFu), ReferenceCrc32c(piece, 0xDEADBEEFu))
          << "align " << align << " length " << n;
    }
  }
}

TEST(Crc32cTest, MatchesReferenceOnRandomBuffers) {
  std::mt19937 rng(4);
  for (int i = 0; i < 500; ++i) {
    const std::string data = RandomBytes(&rng, rng() % 2048);
    const size_t skip = data.empty() ? 0 : rng() % std::min<size_t>(data.size(), 9);
    const std::string_view piece = std::string_view(data).substr(skip);
    ASSERT_EQ(Crc32c(piece), ReferenceCrc32c(piece)) << "size " << data.size() << " skip " << skip;
  }
}

TEST(Crc32cTest, DetectsEverySingleBitFlip) {
  std::mt19937 rng(5);
  const std::string data = RandomBytes(&rng, 64);
  const uint32_t crc = Crc32c(data);
  for (size_t bit = 0; bit < data.size() * 8; ++bit) {
    std::string damaged = data;
    damaged[bit / 8] = static_cast<char>(damaged[bit / 8] ^ (1 << (bit % 8)));
    EXPECT_NE(Crc32c(damaged), crc) << "bit " << bit;
  }
}

}  // namespace
}  // namespace wharf::storage
