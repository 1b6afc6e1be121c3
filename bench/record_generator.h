#pragma once

// The benchmarks' record generator, shared by wharf-bench (ingest) and wharf-destination-bench
// (delivery) so that both measure the same records.

#include <cstdint>
#include <cstdio>
#include <ctime>
#include <random>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "wharf/v1/record.pb.h"

namespace wharf::bench {

// Builds one JSON record of about `target_size` bytes: id, ts (RFC 3339, from `now_us`),
// bench_ts_us (= `now_us`), user, amount (a decimal with two digits), two tags, a nested object
// and a filler padding the record to the target size. The key is the user. The sequence of
// records depends only on `producer` (the seed) and the arguments of Next(), so a generator
// built with the same `producer` repeats the same records for the same calls.
// Thread safety: not thread-safe; use one per thread.
class RecordGenerator {
 public:
  RecordGenerator(int producer, size_t target_size)
      : producer_(producer), target_size_(target_size), rng_(0x5eed + producer) {}

  wharf::v1::Record Next(uint64_t id, int64_t now_us) {
    const time_t seconds = static_cast<time_t>(now_us / 1'000'000);
    struct tm utc;
    gmtime_r(&seconds, &utc);
    char ts[64];
    std::snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", utc.tm_year + 1900,
                  utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec,
                  static_cast<int>(now_us % 1'000'000));
    char user[16];
    std::snprintf(user, sizeof(user), "user_%04u", static_cast<unsigned>(rng_() % 10000));
    const unsigned cents = static_cast<unsigned>(rng_() % 1'000'000);
    static const char* const kTags[] = {"alpha", "beta", "gamma", "delta", "omega", "sigma"};
    static const char* const kRegions[] = {"eu-west-1", "us-east-1", "ap-south-1"};
    std::string json =
        absl::StrCat("{\"id\":", id, ",\"ts\":\"", ts, "\",\"bench_ts_us\":", now_us,
                     ",\"user\":\"", user, "\",\"amount\":", cents / 100, ".",
                     cents % 100 < 10 ? "0" : "", cents % 100, ",\"tags\":[\"", kTags[rng_() % 6],
                     "\",\"", kTags[rng_() % 6], "\"],\"nested\":{\"producer\":", producer_,
                     ",\"region\":\"", kRegions[rng_() % 3], "\",\"score\":", rng_() % 100, "}");
    constexpr size_t kFillerOverhead = sizeof(",\"filler\":\"\"") - 1;
    if (json.size() + kFillerOverhead + 1 < target_size_) {
      absl::StrAppend(&json, ",\"filler\":\"",
                      std::string(target_size_ - json.size() - kFillerOverhead - 1, 'x'), "\"");
    }
    json += "}";
    wharf::v1::Record record;
    record.set_key(user);
    record.set_payload(std::move(json));
    return record;
  }

 private:
  const int producer_;
  const size_t target_size_;
  std::mt19937_64 rng_;
};

}  // namespace wharf::bench
