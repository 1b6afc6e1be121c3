#pragma once

// What the fuzz targets share: a check that reports and aborts (libFuzzer and replay_main.cc
// both treat an abort as a failed input; assert() is off in release builds), and the
// splitting of an input into parts.
//
// Thread safety: pure functions.

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <utility>
#include <vector>

#include "google/protobuf/stubs/common.h"
#include "rapidjson/document.h"

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

// Nesting depth of `root` (a scalar is 0), computed without recursion, so that harnesses can skip
// inputs deeper than what the code under test is handed in production.
inline int JsonDepth(const rapidjson::Value& root) {
  struct Item {
    const rapidjson::Value* v;
    int depth;
  };
  std::vector<Item> stack = {{&root, 0}};
  int max_depth = 0;
  while (!stack.empty()) {
    const Item item = stack.back();
    stack.pop_back();
    if (item.v->IsArray()) {
      max_depth = std::max(max_depth, item.depth + 1);
      for (const auto& e : item.v->GetArray()) stack.push_back({&e, item.depth + 1});
    } else if (item.v->IsObject()) {
      max_depth = std::max(max_depth, item.depth + 1);
      for (const auto& m : item.v->GetObject()) stack.push_back({&m.value, item.depth + 1});
    }
  }
  return max_depth;
}

}  // namespace wharf::fuzz
