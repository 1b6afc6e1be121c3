#include "pipeline/record_processor.h"

#include <optional>
#include <utility>

#include "pipeline/json_check.h"

namespace wharf::pipeline {
namespace {

class JsonParseProcessor final : public RecordProcessor {
 public:
  bool Process(const wharf::v1::StoredRecord& record, std::string* payload_out,
               wharf::v1::QuarantineEntry* quarantine) const override {
    const std::string& payload = record.record().payload();
    // The simdjson pre-check passes nearly every valid record at a fifth of the cost; whatever
    // it does not pass, RapidJSON decides (and says where the problem is).
    if (!IsCertainlyJsonObject(payload)) {
      if (std::optional<JsonObjectError> error = CheckJsonObject(payload)) {
        quarantine->set_reason(wharf::v1::PARSE_ERROR);
        quarantine->set_error_position(error->position);
        quarantine->set_message(std::move(error->message));
        return false;
      }
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
