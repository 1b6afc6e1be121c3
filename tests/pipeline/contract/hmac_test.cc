#include "pipeline/contract/hmac.h"

#include <gtest/gtest.h>

namespace wharf::pipeline::contract {
namespace {

// RFC 4231 test case 2.
TEST(HmacTest, MatchesRfc4231) {
  EXPECT_EQ(HmacSha256Hex("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(HmacTest, DependsOnKeyAndData) {
  EXPECT_NE(HmacSha256Hex("k1", "x"), HmacSha256Hex("k2", "x"));
  EXPECT_NE(HmacSha256Hex("k1", "x"), HmacSha256Hex("k1", "y"));
  EXPECT_EQ(HmacSha256Hex("", "").size(), 64u);
}

}  // namespace
}  // namespace wharf::pipeline::contract
