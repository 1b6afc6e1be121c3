#pragma once

// Timestamp parsing and formatting for the `cast` (type: timestamp) and `timestamp` transforms.
//
// Input formats (TransformSpec.input_formats), tried in the order given, first match wins:
//   rfc3339        "2024-05-01T12:00:00Z", "2024-05-01 14:00:00.250+02:00": date, 'T' (or 't'
//                  or a space), time, optional fraction (any number of digits, cut to
//                  milliseconds) and a mandatory zone: Z/z or +HH:MM / -HH:MM.
//   epoch_millis   an integer number, or a string holding one ("1714564800000")
//   epoch_seconds  a number, fraction allowed (kept to the millisecond), or a string holding one
//   anything with % directives: a strptime-style pattern matched against the whole string:
//     %Y year (up to 4 digits)   %y year 00-99 (69-99 -> 19xx, else 20xx)
//     %m month 01-12             %d day 01-31 (%e: the same)
//     %H hour 00-23              %M minute 00-59     %S second 00-60
//     %f fraction of a second (1-9 digits, cut to milliseconds)
//     %z zone: Z, +HH, +HHMM or +HH:MM (absent: UTC)
//     %b / %B English month name, abbreviated or full, any case
//     %T = %H:%M:%S   %F = %Y-%m-%d   %% a literal '%'
//     a space matches any run of whitespace (also none); any other character matches itself.
//   Parts a pattern leaves out default to 1970-01-01 00:00:00 UTC.
// Numbers (rather than strings) are read with the first epoch_* format listed, or as epoch
// milliseconds when none is listed. With no input formats at all, strings are read as rfc3339.
// Valid results lie in years 0000-9999. Wall-clock fields become an instant with timegm (UTC),
// never the process's local time zone.
//
// Thread safety: TimestampParser is immutable after Create; Parse is const and thread-safe.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "google/protobuf/repeated_field.h"
#include "rapidjson/document.h"

namespace wharf::pipeline::contract {

class TimestampParser {
 public:
  // Checks every format (unknown names, unsupported % directives -> InvalidArgument).
  static absl::StatusOr<TimestampParser> Create(
      const google::protobuf::RepeatedPtrField<std::string>& formats);

  // Milliseconds since the Unix epoch, or InvalidArgument when no format matches `value`.
  absl::StatusOr<int64_t> Parse(const rapidjson::Value& value) const;

  // The formats as configured, for messages: "rfc3339, %Y-%m-%d".
  const std::string& description() const { return description_; }

  // A directive of a %-pattern; public only so the implementation's helpers can name it.
  struct Piece {
    char directive = 0;  // 0: literal text; ' ': whitespace run; else the % letter
    std::string literal;
  };

 private:
  enum class Kind { kRfc3339, kEpochMillis, kEpochSeconds, kPattern };
  struct Format {
    Kind kind = Kind::kRfc3339;
    std::vector<Piece> pieces;  // kPattern
  };

  std::vector<Format> formats_;
  std::string description_;
};

// "2024-05-01T12:00:00.000Z"; InvalidArgument outside years 0000-9999.
absl::StatusOr<std::string> FormatRfc3339Millis(int64_t epoch_millis);

}  // namespace wharf::pipeline::contract
