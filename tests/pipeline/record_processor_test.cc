#include "pipeline/record_processor.h"

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "wharf/v1/record.pb.h"

namespace wharf::pipeline {
namespace {

wharf::v1::StoredRecord RecordWithPayload(const std::string& payload) {
  wharf::v1::StoredRecord record;
  record.mutable_record()->set_key("k");
  record.mutable_record()->set_payload(payload);
  return record;
}

// What one Process() call produced.
struct Outcome {
  bool accepted = false;
  std::string payload;
  wharf::v1::QuarantineEntry quarantine;
};

Outcome ProcessPayload(const RecordProcessor& processor, const std::string& payload) {
  Outcome out;
  out.accepted = processor.Process(RecordWithPayload(payload), &out.payload, &out.quarantine);
  return out;
}

// Checks a refusal: PARSE_ERROR, the message says "at byte <position>", error_position matches.
::testing::AssertionResult RefusedAt(const Outcome& out, uint64_t position) {
  if (out.accepted) return ::testing::AssertionFailure() << "payload was accepted";
  if (out.quarantine.reason() != wharf::v1::PARSE_ERROR) {
    return ::testing::AssertionFailure()
           << "reason is " << wharf::v1::QuarantineReason_Name(out.quarantine.reason());
  }
  if (out.quarantine.error_position() != position) {
    return ::testing::AssertionFailure()
           << "error_position is " << out.quarantine.error_position() << ", expected " << position
           << " (message \"" << out.quarantine.message() << "\")";
  }
  const std::string expected = absl::StrCat("at byte ", position);
  if (out.quarantine.message().find(expected) == std::string::npos) {
    return ::testing::AssertionFailure()
           << "message \"" << out.quarantine.message() << "\" does not say \"" << expected << "\"";
  }
  if (!out.payload.empty()) {
    return ::testing::AssertionFailure()
           << "refused record has a payload \"" << out.payload << "\"";
  }
  return ::testing::AssertionSuccess();
}

class JsonParseProcessorTest : public ::testing::Test {
 protected:
  std::unique_ptr<RecordProcessor> processor_ = NewJsonParseProcessor();
};

TEST_F(JsonParseProcessorTest, AcceptsObjectsAndPassesThemThroughByteIdentical) {
  const std::vector<std::string> objects = {
      "{}",
      R"({"a":1})",
      " \t\r\n{ \"a\" : 1 ,\n \"b\" : [ 1 , 2 ] } \n\t\r ",
      R"({"a":{"b":{"c":[{"d":[[],{},null,true,false]}]}}})",
      R"({"s":"\u00e9\u4e2d\ud83d\ude00 \" \\ \/ \b\f\n\r\t"})",
      "{\"utf8\":\"\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80\"}",
      R"({"big":123456789012345678901234567890,"u64p1":18446744073709551617})",
      R"({"neg":-9223372036854775809,"f":1.7976931348623157e308,"tiny":4.9e-324})",
      R"({"e":-0.0e+0,"E":12E-3})",
      R"({"dup":1,"dup":2})",
  };
  for (const std::string& payload : objects) {
    SCOPED_TRACE(payload);
    const Outcome out = ProcessPayload(*processor_, payload);
    ASSERT_TRUE(out.accepted) << out.quarantine.message();
    EXPECT_EQ(out.payload, payload);  // byte-identical, whitespace included
    EXPECT_EQ(out.quarantine.reason(), wharf::v1::QUARANTINE_REASON_UNSPECIFIED);
  }
}

TEST_F(JsonParseProcessorTest, DeeplyNestedObjectIsAccepted) {
  std::string payload;
  for (int i = 0; i < 200; ++i) payload += "{\"a\":";
  payload += "1";
  for (int i = 0; i < 200; ++i) payload += "}";
  const Outcome out = ProcessPayload(*processor_, payload);
  ASSERT_TRUE(out.accepted) << out.quarantine.message();
  EXPECT_EQ(out.payload, payload);
}

TEST_F(JsonParseProcessorTest, ExtremeNestingDoesNotExhaustTheStack) {
  // Half a million levels in a 1 MiB record (the default max_record_bytes): a recursive parser
  // overflows the stack of the thread running it and takes the daemon down.
  constexpr size_t kDepth = 1 << 19;
  const std::string open = "{\"a\":" + std::string(kDepth, '[');
  const Outcome closed = ProcessPayload(*processor_, open + std::string(kDepth, ']') + "}");
  EXPECT_TRUE(closed.accepted) << closed.quarantine.message();
  EXPECT_EQ(closed.payload.size(), 2 * kDepth + 6);
  // Unclosed: refused where the input ends.
  EXPECT_TRUE(RefusedAt(ProcessPayload(*processor_, open), open.size()));
}

TEST_F(JsonParseProcessorTest, LargeObjectIsPassedThroughWhole) {
  std::string payload = "{";
  for (int i = 0; i < 20000; ++i) {
    if (i > 0) payload += ",";
    payload += absl::StrCat("\"field", i, "\":\"value ", i, "\"");
  }
  payload += "}";
  const Outcome out = ProcessPayload(*processor_, payload);
  ASSERT_TRUE(out.accepted) << out.quarantine.message();
  EXPECT_EQ(out.payload, payload);
}

TEST_F(JsonParseProcessorTest, PayloadWithEmbeddedNulInStringEscapeIsAccepted) {
  const std::string payload = R"({"nul":"a\u0000b"})";
  const Outcome out = ProcessPayload(*processor_, payload);
  ASSERT_TRUE(out.accepted) << out.quarantine.message();
  EXPECT_EQ(out.payload, payload);
}

TEST_F(JsonParseProcessorTest, RefusesTruncatedJson) {
  EXPECT_TRUE(RefusedAt(ProcessPayload(*processor_, "{"), 1));
  EXPECT_TRUE(RefusedAt(ProcessPayload(*processor_, R"({"a":)"), 5));
  EXPECT_TRUE(RefusedAt(ProcessPayload(*processor_, R"({"a":1)"), 6));
  EXPECT_TRUE(RefusedAt(ProcessPayload(*processor_, R"({"a":"unterminated)"), 18));
  EXPECT_TRUE(RefusedAt(ProcessPayload(*processor_, R"({"a":[1,2)"), 9));
}

TEST_F(JsonParseProcessorTest, RefusesMalformedObjects) {
  EXPECT_TRUE(RefusedAt(ProcessPayload(*processor_, R"({a:1})"), 1));       // unquoted name
  EXPECT_TRUE(RefusedAt(ProcessPayload(*processor_, R"({"a":1,})"), 7));    // trailing comma
  EXPECT_TRUE(RefusedAt(ProcessPayload(*processor_, R"({'a':1})"), 1));     // single quotes
  EXPECT_TRUE(RefusedAt(ProcessPayload(*processor_, R"({"a":01})"), 6));    // leading zero
  EXPECT_TRUE(RefusedAt(ProcessPayload(*processor_, R"({"a":"\x"})"), 6));  // bad escape
  EXPECT_TRUE(RefusedAt(ProcessPayload(*processor_, R"({"a":NaN})"), 5));   // not a JSON literal
  EXPECT_TRUE(
      RefusedAt(ProcessPayload(*processor_, "{\"a\":\"\x01\"}"), 6));  // raw control character
}

TEST_F(JsonParseProcessorTest, RefusesArraysAndScalarsAsNotObjects) {
  for (const std::string payload :
       {"[]", "[{\"a\":1}]", "42", "-1.5e3", "\"a string\"", "true", "false", "null"}) {
    SCOPED_TRACE(payload);
    const Outcome out = ProcessPayload(*processor_, payload);
    EXPECT_TRUE(RefusedAt(out, 0));
    EXPECT_NE(out.quarantine.message().find("not an object"), std::string::npos)
        << out.quarantine.message();
  }
  // With leading whitespace the position is where the value starts.
  for (const std::string payload : {" [1] ", "\n\t 7", "\r\n\"s\""}) {
    SCOPED_TRACE(::testing::PrintToString(payload));
    const Outcome out = ProcessPayload(*processor_, payload);
    EXPECT_TRUE(RefusedAt(out, payload.find_first_not_of(" \t\r\n")));
    EXPECT_NE(out.quarantine.message().find("not an object"), std::string::npos)
        << out.quarantine.message();
  }
}

TEST_F(JsonParseProcessorTest, RefusesTwoConcatenatedObjects) {
  EXPECT_TRUE(RefusedAt(ProcessPayload(*processor_, R"({"a":1}{"b":2})"), 7));
  EXPECT_TRUE(RefusedAt(ProcessPayload(*processor_, "{\"a\":1}\n{\"b\":2}\n"), 8));
  EXPECT_TRUE(RefusedAt(ProcessPayload(*processor_, "{} {}"), 3));
}

TEST_F(JsonParseProcessorTest, RefusesTrailingGarbage) {
  EXPECT_TRUE(RefusedAt(ProcessPayload(*processor_, R"({"a":1} x)"), 8));
  EXPECT_TRUE(RefusedAt(ProcessPayload(*processor_, R"({"a":1},)"), 7));
  EXPECT_TRUE(RefusedAt(ProcessPayload(*processor_, "{\"a\":1}  \n]"), 10));
  // A NUL byte after the object is garbage too, not an end of input.
  EXPECT_TRUE(RefusedAt(ProcessPayload(*processor_, std::string("{\"a\":1}\0", 8)), 7));
}

TEST_F(JsonParseProcessorTest, RefusesEmptyAndBlankPayloads) {
  EXPECT_TRUE(RefusedAt(ProcessPayload(*processor_, ""), 0));
  EXPECT_TRUE(RefusedAt(ProcessPayload(*processor_, "   \n\t"), 5));
}

TEST_F(JsonParseProcessorTest, RefusesInvalidUtf8) {
  // A lone continuation byte, a truncated 2-byte sequence, an overlong encoding of '/', a UTF-16
  // surrogate encoded in UTF-8, and a byte that never occurs in UTF-8.
  for (const std::string bad : {"\x80", "\xc3", "\xc0\xaf", "\xed\xa0\x80", "\xff"}) {
    SCOPED_TRACE(::testing::PrintToString(bad));
    const std::string payload = "{\"s\":\"ab" + bad + "cd\"}";
    const Outcome out = ProcessPayload(*processor_, payload);
    ASSERT_FALSE(out.accepted);
    EXPECT_EQ(out.quarantine.reason(), wharf::v1::PARSE_ERROR);
    // The position points into the string, at or just past the offending bytes.
    EXPECT_GE(out.quarantine.error_position(), 7u);
    EXPECT_LE(out.quarantine.error_position(), 7u + bad.size());
    EXPECT_NE(
        out.quarantine.message().find(absl::StrCat("at byte ", out.quarantine.error_position())),
        std::string::npos)
        << out.quarantine.message();
  }
}

TEST_F(JsonParseProcessorTest, RefusesInvalidUtf8InObjectNames) {
  const Outcome out = ProcessPayload(*processor_, "{\"\xfe\":1}");
  ASSERT_FALSE(out.accepted);
  EXPECT_EQ(out.quarantine.reason(), wharf::v1::PARSE_ERROR);
  EXPECT_NE(out.quarantine.message().find("at byte"), std::string::npos);
}

TEST_F(JsonParseProcessorTest, LoneSurrogateEscapeIsRefused) {
  // \ud800 without its low half cannot be turned into UTF-8.
  const Outcome out = ProcessPayload(*processor_, R"({"s":"\ud800"})");
  ASSERT_FALSE(out.accepted);
  EXPECT_EQ(out.quarantine.reason(), wharf::v1::PARSE_ERROR);
  EXPECT_NE(out.quarantine.message().find("at byte"), std::string::npos);
}

TEST_F(JsonParseProcessorTest, OverwritesAStalePayloadOnlyWhenAccepting) {
  std::string payload = "stale";
  wharf::v1::QuarantineEntry quarantine;
  ASSERT_TRUE(processor_->Process(RecordWithPayload("{\"x\":1}"), &payload, &quarantine));
  EXPECT_EQ(payload, "{\"x\":1}");
}

TEST_F(JsonParseProcessorTest, VersionsAreZero) {
  EXPECT_EQ(processor_->schema_version(), 0u);
  EXPECT_EQ(processor_->transform_version(), 0u);
}

TEST_F(JsonParseProcessorTest, IsUsableFromSeveralThreadsAtOnce) {
  // Process() is const and documented as callable concurrently: run it on a few threads and
  // check every answer.
  std::vector<std::thread> threads;
  std::atomic<int> wrong{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 500; ++i) {
        const bool good = (i + t) % 2 == 0;
        const std::string payload =
            good ? absl::StrCat("{\"i\":", i, "}") : absl::StrCat("{\"i\":", i);
        const Outcome out = ProcessPayload(*processor_, payload);
        if (out.accepted != good || (good && out.payload != payload)) ++wrong;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
}

TEST(RawProcessorTest, PassesAnythingThroughByteIdentical) {
  std::unique_ptr<RecordProcessor> processor = NewRawProcessor();
  std::string all_bytes;
  for (int c = 0; c < 256; ++c) all_bytes.push_back(static_cast<char>(c));
  const std::vector<std::string> payloads = {
      "",       "not json", "{\"a\":", "[1,2]", "{}{}", std::string("\0\0\0", 3), "\xff\xfe\x80",
      all_bytes};
  for (const std::string& payload : payloads) {
    SCOPED_TRACE(::testing::PrintToString(payload));
    const Outcome out = ProcessPayload(*processor, payload);
    ASSERT_TRUE(out.accepted);
    EXPECT_EQ(out.payload, payload);
    EXPECT_EQ(out.quarantine.reason(), wharf::v1::QUARANTINE_REASON_UNSPECIFIED);
    EXPECT_TRUE(out.quarantine.message().empty());
  }
  EXPECT_EQ(processor->schema_version(), 0u);
  EXPECT_EQ(processor->transform_version(), 0u);
}

}  // namespace
}  // namespace wharf::pipeline
