#include "pipeline/contract/hmac.h"

#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace wharf::pipeline::contract {
namespace {

// RFC 4231 test case 2.
TEST(HmacTest, MatchesRfc4231) {
  EXPECT_EQ(HmacSha256Hex("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  EXPECT_EQ(HmacSha256("Jefe").Hex("what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

// RFC 4231 test case 6: a key longer than the block size (131 bytes of 0xaa) is hashed first.
TEST(HmacTest, MatchesRfc4231LongKey) {
  const std::string key(131, '\xaa');
  const std::string data = "Test Using Larger Than Block-Size Key - Hash Key First";
  const std::string expected = "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54";
  EXPECT_EQ(HmacSha256Hex(key, data), expected);
  EXPECT_EQ(HmacSha256(key).Hex(data), expected);
}

TEST(HmacTest, DependsOnKeyAndData) {
  EXPECT_NE(HmacSha256Hex("k1", "x"), HmacSha256Hex("k2", "x"));
  EXPECT_NE(HmacSha256Hex("k1", "x"), HmacSha256Hex("k1", "y"));
  EXPECT_EQ(HmacSha256Hex("", "").size(), 64u);
  EXPECT_NE(HmacSha256("k1").Hex("x"), HmacSha256("k2").Hex("x"));
}

// The prepared context gives the one-shot bytes for keys around the block size (64), the empty
// key, binary keys and data, and repeated use of one object (each call starts from the keyed
// state, never from the previous call's).
TEST(HmacTest, PreparedMatchesOneShot) {
  std::vector<std::string> keys = {"",
                                   "k",
                                   std::string(63, 'a'),
                                   std::string(64, 'b'),
                                   std::string(65, 'c'),
                                   std::string("\0\xff\x01", 3)};
  std::vector<std::string> data = {"", "a@b.c", std::string(1, '\0'), std::string(1000, 'z'),
                                   std::string("\xc3\x28\x00\x7f", 4)};
  for (const std::string& key : keys) {
    const HmacSha256 hasher(key);
    EXPECT_EQ(hasher.key(), key);
    for (int round = 0; round < 2; ++round) {
      for (const std::string& d : data) {
        EXPECT_EQ(hasher.Hex(d), HmacSha256Hex(key, d)) << "key size " << key.size();
      }
    }
  }
}

TEST(HmacTest, MovedObjectKeepsItsKey) {
  HmacSha256 a("key-a");
  HmacSha256 b(std::move(a));
  EXPECT_EQ(b.Hex("v"), HmacSha256Hex("key-a", "v"));
  HmacSha256 c("key-c");
  c = std::move(b);
  EXPECT_EQ(c.Hex("v"), HmacSha256Hex("key-a", "v"));
}

// Contracts are shared by the pipeline threads: one object used by several threads at once
// gives every thread the one-shot result (run under TSan in CI's sanitizer build).
TEST(HmacTest, ConcurrentUseOfOneObject) {
  const HmacSha256 hasher("shared-key");
  constexpr int kThreads = 4;
  constexpr int kPerThread = 200;
  std::vector<int> mismatches(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const std::string d = "value-" + std::to_string(t) + "-" + std::to_string(i);
        if (hasher.Hex(d) != HmacSha256Hex("shared-key", d)) ++mismatches[t];
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(mismatches[t], 0) << "thread " << t;
}

}  // namespace
}  // namespace wharf::pipeline::contract
