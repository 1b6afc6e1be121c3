// Fuzz target: the contract expression language (pipeline/contract/expression.h).
//
// Input: the expression on the first line; the rest, when it parses as a JSON object, is the
// record (otherwise a fixed record with every JSON type, nesting, Unicode and extreme numbers).
// Checks:
//   - Compile never crashes; errors are INVALID_ARGUMENT "position N: ..." with N inside the
//     text (or just past its end).
//   - Evaluate and EvaluateBool never crash, fail only with INVALID_ARGUMENT, and are
//     deterministic (two evaluations give equal values or the same error).
//   - EvaluateBool agrees with Evaluate (true exactly when the value is boolean true).
//   - A result converts to JSON text that parses, and to a JSON value.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "absl/strings/numbers.h"
#include "pipeline/contract/expression.h"
#include "rapidjson/document.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using wharf::pipeline::contract::Expression;
using wharf::pipeline::contract::ExprValue;

constexpr char kDefaultRecord[] = R"({
  "id": 42, "amount": 12.5, "negative": -7, "zero": 0, "big": 9223372036854775807,
  "small": -9223372036854775808, "huge": 1e308, "tiny": 5e-324, "ratio": 0.1,
  "name": "Ada Lovelace", "email": "ada@example.org", "empty": "", "space": "  padded \t",
  "unicode": "Grüße 😀 日本", "flag": true, "off": false, "nothing": null,
  "tags": ["a", "b", null, 3, 2.5, true], "matrix": [[1, 2], [3, [4, 5]]], "none": [],
  "customer": {"name": "Bob", "address": {"city": "Zürich", "zip": "8001"}, "vip": false},
  "items": [{"sku": "X-1", "qty": 2, "price": 9.99}, {"sku": "Y-2", "qty": 0, "price": null}],
  "in": "reserved", "weird key": {"a/b": 1, "~": 2}, "numtext": " 12.5 ", "ts": "2024-05-01"
})";

// The record the expression runs on: parsed once, shared by every input that brings none.
const rapidjson::Document& DefaultRecord() {
  static const rapidjson::Document* const doc = [] {
    auto* d = new rapidjson::Document();
    d->Parse<rapidjson::kParseIterativeFlag | rapidjson::kParseFullPrecisionFlag>(kDefaultRecord);
    if (d->HasParseError() || !d->IsObject()) std::abort();
    return d;
  }();
  return *doc;
}

void CheckSameResult(const absl::StatusOr<ExprValue>& a, const absl::StatusOr<ExprValue>& b) {
  WHARF_FUZZ_CHECK(a.ok() == b.ok());
  if (a.ok()) {
    // NaN never gets out (non-finite results are errors), so == is reflexive here.
    WHARF_FUZZ_CHECK(*a == *b);
    WHARF_FUZZ_CHECK(a->ToJsonText() == b->ToJsonText());
  } else {
    WHARF_FUZZ_CHECK(a.status() == b.status());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto [text, record_text] =
      wharf::fuzz::SplitFirstLine(std::string_view(reinterpret_cast<const char*>(data), size));

  auto expr = Expression::Compile(text);
  if (!expr.ok()) {
    WHARF_FUZZ_CHECK(expr.status().code() == absl::StatusCode::kInvalidArgument);
    const std::string message(expr.status().message());
    WHARF_FUZZ_CHECK(message.starts_with("position "));
    const size_t colon = message.find(':');
    WHARF_FUZZ_CHECK(colon != std::string::npos);
    uint64_t position = 0;
    WHARF_FUZZ_CHECK(absl::SimpleAtoi(message.substr(9, colon - 9), &position));
    WHARF_FUZZ_CHECK(position >= 1 && position <= text.size() + 1);
    return 0;
  }
  WHARF_FUZZ_CHECK(text.size() <= Expression::kMaxLength);

  rapidjson::Document own;
  const rapidjson::Value* record = &DefaultRecord();
  if (!record_text.empty()) {
    // Depth is bounded by the input size limit of the fuzzer run; the pipeline bounds it at
    // Contract::kMaxDepth before any expression runs.
    own.Parse<rapidjson::kParseIterativeFlag>(record_text.data(), record_text.size());
    if (!own.HasParseError() && own.IsObject()) record = &own;
  }

  const absl::StatusOr<ExprValue> first = (*expr)->Evaluate(*record);
  const absl::StatusOr<ExprValue> second = (*expr)->Evaluate(*record);
  CheckSameResult(first, second);
  const absl::StatusOr<bool> as_bool = (*expr)->EvaluateBool(*record);
  if (!first.ok()) {
    WHARF_FUZZ_CHECK(first.status().code() == absl::StatusCode::kInvalidArgument);
    WHARF_FUZZ_CHECK(!as_bool.ok());
    return 0;
  }
  if (first->is_bool() || first->is_null()) {
    WHARF_FUZZ_CHECK(as_bool.ok());
    WHARF_FUZZ_CHECK(*as_bool == (first->is_bool() && first->bool_value()));
  } else {
    WHARF_FUZZ_CHECK(!as_bool.ok());
    WHARF_FUZZ_CHECK(as_bool.status().code() == absl::StatusCode::kInvalidArgument);
  }
  if (first->is_double()) WHARF_FUZZ_CHECK(std::isfinite(first->number_value()));

  // The result as JSON text must be JSON; as a JSON value it must equal itself.
  const std::string json = first->ToJsonText();
  rapidjson::Document reparsed;
  reparsed.Parse<rapidjson::kParseIterativeFlag>(json.data(), json.size());
  WHARF_FUZZ_CHECK(!reparsed.HasParseError());
  rapidjson::Document holder;
  rapidjson::Value value = first->ToJson(holder.GetAllocator());
  WHARF_FUZZ_CHECK(ExprValue::FromJson(value) == *first);
  return 0;
}
