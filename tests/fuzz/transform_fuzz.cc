// Fuzz target: the transform chain of data contracts (pipeline/contract/transform.h), every op.
//
// Input, one item per line:
//   line 1      the record (JSON; when it is not an object, a fixed realistic record is used)
//   each next   one step: fields separated by tabs, the op first, then key=value fields:
//               path=  to=  paths= (repeatable)  value=  expr=  type=  format= (repeatable,
//               input_formats)  output=  length=  sep=  field=<name>:<pointer> (repeatable)
//               e.g. "cast\tpath=/amount\ttype=int". Unknown keys are ignored.
// Checks:
//   - Compile never crashes; it succeeds or fails with INVALID_ARGUMENT.
//   - Apply never crashes and is deterministic: two copies of the record give the same result,
//     the same failure message and the same output.
//   - A kept record is still a JSON object, and when the input was valid UTF-8 the output is
//     too (a transform must not cut a character in half).
//   - A failure names a step that exists.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/numbers.h"
#include "pipeline/contract/json_number.h"
#include "pipeline/contract/transform.h"
#include "rapidjson/document.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"
#include "tests/fuzz/fuzz_check.h"
#include "wharf/v1/contract.pb.h"

namespace {

using wharf::pipeline::contract::RecordMetadata;
using wharf::pipeline::contract::TransformChain;
using wharf::pipeline::contract::TransformFailure;

constexpr size_t kMaxSteps = 32;
// As the pipeline: records nested deeper than Contract::kMaxDepth never reach the transforms.
constexpr int kMaxRecordDepth = 256;

constexpr char kDefaultRecord[] = R"({"id":"ord-1","amount":"12.50","qty":3,"price":9.99,
"customer":{"email":"ada@example.org","phone":"+41 44 123 45 67","name":"  Ada  ",
"address":{"city":"Zürich","zip":8001}},"items":[{"sku":"X-1","qty":2},{"sku":"Y-2"}],
"created":"2024-05-01T12:00:00+02:00","epoch":1714557600000,"flag":"true","nothing":null,
"note":"Grüße 😀 日本 text","tags":["a","b"],"a/b":{"~x":1}})";

wharf::v1::TransformSpec ParseStep(std::string_view line) {
  wharf::v1::TransformSpec spec;
  size_t start = 0;
  bool first = true;
  while (start <= line.size()) {
    size_t tab = line.find('\t', start);
    if (tab == std::string_view::npos) tab = line.size();
    const std::string_view field = line.substr(start, tab - start);
    start = tab + 1;
    if (first) {
      spec.set_op(std::string(field));
      first = false;
      continue;
    }
    const size_t eq = field.find('=');
    if (eq == std::string_view::npos) continue;
    const std::string_view key = field.substr(0, eq);
    const std::string value(field.substr(eq + 1));
    if (key == "path") {
      spec.set_path(value);
    } else if (key == "to") {
      spec.set_to(value);
    } else if (key == "paths") {
      spec.add_paths(value);
    } else if (key == "value") {
      spec.set_value_json(value);
    } else if (key == "expr") {
      spec.set_expr(value);
    } else if (key == "type") {
      spec.set_type(value);
    } else if (key == "format") {
      spec.add_input_formats(value);
    } else if (key == "output") {
      spec.set_output_format(value);
    } else if (key == "length") {
      uint32_t length = 0;
      if (absl::SimpleAtoi(value, &length)) spec.set_length(length);
    } else if (key == "sep") {
      spec.set_separator(value);
    } else if (key == "field") {
      const size_t colon = value.find(':');
      if (colon != std::string::npos) {
        (*spec.mutable_fields())[value.substr(0, colon)] = value.substr(colon + 1);
      }
    }
  }
  return spec;
}

// Serializes `doc`; false when it holds a string that is not valid UTF-8.
bool Serialize(const rapidjson::Document& doc, std::string* out) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer, rapidjson::UTF8<>, rapidjson::UTF8<>,
                    rapidjson::CrtAllocator, rapidjson::kWriteValidateEncodingFlag>
      writer(buffer);
  const bool ok = doc.Accept(writer);
  out->assign(buffer.GetString(), buffer.GetSize());
  return ok;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  const auto [record_text, steps_text] = wharf::fuzz::SplitFirstLine(input);

  // Specs arrive as protobuf strings, which are valid UTF-8.
  if (!wharf::fuzz::IsValidUtf8(steps_text)) return 0;
  google::protobuf::RepeatedPtrField<wharf::v1::TransformSpec> steps;
  std::string_view rest = steps_text;
  while (!rest.empty() && static_cast<size_t>(steps.size()) < kMaxSteps) {
    const auto [line, next] = wharf::fuzz::SplitFirstLine(rest);
    *steps.Add() = ParseStep(line);
    rest = next;
  }
  auto chain = TransformChain::Compile(steps, "fuzz-hash-key-0123456789abcdef");
  if (!chain.ok()) {
    WHARF_FUZZ_CHECK(chain.status().code() == absl::StatusCode::kInvalidArgument);
    WHARF_FUZZ_CHECK(!chain.status().message().empty());
    return 0;
  }

  // The record, parsed as the contract parses payloads (UTF-8 checked, iteratively, exact
  // numbers).
  rapidjson::Document a;
  if (wharf::pipeline::contract::ParseJsonExact(record_text, &a).IsError() || !a.IsObject()) {
    WHARF_FUZZ_CHECK(!wharf::pipeline::contract::ParseJsonExact(kDefaultRecord, &a).IsError());
  }
  if (wharf::fuzz::JsonDepth(a) > kMaxRecordDepth) return 0;
  rapidjson::Document b;
  b.CopyFrom(a, b.GetAllocator());

  RecordMetadata meta;
  meta.dataset = "orders";
  meta.partition = 3;
  meta.offset = 1042;
  meta.producer_id = "producer-1";
  meta.ingest_time_millis = 1714557600123;
  if (size % 2 == 0) meta.event_time_millis = -62135596800000;  // year 1, the earliest
  meta.schema_version = 2;
  meta.transform_version = 5;

  TransformFailure fa;
  TransformFailure fb;
  const TransformChain::Result ra = (*chain)->Apply(&a, meta, &fa);
  const TransformChain::Result rb = (*chain)->Apply(&b, meta, &fb);
  WHARF_FUZZ_CHECK(ra == rb);
  if (ra == TransformChain::Result::kFailed) {
    WHARF_FUZZ_CHECK(fa.message == fb.message);
    WHARF_FUZZ_CHECK(fa.step >= 1 && fa.step <= static_cast<size_t>(steps.size()));
    WHARF_FUZZ_CHECK(fa.op == steps[static_cast<int>(fa.step - 1)].op());
    return 0;
  }
  if (ra == TransformChain::Result::kFiltered) return 0;
  WHARF_FUZZ_CHECK(a.IsObject());
  std::string out_a;
  std::string out_b;
  WHARF_FUZZ_CHECK(Serialize(a, &out_a));
  WHARF_FUZZ_CHECK(Serialize(b, &out_b));
  WHARF_FUZZ_CHECK(out_a == out_b);
  // What is delivered parses again.
  rapidjson::Document reparsed;
  WHARF_FUZZ_CHECK(!wharf::pipeline::contract::ParseJsonExact(out_a, &reparsed).IsError());
  return 0;
}
