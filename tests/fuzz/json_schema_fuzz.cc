// Fuzz target: the JSON Schema validator of data contracts (pipeline/contract/json_schema.h).
//
// Input: the schema on the first line, the instance (a JSON document) on the rest.
// Checks:
//   - Compile never crashes; it succeeds or fails with INVALID_ARGUMENT and a message.
//   - Validate never crashes and is deterministic: validating the same instance twice (and a
//     deep copy of it) gives the same answer and the same violation.
//   - A violation names a keyword and a pointer that resolves in the instance.
//   - Compiling the same schema twice gives a validator with the same answers.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "pipeline/contract/json_number.h"
#include "pipeline/contract/json_schema.h"
#include "rapidjson/document.h"
#include "rapidjson/pointer.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using wharf::pipeline::contract::JsonSchema;
using wharf::pipeline::contract::SchemaViolation;

// Deepest instance checked: RapidJSON's deep copy (CopyFrom) recurses once per level, and the
// pipeline refuses records nested deeper than Contract::kMaxDepth (256) before validation.
constexpr int kMaxInstanceDepth = 256;

bool SameViolation(const SchemaViolation& a, const SchemaViolation& b) {
  return a.pointer == b.pointer && a.keyword == b.keyword && a.message == b.message;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto [schema_text, instance_text] =
      wharf::fuzz::SplitFirstLine(std::string_view(reinterpret_cast<const char*>(data), size));

  auto schema = JsonSchema::Compile(schema_text);
  if (!schema.ok()) {
    WHARF_FUZZ_CHECK(schema.status().code() == absl::StatusCode::kInvalidArgument);
    WHARF_FUZZ_CHECK(!schema.status().message().empty());
    return 0;
  }

  rapidjson::Document instance;
  if (wharf::pipeline::contract::ParseJsonExact(instance_text, &instance).IsError() ||
      wharf::fuzz::JsonDepth(instance) > kMaxInstanceDepth) {
    return 0;
  }

  SchemaViolation first;
  const bool valid = (*schema)->Validate(instance, &first);
  SchemaViolation second;
  WHARF_FUZZ_CHECK((*schema)->Validate(instance, &second) == valid);
  if (!valid) {
    WHARF_FUZZ_CHECK(SameViolation(first, second));
    WHARF_FUZZ_CHECK(!first.keyword.empty());
    WHARF_FUZZ_CHECK(!first.message.empty());
    // The pointer is RFC 6901 and names a value that exists in the instance.
    const rapidjson::Pointer pointer(first.pointer.data(), first.pointer.size());
    WHARF_FUZZ_CHECK(pointer.IsValid());
    WHARF_FUZZ_CHECK(pointer.Get(instance) != nullptr);
  }
  // Validation reads only the instance's content, not where it lives.
  rapidjson::Document copy;
  copy.CopyFrom(instance, copy.GetAllocator());
  SchemaViolation third;
  WHARF_FUZZ_CHECK((*schema)->Validate(copy, &third) == valid);
  if (!valid) WHARF_FUZZ_CHECK(SameViolation(first, third));
  // Validation does not depend on anything left over from compiling.
  auto recompiled = JsonSchema::Compile(schema_text);
  WHARF_FUZZ_CHECK(recompiled.ok());
  SchemaViolation fourth;
  WHARF_FUZZ_CHECK((*recompiled)->Validate(instance, &fourth) == valid);
  if (!valid) WHARF_FUZZ_CHECK(SameViolation(first, fourth));
  // A null violation pointer is allowed.
  WHARF_FUZZ_CHECK((*schema)->Validate(instance, nullptr) == valid);
  return 0;
}
