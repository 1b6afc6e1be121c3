#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "wharf/v1/record.pb.h"

namespace wharf::pipeline {

// The validation/transform step a raw record goes through before it joins a committed batch.
// Today it parses (format "json") or passes bytes through (format "raw"); the contracts issue
// adds schema validation, rules, PII detection and transforms behind the same seam.
//
// Where a record is when it is processed.
struct RecordContext {
  std::string_view dataset;
  uint32_t partition = 0;
  uint64_t offset = 0;
};

enum class ProcessResult {
  kDeliver,     // *payload_out holds the payload to deliver
  kQuarantine,  // *quarantine says why (reason, message, field path, rule)
  kFilter,      // dropped on purpose by a filter transform: counted, neither delivered nor
                // quarantined
};

// Thread safety: Process() is const and may be called from several pipeline threads at once.
class RecordProcessor {
 public:
  virtual ~RecordProcessor() = default;

  // The pipeline calls this. The default runs Process() (no filtering, no context).
  virtual ProcessResult ProcessRecord(const RecordContext& context,
                                      const wharf::v1::StoredRecord& record,
                                      std::string* payload_out,
                                      wharf::v1::QuarantineEntry* quarantine) const {
    (void)context;
    return Process(record, payload_out, quarantine) ? ProcessResult::kDeliver
                                                    : ProcessResult::kQuarantine;
  }

  // Either fills `payload_out` with the record's delivered payload and returns true, or fills
  // `quarantine` (reason, message, field path, error position) and returns false. Never throws.
  virtual bool Process(const wharf::v1::StoredRecord& record, std::string* payload_out,
                       wharf::v1::QuarantineEntry* quarantine) const = 0;

  // Versions recorded in manifests and quarantine entries (0: none).
  virtual uint32_t schema_version() const { return 0; }
  virtual uint32_t transform_version() const { return 0; }
};

// Accepts payloads that are one well-formed JSON object (UTF-8, nothing but whitespace after
// it); anything else is quarantined as PARSE_ERROR with the parser's message and byte position.
// The payload is delivered byte-identical.
std::unique_ptr<RecordProcessor> NewJsonParseProcessor();

// Passes payload bytes through unparsed (datasets without a contract, format "raw").
std::unique_ptr<RecordProcessor> NewRawProcessor();

}  // namespace wharf::pipeline
