#pragma once

// What the fuzz targets share: a check that reports and aborts (libFuzzer and replay_main.cc
// both treat an abort as a failed input; assert() is off in release builds), and the
// splitting of an input into parts.
//
// Thread safety: pure functions.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <utility>

#include "google/protobuf/stubs/common.h"

// Aborts with the condition and the location when `cond` is false, in every build type.
#define WHARF_FUZZ_CHECK(cond)                                                           \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      std::fprintf(stderr, "%s:%d: fuzz check failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                      \
    }                                                                                    \
  } while (false)

namespace wharf::fuzz {

// Splits at the first '\n': (text before it, text after it). Without a newline: (text, "").
inline std::pair<std::string_view, std::string_view> SplitFirstLine(std::string_view text) {
  const size_t newline = text.find('\n');
  if (newline == std::string_view::npos) return {text, std::string_view()};
  return {text.substr(0, newline), text.substr(newline + 1)};
}

// Whether `text` is well-formed UTF-8: what protobuf requires of `string` fields (checked with
// protobuf's own validator), so specs built from fuzz input must satisfy it too.
inline bool IsValidUtf8(std::string_view text) {
  return google::protobuf::internal::IsStructurallyValidUTF8(text.data(),
                                                             static_cast<int>(text.size()));
}

// Finding F1 of docs/reliability/fuzzing.md, not fixed yet: RapidJSON 1.1's full-precision
// number parsing (kParseFullPrecisionFlag) turns a zero written with an exponent or with many
// decimals ("0e38", "0.0000000000000000000000000") into an arbitrary non-zero double, through
// __builtin_clzll(0) (undefined behaviour, which stops a UBSan build). Targets whose code under
// test parses with that flag skip such inputs, so that fuzzing reaches everything else. Errs on
// the side of skipping: any run of '0' and '.' that starts a token and is followed by an
// exponent or is longer than 20 characters.
inline bool HasZeroSignificandNumber(std::string_view text) {
  auto is_word = [](char c) {
    return (c >= '0' && c <= '9') || c == '.' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
  };
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '0' || (i > 0 && is_word(text[i - 1]))) continue;
    size_t j = i;
    while (j < text.size() && (text[j] == '0' || text[j] == '.')) ++j;
    if (j - i > 20) return true;
    if (j < text.size() && (text[j] == 'e' || text[j] == 'E')) return true;
  }
  return false;
}

}  // namespace wharf::fuzz
