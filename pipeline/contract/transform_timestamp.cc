#include "pipeline/contract/transform_timestamp.h"

#include <charconv>
#include <cmath>
#include <ctime>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace wharf::pipeline::contract {
namespace {

// 0000-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z in epoch milliseconds.
constexpr int64_t kMinMillis = -62167219200000;
constexpr int64_t kMaxMillis = 253402300799999;

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

bool IsLeap(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }
int DaysInMonth(int y, int m) {
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && IsLeap(y) ? 29 : kDays[m - 1];
}

// Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar (what timegm and gmtime_r
// use), computed directly: the libc calls were a visible share of the per-record cost of the
// timestamp and add_metadata transforms. The year is shifted to start in March, so that the leap
// day is the last day of a shifted year, and counted in 400-year eras of 146097 days.
int64_t DaysFromCivil(int64_t y, int m, int d) {
  if (m <= 2) --y;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const int64_t year_of_era = y - era * 400;                          // 0..399
  const int64_t shifted_month = m > 2 ? m - 3 : m + 9;                // March = 0
  const int64_t day_of_year = (153 * shifted_month + 2) / 5 + d - 1;  // 0..365
  const int64_t day_of_era =
      year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;  // 0..146096
  return era * 146097 + day_of_era - 719468;  // 719468: days from 0000-03-01 to 1970-01-01
}

// The inverse of DaysFromCivil.
void CivilFromDays(int64_t days, int64_t* y, int* m, int* d) {
  days += 719468;
  const int64_t era = (days >= 0 ? days : days - 146096) / 146097;
  const int64_t day_of_era = days - era * 146097;  // 0..146096
  const int64_t year_of_era =
      (day_of_era - day_of_era / 1460 + day_of_era / 36524 - day_of_era / 146096) / 365;
  const int64_t day_of_year =
      day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
  const int64_t shifted_month = (5 * day_of_year + 2) / 153;  // March = 0
  *d = static_cast<int>(day_of_year - (153 * shifted_month + 2) / 5 + 1);
  *m = static_cast<int>(shifted_month < 10 ? shifted_month + 3 : shifted_month - 9);
  *y = year_of_era + era * 400 + (*m <= 2 ? 1 : 0);
}

// Broken-down time as parsed, before it becomes an instant.
struct Fields {
  int year = 1970;
  int month = 1;
  int day = 1;
  int hour = 0;
  int minute = 0;
  int second = 0;
  int millis = 0;
  int offset_seconds = 0;  // east of UTC
};

absl::StatusOr<int64_t> ToEpochMillis(const Fields& f) {
  if (f.year < 0 || f.year > 9999 || f.month < 1 || f.month > 12 || f.day < 1 ||
      f.day > DaysInMonth(f.year, f.month) || f.hour > 23 || f.minute > 59 || f.second > 60) {
    return absl::InvalidArgumentError("date or time field out of range");
  }
  // As timegm would: the fields are UTC (the host's TZ never leaks in), and a second of 60 (leap
  // second) rolls over into the next minute.
  const int64_t seconds =
      DaysFromCivil(f.year, f.month, f.day) * 86400 + f.hour * 3600 + f.minute * 60 + f.second;
  const int64_t millis =
      (static_cast<int64_t>(seconds) - f.offset_seconds) * 1000 + static_cast<int64_t>(f.millis);
  if (millis < kMinMillis || millis > kMaxMillis) {
    return absl::InvalidArgumentError("timestamp outside years 0000-9999");
  }
  return millis;
}

// Reads between 1 and `max_digits` digits at *s.
bool ReadInt(std::string_view* s, size_t max_digits, int* out) {
  size_t n = 0;
  int v = 0;
  while (n < max_digits && n < s->size() && IsDigit((*s)[n])) {
    v = v * 10 + ((*s)[n] - '0');
    ++n;
  }
  if (n == 0) return false;
  s->remove_prefix(n);
  *out = v;
  return true;
}

bool ReadExactInt(std::string_view* s, size_t digits, int* out) {
  if (s->size() < digits) return false;
  for (size_t i = 0; i < digits; ++i) {
    if (!IsDigit((*s)[i])) return false;
  }
  return ReadInt(s, digits, out);
}

// A fraction of a second: 1+ digits (at most `max_digits`), kept to milliseconds.
bool ReadFraction(std::string_view* s, size_t max_digits, int* millis) {
  size_t n = 0;
  int v = 0;
  while (n < max_digits && n < s->size() && IsDigit((*s)[n])) {
    if (n < 3) v = v * 10 + ((*s)[n] - '0');
    ++n;
  }
  if (n == 0) return false;
  for (size_t k = n; k < 3; ++k) v *= 10;
  s->remove_prefix(n);
  *millis = v;
  return true;
}

// Z | z | +HH:MM | -HH:MM, and with `lenient` also +HH and +HHMM.
bool ReadZone(std::string_view* s, bool lenient, int* offset_seconds) {
  if (s->empty()) return false;
  if ((*s)[0] == 'Z' || (*s)[0] == 'z') {
    s->remove_prefix(1);
    *offset_seconds = 0;
    return true;
  }
  if ((*s)[0] != '+' && (*s)[0] != '-') return false;
  const int sign = (*s)[0] == '-' ? -1 : 1;
  s->remove_prefix(1);
  int hours = 0;
  int minutes = 0;
  if (!ReadExactInt(s, 2, &hours)) return false;
  if (!s->empty() && (*s)[0] == ':') {
    s->remove_prefix(1);
    if (!ReadExactInt(s, 2, &minutes)) return false;
  } else if (!lenient) {
    return false;
  } else if (s->size() >= 2 && IsDigit((*s)[0])) {
    if (!ReadExactInt(s, 2, &minutes)) return false;
  }
  if (hours > 23 || minutes > 59) return false;
  *offset_seconds = sign * (hours * 3600 + minutes * 60);
  return true;
}

absl::StatusOr<int64_t> ParseRfc3339(std::string_view s) {
  Fields f;
  bool ok = ReadExactInt(&s, 4, &f.year) && !s.empty() && s[0] == '-';
  if (ok) s.remove_prefix(1);
  ok = ok && ReadExactInt(&s, 2, &f.month) && !s.empty() && s[0] == '-';
  if (ok) s.remove_prefix(1);
  ok = ok && ReadExactInt(&s, 2, &f.day) && !s.empty() &&
       (s[0] == 'T' || s[0] == 't' || s[0] == ' ');
  if (ok) s.remove_prefix(1);
  ok = ok && ReadExactInt(&s, 2, &f.hour) && !s.empty() && s[0] == ':';
  if (ok) s.remove_prefix(1);
  ok = ok && ReadExactInt(&s, 2, &f.minute) && !s.empty() && s[0] == ':';
  if (ok) s.remove_prefix(1);
  ok = ok && ReadExactInt(&s, 2, &f.second);
  if (ok && !s.empty() && s[0] == '.') {
    s.remove_prefix(1);
    ok = ReadFraction(&s, 64, &f.millis);
  }
  ok = ok && ReadZone(&s, /*lenient=*/false, &f.offset_seconds) && s.empty();
  if (!ok) return absl::InvalidArgumentError("not an RFC 3339 timestamp");
  return ToEpochMillis(f);
}

constexpr const char* kMonths[] = {"january",   "february", "march",    "april",
                                   "may",       "june",     "july",     "august",
                                   "september", "october",  "november", "december"};

bool ReadMonthName(std::string_view* s, int* month) {
  auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
  auto starts = [&](std::string_view word) {
    if (s->size() < word.size()) return false;
    for (size_t i = 0; i < word.size(); ++i) {
      if (lower((*s)[i]) != word[i]) return false;
    }
    return true;
  };
  for (int m = 0; m < 12; ++m) {
    const std::string_view full = kMonths[m];
    // Full name first, so "March" is not read as "Mar" followed by a stray "ch".
    if (starts(full)) {
      s->remove_prefix(full.size());
      *month = m + 1;
      return true;
    }
    if (starts(full.substr(0, 3))) {
      s->remove_prefix(3);
      *month = m + 1;
      return true;
    }
  }
  return false;
}

absl::StatusOr<int64_t> ParsePattern(const std::vector<TimestampParser::Piece>& pieces,
                                     std::string_view s) {
  Fields f;
  for (const TimestampParser::Piece& p : pieces) {
    bool ok = true;
    switch (p.directive) {
      case 0:
        ok = s.substr(0, p.literal.size()) == p.literal;
        if (ok) s.remove_prefix(p.literal.size());
        break;
      case ' ':
        while (!s.empty() && IsSpace(s[0])) s.remove_prefix(1);
        break;
      case 'Y':
        ok = ReadInt(&s, 4, &f.year);
        break;
      case 'y':
        ok = ReadExactInt(&s, 2, &f.year);
        if (ok) f.year += f.year >= 69 ? 1900 : 2000;
        break;
      case 'm':
        ok = ReadInt(&s, 2, &f.month);
        break;
      case 'd':
      case 'e':
        if (p.directive == 'e' && !s.empty() && s[0] == ' ') s.remove_prefix(1);
        ok = ReadInt(&s, 2, &f.day);
        break;
      case 'H':
        ok = ReadInt(&s, 2, &f.hour);
        break;
      case 'M':
        ok = ReadInt(&s, 2, &f.minute);
        break;
      case 'S':
        ok = ReadInt(&s, 2, &f.second);
        break;
      case 'f':
        ok = ReadFraction(&s, 9, &f.millis);
        break;
      case 'z':
        ok = ReadZone(&s, /*lenient=*/true, &f.offset_seconds);
        break;
      case 'b':
      case 'B':
        ok = ReadMonthName(&s, &f.month);
        break;
      default:
        ok = false;
        break;
    }
    if (!ok) return absl::InvalidArgumentError("does not match the pattern");
  }
  if (!s.empty()) return absl::InvalidArgumentError("text left over after the pattern");
  return ToEpochMillis(f);
}

absl::StatusOr<std::vector<TimestampParser::Piece>> CompilePattern(std::string_view format) {
  std::vector<TimestampParser::Piece> pieces;
  auto literal = [&pieces](std::string_view text) {
    if (pieces.empty() || pieces.back().directive != 0) pieces.emplace_back();
    pieces.back().literal.append(text);
  };
  auto directive = [&pieces](char d) {
    pieces.emplace_back();
    pieces.back().directive = d;
  };
  for (size_t i = 0; i < format.size(); ++i) {
    const char c = format[i];
    if (IsSpace(c)) {
      if (pieces.empty() || pieces.back().directive != ' ') directive(' ');
      continue;
    }
    if (c != '%') {
      literal(format.substr(i, 1));
      continue;
    }
    if (i + 1 >= format.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("input format \"", std::string(format), "\" ends with a lone '%'"));
    }
    const char d = format[++i];
    switch (d) {
      case 'Y':
      case 'y':
      case 'm':
      case 'd':
      case 'e':
      case 'H':
      case 'M':
      case 'S':
      case 'f':
      case 'z':
      case 'b':
      case 'B':
        directive(d);
        break;
      case 'T':
        directive('H');
        literal(":");
        directive('M');
        literal(":");
        directive('S');
        break;
      case 'F':
        directive('Y');
        literal("-");
        directive('m');
        literal("-");
        directive('d');
        break;
      case '%':
        literal("%");
        break;
      default:
        return absl::InvalidArgumentError(
            absl::StrCat("input format \"", std::string(format), "\": unsupported directive %",
                         std::string(1, d),
                         " (supported: %Y %y %m %d %e %H %M %S %f %z %b %B %T "
                         "%F %%)"));
    }
  }
  return pieces;
}

// A clean integer: optional '-', digits, nothing else.
bool ParseCleanInt(std::string_view s, int64_t* out) {
  if (s.empty()) return false;
  const size_t first = s[0] == '-' ? 1 : 0;
  if (first >= s.size()) return false;
  for (size_t i = first; i < s.size(); ++i) {
    if (!IsDigit(s[i])) return false;
  }
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && p == s.data() + s.size();
}

absl::StatusOr<int64_t> CheckRange(int64_t millis) {
  if (millis < kMinMillis || millis > kMaxMillis) {
    return absl::InvalidArgumentError("timestamp outside years 0000-9999");
  }
  return millis;
}

absl::StatusOr<int64_t> MillisFromNumber(double value, double scale) {
  const double millis = std::round(value * scale);
  if (!std::isfinite(millis) || millis < static_cast<double>(kMinMillis) ||
      millis > static_cast<double>(kMaxMillis)) {
    return absl::InvalidArgumentError("timestamp outside years 0000-9999");
  }
  return static_cast<int64_t>(millis);
}

absl::StatusOr<int64_t> EpochFromJsonNumber(const rapidjson::Value& v, bool seconds) {
  if (v.IsInt64()) {
    int64_t millis = v.GetInt64();
    if (seconds && __builtin_mul_overflow(millis, int64_t{1000}, &millis)) {
      return absl::InvalidArgumentError("timestamp outside years 0000-9999");
    }
    return CheckRange(millis);
  }
  const double d = v.GetDouble();
  if (!seconds && std::trunc(d) != d) {
    return absl::InvalidArgumentError("epoch milliseconds must be an integer");
  }
  return MillisFromNumber(d, seconds ? 1000.0 : 1.0);
}

absl::StatusOr<int64_t> EpochFromString(std::string_view s, bool seconds) {
  int64_t i = 0;
  if (ParseCleanInt(s, &i)) {
    if (seconds && __builtin_mul_overflow(i, int64_t{1000}, &i)) {
      return absl::InvalidArgumentError("timestamp outside years 0000-9999");
    }
    return CheckRange(i);
  }
  if (!seconds || s.empty() || !(IsDigit(s[0]) || s[0] == '-')) {
    return absl::InvalidArgumentError("not an epoch number");
  }
  double d = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), d);
  if (ec != std::errc() || p != s.data() + s.size()) {
    return absl::InvalidArgumentError("not an epoch number");
  }
  return MillisFromNumber(d, 1000.0);
}

}  // namespace

absl::StatusOr<TimestampParser> TimestampParser::Create(
    const google::protobuf::RepeatedPtrField<std::string>& formats) {
  TimestampParser parser;
  std::vector<std::string> names;
  for (const std::string& text : formats) {
    Format f;
    if (text == "rfc3339") {
      f.kind = Kind::kRfc3339;
    } else if (text == "epoch_millis") {
      f.kind = Kind::kEpochMillis;
    } else if (text == "epoch_seconds") {
      f.kind = Kind::kEpochSeconds;
    } else if (text.find('%') != std::string::npos) {
      f.kind = Kind::kPattern;
      absl::StatusOr<std::vector<Piece>> pieces = CompilePattern(text);
      if (!pieces.ok()) return pieces.status();
      f.pieces = *std::move(pieces);
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown input format \"", text,
          "\" (use rfc3339, epoch_millis, epoch_seconds or a pattern with % directives)"));
    }
    parser.formats_.push_back(std::move(f));
    names.push_back(text);
  }
  if (parser.formats_.empty()) {
    parser.formats_.push_back(Format{});
    names.push_back("rfc3339");
  }
  parser.description_ = absl::StrJoin(names, ", ");
  return parser;
}

absl::StatusOr<int64_t> TimestampParser::Parse(const rapidjson::Value& value) const {
  if (value.IsNumber()) {
    bool seconds = false;
    for (const Format& f : formats_) {
      if (f.kind == Kind::kEpochMillis || f.kind == Kind::kEpochSeconds) {
        seconds = f.kind == Kind::kEpochSeconds;
        break;
      }
    }
    return EpochFromJsonNumber(value, seconds);
  }
  if (!value.IsString()) {
    return absl::InvalidArgumentError("a timestamp must be a string or a number");
  }
  const std::string_view s(value.GetString(), value.GetStringLength());
  // The error is built only when it is returned (an absl::Status with a message allocates).
  if (formats_.empty()) return absl::InvalidArgumentError("no input format");
  absl::Status last;
  for (const Format& f : formats_) {
    absl::StatusOr<int64_t> r;
    switch (f.kind) {
      case Kind::kRfc3339:
        r = ParseRfc3339(s);
        break;
      case Kind::kEpochMillis:
        r = EpochFromString(s, /*seconds=*/false);
        break;
      case Kind::kEpochSeconds:
        r = EpochFromString(s, /*seconds=*/true);
        break;
      case Kind::kPattern:
        r = ParsePattern(f.pieces, s);
        break;
    }
    if (r.ok()) return r;
    last = r.status();
  }
  return last;
}

absl::StatusOr<std::string> FormatRfc3339Millis(int64_t epoch_millis) {
  if (epoch_millis < kMinMillis || epoch_millis > kMaxMillis) {
    return absl::InvalidArgumentError("timestamp outside years 0000-9999");
  }
  // Floor division, so instants before 1970 get a non-negative millisecond part.
  int64_t seconds = epoch_millis / 1000;
  int64_t millis = epoch_millis % 1000;
  if (millis < 0) {
    millis += 1000;
    seconds -= 1;
  }
  // As gmtime_r would (the range check above keeps every field in range).
  int64_t days = seconds / 86400;
  int64_t second_of_day = seconds % 86400;
  if (second_of_day < 0) {
    second_of_day += 86400;
    days -= 1;
  }
  int64_t year = 0;
  int month = 0;
  int day = 0;
  CivilFromDays(days, &year, &month, &day);
  // "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" written digit by digit (snprintf was a visible share of
  // the per-record cost of add_metadata). Every field is within its width: the year is 0..9999
  // (checked above), the milliseconds 0..999.
  std::string out(24, '\0');
  auto put = [&out](size_t at, int value, int width) {
    for (int k = width - 1; k >= 0; --k) {
      out[at + static_cast<size_t>(k)] = static_cast<char>('0' + value % 10);
      value /= 10;
    }
  };
  const int sod = static_cast<int>(second_of_day);
  put(0, static_cast<int>(year), 4);
  out[4] = '-';
  put(5, month, 2);
  out[7] = '-';
  put(8, day, 2);
  out[10] = 'T';
  put(11, sod / 3600, 2);
  out[13] = ':';
  put(14, sod / 60 % 60, 2);
  out[16] = ':';
  put(17, sod % 60, 2);
  out[19] = '.';
  put(20, static_cast<int>(millis), 3);
  out[23] = 'Z';
  return out;
}

}  // namespace wharf::pipeline::contract
