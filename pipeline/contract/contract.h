#pragma once

// A dataset's data contract, compiled: the RecordProcessor the pipeline runs for datasets that
// have one. It ties together the contract's parts (json_schema.h, expression.h, pii.h,
// transform.h) in a fixed order:
//
//   1. parse       the payload must be one JSON object (UTF-8, only whitespace after it), nested
//                  at most kMaxDepth levels -> otherwise PARSE_ERROR with the byte position
//   2. schema      JSON Schema validation -> SCHEMA_VIOLATION (field_path: the violation's
//                  pointer, rule: the keyword, message: the violation text)
//   3. rules       in order; a rule passes only when its expression is exactly true ->
//                  RULE_VIOLATION (rule: the rule name)
//   4. PII         detectors in order; "quarantine" -> PII_DETECTED (rule: detector name,
//                  field_path: where), mask/hash/drop rewrite the record
//   5. transforms  the chain -> TRANSFORM_ERROR (rule: "step N (op)", field_path: the step's
//                  path), or ProcessResult::kFilter when a filter step drops the record
//   6. serialize   the (possibly rewritten) record is written as compact JSON (compact_json.h,
//                  the bytes rapidjson::Writer writes)
//
// Validation only reads the record, so when no PII action rewrote it and the contract has no
// transforms the payload is delivered byte-identical (no re-serialization): the record.proto
// promise that payloads change only when a transform changes them.
//
// Quarantine messages never contain a detected PII value: PII findings name the detector and
// the pointer only, and later steps see the masked/hashed record.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "pipeline/contract/expression.h"
#include "pipeline/contract/json_schema.h"
#include "pipeline/contract/pii.h"
#include "pipeline/contract/transform.h"
#include "pipeline/record_processor.h"
#include "wharf/v1/contract.pb.h"
#include "wharf/v1/record.pb.h"

namespace wharf::pipeline::contract {

// Thread safety: immutable after Compile(); ProcessRecord()/Process() are const and may run on
// any number of pipeline threads at once (per-record state lives on the caller's stack or in
// memory private to the calling thread, reused from record to record: the DOM's first pool chunk,
// the parser, the in-place parse copy and the output buffer; and every compiled part is itself
// safe for concurrent use).
class Contract final : public RecordProcessor {
 public:
  // Records nested deeper than this (objects and arrays; the top-level object is level 1) are
  // refused as PARSE_ERROR. RapidJSON's DOM copy, comparison and serialization recurse once per
  // level, so a deep record must be stopped before any of them runs.
  static constexpr int kMaxDepth = 256;

  // Compiles every part of version.spec. On failure returns InvalidArgument listing every error
  // of every part, joined by "; " and prefixed by where it is: "schema: ...",
  // "rules[1] (name): position 3: ...", "pii[0]: ...", "transforms: step 2 (cast): ...". Rule
  // names must be non-empty and unique; an unknown compatibility mode is refused too. `hash_key` is
  // the HMAC key for PII "hash" actions and hash transforms (required only when the spec has one).
  static absl::StatusOr<std::shared_ptr<const Contract>> Compile(
      const wharf::v1::ContractVersion& version, std::string hash_key);

  ProcessResult ProcessRecord(const RecordContext& context, const wharf::v1::StoredRecord& record,
                              std::string* payload_out,
                              wharf::v1::QuarantineEntry* quarantine) const override;

  // Context-free variant (dataset "", partition 0, offset 0). A record dropped by a filter
  // transform returns false with reason QUARANTINE_REASON_UNSPECIFIED and a message saying so;
  // callers that must tell filtering apart use ProcessRecord().
  bool Process(const wharf::v1::StoredRecord& record, std::string* payload_out,
               wharf::v1::QuarantineEntry* quarantine) const override;

  uint32_t schema_version() const override { return version_.schema_version(); }
  uint32_t transform_version() const override { return version_.transform_version(); }

  // The version this contract was compiled from.
  const wharf::v1::ContractVersion& version() const { return version_; }

  Contract(const Contract&) = delete;
  Contract& operator=(const Contract&) = delete;

 private:
  struct Rule {
    std::string name;
    std::shared_ptr<const Expression> expr;
  };

  Contract() = default;

  // Fills *quarantine with the common fields and returns kQuarantine.
  ProcessResult Quarantine(wharf::v1::QuarantineReason reason, std::string field_path,
                           std::string rule, std::string message,
                           wharf::v1::QuarantineEntry* quarantine) const;

  wharf::v1::ContractVersion version_;
  std::shared_ptr<const JsonSchema> schema_;  // null: no schema
  std::vector<Rule> rules_;
  std::shared_ptr<const PiiScanner> pii_;             // null: no PII specs
  std::shared_ptr<const TransformChain> transforms_;  // null: no transforms
};

}  // namespace wharf::pipeline::contract
