#include "pipeline/json_check.h"

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace wharf::pipeline {
namespace {

// Records like the benchmark's, plus escapes, non-ASCII text, numbers of every form and nesting.
const std::vector<std::string>& Seeds() {
  static const std::vector<std::string> seeds = {
      R"({"id":123456,"ts":"2026-11-21T10:00:00.123Z","user":"user-00042","amount":1234.56,)"
      R"("tags":["alpha","beta"],"nested":{"producer":3,"region":"eu-west","score":0.875}})",
      R"({"s":"a\"b\\c\/d\b\f\n\r\t\u00e9\ud83d\ude00","n":[-0,0.5e-3,1E+2,-12.75e10,true,false,null]})",
      "{\"text\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\",\"k\":{}}",
      R"( { "a" : [ [ [ {} ] ] , { "b" : { "c" : [ 1 , 2 , 3 ] } } ] } )",
      R"({"big":18446744073709551615,"neg":-9223372036854775808,"f":1.7976931348623157e308})",
  };
  return seeds;
}

// Bytes a mutation inserts or substitutes: JSON's structure, digits and literal letters, escapes,
// whitespace, and bytes that are invalid or special in UTF-8.
const std::string& Alphabet() {
  static const std::string alphabet =
      std::string("{}[]\",:\\ /\t\n\r0123456789eE+-.tfnulsrabu") +
      std::string("\x00\x01\x1f\x7f\x80\xbf\xc0\xc3\xed\xef\xf0\xf4\xff", 13);
  return alphabet;
}

std::string Mutate(std::string s, std::mt19937_64& rng) {
  const std::string& alphabet = Alphabet();
  const int edits = 1 + static_cast<int>(rng() % 3);
  for (int e = 0; e < edits; ++e) {
    const size_t at = s.empty() ? 0 : rng() % (s.size() + 1);
    const char c = alphabet[rng() % alphabet.size()];
    switch (rng() % 5) {
      case 0:  // substitute
        if (at < s.size()) s[at] = c;
        break;
      case 1:  // insert
        s.insert(s.begin() + static_cast<std::ptrdiff_t>(at), c);
        break;
      case 2:  // delete
        if (at < s.size()) s.erase(at, 1);
        break;
      case 3:  // truncate
        s.resize(at);
        break;
      default:  // append
        s.push_back(c);
        break;
    }
  }
  return s;
}

TEST(JsonCheckTest, SeedsPassBothChecks) {
  for (const std::string& seed : Seeds()) {
    SCOPED_TRACE(seed);
    EXPECT_FALSE(CheckJsonObject(seed).has_value()) << CheckJsonObject(seed)->message;
    EXPECT_TRUE(IsCertainlyJsonObject(seed));
  }
}

// The pre-check may only say yes where the authoritative check says yes (a record it passed
// wrongly would be delivered although it is not JSON), with one documented exception: zeros with
// an exponent beyond double's range. 200,000 mutated records, fixed seed.
TEST(JsonCheckTest, FastCheckNeverAcceptsWhatTheAuthoritativeCheckRefuses) {
  std::mt19937_64 rng(20261121);
  int fast_yes = 0, both_no = 0, only_authoritative_yes = 0, zero_with_huge_exponent = 0;
  for (int i = 0; i < 200000; ++i) {
    const std::string payload = Mutate(Seeds()[i % Seeds().size()], rng);
    const bool fast = IsCertainlyJsonObject(payload);
    const bool exact = !CheckJsonObject(payload).has_value();
    if (fast) {
      ++fast_yes;
      // The one known difference: a zero with an exponent beyond double's range (0e400) is a
      // JSON number (RFC 8259) and simdjson takes it; RapidJSON calls it too big.
      if (!exact) {
        const std::string message = CheckJsonObject(payload)->message;
        ASSERT_NE(message.find("Number too big"), std::string::npos)
            << "simdjson passed a payload RapidJSON refuses: " << ::testing::PrintToString(payload)
            << " (" << message << ")";
        ++zero_with_huge_exponent;
      }
    } else if (exact) {
      ++only_authoritative_yes;
    } else {
      ++both_no;
    }
  }
  // The mutations must exercise both outcomes, or the test proves nothing.
  EXPECT_GT(fast_yes, 10000);
  EXPECT_GT(both_no, 10000);
  RecordProperty("fast_yes", fast_yes);
  RecordProperty("only_authoritative_yes", only_authoritative_yes);
  RecordProperty("zero_with_huge_exponent", zero_with_huge_exponent);
}

// Where simdjson is stricter, the payload is not refused: the authoritative check decides.
TEST(JsonCheckTest, PayloadsOnlyTheAuthoritativeCheckAcceptsAreStillAccepted) {
  const std::vector<std::string> payloads = {
      R"({"a":123456789012345678901234567890})",  // beyond 64-bit integers
      R"({"a":18446744073709551616})",
      "\xef\xbb\xbf{}",     // byte-order mark
      R"({"a":"\udc00"})",  // lone low surrogate escape
      std::string(2000, '[').insert(0, "{\"a\":") + std::string(2000, ']') + "}",  // deep
  };
  for (const std::string& payload : payloads) {
    SCOPED_TRACE(::testing::PrintToString(payload.substr(0, 40)));
    EXPECT_FALSE(IsCertainlyJsonObject(payload));
    EXPECT_FALSE(CheckJsonObject(payload).has_value()) << CheckJsonObject(payload)->message;
  }
}

TEST(JsonCheckTest, ZeroWithAnExponentBeyondDoubleRangeIsAJsonNumber) {
  EXPECT_TRUE(IsCertainlyJsonObject(R"({"a":0e400})"));
  EXPECT_TRUE(IsCertainlyJsonObject(R"({"a":-0.000E+999})"));
  // Non-zero numbers beyond double's range are refused by both.
  EXPECT_FALSE(IsCertainlyJsonObject(R"({"a":1e400})"));
  EXPECT_TRUE(CheckJsonObject(R"({"a":1e400})").has_value());
}

TEST(JsonCheckTest, BothRefuseATrailingNulByte) {
  const std::string payload("{\"a\":1}\0", 8);
  EXPECT_FALSE(IsCertainlyJsonObject(payload));
  const auto error = CheckJsonObject(payload);
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->position, 7u);
}

TEST(JsonCheckTest, RefusalsNameThePosition) {
  const auto error = CheckJsonObject(R"({"a":tru})");
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->position, 8u);  // where RapidJSON noticed the bad literal
  EXPECT_NE(error->message.find("at byte 8"), std::string::npos) << error->message;
  const auto not_object = CheckJsonObject("  [1]");
  ASSERT_TRUE(not_object.has_value());
  EXPECT_EQ(not_object->position, 2u);
  EXPECT_FALSE(IsCertainlyJsonObject("  [1]"));
}

TEST(JsonCheckTest, LargePayloadsSkipThePreCheckAndAreStillChecked) {
  std::string large = "{\"a\":\"" + std::string(100 * 1024, 'x') + "\"}";
  EXPECT_FALSE(IsCertainlyJsonObject(large));
  EXPECT_FALSE(CheckJsonObject(large).has_value()) << CheckJsonObject(large)->message;
  large.pop_back();
  EXPECT_TRUE(CheckJsonObject(large).has_value());
}

}  // namespace
}  // namespace wharf::pipeline
