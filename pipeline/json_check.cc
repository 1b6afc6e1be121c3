#include "pipeline/json_check.h"

#include <simdjson.h>

#include "absl/strings/str_cat.h"
#include "rapidjson/encodedstream.h"
#include "rapidjson/error/en.h"
#include "rapidjson/memorystream.h"
#include "rapidjson/reader.h"

namespace wharf::pipeline {
namespace {

// Payloads above this size skip the simdjson pre-check (IsCertainlyJsonObject).
constexpr size_t kMaxFastCheckBytes = 64 * 1024;

// Validates without building a DOM: a SAX handler that only checks the top-level value is an
// object. Parsing with kParseValidateEncodingFlag rejects invalid UTF-8.
struct TopLevelHandler : rapidjson::BaseReaderHandler<rapidjson::UTF8<>, TopLevelHandler> {
  int depth = 0;
  bool top_is_object = false;
  bool seen_top = false;
  bool Default() {
    if (depth == 0) seen_top = true;
    return true;
  }
  bool StartObject() {
    if (depth == 0) {
      seen_top = true;
      top_is_object = true;
    }
    ++depth;
    return true;
  }
  bool EndObject(rapidjson::SizeType) {
    --depth;
    return true;
  }
  bool StartArray() {
    if (depth == 0) seen_top = true;
    ++depth;
    return true;
  }
  bool EndArray(rapidjson::SizeType) {
    --depth;
    return true;
  }
};

bool IsJsonWhitespace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

}  // namespace

std::optional<JsonObjectError> CheckJsonObject(absl::string_view payload) {
  rapidjson::Reader reader;
  TopLevelHandler handler;
  rapidjson::MemoryStream ms(payload.data(), payload.size());
  rapidjson::EncodedInputStream<rapidjson::UTF8<>, rapidjson::MemoryStream> is(ms);
  // kParseIterativeFlag: the recursive parser recurses once per nesting level, so a payload
  // of a million '[' overflowed the thread's stack and crashed wharfd (again at every restart:
  // the record stays in the landing zone). The iterative parser keeps its state on the heap.
  rapidjson::ParseResult ok =
      reader.Parse<rapidjson::kParseValidateEncodingFlag | rapidjson::kParseStopWhenDoneFlag |
                   rapidjson::kParseIterativeFlag>(is, handler);
  if (!ok) {
    return JsonObjectError{ok.Offset(), absl::StrCat("payload is not valid JSON: ",
                                                     rapidjson::GetParseError_En(ok.Code()),
                                                     " at byte ", ok.Offset())};
  }
  // kParseStopWhenDoneFlag stops after the first value: anything but whitespace after it is an
  // error (two concatenated documents are not one record).
  for (size_t i = is.Tell(); i < payload.size(); ++i) {
    if (!IsJsonWhitespace(payload[i])) {
      return JsonObjectError{
          i,
          absl::StrCat("payload is not valid JSON: unexpected data after the value at byte ", i)};
    }
  }
  if (!handler.top_is_object) {
    // Like every other PARSE_ERROR, say where: the first byte of the (non-object) value.
    size_t start = 0;
    while (start < payload.size() && IsJsonWhitespace(payload[start])) ++start;
    return JsonObjectError{start, absl::StrCat("payload is valid JSON but not an object at byte ",
                                               start, "; records must be objects")};
  }
  return std::nullopt;
}

bool IsCertainlyJsonObject(absl::string_view payload) {
  if (payload.size() > kMaxFastCheckBytes) return false;
  // simdjson reads up to SIMDJSON_PADDING bytes past the end, so the payload is copied into a
  // padded per-thread buffer (a few hundred bytes per record; far cheaper than the parse). The
  // parser keeps its buffers between calls: no allocation per record once warmed up. Only the
  // error-code API is used: nothing here throws.
  thread_local simdjson::dom::parser parser;
  thread_local std::string padded;
  padded.assign(payload.data(), payload.size());
  padded.append(simdjson::SIMDJSON_PADDING, '\0');
  simdjson::dom::element root;
  if (parser.parse(padded.data(), payload.size(), /*realloc_if_needed=*/false).get(root)) {
    return false;
  }
  return root.type() == simdjson::dom::element_type::OBJECT;
}

}  // namespace wharf::pipeline
