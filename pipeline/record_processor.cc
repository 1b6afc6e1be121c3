#include "pipeline/record_processor.h"

#include "absl/strings/str_cat.h"
#include "rapidjson/document.h"
#include "rapidjson/error/en.h"
#include "rapidjson/reader.h"

namespace wharf::pipeline {
namespace {

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

class JsonParseProcessor final : public RecordProcessor {
 public:
  bool Process(const wharf::v1::StoredRecord& record, std::string* payload_out,
               wharf::v1::QuarantineEntry* quarantine) const override {
    const std::string& payload = record.record().payload();
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
      quarantine->set_reason(wharf::v1::PARSE_ERROR);
      quarantine->set_error_position(ok.Offset());
      quarantine->set_message(
          absl::StrCat("payload is not valid JSON: ", rapidjson::GetParseError_En(ok.Code()),
                       " at byte ", ok.Offset()));
      return false;
    }
    // kParseStopWhenDoneFlag stops after the first value: anything but whitespace after it is an
    // error (two concatenated documents are not one record).
    for (size_t i = is.Tell(); i < payload.size(); ++i) {
      const char c = payload[i];
      if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
        quarantine->set_reason(wharf::v1::PARSE_ERROR);
        quarantine->set_error_position(i);
        quarantine->set_message(
            absl::StrCat("payload is not valid JSON: unexpected data after the value at byte ", i));
        return false;
      }
    }
    if (!handler.top_is_object) {
      // Like every other PARSE_ERROR, say where: the first byte of the (non-object) value.
      size_t start = 0;
      while (start < payload.size() && (payload[start] == ' ' || payload[start] == '\t' ||
                                        payload[start] == '\n' || payload[start] == '\r')) {
        ++start;
      }
      quarantine->set_reason(wharf::v1::PARSE_ERROR);
      quarantine->set_error_position(start);
      quarantine->set_message(absl::StrCat("payload is valid JSON but not an object at byte ",
                                           start, "; records must be objects"));
      return false;
    }
    *payload_out = payload;
    return true;
  }
};

class RawProcessor final : public RecordProcessor {
 public:
  bool Process(const wharf::v1::StoredRecord& record, std::string* payload_out,
               wharf::v1::QuarantineEntry*) const override {
    *payload_out = record.record().payload();
    return true;
  }
};

}  // namespace

std::unique_ptr<RecordProcessor> NewJsonParseProcessor() {
  return std::make_unique<JsonParseProcessor>();
}

std::unique_ptr<RecordProcessor> NewRawProcessor() { return std::make_unique<RawProcessor>(); }

}  // namespace wharf::pipeline
