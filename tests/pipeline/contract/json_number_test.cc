#include "pipeline/contract/json_number.h"

#include <cmath>
#include <limits>
#include <string>

#include "gtest/gtest.h"
#include "rapidjson/document.h"
#include "rapidjson/error/en.h"

namespace wharf::pipeline::contract {
namespace {

rapidjson::Document Parse(const std::string& text) {
  rapidjson::Document doc;
  const rapidjson::ParseResult result = ParseJsonExact(text, &doc);
  EXPECT_FALSE(result.IsError()) << text << ": " << rapidjson::GetParseError_En(result.Code());
  return doc;
}

// Fuzz finding F1: RapidJSON's full-precision path turned these zeros into arbitrary numbers.
TEST(JsonNumber, ZerosWithExponentOrManyDecimalsStayZero) {
  for (const char* text : {"0e38", "0E-400", "0.0000000000000000000000000", "0.0e100", "-0e5"}) {
    rapidjson::Document doc = Parse(text);
    ASSERT_TRUE(doc.IsDouble()) << text;
    EXPECT_EQ(doc.GetDouble(), 0.0) << text;
  }
  EXPECT_TRUE(std::signbit(Parse("-0.0").GetDouble()));
}

TEST(JsonNumber, IntegersGetRapidJsonsTypes) {
  EXPECT_TRUE(Parse("0").IsUint());
  EXPECT_TRUE(Parse("0").IsInt());
  EXPECT_EQ(Parse("4294967295").GetUint(), 4294967295u);
  EXPECT_FALSE(Parse("4294967295").IsInt());
  EXPECT_TRUE(Parse("4294967296").IsUint64());
  EXPECT_FALSE(Parse("4294967296").IsUint());
  EXPECT_EQ(Parse("-2147483648").GetInt(), std::numeric_limits<int>::min());
  EXPECT_TRUE(Parse("-2147483649").IsInt64());
  EXPECT_FALSE(Parse("-2147483649").IsInt());
  EXPECT_EQ(Parse("18446744073709551615").GetUint64(), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(Parse("-9223372036854775808").GetInt64(), std::numeric_limits<int64_t>::min());
  // Beyond 64 bits: a double, as RapidJSON does.
  rapidjson::Document big = Parse("18446744073709551616");
  ASSERT_TRUE(big.IsDouble());
  EXPECT_EQ(big.GetDouble(), 18446744073709551616.0);
  EXPECT_EQ(Parse("-9223372036854775809").GetDouble(), -9223372036854775809.0);
}

TEST(JsonNumber, DoublesAreCorrectlyRounded) {
  EXPECT_EQ(Parse("0.1").GetDouble(), 0.1);
  EXPECT_EQ(Parse("2.2250738585072014e-308").GetDouble(), 2.2250738585072014e-308);
  EXPECT_EQ(Parse("1.7976931348623157e308").GetDouble(), 1.7976931348623157e308);
  // A decimal string that is hard to round (halfway case beyond 17 digits).
  EXPECT_EQ(Parse("9007199254740993.0").GetDouble(), 9007199254740992.0);
  EXPECT_EQ(Parse("123.456e-2").GetDouble(), 1.23456);
  // Underflow gives zero (or a subnormal), not an error.
  EXPECT_EQ(Parse("1e-400").GetDouble(), 0.0);
  EXPECT_EQ(Parse("4.9406564584124654e-324").GetDouble(), 4.9406564584124654e-324);
  // About 200 digits (finding F1b read past a table here).
  const std::string digits(200, '7');
  rapidjson::Document many = Parse(digits + ".5");
  ASSERT_TRUE(many.IsDouble());
  EXPECT_DOUBLE_EQ(many.GetDouble(), std::strtod((digits + ".5").c_str(), nullptr));
}

TEST(JsonNumber, NumbersInsideDocuments) {
  rapidjson::Document doc = Parse(R"({"a": [1, -2, 0e38, 1.5], "b": {"c": 4294967296}})");
  ASSERT_TRUE(doc.IsObject());
  EXPECT_EQ(doc["a"][0].GetInt(), 1);
  EXPECT_EQ(doc["a"][1].GetInt(), -2);
  EXPECT_EQ(doc["a"][2].GetDouble(), 0.0);
  EXPECT_EQ(doc["a"][3].GetDouble(), 1.5);
  EXPECT_EQ(doc["b"]["c"].GetUint64(), 4294967296u);
}

TEST(JsonNumber, MalformedInputIsAnError) {
  rapidjson::Document doc;
  rapidjson::ParseResult result = ParseJsonExact("1e400", &doc);
  EXPECT_EQ(result.Code(), rapidjson::kParseErrorNumberTooBig);
  result = ParseJsonExact("[1, -1e999]", &doc);
  EXPECT_EQ(result.Code(), rapidjson::kParseErrorNumberTooBig);
  EXPECT_EQ(ParseJsonExact("01", &doc).Code(), rapidjson::kParseErrorDocumentRootNotSingular);
  EXPECT_EQ(ParseJsonExact("1.", &doc).Code(), rapidjson::kParseErrorNumberMissFraction);
  EXPECT_EQ(ParseJsonExact("-", &doc).Code(), rapidjson::kParseErrorValueInvalid);
  EXPECT_EQ(ParseJsonExact("{\"a\": 1} x", &doc).Code(),
            rapidjson::kParseErrorDocumentRootNotSingular);
  EXPECT_EQ(ParseJsonExact("\"\xff\"", &doc).Code(), rapidjson::kParseErrorStringInvalidEncoding);
  EXPECT_EQ(ParseJsonExact("", &doc).Code(), rapidjson::kParseErrorDocumentEmpty);
}

}  // namespace
}  // namespace wharf::pipeline::contract
