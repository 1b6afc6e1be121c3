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

}  // namespace wharf::fuzz
