#include "pipeline/contract/transform_timestamp.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <ctime>
#include <random>
#include <string>

#include "google/protobuf/repeated_ptr_field.h"
#include "rapidjson/document.h"

namespace wharf::pipeline::contract {
namespace {

// 0000-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z in epoch milliseconds.
constexpr int64_t kMinMillis = -62167219200000;
constexpr int64_t kMaxMillis = 253402300799999;

// What FormatRfc3339Millis computed with gmtime_r and snprintf before it did its own arithmetic.
std::string LibcFormat(int64_t epoch_millis) {
  int64_t seconds = epoch_millis / 1000;
  int64_t millis = epoch_millis % 1000;
  if (millis < 0) {
    millis += 1000;
    seconds -= 1;
  }
  const time_t t = static_cast<time_t>(seconds);
  struct tm tm = {};
  if (gmtime_r(&t, &tm) == nullptr) return "gmtime_r failed";
  char buf[96];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(millis));
  return buf;
}

TEST(FormatRfc3339MillisTest, MatchesGmtimeOverTheWholeRange) {
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<int64_t> any(kMinMillis, kMaxMillis);
  std::vector<int64_t> values = {
      kMinMillis, kMinMillis + 1, kMaxMillis, kMaxMillis - 1, -1, 0,
      1,          -86400000,      86400000,   951782400000 /* 2000-02-29 */};
  for (int i = 0; i < 200000; ++i) values.push_back(any(rng));
  // Every day boundary of a 400-year cycle around the epoch's neighbourhood, +-1 ms.
  for (int64_t day = -73000; day <= 73000; day += 7) {
    for (int64_t delta : {-1, 0, 1}) values.push_back(day * 86400000 + delta);
  }
  for (int64_t v : values) {
    absl::StatusOr<std::string> got = FormatRfc3339Millis(v);
    ASSERT_TRUE(got.ok()) << v;
    ASSERT_EQ(*got, LibcFormat(v)) << v;
  }
}

TEST(FormatRfc3339MillisTest, RefusesOutsideYears0000To9999) {
  EXPECT_FALSE(FormatRfc3339Millis(kMinMillis - 1).ok());
  EXPECT_FALSE(FormatRfc3339Millis(kMaxMillis + 1).ok());
}

// The RFC 3339 parser's instant for generated fields matches timegm's, including leap days, a
// leap second (60 rolls over into the next minute) and offsets.
TEST(TimestampParserTest, Rfc3339MatchesTimegm) {
  absl::StatusOr<TimestampParser> parser =
      TimestampParser::Create(google::protobuf::RepeatedPtrField<std::string>());
  ASSERT_TRUE(parser.ok());
  std::mt19937_64 rng(11);
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  for (int i = 0; i < 100000; ++i) {
    const int year = static_cast<int>(rng() % 10000);
    const int month = 1 + static_cast<int>(rng() % 12);
    const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    const int days = month == 2 && leap ? 29 : kDays[month - 1];
    const int day = 1 + static_cast<int>(rng() % days);
    const int hour = static_cast<int>(rng() % 24);
    const int minute = static_cast<int>(rng() % 60);
    const int second = static_cast<int>(rng() % 61);
    const int millis = static_cast<int>(rng() % 1000);
    const int offset_minutes = static_cast<int>(rng() % 1440) - 720;
    char text[64];
    std::snprintf(text, sizeof(text), "%04d-%02d-%02dT%02d:%02d:%02d.%03d%c%02d:%02d", year, month,
                  day, hour, minute, second, millis, offset_minutes < 0 ? '-' : '+',
                  std::abs(offset_minutes) / 60, std::abs(offset_minutes) % 60);
    struct tm tm = {};
    tm.tm_year = year - 1900;
    tm.tm_mon = month - 1;
    tm.tm_mday = day;
    tm.tm_hour = hour;
    tm.tm_min = minute;
    tm.tm_sec = second;
    const int64_t expected =
        (static_cast<int64_t>(timegm(&tm)) - offset_minutes * 60) * 1000 + millis;
    rapidjson::Value value(rapidjson::StringRef(text));
    absl::StatusOr<int64_t> got = parser->Parse(value);
    if (expected < kMinMillis || expected > kMaxMillis) {
      EXPECT_FALSE(got.ok()) << text;  // an offset moved it out of 0000-9999
      continue;
    }
    ASSERT_TRUE(got.ok()) << text << ": " << got.status();
    ASSERT_EQ(*got, expected) << text;
  }
}

TEST(TimestampParserTest, MalformedInputIsRefused) {
  absl::StatusOr<TimestampParser> parser =
      TimestampParser::Create(google::protobuf::RepeatedPtrField<std::string>());
  ASSERT_TRUE(parser.ok());
  for (const char* bad :
       {"", "2024-02-30T00:00:00Z", "2023-02-29T00:00:00Z", "2024-13-01T00:00:00Z",
        "2024-01-01T24:00:00Z", "2024-01-01T00:00:61Z", "2024-01-01", "x", "2024-01-01T00:00:00"}) {
    rapidjson::Value value(rapidjson::StringRef(bad));
    EXPECT_FALSE(parser->Parse(value).ok()) << bad;
  }
  rapidjson::Value boolean(true);
  EXPECT_FALSE(parser->Parse(boolean).ok());
}

}  // namespace
}  // namespace wharf::pipeline::contract
