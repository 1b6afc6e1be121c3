#include "pipeline/contract/compact_json.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>

#include "rapidjson/document.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace wharf::pipeline::contract {
namespace {

// What the contract wrote before: Value::Accept into rapidjson::Writer. Empty on failure.
bool WriterText(const rapidjson::Value& v, std::string* text) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  if (!v.Accept(writer)) return false;
  text->assign(buffer.GetString(), buffer.GetSize());
  return true;
}

void ExpectSameAsWriter(const rapidjson::Value& v) {
  std::string expected;
  ASSERT_TRUE(WriterText(v, &expected));
  std::string got = "prefix";  // appends, keeps what was there
  ASSERT_TRUE(AppendCompactJson(v, &got));
  ASSERT_EQ(got, "prefix" + expected);
}

TEST(CompactJsonTest, ScalarsAndContainers) {
  rapidjson::Document doc;
  doc.Parse(R"({"a":null,"b":true,"c":false,"d":[],"e":{},"f":[1,-1,2.5,"x",[{"g":[]}]],)"
            R"("h":-0.0,"i":1e300,"j":4294967295,"k":-2147483648,"l":9223372036854775807,)"
            R"("m":18446744073709551615,"n":-9223372036854775808,"o":0.1,"p":5e-324})");
  ASSERT_FALSE(doc.HasParseError());
  ExpectSameAsWriter(doc);
  for (const auto& m : doc.GetObject()) ExpectSameAsWriter(m.value);
}

TEST(CompactJsonTest, EveryByteInStringsAndKeys) {
  rapidjson::Document doc(rapidjson::kObjectType);
  auto& a = doc.GetAllocator();
  for (int c = 0; c < 256; ++c) {
    const char bytes[3] = {'a', static_cast<char>(c), 'z'};
    rapidjson::Value key(bytes, 3, a);
    rapidjson::Value value(bytes + 1, 1, a);  // the byte alone, also at both ends of a string
    doc.AddMember(key, value, a);
  }
  // Embedded NUL, multi-byte UTF-8, invalid UTF-8, an escape at the very start and end.
  const char mixed[] = "\"\0\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xff\xfe\\/\x7f\x1f\"";
  doc.AddMember("mixed", rapidjson::Value(mixed, sizeof(mixed) - 1, a), a);
  doc.AddMember("empty", rapidjson::Value("", 0, a), a);
  ExpectSameAsWriter(doc);
}

TEST(CompactJsonTest, RandomDoublesAndIntegers) {
  std::mt19937_64 rng(3);
  rapidjson::Document doc(rapidjson::kArrayType);
  auto& a = doc.GetAllocator();
  for (int i = 0; i < 20000; ++i) {
    const uint64_t bits = rng();
    double d;
    std::memcpy(&d, &bits, sizeof(d));
    if (std::isfinite(d)) doc.PushBack(rapidjson::Value(d), a);
    doc.PushBack(rapidjson::Value(static_cast<double>(rng() % 100000000) / 100.0), a);
    doc.PushBack(rapidjson::Value(static_cast<int64_t>(rng())), a);
    doc.PushBack(rapidjson::Value(static_cast<uint64_t>(rng())), a);
    doc.PushBack(rapidjson::Value(static_cast<int>(rng())), a);
    doc.PushBack(rapidjson::Value(static_cast<unsigned>(rng())), a);
  }
  ExpectSameAsWriter(doc);
}

// Random JSON text: nested objects and arrays, strings of arbitrary bytes (controls written as
// escapes, so the text parses; the parse without encoding validation keeps invalid UTF-8),
// numbers of every kind.
void RandomJson(std::mt19937_64& rng, int depth, std::string* out) {
  const int kind = static_cast<int>(rng() % (depth >= 5 ? 5 : 7));
  switch (kind) {
    case 0:
      out->append(rng() % 2 ? "true" : "null");
      return;
    case 1:
      out->append(std::to_string(static_cast<int64_t>(rng())));
      return;
    case 2:
      out->append(std::to_string(static_cast<int64_t>(rng() % 2000001) - 1000000));
      out->append(".");
      out->append(std::to_string(rng() % 1000));
      if (rng() % 3 == 0) out->append("e" + std::to_string(static_cast<int>(rng() % 600) - 300));
      return;
    case 3:
      out->append(std::to_string(rng()));
      return;
    case 4: {
      out->push_back('"');
      for (size_t k = rng() % 16; k > 0; --k) {
        const unsigned char c = static_cast<unsigned char>(rng() % 256);
        if (c < 0x20 || c == '"' || c == '\\') {
          char esc[8];
          std::snprintf(esc, sizeof(esc), "\\u%04x", c);
          out->append(esc);
        } else {
          out->push_back(static_cast<char>(c));
        }
      }
      out->push_back('"');
      return;
    }
    case 5: {
      out->push_back('[');
      for (size_t k = rng() % 5; k > 0; --k) {
        RandomJson(rng, depth + 1, out);
        if (k > 1) out->push_back(',');
      }
      out->push_back(']');
      return;
    }
    default: {
      out->push_back('{');
      for (size_t k = rng() % 5; k > 0; --k) {
        out->append("\"k" + std::to_string(rng() % 100) + (rng() % 4 == 0 ? "\\n\\\"" : "") +
                    "\":");
        RandomJson(rng, depth + 1, out);
        if (k > 1) out->push_back(',');
      }
      out->push_back('}');
      return;
    }
  }
}

TEST(CompactJsonTest, RandomDocuments) {
  std::mt19937_64 rng(5);
  for (int round = 0; round < 2000; ++round) {
    std::string text;
    RandomJson(rng, 0, &text);
    rapidjson::Document doc;
    doc.Parse<rapidjson::kParseFullPrecisionFlag>(text.data(), text.size());
    ASSERT_FALSE(doc.HasParseError()) << text;
    ExpectSameAsWriter(doc);
  }
}

TEST(CompactJsonTest, NonFiniteDoublesFailAsTheWriterDoes) {
  for (double d :
       {std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity(),
        std::numeric_limits<double>::quiet_NaN()}) {
    rapidjson::Document doc(rapidjson::kObjectType);
    doc.AddMember("a", 1, doc.GetAllocator());
    doc.AddMember("bad", rapidjson::Value(d), doc.GetAllocator());
    std::string writer_text;
    EXPECT_FALSE(WriterText(doc, &writer_text));
    std::string got;
    EXPECT_FALSE(AppendCompactJson(doc, &got));
    rapidjson::Value nested(rapidjson::kArrayType);
    nested.PushBack(rapidjson::Value(d), doc.GetAllocator());
    EXPECT_FALSE(AppendCompactJson(nested, &got));
  }
}

}  // namespace
}  // namespace wharf::pipeline::contract
