#pragma once

// Exact JSON number parsing on top of RapidJSON 1.1.
//
// Why: RapidJSON 1.1's kParseFullPrecisionFlag path has undefined behaviour for a zero significand
// written with an exponent or many decimals ("0e38", "0.0000000000000000000000000"), which in a
// normal -O2 build yields an arbitrary double (-1.9e227), and reads past a table for numbers of
// about 200 digits (fuzz findings F1 / F1b in docs/reliability/fuzzing.md). Its default path is
// not correctly rounded, so a record rewritten by a transform could change digits the producer
// sent. Instead the reader runs with kParseNumbersAsStringsFlag and each number's text is
// converted here: integers with std::from_chars, everything else with strtod (correctly rounded in
// glibc; wharfd never changes the C locale). The handler sees the same calls RapidJSON itself
// would make (Int / Uint / Int64 / Uint64 / Double), so the DOM is the same apart from the now
// exact doubles.
//
// Thread safety: stateless functions; a handler object belongs to one parse.

#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "rapidjson/document.h"
#include "rapidjson/encodedstream.h"
#include "rapidjson/memorystream.h"
#include "rapidjson/reader.h"

namespace wharf::pipeline::contract {

// Emits the number whose JSON text is [s, s + n) (already validated by the reader) to `handler`.
// Returns false, with *too_big set, for a number whose magnitude is beyond the largest double
// (RapidJSON's kParseErrorNumberTooBig); otherwise what the handler returns.
template <typename Handler>
bool EmitJsonNumber(const char* s, size_t n, Handler& handler, bool* too_big) {
  const std::string_view text(s, n);
  // A plain loop rather than find_first_of(".eE"), which calls memchr once per character.
  bool integral = true;
  for (size_t i = 0; i < n; ++i) {
    if (s[i] == '.' || s[i] == 'e' || s[i] == 'E') {
      integral = false;
      break;
    }
  }
  if (integral) {
    if (text[0] == '-') {
      int64_t value = 0;
      auto [end, ec] = std::from_chars(s, s + n, value);
      if (ec == std::errc() && end == s + n) {
        return value >= INT32_MIN ? handler.Int(static_cast<int>(value)) : handler.Int64(value);
      }
    } else {
      uint64_t value = 0;
      auto [end, ec] = std::from_chars(s, s + n, value);
      if (ec == std::errc() && end == s + n) {
        return value <= UINT32_MAX ? handler.Uint(static_cast<unsigned>(value))
                                   : handler.Uint64(value);
      }
    }
    // Beyond 64 bits: a double, as RapidJSON does.
  }
  const std::string copy(text);  // strtod needs a terminated string
  char* end = nullptr;
  const double value = std::strtod(copy.c_str(), &end);
  if (std::isinf(value)) {
    *too_big = true;
    return false;
  }
  // Underflow (ERANGE with 0 or a subnormal) keeps strtod's correctly rounded result.
  return handler.Double(value);
}

// A SAX handler that forwards every event to `next` (for example a rapidjson::Document) and turns
// the raw numbers of a kParseNumbersAsStringsFlag parse into exact numbers.
template <typename Next>
class ExactNumberHandler {
 public:
  explicit ExactNumberHandler(Next* next) : next_(next) {}

  // True when the parse stopped at a number beyond the largest double.
  bool number_too_big() const { return too_big_; }

  bool Null() { return next_->Null(); }
  bool Bool(bool b) { return next_->Bool(b); }
  bool Int(int i) { return next_->Int(i); }
  bool Uint(unsigned u) { return next_->Uint(u); }
  bool Int64(int64_t i) { return next_->Int64(i); }
  bool Uint64(uint64_t u) { return next_->Uint64(u); }
  bool Double(double d) { return next_->Double(d); }
  bool RawNumber(const char* s, rapidjson::SizeType n, bool /*copy*/) {
    return EmitJsonNumber(s, n, *next_, &too_big_);
  }
  bool String(const char* s, rapidjson::SizeType n, bool copy) { return next_->String(s, n, copy); }
  bool Key(const char* s, rapidjson::SizeType n, bool copy) { return next_->Key(s, n, copy); }
  bool StartObject() { return next_->StartObject(); }
  bool EndObject(rapidjson::SizeType n) { return next_->EndObject(n); }
  bool StartArray() { return next_->StartArray(); }
  bool EndArray(rapidjson::SizeType n) { return next_->EndArray(n); }

 private:
  Next* next_;
  bool too_big_ = false;
};

// Parses the whole of `text` (one JSON value, whitespace around it) into *doc with exact numbers,
// iteratively (no recursion on deep input) and validating UTF-8. The result is the reader's; a
// number beyond the largest double is reported as kParseErrorNumberTooBig at its end.
inline rapidjson::ParseResult ParseJsonExact(std::string_view text, rapidjson::Document* doc) {
  rapidjson::MemoryStream ms(text.data(), text.size());
  rapidjson::EncodedInputStream<rapidjson::UTF8<>, rapidjson::MemoryStream> is(ms);
  ExactNumberHandler<rapidjson::Document> handler(doc);
  rapidjson::ParseResult result;
  auto generator = [&](rapidjson::Document&) {
    rapidjson::Reader reader;
    result = reader.Parse<rapidjson::kParseIterativeFlag | rapidjson::kParseValidateEncodingFlag |
                          rapidjson::kParseNumbersAsStringsFlag>(is, handler);
    return !result.IsError();
  };
  doc->Populate(generator);
  if (result.IsError() && handler.number_too_big()) {
    result.Set(rapidjson::kParseErrorNumberTooBig, result.Offset());
  }
  return result;
}

}  // namespace wharf::pipeline::contract
